//! How a volume is made durable: n replicas, or k data + m parity fragments.
//!
//! The coded form is [`cellar_erasure::Scheme`]'s: its parser and its limits (k >= 1,
//! m >= 1, k + m <= [`cellar_erasure::FRAGMENTS_MAX`]) are the only ones in the workspace,
//! so a scheme the placement accepts is one the coder can run, and the other way round.

use std::fmt;
use std::str::FromStr;

use crate::PlacementError;

/// Most extents (replicas or fragments) one volume may have: the erasure crate's limit.
pub const EXTENTS_PER_VOLUME_MAX: usize = cellar_erasure::FRAGMENTS_MAX;

/// A volume's durability scheme; text form `r3`, `rs-6-3`, `rs-10-4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `copies` full replicas, each in its own zone.
    Replicated {
        /// Number of replicas, 1..=[`EXTENTS_PER_VOLUME_MAX`].
        copies: u8,
    },
    /// Reed-Solomon: `data` data fragments plus `parity` parity fragments; any `data` of
    /// them rebuild the volume. Valid exactly when [`cellar_erasure::Scheme`] is.
    ReedSolomon {
        /// Data fragments (k), at least 1.
        data: u8,
        /// Parity fragments (m), at least 1; `data + parity` is at most
        /// [`EXTENTS_PER_VOLUME_MAX`].
        parity: u8,
    },
}

impl From<cellar_erasure::Scheme> for Scheme {
    fn from(code: cellar_erasure::Scheme) -> Self {
        Scheme::ReedSolomon { data: code.data, parity: code.parity }
    }
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
                cellar_erasure::Scheme { data, parity }
                    .validate()
                    .map_err(|e| PlacementError::InvalidScheme(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The erasure code of a coded scheme (none for replicas).
    pub fn code(self) -> Option<cellar_erasure::Scheme> {
        match self {
            Scheme::Replicated { .. } => None,
            Scheme::ReedSolomon { data, parity } => Some(cellar_erasure::Scheme { data, parity }),
        }
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
    /// `s.parse::<Scheme>()?.to_string() == s`; the result is validated. `rs-…` is parsed
    /// by [`cellar_erasure::Scheme`]'s parser.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("rs") {
            return s
                .parse::<cellar_erasure::Scheme>()
                .map(Scheme::from)
                .map_err(|e| PlacementError::InvalidScheme(e.to_string()));
        }
        let bad =
            || PlacementError::InvalidScheme(format!("{s:?}: expected r<copies> or rs-<data>-<parity>"));
        let copies = s.strip_prefix('r').ok_or_else(bad)?;
        let scheme = Scheme::Replicated { copies: parse_count(copies).ok_or_else(bad)? };
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
        for text in ["r0", "r33", "rs-0-3", "rs-0-0", "rs-4-0", "rs-30-3", "rs-32-1", "rs-1-32"] {
            let err = text.parse::<Scheme>().expect_err(text);
            assert!(matches!(err, PlacementError::InvalidScheme(_)), "{text}: {err}");
            assert!(err.to_string().contains(text), "{err}");
        }
        assert!("rs-31-1".parse::<Scheme>().is_ok());
        assert!("r32".parse::<Scheme>().is_ok());
    }

    #[test]
    fn a_code_is_valid_here_exactly_when_the_erasure_crate_accepts_it() {
        for data in 0..=33u8 {
            for parity in 0..=33u8 {
                let code = cellar_erasure::Scheme { data, parity };
                let text = code.to_string();
                assert_eq!(
                    text.parse::<Scheme>().is_ok(),
                    text.parse::<cellar_erasure::Scheme>().is_ok(),
                    "{text}"
                );
                assert_eq!(Scheme::from(code).validate().is_ok(), code.validate().is_ok(), "{text}");
                if let Ok(s) = text.parse::<Scheme>() {
                    assert_eq!(s.code(), Some(code));
                }
            }
        }
    }

    #[test]
    fn extent_count_and_zone_limit_follow_the_scheme() {
        let r3 = Scheme::Replicated { copies: 3 };
        assert_eq!((r3.extent_count(), r3.extents_per_zone_max()), (3, 1));
        let rs = Scheme::ReedSolomon { data: 10, parity: 4 };
        assert_eq!((rs.extent_count(), rs.extents_per_zone_max()), (14, 4));
    }
}
