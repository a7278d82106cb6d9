//! The dracut module (initrd-module/): Debian's dracut 059 builds initrds with `--add`-style
//! module lists, with and without systemd inside, for the dracut test kernel; each is booted.
//! A probe module runs the extension's tool after the merge and before the root is mounted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qemu_tests::*;

/// A test dracut module: prints the extension tool's first line and whether /sysroot is mounted,
/// from a pre-mount hook (plain dracut) or a unit ordered before sysroot.mount (systemd).
const PROBE_SETUP: &str = r#"#!/bin/bash
check() { return 255; }
depends() { echo initrd-sysext; }
install() {
    inst_script "$moddir/sysext-probe.sh" /usr/sbin/sysext-probe
    if dracut_module_included "systemd"; then
        inst_simple "$moddir/sysext-probe.service" "$systemdsystemunitdir/sysext-probe.service"
        $SYSTEMCTL -q --root "$initdir" enable sysext-probe.service
    else
        inst_hook pre-mount 50 "$moddir/sysext-probe-hook.sh"
    fi
}
"#;
const PROBE: &str = r#"#!/bin/sh
where=before
while read -r _ mnt _; do [ "$mnt" = /sysroot ] && where=after; done < /proc/mounts
/usr/bin/busybox-sysext > /run/sysext-tool.out 2>&1
read -r first < /run/sysext-tool.out
echo "SYSEXT-PROBE: $where the root mount: $first" > /dev/console
"#;
const PROBE_HOOK: &str = "#!/bin/sh\n/usr/sbin/sysext-probe\n";
const PROBE_UNIT: &str = "[Unit]\nDefaultDependencies=no\nAfter=initrd-sysext.service\n\
    Before=sysroot.mount initrd-root-fs.target\n[Service]\nType=oneshot\n\
    ExecStart=/usr/sbin/sysext-probe\n[Install]\nWantedBy=initrd.target\n";

/// A copy of the host's dracut with our module installed by initrd-module/install.sh and the
/// probe module beside it (the host's /usr/lib/dracut is never touched).
fn dracut_base(dir: &Path) -> PathBuf {
    let dest = dir.join("dest");
    let base = dest.join("usr/lib/dracut");
    std::fs::create_dir_all(base.parent().unwrap()).unwrap();
    run(Command::new("cp").args(["-a", "/usr/lib/dracut", s(&base)]));
    run(Command::new(repo().join("initrd-module/install.sh")).env("DESTDIR", &dest));
    let probe = base.join("modules.d/99sysext-probe");
    write_tree(
        &probe,
        &[
            ("module-setup.sh", PROBE_SETUP.as_bytes(), 0o755),
            ("sysext-probe.sh", PROBE.as_bytes(), 0o755),
            ("sysext-probe-hook.sh", PROBE_HOOK.as_bytes(), 0o755),
            ("sysext-probe.service", PROBE_UNIT.as_bytes(), 0o644),
        ],
    );
    base
}

/// An extension shipping busybox as /usr/bin/busybox-sysext, signed by test key `keyname`.
fn extension(dir: &Path, name: &str, keyname: &str) -> PathBuf {
    let tree = dir.join(format!("{name}-tree"));
    write_tree(&tree, &[("usr/bin/busybox-sysext", &busybox(), 0o755)]);
    let out = dir.join(format!("{name}.raw"));
    ours(&[
        "build",
        "sysext",
        "--tree",
        s(&tree),
        "--name",
        name,
        "--id",
        "_any",
        "--key",
        s(&key(&format!("{keyname}.key"))),
        "--cert",
        s(&key(&format!("{keyname}.crt"))),
        "--output",
        s(&out),
    ]);
    out
}

/// `dracut --no-kernel` (the dracut test kernel has every driver built in) with our module, the
/// extensions in `extensions` and the probe; `systemd` picks the flavour.
fn dracut(dir: &Path, base: &Path, extensions: &Path, systemd: bool) -> PathBuf {
    let conf = dir.join("dracut.conf");
    std::fs::write(
        &conf,
        format!(
            "initrd_sysext_binary={}\ninitrd_sysext_extensions_dir={}\ninitrd_sysext_verity_dir={}\n",
            binary().display(),
            extensions.display(),
            dir.join("no-verity.d").display()
        ),
    )
    .unwrap();
    let confdir = dir.join("dracut.conf.d");
    std::fs::create_dir_all(&confdir).unwrap();
    let modules = match systemd {
        true => "bash systemd systemd-initrd dracut-systemd base rootfs-block initrd-sysext sysext-probe",
        false => "bash base rootfs-block udev-rules initrd-sysext sysext-probe",
    };
    let out = dir.join(if systemd {
        "dracut-systemd.img"
    } else {
        "dracut.img"
    });
    run(Command::new("dracut")
        .env("dracutbasedir", base)
        .args(["--force", "--quiet", "--no-hostonly", "--no-kernel"])
        .args(["--conf", s(&conf), "--confdir", s(&confdir)])
        .args(["--modules", modules, "--compress", "zstd"])
        .arg(&out));
    out
}

fn boot(dir: &Path, initrd: &Path, append: &str) -> Boot {
    let root = root_tree(dir, "");
    let (disk, part_uuid, _) = root_disk(dir, &root);
    let boot = Qemu {
        kernel: dracut_test_kernel(),
        initrd,
        disks: vec![disk],
        append: format!("root=PARTUUID={part_uuid} {append}"),
        timeout: Duration::from_secs(180),
    }
    .boot();
    assert!(
        !boot.timed_out,
        "QEMU did not end by itself:\n{}",
        boot.console
    );
    boot
}

/// One flavour: a good and an untrusted extension; then the same initrd with rd.sysext=0.
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
    let initrd = dracut(d, &base, &extensions, systemd);
    let b = boot(&d.join("a"), &initrd, "");
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
    boot(&d.join("b"), &initrd, "rd.sysext=0")
        .expect_not("merged 1 extension(s)")
        .expect("SYSEXT-PROBE: before the root mount: ")
        .expect_not("SYSEXT-PROBE: before the root mount: BusyBox")
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
