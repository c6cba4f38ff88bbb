//! Which Reed-Solomon code a volume uses: k data fragments plus m parity fragments.

use std::fmt;
use std::str::FromStr;

use crate::error::SchemeError;

/// Most fragments (data + parity) one coded volume may have; a [`crate::FragmentSet`] is a
/// 32-bit mask, and placement allows at most this many extents per volume.
pub const FRAGMENTS_MAX: usize = 32;

/// A Reed-Solomon scheme; text form `rs-<data>-<parity>`, e.g. `rs-6-3`.
///
/// The fields are plain data so that configs and the simulator can build one; every
/// constructor of this crate that takes a scheme validates it first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scheme {
    /// Data fragments (k), at least 1.
    pub data: u8,
    /// Parity fragments (m), at least 1; `data + parity` is at most [`FRAGMENTS_MAX`].
    pub parity: u8,
}

impl Scheme {
    /// The default scheme, `rs-6-3`: 1.5x overhead, survives any 3 lost fragments.
    pub const RS_6_3: Scheme = Scheme { data: 6, parity: 3 };
    /// `rs-10-4`: 1.4x overhead, survives any 4 lost fragments.
    pub const RS_10_4: Scheme = Scheme { data: 10, parity: 4 };

    /// A validated scheme of `data` + `parity` fragments.
    pub fn new(data: u8, parity: u8) -> Result<Self, SchemeError> {
        let scheme = Scheme { data, parity };
        scheme.validate()?;
        Ok(scheme)
    }

    /// Checks the ranges documented on the fields.
    pub fn validate(self) -> Result<(), SchemeError> {
        if self.data == 0 {
            return Err(SchemeError::NoDataFragments { scheme: self.to_string() });
        }
        if self.parity == 0 {
            return Err(SchemeError::NoParityFragments { scheme: self.to_string() });
        }
        if self.fragment_count() > FRAGMENTS_MAX {
            return Err(SchemeError::TooManyFragments {
                scheme: self.to_string(),
                fragments_max: FRAGMENTS_MAX,
            });
        }
        Ok(())
    }

    /// k: data fragments, and the number of fragments any read or rebuild needs.
    pub fn data_count(self) -> usize {
        usize::from(self.data)
    }

    /// m: parity fragments, and the number of fragments that may be lost.
    pub fn parity_count(self) -> usize {
        usize::from(self.parity)
    }

    /// k + m: all fragments of a volume; indices `0..k` are data, `k..k+m` parity.
    pub fn fragment_count(self) -> usize {
        self.data_count() + self.parity_count()
    }
}

impl Default for Scheme {
    fn default() -> Self {
        Scheme::RS_6_3
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rs-{}-{}", self.data, self.parity)
    }
}

impl FromStr for Scheme {
    type Err = SchemeError;

    /// Parses the canonical form only (lower case, no sign, no leading zeros), so that
    /// `s.parse::<Scheme>()?.to_string() == s`; the result is validated.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || SchemeError::Malformed { text: s.to_owned() };
        let rest = s.strip_prefix("rs-").ok_or_else(malformed)?;
        let (data, parity) = rest.split_once('-').ok_or_else(malformed)?;
        let scheme = Scheme {
            data: parse_count(data).ok_or_else(malformed)?,
            parity: parse_count(parity).ok_or_else(malformed)?,
        };
        scheme.validate()?;
        Ok(scheme)
    }
}

/// Decimal digits without sign or leading zeros (bare "0" is allowed, and rejected later
/// by validation with a clearer message).
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
            ("rs-6-3", Scheme::RS_6_3),
            ("rs-10-4", Scheme::RS_10_4),
            ("rs-1-1", Scheme { data: 1, parity: 1 }),
            ("rs-31-1", Scheme { data: 31, parity: 1 }),
            ("rs-1-31", Scheme { data: 1, parity: 31 }),
            ("rs-12-4", Scheme { data: 12, parity: 4 }),
        ] {
            assert_eq!(text.parse::<Scheme>(), Ok(scheme), "{text}");
            assert_eq!(scheme.to_string(), text);
        }
    }

    #[test]
    fn default_scheme_is_rs_6_3() {
        assert_eq!(Scheme::default().to_string(), "rs-6-3");
    }

    #[test]
    fn scheme_parse_rejects_malformed_text() {
        for text in [
            "",
            "rs",
            "rs-",
            "rs-6",
            "rs-6-",
            "rs--3",
            "rs-6-3-1",
            "RS-6-3",
            "rs-+6-3",
            "rs-06-3",
            "rs-6-03",
            " rs-6-3",
            "rs-6-3 ",
            "rs-6-3x",
            "rs-256-1",
            "rs-1-256",
            "r3",
            "lrc-12-2-2",
            "rs-6_3",
        ] {
            let err = text.parse::<Scheme>().expect_err(text);
            assert_eq!(err, SchemeError::Malformed { text: text.to_owned() }, "{text}");
        }
    }

    #[test]
    fn scheme_parse_rejects_out_of_range_counts() {
        assert!(matches!("rs-0-3".parse::<Scheme>(), Err(SchemeError::NoDataFragments { .. })));
        assert!(matches!("rs-6-0".parse::<Scheme>(), Err(SchemeError::NoParityFragments { .. })));
        for text in ["rs-30-3", "rs-32-1", "rs-1-32", "rs-255-255"] {
            let err = text.parse::<Scheme>().expect_err(text);
            assert_eq!(
                err,
                SchemeError::TooManyFragments { scheme: text.to_owned(), fragments_max: FRAGMENTS_MAX }
            );
            assert!(err.to_string().contains(text), "{err}");
        }
    }

    #[test]
    fn scheme_new_validates_like_parse() {
        assert_eq!(Scheme::new(6, 3), Ok(Scheme::RS_6_3));
        assert!(Scheme::new(0, 1).is_err());
        assert!(Scheme::new(1, 0).is_err());
        assert!(Scheme::new(16, 17).is_err());
        assert_eq!(Scheme::new(16, 16).map(Scheme::fragment_count), Ok(32));
    }
}
