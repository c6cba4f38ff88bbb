//! A bounded map that forgets its least recently used half at once, for the caches of a
//! frontend and the cut records of a reader: two generations, the newer taking inserts and
//! the entries read from the older; when the newer holds half the bound it becomes the
//! older and the older is dropped. A lookup costs at most two hash probes, nothing is kept
//! past the bound, and an entry used since the last turn survives the next. (A map cleared
//! when full forgot every entry at once: a frontend whose working set was just over the
//! bound then asked the master again for every block it served.)

use std::collections::HashMap;
use std::hash::Hash;

/// See the module.
#[derive(Debug)]
pub struct TwoGenerations<K, V> {
    newer: HashMap<K, V>,
    older: HashMap<K, V>,
    half: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> TwoGenerations<K, V> {
    /// A map of at most `max` entries (at least 2).
    pub fn new(max: usize) -> TwoGenerations<K, V> {
        TwoGenerations { newer: HashMap::new(), older: HashMap::new(), half: (max / 2).max(1) }
    }

    /// The value of `key`; one found in the older generation moves to the newer.
    pub fn get(&mut self, key: &K) -> Option<V> {
        if let Some(v) = self.newer.get(key) {
            return Some(v.clone());
        }
        let v = self.older.remove(key)?;
        self.insert(key.clone(), v.clone());
        Some(v)
    }

    /// What `f` makes of `key`'s value, if held (without moving or cloning it).
    pub fn peek<T>(&self, key: &K, f: impl FnOnce(&V) -> T) -> Option<T> {
        self.newer.get(key).or_else(|| self.older.get(key)).map(f)
    }

    /// Whether `key` is held (without moving it).
    pub fn contains_key(&self, key: &K) -> bool {
        self.newer.contains_key(key) || self.older.contains_key(key)
    }

    /// Sets `key`'s value (in the newer generation; turning the generations first when it
    /// is full).
    pub fn insert(&mut self, key: K, value: V) {
        if self.newer.len() >= self.half && !self.newer.contains_key(&key) {
            self.older = std::mem::take(&mut self.newer);
        }
        self.older.remove(&key);
        self.newer.insert(key, value);
    }

    /// Forgets `key`; its value, if it was held.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let newer = self.newer.remove(key);
        let older = self.older.remove(key);
        newer.or(older)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::TwoGenerations;

    #[test]
    fn never_holds_more_than_its_bound() {
        let mut c = TwoGenerations::new(100);
        for i in 0..10_000u32 {
            c.insert(i, i);
            assert!(c.len() <= 100, "{} entries after {i} inserts", c.len());
        }
        // The newest half-bound of entries are all there.
        for i in 9_950..10_000u32 {
            assert_eq!(c.get(&i), Some(i));
        }
    }

    #[test]
    fn an_entry_used_since_the_last_turn_survives_the_next() {
        let mut c = TwoGenerations::new(10);
        c.insert("hot", 0);
        for i in 0..1_000 {
            c.insert(if i % 2 == 0 { "a" } else { "b" }, i);
            c.insert(Box::leak(format!("cold-{i}").into_boxed_str()), i);
            // Read once per half-bound of inserts: it is never forgotten.
            if i % 2 == 0 {
                assert_eq!(c.get(&"hot"), Some(0), "forgotten after {i} rounds");
            }
        }
        assert!(!c.contains_key(&"cold-0"), "an entry never read again was kept");
    }

    #[test]
    fn insert_replaces_and_remove_forgets_in_both_generations() {
        let mut c = TwoGenerations::new(4);
        c.insert(1, "old");
        c.insert(2, "x");
        c.insert(3, "y"); // turns: 1 and 2 are in the older generation
        assert!(c.contains_key(&1));
        c.insert(1, "new");
        assert_eq!(c.get(&1), Some("new"));
        assert_eq!(c.remove(&1), Some("new"));
        assert_eq!(c.get(&1), None);
        assert_eq!(c.remove(&2), Some("x"));
        assert!(!c.contains_key(&2));
        assert!(c.contains_key(&3));
    }
}
