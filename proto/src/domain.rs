//! The wire enums' lower-case names (what status output, logs and JSON show) and the
//! conversion between the wire's [`CodingScheme`] and [`cellar_erasure::Scheme`], the one
//! scheme type of the workspace: a scheme off the wire is validated here, once.

use cellar_erasure::{Scheme, SchemeError};

use crate::common::{CodingScheme, ExtentPart, VolumeState};
use crate::master::{CommitOutcome, DiskHealth, NodeState, TaskKind, TaskState};
use crate::volume::ExtentState;

/// Lower-case names for enums whose generated `as_str_name` is the proto constant.
macro_rules! names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The lower-case name status output, logs and JSON use ("unspecified" for 0
            /// or a value this build does not know).
            pub fn name(self) -> &'static str {
                match self {
                    <$ty>::Unspecified => "unspecified",
                    $(<$ty>::$variant => $name,)+
                }
            }

            /// The value named `name` (as [`Self::name`] gives it); none for an unknown
            /// name or "unspecified".
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(<$ty>::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

names!(VolumeState { Open => "open", Sealed => "sealed", Coded => "coded" });
names!(ExtentPart { Replica => "replica", Fragment => "fragment" });
names!(NodeState { Up => "up", Down => "down" });
names!(DiskHealth { Ok => "ok", Failed => "failed" });
names!(TaskKind {
    Encode => "encode",
    Reconstruct => "reconstruct",
    Copy => "copy",
    Delete => "delete",
});
names!(TaskState { Pending => "pending", Claimed => "claimed", Failed => "failed" });
names!(CommitOutcome {
    Committed => "committed",
    Deduplicated => "deduplicated",
    Refused => "refused",
});
names!(ExtentState { Open => "open", Sealed => "sealed" });

impl From<Scheme> for CodingScheme {
    fn from(scheme: Scheme) -> Self {
        CodingScheme { data_fragments: u32::from(scheme.data), parity_fragments: u32::from(scheme.parity) }
    }
}

impl TryFrom<&CodingScheme> for Scheme {
    type Error = SchemeError;

    /// Validates the counts ([`Scheme::validate`]); a count past 255 is out of range
    /// like any count that makes the sum exceed [`cellar_erasure::FRAGMENTS_MAX`].
    fn try_from(wire: &CodingScheme) -> Result<Self, SchemeError> {
        let count = |n: u32| u8::try_from(n).unwrap_or(u8::MAX);
        let scheme = Scheme { data: count(wire.data_fragments), parity: count(wire.parity_fragments) };
        scheme.validate()?;
        Ok(scheme)
    }
}

impl CodingScheme {
    /// The validated scheme; see the `TryFrom` impl.
    pub fn scheme(&self) -> Result<Scheme, SchemeError> {
        Scheme::try_from(self)
    }
}

/// The scheme in an optional wire field: absent is an error like an invalid one.
pub fn scheme_of(wire: Option<&CodingScheme>) -> Result<Scheme, SchemeError> {
    match wire {
        Some(s) => s.scheme(),
        None => Err(SchemeError::Malformed { text: "(no scheme)".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unspecified_is_not_a_value() {
        for state in [VolumeState::Open, VolumeState::Sealed, VolumeState::Coded] {
            assert_eq!(VolumeState::from_name(state.name()), Some(state));
        }
        assert_eq!(VolumeState::from_name("unspecified"), None);
        assert_eq!(TaskKind::from_name("reconstruct"), Some(TaskKind::Reconstruct));
        assert_eq!(TaskKind::from_name("RECONSTRUCT"), None);
        // An unknown wire value reads as unspecified through prost's getter.
        let stat = crate::volume::ExtentStat { state: 99, ..Default::default() };
        assert_eq!(stat.state().name(), "unspecified");
    }

    #[test]
    fn a_scheme_off_the_wire_is_validated() {
        let wire = CodingScheme::from(Scheme::RS_6_3);
        assert_eq!(wire.scheme().expect("valid"), Scheme::RS_6_3);
        for (data, parity) in [(0, 3), (6, 0), (30, 3), (256, 1), (u32::MAX, u32::MAX)] {
            let bad = CodingScheme { data_fragments: data, parity_fragments: parity };
            assert!(bad.scheme().is_err(), "{data}+{parity} accepted");
        }
        assert!(scheme_of(None).is_err());
    }
}
