//! LVM2 physical volumes, read without device-mapper: the label, the
//! metadata area and the volume group's text metadata, so a logical volume
//! that lies in one piece on a PV can be reached as a byte range of it.
//!
//! Why not `vgchange -ay`: activating needs device-mapper (not in every
//! kernel this runs on, e.g. a build host's), claims the VG's name on the
//! running system (two restored Debian disks both hold `debian-vg`), and
//! leaves state behind that must be undone on every error path. A linear LV
//! is a plain byte range of its PV, which a loop device with an offset maps
//! as well. What is not one range (striped, mirrored, RAID, thin, an LV
//! in pieces or on another disk) is named with the reason.
//!
//! On-disk layout, as LVM2 writes it (`lib/format_text/layout.h`,
//! `lib/label/label.h`): a 512-byte label in one of the first four sectors
//! (`LABELONE`, type `LVM2 001`); after it the PV header (UUID, size, the
//! data area list, the metadata area list); each metadata area starts with
//! a 512-byte header (magic ` LVM2 x[5A%r0N*>`) whose location records point
//! at the current metadata text, a circular buffer after the header. Every
//! header and the text carry LVM's CRC-32 (reflected 0xEDB88320, seed
//! 0xf597a6cf, no final inversion), checked here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::fs::{le32, le64};
use crate::read_at::{read_vec, ReadAt};

const SECTOR: u64 = 512;
const LABEL_ID: &[u8; 8] = b"LABELONE";
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
const MDA_HEADER: u64 = 512;
const INITIAL_CRC: u32 = 0xf597_a6cf;
const RAW_LOCN_IGNORED: u32 = 1;
/// Metadata text larger than this is not LVM's (its areas are ~1 MiB).
const TEXT_LIMIT: u64 = 64 << 20;
/// Nesting deeper than this is not LVM's (it writes four levels).
const DEPTH_LIMIT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum LvmError {
    #[error("reading the LVM physical volume: {0}")]
    Io(#[from] std::io::Error),
    #[error("damaged LVM physical volume: {0}")]
    Damaged(String),
    #[error("LVM metadata: {0}")]
    Metadata(String),
}

fn damaged(s: impl Into<String>) -> LvmError {
    LvmError::Damaged(s.into())
}

/// LVM's CRC-32 (`calc_crc` in `lib/misc/crc.c`).
pub fn crc(seed: u32, data: &[u8]) -> u32 {
    let mut c = seed;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
        }
    }
    c
}

/// An LVM UUID as its tools print it: 32 characters as 6-4-4-4-4-4-6.
pub fn format_uuid(raw: &str) -> String {
    if raw.len() != 32 || !raw.is_ascii() {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(38);
    let mut at = 0;
    for (i, n) in [6usize, 4, 4, 4, 4, 4, 6].iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(&raw[at..at + n]);
        at += n;
    }
    out
}

/// What a physical volume says of itself and of its volume group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pv {
    /// 6-4-4-4-4-4-6, as `pvs -o pv_uuid` prints it.
    pub uuid: String,
    /// The device size recorded at `pvcreate` (bytes).
    pub device_size: u64,
    /// `None`: a PV in no volume group yet (or with its metadata areas
    /// ignored: then another PV of the group holds them).
    pub vg: Option<Vg>,
}

/// A volume group, from the newest metadata on this PV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vg {
    pub name: String,
    pub id: String,
    pub seqno: u64,
    /// Bytes per extent.
    pub extent_size: u64,
    pub pvs: Vec<VgPv>,
    pub lvs: Vec<Lv>,
}

/// A PV as the group's metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VgPv {
    /// The metadata's key for it (`pv0`), which segments refer to.
    pub key: String,
    pub id: String,
    /// Where the first extent starts on the PV (bytes).
    pub pe_start: u64,
    pub pe_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lv {
    pub name: String,
    pub id: String,
    pub status: Vec<String>,
    pub segments: Vec<Segment>,
}

impl Lv {
    /// Shown by `lvs` (not a RAID image, pool metadata or other hidden part).
    pub fn visible(&self) -> bool {
        self.status.iter().any(|s| s == "VISIBLE")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub start_extent: u64,
    pub extent_count: u64,
    /// `striped` (linear when it has one stripe), `thin`, `raid1`, `mirror`, ...
    pub kind: String,
    /// (PV key, first physical extent) of each stripe; empty for types
    /// that name LVs instead of PVs.
    pub stripes: Vec<(String, u64)>,
}

/// Why a logical volume is not one byte range of a PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotLinear {
    Kind(String),
    Striped(usize),
    OtherPv,
    Pieces(usize),
    Empty,
}

impl fmt::Display for NotLinear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotLinear::Kind(k) => write!(f, "it is a {k} volume"),
            NotLinear::Striped(n) => write!(f, "it is striped over {n} volumes"),
            NotLinear::OtherPv => f.write_str("it lies (partly) on another physical volume"),
            NotLinear::Pieces(n) => write!(f, "it lies in {n} separate pieces"),
            NotLinear::Empty => f.write_str("it has no extents"),
        }
    }
}

impl Vg {
    /// The byte range `(offset, len)` on the PV with UUID `pv_uuid` that
    /// holds all of `lv`, when it is linear and in one piece there.
    pub fn linear_range(&self, lv: &Lv, pv_uuid: &str) -> Result<(u64, u64), NotLinear> {
        let pv = self.pvs.iter().find(|p| p.id == pv_uuid).ok_or(NotLinear::OtherPv)?;
        let mut segs: Vec<&Segment> = lv.segments.iter().collect();
        segs.sort_by_key(|s| s.start_extent);
        if segs.is_empty() {
            return Err(NotLinear::Empty);
        }
        let mut pieces = 0usize;
        let mut next: Option<(u64, u64)> = None; // (logical, physical) extent expected next
        let mut first_pe = 0;
        let mut count = 0u64;
        for s in &segs {
            if s.kind != "striped" {
                return Err(NotLinear::Kind(s.kind.clone()));
            }
            if s.stripes.len() != 1 {
                return Err(NotLinear::Striped(s.stripes.len()));
            }
            let (key, pe) = &s.stripes[0];
            if *key != pv.key {
                return Err(NotLinear::OtherPv);
            }
            if next != Some((s.start_extent, *pe)) {
                pieces += 1;
                if pieces == 1 {
                    first_pe = *pe;
                }
            }
            count = count.checked_add(s.extent_count).ok_or(NotLinear::Empty)?;
            next = Some((s.start_extent + s.extent_count, pe + s.extent_count));
        }
        if pieces > 1 {
            return Err(NotLinear::Pieces(pieces));
        }
        if count == 0 || first_pe.checked_add(count).is_none_or(|end| end > pv.pe_count) {
            return Err(NotLinear::Empty);
        }
        let off = first_pe.checked_mul(self.extent_size).and_then(|o| o.checked_add(pv.pe_start));
        let len = count.checked_mul(self.extent_size);
        match (off, len) {
            (Some(o), Some(l)) => Ok((o, l)),
            _ => Err(NotLinear::Empty),
        }
    }
}

/// The device-mapper name of an LV (`/dev/mapper/NAME`): dashes inside
/// either name doubled, the two joined by one dash.
pub fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// Read the PV on `dev` (a partition or whole disk of `len` bytes).
/// `Ok(None)`: no LVM2 label.
pub fn read_pv(dev: &dyn ReadAt, len: u64) -> Result<Option<Pv>, LvmError> {
    let head_len = (4 * SECTOR).min(len);
    let head = read_vec(dev, 0, head_len, 4 * SECTOR)?;
    let Some(at) = (0..head.len() / 512).map(|s| s * 512).find(|&o| &head[o..o + 8] == LABEL_ID && &head[o + 24..o + 32] == LABEL_TYPE) else {
        return Ok(None);
    };
    let label = &head[at..at + 512];
    if le64(label, 8) != (at as u64) / SECTOR {
        return Err(damaged(format!("the label in sector {} says it is in sector {}", at / 512, le64(label, 8))));
    }
    if crc(INITIAL_CRC, &label[20..]) != le32(label, 16) {
        return Err(damaged("the label's checksum does not match"));
    }
    let off = le32(label, 20) as usize;
    // PV header: UUID (32), device size (8), then {offset, size} lists.
    if off < 32 || off + 32 + 8 + 16 > 512 {
        return Err(damaged(format!("the PV header offset {off} is outside the label")));
    }
    let uuid_raw = String::from_utf8_lossy(&label[off..off + 32]).into_owned();
    let device_size = le64(label, off + 32);
    let mut p = off + 40;
    let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for list in &mut lists {
        loop {
            if p + 16 > 512 {
                return Err(damaged("the PV header's area lists run past the label"));
            }
            let (o, s) = (le64(label, p), le64(label, p + 8));
            p += 16;
            if o == 0 {
                break;
            }
            list.push((o, s));
        }
    }
    let [_data, mdas] = lists;
    let mut best: Option<(u64, String)> = None;
    let mut errors = Vec::new();
    for (mda_off, mda_size) in mdas {
        match read_mda(dev, len, mda_off, mda_size) {
            Ok(Some(text)) => match parse_vg(&text) {
                Ok(vg) => {
                    if best.as_ref().is_none_or(|(seq, _)| vg.seqno > *seq) {
                        best = Some((vg.seqno, text));
                    }
                }
                Err(e) => errors.push(e.to_string()),
            },
            Ok(None) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    let vg = match best {
        Some((_, text)) => Some(parse_vg(&text)?),
        None if !errors.is_empty() => return Err(damaged(errors.join("; "))),
        None => None,
    };
    Ok(Some(Pv { uuid: format_uuid(&uuid_raw), device_size, vg }))
}

/// The current metadata text of one metadata area (`None` when it holds none).
fn read_mda(dev: &dyn ReadAt, len: u64, off: u64, size: u64) -> Result<Option<String>, LvmError> {
    if size <= MDA_HEADER || off.checked_add(size).is_none_or(|e| e > len) {
        return Err(damaged(format!("metadata area at {off} ({size} bytes) is outside the device")));
    }
    let h = read_vec(dev, off, MDA_HEADER, MDA_HEADER)?;
    if &h[4..20] != MDA_MAGIC {
        return Err(damaged(format!("no metadata area header at {off}")));
    }
    if crc(INITIAL_CRC, &h[4..]) != le32(&h, 0) {
        return Err(damaged(format!("the metadata area header at {off} has a bad checksum")));
    }
    if le64(&h, 24) != off {
        return Err(damaged(format!("the metadata area header at {off} says it is at {}", le64(&h, 24))));
    }
    // Location records from byte 40: offset, size, checksum, flags.
    let mut p = 40;
    while p + 24 <= MDA_HEADER as usize {
        let (o, s, sum, flags) = (le64(&h, p), le64(&h, p + 8), le32(&h, p + 16), le32(&h, p + 20));
        p += 24;
        if o == 0 {
            break;
        }
        if flags & RAW_LOCN_IGNORED != 0 {
            continue;
        }
        if o < MDA_HEADER || o >= size || s > TEXT_LIMIT || s > size - MDA_HEADER {
            return Err(damaged(format!("metadata text at {o} ({s} bytes) is outside its area ({size} bytes)")));
        }
        // The text is a circular buffer after the header: it may wrap.
        let first = s.min(size - o);
        let mut text = read_vec(dev, off + o, first, TEXT_LIMIT)?;
        if first < s {
            text.extend(read_vec(dev, off + MDA_HEADER, s - first, TEXT_LIMIT)?);
        }
        if crc(INITIAL_CRC, &text) != sum {
            return Err(damaged(format!("the metadata text at {} has a bad checksum", off + o)));
        }
        while text.last() == Some(&0) {
            text.pop();
        }
        return String::from_utf8(text).map(Some).map_err(|_| damaged("the metadata text is not UTF-8"));
    }
    Ok(None)
}

// ---------------------------------------------------------------------------
// The text format (`lib/config/config.c`): `name = value`, `name { ... }`,
// values are integers, "strings" or [lists], `#` starts a comment.

/// A value of the metadata text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Str(String),
    List(Vec<Value>),
}

/// A `{ ... }` section: values and subsections in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub values: BTreeMap<String, Value>,
    pub sections: Vec<(String, Section)>,
}

impl Section {
    fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    fn int(&self, name: &str) -> Option<i64> {
        match self.values.get(name) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    fn uint(&self, name: &str, what: &str) -> Result<u64, LvmError> {
        self.int(name).and_then(|i| u64::try_from(i).ok()).ok_or_else(|| LvmError::Metadata(format!("{what} has no valid {name}")))
    }

    fn string(&self, name: &str) -> Option<&str> {
        match self.values.get(name) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn strings(&self, name: &str) -> Vec<String> {
        match self.values.get(name) {
            Some(Value::List(v)) => v.iter().filter_map(|x| if let Value::Str(s) = x { Some(s.clone()) } else { None }).collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Punct(char),
}

fn tokens(text: &str) -> Result<Vec<Tok>, LvmError> {
    let mut out = Vec::new();
    let mut it = text.chars().peekable();
    while let Some(&c) = it.peek() {
        match c {
            c if c.is_whitespace() => {
                it.next();
            }
            '#' => {
                while it.next().is_some_and(|c| c != '\n') {}
            }
            '{' | '}' | '[' | ']' | '=' | ',' => {
                it.next();
                out.push(Tok::Punct(c));
            }
            '"' => {
                it.next();
                let mut s = String::new();
                loop {
                    match it.next() {
                        None => return Err(LvmError::Metadata("a string is not closed".into())),
                        Some('"') => break,
                        Some('\\') => match it.next() {
                            Some(e) => s.push(e),
                            None => return Err(LvmError::Metadata("a string is not closed".into())),
                        },
                        Some(x) => s.push(x),
                    }
                }
                out.push(Tok::Str(s));
            }
            _ => {
                let mut w = String::new();
                while let Some(&x) = it.peek() {
                    if x.is_whitespace() || "{}[]=,\"#".contains(x) {
                        break;
                    }
                    w.push(x);
                    it.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn err<T>(&self, what: &str) -> Result<T, LvmError> {
        Err(LvmError::Metadata(format!("{what} (token {})", self.at)))
    }

    /// Items until `}` (`inner`) or the end.
    fn section(&mut self, depth: usize, inner: bool) -> Result<Section, LvmError> {
        if depth > DEPTH_LIMIT {
            return self.err("sections nested too deeply");
        }
        let mut s = Section::default();
        loop {
            let name = match self.next() {
                None if !inner => return Ok(s),
                None => return self.err("a section is not closed"),
                Some(Tok::Punct('}')) if inner => return Ok(s),
                Some(Tok::Word(w)) => w,
                Some(_) => return self.err("expected a name"),
            };
            match self.next() {
                Some(Tok::Punct('=')) => {
                    let v = self.value(depth)?;
                    s.values.insert(name, v);
                }
                Some(Tok::Punct('{')) => {
                    let sub = self.section(depth + 1, true)?;
                    s.sections.push((name, sub));
                }
                _ => return self.err(&format!("expected `=` or `{{` after {name}")),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, LvmError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Value::Str(s)),
            Some(Tok::Word(w)) => match w.parse::<i64>() {
                Ok(i) => Ok(Value::Int(i)),
                // Floats and bare words exist in lvm.conf, not in VG metadata.
                Err(_) => Ok(Value::Str(w)),
            },
            Some(Tok::Punct('[')) => {
                if depth > DEPTH_LIMIT {
                    return self.err("lists nested too deeply");
                }
                let mut v = Vec::new();
                loop {
                    match self.toks.get(self.at) {
                        Some(Tok::Punct(']')) => {
                            self.at += 1;
                            return Ok(Value::List(v));
                        }
                        Some(Tok::Punct(',')) => self.at += 1,
                        None => return self.err("a list is not closed"),
                        _ => v.push(self.value(depth + 1)?),
                    }
                }
            }
            _ => self.err("expected a value"),
        }
    }
}

/// Parse metadata text into its top-level section.
pub fn parse_text(text: &str) -> Result<Section, LvmError> {
    let mut p = Parser { toks: tokens(text)?, at: 0 };
    p.section(0, false)
}

/// The volume group a metadata text describes.
pub fn parse_vg(text: &str) -> Result<Vg, LvmError> {
    let top = parse_text(text)?;
    let (name, g) = top.sections.first().ok_or_else(|| LvmError::Metadata("no volume group in the text".into()))?;
    let md = |s: String| LvmError::Metadata(s);
    let extent_sectors = g.uint("extent_size", &format!("volume group {name}"))?;
    if extent_sectors == 0 {
        return Err(md(format!("volume group {name} has extent_size 0")));
    }
    let mut pvs = Vec::new();
    if let Some(ps) = g.section("physical_volumes") {
        for (key, p) in &ps.sections {
            let what = format!("physical volume {key} of {name}");
            pvs.push(VgPv {
                key: key.clone(),
                id: p.string("id").unwrap_or("").to_owned(),
                pe_start: p.uint("pe_start", &what)?.checked_mul(SECTOR).ok_or_else(|| md(format!("{what}: pe_start too large")))?,
                pe_count: p.uint("pe_count", &what)?,
            });
        }
    }
    let mut lvs = Vec::new();
    if let Some(ls) = g.section("logical_volumes") {
        for (lv_name, l) in &ls.sections {
            let mut segments = Vec::new();
            for (seg_name, s) in l.sections.iter().filter(|(n, _)| n.starts_with("segment")) {
                let what = format!("{seg_name} of {name}/{lv_name}");
                let stripes = match s.values.get("stripes") {
                    Some(Value::List(v)) => {
                        let mut out = Vec::new();
                        for pair in v.chunks(2) {
                            match pair {
                                [Value::Str(k), Value::Int(pe)] if *pe >= 0 => out.push((k.clone(), *pe as u64)),
                                _ => return Err(md(format!("{what}: a stripe is not a (volume, extent) pair"))),
                            }
                        }
                        out
                    }
                    _ => Vec::new(),
                };
                segments.push(Segment {
                    start_extent: s.uint("start_extent", &what)?,
                    extent_count: s.uint("extent_count", &what)?,
                    kind: s.string("type").unwrap_or("").to_owned(),
                    stripes,
                });
            }
            lvs.push(Lv { name: lv_name.clone(), id: l.string("id").unwrap_or("").to_owned(), status: l.strings("status"), segments });
        }
    }
    Ok(Vg {
        name: name.clone(),
        id: g.string("id").unwrap_or("").to_owned(),
        seqno: g.uint("seqno", &format!("volume group {name}"))?,
        extent_size: extent_sectors.checked_mul(SECTOR).ok_or_else(|| md(format!("volume group {name}: extent_size too large")))?,
        pvs,
        lvs,
    })
}

#[cfg(test)]
mod tests;
