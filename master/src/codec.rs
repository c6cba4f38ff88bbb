//! The master's one binary encoding, for everything it persists or sends to another
//! master: Raft log entries, Raft RPC payloads, snapshot metadata and every state record.
//!
//! Every encoded value is an envelope: byte 0 is the format version ([`FORMAT_VERSION`]),
//! byte 1 the record kind ([`Kind`]), then the value in the postcard encoding (serde's
//! data model as compact bytes: unsigned integers as LEB128 varints, fields in
//! declaration order, enum variants as a varint index, sequences and strings as a varint
//! length then the items; the byte-level rules and every record's fields are in
//! docs/FORMAT.md section 13). A value that does not decode, has another kind than the
//! one expected, an unknown version or trailing bytes is an error ([`CodecError`]),
//! never skipped.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format version this build writes; the only one it reads.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes of the envelope before the value.
pub const ENVELOPE_BYTES: usize = 2;

/// What an encoded value is; byte 1 of the envelope. Values are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A Raft log entry (`openraft::Entry` of the master's commands).
    LogEntry = 1,
    /// A Raft vote.
    Vote = 2,
    /// A Raft log id.
    LogId = 3,
    /// A Raft membership (applied, in the state machine's metadata).
    Membership = 4,
    /// A Raft RPC request or response (AppendEntries, Vote, snapshot).
    RaftRpc = 5,
    /// A snapshot's metadata (in the snapshot file and the install call).
    SnapshotMeta = 6,
    /// The counters record.
    Counters = 16,
    /// A node record.
    Node = 17,
    /// A disk record.
    Disk = 18,
    /// A volume record.
    Volume = 19,
    /// A task record.
    Task = 20,
    /// A client session record.
    Session = 21,
    /// A stored outcome of an exactly-once command.
    Outcome = 22,
    /// A sealed volume's encode task id.
    EncodeTask = 23,
    /// A node or disk an operator drains.
    Drain = 24,
    /// A bucket (namespace).
    Bucket = 25,
    /// An object version (namespace).
    Version = 26,
    /// A multipart upload (namespace).
    Upload = 27,
    /// A part of an upload (namespace).
    Part = 28,
    /// An S3 access key (namespace).
    AccessKey = 29,
    /// A bucket's lifecycle rules (namespace).
    Lifecycle = 30,
    /// The cell's apply version ([`crate::apply_version`]).
    ApplyVersion = 31,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        use Kind::*;
        [
            LogEntry,
            Vote,
            LogId,
            Membership,
            RaftRpc,
            SnapshotMeta,
            Counters,
            Node,
            Disk,
            Volume,
            Task,
            Session,
            Outcome,
            EncodeTask,
            Drain,
            Bucket,
            Version,
            Upload,
            Part,
            AccessKey,
            Lifecycle,
            ApplyVersion,
        ]
        .into_iter()
        .find(|k| *k as u8 == b)
    }
}

/// Why bytes did not decode (or a value did not encode).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than the envelope.
    #[error("{len} bytes: shorter than the {ENVELOPE_BYTES}-byte envelope")]
    Short {
        /// The length found.
        len: usize,
    },
    /// A format version this build does not read.
    #[error("format version {found} is not known to this build (it reads version {FORMAT_VERSION})")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
    },
    /// Another kind of record than the one expected.
    #[error("expected a {expected:?} record, found kind {found} ({})", describe(*found))]
    WrongKind {
        /// What the caller expected.
        expected: Kind,
        /// The kind byte found.
        found: u8,
    },
    /// The value's bytes do not decode as its kind.
    #[error("{kind:?} record does not decode: {detail}")]
    Malformed {
        /// The record's kind.
        kind: Kind,
        /// What the decoder said.
        detail: String,
    },
    /// Bytes after the value.
    #[error("{kind:?} record has {extra} bytes after its value")]
    Trailing {
        /// The record's kind.
        kind: Kind,
        /// How many.
        extra: usize,
    },
    /// The value cannot be encoded (a serde limit, never expected).
    #[error("{kind:?} record does not encode: {detail}")]
    Encode {
        /// The record's kind.
        kind: Kind,
        /// What the encoder said.
        detail: String,
    },
}

fn describe(b: u8) -> String {
    match Kind::from_byte(b) {
        Some(k) => format!("{k:?}"),
        None => "unknown".to_string(),
    }
}

/// Encodes `value` as a `kind` record.
pub fn encode<T: Serialize + ?Sized>(kind: Kind, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION, kind as u8];
    postcard::to_io(value, &mut out).map_err(|e| CodecError::Encode { kind, detail: e.to_string() })?;
    Ok(out)
}

/// Decodes a `kind` record.
pub fn decode<T: DeserializeOwned>(kind: Kind, bytes: &[u8]) -> Result<T, CodecError> {
    let body = check_envelope(kind, bytes)?;
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| {
        let detail = match e {
            // postcard drops the message of a field's own check (a coding scheme out of
            // range): the field logs it when it refuses.
            postcard::Error::SerdeDeCustom => "a field holds a value out of its range (logged)".to_string(),
            other => other.to_string(),
        };
        CodecError::Malformed { kind, detail }
    })?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing { kind, extra: rest.len() });
    }
    Ok(value)
}

/// Checks the envelope of a `kind` record; returns the value's bytes.
pub fn check_envelope(kind: Kind, bytes: &[u8]) -> Result<&[u8], CodecError> {
    let [version, found, body @ ..] = bytes else {
        return Err(CodecError::Short { len: bytes.len() });
    };
    if *version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion { found: *version });
    }
    if *found != kind as u8 {
        return Err(CodecError::WrongKind { expected: kind, found: *found });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_round_trips_inside_its_envelope() {
        let bytes = encode(Kind::Counters, &(7u64, "x".to_string())).expect("encode");
        assert_eq!(bytes, vec![FORMAT_VERSION, Kind::Counters as u8, 7, 1, b'x']);
        let back: (u64, String) = decode(Kind::Counters, &bytes).expect("decode");
        assert_eq!(back, (7, "x".to_string()));
    }

    #[test]
    fn unknown_versions_other_kinds_and_damage_are_refused() {
        let bytes = encode(Kind::Node, &300u64).expect("encode");
        let mut newer = bytes.clone();
        newer[0] = FORMAT_VERSION + 1;
        let e = decode::<u64>(Kind::Node, &newer).expect_err("a newer version is refused");
        assert_eq!(e, CodecError::UnknownVersion { found: FORMAT_VERSION + 1 });
        assert!(e.to_string().contains("format version 2 is not known"), "{e}");
        assert_eq!(
            decode::<u64>(Kind::Disk, &bytes),
            Err(CodecError::WrongKind { expected: Kind::Disk, found: Kind::Node as u8 })
        );
        assert_eq!(decode::<u64>(Kind::Node, &bytes[..1]), Err(CodecError::Short { len: 1 }));
        assert!(matches!(decode::<u64>(Kind::Node, &bytes[..3]), Err(CodecError::Malformed { .. })));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode::<u64>(Kind::Node, &longer),
            Err(CodecError::Trailing { kind: Kind::Node, extra: 1 })
        );
    }
}
