//! `cellar admin ...`: operator commands against a running cell.

use anyhow::{Context, Result};
use cellar_master_api::client::MasterClient;
use cellar_proto::master::{StatusRequest, StatusResponse};
use clap::Subcommand;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Leader, term, members, nodes, disks and volume counts by state.
    Status {
        /// Master addresses, comma separated (host:port,...).
        #[arg(long, env = "CELLAR_MASTERS")]
        master: String,
        /// Print the stable JSON form (for scripts).
        #[arg(long)]
        json: bool,
        /// Cluster secret.
        #[arg(long, env = "CELLAR_SECRET")]
        secret: Option<String>,
    },
    /// Drains a node or a disk: it takes no new extents and everything it holds is moved
    /// elsewhere by the repair planner (`cellar admin status` shows `extents_draining`
    /// falling to 0). Stays in force until `undrain`.
    Drain {
        #[command(flatten)]
        target: DrainArgs,
    },
    /// Ends a drain: the node or disk takes new extents again (nothing is moved back).
    Undrain {
        #[command(flatten)]
        target: DrainArgs,
    },
    /// S3 access keys: `create` prints a new key and its secret, `list` the keys (no
    /// secrets), `delete` removes one (frontends stop accepting it within 10 s).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Removes a volume server for good: it must be drained (or marked down) and hold no
    /// extent any volume places on it. Its queued tasks are dropped and its id is never
    /// reused; the server cannot register under it again.
    Remove {
        /// Master addresses, comma separated (host:port,...).
        #[arg(long, env = "CELLAR_MASTERS")]
        master: String,
        /// The node id.
        #[arg(long)]
        node: u64,
        /// Cluster secret.
        #[arg(long, env = "CELLAR_SECRET")]
        secret: Option<String>,
    },
    /// Hands a given-up task (every attempt failed: `cellar admin status` lists them with
    /// their last error) back to its node with its attempts anew, once what failed it is
    /// mended, instead of waiting for its planner (a given-up delete is never planned
    /// again). Needs the cell at apply version 2.
    RetryTask {
        /// Master addresses, comma separated (host:port,...).
        #[arg(long, env = "CELLAR_MASTERS")]
        master: String,
        /// The task id.
        #[arg(long)]
        task: u64,
        /// Cluster secret.
        #[arg(long, env = "CELLAR_SECRET")]
        secret: Option<String>,
    },
}

/// `cellar admin key ...`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Creates an access key with a random secret and prints both.
    Create {
        #[command(flatten)]
        masters: MasterArgs,
        /// A label for the key.
        #[arg(long, default_value = "")]
        name: String,
        /// The access key id (default: random).
        #[arg(long)]
        access_key: Option<String>,
    },
    /// Lists the access keys (without their secrets).
    List {
        #[command(flatten)]
        masters: MasterArgs,
    },
    /// Deletes an access key.
    Delete {
        #[command(flatten)]
        masters: MasterArgs,
        /// The access key id.
        access_key: String,
    },
}

/// Where the masters are.
#[derive(Debug, clap::Args)]
pub struct MasterArgs {
    /// Master addresses, comma separated (host:port,...).
    #[arg(long, env = "CELLAR_MASTERS")]
    master: String,
    /// Cluster secret.
    #[arg(long, env = "CELLAR_SECRET")]
    secret: Option<String>,
}

impl MasterArgs {
    fn client(&self) -> Result<MasterClient> {
        let addrs: Vec<String> =
            self.master.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        Ok(MasterClient::new(&addrs, self.secret.as_deref())?)
    }
}

/// `n` random bytes from the OS, as text of `alphabet`.
fn random_text(n: usize, alphabet: &[u8]) -> Result<String> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| alphabet[*b as usize % alphabet.len()] as char).collect())
}

fn key(cmd: KeyCommand) -> Result<()> {
    use cellar_proto::master as pb;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cmd {
        KeyCommand::Create { masters, name, access_key } => {
            let access_key = match access_key {
                Some(k) => k,
                None => random_text(20, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")?,
            };
            let secret_key =
                random_text(40, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")?;
            let request = pb::NsWriteRequest {
                request_id: None,
                op: Some(pb::ns_write_request::Op::CreateKey(pb::CreateKeyOp {
                    access_key: access_key.clone(),
                    secret_key: secret_key.clone(),
                    name,
                })),
            };
            runtime
                .block_on(async {
                    masters
                        .client()?
                        .call_once(request, |mut c, r| async move { c.ns_write(r).await })
                        .await?;
                    Ok::<_, anyhow::Error>(())
                })
                .context("create access key")?;
            println!("access_key {access_key}");
            println!("secret_key {secret_key}");
        }
        KeyCommand::List { masters } => {
            let keys = runtime
                .block_on(async {
                    Ok::<_, anyhow::Error>(
                            masters
                                .client()?
                                .call(|mut c| async move {
                                    c.ns_list_access_keys(pb::ListAccessKeysRequest {}).await
                                })
                                .await?,
                        )
                })
                .context("list access keys")?;
            for k in keys.keys {
                println!("{}  {}  created_unix_ms {}", k.access_key, k.name, k.created_unix_ms);
            }
        }
        KeyCommand::Delete { masters, access_key } => {
            let request = pb::NsWriteRequest {
                request_id: None,
                op: Some(pb::ns_write_request::Op::DeleteKey(pb::DeleteKeyOp {
                    access_key: access_key.clone(),
                })),
            };
            runtime
                .block_on(async {
                    masters
                        .client()?
                        .call_once(request, |mut c, r| async move { c.ns_write(r).await })
                        .await?;
                    Ok::<_, anyhow::Error>(())
                })
                .with_context(|| format!("delete access key {access_key}"))?;
            println!("deleted access key {access_key}");
        }
    }
    Ok(())
}

/// The node or disk of a drain.
#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// Master addresses, comma separated (host:port,...).
    #[arg(long, env = "CELLAR_MASTERS")]
    master: String,
    /// The node id.
    #[arg(long, conflicts_with = "disk", required_unless_present = "disk")]
    node: Option<u64>,
    /// The disk id.
    #[arg(long)]
    disk: Option<u64>,
    /// Cluster secret.
    #[arg(long, env = "CELLAR_SECRET")]
    secret: Option<String>,
}

fn drain(args: DrainArgs, undrain: bool) -> Result<()> {
    use cellar_proto::master::{DrainRequest, drain_request::Target};
    let target = match (args.node, args.disk) {
        (Some(node), None) => Target::NodeId(node),
        (None, Some(disk)) => Target::DiskId(disk),
        _ => anyhow::bail!("give exactly one of --node and --disk"),
    };
    let addrs: Vec<String> =
        args.master.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime
        .block_on(async {
            let client = MasterClient::new(&addrs, args.secret.as_deref())?;
            let request = DrainRequest { target: Some(target), undrain, request_id: None };
            client.call_once(request, |mut c, r| async move { c.drain(r).await }).await?;
            Ok::<_, anyhow::Error>(())
        })
        .with_context(|| format!("{} {target:?}", if undrain { "undrain" } else { "drain" }))?;
    println!("{} {target:?}", if undrain { "undrained" } else { "draining" });
    Ok(())
}

pub fn run(cmd: AdminCommand) -> Result<()> {
    match cmd {
        AdminCommand::Drain { target } => drain(target, false),
        AdminCommand::Key { command } => key(command),
        AdminCommand::Undrain { target } => drain(target, true),
        AdminCommand::Remove { master, node, secret } => {
            let addrs: Vec<String> =
                master.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime
                .block_on(async {
                    let client = MasterClient::new(&addrs, secret.as_deref())?;
                    let request = cellar_proto::master::RemoveNodeRequest { node_id: node, request_id: None };
                    client.call_once(request, |mut c, r| async move { c.remove_node(r).await }).await?;
                    Ok::<_, anyhow::Error>(())
                })
                .with_context(|| format!("remove node {node}"))?;
            println!("removed node {node}");
            Ok(())
        }
        AdminCommand::RetryTask { master, task, secret } => {
            let addrs: Vec<String> =
                master.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let queued = runtime
                .block_on(async {
                    let client = MasterClient::new(&addrs, secret.as_deref())?;
                    let request = cellar_proto::master::RetryTaskRequest { task_id: task, request_id: None };
                    let queued =
                        client.call_once(request, |mut c, r| async move { c.retry_task(r).await }).await?;
                    Ok::<_, anyhow::Error>(queued)
                })
                .with_context(|| format!("retry task {task}"))?;
            println!(
                "task {task} ({} of volume {}) handed back to node {}, attempts anew",
                queued.kind().name(),
                queued.volume_id,
                queued.node_id
            );
            Ok(())
        }
        AdminCommand::Status { master, json, secret } => {
            let addrs: Vec<String> =
                master.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let status =
                runtime.block_on(leader_status(&addrs, secret.as_deref())).context("query master status")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
            } else {
                print_status(&status);
            }
            Ok(())
        }
    }
}

/// The status of the cell as its leader sees it (what the leader measures, such as the
/// repair rate, is only known there); another member's when the leader does not answer.
pub async fn leader_status(addrs: &[String], secret: Option<&str>) -> anyhow::Result<StatusResponse> {
    let client = MasterClient::new(addrs, secret)?;
    let first = client.call(|mut c| async move { c.status(StatusRequest {}).await }).await?;
    if !first.leader_address.is_empty() && first.leader_id != Some(first.node_id) {
        let leader = MasterClient::new(std::slice::from_ref(&first.leader_address), secret)?
            .with_deadline(std::time::Duration::from_secs(2));
        if let Ok(s) = leader.call(|mut c| async move { c.status(StatusRequest {}).await }).await {
            return Ok(s);
        }
    }
    Ok(first)
}

/// Health by zone: nodes up and down, disks ok and failed (zone name order).
fn zone_health(s: &StatusResponse) -> std::collections::BTreeMap<String, [u64; 4]> {
    let mut zones: std::collections::BTreeMap<String, [u64; 4]> = std::collections::BTreeMap::new();
    let mut zone_of = std::collections::BTreeMap::new();
    for n in &s.nodes {
        let z = zones.entry(n.zone.clone()).or_default();
        z[usize::from(n.state() != cellar_proto::master::NodeState::Up)] += 1;
        zone_of.insert(n.node_id, n.zone.clone());
    }
    for d in &s.disks {
        if let Some(zone) = zone_of.get(&d.node_id) {
            let z = zones.entry(zone.clone()).or_default();
            z[2 + usize::from(d.health() != cellar_proto::master::DiskHealth::Ok)] += 1;
        }
    }
    zones
}

fn status_json(s: &StatusResponse) -> serde_json::Value {
    json!({
        "zones": zone_health(s).into_iter().map(|(zone, [up, down, ok, failed])| (zone, json!({"nodes_up": up, "nodes_down": down, "disks_ok": ok, "disks_failed": failed}))).collect::<serde_json::Map<_, _>>(),
        "answered_by": s.node_id,
        "leader": s.leader_id.map(|id| json!({"id": id, "address": s.leader_address})),
        "term": s.term,
        "last_applied_index": s.last_applied_index,
        "members": s.members.iter().map(|m| json!({"id": m.id, "address": m.address, "voter": m.voter, "apply_version_max": m.apply_version_max, "build_version": m.build_version, "build_error": m.build_error})).collect::<Vec<_>>(),
        "apply_version": s.apply_version,
        "apply_version_max": s.apply_version_max,
        "nodes": s.nodes.iter().map(|n| json!({"id": n.node_id, "address": n.address, "zone": n.zone, "state": n.state().name(), "last_heartbeat_unix_ms": n.last_heartbeat_unix_ms})).collect::<Vec<_>>(),
        "disks": s.disks.iter().map(|d| json!({"id": d.disk_id, "node_id": d.node_id, "path": d.path, "health": d.health().name(), "capacity_bytes": d.capacity_bytes, "used_bytes": d.used_bytes, "free_bytes": d.free_bytes, "trash_bytes": d.trash_bytes, "trash_extents": d.trash_extents})).collect::<Vec<_>>(),
        "volumes": s.volumes.iter().map(|v| (v.state().name().to_string(), json!(v.count))).collect::<serde_json::Map<_, _>>(),
        "index_entries": s.index_entries,
        "tasks": {
            "open": s.tasks_open,
            "done": s.tasks_done,
            "failed": s.tasks_failed,
            "open_list": s.open_tasks.iter().map(|t| task_json(t, waits_for_failed_disk(s, t))).collect::<Vec<_>>(),
            "failed_list": s.failed_tasks.iter().map(|t| task_json(t, None)).collect::<Vec<_>>(),
        },
        "redundancy": {
            "below_full": s.volumes_below_full,
            "below_full_volumes": s.below_full_volumes.iter().map(|b| json!({"volume_id": b.volume_id, "state": b.state().name(), "healthy": b.healthy, "full": b.full})).collect::<Vec<_>>(),
            "can_lose": s.redundancy.iter().map(|r| (r.can_lose.to_string(), json!(r.volumes))).collect::<serde_json::Map<_, _>>(),
        },
        "repair": {
            "tasks_open": s.repair_tasks_open,
            "tasks_failed": s.repair_tasks_failed,
            "tasks_max": s.repair_tasks_max,
            "bytes_pending": s.repair_bytes_pending,
            "bytes_per_sec_limit": s.repair_bytes_per_sec,
            "rate_bytes_per_sec": s.repair_rate_bytes_per_sec,
            "bytes_done": s.repair_bytes_done,
            "episode_secs": s.repair_episode_secs,
            "eta_secs": s.repair_eta_secs,
            "down_after_ms": s.down_after_ms,
            "extents_sharing_a_disk": s.extents_sharing_a_disk,
            "extents_without_a_disk": s.repair_extents_without_a_disk,
        },
        "lost": {
            "volumes": s.volumes_unreadable,
            "blocks": s.blocks_lost,
            "hashes": s.lost_block_hashes.iter().map(hex::encode).collect::<Vec<_>>(),
        },
        "scrub": s.scrub.iter().map(|p| json!({"node_id": p.node_id, "passes": p.passes, "pass_bytes_done": p.pass_bytes_done, "pass_bytes_total": p.pass_bytes_total, "bytes_total": p.bytes_total, "findings": p.findings, "errors": p.errors})).collect::<Vec<_>>(),
        "compaction": s.compaction.map(|c| json!({"passes": c.passes, "last_pass_unix_ms": c.last_pass_unix_ms, "live_bytes": c.live_bytes, "garbage_bytes": c.garbage_bytes, "volumes_dead": c.volumes_dead, "rewrite_candidates": c.rewrite_candidates, "rewrite_candidate_garbage_bytes": c.rewrite_candidate_garbage_bytes, "volumes_reclaimed": c.volumes_reclaimed, "bytes_reclaimed": c.bytes_reclaimed})),
        "metadata_scan": s.metadata_scan.map(|m| json!({"passes": m.passes, "index_entries_checked": m.index_entries_checked, "extents_checked": m.extents_checked, "findings": m.findings, "errors": m.errors, "last_pass_unix_ms": m.last_pass_unix_ms})),
        "drain": {
            "nodes": s.drained_nodes,
            "disks": s.drained_disks,
            "extents_draining": s.extents_draining,
        },
        "cluster_map_version": s.cluster_map_version,
    })
}

/// A queued or running task as `--json` shows it: what it is, where, and since when.
/// The failed disk a delete waits for, if it is one: parked by the master (in no node's
/// queue) until the disk comes back or its node is removed, or still queued from before the
/// disk failed and parked at its first failed attempt there.
fn waits_for_failed_disk(s: &StatusResponse, t: &cellar_proto::master::Task) -> Option<u64> {
    let disk_id = t.source.as_ref()?.disk_id;
    let failed = s
        .disks
        .iter()
        .any(|d| d.disk_id == disk_id && d.health() == cellar_proto::master::DiskHealth::Failed);
    (t.kind() == cellar_proto::master::TaskKind::Delete && failed).then_some(disk_id)
}

fn task_json(t: &cellar_proto::master::Task, waits_for_disk: Option<u64>) -> serde_json::Value {
    json!({
        "task_id": t.task_id,
        "kind": task_kind_name(t),
        "volume_id": t.volume_id,
        "node_id": t.node_id,
        "state": task_state_name(t),
        "claimed_until_unix_ms": t.claimed_until_unix_ms,
        "attempts": t.attempts,
        "detail": t.detail,
        "waits_for_failed_disk": waits_for_disk,
        "next_attempt_unix_ms": (t.next_attempt_unix_ms > 0).then_some(t.next_attempt_unix_ms),
    })
}

fn task_kind_name(t: &cellar_proto::master::Task) -> String {
    t.kind().as_str_name().trim_start_matches("TASK_KIND_").to_ascii_lowercase()
}

fn task_state_name(t: &cellar_proto::master::Task) -> String {
    t.state().as_str_name().trim_start_matches("TASK_STATE_").to_ascii_lowercase()
}

/// One line of `cellar admin status` per listed task.
fn task_line(t: &cellar_proto::master::Task, now_unix_ms: u64, waits_for_disk: Option<u64>) -> String {
    let claim = match t.state() {
        cellar_proto::master::TaskState::Claimed => {
            format!(", claim ends in {} s", t.claimed_until_unix_ms.saturating_sub(now_unix_ms) / 1000)
        }
        cellar_proto::master::TaskState::Pending if t.next_attempt_unix_ms > now_unix_ms => {
            format!(", next attempt in {} s", (t.next_attempt_unix_ms - now_unix_ms).div_ceil(1000))
        }
        _ => String::new(),
    };
    let failed = if t.attempts > 0 {
        format!(", {} attempts failed: {}", t.attempts, t.detail)
    } else {
        String::new()
    };
    let parked =
        waits_for_disk.map_or(String::new(), |d| format!(", waits for failed disk {d} to come back"));
    format!(
        "  task {:<6} {:<11} volume {:<6} node {:<4} {}{claim}{parked}{failed}",
        t.task_id,
        task_kind_name(t),
        t.volume_id,
        t.node_id,
        task_state_name(t)
    )
}

/// The cell's apply version, and while the leader holds it below what it offers, what each
/// member offered (docs/ARCHITECTURE.md, "Upgrading a cell").
fn apply_version_line(s: &StatusResponse) -> String {
    let mut line = format!(
        "apply       version {} (master {} offers up to {})",
        s.apply_version, s.node_id, s.apply_version_max
    );
    let held: Vec<String> = s
        .members
        .iter()
        .filter_map(|m| match m.apply_version_max {
            Some(max) if max <= s.apply_version => {
                Some(format!("master {} (cellar {}) offers {max}", m.id, m.build_version))
            }
            Some(_) => None,
            None if !m.build_error.is_empty() => {
                Some(format!("master {} did not answer: {}", m.id, m.build_error))
            }
            None => None,
        })
        .collect();
    if !held.is_empty() && s.apply_version < s.apply_version_max {
        line.push_str(&format!("; held by {}", held.join("; ")));
    }
    line
}

fn print_status(s: &StatusResponse) {
    match s.leader_id {
        Some(id) => println!("leader      {id} at {}", s.leader_address),
        None => println!("leader      none (election in progress)"),
    }
    println!("term        {}", s.term);
    println!("applied     {}", s.last_applied_index);
    println!(
        "members     {}",
        s.members
            .iter()
            .map(|m| format!("{}={}{}", m.id, m.address, if m.voter { "" } else { " (learner)" }))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("{}", apply_version_line(s));
    for (zone, [up, down, ok, failed]) in zone_health(s) {
        println!("zone        {zone:<10} nodes {up} up, {down} down; disks {ok} ok, {failed} failed");
    }
    println!("nodes       {}", s.nodes.len());
    for n in &s.nodes {
        println!("  node {:<4} {:<22} zone {:<10} {}", n.node_id, n.address, n.zone, n.state().name());
    }
    println!("disks       {}", s.disks.len());
    for d in &s.disks {
        println!(
            "  disk {:<4} node {:<4} {:<8} {:>8} MiB free of {:>8} MiB  trash {:>6} MiB in {} extents  {}",
            d.disk_id,
            d.node_id,
            d.health().name(),
            d.free_bytes >> 20,
            d.capacity_bytes >> 20,
            d.trash_bytes >> 20,
            d.trash_extents,
            d.path
        );
    }
    println!(
        "volumes     {}",
        s.volumes.iter().map(|v| format!("{} {}", v.count, v.state().name())).collect::<Vec<_>>().join(", ")
    );
    println!("index       {} entries", s.index_entries);
    println!("tasks       {} open, {} done, {} failed", s.tasks_open, s.tasks_done, s.tasks_failed);
    let now_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for t in &s.open_tasks {
        println!("{}", task_line(t, now_unix_ms, waits_for_failed_disk(s, t)));
    }
    if (s.open_tasks.len() as u64) < s.tasks_open {
        println!("  ... and {} more", s.tasks_open - s.open_tasks.len() as u64);
    }
    for t in &s.failed_tasks {
        println!("{}", task_line(t, now_unix_ms, None));
    }
    if (s.failed_tasks.len() as u64) < s.tasks_failed {
        println!("  ... and {} more failed", s.tasks_failed - s.failed_tasks.len() as u64);
    }
    println!(
        "redundancy  {} below full; volumes by extents they can still lose: {}",
        s.volumes_below_full,
        s.redundancy.iter().map(|r| format!("{}: {}", r.can_lose, r.volumes)).collect::<Vec<_>>().join(", ")
    );
    for b in &s.below_full_volumes {
        println!(
            "  volume {:<6} {:<8} {} of {} extents healthy",
            b.volume_id,
            b.state().name(),
            b.healthy,
            b.full
        );
    }
    if (s.below_full_volumes.len() as u64) < s.volumes_below_full {
        println!("  ... and {} more", s.volumes_below_full - s.below_full_volumes.len() as u64);
    }
    if s.extents_sharing_a_disk > 0 {
        println!(
            "  {} fragments share a disk with another fragment of their volume (being moved off)",
            s.extents_sharing_a_disk
        );
    }
    if s.repair_extents_without_a_disk > 0 {
        println!(
            "  {} extents wait for a disk: no eligible disk keeps the placement rules (the leader's log says why)",
            s.repair_extents_without_a_disk
        );
    }
    println!(
        "repair      {} tasks open (limit {}), {} failed, {} MiB to rebuild, limit {} MB/s",
        s.repair_tasks_open,
        s.repair_tasks_max,
        s.repair_tasks_failed,
        s.repair_bytes_pending >> 20,
        s.repair_bytes_per_sec / 1_000_000
    );
    let eta = s.repair_eta_secs.map_or_else(|| "-".to_string(), |e| format!("{e} s"));
    println!(
        "repair rate {} MB/s measured ({} MiB rebuilt in {} s), ETA {eta}",
        s.repair_rate_bytes_per_sec / 1_000_000,
        s.repair_bytes_done >> 20,
        s.repair_episode_secs
    );
    println!(
        "drain       nodes {:?}, disks {:?}, {} extents still to move",
        s.drained_nodes, s.drained_disks, s.extents_draining
    );
    if !s.volumes_unreadable.is_empty() {
        println!(
            "LOST        {} blocks cannot be read until a lost extent returns (volumes {:?}); first hashes:",
            s.blocks_lost, s.volumes_unreadable
        );
        for h in &s.lost_block_hashes {
            println!("  {}", hex::encode(h));
        }
    }
    for p in &s.scrub {
        let pct = (100 * p.pass_bytes_done).checked_div(p.pass_bytes_total).unwrap_or(100);
        println!(
            "scrub       node {:<4} pass {} at {pct}% ({} MiB checked in all), {} findings, {} errors",
            p.node_id,
            p.passes + 1,
            p.bytes_total >> 20,
            p.findings,
            p.errors
        );
    }
    if let Some(c) = &s.compaction {
        println!(
            "compaction  {} passes: {} MiB live, {} MiB garbage; {} dead volumes waiting, {} rewrite candidates ({} MiB garbage); {} volumes ({} MiB) reclaimed",
            c.passes,
            c.live_bytes >> 20,
            c.garbage_bytes >> 20,
            c.volumes_dead,
            c.rewrite_candidates,
            c.rewrite_candidate_garbage_bytes >> 20,
            c.volumes_reclaimed,
            c.bytes_reclaimed >> 20
        );
    }
    if let Some(m) = &s.metadata_scan {
        println!(
            "meta scan   {} passes, {} index entries and {} extents checked, {} findings, {} errors",
            m.passes, m.index_entries_checked, m.extents_checked, m.findings, m.errors
        );
    }
}
