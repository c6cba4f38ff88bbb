//! The header at the start of every extent file: names the extent it holds, so that a
//! disk can be re-indexed from its files alone. Padded to 4 KiB so that data starts
//! block-aligned. Layout in docs/FORMAT.md.

use crate::error::CorruptKind;
use crate::id::ExtentId;

/// First four bytes of every extent file.
pub const EXTENT_MAGIC: [u8; 4] = *b"CLEX";
/// The extent header version this build writes and reads.
pub const EXTENT_FORMAT_VERSION: u8 = 1;
/// Where the data region begins in an extent file.
pub const EXTENT_DATA_OFFSET_BYTES: u64 = 4096;
const HEADER_USED_BYTES: usize = 40;

/// The decoded extent file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentHeader {
    /// The extent this file holds.
    pub extent: ExtentId,
    /// Creation time, Unix milliseconds.
    pub created_unix_ms: u64,
    /// Fragment length (0 for replicas).
    pub fragment_len_bytes: u64,
    /// Fragment chunk size (0 for replicas).
    pub chunk_size_bytes: u32,
}

impl ExtentHeader {
    /// Encodes the header padded to [`EXTENT_DATA_OFFSET_BYTES`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; EXTENT_DATA_OFFSET_BYTES as usize];
        out[0..4].copy_from_slice(&EXTENT_MAGIC);
        out[4] = EXTENT_FORMAT_VERSION;
        let (tag, index) = self.extent.part_tag();
        out[5] = tag;
        out[6] = index;
        out[8..16].copy_from_slice(&self.extent.volume_id.to_le_bytes());
        out[16..24].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        out[24..32].copy_from_slice(&self.fragment_len_bytes.to_le_bytes());
        out[32..36].copy_from_slice(&self.chunk_size_bytes.to_le_bytes());
        let crc = crc32fast::hash(&out[0..36]);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks the first bytes of an extent file.
    pub fn decode(bytes: &[u8]) -> Result<ExtentHeader, CorruptKind> {
        let bad = |s: &str| CorruptKind::ExtentHeader(s.to_string());
        if bytes.len() < HEADER_USED_BYTES {
            return Err(CorruptKind::Truncated);
        }
        if bytes[0..4] != EXTENT_MAGIC {
            return Err(bad("bad magic"));
        }
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&bytes[36..40]);
        if crc32fast::hash(&bytes[0..36]) != u32::from_le_bytes(crc) {
            return Err(bad("CRC32 mismatch"));
        }
        if bytes[4] != EXTENT_FORMAT_VERSION {
            return Err(CorruptKind::UnsupportedVersion(bytes[4]));
        }
        let part = ExtentId::part_from_tag(bytes[5], bytes[6]).ok_or_else(|| bad("unknown part"))?;
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let mut chunk = [0u8; 4];
        chunk.copy_from_slice(&bytes[32..36]);
        Ok(ExtentHeader {
            extent: ExtentId { volume_id: u64_at(8), part },
            created_unix_ms: u64_at(16),
            fragment_len_bytes: u64_at(24),
            chunk_size_bytes: u32::from_le_bytes(chunk),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_header_round_trips_and_detects_damage() {
        let h = ExtentHeader {
            extent: ExtentId::fragment(77, 8),
            created_unix_ms: 5,
            fragment_len_bytes: 1 << 20,
            chunk_size_bytes: 65536,
        };
        let bytes = h.encode();
        assert_eq!(bytes.len(), 4096);
        assert_eq!(ExtentHeader::decode(&bytes), Ok(h));
        for bit in 0..HEADER_USED_BYTES * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(ExtentHeader::decode(&bad).is_err(), "bit {bit}");
        }
    }
}
