//! The ReadRecords RPC and small reads gathered into it ([`cellar_volume::cluster`] over
//! gRPC): each record's own answer or error, in order; malformed calls refused whole; reads
//! waiting on a call in flight sent together once it ends.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cellar_proto::volume as pb;
use cellar_volume_api::errors::code_of;
use cellar_volume_api::gather::{GatherSender, Turn};
use common::{Cell, WAIT, Written};
use tonic::Code;

/// A cell of three servers (one disk each) and a volume holding `count` 4 KiB blocks.
async fn cell_with_blocks(count: usize) -> (Cell, cellar_proto::master::Volume, Vec<Written>) {
    let cell = Cell::start(3, 1, 1, |_| {}).await;
    let sizes = vec![4096; count];
    let (v, blocks) = cell.fill_volume(&sizes, 7).await;
    (cell, v, blocks)
}

fn request(v: &cellar_proto::master::Volume, disk_id: u64, b: &Written) -> pb::ReadRecordRequest {
    pb::ReadRecordRequest {
        volume_id: v.volume_id,
        disk_id,
        offset_bytes: b.offset_bytes,
        length_bytes: b.length_bytes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_records_answers_each_record_or_its_error_in_order() {
    let (cell, v, blocks) = cell_with_blocks(6).await;
    let replica = &v.replicas[0];
    let addr = cell.handle(replica.node_id).addr.to_string();
    let mut client = cell.cluster.client(&addr).expect("client");

    let mut records: Vec<pb::ReadRecordRequest> =
        blocks.iter().map(|b| request(&v, replica.disk_id, b)).collect();
    // A wrong length, a disk the server does not have, a record of a volume it does not hold.
    let mut wrong_length = records[1];
    wrong_length.length_bytes += 1;
    let mut unknown_disk = records[2];
    unknown_disk.disk_id = 999_999;
    let mut unknown_volume = records[3];
    unknown_volume.volume_id = 999_999;
    records.insert(2, wrong_length);
    records.insert(4, unknown_disk);
    records.push(unknown_volume);
    let answer = client
        .read_records(pb::ReadRecordsRequest { records: records.clone() })
        .await
        .expect("read records")
        .into_inner();
    assert_eq!(answer.results.len(), records.len(), "one result per record");
    let mut served = 0;
    for (req, result) in records.iter().zip(&answer.results) {
        match blocks.iter().find(|b| b.offset_bytes == req.offset_bytes && b.length_bytes == req.length_bytes)
        {
            Some(b) if req.disk_id == replica.disk_id && req.volume_id == v.volume_id => {
                assert_eq!(result.code, 0, "record at {}: {}", req.offset_bytes, result.message);
                let record = result.record.as_ref().expect("a record");
                assert_eq!(record.sha256, b.sha256.to_vec());
                assert!(record.payload == b.payload, "bytes of the record at {}", b.offset_bytes);
                served += 1;
            }
            _ => {
                assert_ne!(result.code, 0, "{req:?} must fail");
                assert!(result.record.is_none());
                assert!(!result.error_code.is_empty(), "{req:?}: a stable code ({})", result.message);
            }
        }
    }
    assert_eq!(served, blocks.len());
    // The same errors ReadRecord gives alone.
    for i in [2, 4, records.len() - 1] {
        let alone = client.read_record(records[i]).await.expect_err("fails alone too");
        assert_eq!(answer.results[i].code, alone.code() as i32, "{:?}", records[i]);
        let stable = code_of(&alone).map(|c| c.as_str().to_string()).unwrap_or_default();
        assert_eq!(answer.results[i].error_code, stable);
    }

    // Malformed calls are refused whole.
    let one = request(&v, replica.disk_id, &blocks[0]);
    let mut unknown_length = one;
    unknown_length.length_bytes = 0;
    let mut huge = one;
    huge.length_bytes = 3 << 20;
    for (what, records) in [
        ("no record", Vec::new()),
        ("65 records", vec![one; 65]),
        ("a record of unknown length", vec![one, unknown_length]),
        ("over 4 MiB in all", vec![huge, huge]),
    ] {
        let e = client.read_records(pb::ReadRecordsRequest { records }).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
    }
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_waiting_on_the_call_in_flight_go_together_once_it_ends() {
    let (cell, v, blocks) = cell_with_blocks(8).await;
    cell.cluster.gather_reads(Arc::new(|| true), WAIT);
    let replica = v.replicas[0];
    let addr = cell.handle(replica.node_id).addr.to_string();
    let clients = cell.cluster.clients(&addr).expect("clients");

    // The turn is taken and held, as by a call in flight.
    let first = request(&v, replica.disk_id, &blocks[0]);
    let sender: Arc<dyn GatherSender> = Arc::new(clients.clone());
    let held = match clients.gather.turn(first, WAIT, || sender) {
        Turn::Alone(_, held) => held,
        _ => panic!("nothing is in flight: the first read takes the turn"),
    };
    // Eight reads through the cluster's clients, one of them of a wrong length.
    let mut reads = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let mut req = request(&v, replica.disk_id, b);
        if i == 5 {
            req.length_bytes += 1;
        }
        let (cluster, key) = (cell.cluster.clone(), b.key());
        let node_id = replica.node_id;
        reads.push(tokio::spawn(async move {
            let mut client = cluster.extent_client(node_id).await.expect("client");
            client.read_record_checked(req, key).await
        }));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while clients.gather.waiting() < blocks.len() {
        assert!(tokio::time::Instant::now() < deadline, "reads waiting: {}", clients.gather.waiting());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(cell.cluster.gather_counts().calls(), 0, "nothing sent while the turn is held");
    drop(held);
    for (i, (read, b)) in reads.into_iter().zip(&blocks).enumerate() {
        let read = read.await.expect("joined");
        if i == 5 {
            let e = read.expect_err("a wrong length fails");
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            continue;
        }
        let rec = read.expect("read");
        assert_eq!(rec.sha256, b.sha256.to_vec());
        assert!(b.key().matches_pieces(&rec.payload), "bytes of the record at {}", b.offset_bytes);
    }
    let counts = cell.cluster.gather_counts();
    assert_eq!((counts.calls(), counts.reads()), (1, blocks.len() as u64), "one gathered call of them all");
    cell.shutdown().await;
}
