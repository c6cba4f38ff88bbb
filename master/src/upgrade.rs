//! The leader's side of a rolling upgrade: asking every master which apply version it
//! offers and raising the cell's ([`crate::apply_version`]) once every one offers more.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cellar_proto::raft::BuildRequest;
use cellar_proto::raft::raft_client::RaftClient;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::apply_version::{APPLY_VERSION_MAX, current};
use crate::command::Command;
pub use crate::observed::MemberBuild;
use crate::observed::Observed;
use crate::{MasterRaft, now_unix_ms};

/// Longest wait for a raise to be applied (a leader that lost its quorum meanwhile).
pub const RAISE_WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader looks whether the cell's version can be raised.
pub const RAISE_INTERVAL: Duration = Duration::from_secs(2);
/// Deadline of one member's `Build` call.
pub const BUILD_CALL_DEADLINE: Duration = Duration::from_secs(2);

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

/// Asks member `member` which apply version it offers, over `channel` (to its address);
/// an answer from another master (the address taken over) counts as none.
async fn ask(member: u64, channel: Channel, secret: Option<&str>) -> MemberBuild {
    let call = async {
        let mut client = RaftClient::new(channel);
        let reply = client
            .build(crate::auth::with_secret(tonic::Request::new(BuildRequest {}), secret))
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?
            .into_inner();
        if reply.node_id != member {
            return Err(format!("master {} answered at master {member}'s address", reply.node_id));
        }
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
            // What this master heard while it led is the new leader's to say now.
            observed.clear_builds();
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
            observed.clear_builds();
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
            asked.push(async move { (*member, ask(*member, channel, secret.as_deref()).await) });
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
                let write = tokio::time::timeout(RAISE_WRITE_DEADLINE, raft.client_write(command));
                let written = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    written = write => written,
                };
                match written {
                    Ok(Ok(_)) => {
                        tracing::info!(
                            from = cell,
                            to,
                            members = builds.len(),
                            "the cell's apply version raised"
                        );
                        said.clear();
                        continue;
                    }
                    Ok(Err(e)) => format!("the raise to {to} was not applied: {e}"),
                    Err(_) => format!("the raise to {to} was not applied within {RAISE_WRITE_DEADLINE:?}"),
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
