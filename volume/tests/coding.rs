//! Open volume -> sealed -> coded on a real in-process cell (one master, six volume
//! servers over three zones, two disks each), then reads through every loss the scheme
//! tolerates.

mod common;

use cellar_proto::master as mpb;
use cellar_volume::reader::BlockReader;
use common::{Cell, Written, mixed_sizes};

async fn read_all(reader: &BlockReader, v: &mpb::Volume, blocks: &[Written]) -> usize {
    let mut degraded = 0;
    for b in blocks {
        let got = reader
            .read(v, &b.key(), b.offset_bytes, b.length_bytes)
            .await
            .unwrap_or_else(|e| panic!("block at {} of volume {}: {e:?}", b.offset_bytes, v.volume_id));
        assert_eq!(got.payload, b.payload, "block at {} differs", b.offset_bytes);
        degraded += usize::from(got.degraded);
    }
    degraded
}

fn reader_cluster_reports(cell: &Cell) -> u64 {
    cell.cluster.bad_extent_reports()
}

/// The volume record as a reader would see it with the fragments in `lost` gone: they
/// point at a disk no server has, so every read of them fails like a lost extent.
fn without(v: &mpb::Volume, lost: &[usize]) -> mpb::Volume {
    let mut v = v.clone();
    for &i in lost {
        v.fragments[i].disk_id = 9_999_000 + i as u64;
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coded_volume_reads_back_through_any_three_lost_fragments() {
    let cell = Cell::start(3, 2, 2, |_| {}).await;
    let (v, blocks) = cell.fill_volume(&mixed_sizes(60), 7).await;
    assert_eq!(v.replicas.len(), 3);
    let reader = cell.reader();
    assert_eq!(read_all(&reader, &cell.volume(v.volume_id).await, &blocks).await, 0, "open: replica reads");

    let sealed = cell.seal(v.volume_id).await;
    assert_eq!(sealed.state(), cellar_proto::common::VolumeState::Sealed);
    let coded = cell
        .wait_volume(v.volume_id, "coded", |v| v.state() == cellar_proto::common::VolumeState::Coded)
        .await;
    assert_eq!(coded.fragments.len(), 9);
    assert_eq!(coded.generation, v.generation + 1);
    assert!(coded.replicas.is_empty());
    // Three fragments per zone: any one zone can be lost.
    for zone in ["zone-1", "zone-2", "zone-3"] {
        let n = coded.fragments.iter().filter(|f| cell.zone_of(f.node_id) == zone).count();
        assert_eq!(n, 3, "{zone} holds {n} fragments");
    }
    cell.wait_tasks_done().await;
    for r in &v.replicas {
        assert!(
            !cell.extent_exists(r, v.volume_id, "replica", 0).await,
            "replica on disk {} not deleted",
            r.disk_id
        );
    }
    for (i, f) in coded.fragments.iter().enumerate() {
        assert!(cell.extent_exists(f, v.volume_id, "fragment", i as u32).await);
    }

    // A reader still holding the record from before coding (frontends cache them): the
    // replicas it names are gone, yet every block reads back, the current record comes
    // with the answer, and the replicas deleted on purpose are not reported as lost.
    let reports_before = reader_cluster_reports(&cell);
    for b in blocks.iter().step_by(5) {
        let got = reader.read(&sealed, &b.key(), b.offset_bytes, b.length_bytes).await.expect("stale record");
        assert_eq!(got.payload, b.payload);
        assert_eq!(got.newer_volume.as_ref().map(|n| n.state().name()), Some("coded"));
    }
    assert_eq!(reader_cluster_reports(&cell), reports_before, "stale placements were reported");
    // With the current record nothing newer comes back.
    let got = reader.read(&coded, &blocks[0].key(), blocks[0].offset_bytes, blocks[0].length_bytes).await;
    assert!(got.expect("read").newer_volume.is_none());

    // Fast path: every block from its data fragment(s), nothing decoded.
    assert_eq!(read_all(&reader, &coded, &blocks).await, 0);

    // Every combination of three lost fragments (84 of them) over a sample of blocks.
    let sample: Vec<Written> = blocks.iter().step_by(7).cloned().collect();
    let mut combos = 0;
    for a in 0..9 {
        for b in a + 1..9 {
            for c in b + 1..9 {
                let degraded = read_all(&reader, &without(&coded, &[a, b, c]), &sample).await;
                if c >= 6 && a >= 6 {
                    assert_eq!(degraded, 0, "only parity lost: nothing to decode");
                }
                combos += 1;
            }
        }
    }
    assert_eq!(combos, 84);

    // A whole zone really lost: its fragments deleted from the disks.
    let zone = cell.zone_of(coded.fragments[0].node_id).to_string();
    let mut lost = Vec::new();
    for (i, f) in coded.fragments.iter().enumerate() {
        if cell.zone_of(f.node_id) == zone {
            let disk = cell.handle(f.node_id).shared.disks.get(f.disk_id).expect("disk");
            disk.delete(cellar_blockstore::ExtentId::fragment(v.volume_id, i as u8)).expect("delete");
            lost.push(i);
        }
    }
    assert_eq!(lost.len(), 3);
    let degraded = read_all(&reader, &coded, &blocks).await;
    assert!(degraded > 0, "blocks in the lost zone's data fragments were decoded");
    // The missing extents were reported to the master (the current record places them).
    assert!(reader_cluster_reports(&cell) > reports_before);
    let lost_disks: Vec<u64> = lost.iter().map(|&i| coded.fragments[i].disk_id).collect();
    let reported = cell
        .wait_volume(v.volume_id, "bad extents reported", |v| {
            lost_disks.iter().any(|d| v.bad_disks.contains(d))
        })
        .await;
    // With the bad disks known, reads go degraded from the start and still succeed.
    read_all(&reader, &reported, &blocks).await;

    // Four fragments really lost (the zone's and one more, fragment 0 among them): a
    // block in data fragment 0 cannot be read, with a clear error. (A record that only
    // names other disks would not do: the reader checks the master's current record.)
    let extra = if lost.contains(&0) { (1..9).find(|i| !lost.contains(i)).expect("a fourth") } else { 0 };
    let f = &coded.fragments[extra];
    let disk = cell.handle(f.node_id).shared.disks.get(f.disk_id).expect("disk");
    disk.delete(cellar_blockstore::ExtentId::fragment(v.volume_id, extra as u8)).expect("delete");
    let in_first = blocks.iter().find(|b| b.offset_bytes < 1000).expect("a block at the start");
    // Reports of the other lost extents may still be landing: a read through a record the
    // master has changed since answers the newer one (no bytes), and is asked again with
    // it, as the frontend does.
    let mut current = reported.clone();
    let mut err = None;
    for _ in 0..10 {
        match reader.read(&current, &in_first.key(), in_first.offset_bytes, in_first.length_bytes).await {
            Ok(read) => match read.newer_volume {
                Some(newer) => current = newer,
                None => panic!("read a block of data fragment 0 with four fragments lost"),
            },
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("four lost fragments: no error after ten newer records");
    assert!(err.message().contains("fragments"), "{err:?}");
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_chunk_is_detected_read_degraded_and_reported() {
    let cell = Cell::start(3, 2, 2, |_| {}).await;
    let (v, blocks) = cell.fill_volume(&mixed_sizes(20), 11).await;
    cell.seal(v.volume_id).await;
    let coded = cell
        .wait_volume(v.volume_id, "coded", |v| v.state() == cellar_proto::common::VolumeState::Coded)
        .await;
    cell.wait_tasks_done().await;
    let reader = cell.reader();

    // Flip one byte inside the first block's bytes in data fragment 0, on disk.
    let target = blocks.iter().find(|b| b.payload.len() >= 4096).expect("a 4 KiB block");
    let f0 = &coded.fragments[0];
    let disk = cell.handle(f0.node_id).shared.disks.get(f0.disk_id).expect("disk");
    let path = disk.extent_file_path(cellar_blockstore::ExtentId::fragment(v.volume_id, 0));
    let at = cellar_blockstore::EXTENT_DATA_OFFSET_BYTES + target.offset_bytes + 100;
    let mut bytes = std::fs::read(&path).expect("read fragment file");
    bytes[at as usize] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write fragment file");

    let got =
        reader.read(&coded, &target.key(), target.offset_bytes, target.length_bytes).await.expect("read");
    assert_eq!(got.payload, target.payload);
    assert!(got.degraded, "the corrupt chunk forced a degraded read");
    cell.wait_volume(v.volume_id, "corrupt fragment reported", |v| v.bad_disks.contains(&f0.disk_id)).await;
    // Everything else still reads, byte-exact.
    read_all(&reader, &cell.volume(v.volume_id).await, &blocks).await;
    cell.shutdown().await;
}

/// `cellar dev` wires its volume servers to each other in-process: the encode task's
/// fragment writes then skip gRPC. The volume must come out the same: coded, replicas
/// gone, every block read back from its fragments.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_volume_coded_over_in_process_fragment_writes_reads_back() {
    let cell = Cell::start(3, 2, 2, |_| {}).await;
    for v in &cell.volumes {
        let service = v.local_service();
        for w in &cell.volumes {
            if w.node_id != v.node_id {
                w.shared.cluster.add_local(v.node_id, &service);
            }
        }
    }
    let (v, blocks) = cell.fill_volume(&mixed_sizes(40), 11).await;
    cell.seal(v.volume_id).await;
    let coded = cell
        .wait_volume(v.volume_id, "coded", |v| v.state() == cellar_proto::common::VolumeState::Coded)
        .await;
    assert_eq!(coded.fragments.len(), 9);
    cell.wait_tasks_done().await;
    for (i, f) in coded.fragments.iter().enumerate() {
        assert!(cell.extent_exists(f, v.volume_id, "fragment", i as u32).await);
    }
    assert_eq!(read_all(&cell.reader(), &coded, &blocks).await, 0, "read from data fragments");
    cell.shutdown().await;
}

/// The in-process WriteFragment: a whole fragment is written and read back; a stream
/// that stops short (the sender dropped) is refused and leaves no extent behind; a
/// wrong secret is refused before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_process_fragment_writes_check_length_and_clean_up() {
    use cellar_blockstore::ExtentId;
    use cellar_proto::volume as vpb;
    use cellar_volume::FRAGMENT_CHUNK_BYTES;
    use cellar_volume::client::FragmentSink;
    use cellar_volume::cluster::{ExtentClient, ExtentTransport};

    let cell = Cell::start(1, 1, 1, |_| {}).await;
    let h = &cell.volumes[0];
    let (disk_id, disk) = h.shared.disks.with_ids().into_iter().next().expect("a disk");
    let chunk = FRAGMENT_CHUNK_BYTES as usize;
    let len = 3 * chunk + 100;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let header = |index: u32| vpb::FragmentHeader {
        volume_id: 4242,
        disk_id,
        fragment_index: index,
        fragment_len_bytes: len as u64,
        chunk_size_bytes: chunk as u32,
    };
    let local = || ExtentClient::new(ExtentTransport::Local { service: h.local_service(), secret: None });

    // Whole: two messages (two chunks, then the rest).
    let mut sink = FragmentSink::open(local(), header(0));
    sink.send(data[..2 * chunk].to_vec()).await.expect("send");
    sink.send(data[2 * chunk..].to_vec()).await.expect("send");
    let resp = sink.finish().await.expect("a whole fragment is written");
    assert_eq!(resp.length_bytes, len as u64);
    let id = ExtentId::fragment(4242, 0);
    assert_eq!(disk.read_fragment(id, 0, len as u64).expect("read back"), data);

    // Short: one chunk, then the sender goes away.
    let mut sink = FragmentSink::open(local(), header(1));
    sink.send(data[..chunk].to_vec()).await.expect("send");
    let err = sink.finish().await.expect_err("a short fragment is refused");
    assert!(err.message().contains("ended at"), "{err:?}");
    assert!(disk.extent_info(ExtentId::fragment(4242, 1)).is_err(), "the cut fragment was deleted");
    cell.shutdown().await;

    // A secret is checked in-process as over gRPC.
    let cell = Cell::start(1, 1, 1, |c| c.secret = Some("s3cret".into())).await;
    let h = &cell.volumes[0];
    let (disk_id, disk) = h.shared.disks.with_ids().into_iter().next().expect("a disk");
    let mut hdr = header(0);
    hdr.disk_id = disk_id;
    let wrong = ExtentClient::new(ExtentTransport::Local {
        service: h.local_service(),
        secret: Some("nope".parse().expect("ascii")),
    });
    let mut sink = FragmentSink::open(wrong, hdr);
    let _ = sink.send(data[..chunk].to_vec()).await;
    let err = sink.finish().await.expect_err("a wrong secret is refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(disk.extent_info(ExtentId::fragment(4242, 0)).is_err(), "nothing was created");
    cell.shutdown().await;
}
