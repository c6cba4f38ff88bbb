//! Reads of a coded volume's byte ranges: direct when the data fragments are there,
//! degraded (decode from k others) when they are not.
//!
//! A read is planned first, so that the caller knows which fragment bytes to fetch, and
//! assembled once they have arrived. Only the rows of the range are read and decoded: a
//! 4 KiB block in a lost fragment costs k reads of 4 KiB, not k stripes.

use crate::gf;
use crate::{ErasureError, FragmentSet, Layout};

/// Longest range one read may ask for. A degraded read holds k times this in fragment
/// reads (1 GiB for k = 16), so it bounds a frontend's memory per request; blocks are at
/// most 4 MiB.
pub const READ_LEN_BYTES_MAX: usize = 64 << 20;

/// One read the caller must issue: `len_bytes` at `offset_bytes` of fragment
/// `fragment_index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragmentRead {
    /// Fragment index, `0..k+m`.
    pub fragment_index: usize,
    /// Offset inside the fragment.
    pub offset_bytes: u64,
    /// Bytes to read.
    pub len_bytes: usize,
}

/// How to serve one volume byte range from the available fragments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPlan {
    len_bytes: usize,
    reads: Vec<FragmentRead>,
    pieces: Vec<Piece>,
}

/// How one data span of the range is produced from the reads.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Read `read` holds the span as is.
    Direct { read: usize, out_offset: usize },
    /// Reads `first_read..first_read + k` hold the same rows of k other fragments; the span
    /// is their combination by `coefficients`.
    Decoded { first_read: usize, coefficients: Vec<u8>, out_offset: usize, len_bytes: usize },
}

impl ReadPlan {
    /// The fragment reads to issue, in any order; their bytes go to [`assemble`] in this
    /// order. When [`ReadPlan::needs_decode`] is false these are the range's data spans in
    /// volume order, so their bytes concatenated are the answer.
    pub fn reads(&self) -> &[FragmentRead] {
        &self.reads
    }

    /// Whether part of the range is in an unavailable data fragment and must be decoded.
    pub fn needs_decode(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Decoded { .. }))
    }

    /// Length of the range the plan reads.
    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }
}

/// Plans the read of `len_bytes` at `offset_bytes` of the volume from the fragments in
/// `available`.
///
/// Each data span of the range whose data fragment is available is read directly. Each
/// other span is read at the same in-fragment offsets from the first k available fragments
/// (data before parity) and decoded. A range whose data fragments are all available is
/// served even when more than m fragments are lost; one that needs a decode fails with
/// [`ErasureError::NotEnoughFragments`] when fewer than k are available.
pub fn plan_read(
    layout: &Layout,
    offset_bytes: u64,
    len_bytes: u64,
    available: FragmentSet,
) -> Result<ReadPlan, ErasureError> {
    if len_bytes > READ_LEN_BYTES_MAX as u64 {
        return Err(ErasureError::ReadTooLong { len_bytes, read_len_bytes_max: READ_LEN_BYTES_MAX });
    }
    let scheme = layout.scheme();
    let (k, fragment_count) = (scheme.data_count(), scheme.fragment_count());
    if available.bound() > fragment_count {
        return Err(ErasureError::FragmentIndex { fragment_index: available.bound() - 1, fragment_count });
    }
    let spans = layout.locate(offset_bytes, len_bytes)?;

    // The lost data fragments this range touches, in order, and how to decode each.
    let mut lost: Vec<usize> =
        spans.iter().map(|s| s.fragment_index).filter(|&i| !available.contains(i)).collect();
    lost.dedup();
    let survivors: Vec<usize> = available.iter().take(k).collect();
    if !lost.is_empty() && survivors.len() < k {
        return Err(ErasureError::NotEnoughFragments { needed: k, available: available.len() });
    }
    let decode = if lost.is_empty() {
        None
    } else {
        Some(gf::decode_matrix(&gf::encoding_matrix(scheme), &survivors, &lost))
    };

    let mut reads = Vec::new();
    let mut pieces = Vec::with_capacity(spans.len());
    for span in &spans {
        // Spans are at most READ_LEN_BYTES_MAX long, so their lengths and offsets in the
        // output fit usize.
        let out_offset = (span.volume_offset_bytes - offset_bytes) as usize;
        let span_len = span.len_bytes as usize;
        match (&decode, lost.iter().position(|&i| i == span.fragment_index)) {
            (Some(decode), Some(row)) => {
                let first_read = reads.len();
                reads.extend(survivors.iter().map(|&fragment_index| FragmentRead {
                    fragment_index,
                    offset_bytes: span.fragment_offset_bytes,
                    len_bytes: span_len,
                }));
                pieces.push(Piece::Decoded {
                    first_read,
                    coefficients: decode.row(row).to_vec(),
                    out_offset,
                    len_bytes: span_len,
                });
            }
            _ => {
                pieces.push(Piece::Direct { read: reads.len(), out_offset });
                reads.push(FragmentRead {
                    fragment_index: span.fragment_index,
                    offset_bytes: span.fragment_offset_bytes,
                    len_bytes: span_len,
                });
            }
        }
    }
    Ok(ReadPlan { len_bytes: len_bytes as usize, reads, pieces })
}

/// The bytes of the planned range, from the bytes of `plan.reads()` given in the same
/// order; decodes the spans that need it.
///
/// Each buffer must be exactly as long as its read (a short read is a typed error, never
/// a panic or silently wrong bytes). Corrupt fragment bytes are not detected here: chunk
/// CRCs are checked when fragments are read, and the frontend checks the block's hash.
pub fn assemble<B: AsRef<[u8]>>(plan: &ReadPlan, fragment_bytes: &[B]) -> Result<Vec<u8>, ErasureError> {
    if fragment_bytes.len() != plan.reads.len() {
        return Err(ErasureError::BufferCount {
            what: "fragment reads",
            expected: plan.reads.len(),
            actual: fragment_bytes.len(),
        });
    }
    for (position, (read, bytes)) in plan.reads.iter().zip(fragment_bytes).enumerate() {
        let actual_bytes = bytes.as_ref().len();
        if actual_bytes != read.len_bytes {
            return Err(ErasureError::BufferLength {
                position,
                expected_bytes: read.len_bytes,
                actual_bytes,
            });
        }
    }
    let mut out = vec![0u8; plan.len_bytes];
    for piece in &plan.pieces {
        match piece {
            Piece::Direct { read, out_offset } => {
                let bytes = fragment_bytes[*read].as_ref();
                out[*out_offset..*out_offset + bytes.len()].copy_from_slice(bytes);
            }
            Piece::Decoded { first_read, coefficients, out_offset, len_bytes } => {
                let inputs = &fragment_bytes[*first_read..*first_read + coefficients.len()];
                gf::combine(coefficients, inputs, &mut [&mut out[*out_offset..*out_offset + *len_bytes]]);
            }
        }
    }
    Ok(out)
}

/// [`assemble`] taking the reads' buffers: when one read alone is the whole range (a
/// block inside one available data fragment, the usual read of a coded volume), its
/// buffer is the answer, with no new allocation and no copy; otherwise the assembled
/// bytes come back as a `B`.
pub fn assemble_owned<B: AsRef<[u8]> + From<Vec<u8>>>(
    plan: &ReadPlan,
    mut fragment_bytes: Vec<B>,
) -> Result<B, ErasureError> {
    if let [Piece::Direct { read, out_offset: 0 }] = plan.pieces[..]
        && fragment_bytes.len() == plan.reads.len()
        && fragment_bytes.get(read).is_some_and(|b| b.as_ref().len() == plan.len_bytes)
        && plan.reads.get(read).is_some_and(|r| r.len_bytes == plan.len_bytes)
    {
        return Ok(fragment_bytes.swap_remove(read));
    }
    assemble(plan, &fragment_bytes).map(B::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scheme;

    #[test]
    fn owned_assembly_hands_back_a_lone_read_and_matches_assemble_otherwise() {
        let l = layout();
        let all = FragmentSet::all(Scheme::RS_6_3);
        let fragment_len = l.fragment_len_bytes();
        let volume: Vec<u8> = (0..6 * fragment_len).map(|i| (i * 31 + i / 7) as u8).collect();
        let fragment_bytes = |plan: &ReadPlan| -> Vec<Vec<u8>> {
            plan.reads()
                .iter()
                .map(|r| {
                    let at = r.fragment_index as u64 * fragment_len + r.offset_bytes;
                    volume[at as usize..at as usize + r.len_bytes].to_vec()
                })
                .collect()
        };
        // Inside one fragment: the read's own buffer comes back.
        let plan = plan_read(&l, 65536 + 10, 100, all).expect("plan");
        let bufs = fragment_bytes(&plan);
        let ptr = bufs[0].as_ptr();
        let out = assemble_owned(&plan, bufs).expect("assemble");
        assert_eq!(out.as_ptr(), ptr, "no copy");
        assert_eq!(out, volume[65536 + 10..65536 + 110]);
        // Across two fragments, and with a decode: the same bytes as assemble.
        let across = plan_read(&l, fragment_len - 50, 100, all).expect("plan");
        assert_eq!(across.reads().len(), 2);
        let out = assemble_owned(&across, fragment_bytes(&across)).expect("assemble");
        assert_eq!(out, volume[(fragment_len - 50) as usize..(fragment_len + 50) as usize]);
        let mut lost = all;
        lost.remove(0);
        let decoded = plan_read(&l, 10, 100, lost).expect("plan");
        assert!(decoded.needs_decode());
        // (Any bytes of the right lengths: the two must combine them alike.)
        let bufs: Vec<Vec<u8>> =
            decoded.reads().iter().map(|r| vec![r.fragment_index as u8 + 1; r.len_bytes]).collect();
        assert_eq!(
            assemble_owned(&decoded, bufs.clone()).expect("assemble"),
            assemble(&decoded, &bufs).expect("assemble")
        );
        // A wrong buffer count is refused as by assemble.
        assert!(assemble_owned(&plan, Vec::<Vec<u8>>::new()).is_err());
    }

    fn layout() -> Layout {
        Layout::new(Scheme::RS_6_3, 6 * 65536, 4096).expect("layout")
    }

    #[test]
    fn read_inside_one_available_data_fragment_is_one_direct_read() {
        let plan = plan_read(&layout(), 65536 + 10, 100, FragmentSet::all(Scheme::RS_6_3)).expect("plan");
        assert!(!plan.needs_decode());
        assert_eq!(plan.reads(), &[FragmentRead { fragment_index: 1, offset_bytes: 10, len_bytes: 100 }]);
        assert_eq!(assemble(&plan, &[vec![7u8; 100]]), Ok(vec![7u8; 100]));
    }

    #[test]
    fn read_of_a_lost_data_fragment_reads_the_same_rows_of_k_others_preferring_data() {
        let available = FragmentSet::all_except(Scheme::RS_6_3, [1].into_iter().collect());
        let plan = plan_read(&layout(), 65536 + 10, 100, available).expect("plan");
        assert!(plan.needs_decode());
        let fragments: Vec<usize> = plan.reads().iter().map(|r| r.fragment_index).collect();
        assert_eq!(fragments, vec![0, 2, 3, 4, 5, 6]);
        assert!(plan.reads().iter().all(|r| r.offset_bytes == 10 && r.len_bytes == 100));
    }

    #[test]
    fn read_with_too_few_fragments_fails_only_when_it_needs_a_decode() {
        let lost: FragmentSet = [0, 6, 7, 8].into_iter().collect();
        let available = FragmentSet::all_except(Scheme::RS_6_3, lost);
        assert_eq!(
            plan_read(&layout(), 0, 10, available),
            Err(ErasureError::NotEnoughFragments { needed: 6, available: 5 })
        );
        assert!(plan_read(&layout(), 65536, 10, available).is_ok());
    }

    #[test]
    fn read_rejects_bad_ranges_sets_and_buffers() {
        let all = FragmentSet::all(Scheme::RS_6_3);
        assert!(matches!(
            plan_read(&layout(), 6 * 65536, 1, all),
            Err(ErasureError::RangeOutOfBounds { .. })
        ));
        let too_long = READ_LEN_BYTES_MAX as u64 + 1;
        assert!(matches!(plan_read(&layout(), 0, too_long, all), Err(ErasureError::ReadTooLong { .. })));
        let foreign: FragmentSet = [0, 9].into_iter().collect();
        assert_eq!(
            plan_read(&layout(), 0, 1, foreign),
            Err(ErasureError::FragmentIndex { fragment_index: 9, fragment_count: 9 })
        );
        let plan = plan_read(&layout(), 65530, 10, all).expect("plan");
        assert_eq!(plan.reads().len(), 2);
        assert!(matches!(assemble(&plan, &[vec![0u8; 6]]), Err(ErasureError::BufferCount { .. })));
        assert_eq!(
            assemble(&plan, &[vec![0u8; 6], vec![0u8; 3]]),
            Err(ErasureError::BufferLength { position: 1, expected_bytes: 4, actual_bytes: 3 })
        );
    }

    #[test]
    fn empty_read_needs_no_fragments() {
        let plan = plan_read(&layout(), 100, 0, FragmentSet::empty()).expect("plan");
        assert!(plan.reads().is_empty());
        assert_eq!(assemble::<&[u8]>(&plan, &[]), Ok(vec![]));
    }
}
