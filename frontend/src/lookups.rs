//! Index lookups at the master, batched: concurrent lookups share one `Lookup` call.
//!
//! Every put asks the master whether its block is indexed already (dedup), and every get
//! whose entry is not cached asks where the block is. One call per block cost the master a
//! gRPC request and a linearizable read each: with 256 clients putting 4 KiB blocks, ~3 ms
//! per lookup and a third of the masters' CPU. Lookups wait in one bounded queue; one task
//! sends what is queued as one call (up to [`LOOKUP_BATCH_MAX`] hashes), with at most
//! [`LOOKUPS_IN_FLIGHT_MAX`] calls at once, so under light load a lookup is sent alone at
//! once and under load batches grow while calls are in flight.

use std::collections::HashMap;
use std::sync::Arc;

use cellar_proto::master as mpb;
use cellar_volume_api::cluster::Cluster;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};

/// Hashes in one Lookup call at most (the master takes up to 10,000).
pub const LOOKUP_BATCH_MAX: usize = 1024;
/// Lookup calls in flight at once.
pub const LOOKUPS_IN_FLIGHT_MAX: usize = 4;
/// Lookups queued at most; further callers wait for room.
pub const LOOKUP_QUEUE_MAX: usize = 4096;

/// What a lookup found: the entry, none, or why the master could not be asked.
pub type LookupResult = Result<Option<mpb::IndexEntry>, String>;

struct Waiting {
    hash: [u8; 32],
    reply: oneshot::Sender<LookupResult>,
}

/// The lookup queue; its task runs until the last handle is dropped.
#[derive(Clone)]
pub struct Lookups {
    queue: mpsc::Sender<Waiting>,
}

impl Lookups {
    /// Starts the batching task (on the current runtime) over `master`.
    pub fn start(master: Arc<dyn LookupCall>) -> Lookups {
        let (queue, rx) = mpsc::channel(LOOKUP_QUEUE_MAX);
        tokio::spawn(run(rx, master));
        Lookups { queue }
    }

    /// The index entry of `hash`, if it is indexed (read linearizably by the master).
    pub async fn lookup(&self, hash: [u8; 32]) -> LookupResult {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Waiting { hash, reply })
            .await
            .map_err(|_| "the lookup queue has stopped".to_string())?;
        answer.await.map_err(|_| "the lookup batcher dropped the lookup".to_string())?
    }
}

/// One Lookup call with several hashes: the entries found, or why the call failed.
#[tonic::async_trait]
pub trait LookupCall: Send + Sync + 'static {
    /// Looks `hashes` up (each once) and returns the entries found.
    async fn lookup(&self, hashes: Vec<Vec<u8>>) -> Result<Vec<mpb::IndexEntry>, String>;
}

#[tonic::async_trait]
impl LookupCall for Cluster {
    async fn lookup(&self, hashes: Vec<Vec<u8>>) -> Result<Vec<mpb::IndexEntry>, String> {
        let resp = self
            .master()
            .call(|mut c| {
                let hashes = hashes.clone();
                async move { c.lookup(mpb::LookupRequest { hashes, request_id: None }).await }
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(resp.entries)
    }
}

async fn run(mut rx: mpsc::Receiver<Waiting>, master: Arc<dyn LookupCall>) {
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = rx.recv(), if open && in_flight.len() < LOOKUPS_IN_FLIGHT_MAX => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let mut batch = vec![first];
                while batch.len() < LOOKUP_BATCH_MAX {
                    match rx.try_recv() {
                        Ok(w) => batch.push(w),
                        Err(_) => break,
                    }
                }
                in_flight.push(answer(master.clone(), batch));
            }
        }
    }
}

/// Sends one call for `batch` and answers each waiting lookup.
async fn answer(master: Arc<dyn LookupCall>, batch: Vec<Waiting>) {
    let mut hashes: Vec<Vec<u8>> = batch.iter().map(|w| w.hash.to_vec()).collect();
    hashes.sort_unstable();
    hashes.dedup();
    match master.lookup(hashes).await {
        Ok(entries) => {
            let found: HashMap<Vec<u8>, mpb::IndexEntry> =
                entries.into_iter().map(|e| (e.hash.clone(), e)).collect();
            for w in batch {
                // A caller that gave up (its request ended) has dropped its receiver.
                let _ = w.reply.send(Ok(found.get(&w.hash[..]).cloned()));
            }
        }
        Err(why) => {
            for w in batch {
                let _ = w.reply.send(Err(why.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A master that knows the hashes whose first byte is even, counts its calls and
    /// holds each call until released.
    struct FakeMaster {
        calls: Mutex<Vec<usize>>,
        gate: tokio::sync::Semaphore,
        fail: bool,
    }

    impl FakeMaster {
        /// A master letting `calls_allowed` calls answer at first (then more by
        /// `gate.add_permits`), failing every call if `fail`.
        fn new(calls_allowed: usize, fail: bool) -> Arc<FakeMaster> {
            Arc::new(FakeMaster {
                calls: Mutex::new(Vec::new()),
                gate: tokio::sync::Semaphore::new(calls_allowed),
                fail,
            })
        }
    }

    #[tonic::async_trait]
    impl LookupCall for FakeMaster {
        async fn lookup(&self, hashes: Vec<Vec<u8>>) -> Result<Vec<mpb::IndexEntry>, String> {
            self.calls.lock().expect("calls").push(hashes.len());
            self.gate.acquire().await.map_err(|e| e.to_string())?.forget();
            if self.fail {
                return Err("master unreachable".into());
            }
            Ok(hashes
                .into_iter()
                .filter(|h| h[0] % 2 == 0)
                .map(|h| mpb::IndexEntry { hash: h, volume_id: 9, ..Default::default() })
                .collect())
        }
    }

    fn hash(i: u16) -> [u8; 32] {
        let mut h = [0u8; 32];
        h[0] = (i % 256) as u8;
        h[1] = (i / 256) as u8;
        h
    }

    #[tokio::test]
    async fn concurrent_lookups_share_calls_and_each_gets_its_own_answer() {
        let master = FakeMaster::new(0, false);
        let lookups = Lookups::start(master.clone());
        // 2,000 lookups (200 hashes asked 10 times each) while no call may answer.
        let waiting: Vec<_> = (0..2000u16)
            .map(|i| {
                let l = lookups.clone();
                tokio::spawn(async move { (i % 200, l.lookup(hash(i % 200)).await) })
            })
            .collect();
        // Let them queue, then let the calls through.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        master.gate.add_permits(1000);
        for w in waiting {
            let (i, got) = w.await.expect("join");
            let got = got.expect("answered");
            assert_eq!(got.is_some(), i % 2 == 0, "lookup of {i}");
            if let Some(e) = got {
                assert_eq!(e.hash, hash(i).to_vec());
            }
        }
        let calls = master.calls.lock().expect("calls").clone();
        // 4 calls held with one lookup each, then the queued 1,996 in batches.
        assert!(calls.len() <= 16, "{} calls for 2,000 lookups: {calls:?}", calls.len());
        // Each call carries a hash once, however many lookups asked for it.
        assert!(calls.iter().all(|n| *n <= 200), "batch sizes {calls:?}");
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_lookup_it_carried() {
        let master = FakeMaster::new(100, true);
        let lookups = Lookups::start(master);
        for i in 0..10 {
            assert_eq!(lookups.lookup(hash(i)).await, Err("master unreachable".to_string()));
        }
    }
}
