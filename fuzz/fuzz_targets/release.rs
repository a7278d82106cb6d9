//! os-release / extension-release parser: what parses must render and parse back the same.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use initrd_sysext::format::release::Release;
    if let Ok(r) = Release::parse(&String::from_utf8_lossy(data)) {
        assert_eq!(Release::parse(&r.render()).ok(), Some(r));
    }
});
