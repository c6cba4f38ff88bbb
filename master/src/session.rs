//! Client sessions: exactly-once mutating commands (the client sessions of the Raft
//! dissertation, section 6.3).
//!
//! A client retries a call whose answer it did not get, and the first attempt may have
//! been applied: a retried `CommitIndex` would add a second reference, a retried
//! `DropReferences` would drop two. So every mutating call carries a [`RequestId`] (a
//! random client id, a sequence number per logical call, and the client's lowest call
//! still in flight), and `apply` keeps, per client, the outcome of each call it applied:
//! a retry is answered with that outcome and changes nothing.
//!
//! What is kept is bounded and deterministic (every replica applies the same commands to
//! the same state, so they keep and forget the same things):
//! - outcomes below the client's `lowest_pending` are forgotten (the client will not ask
//!   for them again);
//! - at most [`SESSION_OUTCOMES_MAX`] outcomes and [`SESSION_OUTCOME_BYTES_MAX`] bytes per
//!   client: beyond, the oldest are forgotten;
//! - a session idle for [`SESSION_IDLE_EXPIRY_MS`] (leader-stamped time in the commands)
//!   is removed, at most [`SESSION_EXPIRIES_PER_APPLY_MAX`] per applied command.
//!
//! A call below what its session remembers (its `floor`) is refused with
//! `REQUEST_EXPIRED`, never applied a second time. The records live in the state
//! machine's key space, so they are in snapshots and survive restarts and leader changes.
//! Their format is in docs/FORMAT.md, section 11.

use serde::{Deserialize, Serialize};

use crate::codec::{self, Kind};
use crate::command::{CommandError, RequestId, Response};
use crate::state::{Kv, StateError, id_key, read_record, write_record};
use crate::types::RECORD_VERSION;

/// Prefix of session records (then the client id, big-endian).
pub const PREFIX_SESSION: u8 = b's';
/// Prefix of retained outcomes (then the client id and the sequence, big-endian).
pub const PREFIX_OUTCOME: u8 = b'o';
/// Prefix of the session expiry index (then the expiry Unix ms and the client id,
/// big-endian; empty value): in expiry order, so the sweep reads only what is due.
pub const PREFIX_SESSION_EXPIRY: u8 = b'x';
/// Outcomes kept per client at most. Far above the calls a client has in flight at once
/// (a frontend: its writer slots plus its HTTP requests), so that only a call stuck for
/// longer than a thousand later ones loses its outcome.
pub const SESSION_OUTCOMES_MAX: usize = 1024;
/// Bytes of outcomes kept per client at most (a commit of 256 entries is ~20 KiB).
pub const SESSION_OUTCOME_BYTES_MAX: u64 = 64 << 20;
/// A session unused for this long is removed. Far above any client's call deadline
/// (clients retry for seconds, see `client::CALL_DEADLINE_MAX`), so no retry outlives it.
pub const SESSION_IDLE_EXPIRY_MS: u64 = 60 * 60 * 1000;
/// Expiry times are rounded up to this, so that an active session moves in the expiry
/// index once a minute, not at every call.
pub const SESSION_EXPIRY_GRANULARITY_MS: u64 = 60 * 1000;
/// Expired sessions removed per applied command at most (bounded work per apply).
pub const SESSION_EXPIRIES_PER_APPLY_MAX: usize = 2;

fn record_version() -> u32 {
    RECORD_VERSION
}

/// What the state machine remembers of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Encoding version.
    #[serde(default = "record_version")]
    pub v: u32,
    /// The client.
    pub client_id: u64,
    /// Calls below this are refused as expired (their outcomes are forgotten).
    pub floor: u64,
    /// Last call (leader's clock).
    pub last_active_unix_ms: u64,
    /// When the session goes, as indexed under [`PREFIX_SESSION_EXPIRY`].
    pub expires_unix_ms: u64,
    /// The calls whose outcomes are kept, ascending.
    pub retained: Vec<Retained>,
}

/// One kept outcome of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retained {
    /// The call.
    pub seq: u64,
    /// Size of its outcome record.
    pub bytes: u64,
}

/// The first outcome of a call, as answered to every retry of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// Encoding version.
    #[serde(default = "record_version")]
    pub v: u32,
    /// What applying the call returned.
    pub response: Response,
}

/// Key of a client's session record.
pub fn session_key(client_id: u64) -> [u8; 9] {
    id_key(PREFIX_SESSION, client_id)
}

/// Key of a kept outcome.
pub fn outcome_key(client_id: u64, seq: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = PREFIX_OUTCOME;
    key[1..9].copy_from_slice(&client_id.to_be_bytes());
    key[9..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Key of a session's entry in the expiry index.
pub fn expiry_key(expires_unix_ms: u64, client_id: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = PREFIX_SESSION_EXPIRY;
    key[1..9].copy_from_slice(&expires_unix_ms.to_be_bytes());
    key[9..].copy_from_slice(&client_id.to_be_bytes());
    key
}

/// Reads a client's session.
pub fn session(kv: &dyn Kv, client_id: u64) -> Result<Option<SessionRecord>, StateError> {
    read_record(kv, Kind::Session, &session_key(client_id))
}

/// Whether the session of `request`'s client has seen that call already: its outcome is
/// kept, or it is below the floor (forgotten). A handler that answers some calls from
/// the local state without a Raft write must not answer such a retry so: the first
/// attempt's outcome may differ (`PullTasks`: the tasks it claimed, which a poll of the
/// state no longer finds claimable).
pub fn seen(kv: &dyn Kv, request: &RequestId) -> Result<bool, StateError> {
    Ok(session(kv, request.client_id)?.is_some_and(|s| {
        request.seq < s.floor || s.retained.binary_search_by_key(&request.seq, |r| r.seq).is_ok()
    }))
}

/// Applies one call at most once: `apply` runs only for a call the session has not seen;
/// a retry gets the stored outcome; a call below the session's floor is refused. The
/// session is updated (and written) in every case but a malformed id.
pub fn once(
    kv: &mut dyn Kv,
    request: &RequestId,
    now_unix_ms: u64,
    apply: impl FnOnce(&mut dyn Kv) -> Result<Response, StateError>,
) -> Result<Response, StateError> {
    let RequestId { client_id, seq, lowest_pending } = *request;
    if lowest_pending > seq {
        return Ok(Response::Refused {
            error: CommandError::BadRequest {
                detail: format!("request {seq}: its lowest pending call {lowest_pending} is above it"),
            },
        });
    }
    let mut s = session(kv, client_id)?.unwrap_or(SessionRecord {
        v: RECORD_VERSION,
        client_id,
        floor: lowest_pending,
        last_active_unix_ms: now_unix_ms,
        expires_unix_ms: 0,
        retained: Vec::new(),
    });
    if lowest_pending > s.floor {
        forget_below(kv, &mut s, lowest_pending);
    }
    let response = if seq < s.floor {
        Response::Refused { error: CommandError::RequestExpired { client_id, seq, floor: s.floor } }
    } else if s.retained.binary_search_by_key(&seq, |r| r.seq).is_ok() {
        let key = outcome_key(client_id, seq);
        match read_record::<OutcomeRecord>(kv, Kind::Outcome, &key)? {
            Some(o) => o.response,
            None => {
                return Err(StateError::Corrupt {
                    key: hex::encode(key),
                    detail: "a session lists an outcome that is not stored".into(),
                });
            }
        }
    } else {
        let response = apply(kv)?;
        let record = OutcomeRecord { v: RECORD_VERSION, response };
        let bytes = codec::encode(Kind::Outcome, &record).map_err(|e| StateError::Store(e.to_string()))?;
        let size = bytes.len() as u64;
        kv.put(&outcome_key(client_id, seq), bytes);
        let at = s.retained.partition_point(|r| r.seq < seq);
        s.retained.insert(at, Retained { seq, bytes: size });
        evict_over_caps(kv, &mut s);
        record.response
    };
    touch(kv, &mut s, now_unix_ms);
    write_record(kv, Kind::Session, &session_key(client_id), &s)?;
    Ok(response)
}

/// Forgets the outcomes of calls below `floor` and raises the session's floor to it.
fn forget_below(kv: &mut dyn Kv, s: &mut SessionRecord, floor: u64) {
    let cut = s.retained.partition_point(|r| r.seq < floor);
    for r in s.retained.drain(..cut) {
        kv.delete(&outcome_key(s.client_id, r.seq));
    }
    s.floor = s.floor.max(floor);
}

/// Forgets the oldest outcomes while the session holds too many or too many bytes (the
/// newest one always stays: it was just applied and its caller is waiting for it).
fn evict_over_caps(kv: &mut dyn Kv, s: &mut SessionRecord) {
    let mut total: u64 = s.retained.iter().map(|r| r.bytes).sum();
    while s.retained.len() > 1
        && (s.retained.len() > SESSION_OUTCOMES_MAX || total > SESSION_OUTCOME_BYTES_MAX)
    {
        let oldest = s.retained.remove(0);
        total -= oldest.bytes;
        kv.delete(&outcome_key(s.client_id, oldest.seq));
        s.floor = s.floor.max(oldest.seq + 1);
    }
}

/// Marks the session used at `now`; moves it in the expiry index when its rounded expiry
/// changes.
fn touch(kv: &mut dyn Kv, s: &mut SessionRecord, now_unix_ms: u64) {
    s.last_active_unix_ms = now_unix_ms;
    let expires = now_unix_ms
        .saturating_add(SESSION_IDLE_EXPIRY_MS)
        .div_ceil(SESSION_EXPIRY_GRANULARITY_MS)
        .saturating_mul(SESSION_EXPIRY_GRANULARITY_MS);
    if expires != s.expires_unix_ms {
        if s.expires_unix_ms != 0 {
            kv.delete(&expiry_key(s.expires_unix_ms, s.client_id));
        }
        kv.put(&expiry_key(expires, s.client_id), Vec::new());
        s.expires_unix_ms = expires;
    }
}

/// Removes up to [`SESSION_EXPIRIES_PER_APPLY_MAX`] sessions whose expiry is at or before
/// `now` (with their outcomes); returns how many.
pub fn sweep(kv: &mut dyn Kv, now_unix_ms: u64) -> Result<usize, StateError> {
    let due = kv.scan(&[PREFIX_SESSION_EXPIRY], SESSION_EXPIRIES_PER_APPLY_MAX)?;
    let mut removed = 0;
    for (key, _) in due {
        let (Some(expires), Some(client_id)) = (
            key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes),
            key.get(9..17).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes),
        ) else {
            return Err(StateError::Corrupt {
                key: hex::encode(&key),
                detail: "bad session expiry key".into(),
            });
        };
        if expires > now_unix_ms {
            break;
        }
        kv.delete(&key);
        if let Some(s) = session(kv, client_id)?
            && s.expires_unix_ms == expires
        {
            for r in &s.retained {
                kv.delete(&outcome_key(client_id, r.seq));
            }
            kv.delete(&session_key(client_id));
            removed += 1;
        }
    }
    Ok(removed)
}
