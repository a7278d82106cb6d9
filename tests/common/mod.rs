//! Shared helpers for the integration tests: running our binary and the real peer tools,
//! sample trees, and manifests that compare trees as a mounted filesystem shows them.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_initrd-sysext");
pub const SEED: &str = "0b5e55ed-0000-4000-8000-000000000001";

#[allow(unused_imports)] // each test binary uses a different part
pub use test_support::{is_root, run, s, sh, stderr, write_tree, Cli};

/// Our binary with arguments, for a one-line check: `cli([..]).fails_with(1, "..")`.
pub fn cli<I, S>(args: I) -> Cli
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Cli::new(BIN).args(args)
}

/// Debian sid's systemd, unpacked (fetched once by scripts/fetch-systemd-sid, cached; waits
/// on its lock while CI fetches it), or a path that does not exist.
pub fn systemd_sid() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fetch-systemd-sid");
    let out = Command::new(script).output().unwrap();
    if !out.status.success() {
        eprintln!("{script}: {}", stderr(&out));
    }
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `build sysext` of `tree` as extension `name` for any OS (`--id _any`); more flags follow.
pub fn build_any<'a>(tree: &'a Path, name: &'a str) -> [&'a str; 8] {
    [
        "build",
        "sysext",
        "--tree",
        s(tree),
        "--name",
        name,
        "--id",
        "_any",
    ]
}

/// Our binary with arguments.
pub fn ours(args: &[&str]) -> Output {
    cli(args).output()
}

pub fn ours_ok(args: &[&str]) -> Output {
    cli(args).succeeds()
}

/// A key pair in `dir`: (key, cert).
pub fn genkey(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    test_support::genkey(Path::new(BIN), dir, name)
}

/// A tree with every kind of entry the writers must carry, and a complete extension-release
/// for `name` (so the image's tree equals the input's).
pub fn sample_tree(root: &Path, name: &str) {
    let w = |p: &str, data: &[u8], mode: u32| write_tree(root, &[(p, data, mode)]);
    w("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755);
    w("usr/bin/suid", b"s", 0o4755);
    w("usr/lib/empty", b"", 0o644);
    w("usr/lib/4k", &[7u8; 4096], 0o644);
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    w("usr/share/big.bin", &big, 0o644);
    w("opt/vendor/data", b"opt data", 0o600);
    w("etc/ignored", b"not merged", 0o644);
    let release = format!("ID=_any\nARCHITECTURE=x86-64\nSYSEXT_SCOPE=initrd\nSYSEXT_ID={name}\n");
    w(
        &format!("usr/lib/extension-release.d/extension-release.{name}"),
        release.as_bytes(),
        0o644,
    );
    fs::create_dir_all(root.join("usr/share/sticky")).unwrap();
    fs::set_permissions(
        root.join("usr/share/sticky"),
        fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    for i in 0..150 {
        w(
            &format!("usr/share/many/file-{i:03}-{}", "x".repeat(40)),
            format!("{i}").as_bytes(),
            0o644,
        );
    }
    symlink("tool", root.join("usr/bin/tool-link")).unwrap();
    symlink("/usr/share/big.bin", root.join("usr/bin/abs-link")).unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-hard")).unwrap();
    if is_root() {
        sh(&format!(
            "cd {0}; chown 1000:1000 usr/lib/4k; chown 70000:70001 opt/vendor/data; \
             setfattr -n user.test -v hello usr/bin/tool; setfattr -n trusted.x -v y usr/lib/4k; \
             mknod usr/lib/null c 1 3; mkfifo usr/lib/fifo",
            root.display()
        ));
    }
}

/// Shell that prints, sorted, every entry under `usr` and `opt` of the current directory:
/// type, mode, owner, links, mtime, symlink target, content hash and xattrs.
const MANIFEST: &str = "find usr opt -printf '%p %y %m %U %G %n %Ts %l\\n' | sort; \
    find usr opt -type f -exec sha256sum {} + | sort -k2; \
    find usr opt | sort | while read -r f; do getfattr -h -d -m - -e hex \"$f\" 2>/dev/null || true; done";

/// The manifest of a directory tree.
pub fn manifest(dir: &Path) -> String {
    sh(&format!("cd '{}'; {MANIFEST}", dir.display()))
}

/// The manifest of a filesystem at `offset` of `image`, loop-mounted read-only in a private
/// mount namespace (needs root).
pub fn mounted_manifest(image: &Path, offset: u64, size: u64, fstype: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (mnt, script) = (dir.path().join("mnt"), dir.path().join("script"));
    fs::create_dir(&mnt).unwrap();
    let body = format!(
        "mount -o loop,ro,offset={offset},sizelimit={size} -t {fstype} '{}' '{}'\ncd '{}'\n{MANIFEST}\n",
        image.display(),
        mnt.display(),
        mnt.display()
    );
    fs::write(&script, body).unwrap();
    let out = run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-e"])
        .arg(&script));
    String::from_utf8(out.stdout).unwrap()
}

/// Partition `n` (1-based) of an image: (offset, size), from our inspect --json.
pub fn partition(image: &Path, n: usize) -> (u64, u64) {
    let out = ours_ok(&["inspect", "--json", s(image)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["partitions"][n - 1];
    (p["offset"].as_u64().unwrap(), p["size"].as_u64().unwrap())
}

pub fn root_hash(image: &Path) -> String {
    let out = ours_ok(&["inspect", "--json", s(image)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["root_hash"].as_str().unwrap().to_owned()
}

/// Extracts bytes [offset, offset+size) of `image` into `dest`.
pub fn extract(image: &Path, offset: u64, size: u64, dest: &Path) {
    let data = fs::read(image).unwrap();
    fs::write(dest, &data[offset as usize..(offset + size) as usize]).unwrap();
}
