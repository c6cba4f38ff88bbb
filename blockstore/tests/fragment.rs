//! Fragment extents: chunked writes at given offsets, sealing, bad input.

mod common;

use cellar_blockstore::{Error, ExtentState};
use common::{Backend, bytes, open, snapshot};

for_each_backend!(
    fragment_round_trips_in_any_chunk_order,
    fragment_bad_input_is_refused_and_changes_nothing,
    large_fragment_writes_round_trip_from_aligned_and_unaligned_memory,
);

fn fragment_round_trips_in_any_chunk_order(backend: Backend) {
    const CHUNK: u32 = 64 << 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let len = 5 * CHUNK as u64 + 1234;
    let data = bytes(len as usize, 77);
    {
        let disk = open(dir.path(), backend);
        let id = disk.create_fragment(3, 7, len, CHUNK).expect("create");
        // Last (short) chunk first, then the rest in two writes.
        let c = CHUNK as usize;
        disk.write_fragment(id, 5 * CHUNK as u64, &data[5 * c..]).expect("write tail");
        assert!(matches!(disk.read_fragment(id, 0, 10), Err(Error::Unwritten { chunk_index: 0, .. })));
        assert!(matches!(disk.seal_fragment(id), Err(Error::Unwritten { chunk_index: 0, .. })));
        disk.write_fragment(id, 2 * CHUNK as u64, &data[2 * c..5 * c]).expect("write middle");
        disk.write_fragment(id, 0, &data[..2 * c]).expect("write head");
        disk.sync_fragment(id).expect("sync");
        disk.seal_fragment(id).expect("seal");
        disk.seal_fragment(id).expect("seal twice is a no-op");
        assert!(matches!(disk.write_fragment(id, 0, &data[..c]), Err(Error::Sealed(_))));
    }
    let disk = open(dir.path(), backend);
    let id = cellar_blockstore::ExtentId::fragment(3, 7);
    let info = disk.extent_info(id).expect("info");
    assert_eq!((info.state, info.length_bytes, info.chunk_size_bytes), (ExtentState::Sealed, len, CHUNK));
    assert_eq!(disk.read_fragment(id, 0, len).expect("read all"), data);
    let (start, end) = (CHUNK as u64 - 5, 3 * CHUNK as u64 + 17);
    assert_eq!(
        disk.read_fragment(id, start, end - start).expect("read range"),
        data[start as usize..end as usize]
    );
    assert_eq!(disk.read_fragment(id, len, 0).expect("empty read at end"), Vec::<u8>::new());
    // Ranges starting at, just before, just after and inside chunk boundaries, of lengths
    // inside one chunk, across two, across many and to the (short) last chunk's end.
    let c = CHUNK as u64;
    // read_fragment_into reuses one buffer throughout: it only grows, and leftovers of a
    // longer read before never leak into a shorter one's range.
    let mut buf = vec![0xEEu8; 7];
    let mut longest = 0;
    for start in [0, 1, c - 1, c, c + 1, 2 * c + 100, 5 * c, 5 * c + 1, len - 1] {
        for want in [1, 2, c - 1, c, c + 1, 2 * c + 3, len] {
            let n = want.min(len - start);
            assert_eq!(
                disk.read_fragment(id, start, n).expect("read range"),
                data[start as usize..(start + n) as usize],
                "range {start}+{n}"
            );
            let skip = disk.read_fragment_into(id, start, n, &mut buf).expect("read range into");
            assert!(skip < CHUNK as usize, "skip {skip}");
            assert_eq!(
                &buf[skip..skip + n as usize],
                &data[start as usize..(start + n) as usize],
                "into {start}+{n}"
            );
            assert!(buf.len() >= longest, "the buffer shrank");
            longest = buf.len();
        }
    }
    assert_eq!(disk.read_fragment_into(id, len, 0, &mut buf).expect("empty read at end"), 0);
    assert!(matches!(disk.read_fragment_into(id, len, 1, &mut buf), Err(Error::OffsetPastEnd { .. })));
}

fn fragment_bad_input_is_refused_and_changes_nothing(backend: Backend) {
    const CHUNK: u32 = 4096;
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    let id = disk.create_fragment(1, 0, 3 * CHUNK as u64, CHUNK).expect("create");
    let before = snapshot(dir.path());
    let chunk = vec![1u8; CHUNK as usize];
    assert!(matches!(disk.write_fragment(id, 1, &chunk), Err(Error::BadRange { .. })), "misaligned offset");
    assert!(
        matches!(disk.write_fragment(id, 0, &chunk[..100]), Err(Error::BadRange { .. })),
        "partial chunk"
    );
    assert!(
        matches!(disk.write_fragment(id, 3 * CHUNK as u64, &chunk), Err(Error::BadRange { .. })),
        "past end"
    );
    assert!(matches!(disk.write_fragment(id, 0, &[]), Err(Error::BadRange { .. })), "empty");
    assert!(matches!(disk.read_fragment(id, 3 * CHUNK as u64, 1), Err(Error::OffsetPastEnd { .. })));
    assert!(matches!(disk.read_fragment(id, u64::MAX, 2), Err(Error::BadRange { .. })));
    assert!(
        matches!(disk.create_fragment(2, 0, 100, 1000), Err(Error::BadParameters(_))),
        "chunk not a power of two"
    );
    assert!(matches!(disk.create_fragment(2, 0, 0, 4096), Err(Error::BadParameters(_))), "empty fragment");
    assert!(matches!(disk.create_fragment(1, 0, 4096, 4096), Err(Error::ExtentExists(_))));
    assert!(matches!(disk.append(id, None, &[0; 32], b"x"), Err(Error::WrongKind(..))));
    assert_eq!(snapshot(dir.path()), before);
}

/// A large write goes down direct up to its last whole 4 KiB block, from the caller's
/// memory when aligned (else from an aligned copy), and the short rest through the page
/// cache: every byte must come back, before and after a reopen.
fn large_fragment_writes_round_trip_from_aligned_and_unaligned_memory(backend: Backend) {
    use cellar_blockstore::io::direct::AlignedBuf;
    const CHUNK: u32 = 16 << 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let len = 40 * CHUNK as u64 + 777;
    let data = bytes(len as usize, 91);
    let mut aligned = AlignedBuf::take(len as usize);
    aligned.extend_from_slice(&data);
    let unaligned: Vec<u8> = [&[0u8][..], &data].concat();
    {
        let disk = open(dir.path(), backend);
        let a = disk.create_fragment(5, 0, len, CHUNK).expect("create");
        let b = disk.create_fragment(5, 1, len, CHUNK).expect("create");
        disk.write_fragment(a, 0, aligned.as_slice()).expect("write from aligned memory");
        disk.write_fragment(b, 0, &unaligned[1..]).expect("write from unaligned memory");
        for id in [a, b] {
            assert_eq!(disk.read_fragment(id, 0, len).expect("read"), data);
            disk.seal_fragment(id).expect("seal");
        }
    }
    let disk = open(dir.path(), backend);
    assert!(disk.open_report().damaged.is_empty());
    for i in 0..2 {
        let id = cellar_blockstore::ExtentId::fragment(5, i);
        assert_eq!(disk.read_fragment(id, 0, len).expect("read after reopen"), data);
        let tail = len - 1000;
        assert_eq!(disk.read_fragment(id, tail, 1000).expect("read tail"), data[tail as usize..]);
    }
}
