//! Which bytes of a partition the filesystem's own records show unchanged
//! between an earlier copy of it (a chain point) and the disk now, so a new
//! point need not read them: Acronis' "fast incremental", Macrium's "delta
//! incremental indexing".
//!
//! Only regular files' data qualifies, and only when the file's inode (ext)
//! or MFT record (NTFS) is byte for byte the same in both copies and its
//! data lies in the same blocks: every write through the filesystem changes
//! the inode or record (times, size, block list, NTFS's update sequence
//! number). Metadata (inode tables, the MFT, directories, bitmaps, journals)
//! is always read. Both copies must be clean: a journal still to replay or a
//! hibernated Windows means the blocks may hold newer data than the records
//! say, and the comparison is not used. What it cannot see is a write around
//! the filesystem (a raw write to the device, bad blocks): `--read-all`
//! reads and hashes everything instead.

use crate::extent::{normalize, total, Extent};
use crate::files::ext::ExtFs;
use crate::files::ntfs::NtfsFs;
use crate::files::FilesError;
use crate::fs::FsKind;
use crate::read_at::{read_vec, ReadAt};

/// The data both copies hold unchanged.
#[derive(Debug, Clone, Default)]
pub struct Unchanged {
    /// Partition-relative byte ranges, sorted and merged.
    pub extents: Vec<Extent>,
    /// Files whose data they are.
    pub files: u64,
    pub bytes: u64,
}

/// Compare `old` (e.g. a chain point's copy of the partition) with `new`
/// (the partition now), both `len` bytes, holding a filesystem of `kind`.
/// `Err` says why the comparison cannot be used (then everything is read).
pub fn compare(kind: &FsKind, old: &dyn ReadAt, new: &dyn ReadAt, len: u64) -> Result<Unchanged, String> {
    let head = |d: &dyn ReadAt, which: &str| read_vec(d, 0, 4096.min(len), 4096).map_err(|e| format!("{which}: {e}"));
    let (ho, hn) = (head(old, "the earlier copy")?, head(new, "the disk")?);
    let mut out = Vec::new();
    let files = match kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => {
            let open = |d, h: &[u8], which: &str| usable(ExtFs::open(d, h), |fs| fs.unclean().map(str::to_string), which, "ext filesystem");
            let (o, n) = (open(old, &ho, "the earlier copy")?, open(new, &hn, "the disk")?);
            o.same_files(&n, &mut out).map_err(|e| e.to_string())?
        }
        FsKind::Ntfs => {
            let open = |d, h: &[u8], which: &str| usable(NtfsFs::open(d, h), NtfsFs::unclean, which, "NTFS volume");
            let (o, n) = (open(old, &ho, "the earlier copy")?, open(new, &hn, "the disk")?);
            o.same_files(&n, &mut out).map_err(|e| e.to_string())?
        }
        other => return Err(format!("{} keeps no records to compare (only ext2/3/4 and NTFS do)", other.name())),
    };
    let extents = normalize(out, len);
    let bytes = total(&extents);
    Ok(Unchanged { extents, files, bytes })
}

/// An opened copy of a filesystem whose records can be trusted, or why not
/// (`which`: the copy, for the message; `what`: the filesystem looked for).
fn usable<T>(opened: Result<Option<T>, FilesError>, unclean: impl Fn(&T) -> Option<String>, which: &str, what: &str) -> Result<T, String> {
    match opened {
        Ok(Some(fs)) => match unclean(&fs) {
            None => Ok(fs),
            Some(why) => Err(format!("{which}: {why}")),
        },
        Ok(None) => Err(format!("{which} holds no {what}")),
        Err(e) => Err(format!("{which}: {e}")),
    }
}

/// Is `[start, end)` wholly inside the sorted, merged `extents`? `from` is a
/// cursor for ascending queries (the index of the first extent that may
/// still matter).
pub(crate) fn covers(extents: &[Extent], from: &mut usize, start: u64, end: u64) -> bool {
    while *from < extents.len() && extents[*from].end() <= start {
        *from += 1;
    }
    extents.get(*from).is_some_and(|e| e.start <= start && e.end() >= end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_walks_ascending_ranges() {
        let e = [Extent::new(0, 100), Extent::new(200, 100)];
        let mut i = 0;
        assert!(covers(&e, &mut i, 0, 50));
        assert!(covers(&e, &mut i, 50, 100));
        assert!(!covers(&e, &mut i, 90, 210));
        assert!(covers(&e, &mut i, 200, 300));
        assert!(!covers(&e, &mut i, 250, 301));
        assert!(!covers(&e, &mut i, 400, 500));
    }
}
