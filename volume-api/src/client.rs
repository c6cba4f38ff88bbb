//! Client-side helpers for the extent API: streaming a whole fragment to a volume server
//! with chunk CRCs and checking what it read back.

use bytes::Bytes;
use cellar_format::chunk_crc32;
use cellar_proto::volume as pb;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Code, Status};

use crate::FRAGMENT_QUEUE_MAX;
use crate::cluster::ExtentClient;
use crate::errors::status;

/// Cuts a fragment's bytes into WriteFragment messages with their chunk CRCs, and keeps
/// the CRC of everything sent (to compare with what the server reads back).
#[derive(Debug)]
pub struct FragmentFramer {
    header: Option<pb::FragmentHeader>,
    chunk_bytes: u64,
    next_offset_bytes: u64,
    sent: crc32fast::Hasher,
}

impl FragmentFramer {
    /// A framer for the fragment `header` describes.
    pub fn new(header: pb::FragmentHeader) -> FragmentFramer {
        FragmentFramer {
            chunk_bytes: u64::from(header.chunk_size_bytes.max(1)),
            header: Some(header),
            next_offset_bytes: 0,
            sent: crc32fast::Hasher::new(),
        }
    }

    /// The next message, carrying `data` (whole chunks, or the fragment's last bytes).
    pub fn frame(&mut self, data: Vec<u8>) -> pb::WriteFragmentRequest {
        let first_chunk = self.next_offset_bytes / self.chunk_bytes;
        let chunk_crc32 = data
            .chunks(self.chunk_bytes as usize)
            .enumerate()
            .map(|(i, c)| chunk_crc32(first_chunk + i as u64, c))
            .collect();
        self.sent.update(&data);
        let offset_bytes = self.next_offset_bytes;
        self.next_offset_bytes += data.len() as u64;
        pb::WriteFragmentRequest { header: self.header.take(), offset_bytes, data, chunk_crc32 }
    }

    /// Bytes framed so far and their CRC32.
    pub fn sent(&self) -> (u64, u32) {
        (self.next_offset_bytes, self.sent.clone().finalize())
    }
}

/// One fragment being streamed to a volume server: messages go through a bounded queue
/// ([`FRAGMENT_QUEUE_MAX`]) to the RPC running in the background.
pub struct FragmentSink {
    /// Queue of framed messages (use `blocking_send` from blocking threads).
    pub tx: mpsc::Sender<pb::WriteFragmentRequest>,
    /// Frames the bytes.
    pub framer: FragmentFramer,
    rpc: JoinHandle<Result<pb::WriteFragmentResponse, Status>>,
}

impl FragmentSink {
    /// Starts the WriteFragment call (in-process when `client` is local).
    pub fn open(client: ExtentClient, header: pb::FragmentHeader) -> FragmentSink {
        let (tx, rx) = mpsc::channel(FRAGMENT_QUEUE_MAX);
        let rpc = tokio::spawn(client.write_fragment(rx));
        FragmentSink { tx, framer: FragmentFramer::new(header), rpc }
    }

    /// Frames and queues `data` (waits while the queue is full).
    pub async fn send(&mut self, data: Vec<u8>) -> Result<(), Status> {
        let message = self.framer.frame(data);
        if self.tx.send(message).await.is_err() {
            // The call ended early; its status says why (see `finish`).
            return Err(status(
                Code::Aborted,
                cellar_proto::error_code::INTERNAL,
                "fragment stream closed early",
            ));
        }
        Ok(())
    }

    /// Ends the stream and checks that the server read back exactly the bytes sent.
    pub async fn finish(self) -> Result<pb::WriteFragmentResponse, Status> {
        let FragmentSink { tx, framer, rpc } = self;
        drop(tx);
        let resp = rpc.await.map_err(|e| {
            status(Code::Internal, cellar_proto::error_code::INTERNAL, format!("fragment writer: {e}"))
        })??;
        let (len, crc) = framer.sent();
        if resp.length_bytes != len || resp.crc32 != crc {
            return Err(status(
                Code::DataLoss,
                cellar_proto::error_code::DATA_CORRUPT,
                format!(
                    "fragment read back as {} bytes crc {:08x}, sent {len} bytes crc {crc:08x}",
                    resp.length_bytes, resp.crc32
                ),
            ));
        }
        Ok(resp)
    }
}

/// Reads `len_bytes` at `offset_bytes` of fragment `index` of `volume_id` on `disk_id`
/// of node `node_id` (the server checks the chunk CRCs).
pub async fn read_fragment_range(
    cluster: &crate::cluster::Cluster,
    node_id: u64,
    disk_id: u64,
    volume_id: u64,
    index: usize,
    offset_bytes: u64,
    len_bytes: u64,
) -> Result<Bytes, Status> {
    let mut client = cluster.extent_client(node_id).await?;
    let resp = client
        .read_fragment(pb::ReadFragmentRequest {
            volume_id,
            disk_id,
            fragment_index: index as u32,
            offset_bytes,
            length_bytes: len_bytes,
            replica: false,
        })
        .await?;
    if resp.data.len() as u64 != len_bytes {
        return Err(status(
            Code::DataLoss,
            cellar_proto::error_code::DATA_CORRUPT,
            format!("fragment {index} read returned {} bytes, not {len_bytes}", resp.data.len()),
        ));
    }
    Ok(resp.data)
}
