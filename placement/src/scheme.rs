//! How a volume is made durable: n replicas, or k data + m parity fragments.

use std::fmt;
use std::str::FromStr;

use crate::PlacementError;

/// Most extents (replicas or fragments) one volume may have.
pub const EXTENTS_PER_VOLUME_MAX: usize = 32;

/// A volume's durability scheme; text form `r3`, `rs-6-3`, `rs-10-4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `copies` full replicas, each in its own zone.
    Replicated {
        /// Number of replicas, 1..=[`EXTENTS_PER_VOLUME_MAX`].
        copies: u8,
    },
    /// Reed-Solomon: `data` data fragments plus `parity` parity fragments; any `data` of
    /// them rebuild the volume.
    ReedSolomon {
        /// Data fragments (k), at least 1.
        data: u8,
        /// Parity fragments (m); `data + parity` is at most [`EXTENTS_PER_VOLUME_MAX`].
        parity: u8,
    },
}

impl Scheme {
    /// Checks the ranges documented on each variant.
    pub fn validate(self) -> Result<(), PlacementError> {
        match self {
            Scheme::Replicated { copies } => {
                if copies == 0 || usize::from(copies) > EXTENTS_PER_VOLUME_MAX {
                    return Err(PlacementError::InvalidScheme(format!(
                        "{self}: copies must be in 1..={EXTENTS_PER_VOLUME_MAX}"
                    )));
                }
            }
            Scheme::ReedSolomon { data, parity } => {
                if data == 0 {
                    return Err(PlacementError::InvalidScheme(format!(
                        "{self}: needs at least 1 data fragment"
                    )));
                }
                if usize::from(data) + usize::from(parity) > EXTENTS_PER_VOLUME_MAX {
                    return Err(PlacementError::InvalidScheme(format!(
                        "{self}: data + parity must be at most {EXTENTS_PER_VOLUME_MAX}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Number of extents a volume of this scheme occupies (copies, or data + parity).
    pub fn extent_count(self) -> usize {
        match self {
            Scheme::Replicated { copies } => usize::from(copies),
            Scheme::ReedSolomon { data, parity } => usize::from(data) + usize::from(parity),
        }
    }

    /// Most extents of one volume a single zone may hold so that losing that zone loses
    /// no data: 1 for replicas, `parity` for fragments.
    pub fn extents_per_zone_max(self) -> usize {
        match self {
            Scheme::Replicated { .. } => 1,
            Scheme::ReedSolomon { parity, .. } => usize::from(parity),
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheme::Replicated { copies } => write!(f, "r{copies}"),
            Scheme::ReedSolomon { data, parity } => write!(f, "rs-{data}-{parity}"),
        }
    }
}

impl FromStr for Scheme {
    type Err = PlacementError;

    /// Parses the canonical form only (no sign, no leading zeros, lower case), so that
    /// `s.parse::<Scheme>()?.to_string() == s`; the result is validated.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || PlacementError::InvalidScheme(format!("{s:?}: expected r<copies> or rs-<data>-<parity>"));
        let scheme = if let Some(rest) = s.strip_prefix("rs-") {
            let (data, parity) = rest.split_once('-').ok_or_else(bad)?;
            Scheme::ReedSolomon {
                data: parse_count(data).ok_or_else(bad)?,
                parity: parse_count(parity).ok_or_else(bad)?,
            }
        } else if let Some(copies) = s.strip_prefix('r') {
            Scheme::Replicated { copies: parse_count(copies).ok_or_else(bad)? }
        } else {
            return Err(bad());
        };
        scheme.validate()?;
        Ok(scheme)
    }
}

/// Decimal digits without sign or leading zeros (bare "0" is allowed).
fn parse_count(s: &str) -> Option<u8> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_display_round_trips_through_parse() {
        for (text, scheme) in [
            ("r1", Scheme::Replicated { copies: 1 }),
            ("r3", Scheme::Replicated { copies: 3 }),
            ("rs-6-3", Scheme::ReedSolomon { data: 6, parity: 3 }),
            ("rs-10-4", Scheme::ReedSolomon { data: 10, parity: 4 }),
            ("rs-4-0", Scheme::ReedSolomon { data: 4, parity: 0 }),
            ("rs-30-2", Scheme::ReedSolomon { data: 30, parity: 2 }),
        ] {
            assert_eq!(text.parse::<Scheme>(), Ok(scheme), "{text}");
            assert_eq!(scheme.to_string(), text);
        }
    }

    #[test]
    fn scheme_parse_rejects_malformed_text() {
        for text in [
            "", "r", "rs", "rs-", "rs-6", "rs-6-", "rs--3", "rs-6-3-1", "R3", "RS-6-3", "r+3", "rs-+6-3",
            "r03", "rs-06-3", " r3", "r3 ", "r-3", "x3", "rs-6-3x", "r256", "rs-256-1",
        ] {
            let err = text.parse::<Scheme>().expect_err(text);
            assert!(matches!(err, PlacementError::InvalidScheme(_)), "{text}: {err}");
        }
    }

    #[test]
    fn scheme_parse_rejects_out_of_range_counts() {
        for text in ["r0", "r33", "rs-0-3", "rs-0-0", "rs-30-3", "rs-32-1", "rs-1-32"] {
            let err = text.parse::<Scheme>().expect_err(text);
            assert!(matches!(err, PlacementError::InvalidScheme(_)), "{text}: {err}");
            assert!(err.to_string().contains(text), "{err}");
        }
        assert!("rs-31-1".parse::<Scheme>().is_ok());
        assert!("r32".parse::<Scheme>().is_ok());
    }

    #[test]
    fn extent_count_and_zone_limit_follow_the_scheme() {
        let r3 = Scheme::Replicated { copies: 3 };
        assert_eq!((r3.extent_count(), r3.extents_per_zone_max()), (3, 1));
        let rs = Scheme::ReedSolomon { data: 10, parity: 4 };
        assert_eq!((rs.extent_count(), rs.extents_per_zone_max()), (14, 4));
    }
}
