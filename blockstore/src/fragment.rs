//! Fragment extents: one fragment of a coded volume, written in fixed-size chunks at given
//! offsets, each chunk guarded by a CRC32 in a table after the data region.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::catalog::{Catalog, ExtentEntry};
use crate::error::{CorruptKind, Error, ExtentState, Result};
use crate::extent_header::{EXTENT_DATA_OFFSET_BYTES, ExtentHeader};
use crate::id::ExtentId;
use crate::io::direct::read_large;
use crate::io::{IoBackend, IoFile, read_exact_at, write_all_at};

/// Bytes per chunk table entry: CRC32 then a marker.
pub const CHUNK_ENTRY_BYTES: u64 = 8;
/// Marker of a chunk that was written; an all-zero entry is a chunk never written.
pub const CHUNK_WRITTEN_MARKER: u32 = 1;
/// Smallest chunk size accepted.
pub const CHUNK_SIZE_MIN_BYTES: u32 = 4096;
/// Largest chunk size accepted.
pub const CHUNK_SIZE_MAX_BYTES: u32 = 16 << 20;
/// Largest fragment accepted (1 TiB): bounds the chunk table.
pub const FRAGMENT_LEN_MAX_BYTES: u64 = 1 << 40;

pub use cellar_format::chunk_crc32;

pub(crate) struct Fragment {
    pub(crate) id: ExtentId,
    pub(crate) path: PathBuf,
    io: Arc<dyn IoBackend>,
    pub(crate) created_unix_ms: u64,
    pub(crate) fragment_len_bytes: u64,
    pub(crate) chunk_size_bytes: u32,
    state: Mutex<FragmentState>,
}

struct FragmentState {
    state: ExtentState,
    kept_file: Option<Arc<dyn IoFile>>,
    failed: bool,
    retired: bool,
}

/// The whole chunks a read covers: chunk indexes `first..=last`, data offsets
/// `start_bytes..end_bytes` (the end clipped to the fragment's length).
struct ChunkSpan {
    first: u64,
    last: u64,
    start_bytes: u64,
    end_bytes: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks the parameters of a new fragment.
pub(crate) fn check_parameters(fragment_len_bytes: u64, chunk_size_bytes: u32) -> Result<()> {
    if !chunk_size_bytes.is_power_of_two()
        || !(CHUNK_SIZE_MIN_BYTES..=CHUNK_SIZE_MAX_BYTES).contains(&chunk_size_bytes)
    {
        return Err(Error::BadParameters(format!(
            "chunk size {chunk_size_bytes} must be a power of two in {CHUNK_SIZE_MIN_BYTES}..={CHUNK_SIZE_MAX_BYTES}"
        )));
    }
    if fragment_len_bytes == 0 || fragment_len_bytes > FRAGMENT_LEN_MAX_BYTES {
        return Err(Error::BadParameters(format!(
            "fragment length {fragment_len_bytes} must be in 1..={FRAGMENT_LEN_MAX_BYTES}"
        )));
    }
    Ok(())
}

/// The file size of a fragment of `fragment_len_bytes` in chunks of `chunk_size_bytes`:
/// header, data region, chunk table.
pub(crate) fn file_len_bytes(fragment_len_bytes: u64, chunk_size_bytes: u32) -> u64 {
    EXTENT_DATA_OFFSET_BYTES
        + fragment_len_bytes
        + fragment_len_bytes.div_ceil(u64::from(chunk_size_bytes.max(1))) * CHUNK_ENTRY_BYTES
}

impl Fragment {
    fn chunks(&self) -> u64 {
        self.fragment_len_bytes.div_ceil(u64::from(self.chunk_size_bytes))
    }

    fn table_offset(&self) -> u64 {
        EXTENT_DATA_OFFSET_BYTES + self.fragment_len_bytes
    }

    /// Total file size: header, data region, chunk table.
    pub(crate) fn file_len_bytes(&self) -> u64 {
        file_len_bytes(self.fragment_len_bytes, self.chunk_size_bytes)
    }

    /// Creates the fragment file: header written, data and table allocated on the device
    /// (so that no chunk's write fails for want of space) but unwritten, fsynced.
    pub(crate) fn create(
        io: Arc<dyn IoBackend>,
        path: PathBuf,
        id: ExtentId,
        created_unix_ms: u64,
        fragment_len_bytes: u64,
        chunk_size_bytes: u32,
    ) -> Result<Fragment> {
        check_parameters(fragment_len_bytes, chunk_size_bytes)?;
        let file = io.create_new(&path).map_err(|e| Error::io(&path, "create fragment extent", e))?;
        let mut fragment = Fragment::new(io, path, id, created_unix_ms, fragment_len_bytes, chunk_size_bytes);
        let header = ExtentHeader { extent: id, created_unix_ms, fragment_len_bytes, chunk_size_bytes };
        write_all_at(file.as_ref(), &header.encode(), 0)
            .and_then(|()| file.set_len(fragment.file_len_bytes()))
            .and_then(|()| file.allocate(fragment.file_len_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(&fragment.path, "write fragment extent header", e))?;
        let st = fragment.state.get_mut().unwrap_or_else(|p| p.into_inner());
        st.kept_file = Some(file);
        Ok(fragment)
    }

    fn new(
        io: Arc<dyn IoBackend>,
        path: PathBuf,
        id: ExtentId,
        created_unix_ms: u64,
        fragment_len_bytes: u64,
        chunk_size_bytes: u32,
    ) -> Fragment {
        Fragment {
            id,
            path,
            io,
            created_unix_ms,
            fragment_len_bytes,
            chunk_size_bytes,
            state: Mutex::new(FragmentState {
                state: ExtentState::Open,
                kept_file: None,
                failed: false,
                retired: false,
            }),
        }
    }

    /// Opens an existing fragment from its catalog entry. Returns a damage description if
    /// the file is shorter than its layout.
    pub(crate) fn open(
        io: Arc<dyn IoBackend>,
        path: PathBuf,
        id: ExtentId,
        entry: &ExtentEntry,
    ) -> Result<(Fragment, Option<String>)> {
        let fragment =
            Fragment::new(io, path, id, entry.created_unix_ms, entry.length_bytes, entry.chunk_size_bytes);
        lock(&fragment.state).state = entry.state;
        let len = fragment.file()?.len_bytes().map_err(|e| Error::io(&fragment.path, "stat fragment", e))?;
        let damaged = (len < fragment.file_len_bytes())
            .then(|| format!("file is {len} bytes, layout needs {}", fragment.file_len_bytes()));
        Ok((fragment, damaged))
    }

    fn file(&self) -> Result<Arc<dyn IoFile>> {
        if let Some(file) = lock(&self.state).kept_file.as_ref() {
            return Ok(file.clone());
        }
        self.io.open(&self.path).map_err(|e| Error::io(&self.path, "open fragment extent", e))
    }

    fn bad_range(&self, offset_bytes: u64, length_bytes: u64, reason: &str) -> Error {
        Error::BadRange { extent: self.id, offset_bytes, length_bytes, reason: reason.to_string() }
    }

    /// Writes whole chunks at a chunk-aligned offset (the last chunk may be short when it
    /// ends the fragment). Durable after [`Fragment::sync`] or [`Fragment::seal`].
    pub(crate) fn write(&self, offset_bytes: u64, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        let chunk = u64::from(self.chunk_size_bytes);
        let end =
            offset_bytes.checked_add(len).ok_or_else(|| self.bad_range(offset_bytes, len, "overflows"))?;
        if len == 0 || end > self.fragment_len_bytes {
            return Err(self.bad_range(offset_bytes, len, "outside the fragment"));
        }
        if !offset_bytes.is_multiple_of(chunk)
            || (!len.is_multiple_of(chunk) && end != self.fragment_len_bytes)
        {
            return Err(self.bad_range(offset_bytes, len, "not whole chunks"));
        }
        let first_chunk = offset_bytes / chunk;
        let mut table = Vec::with_capacity((len.div_ceil(chunk) * CHUNK_ENTRY_BYTES) as usize);
        for (i, bytes) in data.chunks(chunk as usize).enumerate() {
            table.extend_from_slice(&chunk_crc32(first_chunk + i as u64, bytes).to_le_bytes());
            table.extend_from_slice(&CHUNK_WRITTEN_MARKER.to_le_bytes());
        }
        let mut st = lock(&self.state);
        self.check_writable(&st)?;
        let file = match st.kept_file.as_ref() {
            Some(file) => file.clone(),
            None => {
                let file =
                    self.io.open(&self.path).map_err(|e| Error::io(&self.path, "open fragment extent", e))?;
                st.kept_file = Some(file.clone());
                file
            }
        };
        // Data first, then its CRCs: a crash between the two leaves a chunk that fails its
        // check (and is rewritten), never one that verifies with the wrong bytes. Both go
        // through the page cache (unlike large replica appends): a volume is coded soon
        // after it was written, so its fragments are the freshest data of the cell, which
        // gets read most, and a fragment written buffered is then read from memory.
        let at = EXTENT_DATA_OFFSET_BYTES + offset_bytes;
        let written = write_all_at(file.as_ref(), data, at).and_then(|()| {
            write_all_at(file.as_ref(), &table, self.table_offset() + first_chunk * CHUNK_ENTRY_BYTES)
        });
        if let Err(e) = written {
            // Out of space, the chunk is left unwritten or failing its check (the data goes
            // before its CRC), and can be written again; any other error fails the extent.
            if e.raw_os_error() != Some(libc::ENOSPC) {
                st.failed = true;
            }
            return Err(Error::io(&self.path, "write fragment chunks", e));
        }
        Ok(())
    }

    fn check_writable(&self, st: &FragmentState) -> Result<()> {
        if st.retired {
            return Err(Error::UnknownExtent(self.id));
        }
        if st.state == ExtentState::Sealed {
            return Err(Error::Sealed(self.id));
        }
        if st.failed {
            return Err(Error::Failed(self.id));
        }
        Ok(())
    }

    /// Makes all chunk writes so far durable.
    pub(crate) fn sync(&self) -> Result<()> {
        let mut st = lock(&self.state);
        if st.retired {
            return Err(Error::UnknownExtent(self.id));
        }
        if st.failed {
            return Err(Error::Failed(self.id));
        }
        let Some(file) = st.kept_file.clone() else {
            return Ok(()); // nothing written through this handle since open or seal
        };
        if let Err(e) = file.sync_data() {
            st.failed = true;
            return Err(Error::io(&self.path, "fsync fragment extent", e));
        }
        Ok(())
    }

    /// The whole chunks holding `offset_bytes..offset_bytes + length_bytes`, checked
    /// against the fragment's length; `None` for an empty range.
    fn span(&self, offset_bytes: u64, length_bytes: u64) -> Result<Option<ChunkSpan>> {
        if lock(&self.state).retired {
            return Err(Error::UnknownExtent(self.id));
        }
        let end = offset_bytes
            .checked_add(length_bytes)
            .ok_or_else(|| self.bad_range(offset_bytes, length_bytes, "overflows"))?;
        if end > self.fragment_len_bytes {
            return Err(Error::OffsetPastEnd {
                extent: self.id,
                offset_bytes: end,
                end_bytes: self.fragment_len_bytes,
            });
        }
        if length_bytes == 0 {
            return Ok(None);
        }
        let chunk = u64::from(self.chunk_size_bytes);
        let first = offset_bytes / chunk;
        let last = (end - 1) / chunk;
        Ok(Some(ChunkSpan {
            first,
            last,
            start_bytes: first * chunk,
            end_bytes: ((last + 1) * chunk).min(self.fragment_len_bytes),
        }))
    }

    /// The chunk table entries of `span`.
    fn read_table(&self, file: &dyn IoFile, span: &ChunkSpan) -> Result<Vec<u8>> {
        let mut table = vec![0u8; ((span.last - span.first + 1) * CHUNK_ENTRY_BYTES) as usize];
        read_exact_at(file, &mut table, self.table_offset() + span.first * CHUNK_ENTRY_BYTES)
            .map_err(|e| self.read_error(e, span.start_bytes))?;
        Ok(table)
    }

    /// Reads and verifies a byte range of the fragment. ([`Fragment::read_into`] into a
    /// new buffer; the range is then moved down by less than a chunk and an alignment
    /// unit. Hot paths read into pooled buffers instead.)
    pub(crate) fn read(&self, offset_bytes: u64, length_bytes: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let skip = self.read_into(offset_bytes, length_bytes, &mut out)?;
        out.truncate(skip + length_bytes as usize);
        out.drain(..skip);
        Ok(out)
    }

    /// Reads and verifies a byte range of the fragment into `buf`, reusing its allocation:
    /// `buf` is only grown (never cleared), so a buffer that has held a read before costs
    /// no zeroing and no page faults. The range's whole chunks are read into `buf`; the
    /// range is `buf[skip..skip + length_bytes]` for the `skip` returned (less than one
    /// chunk plus [`crate::io::direct::HUGE_PAGE_BYTES`]: a large read goes at a huge page
    /// boundary of `buf` when it has room, else at a 4 KiB one). The rest of `buf` holds
    /// leftovers.
    ///
    /// A large span comes from the page cache if it holds all of it, else straight from the
    /// device into the first aligned place in `buf` ([`read_large`]); shorter spans, and
    /// large ones the backend offers neither way for, are read through the page cache into
    /// the start of `buf`.
    pub(crate) fn read_into(&self, offset_bytes: u64, length_bytes: u64, buf: &mut Vec<u8>) -> Result<usize> {
        let Some(span) = self.span(offset_bytes, length_bytes)? else { return Ok(0) };
        let file = self.file()?;
        let table = self.read_table(file.as_ref(), &span)?;
        let span_len = (span.end_bytes - span.start_bytes) as usize;
        let data_at = EXTENT_DATA_OFFSET_BYTES + span.start_bytes;
        let large = read_large(self.io.as_ref(), &self.path, file.as_ref(), data_at, span_len, buf)
            .map_err(|e| self.read_error(e, span.start_bytes))?;
        let start = match large {
            Some(start) => start,
            None => {
                if buf.len() < span_len {
                    buf.resize(span_len, 0);
                }
                read_exact_at(file.as_ref(), &mut buf[..span_len], data_at)
                    .map_err(|e| self.read_error(e, span.start_bytes))?;
                0
            }
        };
        for (i, bytes) in buf[start..start + span_len].chunks(self.chunk_size_bytes as usize).enumerate() {
            let at = i * CHUNK_ENTRY_BYTES as usize;
            self.verify_chunk(span.first + i as u64, bytes, &table[at..at + CHUNK_ENTRY_BYTES as usize])?;
        }
        Ok(start + (offset_bytes - span.start_bytes) as usize)
    }

    fn read_error(&self, e: std::io::Error, offset_bytes: u64) -> Error {
        Error::read(self.id, offset_bytes, &self.path, "read fragment", e)
    }

    fn verify_chunk(&self, index: u64, bytes: &[u8], entry: &[u8]) -> Result<()> {
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&entry[0..4]);
        let mut marker = [0u8; 4];
        marker.copy_from_slice(&entry[4..8]);
        let offset_bytes = index * u64::from(self.chunk_size_bytes);
        match u32::from_le_bytes(marker) {
            CHUNK_WRITTEN_MARKER => {}
            0 if entry == [0u8; 8] => return Err(Error::Unwritten { extent: self.id, chunk_index: index }),
            _ => {
                return Err(Error::Corrupt {
                    extent: self.id,
                    offset_bytes,
                    kind: CorruptKind::ChunkEntry { chunk_index: index },
                });
            }
        }
        if chunk_crc32(index, bytes) != u32::from_le_bytes(crc) {
            return Err(Error::Corrupt {
                extent: self.id,
                offset_bytes,
                kind: CorruptKind::ChunkChecksum { chunk_index: index },
            });
        }
        Ok(())
    }

    /// Seals the fragment: every chunk must have been written. Fsyncs and records the
    /// state in the catalog. Idempotent.
    pub(crate) fn seal(&self, catalog: &Catalog) -> Result<()> {
        let mut st = lock(&self.state);
        if st.retired {
            return Err(Error::UnknownExtent(self.id));
        }
        if st.state == ExtentState::Sealed {
            return Ok(());
        }
        if st.failed {
            return Err(Error::Failed(self.id));
        }
        let file = match st.kept_file.clone() {
            Some(file) => file,
            None => self.io.open(&self.path).map_err(|e| Error::io(&self.path, "open fragment extent", e))?,
        };
        let mut table = vec![0u8; (self.chunks() * CHUNK_ENTRY_BYTES) as usize];
        read_exact_at(file.as_ref(), &mut table, self.table_offset()).map_err(|e| self.read_error(e, 0))?;
        for (index, entry) in table.chunks(CHUNK_ENTRY_BYTES as usize).enumerate() {
            if entry == [0u8; 8] {
                return Err(Error::Unwritten { extent: self.id, chunk_index: index as u64 });
            }
        }
        if let Err(e) = file.sync_data() {
            st.failed = true;
            return Err(Error::io(&self.path, "fsync fragment extent", e));
        }
        let entry = ExtentEntry {
            state: ExtentState::Sealed,
            created_unix_ms: self.created_unix_ms,
            length_bytes: self.fragment_len_bytes,
            chunk_size_bytes: self.chunk_size_bytes,
        };
        catalog.put_extent(self.id, &entry)?;
        st.state = ExtentState::Sealed;
        st.kept_file = None;
        Ok(())
    }

    /// Stops all further operations (moving to the trash).
    pub(crate) fn retire(&self) {
        let mut st = lock(&self.state);
        st.retired = true;
        st.kept_file = None;
    }

    /// Undoes [`Fragment::retire`] (the delete it began could not be recorded). An open
    /// fragment gets a handle again, so that its next sync makes the chunks written
    /// before the delete durable (with none, a sync has nothing to do).
    pub(crate) fn unretire(&self) {
        let mut st = lock(&self.state);
        if st.state == ExtentState::Open {
            st.kept_file = self.io.open(&self.path).ok();
        }
        st.retired = false;
    }

    pub(crate) fn state(&self) -> ExtentState {
        lock(&self.state).state
    }

    pub(crate) fn is_failed(&self) -> bool {
        lock(&self.state).failed
    }
}
