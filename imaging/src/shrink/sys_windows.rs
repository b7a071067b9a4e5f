//! The Windows side of `sys.rs`. Shrinking itself needs Linux tools on a loop
//! device (see `plan_scratch`, which refuses on other systems), so free space
//! is not queried here; the data map treats the whole scratch file as data,
//! which is correct, only slower than skipping holes.

use std::fs::File;
use std::io;

/// Not available: shrinking is refused before this is asked.
pub fn available_bytes(_f: &File) -> io::Result<u64> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "shrinking filesystems is not supported on Windows yet"))
}

/// `from` while it lies inside the file: every byte counts as data.
pub fn next_data(f: &File, from: u64) -> io::Result<Option<u64>> {
    Ok((from < f.metadata()?.len()).then_some(from))
}

/// The file end, the only hole there is when every byte counts as data.
pub fn next_hole(f: &File, from: u64) -> io::Result<Option<u64>> {
    let len = f.metadata()?.len();
    Ok((from <= len).then_some(len))
}
