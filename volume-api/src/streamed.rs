//! A get that hands a block's bytes on while they arrive.
//!
//! A get of a 4 MiB block used to wait for the volume server's whole answer before the
//! frontend sent its first byte on: the two transfers (volume server to frontend, frontend
//! to client) ran one after the other. A [`RecordStream`] hands each frame's payload bytes
//! on as it lands, checked as it lands ([`crate::arriving`]), so the transfers overlap.
//! The check's verdict comes with the last byte, so the last piece is held back until the
//! whole payload has matched the key: a reader never receives a whole block that is not
//! its key's bytes (a failed check ends the stream with an error, and an HTTP client sees
//! a body shorter than announced).
//!
//! Before anything is handed on, the answer's head must say the record is the key's and
//! of the expected length, and a refusal (no such extent, a CRC32 failure on the server)
//! sends the read down the whole-answer path ([`BlockReader::read`]: other replicas,
//! hedging, stale records). A holder that stalls after bytes were handed on (no frame
//! within the hedge delay) or fails is replaced by another replica, whose answer is read
//! from the byte where the first stopped, the check going on over it: the other replicas
//! are asked one hedge delay apart and the first to answer goes on, the last asked having
//! until the read deadline ([`RecordStream`]'s `go_on`). A holder that only stalled is
//! still waited on meanwhile: when it sends again first, the stream goes on with it.
//!
//! Only replicated volumes and records over one frame ([`FRAME_MAX_BYTES`]) are read so;
//! coded volumes, small records and in-process servers are read whole. So is a record
//! whose stream failed lately ([`crate::reader::CutRecords`]): its first replica would cut every
//! later stream short too, while the whole read goes around it and reports it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cellar_proto::common::VolumeState;
use cellar_proto::master as mpb;
use cellar_proto::volume as pb;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::FRAME_MAX_BYTES;
use crate::arriving::ArrivingRecord;
use crate::cluster::Cluster;
use crate::digest::BlockKey;
use crate::errors::status;
use crate::reader::{BlockRead, BlockReader, CutRecords, lock_cut, replica_order};
use crate::transport::ResponseStream;
use cellar_proto::error_code as code;

/// A block read for a get: whole, or as it arrives.
pub enum StreamedRead {
    /// Read whole (see [`BlockReader::read`]).
    Whole(BlockRead),
    /// Arriving.
    Stream(Box<RecordStream>),
}

/// A replica's record answer as it arrives (see the module).
pub struct RecordStream {
    cluster: Arc<Cluster>,
    volume_id: u64,
    offset_bytes: u64,
    length_bytes: u32,
    /// Replicas (node, disk) to go on from, in order.
    others: Vec<(u64, u64)>,
    key: BlockKey,
    check: ArrivingRecord,
    response: ResponseStream,
    /// Payload bytes read from the current answer and not handed on yet.
    ready: VecDeque<Bytes>,
    /// The last payload piece, held until the verdict.
    held: Option<Bytes>,
    payload_bytes: usize,
    /// How long a holder may send nothing before the next replica is asked.
    stall: Duration,
    deadline: Instant,
    started: Instant,
    resumed: u32,
    /// Times the holder stalled or failed and other replicas were asked.
    stalls: u32,
    done: bool,
    /// Why the stream failed: every later call fails the same way.
    failed: Option<String>,
    /// Where a failed stream's record is remembered (read whole from then on).
    cut: Arc<CutRecords>,
}

fn unavailable(message: String) -> Status {
    status(Code::Unavailable, code::DATA_CORRUPT, message)
}

impl BlockReader {
    /// [`BlockReader::read`], handing the payload on as it arrives where it can (see the
    /// module): `payload_bytes` is the length the caller expects (from the index entry).
    /// Falls back to the whole read when the first replica refuses, sends something else,
    /// or sends nothing within the hedge delay.
    pub async fn read_streamed(
        &self,
        v: &mpb::Volume,
        key: &BlockKey,
        offset_bytes: u64,
        length_bytes: u32,
        payload_bytes: usize,
    ) -> Result<StreamedRead, Status> {
        let cluster = self.cluster().clone();
        // A record whose stream failed lately is read whole: every replica is tried, and
        // one with other bytes than the key's is reported once another's match.
        if length_bytes <= FRAME_MAX_BYTES
            || v.state() == VolumeState::Coded
            || lock_cut(&self.cut).contains_key(&(v.volume_id, offset_bytes))
        {
            return self.read(v, key, offset_bytes, length_bytes).await.map(StreamedRead::Whole);
        }
        let mut order: Vec<(u64, u64)> = replica_order(v).map(|r| (r.node_id, r.disk_id)).collect();
        if order.is_empty() {
            return self.read(v, key, offset_bytes, length_bytes).await.map(StreamedRead::Whole);
        }
        let first = order.remove(0);
        let stall = cluster.read_latency().hedge_delay(u64::from(length_bytes));
        let started = Instant::now();
        let deadline = started + cluster.deadlines().read;
        let mut check = ArrivingRecord::new(*key);
        let opened = tokio::time::timeout(
            stall,
            open(&cluster, v.volume_id, first, offset_bytes, length_bytes, &mut check, payload_bytes),
        )
        .await;
        match opened {
            Ok(Ok(Some((response, ready)))) => Ok(StreamedRead::Stream(Box::new(RecordStream {
                cluster,
                volume_id: v.volume_id,
                offset_bytes,
                length_bytes,
                others: order,
                key: *key,
                check,
                response,
                ready: ready.into(),
                held: None,
                payload_bytes,
                stall,
                deadline,
                started,
                resumed: 0,
                stalls: 0,
                done: false,
                failed: None,
                cut: self.cut.clone(),
            }))),
            Ok(Ok(None)) => self.read(v, key, offset_bytes, length_bytes).await.map(StreamedRead::Whole),
            Ok(Err(e)) => {
                tracing::debug!(volume = v.volume_id, error = %e.message(), "a streamed read falls back");
                self.read(v, key, offset_bytes, length_bytes).await.map(StreamedRead::Whole)
            }
            Err(_) => {
                // The first holder has had its hedge delay already: the whole read asks it
                // last (as a disk known bad), not first with another hedge delay to wait.
                tracing::debug!(volume = v.volume_id, "a streamed read's first holder is slow: read whole");
                cluster.count_hedged_read();
                let mut slow_last = v.clone();
                if !slow_last.bad_disks.contains(&first.1) {
                    slow_last.bad_disks.push(first.1);
                }
                let read = self.read(&slow_last, key, offset_bytes, length_bytes).await?;
                // A newer record from the master is the master's; the one read was this
                // call's own variant of `v`.
                Ok(StreamedRead::Whole(read))
            }
        }
    }
}

/// A replica's answer once its head is in, with the payload bytes that came with the head;
/// `None`: the server is in this process (nothing to stream).
type OpenAnswer = Result<Option<(ResponseStream, Vec<Bytes>)>, Status>;

/// Asks `(node, disk)` for the record and reads its answer until the head is in: the
/// answer and the payload bytes that came with the head. `None`: the server is in this
/// process (nothing to stream). The head must name the key and `payload_bytes`.
async fn open(
    cluster: &Arc<Cluster>,
    volume_id: u64,
    (node_id, disk_id): (u64, u64),
    offset_bytes: u64,
    length_bytes: u32,
    check: &mut ArrivingRecord,
    payload_bytes: usize,
) -> OpenAnswer {
    let mut client = cluster.extent_client(node_id).await?;
    let req = pb::ReadRecordRequest { volume_id, disk_id, offset_bytes, length_bytes };
    let Some(mut response) = client.read_record_stream(req).await? else { return Ok(None) };
    let mut ready = Vec::new();
    while check.payload().is_none() {
        let Some(chunk) = response.next().await? else {
            return Err(unavailable(format!("{}: an answer without a payload", response.addr())));
        };
        let r = check.feed(&chunk);
        if check.is_unchecked() {
            return Err(unavailable(format!("{}: an answer not laid out as a record's", response.addr())));
        }
        if !r.is_empty() {
            ready.push(chunk.slice(r));
        }
    }
    match check.payload() {
        Some((len, sha256)) if len == payload_bytes && sha256 == check.key().sha256 => {
            Ok(Some((response, ready)))
        }
        _ => Err(unavailable(format!(
            "{}: a record of another length or key than the {payload_bytes} bytes asked for",
            response.addr()
        ))),
    }
}

impl RecordStream {
    /// The payload's length.
    pub fn len(&self) -> usize {
        self.payload_bytes
    }

    /// Whether the payload is empty (never: records this short are read whole).
    pub fn is_empty(&self) -> bool {
        self.payload_bytes == 0
    }

    /// Holders that stalled or failed and were replaced so far.
    pub fn resumed(&self) -> u32 {
        self.resumed
    }

    /// Times the holder stalled or failed and other replicas were asked so far (a holder
    /// that sent again first went on: not counted in [`Self::resumed`]).
    pub fn stalls(&self) -> u32 {
        self.stalls
    }

    /// The next payload bytes; `None` once all of them were handed on and matched the key.
    /// An error ends the stream (later calls fail the same way): the bytes handed on are
    /// not the block, or not all of it.
    pub async fn next(&mut self) -> Result<Option<Bytes>, Status> {
        if let Some(why) = &self.failed {
            return Err(unavailable(why.clone()));
        }
        let next = self.next_inner().await;
        if let Err(e) = &next {
            self.done = true;
            self.failed = Some(e.message().to_string());
            lock_cut(&self.cut).insert((self.volume_id, self.offset_bytes), ());
        }
        next
    }

    async fn next_inner(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(piece) = self.take_ready() {
                return Ok(Some(piece));
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.done = true;
                return Err(status(
                    Code::DeadlineExceeded,
                    code::DEADLINE_EXCEEDED,
                    format!(
                        "reading volume {}'s record at {}: past the read deadline",
                        self.volume_id, self.offset_bytes
                    ),
                ));
            }
            // The first frame came within the hedge delay; between frames a holder gets
            // the hedge delay's maximum (a loaded machine's pauses are not stalls).
            let stall = self.cluster.read_latency().delay_max().max(self.stall);
            let went_on = match tokio::time::timeout(stall.min(left), self.response.next()).await {
                Ok(Ok(got)) => WentOn::Holder(got),
                // The holder failed: only another replica can go on.
                Ok(Err(e)) => self.go_on(e.message().to_string(), false).await?,
                Err(_) => {
                    self.go_on(format!("{}: nothing for {stall:?}", self.response.addr()), true).await?
                }
            };
            match went_on {
                WentOn::Holder(Some(chunk)) => {
                    let r = self.check.feed(&chunk);
                    if self.check.is_unchecked() {
                        self.done = true;
                        return Err(unavailable(format!(
                            "{}: more bytes than the record's, or another record",
                            self.response.addr()
                        )));
                    }
                    if !r.is_empty() {
                        self.ready.push_back(chunk.slice(r));
                    }
                }
                WentOn::Holder(None) => return self.finish(),
                WentOn::Replica => {}
            }
        }
    }

    /// The next ready piece to hand on, keeping the last of the payload held back.
    fn take_ready(&mut self) -> Option<Bytes> {
        while let Some(piece) = self.ready.pop_front() {
            if let Some(before) = self.held.replace(piece) {
                return Some(before);
            }
        }
        None
    }

    /// The answer ended: the verdict, then the held piece.
    fn finish(&mut self) -> Result<Option<Bytes>, Status> {
        self.done = true;
        let check = std::mem::replace(&mut self.check, ArrivingRecord::new(self.key));
        let checked = check.finish();
        let matched = checked.as_ref().is_some_and(|c| {
            c.matches && c.sha256 == self.key.sha256 && c.payload.len() == self.payload_bytes
        });
        if !matched {
            return Err(unavailable(format!(
                "volume {}'s record at {} ({}) is not its key's bytes",
                self.volume_id,
                self.offset_bytes,
                self.response.addr()
            )));
        }
        self.cluster.read_latency().observe(u64::from(self.length_bytes), self.started.elapsed());
        Ok(self.held.take())
    }

    /// The current holder stalled or failed (`why`): the next replica's answer, from the
    /// byte where this one stopped. Replicas are asked one hedge delay apart, and a replica
    /// asked keeps being waited on while the next is asked: the first head to arrive wins
    /// and the others' calls are dropped. The last replica asked, and every one still
    /// waited on, has until the read deadline: on a loaded machine a replica slower than the
    /// hedge delay is slow, not gone, and giving up on it cut gets short that would have
    /// been whole. A holder that only stalled (`holder_alive`) is waited on too: when its
    /// next frame (or its end) comes first, the stream goes on with it
    /// ([`WentOn::Holder`]) and the other replicas' calls are dropped.
    async fn go_on(&mut self, why: String, mut holder_alive: bool) -> Result<WentOn, Status> {
        self.stalls += 1;
        let mut last = why;
        let mut asked = FuturesUnordered::new();
        loop {
            if !self.others.is_empty() {
                let next = self.others.remove(0);
                let mut check = self.check.clone();
                if check.resume() {
                    asked.push(open_resumed(
                        self.cluster.clone(),
                        self.volume_id,
                        next,
                        self.offset_bytes,
                        self.length_bytes,
                        check,
                        self.payload_bytes,
                    ));
                } else {
                    // An answer not in the expected layout: no other answer can go on from it
                    // (the holder itself still can, when it only stalled).
                    self.others.clear();
                }
            }
            if asked.is_empty() && !holder_alive {
                break;
            }
            let hedge_at = if self.others.is_empty() {
                self.deadline
            } else {
                (Instant::now() + self.stall).min(self.deadline)
            };
            let waited = tokio::select! {
                got = self.response.next(), if holder_alive => Waited::Holder(got),
                Some(answer) = asked.next(), if !asked.is_empty() => Waited::Replica(Box::new(answer)),
                () = tokio::time::sleep_until(hedge_at) => Waited::Hedge,
            };
            match waited {
                Waited::Holder(Err(e)) => {
                    holder_alive = false;
                    last = format!("{}: {}", self.response.addr(), e.message());
                }
                Waited::Holder(Ok(got)) => {
                    tracing::debug!(volume = self.volume_id, reason = %last, "a stalled holder went on");
                    return Ok(WentOn::Holder(got));
                }
                Waited::Replica(answer) => match *answer {
                    (_, Ok(Some((response, ready))), check) => {
                        tracing::debug!(volume = self.volume_id, reason = %last, "a streamed read goes on from another replica");
                        self.check = check;
                        self.response = response;
                        self.ready.extend(ready);
                        self.resumed += 1;
                        self.cluster.count_hedged_read();
                        return Ok(WentOn::Replica);
                    }
                    ((_, disk), Ok(None), _) => last = format!("replica on disk {disk}: in this process"),
                    ((_, disk), Err(e), _) => last = format!("replica on disk {disk}: {}", e.message()),
                },
                Waited::Hedge if Instant::now() >= self.deadline => {
                    self.done = true;
                    return Err(status(
                        Code::DeadlineExceeded,
                        code::DEADLINE_EXCEEDED,
                        format!(
                            "reading volume {}'s record at {}: no replica went on within the read deadline \
                             ({} still asked{}; before: {last})",
                            self.volume_id,
                            self.offset_bytes,
                            asked.len(),
                            if holder_alive { ", the stalled holder still waited on" } else { "" }
                        ),
                    ));
                }
                // The hedge delay passed: the next replica is asked, these still waited on.
                Waited::Hedge => {}
            }
        }
        self.done = true;
        Err(unavailable(format!(
            "reading volume {}'s record at {}: no replica left to go on from: {last}",
            self.volume_id, self.offset_bytes
        )))
    }
}

/// How a stream goes on after waiting for its holder ([`RecordStream::next_inner`]) or
/// for the other replicas too ([`RecordStream::go_on`]).
enum WentOn {
    /// With another replica's answer, now the stream's.
    Replica,
    /// With the holder: what it sent next (a frame, or `None`: its answer ended).
    Holder(Option<Bytes>),
}

/// What [`RecordStream::go_on`] waited for first.
enum Waited {
    /// The stalled holder's next frame, its end, or its failure.
    Holder(Result<Option<Bytes>, Status>),
    /// An asked replica's answer (see [`open_resumed`]).
    Replica(Box<((u64, u64), OpenAnswer, ArrivingRecord)>),
    /// The next hedge time (or the read deadline) came.
    Hedge,
}

/// [`open`] for a replica asked to go on with a stream: the replica, its answer once the
/// head is in, and the check (a clone of the stream's, resumed) that read the head.
async fn open_resumed(
    cluster: Arc<Cluster>,
    volume_id: u64,
    replica: (u64, u64),
    offset_bytes: u64,
    length_bytes: u32,
    mut check: ArrivingRecord,
    payload_bytes: usize,
) -> ((u64, u64), OpenAnswer, ArrivingRecord) {
    let opened =
        open(&cluster, volume_id, replica, offset_bytes, length_bytes, &mut check, payload_bytes).await;
    (replica, opened, check)
}
