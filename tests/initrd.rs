//! `build initrd` and `build extension-cpio` against GNU cpio, bsdtar and a real distribution
//! kernel's modules: readable, exact on extraction, reproducible (also as non-root), module
//! closures as modules.dep says, and clear errors with nothing left behind.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use test_support::{arm64_binary, require_tool};

/// A base tree with merged /usr, an os-release, a hard link pair and a setuid file.
fn base_tree(dir: &Path) -> PathBuf {
    let t = dir.join("base");
    fs::create_dir_all(t.join("usr/lib")).unwrap();
    fs::create_dir_all(t.join("usr/bin")).unwrap();
    fs::write(t.join("usr/lib/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    fs::write(t.join("usr/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(t.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(t.join("usr/bin/tool"), t.join("usr/bin/tool2")).unwrap();
    symlink("usr/bin", t.join("bin")).unwrap();
    symlink("usr/lib", t.join("lib")).unwrap();
    t
}

/// A stand-in for /init (not an ELF, so the static check lets it pass).
fn fake_init(dir: &Path) -> PathBuf {
    let p = dir.join("init-binary");
    fs::write(&p, "#!/bin/sh\necho init\n").unwrap();
    p
}

fn build(dir: &Path, extra: &[&str], out: &str) -> PathBuf {
    let tree = base_tree(dir);
    let init = fake_init(dir);
    let out = dir.join(out);
    let mut args = vec![
        "build",
        "initrd",
        "--tree",
        s(&tree),
        "--init",
        s(&init),
        "--output",
        s(&out),
    ];
    args.extend_from_slice(extra);
    cli(&args).env("SOURCE_DATE_EPOCH", "1700000000").succeeds();
    out
}

#[test]
fn gnu_cpio_and_bsdtar_read_it_and_extraction_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let cert = test_support::key("trusted.crt");
    let out = build(
        dir.path(),
        &["--compress", "none", "--cert", s(&cert)],
        "initrd.cpio",
    );
    let listing = sh(&format!("cpio -t < '{}' 2>/dev/null", out.display()));
    let names: Vec<&str> = listing.lines().collect();
    for want in [
        "init",
        "dev/console",
        "etc/initrd-release",
        "etc/verity.d/trusted.crt",
        "usr/bin/initrd-sysext",
        "sysroot",
        "usr/bin/tool2",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| cpio_builder::path_order(a.as_bytes(), b.as_bytes()));
    assert_eq!(names, sorted, "entries are not in path order");
    let parents_first = names.iter().enumerate().all(|(i, n)| {
        Path::new(n)
            .parent()
            .is_none_or(|p| p.as_os_str().is_empty() || names[..i].contains(&p.to_str().unwrap()))
    });
    assert!(parents_first, "a parent comes after its child: {names:?}");
    let tar = sh(&format!("bsdtar -tvf '{}'", out.display()));
    assert!(tar.contains("5,1") && tar.contains("dev/console"), "{tar}");
    assert!(tar.contains("bin -> usr/bin"), "{tar}");
    if !is_root() {
        return;
    }
    let x = dir.path().join("x");
    fs::create_dir(&x).unwrap();
    sh(&format!(
        "cd '{}' && cpio -idm --no-absolute-filenames < '{}' 2>/dev/null",
        x.display(),
        out.display()
    ));
    let md = |p: &str| fs::symlink_metadata(x.join(p)).unwrap();
    assert_eq!(md("usr/bin/tool").mode() & 0o7777, 0o4755);
    assert_eq!(
        md("usr/bin/tool").ino(),
        md("usr/bin/tool2").ino(),
        "hard link lost"
    );
    assert_eq!(
        md("init").ino(),
        md("usr/bin/initrd-sysext").ino(),
        "init and usr/bin/initrd-sysext are one inode"
    );
    assert_eq!(md("dev/console").rdev(), rustix::fs::makedev(5, 1));
    assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
    assert_eq!((md("usr/bin/tool").uid(), md("usr/bin/tool").gid()), (0, 0));
    assert_eq!(
        fs::read_link(x.join("etc/os-release")).unwrap(),
        Path::new("initrd-release")
    );
    assert_eq!(
        fs::read_to_string(x.join("etc/initrd-release")).unwrap(),
        "ID=debian\nVERSION_ID=12\n"
    );
    assert_eq!(
        fs::read(x.join("init")).unwrap(),
        fs::read(dir.path().join("init-binary")).unwrap()
    );
}

#[test]
fn reproducible_and_identical_as_non_root() {
    let dir = tempfile::tempdir().unwrap();
    let a = build(dir.path(), &[], "a.cpio.zst");
    let b_dir = dir.path().join("b");
    fs::create_dir(&b_dir).unwrap();
    let b = build(&b_dir, &[], "b.cpio.zst");
    assert!(
        fs::read(&a).unwrap() == fs::read(&b).unwrap(),
        "two builds differ"
    );
    if !is_root() {
        return;
    }
    // The same inputs built by an unprivileged user.
    let c_dir = dir.path().join("c");
    fs::create_dir(&c_dir).unwrap();
    let tree = base_tree(&c_dir);
    let init = fake_init(&c_dir);
    // chown clears setuid bits: restore the mode afterwards.
    sh(&format!(
        "chmod 755 '{}' && chown -R 65534:65534 '{}' && chmod 4755 '{}'",
        dir.path().display(),
        c_dir.display(),
        tree.join("usr/bin/tool").display()
    ));
    let c = c_dir.join("c.cpio.zst");
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "build",
            "initrd",
        ])
        .args(["--tree", s(&tree), "--init", s(&init), "--output", s(&c)])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(o.status.success(), "as nobody: {}", stderr(&o));
    assert!(
        fs::read(&a).unwrap() == fs::read(&c).unwrap(),
        "the non-root build differs"
    );
}

/// Debian's kernel package, fetched and unpacked once per machine.
fn debian_modules() -> (PathBuf, String) {
    let base = test_support::debian_kernel_root().join("lib/modules");
    let kver = fs::read_dir(&base)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    (base.join(&kver), kver)
}

/// modules.dep's own closure of `names` (transitive hard dependencies).
fn dep_closure(dep: &str, names: &[&str]) -> BTreeSet<String> {
    let map: Vec<(String, Vec<String>)> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| {
            (
                m.trim().to_owned(),
                d.split_whitespace().map(str::to_owned).collect(),
            )
        })
        .collect();
    let find = |n: &str| {
        map.iter()
            .find(|(m, _)| {
                Path::new(m)
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(&format!("{n}.ko"))
            })
            .cloned()
    };
    let mut out = BTreeSet::new();
    for n in names {
        let (m, deps) = find(n).unwrap_or_else(|| panic!("{n} not in modules.dep"));
        out.insert(m);
        out.extend(deps);
    }
    out
}

#[test]
fn modules_closure_matches_debian_modules_dep() {
    let dir = tempfile::tempdir().unwrap();
    let (mdir, kver) = debian_modules();
    let out = build(
        dir.path(),
        &[
            "--modules-dir",
            s(&mdir),
            "--module",
            "dm-verity",
            "--compress",
            "none",
        ],
        "m.cpio",
    );
    let listing = sh(&format!("cpio -t < '{}' 2>/dev/null", out.display()));
    let prefix = format!("usr/lib/modules/{kver}/");
    let shipped: BTreeSet<String> = listing
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter(|l| l.contains(".ko"))
        .map(str::to_owned)
        .collect();
    let dep = fs::read_to_string(mdir.join("modules.dep")).unwrap();
    // The defaults (loop dm-mod dm-verity overlay erofs squashfs) and their closures; plus the
    // softdep libcrc32c -> crc32c, an alias of both crc32c-intel and crc32c_generic (boot mode
    // tries each, as modprobe does: under QEMU TCG the intel one may not load).
    let mut want = dep_closure(
        &dep,
        &[
            "dm-verity",
            "loop",
            "dm-mod",
            "overlay",
            "erofs",
            "squashfs",
        ],
    );
    want.extend(dep_closure(&dep, &["crc32c_generic", "crc32c-intel"]));
    assert_eq!(shipped, want);
    let x = dir.path().join("x");
    fs::create_dir(&x).unwrap();
    sh(&format!(
        "cd '{}' && cpio -id --no-absolute-filenames < '{}' 2>/dev/null",
        x.display(),
        out.display()
    ));
    let shipped_dep = fs::read_to_string(x.join(&prefix).join("modules.dep")).unwrap();
    assert!(shipped_dep.contains("kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko kernel/lib/reed_solomon/reed_solomon.ko"));
    assert_eq!(shipped_dep.lines().count(), want.len());
    assert_eq!(
        fs::read_to_string(x.join("etc/initrd-sysext/modules")).unwrap(),
        "dm_verity\n"
    );
    // depmod over exactly the shipped modules agrees with our modules.dep, and modprobe
    // resolves against the subset.
    let lines = |t: &str| t.lines().map(str::to_owned).collect::<BTreeSet<_>>();
    run(Command::new("depmod").args(["-b", s(&x), &kver]));
    let depmod = fs::read_to_string(x.join(&prefix).join("modules.dep")).unwrap();
    assert_eq!(lines(&depmod), lines(&shipped_dep));
    let o = run(Command::new("modprobe").args([
        "-d",
        s(&x),
        "-S",
        &kver,
        "--show-depends",
        "dm-verity",
    ]));
    let deps = String::from_utf8_lossy(&o.stdout);
    for m in [
        "dm-mod.ko",
        "dm-bufio.ko",
        "reed_solomon.ko",
        "dm-verity.ko",
    ] {
        assert!(
            deps.contains(m),
            "modprobe --show-depends lacks {m}: {deps}"
        );
    }
}

fn assert_fails_cleanly(dir: &Path, args: &[&str], expect: &str) {
    cli(args).fails_with(1, expect);
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("out.cpio"))
        .collect();
    assert!(left.is_empty(), "partial output left: {left:?}");
}

#[test]
fn bad_inputs_fail_clearly_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = base_tree(d);
    let init = fake_init(d);
    let out = d.join("out.cpio");
    let base = ["build", "initrd", "--init", s(&init), "--output", s(&out)];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    // An /etc that is a symlink out of the tree: adding etc/initrd-release would escape.
    let escaping = d.join("escaping");
    fs::create_dir_all(escaping.join("usr")).unwrap();
    symlink("/etc", escaping.join("etc")).unwrap();
    assert_fails_cleanly(
        d,
        &with(&base, &["--tree", s(&escaping)]),
        "a parent is not a directory",
    );
    // A path the tree already has.
    fs::write(tree.join("init"), "x").unwrap();
    assert_fails_cleanly(
        d,
        &with(&base, &["--tree", s(&tree)]),
        "/init is already in the tree",
    );
    fs::remove_file(tree.join("init")).unwrap();
    // A missing module, a missing extension image, a dynamic /init.
    let (mdir, _) = debian_modules();
    assert_fails_cleanly(
        d,
        &with(
            &base,
            &["--modules-dir", s(&mdir), "--module", "no-such-module"],
        ),
        "\"no-such-module\" is neither",
    );
    assert_fails_cleanly(
        d,
        &with(&base, &["--extension", "/nonexistent.raw"]),
        "/nonexistent.raw",
    );
    let dynamic = ["build", "initrd", "--init", BIN, "--output", s(&out)];
    assert_fails_cleanly(d, &dynamic, "dynamically linked");
}

#[test]
fn arch_mismatches_are_refused_naming_the_file_and_both_architectures() {
    if !require_tool("aarch64-linux-gnu-gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out.cpio");
    let (arm_init, x86_init) = (arm64_binary(), PathBuf::from("/usr/bin/busybox"));
    let (mdir, _) = debian_modules();
    fn initrd<'a>(init: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
        let base = ["build", "initrd", "--init", s(init), "--output", s(out)];
        [&base[..], extra].concat()
    }
    // busybox-static: a static x86-64 executable.
    let refused = initrd(&x86_init, &out, &["--arch", "arm64"]);
    let e = "/usr/bin/busybox: built for x86-64, but the initrd is for arm64 (--arch arm64)";
    assert_fails_cleanly(d, &refused, e);
    let script = fake_init(d);
    let e = "init-binary: not a 64-bit ELF file, but the initrd is for x86-64 (--arch x86-64)";
    assert_fails_cleanly(d, &initrd(&script, &out, &["--arch", "x86-64"]), e);
    // Debian's (x86-64) modules: against --arch, and against /init's own architecture.
    let modules = ["--modules-dir", s(&mdir)];
    let e = format!("{}/kernel/", mdir.display());
    let explicit = initrd(
        &arm_init,
        &out,
        &["--modules-dir", s(&mdir), "--arch", "arm64"],
    );
    let o = cli(&explicit).fails_with(1, &e);
    assert!(
        stderr(&o).contains(".ko: built for x86-64, but the initrd is for arm64 (--arch arm64)"),
        "{}",
        stderr(&o)
    );
    let implied = format!(
        ".ko: built for x86-64, but the initrd is for arm64 (the architecture of /init, {})",
        arm_init.display()
    );
    assert_fails_cleanly(d, &initrd(&arm_init, &out, &modules), &implied);
    // What matches is accepted.
    cli(initrd(&arm_init, &out, &["--arch", "arm64"])).succeeds();
    let x86 = ["--modules-dir", s(&mdir), "--arch", "x86-64", "--force"];
    cli(initrd(&x86_init, &out, &x86)).succeeds();
}

#[test]
fn extension_cpio_places_images_under_extra_sysext() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("demo.raw");
    fs::write(&img, vec![5u8; 10000]).unwrap();
    let out = dir.path().join("ext.cpio");
    ours_ok(&["build", "extension-cpio", s(&img), "--output", s(&out)]);
    let listing = sh(&format!("cpio -t < '{}' 2>/dev/null", out.display()));
    assert_eq!(listing, ".extra\n.extra/sysext\n.extra/sysext/demo.raw\n");
    // Our inspect reads concatenated members: plain + zstd.
    let both = dir.path().join("both.cpio");
    let zst = sh(&format!(
        "zstd -q -c '{}' > '{}.zst' && echo '{}.zst'",
        out.display(),
        out.display(),
        out.display()
    ));
    let mut bytes = fs::read(&out).unwrap();
    bytes.extend(fs::read(zst.trim()).unwrap());
    fs::write(&both, bytes).unwrap();
    let o = ours_ok(&["inspect", "--json", s(&both)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let members: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["member"].as_u64().unwrap())
        .collect();
    assert_eq!(members, [0, 0, 0, 1, 1, 1]);
}

#[test]
fn check_kernel_reports_per_feature() {
    let (mdir, kver) = debian_modules();
    let config = mdir
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join(format!("boot/config-{kver}"));
    let o = ours_ok(&["check-kernel", s(&config)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("ok       dm-verity with kernel signature checks"),
        "{out}"
    );
    assert!(
        !out.contains("MISSING"),
        "Debian's 6.1 kernel has everything as modules: {out}"
    );
    assert!(
        out.contains("lacks    ECDSA signing keys"),
        "Debian's 6.1 has no CRYPTO_ECDSA: {out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("config");
    fs::write(
        &partial,
        "CONFIG_BLK_DEV_LOOP=y\n# CONFIG_DM_VERITY is not set\n",
    )
    .unwrap();
    let o = cli(["check-kernel", s(&partial)]).fails_with(1, "");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("ok       loop devices") && out.contains("MISSING  dm-verity"),
        "{out}"
    );
}

/// [`build`] in a fresh subdirectory `sub` of `dir`.
fn build_in(dir: &Path, sub: &str, extra: &[&str], out: &str) -> PathBuf {
    let d = dir.join(sub);
    fs::create_dir(&d).unwrap();
    build(&d, extra, out)
}

/// The `.ko` paths (relative to the modules dir) and the modules.dep of an uncompressed
/// initrd, extracted under `x`.
fn shipped_modules(out: &Path, x: &Path, kver: &str) -> (BTreeSet<String>, String) {
    fs::create_dir(x).unwrap();
    sh(&format!(
        "cd '{}' && cpio -id --no-absolute-filenames < '{}' 2>/dev/null",
        x.display(),
        out.display()
    ));
    let prefix = format!("usr/lib/modules/{kver}/");
    let found = sh(&format!(
        "cd '{}' && find {prefix} -name '*.ko*'",
        x.display()
    ));
    let shipped = found
        .lines()
        .map(|l| l.strip_prefix(&prefix).unwrap().to_owned())
        .collect();
    let dep = fs::read_to_string(x.join(&prefix).join("modules.dep")).unwrap();
    (shipped, dep)
}

#[test]
fn drivers_generic_ships_storage_and_filesystems_with_their_closure() {
    let dir = tempfile::tempdir().unwrap();
    let (mdir, kver) = debian_modules();
    let start = std::time::Instant::now();
    let zst = build_in(
        dir.path(),
        "g",
        &["--modules-dir", s(&mdir), "--drivers", "generic"],
        "g.cpio.zst",
    );
    let seconds = start.elapsed().as_secs_f64();
    let default = build_in(dir.path(), "d", &["--modules-dir", s(&mdir)], "d.cpio.zst");
    let plain = build_in(
        dir.path(),
        "p",
        &[
            "--modules-dir",
            s(&mdir),
            "--drivers",
            "generic",
            "--compress",
            "none",
        ],
        "g.cpio",
    );
    let (shipped, dep) = shipped_modules(&plain, &dir.path().join("x"), &kver);
    let full_dep = fs::read_to_string(mdir.join("modules.dep")).unwrap();
    let wanted = [
        "virtio_blk",
        "virtio_scsi",
        "nvme",
        "ahci",
        "xhci-pci",
        "usb-storage",
        "uas",
        "sd_mod",
        "ext4",
        "btrfs",
    ];
    let missing: Vec<_> = dep_closure(&full_dep, &wanted)
        .into_iter()
        .filter(|m| !shipped.contains(m))
        .collect();
    assert!(missing.is_empty(), "missing: {missing:?}");
    for gone in ["qla2xxx.ko", "lpfc.ko", "nvme-tcp.ko", "e1000e.ko"] {
        assert!(
            !shipped.iter().any(|m| m.ends_with(&format!("/{gone}"))),
            "{gone}"
        );
    }
    let listed: BTreeSet<String> = dep
        .lines()
        .map(|l| l.split(':').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed, shipped,
        "modules.dep lists exactly the shipped modules"
    );
    let x = dir.path().join("x").join(format!("usr/lib/modules/{kver}"));
    // modules.alias: the kernel's lines of the shipped modules; the others apart.
    let lines = |p: &Path| -> BTreeSet<String> {
        let text = fs::read_to_string(p).unwrap();
        text.lines().map(str::to_owned).collect()
    };
    let ours = lines(&x.join("modules.alias"));
    let others = lines(&x.join("initrd-sysext.unshipped.alias"));
    let all = ours.union(&others).cloned();
    assert_eq!(
        all.collect::<BTreeSet<_>>(),
        lines(&mdir.join("modules.alias"))
    );
    assert!(
        ours.iter().any(|l| l.ends_with(" nvme")) && ours.len() < 5000,
        "{}",
        ours.len()
    );
    for index in ["modules.builtin", "modules.builtin.modinfo"] {
        assert_eq!(
            fs::read(x.join(index)).unwrap(),
            fs::read(mdir.join(index)).unwrap()
        );
    }
    let bytes: u64 = shipped
        .iter()
        .map(|m| fs::metadata(mdir.join(m)).unwrap().len())
        .sum();
    let size = |p: &Path| fs::metadata(p).unwrap().len();
    println!(
        "--drivers generic: {} modules, {bytes} bytes; initrd {} bytes zstd ({} without --drivers), \
         built in {seconds:.2}s",
        shipped.len(),
        size(&zst),
        size(&default)
    );
}

#[test]
fn drivers_host_reads_this_hosts_sysfs() {
    let dir = tempfile::tempdir().unwrap();
    let (mdir, kver) = debian_modules();
    // The running kernel's modules (often absent here): a warning, not a failure.
    let running = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    if !Path::new("/lib/modules").join(running.trim()).is_dir() {
        let tree = base_tree(dir.path());
        let out = dir.path().join("none.cpio");
        let o = cli([
            "build",
            "initrd",
            "--tree",
            s(&tree),
            "--init",
            s(&fake_init(dir.path())),
            "--drivers",
            "host",
            "--output",
            s(&out),
        ])
        .succeeds();
        assert!(
            stderr(&o).contains("no modules dir for this kernel"),
            "{}",
            stderr(&o)
        );
    }
    // Against Debian's modules: whatever this host's disks and root need from them.
    let out = build_in(
        dir.path(),
        "h",
        &[
            "--modules-dir",
            s(&mdir),
            "--drivers",
            "host",
            "--compress",
            "none",
        ],
        "h.cpio",
    );
    let (shipped, dep) = shipped_modules(&out, &dir.path().join("x"), &kver);
    assert_eq!(dep.lines().count(), shipped.len());
    // The root filesystem's module, where Debian has it as one.
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let root_fs = mounts.lines().rev().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.get(1) == Some(&"/")).then(|| w[2].to_owned())
    });
    let full_dep = fs::read_to_string(mdir.join("modules.dep")).unwrap();
    if let Some(ko) = root_fs.map(|t| format!("/{t}.ko:")) {
        if let Some(line) = full_dep.lines().find(|l| l.contains(&ko)) {
            let path = line.split(':').next().unwrap();
            assert!(
                shipped.contains(path),
                "{path} (the root filesystem) missing"
            );
        }
    }
    let listed = fs::read_to_string(dir.path().join("x/etc/initrd-sysext/modules")).unwrap();
    let bytes: u64 = shipped
        .iter()
        .map(|m| fs::metadata(mdir.join(m)).unwrap().len())
        .sum();
    println!(
        "--drivers host: {} modules, {bytes} bytes; loaded at boot: {}",
        shipped.len(),
        listed.split_whitespace().collect::<Vec<_>>().join(" ")
    );
}
