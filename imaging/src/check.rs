//! `check`: verify every byte of an image (all volumes, header, footer,
//! catalog, index segments, frames, and every chunk's hash after decryption
//! and decompression).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::image::reader::NullSink;
use crate::image::ImageReader;
use crate::task::Task;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub ok: bool,
    /// Whether every chunk was also decompressed and checked.
    pub deep: bool,
    pub volumes: usize,
    pub regions: usize,
    pub chunks: u64,
    pub data_bytes: u64,
    pub image_bytes: u64,
    pub seconds: f64,
}

/// Verify an image. The default pass reads every stored byte and checks it
/// against the index's BLAKE3 (and the index against the catalog, the catalog
/// against the footer): any flipped byte is found at the speed of reading.
/// `deep` also decrypts and decompresses every frame and checks each chunk's
/// own hash, which proves the data decodes to what was read from the disk.
pub fn check_reader(reader: &ImageReader, deep: bool, task: &Task) -> Result<CheckReport, Error> {
    let t0 = std::time::Instant::now();
    let cat = reader.catalog();
    let mut chunks = 0;
    let mut data = 0;
    let ids: Vec<u32> = cat.regions.iter().map(|r| r.id).collect();
    reader.verify_stored(&ids, task)?;
    for r in &cat.regions {
        if deep {
            reader.read_region(r, &NullSink, task)?;
        }
        chunks += r.chunks;
        data += r.chunks * u64::from(cat.options.chunk_size);
    }
    Ok(CheckReport {
        ok: true,
        deep,
        volumes: reader.volumes().len(),
        regions: cat.regions.len(),
        chunks,
        data_bytes: data,
        image_bytes: reader.len(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

pub fn check_image(path: &Path, password: Option<&[u8]>, deep: bool, task: &Task) -> Result<CheckReport, Error> {
    let reader = ImageReader::open(path, password)?;
    check_reader(&reader, deep, task)
}
