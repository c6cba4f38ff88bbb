//! Why a placement could not be made.

/// A placement request that cannot be satisfied, or was malformed.
///
/// Callers branch on [`PlacementError::NotEnoughFailureDomains`]: it is an operating
/// condition (the cluster is too small, too full or too degraded right now), while the
/// other variants mean the caller passed something invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The eligible disks cannot hold the volume without breaking a failure-domain rule.
    #[error("not enough failure domains: need {needed} extent slots, {available} available: {detail}")]
    NotEnoughFailureDomains {
        /// Extents that had to be placed.
        needed: usize,
        /// Extents the eligible disks could hold without breaking the per-zone limit.
        available: usize,
        /// Per-zone breakdown, for the operator.
        detail: String,
    },
    /// The scheme (or copy count, or data/parity pair) is out of range.
    #[error("invalid scheme: {0}")]
    InvalidScheme(String),
    /// The cluster view is inconsistent (duplicate disk id, node in two zones).
    #[error("invalid cluster view: {0}")]
    InvalidView(String),
    /// The current placement passed to a replacement is malformed.
    #[error("invalid current placement: {0}")]
    InvalidPlacement(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_enough_failure_domains_message_names_the_problem() {
        let err = PlacementError::NotEnoughFailureDomains {
            needed: 14,
            available: 12,
            detail: "at most 4 per zone".to_string(),
        };
        let msg = err.to_string();
        assert!(msg.contains("not enough failure domains"), "{msg}");
        assert!(msg.contains("need 14"), "{msg}");
        assert!(msg.contains("12 available"), "{msg}");
        assert!(msg.contains("at most 4 per zone"), "{msg}");
    }

    #[test]
    fn invalid_input_messages_say_what_was_invalid() {
        assert_eq!(PlacementError::InvalidScheme("r0".into()).to_string(), "invalid scheme: r0");
        assert_eq!(
            PlacementError::InvalidView("duplicate disk 7".into()).to_string(),
            "invalid cluster view: duplicate disk 7"
        );
        assert_eq!(
            PlacementError::InvalidPlacement("lost index 9 out of range".into()).to_string(),
            "invalid current placement: lost index 9 out of range"
        );
    }
}
