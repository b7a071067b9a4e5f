//! Test helpers: fixtures from `shared/testdata`, xz decompression, and dumps by
//! the independent parser (python3-hivex via `tests/hivex_dump.py`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `shared/testdata` (override with `RESCUE_TESTDATA`).
pub fn testdata() -> PathBuf {
    std::env::var_os("RESCUE_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata"))
}

/// Decompressed bytes of `hives/regipy/<name>.xz`.
pub fn regipy(name: &str) -> Vec<u8> {
    let p = testdata().join("hives/regipy").join(format!("{name}.xz"));
    let f = std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()));
    let mut out = Vec::new();
    lzma_rs::xz_decompress(&mut &f[..], &mut out).expect("xz fixture decompresses");
    out
}

/// Raw bytes of a testdata file.
pub fn raw(rel: &str) -> Vec<u8> {
    let p = testdata().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// Dump a hive file with libhivex (python3-hivex).
pub fn hivex_dump(path: &Path) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hivex_dump.py");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(path)
        .output()
        .expect("run /usr/bin/python3 (apt-get install python3-hivex)");
    assert!(
        out.status.success(),
        "hivex could not read {}: {} (needs apt package python3-hivex)",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// (lines only in `before`, lines only in `after`).
pub fn diff(before: &[String], after: &[String]) -> (BTreeSet<String>, BTreeSet<String>) {
    let b: BTreeSet<String> = before.iter().cloned().collect();
    let a: BTreeSet<String> = after.iter().cloned().collect();
    (
        b.difference(&a).cloned().collect(),
        a.difference(&b).cloned().collect(),
    )
}

/// Hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Export line for a value, as both dumpers print it.
pub fn vline(path: &str, name: &str, t: u32, data: &[u8]) -> String {
    format!("{path}\t{}\t{t}\t{}", hex(name.as_bytes()), hex(data))
}

/// expected-facts.json.
pub fn facts() -> serde_json::Value {
    serde_json::from_slice(&raw("hives/regipy/expected-facts.json")).expect("facts json")
}
