//! Just enough ELF (64-bit little-endian, i.e. x86_64) to read a kernel
//! module's `.modinfo` and a program's interpreter and `DT_NEEDED`/
//! `DT_RUNPATH` entries, through the section headers (the System V gABI,
//! "Sections" and "Dynamic Section").
//!
//! Deliberately unsupported: 32-bit and big-endian files, files without
//! section headers (fully stripped with `sstrip`), `$ORIGIN` in run paths.

use std::path::PathBuf;

/// Why a file could not be read as ELF.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{path}: not a 64-bit little-endian ELF file")]
    NotElf64 { path: PathBuf },
    #[error("{path}: ELF {what} at byte {offset} lies outside the file")]
    Truncated {
        path: PathBuf,
        what: &'static str,
        offset: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Section {
    name: u32,
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

const SHT_DYNAMIC: u32 = 6;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

pub struct Elf<'a> {
    path: PathBuf,
    data: &'a [u8],
    sections: Vec<Section>,
    shstr: Option<Section>,
}

fn u16_at(d: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(d: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?))
}

impl<'a> Elf<'a> {
    pub fn parse(path: impl Into<PathBuf>, data: &'a [u8]) -> Result<Elf<'a>, ElfError> {
        let path = path.into();
        if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
            return Err(ElfError::NotElf64 { path });
        }
        let trunc = |what, offset| ElfError::Truncated {
            path: path.clone(),
            what,
            offset,
        };
        let shoff = u64_at(data, 0x28).ok_or_else(|| trunc("header", 0))?;
        let shentsize = u64::from(u16_at(data, 0x3A).ok_or_else(|| trunc("header", 0))?);
        let shnum = u64::from(u16_at(data, 0x3C).ok_or_else(|| trunc("header", 0))?);
        let shstrndx = usize::from(u16_at(data, 0x3E).ok_or_else(|| trunc("header", 0))?);
        let mut sections = Vec::new();
        if shentsize >= 64 {
            for i in 0..shnum {
                let o = shoff
                    .checked_add(i * shentsize)
                    .ok_or_else(|| trunc("section header", shoff))?;
                let u = usize::try_from(o).map_err(|_| trunc("section header", o))?;
                let s = (|| {
                    Some(Section {
                        name: u32_at(data, u)?,
                        kind: u32_at(data, u + 4)?,
                        offset: u64_at(data, u + 0x18)?,
                        size: u64_at(data, u + 0x20)?,
                        link: u32_at(data, u + 0x28)?,
                    })
                })()
                .ok_or_else(|| trunc("section header", o))?;
                sections.push(s);
            }
        }
        let shstr = sections.get(shstrndx).copied();
        Ok(Elf {
            path,
            data,
            sections,
            shstr,
        })
    }

    fn bytes(&self, s: &Section, what: &'static str) -> Result<&'a [u8], ElfError> {
        let start = usize::try_from(s.offset).ok();
        let end = start.and_then(|st| st.checked_add(usize::try_from(s.size).ok()?));
        match (start, end) {
            (Some(a), Some(b)) if b <= self.data.len() => Ok(&self.data[a..b]),
            _ => Err(ElfError::Truncated {
                path: self.path.clone(),
                what,
                offset: s.offset,
            }),
        }
    }

    fn name_of(&self, s: &Section) -> Option<&'a str> {
        let tab = self.bytes(self.shstr.as_ref()?, "section names").ok()?;
        cstr_at(tab, s.name as usize)
    }

    /// The contents of the section called `name`, if present.
    pub fn section(&self, name: &str) -> Result<Option<&'a [u8]>, ElfError> {
        for s in &self.sections {
            if self.name_of(s) == Some(name) {
                return self.bytes(s, "section").map(Some);
            }
        }
        Ok(None)
    }

    /// `key=value` pairs of a kernel module's `.modinfo`, in file order.
    pub fn modinfo(&self) -> Result<Vec<(String, String)>, ElfError> {
        let Some(d) = self.section(".modinfo")? else {
            return Ok(Vec::new());
        };
        Ok(d.split(|&b| b == 0)
            .filter_map(|kv| {
                let s = std::str::from_utf8(kv).ok()?;
                let (k, v) = s.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect())
    }

    /// The program interpreter (`/lib64/ld-linux-x86-64.so.2`); None for
    /// static executables and libraries.
    pub fn interpreter(&self) -> Result<Option<String>, ElfError> {
        Ok(self
            .section(".interp")?
            .and_then(|d| cstr_at(d, 0))
            .map(str::to_string))
    }

    /// (DT_NEEDED sonames, run path directories).
    pub fn needed(&self) -> Result<(Vec<String>, Vec<String>), ElfError> {
        let mut needed = Vec::new();
        let mut runpath = Vec::new();
        for s in self.sections.iter().filter(|s| s.kind == SHT_DYNAMIC) {
            let dynamic = self.bytes(s, "dynamic section")?;
            let strtab = self
                .sections
                .get(s.link as usize)
                .ok_or(ElfError::Truncated {
                    path: self.path.clone(),
                    what: "dynamic string table",
                    offset: s.offset,
                })?;
            let strs = self.bytes(strtab, "dynamic string table")?;
            for e in dynamic.chunks_exact(16) {
                let (Some(tag), Some(val)) = (u64_at(e, 0), u64_at(e, 8)) else {
                    break;
                };
                let text = || {
                    usize::try_from(val)
                        .ok()
                        .and_then(|v| cstr_at(strs, v))
                        .map(str::to_string)
                };
                match tag {
                    DT_NULL => break,
                    DT_NEEDED => needed.extend(text()),
                    DT_RPATH | DT_RUNPATH => runpath.extend(
                        text()
                            .unwrap_or_default()
                            .split(':')
                            .filter(|p| !p.is_empty())
                            .map(str::to_string),
                    ),
                    _ => {}
                }
            }
        }
        Ok((needed, runpath))
    }
}

fn cstr_at(d: &[u8], o: usize) -> Option<&str> {
    let rest = d.get(o..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_elf() {
        assert!(matches!(
            Elf::parse("x", b"hello"),
            Err(ElfError::NotElf64 { .. })
        ));
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 1; // 32-bit
        h[5] = 1;
        assert!(matches!(
            Elf::parse("x", &h),
            Err(ElfError::NotElf64 { .. })
        ));
    }

    #[test]
    fn truncated_section_table_is_an_error() {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[0x28..0x30].copy_from_slice(&1000u64.to_le_bytes());
        h[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        h[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        assert!(matches!(
            Elf::parse("x", &h),
            Err(ElfError::Truncated { .. })
        ));
    }

    /// The host's own dynamic programs (Debian: /bin/ls).
    #[test]
    fn reads_a_real_program() {
        let Ok(data) = std::fs::read("/bin/ls") else {
            return;
        };
        let elf = Elf::parse("/bin/ls", &data).expect("ls is ELF64");
        assert_eq!(
            elf.interpreter().expect("readable").as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        let (needed, _) = elf.needed().expect("readable");
        assert!(needed.iter().any(|n| n == "libc.so.6"), "{needed:?}");
    }
}
