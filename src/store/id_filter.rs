//! Bloom filters over the id hashes of sealed segments, laid side by side: a lookup by id
//! reads one row (one cache line for eight segments) to learn which segments may hold the
//! id, instead of searching every segment's pairs (a cache miss or two each).
//!
//! A filter has no false negatives: every hash added sets its bits in its word. A false
//! positive costs one search of the segment.

/// Hashes a filter word holds on average, at most: 10.7 bits or more each (words are rounded
/// up to a power of two), which with three bits a hash lets 1-2 % of absent hashes through.
const HASHES_PER_WORD: usize = 6;

/// Spreads an id hash's entropy over all its bits (the stored hash is FNV-1a, whose low bits
/// are weak): the splitmix64 finaliser.
fn mix(hash: u64) -> u64 {
    let mut z = hash;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The word of a mixed hash among `2^bits`: its top bits, so that a hash's word among fewer
/// words is its word among more, shifted.
fn block(mixed: u64, bits: u32) -> usize {
    usize::try_from(mixed.checked_shr(64 - bits).unwrap_or(0)).unwrap_or(0)
}

/// The three bits a mixed hash sets in its word.
fn mask(mixed: u64) -> u64 {
    (1 << (mixed & 63)) | (1 << ((mixed >> 6) & 63)) | (1 << ((mixed >> 12) & 63))
}

/// One segment's filter: `2^bits` words.
#[derive(Clone, Debug)]
pub(crate) struct SegmentFilter {
    bits: u32,
    words: Vec<u64>,
}

impl SegmentFilter {
    pub(crate) fn new(hashes: impl ExactSizeIterator<Item = u64>) -> SegmentFilter {
        let bits = (hashes.len() / HASHES_PER_WORD)
            .max(1)
            .next_power_of_two()
            .ilog2();
        let mut words = vec![0u64; 1 << bits];
        for hash in hashes {
            let mixed = mix(hash);
            if let Some(word) = words.get_mut(block(mixed, bits)) {
                *word |= mask(mixed);
            }
        }
        SegmentFilter { bits, words }
    }

    /// Whether a record whose id hashes to `hash` may be in the segment (`false`: it is not).
    pub(crate) fn may_hold(&self, hash: u64) -> bool {
        let mixed = mix(hash);
        let mask = mask(mixed);
        self.words
            .get(block(mixed, self.bits))
            .is_none_or(|word| word & mask == mask)
    }

    /// The memory its words take.
    pub(crate) fn bytes(&self) -> usize {
        self.words.len() * size_of::<u64>()
    }

    /// Halves the filter: each word becomes the union of the two it covered (a hash's word
    /// among fewer words is its word among more, shifted), so it still holds every hash it
    /// held and lets about twice as many others through. `false` if it is one word already.
    pub(crate) fn fold(&mut self) -> bool {
        if self.bits == 0 {
            return false;
        }
        let (pairs, _) = self.words.as_chunks::<2>();
        self.words = pairs.iter().map(|[first, second]| first | second).collect();
        self.bits -= 1;
        true
    }

    /// `2^bits` is its number of words.
    pub(crate) fn bits(&self) -> u32 {
        self.bits
    }

    /// This filter's word for `block` of `2^bits` words (`bits` at least its own): a hash's
    /// word here is the top bits of its block there.
    fn word_for(&self, bits: u32, block: usize) -> u64 {
        // Beyond the words (which `FilterRows::new` never asks for): match everything.
        self.words
            .get(block >> (bits - self.bits))
            .copied()
            .unwrap_or(u64::MAX)
    }
}

/// The filters of several segments, interleaved: row `b` holds each segment's word `b`.
#[derive(Debug)]
pub(crate) struct FilterRows {
    bits: u32,
    segments: usize,
    words: Vec<u64>,
}

impl FilterRows {
    /// Rows over `filters`, in their order, as many as the largest has words (a smaller
    /// filter's words repeat).
    pub(crate) fn new(filters: &[&SegmentFilter]) -> FilterRows {
        let bits = filters.iter().map(|f| f.bits).max().unwrap_or(0);
        let segments = filters.len();
        let mut words = Vec::with_capacity(segments << bits);
        for block in 0..1usize << bits {
            words.extend(filters.iter().map(|f| f.word_for(bits, block)));
        }
        FilterRows {
            bits,
            segments,
            words,
        }
    }

    /// The positions (in the order given to [`FilterRows::new`]) of the segments that may
    /// hold `hash`.
    pub(crate) fn matches(&self, hash: u64) -> impl DoubleEndedIterator<Item = usize> + '_ {
        let mixed = mix(hash);
        let mask = mask(mixed);
        let first = block(mixed, self.bits) * self.segments;
        // A row that is not there (which `new` never leaves) passes every segment.
        let row = self.words.get(first..first + self.segments);
        (0..self.segments).filter(move |at| {
            row.and_then(|row| row.get(*at))
                .is_none_or(|word| word & mask == mask)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every hash added is matched in its own segment, whatever the segments' sizes, and
    /// each segment's filter lets few absent hashes through.
    #[test]
    fn rows_match_every_hash_of_a_segment_and_few_others() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let sizes = [0, 1, 5, 1_000, 70_000, 3_000];
        let segments: Vec<Vec<u64>> = sizes
            .iter()
            .map(|n| (0..*n).map(|_| next()).collect())
            .collect();
        let filters: Vec<SegmentFilter> = segments
            .iter()
            .map(|hashes| SegmentFilter::new(hashes.iter().copied()))
            .collect();
        let rows = FilterRows::new(&filters.iter().collect::<Vec<_>>());
        for (at, hashes) in segments.iter().enumerate() {
            for hash in hashes {
                assert!(rows.matches(*hash).any(|s| s == at), "segment {at}");
                assert!(filters[at].may_hold(*hash), "segment {at} alone");
            }
        }
        let probes = 100_000;
        let mut passed = [0usize; 6];
        for _ in 0..probes {
            let hash = next();
            for at in rows.matches(hash) {
                passed[at] += 1;
            }
            // A filter alone answers as its column of the rows does.
            for (at, filter) in filters.iter().enumerate() {
                assert_eq!(
                    filter.may_hold(hash),
                    rows.matches(hash).any(|s| s == at),
                    "segment {at}"
                );
            }
        }
        assert_eq!(passed[0], 0, "an empty segment's filter passed a hash");
        for (at, passed) in passed.iter().enumerate() {
            assert!(
                *passed < probes / 20,
                "segment {at}: {passed} of {probes} through"
            );
        }
    }

    /// A folded filter still holds every hash, and lets more others through.
    #[test]
    fn folded_filters_hold_every_hash() {
        let hashes: Vec<u64> = (0..20_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let mut filter = SegmentFilter::new(hashes.iter().copied());
        let absent = |filter: &SegmentFilter| {
            (1..=10_000u64)
                .filter(|i| filter.may_hold(i.wrapping_mul(0xd6e8_feb8_6659_fd93)))
                .count()
        };
        let mut passed = absent(&filter);
        while filter.bits() > 0 {
            let bytes = filter.bytes();
            assert!(filter.fold());
            assert_eq!(filter.bytes(), bytes / 2);
            assert!(hashes.iter().all(|hash| filter.may_hold(*hash)));
            let now = absent(&filter);
            assert!(now >= passed, "{now} < {passed}");
            passed = now;
        }
        assert!(!filter.fold());
        assert_eq!(filter.bytes(), 8);
    }

    #[test]
    fn no_filters_match_nothing() {
        let rows = FilterRows::new(&[]);
        assert_eq!(rows.matches(42).count(), 0);
    }
}
