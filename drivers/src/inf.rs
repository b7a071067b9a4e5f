//! Windows driver INF files: a tolerant parser and the queries driver injection needs.
//!
//! References: Microsoft Learn "INF File Sections and Directives" (general syntax
//! rules, `[Strings]`, `[Manufacturer]`, Models, DDInstall, `.Services`, `.HW`,
//! `AddService`, `AddReg`, `DelReg`, `CopyFiles`, `DestinationDirs`), "Using
//! Dirids" (12 = `%SystemRoot%\System32\drivers`, 13 = run from the driver store)
//! and "Summary of INF Manufacturer / Models sections" (TargetOSVersion
//! decorations `NT[Architecture][.[OSMajorVersion][.[OSMinorVersion][.[ProductType]
//! [.[SuiteMask][.[BuildNumber]]]]]]`).
//!
//! Text handling: UTF-16LE/BE with BOM (and UTF-16LE without BOM, detected from
//! the zero high bytes), UTF-8 with or without BOM, anything else as Latin-1
//! (the common ANSI case; exact code page mapping is deliberately unsupported).
//! CRLF/LF, `;` comments outside quotes, `\` line continuation, quoted values
//! (`""` inside quotes is a literal quote), `%key%` substitution from `[Strings]`
//! with a localized `[Strings.xxxx]` fallback, and `%%` for a literal percent.
//!
//! `.inx` files and INFs with stampinf tokens (`$ARCH$`, `INX_*`, `@MAJOR_VERSION@`)
//! are *templates*: the parser accepts them, reports the unsubstituted tokens in
//! [`Inf::template_tokens`], and treats a `NT$ARCH$` decoration as "any
//! architecture" so that a template can still be matched against a target.
//!
//! Never panics on any input; see [`parse_inf`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Errors from INF parsing and INF queries.
#[derive(Debug, thiserror::Error)]
pub enum InfError {
    /// The file has no `[Version]` section: it is not an INF file.
    #[error("no [Version] section found{}", file_suffix(.file))]
    NoVersion {
        /// File name, when known.
        file: Option<String>,
    },
    /// The bytes contain NUL characters outside a UTF-16 encoding.
    #[error("binary data at byte {offset}{}: not an INF text file", file_suffix(.file))]
    Binary {
        /// File name, when known.
        file: Option<String>,
        /// Byte offset of the first NUL.
        offset: usize,
    },
    /// A referenced section does not exist.
    #[error("section [{section}] referenced at line {line} does not exist")]
    MissingSection {
        /// Section name.
        section: String,
        /// 1-based line of the reference.
        line: usize,
    },
    /// Reading the file failed.
    #[error("reading INF {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl InfError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            InfError::NoVersion { .. } | InfError::Binary { .. } => {
                "pass the folder of an extracted driver package (.inf + .sys), not an installer or archive"
            }
            InfError::MissingSection { .. } => {
                "the INF is incomplete or for another tool; try another version of the driver package"
            }
            InfError::Io { .. } => "check that the driver folder is readable",
        }
    }
}

fn file_suffix(f: &Option<String>) -> String {
    f.as_ref().map(|f| format!(" in {f}")).unwrap_or_default()
}

/// Text encoding the INF was stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// UTF-16 little endian (with or without BOM).
    Utf16Le,
    /// UTF-16 big endian (with BOM).
    Utf16Be,
    /// UTF-8 (with or without BOM; plain ASCII lands here too).
    Utf8,
    /// Not valid UTF-8: decoded as Latin-1.
    Latin1,
}

/// One line of a section after joining continuations and removing comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number of the first physical line.
    pub line_no: usize,
    /// Text left of the first `=` outside quotes, trimmed, unquoted, unsubstituted.
    pub key: Option<String>,
    /// Comma separated fields (right of `=`, or the whole line), trimmed, with quotes
    /// and `%strkey%` still raw; use [`Inf::expand`] to substitute.
    pub raw_fields: Vec<String>,
}

/// A `[section]` with its lines (sections of the same name are merged, as Windows does).
#[derive(Debug, Clone)]
pub struct Section {
    /// Name as written in the first occurrence.
    pub name: String,
    /// Lines in file order.
    pub lines: Vec<Line>,
}

/// A parsed INF file.
#[derive(Debug, Clone)]
pub struct Inf {
    /// Detected text encoding.
    pub encoding: Encoding,
    sections: Vec<Section>,
    index: BTreeMap<String, usize>,
    /// Lower-case `[Strings*]` section name → lower-case key → raw value (first wins).
    strings: BTreeMap<String, BTreeMap<String, String>>,
    /// Unsubstituted build-time tokens found (`$ARCH$`, `INX_...`, `@MAJOR_VERSION@`):
    /// non-empty means this is a template, not a shippable INF.
    pub template_tokens: Vec<String>,
    /// Preferred `[Strings.xxxx]` locale (hex LANGID, e.g. `0409`), tried first.
    pub locale: Option<String>,
}

/// Fuzz-friendly entry point: parse INF bytes in any supported encoding; never panics.
pub fn parse_inf(bytes: &[u8]) -> Result<Inf, InfError> {
    Inf::parse(bytes, None)
}

/// Decode INF bytes to text, reporting the encoding.
pub fn decode_text(bytes: &[u8]) -> (String, Encoding) {
    fn utf16(bytes: &[u8], le: bool) -> String {
        let units = bytes.chunks_exact(2).map(|c| {
            if le {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return (utf16(rest, true), Encoding::Utf16Le);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return (utf16(rest, false), Encoding::Utf16Be);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return (String::from_utf8_lossy(rest).into_owned(), Encoding::Utf8);
    }
    // UTF-16LE without BOM: ASCII text has a zero in every odd byte.
    let probe = &bytes[..bytes.len().min(64)];
    if probe.len() >= 4 && probe.len() % 2 == 0 && probe.iter().skip(1).step_by(2).all(|b| *b == 0)
    {
        return (utf16(bytes, true), Encoding::Utf16Le);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), Encoding::Utf8),
        Err(_) => (
            bytes.iter().map(|b| char::from(*b)).collect(),
            Encoding::Latin1,
        ),
    }
}

/// Split a logical line at `sep` outside double quotes.
fn split_outside_quotes(s: &str, sep: char, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    for c in s.chars() {
        if c == '"' {
            in_q = !in_q;
            cur.push(c);
        } else if c == sep && !in_q && out.len() + 1 < max {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Remove a `;` comment outside quotes; returns (text, continued).
fn strip_comment(s: &str) -> (String, bool) {
    let mut out = String::new();
    let mut in_q = false;
    for c in s.chars() {
        if c == '"' {
            in_q = !in_q;
        } else if c == ';' && !in_q {
            break;
        }
        out.push(c);
    }
    let trimmed = out.trim_end();
    if let Some(t) = trimmed.strip_suffix('\\') {
        (t.to_owned(), true)
    } else {
        (trimmed.to_owned(), false)
    }
}

/// Remove surrounding/embedded quoting from a raw field (`"a""b"` → `a"b`).
pub fn unquote(s: &str) -> String {
    let t = s.trim();
    if !t.contains('"') {
        return t.to_owned();
    }
    let mut out = String::new();
    let mut chars = t.chars().peekable();
    let mut in_q = false;
    while let Some(c) = chars.next() {
        if c == '"' {
            if in_q && chars.peek() == Some(&'"') {
                out.push('"');
                chars.next();
            } else {
                in_q = !in_q;
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn find_template_tokens(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut push = |t: String| {
        if !found.contains(&t) {
            found.push(t);
        }
    };
    if text.contains("$ARCH$") {
        push("$ARCH$".into());
    }
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '@')) {
        if let Some(i) = word.find("INX_") {
            push(word[i..].trim_matches('_').to_owned());
        }
        let parts: Vec<&str> = word.split('@').collect();
        for (i, p) in parts.iter().enumerate() {
            if i % 2 == 1
                && i + 1 < parts.len()
                && !p.is_empty()
                && p.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            {
                push(format!("@{p}@"));
            }
        }
    }
    found
}

impl Inf {
    /// Parse INF bytes. `file` is only used in error messages.
    pub fn parse(bytes: &[u8], file: Option<&str>) -> Result<Inf, InfError> {
        let (text, encoding) = decode_text(bytes);
        if matches!(encoding, Encoding::Utf8 | Encoding::Latin1) {
            if let Some(offset) = bytes.iter().position(|b| *b == 0) {
                return Err(InfError::Binary {
                    file: file.map(str::to_owned),
                    offset,
                });
            }
        }
        let mut sections: Vec<Section> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut current: Option<usize> = None;
        let mut pending: Option<(usize, String)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let (stripped, continued) = strip_comment(raw.trim_end_matches('\r'));
            let (start, mut logical) = match pending.take() {
                Some((s, mut acc)) => {
                    acc.push_str(&stripped);
                    (s, acc)
                }
                None => (line_no, stripped),
            };
            if continued {
                pending = Some((start, logical));
                continue;
            }
            logical = logical.trim().to_owned();
            if logical.is_empty() {
                continue;
            }
            if logical.starts_with('[') {
                if let Some(end) = logical.find(']') {
                    let name = logical[1..end].trim().to_owned();
                    let key = name.to_ascii_lowercase();
                    let idx = match index.get(&key) {
                        Some(i) => *i,
                        None => {
                            sections.push(Section {
                                name,
                                lines: Vec::new(),
                            });
                            index.insert(key, sections.len() - 1);
                            sections.len() - 1
                        }
                    };
                    current = Some(idx);
                    continue;
                }
            }
            let Some(cur) = current else { continue };
            let parts = split_outside_quotes(&logical, '=', 2);
            let (key, rhs) = if parts.len() == 2 {
                (Some(unquote(&parts[0])), parts[1].as_str())
            } else {
                (None, logical.as_str())
            };
            let raw_fields = split_outside_quotes(rhs, ',', usize::MAX)
                .into_iter()
                .map(|f| f.trim().to_owned())
                .collect();
            if let Some(s) = sections.get_mut(cur) {
                s.lines.push(Line {
                    line_no: start,
                    key,
                    raw_fields,
                });
            }
        }
        if !index.contains_key("version") {
            return Err(InfError::NoVersion {
                file: file.map(str::to_owned),
            });
        }
        let template_tokens = find_template_tokens(&text);
        let mut strings: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for s in &sections {
            let name = s.name.to_ascii_lowercase();
            if name == "strings" || name.starts_with("strings.") {
                let map = strings.entry(name).or_default();
                for l in &s.lines {
                    if let Some(k) = &l.key {
                        map.entry(k.to_ascii_lowercase())
                            .or_insert_with(|| l.raw_fields.join(","));
                    }
                }
            }
        }
        Ok(Inf {
            encoding,
            sections,
            index,
            strings,
            template_tokens,
            locale: None,
        })
    }

    /// Read and parse an INF file.
    pub fn open(path: &std::path::Path) -> Result<Inf, InfError> {
        let bytes = std::fs::read(path).map_err(|source| InfError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Inf::parse(&bytes, Some(&path.display().to_string()))
    }

    /// True when the file still contains build-time template tokens.
    pub fn is_template(&self) -> bool {
        !self.template_tokens.is_empty()
    }

    /// All sections in file order.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// A section by case-insensitive name.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.index
            .get(&name.trim().to_ascii_lowercase())
            .and_then(|i| self.sections.get(*i))
    }

    /// Look up a string key: preferred locale, `[Strings]`, `[Strings.0409]`, any
    /// other `[Strings.xxxx]`. Returns the raw text (quotes intact); [`Inf::expand`]
    /// unquotes it.
    pub fn string(&self, key: &str) -> Option<String> {
        let key = key.to_ascii_lowercase();
        let preferred = self
            .locale
            .iter()
            .map(|l| format!("strings.{}", l.to_ascii_lowercase()));
        preferred
            .chain(["strings".to_owned(), "strings.0409".to_owned()])
            .find_map(|sec| self.strings.get(&sec)?.get(&key).cloned())
            .or_else(|| self.strings.values().find_map(|m| m.get(&key).cloned()))
    }

    /// Substitute `%strkey%` tokens and `%%` and remove quoting, in one pass (so
    /// quotes inside a substituted string stay literal). Unknown keys and numeric
    /// DIRIDs (`%12%`) stay as written so that callers can resolve them.
    pub fn expand(&self, raw: &str) -> String {
        let raw = raw.trim();
        let chars: Vec<char> = raw.chars().collect();
        let mut out = String::new();
        let mut in_q = false;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '"' {
                if in_q && chars.get(i + 1) == Some(&'"') {
                    out.push('"');
                    i += 2;
                    continue;
                }
                in_q = !in_q;
                i += 1;
                continue;
            }
            if c == '%' {
                if chars.get(i + 1) == Some(&'%') {
                    out.push('%');
                    i += 2;
                    continue;
                }
                if let Some(len) = chars[i + 1..].iter().position(|c| *c == '%') {
                    let key: String = chars[i + 1..i + 1 + len].iter().collect();
                    let numeric = key.chars().all(|c| c.is_ascii_digit());
                    match self.string(&key) {
                        // Substituted text is not scanned again (setupapi does not nest
                        // string tokens), which also keeps expansion linear.
                        Some(v) if !numeric => out.push_str(&unquote(&v)),
                        _ => {
                            out.push('%');
                            out.push_str(&key);
                            out.push('%');
                        }
                    }
                    i += len + 2;
                    continue;
                }
            }
            out.push(c);
            i += 1;
        }
        out
    }

    /// Expanded fields of a line.
    pub fn fields(&self, line: &Line) -> Vec<String> {
        line.raw_fields.iter().map(|f| self.expand(f)).collect()
    }

    /// First value of `key` in `section` (expanded), e.g. `Class` in `[Version]`.
    pub fn value(&self, section: &str, key: &str) -> Option<String> {
        let s = self.section(section)?;
        let l = s.lines.iter().find(|l| {
            l.key
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case(key))
        })?;
        Some(self.expand(&l.raw_fields.join(",")))
    }

    /// All lines with `key` in `section`, each expanded and split into fields.
    pub fn values(&self, section: &str, key: &str) -> Vec<(usize, Vec<String>)> {
        self.section(section)
            .map(|s| {
                s.lines
                    .iter()
                    .filter(|l| {
                        l.key
                            .as_deref()
                            .is_some_and(|k| k.eq_ignore_ascii_case(key))
                    })
                    .map(|l| (l.line_no, self.fields(l)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The `[Version]` facts.
    pub fn version(&self) -> VersionInfo {
        VersionInfo {
            signature: self.value("Version", "Signature"),
            class: self.value("Version", "Class"),
            class_guid: self.value("Version", "ClassGUID"),
            provider: self.value("Version", "Provider"),
            catalog: self.value("Version", "CatalogFile"),
            driver_ver: self
                .value("Version", "DriverVer")
                .and_then(|v| DriverVer::parse(&v)),
        }
    }

    /// `[Manufacturer]` entries with their decorations.
    pub fn manufacturers(&self) -> Vec<Manufacturer> {
        let Some(s) = self.section("Manufacturer") else {
            return Vec::new();
        };
        s.lines
            .iter()
            .filter_map(|l| {
                let f = self.fields(l);
                let (name, models) = match &l.key {
                    Some(k) => (self.expand(k), f.first().cloned().unwrap_or_default()),
                    None => {
                        let m = f.first().cloned().unwrap_or_default();
                        (m.clone(), m)
                    }
                };
                if models.is_empty() {
                    return None;
                }
                let decorations = f
                    .iter()
                    .skip(1)
                    .filter(|d| !d.is_empty())
                    .filter_map(|d| Decoration::parse(d))
                    .collect();
                Some(Manufacturer {
                    name,
                    models_section: models,
                    decorations,
                    line: l.line_no,
                })
            })
            .collect()
    }

    /// The Models section Windows would use for `m` on `target`, or None when no
    /// decoration applies (an undecorated manufacturer always applies).
    pub fn models_section_for(&self, m: &Manufacturer, target: &Target) -> Option<String> {
        if m.decorations.is_empty() {
            return Some(m.models_section.clone());
        }
        let best = m
            .decorations
            .iter()
            .filter(|d| d.applies_to(target))
            .max_by_key(|d| d.specificity())?;
        let decorated = format!("{}.{}", m.models_section, best.raw);
        if self.section(&decorated).is_some() {
            Some(decorated)
        } else {
            None
        }
    }

    /// Every device model that applies to `target`, in file order.
    pub fn models(&self, target: &Target) -> Vec<Model> {
        let mut out = Vec::new();
        for m in self.manufacturers() {
            let Some(sec_name) = self.models_section_for(&m, target) else {
                continue;
            };
            let Some(sec) = self.section(&sec_name) else {
                continue;
            };
            for l in &sec.lines {
                let f = self.fields(l);
                let Some(install) = f.first().filter(|s| !s.is_empty()) else {
                    continue;
                };
                let Some(hwid) = f.get(1).filter(|s| !s.is_empty()) else {
                    continue;
                };
                out.push(Model {
                    manufacturer: m.name.clone(),
                    description: l.key.as_deref().map(|k| self.expand(k)).unwrap_or_default(),
                    install_section: install.clone(),
                    hardware_id: hwid.clone(),
                    compatible_ids: f
                        .iter()
                        .skip(2)
                        .filter(|s| !s.is_empty())
                        .cloned()
                        .collect(),
                    models_section: sec_name.clone(),
                    line: l.line_no,
                });
            }
        }
        out
    }

    /// Resolve a DDInstall base name to the decorated section that exists
    /// (`base.NTamd64`, then `base.NT`, then `base`).
    pub fn install_section_name(&self, base: &str, arch: Arch) -> Option<String> {
        [
            format!("{base}.NT{}", arch.inf_name()),
            format!("{base}.NT"),
            base.to_owned(),
        ]
        .into_iter()
        .find(|n| self.section(n).is_some())
    }

    /// Everything the install section `base` does on `arch`.
    pub fn driver_install(&self, base: &str, arch: Arch) -> Result<DriverInstall, InfError> {
        let section = self
            .install_section_name(base, arch)
            .ok_or(InfError::MissingSection {
                section: base.to_owned(),
                line: 0,
            })?;
        let mut copy_files = Vec::new();
        for (line, f) in self.values(&section, "CopyFiles") {
            for entry in f.iter().filter(|s| !s.is_empty()) {
                if let Some(file) = entry.strip_prefix('@') {
                    let (dirid, subdir) = self.dest_dir(&section);
                    copy_files.push(CopyFile {
                        source: file.to_owned(),
                        dest: file.to_owned(),
                        dirid,
                        subdir,
                        line,
                    });
                    continue;
                }
                let Some(fs) = self.section(entry) else {
                    return Err(InfError::MissingSection {
                        section: entry.clone(),
                        line,
                    });
                };
                let (dirid, subdir) = self.dest_dir(entry);
                for l in &fs.lines {
                    let mut ff = self.fields(l);
                    if let Some(k) = &l.key {
                        ff.insert(0, self.expand(k));
                    }
                    let Some(dest) = ff.first().filter(|s| !s.is_empty()).cloned() else {
                        continue;
                    };
                    let source = ff
                        .get(1)
                        .filter(|s| !s.is_empty())
                        .cloned()
                        .unwrap_or_else(|| dest.clone());
                    copy_files.push(CopyFile {
                        source,
                        dest,
                        dirid,
                        subdir: subdir.clone(),
                        line: l.line_no,
                    });
                }
            }
        }
        let services_sec = format!("{section}.Services");
        let mut services = Vec::new();
        for (line, f) in self.values(&services_sec, "AddService") {
            let name = f.first().cloned().unwrap_or_default();
            let flags = f.get(1).and_then(|s| parse_number(s)).unwrap_or(0);
            let sec = f.get(2).cloned().unwrap_or_default();
            if name.is_empty() || sec.is_empty() {
                continue;
            }
            if self.section(&sec).is_none() {
                return Err(InfError::MissingSection { section: sec, line });
            }
            services.push(self.service(&name, flags, &sec)?);
        }
        let hw = format!("{section}.HW");
        Ok(DriverInstall {
            hw_addreg: self.reg_lines(&hw, "AddReg")?,
            hw_delreg: self.reg_lines(&hw, "DelReg")?,
            section,
            copy_files,
            services,
        })
    }

    fn service(&self, name: &str, flags: u32, sec: &str) -> Result<ServiceInstall, InfError> {
        let num = |k: &str| self.value(sec, k).and_then(|v| parse_number(&v));
        Ok(ServiceInstall {
            name: name.to_owned(),
            flags,
            section: sec.to_owned(),
            display_name: self.value(sec, "DisplayName"),
            service_type: num("ServiceType"),
            start_type: num("StartType"),
            error_control: num("ErrorControl"),
            service_binary: self.value(sec, "ServiceBinary"),
            load_order_group: self.value(sec, "LoadOrderGroup"),
            add_reg: self.reg_lines(sec, "AddReg")?,
        })
    }

    /// `DestinationDirs` entry for a file-list section, else `DefaultDestDir`, else 11
    /// (System32, the documented default).
    pub fn dest_dir(&self, file_section: &str) -> (u32, Option<String>) {
        for key in [file_section, "DefaultDestDir"] {
            if let Some((_, f)) = self.values("DestinationDirs", key).into_iter().next() {
                if let Some(d) = f.first().and_then(|s| parse_number(s)) {
                    return (d, f.get(1).filter(|s| !s.is_empty()).cloned());
                }
            }
        }
        (11, None)
    }

    /// Registry lines from every section named by `directive` (AddReg/DelReg) in `sec`.
    pub fn reg_lines(&self, sec: &str, directive: &str) -> Result<Vec<RegLine>, InfError> {
        let mut out = Vec::new();
        let del = directive.eq_ignore_ascii_case("DelReg");
        for (line, f) in self.values(sec, directive) {
            for name in f.iter().filter(|s| !s.is_empty()) {
                let Some(rs) = self.section(name) else {
                    return Err(InfError::MissingSection {
                        section: name.clone(),
                        line,
                    });
                };
                for l in &rs.lines {
                    let mut ff: Vec<String> = l.raw_fields.clone();
                    if let Some(k) = &l.key {
                        // `a=b` inside a reg section is unusual; keep it as text.
                        if let Some(first) = ff.first_mut() {
                            *first = format!("{k}={first}");
                        }
                    }
                    out.push(RegLine::parse(self, &ff, del, l.line_no));
                }
            }
        }
        Ok(out)
    }
}

/// Parse an INF number: `0x` hex, decimal, optional sign.
pub fn parse_number(s: &str) -> Option<u32> {
    let t = s.trim();
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u32::from_str_radix(h.trim(), 16).ok()
    } else if let Some(n) = t.strip_prefix('-') {
        n.parse::<u32>().ok().map(|v| v.wrapping_neg())
    } else {
        t.parse::<u32>().ok()
    }
}

/// `[Version]` facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// `$Windows NT$` etc.
    pub signature: Option<String>,
    /// Setup class name.
    pub class: Option<String>,
    /// Setup class GUID with braces.
    pub class_guid: Option<String>,
    /// Provider.
    pub provider: Option<String>,
    /// Catalog file.
    pub catalog: Option<String>,
    /// Parsed `DriverVer`.
    pub driver_ver: Option<DriverVer>,
}

/// `DriverVer = mm/dd/yyyy[,w.x.y.z]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DriverVer {
    /// (year, month, day).
    pub date: (u16, u8, u8),
    /// Four 16-bit version parts (missing parts are 0).
    pub version: [u16; 4],
}

impl DriverVer {
    /// Parse `02/25/2024,100.94.104.24800`; None when the date is malformed.
    pub fn parse(s: &str) -> Option<DriverVer> {
        let mut it = s.splitn(2, ',');
        let date = it.next()?.trim();
        let mut d = date.split(['/', '-']);
        let m: u8 = d.next()?.trim().parse().ok()?;
        let day: u8 = d.next()?.trim().parse().ok()?;
        let y: u16 = d.next()?.trim().parse().ok()?;
        if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
            return None;
        }
        let mut version = [0u16; 4];
        if let Some(v) = it.next() {
            for (i, p) in v.trim().split('.').take(4).enumerate() {
                version[i] = p.trim().parse().unwrap_or(0);
            }
        }
        Some(DriverVer {
            date: (y, m, day),
            version,
        })
    }

    /// The 64-bit version as Windows packs it (w<<48 | x<<32 | y<<16 | z).
    pub fn version_u64(&self) -> u64 {
        self.version
            .iter()
            .fold(0u64, |acc, p| (acc << 16) | u64::from(*p))
    }
}

impl fmt::Display for DriverVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.version;
        write!(
            f,
            "{:02}/{:02}/{:04},{a}.{b}.{c}.{d}",
            self.date.1, self.date.2, self.date.0
        )
    }
}

/// Processor architecture as INF decorations and Windows name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Arch {
    /// 32-bit x86.
    X86,
    /// x64.
    Amd64,
    /// ARM64.
    Arm64,
    /// Itanium (only for parsing old INFs).
    Ia64,
    /// 32-bit ARM.
    Arm,
}

impl Arch {
    /// Decoration spelling (`amd64`).
    pub fn inf_name(self) -> &'static str {
        match self {
            Arch::X86 => "x86",
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Ia64 => "ia64",
            Arch::Arm => "arm",
        }
    }

    /// From a decoration or PROCESSOR_ARCHITECTURE (`AMD64`, `x86`, `ARM64`).
    pub fn from_name(s: &str) -> Option<Arch> {
        match s.to_ascii_lowercase().as_str() {
            "x86" => Some(Arch::X86),
            "amd64" => Some(Arch::Amd64),
            "arm64" => Some(Arch::Arm64),
            "ia64" => Some(Arch::Ia64),
            "arm" => Some(Arch::Arm),
            _ => None,
        }
    }
}

/// What the driver is being chosen for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Architecture.
    pub arch: Arch,
    /// OS major version (6 for 7/8/8.1, 10 for 10/11).
    pub major: u32,
    /// OS minor version (1 = 7, 2 = 8, 3 = 8.1).
    pub minor: u32,
    /// Build number (7601, 9600, 16299, 22000...).
    pub build: u32,
}

/// A parsed TargetOSVersion decoration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decoration {
    /// As written (`NTamd64.10.0...16299`).
    pub raw: String,
    /// None: any architecture (`NT`, or the template `NT$ARCH$`).
    pub arch: Option<Arch>,
    /// True for `NT$ARCH$`.
    pub template_arch: bool,
    /// Minimum OS major version.
    pub major: Option<u32>,
    /// Minimum OS minor version.
    pub minor: Option<u32>,
    /// Product type (1 workstation, 2 DC, 3 server).
    pub product_type: Option<u32>,
    /// Minimum build number.
    pub build: Option<u32>,
}

impl Decoration {
    /// Parse `NT[arch][.major[.minor[.ptype[.suite[.build]]]]]`; None if not `NT...`.
    pub fn parse(s: &str) -> Option<Decoration> {
        let t = s.trim();
        let rest = t
            .get(2..)
            .filter(|_| t.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("NT")))?;
        let mut parts = rest.split('.');
        let arch_s = parts.next().unwrap_or("");
        let template_arch = arch_s == "$ARCH$";
        let arch = if arch_s.is_empty() || template_arch {
            None
        } else {
            Some(Arch::from_name(arch_s)?)
        };
        let num = |p: Option<&str>| p.and_then(parse_number);
        let major = num(parts.next());
        let minor = num(parts.next());
        let product_type = num(parts.next());
        let _suite = parts.next();
        let build = num(parts.next());
        Some(Decoration {
            raw: t.to_owned(),
            arch,
            template_arch,
            major,
            minor,
            product_type,
            build,
        })
    }

    /// Does this decoration apply to `t` (arch equal or unspecified, OS >= minimum)?
    pub fn applies_to(&self, t: &Target) -> bool {
        if self.arch.is_some_and(|a| a != t.arch) {
            return false;
        }
        if self.product_type.is_some_and(|p| p != 1) {
            return false;
        }
        let want = (
            self.major.unwrap_or(0),
            self.minor.unwrap_or(0),
            self.build.unwrap_or(0),
        );
        want <= (t.major, t.minor, t.build)
    }

    /// Ordering key: Windows picks the decoration with the highest OS version,
    /// and an architecture-specific one over a generic one.
    fn specificity(&self) -> (u32, u32, u32, bool) {
        (
            self.major.unwrap_or(0),
            self.minor.unwrap_or(0),
            self.build.unwrap_or(0),
            self.arch.is_some() || self.template_arch,
        )
    }
}

/// A `[Manufacturer]` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manufacturer {
    /// Expanded manufacturer name.
    pub name: String,
    /// Undecorated Models section name.
    pub models_section: String,
    /// Decorations listed.
    pub decorations: Vec<Decoration>,
    /// Line number.
    pub line: usize,
}

/// One device line of a Models section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    /// Manufacturer name.
    pub manufacturer: String,
    /// Device description (expanded).
    pub description: String,
    /// DDInstall base name.
    pub install_section: String,
    /// Hardware ID.
    pub hardware_id: String,
    /// Compatible IDs.
    pub compatible_ids: Vec<String>,
    /// Models section it came from.
    pub models_section: String,
    /// Line number.
    pub line: usize,
}

/// One file to copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyFile {
    /// Name in the package.
    pub source: String,
    /// Name at the destination.
    pub dest: String,
    /// Destination DIRID (12 = System32\drivers, 13 = driver store).
    pub dirid: u32,
    /// Optional subdirectory.
    pub subdir: Option<String>,
    /// Line number.
    pub line: usize,
}

/// `SPSVCINST_ASSOCSERVICE`: the service is the device's function driver.
pub const SPSVCINST_ASSOCSERVICE: u32 = 0x2;

/// An `AddService` directive with its service-install section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstall {
    /// Service (and key) name.
    pub name: String,
    /// Flags (0x2 = SPSVCINST_ASSOCSERVICE).
    pub flags: u32,
    /// Service-install section name.
    pub section: String,
    /// DisplayName.
    pub display_name: Option<String>,
    /// ServiceType (1 = kernel driver).
    pub service_type: Option<u32>,
    /// StartType (0 = boot).
    pub start_type: Option<u32>,
    /// ErrorControl.
    pub error_control: Option<u32>,
    /// ServiceBinary with the DIRID still as `%12%` / `%13%`.
    pub service_binary: Option<String>,
    /// LoadOrderGroup.
    pub load_order_group: Option<String>,
    /// AddReg lines of the service section (HKR = the service key).
    pub add_reg: Vec<RegLine>,
}

impl ServiceInstall {
    /// Is this the device's function driver?
    pub fn is_assoc(&self) -> bool {
        self.flags & SPSVCINST_ASSOCSERVICE != 0
    }

    /// `(dirid, file name)` of the ServiceBinary (`%13%\vioscsi.sys` → (13, "vioscsi.sys")).
    pub fn binary_dirid(&self) -> Option<(u32, String)> {
        let b = self.service_binary.as_deref()?;
        let rest = b.strip_prefix('%')?;
        let (d, file) = rest.split_once('%')?;
        Some((parse_number(d)?, file.trim_start_matches('\\').to_owned()))
    }
}

/// All an install section does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverInstall {
    /// The decorated section name used.
    pub section: String,
    /// Files copied.
    pub copy_files: Vec<CopyFile>,
    /// Services added.
    pub services: Vec<ServiceInstall>,
    /// AddReg of `.HW` (device key).
    pub hw_addreg: Vec<RegLine>,
    /// DelReg of `.HW`.
    pub hw_delreg: Vec<RegLine>,
}

/// Registry data an AddReg line writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegData {
    /// No value (key only or DelReg).
    None,
    /// REG_SZ.
    Sz(String),
    /// REG_EXPAND_SZ.
    ExpandSz(String),
    /// REG_MULTI_SZ.
    MultiSz(Vec<String>),
    /// REG_DWORD.
    Dword(u32),
    /// REG_BINARY or another type given in the flags' high word.
    Binary {
        /// Registry type number.
        reg_type: u32,
        /// Bytes.
        data: Vec<u8>,
    },
}

/// FLG_ADDREG_KEYONLY: create the key only.
pub const FLG_ADDREG_KEYONLY: u32 = 0x10;
/// FLG_ADDREG_NOCLOBBER: keep an existing value.
pub const FLG_ADDREG_NOCLOBBER: u32 = 0x2;
/// FLG_ADDREG_DELVAL: delete the value.
pub const FLG_ADDREG_DELVAL: u32 = 0x4;

/// An AddReg/DelReg line: `root, [subkey], [value], [flags], [value...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegLine {
    /// HKR, HKLM, ...
    pub root: String,
    /// Subkey (may be empty).
    pub subkey: String,
    /// Value name; None = the key only (or the default value for AddReg with data).
    pub value_name: Option<String>,
    /// Flags as written.
    pub flags: u32,
    /// Data.
    pub data: RegData,
    /// True for DelReg lines.
    pub delete: bool,
    /// Line number.
    pub line: usize,
}

impl RegLine {
    fn parse(inf: &Inf, raw: &[String], delete: bool, line: usize) -> RegLine {
        let f: Vec<String> = raw.iter().map(|s| inf.expand(s)).collect();
        let root = f.first().cloned().unwrap_or_default();
        let subkey = f.get(1).cloned().unwrap_or_default();
        let value_name = raw
            .get(2)
            .filter(|s| !s.trim().is_empty())
            .map(|_| f[2].clone());
        let flags = f.get(3).and_then(|s| parse_number(s)).unwrap_or(0);
        let rest: Vec<String> = f.iter().skip(4).cloned().collect();
        let data = if delete || flags & FLG_ADDREG_KEYONLY != 0 || flags & FLG_ADDREG_DELVAL != 0 {
            RegData::None
        } else {
            reg_data(flags, &rest)
        };
        RegLine {
            root,
            subkey,
            value_name,
            flags,
            data,
            delete,
            line,
        }
    }

    /// Registry value type this line writes, if any.
    pub fn reg_type(&self) -> Option<u32> {
        match &self.data {
            RegData::None => None,
            RegData::Sz(_) => Some(1),
            RegData::ExpandSz(_) => Some(2),
            RegData::Binary { reg_type, .. } => Some(*reg_type),
            RegData::Dword(_) => Some(4),
            RegData::MultiSz(_) => Some(7),
        }
    }
}

fn reg_data(flags: u32, rest: &[String]) -> RegData {
    let first = rest.first().cloned().unwrap_or_default();
    // FLG_ADDREG_TYPE_MASK = 0xFFFF0001; the binary bit plus a type in the high word.
    match flags & 0xFFFF_0001 {
        0x0000_0000 => RegData::Sz(first),
        0x0001_0000 => RegData::MultiSz(rest.iter().filter(|s| !s.is_empty()).cloned().collect()),
        0x0002_0000 => RegData::ExpandSz(first),
        0x0001_0001 => RegData::Dword(parse_number(&first).unwrap_or(0)),
        0x0002_0001 => RegData::Binary {
            reg_type: 0,
            data: Vec::new(),
        },
        other => {
            let reg_type = if other & 0xFFFF_0000 == 0 {
                3
            } else {
                other >> 16
            };
            let data = rest
                .iter()
                .filter_map(|b| u8::from_str_radix(b.trim().trim_start_matches("0x"), 16).ok())
                .collect();
            RegData::Binary { reg_type, data }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/inf")
            .join(rel);
        std::fs::read(&p).expect("fixture present")
    }

    const WIN10: Target = Target {
        arch: Arch::Amd64,
        major: 10,
        minor: 0,
        build: 19045,
    };
    const WIN7X86: Target = Target {
        arch: Arch::X86,
        major: 6,
        minor: 1,
        build: 7601,
    };

    #[test]
    fn viostor_w10_stamped() {
        let inf = parse_inf(&fixture("virtio-win/viostor.w10-amd64.stamped.inf")).expect("parses");
        assert!(!inf.is_template(), "{:?}", inf.template_tokens);
        let v = inf.version();
        assert_eq!(v.class.as_deref(), Some("SCSIAdapter"));
        assert_eq!(
            v.class_guid.as_deref(),
            Some("{4D36E97B-E325-11CE-BFC1-08002BE10318}")
        );
        assert_eq!(v.provider.as_deref(), Some("Red Hat, Inc."));
        let dv = v.driver_ver.expect("DriverVer");
        assert_eq!(dv.date, (2024, 2, 25));
        assert_eq!(dv.version, [100, 94, 104, 24800]);
        let models = inf.models(&WIN10);
        assert_eq!(models.len(), 2);
        assert_eq!(
            models[0].hardware_id,
            "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00"
        );
        assert_eq!(
            models[0].compatible_ids,
            vec!["PCI\\VEN_1AF4&DEV_1001".to_owned()]
        );
        assert_eq!(models[0].install_section, "scsi_inst");
        // Not for x86, nor for Windows 7.
        assert!(inf.models(&WIN7X86).is_empty());
        let di = inf
            .driver_install("scsi_inst", Arch::Amd64)
            .expect("install");
        assert_eq!(di.copy_files.len(), 1);
        assert_eq!(di.copy_files[0].dest, "viostor.sys");
        assert_eq!(di.copy_files[0].dirid, 12);
        let s = &di.services[0];
        assert_eq!(s.name, "viostor");
        assert!(s.is_assoc());
        assert_eq!(
            (s.service_type, s.start_type, s.error_control),
            (Some(1), Some(0), Some(1))
        );
        assert_eq!(s.binary_dirid(), Some((12, "viostor.sys".into())));
        assert_eq!(s.load_order_group.as_deref(), Some("SCSI miniport"));
        assert!(s
            .add_reg
            .iter()
            .any(|r| r.subkey == "Parameters\\PnpInterface"
                && r.value_name.as_deref() == Some("5")
                && r.data == RegData::Dword(1)));
        assert!(!di.hw_addreg.is_empty());
    }

    #[test]
    fn vioscsi_w11_dirid13_and_build_decoration() {
        let inf = parse_inf(&fixture("virtio-win/vioscsi.w11-amd64.stamped.inf")).expect("parses");
        let m = &inf.manufacturers()[0];
        assert_eq!(m.decorations[0].build, Some(16299));
        assert_eq!(m.decorations[0].major, Some(10));
        // 1709 is build 16299: applies; 1607 (14393) and 8.1 do not.
        assert_eq!(
            inf.models(&Target {
                build: 16299,
                ..WIN10
            })
            .len(),
            2
        );
        assert!(inf
            .models(&Target {
                build: 14393,
                ..WIN10
            })
            .is_empty());
        assert!(inf
            .models(&Target {
                arch: Arch::Amd64,
                major: 6,
                minor: 3,
                build: 9600
            })
            .is_empty());
        let di = inf
            .driver_install("scsi_inst", Arch::Amd64)
            .expect("install");
        assert_eq!(di.copy_files[0].dirid, 13);
        assert_eq!(
            di.services[0].binary_dirid(),
            Some((13, "vioscsi.sys".into()))
        );
        // quoted value with %% and a REG_EXPAND_SZ flag from [Strings]
        let ev = inf
            .reg_lines("scsi_EventLog_Inst", "AddReg")
            .expect("addreg");
        assert_eq!(
            ev[0].data,
            RegData::ExpandSz("%SystemRoot%\\System32\\IoLogMsg.dll".into())
        );
        let msix = &di.hw_addreg;
        assert_eq!(msix[0].subkey, "Interrupt Management");
        assert_eq!(msix[0].flags, FLG_ADDREG_KEYONLY);
        assert_eq!(msix[0].data, RegData::None);
    }

    #[test]
    fn inx_templates_are_flagged() {
        for f in ["virtio-win/viostor.inx", "virtio-win/vioscsi.inx"] {
            let inf = parse_inf(&fixture(f)).expect("parses");
            assert!(inf.is_template(), "{f}");
            assert!(
                inf.template_tokens.iter().any(|t| t == "$ARCH$"),
                "{:?}",
                inf.template_tokens
            );
            assert!(
                inf.template_tokens.iter().any(|t| t.starts_with("INX_")),
                "{:?}",
                inf.template_tokens
            );
            // NT$ARCH$ matches any architecture so the template can still be inspected.
            assert_eq!(inf.models(&WIN10).len(), 2);
            assert_eq!(inf.models(&WIN7X86).len(), 2);
        }
    }

    #[test]
    fn lsi_u3_assoc_service_two_addregs_delreg() {
        let inf = parse_inf(&fixture("windows-driver-samples/lsi_u3.inf")).expect("parses");
        assert!(inf.is_template());
        assert_eq!(
            inf.version().driver_ver.map(|d| d.version),
            Some([5, 9, 10, 4])
        );
        let models = inf.models(&WIN7X86);
        assert_eq!(
            models
                .iter()
                .map(|m| m.hardware_id.as_str())
                .collect::<Vec<_>>(),
            ["PCI\\VEN_1000&DEV_0020", "PCI\\VEN_1000&DEV_0021"]
        );
        assert_eq!(
            models[0].description,
            "LSI Ultra3 PCI SCSI Adapter; 53C1010-33 (StorPort)"
        );
        let di = inf
            .driver_install("LSI_U3_Inst", Arch::X86)
            .expect("install");
        assert_eq!(inf.dest_dir("LSI_U3_CopyFiles"), (12, None));
        assert_eq!(di.copy_files[0].dirid, 12);
        let s = &di.services[0];
        assert_eq!(s.flags, SPSVCINST_ASSOCSERVICE);
        assert_eq!(s.add_reg.len(), 2, "two AddReg lines are both honoured");
        assert_eq!(s.load_order_group.as_deref(), Some("SCSI Miniport"));
        assert_eq!(di.hw_delreg.len(), 3);
        assert!(di
            .hw_delreg
            .iter()
            .all(|r| r.delete && r.subkey == "Scsiport"));
    }

    #[test]
    fn xenvbd_non_pci_ids_and_quoted_group() {
        let inf = parse_inf(&fixture("win-xenvbd/xenvbd.inf")).expect("parses");
        assert!(
            inf.template_tokens.iter().any(|t| t == "@MAJOR_VERSION@"),
            "{:?}",
            inf.template_tokens
        );
        let models = inf.models(&WIN10);
        assert_eq!(models.len(), 3);
        assert_eq!(
            models[1].hardware_id,
            "XENBUS\\VEN_XS0001&DEV_VBD&REV_00000001"
        );
        let di = inf
            .driver_install("XenVbd_Inst", Arch::Amd64)
            .expect("install");
        assert_eq!(
            di.services[0].load_order_group.as_deref(),
            Some("Scsi Miniport")
        );
        assert_eq!(
            di.copy_files
                .iter()
                .map(|c| c.dest.as_str())
                .collect::<Vec<_>>(),
            ["xenvbd.sys", "xencrsh.sys"]
        );
        // trailing empty fourth field of AddService is tolerated
        assert_eq!(di.services[0].name, "xenvbd");
        assert_eq!(inf.dest_dir("CoInst_CopyFiles"), (11, None));
    }

    #[test]
    fn utf16le_with_bom() {
        let bytes = fixture("windows-driver-samples/netvadapter.utf16le.inf");
        assert_eq!(&bytes[..2], &[0xFF, 0xFE]);
        let inf = parse_inf(&bytes).expect("parses");
        assert_eq!(inf.encoding, Encoding::Utf16Le);
        assert_eq!(inf.version().class.as_deref(), Some("Net"));
        let models = inf.models(&WIN10);
        assert!(models.iter().any(|m| m.hardware_id == "root\\netvadapter"));
        assert!(models
            .iter()
            .any(|m| m.hardware_id == "{b85b7c50-6a01-11d2-b841-00c04fad5171}\\netvadapter"));
    }

    #[test]
    fn utf16be_continuation_localized_strings() {
        let text = "[Version]\r\nSignature=\"$Windows NT$\"\r\nProvider=%P%\r\nClass=A,\\\r\n B ; c\r\n[Strings.0407]\r\nP=\"Anbieter \"\"x\"\"\"\r\n";
        let mut bytes = vec![0xFE, 0xFF];
        for u in text.encode_utf16() {
            bytes.extend_from_slice(&u.to_be_bytes());
        }
        let inf = parse_inf(&bytes).expect("parses");
        assert_eq!(inf.encoding, Encoding::Utf16Be);
        assert_eq!(inf.version().provider.as_deref(), Some("Anbieter \"x\""));
        assert_eq!(inf.value("Version", "Class").as_deref(), Some("A,B"));
    }

    #[test]
    fn locale_preference() {
        let text = "[Version]\nProvider=%P%\n[Strings]\nP=en\n[Strings.0407]\nP=de\n[Strings.0418]\nQ=ro\n";
        let mut inf = parse_inf(text.as_bytes()).expect("parses");
        assert_eq!(inf.version().provider.as_deref(), Some("en"));
        inf.locale = Some("0407".into());
        assert_eq!(inf.version().provider.as_deref(), Some("de"));
        assert_eq!(inf.expand("%q%-%unknown%-%12%"), "ro-%unknown%-%12%");
    }

    #[test]
    fn decoration_choice_prefers_most_specific_applicable() {
        let text = "[Version]\nSignature=x\n[Manufacturer]\nM=Mod,NTamd64,NTamd64.10.0,NTamd64.10.0...22000,NTx86\n[Mod.NTamd64]\nd=a,ID\\A\n[Mod.NTamd64.10.0]\nd=b,ID\\B\n[Mod.NTamd64.10.0...22000]\nd=c,ID\\C\n[Mod.NTx86]\nd=e,ID\\E\n";
        let inf = parse_inf(text.as_bytes()).expect("parses");
        let pick = |t: Target| inf.models(&t).first().map(|m| m.install_section.clone());
        assert_eq!(
            pick(Target {
                build: 22621,
                ..WIN10
            })
            .as_deref(),
            Some("c")
        );
        assert_eq!(pick(WIN10).as_deref(), Some("b"));
        assert_eq!(
            pick(Target {
                arch: Arch::Amd64,
                major: 6,
                minor: 1,
                build: 7601
            })
            .as_deref(),
            Some("a")
        );
        assert_eq!(pick(WIN7X86).as_deref(), Some("e"));
        assert_eq!(
            pick(Target {
                arch: Arch::Arm64,
                ..WIN10
            }),
            None
        );
    }

    #[test]
    fn mutated_fixtures_never_panic() {
        let mut seed = 0x9e37_79b9_u32;
        for f in [
            "virtio-win/vioscsi.w11-amd64.stamped.inf",
            "windows-driver-samples/netvadapter.utf16le.inf",
            "win-xenvbd/xenvbd.inf",
        ] {
            let base = fixture(f);
            for round in 0..300 {
                let mut b = base.clone();
                for _ in 0..(1 + round % 16) {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    let pos = (seed as usize >> 3) % b.len();
                    let alphabet = b"%\\\";,=[]\"\n\0\xff$@.";
                    b[pos] = alphabet[(seed >> 27) as usize % alphabet.len()];
                }
                b.truncate(b.len() - (seed as usize % 7));
                if let Ok(inf) = parse_inf(&b) {
                    for t in [WIN10, WIN7X86] {
                        for m in inf.models(&t) {
                            let _ = inf.driver_install(&m.install_section, t.arch);
                        }
                    }
                    let _ = inf.version();
                }
            }
        }
    }

    #[test]
    fn bad_input_never_panics() {
        assert!(matches!(parse_inf(b""), Err(InfError::NoVersion { .. })));
        assert!(matches!(
            parse_inf(b"\x7fELF\0\0"),
            Err(InfError::Binary { .. })
        ));
        for s in [
            "[Version]\n[Manufacturer]\nM=X,€€,N€,NT€\n",
            "[Version",
            "[Version]\n%",
            "[Version]\n\"",
            "[Version]\n=,=,\\",
            "[Version]\nDriverVer=13/40/x,1.2",
            "\u{fffe}[Version]\n[Manufacturer]\n%a%=,NT$ARCH$...\n",
        ] {
            let inf = parse_inf(s.as_bytes());
            if let Ok(inf) = inf {
                let _ = inf.models(&WIN10);
                let _ = inf.version();
            }
        }
        let odd: Vec<u8> = [0xFF, 0xFE, b'[', 0, b'V'].to_vec();
        let _ = parse_inf(&odd);
        let inf = parse_inf(
            b"[Version]\nDriverVer=13/40/2020,1.2\n[Manufacturer]\nM=X\n[X]\nd=inst,ID\n",
        )
        .expect("parses");
        assert_eq!(inf.version().driver_ver, None);
        assert!(matches!(
            inf.driver_install("inst", Arch::X86),
            Err(InfError::MissingSection { .. })
        ));
    }
}
