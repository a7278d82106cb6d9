//! The runnable examples (examples/*/run) as boot tests: each builds its images with our
//! build mode, boots them in QEMU and checks its own console lines; here we check the key ones.

use std::process::Command;

use qemu_tests::*;

/// Runs the example to success; its stdout and stderr together.
fn example(name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(repo().join(format!("examples/{name}/run")))
        .arg(dir.path())
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "examples/{name}/run: {}\n{out}",
        o.status
    );
    out
}

fn expect(out: &str, needle: &str) {
    assert!(out.contains(needle), "output lacks {needle:?}:\n{out}");
}

#[test]
fn btrfs_initrd_walkthrough_with_debian_packages() {
    let out = example("btrfs-initrd");
    // Only what btrfs-progs adds: a few dozen entries of the ~8,000 in the tree.
    let kept = out.lines().find(|l| l.contains(" entries kept (")).unwrap();
    let n: usize = kept.split(' ').next().unwrap().parse().unwrap();
    assert!((40..200).contains(&n), "{kept}");
    for needle in [
        "scope:        initrd",
        "signer CN=initrd-sysext TEST trusted signer",
        "✓ extension for initrd",
        "systemd-dissect agrees: root hash",
        "btrfs-progs: squashfs root image, Signed, signed by kernel keyring",
        "merged 1 extension(s) into /usr: btrfs-progs",
        "btrfs-progs v6.2",
        "Scanning for Btrfs filesystems",
        "ROOT-INIT: /dev/vda btrfs",
        "OK: ",
    ] {
        expect(&out, needle);
    }
}

#[test]
fn static_binary_walkthrough() {
    let out = example("static-binary");
    for needle in [
        "-0.1.0.x86-64.raw",
        "squashfs root image, Signed, signed by kernel keyring",
        "ROOT-INIT: initrd-sysext 0.1.0",
        "ROOT-INIT: merged: initrd-sysext-0.1.0.x86-64",
        "OK: ",
    ] {
        expect(&out, needle);
    }
}
