//! Interop with the real tools: our images through systemd-dissect, veritysetup, openssl,
//! fsck.erofs/unsquashfs and the host kernel; systemd-repart's images through our inspect/verify.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Builds a signed image of `fs` from the sample tree; returns (image, cert, tree).
fn signed_image(dir: &Path, fs_kind: &str) -> (PathBuf, PathBuf, PathBuf) {
    let tree = dir.join("tree");
    sample_tree(&tree, "sample");
    let (key, cert) = genkey(dir, "signer");
    let image = dir.join("sample.raw");
    ours_ok(&[
        "build",
        "sysext",
        "--tree",
        s(&tree),
        "--name",
        "sample",
        "--fs",
        fs_kind,
        "--key",
        s(&key),
        "--cert",
        s(&cert),
        "--seed",
        SEED,
        "--output",
        s(&image),
    ]);
    (image, cert, tree)
}

/// `--split`: the naked filesystem plus sidecars, checked by veritysetup, systemd-dissect and us.
fn check_split(dir: &Path, fs_kind: &str, tree: &Path, cert: &Path) {
    let split = dir.join("split");
    fs::create_dir(&split).unwrap();
    let naked = split.join("sample.raw");
    let key = dir.join("signer.key");
    ours_ok(&[
        "build",
        "sysext",
        "--tree",
        s(tree),
        "--name",
        "sample",
        "--fs",
        fs_kind,
        "--key",
        s(&key),
        "--cert",
        s(cert),
        "--seed",
        SEED,
        "--split",
        "--output",
        s(&naked),
    ]);
    let rh = fs::read_to_string(split.join("sample.roothash")).unwrap();
    let rh = rh.trim();
    run(Command::new("veritysetup").args([
        "verify",
        s(&naked),
        s(&split.join("sample.verity")),
        rh,
    ]));
    let out = run(Command::new("systemd-dissect").args(["--json=short", s(&naked)]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mounts"][0]["fstype"], fs_kind);
    assert_eq!(
        v["mounts"][0]["verity"], "external",
        "systemd-dissect's word for sidecar verity"
    );
    let out = ours_ok(&["verify", s(&naked), "--cert", s(cert)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(rh));
}

fn check_with_real_tools(fs_kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (image, cert, tree) = signed_image(dir.path(), fs_kind);
    let rh = root_hash(&image);
    let (data_off, data_size) = partition(&image, 1);
    let (hash_off, _) = partition(&image, 2);

    // systemd-dissect: three partitions, the same root hash halves, signed verity, initrd scope.
    let out = run(Command::new("systemd-dissect").args(["--json=short", s(&image)]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mounts = v["mounts"].as_array().unwrap();
    let designators: Vec<_> = mounts
        .iter()
        .map(|m| m["designator"].as_str().unwrap())
        .collect();
    assert_eq!(designators, ["root", "root-verity", "root-verity-sig"]);
    assert_eq!(mounts[0]["fstype"], fs_kind);
    assert_eq!(mounts[0]["verity"], "signed");
    let uuid_hex = |m: &serde_json::Value| m["partition_uuid"].as_str().unwrap().replace('-', "");
    assert_eq!(
        format!("{}{}", uuid_hex(&mounts[0]), uuid_hex(&mounts[1])),
        rh
    );
    assert_eq!(v["useInitRDExtension"], true);

    // veritysetup verify against the hash partition, with the data partition extracted.
    let data = dir.path().join("data.img");
    extract(&image, data_off, data_size, &data);
    run(Command::new("veritysetup").args([
        "verify",
        s(&data),
        s(&image),
        &rh,
        &format!("--hash-offset={hash_off}"),
    ]));
    check_split(dir.path(), fs_kind, &tree, &cert);

    // openssl: the detached PKCS#7 over the hex root hash.
    let content = dir.path().join("roothash.txt");
    fs::copy(dir.path().join("split/sample.roothash"), &content).unwrap();
    let rh_line = fs::read_to_string(&content).unwrap();
    fs::write(&content, rh_line.trim()).unwrap();
    run(Command::new("openssl").args([
        "smime",
        "-verify",
        "-binary",
        "-inform",
        "der",
        "-in",
        s(&dir.path().join("split/sample.roothash.p7s")),
        "-content",
        s(&content),
        "-certfile",
        s(&cert),
        "-nointern",
        "-noverify",
    ]));

    match fs_kind {
        "erofs" => drop(run(Command::new("fsck.erofs").arg(s(&data)))),
        _ => {
            let out = run(Command::new("unsquashfs").args(["-l", s(&data)]));
            let listing = String::from_utf8_lossy(&out.stdout);
            for p in [
                "usr/bin/tool",
                "usr/share/big.bin",
                "opt/vendor/data",
                "usr/bin/tool-link",
            ] {
                assert!(listing.contains(p), "unsquashfs -l lacks {p}:\n{listing}");
            }
            assert!(!listing.contains("etc/ignored"));
        }
    }

    // The host kernel mounts it and shows exactly the input's usr/ and opt/.
    if is_root() {
        let want = manifest(&tree);
        let got = mounted_manifest(&image, data_off, data_size, fs_kind);
        assert_eq!(got, want, "mounted {fs_kind} differs from the input tree");
        assert!(
            want.contains("user.test=0x68656c6c6f"),
            "xattrs missing from manifest:\n{want}"
        );
    } else {
        eprintln!("not root: skipping the loop-mount comparison");
    }
}

#[test]
fn erofs_image_passes_real_tools() {
    check_with_real_tools("erofs");
}

#[test]
fn squashfs_image_passes_real_tools() {
    check_with_real_tools("squashfs");
}

#[test]
fn same_seed_gives_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    sample_tree(&tree, "sample");
    let (key, cert) = genkey(dir.path(), "k");
    for fs_kind in ["erofs", "squashfs"] {
        let build = |out: &str| {
            let out = dir.path().join(out);
            cli(["build", "sysext", "--tree", s(&tree), "--name", "sample"])
                .args(["--fs", fs_kind, "--key", s(&key), "--cert", s(&cert)])
                .args(["--seed", SEED, "--output", s(&out)])
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .succeeds();
            fs::read(out).unwrap()
        };
        let (a, b) = (
            build(&format!("a-{fs_kind}.raw")),
            build(&format!("b-{fs_kind}.raw")),
        );
        assert!(a == b, "{fs_kind}: two builds with the same seed differ");
    }
}

#[test]
fn existing_output_is_kept_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    sample_tree(&tree, "x");
    let out = dir.path().join("x.raw");
    fs::write(&out, b"precious").unwrap();
    let args = [&build_any(&tree, "x")[..], &["--output", s(&out)]].concat();
    cli(&args).fails_with(1, "exists (use --force");
    assert_eq!(fs::read(&out).unwrap(), b"precious");
    let mut forced = args.to_vec();
    forced.push("--force");
    ours_ok(&forced);
    assert_ne!(fs::read(&out).unwrap(), b"precious");
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The reference walkthrough's mkosi.repart/ files in `dir/repart.d`, each with its `extra`
/// lines appended (10-root.conf's from line 8 on); returns the directory.
fn walkthrough_definitions(dir: &Path, extra: [&str; 3]) -> PathBuf {
    let defs = dir.join("repart.d");
    fs::create_dir_all(&defs).unwrap();
    let conf = [
        ("10-root.conf", "Type=root\nFormat=squashfs\nCopyFiles=/usr/\nVerity=data\nVerityMatchKey=root\nMinimize=best\n"),
        ("20-root-verity.conf", "Type=root-verity\nVerity=hash\nVerityMatchKey=root\nMinimize=best\n"),
        ("30-root-verity-sig.conf", "Type=root-verity-sig\nVerity=signature\nVerityMatchKey=root\n"),
    ];
    for ((name, body), extra) in conf.into_iter().zip(extra) {
        fs::write(defs.join(name), format!("[Partition]\n{body}{extra}")).unwrap();
    }
    defs
}

/// The reference walkthrough's repart layout, built by Debian's systemd-repart.
fn repart_image(dir: &Path, key: &Path, cert: &Path) -> PathBuf {
    let defs = walkthrough_definitions(dir, ["", "", ""]);
    let tree = dir.join("rtree");
    fs::create_dir_all(tree.join("usr/lib/extension-release.d")).unwrap();
    fs::create_dir_all(tree.join("usr/bin")).unwrap();
    fs::write(tree.join("usr/bin/tool"), b"tool").unwrap();
    fs::write(
        tree.join("usr/lib/extension-release.d/extension-release.rp"),
        "ID=_any\nSYSEXT_SCOPE=initrd\n",
    )
    .unwrap();
    let image = dir.join("rp.raw");
    run(Command::new("systemd-repart").args([
        &format!("--definitions={}", s(&defs)),
        "--empty=create",
        "--size=auto",
        "--dry-run=no",
        &format!("--root={}", s(&tree)),
        &format!("--private-key={}", s(key)),
        &format!("--certificate={}", s(cert)),
        &format!("--seed={SEED}"),
        s(&image),
    ]));
    image
}

#[test]
fn repart_images_pass_inspect_and_verify() {
    if !is_root() {
        eprintln!("not root: systemd-repart needs loop devices; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = genkey(dir.path(), "k");
    let image = repart_image(dir.path(), &key, &cert);
    let out = ours_ok(&["inspect", "--json", "--cert", s(&cert), s(&image)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["filesystem"], "squashfs");
    assert_eq!(
        v["verity"]["data_block_size"], 512,
        "repart 252 writes 512-byte verity blocks"
    );
    assert_eq!(v["signature"]["status"], "verified");
    assert_eq!(v["signature"]["signer"]["subject"], "CN=k");
    let flags = &v["partitions"][0]["flags"];
    assert_eq!(flags, &serde_json::json!(["grow-fs"]));
    let out = ours_ok(&["verify", s(&image), "--cert", s(&cert)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

/// Each partition's (label, flags), from our inspect --json.
fn labels_and_flags(image: &Path) -> Vec<(serde_json::Value, serde_json::Value)> {
    let out = ours_ok(&["inspect", "--json", s(image)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let parts = v["partitions"].as_array().unwrap();
    parts
        .iter()
        .map(|p| (p["label"].clone(), p["flags"].clone()))
        .collect()
}

#[test]
fn definitions_build_the_walkthrough_image() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    sample_tree(&tree, "sample");
    let (key, cert) = genkey(dir.path(), "signer");
    let defs = walkthrough_definitions(dir.path(), ["", "", ""]);
    let image = dir.path().join("sample.raw");
    ours_ok(&[
        "build",
        "sysext",
        "--definitions",
        s(&defs),
        "--tree",
        s(&tree),
        "--name",
        "sample",
        "--key",
        s(&key),
        "--cert",
        s(&cert),
        "--seed",
        SEED,
        "--output",
        s(&image),
    ]);
    let out = run(Command::new("systemd-dissect").args(["--json=short", s(&image)]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mounts = v["mounts"].as_array().unwrap();
    let designators: Vec<_> = mounts.iter().map(|m| m["designator"].clone()).collect();
    assert_eq!(designators, ["root", "root-verity", "root-verity-sig"]);
    assert_eq!(mounts[0]["fstype"], "squashfs");
    assert_eq!(mounts[0]["verity"], "signed");
    let out = ours_ok(&["verify", s(&image), "--cert", s(&cert)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    // CopyFiles=/usr/ leaves opt/ out.
    let (off, size) = partition(&image, 1);
    let data = dir.path().join("data.img");
    extract(&image, off, size, &data);
    let out = run(Command::new("unsquashfs").args(["-l", s(&data)]));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("usr/bin/tool"), "{listing}");
    assert!(
        !listing.contains("squashfs-root/opt"),
        "opt/ is not in CopyFiles=:\n{listing}"
    );

    // Labels and flags as systemd-repart 252 writes them for these files.
    let want = [
        ("root-x86-64", vec!["grow-fs"]),
        ("root-x86-64-verity", vec!["read-only"]),
        ("root-x86-64-verity-sig", vec![]),
    ]
    .map(|(l, f)| (serde_json::json!(l), serde_json::json!(f)));
    assert_eq!(labels_and_flags(&image), want);
    if is_root() {
        let theirs = repart_image(dir.path(), &key, &cert);
        assert_eq!(labels_and_flags(&theirs), want, "systemd-repart's own");
    }
}

#[test]
fn definitions_errors_exit_1_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    sample_tree(&tree, "x");
    let (key, cert) = genkey(dir.path(), "k");
    let build = |extra: [&str; 3], flags: &[&str], needle: &str| {
        let defs = walkthrough_definitions(dir.path(), extra);
        let out = dir.path().join("x.raw");
        let mut args = vec![
            "build",
            "sysext",
            "--definitions",
            s(&defs),
            "--tree",
            s(&tree),
        ];
        args.extend(["--name", "x", "--output", s(&out)]);
        args.extend(flags);
        let o = cli(&args).fails_with(1, needle);
        assert!(!out.exists());
        stderr(&o)
    };
    let keys = ["--key", s(&key), "--cert", s(&cert)];
    let encrypt = "repart.d/10-root.conf:8: Encrypt= is not supported";
    build(["Encrypt=key-file\n", "", ""], &keys, encrypt);
    let erofs = [&["--fs", "erofs"][..], &keys].concat();
    let e = build(["", "", ""], &erofs, "--fs erofs contradicts");
    assert!(e.contains("Format=squashfs"), "{e}");
    let unsigned = "30-root-verity-sig.conf: Verity=signature needs --key and --cert";
    build(["", "", ""], &[], unsigned);
}

/// `build sysext` with a fixed seed and SOURCE_DATE_EPOCH; the image's bytes.
fn reproducible_build(out: &Path, args: &[&str]) -> Vec<u8> {
    cli(["build", "sysext", "--seed", SEED, "--output", s(out)])
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .succeeds();
    fs::read(out).unwrap()
}

#[test]
fn definitions_and_flags_give_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    sample_tree(&tree, "sample");
    let (key, cert) = genkey(dir.path(), "k");
    let common = [
        "--tree",
        s(&tree),
        "--name",
        "sample",
        "--key",
        s(&key),
        "--cert",
        s(&cert),
    ];
    let flags = [
        "--fs",
        "squashfs",
        "--partition",
        "root",
        "--verity",
        "signed",
    ];
    let by_flags = reproducible_build(
        &dir.path().join("flags.raw"),
        &[&common[..], &flags].concat(),
    );
    let with_defs = |name: &str, extra: [&str; 3]| {
        let defs = walkthrough_definitions(&dir.path().join(name), extra);
        let args = [&common[..], &["--definitions", s(&defs)]].concat();
        reproducible_build(&dir.path().join(format!("{name}.raw")), &args)
    };
    // The walkthrough plus /opt/ and our default flags: read-only everywhere, no grow-fs.
    let defaults = with_defs(
        "same",
        ["CopyFiles=/opt/\nReadOnly=yes\n", "", "ReadOnly=yes\n"],
    );
    assert!(
        defaults == by_flags,
        "definitions and flags built different images"
    );
    // repart 252's flags and a label change only the GPT (primary and backup tables).
    let extra = ["CopyFiles=/opt/\n", "", "Label=sample-sig\n"];
    let repart = with_defs("repart", extra);
    assert_eq!(repart.len(), by_flags.len());
    let partitions = 40 * 512..by_flags.len() - 33 * 512;
    assert!(repart[partitions.clone()] == by_flags[partitions]);
    let gpt = labels_and_flags(&dir.path().join("repart.raw"));
    let sig = (serde_json::json!("sample-sig"), serde_json::json!([]));
    assert_eq!(gpt[2], sig, "{gpt:?}");
    assert_eq!(gpt[0].1, serde_json::json!(["grow-fs"]));
}

/// (description, byte offset to flip, expected message fragment)
fn tamper_cases(image: &Path) -> Vec<(&'static str, u64, &'static str)> {
    let (data, _) = partition(image, 1);
    let (hash, hash_size) = partition(image, 2);
    let (sig, _) = partition(image, 3);
    vec![
        ("data", data + 8192 + 17, "data block 2"),
        ("hash tree", hash + hash_size - 4096 + 1, "hash tree"),
        ("superblock", hash + 64, "verity superblock"),
        ("json", sig + 2, "signature partition"),
        ("signature", sig + 200, "signature"),
        ("gpt header", 512 + 60, "CRC32"),
    ]
}

#[test]
fn tampering_is_detected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let (image, cert, _) = signed_image(dir.path(), "erofs");
    ours_ok(&["verify", s(&image), "--cert", s(&cert)]);
    let pristine = fs::read(&image).unwrap();
    for (what, offset, expect) in tamper_cases(&image) {
        let mut bytes = pristine.clone();
        bytes[offset as usize] ^= 0x20;
        let bad = dir
            .path()
            .join(format!("bad-{}.raw", what.replace(' ', "-")));
        fs::write(&bad, &bytes).unwrap();
        cli(["verify", s(&bad), "--cert", s(&cert)]).fails_with(1, expect);
    }
    let truncated = dir.path().join("truncated.raw");
    fs::write(&truncated, &pristine[..pristine.len() / 2]).unwrap();
    cli(["verify", s(&truncated), "--cert", s(&cert)]).fails_with(1, "truncated.raw");
    let (_, other) = genkey(dir.path(), "other");
    cli(["verify", s(&image), "--cert", s(&other)]).fails_with(1, "does not verify");
}

#[test]
fn base_drops_what_the_base_has() {
    let dir = tempfile::tempdir().unwrap();
    let (base, tree) = (dir.path().join("base"), dir.path().join("tree"));
    for t in [&base, &tree] {
        fs::create_dir_all(t.join("usr/bin")).unwrap();
        fs::create_dir_all(t.join("usr/share/doc/base")).unwrap();
        fs::create_dir_all(t.join("etc")).unwrap();
        fs::write(t.join("usr/bin/base-tool"), b"base").unwrap();
        fs::write(t.join("usr/share/doc/base/README"), b"doc").unwrap();
        fs::write(
            t.join("etc/os-release"),
            "ID=debian\nVERSION_ID=12\nSYSEXT_LEVEL=1.2\n",
        )
        .unwrap();
    }
    fs::create_dir_all(tree.join("usr/share/doc/btrfs")).unwrap();
    fs::write(tree.join("usr/bin/btrfs"), b"new").unwrap();
    fs::write(tree.join("usr/share/doc/btrfs/README"), b"new doc").unwrap();
    fs::write(tree.join("etc/btrfs.conf"), b"outside usr").unwrap();
    let image = dir.path().join("btrfs.raw");
    let o = ours_ok(&[
        "build",
        "sysext",
        "--tree",
        s(&tree),
        "--base",
        s(&base),
        "--name",
        "btrfs",
        "--verity",
        "off",
        "--output",
        s(&image),
    ]);
    assert!(stderr(&o).contains("leaving out: etc"), "{}", stderr(&o));
    if !is_root() {
        return;
    }
    let (off, size) = partition(&image, 1);
    let got = mounted_manifest(&image, off, size, "erofs");
    let paths: Vec<&str> = got
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(' '))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    for want in [
        "usr/bin/btrfs",
        "usr/share/doc/btrfs/README",
        "usr/lib/extension-release.d/extension-release.btrfs",
    ] {
        assert!(paths.contains(&want), "{want} missing: {paths:?}");
    }
    for gone in [
        "usr/bin/base-tool",
        "usr/share/doc/base",
        "usr/share/doc/base/README",
    ] {
        assert!(
            !paths.contains(&gone),
            "{gone} should be dropped: {paths:?}"
        );
    }
    let out = run(Command::new("systemd-dissect").args(["--json=short", s(&image)]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rel: Vec<&str> = v["extensionRelease"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for kv in [
        "ID=debian",
        "VERSION_ID=12",
        "SYSEXT_LEVEL=1.2",
        "SYSEXT_SCOPE=initrd",
        "ARCHITECTURE=x86-64",
    ] {
        assert!(rel.contains(&kv), "{kv} missing from {rel:?}");
    }
}

#[test]
fn deferred_signing_matches_a_direct_build_and_checks_detached_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = d.join("tree");
    sample_tree(&tree, "sample");
    let (key, cert) = genkey(d, "signer");
    let build = |out: &str, verity: &[&str]| {
        let out = d.join(out);
        cli(["build", "sysext", "--tree", s(&tree), "--name", "sample"])
            .args(["--seed", SEED])
            .args(verity)
            .args(["--output", s(&out)])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .succeeds();
        out
    };
    let direct = build("direct.raw", &["--key", s(&key), "--cert", s(&cert)]);
    let deferred = build("deferred.raw", &["--verity", "defer"]);
    // Unsigned yet: inspect says so, verify refuses, the root hash waits beside it.
    let v: serde_json::Value =
        serde_json::from_slice(&ours_ok(&["inspect", "--json", s(&deferred)]).stdout).unwrap();
    assert_eq!(v["signature"]["status"], "deferred");
    cli(["verify", s(&deferred), "--cert", s(&cert)]).fails_with(1, "signature deferred");
    let rh = fs::read_to_string(d.join("deferred.roothash")).unwrap();
    assert_eq!(rh.trim(), v["root_hash"].as_str().unwrap());
    // A detached signature over another root hash is refused and nothing changes.
    let before = fs::read(&deferred).unwrap();
    let other = d.join("other.txt");
    fs::write(&other, "00".repeat(32)).unwrap();
    let bad_p7s = d.join("bad.p7s");
    run(Command::new("openssl").args([
        "smime",
        "-sign",
        "-nocerts",
        "-noattr",
        "-binary",
        "-in",
        s(&other),
        "-inkey",
        s(&key),
        "-signer",
        s(&cert),
        "-outform",
        "der",
        "-out",
        s(&bad_p7s),
    ]));
    // A signature over another root hash must be refused.
    cli(["sign", s(&deferred), "--signature", s(&bad_p7s)])
        .args(["--cert", s(&cert)])
        .fails_with(1, "does not verify");
    assert!(
        fs::read(&deferred).unwrap() == before,
        "a refused signature changed the image"
    );
    // Signed with the same key later: byte-identical to the direct build.
    ours_ok(&["sign", s(&deferred), "--key", s(&key), "--cert", s(&cert)]);
    assert!(
        fs::read(&deferred).unwrap() == fs::read(&direct).unwrap(),
        "deferred+sign differs from a direct build"
    );
    ours_ok(&["verify", s(&deferred), "--cert", s(&cert)]);
    let o = ours(&["sign", s(&deferred), "--key", s(&key), "--cert", s(&cert)]);
    assert!(stderr(&o).contains("already signed"), "{}", stderr(&o));
    // A detached PKCS#7 made with openssl elsewhere over the right root hash is accepted.
    let again = build("again.raw", &["--verity", "defer"]);
    let content = d.join("rh.txt");
    fs::write(&content, rh.trim()).unwrap();
    let good_p7s = d.join("good.p7s");
    run(Command::new("openssl").args([
        "smime",
        "-sign",
        "-nocerts",
        "-noattr",
        "-binary",
        "-in",
        s(&content),
        "-inkey",
        s(&key),
        "-signer",
        s(&cert),
        "-outform",
        "der",
        "-out",
        s(&good_p7s),
    ]));
    ours_ok(&[
        "sign",
        s(&again),
        "--signature",
        s(&good_p7s),
        "--cert",
        s(&cert),
    ]);
    ours_ok(&["verify", s(&again), "--cert", s(&cert)]);
    let out = run(Command::new("systemd-dissect").args(["--json=short", s(&again)]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mounts"][0]["verity"], "signed");
}

#[test]
fn extra_trees_and_output_specifiers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = d.join("tree");
    fs::create_dir_all(tree.join("usr/bin")).unwrap();
    fs::write(tree.join("usr/bin/tool"), "from the tree").unwrap();
    let extra = d.join("extra");
    fs::create_dir_all(extra.join("bin")).unwrap();
    fs::write(extra.join("bin/tool"), "from the extra tree").unwrap();
    fs::write(extra.join("bin/kubectl"), "binary").unwrap();
    let dst = format!("{}:/usr", s(&extra));
    let out = d.join("kubectl-%v.%a.raw");
    let o = ours_ok(&[
        "build",
        "sysext",
        "--tree",
        s(&tree),
        "--extra-tree",
        &dst,
        "--name",
        "kubectl",
        "--version",
        "1.29",
        "--id",
        "_any",
        "--verity",
        "off",
        "--output",
        s(&out),
    ]);
    let image = d.join("kubectl-1.29.x86-64.raw");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), s(&image));
    // %v without --version is a usage error.
    cli(["build", "sysext", "--tree", s(&tree), "--name", "k"])
        .args(["--id", "_any", "--output", s(&out)])
        .fails_with(2, "");
    if !is_root() {
        return;
    }
    let (off, size) = partition(&image, 1);
    let got = mounted_manifest(&image, off, size, "erofs");
    assert!(got.contains("usr/bin/kubectl f"), "{got}");
    assert!(
        got.contains(&sha2_hex("from the extra tree")),
        "the extra tree must win: {got}"
    );
    assert!(!got.contains(&sha2_hex("from the tree")), "{got}");
}

/// sha256 of `text`, as sha256sum prints it.
fn sha2_hex(text: &str) -> String {
    sh(&format!("printf %s '{text}' | sha256sum | cut -d' ' -f1"))
        .trim()
        .to_owned()
}

/// `--output NAME-%v.%a.raw`: systemd looks up `extension-release.<file name>`, so the release
/// file says it accepts any name (user.extension-release.strict=false); a plain build renamed
/// afterwards is, as systemd intends, no extension at all.
#[test]
fn versioned_file_names_are_accepted_by_systemd_dissect() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("usr/bin")).unwrap();
    fs::write(tree.join("usr/bin/tool"), b"tool\n").unwrap();
    let build = |output: &str| {
        ours_ok(&[
            "build",
            "sysext",
            "--tree",
            s(&tree),
            "--name",
            "tool",
            "--version",
            "1.0",
            "--id",
            "debian",
            "--version-id",
            "12",
            "--scope",
            "system",
            "--verity",
            "off",
            "--output",
            &format!("{}/{output}", dir.path().display()),
        ]);
    };
    let dissect = |file: &str| {
        let o = Command::new("systemd-dissect")
            .arg(dir.path().join(file))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    build("tool-%v.%a.raw");
    assert!(dissect("tool-1.0.x86-64.raw").contains("✓ extension for system"));
    build("tool.raw");
    fs::copy(
        dir.path().join("tool.raw"),
        dir.path().join("renamed-1.0.raw"),
    )
    .unwrap();
    assert!(dissect("tool.raw").contains("✓ extension for system"));
    assert!(dissect("renamed-1.0.raw").contains("✗ extension for system"));
}
