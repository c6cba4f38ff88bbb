//! Helpers shared by the integration tests: deterministic volumes and whole-volume encode
//! through the public streaming API.

#![allow(dead_code)]

use cellar_erasure::{ErasureError, FragmentSet, Layout, StripeEncoder, assemble, plan_read};

/// `len_bytes` of xorshift noise from `seed` (never all zero, so padding mistakes show).
pub fn volume_bytes(len_bytes: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len_bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Every fragment of `volume` (k + m buffers of F bytes), encoded stripe by stripe through
/// [`StripeEncoder`] as a volume server would, reading the volume at offsets.
pub fn encode_volume(layout: Layout, stripe_bytes: usize, volume: &[u8]) -> Vec<Vec<u8>> {
    let fragment_len = layout.fragment_len_bytes() as usize;
    let mut fragments = vec![vec![0u8; fragment_len]; layout.scheme().fragment_count()];
    let mut encoder = StripeEncoder::new(layout, stripe_bytes).expect("encoder");
    for stripe_index in 0..encoder.stripe_count() {
        let encoded = encoder
            .encode(stripe_index, |offset, buf: &mut [u8]| {
                let start = offset as usize;
                buf.copy_from_slice(&volume[start..start + buf.len()]);
                Ok::<(), ErasureError>(())
            })
            .expect("encode stripe");
        let at = encoded.stripe().fragment_offset_bytes as usize;
        for (index, shard) in encoded.fragments() {
            fragments[index][at..at + shard.len()].copy_from_slice(shard);
        }
    }
    fragments
}

/// Reads `len_bytes` at `offset_bytes` as a frontend would: plan, fetch the planned
/// fragment bytes (only from available fragments), assemble.
pub fn read_range(
    layout: &Layout,
    fragments: &[Vec<u8>],
    offset_bytes: u64,
    len_bytes: u64,
    available: FragmentSet,
) -> Result<Vec<u8>, ErasureError> {
    let plan = plan_read(layout, offset_bytes, len_bytes, available)?;
    let bytes: Vec<&[u8]> = plan
        .reads()
        .iter()
        .map(|r| {
            assert!(available.contains(r.fragment_index), "plan reads lost fragment {}", r.fragment_index);
            let start = r.offset_bytes as usize;
            &fragments[r.fragment_index][start..start + r.len_bytes]
        })
        .collect();
    assemble(&plan, &bytes)
}
