//! The systemd-sysext verbs — merge, unmerge, refresh, status, list — over a root directory,
//! with text or JSON output.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::format::gpt::Arch;
use crate::format::release::{Release, Scope};
use crate::runtime::activate::Context;
use crate::runtime::discover::{self, chase};
use crate::runtime::merge::{self, MergeError, Report};
use crate::runtime::policy::Policy;

/// Where images and meta layers live while merged.
pub const STAGING: &str = "/run/initrd-sysext";

/// The check context for `root`: its scope (initrd when `etc/initrd-release` exists) and release.
pub fn context(root: &Path, policy: Option<Policy>, userspace_verity: bool) -> Context {
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
        force: false,
        noexec: false,
    }
}

pub fn report_json(r: &Report) -> Value {
    json!({
        "merged": r.merged.iter().map(|(n, k, p)| json!({"name": n, "type": k, "path": p})).collect::<Vec<_>>(),
        "refused": r.refused.iter().map(|(n, why)| json!({"name": n, "reason": why})).collect::<Vec<_>>(),
        "hierarchies": r.hierarchies,
    })
}

/// `merge`: returns the report (refusals are in it, not errors).
pub fn merge(ctx: &Context) -> Result<Report, MergeError> {
    merge::merge(ctx, ctx.scope == Scope::Initrd)
}

/// `refresh`: unmerge what is merged, then merge again.
pub fn refresh(ctx: &Context) -> Result<Report, MergeError> {
    merge::unmerge(&ctx.root)?;
    merge(ctx)
}

/// `status`: one entry per hierarchy, merged or not (an empty list, as systemd 262 shows it;
/// 252 said "none"), sorted by hierarchy as systemd-sysext does.
pub fn status(root: &Path) -> Value {
    let merged = merge::status(root);
    let mut hiers = merge::hierarchies();
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
pub fn list(root: &Path, in_initrd: bool) -> Value {
    discover::discover(root, in_initrd)
        .iter()
        .map(|f| json!({"name": f.name, "type": f.kind.name(), "path": f.resolved, "time": f.time_us}))
        .collect()
}
