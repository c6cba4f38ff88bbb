//! Stripe-at-a-time coding: parity from data, and one lost fragment from any k survivors.

use crate::gf::{self, Matrix};
use crate::{ErasureError, Scheme};

/// The Reed-Solomon code of one scheme, applied to caller-owned stripe buffers.
///
/// Holds only the scheme's coefficients (at most 32 x 31 bytes), so it is cheap to keep
/// one per scheme and share it between threads. Every method works on equal-length
/// shards of any length, and allocates nothing on the encode path.
#[derive(Clone, Debug)]
pub struct Codec {
    scheme: Scheme,
    /// The (k+m) x k encoding matrix; rows k.. are the parity coefficients.
    encoding: Matrix,
    /// Rows k.. of `encoding`, flat, in the form the kernel takes.
    parity_rows: Vec<u8>,
}

impl Codec {
    /// The codec of a validated `scheme`.
    pub fn new(scheme: Scheme) -> Result<Self, ErasureError> {
        scheme.validate()?;
        let encoding = gf::encoding_matrix(scheme);
        let parity: Vec<usize> = (scheme.data_count()..scheme.fragment_count()).collect();
        let parity_rows = encoding.select_rows(&parity).cells().to_vec();
        Ok(Codec { scheme, encoding, parity_rows })
    }

    /// The scheme this codec codes.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Computes the m parity shards of one stripe from its k data shards.
    ///
    /// All shards must have one length (the stripe's rows); `parity_out` is overwritten.
    /// Data shards past the volume's end must hold zeros, as the layout defines them.
    pub fn encode_stripe<D: AsRef<[u8]>, P: AsMut<[u8]>>(
        &self,
        data: &[D],
        parity_out: &mut [P],
    ) -> Result<(), ErasureError> {
        check_count("data shards", self.scheme.data_count(), data.len())?;
        check_count("parity outputs", self.scheme.parity_count(), parity_out.len())?;
        let len = data.first().map_or(0, |d| d.as_ref().len());
        for (position, shard) in data.iter().enumerate() {
            check_len(position, len, shard.as_ref().len())?;
        }
        for (position, shard) in parity_out.iter_mut().enumerate() {
            check_len(data.len() + position, len, shard.as_mut().len())?;
        }
        gf::combine(&self.parity_rows, data, parity_out);
        Ok(())
    }

    /// Rebuilds the stripe of fragment `lost_index` (data or parity) into `out` from at
    /// least k surviving fragments' same stripe, given as (fragment index, bytes).
    ///
    /// When more than k survivors are given, the k with the lowest indices are used (data
    /// before parity), so a caller that has not read yet should read exactly those. All
    /// survivors must be as long as `out`. Costs one k x k matrix inversion (microseconds)
    /// plus k multiply passes over the stripe.
    pub fn rebuild_stripe<S: AsRef<[u8]>>(
        &self,
        lost_index: usize,
        survivors: &[(usize, S)],
        out: &mut [u8],
    ) -> Result<(), ErasureError> {
        let k = self.scheme.data_count();
        self.check_index(lost_index)?;
        let mut chosen: Vec<(usize, &[u8])> = Vec::with_capacity(survivors.len());
        for (index, bytes) in survivors {
            self.check_index(*index)?;
            if *index == lost_index || chosen.iter().any(|(i, _)| i == index) {
                return Err(ErasureError::DuplicateFragment { fragment_index: *index });
            }
            check_len(*index, out.len(), bytes.as_ref().len())?;
            chosen.push((*index, bytes.as_ref()));
        }
        if chosen.len() < k {
            return Err(ErasureError::NotEnoughFragments { needed: k, available: chosen.len() });
        }
        chosen.sort_unstable_by_key(|(index, _)| *index);
        chosen.truncate(k);
        let indices: Vec<usize> = chosen.iter().map(|(index, _)| *index).collect();
        let inputs: Vec<&[u8]> = chosen.iter().map(|(_, bytes)| *bytes).collect();
        let row = if lost_index >= k && indices.iter().enumerate().all(|(i, &index)| i == index) {
            // All data survives: a lost parity fragment is just re-encoded.
            self.encoding.row(lost_index).to_vec()
        } else {
            gf::decode_matrix(&self.encoding, &indices, &[lost_index]).cells().to_vec()
        };
        gf::combine(&row, &inputs, &mut [out]);
        Ok(())
    }

    fn check_index(&self, fragment_index: usize) -> Result<(), ErasureError> {
        let fragment_count = self.scheme.fragment_count();
        if fragment_index < fragment_count {
            Ok(())
        } else {
            Err(ErasureError::FragmentIndex { fragment_index, fragment_count })
        }
    }
}

fn check_count(what: &'static str, expected: usize, actual: usize) -> Result<(), ErasureError> {
    if expected == actual { Ok(()) } else { Err(ErasureError::BufferCount { what, expected, actual }) }
}

fn check_len(position: usize, expected_bytes: usize, actual_bytes: usize) -> Result<(), ErasureError> {
    if expected_bytes == actual_bytes {
        Ok(())
    } else {
        Err(ErasureError::BufferLength { position, expected_bytes, actual_bytes })
    }
}

#[cfg(test)]
mod tests {
    use reed_solomon_erasure::galois_8::ReedSolomon;

    use super::*;

    fn shards(k: usize, len: usize) -> Vec<Vec<u8>> {
        (0..k).map(|d| (0..len).map(|x| (x * 131 + d * 17 + (x >> 9)) as u8).collect()).collect()
    }

    #[test]
    fn encode_stripe_writes_what_reed_solomon_erasure_writes() {
        let codec = Codec::new(Scheme::RS_6_3).expect("valid");
        let data = shards(6, 10_000);
        let mut expected = vec![vec![0u8; 10_000]; 3];
        ReedSolomon::new(6, 3).expect("valid").encode_sep(&data, &mut expected).expect("encode");
        let mut parity = vec![vec![0xFFu8; 10_000]; 3];
        codec.encode_stripe(&data, &mut parity).expect("encode");
        assert_eq!(parity, expected);
    }

    #[test]
    fn encode_stripe_of_zero_length_is_a_no_op() {
        let codec = Codec::new(Scheme::RS_6_3).expect("valid");
        let data = vec![Vec::<u8>::new(); 6];
        let mut parity = vec![Vec::<u8>::new(); 3];
        assert_eq!(codec.encode_stripe(&data, &mut parity), Ok(()));
    }

    #[test]
    fn encode_stripe_rejects_wrong_counts_and_lengths() {
        let codec = Codec::new(Scheme::RS_6_3).expect("valid");
        let mut parity = vec![vec![0u8; 8]; 3];
        let err = codec.encode_stripe(&shards(5, 8), &mut parity).expect_err("5 data shards");
        assert_eq!(err, ErasureError::BufferCount { what: "data shards", expected: 6, actual: 5 });
        let err = codec.encode_stripe(&shards(6, 8), &mut parity[..2]).expect_err("2 parity outputs");
        assert_eq!(err, ErasureError::BufferCount { what: "parity outputs", expected: 3, actual: 2 });
        let mut data = shards(6, 8);
        data[4].push(0);
        let err = codec.encode_stripe(&data, &mut parity).expect_err("ragged data");
        assert_eq!(err, ErasureError::BufferLength { position: 4, expected_bytes: 8, actual_bytes: 9 });
        parity[2].pop();
        let err = codec.encode_stripe(&shards(6, 8), &mut parity).expect_err("short parity");
        assert_eq!(err, ErasureError::BufferLength { position: 8, expected_bytes: 8, actual_bytes: 7 });
    }

    #[test]
    fn rebuild_stripe_rejects_bad_survivor_sets() {
        let codec = Codec::new(Scheme::RS_6_3).expect("valid");
        let data = shards(6, 64);
        let mut out = vec![0u8; 64];
        let five: Vec<(usize, &[u8])> = (0..5).map(|i| (i, data[i].as_slice())).collect();
        assert_eq!(
            codec.rebuild_stripe(5, &five, &mut out),
            Err(ErasureError::NotEnoughFragments { needed: 6, available: 5 })
        );
        let mut with_lost = five.clone();
        with_lost.push((5, data[5].as_slice()));
        assert_eq!(
            codec.rebuild_stripe(5, &with_lost, &mut out),
            Err(ErasureError::DuplicateFragment { fragment_index: 5 })
        );
        let mut twice = five.clone();
        twice.push((0, data[0].as_slice()));
        assert_eq!(
            codec.rebuild_stripe(6, &twice, &mut out),
            Err(ErasureError::DuplicateFragment { fragment_index: 0 })
        );
        assert_eq!(
            codec.rebuild_stripe(9, &five, &mut out),
            Err(ErasureError::FragmentIndex { fragment_index: 9, fragment_count: 9 })
        );
        let short = vec![0u8; 63];
        let mut ragged = five.clone();
        ragged.push((7, short.as_slice()));
        assert_eq!(
            codec.rebuild_stripe(5, &ragged, &mut out),
            Err(ErasureError::BufferLength { position: 7, expected_bytes: 64, actual_bytes: 63 })
        );
    }
}
