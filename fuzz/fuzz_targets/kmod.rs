//! Kernel module metadata (modules.dep, .softdep, .alias, .builtin, split at NUL bytes) on
//! arbitrary text: a database or a `file:line` error, and closures that terminate.
#![no_main]
use initrd_sysext::format::kmod::ModuleDb;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let mut next = || parts.next().unwrap_or("");
    let (dep, softdep, alias, builtin) = (next(), next(), next(), next());
    let dir = std::path::Path::new("/lib/modules/fuzz");
    let Ok(db) = ModuleDb::parse(dir, dep, softdep, alias, builtin) else {
        return;
    };
    let names: Vec<&str> = db.modules.keys().take(8).map(String::as_str).collect();
    for required in [false, true] {
        if let Ok(order) = db.closure(&names, required) {
            let _ = db.render_dep(&order);
            let _ = db.render_softdep(&order);
        }
    }
    let _ = db.closure(&["dm-verity", "crc32c", "loop"], false);
});
