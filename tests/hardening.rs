//! Regression tests for hostile or unlucky inputs at the CLI: short root-hash sidecars, verity
//! superblocks that cover less than the filesystem, overlapping partitions, partial outputs,
//! decompression bombs, names with control characters and out-of-range zstd levels.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A signed image `x.raw` of a sample tree in `dir`, with `extra` build flags (`--split`:
/// x.roothash, x.verity, x.roothash.p7s beside it); returns the image and the certificate.
fn signed_image(dir: &Path, extra: &[&str]) -> (PathBuf, PathBuf) {
    let tree = dir.join("tree");
    sample_tree(&tree, "x");
    let (key, cert) = genkey(dir, "k");
    let image = dir.join("x.raw");
    cli(build_any(&tree, "x"))
        .args(["--key", s(&key), "--cert", s(&cert), "--output", s(&image)])
        .args(extra)
        .succeeds();
    (image, cert)
}

#[test]
fn short_roothash_sidecar_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (image, cert) = signed_image(dir.path(), &["--split"]);
    for short in ["abcd\n", "", "ab"] {
        fs::write(dir.path().join("x.roothash"), short).unwrap();
        cli(["verify", s(&image), "--cert", s(&cert)]).fails_with(1, "x.roothash");
        cli(["inspect", s(&image)]).fails_with(1, "x.roothash");
    }
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let mut data = fs::read(path).unwrap();
    data[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
    fs::write(path, data).unwrap();
}

#[test]
fn verity_must_cover_the_whole_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let (image, cert) = signed_image(dir.path(), &[]);
    cli(["verify", s(&image), "--cert", s(&cert)]).succeeds();
    let (data, data_size) = partition(&image, 1);
    let (hash, _) = partition(&image, 2);
    let blocks = data_size / 4096;
    assert!(blocks > 2);
    // One block fewer: the tree's stored hash blocks stay the same, only the last data block
    // is no longer checked — and it is changed.
    patch(&image, hash + 72, &(blocks - 1).to_le_bytes());
    patch(&image, data + (blocks - 1) * 4096 + 100, b"tampered");
    cli(["verify", s(&image), "--cert", s(&cert)]).fails_with(1, "data blocks");
}

/// Moves the end of partition entry `index` (0-based) of the primary GPT by `sectors`, and
/// fixes the CRCs (gptman, rightly, writes no overlapping partitions).
fn stretch_partition(image: &Path, index: usize, sectors: u64) {
    let crc32 = |b: &[u8]| crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(b);
    let mut d = fs::read(image).unwrap();
    let u32_at = |d: &[u8], at: usize| u32::from_le_bytes(d[at..at + 4].try_into().unwrap());
    let (hdr, entries) = (512, 1024);
    let (count, size) = (u32_at(&d, hdr + 80) as usize, u32_at(&d, hdr + 84) as usize);
    let last = entries + index * size + 40;
    let end = u64::from_le_bytes(d[last..last + 8].try_into().unwrap()) + sectors;
    d[last..last + 8].copy_from_slice(&end.to_le_bytes());
    let crc = crc32(&d[entries..entries + count * size]);
    d[hdr + 88..hdr + 92].copy_from_slice(&crc.to_le_bytes());
    let hdr_len = u32_at(&d, hdr + 12) as usize;
    d[hdr + 16..hdr + 20].fill(0);
    let crc = crc32(&d[hdr..hdr + hdr_len]);
    d[hdr + 16..hdr + 20].copy_from_slice(&crc.to_le_bytes());
    fs::write(image, d).unwrap();
}

#[test]
fn overlapping_partitions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (image, cert) = signed_image(dir.path(), &[]);
    // The data partition reaches 8 sectors into the hash partition.
    stretch_partition(&image, 0, 8);
    cli(["verify", s(&image), "--cert", s(&cert)]).fails_with(1, "overlaps partition 2");
}

/// Names of the files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn split_outputs_appear_together_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    sample_tree(&tree, "x");
    let (key, cert) = genkey(dir.path(), "k");
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let build = |force: bool| {
        let c = cli(build_any(&tree, "x"))
            .args(["--key", s(&key), "--cert", s(&cert), "--split"])
            .args(["--output", s(&out.join("x.raw"))]);
        if force {
            c.args(["--force"])
        } else {
            c
        }
    };
    // An existing sidecar, without --force: nothing is written at all.
    fs::write(out.join("x.verity"), "old").unwrap();
    build(false).fails_with(1, "x.verity");
    assert_eq!(listing(&out), ["x.verity"]);
    assert_eq!(fs::read(out.join("x.verity")).unwrap(), b"old");
    // With --force, a target that cannot be replaced (a non-empty directory): still nothing.
    fs::remove_file(out.join("x.verity")).unwrap();
    fs::create_dir_all(out.join("x.verity/inside")).unwrap();
    build(true).fails_with(1, "x.verity");
    assert_eq!(listing(&out), ["x.verity"]);
    fs::remove_dir_all(out.join("x.verity")).unwrap();
    build(false).succeeds();
    assert_eq!(
        listing(&out),
        ["x.raw", "x.roothash", "x.roothash.p7s", "x.verity"]
    );

    // Out of space after the image: no partial set either (needs root for the tmpfs).
    if !is_root() {
        eprintln!("not root: skipping the tmpfs part");
        return;
    }
    let raw = fs::metadata(out.join("x.raw")).unwrap().len();
    let small = dir.path().join("small");
    fs::create_dir(&small).unwrap();
    let script = format!(
        "mount -t tmpfs -o size={} tmpfs '{}'\n'{BIN}' build sysext --tree '{}' --name x \
         --id _any --key '{}' --cert '{}' --split --output '{}/x.raw' && exit 9\nls -A '{}'",
        raw + 4096,
        s(&small),
        s(&tree),
        s(&key),
        s(&cert),
        s(&small),
        s(&small)
    );
    let listed = sh(&format!(
        "unshare -m --propagation private sh -ec '{}'",
        script.replace('\'', "'\\''")
    ));
    assert_eq!(listed, "", "leftovers after a failed build");
}

#[test]
fn build_refuses_names_and_versions_with_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    sample_tree(&tree, "x");
    let out = dir.path().join("o.raw");
    let build = |extra: &[&str]| {
        cli(["build", "sysext", "--tree", s(&tree), "--id", "_any"])
            .args(["--verity", "off", "--output", s(&out)])
            .args(extra)
    };
    for name in ["a\nb", "a\tb", "a\x7fb", ".hidden", "a/b", ""] {
        let out = build(&["--name", name]).output();
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "--name {name:?}: {out:?}"
        );
        assert!(
            stderr(&out).contains("--name"),
            "{name:?}: {}",
            stderr(&out)
        );
    }
    for version in ["1\n2", "1 2", "1/2", "", "..", "1\u{e9}"] {
        let out = build(&["--name", "x", "--version", version]).output();
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "--version {version:?}: {out:?}"
        );
        assert!(
            stderr(&out).contains("--version"),
            "{version:?}: {}",
            stderr(&out)
        );
    }
    assert!(!out.exists());
    build(&["--name", "x", "--version", "1.2_3+4,5-rc1"]).succeeds();
}

/// A zstd-compressed newc archive holding one file of `size` zeros, written streaming.
fn zero_bomb(path: &Path, size: u64) {
    let file = fs::File::create(path).unwrap();
    let mut enc = zstd::stream::write::Encoder::new(file, 3).unwrap();
    let header = |name: &str, mode: u32, filesize: u64| {
        let mut h = format!(
            "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{filesize:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        )
        .into_bytes();
        h.extend(name.as_bytes());
        h.push(0);
        h.resize(h.len().div_ceil(4) * 4, 0);
        h
    };
    enc.write_all(&header("zeros", 0o100644, size)).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        enc.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    enc.write_all(&header("TRAILER!!!", 0, 0)).unwrap();
    enc.finish().unwrap();
}

#[test]
fn inspect_streams_a_decompression_bomb() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.cpio.zst");
    let size = 2u64 << 30;
    zero_bomb(&bomb, size);
    assert!(fs::metadata(&bomb).unwrap().len() < 1 << 20);
    // 256 MB of address space: buffering the member or the file would not fit.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 262144; exec '{BIN}' inspect '{}'",
            s(&bomb)
        ))
        .output()
        .unwrap();
    // It streams: the entry and its size, without holding the 2 GiB.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "inspect failed: {out:?}");
    assert!(
        stdout.contains("zeros") && stdout.contains(&size.to_string()),
        "{stdout}"
    );
}

#[test]
fn zstd_levels_outside_1_to_22_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("i.cpio.zst");
    for level in ["999", "-5", "0", "23"] {
        cli(["build", "initrd", "--level", level, "--output", s(&out)])
            .fails_with(2, "zstd levels are 1 to 22");
    }
    assert!(!out.exists());
}
