//! erofs reader on arbitrary bytes: opening, listing, reading files and xattrs give Ok or a
//! typed error, never a panic, a hang or a huge allocation.
#![no_main]
use initrd_sysext::format::lookup::Filesystem;
use initrd_sysext::format::erofs::Reader;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(r) = Reader::open(data, 0) else {
        return;
    };
    for dir in ["", "usr", "usr/lib", "usr/lib/extension-release.d"] {
        let _ = r.list(dir);
    }
    for file in ["usr/lib/os-release", "usr/lib/extension-release.d/extension-release.x", "usr/bin/tool"] {
        let _ = r.read_file(file, 1 << 20);
        let _ = r.xattr(file, "user.extension-release.strict");
    }
});
