//! Kernel modules read as kmod reads them: `elf::modinfo` on Debian's real modules (plain,
//! zstd- and gzip-compressed) agrees with `modinfo -F` field by field.

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
