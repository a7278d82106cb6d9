//! The merge engine on the host, in private mount namespaces over fake roots (never the host's
//! /usr, except read-only overlays inside a private namespace for systemd-sysext's `status`):
//! directories and naked images, precedence, masking, compatibility, read-only, stacking on an
//! existing overlay, interop with Debian's systemd-sysext.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Runs `script` in a private mount namespace with a private tmpfs on /run.
fn in_namespace(script: &str) -> String {
    sh(&format!(
        "unshare -m --propagation private sh -ec 'mount -t tmpfs tmpfs /run\n{}'",
        script.replace('\'', "'\\''")
    ))
}

/// A fake root with a host release and a base file in usr/bin.
fn fake_root(dir: &Path, release: &str) -> std::path::PathBuf {
    let r = dir.join("root");
    for d in [
        "etc",
        "usr/bin",
        "opt",
        "var/lib/extensions",
        "run/extensions",
        "etc/extensions",
    ] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::write(r.join("etc/os-release"), release).unwrap();
    fs::write(r.join("usr/bin/base"), "base").unwrap();
    r
}

/// A Debian 12 fake root with one matching directory extension `name` in /var/lib/extensions.
fn root_with_ext(dir: &Path, name: &str) -> std::path::PathBuf {
    let root = fake_root(dir, "ID=debian\nVERSION_ID=12\n");
    dir_ext(
        &root,
        "var/lib/extensions",
        name,
        "ID=debian\nVERSION_ID=12\n",
    );
    root
}

/// A directory extension `name` under `root/dir` with `release` and a file usr/bin/<name>.
fn dir_ext(root: &Path, dir: &str, name: &str, release: &str) {
    let e = root.join(dir).join(name);
    fs::create_dir_all(e.join("usr/bin")).unwrap();
    fs::create_dir_all(e.join("usr/lib/extension-release.d")).unwrap();
    fs::write(e.join("usr/bin").join(name), name).unwrap();
    fs::write(
        e.join(format!(
            "usr/lib/extension-release.d/extension-release.{name}"
        )),
        release,
    )
    .unwrap();
}

/// This machine's ID= and VERSION_ID= lines: an extension for the namespace's own /usr.
fn host_ids() -> String {
    let host = fs::read_to_string("/etc/os-release").unwrap();
    host.lines()
        .filter(|l| l.starts_with("ID=") || l.starts_with("VERSION_ID="))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn require_root() -> bool {
    if !is_root() {
        eprintln!("not root: mount namespaces need root; skipping");
    }
    is_root()
}

#[test]
fn directories_and_images_merge_unmerge_refresh() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_ext(dir.path(), "dirext");
    let img_tree = dir.path().join("img");
    fs::create_dir_all(img_tree.join("usr/bin")).unwrap();
    fs::create_dir_all(img_tree.join("opt/vendor")).unwrap();
    fs::write(img_tree.join("usr/bin/imgtool"), "img").unwrap();
    fs::write(img_tree.join("opt/vendor/file"), "opt").unwrap();
    let img = root.join("var/lib/extensions/imgext.raw");
    ours_ok(&[
        "build",
        "sysext",
        "--tree",
        s(&img_tree),
        "--name",
        "imgext",
        "--id",
        "debian",
        "--version-id",
        "12",
        "--scope",
        "system",
        "--verity",
        "off",
        "--split",
        "--output",
        s(&img),
    ]);
    let r = s(&root);
    let out = in_namespace(&format!(
        "{BIN} merge --root {r}
         cat {r}/usr/bin/base {r}/usr/bin/dirext {r}/usr/bin/imgtool {r}/opt/vendor/file; echo
         cat {r}/usr/.systemd-sysext/extensions
         touch {r}/usr/bin/new 2>/dev/null && echo WRITABLE || echo READ-ONLY
         {BIN} merge --root {r} 2>&1 || echo MERGE-AGAIN-FAILED
         {BIN} status --root {r} --json=short
         {BIN} refresh --root {r} >/dev/null
         {BIN} unmerge --root {r}
         test -e {r}/usr/bin/dirext && echo STILL-THERE || echo GONE
         losetup -a | grep -c imgext || true"
    ));
    assert!(out.contains("basedirextimgopt"), "{out}");
    assert!(out.contains("dirext\nimgext\n"), "{out}");
    assert!(out.contains("READ-ONLY"), "{out}");
    assert!(
        out.contains("already merged") && out.contains("MERGE-AGAIN-FAILED"),
        "{out}"
    );
    assert!(out.contains(r#""extensions":["dirext","imgext"]"#), "{out}");
    assert!(
        out.contains("Unmerged /usr.") && out.contains("Unmerged /opt."),
        "{out}"
    );
    assert!(out.contains("GONE"), "{out}");
    assert!(
        out.trim_end().ends_with('0'),
        "a loop device is left: {out}"
    );
}

#[test]
fn precedence_masking_and_compatibility() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=24.04\nSYSEXT_LEVEL=2\n";
    let root = fake_root(dir.path(), host);
    // /etc wins over /var/lib for the same name; an empty dir in /etc masks one in /run.
    dir_ext(
        &root,
        "etc/extensions",
        "prec",
        "ID=ubuntu\nSYSEXT_LEVEL=2\n",
    );
    dir_ext(&root, "var/lib/extensions", "prec", "ID=fedora\n");
    fs::write(root.join("var/lib/extensions/prec/usr/bin/lower-only"), "x").unwrap();
    fs::create_dir_all(root.join("etc/extensions/masked")).unwrap();
    dir_ext(&root, "run/extensions", "masked", "ID=_any\n");
    let cases = [
        ("likeid", "ID=debian\nSYSEXT_LEVEL=2\n", true),
        ("anyid", "ID=_any\n", true),
        ("level", "ID=ubuntu\nSYSEXT_LEVEL=2\nVERSION_ID=1\n", true),
        ("badlevel", "ID=ubuntu\nSYSEXT_LEVEL=3\n", false),
        ("badid", "ID=fedora\nSYSEXT_LEVEL=2\n", false),
        ("badarch", "ID=_any\nARCHITECTURE=arm64\n", false),
        ("goodarch", "ID=_any\nARCHITECTURE=x86-64\n", true),
        ("initrdonly", "ID=_any\nSYSEXT_SCOPE=initrd\n", false),
        ("noid", "VERSION_ID=24.04\n", false),
    ];
    for (name, release, _) in cases {
        dir_ext(&root, "var/lib/extensions", name, release);
    }
    let r = s(&root);
    let out = in_namespace(&format!(
        "{BIN} merge --root {r} --json=short; ls {r}/usr/bin; {BIN} unmerge --root {r} >/dev/null"
    ));
    let json = out.lines().next().unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let merged: Vec<&str> = v["merged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    let refused: Vec<&str> = v["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for (name, _, ok) in cases {
        assert_eq!(merged.contains(&name), ok, "{name}: {json}");
        assert_eq!(refused.contains(&name), !ok, "{name}: {json}");
    }
    assert!(
        merged.contains(&"prec") && !merged.contains(&"masked"),
        "{json}"
    );
    assert!(
        !out.contains("lower-only"),
        "the /var/lib copy of prec must be shadowed: {out}"
    );
    // --force merges the incompatible ones too; --noexec mounts
    // the overlay noexec.
    let out = in_namespace(&format!(
        "{BIN} merge --root {r} --force --noexec=yes --json=short; grep \" {r}/usr \" /proc/self/mounts; {BIN} unmerge --root {r} >/dev/null"
    ));
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let forced: Vec<&str> = v["merged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for name in ["badlevel", "badid", "badarch", "initrdonly", "likeid"] {
        assert!(forced.contains(&name), "--force should merge {name}: {out}");
    }
    assert!(out.contains("noexec"), "{out}");
}

#[test]
fn systemd_sysext_recognises_and_unmerges_our_merge() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_ext(dir.path(), "ours");
    let r = s(&root);
    let out = in_namespace(&format!(
        "{BIN} merge --root {r} >/dev/null
         systemd-sysext unmerge --root={r}
         test -e {r}/usr/bin/ours && echo STILL-MERGED || echo UNMERGED-BY-SYSTEMD"
    ));
    assert!(out.contains("UNMERGED-BY-SYSTEMD"), "{out}");
    // 252's `status --root` reads the meta file without the root prefix: check status on /,
    // merging a read-only overlay onto /usr inside the private namespace only.
    let ext = dir.path().join("run-ext");
    fs::create_dir_all(ext.join("usr/lib/extension-release.d")).unwrap();
    fs::create_dir_all(ext.join("usr/share/initrd-sysext-test")).unwrap();
    let release = host_ids();
    fs::write(
        ext.join("usr/lib/extension-release.d/extension-release.hostcheck"),
        release,
    )
    .unwrap();
    let out = in_namespace(&format!(
        "mkdir -p /run/extensions && cp -a {} /run/extensions/hostcheck
         {BIN} merge >/dev/null
         systemd-sysext status
         test -d /usr/share/initrd-sysext-test && echo VISIBLE
         systemd-sysext unmerge >/dev/null
         test -d /usr/share/initrd-sysext-test && echo STILL || echo REMOVED",
        ext.display()
    ));
    assert!(
        out.contains("hostcheck") && out.contains("VISIBLE") && out.contains("REMOVED"),
        "{out}"
    );
}

/// A hierarchy that is already a writable overlay (Prism and the like, reference 002): the
/// merge stacks on it (its renamed directories and files stay visible, the result is
/// read-only) and the unmerge gives the writable overlay back.
#[test]
fn merge_stacks_on_an_existing_overlay() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_ext(dir.path(), "stacked");
    let (r, d) = (s(&root), dir.path().display());
    let out = in_namespace(&format!(
        "mkdir -p {d}/lower/share/olddir {d}/upper {d}/work
         echo lower > {d}/lower/share/olddir/file
         mount -t overlay prism -o lowerdir={d}/lower,upperdir={d}/upper,workdir={d}/work,redirect_dir=on {r}/usr
         mv {r}/usr/share/olddir {r}/usr/share/newdir
         echo prism > {r}/usr/prismfile
         {BIN} merge --root {r} >/dev/null
         echo \"SEEN: $(cat {r}/usr/share/newdir/file {r}/usr/prismfile {r}/usr/bin/stacked)\"
         touch {r}/usr/x 2>/dev/null && echo WRITABLE || echo READ-ONLY
         {BIN} unmerge --root {r} >/dev/null
         test -e {r}/usr/bin/stacked && echo STILL-MERGED || echo UNMERGED
         touch {r}/usr/y && echo PRISM-WRITABLE-AGAIN"
    ));
    for want in [
        "SEEN: lower\nprism\nstacked",
        "READ-ONLY",
        "UNMERGED",
        "PRISM-WRITABLE-AGAIN",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
}

/// systemd-sysext's command-line grammar: options before or after the verb, `--opt=value` and
/// `--opt value`, booleans in systemd's spellings, `status` by default, and the binary invoked
/// as `systemd-sysext` (what scripts written for systemd call).
#[test]
fn command_line_grammar_of_systemd_sysext() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let r = fake_root(dir.path(), "ID=debian\nVERSION_ID=12\n");
    dir_ext(
        &r,
        "var/lib/extensions",
        "gram",
        "ID=debian\nVERSION_ID=12\n",
    );
    let alias = dir.path().join("systemd-sysext");
    std::os::unix::fs::symlink(BIN, &alias).unwrap();
    let (r, a) = (s(&r), s(&alias));
    let out = in_namespace(&format!(
        "{BIN} --root={r} merge --noexec=no >/dev/null\n\
         cat {r}/usr/bin/gram; echo\n\
         {BIN} --json short status --root {r}\n\
         {a} --root={r} --no-legend --no-pager\n\
         {BIN} sysext unmerge --root={r} --no-reload >/dev/null\n\
         {a} --root {r} --json=short\n\
         test ! -e {r}/usr/bin/gram && echo GONE"
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "gram", "{out}");
    assert!(
        lines[1].contains(r#"{"extensions":["gram"],"hierarchy":"/usr""#),
        "{out}"
    );
    assert!(
        lines[2].starts_with("/opt      -") && lines[3].starts_with("/usr      gram "),
        "{out}"
    );
    assert!(lines[4].contains(r#""extensions":[]"#), "{out}");
    assert_eq!(lines[5], "GONE", "{out}");
    // Usage errors of the verbs exit 1 with one line, as systemd-sysext's do; an unknown
    // command of ours is a usage error of ours (2).
    for bad in [
        &["--noexec=maybe", "status"][..],
        &["--root"],
        &["status", "merge"],
        &["merge", "--noexec"],
    ] {
        let args: Vec<&str> = bad.to_vec();
        cli(args).fails_with(1, "");
    }
    cli(["frobnicate", "--root=/x"]).fails_with(2, "");
}

/// `refresh` does nothing when the `origin` meta shows the same extensions from the same
/// files (unless `--always-refresh=yes`) and refreshes when one changes; an extension asking
/// for it (`EXTENSION_RELOAD_MANAGER=1`) gets the service manager reloaded after merge and
/// unmerge when one runs — not with `--no-reload` — with a stand-in `systemctl` that counts.
#[test]
fn refresh_follows_origin_and_reload_manager_runs() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_ext(dir.path(), "one");
    let r = s(&root);
    let out = in_namespace(&format!(
        "{BIN} merge --root {r} >/dev/null
         {BIN} refresh --root {r} --json=short 2>&1
         echo ORIGIN-BEFORE; grep -c '\"path\"' {r}/usr/.systemd-sysext/origin
         mkdir -p {r}/var/lib/extensions/two/usr/bin {r}/var/lib/extensions/two/usr/lib/extension-release.d
         echo ID=_any > {r}/var/lib/extensions/two/usr/lib/extension-release.d/extension-release.two
         {BIN} refresh --root {r} 2>&1
         cat {r}/usr/.systemd-sysext/extensions
         {BIN} refresh --root {r} --always-refresh=yes 2>&1
         {BIN} unmerge --root {r} >/dev/null"
    ));
    let skipped = "Skipping extension refresh because no change was found";
    let first = out.find(skipped).expect(&out);
    let after = &out[first + skipped.len()..];
    assert!(after.contains("ORIGIN-BEFORE\n1\n"), "{out}");
    assert!(
        after.contains("Merged extensions into /usr.\none\ntwo\n"),
        "{out}"
    );
    assert!(!after.contains(skipped), "always-refresh skipped:\n{out}");

    // The reload: merging onto this namespace's own /usr (read-only overlay, private).
    let ids = host_ids();
    let ext = dir.path().join("reloader");
    fs::create_dir_all(ext.join("usr/lib/extension-release.d")).unwrap();
    fs::create_dir_all(ext.join("usr/share/reloader")).unwrap();
    fs::write(
        ext.join("usr/lib/extension-release.d/extension-release.reloader"),
        format!("{ids}EXTENSION_RELOAD_MANAGER=1\n"),
    )
    .unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let systemctl = bin.join("systemctl");
    fs::write(&systemctl, "#!/bin/sh\necho \"$*\" >> /run/reloads\n").unwrap();
    fs::set_permissions(
        &systemctl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = in_namespace(&format!(
        "export PATH={b}:$PATH
         mkdir -p /run/extensions /run/systemd/system && cp -a {e} /run/extensions/reloader
         {BIN} merge >/dev/null 2>&1
         {BIN} unmerge >/dev/null 2>&1
         echo RELOADS: $(cat /run/reloads)
         {BIN} merge --no-reload >/dev/null 2>&1
         {BIN} unmerge --no-reload >/dev/null 2>&1
         echo RELOADS: $(cat /run/reloads)",
        b = bin.display(),
        e = ext.display()
    ));
    assert!(
        out.contains(
            "RELOADS: daemon-reload daemon-reload\nRELOADS: daemon-reload daemon-reload\n"
        ),
        "{out}"
    );
}
