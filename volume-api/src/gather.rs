//! Small record reads to one volume server gathered into ReadRecords calls: while a call
//! to the server is in flight, the next small reads (records of at most
//! [`crate::GATHERED_RECORD_MAX_BYTES`]) wait for it and then go together.
//!
//! Each call costs both ends the same work whatever it carries (a stream, its headers, a
//! task at the server, the socket writes and the wake-ups that deliver them): on a host
//! whose CPUs are saturated by small gets, that per-call work is most of a read. So, while
//! gathering is on ([`GatherWhen`], a frontend's: while its host is saturated), a small
//! read that finds nothing in flight to its server goes at once, alone (ReadRecord); one
//! that finds a call in flight waits, and when that call answers the waiting reads go in
//! one ReadRecords call (at most [`crate::READ_RECORDS_MAX`] records,
//! [`crate::READ_RECORDS_MAX_BYTES`] in all), whose answer gives each read its own record
//! or error. The turn then passes to the next gathered call, until none is waiting.
//!
//! A read waits at most [`WAIT_MAX_US`] for the call in flight: then it goes, with the
//! reads queued before and beside it, in a call beside the one in flight (a call held up by
//! a slow device does not hold every read behind it as long).
//!
//! Every wait is bounded: a waiting read is bounded by its caller's read deadline, a
//! gathered call by the latest deadline of the reads it carries (the others' callers have
//! stopped waiting by then). A read whose caller stopped waiting is not sent. A caller
//! dropped in the middle of its call passes the turn on all the same. A server that does
//! not know ReadRecords (Unimplemented) is read alone from then on. At most
//! [`WAITING_MAX`] reads wait per server; more go alone.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cellar_proto::volume as pb;
use futures::future::BoxFuture;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::{GATHERED_RECORD_MAX_BYTES, READ_RECORDS_MAX, READ_RECORDS_MAX_BYTES};

/// Calls to one server in flight at once (each alone or gathered) before a small read
/// waits for one to end. Measured on a cell of processes (2 cores), 4 KiB gets: 2 did no
/// better than 1 at 8 or 32 clients and worse at 256 (docs/performance.md, twentieth stop).
pub const TURNS: usize = 1;
/// Longest a small read waits for the call in flight to its server before it goes beside
/// it (with the reads queued meanwhile), in microseconds: a call whose records wait for a
/// slow device would otherwise hold every read behind it for as long. Measured on a cell of
/// processes (2 cores), 4 KiB gets at 32 clients with every read gathered: with 2 ms device
/// reads, no bound 5,600 /s, 1 ms 7,000-7,800, 0.5 ms 8,100-8,400 (not gathered: 9,500-10,700);
/// with page-cache reads 1 ms kept the gain (24,200-30,600 /s against 21,600-30,200 with no
/// bound) where 0.5 ms lost some of it at 256 clients (docs/performance.md, twentieth stop).
pub const WAIT_MAX_US: u64 = 1_000;
/// Reads waiting per server at most; a read beyond goes alone.
pub const WAITING_MAX: usize = 1024;

/// Whether small reads are gathered now (asked at every read).
pub type GatherWhen = Arc<dyn Fn() -> bool + Send + Sync>;

/// A read's answer.
pub type Answer = Result<pb::ReadRecordResponse, Status>;

/// The calls a gathered read needs from its server.
pub trait GatherSender: Send + Sync + 'static {
    /// One ReadRecords call: one answer per request, in order.
    fn read_records(
        &self,
        reqs: Vec<pb::ReadRecordRequest>,
        deadline: Duration,
    ) -> BoxFuture<'_, Result<Vec<Answer>, Status>>;
    /// One ReadRecord call.
    fn read_record(&self, req: pb::ReadRecordRequest, deadline: Duration) -> BoxFuture<'_, Answer>;
}

/// Gathered calls and the reads they carried, over every server of one process.
#[derive(Debug, Default)]
pub struct GatherCounts {
    calls: AtomicU64,
    reads: AtomicU64,
}

impl GatherCounts {
    /// ReadRecords calls made, ever.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Reads those calls carried, ever.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

struct Waiting {
    id: u64,
    req: pb::ReadRecordRequest,
    until: Instant,
    answer: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct State {
    /// Calls (alone or gathered) holding a turn.
    in_flight: usize,
    waiting: VecDeque<Waiting>,
    next_id: u64,
}

/// The small reads of one server: the turn and the reads waiting for it.
pub struct ReadGather {
    state: Mutex<State>,
    /// Longest a read waits for the call in flight before it goes beside it.
    wait_max: Duration,
    when: Option<GatherWhen>,
    /// The server answered a ReadRecords call with Unimplemented.
    unsupported: AtomicBool,
    counts: Arc<GatherCounts>,
}

/// What a read does now.
pub enum Turn {
    /// Not gathered (gathering is off, the record is not small, too many wait): a call of
    /// its own, outside the turn.
    Apart(pb::ReadRecordRequest),
    /// A call of its own, holding the turn until the guard is dropped.
    Alone(pb::ReadRecordRequest, InFlight),
    /// Its answer comes from a gathered call ([`ReadGather::wait`]).
    Queued(Ticket),
}

/// A queued read's place: its id in the queue and its answer to come.
pub struct Ticket {
    id: u64,
    answer: oneshot::Receiver<Answer>,
}

impl ReadGather {
    /// The reads of one server, gathered while `when` says so (never when `None`).
    pub fn new(when: Option<GatherWhen>, wait_max: Duration, counts: Arc<GatherCounts>) -> ReadGather {
        ReadGather {
            state: Mutex::new(State::default()),
            wait_max,
            when,
            unsupported: AtomicBool::new(false),
            counts,
        }
    }

    /// Reads waiting for the turn now.
    pub fn waiting(&self) -> usize {
        self.state().waiting.len()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The turn of a read of `req` bounded by `deadline`; `sender` gives the calls of the
    /// gathered reads that come after it, if it takes the turn.
    pub fn turn(
        self: &Arc<Self>,
        req: pb::ReadRecordRequest,
        deadline: Duration,
        sender: impl FnOnce() -> Arc<dyn GatherSender>,
    ) -> Turn {
        let small = req.length_bytes != 0 && req.length_bytes <= GATHERED_RECORD_MAX_BYTES;
        let on = small
            && !self.unsupported.load(Ordering::Relaxed)
            && self.when.as_ref().is_some_and(|when| when());
        if !on {
            return Turn::Apart(req);
        }
        let mut state = self.state();
        if state.in_flight < TURNS {
            state.in_flight += 1;
            drop(state);
            return Turn::Alone(req, InFlight { gather: self.clone(), sender: sender() });
        }
        if state.waiting.len() >= WAITING_MAX {
            return Turn::Apart(req);
        }
        let (answer, rx) = oneshot::channel();
        let id = state.next_id;
        state.next_id += 1;
        state.waiting.push_back(Waiting { id, req, until: Instant::now() + deadline, answer });
        Turn::Queued(Ticket { id, answer: rx })
    }

    /// The reads to send next (their callers still waiting, within the call's limits);
    /// none: the turn ends.
    fn next_call(&self) -> Vec<Waiting> {
        let mut state = self.state();
        let call = take_call(&mut state);
        if call.is_empty() {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        call
    }

    /// The answer of a queued read. One still queued after [`ReadGather::wait_max`] goes
    /// at once, with the reads queued before and beside it, as a call of its own beside the
    /// one in flight (`sender` gives that call): a read never waits longer than that for the
    /// device reads of another call.
    pub async fn wait(
        self: &Arc<Self>,
        ticket: Ticket,
        sender: impl FnOnce() -> Arc<dyn GatherSender>,
    ) -> Answer {
        let Ticket { id, mut answer } = ticket;
        if let Ok(got) = tokio::time::timeout(self.wait_max, &mut answer).await {
            return got.unwrap_or_else(|_| Err(dropped()));
        }
        let call = {
            let mut state = self.state();
            let call =
                if state.waiting.iter().any(|w| w.id == id) { take_call(&mut state) } else { Vec::new() };
            if !call.is_empty() {
                state.in_flight += 1;
            }
            call
        };
        if !call.is_empty() {
            let guard = InFlight { gather: self.clone(), sender: sender() };
            tokio::spawn(guard.send(call));
        }
        answer.await.unwrap_or_else(|_| Err(dropped()))
    }

    /// Passes the turn on: to a gathered call of the reads waiting, or to nobody.
    fn pass_on(self: Arc<Self>, sender: Arc<dyn GatherSender>) {
        let call = self.next_call();
        if call.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let guard = InFlight { gather: self, sender };
                runtime.spawn(guard.send(call));
            }
            Err(_) => {
                // No runtime to send them from (the process is stopping): they fail, and
                // so does whatever waits after them.
                for w in call {
                    let _ = w.answer.send(Err(Status::unavailable("the reads' runtime is gone")));
                }
                let rest: Vec<Waiting> = {
                    let mut state = self.state();
                    state.in_flight = state.in_flight.saturating_sub(1);
                    state.waiting.drain(..).collect()
                };
                for w in rest {
                    let _ = w.answer.send(Err(Status::unavailable("the reads' runtime is gone")));
                }
            }
        }
    }
}

/// The answer of a queued read whose gathered call went away without one (its task
/// ended): retryable, with the stable code the client branches on.
fn dropped() -> Status {
    crate::errors::status(
        Code::Unavailable,
        cellar_proto::error_code::INTERNAL,
        "a gathered read was dropped",
    )
}

/// The reads queued first whose callers still wait, within one call's limits (taken out of
/// the queue).
fn take_call(state: &mut State) -> Vec<Waiting> {
    let mut call = Vec::new();
    let mut bytes = 0u64;
    while call.len() < READ_RECORDS_MAX {
        let Some(next) = state.waiting.front() else { break };
        let len = u64::from(next.req.length_bytes);
        if !call.is_empty() && bytes + len > READ_RECORDS_MAX_BYTES {
            break;
        }
        let Some(w) = state.waiting.pop_front() else { break };
        if w.answer.is_closed() {
            continue;
        }
        bytes += len;
        call.push(w);
    }
    call
}

/// The turn, held by the call in flight; dropping it passes the turn on.
pub struct InFlight {
    gather: Arc<ReadGather>,
    sender: Arc<dyn GatherSender>,
}

impl InFlight {
    /// Sends `call` as one ReadRecords call and answers each read; then the turn passes on.
    async fn send(self, call: Vec<Waiting>) {
        let until = call.iter().map(|w| w.until).max().unwrap_or_else(Instant::now);
        let deadline = until.saturating_duration_since(Instant::now());
        if deadline.is_zero() {
            for w in call {
                let _ = w.answer.send(Err(Status::deadline_exceeded("the read waited out its deadline")));
            }
            return;
        }
        self.gather.counts.calls.fetch_add(1, Ordering::Relaxed);
        self.gather.counts.reads.fetch_add(call.len() as u64, Ordering::Relaxed);
        let (reqs, answers): (Vec<_>, Vec<_>) =
            call.into_iter().map(|w| (w.req, (w.answer, w.until))).unzip();
        let sent = tokio::time::timeout(deadline, self.sender.read_records(reqs.clone(), deadline)).await;
        match sent {
            Ok(Ok(results)) if results.len() == answers.len() => {
                for ((answer, _), result) in answers.into_iter().zip(results) {
                    let _ = answer.send(result);
                }
            }
            Ok(Ok(results)) => {
                let why = format!("{} answers to {} gathered reads", results.len(), answers.len());
                for (answer, _) in answers {
                    let _ = answer.send(Err(Status::internal(why.clone())));
                }
            }
            Ok(Err(e)) if e.code() == Code::Unimplemented => {
                // A server older than ReadRecords: these go alone, and so does every read
                // of it from now on.
                self.gather.unsupported.store(true, Ordering::Relaxed);
                let sender = &self.sender;
                let alone = reqs.into_iter().zip(answers).map(|(req, (answer, until))| async move {
                    let deadline = until.saturating_duration_since(Instant::now());
                    let result = tokio::time::timeout(deadline, sender.read_record(req, deadline))
                        .await
                        .unwrap_or_else(|_| Err(Status::deadline_exceeded("read record")));
                    let _ = answer.send(result);
                });
                futures::future::join_all(alone).await;
            }
            Ok(Err(e)) => {
                for (answer, _) in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
            Err(_) => {
                for (answer, _) in answers {
                    let _ = answer.send(Err(Status::deadline_exceeded(format!(
                        "gathered read records: no answer within {deadline:?}"
                    ))));
                }
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gather.clone().pass_on(self.sender.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Notify;

    /// A server whose calls are counted and held until released; record `offset` answers
    /// with payload `offset`, or Internal for offset 13.
    #[derive(Default)]
    struct Server {
        gate: Notify,
        held: AtomicBool,
        singles: AtomicUsize,
        gathered: Mutex<Vec<usize>>,
        unimplemented: bool,
    }

    fn answer(req: &pb::ReadRecordRequest) -> Answer {
        if req.offset_bytes == 13 {
            return Err(Status::internal("thirteen"));
        }
        Ok(pb::ReadRecordResponse {
            sha256: vec![1; 32],
            payload: Bytes::from(req.offset_bytes.to_le_bytes().to_vec()),
        })
    }

    impl GatherSender for Server {
        fn read_records(
            &self,
            reqs: Vec<pb::ReadRecordRequest>,
            _deadline: Duration,
        ) -> BoxFuture<'_, Result<Vec<Answer>, Status>> {
            Box::pin(async move {
                if self.unimplemented {
                    return Err(Status::unimplemented("no ReadRecords"));
                }
                self.gathered.lock().expect("lock").push(reqs.len());
                Ok(reqs.iter().map(answer).collect())
            })
        }

        fn read_record(&self, req: pb::ReadRecordRequest, _deadline: Duration) -> BoxFuture<'_, Answer> {
            Box::pin(async move {
                self.singles.fetch_add(1, Ordering::Relaxed);
                if self.held.load(Ordering::Relaxed) {
                    self.gate.notified().await;
                }
                answer(&req)
            })
        }
    }

    fn req(offset: u64) -> pb::ReadRecordRequest {
        pb::ReadRecordRequest { volume_id: 1, disk_id: 1, offset_bytes: offset, length_bytes: 4096 + 48 }
    }

    /// What NodeClients::read_record does with a turn.
    async fn read(gather: &Arc<ReadGather>, server: &Arc<Server>, offset: u64) -> Answer {
        let sender = server.clone();
        match gather.turn(req(offset), Duration::from_secs(5), || sender as Arc<dyn GatherSender>) {
            Turn::Apart(r) => server.read_record(r, Duration::from_secs(5)).await,
            Turn::Alone(r, _turn) => server.read_record(r, Duration::from_secs(5)).await,
            Turn::Queued(ticket) => gather.wait(ticket, || server.clone() as Arc<dyn GatherSender>).await,
        }
    }

    fn spawn_read(g: &Arc<ReadGather>, server: &Arc<Server>, offset: u64) -> tokio::task::JoinHandle<Answer> {
        let (g, s) = (g.clone(), server.clone());
        tokio::spawn(async move { read(&g, &s, offset).await })
    }

    /// A read of `offset` in flight (held by the server) and one of `offset + 1` waiting.
    async fn one_in_flight_one_waiting(
        g: &Arc<ReadGather>,
        server: &Arc<Server>,
    ) -> (tokio::task::JoinHandle<Answer>, tokio::task::JoinHandle<Answer>) {
        let first = spawn_read(g, server, 100);
        wait_until(|| server.singles.load(Ordering::Relaxed) == 1).await;
        let second = spawn_read(g, server, 101);
        wait_until(|| g.state().waiting.len() == 1).await;
        (first, second)
    }

    fn gather(on: bool) -> Arc<ReadGather> {
        gather_waiting_at_most(on, Duration::from_secs(60))
    }

    fn gather_waiting_at_most(on: bool, wait_max: Duration) -> Arc<ReadGather> {
        let when: GatherWhen = Arc::new(move || on);
        Arc::new(ReadGather::new(Some(when), wait_max, Arc::default()))
    }

    fn payload_of(a: &Answer) -> u64 {
        let p = &a.as_ref().expect("a record").payload;
        u64::from_le_bytes(p[..8].try_into().expect("8 bytes"))
    }

    async fn wait_until(what: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !what() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("condition within 10 s");
    }

    #[tokio::test]
    async fn reads_waiting_on_a_call_in_flight_go_in_one_gathered_call() {
        let server = Arc::new(Server { held: AtomicBool::new(true), ..Server::default() });
        let g = gather(true);
        let first = spawn_read(&g, &server, 100);
        wait_until(|| server.singles.load(Ordering::Relaxed) == 1).await;
        let mut rest = Vec::new();
        for offset in [101, 13, 102, 103] {
            rest.push(spawn_read(&g, &server, offset));
        }
        wait_until(|| g.state().waiting.len() == 4).await;
        server.held.store(false, Ordering::Relaxed);
        server.gate.notify_one();
        assert_eq!(payload_of(&first.await.expect("joined")), 100);
        let answers: Vec<Answer> =
            futures::future::join_all(rest).await.into_iter().map(|r| r.expect("joined")).collect();
        assert_eq!(payload_of(&answers[0]), 101);
        assert_eq!(answers[1].as_ref().expect_err("thirteen fails").message(), "thirteen");
        assert_eq!(payload_of(&answers[2]), 102);
        assert_eq!(payload_of(&answers[3]), 103);
        assert_eq!(*server.gathered.lock().expect("lock"), vec![4], "the four waiting reads in one call");
        assert_eq!(server.singles.load(Ordering::Relaxed), 1);
        assert_eq!((g.counts.calls(), g.counts.reads()), (1, 4));
        wait_until(|| g.state().in_flight == 0).await;
        // Nothing in flight: the next read goes alone at once.
        assert_eq!(payload_of(&read(&g, &server, 104).await), 104);
        assert_eq!(server.singles.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_caller_dropped_mid_call_passes_the_turn_on() {
        let server = Arc::new(Server { held: AtomicBool::new(true), ..Server::default() });
        let g = gather(true);
        let (first, second) = one_in_flight_one_waiting(&g, &server).await;
        first.abort();
        assert!(first.await.is_err(), "aborted");
        assert_eq!(payload_of(&second.await.expect("joined")), 101);
        assert_eq!(*server.gathered.lock().expect("lock"), vec![1]);
    }

    #[tokio::test]
    async fn reads_whose_callers_left_are_not_sent_and_off_means_apart() {
        let server = Arc::new(Server { held: AtomicBool::new(true), ..Server::default() });
        let g = gather(true);
        let (first, left) = one_in_flight_one_waiting(&g, &server).await;
        left.abort();
        let _ = left.await;
        server.held.store(false, Ordering::Relaxed);
        server.gate.notify_one();
        first.await.expect("joined").expect("read");
        wait_until(|| g.state().in_flight == 0).await;
        assert!(server.gathered.lock().expect("lock").is_empty(), "nobody was waiting any more");

        let off = gather(false);
        assert!(matches!(off.turn(req(1), Duration::from_secs(1), || server.clone()), Turn::Apart(_)));
        let mut unknown_length = req(1);
        unknown_length.length_bytes = 0;
        assert!(matches!(g.turn(unknown_length, Duration::from_secs(1), || server.clone()), Turn::Apart(_)));
    }

    #[tokio::test]
    async fn a_server_without_read_records_is_read_alone() {
        let server =
            Arc::new(Server { held: AtomicBool::new(true), unimplemented: true, ..Server::default() });
        let g = gather(true);
        let (first, second) = one_in_flight_one_waiting(&g, &server).await;
        server.held.store(false, Ordering::Relaxed);
        server.gate.notify_one();
        first.await.expect("joined").expect("read");
        assert_eq!(payload_of(&second.await.expect("joined")), 101);
        assert_eq!(server.singles.load(Ordering::Relaxed), 2, "the waiting read went alone");
        assert!(matches!(g.turn(req(1), Duration::from_secs(1), || server.clone()), Turn::Apart(_)));
    }

    #[tokio::test]
    async fn a_read_waiting_past_its_bound_goes_beside_the_call_in_flight() {
        let server = Arc::new(Server { held: AtomicBool::new(true), ..Server::default() });
        let g = gather_waiting_at_most(true, Duration::from_millis(20));
        let first = spawn_read(&g, &server, 100);
        wait_until(|| server.singles.load(Ordering::Relaxed) == 1).await;
        // The first call stays held: the second read goes after its 20 ms, in a call of
        // its own beside it.
        let second = spawn_read(&g, &server, 101);
        let answer = tokio::time::timeout(Duration::from_secs(10), second).await.expect("within 10 s");
        assert_eq!(payload_of(&answer.expect("joined")), 101);
        assert_eq!(*server.gathered.lock().expect("lock"), vec![1]);
        assert!(!first.is_finished(), "the first call is still held");
        wait_until(|| g.state().in_flight == 1).await; // the second call's turn ended with it
        server.held.store(false, Ordering::Relaxed);
        server.gate.notify_one();
        assert_eq!(payload_of(&first.await.expect("joined")), 100);
        wait_until(|| g.state().in_flight == 0).await;
    }
}
