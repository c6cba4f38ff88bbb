//! What a get checks the bytes it assembled against before it answers.
//!
//! A block's key is the SHA-256 of its bytes, and a get may never return bytes that are not
//! the key's. Recomputing SHA-256 on every get proves that, but SHA-256 runs at ~1.7 GB/s
//! per core here (SHA-NI): a third of all CPU of a cell serving 4 MiB gets. So the put,
//! which computes SHA-256 anyway, also computes the block's *read digest*: BLAKE3 of the
//! same bytes keyed by their SHA-256, first [`READ_DIGEST_BYTES`] bytes (~6.6 GB/s per
//! core here, AVX-512). The digest is committed with the index entry, through Raft, so it
//! comes from the master, never from the volume server that returns the bytes; gets check
//! it instead of SHA-256:
//!
//! - Corruption or a read of the wrong bytes passes with probability 2^-128.
//! - Keying by the SHA-256 ties the digest to the key asked for: an index entry that names
//!   another block's record together with that block's digest still fails, because the
//!   check is keyed by the hash the client asked for.
//! - Bytes made to pass on purpose need a second preimage of keyed BLAKE3: 2^128 work.
//!
//! Index entries committed before digests existed have none; their gets check SHA-256.

use sha2::{Digest, Sha256};

use crate::pieces::Pieces;

/// Bytes of a read digest (BLAKE3 output truncated: 128-bit second-preimage resistance).
pub const READ_DIGEST_BYTES: usize = 16;

/// A block's read digest.
pub type ReadDigest = [u8; READ_DIGEST_BYTES];

/// The read digest of `payload`, whose SHA-256 is `sha256`.
pub fn read_digest(sha256: &[u8; 32], payload: &[u8]) -> ReadDigest {
    let full = blake3::keyed_hash(sha256, payload);
    let mut out = [0u8; READ_DIGEST_BYTES];
    out.copy_from_slice(&full.as_bytes()[..READ_DIGEST_BYTES]);
    out
}

/// A block as a get asks for it: its key, and the read digest from its index entry if the
/// entry has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockKey {
    /// The block's SHA-256.
    pub sha256: [u8; 32],
    /// Its read digest, from the master's index entry.
    pub digest: Option<ReadDigest>,
}

/// An index entry's digest field is neither empty nor [`READ_DIGEST_BYTES`] long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a read digest is {READ_DIGEST_BYTES} bytes (or none), not {0}")]
pub struct BadDigestLength(pub usize);

impl BlockKey {
    /// A key whose gets check SHA-256 (no digest known).
    pub fn sha256_only(sha256: [u8; 32]) -> BlockKey {
        BlockKey { sha256, digest: None }
    }

    /// A key with the digest field of an index entry: empty for none.
    pub fn with_digest_field(sha256: [u8; 32], digest: &[u8]) -> Result<BlockKey, BadDigestLength> {
        let digest = match digest.len() {
            0 => None,
            READ_DIGEST_BYTES => {
                let mut d = [0u8; READ_DIGEST_BYTES];
                d.copy_from_slice(digest);
                Some(d)
            }
            n => return Err(BadDigestLength(n)),
        };
        Ok(BlockKey { sha256, digest })
    }

    /// Whether `payload` is this block's bytes: by its read digest when known, else by
    /// SHA-256.
    pub fn matches(&self, payload: &[u8]) -> bool {
        match &self.digest {
            Some(digest) => read_digest(&self.sha256, payload) == *digest,
            None => Sha256::digest(payload)[..] == self.sha256[..],
        }
    }

    /// [`BlockKey::matches`] of bytes held in pieces.
    pub fn matches_pieces(&self, payload: &Pieces) -> bool {
        match &self.digest {
            Some(digest) => {
                let mut h = blake3::Hasher::new_keyed(&self.sha256);
                for p in payload.parts() {
                    h.update(p);
                }
                h.finalize().as_bytes()[..READ_DIGEST_BYTES] == digest[..]
            }
            None => {
                let mut h = Sha256::new();
                for p in payload.parts() {
                    h.update(p);
                }
                h.finalize()[..] == self.sha256[..]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(payload: &[u8]) -> BlockKey {
        let sha256: [u8; 32] = Sha256::digest(payload).into();
        BlockKey { sha256, digest: Some(read_digest(&sha256, payload)) }
    }

    #[test]
    fn a_block_matches_its_key_with_and_without_a_digest() {
        let payload = b"the bytes of a block".repeat(1000);
        let key = key_of(&payload);
        assert!(key.matches(&payload));
        assert!(BlockKey::sha256_only(key.sha256).matches(&payload));
        let empty = key_of(b"");
        assert!(empty.matches(b""));
        assert!(!empty.matches(b"\0"));
    }

    #[test]
    fn pieces_match_as_their_bytes_do() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 253) as u8).collect();
        let key = key_of(&payload);
        let split = |at: &[usize], bytes: &[u8]| {
            let mut parts = Vec::new();
            let mut from = 0;
            for &to in at.iter().chain([bytes.len()].iter()) {
                parts.push(bytes::Bytes::copy_from_slice(&bytes[from..to]));
                from = to;
            }
            Pieces::from_parts(parts)
        };
        for cuts in [&[][..], &[1], &[2500, 2501], &[100, 4999]] {
            let p = split(cuts, &payload);
            assert!(key.matches_pieces(&p), "{cuts:?}");
            assert!(BlockKey::sha256_only(key.sha256).matches_pieces(&p), "{cuts:?}");
            let mut bad = payload.clone();
            bad[2500] ^= 4;
            let p = split(cuts, &bad);
            assert!(!key.matches_pieces(&p), "{cuts:?}");
            assert!(!BlockKey::sha256_only(key.sha256).matches_pieces(&p), "{cuts:?}");
        }
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_fails_both_checks() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 31 % 251) as u8).collect();
        let key = key_of(&payload);
        let sha_only = BlockKey::sha256_only(key.sha256);
        for byte in (0..payload.len()).step_by(97) {
            for bit in 0..8 {
                let mut bad = payload.clone();
                bad[byte] ^= 1 << bit;
                assert!(!key.matches(&bad), "byte {byte} bit {bit} passed the digest");
                assert!(!sha_only.matches(&bad), "byte {byte} bit {bit} passed SHA-256");
            }
        }
        assert!(!key.matches(&payload[..payload.len() - 1]));
        assert!(!sha_only.matches(&payload[..payload.len() - 1]));
    }

    #[test]
    fn a_digest_only_vouches_for_the_key_it_was_made_under() {
        // Another block's bytes with that block's own digest, asked for under this key (an
        // index entry pointing at the wrong record): refused, because the check is keyed
        // by the hash asked for.
        let ours = key_of(b"ours");
        let theirs_payload = b"theirs";
        let theirs = key_of(theirs_payload);
        let confused = BlockKey { sha256: ours.sha256, digest: theirs.digest };
        assert!(!confused.matches(theirs_payload));
    }

    #[test]
    fn digest_fields_are_empty_or_sixteen_bytes() {
        let sha = [7u8; 32];
        assert_eq!(BlockKey::with_digest_field(sha, &[]), Ok(BlockKey::sha256_only(sha)));
        let key = BlockKey::with_digest_field(sha, &[1u8; 16]).expect("16 bytes");
        assert_eq!(key.digest, Some([1u8; 16]));
        assert_eq!(BlockKey::with_digest_field(sha, &[1u8; 32]), Err(BadDigestLength(32)));
        assert_eq!(BlockKey::with_digest_field(sha, &[1u8; 15]), Err(BadDigestLength(15)));
    }
}
