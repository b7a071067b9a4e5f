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
    pub volumes: usize,
    pub regions: usize,
    pub chunks: u64,
    pub data_bytes: u64,
    pub image_bytes: u64,
    pub seconds: f64,
}

pub fn check_reader(reader: &ImageReader, task: &Task) -> Result<CheckReport, Error> {
    let t0 = std::time::Instant::now();
    let cat = reader.catalog();
    let mut chunks = 0;
    let mut data = 0;
    for r in &cat.regions {
        reader.read_region(r, &NullSink, task)?;
        chunks += r.chunks;
        data += r.chunks * u64::from(cat.options.chunk_size);
    }
    Ok(CheckReport {
        ok: true,
        volumes: reader.volumes().len(),
        regions: cat.regions.len(),
        chunks,
        data_bytes: data,
        image_bytes: reader.len(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

pub fn check_image(path: &Path, password: Option<&[u8]>, task: &Task) -> Result<CheckReport, Error> {
    let reader = ImageReader::open(path, password)?;
    check_reader(&reader, task)
}
