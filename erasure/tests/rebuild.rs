//! A lost fragment, data or parity, is rebuilt byte-exact stripe by stripe from k
//! survivors; malformed inputs are typed errors.

mod common;

use cellar_erasure::{Codec, ErasureError, Layout, Scheme};
use common::{encode_volume, volume_bytes};

/// Rebuilds fragment `lost` of `fragments` stripe by stripe from the fragments in
/// `survivors`, with one reused output buffer, as a volume server would.
fn rebuild(
    layout: &Layout,
    stripe_bytes: usize,
    fragments: &[Vec<u8>],
    lost: usize,
    survivors: &[usize],
) -> Vec<u8> {
    let codec = Codec::new(layout.scheme()).expect("codec");
    let mut rebuilt = Vec::with_capacity(layout.fragment_len_bytes() as usize);
    let mut out = vec![0u8; stripe_bytes];
    for stripe_index in 0..layout.stripe_count(stripe_bytes).expect("stripe count") {
        let stripe = layout.stripe(stripe_bytes, stripe_index).expect("stripe");
        let rows =
            stripe.fragment_offset_bytes as usize..stripe.fragment_offset_bytes as usize + stripe.len_bytes;
        let inputs: Vec<(usize, &[u8])> =
            survivors.iter().map(|&i| (i, &fragments[i][rows.clone()])).collect();
        let out = &mut out[..stripe.len_bytes];
        codec.rebuild_stripe(lost, &inputs, out).expect("rebuild stripe");
        rebuilt.extend_from_slice(out);
    }
    rebuilt
}

#[test]
fn rebuild_of_every_fragment_index_reproduces_it_byte_exact() {
    for (k, m, volume_len, stripe_bytes) in [
        (6, 3, 2_000_000, 65536),
        (10, 4, 3 << 20, 1 << 20),
        (1, 1, 10_000, 4096),
        (3, 5, 123_457, 8192),
        (16, 16, 700_001, 4096),
    ] {
        let scheme = Scheme::new(k, m).expect("valid");
        let layout = Layout::new(scheme, volume_len, 4096).expect("layout");
        let fragments = encode_volume(layout, stripe_bytes, &volume_bytes(volume_len as usize, 3));
        let n = scheme.fragment_count();
        let k = scheme.data_count();
        for lost in 0..n {
            // The k fragments after the lost one, wrapping: mixes data and parity, and for
            // high indices uses mostly parity.
            let next_k: Vec<usize> = (1..=k).map(|d| (lost + d) % n).collect();
            assert_eq!(
                rebuild(&layout, stripe_bytes, &fragments, lost, &next_k),
                fragments[lost],
                "{scheme} lost {lost}"
            );
            // Every other fragment offered: the lowest k are used.
            let all_others: Vec<usize> = (0..n).filter(|&i| i != lost).collect();
            assert_eq!(
                rebuild(&layout, stripe_bytes, &fragments, lost, &all_others),
                fragments[lost],
                "{scheme} lost {lost}"
            );
        }
    }
}

#[test]
fn rebuild_with_wrong_length_survivors_or_output_is_a_typed_error() {
    let layout = Layout::new(Scheme::RS_6_3, 100_000, 4096).expect("layout");
    let fragments = encode_volume(layout, 8192, &volume_bytes(100_000, 9));
    let codec = Codec::new(Scheme::RS_6_3).expect("codec");
    let survivors: Vec<(usize, &[u8])> = (1..7).map(|i| (i, &fragments[i][..8192])).collect();
    let mut short_out = vec![0u8; 8191];
    assert_eq!(
        codec.rebuild_stripe(0, &survivors, &mut short_out),
        Err(ErasureError::BufferLength { position: 1, expected_bytes: 8191, actual_bytes: 8192 })
    );
    let mut ragged = survivors.clone();
    ragged[3].1 = &fragments[4][..100];
    let mut out = vec![0u8; 8192];
    assert_eq!(
        codec.rebuild_stripe(0, &ragged, &mut out),
        Err(ErasureError::BufferLength { position: 4, expected_bytes: 8192, actual_bytes: 100 })
    );
    assert_eq!(
        codec.rebuild_stripe(0, &survivors[..5], &mut out),
        Err(ErasureError::NotEnoughFragments { needed: 6, available: 5 })
    );
    assert_eq!(codec.rebuild_stripe(0, &survivors, &mut out), Ok(()));
    assert_eq!(out, fragments[0][..8192]);
}

#[test]
fn rebuild_of_zero_length_stripe_is_a_no_op() {
    let codec = Codec::new(Scheme::RS_10_4).expect("codec");
    let empty: Vec<(usize, &[u8])> = (0..10).map(|i| (i, &[][..])).collect();
    assert_eq!(codec.rebuild_stripe(12, &empty, &mut []), Ok(()));
}
