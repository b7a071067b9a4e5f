//! The image reader on arbitrary bytes: open (volume header, header, footer,
//! catalog) and, when that succeeds, a deep check of every region. Errors are
//! fine; panics, overflows and huge allocations are not.
#![no_main]

use std::io::Write;

use imaging::image::ImageReader;
use imaging::task::Task;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("fuzz-image-{}.rimg", std::process::id()));
    {
        let mut f = std::fs::File::create(&path).expect("temp file");
        f.write_all(data).expect("write temp file");
    }
    for pw in [None, Some(&b"fuzz"[..])] {
        if let Ok(r) = ImageReader::open(&path, pw) {
            let _ = imaging::check::check_reader(&r, true, &Task::default());
        }
    }
    let _ = std::fs::remove_file(&path);
});
