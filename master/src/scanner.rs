//! The metadata scanner (Pocket Watch's third verifier, DESIGN section 6), run by the
//! leader: every indexed block's volume exists and holds the block's record inside its
//! acknowledged length, and every extent of every sealed or coded volume is on the disk
//! the volume record names, with the right length (a replica at least the volume's length,
//! a fragment exactly the layout's fragment length). An extent that is missing, short or
//! on a failed disk is reported bad (`ReportBadExtent`), which the repair planner rebuilds;
//! an index entry pointing nowhere is logged and counted (its block is lost: nothing can
//! rebuild it). A node marked down that comes back has its extents checked at once, before
//! the next full pass, rather than trusted.
//!
//! A pass reads the index in one streaming scan (one entry held at a time) and asks each
//! volume server about its extents at most `extents_per_sec`, each call under a deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cellar_proto::common::ExtentPart;
use cellar_proto::volume as vpb;
use cellar_proto::volume::volume_client::VolumeClient;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::codec::Kind;
use crate::command::{Command, Response};
use crate::observed::Observed;
use crate::repair::Health;
use crate::state::{PREFIX_DISK, PREFIX_INDEX, PREFIX_NODE, PREFIX_VOLUME, StateError};
use crate::store::sm::StateReader;
use crate::types::{DiskRecord, ExtentPlace, IndexEntry, NodeRecord, VolumeRecord, VolumeState};
use crate::{MasterRaft, now_unix_ms};

/// Scanner settings (master configuration).
#[derive(Debug, Clone)]
pub struct ScanSettings {
    /// Time between full passes (0: the scanner is off).
    pub interval: Duration,
    /// Extents asked about per second at most.
    pub extents_per_sec: u64,
    /// Deadline of one StatExtent call.
    pub call_deadline: Duration,
    /// The cluster secret, sent to the volume servers.
    pub secret: Option<String>,
}

/// Deadline of one StatExtent call.
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// How often the loop looks for returned nodes between full passes.
const RETURNED_POLL: Duration = Duration::from_secs(1);

/// What is wrong with an index entry, if anything: its volume is unknown, or its record
/// (header and payload) ends past the volume's acknowledged length.
pub fn check_entry(entry: &IndexEntry, volumes: &BTreeMap<u64, u64>) -> Option<String> {
    let Some(&size_bytes) = volumes.get(&entry.volume_id) else {
        return Some(format!("volume {} does not exist", entry.volume_id));
    };
    let end = entry
        .offset_bytes
        .saturating_add(cellar_format::RECORD_HEADER_BYTES as u64)
        .saturating_add(u64::from(entry.payload_bytes));
    (end > size_bytes)
        .then(|| format!("record ends at {end}, past volume {}'s length {size_bytes}", entry.volume_id))
}

/// What is wrong with an extent, given its stat, if anything.
pub fn check_extent(v: &VolumeRecord, stat: &vpb::ExtentStat) -> Option<String> {
    if !stat.exists {
        return Some("missing".into());
    }
    if stat.failed {
        return Some("on a failed disk".into());
    }
    match v.state {
        VolumeState::Coded => {
            let expected =
                cellar_erasure::Layout::new(v.scheme, v.size_bytes, cellar_format::FRAGMENT_CHUNK_BYTES)
                    .map(|l| l.fragment_len_bytes())
                    .ok()?;
            (stat.length_bytes != expected)
                .then(|| format!("fragment is {} bytes, the layout says {expected}", stat.length_bytes))
        }
        _ => (stat.length_bytes < v.size_bytes)
            .then(|| format!("replica holds {} bytes, the volume {}", stat.length_bytes, v.size_bytes)),
    }
}

/// The extents of `v` the scanner asks about: a sealed volume's replicas, a coded one's
/// fragments (an open volume's writer is still appending; an empty one may not exist yet).
fn extents_of(v: &VolumeRecord) -> Vec<(ExtentPlace, ExtentPart, u32)> {
    match v.state {
        VolumeState::Open => Vec::new(),
        VolumeState::Sealed if v.size_bytes == 0 => Vec::new(),
        VolumeState::Sealed => v.replicas.iter().map(|p| (*p, ExtentPart::Replica, 0)).collect(),
        VolumeState::Coded => {
            v.fragments.iter().enumerate().map(|(i, p)| (*p, ExtentPart::Fragment, i as u32)).collect()
        }
    }
}

/// Checks every index entry against the volumes' lengths in one streaming scan (blocking:
/// run it off the async threads); returns (entries, findings).
fn check_index(reader: &StateReader, sizes: &BTreeMap<u64, u64>) -> Result<(u64, u64), StateError> {
    let (mut entries, mut findings) = (0u64, 0u64);
    let prefix = [PREFIX_INDEX];
    reader.for_each(&prefix, &prefix, |key, value| {
        entries += 1;
        let problem = match IndexEntry::decode(value) {
            Some(entry) => check_entry(&entry, sizes),
            None => Some("does not decode".into()),
        };
        if let Some(problem) = problem {
            findings += 1;
            tracing::error!(block = %hex::encode(key.get(1..).unwrap_or_default()), %problem,
                "metadata scan: index entry points nowhere (block lost)");
        }
        Ok(true)
    })?;
    Ok((entries, findings))
}

/// Every volume, node and disk record.
type Records = (Vec<VolumeRecord>, Vec<NodeRecord>, Vec<DiskRecord>);

struct Scanner {
    raft: MasterRaft,
    reader: StateReader,
    observed: Arc<Observed>,
    settings: ScanSettings,
    secret: Option<MetadataValue<Ascii>>,
    channels: BTreeMap<String, Channel>,
}

impl Scanner {
    fn client(&mut self, address: &str) -> Option<VolumeClient<Channel>> {
        if !self.channels.contains_key(address) {
            match cellar_master_api::channel::channel(address) {
                Ok(c) => {
                    self.channels.insert(address.to_string(), c);
                }
                Err(e) => {
                    tracing::warn!(address, error = %e, "scanner cannot reach a volume server");
                    return None;
                }
            }
        }
        self.channels.get(address).cloned().map(VolumeClient::new)
    }

    async fn stat(&mut self, address: &str, r: vpb::ExtentRef) -> Result<vpb::ExtentStat, tonic::Status> {
        let Some(mut client) = self.client(address) else {
            return Err(tonic::Status::unavailable("no channel"));
        };
        let mut req = tonic::Request::new(r);
        req.set_timeout(self.settings.call_deadline);
        if let Some(s) = &self.secret {
            req.metadata_mut().insert(cellar_proto::SECRET_KEY, s.clone());
        }
        match tokio::time::timeout(self.settings.call_deadline, client.stat_extent(req)).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded("stat_extent")),
        }
    }

    fn records(&self) -> Result<Records, StateError> {
        Ok((
            self.reader.records(PREFIX_VOLUME, Kind::Volume)?,
            self.reader.records(PREFIX_NODE, Kind::Node)?,
            self.reader.records(PREFIX_DISK, Kind::Disk)?,
        ))
    }

    /// Asks about the extents of `volumes` (only those on `only_nodes` when given), at most
    /// `extents_per_sec`; reports the bad ones. Extents the planner already counts as lost
    /// are skipped. Returns (checked, findings, errors); stops early when `stop` is set.
    async fn check_extents(
        &mut self,
        volumes: &[VolumeRecord],
        nodes: &[NodeRecord],
        disks: &[DiskRecord],
        only_nodes: Option<&[u64]>,
        stop: &watch::Receiver<bool>,
    ) -> (u64, u64, u64) {
        let health = Health::new(nodes, disks);
        let address: BTreeMap<u64, &str> = nodes.iter().map(|n| (n.node_id, n.address.as_str())).collect();
        let (mut checked, mut findings, mut errors) = (0u64, 0u64, 0u64);
        let started = Instant::now();
        for v in volumes {
            for (place, part, index) in extents_of(v) {
                if *stop.borrow() {
                    return (checked, findings, errors);
                }
                if only_nodes.is_some_and(|only| !only.contains(&place.node_id)) || health.lost(v, &place) {
                    continue;
                }
                let Some(addr) = address.get(&place.node_id).map(|a| a.to_string()) else { continue };
                if self.settings.extents_per_sec > 0 {
                    let due = Duration::from_secs_f64(checked as f64 / self.settings.extents_per_sec as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                checked += 1;
                let r = vpb::ExtentRef {
                    volume_id: v.volume_id,
                    disk_id: place.disk_id,
                    part: part.into(),
                    fragment_index: index,
                };
                let stat = match self.stat(&addr, r).await {
                    Ok(stat) => stat,
                    Err(e) => {
                        errors += 1;
                        tracing::debug!(volume = v.volume_id, disk = place.disk_id, error = %e.message(),
                            "metadata scan: cannot ask about an extent");
                        continue;
                    }
                };
                // Read again: the placement may have moved on while the call was out.
                let current = crate::state::volume(&self.reader, v.volume_id).ok().flatten();
                let still_there = current.as_ref().is_some_and(|c| {
                    c.state == v.state
                        && extents_of(c).iter().any(|(p, _, i)| p.disk_id == place.disk_id && *i == index)
                });
                let Some(problem) = check_extent(v, &stat).filter(|_| still_there) else { continue };
                findings += 1;
                tracing::warn!(volume = v.volume_id, node = place.node_id, disk = place.disk_id, %problem,
                    "metadata scan: extent not as the volume record says; reported for repair");
                let command = Command::ReportBadExtent {
                    volume_id: v.volume_id,
                    disk_id: place.disk_id,
                    reason: format!("metadata scan: {problem}"),
                };
                match self.raft.client_write(command).await {
                    Ok(w) if !matches!(w.data, Response::Refused { .. }) => {}
                    Ok(w) => tracing::debug!(response = ?w.data, "metadata scan report refused"),
                    Err(e) => tracing::debug!(error = %e, "metadata scan report not applied"),
                }
            }
        }
        (checked, findings, errors)
    }
}

/// Runs the scanner until `stop` turns true; only the leader scans.
pub async fn run(
    id: u64,
    raft: MasterRaft,
    reader: StateReader,
    observed: Arc<Observed>,
    settings: ScanSettings,
    mut stop: watch::Receiver<bool>,
) {
    if settings.interval.is_zero() {
        return;
    }
    let secret = settings.secret.as_deref().and_then(|s| s.parse::<MetadataValue<Ascii>>().ok());
    let mut scanner = Scanner { raft, reader, observed, settings, secret, channels: BTreeMap::new() };
    let mut next_pass = Instant::now() + scanner.settings.interval;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(RETURNED_POLL) => {}
        }
        if scanner.raft.metrics().borrow_watched().current_leader != Some(id) {
            continue;
        }
        let returned = scanner.observed.take_returned();
        let full = Instant::now() >= next_pass;
        if returned.is_empty() && !full {
            continue;
        }
        let (volumes, nodes, disks) = match scanner.records() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "metadata scan cannot read the state");
                continue;
            }
        };
        if !returned.is_empty() {
            tracing::info!(nodes = ?returned, "metadata scan: checking the extents of nodes that came back");
            let (checked, findings, errors) =
                scanner.check_extents(&volumes, &nodes, &disks, Some(&returned), &stop).await;
            scanner.observed.scan_update(|c| {
                c.extents_checked += checked;
                c.findings += findings;
                c.errors += errors;
            });
        }
        if !full {
            continue;
        }
        next_pass = Instant::now() + scanner.settings.interval;
        let sizes: BTreeMap<u64, u64> = volumes.iter().map(|v| (v.volume_id, v.size_bytes)).collect();
        let reader = scanner.reader.clone();
        let checked = tokio::task::spawn_blocking(move || check_index(&reader, &sizes))
            .await
            .unwrap_or_else(|e| Err(StateError::Store(format!("index scan task: {e}"))));
        let (entries, entry_findings) = match checked {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "metadata scan cannot read the index");
                continue;
            }
        };
        let (checked, findings, errors) = scanner.check_extents(&volumes, &nodes, &disks, None, &stop).await;
        scanner.observed.scan_update(|c| {
            c.passes += 1;
            c.index_entries_checked += entries;
            c.extents_checked += checked;
            c.findings += entry_findings + findings;
            c.errors += errors;
            c.last_pass_unix_ms = now_unix_ms();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RECORD_VERSION;

    fn entry(volume_id: u64, offset_bytes: u64, payload_bytes: u32) -> IndexEntry {
        IndexEntry { volume_id, offset_bytes, payload_bytes, crc32: 0, references: 1, digest: None }
    }

    #[test]
    fn an_entry_on_a_missing_volume_or_past_its_end_is_a_finding() {
        let volumes = BTreeMap::from([(1, 1000u64)]);
        assert_eq!(check_entry(&entry(1, 0, 936), &volumes), None, "ends exactly at 1000");
        assert!(check_entry(&entry(1, 0, 937), &volumes).is_some_and(|p| p.contains("past")));
        assert!(check_entry(&entry(2, 0, 1), &volumes).is_some_and(|p| p.contains("does not exist")));
        assert!(check_entry(&entry(1, u64::MAX, u32::MAX), &volumes).is_some());
    }

    #[test]
    fn extents_must_exist_with_the_layouts_length() {
        let mut v = VolumeRecord {
            v: RECORD_VERSION,
            volume_id: 1,
            state: VolumeState::Sealed,
            scheme: cellar_erasure::Scheme::RS_6_3,
            replicas: Vec::new(),
            fragments: Vec::new(),
            generation: 1,
            size_bytes: 6 << 20,
            lease: None,
            bad_disks: Vec::new(),
        };
        let stat = |length_bytes| vpb::ExtentStat { exists: true, length_bytes, ..Default::default() };
        assert_eq!(check_extent(&v, &stat(6 << 20)), None);
        assert!(check_extent(&v, &stat((6 << 20) - 1)).is_some());
        assert!(check_extent(&v, &vpb::ExtentStat::default()).is_some_and(|p| p == "missing"));
        v.state = VolumeState::Coded;
        assert_eq!(check_extent(&v, &stat(1 << 20)), None, "6 MiB over 6 data fragments");
        assert!(check_extent(&v, &stat(2 << 20)).is_some());
        let failed =
            vpb::ExtentStat { exists: true, failed: true, length_bytes: 1 << 20, ..Default::default() };
        assert!(check_extent(&v, &failed).is_some());
    }
}
