//! Kernel module metadata in `/lib/modules/<kver>`: `modules.dep`, `modules.softdep`,
//! `modules.alias`, `modules.builtin` and `modules.builtin.modinfo` parsing, modules added at
//! boot, device modalias lookup, blacklists, and the load-order closure of a set of modules.

mod alias;

pub use alias::{fnmatch, AliasIndex};

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

/// The kernel's `modules.alias` lines for the modules an initrd does not ship, beside its
/// `modules.alias` (which has the shipped ones): read only to name the module a storage
/// device lacks, so that boot mode parses the big table only then.
pub const UNSHIPPED_ALIAS: &str = "initrd-sysext.unshipped.alias";

/// The index of `alias PATTERN MODULE` lines.
pub fn alias_index(text: &str) -> AliasIndex {
    let mut index = AliasIndex::default();
    add_aliases(&mut index, text);
    index
}

/// Adds `alias PATTERN MODULE` lines; patterns kmod rejects (unmatched brackets) are skipped.
fn add_aliases(index: &mut AliasIndex, text: &str) {
    for line in text.lines() {
        let mut w = line.split_whitespace();
        if let (Some("alias"), Some(alias), Some(module)) = (w.next(), w.next(), w.next()) {
            index.insert(alias, module);
        }
    }
    index.sort();
}

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

/// What provides a module that a modalias matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// In `modules.dep` (or added): load it with its closure.
    Loadable,
    /// Built into the kernel: nothing to load.
    Builtin,
    /// The kernel's alias table names it, but it is neither shipped nor built in.
    NotShipped,
    /// Shipped, but it or a dependency is blacklisted ([`ModuleDb::blocked`] says which).
    Blacklisted,
}

/// A module whose alias pattern matched a modalias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    pub module: String,
    pub provider: Provider,
}

#[derive(Debug, Clone, Default)]
pub struct ModuleDb {
    pub dir: PathBuf,
    pub modules: BTreeMap<String, Module>,
    /// name -> (pre, post) soft dependencies.
    pub softdeps: BTreeMap<String, (Vec<String>, Vec<String>)>,
    pub builtin: BTreeSet<String>,
    /// `modules.alias` patterns and exact aliases (and added modules'), e.g. `crc32c` ->
    /// `crc32c_intel`, `crc32c_generic` (as modprobe, boot mode tries each until one loads).
    pub aliases: AliasIndex,
    /// The `alias=` records of `modules.builtin.modinfo`: built-in drivers' aliases.
    pub builtin_aliases: AliasIndex,
    /// Modules never to load, nor anything needing them (normalized names).
    pub blacklist: BTreeSet<String>,
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
    /// Reads `modules.dep` (required), `modules.softdep`, `.alias`, `.builtin` and
    /// `.builtin.modinfo` from `dir`.
    pub fn load(dir: &Path) -> Result<ModuleDb, KmodError> {
        let dep_path = dir.join("modules.dep");
        let dep = std::fs::read_to_string(&dep_path).map_err(|source| KmodError::Io {
            path: dep_path.clone(),
            source,
        })?;
        let softdep = read_opt(&dir.join("modules.softdep"))?;
        let alias = read_opt(&dir.join("modules.alias"))?;
        let builtin = read_opt(&dir.join("modules.builtin"))?;
        let mut db = Self::parse(dir, &dep, &softdep, &alias, &builtin)?;
        let modinfo_path = dir.join("modules.builtin.modinfo");
        match std::fs::read(&modinfo_path) {
            Ok(modinfo) => db.parse_builtin_modinfo(&modinfo),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                let path = modinfo_path;
                return Err(KmodError::Io { path, source });
            }
        }
        Ok(db)
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
            self.push_softdeps(&normalize(name), words);
        }
    }

    /// `pre: A B post: C` words (pre: when neither is said) for module `name`.
    fn push_softdeps<'a>(&mut self, name: &str, words: impl Iterator<Item = &'a str>) {
        let entry = self.softdeps.entry(name.to_owned()).or_default();
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

    fn parse_alias(&mut self, text: &str) {
        add_aliases(&mut self.aliases, text);
    }

    /// The `module.alias=VALUE` records of `modules.builtin.modinfo` (NUL-separated
    /// `module.key=value`); other keys and records that are not UTF-8 are ignored.
    pub fn parse_builtin_modinfo(&mut self, bytes: &[u8]) {
        for record in bytes.split(|&b| b == 0) {
            let Ok(record) = std::str::from_utf8(record) else {
                continue;
            };
            let Some((module, key_value)) = record.split_once('.') else {
                continue;
            };
            if let Some(alias) = key_value.strip_prefix("alias=") {
                self.builtin_aliases.insert(alias, module);
            }
        }
        self.builtin_aliases.sort();
    }

    /// Adds a module that `modules.dep` does not list (one an extension brings), from its
    /// `.modinfo`: `depends` names (comma-separated lists are split), `alias` patterns and raw
    /// `softdep` values (`pre: a b post: c`). `path` is relative to [`ModuleDb::dir`] or
    /// absolute. A module of the same name is replaced.
    pub fn add(
        &mut self,
        path: String,
        name: &str,
        depends: &[String],
        aliases: &[String],
        softdeps: &[String],
    ) {
        let name = normalize(name);
        let deps = depends.iter().flat_map(|d| d.split(','));
        let deps = deps.map(str::trim).filter(|d| !d.is_empty()).map(normalize);
        let deps = deps.collect();
        for alias in aliases {
            self.aliases.insert(alias, &name);
        }
        self.aliases.sort();
        for value in softdeps {
            self.push_softdeps(&name, value.split_whitespace());
        }
        self.modules.insert(name, Module { path, deps });
    }

    /// Adds the comma-separated names of a `module_blacklist=`, `modprobe.blacklist=` or
    /// `rd.driver.blacklist=` value to [`ModuleDb::blacklist`].
    pub fn add_blacklist(&mut self, list: &str) {
        let names = list.split(',').map(str::trim).filter(|n| !n.is_empty());
        self.blacklist.extend(names.map(normalize));
    }

    /// The blacklisted module that keeps module `name` from loading: itself or one of its
    /// hard dependencies (transitively); None when it may load.
    pub fn blocked<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        if self.blacklist.is_empty() {
            return None;
        }
        let mut stack = vec![name];
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if let Some(b) = self.blacklist.get(n) {
                return Some(b);
            }
            if let (true, Some(m)) = (seen.insert(n), self.modules.get(n)) {
                stack.extend(m.deps.iter().map(String::as_str));
            }
        }
        None
    }

    /// The modules whose `modules.alias` pattern matches a device's `modalias` (kmod's
    /// rules and order), then built-in drivers whose `modules.builtin.modinfo` alias matches
    /// it; each module once, with what provides it.
    pub fn modalias(&self, modalias: &str) -> Vec<Driver> {
        let mut out: Vec<Driver> = Vec::new();
        for module in self.aliases.lookup(modalias) {
            let provider = self.provider(module);
            out.push(Driver {
                module: module.to_owned(),
                provider,
            });
        }
        for module in self.builtin_aliases.lookup(modalias) {
            if !out.iter().any(|d| d.module == module) {
                out.push(Driver {
                    module: module.to_owned(),
                    provider: Provider::Builtin,
                });
            }
        }
        out
    }

    fn provider(&self, module: &str) -> Provider {
        if self.modules.contains_key(module) {
            match self.blocked(module) {
                Some(_) => Provider::Blacklisted,
                None => Provider::Loadable,
            }
        } else if self.builtin.contains(module) {
            Provider::Builtin
        } else {
            Provider::NotShipped
        }
    }

    /// The loadable modules a name or alias stands for (blacklisted ones included).
    fn resolve<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        if self.modules.contains_key(name) {
            return vec![name];
        }
        let targets = self.aliases.lookup(name).into_iter();
        targets.filter(|m| self.modules.contains_key(*m)).collect()
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// The modules to load for `names`, each after its dependencies (soft `pre:` first, hard
    /// dependencies in the order modprobe loads them, `post:` after). Built-in names are
    /// skipped, and so are [`ModuleDb::blocked`] ones; an unknown name is an error when
    /// `required`, else skipped.
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
        if self.blocked(name).is_some() || !seen.insert(name.to_owned()) {
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

    fn driver(module: &str, provider: Provider) -> Driver {
        let module = module.to_owned();
        Driver { module, provider }
    }

    #[test]
    fn modalias_lookup() {
        let mut d = db();
        d.parse_alias(
            "alias pci:v00001AF4d00001001sv*sd*bc*sc*i* virtio_pci\n\
             alias pci:v00001AF4d*sv*sd*bc*sc*i* reed-solomon\n\
             alias pci:v*d*sv*sd*bc01sc08i02* nvme\n\
             alias fs-loop loop\n",
        );
        d.parse_builtin_modinfo(b"ext4.alias=fs-ext4\0ext4.license=GPL\0nvme_core.alias=pci:v*d*sv*sd*bc01sc08*\0junk\0\xff.alias=x\0");
        let key = "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00";
        assert_eq!(
            d.modalias(key),
            [
                driver("dm_mod", Provider::Loadable),
                driver("virtio_pci", Provider::NotShipped),
                driver("reed_solomon", Provider::Loadable),
            ]
        );
        let nvme = "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02";
        assert_eq!(
            d.modalias(nvme),
            [
                driver("dm_mod", Provider::Loadable),
                driver("nvme", Provider::NotShipped),
                driver("nvme_core", Provider::Builtin),
            ]
        );
        assert_eq!(d.modalias("fs-ext4"), [driver("ext4", Provider::Builtin)]);
        assert_eq!(d.modalias("fs-loop"), [driver("loop", Provider::Builtin)]);
        assert!(d.modalias("usb:v1").is_empty());
        d.add_blacklist("dm-mod, ,x");
        assert_eq!(d.modalias(key)[0], driver("dm_mod", Provider::Blacklisted));
        assert_eq!(d.blocked("dm_verity"), Some("dm_mod"));
        assert_eq!(d.blocked("reed_solomon"), None);
    }

    #[test]
    fn closure_skips_blacklisted() {
        let mut d = db();
        d.add_blacklist("reed_solomon");
        assert!(d.closure(&["dm_verity"], true).unwrap().is_empty());
        d.blacklist = ["crc32c_generic".to_owned()].into();
        assert_eq!(d.closure(&["libcrc32c"], true).unwrap(), ["libcrc32c"]);
    }

    #[test]
    fn added_modules_join_the_closure() {
        let mut d = db();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        d.add(
            "/ext/usr/lib/modules/k/extra/zfs.ko.zst".into(),
            "zfs",
            &s(&["spl,dm-mod"]),
            &s(&["fs-zfs", "devname:zfs", "pci:v0000ABCDd*"]),
            &s(&["pre: libcrc32c post: loop"]),
        );
        d.add("extra/spl.ko".into(), "spl", &[], &[], &[]);
        let order = d.closure(&["fs-zfs"], true).unwrap();
        assert_eq!(
            order,
            ["crc32c_generic", "libcrc32c", "dm_mod", "spl", "zfs"]
        );
        let m = d.modalias("pci:v0000ABCDd00000001");
        assert_eq!(m.last(), Some(&driver("zfs", Provider::Loadable)));
        assert_eq!(
            d.dir.join(&d.modules["zfs"].path),
            Path::new("/ext/usr/lib/modules/k/extra/zfs.ko.zst")
        );
    }
}
