//! A fast, deterministic hasher for the simulator's integer-keyed maps and sets.
//!
//! The standard SipHash is built to resist adversarial keys, which volume and event ids
//! are not; it dominated the rebuild loop. Maps using this hasher are only looked up,
//! never iterated where order could matter.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hashing of integer keys (FxHash's scheme).
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.hash
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.hash = (self.hash.rotate_left(5) ^ i).wrapping_mul(SEED);
    }
}

/// A map keyed by integer ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A set of integer ids.
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;
