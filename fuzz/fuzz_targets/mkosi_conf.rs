//! mkosi configuration files (`build --directory`): any bytes give entries or a line error.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = initrd_sysext::format::mkosi_conf::parse(&String::from_utf8_lossy(data));
});
