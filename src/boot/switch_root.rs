//! Switching to the real root: move the API filesystems into /sysroot, delete the initramfs
//! contents (never crossing into another filesystem), move /sysroot onto /, chroot, exec init.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use log::{debug, info};
use rustix::mount::mount_move;

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("{step}: {source}")]
    Sys {
        step: String,
        source: std::io::Error,
    },
    #[error("{0} is not on the new root")]
    NoInit(String),
}

fn sys(step: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> SwitchError {
    let step = step.into();
    move |e| SwitchError::Sys {
        step,
        source: e.into(),
    }
}

/// Moves the API mounts, empties the initramfs, and makes `new_root` the root. Then execs
/// `init` (which only returns on failure).
pub fn switch_root(new_root: &Path, init: &str) -> Result<(), SwitchError> {
    let target = new_root.join(init.trim_start_matches('/'));
    if fs::symlink_metadata(&target).is_err() {
        return Err(SwitchError::NoInit(init.to_owned()));
    }
    for api in ["/dev", "/proc", "/sys", "/run"] {
        let dest = new_root.join(&api[1..]);
        if dest.is_dir() {
            mount_move(api, &dest).map_err(sys(format!("moving {api}")))?;
        } else {
            rustix::mount::unmount(api, rustix::mount::UnmountFlags::DETACH)
                .map_err(sys(format!("unmounting {api}")))?;
        }
    }
    let root_dev = fs::symlink_metadata("/").map(|m| m.dev()).unwrap_or(0);
    let freed = delete_initramfs(Path::new("/"), root_dev);
    info!(
        "switching root to {} (freed {} KiB of initramfs)",
        new_root.display(),
        freed / 1024
    );
    rustix::process::chdir(new_root).map_err(sys("chdir to the new root"))?;
    mount_move(".", "/").map_err(sys("moving the new root onto /"))?;
    rustix::process::chroot(".").map_err(sys("chroot"))?;
    rustix::process::chdir("/").map_err(sys("chdir /"))?;
    exec(init)
}

/// Recursively deletes what lies on the initramfs (device `root_dev`); mount points and other
/// filesystems are left alone. Returns the bytes freed.
fn delete_initramfs(dir: &Path, root_dev: u64) -> u64 {
    let mut freed = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(md) = fs::symlink_metadata(&path) else {
            continue;
        };
        if md.dev() != root_dev {
            continue; // a mount point: another filesystem
        }
        if md.is_dir() {
            freed += delete_initramfs(&path, root_dev);
            let _ = fs::remove_dir(&path);
        } else {
            freed += md.len();
            if let Err(e) = fs::remove_file(&path) {
                debug!("keeping {}: {e}", path.display());
            }
        }
    }
    freed
}

/// Replaces this process with `init`.
fn exec(init: &str) -> Result<(), SwitchError> {
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(init)
        .env_clear()
        .env("HOME", "/")
        .env("TERM", "linux")
        .exec();
    Err(SwitchError::Sys {
        step: format!("executing {init}"),
        source: e,
    })
}
