//! Our EROFS writer and reader against the real tools: our images through fsck.erofs and the
//! kernel (loop-mounted in a private mount namespace, as root), mkfs.erofs images through our
//! reader. A missing tool skips its check, or fails the test when `CI` is set.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use initrd_sysext::format::erofs::{self, Options, ReadError, Reader};
use initrd_sysext::format::lookup::Filesystem;
use initrd_sysext::tree::{Kind, ScanOptions, Tree};
use test_support::{is_root, require_tool};

// The shared checker names the crate as `crate::format` and `crate::tree`.
#[path = "../src/format/test_fs.rs"]
mod test_fs;
#[path = "../src/format/erofs/test_util.rs"]
mod test_util;
use test_util::{pattern, source};
mod format {
    pub(crate) use crate::test_fs;
    pub use initrd_sysext::format::*;
}
use initrd_sysext::tree;

const EPOCH: i64 = 1_700_000_000;

fn opts() -> Options {
    Options {
        uuid: [7; 16],
        build_time: EPOCH,
    }
}

fn set_mtime(path: &Path, secs: i64, nsec: u32) {
    let offset = Duration::new(secs.unsigned_abs(), 0);
    let t = match secs < 0 {
        true => SystemTime::UNIX_EPOCH - offset,
        false => SystemTime::UNIX_EPOCH + offset,
    } + Duration::from_nanos(nsec.into());
    let f = File::options().write(true).open(path).unwrap();
    f.set_modified(t).unwrap();
}

/// Creates a source tree covering every feature; some parts only as root.
fn build_source(d: &Path) {
    fs::create_dir_all(d.join("dir/sub")).unwrap();
    fs::create_dir(d.join("+plus")).unwrap();
    fs::write(d.join("!bang"), b"!").unwrap();
    fs::write(d.join("empty"), b"").unwrap();
    fs::write(d.join("small"), b"hello world\n").unwrap();
    fs::write(d.join("block"), pattern(4096)).unwrap();
    fs::write(d.join("dir/tail"), pattern(10000)).unwrap();
    // A tail too large to inline after its inode.
    fs::write(d.join("dir/fat-tail"), pattern(4096 + 4090)).unwrap();
    fs::write(d.join("dir/sub/big"), pattern(3 << 20)).unwrap();
    // Larger than the writer's 8 MiB data buffer.
    fs::write(d.join("dir/huge"), pattern((8 << 20) + 5000)).unwrap();
    symlink("../small", d.join("dir/link")).unwrap();
    fs::write(d.join("hard1"), b"linked").unwrap();
    fs::hard_link(d.join("hard1"), d.join("dir/hard2")).unwrap();
    let fifo = rustix::fs::FileType::Fifo;
    rustix::fs::mknodat(rustix::fs::CWD, d.join("fifo"), fifo, 0o640.into(), 0).unwrap();
    drop(std::os::unix::net::UnixListener::bind(d.join("socket")).unwrap());
    fs::create_dir(d.join("many")).unwrap();
    for i in 0..300 {
        let name = format!("many/entry-{i:03}-{}", "x".repeat(i % 50));
        fs::write(d.join(name), i.to_string()).unwrap();
    }
    fs::write(d.join("many").join("n".repeat(255)), b"long").unwrap();
    fs::create_dir(d.join("d".repeat(255))).unwrap();
    fs::write(d.join("d".repeat(255)).join("f".repeat(255)), b"deep").unwrap();
    let xattr = |p: &str, k: &str, v: &[u8]| {
        rustix::fs::lsetxattr(d.join(p), k, v, rustix::fs::XattrFlags::empty()).unwrap()
    };
    xattr("small", "user.test", b"hello");
    xattr("dir", "user.dir", b"");
    fs::set_permissions(d.join("block"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(d.join("dir/sub"), fs::Permissions::from_mode(0o1777)).unwrap();
    set_mtime(&d.join("small"), EPOCH, 0);
    set_mtime(&d.join("empty"), EPOCH, 0);
    set_mtime(&d.join("dir/sub/big"), EPOCH + 12345, 678);
    set_mtime(&d.join("dir/tail"), -5, 0);
    if !is_root() {
        eprintln!("not root: no devices, trusted xattrs or foreign owners in the test tree");
        return;
    }
    xattr("small", "trusted.x", b"y");
    xattr("block", "security.test", b"sec");
    // ACL: user::rwx user:1000:r-- group::r-x mask::r-x other::r--
    let acl: Vec<u8> = [(1u16, 7u16, u32::MAX), (2, 4, 1000), (4, 5, u32::MAX)]
        .into_iter()
        .chain([(0x10, 5, u32::MAX), (0x20, 4, u32::MAX)])
        .flat_map(|(tag, perm, id)| {
            [tag.to_le_bytes(), perm.to_le_bytes()]
                .concat()
                .into_iter()
                .chain(id.to_le_bytes())
        })
        .collect();
    xattr(
        "dir/tail",
        "system.posix_acl_access",
        &[&2u32.to_le_bytes()[..], &acl].concat(),
    );
    lchown(d.join("block"), Some(1000), Some(1000)).unwrap();
    lchown(d.join("dir/tail"), Some(70000), Some(70000)).unwrap();
    lchown(d.join("dir/link"), Some(1000), Some(70000)).unwrap();
    for (name, ty, dev) in [
        ("cdev", rustix::fs::FileType::CharacterDevice, (1, 3)),
        ("bdev", rustix::fs::FileType::BlockDevice, (259, 0x12345)),
    ] {
        let dev = rustix::fs::makedev(dev.0, dev.1);
        rustix::fs::mknodat(rustix::fs::CWD, d.join(name), ty, 0o600.into(), dev).unwrap();
    }
}

/// Asserts two scanned trees are the same: names, structure, kinds, contents, hard links,
/// and (if `with_meta`) modes, owners, mtimes and xattrs.
fn assert_same(a: &Tree, b: &Tree, with_meta: bool) {
    assert_eq!(a.nodes.len(), b.nodes.len(), "node count");
    for (id, (x, y)) in a.nodes.iter().zip(&b.nodes).enumerate() {
        let path = a.path(id);
        assert_eq!((&x.name, x.parent), (&y.name, y.parent), "{path:?}");
        if with_meta {
            assert_eq!(x.meta, y.meta, "{path:?}");
            assert_eq!(x.hardlink_of, y.hardlink_of, "{path:?}");
        }
        match (&x.kind, &y.kind) {
            (
                Kind::File { content, size },
                Kind::File {
                    content: c,
                    size: s,
                },
            ) => {
                assert_eq!(size, s, "{path:?}");
                assert!(content.read().unwrap() == c.read().unwrap(), "{path:?}");
            }
            (k, l) => assert_eq!(k, l, "{path:?}"),
        }
    }
}

/// An image loop-mounted in a private mount namespace, seen through /proc/PID/root.
struct Mounted {
    child: Child,
    dir: PathBuf,
}

impl Mounted {
    fn new(image: &Path, mnt: &Path) -> Mounted {
        let script = r#"mount -o loop,ro -t erofs "$0" "$1" && echo mounted && exec cat"#;
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
            .args([image, mnt])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        if line != "mounted\n" {
            drop(child.stdin.take());
            let out = child.wait_with_output().unwrap();
            panic!("mount failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let dir = PathBuf::from(format!("/proc/{}/root", child.id()));
        let dir = dir.join(mnt.strip_prefix("/").unwrap());
        Mounted { child, dir }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn check_fsck(image: &Path, extract: &Path, src: &Tree) {
    if !require_tool("fsck.erofs") {
        return;
    }
    let out = Command::new("fsck.erofs")
        .arg(format!("--extract={}", extract.display()))
        .arg(image)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fsck.erofs: {log}");
    let extracted = Tree::scan(extract, &ScanOptions::default()).unwrap();
    assert_same(src, &extracted, false);
}

fn check_mounted(image: &Path, mnt: &Path, src: &Tree) {
    if !is_root() {
        eprintln!("not root: skipping the mount check");
        return;
    }
    if !["mount", "unshare", "getfattr"]
        .into_iter()
        .all(require_tool)
    {
        return;
    }
    fs::create_dir(mnt).unwrap();
    let m = Mounted::new(image, mnt);
    let mounted = Tree::scan(&m.dir, &ScanOptions::default()).unwrap();
    assert_same(src, &mounted, true);
    let names = |p: &str| -> Vec<String> {
        let xattrs = &mounted.nodes[mounted.lookup(p).unwrap()].meta.xattrs;
        xattrs
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into())
            .collect()
    };
    assert_eq!(names("small"), ["trusted.x", "user.test"]);
    assert_eq!(names("block"), ["security.test"]);
    assert_eq!(names("dir/tail"), ["system.posix_acl_access"]);
    let md = |p: &str| fs::symlink_metadata(m.dir.join(p)).unwrap();
    assert_eq!(md("hard1").ino(), md("dir/hard2").ino());
    assert_eq!(md("hard1").nlink(), 2);
    assert_eq!(md("dir").nlink(), 3);
    assert_eq!(md("cdev").rdev(), rustix::fs::makedev(1, 3));
    assert!(md("many").len() > 2 * 4096);
    let out = Command::new("getfattr")
        .args(["-d", "-m", "-", "--absolute-names"])
        .arg(m.dir.join("small"))
        .output()
        .unwrap();
    let attrs = String::from_utf8_lossy(&out.stdout);
    assert!(attrs.contains("trusted.x=\"y\"\n"), "{attrs}");
    assert!(attrs.contains("user.test=\"hello\"\n"), "{attrs}");
}

#[test]
fn our_image_passes_fsck_and_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_source(&src);
    let tree = Tree::scan(&src, &ScanOptions::default()).unwrap();
    let image = tmp.path().join("image.erofs");
    let len = erofs::write(&tree, &File::create(&image).unwrap(), 0, &opts()).unwrap();
    assert_eq!(fs::metadata(&image).unwrap().len(), len);
    check_fsck(&image, &tmp.path().join("extract"), &tree);
    check_mounted(&image, &tmp.path().join("mnt"), &tree);
}

fn mkfs(src: &Path, image: &Path, args: &[&str]) {
    let out = Command::new("mkfs.erofs")
        .args(["--quiet", "-T0"])
        .args(args)
        .arg(image)
        .arg(src)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mkfs.erofs {args:?}: {err}");
}

#[test]
fn reads_mkfs_erofs_images() {
    if !require_tool("mkfs.erofs") {
        return;
    }
    let (tmp, tree) = source();
    let src = tmp.path().join("src");
    let variants: [&[&str]; 5] = [
        &[],
        &["-Eforce-inode-extended"],
        &["-Eforce-inode-compact", "--ignore-mtime"],
        &["--chunksize=4096"],
        &["--chunksize=65536"],
    ];
    for (i, args) in variants.into_iter().enumerate() {
        let image = tmp.path().join(format!("image{i}"));
        mkfs(&src, &image, args);
        let bytes = fs::read(&image).unwrap();
        let r = Reader::open(&bytes[..], 0).unwrap();
        test_fs::assert_matches(&r, &tree, "mkfs.erofs", |_| false);
    }
}

#[test]
fn compressed_files_are_refused_but_directories_read() {
    if !require_tool("mkfs.erofs") {
        return;
    }
    let (tmp, tree) = source();
    let image = tmp.path().join("image");
    mkfs(&tmp.path().join("src"), &image, &["-zlz4hc"]);
    let bytes = fs::read(&image).unwrap();
    let r = Reader::open(&bytes[..], 0).unwrap();
    let lib = r.list("usr/lib").unwrap();
    assert_eq!(
        lib.len(),
        tree.children(tree.lookup("usr/lib").unwrap()).len()
    );
    assert!(matches!(
        r.read_file("usr/lib/big", u64::MAX),
        Err(ReadError::Compressed { .. })
    ));
    assert_eq!(
        r.xattr("usr/lib/big", "user.own").unwrap().as_deref(),
        Some(&b"big"[..])
    );
}
