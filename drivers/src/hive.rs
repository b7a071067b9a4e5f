//! Windows registry hive ("regf") reader and writer, in pure Rust.
//!
//! Format reference: Maxim Suhanov, "Windows registry file format specification"
//! (github.com/msuhanov/regf), cited below as (regf) with its section names.
//!
//! Why pure Rust instead of libhivex: the `rescue` binary is linked statically
//! against musl; libhivex would add a C library (and its libxml2/iconv
//! dependencies in most builds) to cross-compile and keep patched, and hivex
//! neither replays the new-format transaction logs (.LOG1/.LOG2, it marks a dirty
//! hive clean without applying them) nor exposes the cell-level control we need
//! to keep `lh` lists sorted under `ri` index roots. The writer here is small and
//! every change it makes is checked by an independent parser (python3-hivex) in
//! the tests.
//!
//! Model: the whole file is held in memory; a [`KeyId`] / value offset is a cell
//! offset relative to the start of the hive bins data (file offset - 4096), the
//! same numbers the format uses for its own references. Every offset and length
//! read from the file is checked before use; malformed structures are errors,
//! never panics.
//!
//! Writing: new cells go into the first free cell large enough (split when
//! larger) or into a new hive bin appended at the end; freed cells are marked free
//! but not coalesced (Windows coalesces when it next loads the hive). The header
//! gets seq1 = seq2 = old + 1, the new hive bins data size and the checksum.
//!
//! Deliberately unsupported: volatile keys (never on disk), class names on created
//! keys, security descriptor editing (new keys share their parent's `sk` cell, as
//! `RegCreateKey` does without explicit security), transactional registry (TxR)
//! files, and replay of *old-format* transaction logs (detected and reported).

pub mod log;
mod marvin;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Base block size (regf: Base block).
pub const BASE_BLOCK: usize = 4096;
/// Largest data stored in one cell; bigger values use a `db` record (regf: Big data).
const BIG_DATA_SEGMENT: usize = 16344;
const NONE: u32 = 0xFFFF_FFFF;
const MAX_DEPTH: usize = 512;
/// More keys than a hive of the maximum size (2 GiB) can hold in 80-byte cells.
const MAX_KEYS: usize = 1 << 25;

/// Registry value types (winnt.h `REG_*`).
pub mod reg_type {
    /// REG_NONE.
    pub const NONE: u32 = 0;
    /// REG_SZ.
    pub const SZ: u32 = 1;
    /// REG_EXPAND_SZ.
    pub const EXPAND_SZ: u32 = 2;
    /// REG_BINARY.
    pub const BINARY: u32 = 3;
    /// REG_DWORD.
    pub const DWORD: u32 = 4;
    /// REG_DWORD_BIG_ENDIAN.
    pub const DWORD_BE: u32 = 5;
    /// REG_LINK.
    pub const LINK: u32 = 6;
    /// REG_MULTI_SZ.
    pub const MULTI_SZ: u32 = 7;
    /// REG_QWORD.
    pub const QWORD: u32 = 11;
}

/// Errors reading or editing a hive.
#[derive(Debug, thiserror::Error)]
pub enum HiveError {
    /// File I/O.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a regf file at all.
    #[error("not a registry hive: {reason}")]
    NotAHive {
        /// Why.
        reason: String,
    },
    /// Base block checksum mismatch.
    #[error("hive base block checksum is {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// A hive bin header is broken.
    #[error("hive bin at file offset {file_offset:#x}: {reason}")]
    BadBin {
        /// File offset.
        file_offset: usize,
        /// Why.
        reason: String,
    },
    /// A cell or record is malformed.
    #[error("cell at offset {offset:#x} (file offset {:#x}): {reason}", *offset as usize + BASE_BLOCK)]
    BadCell {
        /// Cell offset (relative to hive bins data).
        offset: u32,
        /// Why.
        reason: String,
    },
    /// Key path not found.
    #[error("registry key not found: {path}")]
    KeyNotFound {
        /// Path.
        path: String,
    },
    /// Transaction log problem.
    #[error("transaction log {file}: {reason}")]
    Log {
        /// Log file.
        file: String,
        /// Why.
        reason: String,
    },
    /// Operation not supported by this implementation.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What.
        what: String,
    },
}

impl HiveError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            HiveError::Io { .. } => "check that the Windows volume is mounted read-write and not hibernated (hiberfil/Fast Startup)",
            HiveError::NotAHive { .. } | HiveError::BadChecksum { .. } | HiveError::BadBin { .. } | HiveError::BadCell { .. } => {
                "the hive is damaged: restore it from Windows\\System32\\config\\RegBack or a backup before retrying"
            }
            HiveError::KeyNotFound { .. } => "this Windows installation lacks the expected key; check the control set and Windows version",
            HiveError::Log { .. } => "the transaction log is damaged; the primary hive may lack recent changes",
            HiveError::Unsupported { .. } => "edit this hive on a running Windows (regedit, Load Hive) instead",
        }
    }
}

fn bad(offset: u32, reason: impl Into<String>) -> HiveError {
    HiveError::BadCell {
        offset,
        reason: reason.into(),
    }
}

pub(crate) fn rd_u16(d: &[u8], pos: usize) -> Option<u16> {
    d.get(pos..pos.checked_add(2)?)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}

pub(crate) fn rd_u32(d: &[u8], pos: usize) -> Option<u32> {
    d.get(pos..pos.checked_add(4)?)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn rd_u64(d: &[u8], pos: usize) -> Option<u64> {
    let lo = rd_u32(d, pos)?;
    let hi = rd_u32(d, pos.checked_add(4)?)?;
    Some(u64::from(lo) | (u64::from(hi) << 32))
}

fn wr_u16(d: &mut [u8], pos: usize, v: u16) {
    if let Some(s) = d.get_mut(pos..pos + 2) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn wr_u32(d: &mut [u8], pos: usize, v: u32) {
    if let Some(s) = d.get_mut(pos..pos + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn wr_u64(d: &mut [u8], pos: usize, v: u64) {
    if let Some(s) = d.get_mut(pos..pos + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Base block checksum (regf: Base block): XOR of the first 127 dwords, with 0
/// mapped to 1 and 0xFFFFFFFF to 0xFFFFFFFE.
pub fn header_checksum(base: &[u8]) -> u32 {
    let mut x = 0u32;
    for i in 0..127 {
        x ^= rd_u32(base, i * 4).unwrap_or(0);
    }
    match x {
        0 => 1,
        0xFFFF_FFFF => 0xFFFF_FFFE,
        v => v,
    }
}

/// Current time as a Windows FILETIME.
fn filetime_now() -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() / 100)
        .unwrap_or(0);
    (secs as u64).saturating_add(116_444_736_000_000_000)
}

/// Upper-case a name the way the registry compares names (per UTF-16 unit).
fn upcase_units(name: &str) -> Vec<u16> {
    name.chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect::<String>()
        .encode_utf16()
        .collect()
}

/// `lh` name hash (regf: Hash leaf): h = h * 37 + upcase(unit).
pub fn lh_hash(name: &str) -> u32 {
    upcase_units(name)
        .iter()
        .fold(0u32, |h, u| h.wrapping_mul(37).wrapping_add(u32::from(*u)))
}

/// Is `name` storable as a "compressed" (Latin-1) name?
fn latin1(name: &str) -> Option<Vec<u8>> {
    name.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

fn decode_name(raw: &[u8], compressed: bool) -> String {
    if compressed {
        raw.iter().map(|b| char::from(*b)).collect()
    } else {
        let units = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        char::decode_utf16(units)
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    }
}

/// Key node cell offset.
pub type KeyId = u32;

/// A value read from a hive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// Name ("" = default value).
    pub name: String,
    /// REG_* type.
    pub reg_type: u32,
    /// Raw data.
    pub data: Vec<u8>,
}

impl Value {
    /// DWORD (REG_DWORD or any 4-byte value).
    pub fn as_u32(&self) -> Option<u32> {
        if self.data.len() >= 4 && self.reg_type != reg_type::DWORD_BE {
            rd_u32(&self.data, 0)
        } else {
            None
        }
    }

    /// String value (REG_SZ / REG_EXPAND_SZ, UTF-16LE, trailing NULs removed).
    pub fn as_string(&self) -> Option<String> {
        match self.reg_type {
            reg_type::SZ | reg_type::EXPAND_SZ | reg_type::LINK => Some(
                decode_name(&self.data[..self.data.len() & !1], false)
                    .trim_end_matches('\0')
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// REG_MULTI_SZ entries.
    pub fn as_multi_sz(&self) -> Option<Vec<String>> {
        if self.reg_type != reg_type::MULTI_SZ {
            return None;
        }
        let s = decode_name(&self.data[..self.data.len() & !1], false);
        Some(
            s.split('\0')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }
}

/// Encode a string as REG_SZ data (UTF-16LE with terminating NUL).
pub fn sz(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Encode strings as REG_MULTI_SZ data.
pub fn multi_sz(items: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        out.extend(sz(i));
    }
    out.extend([0, 0]);
    out
}

/// What happened when the hive was opened (dirty state, logs replayed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenReport {
    /// Sequence numbers in the primary base block as found.
    pub seq1: u32,
    /// Secondary sequence number as found.
    pub seq2: u32,
    /// seq1 != seq2 (or a log was newer): the primary lacked committed data.
    pub dirty: bool,
    /// Log entries applied.
    pub log_entries_applied: usize,
    /// Sequence numbers of the applied entries (first, last).
    pub log_seq_range: Option<(u32, u32)>,
    /// Warnings for the plan (missing logs, old-format logs, invalid entries).
    pub warnings: Vec<String>,
}

/// An in-memory hive.
#[derive(Clone)]
pub struct Hive {
    data: Vec<u8>,
    free: Vec<(u32, u32)>,
    modified: bool,
    /// What opening did.
    pub report: OpenReport,
}

impl fmt::Debug for Hive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hive")
            .field("len", &self.data.len())
            .field("report", &self.report)
            .finish()
    }
}

/// Fuzz-friendly entry point: open a hive from bytes (no logs); never panics.
pub fn open_hive_bytes(bytes: Vec<u8>) -> Result<Hive, HiveError> {
    Hive::from_bytes(bytes, &[])
}

impl Hive {
    /// Open a primary hive from bytes, replaying the given transaction logs
    /// (`(name, bytes)`, e.g. `SYSTEM.LOG1`) when the hive is dirty.
    pub fn from_bytes(mut data: Vec<u8>, logs: &[(String, Vec<u8>)]) -> Result<Hive, HiveError> {
        if data.len() < BASE_BLOCK {
            return Err(HiveError::NotAHive {
                reason: format!(
                    "{} bytes, shorter than the 4096-byte base block",
                    data.len()
                ),
            });
        }
        if &data[0..4] != b"regf" {
            return Err(HiveError::NotAHive {
                reason: "no 'regf' signature at offset 0".into(),
            });
        }
        let stored = rd_u32(&data, 508).unwrap_or(0);
        let computed = header_checksum(&data);
        let seq1 = rd_u32(&data, 4).unwrap_or(0);
        let seq2 = rd_u32(&data, 8).unwrap_or(0);
        let mut report = OpenReport {
            seq1,
            seq2,
            dirty: seq1 != seq2,
            ..Default::default()
        };
        if stored != computed && logs.is_empty() {
            return Err(HiveError::BadChecksum { stored, computed });
        }
        if !logs.is_empty() {
            log::recover(&mut data, logs, &mut report)?;
        } else if report.dirty {
            report.warnings.push(format!(
                "hive is dirty (sequence numbers {seq1}/{seq2}) and no transaction logs (.LOG1/.LOG2) were found: \
                 changes Windows had only written to the logs are lost; editing continues on the primary file"
            ));
        }
        let mut hive = Hive {
            data,
            free: Vec::new(),
            modified: false,
            report,
        };
        hive.scan_bins()?;
        let root = hive.root();
        hive.key_node(root)?;
        Ok(hive)
    }

    /// Open `path`, replaying `path.LOG1` / `path.LOG2` (any case) if present and needed.
    pub fn open(path: &Path) -> Result<Hive, HiveError> {
        let data = std::fs::read(path).map_err(|source| HiveError::Io {
            action: "reading hive",
            path: path.display().to_string(),
            source,
        })?;
        let mut logs = Vec::new();
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        {
            if let Ok(rd) = std::fs::read_dir(dir) {
                let mut found: Vec<_> = rd
                    .flatten()
                    .filter_map(|e| {
                        let n = e.file_name().to_str()?.to_owned();
                        let up = n.to_ascii_uppercase();
                        let want = name.to_ascii_uppercase();
                        (up == format!("{want}.LOG1")
                            || up == format!("{want}.LOG2")
                            || up == format!("{want}.LOG"))
                        .then_some((n, e.path()))
                    })
                    .collect();
                found.sort();
                for (n, p) in found {
                    let b = std::fs::read(&p).map_err(|source| HiveError::Io {
                        action: "reading transaction log",
                        path: p.display().to_string(),
                        source,
                    })?;
                    if !b.is_empty() {
                        logs.push((n, b));
                    }
                }
            }
        }
        let hive = Hive::from_bytes(data, &logs)?;
        tracing::debug!(
            hive = %path.display(),
            logs = logs.len(),
            dirty = hive.report.dirty,
            replayed = hive.report.log_entries_applied,
            "opened registry hive"
        );
        for w in &hive.report.warnings {
            tracing::warn!(hive = %path.display(), "{w}");
        }
        Ok(hive)
    }

    /// Raw bytes (header not refreshed; see [`Hive::to_bytes`]).
    pub fn raw(&self) -> &[u8] {
        &self.data
    }

    /// Has anything been changed since opening?
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// Hive format minor version (3 = XP, 5 = Vista and later; big data needs 4+).
    pub fn minor_version(&self) -> u32 {
        rd_u32(&self.data, 24).unwrap_or(0)
    }

    /// Walk the hive bins, check their headers and collect free cells.
    fn scan_bins(&mut self) -> Result<(), HiveError> {
        let declared = rd_u32(&self.data, 40).unwrap_or(0) as usize;
        let end = BASE_BLOCK.saturating_add(declared);
        if declared == 0 || declared % 4096 != 0 || end > self.data.len() {
            return Err(HiveError::NotAHive {
                reason: format!("hive bins data size {declared:#x} in the base block does not fit the {}-byte file", self.data.len()),
            });
        }
        // Trailing bytes after the declared bins (Windows pads files) are dropped on write.
        self.data.truncate(end);
        let mut pos = BASE_BLOCK;
        let mut free = Vec::new();
        while pos < end {
            let badbin = |reason: String| HiveError::BadBin {
                file_offset: pos,
                reason,
            };
            if self.data.get(pos..pos + 4) != Some(b"hbin") {
                return Err(badbin(
                    "no 'hbin' signature (zeroed or overwritten data)".into(),
                ));
            }
            let off = rd_u32(&self.data, pos + 4).unwrap_or(NONE) as usize;
            let size = rd_u32(&self.data, pos + 8).unwrap_or(0) as usize;
            if off != pos - BASE_BLOCK {
                return Err(badbin(format!(
                    "records offset {off:#x}, expected {:#x}",
                    pos - BASE_BLOCK
                )));
            }
            if size < 4096 || size % 4096 != 0 || pos + size > end {
                return Err(badbin(format!("bad size {size:#x}")));
            }
            let mut c = pos + 32;
            while c < pos + size {
                let raw = rd_u32(&self.data, c).unwrap_or(0) as i32;
                let len = raw.unsigned_abs() as usize;
                if len < 8 || len % 8 != 0 || c + len > pos + size {
                    return Err(bad(
                        (c - BASE_BLOCK) as u32,
                        format!("bad cell size {raw} in bin at {pos:#x}"),
                    ));
                }
                if raw > 0 {
                    free.push(((c - BASE_BLOCK) as u32, len as u32));
                }
                c += len;
            }
            pos += size;
        }
        self.free = free;
        Ok(())
    }

    /// Data of the allocated cell at `off` as (file position, length).
    fn cell(&self, off: u32) -> Result<(usize, usize), HiveError> {
        if off == NONE {
            return Err(bad(off, "null reference followed"));
        }
        let pos = BASE_BLOCK
            .checked_add(off as usize)
            .ok_or_else(|| bad(off, "offset overflow"))?;
        let raw =
            rd_u32(&self.data, pos).ok_or_else(|| bad(off, "beyond the end of the hive"))? as i32;
        if raw >= 0 {
            return Err(bad(off, format!("cell is not allocated (size {raw})")));
        }
        let len = raw.unsigned_abs() as usize;
        if len < 8 || pos + len > self.data.len() {
            return Err(bad(
                off,
                format!("cell size {len} runs past the end of the hive"),
            ));
        }
        Ok((pos + 4, len - 4))
    }

    fn cell_bytes(&self, off: u32) -> Result<&[u8], HiveError> {
        let (p, l) = self.cell(off)?;
        Ok(&self.data[p..p + l])
    }

    /// Root key.
    pub fn root(&self) -> KeyId {
        rd_u32(&self.data, 36).unwrap_or(NONE)
    }

    fn key_node(&self, key: KeyId) -> Result<&[u8], HiveError> {
        let c = self.cell_bytes(key)?;
        if c.len() < 76 || &c[0..2] != b"nk" {
            return Err(bad(key, "expected a key node ('nk')"));
        }
        let nl = rd_u16(c, 72).unwrap_or(0) as usize;
        if 76 + nl > c.len() {
            return Err(bad(key, format!("key name length {nl} exceeds the cell")));
        }
        Ok(c)
    }

    /// Key name.
    pub fn key_name(&self, key: KeyId) -> Result<String, HiveError> {
        let c = self.key_node(key)?;
        let nl = rd_u16(c, 72).unwrap_or(0) as usize;
        let flags = rd_u16(c, 2).unwrap_or(0);
        Ok(decode_name(&c[76..76 + nl], flags & 0x20 != 0))
    }

    /// Last-written FILETIME of a key.
    pub fn key_timestamp(&self, key: KeyId) -> Result<u64, HiveError> {
        Ok(rd_u64(self.key_node(key)?, 4).unwrap_or(0))
    }

    fn key_field(&self, key: KeyId, at: usize) -> Result<u32, HiveError> {
        rd_u32(self.key_node(key)?, at).ok_or_else(|| bad(key, "short key node"))
    }

    /// Leaf cell offsets of a subkey list (`ri` expanded), plus the list kind.
    fn list_leaves(&self, list: u32) -> Result<Vec<u32>, HiveError> {
        let c = self.cell_bytes(list)?;
        if c.len() < 4 {
            return Err(bad(list, "short subkeys list"));
        }
        if &c[0..2] == b"ri" {
            let n = rd_u16(c, 2).unwrap_or(0) as usize;
            if 4 + n * 4 > c.len() {
                return Err(bad(list, "index root count exceeds the cell"));
            }
            Ok((0..n).filter_map(|i| rd_u32(c, 4 + i * 4)).collect())
        } else {
            Ok(vec![list])
        }
    }

    fn leaf_entries(&self, leaf: u32) -> Result<(LeafKind, Vec<u32>), HiveError> {
        let c = self.cell_bytes(leaf)?;
        if c.len() < 4 {
            return Err(bad(leaf, "short subkeys list"));
        }
        let kind = match &c[0..2] {
            b"lf" => LeafKind::Lf,
            b"lh" => LeafKind::Lh,
            b"li" => LeafKind::Li,
            _ => return Err(bad(leaf, "expected a subkeys list (lf/lh/li/ri)")),
        };
        let n = rd_u16(c, 2).unwrap_or(0) as usize;
        let step = if kind == LeafKind::Li { 4 } else { 8 };
        if 4 + n * step > c.len() {
            return Err(bad(
                leaf,
                format!("subkeys list count {n} exceeds the cell"),
            ));
        }
        Ok((
            kind,
            (0..n).filter_map(|i| rd_u32(c, 4 + i * step)).collect(),
        ))
    }

    /// Subkeys of `key` in on-disk (sorted) order.
    pub fn subkeys(&self, key: KeyId) -> Result<Vec<KeyId>, HiveError> {
        let n = self.key_field(key, 20)?;
        let list = self.key_field(key, 28)?;
        if n == 0 || list == NONE {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for leaf in self.list_leaves(list)? {
            out.extend(self.leaf_entries(leaf)?.1);
        }
        Ok(out)
    }

    /// Case-insensitive direct child lookup.
    pub fn find_subkey(&self, key: KeyId, name: &str) -> Result<Option<KeyId>, HiveError> {
        let want = upcase_units(name);
        for k in self.subkeys(key)? {
            if upcase_units(&self.key_name(k)?) == want {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    /// Open a `\`-separated path below the root (case-insensitive).
    pub fn open_key(&self, path: &str) -> Result<Option<KeyId>, HiveError> {
        let mut k = self.root();
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            match self.find_subkey(k, part)? {
                Some(c) => k = c,
                None => return Ok(None),
            }
        }
        Ok(Some(k))
    }

    /// Like [`Hive::open_key`] but a missing key is an error.
    pub fn key(&self, path: &str) -> Result<KeyId, HiveError> {
        self.open_key(path)?.ok_or_else(|| HiveError::KeyNotFound {
            path: path.to_owned(),
        })
    }

    /// Value cell offsets of a key.
    fn value_cells(&self, key: KeyId) -> Result<Vec<u32>, HiveError> {
        let n = self.key_field(key, 36)? as usize;
        let list = self.key_field(key, 40)?;
        if n == 0 || list == NONE {
            return Ok(Vec::new());
        }
        let c = self.cell_bytes(list)?;
        if n * 4 > c.len() {
            return Err(bad(
                list,
                format!("values list of {n} entries exceeds the cell"),
            ));
        }
        Ok((0..n).filter_map(|i| rd_u32(c, i * 4)).collect())
    }

    fn vk(&self, off: u32) -> Result<&[u8], HiveError> {
        let c = self.cell_bytes(off)?;
        if c.len() < 20 || &c[0..2] != b"vk" {
            return Err(bad(off, "expected a key value ('vk')"));
        }
        let nl = rd_u16(c, 2).unwrap_or(0) as usize;
        if 20 + nl > c.len() {
            return Err(bad(off, "value name exceeds the cell"));
        }
        Ok(c)
    }

    fn value_name_at(&self, off: u32) -> Result<String, HiveError> {
        let c = self.vk(off)?;
        let nl = rd_u16(c, 2).unwrap_or(0) as usize;
        let flags = rd_u16(c, 16).unwrap_or(0);
        Ok(decode_name(&c[20..20 + nl], flags & 1 != 0))
    }

    fn value_at(&self, off: u32) -> Result<Value, HiveError> {
        let name = self.value_name_at(off)?;
        let c = self.vk(off)?;
        let size_raw = rd_u32(c, 4).unwrap_or(0);
        let data_off = rd_u32(c, 8).unwrap_or(NONE);
        let reg_type = rd_u32(c, 12).unwrap_or(0);
        let size = (size_raw & 0x7FFF_FFFF) as usize;
        let data = if size_raw & 0x8000_0000 != 0 {
            data_off.to_le_bytes()[..size.min(4)].to_vec()
        } else if size == 0 {
            Vec::new()
        } else {
            let d = self.cell_bytes(data_off)?;
            if size > BIG_DATA_SEGMENT
                && d.len() >= 8
                && &d[0..2] == b"db"
                && self.minor_version() >= 4
            {
                self.big_data(data_off, size)?
            } else if size > d.len() {
                return Err(bad(
                    data_off,
                    format!(
                        "value data of {size} bytes exceeds its {}-byte cell",
                        d.len()
                    ),
                ));
            } else {
                d[..size].to_vec()
            }
        };
        Ok(Value {
            name,
            reg_type,
            data,
        })
    }

    fn big_data(&self, db: u32, size: usize) -> Result<Vec<u8>, HiveError> {
        let d = self.cell_bytes(db)?;
        let n = rd_u16(d, 2).unwrap_or(0) as usize;
        let list = rd_u32(d, 4).unwrap_or(NONE);
        let l = self.cell_bytes(list)?;
        if n * 4 > l.len() {
            return Err(bad(list, "big data segment list exceeds the cell"));
        }
        let mut out = Vec::with_capacity(size.min(n * BIG_DATA_SEGMENT));
        for i in 0..n {
            let seg = rd_u32(l, i * 4).unwrap_or(NONE);
            let s = self.cell_bytes(seg)?;
            let take = (size - out.len()).min(BIG_DATA_SEGMENT).min(s.len());
            out.extend_from_slice(&s[..take]);
            if out.len() >= size {
                break;
            }
        }
        if out.len() < size {
            return Err(bad(
                db,
                format!("big data holds {} of {size} bytes", out.len()),
            ));
        }
        Ok(out)
    }

    /// All values of a key, in stored order.
    pub fn values(&self, key: KeyId) -> Result<Vec<Value>, HiveError> {
        self.value_cells(key)?
            .into_iter()
            .map(|v| self.value_at(v))
            .collect()
    }

    /// A value by case-insensitive name ("" = default value).
    pub fn value(&self, key: KeyId, name: &str) -> Result<Option<Value>, HiveError> {
        self.find_value_cell(key, name)?
            .map(|(_, off)| self.value_at(off))
            .transpose()
    }

    fn find_value_cell(&self, key: KeyId, name: &str) -> Result<Option<(usize, u32)>, HiveError> {
        let want = upcase_units(name);
        for (i, v) in self.value_cells(key)?.into_iter().enumerate() {
            if upcase_units(&self.value_name_at(v)?) == want {
                return Ok(Some((i, v)));
            }
        }
        Ok(None)
    }

    /// Convenience: DWORD value at `path` / `name`.
    pub fn get_u32(&self, path: &str, name: &str) -> Result<Option<u32>, HiveError> {
        match self.open_key(path)? {
            Some(k) => Ok(self.value(k, name)?.and_then(|v| v.as_u32())),
            None => Ok(None),
        }
    }

    /// Convenience: string value at `path` / `name`.
    pub fn get_string(&self, path: &str, name: &str) -> Result<Option<String>, HiveError> {
        match self.open_key(path)? {
            Some(k) => Ok(self.value(k, name)?.and_then(|v| v.as_string())),
            None => Ok(None),
        }
    }

    /// Full path of a key (root name excluded).
    pub fn key_path(&self, key: KeyId) -> Result<String, HiveError> {
        let mut parts = Vec::new();
        let mut k = key;
        let root = self.root();
        for _ in 0..MAX_DEPTH {
            if k == root {
                parts.reverse();
                return Ok(parts.join("\\"));
            }
            parts.push(self.key_name(k)?);
            k = self.key_field(k, 16)?;
        }
        Err(bad(key, "parent chain too deep or cyclic"))
    }

    // ----------------------------------------------------------------- writing

    fn bins_end(&self) -> usize {
        self.data.len()
    }

    /// Allocate a cell with `len` data bytes (zeroed); returns its offset.
    fn alloc(&mut self, len: usize) -> Result<u32, HiveError> {
        let need = (len + 4 + 7) & !7;
        if let Some(i) = self.free.iter().position(|(_, sz)| *sz as usize >= need) {
            let (off, sz) = self.free[i];
            let rest = sz as usize - need;
            let pos = BASE_BLOCK + off as usize;
            if rest >= 16 {
                self.free[i] = (off + need as u32, rest as u32);
                wr_u32(&mut self.data, pos + need, rest as u32);
                self.write_cell_header(pos, need);
            } else {
                self.free.remove(i);
                self.write_cell_header(pos, sz as usize);
            }
            return Ok(off);
        }
        // Append a new hive bin (regf: Hive bin).
        let bin_size = (need + 32 + 4095) & !4095;
        let pos = self.bins_end();
        let bin_off = (pos - BASE_BLOCK) as u32;
        self.data.resize(pos + bin_size, 0);
        self.data[pos..pos + 4].copy_from_slice(b"hbin");
        wr_u32(&mut self.data, pos + 4, bin_off);
        wr_u32(&mut self.data, pos + 8, bin_size as u32);
        wr_u64(&mut self.data, pos + 20, filetime_now());
        let cell = pos + 32;
        let rest = bin_size - 32 - need;
        self.write_cell_header(cell, need);
        if rest > 0 {
            wr_u32(&mut self.data, cell + need, rest as u32);
            self.free
                .push(((cell + need - BASE_BLOCK) as u32, rest as u32));
        }
        let total = (self.data.len() - BASE_BLOCK) as u32;
        wr_u32(&mut self.data, 40, total);
        Ok((cell - BASE_BLOCK) as u32)
    }

    fn write_cell_header(&mut self, pos: usize, size: usize) {
        wr_u32(&mut self.data, pos, (size as i32).wrapping_neg() as u32);
        for b in &mut self.data[pos + 4..pos + size] {
            *b = 0;
        }
    }

    fn alloc_with(&mut self, bytes: &[u8]) -> Result<u32, HiveError> {
        let off = self.alloc(bytes.len())?;
        let p = BASE_BLOCK + off as usize + 4;
        self.data[p..p + bytes.len()].copy_from_slice(bytes);
        Ok(off)
    }

    fn free_cell(&mut self, off: u32) {
        if off == NONE {
            return;
        }
        let pos = BASE_BLOCK + off as usize;
        if let Some(raw) = rd_u32(&self.data, pos) {
            let raw = raw as i32;
            if raw < 0 {
                let len = raw.unsigned_abs();
                wr_u32(&mut self.data, pos, len);
                self.free.push((off, len));
            }
        }
    }

    fn set_key_field(&mut self, key: KeyId, at: usize, v: u32) -> Result<(), HiveError> {
        let (p, _) = self.cell(key)?;
        wr_u32(&mut self.data, p + at, v);
        Ok(())
    }

    fn touch(&mut self, key: KeyId) -> Result<(), HiveError> {
        let (p, _) = self.cell(key)?;
        wr_u64(&mut self.data, p + 4, filetime_now());
        self.modified = true;
        Ok(())
    }

    fn build_leaf(&self, kind: LeafKind, entries: &[u32]) -> Result<Vec<u8>, HiveError> {
        let mut b = Vec::with_capacity(4 + entries.len() * 8);
        b.extend_from_slice(match kind {
            LeafKind::Lf => b"lf",
            LeafKind::Lh => b"lh",
            LeafKind::Li => b"li",
        });
        let n = u16::try_from(entries.len()).map_err(|_| HiveError::Unsupported {
            what: "more than 65535 subkeys in one list".into(),
        })?;
        b.extend_from_slice(&n.to_le_bytes());
        for e in entries {
            b.extend_from_slice(&e.to_le_bytes());
            match kind {
                LeafKind::Li => {}
                LeafKind::Lh => b.extend_from_slice(&lh_hash(&self.key_name(*e)?).to_le_bytes()),
                LeafKind::Lf => {
                    let name = self.key_name(*e)?;
                    let mut hint = [0u8; 4];
                    for (h, c) in hint.iter_mut().zip(name.chars()) {
                        *h = u8::try_from(u32::from(c)).unwrap_or(b'?');
                    }
                    b.extend_from_slice(&hint);
                }
            }
        }
        Ok(b)
    }

    /// Insert `child` into `parent`'s subkey list, keeping the upper-case order.
    fn list_insert(&mut self, parent: KeyId, child: KeyId, name: &str) -> Result<(), HiveError> {
        let list = self.key_field(parent, 28)?;
        let count = self.key_field(parent, 20)?;
        let want = upcase_units(name);
        if count == 0 || list == NONE {
            let leaf = self.build_leaf(LeafKind::Lh, &[child])?;
            if list != NONE {
                self.free_cell(list);
            }
            let new = self.alloc_with(&leaf)?;
            self.set_key_field(parent, 28, new)?;
        } else {
            let leaves = self.list_leaves(list)?;
            let is_ri = leaves.len() != 1 || leaves[0] != list;
            // Choose the leaf: the first whose last name sorts after the new one.
            let mut chosen = leaves.len().saturating_sub(1);
            for (i, leaf) in leaves.iter().enumerate() {
                let (_, e) = self.leaf_entries(*leaf)?;
                if let Some(last) = e.last() {
                    if upcase_units(&self.key_name(*last)?) > want {
                        chosen = i;
                        break;
                    }
                }
            }
            let leaf = *leaves
                .get(chosen)
                .ok_or_else(|| bad(list, "empty index root"))?;
            let (kind, mut entries) = self.leaf_entries(leaf)?;
            let mut at = entries.len();
            for (i, e) in entries.iter().enumerate() {
                if upcase_units(&self.key_name(*e)?) > want {
                    at = i;
                    break;
                }
            }
            entries.insert(at, child);
            let bytes = self.build_leaf(kind, &entries)?;
            let new = self.alloc_with(&bytes)?;
            self.free_cell(leaf);
            if is_ri {
                let (p, _) = self.cell(list)?;
                wr_u32(&mut self.data, p + 4 + chosen * 4, new);
            } else {
                self.set_key_field(parent, 28, new)?;
            }
        }
        self.set_key_field(parent, 20, count + 1)?;
        // Largest subkey name length, in bytes as UTF-16 (regf: Key node).
        let (p, _) = self.cell(parent)?;
        let cur = rd_u32(&self.data, p + 52).unwrap_or(0);
        let len = (name.encode_utf16().count() * 2) as u32;
        if len > (cur & 0xFFFF) {
            wr_u32(&mut self.data, p + 52, (cur & 0xFFFF_0000) | len);
        }
        Ok(())
    }

    fn list_remove(&mut self, parent: KeyId, child: KeyId) -> Result<(), HiveError> {
        let list = self.key_field(parent, 28)?;
        let count = self.key_field(parent, 20)?;
        let leaves = self.list_leaves(list)?;
        let is_ri = leaves.len() != 1 || leaves[0] != list;
        for (i, leaf) in leaves.iter().enumerate() {
            let (kind, mut entries) = self.leaf_entries(*leaf)?;
            let Some(at) = entries.iter().position(|e| *e == child) else {
                continue;
            };
            entries.remove(at);
            self.free_cell(*leaf);
            let new = if entries.is_empty() {
                NONE
            } else {
                self.alloc_with(&self.build_leaf(kind, &entries)?)?
            };
            if is_ri {
                let mut rest: Vec<u32> = leaves.clone();
                if new == NONE {
                    rest.remove(i);
                } else {
                    rest[i] = new;
                }
                self.free_cell(list);
                let top = if rest.is_empty() {
                    NONE
                } else {
                    let mut b = b"ri".to_vec();
                    b.extend_from_slice(&(rest.len() as u16).to_le_bytes());
                    for r in &rest {
                        b.extend_from_slice(&r.to_le_bytes());
                    }
                    self.alloc_with(&b)?
                };
                self.set_key_field(parent, 28, top)?;
            } else {
                self.set_key_field(parent, 28, new)?;
            }
            self.set_key_field(parent, 20, count.saturating_sub(1))?;
            return Ok(());
        }
        Err(bad(
            list,
            format!("key at {child:#x} is not in its parent's subkey list"),
        ))
    }

    /// Create (or open, if it exists) the subkey `name` of `parent`.
    pub fn create_subkey(&mut self, parent: KeyId, name: &str) -> Result<KeyId, HiveError> {
        if let Some(k) = self.find_subkey(parent, name)? {
            return Ok(k);
        }
        if name.is_empty() || name.contains('\\') || name.encode_utf16().count() > 255 {
            return Err(HiveError::Unsupported {
                what: format!("key name {name:?}"),
            });
        }
        let (raw_name, compressed) = match latin1(name) {
            Some(b) => (b, true),
            None => (
                name.encode_utf16().flat_map(u16::to_le_bytes).collect(),
                false,
            ),
        };
        let sk = self.key_field(parent, 44)?;
        let mut nk = vec![0u8; 76 + raw_name.len()];
        nk[0..2].copy_from_slice(b"nk");
        wr_u16(&mut nk, 2, if compressed { 0x20 } else { 0 });
        wr_u64(&mut nk, 4, filetime_now());
        wr_u32(&mut nk, 16, parent);
        wr_u32(&mut nk, 28, NONE);
        wr_u32(&mut nk, 32, NONE);
        wr_u32(&mut nk, 40, NONE);
        wr_u32(&mut nk, 44, sk);
        wr_u32(&mut nk, 48, NONE);
        wr_u16(&mut nk, 72, raw_name.len() as u16);
        nk[76..].copy_from_slice(&raw_name);
        let key = self.alloc_with(&nk)?;
        // One more reference to the shared security cell (regf: Key security).
        if let Ok((p, l)) = self.cell(sk) {
            if l >= 16 && &self.data[p..p + 2] == b"sk" {
                let rc = rd_u32(&self.data, p + 12).unwrap_or(0);
                wr_u32(&mut self.data, p + 12, rc.saturating_add(1));
            }
        }
        self.list_insert(parent, key, name)?;
        self.touch(parent)?;
        Ok(key)
    }

    /// Create every missing key of a `\`-separated path; returns the last one.
    pub fn create_key(&mut self, path: &str) -> Result<KeyId, HiveError> {
        let mut k = self.root();
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            k = self.create_subkey(k, part)?;
        }
        Ok(k)
    }

    fn free_value_data(&mut self, vk: u32) -> Result<(), HiveError> {
        let c = self.vk(vk)?;
        let size_raw = rd_u32(c, 4).unwrap_or(0);
        let data_off = rd_u32(c, 8).unwrap_or(NONE);
        if size_raw & 0x8000_0000 != 0 || size_raw == 0 || data_off == NONE {
            return Ok(());
        }
        let size = (size_raw & 0x7FFF_FFFF) as usize;
        if let Ok(d) = self.cell_bytes(data_off) {
            if size > BIG_DATA_SEGMENT
                && d.len() >= 8
                && &d[0..2] == b"db"
                && self.minor_version() >= 4
            {
                let n = rd_u16(d, 2).unwrap_or(0) as usize;
                let list = rd_u32(d, 4).unwrap_or(NONE);
                let segs: Vec<u32> = self
                    .cell_bytes(list)
                    .map(|l| (0..n).filter_map(|i| rd_u32(l, i * 4)).collect())
                    .unwrap_or_default();
                for s in segs {
                    self.free_cell(s);
                }
                self.free_cell(list);
            }
        }
        self.free_cell(data_off);
        Ok(())
    }

    fn store_data(&mut self, data: &[u8]) -> Result<(u32, u32), HiveError> {
        if data.len() <= 4 {
            let mut inline = [0u8; 4];
            inline[..data.len()].copy_from_slice(data);
            return Ok((data.len() as u32 | 0x8000_0000, u32::from_le_bytes(inline)));
        }
        if data.len() > BIG_DATA_SEGMENT && self.minor_version() >= 4 {
            let mut segs = Vec::new();
            for chunk in data.chunks(BIG_DATA_SEGMENT) {
                segs.push(self.alloc_with(chunk)?);
            }
            let list: Vec<u8> = segs.iter().flat_map(|s| s.to_le_bytes()).collect();
            let list_off = self.alloc_with(&list)?;
            let mut db = b"db".to_vec();
            db.extend_from_slice(&(segs.len() as u16).to_le_bytes());
            db.extend_from_slice(&list_off.to_le_bytes());
            return Ok((data.len() as u32, self.alloc_with(&db)?));
        }
        Ok((data.len() as u32, self.alloc_with(data)?))
    }

    /// Create or replace a value.
    pub fn set_value(
        &mut self,
        key: KeyId,
        name: &str,
        reg_type: u32,
        data: &[u8],
    ) -> Result<(), HiveError> {
        if data.len() > 0x7FFF_0000 {
            return Err(HiveError::Unsupported {
                what: format!("{}-byte value", data.len()),
            });
        }
        let existing = self.find_value_cell(key, name)?;
        let (size, off) = self.store_data(data)?;
        match existing {
            Some((_, vk)) => {
                self.free_value_data(vk)?;
                let (p, _) = self.cell(vk)?;
                wr_u32(&mut self.data, p + 4, size);
                wr_u32(&mut self.data, p + 8, off);
                wr_u32(&mut self.data, p + 12, reg_type);
            }
            None => {
                let (raw_name, compressed) = match latin1(name) {
                    Some(b) => (b, true),
                    None => (
                        name.encode_utf16().flat_map(u16::to_le_bytes).collect(),
                        false,
                    ),
                };
                let mut vk = vec![0u8; 20 + raw_name.len()];
                vk[0..2].copy_from_slice(b"vk");
                wr_u16(&mut vk, 2, raw_name.len() as u16);
                wr_u32(&mut vk, 4, size);
                wr_u32(&mut vk, 8, off);
                wr_u32(&mut vk, 12, reg_type);
                wr_u16(&mut vk, 16, u16::from(compressed));
                vk[20..].copy_from_slice(&raw_name);
                let vk_off = self.alloc_with(&vk)?;
                let mut cells = self.value_cells(key)?;
                cells.push(vk_off);
                let old = self.key_field(key, 40)?;
                let list: Vec<u8> = cells.iter().flat_map(|c| c.to_le_bytes()).collect();
                let new = self.alloc_with(&list)?;
                if old != NONE {
                    self.free_cell(old);
                }
                self.set_key_field(key, 40, new)?;
                self.set_key_field(key, 36, cells.len() as u32)?;
                let (p, _) = self.cell(key)?;
                let nl = (name.encode_utf16().count() * 2) as u32;
                if nl > rd_u32(&self.data, p + 60).unwrap_or(0) {
                    wr_u32(&mut self.data, p + 60, nl);
                }
            }
        }
        let (p, _) = self.cell(key)?;
        if data.len() as u32 > rd_u32(&self.data, p + 64).unwrap_or(0) {
            wr_u32(&mut self.data, p + 64, data.len() as u32);
        }
        self.touch(key)
    }

    /// Set a REG_DWORD.
    pub fn set_u32(&mut self, key: KeyId, name: &str, v: u32) -> Result<(), HiveError> {
        self.set_value(key, name, reg_type::DWORD, &v.to_le_bytes())
    }

    /// Set a REG_SZ (or REG_EXPAND_SZ with `expand`).
    pub fn set_string(
        &mut self,
        key: KeyId,
        name: &str,
        v: &str,
        expand: bool,
    ) -> Result<(), HiveError> {
        self.set_value(
            key,
            name,
            if expand {
                reg_type::EXPAND_SZ
            } else {
                reg_type::SZ
            },
            &sz(v),
        )
    }

    /// Delete a value; returns whether it existed.
    pub fn delete_value(&mut self, key: KeyId, name: &str) -> Result<bool, HiveError> {
        let Some((i, vk)) = self.find_value_cell(key, name)? else {
            return Ok(false);
        };
        self.free_value_data(vk)?;
        self.free_cell(vk);
        let mut cells = self.value_cells(key)?;
        cells.remove(i);
        let old = self.key_field(key, 40)?;
        self.free_cell(old);
        let new = if cells.is_empty() {
            NONE
        } else {
            let list: Vec<u8> = cells.iter().flat_map(|c| c.to_le_bytes()).collect();
            self.alloc_with(&list)?
        };
        self.set_key_field(key, 40, new)?;
        self.set_key_field(key, 36, cells.len() as u32)?;
        self.touch(key)?;
        Ok(true)
    }

    /// Delete the subkey `name` of `parent` with everything below it; returns whether it existed.
    pub fn delete_subkey(&mut self, parent: KeyId, name: &str) -> Result<bool, HiveError> {
        let Some(k) = self.find_subkey(parent, name)? else {
            return Ok(false);
        };
        self.free_tree(k)?;
        self.list_remove(parent, k)?;
        self.free_cell(k);
        self.touch(parent)?;
        Ok(true)
    }

    /// Delete a key by path; returns whether it existed.
    pub fn delete_key(&mut self, path: &str) -> Result<bool, HiveError> {
        let (parent, name) = match path.trim_matches('\\').rsplit_once('\\') {
            Some((p, n)) => (self.open_key(p)?, n),
            None => (Some(self.root()), path.trim_matches('\\')),
        };
        match parent {
            Some(p) => self.delete_subkey(p, name),
            None => Ok(false),
        }
    }

    /// Every key of the subtree at `key`, parents before children; a key met
    /// twice (a cycle or a shared subkey list in a damaged hive) is an error, so
    /// nothing is freed twice and traversal stays linear.
    fn subtree(&self, key: KeyId) -> Result<Vec<KeyId>, HiveError> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        let mut stack = vec![(key, 0usize)];
        while let Some((k, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(bad(k, "key tree too deep"));
            }
            if !seen.insert(k) {
                return Err(bad(k, "key referenced twice (cycle or shared subkey list)"));
            }
            out.push(k);
            for c in self.subkeys(k)? {
                stack.push((c, depth + 1));
            }
        }
        Ok(out)
    }

    /// Free everything below `key` and its own values, lists and security
    /// reference; the key cell itself and its parent's list entry are left to
    /// the caller.
    fn free_tree(&mut self, key: KeyId) -> Result<(), HiveError> {
        let keys = self.subtree(key)?;
        for k in keys.into_iter().rev() {
            self.free_key_contents(k)?;
            if k != key {
                self.free_cell(k);
            }
        }
        Ok(())
    }

    fn free_key_contents(&mut self, key: KeyId) -> Result<(), HiveError> {
        let list = self.key_field(key, 28)?;
        if list != NONE && self.key_field(key, 20)? > 0 {
            for leaf in self.list_leaves(list)? {
                if leaf != list {
                    self.free_cell(leaf);
                }
            }
            self.free_cell(list);
        }
        for vk in self.value_cells(key)? {
            self.free_value_data(vk)?;
            self.free_cell(vk);
        }
        let vl = self.key_field(key, 40)?;
        if vl != NONE && self.key_field(key, 36)? > 0 {
            self.free_cell(vl);
        }
        let class = self.key_field(key, 48)?;
        if class != NONE && rd_u16(self.key_node(key)?, 74).unwrap_or(0) > 0 {
            self.free_cell(class);
        }
        let sk = self.key_field(key, 44)?;
        self.release_sk(sk)?;
        Ok(())
    }

    fn release_sk(&mut self, sk: u32) -> Result<(), HiveError> {
        let Ok((p, l)) = self.cell(sk) else {
            return Ok(());
        };
        if l < 20 || &self.data[p..p + 2] != b"sk" {
            return Ok(());
        }
        let rc = rd_u32(&self.data, p + 12).unwrap_or(0);
        if rc > 1 {
            wr_u32(&mut self.data, p + 12, rc - 1);
            return Ok(());
        }
        // Last reference: unlink from the doubly linked sk list and free it.
        let flink = rd_u32(&self.data, p + 4).unwrap_or(sk);
        let blink = rd_u32(&self.data, p + 8).unwrap_or(sk);
        if flink != sk && blink != sk {
            let (fp, _) = self.cell(flink)?;
            wr_u32(&mut self.data, fp + 8, blink);
            let (bp, _) = self.cell(blink)?;
            wr_u32(&mut self.data, bp + 4, flink);
        }
        self.free_cell(sk);
        Ok(())
    }

    /// Serialize with a refreshed base block: seq1 = seq2 = max(old) + 1, new
    /// timestamp, hive bins data size and checksum (regf: Base block).
    pub fn to_bytes(&mut self) -> Vec<u8> {
        let seq = rd_u32(&self.data, 4)
            .unwrap_or(0)
            .max(rd_u32(&self.data, 8).unwrap_or(0))
            .wrapping_add(1);
        wr_u32(&mut self.data, 4, seq);
        wr_u32(&mut self.data, 8, seq);
        wr_u64(&mut self.data, 12, filetime_now());
        wr_u32(&mut self.data, 28, 0);
        let bins = (self.data.len() - BASE_BLOCK) as u32;
        wr_u32(&mut self.data, 40, bins);
        let ck = header_checksum(&self.data);
        wr_u32(&mut self.data, 508, ck);
        self.data.clone()
    }

    /// Write the hive to `path` atomically (temp file in the same folder, fsync, rename).
    pub fn save(&mut self, path: &Path) -> Result<(), HiveError> {
        use std::io::Write;
        let bytes = self.to_bytes();
        let tmp = path.with_extension("rescue-tmp");
        let io = |action, source| HiveError::Io {
            action,
            path: tmp.display().to_string(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
        f.write_all(&bytes).map_err(|e| io("writing", e))?;
        f.sync_all().map_err(|e| io("syncing", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|source| HiveError::Io {
            action: "replacing",
            path: path.display().to_string(),
            source,
        })?;
        self.modified = false;
        Ok(())
    }

    /// Canonical text export of the whole tree (sorted keys, values by name), for
    /// tests and diffs: `path` lines and `path\tname-hex\ttype\tdata-hex` lines
    /// (the format of `tests/hivex_dump.py`, which dumps with libhivex).
    pub fn export(&self) -> Result<Vec<String>, HiveError> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.export_key(self.root(), String::new(), 0, &mut seen, &mut out)?;
        Ok(out)
    }

    fn export_key(
        &self,
        key: KeyId,
        path: String,
        depth: usize,
        seen: &mut std::collections::HashSet<KeyId>,
        out: &mut Vec<String>,
    ) -> Result<(), HiveError> {
        if depth > MAX_DEPTH {
            return Err(bad(key, "key tree deeper than the registry allows"));
        }
        if seen.len() > MAX_KEYS || !seen.insert(key) {
            return Err(bad(
                key,
                "key referenced twice (cycle or shared subkey list)",
            ));
        }
        out.push(path.clone());
        let mut vals = self.values(key)?;
        vals.sort_by(|a, b| a.name.cmp(&b.name));
        for v in vals {
            let hex: String = v.data.iter().map(|b| format!("{b:02x}")).collect();
            let name: String = v
                .name
                .as_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            out.push(format!("{path}\t{name}\t{}\t{hex}", v.reg_type));
        }
        for k in self.subkeys(key)? {
            let name = self.key_name(k)?;
            self.export_key(
                k,
                if path.is_empty() {
                    name
                } else {
                    format!("{path}\\{name}")
                },
                depth + 1,
                seen,
                out,
            )?;
        }
        Ok(())
    }

    /// Check list ordering and cell references of the whole tree (used in tests).
    pub fn check(&self) -> Result<(), HiveError> {
        for key in self.subtree(self.root())? {
            self.check_key(key)?;
        }
        Ok(())
    }

    fn check_key(&self, key: KeyId) -> Result<(), HiveError> {
        let subs = self.subkeys(key)?;
        if subs.len() != self.key_field(key, 20)? as usize {
            return Err(bad(key, "subkey count does not match the list"));
        }
        let mut prev: Option<Vec<u16>> = None;
        for k in &subs {
            let n = upcase_units(&self.key_name(*k)?);
            if prev.as_ref().is_some_and(|p| *p >= n) {
                return Err(bad(
                    key,
                    format!("subkeys not sorted at {:?}", self.key_name(*k)?),
                ));
            }
            if self.key_field(*k, 16)? != key {
                return Err(bad(*k, "parent reference mismatch"));
            }
            prev = Some(n);
        }
        let list = self.key_field(key, 28)?;
        if !subs.is_empty() {
            for leaf in self.list_leaves(list)? {
                let (kind, entries) = self.leaf_entries(leaf)?;
                if kind == LeafKind::Lh {
                    let c = self.cell_bytes(leaf)?;
                    for (i, e) in entries.iter().enumerate() {
                        if rd_u32(c, 8 + i * 8) != Some(lh_hash(&self.key_name(*e)?)) {
                            return Err(bad(leaf, "lh hash mismatch"));
                        }
                    }
                }
            }
        }
        self.values(key)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeafKind {
    Lf,
    Lh,
    Li,
}

#[cfg(test)]
pub(crate) mod tests;
