//! The event queue: a binary heap ordered by simulated time, ties broken by insertion
//! order so that a seed always replays the same history.
//!
//! Events carry the generation of the thing they act on (a disk, a repair job, an
//! outage); a handler ignores an event whose generation is stale. Rescheduling is
//! therefore "bump the generation and push again", and cancelled events simply drain.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Most events the queue may hold; more means a runaway model (every pending event is
/// bounded by disks + nodes + zones + jobs, so real runs stay far below this).
pub const QUEUE_EVENTS_MAX: usize = 1 << 26;

/// Something that happens at a point in simulated time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event {
    /// A disk's natural failure (its lifetime ran out).
    DiskFail {
        /// Disk index.
        disk: u32,
        /// Disk generation when scheduled.
        generation: u32,
    },
    /// A disk reaches its service life and is replaced without risk.
    DiskRetire {
        /// Disk index.
        disk: u32,
        /// Disk generation when scheduled.
        generation: u32,
    },
    /// The master learns that a disk's extents are gone; its rebuild may start.
    Detect {
        /// Disk index.
        disk: u32,
        /// Job generation when scheduled.
        generation: u32,
    },
    /// A disk's bulk rebuild finishes (or, in the exponential model, the disk is restored).
    JobDone {
        /// Disk index.
        disk: u32,
        /// Job generation when scheduled.
        generation: u32,
    },
    /// The volume at the head of the priority queue is rebuilt.
    ExplicitDone {
        /// Queue generation when scheduled.
        generation: u32,
    },
    /// Next latent sector error somewhere (superposed Poisson process over all disks).
    LseArrival,
    /// A scrub pass finds a corrupt extent.
    LseDetect {
        /// Volume.
        volume: u32,
        /// Event id of the error.
        id: u64,
    },
    /// In the exponential model: a found corrupt extent is rebuilt.
    LseRepaired {
        /// Volume.
        volume: u32,
        /// Event id of the error.
        id: u64,
    },
    /// Next transient node outage somewhere.
    NodeOutage,
    /// A node is back.
    NodeBack {
        /// Node index.
        node: u32,
        /// Node generation when scheduled.
        generation: u32,
    },
    /// A node has been silent for `down_after`.
    NodeDownAfter {
        /// Node index.
        node: u32,
        /// Node generation when scheduled.
        generation: u32,
    },
    /// Next permanent node loss somewhere.
    NodeLoss,
    /// Next zone outage somewhere.
    ZoneOutage,
    /// A zone is back.
    ZoneBack {
        /// Zone index.
        zone: u32,
        /// Zone generation when scheduled.
        generation: u32,
    },
    /// A zone has been down for `down_after`.
    ZoneDownAfter {
        /// Zone index.
        zone: u32,
        /// Zone generation when scheduled.
        generation: u32,
    },
    /// Importance sampling: the failure-biasing process fires.
    Boost {
        /// Boost generation when scheduled.
        generation: u32,
    },
}

#[derive(Clone, Debug)]
struct Entry {
    time_secs: f64,
    seq: u64,
    event: Event,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed, so that the max-heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.time_secs.total_cmp(&self.time_secs).then_with(|| other.seq.cmp(&self.seq))
    }
}

/// Pending events, earliest first.
#[derive(Clone, Debug, Default)]
pub struct Queue {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

impl Queue {
    /// Schedules `event` at `time_secs`; events at infinity are dropped (they never happen).
    pub fn push(&mut self, time_secs: f64, event: Event) {
        if !time_secs.is_finite() {
            return;
        }
        assert!(self.heap.len() < QUEUE_EVENTS_MAX, "event queue over {QUEUE_EVENTS_MAX}: runaway model");
        self.seq += 1;
        self.heap.push(Entry { time_secs, seq: self.seq, event });
    }

    /// Removes and returns the earliest event.
    pub fn pop(&mut self) -> Option<(f64, Event)> {
        self.heap.pop().map(|e| (e.time_secs, e.event))
    }

    /// Time of the earliest event.
    pub fn peek_time(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.time_secs)
    }

    /// Drops every disk failure and retirement event (importance-sampling branches redraw
    /// lifetimes).
    pub fn drop_disk_lifetimes(&mut self) {
        let entries = std::mem::take(&mut self.heap).into_vec();
        self.heap = entries
            .into_iter()
            .filter(|e| !matches!(e.event, Event::DiskFail { .. } | Event::DiskRetire { .. }))
            .collect();
    }

    /// Number of pending events (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_ties_in_insertion_order() {
        let mut q = Queue::default();
        q.push(5.0, Event::NodeLoss);
        q.push(1.0, Event::ZoneOutage);
        q.push(5.0, Event::LseArrival);
        q.push(f64::INFINITY, Event::NodeOutage);
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(), Some((1.0, Event::ZoneOutage)));
        assert_eq!(q.pop(), Some((5.0, Event::NodeLoss)));
        assert_eq!(q.pop(), Some((5.0, Event::LseArrival)));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn dropping_lifetimes_keeps_other_events() {
        let mut q = Queue::default();
        q.push(1.0, Event::DiskFail { disk: 1, generation: 0 });
        q.push(2.0, Event::NodeLoss);
        q.push(3.0, Event::DiskRetire { disk: 1, generation: 0 });
        q.drop_disk_lifetimes();
        assert_eq!(q.pop(), Some((2.0, Event::NodeLoss)));
        assert!(q.is_empty());
    }
}
