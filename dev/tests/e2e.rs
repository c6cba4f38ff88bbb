//! End to end on an in-process dev cell (3 masters, 6 volume servers over 3 zones, one
//! frontend), through the HTTP block API.

use std::time::Duration;

mod common;

use cellar_dev::DevCell;
use cellar_master_api::client::MasterClient;
use cellar_proto::master as mpb;
use cellar_volume_api::digest::read_digest;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(180);

/// A dev cell whose parts talk over gRPC (as on separate machines) or in-process (the
/// `cellar dev` default).
async fn start(dir: &std::path::Path, over_grpc: bool) -> DevCell {
    common::start_cell(dir, over_grpc).await
}

fn master(cell: &DevCell) -> MasterClient {
    MasterClient::new(&cell.endpoints.masters, None).expect("master client")
}

async fn status(cell: &DevCell) -> mpb::StatusResponse {
    master(cell).call(|mut c| async move { c.status(mpb::StatusRequest {}).await }).await.expect("status")
}

/// Bytes held by extents on every disk of the cell.
fn used_bytes(cell: &DevCell) -> u64 {
    cell.volumes
        .iter()
        .flat_map(|v| v.shared.disks.with_ids())
        .map(|(_, d)| d.stat().expect("stat").used_bytes)
        .sum()
}

fn count(s: &mpb::StatusResponse, state: &str) -> u64 {
    s.volumes.iter().find(|v| v.state().name() == state).map_or(0, |v| v.count)
}

/// Sizes: the edge sizes the issue names, weighted so that 2,000 blocks stay ~170 MB.
fn size(rng: &mut impl Rng) -> usize {
    match rng.random_range(0..1000) {
        0..100 => 0,
        100..200 => 1,
        200..650 => 4096,
        650..950 => 65_536,
        950..995 => 1 << 20,
        _ => 4 << 20,
    }
}

/// `PUT base/v1/blocks` of `body`: the answer's JSON.
async fn put(http: &reqwest::Client, base: &str, body: &[u8]) -> serde_json::Value {
    let resp = http.put(format!("{base}/v1/blocks")).body(body.to_vec()).send().await.expect("put");
    resp.json().await.expect("json")
}

async fn get(http: &reqwest::Client, base: &str, hash: &str) -> (u16, Vec<u8>) {
    let resp = http.get(format!("{base}/v1/blocks/{hash}")).send().await.expect("get");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("body").to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_blocks_read_back_byte_exact_across_seal_and_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = start(dir.path(), true).await;
    let base = cell.endpoints.http.clone();
    let http = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2000);
    let blocks: Vec<Vec<u8>> = (0..2000)
        .map(|i| {
            let mut b = vec![0u8; size(&mut rng)];
            rng.fill(&mut b[..]);
            if b.len() >= 8 {
                b[..8].copy_from_slice(&(i as u64).to_le_bytes()); // distinct blocks
            }
            b
        })
        .collect();
    // Put with 16 at a time.
    let mut hashes = Vec::new();
    for chunk in blocks.chunks(16) {
        let puts = chunk.iter().map(|b| {
            let (http, url) = (http.clone(), format!("{base}/v1/blocks"));
            let body = b.clone();
            async move {
                let resp = http.put(url).body(body).send().await.expect("put");
                assert_eq!(resp.status().as_u16(), 201);
                let v: serde_json::Value = resp.json().await.expect("json");
                v["hash"].as_str().expect("hash").to_string()
            }
        });
        hashes.extend(futures::future::join_all(puts).await);
    }
    for (b, h) in blocks.iter().zip(&hashes) {
        assert_eq!(*h, hex::encode(Sha256::digest(b)));
    }
    // Several volumes filled up, were sealed and get coded; wait for every task.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = status(&cell).await;
        if count(&s, "coded") >= 5 && count(&s, "sealed") == 0 && s.tasks_open == 0 {
            assert_eq!(s.tasks_failed, 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "volumes not coded in time: {:?}, {} tasks open ({} repairs), {} failed",
            s.volumes,
            s.tasks_open,
            s.repair_tasks_open,
            s.tasks_failed
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every block reads back byte-exact; those in coded volumes come from fragments (their
    // replicas are gone).
    let mut coded_blocks = 0;
    for (b, h) in blocks.iter().zip(&hashes) {
        let (status, body) = get(&http, &base, h).await;
        assert_eq!(status, 200, "get {h}");
        assert!(body == *b, "block {h} differs");
    }
    for (b, h) in blocks.iter().zip(&hashes).step_by(50) {
        let stat: serde_json::Value =
            http.get(format!("{base}/v1/stat/{h}")).send().await.expect("stat").json().await.expect("json");
        // The put committed the read digest gets check.
        let sha256: [u8; 32] = Sha256::digest(b).into();
        assert_eq!(stat["digest"].as_str(), Some(hex::encode(read_digest(&sha256, b)).as_str()));
        if stat["state"] == "coded" {
            assert!(stat["replicas"].as_array().is_some_and(|r| r.is_empty()));
            assert_eq!(stat["fragments"].as_array().map(Vec::len), Some(9));
            coded_blocks += 1;
        }
    }
    assert!(coded_blocks > 0, "some sampled blocks live in coded volumes");
    // Ranges.
    let big = blocks.iter().zip(&hashes).find(|(b, _)| b.len() == 1 << 20).expect("a 1 MiB block");
    let resp = http
        .get(format!("{base}/v1/blocks/{}", big.1))
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .expect("range");
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(resp.bytes().await.expect("body").to_vec(), big.0[1000..2000].to_vec());
    let metrics =
        http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("cellar_frontend_requests_total{method=\"PUT\",outcome=\"ok\"}"), "{metrics}");
    cell.shutdown(dir.path()).await;
}

/// A frontend that has not seen a block asks the masters whether it is stored before
/// storing it only when it is at least `PUT_LOOKUP_MIN_BYTES`; a smaller block is stored,
/// and its index commit finds the entry there and adds the reference to it instead.
/// Either way the put answers `deduplicated`, the index keeps one entry, and every
/// reference counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_frontend_deduplicates_small_blocks_at_commit_and_large_ones_by_lookup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = start(dir.path(), true).await;
    let http = reqwest::Client::new();
    let first = cell.endpoints.http.clone();
    let min = cellar_frontend::PUT_LOOKUP_MIN_BYTES as usize;
    let small = vec![3u8; 4096];
    let large = vec![4u8; min];
    for block in [&small, &large] {
        assert_eq!(put(&http, &first, block).await["deduplicated"], false);
    }
    let entries = status(&cell).await.index_entries;

    let mut config = cellar_frontend::FrontendConfig::new("127.0.0.1:0", cell.endpoints.masters.clone());
    config.holder = format!("second-frontend-{}", std::process::id());
    let second = cellar_frontend::start(config).await.expect("start a second frontend");
    let other = format!("http://{}", second.addr);
    let lookups = || second.blocks.metrics.lookup_latency.count();
    for (block, asks) in [(&large, 1), (&small, 0)] {
        let asked = lookups();
        let v = put(&http, &other, block).await;
        assert_eq!(v["deduplicated"], true, "a block of {} bytes", block.len());
        assert_eq!(lookups() - asked, asks, "masters asked about the block of {} bytes", block.len());
        assert_eq!(status(&cell).await.index_entries, entries, "one entry per block");
        let hash = hex::encode(Sha256::digest(block));
        assert_eq!(get(&http, &other, &hash).await, (200, block.clone()));
    }

    // Each block has two references: two deletes remove it, through either frontend (each
    // get through the frontend that deleted: the other may still hold the entry in its
    // cache).
    for block in [&small, &large] {
        let hash = hex::encode(Sha256::digest(block));
        for (base, left) in [(&first, 200), (&other, 404)] {
            let del = http.delete(format!("{base}/v1/blocks/{hash}")).send().await.expect("delete");
            assert_eq!(del.status().as_u16(), 204);
            assert_eq!(get(&http, base, &hash).await.0, left);
        }
    }
    assert_eq!(status(&cell).await.index_entries, entries - 2);
    second.shutdown().await;
    cell.shutdown(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dedup_and_bad_input_leave_the_cell_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = start(dir.path(), false).await;
    let base = cell.endpoints.http.clone();
    let http = reqwest::Client::new();
    let block = vec![7u8; 100_000];
    let hash = hex::encode(Sha256::digest(&block));
    let first = put(&http, &base, &block).await;
    assert_eq!(first["deduplicated"], false);
    assert_eq!(first["size"], 100_000);
    let used = used_bytes(&cell);
    let entries = status(&cell).await.index_entries;

    // The same bytes again (with and without the key): stored once.
    for url in [format!("{base}/v1/blocks"), format!("{base}/v1/blocks/{hash}")] {
        let resp = http.put(url).body(block.clone()).send().await.expect("put");
        assert_eq!(resp.status().as_u16(), 201);
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!((v["hash"].as_str(), v["deduplicated"].as_bool()), (Some(hash.as_str()), Some(true)));
    }
    assert_eq!(used_bytes(&cell), used, "a deduplicated put writes nothing");
    assert_eq!(status(&cell).await.index_entries, entries);

    // Bad input: each is refused with its status and changes nothing.
    let other = vec![9u8; 5000];
    let wrong = http.put(format!("{base}/v1/blocks/{hash}")).body(other.clone()).send().await.expect("put");
    assert_eq!(wrong.status().as_u16(), 400);
    let err: serde_json::Value = wrong.json().await.expect("json");
    assert_eq!(err["error"], "HASH_MISMATCH");
    let oversize =
        http.put(format!("{base}/v1/blocks")).body(vec![0u8; (4 << 20) + 1]).send().await.expect("put");
    assert_eq!(oversize.status().as_u16(), 413);
    let unknown = hex::encode(Sha256::digest(b"never stored"));
    assert_eq!(get(&http, &base, &unknown).await.0, 404);
    assert_eq!(get(&http, &base, &hex::encode(Sha256::digest(&other))).await.0, 404);
    assert_eq!(get(&http, &base, "not-a-hash").await.0, 400);
    assert_eq!(get(&http, &base, &hash.to_uppercase()).await.0, 400);
    let head = http.head(format!("{base}/v1/blocks/{unknown}")).send().await.expect("head");
    assert_eq!(head.status().as_u16(), 404);
    assert_eq!(used_bytes(&cell), used, "refused requests wrote nothing");
    assert_eq!(status(&cell).await.index_entries, entries);

    // HEAD and DELETE: three references, dropped one by one.
    let head = http.head(format!("{base}/v1/blocks/{hash}")).send().await.expect("head");
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(head.headers().get("content-length").and_then(|v| v.to_str().ok()), Some("100000"));
    for _ in 0..2 {
        let del = http.delete(format!("{base}/v1/blocks/{hash}")).send().await.expect("delete");
        assert_eq!(del.status().as_u16(), 204);
        assert_eq!(get(&http, &base, &hash).await.0, 200, "references remain");
    }
    let del = http.delete(format!("{base}/v1/blocks/{hash}")).send().await.expect("delete");
    assert_eq!(del.status().as_u16(), 204);
    assert_eq!(get(&http, &base, &hash).await.0, 404, "the last reference is gone");
    let del = http.delete(format!("{base}/v1/blocks/{hash}")).send().await.expect("delete");
    assert_eq!(del.status().as_u16(), 404);

    // The same operations over gRPC.
    use cellar_proto::frontend as fpb;
    let grpc = cell.endpoints.grpc.clone().expect("grpc endpoint");
    let mut client = fpb::blocks_client::BlocksClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect")
        .max_decoding_message_size(8 << 20);
    let put = client
        .put(fpb::PutRequest { data: b"over grpc".to_vec().into(), expected_sha256: Vec::new() })
        .await
        .expect("put")
        .into_inner();
    assert_eq!(put.hash, hex::encode(Sha256::digest(b"over grpc")));
    let got = client.get(fpb::BlockRef { hash: put.hash.clone() }).await.expect("get").into_inner();
    assert_eq!(got.data, &b"over grpc"[..]);
    let stat = client.stat(fpb::BlockRef { hash: put.hash.clone() }).await.expect("stat").into_inner();
    assert_eq!((stat.size, stat.references), (9, 1));
    let wrong = client
        .put(fpb::PutRequest {
            data: b"other".to_vec().into(),
            expected_sha256: Sha256::digest(b"x").to_vec(),
        })
        .await
        .expect_err("mismatch");
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
    let missing = client.get(fpb::BlockRef { hash: unknown.clone() }).await.expect_err("unknown");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    client.delete(fpb::BlockRef { hash: put.hash.clone() }).await.expect("delete");
    cell.shutdown(dir.path()).await;
}

/// A large block whose first replica holds other bytes under its key (valid CRCs: a forged
/// or misdirected write), read through the frontend over gRPC: the first HTTP get streams
/// it and is cut short of its Content-Length (the client sees an error, never the wrong
/// block whole); the next get reads it whole, around that replica, and returns the block.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_get_of_other_bytes_is_cut_short_once_and_then_read_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = start(dir.path(), true).await;
    let m = master(&cell);
    let allocate = mpb::AllocateVolumeRequest {
        holder: "forger".into(),
        copies: 0,
        avoid_nodes: vec![],
        request_id: None,
    };
    let v =
        m.call_once(allocate, |mut c, r| async move { c.allocate_volume(r).await }).await.expect("allocate");
    let real: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
    let fake = vec![0x5au8; real.len()];
    let sha: [u8; 32] = Sha256::digest(&real).into();
    let cluster = cellar_volume_api::cluster::Cluster::new(master(&cell), None);
    let first_disk = v.replicas[0].disk_id;
    let mut record_bytes = 0u64;
    for r in &v.replicas {
        let payload = if r.disk_id == first_disk { fake.clone() } else { real.clone() };
        let mut c = cluster.node_client(r.node_id).await.expect("volume client");
        let appended = c
            .append(cellar_proto::volume::AppendRequest {
                volume_id: v.volume_id,
                disk_id: r.disk_id,
                lease_epoch: v.lease_epoch,
                generation: v.generation,
                offset_bytes: 0,
                records: vec![cellar_proto::volume::BlockRecord {
                    sha256: sha.to_vec(),
                    payload: payload.into(),
                    payload_crc32: None,
                }],
            })
            .await
            .expect("append")
            .into_inner();
        record_bytes = appended.appended_bytes;
    }
    assert!(record_bytes > real.len() as u64);
    let entry = mpb::IndexCommit {
        hash: sha.to_vec(),
        volume_id: v.volume_id,
        lease_epoch: v.lease_epoch,
        offset_bytes: 0,
        payload_bytes: real.len() as u32,
        crc32: crc32fast::hash(&real),
        digest: read_digest(&sha, &real).to_vec(),
        unreferenced: false,
        relocate_from_volume: 0,
    };
    let commit = mpb::CommitIndexRequest { entries: vec![entry], request_id: None, versions: vec![] };
    let committed =
        m.call_once(commit, |mut c, r| async move { c.commit_index(r).await }).await.expect("commit");
    assert_eq!(committed.results[0].outcome(), mpb::CommitOutcome::Committed);

    let http = reqwest::Client::new();
    let url = format!("{}/v1/blocks/{}", cell.endpoints.http, hex::encode(sha));
    let resp = http.get(&url).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.content_length(), Some(real.len() as u64));
    let body = resp.bytes().await;
    assert!(body.is_err(), "a body of other bytes arrived whole ({:?} bytes)", body.map(|b| b.len()));
    let (status, again) = get(&http, &cell.endpoints.http, &hex::encode(sha)).await;
    assert_eq!(status, 200);
    assert!(again == real, "the second get returned other bytes");
    let metrics = http
        .get(format!("{}/metrics", cell.endpoints.http))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.lines().any(|l| l.starts_with("cellar_frontend_streamed_gets_total{outcome=\"cut\"} 1")),
        "the cut get was not counted"
    );
    cell.shutdown(dir.path()).await;
}
