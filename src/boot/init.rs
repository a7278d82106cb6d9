//! Boot mode, PID 1 in the initrd: API filesystems, command line, modules, extensions merged
//! into the initrd's /usr and /opt, the real root mounted, optional system extensions merged
//! into it, switch root. PID 1 never exits: a fatal error or a panic follows on_failure.

use std::ffi::CString;
use std::path::Path;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use rustix::mount::{mount, MountFlags};

use crate::boot::cmdline::{Cmdline, OnFailure};
use crate::boot::coldplug::Devices;
use crate::boot::kmsg;
use crate::boot::measure::Measure;
use crate::boot::modload::{self, Loader};
use crate::boot::rootdev::{self, RootError, RootSpec};
use crate::boot::switch_root::{self, SwitchError};
use crate::format::kmod;
use crate::format::release::Class;
use crate::runtime::policy::Policy;
use crate::runtime::{enroll, merge, verbs};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Root(#[from] RootError),
    #[error("mounting the root {dev} ({fstype}) on /sysroot: {source}")]
    MountRoot {
        dev: String,
        fstype: String,
        source: std::io::Error,
    },
    #[error("cannot tell the filesystem type of {0}; pass rootfstype=")]
    FsType(String),
    #[error(transparent)]
    Switch(#[from] SwitchError),
    #[error("{0}")]
    Required(String),
}

/// PID 1's entry point; never returns.
pub fn run() -> ! {
    mount_api_filesystems();
    kmsg::init();
    info!(
        "initrd-sysext {} starting as PID 1",
        env!("CARGO_PKG_VERSION")
    );
    let line = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (cmdline, warnings) = Cmdline::parse(&line);
    kmsg::set_debug(cmdline.debug);
    for w in warnings {
        warn!("kernel command line: {w}");
    }
    let tpm = Measure::enter_initrd(cmdline.measure);
    // Release builds abort on panic: the hook turns a panic into the on_failure path first.
    let for_hook = cmdline.clone();
    std::panic::set_hook(Box::new(move |info| {
        fail(&for_hook, &format!("internal error: {info}"))
    }));
    let message = match boot(&cmdline, tpm) {
        Ok(()) => "init returned".to_owned(),
        Err(e) => e.to_string(),
    };
    fail(&cmdline, &message)
}

fn boot(c: &Cmdline, mut tpm: Measure) -> Result<(), BootError> {
    let start = Instant::now();
    let loader = Loader::open(&modload::modules_dir(Path::new("/")), &c.blacklist);
    let mut devices = Devices::start(loader);
    load_listed(&mut devices, c);
    devices.coldplug();
    info!(
        "dm_verity.require_signatures={}",
        if c.require_signatures {
            "1: the kernel refuses unsigned verity tables"
        } else {
            "0"
        }
    );
    enroll::enroll(Path::new("/"));
    debug!("keys enrolled");
    if c.sysext {
        merge_into(c, Path::new("/"), &mut tpm)?;
        extension_drivers(&mut devices);
        run_hooks(Path::new("/usr/lib/initrd-sysext/pre-mount.d"));
    } else {
        info!("rd.sysext=0: not merging extensions");
    }
    info!(
        "initrd ready, {} ms after start",
        start.elapsed().as_millis()
    );
    devices.report_missing();
    reap();
    mount_root(c, &mut devices)?;
    if c.sysext && c.sysroot {
        merge_into(c, Path::new("/sysroot"), &mut tpm)?;
    }
    for class in [Class::Sysext, Class::Confext] {
        if let Err(e) = merge::unmerge(Path::new("/"), class) {
            warn!("unmerging the initrd's {}s: {e}", class.name());
        }
    }
    reap();
    let l = &devices.loader;
    info!(
        "modules: {} loaded, {} failed, {} ms loading them (finit_module)",
        l.loaded,
        l.failed,
        l.kernel_time.as_millis()
    );
    drop(devices);
    tpm.leave_initrd();
    info!("switch root {} ms after start", start.elapsed().as_millis());
    Ok(switch_root::switch_root(Path::new("/sysroot"), &c.init)?)
}

/// `rd.driver.pre=` first, then what every initrd-sysext initrd needs (loop, dm-verity,
/// overlay, erofs, squashfs where they are modules) and `/etc/initrd-sysext/modules`.
fn load_listed(devices: &mut Devices, c: &Cmdline) {
    let pre: Vec<&str> = c.driver_pre.iter().map(String::as_str).collect();
    devices.load(&pre, "rd.driver.pre");
    let listed = std::fs::read_to_string("/etc/initrd-sysext/modules").unwrap_or_default();
    let mut names: Vec<&str> = kmod::DEFAULT_MODULES.to_vec();
    names.extend(
        listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#')),
    );
    devices.load(&names, "the initrd");
}

/// Modules and firmware the merged extensions brought: the modules become loadable (their
/// `.modinfo` read), the kernel looks for firmware in the merged /usr/lib/firmware, and
/// coldplug runs again for the devices that were waiting for them.
fn extension_drivers(devices: &mut Devices) {
    let kver = modload::kernel_release();
    let dir = Path::new("/usr/lib/modules").join(&kver);
    let added = devices.loader.add_dir(&dir);
    if !added.is_empty() {
        info!("modules from extensions: {}", added.join(" "));
    }
    let firmware = Path::new("/usr/lib/firmware");
    let same = std::fs::canonicalize("/lib/firmware").ok() == std::fs::canonicalize(firmware).ok();
    if firmware.is_dir() && !same {
        match std::fs::write(
            "/sys/module/firmware_class/parameters/path",
            "/usr/lib/firmware",
        ) {
            Ok(()) => debug!("firmware search path: /usr/lib/firmware"),
            Err(e) => warn!("setting the firmware search path to /usr/lib/firmware: {e}"),
        }
    }
    devices.coldplug();
}

/// Merges the system and configuration extensions found under `root` (the initrd itself, or
/// /sysroot), each measured into PCR 13 before the overlays are mounted; a refused extension
/// named in `rd.sysext.required=` stops the boot.
fn merge_into(c: &Cmdline, root: &Path, tpm: &mut Measure) -> Result<(), BootError> {
    let mut all = merge::Report::default();
    for class in [Class::Sysext, Class::Confext] {
        let report = merge_class(c, root, class, tpm)?;
        all.merged.extend(report.merged);
        all.refused.extend(report.refused);
    }
    // Required names are looked for where they would be merged: in the initrd.
    all.check_required(&c.required, root == Path::new("/"))
        .map_err(BootError::Required)
}

/// Merges one class; logged as `/: merged [a, b], refused 0, in 12 ms` (confexts:
/// `/ confexts: …`, only when there are any).
fn merge_class(
    c: &Cmdline,
    root: &Path,
    class: Class,
    tpm: &mut Measure,
) -> Result<merge::Report, BootError> {
    let policy = match &c.image_policy {
        Some(p) => p
            .parse::<Policy>()
            .map_err(|e| BootError::Required(format!("rd.sysext.image_policy: {e}")))?,
        None => Policy::boot_default(class),
    };
    let ctx = verbs::context(root, class, Some(policy), c.userspace_verity);
    let t = Instant::now();
    let report = verbs::merge(&ctx, &mut |a| tpm.extension(&a.event)).unwrap_or_else(|e| {
        error!("merging {}s into {}: {e}", class.name(), root.display());
        merge::Report::default()
    });
    let names: Vec<&str> = report.merged.iter().map(|(n, _, _)| n.as_str()).collect();
    let what = match class {
        Class::Sysext => String::new(),
        _ if names.is_empty() && report.refused.is_empty() => return Ok(report),
        _ => format!(" {}s", class.name()),
    };
    info!(
        "{}{what}: merged [{}], refused {}, in {} ms",
        root.display(),
        names.join(", "),
        report.refused.len(),
        t.elapsed().as_millis()
    );
    Ok(report)
}

/// Runs the executables extensions placed in `dir` (sorted); their output goes to the console.
fn run_hooks(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut hooks: Vec<_> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    hooks.sort();
    for hook in hooks {
        match std::process::Command::new(&hook).status() {
            Ok(s) if s.success() => info!("hook {}: ok", hook.display()),
            Ok(s) => warn!("hook {}: {s}", hook.display()),
            Err(e) => warn!("hook {}: {e}", hook.display()),
        }
    }
}

/// /proc, /sys, /dev (devtmpfs) and /run (tmpfs); already-mounted ones are fine.
fn mount_api_filesystems() {
    let nosuid = MountFlags::NOSUID | MountFlags::NOEXEC | MountFlags::NODEV;
    let mounts: [(&str, &str, MountFlags, Option<&str>); 4] = [
        ("proc", "/proc", nosuid, None),
        ("sysfs", "/sys", nosuid, None),
        ("devtmpfs", "/dev", MountFlags::NOSUID, Some("mode=0755")),
        (
            "tmpfs",
            "/run",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some("mode=0755"),
        ),
    ];
    for (fs, target, flags, data) in mounts {
        let _ = std::fs::create_dir_all(target);
        let data = data.map(|d| CString::new(d).expect("no NUL"));
        let _ = mount(fs, target, fs, flags, data.as_deref());
    }
}

fn mount_root(c: &Cmdline, devices: &mut Devices) -> Result<(), BootError> {
    let spec = RootSpec::parse(c.root.as_deref().ok_or(RootError::Missing)?)?;
    let dev = rootdev::wait_for(&spec, c.root_timeout, |deadline| devices.wait(deadline))?;
    let shown = dev.display().to_string();
    debug!("root device {shown}");
    let fstype = match &c.rootfstype {
        Some(t) => t.clone(),
        None => rootdev::probe_fstype(&dev)
            .ok_or_else(|| BootError::FsType(shown.clone()))?
            .to_owned(),
    };
    devices.load(&[&format!("fs-{fstype}")], "the root filesystem");
    if fstype == "btrfs" {
        match rootdev::btrfs_scan() {
            Ok(found) => info!("btrfs devices registered: {}", found.join(" ")),
            Err(e) => warn!("registering btrfs devices with /dev/btrfs-control: {e}"),
        }
    }
    let mut flags = MountFlags::empty();
    if c.read_only {
        flags |= MountFlags::RDONLY;
    }
    let data = c
        .rootflags
        .as_deref()
        .map(|d| CString::new(d).unwrap_or_default());
    let _ = std::fs::create_dir_all("/sysroot");
    mount(&dev, "/sysroot", fstype.as_str(), flags, data.as_deref()).map_err(|e| {
        BootError::MountRoot {
            dev: shown.clone(),
            fstype: fstype.clone(),
            source: e.into(),
        }
    })?;
    info!(
        "mounted {shown} ({fstype}, {}) on /sysroot",
        if c.read_only { "ro" } else { "rw" }
    );
    Ok(())
}

/// Collects exited children (PID 1 inherits every orphan).
fn reap() {
    use rustix::process::{waitpid, WaitOptions};
    while let Ok(Some(_)) = waitpid(None, WaitOptions::NOHANG) {}
}

/// One clear line on the console and in the kernel log, then `rd.sysext.on_failure`.
fn fail(c: &Cmdline, message: &str) -> ! {
    error!("FATAL: {message}");
    kmsg::console(&format!("FATAL: {message}"));
    let action = match &c.on_failure {
        OnFailure::Shell(sh) => {
            kmsg::console(&format!("starting {sh}; the machine reboots when it exits"));
            let _ = std::process::Command::new(sh).status();
            "reboot"
        }
        OnFailure::Halt => "halt",
        OnFailure::Reboot => "reboot",
    };
    kmsg::console(&format!("{action} in 3 seconds"));
    std::thread::sleep(Duration::from_secs(3));
    let cmd = match action {
        "halt" => rustix::system::RebootCommand::Halt,
        _ => rustix::system::RebootCommand::Restart,
    };
    loop {
        let _ = rustix::system::reboot(cmd);
        std::thread::sleep(Duration::from_secs(1));
    }
}
