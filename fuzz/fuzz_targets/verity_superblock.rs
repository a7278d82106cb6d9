//! Verity superblock parser on arbitrary bytes; a parsed superblock must give a sane layout.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(p) = initrd_sysext::format::verity::Params::parse(data) {
        let _ = p.hash_area_size();
    }
});
