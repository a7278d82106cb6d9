//! Merging: each hierarchy (/usr, /opt; /etc for confexts) becomes an overlay of a meta layer,
//! the extensions (highest version on top) and the host's own tree, read-only or with an upper
//! directory (`--mutable`), exactly as systemd-sysext lays it out (`.systemd-sysext/extensions`,
//! `dev`, `backing`, `origin`, `work_dir`), so either tool can read or undo it.

use std::cell::Cell;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use log::{debug, error, info};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{
    mount, mount_bind, mount_change, mount_move, mount_remount, move_mount, open_tree, unmount,
    MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};
use rustix::process::fchdir;

use crate::format::lookup::Filesystem;
use crate::format::release::Class;
use crate::format::unit;
use crate::image::fs::Dir;
use crate::runtime::activate::{self, ActivateError, Activated, Context};
use crate::runtime::discover::{self, Found};
use crate::runtime::mutable::{self, Mutable};

/// The meta directory inside a hierarchy merged with extensions of `class`.
pub fn meta_dir(class: Class) -> &'static str {
    match class {
        Class::Sysext => ".systemd-sysext",
        Class::Confext => ".systemd-confext",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{0} is already merged (unmerge or refresh first)")]
    AlreadyMerged(String),
    #[error("mounting the overlay on {hierarchy}: {source}")]
    Overlay {
        hierarchy: String,
        source: std::io::Error,
    },
    #[error("{hierarchy}: {what}")]
    Limit { hierarchy: String, what: String },
    #[error("unmounting {hierarchy}: {source}")]
    Unmount {
        hierarchy: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--mutable={mode}: {what}")]
    Mutable { mode: &'static str, what: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MergeError + '_ {
    move |source| MergeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The hierarchies to merge: `SYSTEMD_SYSEXT_HIERARCHIES` (`SYSTEMD_CONFEXT_HIERARCHIES`),
/// colon-separated, or /usr and /opt (/etc).
pub fn hierarchies(class: Class) -> Vec<String> {
    let (var, default): (&str, &[&str]) = match class {
        Class::Sysext => ("SYSTEMD_SYSEXT_HIERARCHIES", &["usr", "opt"]),
        Class::Confext => ("SYSTEMD_CONFEXT_HIERARCHIES", &["etc"]),
    };
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v
            .split(':')
            .map(|h| h.trim_matches('/').to_owned())
            .filter(|h| !h.is_empty())
            .collect(),
        _ => default.iter().map(|h| h.to_string()).collect(),
    }
}

/// The outcome of a merge.
#[derive(Debug, Default)]
pub struct Report {
    /// (name, kind, path) of every merged extension, lowest first.
    pub merged: Vec<(String, &'static str, PathBuf)>,
    /// (name, reason) of every refused one.
    pub refused: Vec<(String, String)>,
    /// Hierarchies that now carry an overlay.
    pub hierarchies: Vec<String>,
}

/// Finds, activates and merges every extension under `ctx.root`. One bad extension is
/// refused (logged with its reason) and the others still merge. `activated` sees each
/// extension that will be merged, in merge order (lowest first), before any overlay is mounted.
pub fn merge(
    ctx: &Context,
    in_initrd: bool,
    activated: &mut dyn FnMut(&Activated),
) -> Result<Report, MergeError> {
    for h in &hierarchies(ctx.class) {
        if status_of(&ctx.root, ctx.class, h).is_some() {
            return Err(MergeError::AlreadyMerged(format!("/{h}")));
        }
    }
    let staged = Staged::new(ctx, in_initrd)?;
    staged.active.iter().for_each(activated);
    staged.overlay_all(ctx)
}

/// `refresh`: the extensions are activated first; when the merged hierarchies' `origin`
/// shows the same extensions from the same files in the same mode, nothing is done (None)
/// unless `always`; else the old merge goes and the new one takes its place.
pub fn refresh(ctx: &Context, in_initrd: bool, always: bool) -> Result<Option<Report>, MergeError> {
    let staged = Staged::new(ctx, in_initrd)?;
    let merged: Vec<String> = hierarchies(ctx.class)
        .into_iter()
        .filter(|h| status_of(&ctx.root, ctx.class, h).is_some())
        .collect();
    let same = !merged.is_empty()
        && merged.iter().all(|h| {
            let file = Path::new(h).join(meta_dir(ctx.class)).join("origin");
            let old = discover::chase(&ctx.root, &file)
                .and_then(|p| fs::read(p).ok())
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            old.as_ref() == Some(&staged.origin)
        });
    if same && !always {
        return Ok(None);
    }
    unmerge(&ctx.root, ctx.class)?;
    staged.overlay_all(ctx).map(Some)
}

/// The extensions of one merge, activated in a private workspace, before any overlay.
struct Staged {
    /// Dropped before the workspace: the overlays hold what they use, so dropping these lets
    /// the staging mounts and dm devices go with their last user, whatever the outcome.
    active: Vec<Activated>,
    report: Report,
    /// The `origin` meta file's contents for this set.
    origin: serde_json::Value,
    workspace: Workspace,
}

impl Staged {
    fn new(ctx: &Context, in_initrd: bool) -> Result<Staged, MergeError> {
        let found = discover::discover(&ctx.root, ctx.class, in_initrd);
        debug!("found {} extension(s)", found.len());
        let workspace = Workspace::new(&ctx.staging)?;
        raise_nofile();
        let mut report = Report::default();
        let mut active: Vec<Activated> = Vec::new();
        let mut origins = serde_json::Map::new();
        for f in &found {
            match activate::activate(ctx, f) {
                Ok(a) => {
                    origins.insert(f.name.clone(), origin_of(&ctx.root, f));
                    active.push(a);
                }
                Err(e) => refuse(&mut report, f, e),
            }
        }
        let origin = serde_json::json!({
            "mutable": mutable_origin(ctx),
            "extensions": origins,
        });
        Ok(Staged {
            active,
            report,
            origin,
            workspace,
        })
    }

    fn overlay_all(self, ctx: &Context) -> Result<Report, MergeError> {
        let Staged {
            active,
            mut report,
            origin,
            workspace,
        } = self;
        let origin = serde_json::to_string(&origin).unwrap_or_default() + "\n";
        for h in hierarchies(ctx.class) {
            // Highest first; each directory opened inside its extension when it is staged.
            let layers: Vec<&Activated> = active.iter().rev().collect();
            match overlay(ctx, &workspace, &h, &layers, &origin) {
                Ok(true) => report.hierarchies.push(format!("/{h}")),
                Ok(false) => {}
                Err(e) => {
                    // All or nothing, as systemd: the hierarchies merged so far go again.
                    undo(ctx, &report.hierarchies);
                    return Err(e);
                }
            }
        }
        report.merged = active
            .iter()
            .map(|a| (a.name.clone(), a.kind.name(), a.path.clone()))
            .collect();
        drop(active);
        drop(workspace);
        Ok(report)
    }
}

/// Unmounts the overlays (and meta bind mounts) this merge put on `hierarchies`.
fn undo(ctx: &Context, hierarchies: &[String]) {
    for h in hierarchies {
        let Some(target) = discover::chase(&ctx.root, Path::new(h.trim_start_matches('/'))) else {
            continue;
        };
        let _ = unmount(target.join(meta_dir(ctx.class)), UnmountFlags::DETACH);
        match unmount(&target, UnmountFlags::DETACH) {
            Ok(()) => info!("{h}: merge undone"),
            Err(e) => error!("undoing the merge of {h}: {e}"),
        }
    }
}

/// Where an extension came from, to tell a later refresh whether anything changed: its path
/// in the root and the identity of the file or directory found there.
fn origin_of(root: &Path, f: &Found) -> serde_json::Value {
    let path = Path::new("/").join(f.path.strip_prefix(root).unwrap_or(&f.path));
    let (dev, inode, mtime) = f.identity;
    serde_json::json!({ "path": path, "dev": dev, "inode": inode, "mtime": mtime })
}

/// The mode and each hierarchy's mutable directory that exists (so that a refresh after one
/// was made, e.g. under `auto`, is not skipped).
fn mutable_origin(ctx: &Context) -> serde_json::Value {
    if ctx.mutable == Mutable::No {
        return serde_json::json!({ "mode": "no" });
    }
    let dirs: serde_json::Map<String, serde_json::Value> = hierarchies(ctx.class)
        .iter()
        .map(|h| (format!("/{h}"), Path::new("/").join(mutable::dir(h))))
        .filter(|(_, d)| discover::chase(&ctx.root, d).is_some_and(|p| p.is_dir()))
        .map(|(h, d)| (h, serde_json::json!(d)))
        .collect();
    serde_json::json!({ "mode": ctx.mutable.name(), "mutableDirs": dirs })
}

/// Each activated extension holds its tree open: the soft limit of open files goes up to the
/// hard one (as systemd does), for a thousand extensions and more.
fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            debug!("raising the limit of open files: {e}");
        }
    }
}

/// The private workspace of one merge: a tmpfs (propagation private) mounted on `ctx.staging`
/// for the image mounts and meta layers. The overlays pin the layers they use, so when the
/// merge is done the workspace is detached and the directories created for it removed: as
/// with systemd's private workspace, a merge (with `--root` or not) leaves nothing in /run,
/// and an unmerge has nothing to clean up.
struct Workspace {
    dir: PathBuf,
    mounted: bool,
    /// Names handed out so far (for [`Workspace::name`]).
    named: Cell<usize>,
    /// The outermost directory created for it, if any.
    created: Option<PathBuf>,
}

impl Workspace {
    fn new(dir: &Path) -> Result<Workspace, MergeError> {
        let created = dir
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_err())
            .last()
            .map(Path::to_owned);
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut ws = Workspace {
            dir: dir.to_owned(),
            mounted: false,
            named: Cell::new(0),
            created,
        };
        let flags = MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOEXEC;
        mount("sysext", dir, "tmpfs", flags, Some(c"mode=0700")).map_err(|e| io(dir)(e.into()))?;
        ws.mounted = true;
        // Nothing mounted in it propagates out; and a mount can be moved out of it.
        mount_change(dir, MountPropagationFlags::PRIVATE).map_err(|e| io(dir)(e.into()))?;
        Ok(ws)
    }
}

impl Workspace {
    /// A new short name: `prefix` and a number in base 36.
    fn name(&self, prefix: &str) -> String {
        let mut n = self.named.replace(self.named.get() + 1);
        let mut digits = Vec::new();
        loop {
            digits.push(char::from_digit((n % 36) as u32, 36).unwrap());
            n /= 36;
            if n == 0 {
                break;
            }
        }
        prefix.chars().chain(digits.into_iter().rev()).collect()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = unmount(&self.dir, UnmountFlags::DETACH) {
                debug!("detaching {}: {e}", self.dir.display());
            }
        }
        if let Some(top) = &self.created {
            for d in self.dir.ancestors() {
                let _ = fs::remove_dir(d);
                if d == top {
                    break;
                }
            }
        }
    }
}

impl Report {
    /// `rd.sysext.required=`: fails on the first required extension that was refused, or —
    /// when `must_exist` — that was not merged at all.
    pub fn check_required(&self, required: &[String], must_exist: bool) -> Result<(), String> {
        for req in required {
            if let Some((_, why)) = self.refused.iter().find(|(n, _)| n == req) {
                return Err(format!("required extension {req} was refused: {why}"));
            }
            if must_exist && !self.merged.iter().any(|(n, _, _)| n == req) {
                return Err(format!("required extension {req} was not found"));
            }
        }
        Ok(())
    }
}

fn refuse(report: &mut Report, f: &Found, e: ActivateError) {
    error!("skipping extension {} ({}): {e}", f.name, f.path.display());
    report.refused.push((f.name.clone(), e.to_string()));
}

/// Lower layers one overlay takes (the kernel's OVL_MAX_STACK).
const OVL_MAX_STACK: usize = 500;
/// Mount options longer than this (one page, its NUL included) are cut short by the kernel.
const OPTIONS_MAX: usize = 4095;

/// Mounts the overlay for hierarchy `h` from the `layers` that have it (highest first);
/// false if none has it.
///
/// Each layer is mounted (a clone of the directory opened inside its extension, so the kernel
/// never resolves a path of the extension again) under a short name in the workspace, and the
/// options name the layers relative to it: a thousand extensions fit in the one page of mount
/// options. More than overlayfs's 500 lower layers are stacked as overlays of up to 500 each
/// (a whiteout then hides files of its own group only).
fn overlay(
    ctx: &Context,
    ws: &Workspace,
    h: &str,
    layers: &[&Activated],
    origin: &str,
) -> Result<bool, MergeError> {
    let hier = format!("/{h}");
    let provided = layers.iter().any(|a| a.has_hierarchy(h));
    if !provided && !mutable::merges_unused(&ctx.root, h, ctx.mutable) {
        return Ok(false);
    }
    let target = match discover::dir_inside(&ctx.root, Path::new(h)) {
        Ok(target) => target,
        Err(e) => {
            log::warn!("{hier} not merged: {e} (not a directory inside the root)");
            return Ok(false);
        }
    };
    let staged = ws.dir.join("l");
    fs::create_dir_all(&staged).map_err(io(&staged))?;
    let dir = rustix::fs::open(&staged, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| io(&staged)(e.into()))?;
    let mut fds = Vec::new();
    let mut merged = Vec::new();
    for a in layers {
        if let Some(fd) = a.hierarchy(h) {
            fds.push((fd, a));
            merged.push(a.name.as_str());
        }
    }
    let names = layer_names(ws, &staged, dir.as_fd(), h, &fds)?;
    if names.is_empty() && ctx.mutable == Mutable::No {
        return Ok(false);
    }
    let host = fs::metadata(&target).map_err(io(&target))?;
    let (meta, meta_path) = meta_layer(ctx, ws, &staged, layers, &host)?;
    let eph = ws.dir.join("e");
    let writes = mutable::layers(&ctx.root, h, &target, ctx.mutable, &eph).map_err(|what| {
        MergeError::Mutable {
            mode: ctx.mutable.name(),
            what,
        }
    })?;
    // Relative layer paths resolve from the staging directory.
    let _cwd = Cwd::enter(dir.as_fd()).map_err(|e| io(&staged)(e.into()))?;
    // The host's hierarchy is the bottom layer unless it is empty (or the upper itself).
    let backing =
        (!writes.upper_is_hierarchy && discover::has_entries(&target)).then(|| host.dev());
    let grouped = names.len() + 2 + writes.import.is_some() as usize > OVL_MAX_STACK;
    let bottom = backing.map(|_| target.as_path());
    let options = options(ws, &hier, meta, &writes, names, bottom)?;
    let flags = mount_flags(ctx, writes.upper.is_some());
    mount_over(ws, h, &target, flags, &options).map_err(|e| match grouped {
        true => MergeError::Limit {
            hierarchy: hier.clone(),
            what: format!(
                "mounting the overlay of {} extensions, stacked as overlays of up to \
                 {OVL_MAX_STACK}: {e} (the kernel stacks filesystems two deep at most: \
                 are the extensions on an overlay themselves?)",
                merged.len()
            ),
        },
        false => MergeError::Overlay {
            hierarchy: hier.clone(),
            source: e,
        },
    })?;
    let persistent = writes.upper.as_ref().filter(|_| !ctx.mutable.ephemeral());
    let meta = Meta {
        dir: &meta_path,
        backing,
        origin,
        work_dir: persistent.map(|(_, w)| w.strip_prefix(&ctx.root).unwrap_or(w)),
    };
    meta.write(&target)?;
    if writes.upper.is_some() {
        // The hierarchy takes writes, its meta directory must not: a read-only bind mount.
        let at = target.join(meta_dir(ctx.class));
        mount_bind(&at, &at)
            .and_then(|()| mount_remount(&at, flags | MountFlags::BIND | MountFlags::RDONLY, ""))
            .map_err(|e| io(&at)(e.into()))?;
    }
    info!(
        "merged {} extension(s) into {hier}{}: {}",
        merged.len(),
        match writes.upper {
            Some(_) => format!(" (--mutable={})", ctx.mutable.name()),
            None => String::new(),
        },
        merged.join(", ")
    );
    Ok(true)
}

/// The meta layer, on top, staged as `(name, its meta directory)`: its top directory (the
/// merged hierarchy's) keeps the host hierarchy's mode (not its owner, as systemd 262), and its
/// list names every extension merged, lowest first, as systemd's does.
fn meta_layer(
    ctx: &Context,
    ws: &Workspace,
    staged: &Path,
    layers: &[&Activated],
    host: &fs::Metadata,
) -> Result<(String, PathBuf), MergeError> {
    let meta = ws.name("m");
    let meta_path = staged.join(&meta).join(meta_dir(ctx.class));
    fs::create_dir_all(&meta_path).map_err(io(&meta_path))?;
    fs::set_permissions(staged.join(&meta), host.permissions()).map_err(io(&meta_path))?;
    let list: String = layers
        .iter()
        .rev()
        .map(|a| format!("{}\n", a.name))
        .collect();
    fs::write(meta_path.join(ctx.class.plural()), list).map_err(io(&meta_path))?;
    Ok((meta, meta_path))
}

/// The overlay's options: the meta layer, the imported mutable directory, the extensions'
/// layers (grouped when there are too many) and the host's hierarchy (`bottom`); upper and
/// work directories as systemd sets them for a mutable merge.
fn options(
    ws: &Workspace,
    hier: &str,
    meta: String,
    writes: &mutable::Layers,
    names: Vec<String>,
    bottom: Option<&Path>,
) -> Result<String, MergeError> {
    let reserved = 2 + writes.import.is_some() as usize;
    let mut lower = vec![meta];
    lower.extend(writes.import.as_deref().map(escape));
    let flags = MountFlags::RDONLY | MountFlags::NODEV;
    lower.extend(stack(ws, hier, names, reserved, flags)?);
    lower.extend(bottom.map(escape));
    let mut options = format!("lowerdir={}", lower.join(":"));
    if let Some((upper, work)) = &writes.upper {
        options += &format!(
            ",upperdir={},workdir={},redirect_dir=on,metacopy=off,index=off",
            escape(upper),
            escape(work)
        );
    }
    debug!("overlay {hier}: {} bytes of options", options.len());
    if options.len() > OPTIONS_MAX {
        return Err(MergeError::Limit {
            hierarchy: hier.to_owned(),
            what: format!(
                "the overlay's options take {} bytes, over the kernel's limit of one page \
                 ({OPTIONS_MAX}): the path of the hierarchy is too long",
                options.len()
            ),
        });
    }
    Ok(options)
}

/// Mounts the overlay on `target`; with submounts under it, aside first, the submounts moved
/// into it, then it moved over the hierarchy (so they stay visible).
fn mount_over(
    ws: &Workspace,
    h: &str,
    target: &Path,
    flags: MountFlags,
    options: &str,
) -> Result<(), std::io::Error> {
    let data = std::ffi::CString::new(options).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mount_at = |at: &Path| mount("sysext", at, "overlay", flags, Some(data.as_c_str()));
    let submounts = submounts(target);
    if submounts.is_empty() {
        return Ok(mount_at(target)?);
    }
    let aside = ws.dir.join("aside").join(h.replace('/', "_"));
    fs::create_dir_all(&aside)?;
    mount_at(&aside)?;
    for sub in &submounts {
        let rel = sub.strip_prefix(target).unwrap_or(sub);
        let _ = mount_move(sub, aside.join(rel));
    }
    Ok(mount_move(&aside, target)?)
}

/// systemd's flags: read-only and nodev (a confext also nosuid and noexec), `--noexec`
/// setting or clearing noexec; a hierarchy that takes writes is read-write and noatime.
fn mount_flags(ctx: &Context, writable: bool) -> MountFlags {
    let mut flags = MountFlags::RDONLY | MountFlags::NODEV;
    if ctx.class == Class::Confext {
        flags |= MountFlags::NOSUID | MountFlags::NOEXEC;
    }
    match ctx.noexec {
        Some(true) => flags |= MountFlags::NOEXEC,
        Some(false) => flags -= MountFlags::NOEXEC,
        None => {}
    }
    if writable {
        flags -= MountFlags::RDONLY;
        flags |= MountFlags::NOATIME;
    }
    flags
}

/// The meta files written once the overlay is up (`extensions` is written before).
struct Meta<'a> {
    dir: &'a Path,
    /// st_dev of the host hierarchy under the overlay, when it is a layer.
    backing: Option<u64>,
    origin: &'a str,
    /// A persistent upper's work directory, relative to the root, for unmerge to remove.
    work_dir: Option<&'a Path>,
}

impl Meta<'_> {
    fn write(&self, target: &Path) -> Result<(), MergeError> {
        let devnum = |d: u64| format!("{}:{}\n", rustix::fs::major(d), rustix::fs::minor(d));
        let dev = fs::metadata(target).map_err(io(target))?.dev();
        let mut files = vec![("dev", devnum(dev)), ("origin", self.origin.to_owned())];
        files.extend(self.backing.map(|b| ("backing", devnum(b))));
        if let Some(w) = self.work_dir {
            let escaped = unit::cescape(w.as_os_str().as_bytes());
            files.push(("work_dir", format!("{escaped}\n")));
        }
        for (name, text) in files {
            let path = self.dir.join(name);
            fs::write(&path, text).map_err(io(&path))?;
        }
        Ok(())
    }
}

/// The lower layers for `names` (staged layers, highest first): themselves when one overlay
/// takes them with the `reserved` other layers (meta, hierarchy, an imported mutable
/// directory), else overlays of up to OVL_MAX_STACK of them mounted in the staging directory
/// (the current directory).
fn stack(
    ws: &Workspace,
    hier: &str,
    names: Vec<String>,
    reserved: usize,
    flags: MountFlags,
) -> Result<Vec<String>, MergeError> {
    if names.len() + reserved <= OVL_MAX_STACK {
        return Ok(names);
    }
    let mut groups = Vec::new();
    for chunk in names.chunks(OVL_MAX_STACK) {
        // overlayfs wants two lower layers at least.
        if let [one] = chunk {
            groups.push(one.clone());
            continue;
        }
        let group = ws.name("g");
        let options = format!("lowerdir={}", chunk.join(":"));
        let data = std::ffi::CString::new(options).expect("no NUL in staged names");
        rustix::fs::mkdir(group.as_str(), Mode::from_raw_mode(0o700))
            .and_then(|()| {
                mount(
                    "sysext",
                    group.as_str(),
                    "overlay",
                    flags,
                    Some(data.as_c_str()),
                )
            })
            .map_err(|e| MergeError::Limit {
                hierarchy: hier.to_owned(),
                what: format!("mounting an overlay of {} of its layers: {e}", chunk.len()),
            })?;
        groups.push(group);
    }
    if groups.len() + 2 > OVL_MAX_STACK {
        return Err(MergeError::Limit {
            hierarchy: hier.to_owned(),
            what: format!(
                "{} extensions: more than {OVL_MAX_STACK} overlays of {OVL_MAX_STACK} layers",
                names.len()
            ),
        });
    }
    Ok(groups)
}

/// How the overlay names its layers, highest first. Each layer is a directory opened inside
/// its extension, so the kernel must take exactly that directory, never resolve a path in the
/// extension again: `/proc/self/fd/N` (the magic link is the open directory itself) when they
/// fit in one overlay's options, else a clone of each mounted under a short name in the
/// staging directory `dir` (1,000 extensions take ~4 KiB that way).
fn layer_names(
    ws: &Workspace,
    staged: &Path,
    dir: BorrowedFd,
    h: &str,
    fds: &[(OwnedFd, &&Activated)],
) -> Result<Vec<String>, MergeError> {
    let by_fd: Vec<String> = fds
        .iter()
        .map(|(fd, _)| format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .collect();
    let fits = by_fd.len() + 2 <= OVL_MAX_STACK
        && by_fd.iter().map(|n| n.len() + 1).sum::<usize>() < OPTIONS_MAX / 2;
    if fits && Path::new("/proc/self/fd").is_dir() {
        return Ok(by_fd);
    }
    let mut names = Vec::new();
    for (fd, a) in fds {
        let name = ws.name("");
        bind_fd(fd.as_fd(), dir, &staged.join(&name)).map_err(|e| MergeError::Io {
            path: a.top.join(h),
            source: e.into(),
        })?;
        names.push(name);
    }
    Ok(names)
}

/// Mounts a clone of the directory `fd` at `at` (in the directory `dir`, named as `at`).
fn bind_fd(fd: BorrowedFd, dir: BorrowedFd, at: &Path) -> rustix::io::Result<()> {
    let name = at.file_name().unwrap_or_default();
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
    let flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_EMPTY_PATH;
    match open_tree(fd, "", flags) {
        Ok(tree) => move_mount(
            &tree,
            "",
            dir,
            name,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        ),
        // Before Linux 5.2: a bind mount through the fd's /proc entry.
        Err(Errno::NOSYS) => {
            let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
            mount_bind(source.as_str(), at)
        }
        Err(e) => Err(e),
    }
}

/// The process's working directory, changed for a while (single-threaded use only).
struct Cwd(OwnedFd);

impl Cwd {
    fn enter(dir: BorrowedFd) -> rustix::io::Result<Cwd> {
        let old = rustix::fs::open(
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        fchdir(dir)?;
        Ok(Cwd(old))
    }
}

impl Drop for Cwd {
    fn drop(&mut self) {
        if let Err(e) = fchdir(&self.0) {
            log::warn!("returning to the working directory: {e}");
        }
    }
}

/// overlayfs option escaping: `\`, `:` and `,` take a backslash.
fn escape(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        if matches!(c, '\\' | ':' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Top-level mount points strictly below `dir` (from /proc/self/mountinfo).
fn submounts(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    points.sort();
    points.dedup();
    let all = points.clone();
    points.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q)));
    points
}

/// A merged hierarchy: the extensions its meta file lists, and when it was merged (µs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub hierarchy: String,
    pub extensions: Vec<String>,
    pub since: i64,
    /// A persistent mutable merge's work directory, relative to the root.
    pub work_dir: Option<PathBuf>,
}

/// The merge of `class` on `root/h`, if it carries one: its meta `dev` must match the
/// mount's st_dev.
pub fn status_of(root: &Path, class: Class, h: &str) -> Option<Merged> {
    let target = discover::chase(root, Path::new(h))?;
    let meta = meta_dir(class);
    // Read inside the hierarchy, regular files only: a FIFO or a device cannot stall us.
    let tree = Dir::open(&target).ok()?;
    let small = |name: &str, max| {
        let bytes = tree.read_file(&format!("{meta}/{name}"), max).ok()?;
        String::from_utf8(bytes).ok()
    };
    let dev = small("dev", 64)?;
    let st = fs::metadata(&target).ok()?;
    let now = format!(
        "{}:{}",
        rustix::fs::major(st.dev()),
        rustix::fs::minor(st.dev())
    );
    if dev.trim() != now {
        return None;
    }
    let names = small(class.plural(), 16 << 20).unwrap_or_default();
    let since = fs::metadata(target.join(meta).join("dev"))
        .map(|m| discover::mtime_us(&m))
        .unwrap_or(0);
    Some(Merged {
        hierarchy: format!("/{h}"),
        extensions: names
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        since,
        work_dir: small("work_dir", 8192)
            .and_then(|w| unit::cunescape(w.trim_end_matches('\n')))
            .map(|b| PathBuf::from(std::ffi::OsString::from_vec(b))),
    })
}

/// Removes a mutable merge's work directory, `work` as its meta file names it relative to
/// the root — only if it is what a merge makes: `<dir>/.systemd-<hierarchy>-workdir`, found
/// inside the root. Anything else (a meta file written to point elsewhere) is left alone.
fn remove_work_dir(root: &Path, h: &str, work: &Path) {
    let expected = format!(".systemd-{}-workdir", mutable::component(h));
    let plain = work.components().all(|c| matches!(c, Component::Normal(_)));
    let named = work.file_name().is_some_and(|n| n == expected.as_str());
    let Some(found) = discover::chase(root, work).filter(|_| plain && named) else {
        log::warn!(
            "not removing the work directory {:?} the meta file names: not a {expected} in the root",
            work
        );
        return;
    };
    if let Err(e) = fs::remove_dir_all(&found) {
        log::warn!("removing {}: {e}", found.display());
    }
}

/// Every merged hierarchy of `class` under `root`.
pub fn status(root: &Path, class: Class) -> Vec<Merged> {
    hierarchies(class)
        .iter()
        .filter_map(|h| status_of(root, class, h))
        .collect()
}

/// Unmounts every merged hierarchy of `class` under `root` (ours or systemd's), with the
/// read-only bind mount of a mutable merge's meta directory and its work directory; returns
/// them.
pub fn unmerge(root: &Path, class: Class) -> Result<Vec<String>, MergeError> {
    let mut done = Vec::new();
    for h in hierarchies(class) {
        while let Some(merged) = status_of(root, class, &h) {
            let Some(target) = discover::chase(root, Path::new(&h)) else {
                break;
            };
            // EINVAL: not a mount point (a read-only merge has no bind mount there).
            let _ = unmount(target.join(meta_dir(class)), UnmountFlags::DETACH);
            unmount(&target, UnmountFlags::DETACH).map_err(|e| MergeError::Unmount {
                hierarchy: format!("/{h}"),
                source: e.into(),
            })?;
            if let Some(work) = merged.work_dir {
                remove_work_dir(root, &h, &work);
            }
            info!("unmerged /{h}");
            done.push(format!("/{h}"));
        }
    }
    Ok(done)
}
