//! The block record: the unit appended to a replica extent. Self-describing, so that a
//! disk can be re-indexed by scanning it. The byte layout is specified in docs/FORMAT.md.

use crate::CorruptKind;

/// First four bytes of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"CLRB";
/// The record format version this build writes and reads.
pub const RECORD_FORMAT_VERSION: u8 = 1;
/// Size of the fixed record header that precedes the payload.
pub const RECORD_HEADER_BYTES: usize = 64;

/// The decoded fixed header of a block record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Length of the payload (the block) that follows the header.
    pub payload_len_bytes: u32,
    /// Offset of this record within the extent's data region; guards against misdirected
    /// reads and writes.
    pub record_offset_bytes: u64,
    /// SHA-256 of the payload: the block's key.
    pub sha256: [u8; 32],
    /// CRC32 (IEEE, as computed by crc32fast) of the payload.
    pub payload_crc32: u32,
}

impl RecordHeader {
    /// Total bytes the record occupies on disk: header plus payload.
    pub fn record_len_bytes(&self) -> u64 {
        RECORD_HEADER_BYTES as u64 + u64::from(self.payload_len_bytes)
    }

    /// Encodes the header, computing its own CRC32.
    pub fn encode(&self) -> [u8; RECORD_HEADER_BYTES] {
        let mut out = [0u8; RECORD_HEADER_BYTES];
        out[0..4].copy_from_slice(&RECORD_MAGIC);
        out[4] = RECORD_FORMAT_VERSION;
        out[5] = 0; // flags: none defined in version 1
        out[6..8].copy_from_slice(&(RECORD_HEADER_BYTES as u16).to_le_bytes());
        out[8..12].copy_from_slice(&self.payload_len_bytes.to_le_bytes());
        // out[12..16]: reserved, zero
        out[16..24].copy_from_slice(&self.record_offset_bytes.to_le_bytes());
        out[24..56].copy_from_slice(&self.sha256);
        out[56..60].copy_from_slice(&self.payload_crc32.to_le_bytes());
        let crc = crc32fast::hash(&out[0..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a header read from `expected_offset_bytes`. The payload is not
    /// checked here; see [`check_payload`].
    pub fn decode(
        bytes: &[u8; RECORD_HEADER_BYTES],
        expected_offset_bytes: u64,
        payload_max_bytes: u64,
    ) -> Result<RecordHeader, CorruptKind> {
        if bytes[0..4] != RECORD_MAGIC {
            return Err(CorruptKind::BadMagic);
        }
        let stored_crc = u32::from_le_bytes(le4(&bytes[60..64]));
        if crc32fast::hash(&bytes[0..60]) != stored_crc {
            return Err(CorruptKind::HeaderChecksum);
        }
        if bytes[4] != RECORD_FORMAT_VERSION {
            return Err(CorruptKind::UnsupportedVersion(bytes[4]));
        }
        let header_len = u16::from_le_bytes([bytes[6], bytes[7]]);
        if bytes[5] != 0 || header_len as usize != RECORD_HEADER_BYTES || bytes[12..16] != [0; 4] {
            return Err(CorruptKind::ReservedNotZero);
        }
        let payload_len_bytes = u32::from_le_bytes(le4(&bytes[8..12]));
        if u64::from(payload_len_bytes) > payload_max_bytes {
            return Err(CorruptKind::LengthOverLimit { payload_bytes: payload_len_bytes.into() });
        }
        let record_offset_bytes = u64::from_le_bytes(le8(&bytes[16..24]));
        if record_offset_bytes != expected_offset_bytes {
            return Err(CorruptKind::WrongOffset { found_bytes: record_offset_bytes });
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&bytes[24..56]);
        let payload_crc32 = u32::from_le_bytes(le4(&bytes[56..60]));
        Ok(RecordHeader { payload_len_bytes, record_offset_bytes, sha256, payload_crc32 })
    }

    /// Checks a payload read back against this header.
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), CorruptKind> {
        if payload.len() as u64 != u64::from(self.payload_len_bytes) {
            return Err(CorruptKind::Truncated);
        }
        if crc32fast::hash(payload) != self.payload_crc32 {
            return Err(CorruptKind::PayloadChecksum);
        }
        Ok(())
    }
}

fn le4(bytes: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    out.copy_from_slice(bytes);
    out
}

fn le8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(bytes);
    out
}

/// A record read back and verified: its block key and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where the record starts in the extent's data region.
    pub offset_bytes: u64,
    /// SHA-256 stored with the record.
    pub sha256: [u8; 32],
    /// The block's bytes, CRC-verified.
    pub payload: Vec<u8>,
}

/// Where an append put a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLocation {
    /// Offset of the record header in the extent's data region.
    pub offset_bytes: u64,
    /// Header plus payload.
    pub record_len_bytes: u64,
}

impl RecordLocation {
    /// Offset just past the record: where the next append goes.
    pub fn end_bytes(&self) -> u64 {
        self.offset_bytes + self.record_len_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32, offset: u64) -> RecordHeader {
        RecordHeader {
            payload_len_bytes: len,
            record_offset_bytes: offset,
            sha256: [7u8; 32],
            payload_crc32: 0xdead_beef,
        }
    }

    #[test]
    fn header_round_trips_and_names_its_offset() {
        let h = header(4096, 123);
        let bytes = h.encode();
        assert_eq!(RecordHeader::decode(&bytes, 123, 1 << 22), Ok(h));
        assert_eq!(
            RecordHeader::decode(&bytes, 124, 1 << 22),
            Err(CorruptKind::WrongOffset { found_bytes: 123 })
        );
        assert_eq!(
            RecordHeader::decode(&bytes, 123, 4095),
            Err(CorruptKind::LengthOverLimit { payload_bytes: 4096 })
        );
    }

    #[test]
    fn every_flipped_header_bit_is_detected() {
        let bytes = header(10, 0).encode();
        for bit in 0..RECORD_HEADER_BYTES * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(RecordHeader::decode(&bad, 0, 1 << 22).is_err(), "bit {bit} not detected");
        }
    }
}
