//! Typed errors: callers branch on them (a degraded read that cannot be served is not a
//! malformed request), so each variant carries the numbers that explain it.

use thiserror::Error;

/// A scheme string or value that is not a usable Reed-Solomon scheme.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SchemeError {
    /// Not of the form `rs-<data>-<parity>` with canonical decimal counts below 256.
    #[error("{text:?}: expected rs-<data>-<parity>, e.g. rs-6-3")]
    Malformed {
        /// The text as given.
        text: String,
    },
    /// `data` is 0.
    #[error("{scheme}: needs at least 1 data fragment")]
    NoDataFragments {
        /// The scheme's text form.
        scheme: String,
    },
    /// `parity` is 0.
    #[error("{scheme}: needs at least 1 parity fragment")]
    NoParityFragments {
        /// The scheme's text form.
        scheme: String,
    },
    /// `data + parity` is over the limit.
    #[error("{scheme}: data + parity must be at most {fragments_max}")]
    TooManyFragments {
        /// The scheme's text form.
        scheme: String,
        /// [`crate::FRAGMENTS_MAX`].
        fragments_max: usize,
    },
}

/// Why a layout, encode, read or rebuild request cannot be carried out.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ErasureError {
    /// The scheme is invalid.
    #[error(transparent)]
    Scheme(#[from] SchemeError),
    /// `chunk_bytes` is not a power of two in `1..=CHUNK_BYTES_MAX`.
    #[error("chunk size {chunk_bytes} bytes must be a power of two of at most {chunk_bytes_max}")]
    ChunkSize {
        /// The chunk size given.
        chunk_bytes: u64,
        /// [`crate::CHUNK_BYTES_MAX`].
        chunk_bytes_max: u64,
    },
    /// The volume is longer than [`crate::VOLUME_LEN_BYTES_MAX`].
    #[error("volume of {volume_len_bytes} bytes is over the limit of {volume_len_bytes_max}")]
    VolumeTooLong {
        /// The volume length given.
        volume_len_bytes: u64,
        /// [`crate::VOLUME_LEN_BYTES_MAX`].
        volume_len_bytes_max: u64,
    },
    /// `stripe_bytes` is not a positive multiple of the chunk size of at most the limit.
    #[error(
        "stripe height {stripe_bytes} bytes must be a positive multiple of the chunk size \
         {chunk_bytes} of at most {stripe_bytes_max}"
    )]
    StripeSize {
        /// The stripe height given.
        stripe_bytes: usize,
        /// The layout's chunk size.
        chunk_bytes: u64,
        /// [`crate::STRIPE_BYTES_MAX`].
        stripe_bytes_max: usize,
    },
    /// A stripe index at or past the layout's stripe count.
    #[error("stripe {stripe_index} does not exist: the layout has {stripe_count} stripes")]
    StripeIndex {
        /// The index given.
        stripe_index: u64,
        /// Stripes of the layout at the given height.
        stripe_count: u64,
    },
    /// A volume byte range that does not lie inside the volume.
    #[error("range of {len_bytes} bytes at {offset_bytes} is outside the volume of {volume_len_bytes} bytes")]
    RangeOutOfBounds {
        /// Start of the range.
        offset_bytes: u64,
        /// Length of the range.
        len_bytes: u64,
        /// The volume's length.
        volume_len_bytes: u64,
    },
    /// A read longer than [`crate::READ_LEN_BYTES_MAX`].
    #[error("read of {len_bytes} bytes is over the limit of {read_len_bytes_max}")]
    ReadTooLong {
        /// The length asked for.
        len_bytes: u64,
        /// [`crate::READ_LEN_BYTES_MAX`].
        read_len_bytes_max: usize,
    },
    /// A fragment index at or past the scheme's fragment count.
    #[error("fragment {fragment_index} does not exist: the scheme has {fragment_count} fragments")]
    FragmentIndex {
        /// The index given.
        fragment_index: usize,
        /// k + m.
        fragment_count: usize,
    },
    /// The same fragment given twice, or the lost fragment given as a survivor.
    #[error("fragment {fragment_index} given twice")]
    DuplicateFragment {
        /// The repeated index.
        fragment_index: usize,
    },
    /// Fewer than k fragments are available for a decode that needs k.
    #[error("not enough fragments: decoding needs {needed}, only {available} available")]
    NotEnoughFragments {
        /// k.
        needed: usize,
        /// Fragments given or marked available.
        available: usize,
    },
    /// The wrong number of buffers was passed (data shards, parity outputs, or reads).
    #[error("expected {expected} {what}, got {actual}")]
    BufferCount {
        /// What was counted: "data shards", "parity outputs", "fragment reads".
        what: &'static str,
        /// How many the call needs.
        expected: usize,
        /// How many it got.
        actual: usize,
    },
    /// A buffer of the wrong length: all shards of a stripe have one length, and each
    /// fragment read must be exactly as long as planned.
    #[error("buffer {position} holds {actual_bytes} bytes, expected {expected_bytes}")]
    BufferLength {
        /// Position of the buffer in the argument list (or the fragment index for rebuild).
        position: usize,
        /// The length the call needs.
        expected_bytes: usize,
        /// The length it got.
        actual_bytes: usize,
    },
}
