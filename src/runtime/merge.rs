//! Merging: each hierarchy (/usr, /opt) becomes a read-only overlay of a meta layer, the
//! extensions (highest version on top) and the host's own tree, exactly as systemd-sysext lays
//! it out (`.systemd-sysext/extensions` and `dev`), so either tool can read or undo it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use log::{debug, error, info};
use rustix::mount::{
    mount, mount_change, mount_move, unmount, MountFlags, MountPropagationFlags, UnmountFlags,
};

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
    let _workspace = Workspace::new(&ctx.staging)?;
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
    overlay_all(ctx, &hiers, &active, &mut report)?;
    report.merged = active
        .iter()
        .map(|a| (a.name.clone(), a.kind.name(), a.path.clone()))
        .collect();
    Ok(report)
}

/// The private workspace of one merge: a tmpfs (propagation private) mounted on `ctx.staging`
/// for the image mounts and meta layers. The overlays pin the layers they use, so when the
/// merge is done the workspace is detached and the directories created for it removed: as
/// with systemd's private workspace, a merge (with `--root` or not) leaves nothing in /run,
/// and an unmerge has nothing to clean up.
struct Workspace {
    dir: PathBuf,
    mounted: bool,
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

fn overlay_all(
    ctx: &Context,
    hiers: &[String],
    active: &[Activated],
    report: &mut Report,
) -> Result<(), MergeError> {
    for h in hiers {
        let layers: Vec<(&str, PathBuf)> = active
            .iter()
            .rev()
            .filter_map(|a| a.hierarchy(h).map(|d| (a.name.as_str(), d)))
            .collect();
        if layers.is_empty() {
            continue;
        }
        overlay(ctx, h, &layers)?;
        report.hierarchies.push(format!("/{h}"));
    }
    Ok(())
}

/// Mounts the overlay for hierarchy `h` with `layers` (highest first).
fn overlay(ctx: &Context, h: &str, layers: &[(&str, PathBuf)]) -> Result<(), MergeError> {
    let target = ctx.root.join(h);
    fs::create_dir_all(&target).map_err(io(&target))?;
    let meta = ctx.staging.join("meta").join(h.replace('/', "_"));
    let meta_dir = meta.join(h).join(META);
    fs::create_dir_all(&meta_dir).map_err(io(&meta_dir))?;
    let names: String = layers.iter().rev().map(|(n, _)| format!("{n}\n")).collect();
    fs::write(meta_dir.join("extensions"), names).map_err(io(&meta_dir))?;
    let mut lower = vec![escape(&meta.join(h))];
    lower.extend(layers.iter().map(|(_, d)| escape(d)));
    lower.push(escape(&target));
    let options = format!("lowerdir={}", lower.join(":"));
    debug!("overlay /{h}: {options}");
    let submounts = submounts(&target);
    let mut flags = MountFlags::RDONLY | MountFlags::NODEV;
    if ctx.noexec {
        flags |= MountFlags::NOEXEC;
    }
    let data = std::ffi::CString::new(options).map_err(|_| MergeError::Overlay {
        hierarchy: format!("/{h}"),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let mount_at = |at: &Path| {
        mount("sysext", at, "overlay", flags, Some(data.as_c_str())).map_err(|e| {
            MergeError::Overlay {
                hierarchy: format!("/{h}"),
                source: e.into(),
            }
        })
    };
    if submounts.is_empty() {
        mount_at(&target)?;
    } else {
        // Mount aside, move the submounts into it, then move it over the hierarchy.
        let aside = ctx.staging.join("aside").join(h.replace('/', "_"));
        fs::create_dir_all(&aside).map_err(io(&aside))?;
        mount_at(&aside)?;
        for sub in &submounts {
            let rel = sub.strip_prefix(&target).unwrap_or(sub);
            let _ = mount_move(sub, aside.join(rel));
        }
        mount_move(&aside, &target).map_err(|e| MergeError::Overlay {
            hierarchy: format!("/{h}"),
            source: e.into(),
        })?;
    }
    let dev = fs::metadata(&target).map_err(io(&target))?.dev();
    let devnum = format!("{}:{}\n", rustix::fs::major(dev), rustix::fs::minor(dev));
    fs::write(meta_dir.join("dev"), devnum).map_err(io(&meta_dir))?;
    info!(
        "merged {} extension(s) into /{h}: {}",
        layers.len(),
        layers
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
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

/// A merged hierarchy: the extensions its meta file lists, and when it was merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub hierarchy: String,
    pub extensions: Vec<String>,
    pub since: i64,
}

/// The merge on `root/h`, if it carries one: its meta `dev` must match the mount's st_dev.
pub fn status_of(root: &Path, h: &str) -> Option<Merged> {
    let target = root.join(h);
    let meta = target.join(META);
    let dev = fs::read_to_string(meta.join("dev")).ok()?;
    let st = fs::metadata(&target).ok()?;
    let now = format!(
        "{}:{}",
        rustix::fs::major(st.dev()),
        rustix::fs::minor(st.dev())
    );
    if dev.trim() != now {
        return None;
    }
    let names = fs::read_to_string(meta.join("extensions")).unwrap_or_default();
    let since = fs::metadata(meta.join("dev"))
        .map(|m| m.mtime())
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
            let target = root.join(&h);
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
