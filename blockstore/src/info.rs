//! Plain descriptions a disk gives of itself: identity, open report, extent info, stats.

use std::fs;
use std::path::{Path, PathBuf};

use crate::catalog::Catalog;
use crate::error::{Error, ExtentState, Result};
use crate::id::ExtentId;
use crate::recovery::CorruptSpan;
use crate::replica::ReplicaRecovery;

/// Disk identity encoding version in the catalog.
const IDENTITY_VERSION: u8 = 1;
const IDENTITY_META: &str = "disk";

/// The identity a disk is given when first formatted, kept in its catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskIdentity {
    /// Random 128-bit id: tells two disks apart even if mounted at swapped paths.
    pub disk_uuid: [u8; 16],
    /// When the disk was formatted (Unix milliseconds).
    pub created_unix_ms: u64,
}

/// What opening the disk found and did.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Open replicas whose tail recovery verified, truncated or found damaged, with what
    /// recovery did.
    pub recovered: Vec<(ExtentId, ReplicaRecovery)>,
    /// Open replicas with damaged records kept in place (valid records follow them):
    /// bad extents to report for repair; their other records stay readable.
    pub corrupt: Vec<(ExtentId, Vec<CorruptSpan>)>,
    /// Extents in the catalog whose file is gone.
    pub missing: Vec<ExtentId>,
    /// Extents whose file is shorter than the catalog says, or fails its header check.
    pub damaged: Vec<(ExtentId, String)>,
    /// Files in `extents/` that the catalog does not know (a create cut short by a crash),
    /// moved to the trash.
    pub orphans_trashed: Vec<ExtentId>,
    /// Files in `extents/` with names that are not extent names; left alone.
    pub unknown_files: Vec<PathBuf>,
    /// Deletes that a crash interrupted and opening completed.
    pub deletes_completed: usize,
}

impl OpenReport {
    /// Every extent that opening found missing, damaged or holding damaged records, with
    /// why: what the owner of the disk reports for repair.
    pub fn bad_extents(&self) -> Vec<(ExtentId, String)> {
        let mut out: Vec<(ExtentId, String)> =
            self.missing.iter().map(|id| (*id, "extent file is missing at open".to_string())).collect();
        out.extend(self.damaged.iter().map(|(id, why)| (*id, format!("damaged at open: {why}"))));
        for (id, spans) in &self.corrupt {
            let first = spans.first().map_or(0, |s| s.offset_bytes);
            out.push((
                *id,
                format!("{} damaged record(s) kept at open, the first at data offset {first}", spans.len()),
            ));
        }
        out
    }
}

/// Public description of one extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentInfo {
    /// Which extent.
    pub id: ExtentId,
    /// Open or sealed.
    pub state: ExtentState,
    /// Replica: durable data length. Fragment: fragment length.
    pub length_bytes: u64,
    /// Fragment chunk size; 0 for replicas.
    pub chunk_size_bytes: u32,
    /// Creation time.
    pub created_unix_ms: u64,
    /// True after a write or fsync error: no more writes until the disk is reopened.
    pub failed: bool,
}

/// Capacity and usage of a disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStat {
    /// Size of the file system holding the disk.
    pub capacity_bytes: u64,
    /// Bytes the file system can still give us.
    pub free_bytes: u64,
    /// Of `free_bytes`, those kept for the disk's catalog: data writes stop short of them
    /// ([`crate::DiskOptions::reserve_bytes`]).
    pub reserve_bytes: u64,
    /// Bytes data writes can still take: `free_bytes` less `reserve_bytes` (the trash
    /// not counted: only fragments may purge it). What the volume server tells the
    /// master, whose placement counts it.
    pub data_room_bytes: u64,
    /// Trash entries unlinked within their retention to make room for a fragment since
    /// the open ([`crate::DiskOptions::purge_trash_for_fragments`]).
    pub trash_purged_for_fragments: u64,
    /// Bytes held by live extent files.
    pub used_bytes: u64,
    /// Bytes held by extents in the trash.
    pub trash_bytes: u64,
    /// Live extents.
    pub extents: u64,
    /// Live extents still open.
    pub open_extents: u64,
    /// Extents in the trash.
    pub trash_extents: u64,
    /// Live extents that failed a write or an fsync (no more writes until reopened): what
    /// they hold on disk cannot be trusted, so the volume server reports the disk failed.
    pub failed_extents: u64,
    /// Writes of the disk's own structures that failed with an I/O error other than a
    /// lack of space since the open: an extent's create (its file, header or directory
    /// entry) or a catalog write. The device is failing writes, so the volume server
    /// reports the disk failed, as for a failed extent (seen: a disk whose file system
    /// died took no appends, so only fragment creates failed, and every encode onto it
    /// failed for good while the disk was still reported healthy).
    pub write_faults: u64,
    /// Distinct extents whose reads the device failed since the open
    /// ([`crate::Error::Unreadable`]: EIO and its kin). Each is reported and rebuilt; many
    /// mean the device is going bad, and the volume server reports the disk failed at
    /// its threshold.
    pub unreadable_extents: u64,
    /// Milliseconds since the oldest operation still under way on the disk began (a read,
    /// an append and its fsync, a create, a delete; 0 when none is): a device that stopped
    /// answering shows here, where a busy one does not, and the volume server reports a
    /// disk failed past its `disk_hung_after`.
    pub oldest_op_ms: u64,
}

/// What a trash purge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Trash entries unlinked.
    pub purged: u64,
    /// Bytes freed (the entries' file lengths).
    pub freed_bytes: u64,
    /// Bytes the unlinks gave back to the file system: the files' allocated blocks (a
    /// fragment a failed encode left may be sparse).
    pub given_back_bytes: u64,
    /// Entries kept because they are younger than the retention.
    pub kept: u64,
    /// Of `purged`, entries younger than the retention, unlinked because the file system
    /// was short of free space ([`crate::Disk::purge_trash_keeping_free`]).
    pub early: u64,
}

/// What a purge knows of the file system's space (see
/// [`crate::Disk::purge_trash_for_space_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrashSpace {
    /// Bytes free before the purge.
    pub free_bytes: u64,
    /// Bytes that should be free: entries within their retention are unlinked, oldest
    /// first, while fewer are.
    pub free_min_bytes: u64,
}

pub(crate) fn load_or_create_identity(catalog: &Catalog) -> Result<DiskIdentity> {
    if let Some(bytes) = catalog.meta(IDENTITY_META)? {
        if bytes.len() != 25 || bytes[0] != IDENTITY_VERSION {
            return Err(Error::CatalogCorrupt {
                key: IDENTITY_META.to_string(),
                detail: "unknown disk identity version or length".to_string(),
            });
        }
        let mut disk_uuid = [0u8; 16];
        disk_uuid.copy_from_slice(&bytes[1..17]);
        let mut created = [0u8; 8];
        created.copy_from_slice(&bytes[17..25]);
        return Ok(DiskIdentity { disk_uuid, created_unix_ms: u64::from_le_bytes(created) });
    }
    let mut disk_uuid = [0u8; 16];
    let urandom = Path::new("/dev/urandom");
    fs::File::open(urandom)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut disk_uuid))
        .map_err(|e| Error::io(urandom, "read random disk id", e))?;
    let identity = DiskIdentity { disk_uuid, created_unix_ms: crate::clock::now_unix_ms() };
    let mut bytes = vec![IDENTITY_VERSION];
    bytes.extend_from_slice(&identity.disk_uuid);
    bytes.extend_from_slice(&identity.created_unix_ms.to_le_bytes());
    catalog.put_meta(IDENTITY_META, &bytes)?;
    Ok(identity)
}

/// (capacity, available) bytes of the file system holding `path`.
pub(crate) fn statvfs(path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::io(path, "statvfs", std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    let mut out = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is a valid NUL-terminated string and `out` is writable memory of the
    // right type; statvfs initializes it when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), out.as_mut_ptr()) };
    if rc != 0 {
        return Err(Error::io(path, "statvfs", std::io::Error::last_os_error()));
    }
    // SAFETY: statvfs returned 0, so `out` is initialized.
    let st = unsafe { out.assume_init() };
    // The field types differ between platforms (u32 on some), hence the casts.
    #[allow(clippy::unnecessary_cast)]
    let (frsize, blocks, available) = (st.f_frsize as u64, st.f_blocks as u64, st.f_bavail as u64);
    Ok((blocks * frsize, available * frsize))
}
