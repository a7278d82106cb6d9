//! Test helpers shared by the erofs unit tests and `tests/erofs_tools.rs` (which includes this
//! file, so it names the crate only through `crate::format` and `crate::tree`): a source tree
//! that exercises every inode layout, and deterministic file contents.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::format::test_fs::{self, set_xattr};
use crate::tree::Tree;

pub const RELEASE: &str = "usr/lib/extension-release.d/extension-release.foo";

/// Deterministic bytes that repeat neither per block nor per page.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
}

/// A source tree with inline tails, whole blocks, multi-block directories, symlinks,
/// a fifo, hard links and xattrs (one value shared by several files).
pub fn populate(d: &Path) {
    fs::create_dir_all(d.join("usr/lib/extension-release.d")).unwrap();
    fs::create_dir_all(d.join("empty-dir")).unwrap();
    fs::create_dir_all(d.join("many")).unwrap();
    fs::write(d.join(RELEASE), b"ID=_any\nSYSEXT_SCOPE=initrd\n").unwrap();
    fs::write(d.join("usr/lib/empty"), b"").unwrap();
    fs::write(d.join("usr/lib/block"), pattern(8192)).unwrap();
    fs::write(d.join("usr/lib/tail"), pattern(10000)).unwrap();
    fs::write(d.join("usr/lib/big"), pattern(100_000)).unwrap();
    symlink("tail", d.join("usr/lib/link")).unwrap();
    fs::hard_link(d.join("usr/lib/tail"), d.join("hard")).unwrap();
    let fifo = rustix::fs::FileType::Fifo;
    rustix::fs::mknodat(rustix::fs::CWD, d.join("fifo"), fifo, 0o600.into(), 0).unwrap();
    for i in 0..300 {
        let name = format!("many/{i:03}-{}", "n".repeat(i % 60));
        fs::write(d.join(name), i.to_string()).unwrap();
    }
    set_xattr(&d.join(RELEASE), "user.extension-release.strict", b"0");
    for f in ["usr/lib/block", "usr/lib/big", "many/007-nnnnnnn"] {
        set_xattr(&d.join(f), "user.shared", b"same value");
    }
    set_xattr(&d.join("usr/lib/big"), "user.own", b"big");
    set_xattr(&d.join("usr"), "user.dir", b"");
}

/// [`populate`]d in `src` of a temporary directory, and scanned.
pub fn source() -> (tempfile::TempDir, Tree) {
    test_fs::scanned(populate)
}
