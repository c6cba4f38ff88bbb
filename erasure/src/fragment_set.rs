//! A set of fragment indices, e.g. the fragments of a volume that can be read now.

use std::fmt;

use crate::{FRAGMENTS_MAX, Scheme};

/// A set of fragment indices below [`FRAGMENTS_MAX`], as a bit mask; iterates in index
/// order, i.e. data fragments before parity.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FragmentSet {
    bits: u32,
}

impl FragmentSet {
    /// No fragments.
    pub const fn empty() -> Self {
        FragmentSet { bits: 0 }
    }

    /// Every fragment of `scheme`: `0..k+m`.
    pub fn all(scheme: Scheme) -> Self {
        let n = scheme.fragment_count().min(FRAGMENTS_MAX);
        FragmentSet { bits: if n == 32 { u32::MAX } else { (1u32 << n) - 1 } }
    }

    /// Every fragment of `scheme` except those in `lost`.
    pub fn all_except(scheme: Scheme, lost: FragmentSet) -> Self {
        FragmentSet { bits: Self::all(scheme).bits & !lost.bits }
    }

    /// Adds `fragment_index`.
    ///
    /// # Panics
    /// If `fragment_index >= FRAGMENTS_MAX`: indices from outside must be checked first.
    pub fn insert(&mut self, fragment_index: usize) {
        assert!(fragment_index < FRAGMENTS_MAX, "fragment index {fragment_index} out of range");
        self.bits |= 1 << fragment_index;
    }

    /// Removes `fragment_index` (a no-op when absent or out of range).
    pub fn remove(&mut self, fragment_index: usize) {
        if fragment_index < FRAGMENTS_MAX {
            self.bits &= !(1 << fragment_index);
        }
    }

    /// Whether `fragment_index` is in the set.
    pub fn contains(self, fragment_index: usize) -> bool {
        fragment_index < FRAGMENTS_MAX && self.bits & (1 << fragment_index) != 0
    }

    /// Number of fragments in the set.
    pub fn len(self) -> usize {
        self.bits.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.bits == 0
    }

    /// The indices in increasing order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..FRAGMENTS_MAX).filter(move |&i| self.contains(i))
    }

    /// The highest index plus one (0 when empty): every index is below it.
    pub(crate) fn bound(self) -> usize {
        (u32::BITS - self.bits.leading_zeros()) as usize
    }
}

impl FromIterator<usize> for FragmentSet {
    /// Collects indices; panics like [`FragmentSet::insert`] on an index out of range.
    fn from_iter<T: IntoIterator<Item = usize>>(iter: T) -> Self {
        let mut set = FragmentSet::empty();
        for i in iter {
            set.insert(i);
        }
        set
    }
}

impl fmt::Debug for FragmentSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_set_tracks_members_in_index_order() {
        let scheme = Scheme::RS_6_3;
        let mut set = FragmentSet::all(scheme);
        assert_eq!(set.len(), 9);
        assert_eq!(set.bound(), 9);
        set.remove(2);
        set.remove(8);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 1, 3, 4, 5, 6, 7]);
        assert_eq!(set, FragmentSet::all_except(scheme, [2, 8].into_iter().collect()));
        assert!(!set.contains(40));
        assert_eq!(format!("{set:?}"), "{0, 1, 3, 4, 5, 6, 7}");
        let full = FragmentSet::all(Scheme { data: 16, parity: 16 });
        assert_eq!((full.len(), full.bound()), (32, 32));
        assert!(FragmentSet::empty().is_empty());
        assert_eq!(FragmentSet::empty().bound(), 0);
    }
}
