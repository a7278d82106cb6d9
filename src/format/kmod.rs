//! Kernel module metadata in `/lib/modules/<kver>`: `modules.dep`, `modules.softdep`,
//! `modules.alias` and `modules.builtin` parsing, and the load-order closure of a set of modules.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

/// The modules every initrd-sysext initrd needs (where they are modules, not built in).
pub const DEFAULT_MODULES: [&str; 6] = [
    "loop",
    "dm_mod",
    "dm_verity",
    "overlay",
    "erofs",
    "squashfs",
];

#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: {reason}")]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("module {name:?} is neither in {dir}/modules.dep nor built in")]
    Missing { name: String, dir: PathBuf },
}

/// A module name as the kernel knows it: `-` and `_` are the same; no directory or suffix.
pub fn normalize(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let base = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|s| base.strip_suffix(s))
        .unwrap_or(base);
    base.replace('-', "_")
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Module {
    /// Path relative to the modules directory, e.g. `kernel/drivers/md/dm-verity.ko.xz`.
    pub path: String,
    /// Hard dependencies in `modules.dep` order.
    pub deps: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ModuleDb {
    pub dir: PathBuf,
    pub modules: BTreeMap<String, Module>,
    /// name -> (pre, post) soft dependencies.
    pub softdeps: BTreeMap<String, (Vec<String>, Vec<String>)>,
    pub builtin: BTreeSet<String>,
    /// Exact (wildcard-free) aliases -> modules, e.g. `crc32c` -> `crc32c_intel`,
    /// `crc32c_generic` (as modprobe, boot mode tries each until one loads).
    pub aliases: BTreeMap<String, Vec<String>>,
}

fn read_opt(path: &Path) -> Result<String, KmodError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(KmodError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

impl ModuleDb {
    /// Reads `modules.dep` (required), `modules.softdep` and `modules.builtin` from `dir`.
    pub fn load(dir: &Path) -> Result<ModuleDb, KmodError> {
        let dep_path = dir.join("modules.dep");
        let dep = std::fs::read_to_string(&dep_path).map_err(|source| KmodError::Io {
            path: dep_path.clone(),
            source,
        })?;
        let softdep = read_opt(&dir.join("modules.softdep"))?;
        let alias = read_opt(&dir.join("modules.alias"))?;
        let builtin = read_opt(&dir.join("modules.builtin"))?;
        Self::parse(dir, &dep, &softdep, &alias, &builtin)
    }

    /// The database from the texts of `modules.dep`, `.softdep`, `.alias` and `.builtin` of
    /// `dir` (named in errors): what [`ModuleDb::load`] does once the files are read.
    pub fn parse(
        dir: &Path,
        dep: &str,
        softdep: &str,
        alias: &str,
        builtin: &str,
    ) -> Result<ModuleDb, KmodError> {
        let mut db = ModuleDb {
            dir: dir.to_owned(),
            ..ModuleDb::default()
        };
        db.parse_dep(&dir.join("modules.dep"), dep)?;
        db.parse_softdep(softdep);
        db.parse_alias(alias);
        db.builtin = builtin
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(normalize)
            .collect();
        Ok(db)
    }

    fn parse_dep(&mut self, path: &Path, text: &str) -> Result<(), KmodError> {
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let (module, deps) = line.split_once(':').ok_or(KmodError::Syntax {
                path: path.to_owned(),
                line: i + 1,
                reason: "expected 'module: deps'",
            })?;
            let module = module.trim();
            self.modules.insert(
                normalize(module),
                Module {
                    path: module.to_owned(),
                    deps: deps.split_whitespace().map(normalize).collect(),
                },
            );
        }
        Ok(())
    }

    /// `softdep NAME pre: A B post: C` lines; other lines are ignored.
    fn parse_softdep(&mut self, text: &str) {
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(name) = words.next() else { continue };
            let entry = self.softdeps.entry(normalize(name)).or_default();
            let mut post = false;
            for w in words {
                match w {
                    "pre:" => post = false,
                    "post:" => post = true,
                    m if post => entry.1.push(normalize(m)),
                    m => entry.0.push(normalize(m)),
                }
            }
        }
    }

    /// `alias NAME MODULE` lines without wildcards.
    fn parse_alias(&mut self, text: &str) {
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(alias), Some(module)) = (w.next(), w.next(), w.next()) {
                if !alias.contains(['*', '?', '[']) {
                    let targets = self.aliases.entry(normalize(alias)).or_default();
                    targets.push(normalize(module));
                }
            }
        }
    }

    /// The loadable modules a name or alias stands for.
    fn resolve<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        if self.modules.contains_key(name) {
            return vec![name];
        }
        let targets = self.aliases.get(name).into_iter().flatten();
        targets
            .map(String::as_str)
            .filter(|m| self.modules.contains_key(*m))
            .collect()
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The modules to load for `names`, each after its dependencies (soft `pre:` first, hard
    /// dependencies in the order modprobe loads them, `post:` after). Built-in names are
    /// skipped; an unknown name is an error when `required`, else skipped.
    pub fn closure(&self, names: &[&str], required: bool) -> Result<Vec<String>, KmodError> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for name in names {
            let n = normalize(name);
            let found = self.resolve(&n);
            for m in &found {
                self.visit(m, &mut seen, &mut order);
            }
            if found.is_empty() && required && !self.is_builtin(&n) {
                return Err(KmodError::Missing {
                    name: name.to_string(),
                    dir: self.dir.clone(),
                });
            }
        }
        Ok(order)
    }

    fn visit(&self, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        let Some(m) = self.modules.get(name) else {
            // An alias (soft dependencies name them): each module behind it; built in or absent: none.
            for target in self.resolve(name) {
                self.visit(target, seen, order);
            }
            return;
        };
        if !seen.insert(name.to_owned()) {
            return;
        }
        let (pre, post) = self.softdeps.get(name).cloned().unwrap_or_default();
        for d in pre.iter().chain(m.deps.iter().rev()) {
            self.visit(d, seen, order);
        }
        order.push(name.to_owned());
        for d in &post {
            self.visit(d, seen, order);
        }
    }

    /// `modules.dep` text for exactly `names`.
    pub fn render_dep(&self, names: &[String]) -> String {
        let path = |n: &String| self.modules.get(n).map(|m| m.path.as_str()).unwrap_or("");
        names
            .iter()
            .filter_map(|n| self.modules.get(n).map(|m| (n, m)))
            .map(|(n, m)| {
                let deps: Vec<&str> = m.deps.iter().map(path).filter(|p| !p.is_empty()).collect();
                format!("{}: {}\n", path(n), deps.join(" ")).replace(": \n", ":\n")
            })
            .collect()
    }

    /// `modules.softdep` text for the shipped `names`.
    pub fn render_softdep(&self, names: &[String]) -> String {
        names
            .iter()
            .filter_map(|n| self.softdeps.get(n).map(|(pre, post)| (n, pre, post)))
            .map(|(n, pre, post)| {
                let mut line = format!("softdep {n}");
                if !pre.is_empty() {
                    line += &format!(" pre: {}", pre.join(" "));
                }
                if !post.is_empty() {
                    line += &format!(" post: {}", post.join(" "));
                }
                line + "\n"
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> ModuleDb {
        let mut db = ModuleDb::default();
        let dep = "kernel/drivers/md/dm-verity.ko.xz: kernel/drivers/md/dm-bufio.ko.xz kernel/drivers/md/dm-mod.ko.xz kernel/lib/reed_solomon/reed_solomon.ko.xz\n\
                   kernel/drivers/md/dm-mod.ko.xz:\n\
                   kernel/drivers/md/dm-bufio.ko.xz:\n\
                   kernel/lib/reed_solomon/reed_solomon.ko.xz:\n\
                   kernel/lib/libcrc32c.ko.xz:\n\
                   kernel/crypto/crc32c_generic.ko.xz:\n";
        db.parse_dep(Path::new("modules.dep"), dep).unwrap();
        db.parse_softdep("# comment\nsoftdep libcrc32c pre: crc32c\n");
        db.parse_alias(
            "alias crc32c crc32c_generic\nalias crc32c crc32c_intel\nalias pci:v*d* dm_mod\n",
        );
        db.builtin = ["loop".to_owned()].into();
        db
    }

    #[test]
    fn closure_orders_dependencies_first() {
        let d = db();
        let order = d.closure(&["dm-verity", "loop"], true).unwrap();
        assert_eq!(order, ["reed_solomon", "dm_mod", "dm_bufio", "dm_verity"]);
        assert_eq!(
            d.closure(&["libcrc32c"], true).unwrap(),
            ["crc32c_generic", "libcrc32c"]
        );
        assert!(matches!(
            d.closure(&["nope"], true),
            Err(KmodError::Missing { .. })
        ));
        assert!(d.closure(&["nope"], false).unwrap().is_empty());
    }

    #[test]
    fn renders_subset() {
        let d = db();
        let order = d.closure(&["dm_verity"], true).unwrap();
        let dep = d.render_dep(&order);
        assert!(dep.contains("kernel/drivers/md/dm-mod.ko.xz:\n"));
        assert!(dep.contains(
            "dm-verity.ko.xz: kernel/drivers/md/dm-bufio.ko.xz kernel/drivers/md/dm-mod.ko.xz"
        ));
        assert!(!dep.contains("libcrc32c"));
        assert_eq!(
            d.render_softdep(&["libcrc32c".into()]),
            "softdep libcrc32c pre: crc32c\n"
        );
        assert_eq!(normalize("kernel/fs/overlayfs/overlay.ko.zst"), "overlay");
    }
}
