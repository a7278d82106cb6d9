//! `--mutable=`: whether a merged hierarchy takes writes and where they go, as systemd-sysext
//! (≥ 256) decides it: a persistent upper directory under `/var/lib/extensions.mutable/<hier>`
//! (for confexts too: `/var/lib/extensions.mutable/etc`, as systemd 262 has it) with its work
//! directory beside it, an ephemeral one on a tmpfs, or that directory imported read-only as
//! a layer.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::format::release::Class;
use crate::runtime::discover::{chase, dir_inside, has_entries};

/// systemd's mutable modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mutable {
    /// Read-only (systemd's default).
    #[default]
    No,
    /// Writes go to the mutable directory, created when missing.
    Yes,
    /// Writable when the mutable directory exists, else read-only.
    Auto,
    /// The mutable directory, if any, is a read-only layer.
    Import,
    /// Writes go to a tmpfs and are gone after unmerge.
    Ephemeral,
    /// Import and ephemeral together.
    EphemeralImport,
}

impl Mutable {
    const NAMES: [(&'static str, Mutable); 6] = [
        ("no", Mutable::No),
        ("yes", Mutable::Yes),
        ("auto", Mutable::Auto),
        ("import", Mutable::Import),
        ("ephemeral", Mutable::Ephemeral),
        ("ephemeral-import", Mutable::EphemeralImport),
    ];

    /// A mode's name; booleans in every systemd spelling mean yes and no.
    pub fn from_name(s: &str) -> Option<Mutable> {
        match crate::format::unit::boolean(s) {
            Some(true) => Some(Mutable::Yes),
            Some(false) => Some(Mutable::No),
            None => Self::NAMES.iter().find(|(n, _)| *n == s).map(|(_, m)| *m),
        }
    }

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, m)| *m == self).unwrap().0
    }

    /// The mutable directory is a read-only lower layer.
    pub fn imports(self) -> bool {
        matches!(self, Mutable::Import | Mutable::EphemeralImport)
    }

    /// Writes always have an upper directory (created when missing).
    pub fn always_writable(self) -> bool {
        matches!(
            self,
            Mutable::Yes | Mutable::Ephemeral | Mutable::EphemeralImport
        )
    }

    /// The default: `SYSTEMD_SYSEXT_MUTABLE_MODE` (`SYSTEMD_CONFEXT_MUTABLE_MODE`), else no.
    pub fn default_for(class: Class) -> Mutable {
        let var = match class {
            Class::Sysext => "SYSTEMD_SYSEXT_MUTABLE_MODE",
            Class::Confext => "SYSTEMD_CONFEXT_MUTABLE_MODE",
        };
        std::env::var(var)
            .ok()
            .and_then(|v| Mutable::from_name(&v))
            .unwrap_or_default()
    }

    pub fn ephemeral(self) -> bool {
        matches!(self, Mutable::Ephemeral | Mutable::EphemeralImport)
    }
}

/// A hierarchy as one path component: `usr`, `opt`, `foo.bar` for `/foo/bar`.
pub fn component(h: &str) -> String {
    h.trim_matches('/').replace('/', ".")
}

/// The mutable directory of hierarchy `h`, relative to the root.
pub fn dir(h: &str) -> PathBuf {
    Path::new("var/lib/extensions.mutable").join(component(h))
}

/// Where writes to one hierarchy go.
#[derive(Debug, Default)]
pub struct Layers {
    /// The mutable directory imported as a read-only layer just below the meta layer.
    pub import: Option<PathBuf>,
    /// Upper and work directories (a persistent upper's work directory is recorded in the meta
    /// so that unmerge removes it).
    pub upper: Option<(PathBuf, PathBuf)>,
    /// The upper directory is the hierarchy itself: it is no lower layer then.
    pub upper_is_hierarchy: bool,
}

/// Whether a hierarchy no extension carries is merged in `mode`, as systemd does: where writes
/// have somewhere to go (an upper directory is or will be there), else where the host's is not
/// empty (an overlay needs two layers; systemd fails there).
pub fn merges_unused(root: &Path, h: &str, mode: Mutable) -> bool {
    let upper = || {
        mode.always_writable()
            || (mode == Mutable::Auto && chase(root, &dir(h)).is_some_and(|p| p.is_dir()))
    };
    let host = || chase(root, Path::new(h)).is_some_and(|p| has_entries(&p));
    mode != Mutable::No && (upper() || host())
}

/// The layers `mode` gives hierarchy `h` (at `target`) under `root`; `ephemeral` is a fresh
/// directory on a tmpfs for an ephemeral mode's upper and work directories. The upper
/// directory is the merged hierarchy's top directory, so it must have the hierarchy's mode
/// (one made here gets it; an existing one with another mode is refused, as systemd does).
pub fn layers(
    root: &Path,
    h: &str,
    target: &Path,
    mode: Mutable,
    ephemeral: &Path,
) -> Result<Layers, String> {
    let rel = dir(h);
    let host_mode = fs::metadata(target)
        .map(|m| m.mode() & 0o7777)
        .unwrap_or(0o755);
    if mode == Mutable::Yes && chase(root, &rel).is_none() {
        dir_inside(root, &rel)
            .and_then(|d| fs::set_permissions(&d, fs::Permissions::from_mode(host_mode)))
            .map_err(|e| format!("creating /{}: {e}", rel.display()))?;
    }
    let existing = match mode {
        Mutable::No | Mutable::Ephemeral => None,
        _ => chase(root, &rel).filter(|p| p.is_dir()),
    };
    let mut out = Layers::default();
    if mode.ephemeral() {
        out.upper = Some(on_tmpfs(ephemeral, h, host_mode)?);
    } else if let Some(upper) = existing.as_ref().filter(|_| !mode.imports()) {
        out.upper_is_hierarchy = same_inode(upper, target);
        if !out.upper_is_hierarchy {
            same_mode(upper, host_mode)?;
        }
        out.upper = Some(persistent(upper, h)?);
    }
    if mode.imports() {
        if existing.as_ref().is_some_and(|d| same_inode(d, target)) {
            return Err(format!(
                "/{}: it is /{h} itself, which cannot be imported below itself",
                rel.display()
            ));
        }
        out.import = existing;
    }
    Ok(out)
}

/// An existing upper directory must have the hierarchy's mode.
fn same_mode(upper: &Path, mode: u32) -> Result<(), String> {
    let has = fs::metadata(upper).map_err(|e| format!("{}: {e}", upper.display()))?;
    match has.mode() & 0o7777 {
        m if m == mode => Ok(()),
        m => Err(format!(
            "{} has mode {m:04o}, the hierarchy {mode:04o}: the upper directory is the merged \
             hierarchy's top directory, so it must have its mode",
            upper.display()
        )),
    }
}

/// An ephemeral upper directory (mode `mode`) and its work directory, in `tmpfs`.
fn on_tmpfs(tmpfs: &Path, h: &str, mode: u32) -> Result<(PathBuf, PathBuf), String> {
    let c = component(h);
    let (upper, work) = (tmpfs.join(&c), tmpfs.join(format!(".systemd-{c}-workdir")));
    for d in [&upper, &work] {
        fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    fs::set_permissions(&upper, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", upper.display()))?;
    Ok((upper, work))
}

/// A persistent upper directory and its work directory `.systemd-<hier>-workdir` beside it
/// (overlayfs wants both on one filesystem, and the upper writable).
fn persistent(upper: &Path, h: &str) -> Result<(PathBuf, PathBuf), String> {
    let stat = rustix::fs::statvfs(upper).map_err(|e| format!("{}: {e}", upper.display()))?;
    if stat.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Err(format!(
            "{}: read-only: it cannot take the writes to /{h}",
            upper.display()
        ));
    }
    let parent = upper.parent().unwrap_or(upper);
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    if dev(parent) != dev(upper) {
        return Err(format!(
            "{}: its parent is another filesystem, where overlayfs cannot keep its work directory",
            upper.display()
        ));
    }
    let work = parent.join(format!(".systemd-{}-workdir", component(h)));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&work)
        .map_err(|e| format!("creating {}: {e}", work.display()))?;
    Ok((upper.to_owned(), work))
}

fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_booleans() {
        assert_eq!(
            Mutable::from_name("ephemeral-import"),
            Some(Mutable::EphemeralImport)
        );
        assert_eq!(Mutable::from_name("on"), Some(Mutable::Yes));
        assert_eq!(Mutable::from_name("0"), Some(Mutable::No));
        assert_eq!(Mutable::from_name("sometimes"), None);
        assert_eq!(Mutable::Auto.name(), "auto");
        assert_eq!(dir("/etc"), Path::new("var/lib/extensions.mutable/etc"));
        assert_eq!(component("/foo/bar/"), "foo.bar");
    }

    #[test]
    fn layers_per_mode() {
        let d = tempfile::tempdir().unwrap();
        let (root, eph) = (d.path().join("root"), d.path().join("eph"));
        let usr = root.join("usr");
        fs::create_dir_all(&usr).unwrap();
        fs::set_permissions(&usr, fs::Permissions::from_mode(0o711)).unwrap();
        let get = |m| layers(&root, "usr", &usr, m, &eph).unwrap();
        // Without the mutable directory: auto and import change nothing.
        for m in [Mutable::No, Mutable::Auto, Mutable::Import] {
            let l = get(m);
            assert!(l.upper.is_none() && l.import.is_none(), "{m:?}");
        }
        let l = get(Mutable::Ephemeral);
        assert_eq!(l.upper.unwrap().0, eph.join("usr"));
        // yes creates it (with the hierarchy's mode) and the work directory beside it; auto
        // then uses it.
        let m = root.join("var/lib/extensions.mutable/usr");
        let work = root.join("var/lib/extensions.mutable/.systemd-usr-workdir");
        assert_eq!(get(Mutable::Yes).upper, Some((m.clone(), work.clone())));
        assert_eq!(fs::metadata(&m).unwrap().mode() & 0o777, 0o711);
        assert_eq!(get(Mutable::Auto).upper, Some((m.clone(), work)));
        let l = get(Mutable::Import);
        assert_eq!((l.import, l.upper), (Some(m.clone()), None));
        let l = get(Mutable::EphemeralImport);
        assert_eq!((l.import, l.upper.unwrap().0), (Some(m), eph.join("usr")));
    }
}
