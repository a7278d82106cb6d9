//! GPT reader on arbitrary bytes: Ok or a typed error, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = initrd_sysext::format::gpt::read(data);
});
