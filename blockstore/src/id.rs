//! Extent identity: which volume, and which part of it (the replica or fragment i).

use std::fmt;
use std::str::FromStr;

/// Which part of a volume an extent holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExtentPart {
    /// A full replica of an open or sealed volume: an append-only log of block records.
    Replica,
    /// Fragment `i` of a coded volume (data fragments first, then parities).
    Fragment(u8),
}

/// Names one extent: a volume's bytes on one disk. A disk holds at most one extent per
/// (volume, part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtentId {
    /// The volume, as numbered by the master (cell-qualified by the master's id scheme).
    pub volume_id: u64,
    /// Replica or fragment index.
    pub part: ExtentPart,
}

/// Length of the binary form of an [`ExtentId`].
pub const EXTENT_ID_BYTES: usize = 10;

impl ExtentId {
    /// The replica extent of a volume.
    pub fn replica(volume_id: u64) -> ExtentId {
        ExtentId { volume_id, part: ExtentPart::Replica }
    }

    /// Fragment `index` of a volume.
    pub fn fragment(volume_id: u64, index: u8) -> ExtentId {
        ExtentId { volume_id, part: ExtentPart::Fragment(index) }
    }

    /// Binary form: volume id big-endian (so catalog keys sort by volume), then a part tag
    /// (0 replica, 1 fragment) and the fragment index (0 for replicas).
    pub fn to_bytes(self) -> [u8; EXTENT_ID_BYTES] {
        let mut out = [0u8; EXTENT_ID_BYTES];
        out[..8].copy_from_slice(&self.volume_id.to_be_bytes());
        let (tag, index) = self.part_tag();
        out[8] = tag;
        out[9] = index;
        out
    }

    /// Parses the binary form of [`ExtentId::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Option<ExtentId> {
        let bytes: &[u8; EXTENT_ID_BYTES] = bytes.try_into().ok()?;
        let mut volume = [0u8; 8];
        volume.copy_from_slice(&bytes[..8]);
        let volume_id = u64::from_be_bytes(volume);
        let part = Self::part_from_tag(bytes[8], bytes[9])?;
        Some(ExtentId { volume_id, part })
    }

    /// The (tag, index) pair used by binary encodings.
    pub fn part_tag(self) -> (u8, u8) {
        match self.part {
            ExtentPart::Replica => (0, 0),
            ExtentPart::Fragment(i) => (1, i),
        }
    }

    /// Inverse of [`ExtentId::part_tag`].
    pub fn part_from_tag(tag: u8, index: u8) -> Option<ExtentPart> {
        match (tag, index) {
            (0, 0) => Some(ExtentPart::Replica),
            (1, i) => Some(ExtentPart::Fragment(i)),
            _ => None,
        }
    }

    /// True for replica extents.
    pub fn is_replica(self) -> bool {
        self.part == ExtentPart::Replica
    }
}

impl fmt::Display for ExtentId {
    /// The text form, also the extent's file name: `v<16 hex>.r` or `v<16 hex>.f<2 digits>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.part {
            ExtentPart::Replica => write!(f, "v{:016x}.r", self.volume_id),
            ExtentPart::Fragment(i) => write!(f, "v{:016x}.f{:02}", self.volume_id, i),
        }
    }
}

impl FromStr for ExtentId {
    type Err = String;

    fn from_str(s: &str) -> Result<ExtentId, String> {
        let bad = || format!("not an extent name: {s:?}");
        let rest = s.strip_prefix('v').ok_or_else(bad)?;
        let (volume, part) = rest.split_once('.').ok_or_else(bad)?;
        if volume.len() != 16 {
            return Err(bad());
        }
        let volume_id = u64::from_str_radix(volume, 16).map_err(|_| bad())?;
        let part = if part == "r" {
            ExtentPart::Replica
        } else {
            let index = part.strip_prefix('f').ok_or_else(bad)?;
            if index.len() != 2 {
                return Err(bad());
            }
            ExtentPart::Fragment(index.parse().map_err(|_| bad())?)
        };
        Ok(ExtentId { volume_id, part })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_id_text_and_binary_forms_round_trip() {
        for id in [ExtentId::replica(0), ExtentId::replica(u64::MAX), ExtentId::fragment(42, 13)] {
            assert_eq!(id.to_string().parse::<ExtentId>(), Ok(id));
            assert_eq!(ExtentId::from_bytes(&id.to_bytes()), Some(id));
        }
        assert!("v12.r".parse::<ExtentId>().is_err());
        assert!("v000000000000002a.f1".parse::<ExtentId>().is_err());
        assert!(ExtentId::from_bytes(&[0u8; 9]).is_none());
        assert!(ExtentId::from_bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).is_none());
    }
}
