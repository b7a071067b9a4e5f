//! The image format on a committed fixture (made by
//! scripts/fixtures/gen-image.sh): it must keep reading in later versions,
//! decode to the original partition, and reject every kind of damage
//! without panicking.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use imaging::image::reader::ChunkSink;
use imaging::image::{ImageError, ImageReader, Region};
use imaging::read_at::ReadAt;
use imaging::task::Task;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/image/small-v1.rimg")
}

struct VecSink(Mutex<Vec<u8>>);
impl ChunkSink for VecSink {
    fn write_at(&self, _: &Region, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut v = self.0.lock().expect("lock");
        let end = offset as usize + data.len();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

#[test]
fn fixture_opens_and_decodes_to_the_original_partition() {
    let r = ImageReader::open(&fixture(), None).expect("fixture opens");
    let c = r.catalog();
    assert_eq!(c.comment.as_deref(), Some("format v1 fixture"));
    assert_eq!(c.source.size, 6 << 20);
    let t = c.table.as_ref().expect("table");
    assert_eq!(t.disk_id, "0b2394a9-095e-487d-8d48-719ecd4d78ca");
    assert_eq!(t.partitions[0].guid.as_deref(), Some("8e0f2c38-e4ea-47ba-b7fc-9d8c74dccf0b"));
    imaging::check::check_reader(&r, true, &Task::default()).expect("deep check");
    let region = c.partition_region(1).expect("partition 1 stored");
    let sink = VecSink(Mutex::new(vec![0u8; region.len as usize]));
    r.read_region(region, &sink, &Task::default()).expect("decode");
    let part = sink.0.into_inner().expect("lock");
    let fs = imaging::fs::probe(&part, part.len() as u64).expect("probe").expect("a filesystem");
    assert_eq!(fs.kind, imaging::fs::FsKind::Fat12);
    assert_eq!(fs.label.as_deref(), Some("FIXTURE"));
    let text: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    let hay = &part[..];
    let found = hay.windows(64).position(|w| w == &text.as_bytes()[..64]);
    assert!(found.is_some(), "numbers.txt content not found in the decoded partition");
    // The copy of numbers.txt was stored once (deduplicated chunks).
    assert!(region.stored_bytes < 40_000, "stored {} bytes", region.stored_bytes);
}

fn copy_fixture(dir: &Path) -> PathBuf {
    let p = dir.join("img.rimg");
    std::fs::copy(fixture(), &p).expect("copy");
    p
}

/// Open + deep check; Ok(()) only when the image is intact.
fn verify(p: &Path) -> Result<(), String> {
    let r = ImageReader::open(p, None).map_err(|e| e.to_string())?;
    imaging::check::check_reader(&r, true, &Task::default()).map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn every_flipped_byte_is_detected() {
    let d = tempfile::tempdir().expect("tempdir");
    let orig = std::fs::read(fixture()).expect("read");
    let p = copy_fixture(d.path());
    // Every byte of a 22 KB image: header, frames, index, catalog, footer.
    let step = (orig.len() / 3000).max(1);
    for i in (0..orig.len()).step_by(step) {
        let mut b = orig.clone();
        b[i] ^= 0x01;
        std::fs::write(&p, &b).expect("write");
        assert!(verify(&p).is_err(), "flipped byte {i} of {} not detected", orig.len());
    }
}

/// The same damage found when the stored bytes are read past the page cache
/// (what `rescue check` does on a cold image), and through it.
#[test]
fn every_flipped_byte_is_detected_reading_past_the_cache_or_through_it() {
    let d = tempfile::tempdir().expect("tempdir");
    let orig = std::fs::read(fixture()).expect("read");
    let p = copy_fixture(d.path());
    let check = |uncached: bool| -> Result<(), String> {
        let mut r = ImageReader::open(&p, None).map_err(|e| e.to_string())?;
        r.set_uncached_reads(Some(uncached));
        imaging::check::check_reader(&r, false, &Task::default()).map_err(|e| e.to_string())?;
        Ok(())
    };
    for uncached in [true, false] {
        check(uncached).unwrap_or_else(|e| panic!("intact image (uncached {uncached}): {e}"));
    }
    let step = (orig.len() / 1500).max(1);
    for i in (0..orig.len()).step_by(step) {
        let mut b = orig.clone();
        b[i] ^= 0x01;
        std::fs::write(&p, &b).expect("write");
        for uncached in [true, false] {
            assert!(check(uncached).is_err(), "flipped byte {i} of {} not detected (uncached {uncached})", orig.len());
        }
    }
}

#[test]
fn truncation_is_reported_as_incomplete() {
    let d = tempfile::tempdir().expect("tempdir");
    let orig = std::fs::read(fixture()).expect("read");
    let p = copy_fixture(d.path());
    for cut in [1usize, 100, 128, 5000, orig.len() - 64] {
        std::fs::write(&p, &orig[..orig.len() - cut]).expect("write");
        match ImageReader::open(&p, None) {
            Err(ImageError::Incomplete { .. }) | Err(ImageError::NotAnImage { .. }) => {}
            Err(e) => panic!("cut {cut}: unexpected error {e}"),
            Ok(_) => panic!("cut {cut}: truncated image opened"),
        }
    }
}

#[test]
fn garbage_and_empty_files_are_not_images() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("x");
    for content in [&b""[..], &b"hello"[..], &[0u8; 4096][..]] {
        std::fs::write(&p, content).expect("write");
        assert!(ImageReader::open(&p, None).is_err());
    }
    // Reading past the end of the logical stream is an error, not a panic.
    let r = ImageReader::open(&fixture(), None).expect("open");
    let mut buf = [0u8; 16];
    assert!(r.volume_set().read_exact_at(&mut buf, r.len() - 8).is_err());
}
