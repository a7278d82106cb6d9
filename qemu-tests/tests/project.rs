//! A mkosi-style project shaped like the reference walkthrough (base directory, Overlay=yes
//! extension laid out by mkosi.repart/ and signed with mkosi.key, initrd as cpio) built with one
//! `build --directory` and booted: the extension arrives as systemd-stub would bring it.

use std::fs;
use std::path::Path;
use std::time::Duration;

use qemu_tests::*;

fn write(path: &Path, text: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn walkthrough_project_builds_with_one_command_and_boots() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (base, full, p) = (d.join("base-tree"), d.join("full-tree"), d.join("project"));
    for t in [&base, &full] {
        write(
            &t.join("usr/lib/os-release"),
            b"ID=debian\nVERSION_ID=12\n",
            0o644,
        );
    }
    // What the "package" adds: a tool and the hook that runs it before the root mount.
    write(&full.join("usr/bin/busybox"), &busybox(), 0o755);
    write(
        &full.join("usr/lib/initrd-sysext/pre-mount.d/50-btrfs"),
        b"#!/usr/bin/busybox sh\necho \"HELLO-FROM-btrfs: $(/usr/bin/busybox | /usr/bin/busybox head -n1)\"\n",
        0o755,
    );
    let conf = |rel: &str, text: &str| write(&p.join(rel), text.as_bytes(), 0o644);
    conf("mkosi.conf", "[Output]\nOutputDirectory=mkosi.output\n");
    conf(
        "mkosi.images/base/mkosi.conf",
        &format!(
            "[Output]\nFormat=directory\n[Content]\nBaseTrees={}\n",
            base.display()
        ),
    );
    conf(
        "mkosi.images/btrfs/mkosi.conf",
        &format!(
            "[Config]\nDependencies=base\n[Output]\nFormat=disk\nOverlay=yes\n\
             [Content]\nBaseTrees=%O/base\nExtraTrees={}\n",
            full.display()
        ),
    );
    conf(
        "mkosi.images/btrfs/mkosi.extra/usr/lib/extension-release.d/extension-release.btrfs",
        "ID=debian\nVERSION_ID=12\nARCHITECTURE=x86-64\nSYSEXT_SCOPE=initrd\n",
    );
    for (file, text) in [
        ("10-root.conf", "[Partition]\nType=root\nFormat=squashfs\nCopyFiles=/usr/\nVerity=data\nVerityMatchKey=root\nMinimize=best\n"),
        ("20-root-verity.conf", "[Partition]\nType=root-verity\nVerity=hash\nVerityMatchKey=root\nMinimize=best\n"),
        ("30-root-verity-sig.conf", "[Partition]\nType=root-verity-sig\nVerity=signature\nVerityMatchKey=root\n"),
    ] {
        conf(&format!("mkosi.images/btrfs/mkosi.repart/{file}"), text);
    }
    conf(
        "mkosi.images/initrd/mkosi.conf",
        "[Config]\nDependencies=base\n[Output]\nFormat=cpio\n[Content]\nMakeInitrd=yes\nBaseTrees=%O/base\n",
    );
    fs::copy(key("trusted.key"), p.join("mkosi.key")).unwrap();
    fs::copy(key("trusted.crt"), p.join("mkosi.crt")).unwrap();

    ours(&["build", "--directory", s(&p)]);
    let out = p.join("mkosi.output");
    // systemd-stub's way: the extension as a cpio under /.extra/sysext, appended to the initrd.
    let ext_cpio = d.join("ext.cpio");
    ours(&[
        "build",
        "extension-cpio",
        s(&out.join("btrfs.raw")),
        "--output",
        s(&ext_cpio),
    ]);
    let initrd = d.join("combined.img");
    let mut bytes = fs::read(out.join("initrd.cpio.zst")).unwrap();
    bytes.extend(fs::read(&ext_cpio).unwrap());
    fs::write(&initrd, bytes).unwrap();

    let root = root_tree(d, "");
    let (disk, part_uuid, _) = root_disk(d, &root);
    let boot = Qemu {
        kernel: test_kernel(),
        initrd: &initrd,
        disks: vec![disk],
        extra: Vec::new(),
        append: format!("root=PARTUUID={part_uuid}"),
        timeout: Duration::from_secs(90),
    }
    .boot_to_end();
    boot.expect("btrfs: squashfs root image, Signed, signed by kernel keyring")
        .expect("merged 1 extension(s) into /usr: btrfs")
        .expect("HELLO-FROM-btrfs: BusyBox v1.35.0")
        .expect("switching root to /sysroot")
        .expect("ROOT-INIT: done");
}
