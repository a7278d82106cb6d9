//! The dracut module (initrd-module/): Debian's dracut 059 builds initrds with
//! `--add initrd-sysext`, with and without systemd inside, for the dracut test kernel; each is
//! booted.
//! A probe module runs the extension's tool after the merge and before the root is mounted.

use std::path::Path;
use std::time::Duration;

use qemu_tests::dracut::{
    dracut_base, extension, extension_scoped, initrd as dracut_initrd, PLAIN, SYSTEMD,
};
use qemu_tests::*;

/// Boots `initrd` onto a root filesystem whose init runs `script`, carrying `images` in its
/// /var/lib/extensions.
fn boot(dir: &Path, initrd: &Path, append: &str, script: &str, images: &[&Path]) -> Boot {
    let root = root_tree(dir, script);
    for img in images {
        let to = root
            .join("var/lib/extensions")
            .join(img.file_name().unwrap());
        std::fs::copy(img, to).unwrap();
    }
    let (disk, part_uuid, _) = root_disk(dir, &root);
    Qemu {
        kernel: dracut_test_kernel(),
        initrd,
        disks: vec![disk],
        extra: Vec::new(),
        append: format!("root=PARTUUID={part_uuid} {append}"),
        timeout: Duration::from_secs(180),
    }
    .boot_to_end()
}

/// One flavour: a good and an untrusted extension; the same initrd with rd.sysext=0; and with
/// rd.sysext.sysroot=1 and a system extension on the root.
fn flavour(systemd: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = dracut_base(d);
    let extensions = d.join("extensions");
    std::fs::create_dir_all(&extensions).unwrap();
    for (name, keyname) in [("tool", "trusted"), ("rogue", "untrusted")] {
        let img = extension(d, name, keyname);
        std::fs::rename(&img, extensions.join(format!("{name}.raw"))).unwrap();
    }
    let initrd = d.join("initrd.img");
    let modules = if systemd { SYSTEMD } else { PLAIN };
    let add = ["--add", "initrd-sysext sysext-probe"];
    dracut_initrd(d, &base, &extensions, modules, &add, &initrd);
    let b = boot(&d.join("a"), &initrd, "", "", &[]);
    b.expect("tool: erofs root image, Signed, signed by kernel keyring")
        .expect("skipping extension rogue")
        .expect("merged 1 extension(s) into /usr: tool")
        .expect("SYSEXT-PROBE: before the root mount: BusyBox v1.35.0")
        .expect("ROOT-INIT: start")
        .expect("ROOT-INIT: done");
    eprintln!(
        "dracut{}: initrd {} bytes, wall {:?}",
        if systemd { " + systemd" } else { "" },
        std::fs::metadata(&initrd).unwrap().len(),
        b.wall
    );
    boot(&d.join("b"), &initrd, "rd.sysext=0", "", &[])
        .expect_not("merged 1 extension(s)")
        .expect("SYSEXT-PROBE: before the root mount: ")
        .expect_not("SYSEXT-PROBE: before the root mount: BusyBox")
        .expect("ROOT-INIT: done");
    // rd.sysext.sysroot=1: a system-scope extension on the root is merged into it before the
    // switch root (pre-pivot hook, or initrd-sysext-sysroot.service) and stays merged.
    let system = extension_scoped(d, "systool", "trusted", "system");
    let script = "echo \"ROOT-SEES: $(cat /usr/.systemd-sysext/extensions)\"\n\
        test -x /usr/bin/busybox-sysext && echo ROOT-HAS-TOOL";
    boot(
        &d.join("c"),
        &initrd,
        "rd.sysext.sysroot=1",
        script,
        &[&system],
    )
    .expect("systool: erofs root image, Signed, signed by kernel keyring")
    .expect("ROOT-SEES: systool")
    .expect("ROOT-HAS-TOOL")
    .expect("ROOT-INIT: done");
}

#[test]
fn dracut_without_systemd_merges_before_the_root_mount() {
    flavour(false);
}

#[test]
fn dracut_with_systemd_merges_before_the_root_mount() {
    flavour(true);
}

/// Debian's kernel, whose drivers are modules: dracut installs the module's kernel modules
/// (installkernel), the hook loads them, and an extension merges. Debian's kernel trusts only
/// Debian's keys, so the extension is verity-protected and unsigned, allowed by the policy.
#[test]
fn dracut_on_debians_kernel_installs_and_loads_the_modules() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vmlinuz, modules) = debian_kernel();
    let kver = modules.file_name().unwrap().to_str().unwrap().to_owned();
    let base = dracut_base(d);
    let extensions = d.join("extensions");
    let tree = d.join("debtool-tree");
    write_tree(&tree, &[("usr/bin/busybox-sysext", &busybox(), 0o755)]);
    std::fs::create_dir_all(&extensions).unwrap();
    ours(&[
        "build",
        "sysext",
        "--tree",
        s(&tree),
        "--name",
        "debtool",
        "--id",
        "_any",
        "--verity",
        "hash",
        "--output",
        s(&extensions.join("debtool.raw")),
    ]);
    let initrd = d.join("initrd.img");
    let extra = [
        "--kver",
        &kver,
        "--kmoddir",
        s(&modules),
        "--add",
        "initrd-sysext sysext-probe",
        "--add-drivers",
        "virtio_pci virtio_blk ext4",
    ];
    dracut_initrd(d, &base, &extensions, PLAIN, &extra, &initrd);
    let listing = ours(&["inspect", s(&initrd)]);
    for m in [
        "loop.ko",
        "dm-verity.ko",
        "erofs.ko",
        "overlay.ko",
        "squashfs.ko",
    ] {
        assert!(listing.contains(m), "{m} not in the initrd:\n{listing}");
    }
    let root = root_tree(d, "");
    let (disk, part_uuid, _) = root_disk(d, &root);
    Qemu {
        kernel: &vmlinuz,
        initrd: &initrd,
        disks: vec![disk],
        extra: Vec::new(),
        append: format!(
            "root=PARTUUID={part_uuid} rd.sysext.image_policy=root=verity+signed+absent:usr=verity+signed+absent"
        ),
        timeout: Duration::from_secs(240),
    }
    .boot_to_end()
    .expect("debtool: erofs root image, Verity")
    .expect("merged 1 extension(s) into /usr: debtool")
    .expect("SYSEXT-PROBE: before the root mount: BusyBox v1.35.0")
    .expect("ROOT-INIT: done");
}
