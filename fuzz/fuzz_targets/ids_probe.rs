//! An id index file beside a log store's segments (`format/store.md` [STORE-07]) on arbitrary
//! bytes: loading it (`decode_pairs`) and the in-place read of a handle's first lookups
//! (`probe_pairs`) never panic, and where both answer for a file whose pairs are in hash
//! order, as a writer leaves them, they give the same log sequences: for the input's hash
//! and for the first, middle and last hashes the file holds.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use esl_replay::store::id_files::{decode_pairs, probe_pairs};
use esl_replay_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

/// The file every run writes its input to, in memory where possible.
fn file() -> &'static PathBuf {
    static FILE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = FILE.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("a scratch directory");
        let path = dir.path().join("00000000000000000001.ids");
        (dir, path)
    });
    path
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let hash = input.u64();
    let bytes = input.rest();
    // The base the file names, so that a file of valid layout is read rather than refused.
    let base = bytes.get(16..24).map_or(0, |b| {
        u64::from_le_bytes(b.try_into().expect("eight bytes"))
    });
    std::fs::write(file(), bytes).expect("write the file");
    let loaded = decode_pairs(bytes, base, None);
    let mut hashes = vec![hash];
    if let Some(pairs) = &loaded {
        for at in [0, pairs.len() / 2, pairs.len().saturating_sub(1)] {
            hashes.extend(pairs.get(at).map(|p| p.0));
        }
    }
    for hash in hashes {
        let probed = probe_pairs(file(), base, None, hash);
        if let (Some(pairs), Some(seqs)) = (&loaded, probed)
            && pairs.is_sorted_by_key(|p| p.0)
        {
            let mut expected: Vec<u64> =
                pairs.iter().filter(|p| p.0 == hash).map(|p| p.1).collect();
            expected.sort_unstable();
            assert_eq!(seqs, expected, "hash {hash:#x}");
        }
    }
});
