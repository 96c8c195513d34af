//! Which file in the checkpoint directory holds the checkpoint of a key?
//!
//! The names are the reference's (§4.2, decision K5), so a directory can be shared with it:
//!
//! - current name: `<prefix>-<sha256 hex of the key>.checkpoint.json`, where the prefix is
//!   the key with every maximal run of bytes outside `[A-Za-z0-9._-]` replaced by one `_`,
//!   leading and trailing `.` stripped, `checkpoint` if that leaves nothing or exactly `_`,
//!   and cut to its first 80 bytes;
//! - legacy name (looked up by load, exists and delete, never written):
//!   `<name>.checkpoint.json`, where the name is the key sanitised as above but neither
//!   hashed nor cut, or the MD5 hex of the key when the sanitised key is empty or `_`.
//!   Unlike the reference, a legacy name shaped like a current name (`…-<64 hex>`) is
//!   never looked up: it is another key's current file, which the reference would load
//!   and even delete for a key equal to that file's stem (decision K5 keeps the legacy
//!   lookup; this corner is a safety fix).
//!
//! A name is always a single path component: it holds only `[A-Za-z0-9._-]`, never starts
//! with `.` (so it is never `.` or `..`) and never contains `/` or NUL, whatever the key.
//! The current name is at most 161 bytes; a legacy name longer than [`NAME_BYTES_MAX`] bytes
//! cannot exist on the file system and is never looked up.

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// The suffix of every checkpoint file name.
pub(crate) const FILE_SUFFIX: &str = ".checkpoint.json";

/// The longest file name the file systems we support accept (`NAME_MAX`).
pub(crate) const NAME_BYTES_MAX: usize = 255;

/// How many bytes of the sanitised key the current file name keeps.
const PREFIX_BYTES_MAX: usize = 80;

/// The file name a checkpoint with this key is saved under.
#[must_use]
pub(crate) fn file_name(key: &str) -> String {
    let mut prefix = sanitise(key);
    if prefix.is_empty() || prefix == "_" {
        prefix = "checkpoint".to_owned();
    }
    // The sanitised text is ASCII, so any byte length is a character boundary.
    prefix.truncate(PREFIX_BYTES_MAX);
    format!(
        "{prefix}-{}{FILE_SUFFIX}",
        hex(&Sha256::digest(key.as_bytes()))
    )
}

/// The legacy file name of a key, or `None` when no legacy file of this key can be told
/// apart: when the name would be longer than a file name can be, or when it has the shape
/// of a current name (`…-<64 hex digits>`), because then it is (or may be) the current file
/// of another key. The reference would load and delete that other key's file through it
/// (a key equal to another key's file stem); here it is never touched.
#[must_use]
pub(crate) fn legacy_file_name(key: &str) -> Option<String> {
    let mut name = sanitise(key);
    if name.is_empty() || name == "_" {
        name = hex(&Md5::digest(key.as_bytes()));
    }
    if has_current_shape(&name) {
        return None;
    }
    let name = format!("{name}{FILE_SUFFIX}");
    (name.len() <= NAME_BYTES_MAX).then_some(name)
}

/// Whether a file stem ends like a current name: `-` and 64 lowercase hex digits.
fn has_current_shape(stem: &str) -> bool {
    let bytes = stem.as_bytes();
    bytes.len() > 65
        && bytes
            .get(bytes.len() - 65)
            .is_some_and(|byte| *byte == b'-')
        && bytes
            .iter()
            .skip(bytes.len() - 64)
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// Replaces every maximal run of bytes outside `[A-Za-z0-9._-]` with one `_`, then strips
/// leading and trailing dots. A multi-byte UTF-8 character is one run.
fn sanitise(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut in_run = false;
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(char::from(byte));
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    out.trim_matches('.').to_owned()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0xf] {
            if let Some(digit) = DIGITS.get(usize::from(nibble)) {
                out.push(char::from(*digit));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(key: &str) -> String {
        let name = file_name(key);
        let stem = name.strip_suffix(FILE_SUFFIX).unwrap();
        stem.get(..stem.len() - 65).unwrap().to_owned()
    }

    #[test]
    fn prefixes_match_the_reference_examples() {
        for (key, expected) in [
            ("my/key", "my_key"),
            ("my key", "my_key"),
            ("my_key", "my_key"),
            (".hidden.", "hidden"),
            ("...", "checkpoint"),
            ("é", "checkpoint"),
            ("_", "checkpoint"),
            ("__", "__"),
            ("a..b", "a..b"),
            ("a/b/c", "a_b_c"),
            ("a//b", "a_b"),
            ("aé€b", "a_b"),
            ("../../etc/passwd", "_.._etc_passwd"),
        ] {
            assert_eq!(prefix(key), expected, "{key:?}");
        }
        assert_eq!(prefix(&"x".repeat(100)), "x".repeat(80));
    }

    #[test]
    fn the_hash_suffix_is_the_sha256_of_the_key() {
        assert_eq!(
            file_name("k2"),
            format!("k2-{}.checkpoint.json", hex(&Sha256::digest(b"k2")))
        );
        assert_eq!(
            file_name(""),
            "checkpoint-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.checkpoint.json"
        );
        assert_ne!(file_name("my/key"), file_name("my key"));
        assert_ne!(file_name("my key"), file_name("my_key"));
    }

    #[test]
    fn legacy_names_are_sanitised_keys_or_md5() {
        assert_eq!(
            legacy_file_name("my/key").as_deref(),
            Some("my_key.checkpoint.json")
        );
        assert_eq!(
            legacy_file_name(".hidden.").as_deref(),
            Some("hidden.checkpoint.json")
        );
        assert_eq!(
            legacy_file_name("").as_deref(),
            Some("d41d8cd98f00b204e9800998ecf8427e.checkpoint.json")
        );
        assert_eq!(
            legacy_file_name("...").as_deref(),
            Some(format!("{}.checkpoint.json", hex(&Md5::digest(b"..."))).as_str())
        );
        let long = "y".repeat(100);
        assert_eq!(
            legacy_file_name(&long),
            Some(format!("{long}.checkpoint.json"))
        );
        assert_eq!(legacy_file_name(&"y".repeat(300)), None);
    }

    #[test]
    fn a_legacy_name_never_aliases_another_keys_current_file() {
        let current = file_name("k2");
        let stem = current.strip_suffix(FILE_SUFFIX).unwrap();
        assert_eq!(legacy_file_name(stem), None);
        // Sixty-four hex digits without the dash, or upper case, are ordinary legacy names.
        let digits = "a".repeat(64);
        assert!(legacy_file_name(&format!("x{digits}")).is_some());
        assert!(legacy_file_name(&format!("x-{}", "A".repeat(64))).is_some());
        assert!(legacy_file_name(&format!("-{digits}")).is_some());
    }

    #[test]
    fn names_are_always_one_safe_component() {
        let nasty = [
            "..",
            ".",
            "/",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "\0",
            "a\0b",
            "\\..\\",
            "😀😀",
            "-",
            "ü/../ü",
        ];
        let long = "../".repeat(200);
        for key in nasty.iter().copied().chain([long.as_str()]) {
            for name in [Some(file_name(key)), legacy_file_name(key)]
                .into_iter()
                .flatten()
            {
                assert!(!name.starts_with('.'), "{key:?} -> {name}");
                assert!(name.len() <= NAME_BYTES_MAX, "{key:?} -> {name}");
                assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
                    "{key:?} -> {name}"
                );
                let path = std::path::Path::new("/base").join(&name);
                assert_eq!(path.parent(), Some(std::path::Path::new("/base")));
            }
        }
    }
}
