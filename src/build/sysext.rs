//! `build sysext`: a directory tree (optionally reduced over a base tree) becomes a DDI —
//! GPT with the data filesystem, its dm-verity hash partition and the signature partition.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use log::{info, warn};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::build::modules::{self, Modules, ModulesError};
use crate::build::output::{self, Output, OutputError, Outputs};
use crate::format::gpt::{self, Arch, Designator, GptError, NewPartition, Role};
use crate::format::release::{self, Class, Release, ReleaseError};
use crate::format::signature::{self, SignatureError, SignatureJson};
use crate::format::uuid::Uuid;
use crate::format::verity::{self, VerityError};
use crate::format::{erofs, hex, squashfs};
use crate::image::certs::{self, KeyError};
use crate::image::fs::STRICT_XATTR;
use crate::tree::{Content, Kind, Meta, ScanOptions, Tree, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("writing erofs: {0}")]
    Erofs(#[from] erofs::Error),
    #[error("writing squashfs: {0}")]
    Squashfs(#[from] squashfs::Error),
    #[error(transparent)]
    Verity(#[from] VerityError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Gpt(#[from] GptError),
    #[error(transparent)]
    Modules(#[from] ModulesError),
    #[error("{path}: {source}")]
    Release { path: String, source: ReleaseError },
    #[error("{0}")]
    Invalid(String),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Erofs,
    Squashfs,
}

impl FsKind {
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Erofs => "erofs",
            FsKind::Squashfs => "squashfs",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerityMode {
    Off,
    /// Hash now, sign later (`initrd-sysext sign`): the signature partition is left zeroed.
    Defer,
    Hash,
    Signed,
}

impl VerityMode {
    /// The `--verity` value.
    pub fn name(self) -> &'static str {
        match self {
            VerityMode::Off => "off",
            VerityMode::Defer => "defer",
            VerityMode::Hash => "hash",
            VerityMode::Signed => "signed",
        }
    }
}

/// The top-level directories of the tree that the image carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hierarchies {
    pub usr: bool,
    pub opt: bool,
    /// A confext's only one.
    pub etc: bool,
}

impl Hierarchies {
    pub const ALL: Hierarchies = Hierarchies {
        usr: true,
        opt: true,
        etc: false,
    };
    pub const ETC: Hierarchies = Hierarchies {
        usr: false,
        opt: false,
        etc: true,
    };

    fn contains(self, name: &OsStr) -> bool {
        (self.usr && name == "usr") || (self.opt && name == "opt") || (self.etc && name == "etc")
    }

    fn describe(self) -> String {
        let names: Vec<&str> = [(self.usr, "usr/"), (self.opt, "opt/"), (self.etc, "etc/")]
            .into_iter()
            .filter_map(|(on, n)| on.then_some(n))
            .collect();
        match names.is_empty() {
            true => "nothing".into(),
            false => names.join(" and "),
        }
    }
}

/// A GPT label and attribute flags to write instead of the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionOverride {
    pub label: Option<String>,
    pub flags: Option<u64>,
}

/// Label and flag overrides per partition role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub data: PartitionOverride,
    pub verity: PartitionOverride,
    pub signature: PartitionOverride,
}

impl Overrides {
    fn get(&self, role: Role) -> &PartitionOverride {
        match role {
            Role::Data => &self.data,
            Role::Verity => &self.verity,
            Role::Signature => &self.signature,
        }
    }
}

/// Where ID / VERSION_ID / SYSEXT_LEVEL come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The base tree's os-release (or the tree's own, without a base).
    Derived,
    Explicit {
        id: String,
        version_id: Option<String>,
    },
    OsRelease(PathBuf),
}

/// How an image is laid out (`repart::layout` decides it from flags and definitions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub arch: Arch,
    pub fs: FsKind,
    pub designator: Designator,
    pub verity: VerityMode,
    /// Which of `usr/` and `opt/` the image carries (repart `CopyFiles=`).
    pub hierarchies: Hierarchies,
    /// GPT labels and flags other than the defaults (read-only, `root-x86-64…`).
    pub partitions: Overrides,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub tree: PathBuf,
    /// `--extra-tree SRC[:DST]`: trees copied over the tree at DST (default `/`).
    pub extra_trees: Vec<(PathBuf, String)>,
    pub base: Option<PathBuf>,
    /// Kernel modules (and firmware) added to the tree.
    pub modules: Option<Modules>,
    pub name: String,
    /// A system extension (usr/, opt/) or a configuration extension (etc/).
    pub class: Class,
    pub version: Option<String>,
    pub scope: String,
    pub identity: Identity,
    pub layout: Layout,
    pub signing: Option<(PathBuf, PathBuf)>,
    pub seed: Option<Uuid>,
    pub split: bool,
    pub output: PathBuf,
    pub force: bool,
    pub source_date_epoch: Option<i64>,
}

impl Spec {
    /// `build sysext`'s defaults around a layout: an `initrd`-scope image, identity derived
    /// from the trees, unsigned.
    pub fn new(tree: PathBuf, name: String, output: PathBuf, layout: Layout) -> Spec {
        Spec {
            tree,
            extra_trees: Vec::new(),
            base: None,
            modules: None,
            name,
            class: Class::Sysext,
            version: None,
            scope: "initrd".into(),
            identity: Identity::Derived,
            layout,
            signing: None,
            seed: None,
            split: false,
            output,
            force: false,
            source_date_epoch: None,
        }
    }
}

/// What was built.
#[derive(Debug)]
pub struct Report {
    pub output: PathBuf,
    pub seed: Uuid,
    pub files: usize,
    pub content_bytes: u64,
    pub fs_bytes: u64,
    pub image_bytes: u64,
    pub root_hash: Option<String>,
    pub fingerprint: Option<String>,
    pub seconds: f64,
}

/// Builds the image described by `spec`.
pub fn build(spec: &Spec) -> Result<Report, BuildError> {
    let start = Instant::now();
    validate(spec)?;
    let signer = load_signer(spec)?;
    let seed = spec.seed.unwrap_or_else(random_seed);
    let mtime = spec.source_date_epoch.unwrap_or_else(now);
    let tree = extension_tree(spec, mtime)?;
    info!(
        "{}: {} entries, {} bytes of file content",
        spec.name,
        tree.nodes.len(),
        tree.content_bytes()
    );
    // The image and its sidecars appear together or not at all.
    let sidecars = sidecars(spec);
    let targets: Vec<PathBuf> = std::iter::once(spec.output.clone())
        .chain(
            sidecars
                .iter()
                .map(|ext| output::sidecar(&spec.output, ext)),
        )
        .collect();
    let mut outs = Outputs::create(&targets, spec.force)?;
    let out = outs.get(0);
    let data_offset = if spec.split { 0 } else { gpt::FIRST_OFFSET };
    let fs_bytes = write_fs(spec, &tree, &out.file, data_offset, seed, mtime)?;
    let verity = hash_and_sign(spec, &out.file, data_offset, fs_bytes, seed, &signer)?;
    let image_bytes = match spec.split {
        true => fs_bytes,
        false => assemble_ddi(spec, out, seed, fs_bytes, verity.as_ref())?,
    };
    if let Some(v) = &verity {
        for (i, ext) in sidecars.iter().enumerate() {
            outs.get(i + 1).write_all(&sidecar_bytes(v, ext))?;
        }
    }
    outs.commit()?;
    Ok(Report {
        output: spec.output.clone(),
        seed,
        files: tree.nodes.len(),
        content_bytes: tree.content_bytes(),
        fs_bytes,
        image_bytes,
        root_hash: verity.as_ref().map(|v| hex::encode(&v.root_hash)),
        fingerprint: verity.and_then(|v| v.signature.map(|s| s.fingerprint)),
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn validate(spec: &Spec) -> Result<(), BuildError> {
    let bad = |m: String| Err(BuildError::Invalid(m));
    // Hidden names too: an image named so would be a hidden file.
    if !release::image_name_is_valid(&spec.name) || spec.name.starts_with('.') {
        return bad(format!(
            "--name {:?} is not a valid image name (a file name without control characters, \
             not starting with '.')",
            spec.name
        ));
    }
    if let Some(v) = spec
        .version
        .as_deref()
        .filter(|v| !release::version_is_valid(v))
    {
        return bad(format!(
            "--version {v:?} is not a valid version (ASCII letters, digits and .,_-+ only)"
        ));
    }
    if (spec.layout.verity == VerityMode::Signed) != spec.signing.is_some() {
        return bad("--verity signed needs --key and --cert (and they need it)".into());
    }
    if spec.class == Class::Confext && spec.layout.designator == Designator::Usr {
        return bad("a confext is a root partition (it carries etc/): drop --partition usr".into());
    }
    if spec.class == Class::Confext && spec.modules.is_some() {
        return bad("kernel modules go into a sysext, not a confext".into());
    }
    if spec.layout.designator == Designator::Usr && spec.layout.verity == VerityMode::Off {
        warn!("a usr partition without verity is accepted by systemd only under a permissive image policy");
    }
    Ok(())
}

fn load_signer(spec: &Spec) -> Result<Option<(PKey<Private>, X509)>, BuildError> {
    let Some((key, cert)) = &spec.signing else {
        return Ok(None);
    };
    Ok(Some(certs::load_pair(key, cert)?))
}

fn random_seed() -> Uuid {
    let mut b = [0u8; 16];
    openssl::rand::rand_bytes(&mut b).expect("the OpenSSL RNG works");
    Uuid(b).as_v4()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Scans the tree, keeps what the extension adds, and adds its extension-release file.
fn extension_tree(spec: &Spec, mtime: i64) -> Result<Tree, BuildError> {
    let scan = ScanOptions {
        clamp_mtime: spec.source_date_epoch,
    };
    let mut full = Tree::scan(&spec.tree, &scan)?;
    full.graft_all(&spec.extra_trees, &scan)?;
    let mut tree = keep_hierarchies(&full, spec.layout.hierarchies, spec.base.as_deref());
    if let Some(m) = &spec.modules {
        modules::add(&mut tree, m, spec.base.as_deref(), mtime)?;
    }
    let rel_path = format!(
        "{}/extension-release.{}",
        spec.class.release_dir(),
        spec.name
    );
    let release = extension_release(spec, &tree, &rel_path)?;
    let dir_meta = Meta::generated(0o755, mtime);
    let kind = Kind::File {
        size: release.len() as u64,
        content: Content::Bytes(release.into_bytes()),
    };
    let meta = tree.lookup(&rel_path).map(|id| tree.nodes[id].meta.clone());
    let mut meta = meta.unwrap_or_else(|| Meta::generated(0o644, mtime));
    if renamed(spec) {
        mark_not_strict(&mut meta);
    }
    tree.insert(&rel_path, meta, kind, &dir_meta)?;
    Ok(match spec.layout.designator {
        Designator::Root => tree,
        Designator::Usr => tree.subtree(tree.lookup("usr").expect("usr was just populated")),
    })
}

/// The image file is not `<name>.raw` (e.g. `--output NAME-%v.%a.raw`): systemd-sysext looks
/// for `extension-release.<file name>`, so the release file must say it accepts any name.
fn renamed(spec: &Spec) -> bool {
    let file = spec.output.file_name().map(|f| f.to_string_lossy());
    let differs = file
        .as_deref()
        .is_some_and(|f| crate::format::release::image_name(f) != spec.name);
    if differs {
        info!(
            "{}: the image file is not named {0}.raw; extension-release.{0} gets \
             user.extension-release.strict=false so systemd-sysext accepts it",
            spec.name
        );
    }
    differs
}

/// Sets `user.extension-release.strict` to false (replacing any value from the tree).
fn mark_not_strict(meta: &mut Meta) {
    let key = STRICT_XATTR.as_bytes();
    meta.xattrs.retain(|(k, _)| k != key);
    meta.xattrs.push((key.to_vec(), b"false".to_vec()));
    meta.xattrs.sort();
}

/// Keeps `hier` (`usr/` minus os-release, `opt/`) and, over a base, only what the base lacks
/// (mkosi `Overlay=yes`): non-directories present in the base are dropped, then directories
/// left empty that the base already has.
fn keep_hierarchies(full: &Tree, hier: Hierarchies, base: Option<&Path>) -> Tree {
    let dropped: Vec<String> = full
        .children(0)
        .iter()
        .map(|&c| String::from_utf8_lossy(&full.nodes[c].name).into_owned())
        .filter(|n| !hier.contains(OsStr::new(n)))
        .collect();
    if !dropped.is_empty() {
        warn!(
            "keeping only {}; leaving out: {}",
            hier.describe(),
            dropped.join(", ")
        );
    }
    let in_base = |rel: &Path| base.is_some_and(|b| std::fs::symlink_metadata(b.join(rel)).is_ok());
    let kept = full.retain(|t, id| {
        let rel = t.path(id);
        let top = rel.components().next().map(|c| c.as_os_str().to_owned());
        let carried = top.is_some_and(|c| hier.contains(&c));
        let dir = matches!(t.nodes[id].kind, Kind::Dir { .. });
        let os_release = ["usr/lib/os-release", "etc/os-release"].map(Path::new);
        carried && !os_release.contains(&rel.as_path()) && (dir || !in_base(&rel))
    });
    let pruned = match base {
        Some(b) => kept.prune_empty_dirs(|rel| b.join(rel).is_dir()),
        None => kept,
    };
    info!(
        "{} of {} entries kept ({} of {} bytes)",
        pruned.nodes.len(),
        full.nodes.len(),
        pruned.content_bytes(),
        full.content_bytes()
    );
    pruned
}

/// The extension-release file: the tree's own keys win; missing ones are filled in from the
/// identity source, the architecture, the scope, the name and the version.
fn extension_release(spec: &Spec, tree: &Tree, rel_path: &str) -> Result<String, BuildError> {
    let existing = match tree.lookup(rel_path).map(|id| &tree.nodes[id].kind) {
        Some(Kind::File { content, .. }) => {
            let text = String::from_utf8_lossy(&content.read()?).into_owned();
            parse_release(&spec.tree.join(rel_path), &text)?
        }
        _ => Release::default(),
    };
    let mut derived = Release::default();
    let class = spec.class;
    if existing.get("ID").is_none() {
        let (id, version_id, level) = identity(spec)?;
        derived.set("ID", &id);
        for (k, v) in [("VERSION_ID", version_id), (class.level_key(), level)] {
            if let Some(v) = v {
                derived.set(k, &v);
            }
        }
    }
    let (id_key, version_key) = class.id_keys();
    derived.set("ARCHITECTURE", spec.layout.arch.name());
    derived.set(class.scope_key(), &spec.scope);
    derived.set(id_key, &spec.name);
    if let Some(v) = &spec.version {
        derived.set(version_key, v);
    }
    let mut release = existing.clone();
    for (k, v) in derived.fields {
        if existing.get(&k).is_none() {
            release.set(&k, &v);
        }
    }
    Ok(release.render())
}

fn parse_release(path: &Path, text: &str) -> Result<Release, BuildError> {
    Release::parse(text).map_err(|source| BuildError::Release {
        path: path.display().to_string(),
        source,
    })
}

/// (ID, VERSION_ID, SYSEXT_LEVEL or CONFEXT_LEVEL) from the identity source.
fn identity(spec: &Spec) -> Result<(String, Option<String>, Option<String>), BuildError> {
    let file = match &spec.identity {
        Identity::Explicit { id, version_id } => return Ok((id.clone(), version_id.clone(), None)),
        Identity::OsRelease(p) => p.clone(),
        Identity::Derived => {
            let root = spec.base.as_ref().unwrap_or(&spec.tree);
            ["etc/os-release", "usr/lib/os-release"]
                .iter()
                .map(|p| root.join(p))
                .find(|p| p.exists())
                .ok_or_else(|| {
                    BuildError::Invalid(format!(
                        "{}: no etc/os-release or usr/lib/os-release to take ID and VERSION_ID from; \
                         pass --id/--version-id or --os-release",
                        root.display()
                    ))
                })?
        }
    };
    let text = std::fs::read_to_string(&file).map_err(|e| TreeError::Io {
        path: file.clone(),
        source: e,
    })?;
    let r = parse_release(&file, &text)?;
    let id = r
        .get("ID")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| BuildError::Invalid(format!("{}: has no ID=", file.display())))?;
    let get = |k| r.get(k).filter(|s| !s.is_empty()).map(str::to_owned);
    Ok((
        id.to_owned(),
        get("VERSION_ID"),
        get(spec.class.level_key()),
    ))
}

fn write_fs(
    spec: &Spec,
    tree: &Tree,
    file: &File,
    offset: u64,
    seed: Uuid,
    mtime: i64,
) -> Result<u64, BuildError> {
    let t = Instant::now();
    let len = match spec.layout.fs {
        FsKind::Erofs => {
            let opts = erofs::Options {
                uuid: Uuid::derive(&seed, "erofs-uuid").0,
                build_time: mtime,
            };
            erofs::write(tree, file, offset, &opts)?
        }
        FsKind::Squashfs => {
            let opts = squashfs::Options {
                build_time: mtime,
                level: squashfs::DEFAULT_LEVEL,
            };
            squashfs::write(tree, file, offset, &opts)?
        }
    };
    info!(
        "{}: {} bytes in {:.2}s",
        spec.layout.fs.name(),
        len,
        t.elapsed().as_secs_f64()
    );
    Ok(len)
}

/// The hash area (superblock + tree), root hash and signature of the data.
struct Verity {
    area: Vec<u8>,
    root_hash: [u8; 32],
    signature: Option<Signed>,
}

struct Signed {
    der: Vec<u8>,
    partition: Vec<u8>,
    fingerprint: String,
}

/// Hashes the filesystem at `offset` of `file` and signs the root hash (per `spec.layout.verity`).
fn hash_and_sign(
    spec: &Spec,
    file: &File,
    offset: u64,
    fs_bytes: u64,
    seed: Uuid,
    signer: &Option<(PKey<Private>, X509)>,
) -> Result<Option<Verity>, BuildError> {
    if spec.layout.verity == VerityMode::Off {
        return Ok(None);
    }
    let t = Instant::now();
    let salt = crate::format::uuid::hmac_sha256(&seed.0, b"verity-salt");
    let params = verity::Params::sha256(fs_bytes / 4096, salt, Uuid::derive(&seed, "verity-uuid"));
    let tree = verity::build(file, offset, &params)?;
    let mut area = params.superblock().to_vec();
    area.resize(params.tree_offset() as usize, 0);
    area.extend_from_slice(&tree.tree);
    let root_hash = tree.root_hash;
    info!(
        "verity: root hash {} in {:.2}s",
        hex::encode(&root_hash),
        t.elapsed().as_secs_f64()
    );
    let signature = match signer {
        Some((key, cert)) => Some(sign(&root_hash, key, cert)?),
        None => None,
    };
    Ok(Some(Verity {
        area,
        root_hash,
        signature,
    }))
}

fn sign(root_hash: &[u8], key: &PKey<Private>, cert: &X509) -> Result<Signed, BuildError> {
    let rh_hex = hex::encode(root_hash);
    let der = signature::sign(&rh_hex, key, cert)?;
    let fingerprint = signature::fingerprint(cert)?;
    let partition = SignatureJson {
        root_hash: rh_hex,
        certificate_fingerprint: Some(fingerprint.clone()),
        signature: der.clone(),
    }
    .encode()?;
    Ok(Signed {
        der,
        partition,
        fingerprint,
    })
}

fn write_at(file: &File, bytes: &[u8], offset: u64, path: &Path) -> Result<(), BuildError> {
    file.write_all_at(bytes, offset)
        .map_err(|source| BuildError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Lays out data, hash and signature partitions one after the other and writes the GPT;
/// UUIDs of data and hash partitions are the root hash halves. Returns the image size.
fn assemble_ddi(
    spec: &Spec,
    out: &mut Output,
    seed: Uuid,
    fs_bytes: u64,
    verity: Option<&Verity>,
) -> Result<u64, BuildError> {
    let (d, a) = (spec.layout.designator, spec.layout.arch);
    let part = |role, uuid, offset, size| {
        let custom = spec.layout.partitions.get(role);
        NewPartition {
            type_uuid: gpt::type_uuid(d, role, a),
            uuid,
            offset,
            size,
            flags: custom.flags.unwrap_or(gpt::FLAG_READ_ONLY),
            label: custom
                .label
                .clone()
                .unwrap_or_else(|| gpt::default_label(d, role, a)),
        }
    };
    let data_off = gpt::FIRST_OFFSET;
    let mut parts = Vec::new();
    match verity {
        None => parts.push(part(
            Role::Data,
            Uuid::derive(&seed, "data-uuid"),
            data_off,
            fs_bytes,
        )),
        Some(v) => {
            let half = |r: &[u8]| Uuid(r.try_into().expect("16 bytes"));
            let hash_off = data_off + fs_bytes;
            write_at(&out.file, &v.area, hash_off, &spec.output)?;
            parts.push(part(
                Role::Data,
                half(&v.root_hash[..16]),
                data_off,
                fs_bytes,
            ));
            parts.push(part(
                Role::Verity,
                half(&v.root_hash[16..]),
                hash_off,
                v.area.len() as u64,
            ));
            let sig_off = hash_off + v.area.len() as u64;
            let sig_part = |size| {
                part(
                    Role::Signature,
                    Uuid::derive(&seed, "verity-sig-uuid"),
                    sig_off,
                    size,
                )
            };
            if let Some(sig) = &v.signature {
                write_at(&out.file, &sig.partition, sig_off, &spec.output)?;
                parts.push(sig_part(sig.partition.len() as u64));
            } else if spec.layout.verity == VerityMode::Defer {
                // Zero-filled: `sign` writes the JSON here later, at the same place.
                parts.push(sig_part(signature::PARTITION_SIZE as u64));
            }
        }
    }
    let end = parts.last().map_or(data_off, |p| p.offset + p.size);
    let total = (end + gpt::BACKUP_BYTES).div_ceil(4096) * 4096;
    out.file.set_len(total).map_err(|source| BuildError::Io {
        path: spec.output.clone(),
        source,
    })?;
    gpt::write(&mut out.file, Uuid::derive(&seed, "disk-uuid"), &parts)?;
    Ok(total)
}

/// `--split`: `X.roothash`, `X.verity` and (signed) `X.roothash.p7s` beside the naked
/// filesystem `X.raw`; `--verity defer`: `X.roothash` beside the image.
fn sidecars(spec: &Spec) -> Vec<&'static str> {
    let mut exts = Vec::new();
    if spec.layout.verity == VerityMode::Off
        || !(spec.split || spec.layout.verity == VerityMode::Defer)
    {
        return exts;
    }
    exts.push("roothash");
    if spec.split {
        exts.push("verity");
    }
    if spec.layout.verity == VerityMode::Signed {
        exts.push("roothash.p7s");
    }
    exts
}

/// The content of sidecar `ext`.
fn sidecar_bytes<'a>(v: &'a Verity, ext: &str) -> std::borrow::Cow<'a, [u8]> {
    match (ext, &v.signature) {
        ("verity", _) => (&v.area[..]).into(),
        ("roothash.p7s", Some(sig)) => (&sig.der[..]).into(),
        _ => format!("{}\n", hex::encode(&v.root_hash))
            .into_bytes()
            .into(),
    }
}
