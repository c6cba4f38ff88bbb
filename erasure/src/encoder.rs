//! Encoding a sealed volume stripe by stripe, in memory bounded by the stripe height.
//!
//! Under the contiguous layout one stripe needs bytes from k far-apart places of the
//! volume (row x of every data fragment), so the encoder does not take the volume as a
//! stream: it asks the caller, who can read the sealed volume at any offset, for each
//! data shard of the stripe, reads it straight into its own reused buffer, zero-pads what
//! lies past the volume's end, and computes the parity in place.

use crate::{Codec, ErasureError, Layout, Stripe};

/// Encodes one volume's stripes into k + m reused shard buffers.
///
/// Memory: (k + m) * min(stripe height, F) bytes, allocated once in [`StripeEncoder::new`]
/// and independent of the volume's length (9 MiB for `rs-6-3` at 1 MiB stripes). Stripes
/// may be encoded in any order, and any subset of them (e.g. to resume).
#[derive(Debug)]
pub struct StripeEncoder {
    layout: Layout,
    stripe_bytes: usize,
    stripe_count: u64,
    codec: Codec,
    /// k data then m parity buffers, each as long as the tallest stripe.
    shards: Vec<Vec<u8>>,
}

/// One encoded stripe: the k data and m parity shards to write at
/// `stripe().fragment_offset_bytes` of each fragment. Borrows the encoder's buffers.
#[derive(Debug)]
pub struct EncodedStripe<'a> {
    stripe: Stripe,
    shards: &'a [Vec<u8>],
}

impl StripeEncoder {
    /// An encoder for `layout` at a stripe height of `stripe_bytes` (a multiple of the
    /// layout's chunk size, at most [`crate::STRIPE_BYTES_MAX`]).
    pub fn new(layout: Layout, stripe_bytes: usize) -> Result<Self, ErasureError> {
        let stripe_count = layout.stripe_count(stripe_bytes)?;
        let codec = Codec::new(layout.scheme())?;
        // The fragment is shorter than a stripe for small volumes: allocate only what the
        // tallest stripe uses. Fits usize since it is at most stripe_bytes.
        let shard_bytes = layout.fragment_len_bytes().min(stripe_bytes as u64) as usize;
        let shards = vec![vec![0u8; shard_bytes]; layout.scheme().fragment_count()];
        Ok(StripeEncoder { layout, stripe_bytes, stripe_count, codec, shards })
    }

    /// The layout being encoded.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The stripe height.
    pub fn stripe_bytes(&self) -> usize {
        self.stripe_bytes
    }

    /// Stripes per fragment: encode each of `0..stripe_count()` once to code the volume.
    pub fn stripe_count(&self) -> u64 {
        self.stripe_count
    }

    /// Encodes stripe `stripe_index`. Calls `read_volume(volume_offset_bytes, buf)` once
    /// per data shard that holds volume bytes; it must fill `buf` entirely with the sealed
    /// volume's bytes at that offset (a `pread` that is exact), and any error it returns is
    /// passed through.
    pub fn encode<E, R>(&mut self, stripe_index: u64, mut read_volume: R) -> Result<EncodedStripe<'_>, E>
    where
        E: From<ErasureError>,
        R: FnMut(u64, &mut [u8]) -> Result<(), E>,
    {
        let stripe = self.layout.stripe(self.stripe_bytes, stripe_index)?;
        let k = self.layout.scheme().data_count();
        let (data, parity) = self.shards.split_at_mut(k);
        for (shard, range) in data.iter_mut().zip(&stripe.volume_ranges) {
            let shard = &mut shard[..stripe.len_bytes];
            // Volume ranges are at most len_bytes long, so this fits usize.
            let filled = (range.end - range.start) as usize;
            if filled > 0 {
                read_volume(range.start, &mut shard[..filled])?;
            }
            shard[filled..].fill(0);
        }
        let data: Vec<&[u8]> = data.iter().map(|s| &s[..stripe.len_bytes]).collect();
        let mut parity: Vec<&mut [u8]> = parity.iter_mut().map(|s| &mut s[..stripe.len_bytes]).collect();
        self.codec.encode_stripe(&data, &mut parity)?;
        Ok(EncodedStripe { stripe, shards: &self.shards })
    }
}

impl<'a> EncodedStripe<'a> {
    /// Which stripe this is, and where its rows go in every fragment.
    pub fn stripe(&self) -> &Stripe {
        &self.stripe
    }

    /// The stripe's shard of fragment `fragment_index` (`0..k` data, `k..k+m` parity), or
    /// `None` past the last fragment.
    pub fn fragment(&self, fragment_index: usize) -> Option<&'a [u8]> {
        let shards: &'a [Vec<u8>] = self.shards;
        shards.get(fragment_index).map(|s| &s[..self.stripe.len_bytes])
    }

    /// All k + m shards in fragment order, with their fragment index.
    pub fn fragments(&self) -> impl Iterator<Item = (usize, &'a [u8])> + '_ {
        let shards: &'a [Vec<u8>] = self.shards;
        shards.iter().map(|s| &s[..self.stripe.len_bytes]).enumerate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scheme;

    fn read_from(volume: &[u8]) -> impl FnMut(u64, &mut [u8]) -> Result<(), ErasureError> + '_ {
        |offset, buf| {
            let start = offset as usize;
            buf.copy_from_slice(&volume[start..start + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn encoder_memory_is_bounded_by_the_stripe_not_the_volume() {
        let layout = Layout::new(Scheme::RS_6_3, 6 << 20, 4096).expect("layout");
        let encoder = StripeEncoder::new(layout, 64 * 1024).expect("encoder");
        assert_eq!(encoder.stripe_count(), 16);
        assert!(encoder.shards.iter().all(|s| s.len() == 64 * 1024));
        // A volume smaller than one stripe allocates only F per shard.
        let small = Layout::new(Scheme::RS_6_3, 1000, 4096).expect("layout");
        let encoder = StripeEncoder::new(small, 1 << 20).expect("encoder");
        assert!(encoder.shards.iter().all(|s| s.len() == 4096));
    }

    #[test]
    fn encoder_zero_pads_data_past_the_volume_end_even_with_reused_buffers() {
        let volume: Vec<u8> = (0..6 * 8192 - 100).map(|x| (x % 251) as u8 + 1).collect();
        let layout = Layout::new(Scheme::RS_6_3, volume.len() as u64, 4096).expect("layout");
        let mut encoder = StripeEncoder::new(layout, 4096).expect("encoder");
        assert_eq!(encoder.stripe_count(), 2);
        let first = encoder.encode(0, read_from(&volume)).expect("stripe 0");
        assert!(first.fragment(5).expect("data 5").iter().all(|&b| b != 0));
        let last = encoder.encode(1, read_from(&volume)).expect("stripe 1");
        let tail = last.fragment(5).expect("data 5");
        assert!(tail[..4096 - 100].iter().all(|&b| b != 0));
        assert!(tail[4096 - 100..].iter().all(|&b| b == 0));
        assert_eq!(last.fragments().count(), 9);
        assert!(last.fragment(9).is_none());
    }

    #[test]
    fn encoder_passes_read_errors_through_and_rejects_bad_stripes() {
        #[derive(Debug, PartialEq)]
        enum CallerError {
            Disk,
            Erasure(ErasureError),
        }
        impl From<ErasureError> for CallerError {
            fn from(e: ErasureError) -> Self {
                CallerError::Erasure(e)
            }
        }
        let layout = Layout::new(Scheme::RS_6_3, 100_000, 4096).expect("layout");
        let mut encoder = StripeEncoder::new(layout, 8192).expect("encoder");
        let err = encoder.encode(0, |_, _| Err(CallerError::Disk)).expect_err("read fails");
        assert_eq!(err, CallerError::Disk);
        let err = encoder.encode(3, |_, _| Ok::<(), CallerError>(())).expect_err("no stripe 3");
        assert_eq!(err, CallerError::Erasure(ErasureError::StripeIndex { stripe_index: 3, stripe_count: 3 }));
        assert!(matches!(StripeEncoder::new(layout, 1000), Err(ErasureError::StripeSize { .. })));
    }
}
