//! The systemd-sysext and systemd-confext verbs — merge, unmerge, refresh, status, list — over
//! a root directory, with text or JSON output, and the service-manager reload extensions ask
//! for.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::format::gpt::Arch;
use crate::format::release::{Class, Release, Scope};
use crate::image::fs::{self, Dir};
use crate::runtime::activate::{Activated, Context};
use crate::runtime::discover::{self, chase};
use crate::runtime::merge::{self, MergeError, Report};
use crate::runtime::policy::Policy;

/// Where images and meta layers live while merged.
pub const STAGING: &str = "/run/initrd-sysext";

/// The check context for `class` under `root`: its scope (initrd when `etc/initrd-release`
/// exists) and release.
pub fn context(
    root: &Path,
    class: Class,
    policy: Option<Policy>,
    userspace_verity: bool,
) -> Context {
    let initrd = chase(root, Path::new("etc/initrd-release")).is_some_and(|p| p.exists());
    let candidates: &[&str] = match initrd {
        true => &["etc/initrd-release", "etc/os-release", "usr/lib/os-release"],
        false => &["etc/os-release", "usr/lib/os-release"],
    };
    let host_release = candidates
        .iter()
        .filter_map(|c| chase(root, Path::new(c)))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| Release::parse(&t).ok())
        .unwrap_or_default();
    Context {
        root: root.to_owned(),
        scope: if initrd { Scope::Initrd } else { Scope::System },
        arch: Arch::host(),
        host_release,
        policy,
        userspace_verity,
        staging: PathBuf::from(STAGING),
        class,
        force: false,
        noexec: None,
        mutable: Default::default(),
    }
}

pub fn report_json(r: &Report) -> Value {
    json!({
        "merged": r.merged.iter().map(|(n, k, p)| json!({"name": n, "type": k, "path": p})).collect::<Vec<_>>(),
        "refused": r.refused.iter().map(|(n, why)| json!({"name": n, "reason": why})).collect::<Vec<_>>(),
        "hierarchies": r.hierarchies,
    })
}

/// `merge`: returns the report (refusals are in it, not errors). `activated` sees each
/// extension to be merged before the overlays are mounted (see [`merge::merge`]).
pub fn merge(ctx: &Context, activated: &mut dyn FnMut(&Activated)) -> Result<Report, MergeError> {
    merge::merge(ctx, ctx.scope == Scope::Initrd, activated)
}

/// `refresh`: unmerge what is merged, then merge again; None when the merged extensions are
/// the ones there are (and `always` is off).
pub fn refresh(ctx: &Context, always: bool) -> Result<Option<Report>, MergeError> {
    merge::refresh(ctx, ctx.scope == Scope::Initrd, always)
}

/// `status`: one entry per hierarchy, merged or not (an empty list, as systemd 262 shows it;
/// 252 said "none"), sorted by hierarchy as systemd-sysext does.
pub fn status(root: &Path, class: Class) -> Value {
    let merged = merge::status(root, class);
    let mut hiers = merge::hierarchies(class);
    hiers.sort();
    hiers
        .iter()
        .map(|h| {
            let m = merged.iter().find(|m| m.hierarchy == format!("/{h}"));
            json!({
                "hierarchy": format!("/{h}"),
                "extensions": m.map(|m| m.extensions.clone()).unwrap_or_default(),
                "since": m.map(|m| m.since),
            })
        })
        .collect()
}

/// `list`: every extension found, merged or not: where it really is (symlinks resolved) and
/// when it was made (µs), as systemd-sysext shows them.
pub fn list(root: &Path, class: Class, in_initrd: bool) -> Value {
    discover::discover(root, class, in_initrd)
        .iter()
        .map(|f| json!({"name": f.name, "type": f.kind.name(), "path": f.resolved, "time": f.time_us}))
        .collect()
}

/// Whether a merged extension asks for a service-manager reload (`EXTENSION_RELOAD_MANAGER=1`
/// in its extension-release, read through the merged hierarchy).
pub fn reload_wanted(root: &Path, class: Class) -> bool {
    let Ok(tree) = Dir::open(root) else {
        return false;
    };
    merge::status(root, class).iter().any(|m| {
        m.extensions.iter().any(|name| {
            // The release file as the merge chose it (a renamed image's too), read in the root.
            fs::release_file(&tree, class.release_dir(), name)
                .ok()
                .and_then(|(_, text)| Release::parse(&text).ok())
                .and_then(|r| {
                    r.get("EXTENSION_RELOAD_MANAGER")
                        .and_then(crate::format::unit::boolean)
                })
                .unwrap_or(false)
        })
    })
}

/// `systemctl daemon-reload`, when a service manager runs (`/run/systemd/system`); returns
/// what happened, for the log.
pub fn reload_manager() -> String {
    if !Path::new("/run/systemd/system").is_dir() {
        return "no service manager runs: not reloading".into();
    }
    match std::process::Command::new("systemctl")
        .arg("daemon-reload")
        .status()
    {
        Ok(s) if s.success() => "reloaded the service manager".into(),
        Ok(s) => format!("systemctl daemon-reload: {s}"),
        Err(e) => format!("systemctl daemon-reload: {e}"),
    }
}
