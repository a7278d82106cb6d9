//! Finding extensions: the search directories in precedence order (first name wins, an empty
//! directory masks a name), entries resolved inside `--root`, versioned directories (`NAME.v/`)
//! resolved to their best entry, names ordered by version.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use log::warn;

use crate::format::gpt::Arch;
use crate::format::release::{image_name, image_name_is_valid, Class};
use crate::format::vpick::{self, vercmp};

/// The search directories of `class`, highest precedence first, relative to the root: in the
/// initrd systemd-stub's `/.extra` ones come last. Never a directory inside the hierarchy the
/// class merges (overlayfs refuses a lower layer inside its mount point).
pub fn dirs(class: Class, in_initrd: bool) -> Vec<&'static str> {
    let (dirs, initrd): (&[&str], &[&str]) = match class {
        Class::Sysext => (
            &["etc/extensions", "run/extensions", "var/lib/extensions"],
            &[".extra/sysext", ".extra/global_sysext"],
        ),
        Class::Confext if in_initrd => (
            &["run/confexts", "var/lib/confexts", "usr/local/lib/confexts"],
            &[".extra/confext", ".extra/global_confext"],
        ),
        Class::Confext => (
            &[
                "run/confexts",
                "var/lib/confexts",
                "usr/local/lib/confexts",
                "usr/lib/confexts",
            ],
            &[],
        ),
    };
    let mut all = dirs.to_vec();
    if in_initrd {
        all.extend(initrd);
    }
    all
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    Image,
    BlockDevice,
}

impl EntryKind {
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::Directory => "directory",
            EntryKind::Image => "raw",
            EntryKind::BlockDevice => "block",
        }
    }
}

/// One extension to consider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    /// The entry as found (e.g. `/etc/extensions/x.raw`).
    pub path: PathBuf,
    /// Where it really is, symlinks resolved inside the root.
    pub resolved: PathBuf,
    pub kind: EntryKind,
    /// When it was made, in µs, as systemd shows it: a directory's birth time (its mtime says
    /// nothing about the tree), else the mtime.
    pub time_us: i64,
    /// (device, inode, mtime in µs) of what was found: a changed or replaced entry differs.
    pub identity: (u64, u64, i64),
    /// A directory with subdirectories (link count above 2): certainly not empty.
    pub has_subdirs: bool,
}

/// The extensions of `class` under `root`, sorted by name in version order (lowest first).
pub fn discover(root: &Path, class: Class, in_initrd: bool) -> Vec<Found> {
    let mut seen = std::collections::BTreeSet::new();
    let mut found = Vec::new();
    for dir in dirs(class, in_initrd) {
        let Some(real) = chase(root, Path::new(dir)) else {
            continue;
        };
        let Ok(entries) = fs::read_dir(&real) else {
            continue;
        };
        // (name, is a symlink): only symlinks need resolving; the directory already is.
        let mut names: Vec<(String, bool)> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let link = e.file_type().ok()?.is_symlink();
                match e.file_name().into_string() {
                    Ok(name) => Some((name, link)),
                    Err(raw) => {
                        warn!(
                            "skipping {:?} in /{dir}: invalid extension name (not UTF-8)",
                            raw
                        );
                        None
                    }
                }
            })
            .collect();
        names.sort();
        for (file, link) in names {
            let rel = Path::new(dir).join(&file);
            let resolved = match link {
                true => chase(root, &rel),
                false => Some(real.join(&file)),
            };
            let entry = match vpick::versioned_dir(&file) {
                Some((name, suffix)) => resolved.and_then(|r| pick(root, &rel, &r, name, suffix)),
                None => resolved.and_then(|r| classify(root.join(&rel), &file, r)),
            };
            let Some(entry) = entry else {
                continue;
            };
            if !image_name_is_valid(&entry.name) {
                warn!(
                    "skipping {:?} in /{dir}: invalid extension name {:?}",
                    file, entry.name
                );
                continue;
            }
            // The first entry of a name wins; an empty directory masks the name.
            if seen.insert(entry.name.clone()) && !is_empty_dir(&entry) {
                found.push(entry);
            }
        }
    }
    found.sort_by(|a, b| vercmp(&a.name, &b.name));
    found
}

fn is_empty_dir(f: &Found) -> bool {
    f.kind == EntryKind::Directory && !f.has_subdirs && !has_entries(&f.resolved)
}

/// `dir` is a directory with something in it.
pub fn has_entries(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// An mtime in µs, as systemd shows times.
pub fn mtime_us(md: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    md.mtime() * 1_000_000 + md.mtime_nsec() / 1000
}

/// The best entry of the versioned directory `rel` (resolved at `dir`) named for extension
/// `name`, as systemd's vpick chooses it; None (and the name stays free for later
/// directories) when nothing fits or the chosen entry has the wrong type.
fn pick(root: &Path, rel: &Path, dir: &Path, name: &str, suffix: &str) -> Option<Found> {
    if !dir.is_dir() {
        return None;
    }
    let files: Vec<String> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let arches = vpick::local_architectures(Arch::host());
    let Some(best) = vpick::pick(files.iter().map(String::as_str), name, suffix, &arches) else {
        warn!(
            "skipping /{}: no entry for this architecture",
            rel.display()
        );
        return None;
    };
    let picked = rel.join(best.file);
    let mut found = classify(root.join(&picked), best.file, chase(root, &picked)?)?;
    let wanted = match suffix {
        ".raw" => [EntryKind::Image, EntryKind::BlockDevice].contains(&found.kind),
        _ => found.kind == EntryKind::Directory,
    };
    if !wanted {
        warn!("skipping /{}: wrong type", picked.display());
        return None;
    }
    found.name = name.to_owned();
    Some(found)
}

fn classify(path: PathBuf, file: &str, resolved: PathBuf) -> Option<Found> {
    let md = fs::metadata(&resolved).ok()?;
    let ft = md.file_type();
    let (kind, name) = if ft.is_dir() {
        (EntryKind::Directory, file.to_owned())
    } else if ft.is_file() && file.ends_with(".raw") {
        (EntryKind::Image, image_name(file).to_owned())
    } else if ft.is_block_device() {
        (EntryKind::BlockDevice, file.to_owned())
    } else {
        return None;
    };
    use std::os::unix::fs::MetadataExt;
    Some(Found {
        name,
        path,
        resolved,
        kind,
        time_us: match md.created() {
            Ok(born) if ft.is_dir() => born
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64),
            _ => mtime_us(&md),
        },
        identity: (md.dev(), md.ino(), mtime_us(&md)),
        has_subdirs: ft.is_dir() && md.nlink() > 2,
    })
}

/// `root/rel` with symlinks resolved inside `root` (an `R/opt -> /opt` is R's own /opt, never
/// the host's); created when missing (mode 0755), in the directory its parent resolves to.
pub fn dir_inside(root: &Path, rel: &Path) -> std::io::Result<PathBuf> {
    if let Some(target) = chase(root, rel) {
        return Ok(target);
    }
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(root.to_owned());
    };
    let target = dir_inside(root, parent)?.join(name);
    // Not create_dir_all: a dangling symlink (pointing nowhere inside the root) fails here.
    fs::create_dir(&target)?;
    Ok(target)
}

/// Resolves `rel` under `root`, following symlinks but never leaving `root` (absolute
/// targets are taken relative to it, `..` stops at it). None if a component is missing.
pub fn chase(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut todo: Vec<PathBuf> = vec![rel.to_owned()];
    let mut done = PathBuf::new();
    let mut hops = 0;
    while let Some(next) = todo.pop() {
        let mut comps: Vec<Component> = next.components().collect();
        comps.reverse();
        while let Some(c) = comps.pop() {
            match c {
                Component::RootDir => done = PathBuf::new(),
                Component::ParentDir => {
                    done.pop();
                }
                Component::Normal(n) => {
                    let candidate = done.join(n);
                    let full = root.join(&candidate);
                    let md = fs::symlink_metadata(&full).ok()?;
                    if md.file_type().is_symlink() {
                        hops += 1;
                        if hops > 40 {
                            return None;
                        }
                        let target = fs::read_link(&full).ok()?;
                        let rest: PathBuf = comps.iter().rev().collect();
                        todo.push(rest);
                        todo.push(target);
                        break;
                    }
                    done = candidate;
                }
                _ => {}
            }
        }
    }
    Some(root.join(done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn precedence_masking_and_chase() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in [
            "etc/extensions",
            "run/extensions",
            "var/lib/extensions",
            "store",
            ".extra/sysext",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::create_dir_all(r.join("run/extensions/tools/usr")).unwrap();
        fs::create_dir_all(r.join("var/lib/extensions/tools/usr")).unwrap();
        fs::write(r.join("var/lib/extensions/zz-1.2.raw"), b"x").unwrap();
        fs::write(r.join("var/lib/extensions/zz-1.10.raw"), b"x").unwrap();
        // An empty directory in /etc masks "masked" found lower down.
        fs::create_dir_all(r.join("etc/extensions/masked")).unwrap();
        fs::create_dir_all(r.join("var/lib/extensions/masked/usr")).unwrap();
        // An absolute symlink resolves inside the root, not on the host.
        fs::write(r.join("store/linked.raw"), b"x").unwrap();
        symlink("/store/linked.raw", r.join("etc/extensions/linked.raw")).unwrap();
        fs::write(r.join(".extra/sysext/early.raw"), b"x").unwrap();
        fs::write(r.join("etc/extensions/ignored.txt"), b"x").unwrap();
        let names = |v: &[Found]| v.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
        let found = discover(r, Class::Sysext, false);
        assert_eq!(names(&found), ["linked", "tools", "zz-1.2", "zz-1.10"]);
        assert_eq!(found[0].resolved, r.join("store/linked.raw"));
        assert_eq!(found[1].path, r.join("run/extensions/tools"));
        assert_eq!(found[1].kind, EntryKind::Directory);
        assert_eq!(
            names(&discover(r, Class::Sysext, true)),
            ["early", "linked", "tools", "zz-1.2", "zz-1.10"]
        );
        symlink("../../../../../etc", r.join("etc/extensions/escape")).unwrap();
        assert_eq!(
            chase(r, Path::new("etc/extensions/escape")),
            Some(r.join("etc"))
        );
    }

    #[test]
    fn confext_directories() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in [
            "run/confexts/a/etc",
            "usr/lib/confexts/b/etc",
            "etc/extensions/s/usr",
            ".extra/confext",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join(".extra/confext/c.confext.raw"), b"x").unwrap();
        let names = |v: Vec<Found>| v.into_iter().map(|f| f.name).collect::<Vec<_>>();
        assert_eq!(names(discover(r, Class::Confext, false)), ["a", "b"]);
        // In the initrd: not /usr/lib/confexts (the initrd's own /usr), but the stub's.
        assert_eq!(names(discover(r, Class::Confext, true)), ["a", "c"]);
        assert_eq!(names(discover(r, Class::Sysext, true)), ["s"]);
    }

    #[test]
    fn versioned_directories() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let arch = Arch::host().name();
        for f in [
            "etc/extensions/hello.raw.v/hello_1.raw",
            "etc/extensions/hello.raw.v/hello_3+0-3.raw",
            "etc/extensions/hello.raw.v/hello_2+1-2.raw",
            "etc/extensions/hello.raw.v/hello_9_s390x.raw",
            // Nothing for us here: the name stays free for the next directory.
            "etc/extensions/tool.raw.v/tool_5_s390x.raw",
            "var/lib/extensions/tool.raw",
        ] {
            fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            fs::write(r.join(f), b"x").unwrap();
        }
        fs::write(
            r.join(format!("etc/extensions/hello.raw.v/hello_2_{arch}.raw")),
            b"x",
        )
        .unwrap();
        fs::create_dir_all(r.join("run/extensions/dir.v/dir_0.9/usr")).unwrap();
        fs::create_dir_all(r.join("run/extensions/dir.v/dir_0.10/usr")).unwrap();
        let found = discover(r, Class::Sysext, false);
        let got: Vec<(&str, &Path)> = found
            .iter()
            .map(|f| (f.name.as_str(), f.path.strip_prefix(r).unwrap()))
            .collect();
        let native = format!("etc/extensions/hello.raw.v/hello_2_{arch}.raw");
        assert_eq!(
            got,
            [
                ("dir", Path::new("run/extensions/dir.v/dir_0.10")),
                ("hello", Path::new(&native)),
                ("tool", Path::new("var/lib/extensions/tool.raw")),
            ]
        );
        assert_eq!(found[0].kind, EntryKind::Directory);
    }
}
