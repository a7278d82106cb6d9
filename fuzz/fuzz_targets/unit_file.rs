//! Unit-file syntax (mkosi.conf, repart.d): any bytes give entries or a `file:line` error, in
//! both dialects.
#![no_main]
use initrd_sysext::format::unit;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for dialect in [&unit::MKOSI, &unit::REPART] {
        let _ = unit::parse(std::path::Path::new("fuzz.conf"), &text, dialect);
    }
});
