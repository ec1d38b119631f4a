//! Stable, platform-independent 64-bit hashing.
//!
//! # Stability contract
//!
//! The values of [`hash64`], [`hash64_seeded`], [`text_hash`] and [`Hasher64`] are
//! **persisted**: they key embedding caches on disk, name feature buckets of trained
//! encoders and make up model fingerprints. They must therefore never change, on any
//! platform, compiler or crate version. The functions only use wrapping integer arithmetic
//! on explicitly little-endian inputs (no `std::hash`, whose `DefaultHasher` is randomly
//! keyed and explicitly unstable), and the tests pin known output values so that an
//! accidental edit fails. If a different hash is ever needed, add a new function and
//! version the things that use it; do not edit these.
//!
//! The construction is FNV-1a 64 over the bytes, followed by the splitmix64 finaliser
//! (`mix64`). FNV-1a alone has weak avalanche in its high and low bits for short inputs,
//! which matters when hashes are reduced modulo a bucket count; the finaliser fixes that.
//!
//! The seeded generator built on the same finaliser is [`crate::random::SplitMix64`].

/// The FNV-1a 64 offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// The FNV-1a 64 prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// The golden-ratio increment of splitmix64.
pub(crate) const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The splitmix64 finaliser (a bijection on `u64` with full avalanche).
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Raw FNV-1a 64 state update.
#[inline]
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Stable 64-bit hash of `bytes`: FNV-1a 64 followed by the splitmix64 finaliser.
///
/// Persisted in caches: never change this function.
#[inline]
pub fn hash64(bytes: &[u8]) -> u64 {
    mix64(fnv1a(FNV_OFFSET, bytes))
}

/// `[hash64(a), hash64(b), hash64(c), hash64(d)]` for four inputs of equal length,
/// computed interleaved: FNV-1a is one long dependency chain per input, so four chains
/// side by side run about four times as fast as one after the other. Used to digest large
/// weight tensors for fingerprints.
///
/// # Panics
/// If the inputs differ in length.
pub fn hash64_x4(inputs: [&[u8]; 4]) -> [u64; 4] {
    let n = inputs[0].len();
    assert!(
        inputs.iter().all(|x| x.len() == n),
        "hash64_x4 needs inputs of equal length"
    );
    let mut h = [FNV_OFFSET; 4];
    for i in 0..n {
        for (lane, input) in h.iter_mut().zip(&inputs) {
            *lane ^= u64::from(input[i]);
            *lane = lane.wrapping_mul(FNV_PRIME);
        }
    }
    h.map(mix64)
}

/// Stable 64-bit hash of `bytes` under `seed`.
///
/// Defined as `hash64(seed.to_le_bytes() ++ bytes)`, so different seeds give independent
/// hash functions. Persisted in caches: never change this function.
#[inline]
pub fn hash64_seeded(seed: u64, bytes: &[u8]) -> u64 {
    mix64(fnv1a(fnv1a(FNV_OFFSET, &seed.to_le_bytes()), bytes))
}

/// Stable content hash of a text (its UTF-8 bytes; no normalisation of any kind).
///
/// Persisted in caches: never change this function.
#[inline]
pub fn text_hash(text: &str) -> u64 {
    hash64(text.as_bytes())
}

/// Streaming form of [`hash64`], for fingerprints built from several pieces.
///
/// `Hasher64::new()` fed with `a` then `b` finishes to `hash64(a ++ b)`: the pieces are
/// simply concatenated, so callers that hash variable-length pieces should add lengths or
/// separators themselves (see [`Hasher64::update_framed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hasher64 {
    state: u64,
}

impl Default for Hasher64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher64 {
    /// A hasher with nothing fed yet.
    pub fn new() -> Self {
        Self { state: FNV_OFFSET }
    }

    /// Feeds `bytes`.
    #[inline]
    pub fn update(&mut self, bytes: &[u8]) {
        self.state = fnv1a(self.state, bytes);
    }

    /// Feeds a `u64` as its 8 little-endian bytes.
    #[inline]
    pub fn update_u64(&mut self, value: u64) {
        self.update(&value.to_le_bytes());
    }

    /// Feeds the length of `bytes` (as a little-endian `u64`) and then `bytes`, so that the
    /// boundaries between variable-length pieces are part of the hash.
    #[inline]
    pub fn update_framed(&mut self, bytes: &[u8]) {
        self.update_u64(bytes.len() as u64);
        self.update(bytes);
    }

    /// The hash of everything fed so far (the hasher can keep being fed afterwards).
    #[inline]
    pub fn finish(&self) -> u64 {
        mix64(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_published_vectors() {
        // From the FNV reference test suite (FNV-1a 64).
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn hash_values_are_pinned() {
        // These values are persisted in caches: if this test fails, the hash changed.
        assert_eq!(hash64(b""), PINNED[0]);
        assert_eq!(hash64(b"a"), PINNED[1]);
        assert_eq!(hash64(b"hello world"), PINNED[2]);
        assert_eq!(text_hash("Grüße, 世界"), PINNED[3]);
        assert_eq!(hash64_seeded(0, b"a"), PINNED[4]);
        assert_eq!(hash64_seeded(42, b"hello world"), PINNED[5]);
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), PINNED[6]);
    }

    const PINNED: [u64; 7] = [
        0xf52a15e9a9b5e89b,
        0x02c0bdbf481420f8,
        0x05cb585112be1151,
        0x32746c8a51656ae0,
        0x0d38d3c8a628cc82,
        0xd78238e0477c0a97,
        0x5692161d100b05e5,
    ];

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for split in [0, 1, 17, 500, 999, 1000] {
            let mut h = Hasher64::new();
            h.update(&data[..split]);
            h.update(&data[split..]);
            assert_eq!(h.finish(), hash64(&data), "split at {split}");
        }
        let mut h = Hasher64::new();
        h.update_u64(42);
        h.update(b"hello world");
        assert_eq!(h.finish(), hash64_seeded(42, b"hello world"));
        // Framing separates ("ab", "c") from ("a", "bc").
        let framed = |a: &[u8], b: &[u8]| {
            let mut h = Hasher64::new();
            h.update_framed(a);
            h.update_framed(b);
            h.finish()
        };
        assert_ne!(framed(b"ab", b"c"), framed(b"a", b"bc"));
        assert_ne!(hash64_seeded(1, b"x"), hash64_seeded(2, b"x"));
    }

    #[test]
    fn four_lanes_equal_one_at_a_time() {
        let data: Vec<u8> = (0..4000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        let (a, b, c, d) = (
            &data[..1000],
            &data[1000..2000],
            &data[2000..3000],
            &data[3000..],
        );
        assert_eq!(
            hash64_x4([a, b, c, d]),
            [hash64(a), hash64(b), hash64(c), hash64(d)]
        );
        assert_eq!(hash64_x4([b""; 4]), [PINNED[0]; 4]);
    }
}
