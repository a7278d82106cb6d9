//! Kernel modules in an extension (`build sysext --module`): the closure of the named modules,
//! minus what the base already has, placed as in the kernel's modules directory under
//! `usr/lib/modules/<kver>`, and with `--firmware` the firmware they name under
//! `usr/lib/firmware`. No index files: they would shadow the base's in the overlay; boot mode
//! reads each new module's `.modinfo` instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use log::{info, warn};

use crate::format::elf::{self, ElfError};
use crate::format::kmod::{KmodError, ModuleDb};
use crate::tree::{Kind, Meta, Tree, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error(transparent)]
    Kmod(#[from] KmodError),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// The modules an extension carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modules {
    /// The kernel's modules directory (`/lib/modules/<kver>`).
    pub dir: PathBuf,
    pub kver: String,
    pub names: Vec<String>,
    /// `--firmware`: where the firmware files the modules name are taken from.
    pub firmware_dir: Option<PathBuf>,
}

/// The modules directory and kernel version from `--modules-dir` and `--kver`, each defaulting
/// from the other (`/lib/modules/<kver>`, the directory's name); None without either.
pub fn location(dir: Option<&Path>, kver: Option<&str>) -> Option<(PathBuf, String)> {
    let kver = match (dir, kver) {
        (_, Some(k)) => k.to_owned(),
        (Some(d), None) => d.file_name()?.to_string_lossy().into_owned(),
        (None, None) => return None,
    };
    let dir = dir.map_or_else(|| Path::new("/lib/modules").join(&kver), Path::to_owned);
    Some((dir, kver))
}

/// Where a base tree may keep modules and firmware (merged `/usr` or not).
const BASE_ROOTS: [&str; 2] = ["usr/lib", "lib"];

/// Adds the closure of `m.names` (built-in ones skipped, unknown ones an error) that `base`
/// lacks to `tree`, with their firmware when asked; returns the added modules.
pub fn add(
    tree: &mut Tree,
    m: &Modules,
    base: Option<&Path>,
    mtime: i64,
) -> Result<Vec<String>, ModulesError> {
    let db = ModuleDb::load(&m.dir)?;
    let names: Vec<&str> = m.names.iter().map(String::as_str).collect();
    let in_base = base.map(|b| base_modules(b, &m.kver)).unwrap_or_default();
    let (mut added, mut skipped, mut bytes) = (Vec::new(), Vec::new(), 0);
    let dir_meta = Meta::generated(0o755, mtime);
    for name in db.closure(&names, true)? {
        let rel = &db.modules[&name].path;
        let file = |root: &str| format!("{root}/modules/{}/{rel}", m.kver);
        if in_base.contains(&name) || base.is_some_and(|b| has(b, file)) {
            skipped.push(name);
            continue;
        }
        let src = m.dir.join(rel);
        let (kind, size) = Kind::host_file(&src)?;
        bytes += size;
        if let Some(fw) = &m.firmware_dir {
            let wanted = elf::read_modinfo(&src)?.firmware;
            firmware(tree, fw, &name, &wanted, base, &dir_meta)?;
        }
        let meta = Meta::generated(0o644, mtime);
        tree.insert(&file("usr/lib"), meta, kind, &dir_meta)?;
        added.push(name);
    }
    info!(
        "modules for {}: {} ({bytes} bytes); already in the base: {}",
        m.kver,
        added.join(" "),
        if skipped.is_empty() {
            "none".into()
        } else {
            skipped.join(" ")
        }
    );
    Ok(added)
}

/// Whether `base` has the file `path(root)` under one of [`BASE_ROOTS`].
fn has(base: &Path, path: impl Fn(&str) -> String) -> bool {
    BASE_ROOTS
        .iter()
        .any(|r| std::fs::symlink_metadata(base.join(path(r))).is_ok())
}

/// The modules the base's own `modules.dep` lists for `kver`.
fn base_modules(base: &Path, kver: &str) -> BTreeSet<String> {
    BASE_ROOTS
        .iter()
        .map(|r| base.join(r).join("modules").join(kver))
        .filter(|d| d.join("modules.dep").is_file())
        .filter_map(|d| ModuleDb::load(&d).ok())
        .flat_map(|db| db.modules.into_keys())
        .collect()
}

/// The firmware files `module` names, from `dir`, under `usr/lib/firmware` (as the kernel
/// looks them up: plain, `.zst` or `.xz`); missing ones and those the base has are left out.
fn firmware(
    tree: &mut Tree,
    dir: &Path,
    module: &str,
    names: &[String],
    base: Option<&Path>,
    dir_meta: &Meta,
) -> Result<(), ModulesError> {
    for name in names {
        if name.starts_with('/') || name.split('/').any(|c| c == "..") {
            warn!("module {module}: firmware name {name:?} leaves the firmware directory: skipped");
            continue;
        }
        let variants = ["", ".zst", ".xz"].map(|s| format!("{name}{s}"));
        let Some(found) = variants.iter().find(|f| dir.join(f).is_file()) else {
            warn!(
                "module {module}: firmware {name} is not in {}",
                dir.display()
            );
            continue;
        };
        if base.is_some_and(|b| has(b, |r| format!("{r}/firmware/{found}"))) {
            continue;
        }
        let (kind, _) = Kind::host_file(&dir.join(found))?;
        let path = format!("usr/lib/firmware/{found}");
        let meta = Meta::generated(0o644, dir_meta.mtime);
        tree.insert(&path, meta, kind, dir_meta)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_defaults_each_from_the_other() {
        let d = Path::new("/k/lib/modules/6.1.0-9-amd64");
        assert_eq!(
            location(Some(d), None),
            Some((d.to_owned(), "6.1.0-9-amd64".into()))
        );
        assert_eq!(
            location(None, Some("6.2")),
            Some((PathBuf::from("/lib/modules/6.2"), "6.2".into()))
        );
        assert_eq!(location(Some(d), Some("x")).unwrap().1, "x");
        assert_eq!(location(None, None), None);
    }
}
