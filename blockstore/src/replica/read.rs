//! Reads of a replica's records, verified before they are returned.

// The parent's types, helpers and imports: this file is one part of `Replica`.
use super::*;

impl Replica {
    /// Reads and verifies the record at `offset_bytes`.
    pub(crate) fn read_record(&self, offset_bytes: u64) -> Result<Record> {
        self.check_live()?;
        let end = self.durable_end_bytes.load(Ordering::Acquire);
        if !ends_within(offset_bytes, RECORD_HEADER_BYTES as u64, end) {
            return Err(Error::OffsetPastEnd { extent: self.id, offset_bytes, end_bytes: end });
        }
        let file = self.file()?;
        let mut payload = Vec::new();
        let header =
            read_verified(file.as_ref(), self.id, offset_bytes, self.payload_max_bytes, &mut payload)
                .map_err(|e| self.io_context(e))?;
        if !ends_within(offset_bytes, header.record_len_bytes(), end) {
            return Err(Error::Corrupt { extent: self.id, offset_bytes, kind: CorruptKind::Truncated });
        }
        Ok(Record { offset_bytes, sha256: header.sha256, payload })
    }

    /// Reads and verifies the record at `offset_bytes` into `buf`, reusing its allocation:
    /// `buf` is only grown (never cleared), so a buffer that has held a block before costs
    /// no zeroing and no page faults. Given the record's length (the index has it), header
    /// and payload come in one read: for a record of at least [`DIRECT_READ_MIN_BYTES`],
    /// from the page cache if it holds all of it, else a direct one ([`read_large`]).
    /// Returns the header and where the record starts in `buf` (0 unless the read went
    /// direct; then less than [`DIRECT_ALIGN_BYTES`] plus the record's offset in its first
    /// aligned unit): the record is `buf[start..start + header.record_len_bytes()]`;
    /// beyond that `buf` holds leftovers.
    pub(crate) fn read_record_into(
        &self,
        offset_bytes: u64,
        record_len_hint: Option<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<(RecordHeader, usize)> {
        self.check_live()?;
        let end = self.durable_end_bytes.load(Ordering::Acquire);
        if !ends_within(offset_bytes, RECORD_HEADER_BYTES as u64, end) {
            return Err(Error::OffsetPastEnd { extent: self.id, offset_bytes, end_bytes: end });
        }
        let hint = record_len_hint.filter(|len| self.could_be_record(offset_bytes, *len, end));
        if let Some(len) = hint.filter(|len| *len >= DIRECT_READ_MIN_BYTES as u64)
            && let Some(start) = self.read_large(offset_bytes, len as usize, buf)?
        {
            let record = &buf[start..start + len as usize];
            if let Some(header) = self.check_whole_record(offset_bytes, end, record)? {
                return Ok((header, start));
            }
            // The hint was not the record's length: read it as if there were none.
        }
        self.read_record_buffered(offset_bytes, hint, end, buf).map(|header| (header, 0))
    }

    /// The header of `record` (read at `offset_bytes` as one whole record of a hinted
    /// length), verified with its payload; `None` if the header announces another length.
    fn check_whole_record(&self, offset_bytes: u64, end: u64, record: &[u8]) -> Result<Option<RecordHeader>> {
        let corrupt = |kind| Error::Corrupt { extent: self.id, offset_bytes, kind };
        let head: &[u8; RECORD_HEADER_BYTES] = record
            .get(..RECORD_HEADER_BYTES)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| corrupt(CorruptKind::Truncated))?;
        let header = RecordHeader::decode(head, offset_bytes, self.payload_max_bytes).map_err(corrupt)?;
        if header.record_len_bytes() != record.len() as u64 {
            return Ok(None);
        }
        if !ends_within(offset_bytes, header.record_len_bytes(), end) {
            return Err(corrupt(CorruptKind::Truncated));
        }
        header.check_payload(&record[RECORD_HEADER_BYTES..]).map_err(corrupt)?;
        Ok(Some(header))
    }

    /// A large read of the `len` record bytes at `offset_bytes` into `buf` ([`read_large`]:
    /// from the page cache if it holds them, else direct): where they start, or `None` when
    /// the caller should read through the page cache.
    fn read_large(&self, offset_bytes: u64, len: usize, buf: &mut Vec<u8>) -> Result<Option<usize>> {
        let file = self.file()?;
        read_large(
            self.io.as_ref(),
            &self.path,
            file.as_ref(),
            EXTENT_DATA_OFFSET_BYTES + offset_bytes,
            len,
            buf,
        )
        .map_err(|e| self.io_context(eof_is_truncation(e, self.id, offset_bytes)))
    }

    /// [`Replica::read_record_into`] through the page cache, into the start of `buf`.
    fn read_record_buffered(
        &self,
        offset_bytes: u64,
        hint: Option<u64>,
        end: u64,
        buf: &mut Vec<u8>,
    ) -> Result<RecordHeader> {
        let corrupt = |kind| Error::Corrupt { extent: self.id, offset_bytes, kind };
        let file = self.file()?;
        let at = EXTENT_DATA_OFFSET_BYTES + offset_bytes;
        let read = |buf: &mut Vec<u8>, from: usize, to: usize| -> Result<()> {
            if buf.len() < to {
                buf.resize(to, 0);
            }
            read_exact_at(file.as_ref(), &mut buf[from..to], at + from as u64)
                .map_err(|e| self.io_context(eof_is_truncation(e, self.id, offset_bytes)))
        };
        // With the length known, everything in one read; otherwise (or if the hint was
        // wrong) the header first, then the payload it announces.
        let mut have = 0usize;
        if let Some(len) = hint {
            read(buf, 0, len as usize)?;
            have = len as usize;
        } else {
            read(buf, 0, RECORD_HEADER_BYTES)?;
        }
        let head: &[u8; RECORD_HEADER_BYTES] =
            buf[..RECORD_HEADER_BYTES].try_into().map_err(|_| corrupt(CorruptKind::Truncated))?;
        let header = RecordHeader::decode(head, offset_bytes, self.payload_max_bytes).map_err(corrupt)?;
        let len = header.record_len_bytes();
        if !ends_within(offset_bytes, len, end) {
            return Err(corrupt(CorruptKind::Truncated));
        }
        let len = len as usize;
        if have != len {
            read(buf, RECORD_HEADER_BYTES, len)?;
        }
        header.check_payload(&buf[RECORD_HEADER_BYTES..len]).map_err(corrupt)?;
        Ok(header)
    }

    /// [`Replica::read_record_into`] for a record of known length `record_len_bytes`,
    /// only if the page cache holds it and the extent's file is already open: `Ok(None)`
    /// means "not without blocking" (or a length that is not the record's); the caller
    /// then takes the blocking path. Whatever is read is verified as there; corruption is
    /// an error here too.
    pub(crate) fn read_record_cached(
        &self,
        offset_bytes: u64,
        record_len_bytes: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Option<RecordHeader>> {
        self.check_live()?;
        let end = self.durable_end_bytes.load(Ordering::Acquire);
        if !self.could_be_record(offset_bytes, record_len_bytes, end) {
            return Ok(None);
        }
        let Some(file) = lock(&self.kept_file).clone() else { return Ok(None) };
        let len = record_len_bytes as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        if !file.read_cached_at(&mut buf[..len], EXTENT_DATA_OFFSET_BYTES + offset_bytes) {
            return Ok(None);
        }
        let corrupt = |kind| Error::Corrupt { extent: self.id, offset_bytes, kind };
        let head: &[u8; RECORD_HEADER_BYTES] =
            buf[..RECORD_HEADER_BYTES].try_into().map_err(|_| corrupt(CorruptKind::Truncated))?;
        let header = RecordHeader::decode(head, offset_bytes, self.payload_max_bytes).map_err(corrupt)?;
        if header.record_len_bytes() != record_len_bytes {
            return Ok(None);
        }
        header.check_payload(&buf[RECORD_HEADER_BYTES..len]).map_err(corrupt)?;
        Ok(Some(header))
    }

    /// Whether a record of `len_bytes` at `offset_bytes` fits the format and the durable
    /// data ending at `end_bytes` (a caller's length is only trusted that far).
    fn could_be_record(&self, offset_bytes: u64, len_bytes: u64, end_bytes: u64) -> bool {
        len_bytes >= RECORD_HEADER_BYTES as u64
            && len_bytes <= RECORD_HEADER_BYTES as u64 + self.payload_max_bytes
            && ends_within(offset_bytes, len_bytes, end_bytes)
    }
}
