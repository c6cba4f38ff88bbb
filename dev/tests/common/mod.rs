//! Shared by the tests that run on a dev cell.

use cellar_dev::{DevCell, DevOptions};

/// Dev cells started at once in this binary: one. A dev cell picks its ports (bind to port
/// 0, remember, close) before its servers bind them, so cells starting side by side can
/// pick the same port.
static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A dev cell with 8 MiB volumes under `dir`; its parts talk over gRPC (as on separate
/// machines) or in-process (the `cellar dev` default).
pub async fn start_cell(dir: &std::path::Path, over_grpc: bool) -> DevCell {
    let _one_at_a_time = STARTING.lock().await;
    // A port can still be taken between the pick and the bind by any socket of another
    // running cell (outgoing connections use ephemeral ports too): then start afresh in a
    // new directory, a bounded number of times. Any other failure fails the test.
    let mut last = None;
    for attempt in 0..3 {
        let options = DevOptions {
            data_dir: dir.join(format!("cell-{attempt}")),
            http: "127.0.0.1:0".into(),
            grpc: "127.0.0.1:0".into(),
            s3: "127.0.0.1:0".into(),
            volume_size_bytes: 8 << 20,
            lease_ms: 3_000,
            over_grpc,
        };
        match DevCell::start(options).await {
            Ok(cell) => return cell,
            Err(e) if e.to_string().contains("Address already in use") => last = Some(e),
            Err(e) => panic!("start the dev cell: {e:?}"),
        }
    }
    panic!("start the dev cell: ports taken three times: {last:?}")
}
