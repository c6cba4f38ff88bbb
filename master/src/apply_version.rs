//! The cell's apply version: which behaviour of the commands' apply is in force, so that
//! masters of two builds apply one log alike during a rolling upgrade.
//!
//! Every master applies every log entry to its own copy of the state; the copies agree
//! only if each entry is applied alike everywhere. A build that changes how a command
//! applies (what a claim accepts, what a report writes) would, beside a master of the
//! build before, turn one log into two states; a build that adds a command would write
//! entries the masters of the build before cannot read (they stop following the log).
//! So both are tied to an apply version: the new build keeps the old behaviour for the
//! versions before (and refuses the new command below its version), and the cell's
//! version (a state record, changed only by [`Command::RaiseApplyVersion`] through the
//! log) says which one every master uses. The leader raises it
//! ([`crate::upgrade::run`]) only to a version every member offers (the `Build` call of each, answered
//! from its build's [`APPLY_VERSION_MAX`], lowered by its `apply_version_max` setting,
//! which lets an operator hold a cell at the old behaviour until a rollback of the
//! binaries is no longer wanted). A master asked to apply a version above its build's
//! (a raise in the log, or a state from a snapshot) stops with an error instead
//! ([`check`]): a build too old for the cell never applies the log its own way.
//!
//! | version | behaviour |
//! |---:|---|
//! | 1 | the commands as builds f1191a0 to b9fc3f8 apply them (those builds have no record and no `Build` call) |
//! | 2 | [`Command::RetryTask`]: an operator hands a given-up task back to its node with its attempts anew (`cellar admin retry-task`); refused below 2 |
//! | 3 | [`Command::ClaimTasksAfterStart`]: a volume server's first task poll since its process started counts each task its node still has claimed as a failed attempt, then claims; refused below 3 (below it the poll is a plain [`Command::ClaimTasks`]) |
//!
//! A cell without the record is at version 1 (a cell made before it, or one just formed:
//! its leader raises it within one [`crate::upgrade::RAISE_INTERVAL`] when every member offers more), so
//! that a master of this build applies a log of those builds as they did. Builds before
//! f1191a0 applied a failed encode moved to the next replica holder differently (no retry
//! pause) and are not to be mixed with any later one.

use serde::{Deserialize, Serialize};

use crate::codec::Kind;
use crate::command::{Command, Response};
use crate::state::{Kv, StateError, read_record, write_record};
use crate::types::RECORD_VERSION;

/// The highest apply version this build applies (the table in the module's text).
pub const APPLY_VERSION_MAX: u32 = 3;
/// The version of a cell without an apply version record.
pub const APPLY_VERSION_FIRST: u32 = 1;
/// [`Command::RetryTask`] exists (see the module's table).
pub const RETRY_TASK: u32 = 2;
/// [`Command::ClaimTasksAfterStart`] exists (see the module's table).
pub const CLAIMS_RELEASED_AT_START: u32 = 3;
/// The state record's key.
pub const KEY_APPLY_VERSION: &[u8] = b"a";

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

/// The apply version a command needs: a command added by a later version is refused
/// below it, before it is proposed (`cellar_master::service`), so that masters of the
/// builds before never meet an entry they cannot read, and again when applied.
pub fn needed(command: &Command) -> u32 {
    match command {
        Command::RetryTask { .. } => RETRY_TASK,
        Command::ClaimTasksAfterStart { .. } => CLAIMS_RELEASED_AT_START,
        Command::Once { command, .. } => needed(command),
        _ => APPLY_VERSION_FIRST,
    }
}

/// Why `command`, which needs apply version `needed`, is refused in a cell at `cell`.
pub fn too_old_for(command: &Command, needed: u32, cell: u32) -> String {
    format!(
        "{command} needs the cell at apply version {needed}, and it is at {cell}: every master must run a \
         build that offers it (cellar admin status shows what each offers)"
    )
}
