//! Appends to a replica: records written back to back, made durable by a group fsync.

// The parent's types, helpers and imports: this file is one part of `Replica`.
use super::*;

impl Replica {
    /// The checks an append makes before writing (live, open, not failed, ending at
    /// `expected_offset_bytes` if given), made alone: so that a refusal for space does
    /// not hide why the append could not have been made anyway.
    pub(crate) fn check_appendable(&self, expected_offset_bytes: Option<u64>) -> Result<()> {
        self.check_appendable_locked(&lock(&self.append), expected_offset_bytes)
    }

    /// [`Replica::check_appendable`] with the append lock held (`st`).
    fn check_appendable_locked(&self, st: &AppendState, expected_offset_bytes: Option<u64>) -> Result<()> {
        self.check_live()?;
        if st.state == ExtentState::Sealed {
            return Err(Error::Sealed(self.id));
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Failed(self.id));
        }
        if let Some(expected) = expected_offset_bytes
            && expected != st.end_bytes
        {
            return Err(Error::OffsetMismatch {
                extent: self.id,
                expected_bytes: expected,
                end_bytes: st.end_bytes,
            });
        }
        Ok(())
    }

    /// Appends records back to back; returns once all of them are durable (one fsync for
    /// the batch, shared with concurrent appenders). `expected_offset_bytes`, when given,
    /// must equal the current end (the lease holder assigns offsets). Either every record
    /// is written or none is acknowledged: a failed write fails the extent.
    pub(crate) fn append(
        &self,
        catalog: &Catalog,
        expected_offset_bytes: Option<u64>,
        records: &[RecordIn<'_>],
    ) -> Result<Vec<RecordLocation>> {
        for r in records {
            let payload_len = r.payload.len() as u64;
            if payload_len > self.payload_max_bytes {
                return Err(Error::RecordTooLarge {
                    size_bytes: payload_len,
                    limit_bytes: self.payload_max_bytes,
                });
            }
        }
        // Checksums before the lock: appenders to one extent only serialize on the writes.
        let crcs: Vec<u32> =
            records.iter().map(|r| r.payload_crc32.unwrap_or_else(|| crc32fast::hash(r.payload))).collect();
        let (locations, end_bytes) = {
            let mut st = lock(&self.append);
            self.check_appendable_locked(&st, expected_offset_bytes)?;
            let file = self.file()?;
            let mut locations = Vec::with_capacity(records.len());
            let mut headers = Vec::with_capacity(records.len());
            let mut offset = st.end_bytes;
            for (r, crc) in records.iter().zip(&crcs) {
                let header = RecordHeader {
                    payload_len_bytes: r.payload.len() as u32,
                    record_offset_bytes: offset,
                    sha256: *r.sha256,
                    payload_crc32: *crc,
                };
                let location =
                    RecordLocation { offset_bytes: offset, record_len_bytes: header.record_len_bytes() };
                offset = location.end_bytes();
                locations.push(location);
                headers.push(header.encode());
            }
            let total_bytes = (offset - st.end_bytes) as usize;
            let direct = lock(&self.direct_file).clone().filter(|_| total_bytes > DIRECT_APPEND_MIN_BYTES);
            let mut written = match direct {
                Some(direct) => self.write_direct(&direct, &st, records, &headers, total_bytes),
                None => Err(None),
            };
            if let Err(None) = written {
                written = write_buffered(file.as_ref(), st.end_bytes, records, &headers).map_err(Some);
            }
            if let Err(Some(e)) = written {
                // Out of space, nothing the extent holds is in doubt: the write stopped
                // short, past the end (the next append writes over those bytes; a seal or a
                // reopen cuts them off), so the append fails and the extent stays
                // writable. Any other write error may have cost written data: the extent
                // fails (and with it the disk, in its server's heartbeat).
                if e.raw_os_error() != Some(libc::ENOSPC) {
                    self.failed.store(true, Ordering::Release);
                }
                return Err(Error::io(&self.path, "append record", e));
            }
            st.tail = tail_after(&st.tail, offset, records, &headers);
            st.end_bytes = offset;
            self.written_end_bytes.store(offset, Ordering::Release);
            (locations, offset)
        };
        if !locations.is_empty() {
            self.sync_to(catalog, end_bytes)?;
        }
        Ok(locations)
    }

    /// Writes an append's records with direct writes from the start of the extent's
    /// partial last block, staged through one aligned buffer of at most
    /// [`DIRECT_STAGING_MAX_BYTES`] (written whenever it fills): `Err(None)` when the
    /// writes cannot be direct here (the kernel refused the alignment; direct writes stop
    /// for this extent), so the caller writes the whole append buffered instead, giving
    /// any bytes already written the same values again.
    fn write_direct(
        &self,
        direct: &DirectFile,
        st: &AppendState,
        records: &[RecordIn<'_>],
        headers: &[[u8; RECORD_HEADER_BYTES]],
        total_bytes: usize,
    ) -> std::result::Result<(), Option<std::io::Error>> {
        let mut buf = AlignedBuf::take(
            (st.tail.len() + total_bytes + DIRECT_ALIGN_BYTES).min(DIRECT_STAGING_MAX_BYTES),
        );
        // Data offset of the buffer's first byte: always aligned, since a buffer is only
        // written early when full, and its capacity is a multiple of the alignment.
        let mut at = align_down(st.end_bytes);
        buf.extend_from_slice(&st.tail);
        let mut written = Ok(());
        'records: for (r, header) in records.iter().zip(headers) {
            for piece in [&header[..], r.payload] {
                let mut rest = piece;
                while !rest.is_empty() {
                    let room = buf.capacity() - buf.len();
                    if room == 0 {
                        written = direct.write_all_at(buf.as_slice(), EXTENT_DATA_OFFSET_BYTES + at);
                        if written.is_err() {
                            break 'records;
                        }
                        at += buf.len() as u64;
                        buf.clear();
                        continue;
                    }
                    let n = room.min(rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
        if written.is_ok() {
            buf.pad_to_alignment();
            written = direct.write_all_at(buf.as_slice(), EXTENT_DATA_OFFSET_BYTES + at);
        }
        match written {
            Ok(()) => Ok(()),
            // Whatever was written already gets the same bytes again from the buffered path.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(extent = %self.id, error = %e, "direct write refused; appends stay buffered");
                *lock(&self.direct_file) = None;
                Err(None)
            }
            Err(e) => Err(Some(e)),
        }
    }

    /// Waits until everything up to `end_bytes` is durable. The first waiter finding no
    /// fsync in progress runs one for everything written so far; the others wait for it
    /// and re-check: that is the group commit.
    fn sync_to(&self, catalog: &Catalog, end_bytes: u64) -> Result<()> {
        if self.durable_end_bytes.load(Ordering::Acquire) >= end_bytes {
            return Ok(());
        }
        let mut st = lock(&self.sync);
        loop {
            if self.durable_end_bytes.load(Ordering::Acquire) >= end_bytes {
                return Ok(());
            }
            self.check_live()?;
            if self.failed.load(Ordering::Acquire) {
                return Err(Error::Failed(self.id));
            }
            if self.written_end_bytes.load(Ordering::Acquire) < end_bytes {
                // A seal truncated the extent below this record before it became durable.
                return Err(Error::Sealed(self.id));
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.syncing = true;
            let target = self.written_end_bytes.load(Ordering::Acquire);
            drop(st);
            let result = self.file().and_then(|file| {
                file.sync_data().map_err(|e| Error::io(&self.path, "fsync replica extent", e))
            });
            match &result {
                Ok(()) => {
                    self.durable_end_bytes.store(target, Ordering::Release);
                    let entry = ExtentEntry {
                        state: ExtentState::Open,
                        created_unix_ms: self.created_unix_ms,
                        length_bytes: target.min(self.watermark_cap_bytes.load(Ordering::Acquire)),
                        chunk_size_bytes: 0,
                    };
                    if let Err(e) = catalog.put_watermark(self.id, &entry) {
                        // Only recovery's starting point is affected; the data is durable.
                        tracing::warn!(extent = %self.id, error = %e, "cannot raise durable watermark");
                    }
                }
                // After a failed fsync the page cache state is unknown: stop writing.
                Err(_) => self.failed.store(true, Ordering::Release),
            }
            st = lock(&self.sync);
            st.syncing = false;
            self.synced.notify_all();
            result?;
        }
    }

    /// Takes the sync mutex once no fsync is running; holding it keeps new ones out.
    pub(super) fn quiesce_syncs(&self) -> MutexGuard<'_, SyncState> {
        let mut st = lock(&self.sync);
        while st.syncing {
            st = self.synced.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st
    }
}
