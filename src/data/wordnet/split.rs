//! Deterministic assignment of synsets to splits and to the sample: a seeded
//! FNV-1a/splitmix64 hash of the synset id, plain integer arithmetic that gives the same
//! answer on every platform.

/// Salt of the hash that assigns a synset to train/dev/test.
pub(super) const SPLIT_SALT: &[u8] = b"split";
/// Salt of the hash that ranks synsets for `sample`; distinct from the split salt so the
/// sample is not biased towards one split.
pub(super) const SAMPLE_SALT: &[u8] = b"sample";

/// The three qrels splits, numbered as the hash assigns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Split {
    Train = 0,
    Dev = 1,
    Test = 2,
}

impl Split {
    /// The split's name, which is also its qrels file stem.
    pub(super) fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }
}

/// The split of a synset: `h % 10` of its seeded hash, 0-7 train, 8 dev, 9 test.
pub(super) fn split_of(seed: u64, synset_id: &str) -> Split {
    match seeded_hash(seed, SPLIT_SALT, synset_id) % 10 {
        0..=7 => Split::Train,
        8 => Split::Dev,
        _ => Split::Test,
    }
}

/// FNV-1a 64 offset basis.
pub(super) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `bytes`, continuing from `h` (start with [`FNV_OFFSET`]).
pub(super) fn fnv1a64(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The splitmix64 output function applied to one state: a strong 64-bit finaliser that
/// spreads FNV's weak low bits before `% 10`.
pub(super) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of `(seed, salt, id)`: FNV-1a over the seed's little-endian bytes, the salt and
/// the id, then splitmix64. Plain integer arithmetic, so it is the same everywhere.
pub(super) fn seeded_hash(seed: u64, salt: &[u8], id: &str) -> u64 {
    let h = fnv1a64(FNV_OFFSET, &seed.to_le_bytes());
    let h = fnv1a64(h, salt);
    let h = fnv1a64(h, id.as_bytes());
    splitmix64(h)
}
