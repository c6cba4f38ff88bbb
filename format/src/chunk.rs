//! Fragment chunks: the unit of a fragment's checksums (see docs/FORMAT.md).

/// Chunk size of every fragment (the unit of a chunk CRC). Part of the coded layout:
/// fragment lengths are rounded up to it, so readers, writers and the master (which
/// works out which volume bytes a lost fragment held) must agree on it.
pub const FRAGMENT_CHUNK_BYTES: u64 = 64 << 10;

/// The CRC32 of chunk `index`: over the chunk index (u64 little-endian) then the bytes, so
/// a chunk written at the wrong place does not verify.
pub fn chunk_crc32(index: u64, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(bytes);
    hasher.finalize()
}
