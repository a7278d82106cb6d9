//! The static arm64 binary (`scripts/build-static --target aarch64-unknown-linux-gnu`, run
//! under qemu-aarch64's user emulation) against the x86-64 one: each verifies what the other
//! built, and inspect shows the arm64 partition types.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use test_support::{arm64_binary, require_tool, run};

fn arm64(bin: &Path, args: &[&str]) -> String {
    let out = run(Command::new("qemu-aarch64").arg(bin).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn arm64_binary_builds_and_verifies_across_architectures() {
    if !require_tool("qemu-aarch64") || !require_tool("aarch64-linux-gnu-gcc") {
        return;
    }
    let bin = arm64_binary();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = d.join("tree");
    sample_tree(&tree, "x");
    let (key, cert) = genkey(d, "k");
    let (on_arm, on_x86) = (d.join("arm.raw"), d.join("x86.raw"));
    let build = build_any(&tree, "x");
    let signing = ["--key", s(&key), "--cert", s(&cert)];
    let arm_args = [
        &build[..],
        &signing,
        &["--arch", "arm64", "--output", s(&on_arm)],
    ]
    .concat();
    arm64(&bin, &arm_args);
    cli(build)
        .args(signing)
        .args(["--output", s(&on_x86)])
        .succeeds();
    for image in [&on_arm, &on_x86] {
        let ok = arm64(&bin, &["verify", s(image), "--cert", s(&cert)]);
        assert!(
            ok.contains(": OK: "),
            "arm64 verify {}: {ok}",
            image.display()
        );
        cli(["verify", s(image), "--cert", s(&cert)]).succeeds();
    }
    let shown = arm64(&bin, &["inspect", s(&on_arm)]);
    for part in [
        "root-arm64 ",
        "root-arm64-verity ",
        "root-arm64-verity-sig ",
    ] {
        assert!(shown.contains(part), "{part}: {shown}");
    }
    // Tampered data is refused on arm64 too.
    let mut bytes = fs::read(&on_arm).unwrap();
    let (offset, _) = partition(&on_arm, 1);
    bytes[offset as usize + 5000] ^= 1;
    fs::write(&on_arm, bytes).unwrap();
    let out = Command::new("qemu-aarch64")
        .arg(&bin)
        .args(["verify", s(&on_arm), "--cert", s(&cert)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}
