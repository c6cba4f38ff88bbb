//! cellar's placement: which disks hold the extents of a volume.
//!
//! Pure functions of a [`ClusterView`] (disks with node, zone, capacity, fill and
//! health), a [`Scheme`] and a seed: no I/O, no clock, no global randomness. The Raft
//! master calls them before committing a volume's placement, and the durability simulator
//! calls them to build cluster histories; both get the same answer from the same inputs.
//!
//! The rules, checked by [`check_placement`] and proved by property tests:
//! - a new extent goes only to a writable disk with at least the extent's size free;
//! - never two extents of one volume on one disk;
//! - replicas go to distinct zones; coded volumes put at most `parity` fragments in any
//!   zone, so that losing one zone leaves at least `data` fragments;
//! - nodes are distinct where the zones allow it, zones are filled evenly, and emptier
//!   disks are preferred (chosen with probability proportional to free bytes), which also
//!   spreads each disk's peers over the cluster so that a dead disk is rebuilt from many.
//!
//! When the rules cannot be met the answer is [`PlacementError::NotEnoughFailureDomains`],
//! and only then: placement never fails for lack of trying.

mod check;
mod error;
mod place;
mod replace;
mod scheme;
mod select;
mod view;

pub use check::check_placement;
pub use error::PlacementError;
pub use place::{place_fragments, place_replicas, place_volume};
pub use replace::place_replacement;
pub use scheme::{EXTENTS_PER_VOLUME_MAX, Scheme};
pub use view::{ClusterView, DiskRef, DiskView};
