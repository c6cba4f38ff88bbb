//! Fragment chunks: the unit of a fragment's checksums (see docs/FORMAT.md).

/// The CRC32 of chunk `index`: over the chunk index (u64 little-endian) then the bytes, so
/// a chunk written at the wrong place does not verify.
pub fn chunk_crc32(index: u64, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(bytes);
    hasher.finalize()
}
