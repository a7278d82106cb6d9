//! Test helpers shared by the squashfs unit tests and `tests/squashfs_tools.rs` (which
//! includes this file, so it names the crate only through `crate::format` and `crate::tree`):
//! deterministic bytes, sample trees, and a check that a reader sees what a tree holds.

use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::format::blob::Blob;
use crate::format::lookup::Filesystem;
use crate::format::squashfs::layout::Superblock;
use crate::format::squashfs::{self, Options, Reader};
use crate::format::test_fs;
pub use crate::format::test_fs::set_xattr;
use crate::tree::{Content, Kind, Meta, ScanOptions, Tree};
use test_support::Rng;

/// The writer's data block size.
pub const BLOCK: usize = 128 * 1024;
pub const RELEASE: &str = "usr/lib/extension-release.d/extension-release.foo";

/// Changes 1 to 4 bytes of `b`.
fn mutate(rng: &mut Rng, b: &mut [u8]) {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len());
        b[at] = match rng.below(3) {
            0 => rng.next_u64() as u8,
            1 => b[at] ^ (1 << rng.below(8)),
            _ => [0, 0xff, 0x80, 0x7f][rng.below(4)],
        };
    }
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0; len];
    Rng::new(seed).fill(&mut out);
    out
}

/// Compressible text that does not repeat block to block.
pub fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(format!("line {i} of some text\n").as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// Metadata of a generated entry.
pub fn file_meta(perm: u32) -> Meta {
    Meta::generated(perm, 1_600_000_000)
}

/// A regular file holding `data`.
pub fn bytes(data: &[u8]) -> Kind {
    Kind::File {
        content: Content::Bytes(data.to_vec()),
        size: data.len() as u64,
    }
}

/// A source tree with whole blocks, tails in fragments, sparse and incompressible blocks,
/// a directory needing several headers and metadata blocks, symlinks, a fifo, hard links
/// and xattrs (one large value shared by several files, stored out of line by mksquashfs).
pub fn populate(d: &Path) {
    fs::create_dir_all(d.join("usr/lib/extension-release.d")).unwrap();
    fs::create_dir_all(d.join("empty-dir")).unwrap();
    fs::create_dir_all(d.join("many")).unwrap();
    fs::write(d.join(RELEASE), b"ID=_any\nSYSEXT_SCOPE=initrd\n").unwrap();
    fs::write(d.join("usr/lib/empty"), b"").unwrap();
    fs::write(d.join("usr/lib/block"), text(BLOCK)).unwrap();
    fs::write(d.join("usr/lib/tail"), text(2 * BLOCK + 1000)).unwrap();
    fs::write(d.join("usr/lib/noise"), noise(BLOCK + 77, 5)).unwrap();
    let mut sparse = vec![0; 2 * BLOCK];
    sparse.extend(text(500));
    fs::write(d.join("usr/lib/sparse"), sparse).unwrap();
    symlink("tail", d.join("usr/lib/link")).unwrap();
    fs::hard_link(d.join("usr/lib/tail"), d.join("hard")).unwrap();
    let fifo = rustix::fs::FileType::Fifo;
    rustix::fs::mknodat(rustix::fs::CWD, d.join("fifo"), fifo, 0o600.into(), 0).unwrap();
    // Mostly empty files: every lookup decompresses the listing again.
    for i in 0..600 {
        let name = format!("many/{i:03}-{}", "n".repeat(i % 60));
        let content = if i % 50 == 7 {
            i.to_string()
        } else {
            String::new()
        };
        fs::write(d.join(name), content).unwrap();
    }
    set_xattr(&d.join(RELEASE), "user.extension-release.strict", b"0");
    let shared = text(300);
    for f in ["usr/lib/block", "usr/lib/noise", "many/007-nnnnnnn"] {
        set_xattr(&d.join(f), "user.shared", &shared);
    }
    set_xattr(&d.join("usr/lib/noise"), "user.own", b"noise");
    set_xattr(&d.join("usr"), "user.dir", b"");
    set_xattr(&d.join("empty-dir"), "trusted.t", b"t");
}

/// [`populate`]d in `src` of a temporary directory, and scanned.
pub fn source() -> (tempfile::TempDir, Tree) {
    test_fs::scanned(populate)
}

/// [`test_fs::assert_matches`] without the empty files of "many": each lookup there reads its
/// listing again, which covers them.
pub fn assert_matches<B: Blob + ?Sized>(r: &Reader<B>, tree: &Tree, what: &str) {
    let many_empty = |path: &str| {
        path.starts_with("many/")
            && tree.lookup(path).is_some_and(|id| {
                let node = &tree.nodes[id];
                matches!(node.kind, Kind::File { size: 0, .. }) && node.meta.xattrs.is_empty()
            })
    };
    test_fs::assert_matches(r, tree, what, many_empty);
}

/// A small source: a release file with an xattr, a 5000-byte file and a symlink to it.
pub fn small_source(src: &Path) {
    fs::create_dir_all(src.join("usr/lib/extension-release.d")).unwrap();
    fs::write(src.join(RELEASE), b"ID=_any\n").unwrap();
    fs::write(src.join("usr/tail"), text(5000)).unwrap();
    symlink("tail", src.join("usr/link")).unwrap();
    set_xattr(&src.join(RELEASE), "user.extension-release.strict", b"0");
}

/// Our image of [`small_source`].
pub fn small_image() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    small_source(&src);
    let tree = Tree::scan(&src, &ScanOptions::default()).unwrap();
    let image = tmp.path().join("image");
    let file = File::create(&image).unwrap();
    squashfs::write(&tree, &file, 0, &Options::default()).unwrap();
    fs::read(&image).unwrap()
}

/// Tries every operation on an image of [`small_source`]; only panics (and hangs) matter.
fn exercise(image: &[u8]) {
    let Ok(r) = Reader::open(image, 0) else {
        return;
    };
    for dir in ["", "usr", "usr/lib/extension-release.d"] {
        let _ = r.list(dir);
    }
    for file in [RELEASE, "usr/tail", "usr/link"] {
        let _ = r.read_file(file, 1 << 20);
        let _ = r.xattr(file, "user.extension-release.strict");
    }
}

/// Mutates `good` (an image of [`small_source`]) `rounds` times: its superblock, anywhere,
/// or mostly its metadata tables, which sit at the end.
pub fn fuzz(good: &[u8], rounds: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let sb = Superblock::parse(good[..Superblock::SIZE].try_into().unwrap());
    let used = (sb.bytes_used as usize).min(good.len());
    let tables = used.saturating_sub(4096);
    for _ in 0..rounds {
        let mut b = good.to_vec();
        match rng.below(4) {
            0 => mutate(&mut rng, &mut b[..Superblock::SIZE]),
            1 => mutate(&mut rng, &mut b[..used]),
            _ => mutate(&mut rng, &mut b[tables..used]),
        }
        exercise(&b);
    }
}
