//! Configuration extensions and versioned images in boot mode (issue 15), one boot on the test
//! kernel: a signed `initrd`-scope confext changes the initrd's /etc (a hook of the boot reads
//! it), a system-scope confext in the root's /var/lib/confexts is merged into /sysroot/etc with
//! `rd.sysext.sysroot=1` and seen by the root's init, and `/etc/extensions/vers.raw.v/` with
//! three versions merges the newest whose tries are left.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_tests::scenario::*;
use qemu_tests::*;

const X86: Arch = Arch::X86_64;

/// `build confext`, signed by the trusted test key, of the files given.
fn confext(dir: &Path, name: &str, scope: &str, files: &[(&str, &[u8], u32)]) -> PathBuf {
    let tree = dir.join(format!("{name}-tree"));
    write_tree(&tree, files);
    let out = dir.join(format!("{name}.raw"));
    let keys = signed_by("trusted");
    let mut args = vec!["build", "confext", "--tree", s(&tree), "--name", name];
    args.extend(["--id", "_any", "--scope", scope, "--output", s(&out)]);
    args.extend(keys.iter().map(String::as_str));
    ours(&args);
    out
}

/// Version `v` of extension `vers`, its file named `file`: a hook printing `VERS-<v>`.
fn version(dir: &Path, v: &str, file: &str) {
    let tree = dir.join(format!("vers-{v}-tree"));
    let hook = format!("#!/usr/bin/busybox sh\necho VERS-{v}\n");
    write_tree(
        &tree,
        &[
            ("usr/bin/busybox", &X86.busybox(), 0o755),
            (
                "usr/lib/initrd-sysext/pre-mount.d/60-vers",
                hook.as_bytes(),
                0o755,
            ),
        ],
    );
    let out = dir.join("versions/vers.raw.v").join(file);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let keys = signed_by("trusted");
    let mut args = vec!["build", "sysext", "--tree", s(&tree), "--name", "vers"];
    args.extend(["--id", "_any", "--output", s(&out)]);
    args.extend(keys.iter().map(String::as_str));
    ours(&args);
}

#[test]
fn confexts_change_the_initrds_and_the_roots_etc_and_vpick_takes_the_newest_with_tries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reader = b"#!/usr/bin/busybox sh\necho \"INITRD-ETC: $(/usr/bin/busybox cat /etc/appliance/role)\"\n";
    let tree = d.join("reader-tree");
    write_tree(
        &tree,
        &[
            ("usr/bin/busybox", &X86.busybox(), 0o755),
            ("usr/lib/initrd-sysext/pre-mount.d/70-reader", reader, 0o755),
        ],
    );
    let keys = signed_by("trusted");
    let mut args: Vec<&str> = vec!["--id", "_any"];
    args.extend(keys.iter().map(String::as_str));
    let reader = sysext(X86, d, &tree, "reader", &args);
    let initrd_conf = confext(
        d,
        "initrdconf",
        "initrd",
        &[("etc/appliance/role", b"from-the-initrd-confext\n", 0o644)],
    );
    // 3 is newest but its tries are used up; 2 has one left; 1 is older.
    version(d, "1", "vers_1.raw");
    version(d, "2", "vers_2+1-2.raw");
    version(d, "3", "vers_3+0-3.raw");
    let versions = format!("{}:/etc/extensions", d.join("versions").display());
    let extra = ["--extra-tree", &versions, "--confext", s(&initrd_conf)];
    let initrd = initrd(X86, d, &[&reader], &extra);
    let system_conf = confext(
        d,
        "sysconf",
        "system",
        &[("etc/appliance/site", b"from-the-system-confext\n", 0o644)],
    );
    let root = root_tree_for(
        X86,
        d,
        "echo \"ROOT-ETC: $(cat /etc/appliance/site)\"\n\
         echo \"ROOT-CONFEXTS: $(cat /etc/.systemd-confext/confexts)\"\n\
         echo \"ROOT-INITRD-CONF: $(ls /etc/appliance)\"",
    );
    std::fs::create_dir_all(root.join("var/lib/confexts")).unwrap();
    std::fs::copy(&system_conf, root.join("var/lib/confexts/sysconf.raw")).unwrap();
    let (disk, part_uuid, _) = root_disk(d, &root);
    let boot = Qemu {
        kernel: X86.test_kernel(),
        initrd: &initrd,
        disks: vec![disk],
        extra: Vec::new(),
        append: format!("root=PARTUUID={part_uuid} rd.sysext.sysroot=1"),
        timeout: Duration::from_secs(120),
    }
    .boot_to_end();
    boot.expect("initrdconf: erofs root image, Signed, signed by kernel keyring")
        .expect("merged 1 extension(s) into /etc: initrdconf")
        .expect("/ confexts: merged [initrdconf]")
        .expect("INITRD-ETC: from-the-initrd-confext")
        .expect("VERS-2")
        .expect_not("VERS-3")
        .expect_not("VERS-1")
        .expect("sysconf: erofs root image, Signed, signed by kernel keyring")
        .expect("/sysroot confexts: merged [sysconf]")
        .expect("ROOT-ETC: from-the-system-confext")
        .expect("ROOT-CONFEXTS: sysconf")
        // The initrd's confext went with the initrd: only the root's own /etc and sysconf.
        .expect("ROOT-INITRD-CONF: site")
        .expect("ROOT-INIT: done");
    eprintln!("confext boot: {}", boot.timeline());
}
