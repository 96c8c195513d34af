//! `codec::decode_index_file` on arbitrary bytes: it never panics, it returns `None` exactly
//! when the header is invalid or names another segment, and what it returns is the valid,
//! ordered prefix of the file: every entry and the footer re-encode to the bytes they came
//! from.

#![no_main]

use esl_replay::storage::codec::{
    self, ENTRY_LEN, FileHeader, HEADER_LEN, INDEX_MAGIC, IndexEntry, IndexFooter,
};
use esl_replay_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let mode = input.u8();
    let (mut base, mut salt) = (input.u64(), input.u64());
    let file = input.rest();
    let header = FileHeader::decode(file, INDEX_MAGIC);
    if mode & 1 != 0
        && let Ok(header) = header
    {
        (base, salt) = (header.base, header.salt);
    }

    let Some(index) = codec::decode_index_file(file, base, salt) else {
        assert!(
            !header.is_ok_and(|h| h.base == base && h.salt == salt),
            "None only for a foreign or invalid header"
        );
        return;
    };
    let header = header.expect("Some implies a valid header");
    assert_eq!((header.base, header.salt), (base, salt));
    assert_eq!(header.encode(INDEX_MAGIC), file[..HEADER_LEN]);

    let slot = |i: usize| &file[HEADER_LEN + i * ENTRY_LEN..HEADER_LEN + (i + 1) * ENTRY_LEN];
    for (i, entry) in index.entries.iter().enumerate() {
        assert!(entry.seq >= base, "entries never precede the segment");
        assert_eq!(entry.encode(salt), slot(i), "entry {i} re-encodes");
        if let Some(previous) = i.checked_sub(1).map(|p| index.entries[p]) {
            assert!(entry.seq > previous.seq && entry.offset > previous.offset);
        }
    }
    if let Some(footer) = index.footer {
        assert_eq!(
            footer.encode(salt),
            slot(index.entries.len()),
            "footer re-encodes"
        );
    }
    // Round trip of what was decoded.
    let mut again = header.encode(INDEX_MAGIC).to_vec();
    for entry in &index.entries {
        again.extend_from_slice(&IndexEntry::encode(entry, salt));
    }
    if let Some(footer) = index.footer {
        again.extend_from_slice(&IndexFooter::encode(&footer, salt));
    }
    assert_eq!(codec::decode_index_file(&again, base, salt), Some(index));
});
