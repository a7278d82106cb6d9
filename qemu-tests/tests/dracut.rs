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
