//! Snapshot files: a streamable, checksummed dump of the state machine's key-value pairs.
//!
//! ```text
//! magic "CLSNAP01" | meta_len u32 | meta (SnapshotMeta, in the envelope of crate::codec)
//! repeated: key_len u32 (< 0xFFFF_FFFF) | key | value_len u32 | value
//! 0xFFFF_FFFF | pairs u64 | CRC32 of every byte before this CRC (u32)
//! ```
//! All integers little-endian. Files are written to a temporary name, fsynced, then
//! renamed into place, so a present file is always complete.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use openraft::type_config::alias::SnapshotMetaOf;

use crate::TypeConfig;
use crate::codec::{self, Kind};

const MAGIC: &[u8; 8] = b"CLSNAP01";
const END_MARKER: u32 = u32::MAX;
/// Largest key or value accepted when reading a snapshot (bounds allocations on bad input).
const FIELD_MAX_BYTES: u32 = 64 << 20;
/// Largest meta section accepted.
const META_MAX_BYTES: u32 = 64 << 20;

/// Snapshot metadata.
pub type Meta = SnapshotMetaOf<TypeConfig>;

fn bad(detail: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail.into())
}

/// The file name of a snapshot: zero-padded last log index, so names sort by position.
pub fn file_name(meta: &Meta) -> String {
    let (index, leader) = match &meta.last_log_id {
        Some(id) => (id.index, id.leader_id.to_string()),
        None => (0, "none".to_string()),
    };
    let leader: String = leader.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("{index:020}-{leader}.snap")
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a snapshot file into `dir` from `pairs`; returns its final path.
pub fn write(
    dir: &Path,
    meta: &Meta,
    pairs: impl Iterator<Item = io::Result<(Box<[u8]>, Box<[u8]>)>>,
) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let path = dir.join(file_name(meta));
    let tmp = dir.join(format!("{}.tmp", file_name(meta)));
    let file = File::create(&tmp)?;
    let mut w = CrcWriter { inner: BufWriter::with_capacity(1 << 20, file), crc: crc32fast::Hasher::new() };
    w.write_all(MAGIC)?;
    let meta_bytes = codec::encode(Kind::SnapshotMeta, meta).map_err(io::Error::other)?;
    w.write_all(&(meta_bytes.len() as u32).to_le_bytes())?;
    w.write_all(&meta_bytes)?;
    let mut count = 0u64;
    for pair in pairs {
        let (key, value) = pair?;
        for field in [&key, &value] {
            let len = u32::try_from(field.len())
                .ok()
                .filter(|l| *l < END_MARKER)
                .ok_or_else(|| bad("field too large"))?;
            w.write_all(&len.to_le_bytes())?;
            w.write_all(field)?;
        }
        count += 1;
    }
    w.write_all(&END_MARKER.to_le_bytes())?;
    w.write_all(&count.to_le_bytes())?;
    let crc = w.crc.clone().finalize();
    let mut inner = w.inner.into_inner().map_err(|e| e.into_error())?;
    inner.write_all(&crc.to_le_bytes())?;
    inner.sync_all()?;
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Streams a snapshot file: the meta, then every pair through `each`; checks the CRC at the
/// end (callers apply pairs provisionally and commit only once this returns Ok).
pub fn read(file: File, mut each: impl FnMut(Vec<u8>, Vec<u8>) -> io::Result<()>) -> io::Result<(Meta, u64)> {
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut crc = crc32fast::Hasher::new();
    let mut take = |r: &mut BufReader<File>, n: usize| -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        r.read_exact(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof { bad("snapshot is truncated") } else { e }
        })?;
        crc.update(&buf);
        Ok(buf)
    };
    if take(&mut r, 8)? != MAGIC {
        return Err(bad("not a cellar snapshot (bad magic)"));
    }
    let u32_of = |b: Vec<u8>| -> io::Result<u32> {
        b.try_into().map(u32::from_le_bytes).map_err(|_| bad("short field"))
    };
    let meta_len = u32_of(take(&mut r, 4)?)?;
    if meta_len > META_MAX_BYTES {
        return Err(bad("snapshot meta too large"));
    }
    let meta: Meta = codec::decode(Kind::SnapshotMeta, &take(&mut r, meta_len as usize)?)
        .map_err(|e| bad(e.to_string()))?;
    let mut count = 0u64;
    loop {
        let key_len = u32_of(take(&mut r, 4)?)?;
        if key_len == END_MARKER {
            break;
        }
        if key_len > FIELD_MAX_BYTES {
            return Err(bad("snapshot key too large"));
        }
        let key = take(&mut r, key_len as usize)?;
        let value_len = u32_of(take(&mut r, 4)?)?;
        if value_len > FIELD_MAX_BYTES {
            return Err(bad("snapshot value too large"));
        }
        let value = take(&mut r, value_len as usize)?;
        each(key, value)?;
        count += 1;
    }
    let stored_count = take(&mut r, 8)?;
    let computed = crc.finalize();
    let mut stored_crc = [0u8; 4];
    r.read_exact(&mut stored_crc).map_err(|_| bad("snapshot is truncated"))?;
    if u32::from_le_bytes(stored_crc) != computed {
        return Err(bad("snapshot CRC32 mismatch"));
    }
    if stored_count.try_into().map(u64::from_le_bytes).ok() != Some(count) {
        return Err(bad("snapshot pair count mismatch"));
    }
    Ok((meta, count))
}

/// Reads only the meta of a snapshot file.
pub fn read_meta(path: &Path) -> io::Result<Meta> {
    let mut r = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(bad("not a cellar snapshot (bad magic)"));
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > META_MAX_BYTES {
        return Err(bad("snapshot meta too large"));
    }
    let mut meta = vec![0u8; len as usize];
    r.read_exact(&mut meta)?;
    codec::decode(Kind::SnapshotMeta, &meta).map_err(|e| bad(e.to_string()))
}

/// The newest complete snapshot file in `dir`, if any.
pub fn latest(dir: &Path) -> io::Result<Option<PathBuf>> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(None) };
    let mut newest: Option<PathBuf> = None;
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some("snap")
            && newest.as_ref().is_none_or(|n| path.file_name() > n.file_name())
        {
            newest = Some(path);
        }
    }
    Ok(newest)
}

/// Deletes every snapshot file in `dir` except `keep` (and temporary files).
pub fn prune(dir: &Path, keep: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path != keep
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".snap") || n.ends_with(".tmp"))
        {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}
