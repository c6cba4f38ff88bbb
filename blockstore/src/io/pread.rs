//! The portable backend: positional reads and writes with `pread`/`pwrite`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::{IoBackend, IoFile};

/// pread/pwrite on std files; works wherever Unix file I/O does.
#[derive(Debug, Default, Clone, Copy)]
pub struct PreadBackend;

impl IoBackend for PreadBackend {
    fn name(&self) -> String {
        "pread".to_string()
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(PreadFile { file }))
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Arc::new(PreadFile { file }))
    }

    fn open_direct(&self, path: &Path) -> io::Result<Option<super::direct::DirectFile>> {
        super::direct::DirectFile::open(path)
    }

    fn open_direct_read(&self, path: &Path) -> io::Result<Option<super::direct::DirectFile>> {
        super::direct::DirectFile::open_read(path)
    }
}

struct PreadFile {
    file: File,
}

impl IoFile for PreadFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    #[cfg(target_os = "linux")]
    fn read_cached_at(&self, buf: &mut [u8], offset: u64) -> bool {
        use std::os::fd::AsRawFd;
        super::pread_nowait(self.file.as_raw_fd(), buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.file.write_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.file.set_len(len_bytes)
    }

    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        super::fallocate(&self.file, len_bytes)
    }
}
