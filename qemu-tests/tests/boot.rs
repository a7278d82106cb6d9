//! Boot scenarios on the test kernel (SPEC §5; the scenario matrix of the boot-mode issue).
//! Each boot batches several checks; the console is asserted line by line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_tests::scenario::*;
use qemu_tests::*;

const X86: Arch = Arch::X86_64;
const TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn scenario1_signed_erofs_extension_merges_in_the_initrd() {
    let boot = scenario1(X86);
    eprintln!("scenario 1: {}", boot.timeline());
}

#[test]
fn scenario3_bad_extensions_are_refused_the_good_one_merges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut imgs = refusal_images(X86, d);
    // Wrong root hash: a validly signed JSON for another image's root hash.
    let wrong_hash = signed_hello(X86, d, "wronghash", "trusted", &[]);
    swap_signature(&wrong_hash, &imgs[0]);
    // Corrupted hash tree: flip a byte in the tree's first (top-level) block.
    let bad_tree = signed_hello(X86, d, "badtree", "trusted", &[]);
    let v: serde_json::Value =
        serde_json::from_str(&ours(&["inspect", "--json", s(&bad_tree)])).unwrap();
    let hash_offset = v["partitions"][1]["offset"].as_u64().unwrap() as usize;
    let mut bytes = std::fs::read(&bad_tree).unwrap();
    bytes[hash_offset + 4096 + 10] ^= 0xff;
    std::fs::write(&bad_tree, bytes).unwrap();
    imgs.extend([wrong_hash, bad_tree]);
    let imgs: Vec<&Path> = imgs.iter().map(PathBuf::as_path).collect();
    let initrd = initrd(X86, d, &imgs, &[]);
    // After switch root nothing of the initrd's activations may be left: dm devices, loops, keys.
    let boot = boot_root(X86, d, &initrd, LEFTOVERS, "");
    expect_refusals(X86, &boot);
    boot.expect("skipping extension wronghash")
        .expect("skipping extension badtree")
        .expect("the signature is for root hash");
    eprintln!("scenario 3: {}", boot.timeline());
}

/// Replaces the signature partition of `target` with `source`'s (signed, other root hash).
fn swap_signature(target: &Path, source: &Path) {
    let part = |img: &Path| -> (u64, u64) {
        let v: serde_json::Value =
            serde_json::from_str(&ours(&["inspect", "--json", s(img)])).unwrap();
        let p = &v["partitions"][2];
        (p["offset"].as_u64().unwrap(), p["size"].as_u64().unwrap())
    };
    let ((to, size), (from, _)) = (part(target), part(source));
    let src = std::fs::read(source).unwrap();
    let mut dst = std::fs::read(target).unwrap();
    dst[to as usize..(to + size) as usize]
        .copy_from_slice(&src[from as usize..(from + size) as usize]);
    std::fs::write(target, dst).unwrap();
}

#[test]
fn scenario8_rd_sysext_0_merges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = signed_hello(X86, d, "hello", "trusted", &[]);
    let initrd = initrd(X86, d, &[&img], &[]);
    boot_root(X86, d, &initrd, "", "rd.sysext=0")
        .expect("rd.sysext=0: not merging extensions")
        .expect_not("HELLO-FROM-hello")
        .expect("ROOT-INIT: done");
}

#[test]
fn scenario4_required_extension_refused_stops_the_boot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = signed_hello(X86, d, "needed", "untrusted", &[]);
    let initrd = initrd(X86, d, &[&img], &[]);
    boot_root(
        X86,
        d,
        &initrd,
        "",
        "rd.sysext.required=needed rd.sysext.on_failure=reboot",
    )
    .expect("FATAL: required extension needed was refused")
    .expect("reboot in 3 seconds")
    .expect_not("ROOT-INIT: start");
}

#[test]
fn scenario5_system_extension_merged_into_sysroot() {
    eprintln!("scenario 5: {}", scenario5(X86).timeline());
}

#[test]
fn secondary_keyring_enrolment_ca_issued_merges_self_signed_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let build = |name: &str, keyname: &str| signed_hello(X86, d, name, keyname, &[]);
    let issued = build("issued", "ca-issued");
    let selfsigned = build("selfsigned", "untrusted");
    let out = d.join("initrd.cpio.zst");
    ours(&[
        "build",
        "initrd",
        "--init",
        s(binary()),
        "--output",
        s(&out),
        "--extension",
        s(&issued),
        "--extension",
        s(&selfsigned),
        "--secondary-cert",
        s(&key("ca-issued.crt")),
        "--secondary-cert",
        s(&key("untrusted.crt")),
    ]);
    boot_root(X86, d, &out, "", "")
        .expect("enrolled /etc/verity.d/secondary/ca-issued.crt into .secondary_trusted_keys")
        .expect("refused to enroll /etc/verity.d/secondary/untrusted.crt")
        .expect("HELLO-FROM-issued")
        .expect("skipping extension selfsigned")
        .expect_not("HELLO-FROM-selfsigned")
        .expect("ROOT-INIT: done");
}

#[test]
fn scenario7_root_by_uuid_label_and_missing_root() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let initrd = initrd(X86, d, &[], &[]);
    let root = root_tree(d, "");
    let (disk, _, fs_uuid) = root_disk(d, &root);
    for spec in [
        format!("UUID={fs_uuid}"),
        "LABEL=rootfs".to_owned(),
        "/dev/vda1".to_owned(),
    ] {
        let boot = Qemu {
            kernel: test_kernel(),
            initrd: &initrd,
            disks: vec![disk.clone()],
            extra: Vec::new(),
            append: format!("root={spec}"),
            timeout: TIMEOUT,
        }
        .boot();
        boot.expect("mounted /dev/vda1 (ext4, ro) on /sysroot")
            .expect("ROOT-INIT: done");
    }
    let missing = Qemu {
        kernel: test_kernel(),
        initrd: &initrd,
        disks: vec![disk],
        extra: Vec::new(),
        append: "root=PARTUUID=00000000-0000-4000-8000-000000000000 rd.sysext.root_timeout=2"
            .into(),
        timeout: TIMEOUT,
    }
    .boot();
    missing
        .expect("FATAL: root device PARTUUID=00000000-0000-4000-8000-000000000000")
        .expect("did not appear within 2s")
        .expect_not("ROOT-INIT");
}

#[test]
fn scenario2_squashfs_extension_appended_as_extra_sysext_cpio() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = signed_hello(X86, d, "sq", "trusted", &["--fs", "squashfs"]);
    let base = initrd(X86, d, &[], &[]);
    let ext_cpio = d.join("ext.cpio");
    ours(&["build", "extension-cpio", s(&img), "--output", s(&ext_cpio)]);
    let combined = d.join("combined.img");
    let mut bytes = std::fs::read(&base).unwrap();
    bytes.extend(std::fs::read(&ext_cpio).unwrap());
    std::fs::write(&combined, bytes).unwrap();
    boot_root(X86, d, &combined, "", "")
        .expect("sq: squashfs root image, Signed, signed by kernel keyring")
        .expect("HELLO-FROM-sq: BusyBox")
        .expect("ROOT-INIT: done");
}

#[test]
fn scenario6_debian_kernel_loads_modules_and_merges_verity_extension() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vmlinuz, modules) = debian_kernel();
    // Debian's kernel trusts only Debian's keys: an unsigned verity image under a verity policy.
    let img = sysext(
        X86,
        d,
        &hello_tree(X86, d, "deb", None),
        "deb",
        &["--id", "_any", "--verity", "hash"],
    );
    let initrd = initrd(
        X86,
        d,
        &[&img],
        &[
            "--modules-dir",
            s(&modules),
            "--module",
            "virtio_pci",
            "--module",
            "virtio_blk",
            "--module",
            "ext4",
        ],
    );
    let root = root_tree(d, "");
    let (disk, part_uuid, _) = root_disk(d, &root);
    let boot = Qemu {
        kernel: &vmlinuz,
        initrd: &initrd,
        disks: vec![disk],
        extra: Vec::new(),
        append: format!(
            "root=PARTUUID={part_uuid} rd.sysext.image_policy=root=verity+signed+absent:usr=verity+signed+absent"
        ),
        timeout: Duration::from_secs(180),
    }
    .boot_to_end();
    boot.expect("initrd-sysext: modules: ")
        .expect_not("module dm_verity: ")
        .expect("deb: erofs root image, Verity")
        .expect("HELLO-FROM-deb: BusyBox")
        .expect("mounted /dev/vda1 (ext4, ro) on /sysroot")
        .expect("ROOT-INIT: done");
    let line = boot
        .console
        .lines()
        .find(|l| l.contains("initrd-sysext: modules: "))
        .unwrap();
    eprintln!(
        "scenario 6: {line}; /init at {:?} s, switch root at {:?} s, wall {:?}",
        boot.time_of("starting as PID 1"),
        boot.time_of("switch root"),
        boot.wall
    );
}

/// Boots `kernel` with an initrd holding two signed hello extensions, `(name, signing key)`
/// each, and the certificate `cert` in its verity.d, over a root disk; returns a function of
/// the extra kernel command line.
fn two_signed(
    d: &Path,
    kernel: &'static Path,
    a: (&str, &str),
    b: (&str, &str),
    cert: &str,
) -> impl Fn(&str) -> Boot {
    let a = signed_hello(X86, d, a.0, a.1, &[]);
    let b = signed_hello(X86, d, b.0, b.1, &[]);
    let initrd = initrd(X86, d, &[&a, &b], &["--cert", s(&key(cert))]);
    let root = root_tree(d, "");
    let (disk, part_uuid, _) = root_disk(d, &root);
    move |append: &str| {
        Qemu {
            kernel,
            initrd: &initrd,
            disks: vec![disk.clone()],
            extra: Vec::new(),
            append: format!("root=PARTUUID={part_uuid} {append}"),
            timeout: TIMEOUT,
        }
        .boot()
    }
}

#[test]
fn userspace_verification_only_when_allowed_on_a_kernel_without_signature_checks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kernel = test_kernel_without_signatures();
    let boot = two_signed(
        d,
        kernel,
        ("usgood", "trusted"),
        ("usbad", "untrusted"),
        "trusted.crt",
    );
    boot("")
        .expect("skipping extension usgood")
        .expect("the kernel cannot check root-hash signatures (no DM_VERITY_VERIFY_ROOTHASH_SIG)")
        .expect_not("HELLO-FROM-usgood")
        .expect("ROOT-INIT: done");
    boot("rd.sysext.userspace_verity=1")
        .expect("checking in userspace")
        .expect("usgood: erofs root image, Signed, signed by CN=initrd-sysext TEST trusted signer")
        .expect("HELLO-FROM-usgood")
        .expect("skipping extension usbad")
        .expect("signature refused in userspace")
        .expect_not("HELLO-FROM-usbad")
        .expect("ROOT-INIT: done");
}

/// A kernel that checks signatures but whose keyrings lack the signer (ENOKEY, as Debian's
/// kernel with an appliance's key): refused, unless userspace verification is allowed and the
/// signer's certificate is in the initrd's verity.d.
#[test]
fn kernel_refusal_falls_back_to_userspace_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let signers = (("ownkey", "untrusted"), ("stranger", "ca-issued"));
    let boot = two_signed(d, test_kernel(), signers.0, signers.1, "untrusted.crt");
    boot("")
        .expect("skipping extension ownkey")
        .expect("signer not trusted by the kernel's keyrings")
        .expect_not("HELLO-FROM-ownkey")
        .expect("ROOT-INIT: done");
    boot("rd.sysext.userspace_verity=1")
        .expect(
            "ownkey: erofs root image, Signed, signed by CN=initrd-sysext TEST untrusted signer",
        )
        .expect("userspace)")
        .expect("HELLO-FROM-ownkey")
        .expect("skipping extension stranger")
        .expect("signature refused in userspace")
        .expect_not("HELLO-FROM-stranger")
        .expect("ROOT-INIT: done");
}

#[test]
fn scenario7_root_device_appearing_late_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The root filesystem travels inside the initrd and only becomes a block device 2 s
    // after the merge, when an extension's hook attaches it to a loop device in the background.
    let root = root_tree(d, "");
    let fs_img = d.join("late.ext4");
    run(std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "lateroot", "-E", "root_owner=0:0", "-d"])
        .args([s(&root), s(&fs_img), "32M"]));
    let tree = d.join("initrd-tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::copy(&fs_img, tree.join("late.ext4")).unwrap();
    let ext = d.join("late-ext");
    let hook = "#!/usr/bin/busybox sh\n\
        (/usr/bin/busybox sleep 2; /usr/bin/busybox losetup -r /dev/loop7 /late.ext4; echo LATE-ROOT-ATTACHED) &\n";
    write_tree(
        &ext,
        &[
            ("usr/bin/busybox", &busybox(), 0o755),
            (
                "usr/lib/initrd-sysext/pre-mount.d/10-late",
                hook.as_bytes(),
                0o755,
            ),
        ],
    );
    let keys = signed_by("trusted");
    let mut args = vec!["--id", "_any"];
    args.extend(keys.iter().map(String::as_str));
    let img = sysext(X86, d, &ext, "late", &args);
    let initrd = initrd(X86, d, &[&img], &["--tree", s(&tree)]);
    let boot = Qemu {
        kernel: test_kernel(),
        initrd: &initrd,
        disks: vec![],
        extra: Vec::new(),
        append: "root=LABEL=lateroot rd.sysext.root_timeout=20".into(),
        timeout: TIMEOUT,
    }
    .boot();
    boot.expect("LATE-ROOT-ATTACHED")
        .expect("mounted /dev/loop7 (ext4, ro) on /sysroot")
        .expect("ROOT-INIT: done");
    // Causality, not timing: the device was attached (after the merge) before the mount.
    let pos = |needle: &str| boot.console.find(needle).unwrap();
    assert!(
        pos("initrd ready") < pos("LATE-ROOT-ATTACHED"),
        "{}",
        boot.console
    );
    assert!(
        pos("LATE-ROOT-ATTACHED") < pos("mounted /dev/loop7"),
        "{}",
        boot.console
    );
}
