//! Fragment extents: chunked writes at given offsets, sealing, bad input.

mod common;

use cellar_blockstore::io::direct::HUGE_PAGE_BYTES;
use cellar_blockstore::{Error, ExtentState};
use common::{Backend, bytes, cache, open, open_faulty, snapshot, uncache};

for_each_backend!(
    fragment_round_trips_in_any_chunk_order,
    fragment_bad_input_is_refused_and_changes_nothing,
    large_ranges_read_from_the_cache_or_direct_the_same_bytes,
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
            // Less than a chunk, plus up to one alignment unit when the read went direct.
            assert!(skip < CHUNK as usize + HUGE_PAGE_BYTES, "skip {skip}");
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

/// Ranges of at least 128 KiB come from the page cache when it holds them and straight
/// from the device (into an aligned place in the buffer) when it does not; every range
/// shape around chunk and 4 KiB boundaries reads the same bytes either way and through the
/// fault backend (which offers neither: plain reads), into one reused buffer and into
/// fresh ones, after a reopen.
fn large_ranges_read_from_the_cache_or_direct_the_same_bytes(backend: Backend) {
    const CHUNK: u32 = 16 << 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = CHUNK as u64;
    let len = 40 * c + 777;
    let data = bytes(len as usize, 40);
    let id = cellar_blockstore::ExtentId::fragment(9, 4);
    {
        let disk = open(dir.path(), backend);
        disk.create_fragment(9, 4, len, CHUNK).expect("create");
        disk.write_fragment(id, 0, &data).expect("write");
        disk.seal_fragment(id).expect("seal");
    }
    let check = |disk: &cellar_blockstore::Disk, reused: &mut Vec<u8>| {
        for start in [0, 1, 4095, 4096, c - 1, c, c + 1, 3 * c + 5, len - (200 << 10)] {
            for want in [(128 << 10) - 1, 128 << 10, (128 << 10) + 1, 300 << 10, len] {
                let n = want.min(len - start);
                let expect = &data[start as usize..(start + n) as usize];
                let skip = disk.read_fragment_into(id, start, n, reused).expect("read into a reused buffer");
                assert!(skip < (CHUNK as usize) + HUGE_PAGE_BYTES, "skip {skip}");
                assert_eq!(&reused[skip..skip + n as usize], expect, "reused {start}+{n}");
                let mut fresh = Vec::new();
                let skip =
                    disk.read_fragment_into(id, start, n, &mut fresh).expect("read into a fresh buffer");
                assert_eq!(&fresh[skip..skip + n as usize], expect, "fresh {start}+{n}");
                assert_eq!(disk.read_fragment(id, start, n).expect("read"), expect, "read {start}+{n}");
            }
        }
    };
    let mut reused = vec![0xEEu8; 3];
    {
        let disk = open(dir.path(), backend);
        let path = disk.extent_file_path(id);
        uncache(&path); // direct reads (which leave the cache empty)
        check(&disk, &mut reused);
        cache(&path); // copies out of the page cache
        check(&disk, &mut reused);
    }
    let (faulty, _plan) = open_faulty(dir.path(), backend);
    check(&faulty, &mut reused);
}
