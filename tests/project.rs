//! `build --directory`: a mkosi-style project shaped like the reference walkthrough (a base
//! directory, an Overlay=yes extension laid out by mkosi.repart/, an initrd as cpio) builds in
//! one command; keys we cannot honour are refused before anything is written.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// The walkthrough's project with synthetic trees: `base` (os-release, a base tool) and `full`
/// (base plus what the "btrfs" package adds).
fn walkthrough(dir: &Path) -> std::path::PathBuf {
    let (base, full, p) = (
        dir.join("base-tree"),
        dir.join("full-tree"),
        dir.join("project"),
    );
    for t in [&base, &full] {
        write(&t.join("usr/lib/os-release"), "ID=debian\nVERSION_ID=12\n");
        write(&t.join("usr/bin/base-tool"), "base\n");
        write(&t.join("etc/hostname"), "appliance\n");
    }
    write(
        &full.join("usr/bin/btrfs"),
        "#!/bin/sh\necho btrfs-progs v6.2\n",
    );
    write(&full.join("usr/share/doc/btrfs/README"), "docs\n");
    write(
        &p.join("mkosi.conf"),
        "[Output]\nOutputDirectory=mkosi.output\nCacheDirectory=mkosi.cache\n",
    );
    write(
        &p.join("mkosi.images/base/mkosi.conf"),
        &format!(
            "[Output]\nFormat=directory\n\n[Content]\nCleanPackageMetadata=no\nBaseTrees={}\n",
            base.display()
        ),
    );
    write(
        &p.join("mkosi.images/btrfs/mkosi.conf"),
        &format!(
            "[Config]\nDependencies=base\n\n[Output]\nFormat=disk\nOverlay=yes\n\n\
             [Content]\nBaseTrees=%O/base\nExtraTrees={}\n",
            full.display()
        ),
    );
    write(
        &p.join(
            "mkosi.images/btrfs/mkosi.extra/usr/lib/extension-release.d/extension-release.btrfs",
        ),
        "ID=debian\nVERSION_ID=12\nARCHITECTURE=x86-64\nSYSEXT_SCOPE=initrd\n",
    );
    let repart = p.join("mkosi.images/btrfs/mkosi.repart");
    write(
        &repart.join("10-root.conf"),
        "[Partition]\nType=root\nFormat=squashfs\nCopyFiles=/usr/\nVerity=data\nVerityMatchKey=root\nMinimize=best\n",
    );
    write(
        &repart.join("20-root-verity.conf"),
        "[Partition]\nType=root-verity\nVerity=hash\nVerityMatchKey=root\nMinimize=best\n",
    );
    write(
        &repart.join("30-root-verity-sig.conf"),
        "[Partition]\nType=root-verity-sig\nVerity=signature\nVerityMatchKey=root\n",
    );
    write(
        &p.join("mkosi.images/initrd/mkosi.conf"),
        "[Config]\nDependencies=base\n\n[Output]\nFormat=cpio\n\n[Content]\nMakeInitrd=yes\nBaseTrees=%O/base\n",
    );
    genkey(&p, "mkosi");
    p
}

#[test]
fn walkthrough_project_builds_every_image_in_one_command() {
    let dir = tempfile::tempdir().unwrap();
    let p = walkthrough(dir.path());
    let init = dir.path().join("init");
    write(&init, "#!/bin/sh\necho init\n");
    let o = ours_ok(&["build", "--directory", s(&p), "--init", s(&init)]);
    let out = p.join("mkosi.output");
    let listed = String::from_utf8_lossy(&o.stdout);
    // Dependency order: base before the images built on it.
    let order: Vec<&str> = listed.lines().collect();
    assert_eq!(order.len(), 3, "{listed}");
    assert!(order[0].ends_with("/base"), "{listed}");
    assert!(out.join("base/usr/bin/base-tool").is_file());
    assert!(out.join("initrd.cpio.zst").is_file());
    let image = out.join("btrfs.raw");
    let cert = p.join("mkosi.crt");
    let v: serde_json::Value = serde_json::from_slice(
        &ours_ok(&["inspect", "--json", "--cert", s(&cert), s(&image)]).stdout,
    )
    .unwrap();
    let text = v.to_string();
    for want in ["\"squashfs\"", "SYSEXT_SCOPE", "initrd", "verified"] {
        assert!(text.contains(want), "{want} not in {text}");
    }
    // Overlay=yes: only what the full tree adds over the base, plus the release file.
    let (off, _) = partition(&image, 1);
    let listing =
        run(Command::new("unsquashfs").args(["-o", &off.to_string(), "-l", "-d", "", s(&image)]))
            .stdout;
    let listing = String::from_utf8_lossy(&listing);
    assert!(listing.contains("/usr/bin/btrfs"), "{listing}");
    assert!(listing.contains("/usr/lib/extension-release.d/extension-release.btrfs"));
    assert!(
        !listing.contains("base-tool") && !listing.contains("os-release\n"),
        "{listing}"
    );
    let dissect = run(Command::new("systemd-dissect").args(["--json=short", s(&image)])).stdout;
    assert!(String::from_utf8_lossy(&dissect).contains("SYSEXT_SCOPE=initrd"));
    let initrd =
        String::from_utf8_lossy(&ours_ok(&["inspect", s(&out.join("initrd.cpio.zst"))]).stdout)
            .into_owned();
    assert!(
        initrd.contains("usr/bin/base-tool") && initrd.contains(" init"),
        "{initrd}"
    );
    // Outputs exist now: refused without --force, replaced with it.
    let again = ours(&["build", "--directory", s(&p), "--init", s(&init)]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("exists (build --directory --force replaces it)"));
    ours_ok(&["build", "--directory", s(&p), "--init", s(&init), "--force"]);
}

#[test]
fn unsupported_settings_are_refused_before_anything_is_written() {
    let cases: [(&str, &str, &str); 7] = [
        (
            "mkosi.conf",
            "[Content]\nPackages=btrfs-progs\n",
            "mkosi.conf:5: Packages= is not supported: we do not install packages",
        ),
        (
            "mkosi.conf",
            "[Distribution]\nDistribution=debian\n",
            "Distribution= is not supported: we do not install packages",
        ),
        (
            "mkosi.conf",
            "[Output]\nFrobnicate=yes\n",
            "Frobnicate= is not supported",
        ),
        (
            "mkosi.conf",
            "[Match]\nDistribution=fedora\n",
            "conditional configuration is not evaluated",
        ),
        (
            "mkosi.build",
            "#!/bin/sh\n",
            "mkosi.build: not supported: we run no build scripts",
        ),
        (
            "mkosi.images/base/mkosi.conf",
            "[Config]\nDependencies=nothere\n",
            "Dependencies=nothere: no such image",
        ),
        (
            "mkosi.images/base/mkosi.conf",
            "[Config]\nDependencies=btrfs\n",
            "Dependencies= form a cycle among",
        ),
    ];
    for (file, text, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let p = walkthrough(dir.path());
        let path = p.join(file);
        let mut content = fs::read_to_string(&path).unwrap_or_default();
        content.push_str(text);
        write(&path, &content);
        let o = ours(&["build", "--directory", s(&p)]);
        assert!(!o.status.success(), "{file}: {text}");
        assert!(
            stderr(&o).contains(message),
            "{message:?} not in {}",
            stderr(&o)
        );
        assert!(
            !p.join("mkosi.output").exists(),
            "{file}: something was written"
        );
    }
}
