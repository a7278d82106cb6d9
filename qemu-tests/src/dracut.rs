//! dracut-built initrds for the boot tests and benchmarks: a private copy of the host's dracut
//! with our module (installed by initrd-module/install.sh) and a probe module beside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::*;

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
pub fn dracut_base(dir: &Path) -> PathBuf {
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

/// An `initrd`-scope extension shipping busybox as /usr/bin/busybox-sysext, signed by test key
/// `keyname`.
pub fn extension(dir: &Path, name: &str, keyname: &str) -> PathBuf {
    extension_scoped(dir, name, keyname, "initrd")
}

/// [`extension`] with the given `SYSEXT_SCOPE`.
pub fn extension_scoped(dir: &Path, name: &str, keyname: &str, scope: &str) -> PathBuf {
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
        "--scope",
        scope,
        "--key",
        s(&key(&format!("{keyname}.key"))),
        "--cert",
        s(&key(&format!("{keyname}.crt"))),
        "--output",
        s(&out),
    ]);
    out
}

/// dracut with `modules`, our module's settings pointing at `extensions`, and `extra` arguments;
/// writes `out`. `--no-kernel` (the dracut test kernel has every driver built in) unless `extra`
/// names a kernel with `--kver`.
pub fn initrd(
    dir: &Path,
    base: &Path,
    extensions: &Path,
    modules: &str,
    extra: &[&str],
    out: &Path,
) {
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
    run(Command::new("dracut")
        .env("dracutbasedir", base)
        .args(["--force", "--quiet", "--no-hostonly"])
        .args((!extra.contains(&"--kver")).then_some("--no-kernel"))
        .args(["--conf", s(&conf), "--confdir", s(&confdir)])
        .args(["--modules", modules, "--compress", "zstd"])
        .args(extra)
        .arg(out));
}

/// Module lists: a plain dracut initrd, and dracut's systemd initrd; ours comes with `--add`.
pub const PLAIN: &str = "bash base rootfs-block udev-rules";
pub const SYSTEMD: &str = "bash systemd systemd-initrd dracut-systemd base rootfs-block";
