//! The UEFI path (issue 16) on Debian's kernel: OVMF boots a UKI made by `build uki` (Debian's
//! systemd-stub, a `--drivers generic` initrd trusting our test certificate), systemd-stub
//! hands the ESP's `BOOTX64.EFI.extra.d/*.raw` to the initrd as `/.extra/sysext/`, boot mode
//! verifies them (the kernel refuses our signer: the userspace fallback, allowed by the UKI's
//! command line), merges the good one, and switches to the root. With swtpm as the TPM, PCR 11
//! seen in the root is what `systemd-measure calculate` predicts from the UKI's sections and
//! our two phases, and differs once a section is tampered with; PCR 13 is what `initrd-sysext
//! pcr predict` gives for the stub's cpio of the ESP's extensions and the one merged. The UEFI
//! variant of the test kernel (kernel-config/systemd.config) in a UKI: its keyring verifies
//! the extension, no fallback. Each boot batches its checks and prints its timeline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qemu_tests::*;

const TIMEOUT: Duration = Duration::from_secs(240);
const EXTRA_D: &str = "EFI/BOOT/BOOTX64.EFI.extra.d";

/// An extension whose busybox runs from the merged /usr through a pre-mount hook; signed by
/// test key `signer` unless None.
fn hello(dir: &Path, name: &str, signer: Option<&str>) -> PathBuf {
    let tree = dir.join(format!("{name}-tree"));
    let hook = format!(
        "#!/usr/bin/busybox sh\necho \"HELLO-FROM-{name}: $(/usr/bin/busybox | /usr/bin/busybox head -n1)\"\n"
    );
    let hook_path = format!("usr/lib/initrd-sysext/pre-mount.d/50-{name}");
    let files: [(&str, &[u8], u32); 2] = [
        ("usr/bin/busybox", &busybox(), 0o755),
        (&hook_path, hook.as_bytes(), 0o755),
    ];
    write_tree(&tree, &files);
    let out = dir.join(format!("{name}.raw"));
    let mut args = vec!["build", "sysext", "--tree", s(&tree), "--name", name];
    args.extend(["--id", "_any", "--output", s(&out)]);
    let keys = signer.map(|k| (key(&format!("{k}.key")), key(&format!("{k}.crt"))));
    if let Some((k, c)) = &keys {
        args.extend(["--key", s(k), "--cert", s(c)]);
    }
    ours(&args);
    out
}

/// The UKI: Debian's kernel and stub, a generic initrd trusting `trusted.crt`, root= and the
/// userspace fallback on its command line. Prints how long `build uki` took and its size.
fn uki(dir: &Path, root_part_uuid: &str) -> PathBuf {
    let (vmlinuz, modules) = debian_kernel();
    let (osrel, out) = (dir.join("os-release"), dir.join("uki.efi"));
    std::fs::write(
        &osrel,
        "ID=debian\nVERSION_ID=12\nPRETTY_NAME=\"initrd-sysext UKI\"\n",
    )
    .unwrap();
    let cmdline =
        format!("{CONSOLE_CMDLINE} root=PARTUUID={root_part_uuid} rd.sysext.userspace_verity=1");
    let cert = key("trusted.crt");
    let start = std::time::Instant::now();
    ours(&[
        "build",
        "uki",
        "--kernel",
        s(&vmlinuz),
        "--init",
        s(binary()),
        "--modules-dir",
        s(&modules),
        "--drivers",
        "generic",
        "--cert",
        s(&cert),
        "--cmdline",
        &cmdline,
        "--os-release",
        s(&osrel),
        "--output",
        s(&out),
    ]);
    let size = std::fs::metadata(&out).unwrap().len();
    eprintln!(
        "build uki: {:.2} s, {size} bytes",
        start.elapsed().as_secs_f64()
    );
    out
}

/// Boots the UKI with `extensions` in the ESP's drop-in directory and a busybox root.
fn boot(dir: &Path, extensions: &[&Path]) -> Boot {
    let (disk, part_uuid, _) = root_disk(dir, &root_tree(dir, ""));
    let uki = uki(dir, &part_uuid);
    boot_uki(dir, &uki, &disk, extensions, false)
}

/// Boots `uki` from the ESP with `extensions` beside it, `disk` as the root disk, and swtpm as
/// the TPM if `tpm`.
fn boot_uki(dir: &Path, uki: &Path, disk: &Path, extensions: &[&Path], tpm: bool) -> Boot {
    let esp = extensions.iter().map(|e| {
        let name = e.file_name().unwrap().to_string_lossy();
        (format!("{EXTRA_D}/{name}"), e.to_path_buf())
    });
    let boot = Uefi {
        dir,
        uki,
        esp: esp.collect(),
        disks: vec![disk.to_owned()],
        extra: Vec::new(),
        timeout: TIMEOUT,
        tpm,
    }
    .boot();
    assert!(!boot.timed_out, "OVMF boot did not end:\n{}", boot.console);
    boot
}

/// Firmware → kernel → /init → switch root → root's init: wall clock and guest stamps (the
/// kernel's start on the wall clock is /init's wall arrival less its guest stamp).
fn timeline(what: &str, boot: &Boot) {
    for line in boot
        .console
        .lines()
        .filter(|l| l.contains("initrd-sysext:"))
    {
        eprintln!("{what}: {line}");
    }
    let wall = |n: &str| boot.wall_of(n).map_or(f64::NAN, |d| d.as_secs_f64());
    let guest = |n: &str| boot.time_of(n).unwrap_or(f64::NAN);
    let init = "starting as PID 1";
    eprintln!(
        "{what}: wall {:.1}s firmware hands over (BdsDxe: starting); ≈{:.1}s kernel starts; \
         {:.1}s /init (guest {:.2}s); guest {:.2}s switch root; wall {:.1}s root's init; \
         {:.1}s end",
        wall("BdsDxe: starting"),
        wall(init) - guest(init),
        wall(init),
        guest(init),
        guest("switch root"),
        wall("ROOT-INIT: start"),
        boot.wall.as_secs_f64()
    );
}

#[test]
fn scenario1_stub_passes_a_signed_extension_from_the_esp() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = hello(d, "hello", Some("trusted"));
    let boot = boot(d, &[&good]);
    timeline("uefi scenario 1", &boot);
    let no_tpm: Vec<&str> = boot
        .console
        .lines()
        .filter(|l| l.contains("not measuring"))
        .collect();
    assert_eq!(no_tpm.len(), 1, "one line without a TPM: {no_tpm:?}");
    assert!(
        no_tpm[0].contains("initrd-sysext: no TPM: not measuring"),
        "{no_tpm:?}"
    );
    boot.expect("the kernel refused the signature")
        .expect("checking in userspace")
        .expect("hello: erofs root image, Signed, signed by CN=initrd-sysext TEST trusted signer")
        .expect("userspace)")
        .expect("merged 1 extension(s) into /usr: hello")
        .expect("HELLO-FROM-hello: BusyBox v1.35.0")
        .expect("switching root to /sysroot")
        .expect("ROOT-INIT: done");
}

#[test]
fn scenario2_unsigned_and_untrusted_beside_it_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = hello(d, "hello", Some("trusted"));
    let unsigned = hello(d, "unsigned", None);
    let stranger = hello(d, "stranger", Some("untrusted"));
    let boot = boot(d, &[&good, &unsigned, &stranger]);
    timeline("uefi scenario 2", &boot);
    boot.expect("skipping extension unsigned (/.extra/sysext/unsigned.raw)")
        .expect("policy requires root=signed")
        .expect("skipping extension stranger (/.extra/sysext/stranger.raw)")
        .expect("signature refused in userspace")
        .expect_not("HELLO-FROM-unsigned")
        .expect_not("HELLO-FROM-stranger")
        .expect("merged 1 extension(s) into /usr: hello")
        .expect("HELLO-FROM-hello: BusyBox v1.35.0")
        .expect("ROOT-INIT: done");
}

/// `initrd-sysext pcr predict` (all four banks): the stub's event for the ESP's `extensions`,
/// then boot mode's for `merged`.
fn pcr13_predicted(extensions: &[&Path], merged: &[&Path]) -> Vec<(String, String)> {
    let mut args = vec!["pcr", "predict"];
    for e in extensions {
        args.extend(["--stub-extension", s(e)]);
    }
    args.extend(merged.iter().map(|m| s(m)));
    let text = ours(&args);
    let values = text
        .lines()
        .filter_map(|l| l.strip_prefix("13:")?.split_once('='));
    values.map(|(b, v)| (b.to_owned(), v.to_owned())).collect()
}

/// The seen value of `bank` next to the predicted one; panics if the root printed none.
fn compare(
    seen: &[(String, String)],
    predicted: &[(String, String)],
    bank: &str,
) -> (String, String) {
    let find =
        |list: &[(String, String)]| list.iter().find(|(b, _)| b == bank).map(|(_, v)| v.clone());
    let seen = find(seen).unwrap_or_else(|| panic!("no {bank} PCR value in the root"));
    let predicted = find(predicted).unwrap_or_else(|| panic!("no {bank} value predicted"));
    (seen, predicted)
}

fn have_tpm_tools() -> bool {
    test_support::require_tool("swtpm")
        && test_support::require_tool("/lib/systemd/systemd-measure")
        && test_support::require_tool("objcopy")
}

/// One boot checks both PCRs: 11 against systemd-measure, 13 against `pcr predict` with the
/// ESP holding a trusted extension (merged, measured) and an unsigned one (the stub measures
/// it in its cpio; boot mode refuses it and measures nothing for it).
#[test]
fn measured_boot_pcr11_and_pcr13_are_predicted() {
    if !have_tpm_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = hello(d, "hello", Some("trusted"));
    let unsigned = hello(d, "unsigned", None);
    let (disk, part_uuid, _) = root_disk(d, &root_tree(d, PRINT_PCRS));
    let uki = uki(d, &part_uuid);
    let boot = boot_uki(d, &uki, &disk, &[&good, &unsigned], true);
    timeline("uefi measured boot", &boot);
    let inspected: serde_json::Value =
        serde_json::from_str(&ours(&["inspect", "--json", s(&good)])).unwrap();
    let (root_hash, fp) = (
        inspected["root_hash"].as_str().unwrap(),
        inspected["signature"]["certificate_fingerprint"]
            .as_str()
            .unwrap(),
    );
    boot.expect("PCR 11 extended with enter-initrd (")
        .expect(&format!(
            "PCR 13 extended with sysext:hello:{root_hash}:{fp} ("
        ))
        .expect("PCR 11 extended with leave-initrd (")
        .expect("skipping extension unsigned")
        .expect_not("PCR 13 extended with sysext:unsigned")
        .expect_not("not measuring")
        .expect("HELLO-FROM-hello")
        .expect("ROOT-INIT: done");
    pcrs_are_predicted(&boot, &uki, &[&good, &unsigned], &[&good]);
}

/// PCR 11 seen in the root equals systemd-measure's prediction for `uki` (sha1, sha256: all
/// that 252 predicts) and PCR 13 `pcr predict`'s for the ESP's `esp` files and the `merged`
/// extensions, in all four of swtpm's banks.
fn pcrs_are_predicted(boot: &Boot, uki: &Path, esp: &[&Path], merged: &[&Path]) {
    let (seen, predicted) = (pcr_seen(boot, 11), pcr11_predicted(uki));
    eprintln!("PCR 11 seen {seen:?}\nPCR 11 predicted {predicted:?}");
    assert_eq!(seen.len(), 4, "four active banks");
    for bank in ["sha1", "sha256"] {
        let (s, p) = compare(&seen, &predicted, bank);
        assert_eq!(s, p, "PCR 11 {bank}: seen vs systemd-measure");
    }
    let (seen, predicted) = (pcr_seen(boot, 13), pcr13_predicted(esp, merged));
    eprintln!("PCR 13 seen {seen:?}\nPCR 13 predicted {predicted:?}");
    assert_eq!(seen.len(), 4, "four active banks");
    for bank in ["sha1", "sha256", "sha384", "sha512"] {
        let (s, p) = compare(&seen, &predicted, bank);
        assert_eq!(s, p, "PCR 13 {bank}: seen vs pcr predict");
    }
}

#[test]
fn measured_boot_a_tampered_cmdline_changes_pcr11() {
    if !have_tpm_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (disk, part_uuid, _) = root_disk(d, &root_tree(d, PRINT_PCRS));
    let uki = uki(d, &part_uuid);
    // panic=-1 → panic=-2: still a reboot on panic, a different .cmdline.
    let mut bytes = std::fs::read(&uki).unwrap();
    let at: Vec<usize> = (0..bytes.len() - 8)
        .filter(|&i| &bytes[i..i + 8] == b"panic=-1")
        .collect();
    assert_eq!(at.len(), 1, "panic=-1 once, in .cmdline");
    bytes[at[0] + 7] = b'2';
    let tampered = d.join("tampered.efi");
    std::fs::write(&tampered, bytes).unwrap();
    let boot = boot_uki(d, &tampered, &disk, &[], true);
    timeline("uefi tampered", &boot);
    boot.expect("panic=-2").expect("ROOT-INIT: done");
    let (s, p) = compare(&pcr_seen(&boot, 11), &pcr11_predicted(&uki), "sha256");
    eprintln!("tampered .cmdline: PCR 11 sha256 seen {s}, predicted from the original {p}");
    assert_ne!(s, p, "a tampered section must change PCR 11");
    let (_, own) = compare(&pcr_seen(&boot, 11), &pcr11_predicted(&tampered), "sha256");
    assert_eq!(s, own, "PCR 11 is the tampered UKI's own prediction");
}

/// The UKI of the UEFI variant of the test kernel (kernel-config/systemd.config: EFI stub,
/// ACPI, TPM TIS/CRB, our test certificate built in): Debian's stub, our initrd without
/// modules or verity.d, no userspace fallback on the command line.
fn test_kernel_uki(dir: &Path, root_part_uuid: &str) -> PathBuf {
    let (osrel, out) = (dir.join("os-release"), dir.join("uki.efi"));
    std::fs::write(&osrel, "ID=debian\nVERSION_ID=12\n").unwrap();
    let cmdline = format!("{CONSOLE_CMDLINE} root=PARTUUID={root_part_uuid}");
    ours(&[
        "build",
        "uki",
        "--kernel",
        s(dracut_test_kernel()),
        "--init",
        s(binary()),
        "--cmdline",
        &cmdline,
        "--os-release",
        s(&osrel),
        "--output",
        s(&out),
    ]);
    out
}

/// The test kernel through UEFI, in one boot with swtpm: its keyring (not user space) verifies
/// the ESP's signed extension, which merges and runs; the root is reached, PCR 11 there is
/// `systemd-measure calculate`'s prediction and PCR 13 `pcr predict`'s.
#[test]
fn test_kernel_uki_kernel_keyring_verifies_and_pcrs_are_predicted() {
    if !have_tpm_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = hello(d, "hello", Some("trusted"));
    let (disk, part_uuid, _) = root_disk(d, &root_tree(d, PRINT_PCRS));
    let uki = test_kernel_uki(d, &part_uuid);
    let boot = boot_uki(d, &uki, &disk, &[&good], true);
    timeline("uefi test kernel", &boot);
    boot.expect("PCR 11 extended with enter-initrd (")
        .expect("hello: erofs root image, Signed, signed by kernel keyring")
        .expect_not("checking in userspace")
        .expect_not("userspace)")
        .expect("merged 1 extension(s) into /usr: hello")
        .expect("HELLO-FROM-hello: BusyBox v1.35.0")
        .expect("PCR 11 extended with leave-initrd (")
        .expect("PCR 13 extended with sysext:hello:")
        .expect("switching root to /sysroot")
        .expect("ROOT-INIT: done");
    pcrs_are_predicted(&boot, &uki, &[&good], &[&good]);
}
