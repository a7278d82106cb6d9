//! Fuzzes the reader with arbitrary bytes: it must return entries or an error, never panic,
//! and every entry it returns must agree with its own header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    for item in cpio_builder::Reader::new(input).decompressed_limit(16 << 20) {
        let Ok(entry) = item else { break };
        assert_eq!(entry.data.len(), entry.raw.filesize as usize);
        assert_eq!(entry.name.len() + 1, entry.raw.namesize as usize);
    }
});
