//! A simulated disk for power-loss tests, behind the `storage::Io` seam.
//!
//! [`SimDisk`] runs the code under test on the real file system of a scratch directory (in
//! `/dev/shm` when there is one), which plays the page cache: it holds every byte written,
//! through `write_at` or through a shared memory map, synced or not. Beside it the disk keeps
//! a *durable model*, changed only by the operations that make things durable:
//!
//! * for each file, its content as of its last `sync_data` or `sync_all` (taken when the
//!   sync is called: what was written before the call is durable once it returns; a write
//!   racing with the sync may or may not be in it, as with a real `fdatasync`);
//! * for each directory, its entries as of its last `sync_dir`, and the entry changes since
//!   then, in order: creations and removals (seen through the seam, or found by listing the
//!   directory for files created with `O_CREAT` and directories created outside it) and
//!   renames.
//!
//! No real sync is made: the model is the disk. At a *crash point* (a seam operation of the
//! workload's thread, taken before the operation runs, or an explicit point between the
//! workload's steps, each taken with a seeded probability) the disk records a
//! [`CrashState`]: the page-cache content of every file the model knows, the durable model,
//! and the workload's progress (what it had been told was durable). The workload then goes
//! on; a power loss at that point depends only on that state.
//!
//! [`CrashState::materialize`] builds one on-disk image a power loss at that point could
//! leave, following the media assumptions of `format/recovery.md`:
//!
//! * a file's synced content survives; every 512-byte sector where the page cache differs
//!   from it is independently the new or the old sector (unsynced writes dropped, reordered,
//!   or torn at sector granularity), and now and then torn inside the sector at a random
//!   byte (atomic sectors are not assumed); a changed length is the old or the new one;
//! * a directory's synced entries survive; every entry change since its last sync is
//!   independently kept or lost, a rename atomically (the name refers to the old file or to
//!   the new one, and the source name disappears exactly when the target changes); a
//!   directory whose own entry was lost takes its whole subtree with it.
//!
//! Images are built by the seeded generator, so a failure reproduces from the printed seed,
//! up to the timing of background threads (a group-commit sync thread) when there are any.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread::ThreadId;

use esl_replay::storage::{Io, StdIo};

use crate::support::storage::Rng;

/// The unit the simulated medium writes atomically when it writes whole sectors.
pub(crate) const SECTOR: usize = 512;

/// What a directory entry names: a file (by the model's identity) or a subdirectory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

/// An entry change since a directory's last sync.
#[derive(Clone, Debug)]
enum DirOp {
    Link {
        name: OsString,
        node: Node,
    },
    Unlink {
        name: OsString,
        node: Node,
    },
    Rename {
        from: OsString,
        to: OsString,
        id: u64,
    },
}

#[derive(Clone, Debug, Default)]
struct DirModel {
    /// Entries as of the last `sync_dir`.
    durable: BTreeMap<OsString, Node>,
    /// Entry changes since then, in order.
    pending: Vec<DirOp>,
    /// The entries now (durable with pending applied).
    current: BTreeMap<OsString, Node>,
}

#[derive(Clone, Debug, Default)]
struct FileModel {
    /// Content as of the last sync (empty if never synced).
    durable: Vec<u8>,
    /// Content when its last name went away (its page cache from then on).
    unlinked: Option<Vec<u8>>,
}

/// One file of a crash state: its synced content and its page-cache content.
#[derive(Clone, Debug)]
struct FileState {
    durable: Vec<u8>,
    current: Vec<u8>,
}

/// Everything a power loss at one moment depends on.
#[derive(Clone, Debug)]
pub(crate) struct CrashState<P> {
    /// The workload's progress at that moment.
    pub(crate) progress: P,
    /// Which crash point (counted from 1 in this disk's life) and where it was taken.
    pub(crate) point: u64,
    pub(crate) what: String,
    dirs: BTreeMap<PathBuf, (BTreeMap<OsString, Node>, Vec<DirOp>)>,
    files: HashMap<u64, FileState>,
}

/// A lie the disk can tell, to prove that the checks notice lost data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lie {
    /// None: an honest disk.
    None,
    /// `sync_data` and `sync_all` of segment files (`*.seg`) succeed without making anything
    /// durable.
    SegmentSyncs,
    /// `sync_dir` succeeds without making any entry durable.
    DirectorySyncs,
}

#[derive(Debug)]
struct DiskState<P> {
    lie: Lie,
    /// Whether preallocations fail with `ENOSPC`.
    full: bool,
    dirs: BTreeMap<PathBuf, DirModel>,
    files: HashMap<u64, FileModel>,
    /// Inode number -> model identity, for files that have a name now.
    live: HashMap<u64, u64>,
    /// Inode number -> the last identity it had (for open files that lost their name).
    last: HashMap<u64, u64>,
    next_id: u64,
    progress: P,
    rng: Rng,
    chance: (u64, u64),
    points: u64,
    crashes: Vec<CrashState<P>>,
}

/// A simulated disk: the real file system under `root` as its page cache, and a durable
/// model beside it (see the module docs). `P` is the workload's progress, recorded with
/// every crash state.
#[derive(Debug)]
pub(crate) struct SimDisk<P> {
    root: PathBuf,
    workload: ThreadId,
    state: Mutex<DiskState<P>>,
}

impl<P: Clone + Send + std::fmt::Debug> SimDisk<P> {
    /// A disk over the (empty or fully synced) directory `root`, whose crash points are taken
    /// on the calling thread with probability `chance.0 / chance.1` each.
    pub(crate) fn new(root: &Path, seed: u64, chance: (u64, u64), progress: P) -> SimDisk<P> {
        let disk = SimDisk {
            root: root.to_path_buf(),
            workload: std::thread::current().id(),
            state: Mutex::new(DiskState {
                lie: Lie::None,
                full: false,
                dirs: BTreeMap::new(),
                files: HashMap::new(),
                live: HashMap::new(),
                last: HashMap::new(),
                next_id: 1,
                progress,
                rng: Rng::new(seed),
                chance,
                points: 0,
                crashes: Vec::new(),
            }),
        };
        {
            // What exists already is durable: the scratch directory stands for a mounted disk.
            let mut state = disk.lock();
            disk.reconcile_all(&mut state);
            for model in state.dirs.values_mut() {
                model.durable = model.current.clone();
                model.pending.clear();
            }
        }
        disk
    }

    fn lock(&self) -> MutexGuard<'_, DiskState<P>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the disk tell `lie` from now on.
    pub(crate) fn lie(&self, lie: Lie) {
        self.lock().lie = lie;
    }

    /// Makes preallocations (`allocate`) fail with `ENOSPC` from now on, or succeed again.
    pub(crate) fn set_full(&self, full: bool) {
        self.lock().full = full;
    }

    /// Changes the workload's progress (what it has been told is durable, what it attempted).
    pub(crate) fn progress(&self, change: impl FnOnce(&mut P)) {
        change(&mut self.lock().progress);
    }

    /// The workload's progress now.
    pub(crate) fn current_progress(&self) -> P {
        self.lock().progress.clone()
    }

    /// A crash point between the workload's steps (taken with the disk's probability).
    pub(crate) fn crash_point(&self, what: &str) {
        let mut state = self.lock();
        self.maybe_crash(&mut state, || what.to_owned());
    }

    /// A crash point taken for certain.
    pub(crate) fn crash_now(&self, what: &str) {
        let mut state = self.lock();
        self.record_crash(&mut state, what.to_owned());
    }

    /// The crash states recorded since the last call.
    pub(crate) fn take_crashes(&self) -> Vec<CrashState<P>> {
        std::mem::take(&mut self.lock().crashes)
    }

    fn maybe_crash(&self, state: &mut DiskState<P>, what: impl FnOnce() -> String) {
        if std::thread::current().id() != self.workload {
            return;
        }
        let (numerator, denominator) = state.chance;
        if state.rng.chance(numerator, denominator) {
            self.record_crash(state, what());
        }
    }

    fn record_crash(&self, state: &mut DiskState<P>, what: String) {
        self.reconcile_all(state);
        state.points += 1;
        let mut files = HashMap::new();
        let mut dirs = BTreeMap::new();
        for (rel, model) in &state.dirs {
            let referenced = model
                .durable
                .values()
                .chain(model.current.values())
                .copied()
                .chain(model.pending.iter().map(|op| match op {
                    DirOp::Link { node, .. } | DirOp::Unlink { node, .. } => *node,
                    DirOp::Rename { id, .. } => Node::File(*id),
                }));
            for node in referenced {
                let Node::File(id) = node else { continue };
                if files.contains_key(&id) {
                    continue;
                }
                let model = state.files.get(&id).cloned().unwrap_or_default();
                let linked = state.dirs.iter().find_map(|(dir, m)| {
                    m.current
                        .iter()
                        .find(|(_, n)| **n == Node::File(id))
                        .map(|(name, _)| self.root.join(dir).join(name))
                });
                let current = linked
                    .and_then(|path| std::fs::read(path).ok())
                    .or(model.unlinked.clone())
                    .unwrap_or_else(|| model.durable.clone());
                files.insert(
                    id,
                    FileState {
                        durable: model.durable,
                        current,
                    },
                );
            }
            dirs.insert(rel.clone(), (model.durable.clone(), model.pending.clone()));
        }
        state.crashes.push(CrashState {
            progress: state.progress.clone(),
            point: state.points,
            what,
            dirs,
            files,
        });
    }

    fn relative(&self, path: &Path) -> Option<PathBuf> {
        path.strip_prefix(&self.root).ok().map(Path::to_path_buf)
    }

    /// Brings every directory's model up to date with what the file system holds.
    fn reconcile_all(&self, state: &mut DiskState<P>) {
        let mut todo = vec![PathBuf::new()];
        while let Some(rel) = todo.pop() {
            self.reconcile(state, &rel);
            if let Some(model) = state.dirs.get(&rel) {
                for (name, node) in &model.current {
                    if *node == Node::Dir {
                        todo.push(rel.join(name));
                    }
                }
            }
        }
    }

    /// Records, as entry changes, what happened in directory `rel` outside the seam: files
    /// created (`O_CREAT`), directories created, files removed.
    fn reconcile(&self, state: &mut DiskState<P>, rel: &Path) {
        let mut listed = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(self.root.join(rel)) {
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                let node = if meta.is_dir() {
                    Node::Dir
                } else {
                    Node::File(meta.ino())
                };
                listed.insert(entry.file_name(), node);
            }
        }
        let known = state
            .dirs
            .entry(rel.to_path_buf())
            .or_default()
            .current
            .clone();
        let same = |state: &DiskState<P>, listed: Option<&Node>, node: &Node| match (listed, node) {
            (Some(Node::Dir), Node::Dir) => true,
            (Some(Node::File(ino)), Node::File(id)) => state.live.get(ino) == Some(id),
            _ => false,
        };
        for (name, node) in &known {
            if !same(state, listed.get(name), node) {
                let model = state.dirs.entry(rel.to_path_buf()).or_default();
                model.current.remove(name);
                model.pending.push(DirOp::Unlink {
                    name: name.clone(),
                    node: *node,
                });
                if let Node::File(id) = node {
                    forget_if_unlinked(state, *id);
                }
            }
        }
        for (name, listed_node) in listed {
            let current = state
                .dirs
                .get(rel)
                .and_then(|m| m.current.get(&name))
                .copied();
            if current.is_some_and(|node| same(state, Some(&listed_node), &node)) {
                continue;
            }
            let node = match listed_node {
                Node::Dir => {
                    state.dirs.entry(rel.join(&name)).or_default();
                    Node::Dir
                }
                Node::File(ino) => Node::File(identity(state, ino)),
            };
            let model = state.dirs.entry(rel.to_path_buf()).or_default();
            model.current.insert(name.clone(), node);
            model.pending.push(DirOp::Link { name, node });
        }
    }

    /// The model identity of an open file (reconciling its directory if it is new).
    fn identify(&self, state: &mut DiskState<P>, file: &File) -> io::Result<u64> {
        let ino = file.metadata()?.ino();
        if let Some(id) = state.live.get(&ino) {
            return Ok(*id);
        }
        let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        if let Some(rel) = path.parent().and_then(|p| self.relative(p)) {
            self.reconcile(state, &rel);
        }
        if let Some(id) = state.live.get(&ino).or(state.last.get(&ino)) {
            return Ok(*id);
        }
        Ok(identity(state, ino))
    }

    fn sync_file(&self, file: &File) -> io::Result<()> {
        let mut state = self.lock();
        self.maybe_crash(&mut state, || format!("sync of {}", describe(file)));
        let id = self.identify(&mut state, file)?;
        if state.lie == Lie::SegmentSyncs && describe(file).ends_with(".seg") {
            return Ok(());
        }
        // The content as the sync starts: what was written before the call is durable after.
        let mut content = Vec::new();
        File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))?.read_to_end(&mut content)?;
        state.files.entry(id).or_default().durable = content;
        Ok(())
    }

    /// The page-cache content of the file named `path` now, if it has one.
    fn capture(&self, state: &mut DiskState<P>, rel: &Path, name: &OsString) {
        let Some(Node::File(id)) = state
            .dirs
            .get(rel)
            .and_then(|m| m.current.get(name))
            .copied()
        else {
            return;
        };
        if let Ok(bytes) = std::fs::read(self.root.join(rel).join(name)) {
            state.files.entry(id).or_default().unlinked = Some(bytes);
        }
    }
}

/// A fresh identity for inode `ino`, which has just got a name.
fn identity<P>(state: &mut DiskState<P>, ino: u64) -> u64 {
    if let Some(id) = state.live.get(&ino) {
        return *id;
    }
    let id = state.next_id;
    state.next_id += 1;
    state.live.insert(ino, id);
    state.last.insert(ino, id);
    state.files.entry(id).or_default();
    id
}

/// Drops the inode -> identity link of a file once no current entry names it.
fn forget_if_unlinked<P>(state: &mut DiskState<P>, id: u64) {
    let named = state
        .dirs
        .values()
        .any(|m| m.current.values().any(|n| *n == Node::File(id)));
    if !named {
        state.live.retain(|_, v| *v != id);
    }
}

fn describe(file: &File) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "an unnamed file".into())
}

fn split(path: &Path) -> (PathBuf, OsString) {
    (
        path.parent().map(Path::to_path_buf).unwrap_or_default(),
        path.file_name().map(OsString::from).unwrap_or_default(),
    )
}

impl<P: Clone + Send + Sync + std::fmt::Debug> Io for SimDisk<P> {
    fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
        let mut state = self.lock();
        self.maybe_crash(&mut state, || format!("write of {}", describe(file)));
        file.write_at(buf, offset)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.sync_file(file)
    }

    fn allocate(&self, file: &File, len: u64) -> io::Result<bool> {
        let mut state = self.lock();
        self.maybe_crash(&mut state, || {
            format!("preallocation of {}", describe(file))
        });
        if state.full {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        StdIo.allocate(file, len)
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        self.sync_file(file)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        self.maybe_crash(&mut state, || {
            format!("sync of directory {}", dir.display())
        });
        let Some(rel) = self.relative(dir) else {
            return Ok(());
        };
        self.reconcile(&mut state, &rel);
        if state.lie == Lie::DirectorySyncs {
            return Ok(());
        }
        let model = state.dirs.entry(rel).or_default();
        model.durable = model.current.clone();
        model.pending.clear();
        Ok(())
    }

    fn rename(&self, source: &Path, target: &Path) -> io::Result<()> {
        let mut state = self.lock();
        self.maybe_crash(&mut state, || format!("rename to {}", target.display()));
        let (Some(from_dir), Some(to_dir)) = (self.relative(source), self.relative(target)) else {
            return StdIo.rename(source, target);
        };
        let ((rel, from), (to_rel, to)) = (split(&from_dir), split(&to_dir));
        assert_eq!(rel, to_rel, "the log renames only within one directory");
        self.reconcile(&mut state, &rel);
        self.capture(&mut state, &rel, &to);
        StdIo.rename(source, target)?;
        let model = state.dirs.entry(rel.clone()).or_default();
        let Some(Node::File(id)) = model.current.remove(&from) else {
            // Not a file the model knows: list the directory again.
            self.reconcile(&mut state, &rel);
            return Ok(());
        };
        let replaced = model.current.insert(to.clone(), Node::File(id));
        model.pending.push(DirOp::Rename { from, to, id });
        if let Some(Node::File(old)) = replaced {
            forget_if_unlinked(&mut state, old);
        }
        Ok(())
    }

    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        let mut state = self.lock();
        self.maybe_crash(&mut state, || format!("link to {}", link.display()));
        let (Some(from_dir), Some(to_dir)) = (self.relative(original), self.relative(link)) else {
            return StdIo.hard_link(original, link);
        };
        let ((rel, from), (to_rel, to)) = (split(&from_dir), split(&to_dir));
        assert_eq!(rel, to_rel, "the log links only within one directory");
        self.reconcile(&mut state, &rel);
        StdIo.hard_link(original, link)?;
        let model = state.dirs.entry(rel).or_default();
        if let Some(node) = model.current.get(&from).copied() {
            model.current.insert(to.clone(), node);
            model.pending.push(DirOp::Link { name: to, node });
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        self.maybe_crash(&mut state, || format!("removal of {}", path.display()));
        let Some(rel_path) = self.relative(path) else {
            return StdIo.remove_file(path);
        };
        let (rel, name) = split(&rel_path);
        self.reconcile(&mut state, &rel);
        self.capture(&mut state, &rel, &name);
        StdIo.remove_file(path)?;
        let model = state.dirs.entry(rel).or_default();
        if let Some(node) = model.current.remove(&name) {
            model.pending.push(DirOp::Unlink { name, node });
            if let Node::File(id) = node {
                forget_if_unlinked(&mut state, id);
            }
        }
        Ok(())
    }
}

/// How the unsynced changes of a crash state are chosen for one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Every change survives: what a process crash leaves (the page cache).
    AllNew,
    /// No unsynced change survives: only what was synced.
    AllOld,
    /// Each change survives with probability `new_per_mille / 1000`; a changed sector is
    /// torn at a random byte with probability `tear_per_mille / 1000`.
    Mixed {
        new_per_mille: u64,
        tear_per_mille: u64,
    },
}

/// What an image holds, as far as the checks care.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ImageInfo {
    /// Some unsynced change was lost while a later one (by offset in a file, by order in a
    /// directory) survived, or a sector was torn with its new bytes after old ones: the image
    /// is not what any moment of the page cache held, up to torn writes at the frontier.
    pub(crate) reordered: bool,
    /// Sectors that differed between the synced and the page-cache content.
    pub(crate) dirty_sectors: u64,
}

/// Tracks whether choices along one file (or directory) are out of order.
#[derive(Default)]
struct Order {
    dropped: bool,
    reordered: bool,
}

impl Order {
    fn kept(&mut self) {
        self.reordered |= self.dropped;
    }

    fn dropped(&mut self) {
        self.dropped = true;
    }
}

impl<P> CrashState<P> {
    /// Writes one image a power loss at this point could leave into the empty directory
    /// `dest`.
    ///
    /// # Panics
    ///
    /// If the image cannot be written.
    pub(crate) fn materialize(&self, rng: &mut Rng, pick: Pick, dest: &Path) -> ImageInfo {
        let mut info = ImageInfo::default();
        let mut images: HashMap<u64, Vec<u8>> = HashMap::new();
        self.materialize_dir(rng, pick, Path::new(""), dest, &mut info, &mut images);
        info
    }

    fn materialize_dir(
        &self,
        rng: &mut Rng,
        pick: Pick,
        rel: &Path,
        dest: &Path,
        info: &mut ImageInfo,
        images: &mut HashMap<u64, Vec<u8>>,
    ) {
        let target = dest.join(rel);
        std::fs::create_dir_all(&target).expect("create an image directory");
        let Some((durable, pending)) = self.dirs.get(rel) else {
            return;
        };
        let mut entries = durable.clone();
        let mut order = Order::default();
        for op in pending {
            if !survives(rng, pick) {
                order.dropped();
                continue;
            }
            order.kept();
            match op {
                DirOp::Link { name, node } => {
                    entries.insert(name.clone(), *node);
                }
                DirOp::Unlink { name, node } => {
                    if entries.get(name) == Some(node) {
                        entries.remove(name);
                    }
                }
                DirOp::Rename { from, to, id } => {
                    if entries.get(from) == Some(&Node::File(*id)) {
                        entries.remove(from);
                    }
                    entries.insert(to.clone(), Node::File(*id));
                }
            }
        }
        info.reordered |= order.reordered;
        for (name, node) in entries {
            match node {
                Node::Dir => {
                    self.materialize_dir(rng, pick, &rel.join(&name), dest, info, images);
                }
                Node::File(id) => {
                    let bytes = images
                        .entry(id)
                        .or_insert_with(|| match self.files.get(&id) {
                            Some(file) => file_image(rng, pick, file, info),
                            None => Vec::new(),
                        });
                    std::fs::write(target.join(&name), bytes.as_slice())
                        .expect("write an image file");
                }
            }
        }
    }
}

fn survives(rng: &mut Rng, pick: Pick) -> bool {
    match pick {
        Pick::AllNew => true,
        Pick::AllOld => false,
        Pick::Mixed { new_per_mille, .. } => rng.below(1000) < new_per_mille,
    }
}

/// One file's content after the power loss: synced bytes, and each differing sector old or
/// new (or torn).
fn file_image(rng: &mut Rng, pick: Pick, file: &FileState, info: &mut ImageInfo) -> Vec<u8> {
    let (old, new) = (&file.durable, &file.current);
    let len = if old.len() == new.len() || survives(rng, pick) {
        new.len()
    } else {
        old.len()
    };
    let mut out = vec![0u8; len];
    let mut order = Order::default();
    let sector_of = |bytes: &[u8], start: usize, end: usize| -> Vec<u8> {
        let mut sector = vec![0u8; end - start];
        if start < bytes.len() {
            let have = &bytes[start..end.min(bytes.len())];
            sector[..have.len()].copy_from_slice(have);
        }
        sector
    };
    for start in (0..len).step_by(SECTOR) {
        let end = (start + SECTOR).min(len);
        let (was, now) = (sector_of(old, start, end), sector_of(new, start, end));
        let chosen = if was == now {
            now
        } else {
            info.dirty_sectors += 1;
            let tear = match pick {
                Pick::Mixed { tear_per_mille, .. } => rng.below(1000) < tear_per_mille,
                _ => false,
            };
            if tear {
                let cut = rng.range(1, (end - start) as u64) as usize;
                if rng.chance(1, 2) {
                    order.kept();
                    order.dropped();
                    [&now[..cut], &was[cut..]].concat()
                } else {
                    order.dropped();
                    order.kept();
                    [&was[..cut], &now[cut..]].concat()
                }
            } else if survives(rng, pick) {
                order.kept();
                now
            } else {
                order.dropped();
                was
            }
        };
        out[start..end].copy_from_slice(&chosen);
    }
    info.reordered |= order.reordered;
    out
}

/// An empty directory for the next image (cleared if it was used before).
pub(crate) fn fresh_dir(path: &Path) {
    if path.exists() {
        std::fs::remove_dir_all(path).expect("clear the image directory");
    }
    std::fs::create_dir_all(path).expect("create the image directory");
}
