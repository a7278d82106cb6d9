//! Activating one extension: a directory as it is; an image dissected, its protection chosen by
//! the image policy, set up as loop (+ dm-verity, signature checked by the kernel keyring),
//! mounted read-only in a staging directory, and its extension-release checked against the host.
//! Everything set up is torn down again when a step fails.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use log::{debug, info, warn};
use rustix::fs::OFlags;
use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

use crate::format::gpt::{Arch, Designator};
use crate::format::release::{self, Class, Host, Incompatible, Release, Scope, SelectError};
use crate::format::signature;
use crate::image::dissect::{self, DissectError, Dissected, FsType, HashSource, Protection};
use crate::image::fs::{self, Dir, ReleaseError};
use crate::image::measure;
use crate::runtime::discover::{EntryKind, Found};
use crate::runtime::dm::{self, DmError, VerityTable};
use crate::runtime::keyring::{self, KeyError, Keyring};
use crate::runtime::loopdev::{self, LoopDevice, LoopError};
use crate::runtime::mutable::Mutable;
use crate::runtime::policy::{Policy, Refusal};

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error(transparent)]
    Dissect(#[from] DissectError),
    #[error("image policy: {0}")]
    Policy(#[from] Refusal),
    #[error(transparent)]
    Loop(#[from] LoopError),
    #[error(transparent)]
    Dm(#[from] DmError),
    #[error("signature key: {0}")]
    Key(#[from] KeyError),
    #[error("signature refused in userspace: {0}")]
    Signature(String),
    #[error("root hash does not match the data: reading the first block failed ({0})")]
    FirstBlock(std::io::Error),
    #[error("mounting {fs} from {dev} on {target}: {source}")]
    Mount {
        fs: String,
        dev: String,
        target: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Layout(String),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error("extension-release {path}: {reason}")]
    Release { path: String, reason: String },
    #[error("not compatible with this host: {0}")]
    Incompatible(#[from] Incompatible),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the host offers to check extensions against.
pub struct Context {
    pub root: PathBuf,
    pub scope: Scope,
    pub arch: Arch,
    pub host_release: Release,
    /// An explicit policy, or None for the defaults (systemd's, strict for /.extra).
    pub policy: Option<Policy>,
    /// May a signature be checked with OpenSSL when the kernel cannot?
    pub userspace_verity: bool,
    /// Where images are mounted (a tmpfs, e.g. /run/initrd-sysext).
    pub staging: PathBuf,
    /// System extensions or configuration extensions.
    pub class: Class,
    /// `--force`: merge even when the extension-release does not match the host or the
    /// extension carries an os-release.
    pub force: bool,
    /// `--noexec`: mount the merged hierarchies noexec (None: the class's default, noexec
    /// for a confext only).
    pub noexec: Option<bool>,
    /// `--mutable`: whether and how the merged hierarchies take writes.
    pub mutable: Mutable,
}

/// An activated extension: where its hierarchies are. Dropping it undoes what it set up: the
/// staging mount is detached lazily (an overlay using it keeps it alive) and the dm device
/// removed when its last user goes.
#[derive(Debug)]
pub struct Activated {
    pub name: String,
    pub kind: EntryKind,
    pub path: PathBuf,
    /// The tree holding `usr/`, `opt/` (for a usr partition: the tree that is `/usr`).
    pub top: PathBuf,
    pub usr_only: bool,
    pub protection: Protection,
    pub signer: Option<String>,
    /// What measured boot extends PCR 13 with for it (`sysext:NAME:ROOTHASH:FINGERPRINT`).
    pub event: String,
    /// `top`, held open: everything in the extension is resolved inside it.
    tree: Dir,
    /// The staging mount, if we mounted something (dropped before the device below it).
    _staging: Option<Staging>,
    _dm: Option<dm::DmDevice>,
}

/// A read-only staging mount of an image, lazily detached and its directory removed on drop.
#[derive(Debug)]
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = unmount(&self.0, UnmountFlags::DETACH) {
            debug!("detaching {}: {e}", self.0.display());
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

impl Activated {
    pub fn has_hierarchy(&self, hierarchy: &str) -> bool {
        self.hierarchy(hierarchy).is_some()
    }

    /// The directory providing `hierarchy` (e.g. "usr", "opt"), if this extension has it,
    /// opened (O_PATH) with symlinks resolved inside the extension: `usr -> /usr` is the
    /// extension's own /usr (here itself: a loop), never the host's.
    pub fn hierarchy(&self, hierarchy: &str) -> Option<OwnedFd> {
        let rel = match self.usr_only {
            true if hierarchy == "usr" => "",
            true => return None,
            false => hierarchy,
        };
        match self.tree.open_in(rel, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => Some(fd),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => None,
            Err(e) => {
                warn!("{}: /{hierarchy} not merged: {e}", self.name);
                None
            }
        }
    }
}

/// Activates `found`; on error nothing it set up is left behind.
pub fn activate(ctx: &Context, found: &Found) -> Result<Activated, ActivateError> {
    let activated = match found.kind {
        EntryKind::Directory => Activated {
            name: found.name.clone(),
            kind: found.kind,
            path: found.path.clone(),
            top: found.resolved.clone(),
            usr_only: false,
            protection: Protection::Unprotected,
            signer: None,
            event: measure::event(ctx.class, &found.name, None, Protection::Unprotected),
            tree: open_tree(&found.resolved)?,
            _staging: None,
            _dm: None,
        },
        _ => activate_image(ctx, found)?,
    };
    check_release(ctx, &activated)?;
    Ok(activated)
}

/// The policy for an entry: the explicit one, or systemd's default for the class (strict
/// under /.extra).
fn policy_for(ctx: &Context, found: &Found) -> Policy {
    let strict = found.path.starts_with(ctx.root.join(".extra"));
    match &ctx.policy {
        Some(p) => p.clone(),
        None => Policy::default_for(ctx.class, strict),
    }
}

fn activate_image(ctx: &Context, found: &Found) -> Result<Activated, ActivateError> {
    let d = dissect::dissect(&found.resolved, Some(ctx.arch))?;
    debug!(
        "{}: dissected ({} at {})",
        found.name,
        d.fs.name(),
        d.data.offset
    );
    let designator = d.designator.unwrap_or(Designator::Root);
    let offered = Protection::offered(&d);
    let policy = policy_for(ctx, found);
    let level = policy.decide(designator.name(), offered)?;
    let other = match designator {
        Designator::Root => Designator::Usr,
        Designator::Usr => Designator::Root,
    };
    if !policy.allows_absent(other.name()) {
        return Err(ActivateError::Layout(format!(
            "the image policy requires a {} partition, and the image has none",
            other.name()
        )));
    }
    let file = File::open(&found.resolved).map_err(|source| ActivateError::Io {
        path: found.resolved.clone(),
        source,
    })?;
    let data = loopdev::attach(&file, d.data.offset, d.data.size)?;
    debug!("{}: data on {}", found.name, data.path().display());
    let (dev, dm, signer) = match level {
        Protection::Unprotected => (data.path().to_owned(), None, None),
        _ => {
            let (dm_dev, signer) = verity(ctx, found, &d, &file, &data, level)?;
            (dm_dev.path(), Some(dm_dev), signer)
        }
    };
    let target = ctx.staging.join("images").join(&found.name);
    mount_ro(&dev, &target, d.fs)?;
    let staging = Staging(target.clone());
    drop(data); // autoclear: the loop device goes when the mount (or dm) lets go of it
    let tree = open_tree(&target)?;
    info!(
        "{}: {} {} image, {:?}{}",
        found.name,
        d.fs.name(),
        designator.name(),
        level,
        signer
            .as_deref()
            .map(|s| format!(", signed by {s}"))
            .unwrap_or_default()
    );
    Ok(Activated {
        name: found.name.clone(),
        kind: found.kind,
        path: found.path.clone(),
        top: target.clone(),
        usr_only: designator == Designator::Usr,
        protection: level,
        signer,
        event: measure::event(ctx.class, &found.name, Some(&d), level),
        tree,
        _staging: Some(staging),
        _dm: dm,
    })
}

/// A dm-verity device over `data`, signature checked by the kernel (or, where allowed and the
/// kernel cannot, by OpenSSL against the verity.d certificates). Returns it and the signer.
fn verity(
    ctx: &Context,
    found: &Found,
    d: &Dissected,
    file: &File,
    data: &LoopDevice,
    level: Protection,
) -> Result<(dm::DmDevice, Option<String>), ActivateError> {
    let params = d
        .verity
        .as_ref()
        .ok_or_else(|| ActivateError::Layout("no verity superblock".into()))?;
    let root_hash = d
        .root_hash_hex()
        .ok_or_else(|| ActivateError::Layout("no root hash".into()))?;
    if let Some(uuid_hash) = &d.uuid_root_hash {
        if d.root_hash.as_ref() != Some(uuid_hash) {
            return Err(ActivateError::Layout(format!(
                "the signature is for root hash {root_hash} but the partition UUIDs carry {}",
                crate::format::hex::encode(uuid_hash)
            )));
        }
    }
    let hash_loop = match &d.hash {
        Some(HashSource::Partition(r)) => loopdev::attach(file, r.offset, r.size)?,
        Some(HashSource::Sidecar(p)) => {
            let f = File::open(p).map_err(|source| ActivateError::Io {
                path: p.clone(),
                source,
            })?;
            loopdev::attach(&f, 0, 0)?
        }
        None => return Err(ActivateError::Layout("no hash tree".into())),
    };
    let table = VerityTable {
        data_dev: data.devnum(),
        hash_dev: hash_loop.devnum(),
        data_block_size: params.data_block_size,
        hash_block_size: params.hash_block_size,
        data_blocks: params.data_blocks,
        hash_start_block: params.tree_offset() / params.hash_block_size as u64,
        algorithm: params.algorithm.clone(),
        root_hash: root_hash.clone(),
        salt: params.salt_hex(),
        sig_key_desc: None,
    };
    let name = dm_name(&found.name);
    let (dev, signer) = match (level, &d.signature) {
        (Protection::Signed, Some(sig)) => signed(ctx, &name, table, &sig.signature, &root_hash)?,
        _ => (dm::create_verity(&name, &table)?, None),
    };
    debug!("{}: dm-verity table loaded", found.name);
    first_block(&dev.path())?;
    Ok((dev, signer))
}

/// dm device names: `sysext-<name>`, with characters dm refuses replaced.
fn dm_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c == '/' { '_' } else { c })
        .take(100)
        .collect();
    format!("sysext-{clean}")
}

/// The kernel checks the PKCS#7 against its trusted keyrings during the table load.
fn signed(
    ctx: &Context,
    name: &str,
    mut table: VerityTable,
    pkcs7: &[u8],
    root_hash: &str,
) -> Result<(dm::DmDevice, Option<String>), ActivateError> {
    let desc = format!("initrd-sysext:{root_hash}");
    let key = keyring::Scoped(keyring::add_user_key(&desc, pkcs7, Keyring::Thread)?);
    table.sig_key_desc = Some(desc);
    let loaded = dm::create_verity(name, &table);
    drop(key);
    match loaded {
        Ok(dev) => Ok((dev, Some("kernel keyring".into()))),
        // As systemd: whatever the kernel refused (no signature support, a signer its keyrings
        // lack: ENOKEY on a distribution kernel), userspace may check it where allowed.
        Err(e) if table_load_failed(&e) && ctx.userspace_verity => {
            match kernel_lacks_signatures(&e) {
                true => {
                    info!("the kernel cannot check root-hash signatures: checking in userspace")
                }
                false => info!("the kernel refused the signature ({e}): checking in userspace"),
            }
            let signer = userspace_check(ctx, pkcs7, root_hash)?;
            table.sig_key_desc = None;
            Ok((dm::create_verity(name, &table)?, Some(signer)))
        }
        Err(e) if kernel_lacks_signatures(&e) => Err(ActivateError::Signature(
            "the kernel cannot check root-hash signatures (no DM_VERITY_VERIFY_ROOTHASH_SIG) \
             and userspace verification is not allowed (rd.sysext.userspace_verity=1)"
                .into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The kernel refused the table (with the signature) at load time.
fn table_load_failed(e: &DmError) -> bool {
    matches!(
        e,
        DmError::Ioctl {
            ioctl: dm::DmIoctl::TableLoad,
            ..
        }
    )
}

/// EINVAL on the table load with a signature: a kernel without DM_VERITY_VERIFY_ROOTHASH_SIG.
fn kernel_lacks_signatures(e: &DmError) -> bool {
    matches!(e, DmError::Ioctl { ioctl: dm::DmIoctl::TableLoad, errno, .. } if *errno == rustix::io::Errno::INVAL)
}

fn userspace_check(ctx: &Context, pkcs7: &[u8], root_hash: &str) -> Result<String, ActivateError> {
    let dirs: Vec<PathBuf> = crate::image::certs::VERITY_DIRS
        .iter()
        .map(|d| ctx.root.join(d.trim_start_matches('/')))
        .collect();
    let certs = crate::image::certs::certs_in_dirs(&dirs)
        .map_err(|e| ActivateError::Signature(e.to_string()))?;
    let cert = signature::verify(pkcs7, root_hash, &certs)
        .map_err(|e| ActivateError::Signature(e.to_string()))?;
    let fp = signature::fingerprint(&cert).map_err(|e| ActivateError::Signature(e.to_string()))?;
    Ok(format!("{} ({fp}, userspace)", signature::subject(&cert)))
}

/// A validly signed but wrong root hash loads fine and only fails on read: read block 0 now.
fn first_block(dev: &Path) -> Result<(), ActivateError> {
    let f = File::open(dev).map_err(ActivateError::FirstBlock)?;
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, 0)
        .map_err(ActivateError::FirstBlock)
}

fn mount_ro(dev: &Path, target: &Path, fs: FsType) -> Result<(), ActivateError> {
    let fstype = match fs {
        FsType::Unknown => return Err(ActivateError::Layout("unknown filesystem".into())),
        t => t.name(),
    };
    std::fs::create_dir_all(target).map_err(|source| ActivateError::Io {
        path: target.to_owned(),
        source,
    })?;
    let flags = MountFlags::RDONLY | MountFlags::NODEV;
    mount(dev, target, fstype, flags, None).map_err(|e| ActivateError::Mount {
        fs: fstype.into(),
        dev: dev.display().to_string(),
        target: target.display().to_string(),
        source: e.into(),
    })
}

fn open_tree(path: &Path) -> Result<Dir, ActivateError> {
    Dir::open(path).map_err(|source| ActivateError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads the extension's extension-release and checks it against the host (SPEC §3); with
/// `--force` a missing, unreadable or mismatching release only warns, as in systemd. A
/// `usr/lib/os-release` in it makes it an OS image, refused (a confext too, as systemd 262
/// does; a confext's `etc/os-release` is allowed, as there).
fn check_release(ctx: &Context, a: &Activated) -> Result<(), ActivateError> {
    let os_release = match a.usr_only {
        true => "lib/os-release",
        false => "usr/lib/os-release",
    };
    if a.tree.open_in(os_release, OFlags::PATH).is_ok() {
        return Err(ActivateError::Layout(
            "it holds usr/lib/os-release: an OS image, not an extension".into(),
        ));
    }
    match release_matches(ctx, a) {
        Err(e) if ctx.force => {
            log::warn!("{}: {e}; merging anyway (--force)", a.name);
            Ok(())
        }
        other => other,
    }
}

fn release_matches(ctx: &Context, a: &Activated) -> Result<(), ActivateError> {
    let dir = match a.usr_only {
        true => "lib/extension-release.d",
        false => ctx.class.release_dir(),
    };
    let (path, text) = match fs::release_file(&a.tree, dir, &a.name) {
        Ok(found) => found,
        Err(ReleaseError::Select(e)) => return Err(e.into()),
        Err(ReleaseError::Read { path, reason }) => {
            let path = a.top.join(path).display().to_string();
            return Err(ActivateError::Release { path, reason });
        }
    };
    let ext = Release::parse(&text).map_err(|e| ActivateError::Release {
        path: a.top.join(&path).display().to_string(),
        reason: e.to_string(),
    })?;
    let host = Host {
        class: ctx.class,
        release: &ctx.host_release,
        scope: ctx.scope,
        arch: ctx.arch,
    };
    Ok(release::check(&ext, &host)?)
}
