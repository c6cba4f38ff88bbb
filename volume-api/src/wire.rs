//! gRPC messages as the transport sends them ([`crate::transport`]): small ones in one
//! piece, and the Append request without copying its payloads: the gRPC message cut into
//! pieces, each record's payload a piece of its own that shares the caller's buffer.
//!
//! tonic's encoder writes a whole message into one new buffer: an Append of 8 MiB sent to
//! three replicas was three 8 MiB copies, alive until each replica answered (most of a
//! frontend's memory under 4 MiB puts, and a memcpy of every byte put, three times). The
//! pieces here are the same protobuf bytes (each record's payload field written last,
//! which protobuf decoders accept in any order), sent by [`crate::transport`] as they are.

use bytes::{BufMut, Bytes, BytesMut};
use cellar_proto::volume as pb;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// Field numbers of the Append request this file writes by hand.
const APPEND_RECORDS_FIELD: u32 = 8;
const RECORD_PAYLOAD_FIELD: u32 = 2;

/// `message` as one gRPC message: its 5-byte prefix and its encoding, in one piece.
pub fn message(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0); // not compressed
    // Messages sent this way carry no payload: far below 4 GiB.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    message.encode_raw(&mut buf);
    buf.freeze()
}

/// `head`, a message whose bytes field number `field` is left empty, with `bytes` as that
/// field, as one gRPC message in pieces: the 5-byte prefix, `head`'s fields and the
/// field's key and length in one, then `bytes` itself, shared (none when empty). A volume
/// server answers its read calls so (`cellar_volume::replies`): tonic's encoder would copy
/// every block it returns. `None` when the message would be over 4 GiB.
pub fn message_with_bytes(head: &impl Message, field: u32, bytes: &Bytes) -> Option<Vec<Bytes>> {
    message_with_pieces(head, field, std::slice::from_ref(bytes))
}

/// [`message_with_bytes`] with the field's bytes in several pieces (the buffers a block
/// arrived in), each shared, empty ones left out.
pub fn message_with_pieces(head: &impl Message, field: u32, pieces: &[Bytes]) -> Option<Vec<Bytes>> {
    let len: usize = pieces.iter().map(Bytes::len).sum();
    let field_bytes = if len == 0 { 0 } else { field_len(field, len) };
    let total = u32::try_from(head.encoded_len() + field_bytes).ok()?;
    let mut buf = BytesMut::with_capacity(5 + head.encoded_len() + 16);
    buf.put_u8(0); // not compressed
    buf.put_u32(total);
    head.encode_raw(&mut buf);
    if len == 0 {
        return Some(vec![buf.freeze()]);
    }
    encode_key(field, WireType::LengthDelimited, &mut buf);
    encode_varint(len as u64, &mut buf);
    let mut out = Vec::with_capacity(1 + pieces.len());
    out.push(buf.freeze());
    out.extend(pieces.iter().filter(|p| !p.is_empty()).cloned());
    Some(out)
}

/// Bytes of a length-delimited field of `len` bytes, with its key and length.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A record without its payload, and the encoded length of the whole record.
fn record_head(r: &pb::BlockRecord) -> (pb::BlockRecord, usize) {
    // Every field named: a field added to the message fails to compile here, instead of
    // being left off the wire.
    let pb::BlockRecord { sha256, payload, payload_crc32 } = r;
    let head =
        pb::BlockRecord { sha256: sha256.clone(), payload: Bytes::new(), payload_crc32: *payload_crc32 };
    let payload_bytes = if payload.is_empty() { 0 } else { field_len(RECORD_PAYLOAD_FIELD, payload.len()) };
    let len = head.encoded_len() + payload_bytes;
    (head, len)
}

/// The gRPC message (its 5-byte length prefix first) of `req`, in pieces: every non-empty
/// payload is one piece, shared with `req`. Concatenated, the pieces are a message that
/// decodes to `req`. `None` when the message would be over 4 GiB (no gRPC message can be).
pub fn append_message(req: &pb::AppendRequest) -> Option<Vec<Bytes>> {
    let pb::AppendRequest { volume_id, disk_id, lease_epoch, generation, offset_bytes, records: _ } = *req;
    let fields =
        pb::AppendRequest { volume_id, disk_id, lease_epoch, generation, offset_bytes, records: Vec::new() };
    let records: Vec<(pb::BlockRecord, usize)> = req.records.iter().map(record_head).collect();
    let total = fields.encoded_len()
        + records.iter().map(|(_, len)| field_len(APPEND_RECORDS_FIELD, *len)).sum::<usize>();
    let total = u32::try_from(total).ok()?;
    let mut pieces = Vec::with_capacity(2 * req.records.len() + 1);
    let mut buf = BytesMut::with_capacity(64 + 64 * records.len());
    buf.put_u8(0); // not compressed
    buf.put_u32(total);
    fields.encode_raw(&mut buf);
    for ((head, len), r) in records.iter().zip(&req.records) {
        encode_key(APPEND_RECORDS_FIELD, WireType::LengthDelimited, &mut buf);
        encode_varint(*len as u64, &mut buf);
        head.encode_raw(&mut buf);
        if !r.payload.is_empty() {
            encode_key(RECORD_PAYLOAD_FIELD, WireType::LengthDelimited, &mut buf);
            encode_varint(r.payload.len() as u64, &mut buf);
            pieces.push(buf.split().freeze());
            pieces.push(r.payload.clone());
        }
    }
    if !buf.is_empty() {
        pieces.push(buf.freeze());
    }
    Some(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(payloads: &[usize]) -> pb::AppendRequest {
        pb::AppendRequest {
            volume_id: 7,
            disk_id: 300,
            lease_epoch: 2,
            generation: 0,
            offset_bytes: 1 << 33,
            records: payloads
                .iter()
                .enumerate()
                .map(|(i, len)| pb::BlockRecord {
                    sha256: vec![i as u8; 32],
                    payload: Bytes::from((0..*len).map(|b| (b * 31 + i) as u8).collect::<Vec<u8>>()),
                    payload_crc32: (i % 2 == 0).then_some(i as u32 * 17),
                })
                .collect(),
        }
    }

    fn whole(pieces: &[Bytes]) -> Vec<u8> {
        let whole: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(whole[0], 0, "compressed flag");
        let len = u32::from_be_bytes(whole[1..5].try_into().expect("4 bytes")) as usize;
        assert_eq!(len, whole.len() - 5, "length prefix");
        whole
    }

    #[test]
    fn read_answers_in_pieces_decode_to_the_answer_and_share_its_bytes() {
        for len in [0usize, 1, 127, 128, 16384, 4 << 20] {
            let bytes = Bytes::from((0..len).map(|b| (b * 7) as u8).collect::<Vec<u8>>());
            let record = pb::ReadRecordResponse { sha256: vec![9; 32], payload: bytes.clone() };
            let head = pb::ReadRecordResponse { payload: Bytes::new(), ..record.clone() };
            let pieces = message_with_bytes(&head, 2, &bytes).expect("under 4 GiB");
            assert_eq!(pb::ReadRecordResponse::decode(&whole(&pieces)[5..]).expect("decodes"), record);
            let fragment = pb::ReadFragmentResponse { data: bytes.clone() };
            let fpieces = message_with_bytes(&pb::ReadFragmentResponse::default(), 1, &bytes).expect("small");
            assert_eq!(pb::ReadFragmentResponse::decode(&whole(&fpieces)[5..]).expect("decodes"), fragment);
            for p in [&pieces, &fpieces] {
                if len == 0 {
                    assert_eq!(p.len(), 1, "no piece for empty bytes");
                } else {
                    let last = p.last().expect("pieces");
                    assert!(last.as_ptr() == bytes.as_ptr() && last.len() == len, "{len} bytes were copied");
                }
            }
        }
    }

    #[test]
    fn a_field_in_several_pieces_decodes_whole_and_each_piece_is_shared() {
        let data: Vec<u8> = (0..(3 << 20) + 17).map(|b: u32| (b * 13) as u8).collect();
        let whole_bytes = Bytes::from(data.clone());
        for cuts in [vec![], vec![0usize], vec![1 << 20], vec![5, 5, 1 << 20, (3 << 20) + 17]] {
            let mut parts = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().copied().chain([data.len()]) {
                parts.push(whole_bytes.slice(at..cut.max(at)));
                at = cut.max(at);
            }
            let head = pb::ReadRecordResponse { sha256: vec![3; 32], payload: Bytes::new() };
            let pieces = message_with_pieces(&head, 2, &parts).expect("under 4 GiB");
            let got = pb::ReadRecordResponse::decode(&whole(&pieces)[5..]).expect("decodes");
            assert_eq!((got.sha256, &got.payload[..]), (vec![3; 32], &data[..]), "{cuts:?}");
            let shared: Vec<&Bytes> = parts.iter().filter(|p| !p.is_empty()).collect();
            assert_eq!(pieces.len(), 1 + shared.len(), "{cuts:?}: one piece per non-empty part");
            for (piece, part) in pieces[1..].iter().zip(shared) {
                assert!(piece.as_ptr() == part.as_ptr() && piece.len() == part.len(), "copied");
            }
        }
        let empty =
            message_with_pieces(&pb::ReadFragmentResponse::default(), 1, &[Bytes::new()]).expect("small");
        assert_eq!(empty.len(), 1);
        assert_eq!(
            pb::ReadFragmentResponse::decode(&whole(&empty)[5..]).expect("decodes"),
            Default::default()
        );
    }

    #[test]
    fn the_pieces_are_a_message_that_decodes_to_the_request_and_share_its_payloads() {
        for payloads in [vec![], vec![0], vec![1], vec![4096, 0, 127, 128, 16384], vec![4 << 20, 4 << 20]] {
            let req = request(&payloads);
            let pieces = append_message(&req).expect("under 4 GiB");
            let whole: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(whole[0], 0, "compressed flag");
            let len = u32::from_be_bytes(whole[1..5].try_into().expect("4 bytes")) as usize;
            assert_eq!(len, whole.len() - 5, "length prefix");
            let decoded = pb::AppendRequest::decode(&whole[5..]).expect("decodes");
            assert_eq!(decoded, req);
            // Each non-empty payload went as its own piece, pointing at the caller's bytes.
            for r in req.records.iter().filter(|r| !r.payload.is_empty()) {
                assert!(
                    pieces.iter().any(|p| p.as_ptr() == r.payload.as_ptr() && p.len() == r.payload.len()),
                    "a payload of {} bytes was copied",
                    r.payload.len()
                );
            }
        }
    }
}
