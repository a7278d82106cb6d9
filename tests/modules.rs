//! Kernel modules read as kmod reads them: `elf::modinfo` on Debian's real modules (plain,
//! zstd- and gzip-compressed) agrees with `modinfo -F` field by field; and modules carried by
//! extensions (`build sysext --module`): the closure minus the base, firmware, `inspect`.

use std::path::{Path, PathBuf};
use std::process::Command;

use initrd_sysext::format::elf;
use test_support::{run, s};

/// Debian's modules directory (`lib/modules/<kver>`).
fn modules_dir() -> PathBuf {
    let base = test_support::debian_kernel_root().join("lib/modules");
    std::fs::read_dir(&base)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// `modinfo -F FIELD MODULE`, one value per line.
fn field(module: &Path, name: &str) -> Vec<String> {
    let o = run(Command::new("modinfo").args(["-F", name, s(module)]));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn modinfo_agrees_with_kmods_modinfo() {
    if !test_support::require_tool("modinfo") {
        return;
    }
    let dir = modules_dir();
    for rel in [
        "kernel/fs/btrfs/btrfs.ko",
        "kernel/drivers/nvme/host/nvme.ko",
        "kernel/drivers/block/virtio_blk.ko",
        "kernel/drivers/net/wireless/intel/iwlwifi/iwlwifi.ko",
    ] {
        let path = dir.join(rel);
        let info = elf::read_modinfo(&path).unwrap();
        let depends: Vec<String> = field(&path, "depends")
            .iter()
            .flat_map(|l| l.split(',').filter(|d| !d.is_empty()).map(str::to_owned))
            .collect();
        assert_eq!(field(&path, "name").join(" "), info.name, "{rel}");
        assert_eq!(info.depends, depends, "{rel}");
        assert_eq!(info.aliases, field(&path, "alias"), "{rel}");
        assert_eq!(info.softdeps, field(&path, "softdep"), "{rel}");
        assert_eq!(info.firmware, field(&path, "firmware"), "{rel}");
        println!(
            "{rel}: {} depends, {} aliases, {} softdeps, {} firmware",
            info.depends.len(),
            info.aliases.len(),
            info.softdeps.len(),
            info.firmware.len()
        );
    }
    let iwlwifi =
        elf::read_modinfo(&dir.join("kernel/drivers/net/wireless/intel/iwlwifi/iwlwifi.ko"));
    assert!(!iwlwifi.unwrap().firmware.is_empty());
}

#[test]
fn compressed_modules_read_the_same() {
    let plain = modules_dir().join("kernel/fs/btrfs/btrfs.ko");
    let want = elf::read_modinfo(&plain).unwrap();
    assert_eq!(
        want.depends,
        ["zstd_compress", "raid6_pq", "xor", "libcrc32c"]
    );
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&plain).unwrap();
    let zst = dir.path().join("btrfs.ko.zst");
    std::fs::write(&zst, zstd::encode_all(&bytes[..], 3).unwrap()).unwrap();
    assert_eq!(elf::read_modinfo(&zst).unwrap(), want);
    let gz = dir.path().join("btrfs.ko.gz");
    run(Command::new("sh")
        .arg("-ec")
        .arg(format!("gzip -c '{}' > '{}'", s(&plain), s(&gz))));
    assert_eq!(elf::read_modinfo(&gz).unwrap(), want);
    let xz = dir.path().join("btrfs.ko.xz");
    std::fs::write(&xz, b"\xfd7zXZ\0").unwrap();
    let e = elf::read_modinfo(&xz).unwrap_err().to_string();
    assert!(
        e.contains("btrfs.ko.xz: xz-compressed modules are not supported"),
        "{e}"
    );
}

/// `build sysext --tree <small tree> ... EXTRA --output OUT` of an extension named `mods`.
fn sysext(dir: &Path, extra: &[&str], out: &str) -> (PathBuf, test_support::Cli) {
    let tree = dir.join("tree");
    if !tree.exists() {
        test_support::write_tree(&tree, &[("usr/share/mods/readme", b"modules\n", 0o644)]);
    }
    let out = dir.join(out);
    let mut args = vec![
        "build",
        "sysext",
        "--tree",
        s(&tree),
        "--name",
        "mods",
        "--id",
        "_any",
        "--output",
        s(&out),
    ];
    args.extend_from_slice(extra);
    let bin = env!("CARGO_BIN_EXE_initrd-sysext");
    (out.clone(), test_support::Cli::new(bin).args(args))
}

/// inspect --json's `modules`: (kver, names).
fn inspected_modules(image: &Path) -> Vec<(String, Vec<String>)> {
    let bin = env!("CARGO_BIN_EXE_initrd-sysext");
    let o = test_support::Cli::new(bin)
        .args(["inspect", "--json", s(image)])
        .succeeds();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names = |m: &serde_json::Value| -> Vec<String> {
        let all = m["modules"].as_array().unwrap();
        all.iter().map(|n| n.as_str().unwrap().to_owned()).collect()
    };
    let kvers = v["modules"].as_array().unwrap();
    kvers
        .iter()
        .map(|k| (k["kver"].as_str().unwrap().to_owned(), names(k)))
        .collect()
}

#[test]
fn sysext_carries_the_module_closure_minus_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let mdir = modules_dir();
    let kver = mdir.file_name().unwrap().to_str().unwrap().to_owned();
    let (image, cmd) = sysext(
        dir.path(),
        &["--modules-dir", s(&mdir), "--module", "btrfs"],
        "a.raw",
    );
    cmd.succeeds();
    let got = inspected_modules(&image);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, kver);
    let names = &got[0].1;
    for m in [
        "btrfs",
        "xor",
        "raid6_pq",
        "zstd_compress",
        "libcrc32c",
        "crc32c_generic",
    ] {
        assert!(names.contains(&m.to_owned()), "{m} missing: {names:?}");
    }
    let bin = env!("CARGO_BIN_EXE_initrd-sysext");
    let o = test_support::Cli::new(bin)
        .args(["inspect", s(&image)])
        .succeeds();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains(&format!("modules:      {kver}: ")), "{text}");
    println!(
        "btrfs: {} modules: {names:?}, image {} bytes",
        names.len(),
        std::fs::metadata(&image).unwrap().len()
    );
    // A base that has libcrc32c as a file and xor in its modules.dep.
    let base = dir.path().join("base");
    let lib = format!("usr/lib/modules/{kver}");
    test_support::write_tree(
        &base,
        &[
            (&format!("{lib}/kernel/lib/libcrc32c.ko"), b"", 0o644),
            (
                &format!("lib/modules/{kver}/modules.dep"),
                b"kernel/crypto/xor.ko:\n",
                0o644,
            ),
        ],
    );
    let (image, cmd) = sysext(
        dir.path(),
        &[
            "--modules-dir",
            s(&mdir),
            "--module",
            "btrfs",
            "--base",
            s(&base),
        ],
        "b.raw",
    );
    cmd.succeeds();
    let over_base = &inspected_modules(&image)[0].1;
    assert!(over_base.contains(&"btrfs".to_owned()));
    assert!(
        !over_base.contains(&"libcrc32c".to_owned()),
        "{over_base:?}"
    );
    assert!(!over_base.contains(&"xor".to_owned()), "{over_base:?}");
    assert_eq!(over_base.len(), names.len() - 2);
}

#[test]
fn sysext_firmware_and_bad_module_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let mdir = modules_dir();
    let fw = dir.path().join("firmware");
    test_support::write_tree(&fw, &[("iwlwifi-100-5.ucode", b"fw one", 0o644)]);
    std::fs::write(
        fw.join("iwlwifi-1000-5.ucode.zst"),
        zstd::encode_all(&b"fw two"[..], 3).unwrap(),
    )
    .unwrap();
    let (image, cmd) = sysext(
        dir.path(),
        &[
            "--modules-dir",
            s(&mdir),
            "--module",
            "iwlwifi",
            "--firmware-dir",
            s(&fw),
        ],
        "fw.raw",
    );
    let o = cmd.succeeds();
    let err = test_support::stderr(&o);
    assert!(
        err.contains("module iwlwifi: firmware iwlwifi-135-6.ucode is not in"),
        "{err}"
    );
    // The firmware directory, read back with our erofs reader.
    use initrd_sysext::format::lookup::Filesystem;
    let bin = env!("CARGO_BIN_EXE_initrd-sysext");
    let o = test_support::Cli::new(bin)
        .args(["inspect", "--json", s(&image)])
        .succeeds();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let offset = v["data"]["offset"].as_u64().unwrap();
    let file = std::fs::File::open(&image).unwrap();
    let fs = initrd_sysext::format::erofs::Reader::open(&file, offset).unwrap();
    let listed: Vec<String> = fs
        .list("usr/lib/firmware")
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(listed, ["iwlwifi-100-5.ucode", "iwlwifi-1000-5.ucode.zst"]);
    assert_eq!(
        fs.read_file("usr/lib/firmware/iwlwifi-100-5.ucode", 100)
            .unwrap(),
        b"fw one"
    );
    // Unknown modules name the modules directory; --module needs a kernel.
    let (_, cmd) = sysext(
        dir.path(),
        &["--modules-dir", s(&mdir), "--module", "nope"],
        "x.raw",
    );
    cmd.fails_with(1, &format!("\"nope\" is neither in {}", mdir.display()));
    let (_, cmd) = sysext(dir.path(), &["--module", "btrfs"], "x.raw");
    cmd.fails_with(2, "--module needs --kver or --modules-dir");
    assert!(!dir.path().join("x.raw").exists());
}
