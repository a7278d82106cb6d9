//! The merge engine against hostile or unusual directory extensions, in private mount
//! namespaces over fake roots: release files that are FIFOs or devices, symlinks pointing out
//! of the extension, a thousand extensions, names with control characters, and a merge that
//! must leave nothing behind outside `--root`.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;

/// Runs `script` in a private mount namespace with a private tmpfs on /run.
fn in_namespace(script: &str) -> String {
    sh(&format!(
        "unshare -m --propagation private sh -ec 'mount -t tmpfs tmpfs /run\n{}'",
        script.replace('\'', "'\\''")
    ))
}

/// Our binary with `args`, killed after 20 s (a hang must fail the test, not block it):
/// a shell line printing the output and then `RC=<status>`.
fn bounded(args: &str) -> String {
    format!("timeout -s KILL 20 {BIN} {args} 2>&1 && echo RC=0 || echo RC=$?")
}

const RELEASE: &str = "ID=debian\nVERSION_ID=12\n";

/// A fake root with a host release and a base file in usr/bin.
fn fake_root(dir: &Path) -> PathBuf {
    let r = dir.join("root");
    for d in ["etc", "usr/bin", "opt", "var/lib/extensions"] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::write(r.join("etc/os-release"), RELEASE).unwrap();
    fs::write(r.join("usr/bin/base"), "base").unwrap();
    r
}

/// A directory extension `name` in root/var/lib/extensions with a file usr/bin/<tool>; its
/// path.
fn dir_ext(root: &Path, name: &str, tool: &str) -> PathBuf {
    let e = root.join("var/lib/extensions").join(name);
    fs::create_dir_all(e.join("usr/bin")).unwrap();
    fs::create_dir_all(e.join("usr/lib/extension-release.d")).unwrap();
    fs::write(e.join("usr/bin").join(tool), tool).unwrap();
    fs::write(release_path(&e, name), RELEASE).unwrap();
    e
}

fn release_path(ext: &Path, name: &str) -> PathBuf {
    ext.join(format!(
        "usr/lib/extension-release.d/extension-release.{name}"
    ))
}

fn require_root() -> bool {
    if !is_root() {
        eprintln!("not root: mount namespaces need root; skipping");
    }
    is_root()
}

/// The names in a `merge --json=short` report's `key` list.
fn names(report: &str, key: &str) -> Vec<String> {
    let line = report.lines().find(|l| l.starts_with('{')).unwrap_or("{}");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Item 3: a release file that is a FIFO used to block `merge` and `refresh` forever.
#[test]
fn fifo_release_file_is_refused_and_the_others_merge() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fake_root(dir.path());
    dir_ext(&root, "good", "good");
    let bad = dir_ext(&root, "fifo", "fifo");
    let release = release_path(&bad, "fifo");
    fs::remove_file(&release).unwrap();
    sh(&format!("mkfifo {}", s(&release)));
    let r = s(&root);
    let out = in_namespace(&format!(
        "{}
         cat {r}/usr/bin/good || true; echo
         {}
         cat {r}/usr/bin/good || true; echo
         {BIN} unmerge --root {r} >/dev/null",
        bounded(&format!("merge --root {r} --json=short")),
        bounded(&format!("refresh --root {r} --json=short")),
    ));
    assert!(!out.contains("RC=137"), "merge or refresh hung: {out}");
    assert_eq!(out.matches("RC=0").count(), 2, "{out}");
    assert_eq!(names(&out, "merged"), ["good"], "{out}");
    assert_eq!(names(&out, "refused"), ["fifo"], "{out}");
    assert!(out.contains("not a regular file"), "{out}");
    assert_eq!(out.matches("\ngood\n").count(), 2, "{out}");
}

/// Item 4: a release file that is a symlink to a character device (here /dev/zero inside the
/// extension, where the link resolves) is refused without being read.
#[test]
fn release_file_on_a_device_is_refused_unread() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fake_root(dir.path());
    dir_ext(&root, "good", "good");
    let bad = dir_ext(&root, "zero", "zero");
    let release = release_path(&bad, "zero");
    fs::remove_file(&release).unwrap();
    symlink("/dev/zero", &release).unwrap();
    fs::create_dir_all(bad.join("dev")).unwrap();
    sh(&format!("mknod {} c 1 5", s(&bad.join("dev/zero"))));
    let r = s(&root);
    let out = in_namespace(&format!(
        "{}
         {BIN} unmerge --root {r} >/dev/null",
        bounded(&format!("merge --root {r} --json=short")),
    ));
    assert!(out.contains("RC=0"), "{out}");
    assert_eq!(names(&out, "merged"), ["good"], "{out}");
    assert_eq!(names(&out, "refused"), ["zero"], "{out}");
    assert!(out.contains("not a regular file"), "{out}");
}

/// Item 5: absolute and `..` symlinks inside an extension resolve inside the extension, never
/// on the host: `opt -> /etc` brings no host content, a release file linked to
/// /etc/os-release is not the host's.
#[test]
fn symlinks_in_an_extension_resolve_inside_it() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fake_root(dir.path());
    // The host's os-release must be one the fake root accepts, or the test proves nothing.
    let host = fs::read_to_string("/etc/os-release").unwrap();
    fs::write(root.join("etc/os-release"), &host).unwrap();
    let ext_release: String = host
        .lines()
        .filter(|l| l.starts_with("ID=") || l.starts_with("VERSION_ID="))
        .map(|l| format!("{l}\n"))
        .collect();
    let ext = |name: &str| {
        let e = dir_ext(&root, name, name);
        fs::write(release_path(&e, name), &ext_release).unwrap();
        e
    };
    ext("good");
    // opt -> the host's /etc, absolute or through `..`: resolved inside the extension, which
    // has no etc, so these extensions bring no /opt at all.
    for (name, target) in [
        ("abs", "/etc"),
        ("dotdot", "../../../../../../../../../etc"),
    ] {
        symlink(target, ext(name).join("opt")).unwrap();
    }
    // The release file of "hostrel" points at the host's os-release: it must not be read.
    let release = release_path(&ext("hostrel"), "hostrel");
    fs::remove_file(&release).unwrap();
    symlink("/etc/os-release", &release).unwrap();
    // A symlinked entry pointing elsewhere inside the root is fine.
    let store = root.join("store/linked");
    fs::create_dir_all(store.join("usr/bin")).unwrap();
    fs::create_dir_all(store.join("usr/lib/extension-release.d")).unwrap();
    fs::write(store.join("usr/bin/linked"), "linked").unwrap();
    fs::write(release_path(&store, "linked"), &ext_release).unwrap();
    symlink("/store/linked", root.join("var/lib/extensions/linked")).unwrap();
    let r = s(&root);
    let out = in_namespace(&format!(
        "{}
         ls {r}/usr/bin | tr '\\n' ' '; echo
         echo OPT: $(ls {r}/opt)
         {BIN} unmerge --root {r} >/dev/null",
        bounded(&format!("merge --root {r} --json=short")),
    ));
    assert!(out.contains("RC=0"), "{out}");
    assert!(out.contains("abs base dotdot good linked \n"), "{out}");
    assert!(
        out.contains("\nOPT:\n"),
        "the host's /etc leaked into the root: {out}"
    );
    assert!(
        names(&out, "refused").contains(&"hostrel".to_owned()),
        "{out}"
    );
    assert!(
        !names(&out, "merged").contains(&"hostrel".to_owned()),
        "{out}"
    );
}

/// Item 6: a thousand extensions overflow one page of overlay options (and overlayfs's 500
/// lower layers): they all merge, `status` lists them all, `unmerge` leaves nothing.
#[test]
fn a_thousand_extensions_merge() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fake_root(dir.path());
    let n = 1000;
    for i in 0..n {
        let name = format!("extension-with-a-longish-name-{i:04}");
        dir_ext(&root, &name, &format!("tool{i:04}"));
    }
    let r = s(&root);
    let out = in_namespace(&format!(
        "mounts() {{ wc -l < /proc/self/mountinfo; }}
         before=$(mounts)
         {}
         ls {r}/usr/bin | grep -c '^tool' || true
         cat {r}/usr/bin/tool0000 {r}/usr/bin/tool0500 {r}/usr/bin/tool0999 {r}/usr/bin/base; echo
         {BIN} status --root {r} --json=short
         {BIN} unmerge --root {r} >/dev/null
         ls {r}/usr/bin | tr '\\n' ' '; echo
         echo MOUNTS $before $(mounts)",
        bounded(&format!("merge --root {r} --json=short")),
    ));
    assert!(out.contains("RC=0"), "{out}");
    assert_eq!(names(&out, "merged").len(), n, "{out}");
    assert!(out.contains(&format!("\n{n}\n")), "{out}");
    assert!(out.contains("tool0000tool0500tool0999base"), "{out}");
    let status = out
        .lines()
        .find(|l| l.starts_with("[{"))
        .unwrap_or_else(|| panic!("{out}"));
    let v: serde_json::Value = serde_json::from_str(status).unwrap();
    let usr = v
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hierarchy"] == "/usr")
        .unwrap();
    assert_eq!(usr["extensions"].as_array().unwrap().len(), n, "{status}");
    assert!(out.contains("\nbase \n"), "{out}");
    let mounts = out.lines().find(|l| l.starts_with("MOUNTS")).unwrap();
    let counts: Vec<&str> = mounts.split(' ').skip(1).collect();
    assert_eq!(counts[0], counts[1], "mounts left behind: {out}");
}

/// Item 7: `merge --root R` and `unmerge` leave the (namespace's) /run as they found it.
#[test]
fn merge_and_unmerge_leave_run_unchanged() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fake_root(dir.path());
    dir_ext(&root, "good", "good");
    let r = s(&root);
    let out = in_namespace(&format!(
        "mkdir -p /run/some/dir; echo x > /run/file
         listing() {{ find /run | sort | tr '\\n' ' '; }}
         before=$(listing)
         {BIN} merge --root {r} >/dev/null
         cat {r}/usr/bin/good; echo
         {BIN} unmerge --root {r} >/dev/null
         after=$(listing)
         echo \"BEFORE $before\"
         echo \"AFTER  $after\""
    ));
    assert!(out.contains("good\n"), "{out}");
    let line = |p: &str| {
        out.lines()
            .find(|l| l.starts_with(p))
            .unwrap()
            .split_at(6)
            .1
            .to_owned()
    };
    assert_eq!(line("BEFORE"), line("AFTER "), "{out}");
}

/// A name with a newline or another control character is skipped (with a warning naming the
/// entry): in the meta file "a\nb" would read as two extensions.
#[test]
fn names_with_control_characters_are_skipped() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fake_root(dir.path());
    dir_ext(&root, "good", "good");
    dir_ext(&root, "a\nb", "newline");
    dir_ext(&root, "tab\there", "tab");
    let r = s(&root);
    let out = in_namespace(&format!(
        "{}
         {BIN} status --root {r} --json=short
         {BIN} unmerge --root {r} >/dev/null",
        bounded(&format!("merge --root {r} --json=short")),
    ));
    assert!(out.contains("RC=0"), "{out}");
    assert_eq!(names(&out, "merged"), ["good"], "{out}");
    assert!(out.contains(r#""extensions":["good"]"#), "{out}");
    assert!(
        out.contains(r#"a\nb"#) && out.contains("invalid"),
        "no warning naming the entry: {out}"
    );
}

/// The hierarchy itself is resolved inside the root: `R/opt -> <a directory outside R>` gets
/// no overlay mounted on that directory (it resolves to R/<that path>, which is missing).
#[test]
fn hierarchy_symlinked_out_of_the_root_is_not_mounted_over() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fake_root(dir.path());
    let e = dir_ext(&root, "good", "good");
    fs::create_dir_all(e.join("opt/vendor")).unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::remove_dir(root.join("opt")).unwrap();
    symlink(&outside, root.join("opt")).unwrap();
    let (r, o) = (s(&root), s(&outside));
    let out = in_namespace(&format!(
        "{}
         grep -c ' {o} ' /proc/self/mountinfo || true
         ls {o} | tr '\\n' ' '; echo END
         {BIN} unmerge --root {r} >/dev/null",
        bounded(&format!("merge --root {r} --json=short")),
    ));
    assert!(
        out.contains("\n0\n"),
        "an overlay was mounted outside the root: {out}"
    );
    assert!(out.contains("\nEND"), "{out}");
    assert!(out.contains("good"), "{out}");
}

/// A merged hierarchy's meta files are read as regular files only: an unmerged root whose
/// usr/.systemd-sysext/dev is a FIFO does not stall `status` or `merge`.
#[test]
fn meta_file_fifo_does_not_stall_status_or_merge() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fake_root(dir.path());
    dir_ext(&root, "good", "good");
    fs::create_dir_all(root.join("usr/.systemd-sysext")).unwrap();
    sh(&format!("mkfifo {}/usr/.systemd-sysext/dev", s(&root)));
    let r = s(&root);
    let out = in_namespace(&format!(
        "{}
         {}
         {BIN} unmerge --root {r} >/dev/null",
        bounded(&format!("status --root {r} --json=short")),
        bounded(&format!("merge --root {r} --json=short")),
    ));
    assert!(!out.contains("RC=137"), "status or merge hung: {out}");
    assert_eq!(names(&out, "merged"), ["good"], "{out}");
}

/// A merge whose meta `work_dir` names something that is no work directory (empty once
/// unescaped, the root's /etc, a path out of the root): unmerge unmounts it and removes
/// nothing; a real one (`.systemd-usr-workdir`) is removed.
#[test]
fn unmerge_removes_only_a_real_work_directory() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = fake_root(dir.path());
    let r = s(&root);
    fs::create_dir_all(root.join("var/lib/extensions.mutable/.systemd-usr-workdir")).unwrap();
    // A merge as systemd lays it out: the meta layer on top, its dev written after the mount.
    let fake = |work_dir: &str| {
        format!(
            "rm -rf /run/m; mkdir -p /run/m/.systemd-sysext
             printf 'a\\n' > /run/m/.systemd-sysext/extensions
             printf '%s\\n' '{work_dir}' > /run/m/.systemd-sysext/work_dir
             mount -t overlay sysext -o ro,lowerdir=/run/m:{r}/usr {r}/usr
             echo $(stat -c %d {r}/usr) | awk '{{printf \"%d:%d\\n\", int($1/256), $1%256}}' > /run/m/.systemd-sysext/dev
             {BIN} unmerge --root {r} 2>&1
             grep -c ' {r}/usr ' /proc/self/mountinfo || true
             test -d {r}/etc && test -f {r}/etc/os-release && echo ETC-KEPT
             test -d {r} && echo ROOT-KEPT
             test -d {r}/var/lib/extensions.mutable/.systemd-usr-workdir && echo WORK-KEPT || echo WORK-GONE\n"
        )
    };
    let mut script = String::new();
    for w in ["", "\\n", "etc", "../../etc", "/etc"] {
        script += &fake(w);
    }
    script += &fake("var/lib/extensions.mutable/.systemd-usr-workdir");
    let out = in_namespace(&script);
    let runs: Vec<&str> = out.split("unmerged /usr").skip(1).collect();
    assert_eq!(runs.len(), 6, "{out}");
    for run in &runs[..5] {
        assert!(
            run.contains("ETC-KEPT") && run.contains("ROOT-KEPT"),
            "{out}"
        );
        assert!(run.contains("WORK-KEPT"), "{out}");
    }
    assert!(runs[5].contains("WORK-GONE"), "{out}");
    assert_eq!(
        out.matches("not removing the work directory").count(),
        5,
        "{out}"
    );
}
