//! Every byte range of a coded volume reads back exactly, directly or degraded, and a
//! read that cannot be decoded fails with a typed error.

mod common;

use cellar_erasure::{ErasureError, FragmentSet, Layout, Scheme, assemble, plan_read};
use common::{encode_volume, read_range, volume_bytes};
use proptest::prelude::*;
use proptest::sample::Index;
use reed_solomon_erasure::galois_8::ReedSolomon;

const CHUNK_BYTES: u64 = 4096;

/// A volume, its layout and fragments, for one generated case.
struct Coded {
    layout: Layout,
    volume: Vec<u8>,
    fragments: Vec<Vec<u8>>,
}

fn coded(k: u8, m: u8, volume_len: usize, stripe_chunks: usize, seed: u64) -> Coded {
    let scheme = Scheme::new(k, m).expect("valid scheme");
    let volume = volume_bytes(volume_len, seed);
    let layout = Layout::new(scheme, volume_len as u64, CHUNK_BYTES).expect("layout");
    let fragments = encode_volume(layout, stripe_chunks * CHUNK_BYTES as usize, &volume);
    Coded { layout, volume, fragments }
}

/// A range from two random picks: half of them start just before a fragment boundary
/// (a multiple of F) so that they span two or more data fragments.
fn pick_range(layout: &Layout, start: Index, len: Index, near_boundary: bool) -> (u64, u64) {
    let volume_len = layout.volume_len_bytes();
    let f = layout.fragment_len_bytes().max(1);
    let offset = if near_boundary {
        let boundary = f * (start.index(layout.scheme().data_count()) as u64 + 1);
        boundary.saturating_sub(len.index(2000) as u64).min(volume_len)
    } else {
        start.index(volume_len as usize + 1) as u64
    };
    let len = (len.index(300_000) as u64).min(volume_len - offset);
    (offset, len)
}

/// Up to `count` distinct fragment indices of `n` from random picks.
fn pick_lost(picks: &[Index], n: usize, count: usize) -> FragmentSet {
    let mut lost = FragmentSet::empty();
    for pick in picks {
        if lost.len() == count {
            break;
        }
        // Probe forward from the pick so that `count` distinct indices always result.
        let mut i = pick.index(n);
        while lost.contains(i) {
            i = (i + 1) % n;
        }
        lost.insert(i);
    }
    lost
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_range_reads_back_exactly_with_up_to_m_fragments_lost(
        k in 1u8..=12,
        m in 1u8..=4,
        volume_len in prop_oneof![0usize..100_000, 0usize..3 << 20],
        stripe_chunks in 1usize..=4,
        seed in any::<u64>(),
        ranges in prop::collection::vec((any::<Index>(), any::<Index>(), any::<bool>()), 1..6),
        lost_picks in prop::collection::vec(any::<Index>(), 4),
        lost_count in any::<Index>(),
    ) {
        let c = coded(k, m, volume_len, stripe_chunks, seed);
        let n = c.layout.scheme().fragment_count();
        let lost = pick_lost(&lost_picks, n, lost_count.index(usize::from(m) + 1));
        let available = FragmentSet::all_except(c.layout.scheme(), lost);
        for (start, len, near_boundary) in ranges {
            let (offset, len) = pick_range(&c.layout, start, len, near_boundary);
            let expected = &c.volume[offset as usize..(offset + len) as usize];
            // Direct from all fragments, then degraded with `lost` gone.
            let direct = read_range(&c.layout, &c.fragments, offset, len, FragmentSet::all(c.layout.scheme()));
            prop_assert_eq!(direct.as_deref(), Ok(expected), "direct {}+{}", offset, len);
            let degraded = read_range(&c.layout, &c.fragments, offset, len, available);
            prop_assert_eq!(degraded.as_deref(), Ok(expected), "lost {:?} {}+{}", lost, offset, len);
        }
    }

    #[test]
    fn read_with_more_than_m_lost_fails_typed_unless_its_data_fragments_survive(
        k in 1u8..=12,
        m in 1u8..=4,
        volume_len in 0usize..400_000,
        seed in any::<u64>(),
        ranges in prop::collection::vec((any::<Index>(), any::<Index>(), any::<bool>()), 1..6),
        lost_picks in prop::collection::vec(any::<Index>(), 16),
        extra in any::<Index>(),
    ) {
        let c = coded(k, m, volume_len, 1, seed);
        let scheme = c.layout.scheme();
        let n = scheme.fragment_count();
        let lost_count = usize::from(m) + 1 + extra.index(n - usize::from(m));
        let lost = pick_lost(&lost_picks, n, lost_count);
        prop_assert_eq!(lost.len(), lost_count);
        let available = FragmentSet::all_except(scheme, lost);
        for (start, len, near_boundary) in ranges {
            let (offset, len) = pick_range(&c.layout, start, len, near_boundary);
            let spans = c.layout.locate(offset, len).expect("in bounds");
            let result = read_range(&c.layout, &c.fragments, offset, len, available);
            if spans.iter().any(|s| lost.contains(s.fragment_index)) {
                prop_assert_eq!(
                    result,
                    Err(ErasureError::NotEnoughFragments { needed: usize::from(k), available: n - lost_count })
                );
            } else {
                prop_assert_eq!(result.as_deref(), Ok(&c.volume[offset as usize..(offset + len) as usize]));
            }
        }
    }
}

#[test]
fn streamed_encode_equals_whole_fragment_encode_by_reed_solomon_erasure() {
    for (k, m, volume_len, stripe_bytes) in
        [(6, 3, 1_000_003, 8192), (10, 4, 6 << 20, 1 << 20), (1, 1, 5000, 4096), (3, 5, 0, 4096)]
    {
        let scheme = Scheme::new(k, m).expect("valid");
        let volume = volume_bytes(volume_len, 7);
        let layout = Layout::new(scheme, volume_len as u64, CHUNK_BYTES).expect("layout");
        let fragments = encode_volume(layout, stripe_bytes, &volume);
        let f = layout.fragment_len_bytes() as usize;
        let mut data: Vec<Vec<u8>> = volume.chunks(f.max(1)).map(<[u8]>::to_vec).collect();
        data.resize(usize::from(k), Vec::new());
        for d in &mut data {
            d.resize(f, 0);
        }
        assert_eq!(&fragments[..usize::from(k)], data.as_slice(), "{scheme} data fragments");
        if f > 0 {
            let mut parity = vec![vec![0u8; f]; usize::from(m)];
            ReedSolomon::new(usize::from(k), usize::from(m))
                .expect("rs")
                .encode_sep(&data, &mut parity)
                .expect("encode");
            assert_eq!(&fragments[usize::from(k)..], parity.as_slice(), "{scheme} parity fragments");
        }
    }
}

#[test]
fn read_spanning_two_data_fragments_one_lost_decodes_only_the_lost_part() {
    let c = coded(6, 3, 6 * 65536, 4, 11);
    let f = c.layout.fragment_len_bytes();
    let available = FragmentSet::all_except(c.layout.scheme(), [2].into_iter().collect());
    let plan = plan_read(&c.layout, 3 * f - 1000, 3000, available).expect("plan");
    assert!(plan.needs_decode());
    // 1000 bytes of fragment 2 from 6 survivors, then 2000 bytes of fragment 3 directly.
    let reads: Vec<(usize, u64, usize)> =
        plan.reads().iter().map(|r| (r.fragment_index, r.offset_bytes, r.len_bytes)).collect();
    let mut expected: Vec<(usize, u64, usize)> =
        [0, 1, 3, 4, 5, 6].iter().map(|&i| (i, f - 1000, 1000)).collect();
    expected.push((3, 0, 2000));
    assert_eq!(reads, expected);
    let bytes: Vec<&[u8]> = plan
        .reads()
        .iter()
        .map(|r| {
            &c.fragments[r.fragment_index][r.offset_bytes as usize..r.offset_bytes as usize + r.len_bytes]
        })
        .collect();
    let range = (3 * f - 1000) as usize..(3 * f + 2000) as usize;
    assert_eq!(assemble(&plan, &bytes).as_deref(), Ok(&c.volume[range]));
}

#[test]
fn read_of_the_whole_volume_of_exactly_k_fragments_reads_back_with_m_lost() {
    let c = coded(10, 4, 10 * 3 * 4096, 2, 5);
    assert_eq!(c.layout.fragment_len_bytes(), 3 * 4096);
    let lost: FragmentSet = [0, 4, 9, 12].into_iter().collect();
    let available = FragmentSet::all_except(c.layout.scheme(), lost);
    let whole = read_range(&c.layout, &c.fragments, 0, c.volume.len() as u64, available);
    assert_eq!(whole.as_deref(), Ok(c.volume.as_slice()));
}
