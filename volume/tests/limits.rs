//! In-flight byte limits hold under 64 concurrent writers and readers.

mod common;

use std::sync::Arc;

use common::Cell;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_writers_and_readers_stay_within_the_byte_budget() {
    const BUDGET_BYTES: u64 = 8 << 20;
    let cell = Arc::new(Cell::start(3, 1, 1, |c| c.inflight_max_bytes = BUDGET_BYTES).await);
    let payload = vec![0x5au8; 1 << 20];
    let mut jobs = Vec::new();
    for i in 0..64u64 {
        let (cell, mut payload) = (cell.clone(), payload.clone());
        payload[0] = i as u8;
        jobs.push(tokio::spawn(async move {
            // Each writer has its own volume (a volume has one writer) and reads back.
            let v = cell.allocate(&format!("writer-{i}")).await;
            let mut offset = 0;
            let mut written = Vec::new();
            for n in 0..3u8 {
                payload[1] = n;
                let w = cell.append_all(&v, offset, &payload).await.expect("append");
                offset += u64::from(w.length_bytes);
                written.push(w);
            }
            let reader = cell.reader();
            for w in &written {
                let got = reader.read(&v, &w.key(), w.offset_bytes, w.length_bytes).await.expect("read");
                assert_eq!(got.payload, w.payload);
            }
        }));
    }
    for j in jobs {
        j.await.expect("job");
    }
    for h in &cell.volumes {
        let (peak, max) = (h.shared.budget.peak_bytes(), h.shared.budget.max_bytes());
        assert!(peak <= max, "node {} held {peak} bytes, over its {max}", h.node_id);
        assert!(peak >= 4 << 20, "node {} never had several requests in flight ({peak} bytes)", h.node_id);
        assert_eq!(h.shared.budget.in_use_bytes(), 0);
    }
    match Arc::try_unwrap(cell) {
        Ok(cell) => cell.shutdown().await,
        Err(_) => panic!("cell still shared"),
    }
}
