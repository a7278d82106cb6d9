//! Real hardware on Debian's 6.1 kernel, where every driver is a module: a `--drivers generic`
//! initrd finds the disk controller by coldplug (virtio-blk, virtio-scsi, NVMe, AHCI), USB
//! storage through uevents, both devices of a raid1 btrfs; a blacklisted or missing driver
//! fails clearly. Nothing is listed by hand. And the btrfs module brought by an extension, on
//! Debian's kernel and on the modular test kernel.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use qemu_tests::*;

const TIMEOUT: Duration = Duration::from_secs(240);

/// The generic initrd for Debian's kernel (built once per test process) and the kernel.
fn generic() -> &'static (PathBuf, PathBuf) {
    static G: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    G.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let (vmlinuz, modules) = debian_kernel();
        let out = dir.join("generic.cpio.zst");
        ours(&[
            "build",
            "initrd",
            "--init",
            s(binary()),
            "--modules-dir",
            s(&modules),
            "--drivers",
            "generic",
            "--output",
            s(&out),
        ]);
        (vmlinuz, out)
    })
}

/// QEMU arguments attaching `disk` as drive `id` behind `controller`.
fn attach(controller: &str, disk: &Path, id: &str) -> Vec<String> {
    let drive = format!("if=none,id={id},file={},format=raw", disk.display());
    let device = match controller {
        "virtio-scsi" => format!("scsi-hd,drive={id},bus=scsi0.0"),
        "nvme" => format!("nvme,drive={id},serial={id}"),
        "ahci" => format!("ide-hd,drive={id},bus=ahci0.0"),
        "usb" => format!("usb-storage,drive={id},bus=xhci0.0"),
        _ => format!("virtio-blk-pci,drive={id}"),
    };
    let bus = match controller {
        "virtio-scsi" => vec!["-device", "virtio-scsi-pci,id=scsi0"],
        "ahci" => vec!["-device", "ahci,id=ahci0"],
        "usb" => vec!["-device", "qemu-xhci,id=xhci0"],
        _ => vec![],
    };
    let mut args: Vec<String> = bus.into_iter().map(str::to_owned).collect();
    args.extend(["-drive".into(), drive, "-device".into(), device]);
    args
}

/// Boots Debian's kernel with `initrd` and the ext4 root disk behind `controller`.
fn boot_ext4(controller: &str, initrd: &Path, append: &str) -> Boot {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (disk, part_uuid, _) = root_disk(d, &root_tree(d, ""));
    Qemu {
        kernel: &generic().0,
        initrd,
        disks: Vec::new(),
        extra: attach(controller, &disk, "root"),
        append: format!("root=PARTUUID={part_uuid} {append}"),
        timeout: TIMEOUT,
    }
    .boot()
}

fn generic_boot(controller: &str, dev: &str, append: &str) -> Boot {
    let boot = boot_ext4(controller, &generic().1, append);
    boot.expect("coldplug: ")
        .expect(&format!("mounted {dev} (ext4, ro) on /sysroot"))
        .expect("ROOT-INIT: done");
    report(controller, &boot);
    boot
}

/// The timeline of a boot and what /init logged, for the test's output.
fn report(what: &str, boot: &Boot) {
    for line in boot
        .console
        .lines()
        .filter(|l| l.contains("initrd-sysext:"))
    {
        eprintln!("{what}: {line}");
    }
    let modules = boot
        .console
        .lines()
        .find(|l| l.contains("(finit_module)"))
        .unwrap_or("");
    eprintln!(
        "{what}: /init at {:?} s, switch root at {:?} s, wall {:?}; {modules}",
        boot.time_of("starting as PID 1"),
        boot.time_of("switch root"),
        boot.wall
    );
}

#[test]
fn generic_initrd_finds_virtio_blk() {
    generic_boot("virtio-blk", "/dev/vda1", "");
}

#[test]
fn generic_initrd_finds_virtio_scsi() {
    generic_boot("virtio-scsi", "/dev/sda1", "");
}

#[test]
fn generic_initrd_finds_nvme() {
    generic_boot("nvme", "/dev/nvme0n1p1", "");
}

/// Also `rd.driver.pre=`: loaded before coldplug.
#[test]
fn generic_initrd_finds_ahci_sata() {
    generic_boot("ahci", "/dev/sda1", "rd.driver.pre=ahci")
        .expect("modules for rd.driver.pre: ")
        .expect("ahci)");
}

/// USB storage behind xHCI appears only after the host controller's driver enumerates the
/// bus: found through uevents (the log names hotplug), not by polling.
#[test]
fn usb_storage_root_is_found_through_uevents() {
    let boot = boot_ext4("usb", &generic().1, "");
    boot.expect("coldplug: ")
        .expect("xhci_pci")
        .expect("modules for hotplug: ")
        .expect("usb_storage")
        .expect("mounted /dev/sda1 (ext4, ro) on /sysroot")
        .expect("ROOT-INIT: done");
    report("usb", &boot);
}

/// `module_blacklist=` keeps the only disk's driver out: a clear failure naming the root.
#[test]
fn blacklisted_driver_fails_naming_the_root() {
    let boot = boot_ext4(
        "virtio-blk",
        &generic().1,
        "module_blacklist=virtio_blk rd.sysext.root_timeout=3",
    );
    boot.expect("FATAL: root device PARTUUID=")
        .expect("did not appear within 3s")
        .expect_not("virtio_blk: ")
        .expect_not("ROOT-INIT");
}

/// A device whose driver the initrd lacks (an NVMe disk, default driver set plus virtio for
/// the root): one warning naming its modalias; the boot goes on to the virtio root.
#[test]
fn missing_driver_warns_and_the_boot_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vmlinuz, modules) = debian_kernel();
    let initrd = d.join("small.cpio.zst");
    ours(&[
        "build",
        "initrd",
        "--init",
        s(binary()),
        "--modules-dir",
        s(&modules),
        "--module",
        "virtio_pci",
        "--module",
        "virtio_blk",
        "--module",
        "ext4",
        "--output",
        s(&initrd),
    ]);
    let spare = d.join("spare.img");
    std::fs::write(&spare, vec![0u8; 1 << 20]).unwrap();
    let (disk, part_uuid, _) = root_disk(d, &root_tree(d, ""));
    let mut extra = attach("nvme", &spare, "spare");
    extra.extend(attach("virtio-blk", &disk, "root"));
    let boot = Qemu {
        kernel: &vmlinuz,
        initrd: &initrd,
        disks: Vec::new(),
        extra,
        append: format!("root=PARTUUID={part_uuid}"),
        timeout: TIMEOUT,
    }
    .boot();
    boot.expect("(modalias pci:v00001B36d00000010")
        .expect("needs module nvme, which is not in this initrd")
        .expect("mounted /dev/vda1 (ext4, ro) on /sysroot")
        .expect("ROOT-INIT: done");
    let warnings = boot.console.matches("needs module nvme").count();
    assert_eq!(warnings, 1, "{}", boot.console);
}

/// A raid1 btrfs over two disks, populated through a loop mount in a private mount namespace
/// (mkfs.btrfs --rootdir takes one device only).
fn btrfs_raid1(d: &Path, tree: &Path) -> (PathBuf, PathBuf) {
    let (a, b) = (d.join("r1a.img"), d.join("r1b.img"));
    for img in [&a, &b] {
        std::fs::File::create(img)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
    }
    run(Command::new("mkfs.btrfs")
        .args(["-q", "-L", "raid1root", "-d", "raid1", "-m", "raid1"])
        .args([s(&a), s(&b)]));
    let script = r#"set -e
la=$(losetup -f --show "$1"); lb=$(losetup -f --show "$2")
trap 'umount "$4" 2>/dev/null; btrfs device scan --forget "$la" "$lb" 2>/dev/null; losetup -d "$la" "$lb"' EXIT
mkdir -p "$4"; mount -t btrfs -o device="$lb" "$la" "$4"; cp -a "$3/." "$4/""#;
    run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .args([s(&a), s(&b), s(tree), s(&d.join("mnt"))]));
    (a, b)
}

#[test]
fn two_device_btrfs_raid1_root_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = root_tree(d, "cat /proc/mounts");
    let (a, b) = btrfs_raid1(d, &root);
    let mut extra = attach("virtio-blk", &a, "a");
    extra.extend(attach("virtio-blk", &b, "b"));
    let boot = Qemu {
        kernel: &generic().0,
        initrd: &generic().1,
        disks: Vec::new(),
        extra,
        append: "root=LABEL=raid1root".into(),
        timeout: TIMEOUT,
    }
    .boot();
    boot.expect("btrfs devices registered: vda vdb")
        .expect("(btrfs, ro) on /sysroot")
        .expect("ROOT-INIT: done");
    report("btrfs raid1", &boot);
}

/// The btrfs walkthrough on a modular kernel: `btrfs.ko` (with its dependencies) and
/// btrfs-progs exist only in a signed initrd-scope extension built from `modules`; the base
/// initrd is the Debian base tree (plus `initrd_args`). Boots `kernel` onto a btrfs root.
fn btrfs_from_an_extension(
    kernel: &Path,
    modules: &Path,
    initrd_args: &[&str],
    append: &str,
) -> Boot {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trees = run(&mut Command::new(
        repo().join("examples/btrfs-initrd/trees"),
    ));
    let trees = String::from_utf8(trees.stdout).unwrap();
    let (base, progs) = trees.trim().split_once('\n').unwrap();
    let hook = d.join("hook");
    write_tree(
        &hook,
        &[(
            "usr/lib/initrd-sysext/pre-mount.d/50-btrfs",
            b"#!/bin/sh\nbtrfs --version\n",
            0o755,
        )],
    );
    let ext = d.join("btrfs.raw");
    let (k, c) = (key("trusted.key"), key("trusted.crt"));
    ours(&[
        "build",
        "sysext",
        "--tree",
        progs,
        "--base",
        base,
        "--extra-tree",
        s(&hook),
        "--name",
        "btrfs",
        "--scope",
        "initrd",
        "--fs",
        "squashfs",
        "--modules-dir",
        s(modules),
        "--module",
        "btrfs",
        "--key",
        s(&k),
        "--cert",
        s(&c),
        "--output",
        s(&ext),
    ]);
    assert!(ours(&["inspect", s(&ext)]).contains("btrfs"));
    let initrd = d.join("initrd.cpio.zst");
    let mut args = vec![
        "build",
        "initrd",
        "--tree",
        base,
        "--init",
        s(binary()),
        "--cert",
        s(&c),
        "--extension",
        s(&ext),
        "--output",
        s(&initrd),
    ];
    args.extend_from_slice(initrd_args);
    ours(&args);
    let listing = ours(&["inspect", s(&initrd)]);
    assert!(
        !listing.contains("btrfs.ko"),
        "the base initrd has btrfs.ko"
    );
    let root = root_tree(d, "cat /proc/mounts");
    let img = d.join("root.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    run(Command::new("mkfs.btrfs").args(["-q", "-L", "btrfsroot", "--rootdir", s(&root), s(&img)]));
    let boot = Qemu {
        kernel,
        initrd: &initrd,
        disks: vec![img],
        extra: vec!["-m".into(), "1536".into()],
        append: format!("root=LABEL=btrfsroot {append}"),
        timeout: TIMEOUT,
    }
    .boot();
    boot.expect("modules from extensions: ")
        .expect("btrfs-progs v6.2")
        .expect("modules for the root filesystem: ")
        .expect("btrfs devices registered: vda")
        .expect("mounted /dev/vda (btrfs, ro) on /sysroot")
        .expect("ROOT-INIT: done");
    boot
}

/// (a) On the modular test kernel, which trusts our test certificate: the extension is
/// verified by the kernel keyring; the base initrd has no modules at all.
#[test]
fn btrfs_module_from_a_signed_extension_on_the_modular_test_kernel() {
    let (kernel, modules) = modular_kernel();
    let boot = btrfs_from_an_extension(kernel, &modules, &[], "");
    boot.expect("btrfs: squashfs root image, Signed, signed by kernel keyring");
    report("btrfs from an extension (modular test kernel)", &boot);
}

/// (b) On Debian's kernel, whose keyring holds only Debian's keys: the kernel refuses the
/// signature, `rd.sysext.userspace_verity=1` allows checking it in user space against the
/// initrd's verity.d. The base initrd has the generic drivers without btrfs.
#[test]
fn btrfs_module_from_a_signed_extension_on_debians_kernel() {
    let (vmlinuz, modules) = debian_kernel();
    let args = [
        "--modules-dir",
        s(&modules),
        "--drivers",
        "generic",
        "--omit-driver",
        "btrfs",
    ];
    let boot = btrfs_from_an_extension(&vmlinuz, &modules, &args, "rd.sysext.userspace_verity=1");
    boot.expect("checking in userspace").expect(
        "btrfs: squashfs root image, Signed, signed by CN=initrd-sysext TEST trusted signer",
    );
    report("btrfs from an extension (Debian's kernel)", &boot);
}
