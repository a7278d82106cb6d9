//! `build uki` on Debian's systemd-stub and kernel: the sections binutils lists are ours, in
//! ukify's order and layout, their bytes are the inputs, systemd-measure predicts PCR 11 from
//! them; same inputs give the same bytes; `inspect` shows them; bad inputs fail clearly and
//! leave nothing behind; an existing output is kept unless --force. `pcr predict` computes
//! PCR 13 from the extensions' images.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const CMDLINE: &str = "console=ttyS0 rd.sysext.userspace_verity=1";

fn kernel() -> PathBuf {
    let boot = test_support::debian_kernel_root().join("boot");
    let mut found = fs::read_dir(boot).unwrap().map(|e| e.unwrap().path());
    found
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz")
        })
        .expect("Debian's kernel package holds a vmlinuz")
}

/// The kernel release of Debian's package: its vmlinuz-RELEASE name.
fn release(kernel: &std::path::Path) -> String {
    let name = kernel.file_name().unwrap().to_string_lossy();
    name.strip_prefix("vmlinuz-").unwrap().to_owned()
}

/// The inputs in `dir`: (os-release, initrd).
fn inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let (osrel, initrd) = (dir.join("os-release"), dir.join("initrd.img"));
    fs::write(&osrel, "ID=appliance\nVERSION_ID=1\n").unwrap();
    fs::write(&initrd, b"initrd bytes\x00\x01\x02").unwrap();
    (osrel, initrd)
}

fn build(dir: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let (osrel, initrd) = inputs(dir);
    let out = dir.join(out);
    let k = kernel();
    let mut args = vec!["build", "uki", "--kernel", s(&k), "--initrd", s(&initrd)];
    args.extend(["--cmdline", CMDLINE, "--os-release", s(&osrel)]);
    args.extend(["--output", s(&out)]);
    args.extend_from_slice(extra);
    ours_ok(&args);
    out
}

/// `objcopy -O binary --only-section`: a section's bytes as binutils reads them.
fn section(uki: &Path, name: &str) -> Vec<u8> {
    let out = uki.with_extension(name.trim_start_matches('.'));
    run(Command::new("objcopy")
        .args(["-O", "binary", "--only-section", name])
        .args([s(uki), s(&out)]));
    fs::read(out).unwrap()
}

#[test]
fn sections_are_the_inputs_in_ukify_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let uki = build(d, "x.efi", &[]);
    let (osrel, initrd) = inputs(d);
    // objdump (binutils' pei-x86-64) lists the stub's sections, then ours in ukify's order.
    let listing =
        String::from_utf8(run(Command::new("objdump").args(["-h", s(&uki)])).stdout).unwrap();
    let names: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).filter(|n| n.starts_with('.')))
        .collect();
    let ours = [".osrel", ".cmdline", ".uname", ".initrd", ".linux"];
    assert_eq!(&names[names.len() - 5..], ours, "{listing}");
    assert!(names.contains(&".sdmagic") && names.contains(&".text"));
    assert!(listing.contains("CONTENTS, ALLOC, LOAD, READONLY, CODE"));
    // Each section's bytes are the input's.
    assert_eq!(section(&uki, ".linux"), fs::read(kernel()).unwrap());
    assert_eq!(section(&uki, ".initrd"), fs::read(&initrd).unwrap());
    assert_eq!(section(&uki, ".osrel"), fs::read(&osrel).unwrap());
    assert_eq!(section(&uki, ".cmdline"), CMDLINE.as_bytes());
    assert_eq!(section(&uki, ".uname"), release(&kernel()).as_bytes());
    // inspect --json: our sections' addresses follow the stub's last at its alignment, SizeOfImage covers
    // the last, hashes are the inputs'.
    let v: serde_json::Value =
        serde_json::from_slice(&ours_ok(&["inspect", "--json", s(&uki)]).stdout).unwrap();
    assert_eq!(v["kind"], "uki");
    let secs = v["sections"].as_array().unwrap();
    let align = v["section_alignment"].as_u64().unwrap();
    for w in secs[secs.len() - 6..].windows(2) {
        let end = w[0]["virtual_address"].as_u64().unwrap() + w[0]["size"].as_u64().unwrap();
        assert_eq!(
            w[1]["virtual_address"].as_u64().unwrap(),
            end.div_ceil(align) * align
        );
    }
    let last = secs.last().unwrap();
    assert_eq!(last["name"], ".linux");
    let end = last["virtual_address"].as_u64().unwrap() + last["size"].as_u64().unwrap();
    assert_eq!(
        v["size_of_image"].as_u64().unwrap(),
        end.div_ceil(align) * align
    );
    let by_name = |n: &str| secs.iter().find(|x| x["name"] == n).unwrap();
    for (name, input) in [
        (".cmdline", CMDLINE.as_bytes().to_vec()),
        (".initrd", fs::read(&initrd).unwrap()),
    ] {
        assert_eq!(by_name(name)["sha256"], hex(&openssl::sha::sha256(&input)));
    }
    assert_eq!(by_name(".cmdline")["text"], CMDLINE);
    assert_eq!(by_name(".uname")["text"], release(&kernel()).as_str());
    assert_eq!(by_name(".osrel")["text"], "ID=appliance\nVERSION_ID=1\n");
    let text = String::from_utf8(ours_ok(&["inspect", s(&uki)]).stdout).unwrap();
    assert!(text.contains(".cmdline:\n    console=ttyS0"), "{text}");
    assert!(text.contains("  .linux    vaddr 0x"), "{text}");
    // systemd-measure predicts PCR 11 from the extracted sections as from the inputs.
    let measure = |linux: &Path, osrel: &Path, cmdline: &Path, initrd: &Path| {
        let out = run(Command::new("/lib/systemd/systemd-measure")
            .arg("calculate")
            .arg(format!("--linux={}", linux.display()))
            .arg(format!("--osrel={}", osrel.display()))
            .arg(format!("--cmdline={}", cmdline.display()))
            .arg(format!("--initrd={}", initrd.display()))
            .args(["--bank=sha256", "--phase=enter-initrd"]));
        String::from_utf8(out.stdout).unwrap()
    };
    let cmdline = d.join("cmdline.txt");
    fs::write(&cmdline, CMDLINE).unwrap();
    let from_inputs = measure(&kernel(), &osrel, &cmdline, &initrd);
    let ext = |n: &str| uki.with_extension(n);
    let from_uki = measure(
        &ext("linux"),
        &ext("osrel"),
        &ext("cmdline"),
        &ext("initrd"),
    );
    assert!(from_inputs.contains("11:sha256="), "{from_inputs}");
    assert_eq!(from_inputs, from_uki);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn same_inputs_same_bytes_and_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (build(d, "a.efi", &[]), build(d, "b.efi", &[]));
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    // An initrd built in the same call: the same bytes twice too.
    let init = d.join("init");
    fs::write(&init, "#!/bin/sh\n").unwrap();
    let (osrel, _) = inputs(d);
    let k = kernel();
    let built = |out: &Path| {
        let args = ["build", "uki", "--kernel", s(&k), "--init", s(&init)];
        let more = ["--cmdline", "x", "--os-release", s(&osrel), "-o", s(out)];
        cli(args.iter().chain(&more))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .succeeds();
        fs::read(out).unwrap()
    };
    assert_eq!(built(&d.join("c.efi")), built(&d.join("d.efi")));
    // An existing output is kept unless --force.
    let other = [
        "build",
        "uki",
        "--kernel",
        s(&k),
        "--initrd",
        s(&osrel),
        "--cmdline",
        "other",
        "--os-release",
        s(&osrel),
        "--output",
        s(&a),
    ];
    cli(other).fails_with(1, "exists (use --force to replace it)");
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    cli(other.iter().chain(&["--force"])).succeeds();
    assert_ne!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
}

#[test]
fn bad_inputs_fail_clearly_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (osrel, initrd) = inputs(d);
    let k = kernel();
    let out = d.join("out.efi");
    let uki = |stub: &Path, kernel: &Path| {
        let args = ["build", "uki", "--stub", s(stub), "--kernel", s(kernel)];
        let more = [
            "--initrd",
            s(&initrd),
            "--cmdline",
            "x",
            "--os-release",
            s(&osrel),
        ];
        cli(args.iter().chain(&more).chain(&["--output", s(&out)]))
    };
    let stub = Path::new(STUB);
    uki(&osrel, &k).fails_with(
        1,
        &format!("{}: not a PE/COFF image: no MZ header", osrel.display()),
    );
    let mut cut = fs::read(stub).unwrap();
    cut.truncate(0x300);
    let truncated = d.join("truncated.stub");
    fs::write(&truncated, cut).unwrap();
    uki(&truncated, &k).fails_with(1, "section .text (header at 0x188): PointerToRawData+SizeOfRawData (0x400+0xc000) beyond the file (768 bytes)");
    let made = build(d, "made.efi", &[]);
    uki(&made, &k).fails_with(1, "already has a .osrel section (is it a UKI already?)");
    uki(stub, &osrel).fails_with(
        1,
        "not a PE/COFF image: no MZ header at offset 0 (systemd-stub needs an EFI-stub kernel)",
    );
    uki(stub, stub).fails_with(
        1,
        "no x86 boot protocol header (HdrS at offset 0x202): not a bzImage; give --uname",
    );
    uki(stub, &d.join("missing")).fails_with(1, "missing: No such file or directory");
    let mut both = vec![
        "build",
        "uki",
        "--kernel",
        s(&k),
        "--initrd",
        s(&initrd),
        "--tree",
        s(d),
    ];
    both.extend([
        "--cmdline",
        "x",
        "--os-release",
        s(&osrel),
        "--output",
        s(&out),
    ]);
    cli(&both).fails_with(2, "--initrd excludes the options that build one");
    assert!(!out.exists());
    let left: Vec<_> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !left.iter().any(|n| n.to_string_lossy().ends_with(".tmp")),
        "{left:?}"
    );
    // A PE that is not a UKI is inspected as such.
    let v = String::from_utf8(ours_ok(&["inspect", STUB]).stdout).unwrap();
    assert!(v.contains(": pe\n") && v.contains(".sdmagic"), "{v}");
}

/// `pcr predict` on real images: each extension's event is `sysext:NAME:ROOTHASH:FINGERPRINT`
/// with what `inspect` shows (a verity-only image without a fingerprint, a directory with
/// neither), extended in the order given, in the banks asked for and in their order.
#[test]
fn pcr_predict_reads_the_images() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, cert) = genkey(d, "k");
    let tree = d.join("tree");
    write_tree(&tree, &[("usr/bin/tool", b"tool", 0o755)]);
    let (signed, hashed, plain) = (d.join("signed.raw"), d.join("hashed.raw"), d.join("tools"));
    let mut args = build_any(&tree, "signed").to_vec();
    args.extend(["--key", s(&key), "--cert", s(&cert), "--output", s(&signed)]);
    ours_ok(&args);
    let mut args = build_any(&tree, "hashed").to_vec();
    args.extend(["--verity", "hash", "--output", s(&hashed)]);
    ours_ok(&args);
    fs::create_dir(&plain).unwrap();
    let inspect = |image: &Path| -> serde_json::Value {
        serde_json::from_slice(&ours_ok(&["inspect", "--json", s(image)]).stdout).unwrap()
    };
    let (si, hi) = (inspect(&signed), inspect(&hashed));
    let events = [
        format!(
            "sysext:signed:{}:{}",
            si["root_hash"].as_str().unwrap(),
            si["signature"]["certificate_fingerprint"].as_str().unwrap()
        ),
        format!("sysext:hashed:{}:-", hi["root_hash"].as_str().unwrap()),
        "sysext:tools:-:-".to_owned(),
    ];
    let mut pcr = vec![0u8; 32];
    for e in &events {
        let digest = sha2::Sha256::digest(e.as_bytes());
        pcr = sha2::Sha256::digest([&pcr[..], &digest[..]].concat()).to_vec();
    }
    let hex: String = pcr.iter().map(|b| format!("{b:02x}")).collect();
    let args = ["pcr", "predict", "--bank", "sha256", "--bank", "SHA1"];
    let out = ours_ok(&[&args[..], &[s(&signed), s(&hashed), s(&plain)]].concat());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], format!("13:sha256={hex}"));
    assert!(
        lines[1].starts_with("13:sha1=") && lines[1].len() == 8 + 40,
        "{text}"
    );
    // The default banks are systemd-measure's four; no extension leaves PCR 13 at zero.
    let out = ours_ok(&["pcr", "predict"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let banks: Vec<&str> = text.lines().map(|l| l.split('=').next().unwrap()).collect();
    assert_eq!(banks, ["13:sha1", "13:sha256", "13:sha384", "13:sha512"]);
    assert!(text.lines().all(|l| l.ends_with(&"0".repeat(40))), "{text}");
    cli(["pcr", "predict", "--bank", "md5"]).fails_with(2, "expected sha1, sha256");
    let img = d.join("x.img");
    fs::write(&img, b"").unwrap();
    cli(["pcr", "predict", "--stub-extension", s(&img)])
        .fails_with(1, "systemd-stub passes on only files named *.raw");
    cli(["pcr", "predict", s(&img)]).fails_with(1, "neither a *.raw image nor a directory");
}
