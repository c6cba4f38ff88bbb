//! Where a coded volume's bytes live: the systematic contiguous layout.
//!
//! A volume of V bytes under `rs-k-m` becomes k + m fragments of F bytes each, F being the
//! smallest multiple of the chunk size with k * F >= V. Data fragment i is volume bytes
//! [i*F, (i+1)*F), zero past the volume's end, so a normal read is a plain read of one or
//! two data fragments. Parity fragment j's byte x is the Reed-Solomon code of byte x of
//! the k data fragments: row x is the unit of coding, and any run of rows (a stripe) can
//! be encoded, decoded or rebuilt on its own.

use std::ops::Range;

use crate::{ErasureError, Scheme};

/// Largest chunk size (the CRC and alignment unit fragments are padded to).
pub const CHUNK_BYTES_MAX: u64 = 16 << 20;

/// Largest stripe height. Encoding or rebuilding holds (k + m) stripes of this many bytes,
/// so the ceiling on that memory is 32 * 16 MiB = 512 MiB; 1 MiB stripes are the intended
/// setting (9 MiB for `rs-6-3`, 14 MiB for `rs-10-4`).
pub const STRIPE_BYTES_MAX: usize = 16 << 20;

/// Longest volume a layout describes (1 TiB): far above any real volume, and low enough that
/// offset arithmetic in `u64` cannot overflow.
pub const VOLUME_LEN_BYTES_MAX: u64 = 1 << 40;

/// The fragment geometry of one coded volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    scheme: Scheme,
    volume_len_bytes: u64,
    chunk_bytes: u64,
    fragment_len_bytes: u64,
}

/// The part of a volume byte range that lies in one data fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DataSpan {
    /// Data fragment index, `0..k`.
    pub fragment_index: usize,
    /// Offset of the span inside that fragment.
    pub fragment_offset_bytes: u64,
    /// Offset of the span in the volume.
    pub volume_offset_bytes: u64,
    /// Length of the span.
    pub len_bytes: u64,
}

/// One stripe: the same run of rows in every fragment, the unit of bounded-memory encode
/// and rebuild.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Stripe {
    /// Position of the stripe, `0..stripe_count`.
    pub index: u64,
    /// First row of the stripe: the same offset in every fragment.
    pub fragment_offset_bytes: u64,
    /// Rows in the stripe: the stripe height, less for the last stripe of a fragment whose
    /// length is not a multiple of it.
    pub len_bytes: usize,
    /// For each data fragment, the volume bytes its part of the stripe holds. A range is
    /// shorter than `len_bytes` (possibly empty) where the stripe passes the volume's end;
    /// the rest of that data shard is zeros.
    pub volume_ranges: Vec<Range<u64>>,
}

impl Layout {
    /// The layout of a volume of `volume_len_bytes` under `scheme`, with fragments padded
    /// to a multiple of `chunk_bytes` (a power of two).
    pub fn new(scheme: Scheme, volume_len_bytes: u64, chunk_bytes: u64) -> Result<Self, ErasureError> {
        scheme.validate()?;
        if !chunk_bytes.is_power_of_two() || chunk_bytes > CHUNK_BYTES_MAX {
            return Err(ErasureError::ChunkSize { chunk_bytes, chunk_bytes_max: CHUNK_BYTES_MAX });
        }
        if volume_len_bytes > VOLUME_LEN_BYTES_MAX {
            return Err(ErasureError::VolumeTooLong {
                volume_len_bytes,
                volume_len_bytes_max: VOLUME_LEN_BYTES_MAX,
            });
        }
        let k = scheme.data_count() as u64;
        let fragment_len_bytes = volume_len_bytes.div_ceil(k).div_ceil(chunk_bytes) * chunk_bytes;
        debug_assert!(k * fragment_len_bytes >= volume_len_bytes);
        debug_assert!(
            fragment_len_bytes < chunk_bytes || k * (fragment_len_bytes - chunk_bytes) < volume_len_bytes
        );
        Ok(Layout { scheme, volume_len_bytes, chunk_bytes, fragment_len_bytes })
    }

    /// The volume's scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The volume's length.
    pub fn volume_len_bytes(&self) -> u64 {
        self.volume_len_bytes
    }

    /// The chunk size fragments are padded to.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes
    }

    /// F: the length of every fragment, data and parity alike (0 for an empty volume).
    pub fn fragment_len_bytes(&self) -> u64 {
        self.fragment_len_bytes
    }

    /// The volume bytes data fragment `fragment_index` holds (empty when the volume ends
    /// before it); its bytes past them are zeros.
    pub fn data_volume_range(&self, fragment_index: usize) -> Result<Range<u64>, ErasureError> {
        if fragment_index >= self.scheme.data_count() {
            return Err(ErasureError::FragmentIndex {
                fragment_index,
                fragment_count: self.scheme.data_count(),
            });
        }
        let start = (fragment_index as u64 * self.fragment_len_bytes).min(self.volume_len_bytes);
        let end = (start + self.fragment_len_bytes).min(self.volume_len_bytes);
        Ok(start..end)
    }

    /// The data fragment spans, in volume order, that hold `len_bytes` at `offset_bytes`;
    /// more than one when the range crosses a fragment boundary (a multiple of F).
    pub fn locate(&self, offset_bytes: u64, len_bytes: u64) -> Result<Vec<DataSpan>, ErasureError> {
        let end = self.check_range(offset_bytes, len_bytes)?;
        let mut spans = Vec::new();
        let mut pos = offset_bytes;
        while pos < end {
            let fragment_index = pos / self.fragment_len_bytes;
            let fragment_end = (fragment_index + 1) * self.fragment_len_bytes;
            let span_end = end.min(fragment_end);
            spans.push(DataSpan {
                fragment_index: fragment_index as usize,
                fragment_offset_bytes: pos - fragment_index * self.fragment_len_bytes,
                volume_offset_bytes: pos,
                len_bytes: span_end - pos,
            });
            pos = span_end;
        }
        Ok(spans)
    }

    /// Stripes of `stripe_bytes` rows that cover a fragment (0 for an empty volume).
    pub fn stripe_count(&self, stripe_bytes: usize) -> Result<u64, ErasureError> {
        self.check_stripe_bytes(stripe_bytes)?;
        Ok(self.fragment_len_bytes.div_ceil(stripe_bytes as u64))
    }

    /// Stripe `stripe_index` at a height of `stripe_bytes` (a multiple of the chunk size of
    /// at most [`STRIPE_BYTES_MAX`]), with the volume ranges that feed its data shards.
    pub fn stripe(&self, stripe_bytes: usize, stripe_index: u64) -> Result<Stripe, ErasureError> {
        let stripe_count = self.stripe_count(stripe_bytes)?;
        if stripe_index >= stripe_count {
            return Err(ErasureError::StripeIndex { stripe_index, stripe_count });
        }
        let fragment_offset_bytes = stripe_index * stripe_bytes as u64;
        let len_bytes = (self.fragment_len_bytes - fragment_offset_bytes).min(stripe_bytes as u64) as usize;
        let volume_ranges = (0..self.scheme.data_count() as u64)
            .map(|i| {
                let start = i * self.fragment_len_bytes + fragment_offset_bytes;
                let end = start + len_bytes as u64;
                start.min(self.volume_len_bytes)..end.min(self.volume_len_bytes)
            })
            .collect();
        Ok(Stripe { index: stripe_index, fragment_offset_bytes, len_bytes, volume_ranges })
    }

    /// Checks that the range lies inside the volume; returns its end.
    pub(crate) fn check_range(&self, offset_bytes: u64, len_bytes: u64) -> Result<u64, ErasureError> {
        match offset_bytes.checked_add(len_bytes) {
            Some(end) if end <= self.volume_len_bytes => Ok(end),
            _ => Err(ErasureError::RangeOutOfBounds {
                offset_bytes,
                len_bytes,
                volume_len_bytes: self.volume_len_bytes,
            }),
        }
    }

    fn check_stripe_bytes(&self, stripe_bytes: usize) -> Result<(), ErasureError> {
        let valid = stripe_bytes > 0
            && stripe_bytes <= STRIPE_BYTES_MAX
            && (stripe_bytes as u64).is_multiple_of(self.chunk_bytes);
        if valid {
            Ok(())
        } else {
            Err(ErasureError::StripeSize {
                stripe_bytes,
                chunk_bytes: self.chunk_bytes,
                stripe_bytes_max: STRIPE_BYTES_MAX,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    fn layout(volume_len_bytes: u64, chunk_bytes: u64) -> Layout {
        Layout::new(Scheme::RS_6_3, volume_len_bytes, chunk_bytes).expect("valid layout")
    }

    #[test]
    fn empty_volume_has_empty_fragments_and_no_stripes() {
        let l = layout(0, 64 * KIB);
        assert_eq!(l.fragment_len_bytes(), 0);
        assert_eq!(l.stripe_count(64 * 1024), Ok(0));
        assert_eq!(l.locate(0, 0), Ok(vec![]));
        assert!(matches!(l.locate(0, 1), Err(ErasureError::RangeOutOfBounds { .. })));
        assert!(matches!(l.stripe(64 * 1024, 0), Err(ErasureError::StripeIndex { stripe_count: 0, .. })));
        assert_eq!(l.data_volume_range(5), Ok(0..0));
    }

    #[test]
    fn volume_shorter_than_one_chunk_fills_part_of_fragment_zero() {
        let l = layout(1000, 64 * KIB);
        assert_eq!(l.fragment_len_bytes(), 64 * KIB);
        assert_eq!(l.data_volume_range(0), Ok(0..1000));
        assert_eq!(l.data_volume_range(1), Ok(1000..1000));
        let stripe = l.stripe(64 * 1024, 0).expect("stripe 0");
        assert_eq!(stripe.len_bytes, 64 * 1024);
        assert_eq!(
            stripe.volume_ranges,
            vec![0..1000, 1000..1000, 1000..1000, 1000..1000, 1000..1000, 1000..1000]
        );
        assert_eq!(
            l.locate(10, 990),
            Ok(vec![DataSpan {
                fragment_index: 0,
                fragment_offset_bytes: 10,
                volume_offset_bytes: 10,
                len_bytes: 990
            }])
        );
    }

    #[test]
    fn volume_of_exactly_k_fragments_has_no_padding() {
        let l = layout(6 * 128 * KIB, 64 * KIB);
        assert_eq!(l.fragment_len_bytes(), 128 * KIB);
        for i in 0..6 {
            assert_eq!(l.data_volume_range(i), Ok(i as u64 * 128 * KIB..(i as u64 + 1) * 128 * KIB));
        }
        // One byte more needs one more chunk in every fragment.
        assert_eq!(layout(6 * 128 * KIB + 1, 64 * KIB).fragment_len_bytes(), 192 * KIB);
        let last = l.locate(6 * 128 * KIB - 1, 1).expect("last byte");
        assert_eq!(last[0].fragment_index, 5);
        assert_eq!(last[0].fragment_offset_bytes, 128 * KIB - 1);
    }

    #[test]
    fn fragment_length_is_smallest_chunk_multiple_covering_the_volume() {
        for volume_len_bytes in [1, 4095, 4096, 6 * 4096 - 1, 6 * 4096, 6 * 4096 + 1, 1 << 20, 3_000_001] {
            let l = layout(volume_len_bytes, 4 * KIB);
            let f = l.fragment_len_bytes();
            assert_eq!(f % (4 * KIB), 0);
            assert!(6 * f >= volume_len_bytes, "{volume_len_bytes}");
            assert!(6 * (f - 4 * KIB) < volume_len_bytes, "{volume_len_bytes}");
        }
    }

    #[test]
    fn range_across_a_fragment_boundary_splits_into_two_data_spans() {
        let l = layout(6 * 64 * KIB, 64 * KIB);
        let spans = l.locate(64 * KIB - 100, 300).expect("in bounds");
        assert_eq!(
            spans,
            vec![
                DataSpan {
                    fragment_index: 0,
                    fragment_offset_bytes: 64 * KIB - 100,
                    volume_offset_bytes: 64 * KIB - 100,
                    len_bytes: 100
                },
                DataSpan {
                    fragment_index: 1,
                    fragment_offset_bytes: 0,
                    volume_offset_bytes: 64 * KIB,
                    len_bytes: 200
                },
            ]
        );
        // Exactly on the boundary: one span each side, none empty.
        assert_eq!(l.locate(64 * KIB, 64 * KIB).expect("in bounds").len(), 1);
        assert_eq!(l.locate(0, 64 * KIB).expect("in bounds").len(), 1);
        // A long range crosses several fragments.
        let spans = l.locate(100, 6 * 64 * KIB - 200).expect("in bounds");
        assert_eq!(spans.iter().map(|s| s.fragment_index).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(spans.iter().map(|s| s.len_bytes).sum::<u64>(), 6 * 64 * KIB - 200);
    }

    #[test]
    fn out_of_bounds_ranges_are_typed_errors() {
        let l = layout(1000, 4 * KIB);
        assert!(l.locate(0, 1000).is_ok());
        assert!(l.locate(1000, 0).is_ok());
        for (offset, len) in [(0, 1001), (1000, 1), (1001, 0), (u64::MAX, 2)] {
            assert!(
                matches!(l.locate(offset, len), Err(ErasureError::RangeOutOfBounds { .. })),
                "{offset} {len}"
            );
        }
    }

    #[test]
    fn stripes_tile_each_fragment_and_the_last_may_be_short() {
        // F = 3 chunks of 4 KiB; stripes of 8 KiB: one full stripe, then one of 4 KiB.
        let l = layout(6 * 12 * KIB - 5, 4 * KIB);
        assert_eq!(l.fragment_len_bytes(), 12 * KIB);
        assert_eq!(l.stripe_count(8 * 1024), Ok(2));
        let first = l.stripe(8 * 1024, 0).expect("stripe 0");
        assert_eq!((first.fragment_offset_bytes, first.len_bytes), (0, 8 * 1024));
        assert_eq!(first.volume_ranges[1], 12 * KIB..20 * KIB);
        let last = l.stripe(8 * 1024, 1).expect("stripe 1");
        assert_eq!((last.fragment_offset_bytes, last.len_bytes), (8 * KIB, 4 * 1024));
        assert_eq!(last.volume_ranges[5], 68 * KIB..72 * KIB - 5);
    }

    #[test]
    fn invalid_chunk_stripe_and_volume_sizes_are_typed_errors() {
        for chunk in [0, 3, 4097, CHUNK_BYTES_MAX * 2] {
            assert!(matches!(Layout::new(Scheme::RS_6_3, 1, chunk), Err(ErasureError::ChunkSize { .. })));
        }
        assert!(matches!(
            Layout::new(Scheme::RS_6_3, VOLUME_LEN_BYTES_MAX + 1, 4096),
            Err(ErasureError::VolumeTooLong { .. })
        ));
        assert!(matches!(Layout::new(Scheme { data: 0, parity: 3 }, 1, 4096), Err(ErasureError::Scheme(_))));
        let l = layout(1 << 20, 4 * KIB);
        for stripe in [0, 1000, 4096 + 1, STRIPE_BYTES_MAX + 4096] {
            assert!(matches!(l.stripe_count(stripe), Err(ErasureError::StripeSize { .. })), "{stripe}");
        }
        assert!(matches!(l.data_volume_range(6), Err(ErasureError::FragmentIndex { .. })));
    }
}
