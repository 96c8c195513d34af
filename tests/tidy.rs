//! Repository hygiene, checked on the source tree itself.
//!
//! - Requirement IDs: every ID defined in `format/*.md` (in bold, exactly once) is listed in
//!   the index of `format/README.md`, every ID the documents mention is defined, every ID
//!   `src/storage/` cites is defined, and every defined ID is cited by a test: a file under
//!   `tests/` (at any depth, and compiled into a test binary: every file there must be) or a
//!   `src/` file with a `#[cfg(test)]` module. Failures list every offending ID at once, so
//!   one run shows all the work left.
//! - Every `.rs` file under `src/` starts with a `//!` module doc.
//! - Layering: every top-level module uses only the modules its row of the module map in
//!   `docs/ARCHITECTURE.md` allows; `storage` uses no `tokio`, `clap` or `rusqlite`; only
//!   `cli` prints, reads the environment or uses `anyhow`.
//! - `unsafe` code appears only in `src/storage/io/mmap.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path, extension));
        } else if path.extension().is_some_and(|e| e == extension) {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Requirement IDs in `text`: `[`, capital letters, `-`, digits, `]`. With `bold`, only
/// those written `**[ID]**` (a definition).
fn ids(text: &str, bold: bool) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for (start, _) in text.match_indices('[') {
        let mut at = start + 1;
        let letters = bytes[at..]
            .iter()
            .take_while(|b| b.is_ascii_uppercase())
            .count();
        at += letters;
        if letters == 0 || bytes.get(at) != Some(&b'-') {
            continue;
        }
        at += 1;
        let digits = bytes[at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        at += digits;
        if digits == 0 || bytes.get(at) != Some(&b']') {
            continue;
        }
        if bold && !(text[..start].ends_with("**") && text[at + 1..].starts_with("**")) {
            continue;
        }
        found.push(text[start + 1..at].to_owned());
    }
    found
}

fn format_docs() -> Vec<(PathBuf, String)> {
    files(&root().join("format"), "md")
        .into_iter()
        .filter(|p| p.parent() == Some(root().join("format").as_path()))
        .map(|p| {
            let text = read(&p);
            (p, text)
        })
        .collect()
}

/// Every defined ID with the documents defining it.
fn definitions() -> BTreeMap<String, Vec<String>> {
    let mut defined: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, text) in format_docs() {
        for id in ids(&text, true) {
            defined.entry(id).or_default().push(relative(&path));
        }
    }
    defined
}

fn report(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what} ({} found):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn requirements_are_defined_once_and_indexed() {
    let defined = definitions();
    assert!(!defined.is_empty(), "format/ defines no requirement IDs");
    let mut problems = Vec::new();
    for (id, places) in &defined {
        if places.len() > 1 {
            problems.push(format!(
                "[{id}] is defined {} times: {places:?}",
                places.len()
            ));
        }
    }
    let readme = read(&root().join("format/README.md"));
    let indexed: BTreeSet<String> = readme
        .lines()
        .filter(|line| line.starts_with("| ["))
        .flat_map(|line| ids(line, false).into_iter().take(1))
        .collect();
    for id in defined.keys() {
        if !indexed.contains(id) {
            problems.push(format!(
                "[{id}] is missing from the index in format/README.md"
            ));
        }
    }
    for id in &indexed {
        if !defined.contains_key(id) {
            problems.push(format!("[{id}] is indexed but defined nowhere"));
        }
    }
    for (path, text) in format_docs() {
        let mentioned: BTreeSet<String> = ids(&text, false).into_iter().collect();
        for id in mentioned {
            if !defined.contains_key(&id) {
                problems.push(format!("{} refers to undefined [{id}]", relative(&path)));
            }
        }
    }
    report("requirement ID problems in format/", &problems);
}

/// Whether a file under `tests/` is compiled into a test binary: a binary's root
/// (`tests/NAME.rs`, `tests/NAME/main.rs`) or a module that the `main.rs` or `mod.rs` beside
/// it declares.
fn is_compiled(path: &Path) -> bool {
    let tests = root().join("tests");
    let (Some(parent), Some(name)) = (path.parent(), path.file_stem()) else {
        return false;
    };
    let name = name.to_string_lossy();
    if parent == tests || name == "main" || name == "mod" {
        return true;
    }
    ["main.rs", "mod.rs"].iter().any(|root| {
        std::fs::read_to_string(parent.join(root))
            .is_ok_and(|text| text.contains(&format!("mod {name};")))
    })
}

/// The files whose citations count as tests: everything under `tests/` that a test binary
/// compiles but this file, and the `src/` files that hold a `#[cfg(test)]` module.
fn citing_files() -> Vec<PathBuf> {
    let this = root().join("tests/tidy.rs");
    let mut citing: Vec<PathBuf> = files(&root().join("tests"), "rs")
        .into_iter()
        .filter(|p| *p != this && is_compiled(p))
        .collect();
    citing.extend(
        files(&root().join("src"), "rs")
            .into_iter()
            .filter(|p| read(p).contains("#[cfg(test)]")),
    );
    citing
}

#[test]
fn every_requirement_is_cited_by_a_test() {
    let stray: Vec<String> = files(&root().join("tests"), "rs")
        .into_iter()
        .filter(|p| !is_compiled(p))
        .map(|p| relative(&p))
        .collect();
    report(
        "files under tests/ that no test binary compiles (declare each with `mod` in the main.rs or mod.rs beside it)",
        &stray,
    );
    let mut cited = BTreeSet::new();
    for path in citing_files() {
        cited.extend(ids(&read(&path), false));
    }
    let missing: Vec<String> = definitions()
        .keys()
        .filter(|id| !cited.contains(*id))
        .map(|id| format!("[{id}]"))
        .collect();
    report(
        "requirement IDs defined in format/ that no test cites (name them in a test's doc comment)",
        &missing,
    );
}

#[test]
fn storage_cites_only_defined_requirements() {
    let defined = definitions();
    let mut problems = Vec::new();
    for path in files(&root().join("src/storage"), "rs") {
        let unknown: BTreeSet<String> = ids(&read(&path), false)
            .into_iter()
            .filter(|id| !defined.contains_key(id))
            .collect();
        for id in unknown {
            problems.push(format!("{} cites undefined [{id}]", relative(&path)));
        }
    }
    report(
        "citations of requirements that format/ does not define",
        &problems,
    );
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let missing: Vec<String> = files(&root().join("src"), "rs")
        .into_iter()
        .filter(|p| !read(p).starts_with("//!"))
        .map(|p| relative(&p))
        .collect();
    report("source files that do not start with a `//!` line", &missing);
}

/// The text of Rust source with comments and the contents of string literals blanked out,
/// so that words in documentation and messages are not mistaken for code.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if chars.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Identifier and punctuation tokens of code (after `code_only`), in order.
fn tokens(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut word = String::new();
    for c in code.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            found.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            found.push(c.to_string());
        }
    }
    if !word.is_empty() {
        found.push(word);
    }
    found
}

/// The module path of a file under `src/` (`src/storage/io/mod.rs` is `storage::io`).
fn module_depth(path: &Path) -> usize {
    let relative = path.strip_prefix(root().join("src")).unwrap();
    let parts = relative.components().count();
    let name = relative.file_name().unwrap().to_string_lossy();
    if name == "mod.rs" || name == "lib.rs" || name == "main.rs" {
        parts - 1
    } else {
        parts
    }
}

/// The module map of docs/ARCHITECTURE.md: each top-level module and the modules it may
/// use ("every module" for `cli`), read from the table's first and last columns.
fn module_map() -> BTreeMap<String, BTreeSet<String>> {
    let text = read(&root().join("docs/ARCHITECTURE.md"));
    let table = text
        .split("## Module map")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/ARCHITECTURE.md has a module map");
    let mut rows = Vec::new();
    for line in table.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let module = cells[1].trim_matches('`').to_owned();
        let may_use = cells[cells.len() - 2];
        let named: BTreeSet<String> = may_use
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        rows.push((module, named, may_use.contains("every module")));
    }
    let modules: BTreeSet<String> = rows.iter().map(|(m, ..)| m.clone()).collect();
    rows.into_iter()
        .map(|(module, named, every)| {
            let allowed = if every {
                modules.iter().filter(|m| **m != module).cloned().collect()
            } else {
                named.intersection(&modules).cloned().collect()
            };
            (module, allowed)
        })
        .collect()
}

/// The top-level modules `path` (a file of the crate) names through `crate::`,
/// `esl_replay::` or enough `super::` to reach the crate root, with how it names them.
fn top_level_uses(path: &Path, modules: &BTreeSet<String>) -> Vec<(String, String)> {
    uses_in(&read(path), module_depth(path), modules)
}

/// What [`top_level_uses`] finds in the source `text` of a module `depth` levels down.
fn uses_in(text: &str, depth: usize, modules: &BTreeSet<String>) -> Vec<(String, String)> {
    let tokens = tokens(&code_only(text));
    let path_to = |at: usize| -> Option<&str> {
        (tokens.get(at)? == ":" && tokens.get(at + 1)? == ":")
            .then(|| tokens.get(at + 2).map(String::as_str))
            .flatten()
    };
    let mut uses = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if (token == "crate" || token == "esl_replay")
            && let Some(next) = path_to(i + 1)
            && modules.contains(next)
        {
            uses.push((next.to_owned(), format!("`{token}::{next}`")));
        }
        if token == "super" && (i < 3 || tokens[i - 3] != "super") {
            let mut at = i;
            let mut supers = 1;
            while path_to(at + 1) == Some("super") {
                at += 3;
                supers += 1;
            }
            if supers >= depth
                && let Some(next) = path_to(at + 1)
                && modules.contains(next)
            {
                uses.push((next.to_owned(), format!("`{next}` through `super::`")));
            }
        }
    }
    uses
}

/// The top-level module a file under `src/` belongs to (`None` for `lib.rs`, `main.rs`).
fn top_level_module(path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root().join("src")).ok()?;
    let first = relative.components().next()?.as_os_str().to_string_lossy();
    let name = first.strip_suffix(".rs").unwrap_or(&first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// The module map in docs/ARCHITECTURE.md is the law: every top-level module is in it, and
/// each uses only the modules its row allows, so a wrong import fails CI.
#[test]
fn every_module_uses_only_the_layers_the_architecture_allows() {
    let map = module_map();
    let modules: BTreeSet<String> = map.keys().cloned().collect();
    let mut problems = Vec::new();
    for path in files(&root().join("src"), "rs") {
        let Some(module) = top_level_module(&path) else {
            continue;
        };
        let Some(allowed) = map.get(&module) else {
            problems.push(format!(
                "{}: module `{module}` is not in the module map",
                relative(&path)
            ));
            continue;
        };
        for (used, how) in top_level_uses(&path, &modules) {
            if used != module && !allowed.contains(&used) {
                problems.push(format!("{} (`{module}`) uses {how}", relative(&path)));
            }
        }
    }
    report(
        "imports the module map of docs/ARCHITECTURE.md does not allow",
        &problems,
    );
}

/// The table is read as meant: a few rows checked against their text.
#[test]
fn the_module_map_is_read_as_written() {
    let map = module_map();
    let set = |names: &[&str]| {
        names
            .iter()
            .map(|n| (*n).to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(map["storage"], set(&[]));
    assert_eq!(map["store"], set(&["storage", "record"]));
    assert_eq!(
        map["capture"],
        set(&["esl", "http_server", "record", "store", "replay", "storage"])
    );
    assert!(map["cli"].contains("capture") && !map["cli"].contains("cli"));
    // A file that names an upper layer is caught, whichever way it names it, and not for
    // a mention in a comment.
    let text = "use crate::cli::x; // crate::evidence\nfn f() { super::super::store::y(); }";
    let modules: BTreeSet<String> = map.keys().cloned().collect();
    let found: Vec<String> = uses_in(text, 2, &modules)
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(found, ["cli", "store"]);
}

#[test]
fn storage_uses_no_async_cli_or_sqlite_crate() {
    let forbidden = ["tokio", "clap", "rusqlite"];
    let mut problems = Vec::new();
    for path in files(&root().join("src/storage"), "rs") {
        for token in tokens(&code_only(&read(&path))) {
            if forbidden.contains(&token.as_str()) {
                problems.push(format!("{} uses `{token}`", relative(&path)));
            }
        }
    }
    report("crates src/storage must not use", &problems);
}

/// Only the command line prints, reads the environment or uses `anyhow` (docs/ARCHITECTURE.md,
/// dependency rules): the library reports through its return values and `tracing`.
#[test]
fn only_the_cli_prints_reads_the_environment_or_uses_anyhow() {
    let mut problems = Vec::new();
    for path in files(&root().join("src"), "rs") {
        let module = top_level_module(&path);
        if module.as_deref() == Some("cli") || module.is_none() {
            continue;
        }
        let tokens = tokens(&code_only(&read(&path)));
        for (i, token) in tokens.iter().enumerate() {
            let next = |k: usize| tokens.get(i + k).map(String::as_str);
            let printing = ["print", "println", "eprint", "eprintln", "dbg"]
                .contains(&token.as_str())
                && next(1) == Some("!");
            let environment = token == "env" && next(1) == Some(":") && next(3) == Some("var")
                || token == "std" && next(3) == Some("env") && next(4) == Some(":");
            if printing || environment || token == "anyhow" {
                problems.push(format!("{} uses `{token}`", relative(&path)));
            }
        }
    }
    report("printing, environment or anyhow outside src/cli", &problems);
}

/// Places in `text` where `unsafe` starts a block, function, impl, trait or extern block.
fn unsafe_sites(text: &str) -> usize {
    let tokens = tokens(&code_only(text));
    tokens
        .windows(2)
        .filter(|w| {
            w[0] == "unsafe" && ["{", "fn", "impl", "trait", "extern"].contains(&w[1].as_str())
        })
        .count()
}

#[test]
fn unsafe_code_lives_only_in_the_mmap_module() {
    let allowed = root().join("src/storage/io/mmap.rs");
    assert!(
        unsafe_sites(&read(&allowed)) > 0,
        "the detector finds no unsafe code even in src/storage/io/mmap.rs"
    );
    let offenders: Vec<String> = files(&root().join("src"), "rs")
        .into_iter()
        .filter(|p| *p != allowed && unsafe_sites(&read(p)) > 0)
        .map(|p| relative(&p))
        .collect();
    report(
        "files with unsafe code outside src/storage/io/mmap.rs",
        &offenders,
    );
}

#[test]
fn detectors_see_code_but_not_comments_or_strings() {
    assert_eq!(
        ids("x [SEG-07] **[FRM-01]** [a-1] [AB-] [ROLL-01..06]", false),
        ["SEG-07", "FRM-01"]
    );
    assert_eq!(ids("x [SEG-07] **[FRM-01]**", true), ["FRM-01"]);
    assert_eq!(unsafe_sites("// unsafe { }\nlet s = \"unsafe fn\";"), 0);
    assert_eq!(
        unsafe_sites("let x = unsafe  {\n 1 };\n unsafe fn f() {}"),
        2
    );
    assert_eq!(
        tokens(&code_only("use super::super::record; // crate::cli")),
        ["use", "super", ":", ":", "super", ":", ":", "record", ";"]
    );
    assert_eq!(module_depth(&root().join("src/storage/io/mmap.rs")), 3);
    assert_eq!(module_depth(&root().join("src/storage/mod.rs")), 1);
}
