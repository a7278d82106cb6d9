//! mkosi-style project directories (`build --directory DIR`): `mkosi.conf` (+ `mkosi.conf.d/`),
//! `mkosi.images/<name>/` with `mkosi.extra/` and `mkosi.repart/`; every image in dependency order.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use log::{info, warn};

use crate::build::directory::{self, DirectoryError};
use crate::build::initrd::{self, Compression, InitrdError};
use crate::build::repart::{self, Flags, RepartError};
use crate::build::sysext::{self, BuildError, FsKind, Spec, VerityMode};
use crate::format::gpt::Arch;
use crate::format::unit::{self, Entry, SyntaxError};
use crate::tree::{extra_tree, ScanOptions, Tree, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    #[error("{path}:{line}: {key}= is not supported: {alternative}")]
    Unsupported {
        path: PathBuf,
        line: usize,
        key: String,
        alternative: String,
    },
    #[error("{path}:{line}: {key}={value:?}: {why}")]
    Value {
        path: PathBuf,
        line: usize,
        key: String,
        value: String,
        why: String,
    },
    #[error("{0}")]
    Project(String),
    #[error("{0} exists (build --directory --force replaces it)")]
    Exists(PathBuf),
    #[error("image {image}: {source}")]
    Sysext { image: String, source: BuildError },
    #[error("image {image}: {source}")]
    Initrd { image: String, source: InitrdError },
    #[error("image {image}: {source}")]
    Repart { image: String, source: RepartError },
    #[error("image {image}: {source}")]
    Tree { image: String, source: TreeError },
    #[error("image {image}: {source}")]
    Directory {
        image: String,
        source: DirectoryError,
    },
}

/// What an image is built as (mkosi `Format=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Directory,
    /// A DDI laid out by the image's `mkosi.repart/` definitions.
    Disk,
    Sysext,
    Cpio,
}

/// Settings of one image, as read (paths resolved against the directory of the file that set them).
#[derive(Debug, Clone, Default)]
struct Settings {
    format: Option<Format>,
    output: Option<String>,
    output_dir: Option<PathBuf>,
    image_id: Option<String>,
    image_version: Option<String>,
    overlay: bool,
    base_trees: Vec<String>,
    extra_trees: Vec<String>,
    dependencies: Vec<String>,
    verity: Option<VerityMode>,
    verity_key: Option<PathBuf>,
    verity_cert: Option<PathBuf>,
    source_date_epoch: Option<i64>,
    fs: Option<FsKind>,
    compress: bool,
}

impl Settings {
    /// mkosi's universal settings pass from the top-level configuration to every image.
    fn inherited(&self) -> Settings {
        Settings {
            output_dir: self.output_dir.clone(),
            image_version: self.image_version.clone(),
            verity_key: self.verity_key.clone(),
            verity_cert: self.verity_cert.clone(),
            source_date_epoch: self.source_date_epoch,
            fs: self.fs,
            compress: true,
            ..Settings::default()
        }
    }
}

/// One image to build, fully resolved.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub format: Format,
    pub output: PathBuf,
    dir: PathBuf,
    sources: Vec<(PathBuf, String)>,
    base: Option<PathBuf>,
    version: Option<String>,
    verity: Option<VerityMode>,
    signing: Option<(PathBuf, PathBuf)>,
    source_date_epoch: Option<i64>,
    fs: Option<FsKind>,
    compress: bool,
}

const NO_PACKAGES: &str = "we do not install packages: build the tree with the distribution's \
     own tool (debootstrap, dnf --installroot, zypper --root, …), then point BaseTrees= or \
     ExtraTrees= at it";
const NO_SCRIPTS: &str = "we run no build scripts: run them before, into a tree that \
     BaseTrees= or ExtraTrees= points at";
/// Keys that only steer mkosi's own caches and package handling: accepted and ignored.
const IGNORED: [&str; 6] = [
    "CacheDirectory",
    "PackageCacheDirectory",
    "BuildDirectory",
    "WorkspaceDirectory",
    "CleanPackageMetadata",
    "Incremental",
];

/// Reads the project at `dir` and resolves every image, in build order. Nothing is written.
pub fn plan(dir: &Path, force: bool) -> Result<Vec<Image>, ProjectError> {
    let top_conf = dir.join("mkosi.conf");
    if !top_conf.is_file() {
        return Err(ProjectError::Project(format!(
            "{}: no mkosi.conf (a project directory holds mkosi.conf and mkosi.images/)",
            dir.display()
        )));
    }
    refuse_scripts(dir)?;
    let mut top = Settings {
        compress: true,
        ..Settings::default()
    };
    for (file, entries) in config_files(dir)? {
        apply(&mut top, &file, &entries)?;
    }
    let default_key = (dir.join("mkosi.key"), dir.join("mkosi.crt"));
    let mut images = Vec::new();
    if top.format.is_some() {
        let name = top.image_id.clone().unwrap_or_else(|| "image".into());
        images.push((name, dir.to_owned(), top.clone()));
    }
    let sub = dir.join("mkosi.images");
    if sub.is_dir() {
        let mut names: Vec<String> = read_dir(&sub)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| Some(p.file_name()?.to_str()?.to_owned()))
            .collect();
        names.sort();
        for name in names {
            let idir = sub.join(&name);
            refuse_scripts(&idir)?;
            let mut s = top.inherited();
            for (file, entries) in config_files(&idir)? {
                apply(&mut s, &file, &entries)?;
            }
            images.push((name, idir, s));
        }
    }
    if images.is_empty() {
        return Err(ProjectError::Project(format!(
            "{}: no image to build (no Format= in mkosi.conf and no mkosi.images/)",
            dir.display()
        )));
    }
    let order = build_order(&images)?;
    let out_default = dir.join("mkosi.output");
    let mut resolved = Vec::new();
    for i in order {
        let (name, idir, s) = &images[i];
        resolved.push(resolve(name, idir, s, &out_default, &default_key)?);
    }
    if !force {
        if let Some(i) = resolved.iter().find(|i| i.output.exists()) {
            return Err(ProjectError::Exists(i.output.clone()));
        }
    }
    Ok(resolved)
}

/// `mkosi.conf` then `mkosi.conf.d/*.conf` in name order, parsed.
fn config_files(dir: &Path) -> Result<Vec<(PathBuf, Vec<Entry>)>, ProjectError> {
    let mut files = vec![dir.join("mkosi.conf")];
    let d = dir.join("mkosi.conf.d");
    if d.is_dir() {
        let mut more: Vec<PathBuf> = read_dir(&d)?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        more.sort();
        files.extend(more);
    }
    let mut out = Vec::new();
    for f in files.into_iter().filter(|f| f.is_file()) {
        let text = fs::read_to_string(&f).map_err(|source| ProjectError::Io {
            path: f.clone(),
            source,
        })?;
        let entries = unit::parse(&f, &text, &unit::MKOSI)?;
        out.push((f, entries));
    }
    Ok(out)
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, ProjectError> {
    let rd = fs::read_dir(dir).map_err(|source| ProjectError::Io {
        path: dir.to_owned(),
        source,
    })?;
    Ok(rd.filter_map(|e| Some(e.ok()?.path())).collect())
}

/// mkosi's script hooks would change the tree; we cannot run them.
fn refuse_scripts(dir: &Path) -> Result<(), ProjectError> {
    for script in [
        "mkosi.sync",
        "mkosi.prepare",
        "mkosi.build",
        "mkosi.postinst",
        "mkosi.finalize",
        "mkosi.postoutput",
        "mkosi.skeleton",
    ] {
        let p = dir.join(script);
        if p.exists() {
            return Err(ProjectError::Project(format!(
                "{}: not supported: {NO_SCRIPTS}",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Applies one file's entries to `s`.
fn apply(s: &mut Settings, file: &Path, entries: &[Entry]) -> Result<(), ProjectError> {
    let here = file.parent().unwrap_or(Path::new("."));
    for e in entries {
        let bad = |why: &str| ProjectError::Value {
            path: file.to_owned(),
            line: e.line,
            key: e.key.clone(),
            value: e.value.clone(),
            why: why.to_owned(),
        };
        let unsupported = |alternative: &str| ProjectError::Unsupported {
            path: file.to_owned(),
            line: e.line,
            key: e.key.clone(),
            alternative: alternative.to_owned(),
        };
        let v = e.value.as_str();
        if e.section == "Match" {
            return Err(unsupported(
                "conditional configuration is not evaluated; keep one configuration per image",
            ));
        }
        match e.key.as_str() {
            "Dependencies" => set_list(&mut s.dependencies, v),
            "Format" => {
                s.format =
                    match v {
                        "directory" => Some(Format::Directory),
                        "disk" => Some(Format::Disk),
                        "sysext" => Some(Format::Sysext),
                        "cpio" => Some(Format::Cpio),
                        "none" => None,
                        _ => return Err(unsupported(
                            "we build directory, sysext, disk (with mkosi.repart/) and cpio images",
                        )),
                    }
            }
            "Output" => s.output = Some(v.to_owned()),
            "OutputDirectory" => s.output_dir = Some(here.join(v)),
            "ImageId" => s.image_id = Some(v.to_owned()),
            "ImageVersion" => s.image_version = Some(v.to_owned()),
            "Overlay" => s.overlay = unit::boolean(v).ok_or_else(|| bad("expected a boolean"))?,
            "BaseTrees" => set_paths(&mut s.base_trees, v, here),
            "ExtraTrees" => set_paths(&mut s.extra_trees, v, here),
            "MakeInitrd" => {
                unit::boolean(v).ok_or_else(|| bad("expected a boolean"))?;
            }
            "CompressOutput" => {
                s.compress = match v {
                    "zstd" | "zst" => true,
                    _ => unit::boolean(v).ok_or_else(|| bad("expected zstd or a boolean"))?,
                }
            }
            "Verity" => {
                s.verity = match v {
                    "yes" | "signed" => Some(VerityMode::Signed),
                    "hash" => Some(VerityMode::Hash),
                    "defer" => Some(VerityMode::Defer),
                    "no" | "false" | "off" => Some(VerityMode::Off),
                    "auto" | "" => None,
                    _ => return Err(bad("expected yes, signed, hash, defer, auto or no")),
                }
            }
            "VerityKey" => s.verity_key = Some(here.join(v)),
            "VerityCertificate" => s.verity_cert = Some(here.join(v)),
            "SourceDateEpoch" => {
                s.source_date_epoch = Some(
                    v.parse()
                        .map_err(|_| bad("expected seconds since the epoch"))?,
                )
            }
            "Architecture" => {
                if Arch::from_name(v) != Some(Arch::host()) {
                    return Err(bad(&format!(
                        "only the host's architecture ({}) is built",
                        Arch::host().name()
                    )));
                }
            }
            "Environment" => {
                for kv in unit::list(v) {
                    match kv.split_once('=') {
                        Some(("SYSTEMD_REPART_OVERRIDE_FSTYPE_ROOT", "squashfs")) => {
                            s.fs = Some(FsKind::Squashfs)
                        }
                        Some(("SYSTEMD_REPART_OVERRIDE_FSTYPE_ROOT", "erofs")) => {
                            s.fs = Some(FsKind::Erofs)
                        }
                        _ => warn!(
                            "{}:{}: Environment={kv}: no effect on what we build",
                            file.display(),
                            e.line
                        ),
                    }
                }
            }
            "Packages" | "BuildPackages" | "VolatilePackages" | "Distribution" | "Release"
            | "Repositories" | "Mirror" | "PackageDirectories" | "WithRecommends" => {
                return Err(unsupported(NO_PACKAGES))
            }
            "BuildScripts"
            | "PrepareScripts"
            | "PostInstallationScripts"
            | "FinalizeScripts"
            | "SyncScripts"
            | "PostOutputScripts"
            | "SkeletonTrees" => return Err(unsupported(NO_SCRIPTS)),
            k if IGNORED.contains(&k) => {
                info!("{}:{}: {k}= has no effect here", file.display(), e.line)
            }
            _ => {
                return Err(unsupported(
                    "not a setting initrd-sysext knows; see README, build --directory",
                ))
            }
        }
    }
    Ok(())
}

/// An empty assignment resets a list; otherwise items are appended.
fn set_list(list: &mut Vec<String>, v: &str) {
    if v.is_empty() {
        list.clear();
    }
    list.extend(unit::list(v));
}

/// Like [`set_list`], relative paths (before a `:DST`) taken against `here`; `%` specifiers
/// are expanded later, so paths starting with one stay as they are.
fn set_paths(list: &mut Vec<String>, v: &str, here: &Path) {
    if v.is_empty() {
        list.clear();
    }
    for item in unit::list(v) {
        if item.starts_with(['/', '%']) {
            list.push(item);
        } else {
            list.push(here.join(&item).to_string_lossy().into_owned());
        }
    }
}

/// Indexes of `images` with every image after its dependencies (ties by name).
fn build_order(images: &[(String, PathBuf, Settings)]) -> Result<Vec<usize>, ProjectError> {
    let index: BTreeMap<&str, usize> = images
        .iter()
        .enumerate()
        .map(|(i, (n, _, _))| (n.as_str(), i))
        .collect();
    for (name, _, s) in images {
        if let Some(d) = s
            .dependencies
            .iter()
            .find(|d| !index.contains_key(d.as_str()))
        {
            return Err(ProjectError::Project(format!(
                "image {name}: Dependencies={d}: no such image in mkosi.images/"
            )));
        }
    }
    let mut done: Vec<usize> = Vec::new();
    while done.len() < images.len() {
        let ready = (0..images.len()).find(|&i| {
            !done.contains(&i)
                && images[i]
                    .2
                    .dependencies
                    .iter()
                    .all(|d| done.contains(&index[d.as_str()]))
        });
        match ready {
            Some(i) => done.push(i),
            None => {
                let left: Vec<&str> = (0..images.len())
                    .filter(|i| !done.contains(i))
                    .map(|i| images[i].0.as_str())
                    .collect();
                return Err(ProjectError::Project(format!(
                    "Dependencies= form a cycle among: {}",
                    left.join(", ")
                )));
            }
        }
    }
    Ok(done)
}

/// `%O` (output directory), `%a` (architecture), `%v` (ImageVersion), `%i` (ImageId), `%%`.
fn expand(text: &str, out_dir: &Path, s: &Settings, image: &str) -> Result<String, ProjectError> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let missing = |what: &str| {
            ProjectError::Project(format!(
                "image {image}: {text:?} uses {what}, which is not set"
            ))
        };
        match chars.next() {
            Some('O') => out.push_str(&out_dir.to_string_lossy()),
            Some('a') => out.push_str(Arch::host().name()),
            Some('v') => out.push_str(
                s.image_version
                    .as_deref()
                    .ok_or_else(|| missing("%v (ImageVersion=)"))?,
            ),
            Some('i') => out.push_str(
                s.image_id
                    .as_deref()
                    .ok_or_else(|| missing("%i (ImageId=)"))?,
            ),
            Some('%') => out.push('%'),
            other => {
                return Err(ProjectError::Project(format!(
                    "image {image}: {text:?}: unknown specifier %{}",
                    other.map(String::from).unwrap_or_default()
                )))
            }
        }
    }
    Ok(out)
}

fn resolve(
    name: &str,
    dir: &Path,
    s: &Settings,
    out_default: &Path,
    default_key: &(PathBuf, PathBuf),
) -> Result<Image, ProjectError> {
    let format = s.format.unwrap_or(Format::Disk);
    let out_dir = s
        .output_dir
        .clone()
        .unwrap_or_else(|| out_default.to_owned());
    let stem = match &s.output {
        Some(o) => expand(o, &out_dir, s, name)?,
        None => s.image_id.clone().unwrap_or_else(|| name.to_owned()),
    };
    let file = match (format, s.compress) {
        (Format::Directory, _) => stem.clone(),
        (Format::Disk | Format::Sysext, _) => format!("{stem}.raw"),
        (Format::Cpio, true) => format!("{stem}.cpio.zst"),
        (Format::Cpio, false) => format!("{stem}.cpio"),
    };
    let mut sources = Vec::new();
    for b in &s.base_trees {
        sources.push((PathBuf::from(expand(b, &out_dir, s, name)?), "/".to_owned()));
    }
    for x in &s.extra_trees {
        sources.push(extra_tree(&expand(x, &out_dir, s, name)?));
    }
    let extra = dir.join("mkosi.extra");
    if extra.is_dir() {
        sources.push((extra, "/".to_owned()));
    }
    let base = match (s.overlay, s.base_trees.len()) {
        (false, _) => None,
        (true, 1) => Some(sources[0].0.clone()),
        (true, n) => {
            return Err(ProjectError::Project(format!(
                "image {name}: Overlay=yes needs exactly one BaseTrees= entry (has {n})"
            )))
        }
    };
    if sources.is_empty() {
        return Err(ProjectError::Project(format!(
            "image {name}: no content: set BaseTrees= or ExtraTrees=, or add mkosi.extra/ ({NO_PACKAGES})"
        )));
    }
    if format == Format::Disk && !dir.join("mkosi.repart").is_dir() {
        return Err(ProjectError::Project(format!(
            "image {name}: Format=disk needs {}/mkosi.repart/ definitions (we build extension \
             images, not bootable disks); or use Format=sysext",
            dir.display()
        )));
    }
    let signing = match (&s.verity_key, &s.verity_cert) {
        (Some(k), Some(c)) => Some((k.clone(), c.clone())),
        (None, None) if default_key.0.is_file() && default_key.1.is_file() => {
            Some(default_key.clone())
        }
        (None, None) => None,
        _ => {
            return Err(ProjectError::Project(format!(
                "image {name}: VerityKey= and VerityCertificate= go together"
            )))
        }
    };
    Ok(Image {
        name: name.to_owned(),
        format,
        output: out_dir.join(file),
        dir: dir.to_owned(),
        sources,
        base,
        version: s.image_version.clone(),
        verity: s.verity,
        signing,
        source_date_epoch: s.source_date_epoch,
        fs: s.fs,
        compress: s.compress,
    })
}

/// Builds every planned image in order; returns the outputs.
/// `init` is the static binary cpio images get as `/init` (ours, by default).
pub fn build(images: &[Image], init: &Path, force: bool) -> Result<Vec<PathBuf>, ProjectError> {
    let mut outputs = Vec::new();
    for image in images {
        if let Some(parent) = image.output.parent() {
            fs::create_dir_all(parent).map_err(|source| ProjectError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        info!(
            "image {}: {:?} -> {}",
            image.name,
            image.format,
            image.output.display()
        );
        match image.format {
            Format::Directory => directory_image(image, force)?,
            Format::Disk | Format::Sysext => sysext_image(image, force)?,
            Format::Cpio => cpio_image(image, init, force)?,
        }
        outputs.push(image.output.clone());
    }
    Ok(outputs)
}

/// The image's trees layered in order (later ones win, directories merge), as mkosi does.
fn composed(image: &Image) -> Result<Tree, ProjectError> {
    let opts = ScanOptions {
        clamp_mtime: image.source_date_epoch,
    };
    let tree_err = |source| ProjectError::Tree {
        image: image.name.clone(),
        source,
    };
    let (first, rest) = image
        .sources
        .split_first()
        .expect("resolve checked sources");
    let scanned = Tree::scan(&first.0, &opts).map_err(tree_err)?;
    let mut tree = Tree::new(scanned.root().meta.clone());
    tree.graft(&scanned, &first.1).map_err(tree_err)?;
    tree.graft_all(rest, &opts).map_err(tree_err)?;
    Ok(tree)
}

/// Written beside the target and renamed over it: a failed build leaves the old one.
fn directory_image(image: &Image, force: bool) -> Result<(), ProjectError> {
    let tree = composed(image)?;
    let target = &image.output;
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let temp = target.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_dir_all(&temp);
    let dir_err = |source| ProjectError::Directory {
        image: image.name.clone(),
        source,
    };
    if let Err(e) = directory::write(&tree, &temp) {
        let _ = fs::remove_dir_all(&temp);
        return Err(dir_err(e));
    }
    let io = |source| ProjectError::Io {
        path: target.clone(),
        source,
    };
    if target.exists() {
        if !force {
            let _ = fs::remove_dir_all(&temp);
            return Err(ProjectError::Exists(target.clone()));
        }
        fs::remove_dir_all(target).map_err(io)?;
    }
    fs::rename(&temp, target).map_err(io)
}

fn sysext_image(image: &Image, force: bool) -> Result<(), ProjectError> {
    let (first, rest) = image
        .sources
        .split_first()
        .expect("resolve checked sources");
    if first.1 != "/" {
        return Err(ProjectError::Project(format!(
            "image {}: the first tree ({}) must go to / (BaseTrees=, or ExtraTrees= without :DST)",
            image.name,
            first.0.display()
        )));
    }
    let stem = image
        .output
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy();
    let flags = Flags {
        fs: image.fs,
        verity: image.verity,
        ..Flags::default()
    };
    let definitions = (image.format == Format::Disk).then(|| image.dir.join("mkosi.repart"));
    let layout = repart::layout(flags, definitions.as_deref(), image.signing.is_some()).map_err(
        |source| ProjectError::Repart {
            image: image.name.clone(),
            source,
        },
    )?;
    let mut spec = Spec::new(
        first.0.clone(),
        stem.into_owned(),
        image.output.clone(),
        layout,
    );
    spec.extra_trees = rest.to_vec();
    spec.base = image.base.clone();
    spec.version = image.version.clone();
    // mkosi writes no SYSEXT_SCOPE: systemd's default; the tree's release file may set one.
    spec.scope = "system portable".into();
    spec.signing = image.signing.clone();
    spec.force = force;
    spec.source_date_epoch = image.source_date_epoch;
    let r = sysext::build(&spec).map_err(|source| ProjectError::Sysext {
        image: image.name.clone(),
        source,
    })?;
    if let Some(rh) = &r.root_hash {
        info!("image {}: root hash {rh}", image.name);
    }
    Ok(())
}

fn cpio_image(image: &Image, init: &Path, force: bool) -> Result<(), ProjectError> {
    let spec = initrd::Spec {
        tree: None,
        extra_trees: image.sources.clone(),
        init: init.to_owned(),
        compression: match image.compress {
            true => Compression::Zstd(3),
            false => Compression::None,
        },
        output: image.output.clone(),
        force,
        source_date_epoch: image.source_date_epoch,
        ..initrd::Spec::default()
    };
    initrd::build(&spec).map_err(|source| ProjectError::Initrd {
        image: image.name.clone(),
        source,
    })?;
    Ok(())
}
