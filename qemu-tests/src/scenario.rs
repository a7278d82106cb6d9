//! Boot scenarios shared by the x86-64 and arm64 matrices (tests/boot.rs, tests/arm64_boot.rs):
//! hello extensions, signed images and initrds built for a guest architecture by our x86-64
//! binary, and the scenarios (1, 3, 5) both architectures run, with their console checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{key, ours, root_disk, root_tree_for, s, write_tree, Arch, Boot, Qemu};

/// Under TCG; arm64 (`-M virt`, cortex-a57) is slower to emulate than x86-64.
fn timeout(arch: Arch) -> Duration {
    match arch {
        Arch::X86_64 => Duration::from_secs(90),
        Arch::Arm64 => Duration::from_secs(180),
    }
}

/// An extension whose tool (busybox) runs from the merged /usr through a pre-mount hook.
pub fn hello_tree(arch: Arch, dir: &Path, name: &str, release: Option<&str>) -> PathBuf {
    let tree = dir.join(format!("{name}-tree"));
    let hook = format!("#!/usr/bin/busybox sh\necho \"HELLO-FROM-{name}: $(/usr/bin/busybox | /usr/bin/busybox head -n1)\"\n");
    write_tree(
        &tree,
        &[
            ("usr/bin/busybox", &arch.busybox(), 0o755),
            (
                &format!("usr/lib/initrd-sysext/pre-mount.d/50-{name}"),
                hook.as_bytes(),
                0o755,
            ),
        ],
    );
    if let Some(r) = release {
        write_tree(
            &tree,
            &[(
                &format!("usr/lib/extension-release.d/extension-release.{name}"),
                r.as_bytes(),
                0o644,
            )],
        );
    }
    tree
}

/// `build sysext --arch ARCH` with the given extra arguments; returns the image path.
pub fn sysext(arch: Arch, dir: &Path, tree: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(format!("{name}.raw"));
    let mut args = vec!["build", "sysext", "--tree", s(tree), "--name", name];
    args.extend(["--arch", arch.name(), "--output", s(&out)]);
    args.extend_from_slice(extra);
    ours(&args);
    out
}

/// `--key`/`--cert` of the committed test key `key_name`.
pub fn signed_by(key_name: &str) -> Vec<String> {
    vec![
        "--key".into(),
        s(&key(&format!("{key_name}.key"))).into(),
        "--cert".into(),
        s(&key(&format!("{key_name}.crt"))).into(),
    ]
}

/// A hello extension with `--id _any`, signed by the test key `keyname`, plus `extra` flags.
pub fn signed_hello(arch: Arch, dir: &Path, name: &str, keyname: &str, extra: &[&str]) -> PathBuf {
    let keys = signed_by(keyname);
    let mut args: Vec<&str> = vec!["--id", "_any"];
    args.extend_from_slice(extra);
    args.extend(keys.iter().map(String::as_str));
    sysext(arch, dir, &hello_tree(arch, dir, name, None), name, &args)
}

/// `build initrd --init <arch's static binary> --arch ARCH` with `extensions` and `extra`.
pub fn initrd(arch: Arch, dir: &Path, extensions: &[&Path], extra: &[&str]) -> PathBuf {
    let out = dir.join("initrd.cpio.zst");
    let mut args = vec!["build", "initrd", "--init", s(arch.binary())];
    args.extend(["--arch", arch.name(), "--output", s(&out), "--force"]);
    for e in extensions {
        args.extend(["--extension", s(e)]);
    }
    args.extend_from_slice(extra);
    ours(&args);
    out
}

/// Boots `arch`'s test kernel with `initrd` over a root disk whose init runs `script`.
pub fn boot_root(arch: Arch, dir: &Path, initrd: &Path, script: &str, append: &str) -> Boot {
    let root = root_tree_for(arch, dir, script);
    let (disk, part_uuid, _) = root_disk(dir, &root);
    Qemu {
        kernel: arch.test_kernel(),
        initrd,
        disks: vec![disk],
        extra: Vec::new(),
        append: format!("root=PARTUUID={part_uuid} {append}"),
        timeout: timeout(arch),
    }
    .boot_to_end()
}

/// Scenario 1: a signed erofs extension, verified by the kernel keyring, merged in the initrd;
/// its tool runs from the merged /usr, then the switch root.
pub fn scenario1(arch: Arch) -> Boot {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = signed_hello(arch, d, "hello", "trusted", &[]);
    let initrd = initrd(arch, d, &[&img], &[]);
    let boot = boot_root(arch, d, &initrd, "ls /usr/bin", "");
    boot.expect("hello: erofs root image, Signed, signed by kernel keyring")
        .expect("merged 1 extension(s) into /usr: hello")
        .expect("HELLO-FROM-hello: BusyBox v1.35.0")
        .expect("switching root to /sysroot")
        .expect("ROOT-INIT: start")
        .expect("ROOT-INIT: done");
    boot
}

/// Scenario 3's images for `arch` in `d`, the good one first, then one refused for each
/// reason: an untrusted signer, a scope without the initrd, a wrong ID, no signature (the
/// default policy), corrupt data, partitions for the other architecture, and an
/// `ARCHITECTURE=` naming the other one. See [`expect_refusals`].
pub fn refusal_images(arch: Arch, d: &Path) -> Vec<PathBuf> {
    let image =
        |name: &str, target: Arch, release: Option<&str>, args: &[&str], signer: Option<&str>| {
            let keys = signer.map(signed_by).unwrap_or_default();
            let all: Vec<&str> = args
                .iter()
                .copied()
                .chain(keys.iter().map(String::as_str))
                .collect();
            sysext(target, d, &hello_tree(arch, d, name, release), name, &all)
        };
    let (initrd_only, trusted) = (["--id", "_any", "--scope", "initrd"], Some("trusted"));
    let good = image("good", arch, None, &initrd_only, trusted);
    let untrusted = image("untrusted", arch, None, &initrd_only, Some("untrusted"));
    let system_only = ["--id", "_any", "--scope", "system"];
    let system_only = image("systemonly", arch, None, &system_only, trusted);
    let wrong_id = ["--id", "fedora", "--scope", "initrd"];
    let wrong_id = image("wrongid", arch, None, &wrong_id, trusted);
    let hash_only = ["--id", "_any", "--verity", "hash"];
    let unsigned = image("unsigned", arch, None, &hash_only, None);
    // Corrupted data: flip a byte in the first data block (deeper blocks fail on read, EIO).
    let corrupt = image("corrupt", arch, None, &initrd_only, trusted);
    let mut bytes = std::fs::read(&corrupt).unwrap();
    bytes[40 * 512 + 100] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    let other = arch.other();
    let foreign = image("foreign", other, None, &initrd_only, trusted);
    let release = format!("ID=_any\nARCHITECTURE={}\n", other.name());
    let mislabelled = image("mislabelled", arch, Some(&release), &[], trusted);
    vec![
        good,
        untrusted,
        system_only,
        wrong_id,
        unsigned,
        corrupt,
        foreign,
        mislabelled,
    ]
}

/// The root's init script for scenario 3: what is left of the initrd's activations after the
/// switch root (dm devices, loop devices, keys); [`expect_refusals`] wants none.
pub const LEFTOVERS: &str = "echo \"DM-DEVICES: $(ls /sys/block | grep -c dm-)\"\n\
    echo \"LOOPS-ATTACHED: $(cat /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l)\"\n\
    echo \"KEYS: $(grep -c initrd-sysext:[0-9a-f] /proc/keys)\"";

/// Scenario 3's console for [`refusal_images`] on `arch` with [`LEFTOVERS`] run by the root:
/// the good one merged and its tool run, every other one skipped with its reason, nothing left.
pub fn expect_refusals(arch: Arch, boot: &Boot) {
    let other = arch.other().name();
    boot.expect("merged 1 extension(s) into /usr: good")
        .expect("HELLO-FROM-good")
        .expect_not("HELLO-FROM-untrusted")
        .expect("skipping extension untrusted")
        .expect("signer not trusted by the kernel's keyrings")
        .expect("skipping extension systemonly")
        .expect("SYSEXT_SCOPE=\"system\" does not include the host scope 'initrd'")
        .expect("skipping extension wrongid")
        .expect("skipping extension unsigned")
        .expect("policy requires root=signed")
        .expect("skipping extension corrupt")
        .expect("skipping extension foreign")
        .expect(&format!(
            "no root or usr data partition for {}",
            arch.name()
        ))
        .expect("skipping extension mislabelled")
        .expect(&format!(
            "ARCHITECTURE={other} does not match the host architecture {}",
            arch.name()
        ))
        .expect("DM-DEVICES: 0")
        .expect("LOOPS-ATTACHED: 0")
        .expect("KEYS: 0")
        .expect("ROOT-INIT: done");
}

/// Scenario 5 (`rd.sysext.sysroot=1`): a system-scope extension in the root's
/// /var/lib/extensions merged into /sysroot before the switch root.
pub fn scenario5(arch: Arch) -> Boot {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = d.join("sysroot-ext");
    write_tree(
        &tree,
        &[(
            "usr/bin/sysroot-hello",
            b"#!/bin/sh\necho SYSROOT-HELLO from the merged /usr\n",
            0o755,
        )],
    );
    let trusted = signed_by("trusted");
    let args: Vec<&str> = ["--id", "debian", "--version-id", "12", "--scope", "system"]
        .into_iter()
        .chain(trusted.iter().map(String::as_str))
        .collect();
    let img = sysext(arch, d, &tree, "sysrootext", &args);
    let initrd = initrd(arch, d, &[], &[]);
    let root = root_tree_for(
        arch,
        d,
        "cat /usr/.systemd-sysext/extensions\n/usr/bin/sysroot-hello\ngrep -c sysext /proc/mounts",
    );
    std::fs::copy(&img, root.join("var/lib/extensions/sysrootext.raw")).unwrap();
    let (disk, part_uuid, _) = root_disk(d, &root);
    let boot = Qemu {
        kernel: arch.test_kernel(),
        initrd: &initrd,
        disks: vec![disk],
        extra: Vec::new(),
        append: format!("root=PARTUUID={part_uuid} rd.sysext.sysroot=1"),
        timeout: timeout(arch),
    }
    .boot();
    boot.expect("sysrootext: erofs root image, Signed, signed by kernel keyring")
        .expect("/sysroot: merged [sysrootext]")
        .expect("ROOT-INIT: start\nsysrootext\n")
        .expect("SYSROOT-HELLO from the merged /usr")
        .expect("ROOT-INIT: done");
    boot
}
