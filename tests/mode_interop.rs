//! Unmerge interop in every mode: what we merge (sysext and confext, each `--mutable` mode)
//! systemd-sysext/systemd-confext 262 (Debian sid's, scripts/fetch-systemd-sid) recognise and
//! unmerge, and what they merge we recognise and unmerge — writes landing where the mode says,
//! work directories removed, nothing left mounted. Debian 12's systemd-sysext (252, no
//! `--mutable`) the same way for read-only merges. Host merges in private mount namespaces.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// sid's unpacked systemd (fetched once, cached).
fn systemd_sid() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fetch-systemd-sid");
    let out = Command::new(script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", stderr(&out));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The shell functions the cases use: `mkroot`, `merge TOOL`, `unmerge TOOL`, `check`.
fn prelude(sid: &Path, class: &str) -> String {
    let (hier, dir, rel) = match class {
        "sysext" => ("usr", "var/lib/extensions", "usr/lib/extension-release.d"),
        _ => ("etc", "run/confexts", "etc/extension-release.d"),
    };
    let tool = |bin: &str| {
        format!(
            "LD_LIBRARY_PATH={lib} {bin}",
            lib = sid.join("usr/lib/x86_64-linux-gnu/systemd").display(),
            bin = sid.join("usr/bin").join(bin).display()
        )
    };
    format!(
        r#"
mount --make-rshared /
mount -t tmpfs tmpfs /run
R=$(mktemp -d)
H={hier}
M=var/lib/extensions.mutable
ours() {{ {BIN} {class} --root=$R "$@"; }}
sid() {{ {sid} --root=$R "$@"; }}
old() {{ /usr/bin/systemd-sysext --root=$R "$@"; }}
mkroot() {{
  rm -rf $R/*; mkdir -p $R/usr/lib $R/etc $R/opt/keep $R/{dir}/ext/{rel} $R/{dir}/ext/$H/sub
  printf 'ID=debian\nVERSION_ID=12\n' > $R/usr/lib/os-release
  echo host > $R/$H/hostfile
  echo ID=_any > $R/{dir}/ext/{rel}/extension-release.ext
  echo ext > $R/{dir}/ext/$H/sub/extfile
  mkdir -p $R/$M/$H
  [ "$1" = with-dir ] && echo imported > $R/$M/$H/imported
  [ "$1" = with-dir ] || rm -rf $R/$M
}}
# One line of what is there: merged, the extension's file, the host's, a write, the import.
state() {{
  m=0; grep -q " $R/$H " /proc/self/mountinfo && m=1
  e=0; [ -e $R/$H/sub/extfile ] && e=1
  h=0; [ -e $R/$H/hostfile ] && h=1
  w=0; touch $R/$H/written 2>/dev/null && w=1
  i=0; [ -e $R/$H/imported ] && i=1
  echo "mounted=$m ext=$e host=$h writable=$w imported=$i"
}}
"#,
        sid = tool(&format!("systemd-{class}")),
    )
}

/// Runs `body` after the prelude in a private mount namespace.
fn run(sid: &Path, class: &str, body: &str) -> String {
    let script = prelude(sid, class) + body;
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    text
}

/// What a merge in `mode` looks like (with the mutable directory when `with_dir`).
fn expected(mode: &str, with_dir: bool) -> String {
    let writable = match mode {
        "yes" | "ephemeral" | "ephemeral-import" => 1,
        "auto" => with_dir as u8,
        _ => 0,
    };
    // The mutable directory's contents show as the upper layer or an imported one.
    let shown = ["yes", "auto", "import", "ephemeral-import"].contains(&mode);
    let imported = (shown && with_dir) as u8;
    format!("mounted=1 ext=1 host=1 writable={writable} imported={imported}")
}

const MODES: [&str; 6] = [
    "no",
    "yes",
    "auto",
    "import",
    "ephemeral",
    "ephemeral-import",
];

fn every_mode_both_ways(class: &str) {
    if !is_root() {
        eprintln!("not root: mount namespaces need root; skipping");
        return;
    }
    let sid = systemd_sid();
    assert!(sid.join("usr/bin/systemd-sysext").exists(), "{sid:?}");
    let mut body = String::new();
    for mode in MODES {
        for with_dir in ["with-dir", "no-dir"] {
            for (a, b) in [("ours", "sid"), ("sid", "ours")] {
                body += &format!(
                    "mkroot {with_dir}
                     {a} --mutable={mode} merge >/dev/null 2>&1
                     echo \"CASE {mode} {with_dir} {a}->{b} merged: $(state)\"
                     {b} status --json=short | grep -q '\"ext\"' && echo \"CASE {mode} {with_dir} {a}->{b} status: listed\"
                     {b} unmerge >/dev/null 2>&1
                     echo \"CASE {mode} {with_dir} {a}->{b} unmerged: $(state) work=$(ls -A $R/$M 2>/dev/null | grep -c workdir)\"
                     echo \"CASE {mode} {with_dir} {a}->{b} kept: $(ls $R/$M/$H 2>/dev/null | tr '\\n' ' ')\"\n"
                );
            }
        }
    }
    let out = run(&sid, class, &body);
    for mode in MODES {
        for (with_dir, has) in [("with-dir", true), ("no-dir", false)] {
            for dir in ["ours->sid", "sid->ours"] {
                let case = format!("CASE {mode} {with_dir} {dir}");
                let line = |what: &str| {
                    out.lines()
                        .find(|l| l.starts_with(&format!("{case} {what}:")))
                        .unwrap_or_else(|| panic!("{case} {what}: missing\n{out}"))
                        .to_owned()
                };
                let merged = line("merged");
                assert!(
                    merged.ends_with(&expected(mode, has)),
                    "{merged}\nexpected {}\n{out}",
                    expected(mode, has)
                );
                line("status");
                let unmerged = line("unmerged");
                // Unmerged, the host's tree is back; a writable persistent merge's work
                // directory is gone.
                assert!(
                    unmerged.ends_with(": mounted=0 ext=0 host=1 writable=1 imported=0 work=0"),
                    "{unmerged}\n{out}"
                );
                // Writes to a persistent upper stay in the mutable directory; ephemeral
                // ones are gone.
                let kept = line("kept");
                let persisted = mode == "yes" || (mode == "auto" && has);
                assert_eq!(kept.contains("written"), persisted, "{kept}\n{out}");
            }
        }
    }
}

#[test]
fn sysext_every_mutable_mode_unmerges_both_ways_with_systemd_262() {
    every_mode_both_ways("sysext");
}

#[test]
fn confext_every_mutable_mode_unmerges_both_ways_with_systemd_262() {
    every_mode_both_ways("confext");
}

/// Debian 12's systemd-sysext (252) has no `--mutable`: read-only merges, both ways.
#[test]
fn read_only_merges_unmerge_both_ways_with_systemd_252() {
    if !is_root() || !test_support::require_tool("systemd-sysext") {
        return;
    }
    let sid = systemd_sid();
    let mut body = String::new();
    for (a, b) in [("ours", "old"), ("old", "ours")] {
        body += &format!(
            "mkroot no-dir
             {a} merge >/dev/null 2>&1
             echo \"CASE {a}->{b} merged: $(state)\"
             {b} unmerge >/dev/null 2>&1
             echo \"CASE {a}->{b} unmerged: $(state)\"\n"
        );
    }
    let out = run(&sid, "sysext", &body);
    for dir in ["ours->old", "old->ours"] {
        assert!(
            out.contains(&format!(
                "CASE {dir} merged: mounted=1 ext=1 host=1 writable=0 imported=0"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "CASE {dir} unmerged: mounted=0 ext=0 host=1 writable=1 imported=0"
            )),
            "{out}"
        );
    }
}
