//! The boot matrix's scenarios 1, 3 and 5 on arm64: `qemu-system-aarch64 -M virt -cpu
//! cortex-a57` under TCG, the arm64 test kernel, the arm64 static binary as /init, images and
//! initrds built on this x86-64 host by our x86-64 binary with `--arch arm64`.

use qemu_tests::scenario::*;
use qemu_tests::*;
use test_support::require_tool;

const ARM64: Arch = Arch::Arm64;

/// The cross tools and the emulator are present (they must be under CI).
fn tools() -> bool {
    require_tool("qemu-system-aarch64") && require_tool("aarch64-linux-gnu-gcc")
}

#[test]
fn arm64_scenario1_signed_extension_merges_in_the_initrd() {
    if !tools() {
        return;
    }
    let boot = scenario1(ARM64);
    boot.expect("Machine model: linux,dummy-virt");
    eprintln!("arm64 scenario 1: {}", boot.timeline());
}

#[test]
fn arm64_scenario3_bad_extensions_are_refused_the_good_one_merges() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let imgs = refusal_images(ARM64, d);
    let imgs: Vec<&std::path::Path> = imgs.iter().map(|p| p.as_path()).collect();
    let initrd = initrd(ARM64, d, &imgs, &[]);
    let boot = boot_root(ARM64, d, &initrd, LEFTOVERS, "");
    expect_refusals(ARM64, &boot);
    eprintln!("arm64 scenario 3: {}", boot.timeline());
}

#[test]
fn arm64_scenario5_system_extension_merged_into_sysroot() {
    if !tools() {
        return;
    }
    let boot = scenario5(ARM64);
    eprintln!("arm64 scenario 5: {}", boot.timeline());
}
