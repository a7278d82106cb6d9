//! Differential tests against systemd itself: each case (a fake root, its extensions, command
//! lines) runs with our binary invoked as `systemd-sysext`, Debian 12's systemd-sysext (252)
//! and Debian sid's (262, from scripts/fetch-systemd-sid), each in a private mount namespace on
//! a fresh copy of the root. After every command the outcome is recorded — exit status, the
//! `--json` output field by field, the files visible in each hierarchy, its top directory's
//! mode and mount flags, the meta files — and ours must equal 262's except for the deviations
//! listed here (each with its reason, as in README); where 252 differs from 262 the run says so.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// A tool of systemd's family: its name, the hierarchies it merges, where an extension's
/// release file lives and the name of the meta directory in a merged hierarchy. A confext
/// case is the same table entry with a `Flavor` for systemd-confext (`etc`,
/// `etc/extension-release.d`, `.systemd-confext`).
struct Flavor {
    tool: &'static str,
    hierarchies: &'static [&'static str],
    release_dir: &'static str,
    meta: &'static str,
    /// Our `build` subcommand for its images.
    build: &'static str,
    /// Debian 12 (systemd 252) has the tool (systemd-confext came in 254).
    in_252: bool,
}

const SYSEXT: Flavor = Flavor {
    tool: "systemd-sysext",
    hierarchies: &["usr", "opt"],
    release_dir: "usr/lib/extension-release.d",
    meta: ".systemd-sysext",
    build: "sysext",
    in_252: true,
};

const CONFEXT: Flavor = Flavor {
    tool: "systemd-confext",
    hierarchies: &["etc"],
    release_dir: "etc/extension-release.d",
    meta: ".systemd-confext",
    build: "confext",
    in_252: false,
};

/// Every flavor the cases use (our binary is linked under each one's name).
const FLAVORS: &[&Flavor] = &[&SYSEXT, &CONFEXT];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Ours,
    Systemd252,
    Systemd262,
}

/// Where the tools are: our binary linked under each flavor's name, sid's unpacked systemd.
struct Tools {
    bin: tempfile::TempDir,
    sid: PathBuf,
}

impl Tools {
    /// Fails (never skips) when a reference is missing: CI fetches sid's systemd while the
    /// tests build (scripts/test); this waits on its lock.
    fn new() -> Tools {
        let sid = systemd_sid();
        for tool in [
            Path::new("/usr/bin/systemd-sysext"),
            &sid.join("usr/bin/systemd-sysext"),
        ] {
            assert!(tool.exists(), "{} is missing", tool.display());
        }
        let bin = tempfile::tempdir().unwrap();
        for flavor in FLAVORS {
            symlink(BIN, bin.path().join(flavor.tool)).unwrap();
        }
        Tools { bin, sid }
    }

    fn command(&self, tool: Tool, flavor: &Flavor) -> String {
        match tool {
            Tool::Ours => format!("{}/{}", self.bin.path().display(), flavor.tool),
            Tool::Systemd252 => format!("/usr/bin/{}", flavor.tool),
            Tool::Systemd262 => format!(
                "LD_LIBRARY_PATH={0}/usr/lib/x86_64-linux-gnu/systemd {0}/usr/bin/{1}",
                self.sid.display(),
                flavor.tool
            ),
        }
    }
}

/// A case's fake root while it is being set up (the template each tool gets a copy of).
struct Root<'a> {
    dir: PathBuf,
    scratch: PathBuf,
    flavor: &'a Flavor,
}

impl Root<'_> {
    fn file(&self, rel: &str, content: &str) {
        assert!(!rel.starts_with('/'), "{rel} would leave the root");
        let p = self.dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn link(&self, rel: &str, target: &str) {
        assert!(!rel.starts_with('/'), "{rel} would leave the root");
        let p = self.dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    fn mode(&self, rel: &str, mode: u32) {
        fs::set_permissions(self.dir.join(rel), fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A directory extension at `rel` named as its last component.
    fn ext(&self, rel: &str, release: &str) {
        self.ext_named(rel, rel.rsplit('/').next().unwrap(), release);
    }

    /// A directory extension at `rel` for extension `name`: a file in the first hierarchy
    /// named after `rel` (so the merged tree shows which entry won) and the release file
    /// (none when `release` is empty).
    fn ext_named(&self, rel: &str, name: &str, release: &str) {
        self.ext_payload(rel, rel);
        if !release.is_empty() {
            let r = format!("{rel}/{}/extension-release.{name}", self.flavor.release_dir);
            self.file(&r, release);
        }
    }

    /// The file `payload` shows up as, in the first hierarchy of the extension at `at`.
    fn ext_payload(&self, at: &str, payload: &str) {
        let file = payload.trim_start_matches('/').replace('/', "_");
        let h = self.flavor.hierarchies[0];
        self.file(format!("{at}/{h}/{file}").trim_start_matches('/'), "x");
    }

    /// An image at `rel` (unsigned, no verity) for extension `name`, built by ours from a
    /// tree as [`Root::ext_named`] makes it.
    fn image(&self, rel: &str, name: &str, release: &str) {
        let tree = self.scratch.join(rel.replace('/', "_"));
        let tree = Root {
            dir: tree,
            scratch: self.scratch.clone(),
            flavor: self.flavor,
        };
        tree.ext_payload("", rel);
        let r = format!("{}/extension-release.{name}", self.flavor.release_dir);
        tree.file(&r, release);
        let out = self.dir.join(rel);
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        let dir = s(&tree.dir);
        ours_ok(&[
            "build",
            self.flavor.build,
            "--tree",
            dir,
            "--name",
            name,
            "--id",
            "_any",
            "--scope",
            "system",
            "--verity",
            "off",
            "--output",
            s(&out),
        ]);
    }
}

/// One differential case.
struct Case {
    name: &'static str,
    flavor: &'static Flavor,
    /// The root's etc/os-release (none when empty).
    host: &'static str,
    setup: fn(&Root),
    /// Command lines after the tool's name, split at spaces, `{R}` standing for the root; a
    /// line starting with `sh ` is a shell command run as is between the tool's.
    steps: &'static [&'static str],
    /// Where ours still differs from 262: (a substring of each differing key, the reason).
    deviations: &'static [(&'static str, &'static str)],
}

const MERGE_REPORT: &str = "merge --json prints a report (merged, refused, hierarchies) for \
    scripts; systemd prints nothing on stdout";
const EMPTY_MASKS: &str = "an empty directory masks a name (SPEC §4): it is not listed, and \
    --force does not merge it; systemd lists it and refuses it for its missing release";
const ONE_BAD_EXTENSION: &str = "an extension holding usr/lib/os-release is refused alone and \
    the others still merge (a bad extension never blocks the others, SPEC); 262 fails the merge";

/// The outcome of one case with one tool: key (`#STEP COMMAND: FIELD`) to value.
type Outcome = BTreeMap<String, String>;

/// Runs `case` with `tool` on a copy of `template` under `work`.
fn run_case(case: &Case, tools: &Tools, tool: Tool, template: &Path, work: &Path) -> Outcome {
    let root = work.join("root");
    let out = work.join("out");
    fs::create_dir_all(&out).unwrap();
    run(Command::new("cp").arg("-a").arg(template).arg(&root));
    let (r, o) = (s(&root), s(&out));
    let cmd = tools.command(tool, case.flavor);
    let mut script = format!(
        "mount -t tmpfs tmpfs /run && mount --bind {r} {r} && mount --make-shared {r} || exit 1\n{}",
        snapshot_function(case.flavor, r, o)
    );
    for (i, step) in case.steps.iter().enumerate() {
        let line = step.replace("{R}", r);
        match line.strip_prefix("sh ") {
            Some(shell) => script += &format!("{shell}\n"),
            None => {
                let words: Vec<String> = line.split(' ').map(|w| format!("'{w}'")).collect();
                script += &format!(
                    "mkdir {o}/{i}; {cmd} {} >{o}/{i}/stdout 2>{o}/{i}/stderr; \
                     echo $? >{o}/{i}/rc; snap {i}\n",
                    words.join(" ")
                );
            }
        }
    }
    let script_file = work.join("script");
    fs::write(&script_file, script).unwrap();
    run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh"])
        .arg(&script_file));
    collect(case, &out, r)
}

/// The shell function `snap N`: writes the state of each hierarchy under `o/N` in few
/// processes — the mount table, each hierarchy's entries (the top one with its mode and
/// owner), its meta directory.
fn snapshot_function(flavor: &Flavor, r: &str, o: &str) -> String {
    let meta = flavor.meta;
    format!(
        "snap() {{\n s={o}/$1; cp /proc/self/mountinfo $s/mountinfo\n\
         for h in {}; do d={r}/$h\n\
         \x20 find $d -path $d/{meta} -prune -o -printf '%P(%y) %m %U:%G\\n' >$s/$h.files 2>/dev/null\n\
         \x20 cp -r $d/{meta} $s/$h.meta 2>/dev/null\n\
         done\n :\n}}\n",
        flavor.hierarchies.join(" ")
    )
}

/// A hierarchy's entries as `snap` listed them: (its top's mode and owner, the sorted
/// `path(type)` of everything below).
fn entries(listing: &str) -> (String, String) {
    let mut top = String::new();
    let mut below = Vec::new();
    for line in listing.lines() {
        let (entry, mode) = line.split_once(' ').unwrap_or((line, ""));
        match entry.starts_with('(') {
            true => top = mode.to_owned(),
            false => below.push(entry),
        }
    }
    below.sort();
    (top, below.join(" "))
}

/// The mount options of the last mount on `dir` in a mount table.
fn mount_options(mountinfo: &str, dir: &str) -> String {
    let on = |l: &&str| l.split(' ').nth(4) == Some(dir);
    let last = mountinfo.lines().rfind(on);
    last.and_then(|l| l.split(' ').nth(5))
        .unwrap_or("")
        .to_owned()
}

/// Reads what the script left under `out` into keys and values, the root's path as `{R}`.
fn collect(case: &Case, out: &Path, r: &str) -> Outcome {
    let mut outcome = Outcome::new();
    for (i, step) in case.steps.iter().enumerate() {
        let dir = out.join(i.to_string());
        if !dir.exists() {
            continue;
        }
        let read = |name: &str| {
            let text = fs::read_to_string(dir.join(name)).unwrap_or_default();
            text.replace(r, "{R}").trim().to_owned()
        };
        let mut put = |field: String, value: String| {
            outcome.insert(format!("#{i} {step}: {field}"), value);
        };
        put("rc".into(), read("rc"));
        if let Ok(mut v) = serde_json::from_str::<Value>(&read("stdout")) {
            name_times(&mut v, r);
            flatten(&v, "json".into(), &mut |k, v| put(k, v));
        }
        let mountinfo = fs::read_to_string(dir.join("mountinfo")).unwrap_or_default();
        for h in case.flavor.hierarchies {
            let (mode, files) = entries(&read(&format!("{h}.files")));
            put(format!("/{h} files"), files);
            put(format!("/{h} mode"), mode);
            let options = mount_options(&mountinfo, &format!("{r}/{h}"));
            put(format!("/{h} mount"), mount_flags(&options));
            for (file, value) in meta_files(&dir.join(format!("{h}.meta")), r) {
                put(format!("/{h} meta {file}"), value);
            }
        }
    }
    outcome
}

/// The meta directory's files: `extensions` as a list, device numbers as `<dev>`, other
/// files (`origin`: mount IDs and file handles) as `present`.
fn meta_files(dir: &Path, r: &str) -> Vec<(String, String)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, String)> = entries
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            let text = text.replace(r, "{R}");
            let devnum = text.trim().split_once(':').is_some_and(|(a, b)| {
                [a, b]
                    .iter()
                    .all(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            });
            let value = match name.as_str() {
                "extensions" | "confexts" => text.split_whitespace().collect::<Vec<_>>().join(" "),
                _ if devnum => "<dev>".into(),
                _ => "present".into(),
            };
            (name, value)
        })
        .collect();
    files.sort();
    files
}

/// The mount options that matter here (`-` when not a mount point).
fn mount_flags(options: &str) -> String {
    let kept: Vec<&str> = options
        .split(',')
        .filter(|o| ["ro", "rw", "nodev", "nosuid", "noexec"].contains(o))
        .collect();
    match kept.is_empty() {
        true => "-".into(),
        false => kept.join(","),
    }
}

/// `list`'s times name what they are (every tool has its own copy of the root, made at its own
/// time): `<birth>` or `<mtime>` of the entry at `path`, else the number.
fn name_times(v: &mut Value, r: &str) {
    let Some(entries) = v.as_array_mut() else {
        return;
    };
    for e in entries {
        let (Some(path), Some(time)) = (e["path"].as_str(), e["time"].as_i64()) else {
            continue;
        };
        let us = |t: std::io::Result<std::time::SystemTime>| {
            let since = t.ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
            Some(since.as_micros() as i64)
        };
        let md = fs::metadata(path.replace("{R}", r)).ok();
        let named = match md {
            Some(md) if us(md.created()) == Some(time) => "<birth>".into(),
            Some(md) if us(md.modified()) == Some(time) => "<mtime>".into(),
            _ => time.to_string(),
        };
        e["time"] = Value::String(named);
    }
}

/// JSON as one (path, value) per leaf: arrays of objects keyed by their `hierarchy` or `name`
/// (their order as `.order`), other arrays whole; `since` (when merged) as `<time>`.
fn flatten(v: &Value, at: String, put: &mut impl FnMut(String, String)) {
    let id = |x: &Value| {
        let o = x.as_object()?;
        o.get("hierarchy")
            .or(o.get("name"))?
            .as_str()
            .map(str::to_owned)
    };
    match v {
        Value::Array(a) if !a.is_empty() && a.iter().all(|x| id(x).is_some()) => {
            let ids: Vec<String> = a.iter().filter_map(id).collect();
            put(format!("{at}.order"), ids.join(" "));
            for (x, i) in a.iter().zip(ids) {
                flatten(x, format!("{at}[{i}]"), put);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                flatten(x, format!("{at}.{k}"), put);
            }
        }
        Value::Number(_) if at.ends_with(".since") => put(at, "<time>".into()),
        other => put(at, other.to_string()),
    }
}

/// Keys whose values differ between `a` and `b` (a key missing on one side differs).
fn differing<'a>(a: &'a Outcome, b: &'a Outcome) -> Vec<&'a str> {
    let mut keys: Vec<&str> = a.keys().chain(b.keys()).map(String::as_str).collect();
    keys.sort();
    keys.dedup();
    keys.retain(|k| a.get(*k) != b.get(*k));
    keys
}

fn show(o: &Outcome, key: &str) -> String {
    o.get(key).map_or("(none)".into(), |v| format!("{v:?}"))
}

/// Prints where 252 differs from 262 (what README's list of version differences rests on):
/// each differing field once, with its first step and the two values, shortened.
fn report_252(case: &Case, v262: &Outcome, v252: &Outcome) {
    let mut seen = std::collections::BTreeSet::new();
    let short = |s: String| match s.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    };
    for key in differing(v262, v252) {
        // One line per kind of field: `json[/usr].since` and `json[/opt].since` are one.
        let field = key.rsplit_once(": ").map_or(key, |(_, f)| f);
        let kind: String = field
            .split('[')
            .map(|p| p.split_once(']').map_or(p, |(_, rest)| rest))
            .collect();
        if seen.insert(kind) {
            eprintln!(
                "{}: 252 differs: {key}: 262 {} 252 {}",
                case.name,
                short(show(v262, key)),
                short(show(v252, key))
            );
        }
    }
}

/// Builds a case's template root: the host's os-release, a file in each hierarchy, the
/// search directories, then the case's own setup.
fn template(case: &Case, dir: &Path) -> PathBuf {
    let root = Root {
        dir: dir.join("template"),
        scratch: dir.join("scratch"),
        flavor: case.flavor,
    };
    if !case.host.is_empty() {
        root.file("etc/os-release", case.host);
    }
    for h in case.flavor.hierarchies {
        root.file(&format!("{h}/host-{h}"), "host");
    }
    (case.setup)(&root);
    root.dir
}

const DEBIAN: &str = "ID=debian\nVERSION_ID=12\n";
const UBUNTU: &str = "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=24.04\nSYSEXT_LEVEL=2\n";

fn one_ext(r: &Root) {
    r.ext("var/lib/extensions/a", DEBIAN);
}

fn matching(r: &Root) {
    for (name, release) in [
        ("idver", "ID=ubuntu\nVERSION_ID=24.04\n"),
        ("badver", "ID=ubuntu\nVERSION_ID=22.04\n"),
        ("level", "ID=ubuntu\nSYSEXT_LEVEL=2\n"),
        ("badlevel", "ID=ubuntu\nSYSEXT_LEVEL=3\n"),
        ("levelwins", "ID=ubuntu\nSYSEXT_LEVEL=2\nVERSION_ID=1\n"),
        ("like", "ID=debian\nSYSEXT_LEVEL=2\n"),
        ("noversion", "ID=ubuntu\n"),
        ("noid", "VERSION_ID=24.04\n"),
        ("badid", "ID=fedora\nVERSION_ID=24.04\n"),
        ("anyid", "ID=_any\n"),
        ("anyidver", "ID=_any\nVERSION_ID=1\n"),
        ("quoted", "ID=\"ubuntu\"\nVERSION_ID='24.04'\n"),
        (
            "comments",
            "# a comment\n\nID=ubuntu\nVERSION_ID=24.04\nFOO\n1A=x\n",
        ),
    ] {
        r.ext(&format!("var/lib/extensions/{name}"), release);
    }
}

fn architecture(r: &Root) {
    for (name, arch) in [
        ("native", "x86-64"),
        ("secondary", "x86"),
        ("other", "arm64"),
        ("any", "_any"),
        ("bogus", "foo"),
        ("empty", ""),
    ] {
        let release = format!("ID=_any\nARCHITECTURE={arch}\n");
        r.ext(&format!("var/lib/extensions/{name}"), &release);
    }
}

fn scope(r: &Root) {
    for (name, scope) in [
        ("initrd", "SYSEXT_SCOPE=initrd\n"),
        ("system", "SYSEXT_SCOPE=system\n"),
        ("portable", "SYSEXT_SCOPE=portable\n"),
        ("both", "SYSEXT_SCOPE=initrd system\n"),
        ("quotedboth", "SYSEXT_SCOPE=\"portable system\"\n"),
        ("unset", ""),
        ("bogus", "SYSEXT_SCOPE=bogus\n"),
    ] {
        let release = format!("ID=_any\n{scope}");
        r.ext(&format!("var/lib/extensions/{name}"), &release);
    }
}

fn initrd_root(r: &Root) {
    r.file("etc/initrd-release", "ID=debian\nVERSION_ID=12\n");
    scope(r);
    r.ext(".extra/sysext/early", "ID=_any\n");
}

fn usr_lib_os_release(r: &Root) {
    r.file("usr/lib/os-release", DEBIAN);
    r.ext("var/lib/extensions/a", DEBIAN);
}

fn os_release_links(r: &Root) {
    r.file("usr/lib/os-release", DEBIAN);
    r.link("etc/os-release", "/usr/lib/os-release");
    r.ext("var/lib/extensions/a", DEBIAN);
}

fn precedence(r: &Root) {
    for dir in ["etc", "run", "var/lib", "usr/lib", "usr/local/lib"] {
        r.ext(&format!("{dir}/extensions/everywhere"), DEBIAN);
        r.ext(
            &format!("{dir}/extensions/only-{}", dir.replace('/', "-")),
            DEBIAN,
        );
    }
    r.ext("run/extensions/p2", DEBIAN);
    r.ext("var/lib/extensions/p2", DEBIAN);
    r.image("etc/extensions/p3.raw", "p3", "ID=_any\n");
    r.ext("var/lib/extensions/p3", DEBIAN);
    r.ext("var/lib/extensions/.hidden", DEBIAN);
    r.ext("var/lib/extensions/bad@name", DEBIAN);
    r.file("var/lib/extensions/notes.txt", "not an extension");
    r.ext("srv/store/linked", DEBIAN);
    r.link("etc/extensions/linked", "/srv/store/linked");
    r.ext("srv/store/rel", DEBIAN);
    r.link("run/extensions/rel", "../../srv/store/rel");
    r.ext(".extra/sysext/early", DEBIAN);
}

fn masking(r: &Root) {
    for name in ["m1", "m2", "m3", "m4"] {
        r.ext(&format!("var/lib/extensions/{name}"), DEBIAN);
    }
    fs::create_dir_all(r.dir.join("etc/extensions/m1")).unwrap();
    r.link("etc/extensions/m2", "/dev/null");
    r.link("run/extensions/m3.raw", "/dev/null");
    fs::create_dir_all(r.dir.join("run/extensions/m4/usr")).unwrap();
    r.image("var/lib/extensions/m5.raw", "m5", DEBIAN);
    r.link("etc/extensions/m5.raw", "/dev/null");
}

fn no_release(r: &Root) {
    r.ext("var/lib/extensions/good", DEBIAN);
    r.ext("var/lib/extensions/none", "");
}

fn renamed_dir(r: &Root) {
    r.ext("var/lib/extensions/good", DEBIAN);
    r.ext_named("var/lib/extensions/renamed", "original", DEBIAN);
}

fn shipped_os_release(r: &Root) {
    r.ext("var/lib/extensions/good", DEBIAN);
    r.ext("var/lib/extensions/osrel", DEBIAN);
    r.file("var/lib/extensions/osrel/usr/lib/os-release", DEBIAN);
}

fn shipped_etc_os_release(r: &Root) {
    r.ext("var/lib/extensions/good", DEBIAN);
    r.ext("var/lib/extensions/etcosrel", DEBIAN);
    r.file("var/lib/extensions/etcosrel/etc/os-release", DEBIAN);
}

/// Extensions with one hierarchy each: the meta files list them all.
fn one_hierarchy_each(r: &Root) {
    r.ext("var/lib/extensions/usronly", DEBIAN);
    let rel = "var/lib/extensions/optonly/usr/lib/extension-release.d/extension-release.optonly";
    r.file(rel, DEBIAN);
    r.file("var/lib/extensions/optonly/opt/optonly/data", "x");
}

fn images(r: &Root) {
    r.image("var/lib/extensions/img.raw", "img", DEBIAN);
    r.image(
        "var/lib/extensions/imgbad.raw",
        "imgbad",
        "ID=fedora\nVERSION_ID=1\n",
    );
}

fn renamed_image(r: &Root) {
    r.image("var/lib/extensions/img.raw", "img", DEBIAN);
    r.image("var/lib/extensions/imgrenamed.raw", "imgorig", DEBIAN);
}

fn refresh(r: &Root) {
    r.ext("var/lib/extensions/a", DEBIAN);
    r.ext("stash/b", DEBIAN);
}

fn mutable(r: &Root) {
    r.ext("var/lib/extensions/a", DEBIAN);
    r.file("var/lib/extensions.mutable/usr/imported", "x");
}

fn mutable_refusals(r: &Root) {
    r.ext("var/lib/extensions/a", DEBIAN);
    r.file("var/lib/extensions.mutable/usr/old", "x");
    r.mode("var/lib/extensions.mutable/usr", 0o700);
    r.file("var/lib/extensions.mutable/opt/old", "x");
}

fn confexts(r: &Root) {
    r.ext("run/confexts/dir", DEBIAN);
    r.ext("var/lib/confexts/masked", DEBIAN);
    r.ext("usr/lib/confexts/masked", DEBIAN);
    r.ext("usr/local/lib/confexts/local", DEBIAN);
    r.image("var/lib/confexts/img.raw", "img", DEBIAN);
    r.ext("run/confexts/fedora", "ID=fedora\nVERSION_ID=40\n");
    r.ext("etc/extensions/notaconfext", DEBIAN);
}

fn confext_matching(r: &Root) {
    for (name, release) in [
        ("level", "ID=debian\nCONFEXT_LEVEL=3\n"),
        ("badlevel", "ID=debian\nCONFEXT_LEVEL=4\n"),
        ("sysextlevel", "ID=debian\nSYSEXT_LEVEL=9\n"),
        ("version", "ID=debian\nVERSION_ID=12\n"),
        (
            "initrdonly",
            "ID=debian\nCONFEXT_LEVEL=3\nCONFEXT_SCOPE=initrd\n",
        ),
        (
            "sysextscope",
            "ID=debian\nCONFEXT_LEVEL=3\nSYSEXT_SCOPE=initrd\n",
        ),
    ] {
        r.ext(&format!("run/confexts/{name}"), release);
    }
}

fn one_confext(r: &Root) {
    r.ext("run/confexts/a", DEBIAN);
}

fn vpick(r: &Root) {
    for v in ["1", "2", "10", "3+0"] {
        r.ext_named(&format!("var/lib/extensions/v.v/v_{v}"), "v", DEBIAN);
    }
    for v in ["1.1", "1.2_x86-64", "9_arm64", "1.10+0-3", "1.3+1"] {
        r.image(
            &format!("var/lib/extensions/img.raw.v/img_{v}.raw"),
            "img",
            DEBIAN,
        );
    }
    r.ext_named("etc/extensions/w.v/w_1", "w", DEBIAN);
    r.ext("var/lib/extensions/w", DEBIAN);
}

fn modes(r: &Root) {
    r.ext("var/lib/extensions/a", DEBIAN);
    r.file("var/lib/extensions/a/opt/a", "x");
    r.mode("usr", 0o711);
    r.mode("opt", 0o750);
    std::os::unix::fs::chown(r.dir.join("opt"), Some(1000), Some(1001)).unwrap();
    r.mode("var/lib/extensions/a/usr", 0o700);
}

fn no_opt(r: &Root) {
    fs::remove_dir_all(r.dir.join("opt")).unwrap();
    r.ext("var/lib/extensions/a", DEBIAN);
    r.file("var/lib/extensions/a/opt/a", "x");
}

const MERGE_AND_LOOK: &[&str] = &[
    "list --root={R} --json=short",
    "merge --root={R}",
    "status --root={R} --json=short",
    "unmerge --root={R}",
    "merge --root={R} --force",
    "status --root={R} --json=short",
];

const CASES: &[Case] = &[
    Case {
        name: "grammar: default verb, options before and after it",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: one_ext,
        steps: &[
            "--root={R} --json=short",
            "--json short list --root {R}",
            "merge --root {R}",
            "--root={R} --json=short status",
            "--json=pretty --root {R}",
            "unmerge --root={R}",
            "--root={R} --json=short",
            "merge --root={R} --json=short",
        ],
        deviations: &[("merge --root={R} --json=short: json", MERGE_REPORT)],
    },
    Case {
        name: "grammar: booleans",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: one_ext,
        steps: &[
            "merge --root={R} --noexec=yes",
            "unmerge --root={R}",
            "merge --root={R} --noexec=1",
            "unmerge --root={R}",
            "merge --root={R} --noexec on",
            "unmerge --root={R}",
            "--noexec=true --root={R} merge",
            "unmerge --root={R}",
            "merge --root={R} --noexec=no",
            "unmerge --root={R}",
            "merge --root={R} --noexec false",
            "unmerge --root={R}",
            "merge --root={R} --noexec=0",
            "unmerge --root={R}",
            "merge --root={R} --noexec=off",
            "unmerge --root={R}",
            "--root={R} --noexec merge",
            "--root={R} merge --noexec",
        ],
        deviations: &[],
    },
    Case {
        name: "grammar: usage errors and accepted options",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: one_ext,
        steps: &[
            "--frob --root={R}",
            "frobnicate --root={R}",
            "status merge --root={R}",
            "--root",
            "--force=yes --root={R}",
            "--json=bogus --root={R} list",
            "--noexec=maybe --root={R}",
            "--image-policy=foo --root={R}",
            "--root={R} --always-refresh",
            "--root={R} --always-refresh=yes",
            "-h",
            "--help",
            "--version",
            "--root={R} --no-pager --no-legend --no-reload merge",
            "--root={R} --no-pager --no-legend --json=short",
        ],
        deviations: &[],
    },
    Case {
        name: "matching: ID, ID_LIKE, VERSION_ID, SYSEXT_LEVEL",
        flavor: &SYSEXT,
        host: UBUNTU,
        setup: matching,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "matching: ARCHITECTURE",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: architecture,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "matching: SYSEXT_SCOPE",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: scope,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "matching: a root with etc/initrd-release",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: initrd_root,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "host release: usr/lib/os-release only",
        flavor: &SYSEXT,
        host: "",
        setup: usr_lib_os_release,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "host release: etc/os-release an absolute link",
        flavor: &SYSEXT,
        host: "",
        setup: os_release_links,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "discovery: search directories, precedence, links",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: precedence,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "discovery: masking",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: masking,
        steps: MERGE_AND_LOOK,
        deviations: &[
            ("json.order", EMPTY_MASKS),
            ("json[m1]", EMPTY_MASKS),
            ("/usr meta extensions", EMPTY_MASKS),
            ("json[/usr].extensions", EMPTY_MASKS),
        ],
    },
    Case {
        name: "release files: one missing",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: no_release,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "release files: a directory's named for another extension",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: renamed_dir,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "release files: usr/lib/os-release shipped",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: shipped_os_release,
        steps: MERGE_AND_LOOK,
        deviations: &[
            (": rc", ONE_BAD_EXTENSION),
            (": /usr ", ONE_BAD_EXTENSION),
            ("json[/usr]", ONE_BAD_EXTENSION),
        ],
    },
    Case {
        name: "release files: etc/os-release shipped",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: shipped_etc_os_release,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "meta files: extensions with one hierarchy each",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: one_hierarchy_each,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "images: compatible and not",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: images,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "images: a renamed image",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: renamed_image,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "verbs: merge twice, unmerge twice, refresh",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: refresh,
        steps: &[
            "unmerge --root={R}",
            "refresh --root={R}",
            "merge --root={R}",
            "merge --root={R}",
            "sh cp -a {R}/stash/b {R}/var/lib/extensions/b",
            "refresh --root={R}",
            "status --root={R} --json=short",
            "sh rm -r {R}/var/lib/extensions/a {R}/var/lib/extensions/b",
            "refresh --root={R}",
            "status --root={R} --json=short",
            "unmerge --root={R}",
            "unmerge --root={R}",
        ],
        deviations: &[],
    },
    Case {
        name: "versioned directories (NAME.v/, NAME.raw.v/)",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: vpick,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "the merged hierarchies' top directories",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: modes,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "a hierarchy the root lacks",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: no_opt,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "mutable modes: where writes go, flags, meta files",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: mutable,
        steps: MUTABLE_MODES,
        deviations: &[],
    },
    Case {
        name: "mutable: an upper of another mode, a mutable directory that is the hierarchy",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: mutable_refusals,
        steps: MUTABLE_REFUSALS,
        deviations: &[],
    },
    Case {
        name: "refresh: skipped while nothing changed, --always-refresh",
        flavor: &SYSEXT,
        host: DEBIAN,
        setup: refresh,
        steps: REFRESH_ORIGIN,
        deviations: &[],
    },
    Case {
        name: "confext: discovery, directories and images, merge and unmerge",
        flavor: &CONFEXT,
        host: DEBIAN,
        setup: confexts,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "confext: CONFEXT_SCOPE, CONFEXT_LEVEL",
        flavor: &CONFEXT,
        host: "ID=debian\nVERSION_ID=12\nCONFEXT_LEVEL=3\nSYSEXT_LEVEL=9\n",
        setup: confext_matching,
        steps: MERGE_AND_LOOK,
        deviations: &[],
    },
    Case {
        name: "confext: noexec by default, --noexec=no, mutable",
        flavor: &CONFEXT,
        host: DEBIAN,
        setup: one_confext,
        steps: CONFEXT_FLAGS,
        deviations: &[],
    },
];

const MUTABLE_MODES: &[&str] = &[
    "merge --root={R} --mutable=yes",
    "status --root={R} --json=short",
    "sh touch {R}/usr/written-yes",
    "unmerge --root={R}",
    "merge --root={R} --mutable=auto",
    "unmerge --root={R}",
    "merge --root={R} --mutable=import",
    "unmerge --root={R}",
    "merge --root={R} --mutable=ephemeral",
    "sh touch {R}/usr/written-ephemeral",
    "unmerge --root={R}",
    "merge --root={R} --mutable=ephemeral-import",
    "unmerge --root={R}",
    "merge --root={R} --mutable=no",
    "unmerge --root={R}",
];

const MUTABLE_REFUSALS: &[&str] = &[
    "merge --root={R} --mutable=yes",
    "status --root={R} --json=short",
    "unmerge --root={R}",
    "sh chmod 0755 {R}/var/lib/extensions.mutable/usr",
    "sh rm -r {R}/var/lib/extensions.mutable/opt",
    "sh ln -s ../../../opt {R}/var/lib/extensions.mutable/opt",
    "merge --root={R} --mutable=import",
    "status --root={R} --json=short",
    "unmerge --root={R}",
    "merge --root={R} --mutable=yes",
    "status --root={R} --json=short",
    "unmerge --root={R}",
];

const REFRESH_ORIGIN: &[&str] = &[
    "merge --root={R}",
    "refresh --root={R} --json=short",
    "sh mv {R}/stash/b {R}/var/lib/extensions/b",
    "refresh --root={R}",
    "status --root={R} --json=short",
    "refresh --root={R} --always-refresh=yes",
    "unmerge --root={R}",
];

const CONFEXT_FLAGS: &[&str] = &[
    "merge --root={R}",
    "unmerge --root={R}",
    "merge --root={R} --noexec=no",
    "unmerge --root={R}",
    "merge --root={R} --mutable=ephemeral",
    "unmerge --root={R}",
];

#[test]
fn sysext_and_confext_behave_as_systemd_262() {
    if !is_root() {
        eprintln!("not root: mount namespaces need root; skipping");
        return;
    }
    let tools = Tools::new();
    let mut failures = Vec::new();
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        let template = template(case, dir.path());
        let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
            let runs: Vec<_> = [Tool::Ours, Tool::Systemd262, Tool::Systemd252]
                .into_iter()
                .filter(|&t| t != Tool::Systemd252 || case.flavor.in_252)
                .map(|tool| {
                    let work = dir.path().join(format!("{tool:?}"));
                    let (tools, template) = (&tools, &template);
                    scope.spawn(move || run_case(case, tools, tool, template, &work))
                })
                .collect();
            runs.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let (ours, v262) = (&outcomes[0], &outcomes[1]);
        if let Some(v252) = outcomes.get(2) {
            report_252(case, v262, v252);
        }
        let mut case_used = vec![false; case.deviations.len()];
        for key in differing(ours, v262) {
            let listed = |list: &[(&str, &str)], used: &mut [bool]| {
                let hit = list.iter().position(|(k, _)| key.contains(k));
                hit.inspect(|&i| used[i] = true).is_some()
            };
            if !listed(case.deviations, &mut case_used) {
                failures.push(format!(
                    "{}: {key}: ours {} 262 {}",
                    case.name,
                    show(ours, key),
                    show(v262, key)
                ));
            }
        }
        for (i, (key, why)) in case.deviations.iter().enumerate() {
            if !case_used[i] {
                failures.push(format!(
                    "{}: listed deviation {key:?} ({why}) no longer shows: remove it",
                    case.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "ours differs from systemd 262:\n{}",
        failures.join("\n")
    );
}
