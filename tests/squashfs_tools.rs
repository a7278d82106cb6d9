//! The squashfs writer and reader against the real tools: unsquashfs and the kernel read our
//! images, our reader reads mksquashfs's. A test whose tool is missing skips, or fails when the
//! environment variable CI is set.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::os::unix::fs::{symlink, FileExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use initrd_sysext::format::squashfs::layout::{Superblock, COMPRESSION_GZIP, COMPRESSION_ZSTD};
use initrd_sysext::format::squashfs::{write, Options, ReadError, Reader};
use initrd_sysext::tree::{ScanOptions, Tree};
// The shared helpers name the crate as `crate::format` and `crate::tree`.
use initrd_sysext::tree;
#[path = "../src/format/test_fs.rs"]
mod test_fs;
mod format {
    pub(crate) use crate::test_fs;
    pub use initrd_sysext::format::*;
}
use test_support::require_tool;

#[allow(dead_code)]
#[path = "../src/format/squashfs/test_util.rs"]
mod test_util;

use test_util::{
    assert_matches, bytes, file_meta, fuzz, noise, set_xattr, small_source, source, text, BLOCK,
};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether the kernel mount can be tried: as root, with unshare.
fn can_mount() -> bool {
    if !is_root() {
        eprintln!("skipping the kernel mount: needs root");
        return false;
    }
    require_tool("unshare")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Prints one canonical description of a directory tree: every entry with its type, mode,
/// owner, link count, inode, size, mtime and symlink target; file checksums; device
/// numbers; and extended attributes.
const DUMP: &str = r#"cd "$1" || exit 1
echo '# entries'
find . -printf '%p\t%y\t%m\t%U\t%G\t%n\t%i\t%s\t%T@\t%l\n'
echo '# contents'
find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum
echo '# devices'
find . \( -type b -o -type c \) -print0 | LC_ALL=C sort -z | xargs -0r stat -c '%n %t %T'
echo '# xattrs'
find . -print0 | LC_ALL=C sort -z | xargs -0r getfattr -h -d -m - -e hex --absolute-names
"#;

/// Makes a dump comparable across filesystems: entries sorted, inode numbers replaced by
/// the first path with that inode, directory sizes dropped, mtimes in whole seconds.
fn normalize(dump: &str) -> String {
    let (entries, rest) = dump.split_once("# contents\n").expect("dump sections");
    let mut lines: Vec<Vec<&str>> = entries
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    lines.sort();
    let mut inodes = HashMap::new();
    let mut out = String::new();
    for f in &lines {
        let inode = *inodes.entry(f[6]).or_insert(f[0]);
        let size = if f[1] == "d" { "-" } else { f[7] };
        let mtime = f[8].split('.').next().unwrap_or_default();
        let fields = [f[0], f[1], f[2], f[3], f[4], f[5], inode, size, mtime, f[9]];
        out.push_str(&fields.join(" "));
        out.push('\n');
    }
    out + rest
}

/// Asserts equal sets, showing only the differences (listings are long).
fn assert_same(got: &BTreeSet<&str>, want: &BTreeSet<&str>, what: &str) {
    let extra: Vec<_> = got.difference(want).collect();
    let missing: Vec<_> = want.difference(got).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: unexpected {extra:#?}\nmissing {missing:#?}"
    );
}

fn assert_same_lines(got: &str, want: &str, what: &str) {
    assert_same(&got.lines().collect(), &want.lines().collect(), what);
    assert_eq!(got, want, "{what}: same lines, different order");
}

fn dump(dir: &Path) -> String {
    normalize(&run(Command::new("sh").args(["-c", DUMP, "dump"]).arg(dir)))
}

/// Runs `script` with the image loop-mounted read-only at `$1`, in a private mount
/// namespace.
fn mounted(image: &Path, mnt: &Path, script: &str) -> String {
    let script = format!(
        "mount -o loop,ro -t squashfs \"$1\" \"$2\" || exit 1
        shift
        [ \"$(stat -f -c %T \"$1\")\" = squashfs ] || exit 1
        {script}"
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ]);
    run(cmd.arg(image).arg(mnt))
}

fn mknod(path: &Path, kind: rustix::fs::FileType, perm: u32, dev: u64) {
    let mode = rustix::fs::Mode::from_raw_mode(perm);
    rustix::fs::mknodat(rustix::fs::CWD, path, kind, mode, dev).unwrap();
}

/// Fills `root` with every kind of entry; what needs root privileges is left out otherwise.
fn populate(root: &Path) {
    let p = |rel: &str| root.join(rel);
    for dir in ["a/b/c", "data", "dev", "tmp", "many"] {
        fs::create_dir_all(p(dir)).unwrap();
    }
    fs::write(p("a/empty"), b"").unwrap();
    fs::write(p("a/small.txt"), b"hello, squashfs\n").unwrap();
    fs::write(p("data/exact"), text(BLOCK)).unwrap();
    fs::write(p("data/tail"), text(300 * 1024)).unwrap();
    File::create(p("data/zeros"))
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    fs::write(p("data/random"), noise(200 * 1024, 1)).unwrap();
    symlink("../a/small.txt", p("data/link")).unwrap();
    symlink("/nonexistent/target", p("data/dangling")).unwrap();
    fs::hard_link(p("a/small.txt"), p("a/b/hard")).unwrap();
    fs::hard_link(p("data/tail"), p("data/tail-link")).unwrap();
    mknod(&p("dev/fifo"), rustix::fs::FileType::Fifo, 0o640, 0);
    drop(std::os::unix::net::UnixListener::bind(p("dev/socket")).unwrap());
    let long = "L".repeat(255);
    fs::create_dir(p(&long)).unwrap();
    fs::write(p(&format!("{long}/{long}")), b"long names").unwrap();
    for i in 0..600 {
        let name = format!("{i:03}-{}", "n".repeat((i * 7) % 252));
        if i % 50 == 0 {
            fs::create_dir(p(&format!("many/{name}"))).unwrap();
        } else {
            fs::write(p(&format!("many/{name}")), format!("{i}\n")).unwrap();
        }
    }
    set_xattr(&p("a/small.txt"), "user.test", b"hello");
    set_xattr(&p("a"), "user.dir", b"1");
    set_xattr(
        &p("many/007-nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"),
        "user.test",
        b"hello",
    );
    fs::set_permissions(p("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let old = fs::FileTimes::new()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_234_567_890));
    File::options()
        .write(true)
        .open(p("data/exact"))
        .unwrap()
        .set_times(old)
        .unwrap();
    if !is_root() {
        eprintln!("not root: no devices, trusted./security. xattrs or foreign owners");
        return;
    }
    mknod(
        &p("dev/null"),
        rustix::fs::FileType::CharacterDevice,
        0o666,
        rustix::fs::makedev(1, 3),
    );
    mknod(
        &p("dev/blk"),
        rustix::fs::FileType::BlockDevice,
        0o600,
        rustix::fs::makedev(259, 70_000),
    );
    set_xattr(&p("a/small.txt"), "trusted.x", b"y");
    set_xattr(&p("data/link"), "trusted.link", b"\0\x01binary\xff");
    set_xattr(&p("dev/fifo"), "trusted.fifo", b"");
    set_xattr(&p("dev/null"), "security.label", b"dev");
    // A v2 capability: cap_net_bind_service, effective.
    let cap = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    set_xattr(&p("data/random"), "security.capability", &cap);
    std::os::unix::fs::chown(p("a/small.txt"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(p("data/tail"), Some(70_000), Some(70_000)).unwrap();
    std::os::unix::fs::lchown(p("data/link"), Some(1000), Some(70_000)).unwrap();
    std::os::unix::fs::chown(p("data/exact"), Some(1000), Some(0)).unwrap();
    fs::set_permissions(p("data/exact"), fs::Permissions::from_mode(0o4755)).unwrap();
}

#[test]
fn image_matches_source_in_unsquashfs_and_the_kernel() {
    if !require_tool("unsquashfs") || !require_tool("getfattr") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    populate(&src);
    let tree = Tree::scan(&src, &ScanOptions::default()).unwrap();
    let image = tmp.path().join("image");
    let out = File::create(&image).unwrap();
    let len = write(&tree, &out, 0, &Options::default()).unwrap();
    assert_eq!(out.metadata().unwrap().len(), len);
    let want = dump(&src);
    assert!(want.contains("many/599-"), "{want}");

    let listed = run(Command::new("unsquashfs")
        .args(["-no-progress", "-l"])
        .arg(&image));
    let listed: BTreeSet<&str> = listed
        .lines()
        .filter(|l| l.starts_with("squashfs-root"))
        .collect();
    let paths: Vec<String> = tree
        .walk()
        .into_iter()
        .map(|id| format!("squashfs-root/{}", tree.path(id).display()))
        .collect();
    let paths: BTreeSet<&str> = paths.iter().map(|p| p.trim_end_matches('/')).collect();
    assert_same(&listed, &paths, "unsquashfs -l");

    let extracted = tmp.path().join("extracted");
    run(Command::new("unsquashfs")
        .args(["-no-progress", "-xattrs", "-d"])
        .arg(&extracted)
        .arg(&image));
    assert_same_lines(&dump(&extracted), &want, "unsquashfs extraction");

    if !can_mount() {
        return;
    }
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let seen = normalize(&mounted(&image, &mnt, DUMP));
    assert_same_lines(&seen, &want, "kernel mount");
}

#[test]
fn files_over_4_gib_use_extended_inodes() {
    const SIZE: u64 = 5 << 30;
    const MID: u64 = 4 << 30;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let big = File::create(src.join("big")).unwrap();
    big.set_len(SIZE + 3).unwrap();
    big.write_all_at(b"mid", MID + 7).unwrap();
    big.write_all_at(b"end", SIZE).unwrap();
    let tree = Tree::scan(&src, &ScanOptions::default()).unwrap();
    let image = tmp.path().join("image");
    let out = File::create(&image).unwrap();
    let len = write(&tree, &out, 0, &Options::default()).unwrap();
    assert!(len < 1 << 20, "sparse blocks take no space: {len}");
    if !require_tool("unsquashfs") {
        return;
    }
    let listed = run(Command::new("unsquashfs")
        .args(["-no-progress", "-lls"])
        .arg(&image));
    assert!(listed.contains(&format!(" {} ", SIZE + 3)), "{listed}");
    if !can_mount() {
        return;
    }
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let script = format!(
        "stat -c %s \"$1/big\"
        dd if=\"$1/big\" bs=1M iflag=skip_bytes,count_bytes skip={} count=10 status=none
        dd if=\"$1/big\" bs=1M iflag=skip_bytes,count_bytes skip={} count=3 status=none",
        MID + 4,
        SIZE
    );
    let seen = mounted(&image, &mnt, &script);
    assert_eq!(seen, format!("{}\n\0\0\0mid\0\0\0\0end", SIZE + 3));
}

#[test]
fn lookup_tables_span_several_metadata_blocks() {
    // 2,101 ids, 2,100 xattr sets and over 520 fragment blocks each need several
    // metadata blocks (2,048, 512 and 512 entries per block).
    let mut t = Tree::new(file_meta(0o755));
    let big = vec![0; BLOCK - 1];
    for i in 0..2100 {
        let mut meta = file_meta(0o644);
        meta.uid = 100_000 + i;
        meta.xattrs = vec![(b"user.i".to_vec(), i.to_string().into_bytes())];
        let content = if i < 520 { &big[..] } else { b"x" };
        let root = file_meta(0o755);
        t.insert(&format!("f{i}"), meta, bytes(content), &root)
            .unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    let out = File::create(&image).unwrap();
    write(&t, &out, 0, &Options::default()).unwrap();
    if !require_tool("unsquashfs") {
        return;
    }
    let listed = run(Command::new("unsquashfs")
        .args(["-no-progress", "-lln"])
        .arg(&image));
    for (i, size) in [(0, BLOCK - 1), (519, BLOCK - 1), (2048, 1), (2099, 1)] {
        let owner = format!("{}/0", 100_000 + i);
        let line = listed.lines().find(|l| l.ends_with(&format!("/f{i}")));
        let fields: Vec<_> = line.unwrap_or_default().split_whitespace().collect();
        assert_eq!(fields[1..3], [&owner, &size.to_string()], "f{i}: {line:?}");
    }
    if !can_mount() {
        return;
    }
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let script = r#"cd "$1" || exit 1
        stat -c '%n %u %s' f0 f519 f2048 f2099
        getfattr -n user.i --only-values f0 f519 f2048 f2099
        cmp -n 131071 f519 /dev/zero && cat f2099"#;
    let seen = mounted(&image, &mnt, script);
    let want = "f0 100000 131071\nf519 100519 131071\nf2048 102048 1\nf2099 102099 1\n\
                051920482099x";
    assert_eq!(seen, want);
}

#[test]
fn an_empty_tree_is_a_valid_image() {
    let tree = Tree::new(file_meta(0o700));
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    let len = write(
        &tree,
        &File::create(&image).unwrap(),
        0,
        &Options::default(),
    )
    .unwrap();
    assert_eq!(len, 4096);
    if !require_tool("unsquashfs") {
        return;
    }
    let listed = run(Command::new("unsquashfs")
        .args(["-no-progress", "-lln"])
        .arg(&image));
    let root = listed.lines().last().unwrap_or_default();
    let fields: Vec<_> = root.split_whitespace().collect();
    assert_eq!(fields[..3], ["drwx------", "0/0", "3"], "{listed}");
    assert_eq!(fields.last(), Some(&"squashfs-root"));
    if !can_mount() {
        return;
    }
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let seen = mounted(&image, &mnt, r#"stat -c '%a %h' "$1"; ls -A "$1""#);
    assert_eq!(seen, "700 2\n");
}

/// The superblock's compression id.
fn compression(image: &[u8]) -> u16 {
    Superblock::parse(image[..Superblock::SIZE].try_into().unwrap()).compression
}

fn mksquashfs(src: &Path, image: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("mksquashfs")
        .arg(src)
        .arg(image)
        .args(["-noappend", "-quiet", "-no-progress"])
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mksquashfs {args:?}: {err}");
    fs::read(image).unwrap()
}

#[test]
fn reads_mksquashfs_images() {
    if !require_tool("mksquashfs") {
        return;
    }
    let (tmp, tree) = source();
    let src = tmp.path().join("src");
    let variants: [(&[&str], u16); 5] = [
        (&[], COMPRESSION_GZIP),
        (&["-comp", "zstd"], COMPRESSION_ZSTD),
        (&["-noI", "-noD", "-noF", "-noX"], COMPRESSION_GZIP),
        (&["-no-fragments", "-b", "16384"], COMPRESSION_GZIP),
        (
            &["-always-use-fragments", "-comp", "zstd"],
            COMPRESSION_ZSTD,
        ),
    ];
    for (i, (args, compressor)) in variants.into_iter().enumerate() {
        let image = mksquashfs(&src, &tmp.path().join(format!("image{i}")), args);
        let r = Reader::open(&image[..], 0).unwrap();
        assert_eq!(compression(&image), compressor);
        assert_matches(&r, &tree, &format!("{args:?}"));
    }
}

#[test]
fn unsupported_compressors_and_filters_are_typed() {
    if !require_tool("mksquashfs") {
        return;
    }
    let (tmp, _) = source();
    let src = tmp.path().join("src");
    let image = mksquashfs(&src, &tmp.path().join("lz4"), &["-comp", "lz4"]);
    assert!(matches!(
        Reader::open(&image[..], 0),
        Err(ReadError::Compressor { id: 5, name: "lz4" })
    ));
    let image = mksquashfs(&src, &tmp.path().join("xz"), &["-comp", "xz"]);
    let err = Reader::open(&image[..], 0).err().unwrap();
    assert!(
        matches!(err, ReadError::Compressor { id: 4, name: "xz" }),
        "{err}"
    );
}

#[test]
fn mutated_mksquashfs_images_never_panic() {
    if !require_tool("mksquashfs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    small_source(&src);
    // Small blocks: the 5000-byte file has a whole block and a fragment.
    let args: [&[&str]; 3] = [
        &["-b", "4096", "-noI", "-noD", "-noF", "-noX"],
        &["-b", "4096"],
        &["-b", "8192", "-comp", "zstd"],
    ];
    for (i, args) in args.into_iter().enumerate() {
        let image = mksquashfs(&src, &tmp.path().join(format!("i{i}")), args);
        fuzz(&image, 2000, i as u64 + 1);
    }
}
