//! cpio reader (plain newc, zstd and gzip members) on arbitrary bytes: every entry or a typed
//! error, never a panic; decompression is capped so that a bomb is an error, not an OOM.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let reader = cpio_builder::Reader::new(data).decompressed_limit(16 << 20);
    for entry in reader {
        if let Ok(e) = entry {
            let _ = e.header();
        }
    }
});
