//! Space reclaim, on the leader: every `compaction_interval_ms` one streaming pass over
//! the block index adds up, per volume, the record bytes of referenced blocks (live) and
//! lists the unreferenced entries. A volume holding no referenced block for
//! `compaction_grace_ms` (its length unchanged meanwhile) is reclaimed with `DeleteVolume`,
//! at most `compaction_volumes_per_pass` per pass: its extents are deleted (to the trash)
//! by their volume servers. Sealed or coded volumes whose live fraction is under
//! `compaction_live_fraction_min` are rewrite candidates: the least live
//! `compaction_volumes_per_pass` of them are handed, with their live blocks, to the
//! frontends (`CompactionWork`), whose compactors read each block and append it anew with a
//! relocating commit ([`crate::command::Command::RelocateIndex`]); once empty, the volume is
//! reclaimed as above.
//!
//! The grace covers an upload in flight: its blocks are committed unreferenced and the
//! version that references them commits seconds later. Should a volume be reclaimed in
//! between anyway, the version is refused (a block is missing) and the client retries;
//! nothing referenced is ever lost, because `DeleteVolume` re-checks every entry.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

use crate::codec::Kind;
use crate::command::{Command, Hash32};
use crate::observed::Observed;
use crate::state::{PREFIX_INDEX, PREFIX_VOLUME, StateError};
use crate::store::sm::StateReader;
use crate::types::{IndexEntry, VolumeRecord, VolumeState};
use crate::{MasterRaft, now_unix_ms};

/// Unreferenced entries listed per volume at most: a volume with more waits (logged).
pub const DEAD_ENTRIES_LISTED_MAX: usize = 100_000;
/// Bytes of a record beyond its payload.
const RECORD_OVERHEAD_BYTES: u64 = cellar_format::RECORD_HEADER_BYTES as u64;

/// Compaction settings (master config `compaction_*`).
#[derive(Debug, Clone, Copy)]
pub struct CompactionSettings {
    /// Time between passes; zero: off.
    pub interval: Duration,
    /// How long a volume must have been dead before it is reclaimed.
    pub grace: Duration,
    /// Volumes reclaimed per pass at most.
    pub volumes_per_pass: usize,
    /// Live fraction under which a sealed or coded volume is a rewrite candidate.
    pub live_fraction_min: f64,
}

/// What the index says of one volume.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VolumeUse {
    /// Record bytes of referenced blocks.
    pub live_bytes: u64,
    /// Referenced entries.
    pub live_entries: u64,
    /// Unreferenced entries (up to [`DEAD_ENTRIES_LISTED_MAX`]).
    pub dead: Vec<Hash32>,
    /// More unreferenced entries than listed.
    pub overflow: bool,
}

/// Adds one index entry to the per-volume use.
pub fn count_entry(uses: &mut BTreeMap<u64, VolumeUse>, hash: Hash32, e: &IndexEntry) {
    let u = uses.entry(e.volume_id).or_default();
    if e.references > 0 {
        u.live_bytes += u64::from(e.payload_bytes) + RECORD_OVERHEAD_BYTES;
        u.live_entries += 1;
    } else if u.dead.len() < DEAD_ENTRIES_LISTED_MAX {
        u.dead.push(hash);
    } else {
        u.overflow = true;
    }
}

/// A pass's decisions and what it saw.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PassPlan {
    /// Volumes to reclaim now.
    pub reclaim: Vec<Command>,
    /// Volumes dead, still in their grace (id -> (first seen dead, length then)).
    pub dead_since: HashMap<u64, (u64, u64)>,
    /// Live record bytes in all.
    pub live_bytes: u64,
    /// The rest of the volumes' lengths.
    pub garbage_bytes: u64,
    /// Dead volumes seen.
    pub volumes_dead: u64,
    /// Rewrite candidates.
    pub rewrite_candidates: u64,
    /// Their garbage.
    pub rewrite_candidate_garbage_bytes: u64,
    /// The candidates to rewrite now, least live first (at most `volumes_per_pass`).
    pub rewrite: Vec<u64>,
}

/// Decides a pass: `dead_since` is what the previous pass saw (volumes dead, since when,
/// at what length).
pub fn plan(
    volumes: &[VolumeRecord],
    uses: &BTreeMap<u64, VolumeUse>,
    dead_since: &HashMap<u64, (u64, u64)>,
    settings: &CompactionSettings,
    now_unix_ms: u64,
) -> PassPlan {
    let mut out = PassPlan::default();
    let mut candidates: Vec<(f64, u64)> = Vec::new();
    let empty = VolumeUse::default();
    for v in volumes {
        let u = uses.get(&v.volume_id).unwrap_or(&empty);
        out.live_bytes += u.live_bytes;
        out.garbage_bytes += v.size_bytes.saturating_sub(u.live_bytes);
        // An open volume that never took a block is a writer's fresh volume, not garbage; a
        // sealed or coded one that never took any (its writer's commits all failed, then it
        // was sealed empty) still holds whatever was appended to its replicas.
        if u.live_entries == 0 && !u.overflow && (v.size_bytes > 0 || v.state != VolumeState::Open) {
            out.volumes_dead += 1;
            let since = match dead_since.get(&v.volume_id) {
                Some((since, length)) if *length == v.size_bytes => *since,
                _ => now_unix_ms,
            };
            out.dead_since.insert(v.volume_id, (since, v.size_bytes));
            let waited = now_unix_ms.saturating_sub(since) >= settings.grace.as_millis() as u64;
            if waited && since < now_unix_ms && out.reclaim.len() < settings.volumes_per_pass {
                out.reclaim.push(Command::DeleteVolume {
                    volume_id: v.volume_id,
                    size_bytes: v.size_bytes,
                    entries: u.dead.clone(),
                });
            }
        } else if v.state != VolumeState::Open && v.size_bytes > 0 {
            let fraction = u.live_bytes as f64 / v.size_bytes as f64;
            if fraction < settings.live_fraction_min {
                out.rewrite_candidates += 1;
                out.rewrite_candidate_garbage_bytes += v.size_bytes.saturating_sub(u.live_bytes);
                candidates.push((fraction, v.volume_id));
            }
        }
    }
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
    out.rewrite = candidates.into_iter().take(settings.volumes_per_pass).map(|(_, id)| id).collect();
    out
}

/// The live blocks of `volumes` (a second streaming pass over the index), at most
/// [`DEAD_ENTRIES_LISTED_MAX`] per volume.
fn live_blocks(reader: &StateReader, volumes: &[u64]) -> Result<Vec<(u64, Vec<Hash32>)>, StateError> {
    let mut out: BTreeMap<u64, Vec<Hash32>> = volumes.iter().map(|v| (*v, Vec::new())).collect();
    reader.for_each(&[PREFIX_INDEX], &[PREFIX_INDEX], |k, v| {
        let e = IndexEntry::decode(v)
            .ok_or_else(|| StateError::Corrupt { key: hex::encode(k), detail: "bad index entry".into() })?;
        if e.references > 0
            && let Some(list) = out.get_mut(&e.volume_id)
            && list.len() < DEAD_ENTRIES_LISTED_MAX
            && let Some(hash) = Hash32::from_slice(&k[1..])
        {
            list.push(hash);
        }
        Ok(true)
    })?;
    Ok(out.into_iter().collect())
}

/// Reads the volumes and adds up the index (one entry held at a time).
fn survey(reader: &StateReader) -> Result<(Vec<VolumeRecord>, BTreeMap<u64, VolumeUse>), StateError> {
    let volumes: Vec<VolumeRecord> = reader.records(PREFIX_VOLUME, Kind::Volume)?;
    let mut uses = BTreeMap::new();
    reader.for_each(&[PREFIX_INDEX], &[PREFIX_INDEX], |k, v| {
        let hash = Hash32::from_slice(&k[1..]).ok_or_else(|| StateError::Corrupt {
            key: hex::encode(k),
            detail: "index key is not 33 bytes".into(),
        })?;
        let e = IndexEntry::decode(v)
            .ok_or_else(|| StateError::Corrupt { key: hex::encode(k), detail: "bad index entry".into() })?;
        count_entry(&mut uses, hash, &e);
        Ok(true)
    })?;
    Ok((volumes, uses))
}

/// The compaction loop of master `id` (acts only while it leads).
pub async fn run(
    id: u64,
    raft: MasterRaft,
    reader: StateReader,
    observed: Arc<Observed>,
    settings: CompactionSettings,
    mut stop: watch::Receiver<bool>,
) {
    if settings.interval.is_zero() {
        return;
    }
    let mut dead_since: HashMap<u64, (u64, u64)> = HashMap::new();
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        if raft.metrics().borrow_watched().current_leader != Some(id) {
            dead_since.clear();
            continue;
        }
        let r = reader.clone();
        let surveyed = match tokio::task::spawn_blocking(move || survey(&r)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "compaction cannot read the state");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "compaction pass panicked");
                continue;
            }
        };
        let (volumes, uses) = surveyed;
        for (volume_id, u) in &uses {
            if u.overflow {
                tracing::warn!(
                    volume_id,
                    "compaction: a volume with over {DEAD_ENTRIES_LISTED_MAX} unreferenced entries waits"
                );
            }
        }
        let now = now_unix_ms();
        let pass = plan(&volumes, &uses, &dead_since, &settings, now);
        dead_since = pass.dead_since.clone();
        // The live blocks of the volumes to rewrite, for the frontends' compactors.
        let (r, chosen) = (reader.clone(), pass.rewrite.clone());
        let listed = if chosen.is_empty() {
            // Nothing to rewrite: no second pass over the index.
            Ok(Ok(Vec::new()))
        } else {
            tokio::task::spawn_blocking(move || live_blocks(&r, &chosen)).await
        };
        match listed {
            Ok(Ok(work)) => observed.set_rewrite_work(work),
            Ok(Err(e)) => tracing::error!(error = %e, "compaction cannot list live blocks"),
            Err(e) => tracing::error!(error = %e, "compaction live-block pass panicked"),
        }
        let (mut reclaimed, mut bytes) = (0u64, 0u64);
        for command in pass.reclaim {
            let Command::DeleteVolume { volume_id, size_bytes, .. } = &command else { continue };
            let (volume_id, size_bytes) = (*volume_id, *size_bytes);
            match crate::raft_calls::write(&raft, command).await {
                Ok(_) => {
                    tracing::info!(
                        volume_id,
                        size_bytes,
                        "compaction reclaimed a volume holding no referenced block"
                    );
                    dead_since.remove(&volume_id);
                    reclaimed += 1;
                    bytes += size_bytes;
                }
                Err(e) => tracing::info!(volume_id, error = %e.message(), "compaction: volume not reclaimed"),
            }
        }
        observed.compaction_update(|c| {
            c.passes += 1;
            c.last_pass_unix_ms = now;
            c.live_bytes = pass.live_bytes;
            c.garbage_bytes = pass.garbage_bytes;
            c.volumes_dead = pass.volumes_dead.saturating_sub(reclaimed);
            c.rewrite_candidates = pass.rewrite_candidates;
            c.rewrite_candidate_garbage_bytes = pass.rewrite_candidate_garbage_bytes;
            c.volumes_reclaimed += reclaimed;
            c.bytes_reclaimed += bytes;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RECORD_VERSION;

    fn volume(id: u64, state: VolumeState, size: u64) -> VolumeRecord {
        VolumeRecord {
            v: RECORD_VERSION,
            volume_id: id,
            state,
            scheme: cellar_erasure::Scheme::RS_6_3,
            replicas: Vec::new(),
            fragments: Vec::new(),
            generation: 1,
            size_bytes: size,
            lease: None,
            bad_disks: Vec::new(),
        }
    }

    fn entry(volume_id: u64, payload: u32, references: u64) -> IndexEntry {
        IndexEntry { volume_id, offset_bytes: 0, payload_bytes: payload, crc32: 0, references, digest: None }
    }

    #[test]
    fn a_dead_volume_is_reclaimed_after_its_grace_and_only_if_it_did_not_grow() {
        let settings = CompactionSettings {
            interval: Duration::from_secs(1),
            grace: Duration::from_secs(10),
            volumes_per_pass: 8,
            live_fraction_min: 0.5,
        };
        let mut uses = BTreeMap::new();
        count_entry(&mut uses, Hash32([1; 32]), &entry(1, 1000, 0));
        count_entry(&mut uses, Hash32([2; 32]), &entry(2, 1000, 1));
        count_entry(&mut uses, Hash32([3; 32]), &entry(2, 4000, 0));
        let volumes = vec![
            volume(1, VolumeState::Coded, 1064),
            volume(2, VolumeState::Sealed, 5128),
            volume(3, VolumeState::Open, 0),
        ];
        let first = plan(&volumes, &uses, &HashMap::new(), &settings, 1_000);
        assert!(first.reclaim.is_empty(), "not before its grace");
        assert_eq!((first.volumes_dead, first.rewrite_candidates), (1, 1));
        assert_eq!(first.live_bytes, 1064);
        assert_eq!(first.garbage_bytes, 1064 + 4064);
        let later = plan(&volumes, &uses, &first.dead_since, &settings, 11_000);
        assert_eq!(
            later.reclaim,
            vec![Command::DeleteVolume { volume_id: 1, size_bytes: 1064, entries: vec![Hash32([1; 32])] }]
        );
        // A sealed volume that never took a block is garbage too; an open one is not.
        let empty = vec![volume(4, VolumeState::Sealed, 0), volume(5, VolumeState::Open, 0)];
        let first = plan(&empty, &uses, &HashMap::new(), &settings, 1_000);
        let later = plan(&empty, &uses, &first.dead_since, &settings, 11_000);
        assert_eq!(
            later.reclaim,
            vec![Command::DeleteVolume { volume_id: 4, size_bytes: 0, entries: vec![] }]
        );
        // Grown meanwhile: the grace starts over.
        let grown = vec![volume(1, VolumeState::Open, 2000)];
        assert!(plan(&grown, &uses, &first.dead_since, &settings, 11_000).reclaim.is_empty());
    }
}
