//! Regression tests for hostile or unlucky inputs at the CLI: short root-hash sidecars, verity
//! superblocks that cover less than the filesystem, overlapping partitions, partial outputs,
//! decompression bombs and names with control characters.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// A signed `--split` image `x.raw` (with x.roothash, x.verity, x.roothash.p7s) in `dir`;
/// returns the image and the certificate.
fn split_image(dir: &Path) -> (PathBuf, PathBuf) {
    let tree = dir.join("tree");
    sample_tree(&tree, "x");
    let (key, cert) = genkey(dir, "k");
    let image = dir.join("x.raw");
    cli([
        "build",
        "sysext",
        "--tree",
        s(&tree),
        "--name",
        "x",
        "--id",
        "_any",
    ])
    .args(["--key", s(&key), "--cert", s(&cert), "--split", "--output"])
    .args([&image])
    .succeeds();
    (image, cert)
}

#[test]
fn short_roothash_sidecar_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (image, cert) = split_image(dir.path());
    for short in ["abcd\n", "", "ab"] {
        fs::write(dir.path().join("x.roothash"), short).unwrap();
        cli(["verify", s(&image), "--cert", s(&cert)]).fails_with(1, "x.roothash");
        cli(["inspect", s(&image)]).fails_with(1, "x.roothash");
    }
}
