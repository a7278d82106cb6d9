//! `build initrd` and `build extension-cpio`: the base initrd (our binary as `/init`, kernel
//! modules with their dependency closure, trusted certificates, embedded extensions) as a
//! deterministic newc cpio, zstd-compressed on all cores.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use cpio_builder::{Header, WriteError, Writer};
use log::{info, warn};

use crate::build::drivers::{self, Drivers};
use crate::build::modules;
use crate::build::output::{Output, OutputError};
use crate::format::elf::{self, is_dynamic_elf};
use crate::format::gpt::Arch;
use crate::format::kmod::{self, KmodError, ModuleDb};
use crate::tree::{Content, Kind, Meta, NodeId, ScanOptions, Tree, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Kmod(#[from] KmodError),
    #[error(transparent)]
    Elf(#[from] elf::ElfError),
    #[error("writing the cpio archive: {0}")]
    Cpio(#[from] WriteError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is already in the tree; remove it there or do not add it again")]
    Duplicate { path: String },
    #[error("{0}: is dynamically linked; /init must be static (build it with scripts/build-static or pass --init)")]
    Dynamic(PathBuf),
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: {found}, but the initrd is for {target}")]
    WrongArch {
        path: PathBuf,
        found: String,
        target: Target,
    },
}

/// The architecture the initrd is for, and what said so: `--arch`, or else `/init`'s own.
#[derive(Debug, Clone)]
pub struct Target {
    machine: u16,
    source: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} ({})", elf::machine_name(self.machine), self.source)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InitrdError + '_ {
    move |source| InitrdError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Zstd(i32),
}

#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub tree: Option<PathBuf>,
    /// `(SRC, DST)`: trees copied over the tree at DST, as mkosi's `ExtraTrees=`.
    pub extra_trees: Vec<(PathBuf, String)>,
    pub kver: Option<String>,
    pub modules_dir: Option<PathBuf>,
    pub modules: Vec<String>,
    /// `--drivers`: a set of drivers shipped besides the defaults and `modules`.
    pub drivers: Option<Drivers>,
    /// `--omit-driver`: never shipped, nor any module that needs them (dracut's
    /// `--omit-drivers`).
    pub omit: Vec<String>,
    pub certs: Vec<PathBuf>,
    /// Certificates boot mode enrolls into `.secondary_trusted_keys`.
    pub secondary_certs: Vec<PathBuf>,
    pub extensions: Vec<PathBuf>,
    /// `--confext`: configuration extensions, in `/var/lib/confexts` (boot mode's /run is a
    /// fresh tmpfs).
    pub confexts: Vec<PathBuf>,
    /// The static binary installed as `/init`.
    pub init: PathBuf,
    /// `--arch`: `/init` and every module must be built for it. Without it, the modules must
    /// match `/init` (when that is an ELF file).
    pub arch: Option<Arch>,
    pub compression: Compression,
    pub output: PathBuf,
    pub force: bool,
    pub source_date_epoch: Option<i64>,
}

/// What was written.
#[derive(Debug)]
pub struct Report {
    pub entries: usize,
    pub modules: Vec<String>,
    /// The shipped modules' size.
    pub module_bytes: u64,
    pub bytes: u64,
}

/// Builds the initrd described by `spec`.
pub fn build(spec: &Spec) -> Result<Report, InitrdError> {
    let (tree, mut report) = assemble(spec)?;
    report.bytes = write(&tree, spec)?;
    info!(
        "{}: {} entries, {} bytes",
        spec.output.display(),
        report.entries,
        report.bytes
    );
    Ok(report)
}

/// Builds the initrd described by `spec` in memory (`spec.output` only names it in errors).
pub fn build_bytes(spec: &Spec) -> Result<(Vec<u8>, Report), InitrdError> {
    let (tree, mut report) = assemble(spec)?;
    let mut bytes = encode(&tree, spec, Vec::new())?;
    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    report.bytes = bytes.len() as u64;
    Ok((bytes, report))
}

/// The initrd's tree: base, skeleton, /init, release, modules, certificates, extensions.
fn assemble(spec: &Spec) -> Result<(Tree, Report), InitrdError> {
    let mtime = spec.source_date_epoch.unwrap_or(0);
    let mut tree = base_tree(spec)?;
    let adder = Adder { mtime };
    adder.skeleton(&mut tree)?;
    let target = adder.init(&mut tree, spec)?;
    adder.release(&mut tree)?;
    let (modules, module_bytes) = match modules_dir(spec) {
        Some((dir, _)) if host_without_modules(spec, &dir) => {
            warn!(
                "--drivers host: no modules dir for this kernel ({}): no modules shipped",
                dir.display()
            );
            (Vec::new(), 0)
        }
        Some((dir, kver)) => adder.modules(&mut tree, &dir, &kver, spec, target.as_ref())?,
        None if spec.modules.is_empty() => (Vec::new(), 0),
        None => {
            return Err(InitrdError::Invalid {
                path: PathBuf::from("--module"),
                reason: "needs --kver or --modules-dir".into(),
            })
        }
    };
    for cert in &spec.certs {
        adder.cert(&mut tree, "etc/verity.d", cert)?;
    }
    for cert in &spec.secondary_certs {
        adder.cert(&mut tree, "etc/verity.d/secondary", cert)?;
    }
    for image in &spec.extensions {
        adder.file_into(&mut tree, "etc/extensions", image)?;
    }
    for image in &spec.confexts {
        adder.file_into(&mut tree, "var/lib/confexts", image)?;
    }
    let report = Report {
        entries: tree.nodes.len(),
        modules,
        module_bytes,
        bytes: 0,
    };
    Ok((tree, report))
}

/// A cpio placing `images` under `/.extra/sysext/`, to append to any initrd.
pub fn extension_cpio(
    images: &[PathBuf],
    output: &Path,
    force: bool,
    sde: Option<i64>,
) -> Result<u64, InitrdError> {
    let mtime = sde.unwrap_or(0);
    let mut tree = Tree::new(Meta::generated(0o755, mtime));
    let adder = Adder { mtime };
    for image in images {
        adder.file_into(&mut tree, ".extra/sysext", image)?;
    }
    let spec = Spec {
        output: output.to_owned(),
        force,
        source_date_epoch: sde,
        ..Spec::default()
    };
    write(&tree, &spec)
}

/// The scanned tree with every owner mapped to root, or an empty root.
fn base_tree(spec: &Spec) -> Result<Tree, InitrdError> {
    let mut tree = match &spec.tree {
        Some(dir) => Tree::scan(
            dir,
            &ScanOptions {
                clamp_mtime: spec.source_date_epoch,
            },
        )?,
        None => Tree::new(Meta::generated(0o755, spec.source_date_epoch.unwrap_or(0))),
    };
    let scan = ScanOptions {
        clamp_mtime: spec.source_date_epoch,
    };
    tree.graft_all(&spec.extra_trees, &scan)?;
    for n in &mut tree.nodes {
        n.meta.uid = 0;
        n.meta.gid = 0;
    }
    Ok(tree)
}

/// The modules directory and kernel version: as given, or the running kernel's for `--drivers`.
fn modules_dir(spec: &Spec) -> Option<(PathBuf, String)> {
    let given = spec.modules_dir.is_some() || spec.kver.is_some();
    let running = (!given && spec.drivers.is_some()).then(|| {
        let uname = rustix::system::uname();
        uname.release().to_string_lossy().into_owned()
    });
    let kver = spec.kver.as_deref().or(running.as_deref());
    modules::location(spec.modules_dir.as_deref(), kver)
}

/// `--drivers host` on a build host whose kernel has no modules directory (and nothing else
/// asks for modules): detection has nothing to choose from, which is not an error.
fn host_without_modules(spec: &Spec, dir: &Path) -> bool {
    spec.drivers == Some(Drivers::Host) && spec.modules.is_empty() && !dir.is_dir()
}

/// Adds generated entries with a fixed mtime and root ownership.
struct Adder {
    mtime: i64,
}

impl Adder {
    fn meta(&self, perm: u32) -> Meta {
        Meta::generated(perm, self.mtime)
    }

    /// Adds a node that must not exist yet.
    fn add_new(
        &self,
        tree: &mut Tree,
        path: &str,
        perm: u32,
        kind: Kind,
    ) -> Result<NodeId, InitrdError> {
        if tree.lookup(path).is_some() {
            return Err(InitrdError::Duplicate {
                path: format!("/{path}"),
            });
        }
        Ok(tree.insert(path, self.meta(perm), kind, &self.meta(0o755))?)
    }

    /// Adds a node unless the tree already has one at `path`.
    fn add_missing(
        &self,
        tree: &mut Tree,
        path: &str,
        perm: u32,
        kind: Kind,
    ) -> Result<(), InitrdError> {
        if tree.lookup(path).is_none() {
            tree.insert(path, self.meta(perm), kind, &self.meta(0o755))?;
        }
        Ok(())
    }

    /// The standard mount points and `/dev/console`.
    fn skeleton(&self, tree: &mut Tree) -> Result<(), InitrdError> {
        let dir = || Kind::Dir {
            children: Vec::new(),
        };
        for d in ["proc", "sys", "dev", "run", "sysroot", "etc"] {
            self.add_missing(tree, d, 0o755, dir())?;
        }
        self.add_missing(tree, "tmp", 0o1777, dir())?;
        let console = rustix::fs::makedev(5, 1);
        self.add_missing(tree, "dev/console", 0o600, Kind::CharDev(console))
    }

    /// `/init` and `/usr/bin/initrd-sysext` (one inode, two names); the architecture the
    /// initrd is for, if known.
    fn init(&self, tree: &mut Tree, spec: &Spec) -> Result<Option<Target>, InitrdError> {
        let binary = &spec.init;
        let bytes = std::fs::read(binary).map_err(io_err(binary))?;
        if is_dynamic_elf(&bytes) {
            return Err(InitrdError::Dynamic(binary.to_owned()));
        }
        let target = target(spec, &bytes)?;
        let file = || Kind::File {
            content: Content::Path(binary.to_owned()),
            size: bytes.len() as u64,
        };
        let init = self.add_new(tree, "init", 0o755, file())?;
        let usr_bin = if is_symlink(tree, "usr/bin") {
            "bin/initrd-sysext"
        } else {
            "usr/bin/initrd-sysext"
        };
        let link = self.add_new(tree, usr_bin, 0o755, file())?;
        tree.nodes[link].hardlink_of = Some(init);
        Ok(target)
    }

    /// `/etc/initrd-release` from the tree's os-release (so extensions built against the same
    /// base match), and `/etc/os-release` pointing at it when the tree has none.
    fn release(&self, tree: &mut Tree) -> Result<(), InitrdError> {
        if tree.lookup("etc/initrd-release").is_none() {
            let text = ["usr/lib/os-release", "etc/os-release"]
                .iter()
                .filter_map(|p| tree.lookup(p))
                .find_map(|id| match &tree.nodes[id].kind {
                    Kind::File { content, .. } => content.read().ok(),
                    _ => None,
                })
                .unwrap_or_else(|| b"NAME=\"initrd-sysext initrd\"\nID=linux\n".to_vec());
            let kind = Kind::File {
                size: text.len() as u64,
                content: Content::Bytes(text),
            };
            self.add_new(tree, "etc/initrd-release", 0o644, kind)?;
        }
        self.add_missing(
            tree,
            "etc/os-release",
            0o777,
            Kind::Symlink(b"initrd-release".to_vec()),
        )
    }

    /// The default modules (where they are modules), `--module` names and `--drivers`, with
    /// their closure; `modules.dep`/`.softdep`/`.alias` for exactly what is shipped, the
    /// kernel's other aliases apart (boot mode names the module a storage device lacks),
    /// `modules.builtin` and `modules.builtin.modinfo`; `/etc/initrd-sysext/modules` names what
    /// boot mode loads besides the defaults (`--module` names and host drivers; generic ones are
    /// left to coldplug). Returns the shipped modules and their bytes.
    fn modules(
        &self,
        tree: &mut Tree,
        dir: &Path,
        kver: &str,
        spec: &Spec,
        target: Option<&Target>,
    ) -> Result<(Vec<String>, u64), InitrdError> {
        let mut db = ModuleDb::load(dir)?;
        db.add_blacklist(&spec.omit.join(","));
        let mut order = db.closure(&kmod::DEFAULT_MODULES, false)?;
        let requested: Vec<&str> = spec.modules.iter().map(String::as_str).collect();
        let requested = db.closure(&requested, true)?;
        let extra = driver_names(spec.drivers, &db);
        let driven = db.closure(&extra.iter().map(String::as_str).collect::<Vec<_>>(), false)?;
        for m in requested.iter().chain(&driven) {
            if !order.contains(m) {
                order.push(m.clone());
            }
        }
        let base = if is_symlink(tree, "lib") {
            "usr/lib/modules"
        } else {
            "lib/modules"
        };
        if let Some(target) = target {
            check_modules(dir, &db, &order, target)?;
        }
        let root = format!("{base}/{kver}");
        let bytes = self.module_files(tree, dir, &root, &db, &order)?;
        self.module_index(tree, dir, &root, &db, &order)?;
        let mut listed: Vec<String> = spec.modules.iter().map(|n| kmod::normalize(n)).collect();
        if spec.drivers == Some(Drivers::Host) {
            listed.extend(driven);
        }
        let listed: String = listed.iter().map(|n| format!("{n}\n")).collect();
        self.text(tree, "etc/initrd-sysext/modules", listed)?;
        let how = spec
            .drivers
            .map_or(String::new(), |d| format!(" ({})", d.name()));
        info!(
            "modules for {kver}: {} modules, {bytes} bytes{how}",
            order.len()
        );
        info!("modules for {kver}: {}", order.join(" "));
        Ok((order, bytes))
    }

    /// The module files of `order` under `root`, as in `dir`; their total size.
    fn module_files(
        &self,
        tree: &mut Tree,
        dir: &Path,
        root: &str,
        db: &ModuleDb,
        order: &[String],
    ) -> Result<u64, InitrdError> {
        let mut bytes = 0;
        for name in order {
            let rel = &db.modules[name].path;
            let (kind, size) = Kind::host_file(&dir.join(rel))?;
            bytes += size;
            self.add_new(tree, &format!("{root}/{rel}"), 0o644, kind)?;
        }
        Ok(bytes)
    }

    /// `modules.dep`/`.softdep`/`.alias` of the shipped `order`, the kernel's other alias
    /// lines in [`kmod::UNSHIPPED_ALIAS`], `modules.builtin` and `modules.builtin.modinfo` as
    /// they are (those present).
    fn module_index(
        &self,
        tree: &mut Tree,
        dir: &Path,
        root: &str,
        db: &ModuleDb,
        order: &[String],
    ) -> Result<(), InitrdError> {
        self.text(tree, &format!("{root}/modules.dep"), db.render_dep(order))?;
        let softdep = db.render_softdep(order);
        self.text(tree, &format!("{root}/modules.softdep"), softdep)?;
        let alias = std::fs::read_to_string(dir.join("modules.alias")).unwrap_or_default();
        let shipped: BTreeSet<&str> = order.iter().map(String::as_str).collect();
        let (mut ours, mut others) = (String::new(), String::new());
        for line in alias.lines() {
            let module = line.split_whitespace().nth(2).map(kmod::normalize);
            let to = match module {
                Some(m) if shipped.contains(m.as_str()) => &mut ours,
                _ => &mut others,
            };
            to.push_str(line);
            to.push('\n');
        }
        info!(
            "modules.alias: {} bytes; {}: {} bytes",
            ours.len(),
            kmod::UNSHIPPED_ALIAS,
            others.len()
        );
        self.text(tree, &format!("{root}/modules.alias"), ours)?;
        self.text(tree, &format!("{root}/{}", kmod::UNSHIPPED_ALIAS), others)?;
        for name in ["modules.builtin", "modules.builtin.modinfo"] {
            let src = dir.join(name);
            let Ok(md) = std::fs::metadata(&src) else {
                continue;
            };
            info!("{name}: {} bytes", md.len());
            let kind = Kind::File {
                content: Content::Path(src),
                size: md.len(),
            };
            self.add_new(tree, &format!("{root}/{name}"), 0o644, kind)?;
        }
        Ok(())
    }

    /// A generated text file.
    fn text(&self, tree: &mut Tree, path: &str, text: String) -> Result<(), InitrdError> {
        let kind = Kind::File {
            size: text.len() as u64,
            content: Content::Bytes(text.into_bytes()),
        };
        self.add_new(tree, path, 0o644, kind)?;
        Ok(())
    }

    /// A certificate as PEM in `<dir>/<stem>.crt`.
    fn cert(&self, tree: &mut Tree, dir: &str, path: &Path) -> Result<(), InitrdError> {
        let certs = crate::image::certs::load_certs(path).map_err(|e| InitrdError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut pem = Vec::new();
        for c in certs {
            pem.extend(c.to_pem().map_err(|e| InitrdError::Invalid {
                path: path.to_owned(),
                reason: e.to_string(),
            })?);
        }
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let kind = Kind::File {
            size: pem.len() as u64,
            content: Content::Bytes(pem),
        };
        self.add_new(tree, &format!("{dir}/{stem}.crt"), 0o644, kind)?;
        Ok(())
    }

    /// A file from the host into `dir` under its own name.
    fn file_into(&self, tree: &mut Tree, dir: &str, path: &Path) -> Result<(), InitrdError> {
        let (kind, _) = Kind::host_file(path)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        self.add_new(tree, &format!("{dir}/{name}"), 0o644, kind)?;
        Ok(())
    }
}

/// The architecture the initrd is for: `--arch`, which `/init` (its bytes `init`) must match,
/// or else `/init`'s when it is an ELF file.
fn target(spec: &Spec, init: &[u8]) -> Result<Option<Target>, InitrdError> {
    let found = elf::e_machine(init);
    let Some(arch) = spec.arch else {
        let source = format!("the architecture of /init, {}", spec.init.display());
        return Ok(found.map(|machine| Target { machine, source }));
    };
    let target = Target {
        machine: elf::machine_of(arch),
        source: format!("--arch {}", arch.name()),
    };
    if found == Some(target.machine) {
        return Ok(Some(target));
    }
    Err(InitrdError::WrongArch {
        path: spec.init.clone(),
        found: found.map_or_else(|| "not a 64-bit ELF file".into(), built_for),
        target,
    })
}

fn built_for(machine: u16) -> String {
    format!("built for {}", elf::machine_name(machine))
}

/// Every module of `order` (files under `dir`) is built for `target`.
fn check_modules(
    dir: &Path,
    db: &ModuleDb,
    order: &[String],
    target: &Target,
) -> Result<(), InitrdError> {
    for name in order {
        let path = dir.join(&db.modules[name].path);
        let machine = elf::read_module_machine(&path)?;
        if machine != target.machine {
            return Err(InitrdError::WrongArch {
                path,
                found: built_for(machine),
                target: target.clone(),
            });
        }
    }
    Ok(())
}

/// The names and aliases `--drivers` asks for.
fn driver_names(drivers: Option<Drivers>, db: &ModuleDb) -> Vec<String> {
    match drivers {
        None => Vec::new(),
        Some(Drivers::Generic) => drivers::generic(db),
        Some(Drivers::Host) => {
            let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
            drivers::host(Path::new("/sys"), &mounts)
                .into_iter()
                .collect()
        }
    }
}

fn is_symlink(tree: &Tree, path: &str) -> bool {
    tree.lookup(path)
        .is_some_and(|id| matches!(tree.nodes[id].kind, Kind::Symlink(_)))
}

/// Writes `tree` as newc (in walk order: parents first, names sorted), compressed per spec.
fn write(tree: &Tree, spec: &Spec) -> Result<u64, InitrdError> {
    let out = Output::create(&spec.output, spec.force)?;
    let sink = BufWriter::with_capacity(1 << 20, &out.file);
    encode(tree, spec, sink)?
        .flush()
        .map_err(io_err(&spec.output))?;
    // The kernel reads an archive appended after this one only at a 4-byte boundary: pad
    // with zeros, which it skips between members.
    let len = out.file.metadata().map_err(io_err(&spec.output))?.len();
    let len = len.div_ceil(4) * 4;
    out.file.set_len(len).map_err(io_err(&spec.output))?;
    out.commit()?;
    Ok(len)
}

/// `tree` as newc into `sink`, compressed per spec (zstd on all cores).
fn encode<W: Write>(tree: &Tree, spec: &Spec, sink: W) -> Result<W, InitrdError> {
    let Compression::Zstd(level) = spec.compression else {
        return write_cpio(tree, spec, sink);
    };
    let mut enc = zstd::stream::Encoder::new(sink, level).map_err(io_err(&spec.output))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    enc.multithread(threads).map_err(io_err(&spec.output))?;
    let enc = write_cpio(tree, spec, enc)?;
    enc.finish().map_err(io_err(&spec.output))
}

fn write_cpio<W: Write>(tree: &Tree, spec: &Spec, sink: W) -> Result<W, InitrdError> {
    let mut w = Writer::new(sink);
    if let Some(sde) = spec.source_date_epoch {
        w = w.with_source_date_epoch(sde.max(0) as u64);
    }
    let order = tree.walk();
    // Hard-link groups: every name at its sorted place, the content with the last one.
    let anchors: std::collections::BTreeSet<NodeId> =
        tree.nodes.iter().filter_map(|n| n.hardlink_of).collect();
    let mut groups: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
    for &id in &order {
        let anchor = tree.nodes[id].hardlink_of.unwrap_or(id);
        if anchors.contains(&anchor) {
            groups.entry(anchor).or_default().push(id);
        }
    }
    for &id in order.iter().skip(1) {
        let anchor = tree.nodes[id].hardlink_of.unwrap_or(id);
        match groups.get(&anchor) {
            Some(members) => write_link(&mut w, tree, id, anchor, members)?,
            None => write_node(&mut w, tree, id)?,
        }
    }
    Ok(w.finish()?)
}

fn header(tree: &Tree, id: NodeId, meta_of: NodeId) -> Header {
    let n = &tree.nodes[meta_of];
    let rdev = match n.kind {
        Kind::CharDev(r) | Kind::BlockDev(r) => r,
        _ => 0,
    };
    Header {
        name: tree.path(id).into_os_string().into_encoded_bytes(),
        mode: n.mode(),
        uid: n.meta.uid,
        gid: n.meta.gid,
        mtime: n.meta.mtime.max(0) as u64,
        rdev_major: rustix::fs::major(rdev),
        rdev_minor: rustix::fs::minor(rdev),
    }
}

fn write_node<W: Write>(w: &mut Writer<W>, tree: &Tree, id: NodeId) -> Result<(), InitrdError> {
    let h = header(tree, id, id);
    match &tree.nodes[id].kind {
        Kind::Dir { .. } => w.dir(&h)?,
        Kind::Symlink(target) => w.symlink(&h, target)?,
        Kind::File { content, size } => w.file(&h, *size, &mut content.open()?)?,
        _ => w.special(&h)?,
    }
    Ok(())
}

fn write_link<W: Write>(
    w: &mut Writer<W>,
    tree: &Tree,
    id: NodeId,
    anchor: NodeId,
    members: &[NodeId],
) -> Result<(), InitrdError> {
    let Kind::File { content, size } = &tree.nodes[anchor].kind else {
        return Err(InitrdError::Invalid {
            path: tree.path(anchor),
            reason: "hard link to a non-regular file".into(),
        });
    };
    let h = header(tree, id, anchor);
    let nlink = members.len() as u32;
    if members.last() == Some(&id) {
        w.link_member(
            &h,
            anchor as u64,
            nlink,
            Some((*size, &mut content.open()?)),
        )?;
    } else {
        w.link_member(&h, anchor as u64, nlink, None)?;
    }
    Ok(())
}
