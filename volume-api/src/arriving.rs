//! Checking a ReadRecord answer's payload against its key while the answer arrives.
//!
//! A get of a 4 MiB block used to wait for the whole answer and then hash it (the read
//! digest, ~0.6-0.8 ms of one core here): at one client that time adds to every get. The
//! answer comes in frames of up to 1 MiB ([`crate::FRAME_MAX_BYTES`]), so each frame is
//! hashed as it lands, while the next ones are still on the way, and the verdict is ready
//! when the last byte is.
//!
//! Only an answer laid out as volume servers send it is checked here: the 5-byte gRPC
//! prefix, field 1 (`sha256`, 32 bytes), field 2 (`payload`) and nothing after, the length
//! in the prefix matching. That is the one layout whose decoded payload is exactly the
//! bytes hashed (protobuf lets a field repeat, the last one winning, or fields come in any
//! order). Any other answer gets no verdict here ([`ArrivingRecord::verdict`] is `None`),
//! and the caller checks the decoded payload as before.

use std::ops::Range;

use sha2::{Digest, Sha256};

use crate::digest::{BlockKey, READ_DIGEST_BYTES};

/// Bytes of the expected head: prefix, field 1 (key, length, 32 bytes), field 2's key and
/// a length of up to 5 bytes (varint of a length under 4 GiB).
const HEAD_MAX_BYTES: usize = 5 + 2 + 32 + 1 + 5;

#[derive(Clone)]
enum Hasher {
    Digest(Box<blake3::Hasher>),
    Sha256(Sha256),
}

#[derive(Clone)]
enum State {
    /// Collecting the head.
    Head(Vec<u8>),
    /// Hashing the payload: where it starts in the answer (prefix included), its length,
    /// payload bytes of this answer passed, the message's total length, the answer's
    /// field 1.
    Payload { start: usize, len: usize, pos: usize, message_len: usize, sha256: [u8; 32] },
    /// Not the expected layout, or more bytes than announced: no verdict.
    Unchecked,
}

/// What an answer resumed from must agree with: the payload's length and key, as the
/// first answer gave them.
#[derive(Clone, Copy)]
struct Carried {
    len: usize,
    sha256: [u8; 32],
}

/// A ReadRecord answer being checked as it arrives. A clone goes on with another replica's
/// answer while the original waits on its own ([`ArrivingRecord::resume`]).
#[derive(Clone)]
pub struct ArrivingRecord {
    key: BlockKey,
    hasher: Hasher,
    state: State,
    /// Bytes of the answer seen (prefix included).
    seen: usize,
    /// Payload bytes hashed, over every answer (see [`ArrivingRecord::resume`]).
    hashed: usize,
    /// Set once an answer is resumed from another.
    carried: Option<Carried>,
}

/// A varint at the start of `bytes`: its value and length; `None` if incomplete.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

impl ArrivingRecord {
    /// A check of an answer against `key`.
    pub fn new(key: BlockKey) -> ArrivingRecord {
        let hasher = match key.digest {
            Some(_) => Hasher::Digest(Box::new(blake3::Hasher::new_keyed(&key.sha256))),
            None => Hasher::Sha256(Sha256::new()),
        };
        ArrivingRecord {
            key,
            hasher,
            state: State::Head(Vec::with_capacity(HEAD_MAX_BYTES)),
            seen: 0,
            hashed: 0,
            carried: None,
        }
    }

    fn hash(&mut self, bytes: &[u8]) {
        match &mut self.hasher {
            Hasher::Digest(h) => {
                h.update(bytes);
            }
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    /// The next bytes of the answer, in order. Returns the part of `chunk` that is payload
    /// hashed by this call (empty for head bytes, payload bytes an earlier answer gave
    /// already, or an answer not in the expected layout).
    pub fn feed(&mut self, chunk: &[u8]) -> Range<usize> {
        self.seen += chunk.len();
        let mut from = 0;
        if let State::Head(head) = &mut self.state {
            let take = chunk.len().min(HEAD_MAX_BYTES - head.len());
            head.extend_from_slice(&chunk[..take]);
            let parsed = Self::parse_head(head);
            match parsed {
                HeadParse::More if head.len() < HEAD_MAX_BYTES => return 0..0,
                HeadParse::More | HeadParse::Other => {
                    self.state = State::Unchecked;
                    return 0..0;
                }
                HeadParse::Payload { head_len, len, message_len, sha256 } => {
                    // The head may have taken payload bytes with it: all from this chunk
                    // (with fewer bytes the head did not parse).
                    from = take - (head.len() - head_len);
                    if self.carried.is_some_and(|c| c.len != len || c.sha256 != sha256) {
                        self.state = State::Unchecked;
                        return 0..0;
                    }
                    self.state = State::Payload { start: head_len, len, pos: 0, message_len, sha256 };
                }
            }
        }
        let r = self.hash_payload(&chunk[from..]);
        (r.start + from)..(r.end + from)
    }

    /// Hashes what of `bytes` (the next payload bytes of this answer) was not hashed from an
    /// earlier answer; the part hashed.
    fn hash_payload(&mut self, bytes: &[u8]) -> Range<usize> {
        let State::Payload { len, pos, .. } = self.state else { return 0..0 };
        if pos + bytes.len() > len {
            self.state = State::Unchecked;
            return 0..0;
        }
        let skip = self.hashed.saturating_sub(pos).min(bytes.len());
        self.hash(&bytes[skip..]);
        self.hashed += bytes.len() - skip;
        if let State::Payload { pos, .. } = &mut self.state {
            *pos += bytes.len();
        }
        skip..bytes.len()
    }

    /// The payload's length and the answer's key field, once the head is in; `None` before,
    /// or for an answer not in the expected layout.
    pub fn payload(&self) -> Option<(usize, [u8; 32])> {
        match self.state {
            State::Payload { len, sha256, .. } => Some((len, sha256)),
            _ => None,
        }
    }

    /// Whether the answer is not in the expected layout (or disagrees with the answer it
    /// resumes): it can get no verdict.
    pub fn is_unchecked(&self) -> bool {
        matches!(self.state, State::Unchecked)
    }

    /// The key the answer is checked against.
    pub fn key(&self) -> &BlockKey {
        &self.key
    }

    /// Payload bytes hashed so far, over every answer.
    pub fn hashed(&self) -> usize {
        self.hashed
    }

    /// Goes on with another answer of the same record (another replica's, after this one
    /// stalled): its head must give the same payload length and key, its payload bytes up
    /// to [`ArrivingRecord::hashed`] are skipped and the rest hashed on, so the verdict
    /// covers the payload as it was handed on. Returns `false` (and checks nothing more)
    /// when this answer was not in the expected layout.
    pub fn resume(&mut self) -> bool {
        match self.state {
            State::Unchecked => return false,
            State::Payload { len, sha256, .. } => self.carried = Some(Carried { len, sha256 }),
            State::Head(_) => {}
        }
        self.state = State::Head(Vec::with_capacity(HEAD_MAX_BYTES));
        self.seen = 0;
        true
    }

    fn parse_head(head: &[u8]) -> HeadParse {
        let Some((&[0, a, b, c, d], rest)) = head.split_first_chunk::<5>() else {
            return if head.first().is_some_and(|f| *f != 0) { HeadParse::Other } else { HeadParse::More };
        };
        let message_len = u32::from_be_bytes([a, b, c, d]) as usize;
        // Field 1, length-delimited (key 0x0a), 32 bytes.
        let Some((&[0x0a, 32], rest)) = rest.split_first_chunk::<2>() else {
            return if rest.len() < 2 { HeadParse::More } else { HeadParse::Other };
        };
        let (Some(sha256), Some(rest)) = (rest.first_chunk::<32>().copied(), rest.get(32..)) else {
            return HeadParse::More;
        };
        // Field 2, length-delimited (key 0x12), then its length.
        let Some((&key, rest)) = rest.split_first() else { return HeadParse::More };
        if key != 0x12 {
            return HeadParse::Other;
        }
        let Some((len, len_bytes)) = varint(rest) else {
            return if rest.len() < 10 { HeadParse::More } else { HeadParse::Other };
        };
        let Ok(len) = usize::try_from(len) else { return HeadParse::Other };
        let fields_len = 2 + 32 + 1 + len_bytes;
        // Nothing may follow the payload: the message is the two fields exactly.
        if fields_len.checked_add(len) != Some(message_len) {
            return HeadParse::Other;
        }
        HeadParse::Payload { head_len: 5 + fields_len, len, message_len, sha256 }
    }

    /// Whether the answer, whose decoded payload is `payload`, is the key's bytes: `None`
    /// when this check could not tell (another layout, or not all of it seen), and the
    /// caller must check `payload` itself.
    pub fn verdict(self, payload: &[u8]) -> Option<bool> {
        self.finish().filter(|c| c.payload.len() == payload.len()).map(|c| c.matches)
    }

    /// The check of a whole answer in the expected layout: `None` when it is another
    /// layout or was not all seen (the caller decodes it and checks the payload itself).
    pub fn finish(self) -> Option<Checked> {
        let State::Payload { start, len, pos, message_len, sha256 } = self.state else { return None };
        if self.hashed != len || pos != len || self.seen != 5 + message_len {
            return None;
        }
        let matches = match (self.hasher, self.key.digest) {
            (Hasher::Digest(h), Some(digest)) => h.finalize().as_bytes()[..READ_DIGEST_BYTES] == digest,
            (Hasher::Sha256(h), None) => h.finalize()[..] == self.key.sha256[..],
            _ => return None,
        };
        Some(Checked { sha256, payload: start..start + len, matches })
    }
}

/// A whole answer in the expected layout, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The answer's `sha256` field (the record's key as the server read it).
    pub sha256: [u8; 32],
    /// Where the payload lies in the answer, its 5-byte prefix included.
    pub payload: std::ops::Range<usize>,
    /// Whether the payload is the key's bytes.
    pub matches: bool,
}

enum HeadParse {
    More,
    Other,
    Payload { head_len: usize, len: usize, message_len: usize, sha256: [u8; 32] },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::read_digest;
    use bytes::Bytes;
    use cellar_proto::volume as pb;
    use prost::Message;

    fn keys(payload: &[u8]) -> [BlockKey; 2] {
        let sha256: [u8; 32] = Sha256::digest(payload).into();
        [BlockKey { sha256, digest: Some(read_digest(&sha256, payload)) }, BlockKey::sha256_only(sha256)]
    }

    fn answer(sha256: &[u8], payload: &[u8]) -> Vec<u8> {
        let m = pb::ReadRecordResponse { sha256: sha256.to_vec(), payload: Bytes::copy_from_slice(payload) };
        let mut out = vec![0u8];
        out.extend_from_slice(&(m.encoded_len() as u32).to_be_bytes());
        out.extend_from_slice(&m.encode_to_vec());
        out
    }

    fn check(key: BlockKey, bytes: &[u8], chunk: usize, payload: &[u8]) -> Option<bool> {
        let mut a = ArrivingRecord::new(key);
        for c in bytes.chunks(chunk.max(1)) {
            a.feed(c);
        }
        a.verdict(payload)
    }

    #[test]
    fn an_answer_checks_the_same_in_any_chunking() {
        for len in [1usize, 100, 127, 128, 16_384, (1 << 20) + 3] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
            for key in keys(&payload) {
                let bytes = answer(&key.sha256, &payload);
                for chunk in [1, 7, 40, 45, 46, 4096, 1 << 20, bytes.len()] {
                    assert_eq!(check(key, &bytes, chunk, &payload), Some(true), "{len} bytes in {chunk}");
                }
            }
        }
    }

    #[test]
    fn a_whole_answer_says_where_its_payload_and_key_are() {
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        for key in keys(&payload) {
            let bytes = answer(&key.sha256, &payload);
            let mut a = ArrivingRecord::new(key);
            for c in bytes.chunks(65_536) {
                a.feed(c);
            }
            let c = a.finish().expect("checked");
            assert_eq!(c.sha256, key.sha256);
            assert!(c.matches);
            assert_eq!(&bytes[c.payload.clone()], &payload[..]);
            assert_eq!(c.payload.end, bytes.len());
        }
    }

    #[test]
    fn feed_hands_on_the_payload_and_a_resumed_answer_skips_what_was_hashed() {
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 239) as u8).collect();
        for key in keys(&payload) {
            let bytes = answer(&key.sha256, &payload);
            for chunk in [1usize, 40, 45, 46, 1000, 65_536] {
                for cut in [0usize, 30, 46, 70_000] {
                    let mut a = ArrivingRecord::new(key);
                    let mut out = Vec::new();
                    for c in bytes[..cut].chunks(chunk) {
                        let r = a.feed(c);
                        out.extend_from_slice(&c[r]);
                    }
                    assert!(a.resume(), "{chunk} {cut}");
                    for c in bytes.chunks(chunk) {
                        let r = a.feed(c);
                        out.extend_from_slice(&c[r]);
                    }
                    assert!(out == payload, "chunks of {chunk}, resumed at {cut}");
                    assert_eq!(a.hashed(), payload.len());
                    assert_eq!(a.payload(), Some((payload.len(), key.sha256)));
                    assert!(a.finish().expect("checked").matches, "chunks of {chunk}, resumed at {cut}");
                }
            }
            // Another answer of another length: no verdict.
            let mut a = ArrivingRecord::new(key);
            a.feed(&bytes[..1000]);
            assert!(a.resume());
            a.feed(&answer(&key.sha256, &payload[1..]));
            assert!(a.is_unchecked());
            assert!(a.finish().is_none());
            // A resumed answer whose later bytes differ fails.
            let mut a = ArrivingRecord::new(key);
            a.feed(&bytes[..1000]);
            assert!(a.resume());
            let mut bad = bytes.clone();
            let n = bad.len() - 10;
            bad[n] ^= 1;
            a.feed(&bad);
            assert_eq!(a.finish().map(|c| c.matches), Some(false));
        }
        // An answer not in the layout cannot be resumed.
        let [key, _] = keys(&payload);
        let mut a = ArrivingRecord::new(key);
        a.feed(&[1, 0, 0, 0, 9]);
        assert!(a.is_unchecked());
        assert!(!a.resume());
    }

    #[test]
    fn changed_bytes_fail_and_odd_answers_get_no_verdict() {
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        for key in keys(&payload) {
            let bytes = answer(&key.sha256, &payload);
            let mut flipped = bytes.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            let mut bad_payload = payload.clone();
            let n = bad_payload.len() - 1;
            bad_payload[n] ^= 1;
            assert_eq!(check(key, &flipped, 1000, &bad_payload), Some(false), "a flipped bit");
            // A field after the payload (the decoder would keep a later one): no verdict.
            let mut extra = answer(&key.sha256, &payload);
            let tail = pb::ReadRecordResponse { sha256: Vec::new(), payload: Bytes::from_static(b"other") };
            let tail = tail.encode_to_vec();
            extra.extend_from_slice(&tail);
            let len = (extra.len() - 5) as u32;
            extra[1..5].copy_from_slice(&len.to_be_bytes());
            assert_eq!(check(key, &extra, 1000, b"other"), None, "a second payload field");
            // Fields in another order: no verdict.
            let m =
                pb::ReadRecordResponse { sha256: key.sha256.to_vec(), payload: Bytes::from(payload.clone()) };
            let mut swapped = vec![0u8];
            let mut body = Vec::new();
            prost::encoding::bytes::encode(2, &m.payload, &mut body);
            prost::encoding::bytes::encode(1, &m.sha256, &mut body);
            swapped.extend_from_slice(&(body.len() as u32).to_be_bytes());
            swapped.extend_from_slice(&body);
            assert_eq!(check(key, &swapped, 1000, &payload), None, "fields swapped");
            // Cut short, or a decoded payload of another length: no verdict.
            assert_eq!(check(key, &bytes[..bytes.len() - 1], 1000, &payload), None, "cut short");
            assert_eq!(check(key, &bytes, 1000, &payload[1..]), None, "another payload");
        }
        // An empty payload (no field 2 at all): no verdict.
        let [key, _] = keys(b"");
        assert_eq!(check(key, &answer(&key.sha256, b""), 10, b""), None);
    }
}
