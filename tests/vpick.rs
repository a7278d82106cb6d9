//! Versioned images (`NAME.v/`): our pick against systemd's own `systemd-vpick` (Debian sid's,
//! fetched by scripts/fetch-systemd-sid) over generated directories, and a host merge of the
//! newest version with tries left from `/var/lib/extensions/hello.raw.v/`.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use initrd_sysext::format::gpt::Arch;
use initrd_sysext::format::vpick;

/// systemd-vpick's choice in `dir` (a `hello.raw.v`), as a file name.
fn systemd_pick(sid: &Path, dir: &Path) -> Option<String> {
    let out = Command::new(sid.join("usr/bin/systemd-vpick"))
        .env(
            "LD_LIBRARY_PATH",
            sid.join("usr/lib/x86_64-linux-gnu/systemd"),
        )
        .args([
            "--basename=hello",
            "--suffix=.raw",
            "-t",
            "reg",
            "-p",
            "filename",
        ])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    out.status.success().then(|| text.trim().to_owned())
}

/// A small deterministic generator (xorshift64), so a failure repeats.
struct Gen(u64);

impl Gen {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn one<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.next(from.len())]
    }

    /// A version from digit/letter segments and separators, sometimes one systemd refuses.
    fn version(&mut self) -> String {
        let mut v = String::new();
        for i in 0..1 + self.next(4) {
            if i > 0 {
                v += self.one(&[".", ".", "-", "~", "^", "", "_", ",", "+"]);
            }
            v += self.one(&["0", "1", "2", "9", "10", "010", "a", "rc", "b2", "3a"]);
        }
        v
    }

    /// An entry name: `hello_VERSION[_ARCH][+LEFT[-DONE]].raw`, now and then another shape.
    fn entry(&mut self) -> String {
        let version = self.version();
        let arch = self.one(&["", "", "", "_x86-64", "_x86", "_arm64", "_s390x", "_foo"]);
        let tries = match self.next(5) {
            0 | 1 => String::new(),
            2 => format!("+{}", self.one(&["0", "1", "2", "07", "08"])),
            _ => format!(
                "+{}-{}",
                self.one(&["0", "1", "3"]),
                self.one(&["0", "2", "09"])
            ),
        };
        let base = self.one(&["hello_", "hello_", "hello_", "hello", "hellox_"]);
        let suffix = self.one(&[".raw", ".raw", ".raw", ".raw", ".img"]);
        format!("{base}{version}{arch}{tries}{suffix}")
    }
}

#[test]
fn pick_agrees_with_systemd_vpick() {
    let sid = systemd_sid();
    if !test_support::require_tool(s(&sid.join("usr/bin/systemd-vpick"))) {
        return;
    }
    assert_eq!(Arch::host(), Arch::X86_64, "the fetched systemd is amd64");
    let arches = vpick::local_architectures(Arch::host());
    let tmp = tempfile::tempdir().unwrap();
    let mut gen = Gen(0x5eed_1234_abcd_0001);
    let (mut agreed, mut some) = (0, 0);
    for case in 0..400 {
        let dir = tmp.path().join(format!("{case}/hello.raw.v"));
        fs::create_dir_all(&dir).unwrap();
        let files: Vec<String> = (0..1 + gen.next(6)).map(|_| gen.entry()).collect();
        for f in &files {
            fs::write(dir.join(f), b"").unwrap();
        }
        let ours = vpick::pick(files.iter().map(String::as_str), "hello", ".raw", &arches);
        let theirs = systemd_pick(&sid, &dir);
        assert_eq!(
            ours.map(|e| e.file.to_owned()),
            theirs,
            "case {case}: {files:?}"
        );
        agreed += 1;
        some += usize::from(theirs.is_some());
    }
    eprintln!("{agreed} cases agreed with systemd-vpick ({some} with a pick)");
    assert!(some > 100, "too few cases with a pick: {some}");
}

/// Builds an image of extension `hello` whose usr/bin/hello prints `version`.
fn hello_image(dir: &Path, version: &str, out: &Path) {
    let tree = dir.join(format!("tree-{version}"));
    fs::create_dir_all(tree.join("usr/bin")).unwrap();
    fs::write(tree.join("usr/bin/hello"), version).unwrap();
    let mut args = build_any(&tree, "hello").to_vec();
    args.extend(["--scope", "system", "--verity", "off", "--output", s(out)]);
    ours_ok(&args);
}

#[test]
fn merges_the_newest_version_with_tries_left() {
    if !is_root() {
        eprintln!("not root: mount namespaces need root; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let v = root.join("var/lib/extensions/hello.raw.v");
    fs::create_dir_all(&v).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    // 1.10 is newest but has no tries left; 1.9 (tries left) beats 1.2.
    hello_image(dir.path(), "1.2", &v.join("hello_1.2.raw"));
    hello_image(dir.path(), "1.9", &v.join("hello_1.9+2-1.raw"));
    hello_image(dir.path(), "1.10", &v.join("hello_1.10+0-3.raw"));
    let r = s(&root);
    let list = cli(["list", "--root", r, "--json=short"]).succeeds();
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(list.contains(r#""name":"hello""#), "{list}");
    assert!(list.contains("hello.raw.v/hello_1.9+2-1.raw"), "{list}");
    let out = sh(&format!(
        "unshare -m --propagation private sh -ec 'mount -t tmpfs tmpfs /run
         {BIN} merge --root {r}
         cat {r}/usr/bin/hello; echo
         cat {r}/usr/.systemd-sysext/extensions
         {BIN} unmerge --root {r}'"
    ));
    assert!(out.contains("1.9\nhello\n"), "{out}");
}
