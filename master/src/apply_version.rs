//! The cell's apply version: which behaviour of the commands' apply is in force, so that
//! masters of two builds apply one log alike during a rolling upgrade.
//!
//! Every master applies every log entry to its own copy of the state; the copies agree
//! only if each entry is applied alike everywhere. A build that changes how a command
//! applies (what a claim accepts, what a report writes) would, beside a master of the
//! build before, turn one log into two states. So a change of apply behaviour is tied to
//! an apply version: the new build keeps the old behaviour for the versions before, and
//! the cell's version (a state record, changed only by [`Command::RaiseApplyVersion`]
//! through the log) says which one every master uses. The leader raises it
//! ([`run`]) only to a version every member offers (the `Build` call of each, answered
//! from its build's [`APPLY_VERSION_MAX`], lowered by its `apply_version_max` setting,
//! which lets an operator hold a cell at the old behaviour until a rollback of the
//! binaries is no longer wanted). A master asked to apply a version above its build's
//! (a raise in the log, or a state from a snapshot) stops with an error instead
//! ([`check`]): a build too old for the cell never applies the log its own way.
//!
//! | version | behaviour |
//! |---:|---|
//! | 1 | builds without this record (before the apply version existed): an encode that failed on one replica holder and was moved to the next may be claimed there at once |
//! | 2 | such a moved encode keeps the failed attempt's claim end and waits for the retry pause ([`crate::tasks::report`]) |
//!
//! A cell without the record is at version 1 (a cell made before it, or one just formed:
//! its leader raises it within one [`RAISE_INTERVAL`] when every member offers more).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cellar_proto::raft::BuildRequest;
use cellar_proto::raft::raft_client::RaftClient;
use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::codec::Kind;
use crate::command::{Command, Response};
use crate::observed::Observed;
use crate::state::{Kv, StateError, read_record, write_record};
use crate::types::RECORD_VERSION;
use crate::{MasterRaft, now_unix_ms};

/// The highest apply version this build applies (the table in the module's text).
pub const APPLY_VERSION_MAX: u32 = 2;
/// The version of a cell without an apply version record.
pub const APPLY_VERSION_FIRST: u32 = 1;
/// A moved encode waits for the retry pause (see the module's table).
pub const MOVED_ENCODE_KEEPS_PAUSE: u32 = 2;
/// The state record's key.
pub const KEY_APPLY_VERSION: &[u8] = b"a";
/// How often the leader looks whether the cell's version can be raised.
pub const RAISE_INTERVAL: Duration = Duration::from_secs(2);
/// Deadline of one member's `Build` call.
pub const BUILD_CALL_DEADLINE: Duration = Duration::from_secs(2);

/// The cell's apply version record (absent: [`APPLY_VERSION_FIRST`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyVersionRecord {
    /// Encoding version.
    pub v: u32,
    /// The apply version in force.
    pub version: u32,
    /// When it was raised to it (leader's clock).
    pub since_unix_ms: u64,
}

/// The cell's apply version record, if it has one.
pub fn record(kv: &dyn Kv) -> Result<Option<ApplyVersionRecord>, StateError> {
    read_record(kv, Kind::ApplyVersion, KEY_APPLY_VERSION)
}

/// The cell's apply version.
pub fn current(kv: &dyn Kv) -> Result<u32, StateError> {
    Ok(record(kv)?.map_or(APPLY_VERSION_FIRST, |r| r.version))
}

/// The cell's apply version, refused when this build does not apply it: the master stops
/// rather than apply the log in a way the others do not.
pub fn check(kv: &dyn Kv) -> Result<u32, StateError> {
    let version = current(kv)?;
    if version > APPLY_VERSION_MAX {
        return Err(too_new(version));
    }
    Ok(version)
}

fn too_new(version: u32) -> StateError {
    StateError::Unsupported(format!(
        "the cell applies commands at apply version {version}, and this build of cellar {} applies \
         versions {APPLY_VERSION_FIRST}..={APPLY_VERSION_MAX}: run this master with a build at least as new as \
         the other masters'",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Applies [`Command::RaiseApplyVersion`]: the cell's version becomes `version` if that is
/// higher (a lower or equal one changes nothing: a raise proposed twice). A version above
/// this build's is an error, which stops this master (see [`check`]).
pub fn raise(kv: &mut dyn Kv, version: u32, now_unix_ms: u64) -> Result<Response, StateError> {
    if version > APPLY_VERSION_MAX {
        return Err(too_new(version));
    }
    if version > current(kv)? {
        let record = ApplyVersionRecord { v: RECORD_VERSION, version, since_unix_ms: now_unix_ms };
        write_record(kv, Kind::ApplyVersion, KEY_APPLY_VERSION, &record)?;
    }
    Ok(Response::Empty)
}

/// What a member answered the leader's last `Build` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberBuild {
    /// The version it offers, and its build's version.
    Offers {
        /// Highest apply version it offers.
        apply_version_max: u32,
        /// Its build's version.
        build: String,
    },
    /// It did not answer (or answered with an error: a build without the call is one).
    NoAnswer(String),
}

/// The version the cell can be raised to: the lowest any member offers, if every member
/// answered (`None` when one did not).
pub fn raise_to(builds: &BTreeMap<u64, MemberBuild>) -> Option<u32> {
    builds
        .values()
        .map(|b| match b {
            MemberBuild::Offers { apply_version_max, .. } => Some(*apply_version_max),
            MemberBuild::NoAnswer(_) => None,
        })
        .try_fold(u32::MAX, |low, offer| offer.map(|o| low.min(o)))
        .filter(|v| *v != u32::MAX)
}

/// Asks one member which apply version it offers, over `channel` (to its address).
async fn ask(channel: Channel, secret: Option<&str>) -> MemberBuild {
    let call = async {
        let mut client = RaftClient::new(channel);
        let reply = client
            .build(crate::auth::with_secret(tonic::Request::new(BuildRequest {}), secret))
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?
            .into_inner();
        Ok::<_, String>(MemberBuild::Offers {
            apply_version_max: reply.apply_version_max,
            build: reply.version,
        })
    };
    match tokio::time::timeout(BUILD_CALL_DEADLINE, call).await {
        Ok(Ok(build)) => build,
        Ok(Err(e)) => MemberBuild::NoAnswer(e),
        Err(_) => MemberBuild::NoAnswer(format!("no answer within {BUILD_CALL_DEADLINE:?}")),
    }
}

/// The leader's loop: every [`RAISE_INTERVAL`], while the cell is below this build's
/// [`APPLY_VERSION_MAX`], asks every other member what it offers and raises the cell's
/// version to the lowest offer (this master's own is `offered_max`) once every member
/// answered with more than the cell's. What the members answered is kept in `observed`
/// for `cellar admin status`. Runs until `stop` turns true.
pub async fn run(
    id: u64,
    raft: MasterRaft,
    reader: crate::store::sm::StateReader,
    offered_max: u32,
    secret: Option<String>,
    observed: Arc<Observed>,
    mut stop: watch::Receiver<bool>,
) {
    // The last reason the version stayed, logged when it changes (not every pass).
    let mut said = String::new();
    // One lazily connected channel per member address (a held cell is asked every pass).
    let mut channels: BTreeMap<String, Channel> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(RAISE_INTERVAL) => {}
        }
        let (leader, members) = {
            let metrics = raft.metrics().borrow_watched().clone();
            let membership = metrics.membership_config.membership().clone();
            let members: Vec<(u64, String)> =
                membership.nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
            (metrics.current_leader, members)
        };
        if leader != Some(id) {
            continue;
        }
        let cell = match current(&reader) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the cell's apply version");
                continue;
            }
        };
        // Asked while the cell is below this build's version even when this master holds
        // it back itself, so that status can say what every member offers.
        if cell >= APPLY_VERSION_MAX {
            continue;
        }
        channels.retain(|addr, _| members.iter().any(|(_, a)| a == addr));
        let mut builds = BTreeMap::new();
        let mut asked = Vec::new();
        for (member, addr) in members.iter().filter(|(member, _)| *member != id) {
            let channel = match channels.get(addr) {
                Some(c) => c.clone(),
                None => match crate::network::channel(addr) {
                    Ok(c) => channels.entry(addr.clone()).or_insert(c).clone(),
                    Err(e) => {
                        builds.insert(*member, MemberBuild::NoAnswer(format!("address {addr}: {e}")));
                        continue;
                    }
                },
            };
            let secret = secret.clone();
            asked.push(async move { (*member, ask(channel, secret.as_deref()).await) });
        }
        for (member, build) in futures::future::join_all(asked).await {
            builds.insert(member, build);
        }
        builds.insert(
            id,
            MemberBuild::Offers {
                apply_version_max: offered_max,
                build: env!("CARGO_PKG_VERSION").to_string(),
            },
        );
        observed.set_builds(builds.clone());
        let why = match raise_to(&builds) {
            Some(to) if to > cell => {
                let command = Command::RaiseApplyVersion { version: to, now_unix_ms: now_unix_ms() };
                match raft.client_write(command).await {
                    Ok(_) => {
                        tracing::info!(
                            from = cell,
                            to,
                            members = builds.len(),
                            "the cell's apply version raised"
                        );
                        said.clear();
                        continue;
                    }
                    Err(e) => format!("the raise to {to} was not applied: {e}"),
                }
            }
            _ => builds
                .iter()
                .filter_map(|(member, b)| match b {
                    MemberBuild::Offers { apply_version_max, build } if *apply_version_max <= cell => {
                        Some(format!("master {member} (cellar {build}) offers {apply_version_max}"))
                    }
                    MemberBuild::Offers { .. } => None,
                    MemberBuild::NoAnswer(e) => Some(format!("master {member} did not answer: {e}")),
                })
                .collect::<Vec<_>>()
                .join("; "),
        };
        if why != said {
            tracing::info!(cell, offered_max, %why, "the cell's apply version stays");
            said = why;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(v: u32) -> MemberBuild {
        MemberBuild::Offers { apply_version_max: v, build: "0.1.0".into() }
    }

    #[test]
    fn the_cell_is_raised_to_the_lowest_offer_and_only_when_every_member_answered() {
        assert_eq!(raise_to(&BTreeMap::new()), None);
        assert_eq!(raise_to(&BTreeMap::from([(1, offers(2)), (2, offers(2)), (3, offers(2))])), Some(2));
        assert_eq!(raise_to(&BTreeMap::from([(1, offers(2)), (2, offers(1)), (3, offers(2))])), Some(1));
        let silent = MemberBuild::NoAnswer("Unimplemented: a build without the call".into());
        assert_eq!(raise_to(&BTreeMap::from([(1, offers(2)), (2, silent), (3, offers(2))])), None);
    }
}
