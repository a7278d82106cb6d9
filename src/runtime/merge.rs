//! Merging: each hierarchy (/usr, /opt) becomes a read-only overlay of a meta layer, the
//! extensions (highest version on top) and the host's own tree, exactly as systemd-sysext lays
//! it out (`.systemd-sysext/extensions` and `dev`), so either tool can read or undo it.

use std::cell::Cell;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use log::{debug, error, info};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{
    mount, mount_bind, mount_change, mount_move, move_mount, open_tree, unmount, MountFlags,
    MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};
use rustix::process::fchdir;

use crate::format::lookup::Filesystem;
use crate::image::fs::Dir;
use crate::runtime::activate::{self, ActivateError, Activated, Context};
use crate::runtime::discover::{self, Found};

/// The meta directory name inside a merged hierarchy.
pub const META: &str = ".systemd-sysext";

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
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MergeError + '_ {
    move |source| MergeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The hierarchies to merge: `SYSTEMD_SYSEXT_HIERARCHIES` (colon-separated) or /usr and /opt.
pub fn hierarchies() -> Vec<String> {
    match std::env::var("SYSTEMD_SYSEXT_HIERARCHIES") {
        Ok(v) if !v.is_empty() => v
            .split(':')
            .map(|h| h.trim_matches('/').to_owned())
            .collect(),
        _ => vec!["usr".into(), "opt".into()],
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
/// refused (logged with its reason) and the others still merge.
pub fn merge(ctx: &Context, in_initrd: bool) -> Result<Report, MergeError> {
    let hiers = hierarchies();
    for h in &hiers {
        if status_of(&ctx.root, h).is_some() {
            return Err(MergeError::AlreadyMerged(format!("/{h}")));
        }
    }
    let found = discover::discover(&ctx.root, in_initrd);
    debug!("found {} extension(s)", found.len());
    // Dropped last: after the extensions' own staging mounts.
    let workspace = Workspace::new(&ctx.staging)?;
    raise_nofile();
    let mut report = Report::default();
    let mut active: Vec<Activated> = Vec::new();
    for f in &found {
        match activate::activate(ctx, f) {
            Ok(a) => active.push(a),
            Err(e) => refuse(&mut report, f, e),
        }
    }
    // The overlays hold what they use: dropping `active` lets the staging mounts and dm
    // devices go with their last user, whatever the outcome.
    overlay_all(ctx, &workspace, &hiers, &active, &mut report)?;
    report.merged = active
        .iter()
        .map(|a| (a.name.clone(), a.kind.name(), a.path.clone()))
        .collect();
    Ok(report)
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

fn overlay_all(
    ctx: &Context,
    ws: &Workspace,
    hiers: &[String],
    active: &[Activated],
    report: &mut Report,
) -> Result<(), MergeError> {
    for h in hiers {
        // Highest first; each directory opened inside its extension when it is staged.
        let layers: Vec<&Activated> = active.iter().rev().collect();
        if overlay(ctx, ws, h, &layers)? {
            report.hierarchies.push(format!("/{h}"));
        }
    }
    Ok(())
}

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
) -> Result<bool, MergeError> {
    let hier = format!("/{h}");
    if !layers.iter().any(|a| a.has_hierarchy(h)) {
        return Ok(false);
    }
    let target = match target_of(&ctx.root, Path::new(h)) {
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
    if names.is_empty() {
        return Ok(false);
    }
    // The meta layer, on top: its top directory (the merged hierarchy's) keeps the host
    // hierarchy's mode, and its list names every extension merged, as systemd's does.
    let meta = ws.name("m");
    let meta_dir = staged.join(&meta).join(META);
    fs::create_dir_all(&meta_dir).map_err(io(&meta_dir))?;
    let perm = fs::metadata(&target).map_err(io(&target))?.permissions();
    fs::set_permissions(staged.join(&meta), perm).map_err(io(&meta_dir))?;
    let list: String = layers
        .iter()
        .rev()
        .map(|a| format!("{}\n", a.name))
        .collect();
    fs::write(meta_dir.join("extensions"), list).map_err(io(&meta_dir))?;
    let mut flags = MountFlags::RDONLY | MountFlags::NODEV;
    // Relative layer paths resolve from the staging directory.
    let _cwd = Cwd::enter(dir.as_fd()).map_err(|e| io(&staged)(e.into()))?;
    let grouped = names.len() + 2 > OVL_MAX_STACK;
    let mut lower = vec![meta];
    lower.extend(stack(ws, &hier, names, flags)?);
    lower.push(escape(&target));
    let options = format!("lowerdir={}", lower.join(":"));
    debug!("overlay {hier}: {} bytes of options", options.len());
    if options.len() > OPTIONS_MAX {
        return Err(MergeError::Limit {
            hierarchy: hier,
            what: format!(
                "the overlay's options take {} bytes, over the kernel's limit of one page \
                 ({OPTIONS_MAX}): the path of the hierarchy is too long",
                options.len()
            ),
        });
    }
    let submounts = submounts(&target);
    if ctx.noexec {
        flags |= MountFlags::NOEXEC;
    }
    let data = std::ffi::CString::new(options).map_err(|_| MergeError::Overlay {
        hierarchy: hier.clone(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let mount_at = |at: &Path| {
        mount("sysext", at, "overlay", flags, Some(data.as_c_str())).map_err(|e| match grouped {
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
                source: e.into(),
            },
        })
    };
    if submounts.is_empty() {
        mount_at(&target)?;
    } else {
        // Mount aside, move the submounts into it, then move it over the hierarchy.
        let aside = ws.dir.join("aside").join(h.replace('/', "_"));
        fs::create_dir_all(&aside).map_err(io(&aside))?;
        mount_at(&aside)?;
        for sub in &submounts {
            let rel = sub.strip_prefix(&target).unwrap_or(sub);
            let _ = mount_move(sub, aside.join(rel));
        }
        mount_move(&aside, &target).map_err(|e| MergeError::Overlay {
            hierarchy: hier.clone(),
            source: e.into(),
        })?;
    }
    let dev = fs::metadata(&target).map_err(io(&target))?.dev();
    let devnum = format!("{}:{}\n", rustix::fs::major(dev), rustix::fs::minor(dev));
    fs::write(meta_dir.join("dev"), devnum).map_err(io(&meta_dir))?;
    info!(
        "merged {} extension(s) into {hier}: {}",
        merged.len(),
        merged.join(", ")
    );
    Ok(true)
}

/// `root/rel` with symlinks resolved inside `root` (an `R/opt -> /opt` is R's own /opt, never
/// the host's); created when missing, in the directory its parent resolves to.
fn target_of(root: &Path, rel: &Path) -> Result<PathBuf, MergeError> {
    if let Some(target) = discover::chase(root, rel) {
        return Ok(target);
    }
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(root.to_owned());
    };
    let target = target_of(root, parent)?.join(name);
    // Not create_dir_all: a dangling symlink (pointing nowhere inside the root) fails here.
    fs::create_dir(&target).map_err(io(&target))?;
    Ok(target)
}

/// The lower layers for `names` (staged layers, highest first): themselves when one overlay
/// takes them with the meta layer and the hierarchy, else overlays of up to OVL_MAX_STACK of
/// them mounted in the staging directory (the current directory).
fn stack(
    ws: &Workspace,
    hier: &str,
    names: Vec<String>,
    flags: MountFlags,
) -> Result<Vec<String>, MergeError> {
    if names.len() + 2 <= OVL_MAX_STACK {
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
}

/// The merge on `root/h`, if it carries one: its meta `dev` must match the mount's st_dev.
pub fn status_of(root: &Path, h: &str) -> Option<Merged> {
    let target = discover::chase(root, Path::new(h))?;
    let meta = target.join(META);
    // Read inside the hierarchy, regular files only: a FIFO or a device cannot stall us.
    let tree = Dir::open(&target).ok()?;
    let small = |name: &str, max| {
        let bytes = tree.read_file(&format!("{META}/{name}"), max).ok()?;
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
    let names = small("extensions", 16 << 20).unwrap_or_default();
    let since = fs::metadata(meta.join("dev"))
        .map(|m| m.mtime() * 1_000_000 + m.mtime_nsec() / 1000)
        .unwrap_or(0);
    Some(Merged {
        hierarchy: format!("/{h}"),
        extensions: names
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        since,
    })
}

/// Every merged hierarchy under `root`.
pub fn status(root: &Path) -> Vec<Merged> {
    hierarchies()
        .iter()
        .filter_map(|h| status_of(root, h))
        .collect()
}

/// Unmounts every merged hierarchy under `root` (ours or systemd-sysext's); returns them.
pub fn unmerge(root: &Path) -> Result<Vec<String>, MergeError> {
    let mut done = Vec::new();
    for h in hierarchies() {
        while status_of(root, &h).is_some() {
            let Some(target) = discover::chase(root, Path::new(&h)) else {
                break;
            };
            unmount(&target, UnmountFlags::DETACH).map_err(|e| MergeError::Unmount {
                hierarchy: format!("/{h}"),
                source: e.into(),
            })?;
            info!("unmerged /{h}");
            done.push(format!("/{h}"));
        }
    }
    Ok(done)
}
