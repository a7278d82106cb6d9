//! Hardware benchmark (run by scripts/bench-hardware, not by the test suite): drivers for a
//! virtio disk found at boot on Debian's 6.1 kernel, where every driver is a module. Each
//! initrd builder makes an initrd for the same kernel, the same ext4 root on a virtio disk and
//! (where the builder can carry it) the same verity-protected extension; each initrd is booted
//! `BENCH_BOOTS` times (default 2) under TCG and timed from the console's guest timestamps.
//!
//! Contenders: ours with `--drivers generic` and `--drivers host` (falling back to the three
//! modules listed by hand while `--drivers` does not exist), Debian's initramfs-tools
//! (`MODULES=most`, `MODULES=dep`) and dracut 059 (generic and `--hostonly`, with and without
//! our dracut module). `BENCH_ONLY=substring` keeps the contenders whose label contains it;
//! `BENCH_TIMELINE=1` prints every console.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qemu_tests::dracut::{dracut_base, initrd as dracut_initrd, PLAIN};
use qemu_tests::*;

/// Debian's kernel does not trust our test key: the extension is verity-protected, unsigned,
/// and allowed by this policy (as boot.rs scenario 6).
const POLICY: &str = "rd.sysext.image_policy=root=verity+signed+absent:usr=verity+signed+absent";

/// Bounds a boot that does not find its root: ours, dracut (then reboot), initramfs-tools waits
/// its fixed 30 s and reboots under `panic=-1`.
const GIVE_UP: &str = "rd.sysext.root_timeout=30 rd.retry=30 rd.shell=0 rd.emergency=reboot";

/// The root's init: a time stamp in the kernel log as soon as it runs (then the boot's own
/// lines from the log, for initrds that quiet the console), and the uptime as a fallback.
const ROOT_SCRIPT: &str = "echo ROOT-INIT-KMSG > /dev/kmsg\n\
    dmesg | grep -e 'Run /init as init process' -e 'initrd-sysext: modules:' -e 'merged 1 ext' -e ROOT-INIT-KMSG\n\
    echo \"ROOT-UPTIME: $(cat /proc/uptime)\"";

/// Builds a private mount namespace where `/lib/modules/KVER` is the cached modules directory
/// and `/boot/config-KVER` the kernel's config (mkinitramfs reads both at fixed paths), then runs
/// mkinitramfs with a private configuration directory. The host's /lib/modules and /boot are
/// never changed: a tmpfs over /lib/modules, or when the host has none, an overlay over /lib's
/// target with its upper layer on a tmpfs; a tmpfs over /boot.
const MKINITRAMFS_NS: &str = r#"set -euo pipefail
kver=$1 mods=$2 config=$3 confdir=$4 out=$5 scratch=$6
mount -t tmpfs bench-scratch "$scratch"
if [ -d /lib/modules ]; then
  mount -t tmpfs bench-modules /lib/modules
else
  lib=$(readlink -f /lib)
  mkdir "$scratch/upper" "$scratch/work"
  mount -t overlay bench-lib -o "lowerdir=$lib,upperdir=$scratch/upper,workdir=$scratch/work" "$lib"
fi
mkdir -p "/lib/modules/$kver"
mount --bind "$mods" "/lib/modules/$kver"
mkdir -p /boot
mount -t tmpfs bench-boot /boot
cp "$config" "/boot/config-$kver"
mkdir "$scratch/tmp"
TMPDIR=$scratch/tmp mkinitramfs -d "$confdir" -o "$out" "$kver"
"#;

/// Ours before `--drivers` exists: the modules scenario 6 lists by hand.
const BY_HAND: &str = "ours, modules listed by hand (virtio_pci virtio_blk ext4)";

/// One initrd to boot.
struct Contender {
    label: String,
    initrd: PathBuf,
    build: Duration,
    /// Whether the initrd carries the extension (so the boot should merge it).
    with_extension: bool,
}

/// Runs `cmd` to its end; its wall time, or its failure with the tail of its stderr.
fn timed(cmd: &mut Command) -> Result<Duration, String> {
    let start = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(took)
    } else {
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Err(format!("{}: {}", out.status, first.trim()))
    }
}

/// `build initrd` for Debian's modules with `selection` (e.g. `--drivers generic`).
fn ours_initrd(
    mods: &Path,
    ext: &Path,
    selection: &[&str],
    out: &Path,
) -> Result<Duration, String> {
    timed(
        Command::new(binary())
            .args(["build", "initrd", "--init", s(binary())])
            .args(["--modules-dir", s(mods)])
            .args(selection)
            .args(["--extension", s(ext), "--output", s(out), "--force"])
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    )
}

/// mkinitramfs with `MODULES=modules` (Debian's initramfs-tools, its own defaults otherwise).
fn mkinitramfs(d: &Path, kver: &str, mods: &Path, modules: &str, out: &Path) -> Duration {
    let conf = d.join(format!("initramfs-tools-{modules}"));
    run(Command::new("cp").args(["-a", "/etc/initramfs-tools", s(&conf)]));
    let file = conf.join("initramfs.conf");
    let text = std::fs::read_to_string(&file).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("MODULES=") {
                format!("MODULES={modules}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&file, text).unwrap();
    let scratch = d.join(format!("mkinitramfs-scratch-{modules}"));
    std::fs::create_dir_all(&scratch).unwrap();
    let config = mods
        .ancestors()
        .nth(3)
        .unwrap()
        .join(format!("boot/config-{kver}"));
    timed(
        Command::new("unshare")
            .args([
                "-m",
                "--propagation",
                "private",
                "bash",
                "-c",
                MKINITRAMFS_NS,
            ])
            .args([
                "bash",
                kver,
                s(mods),
                s(&config),
                s(&conf),
                s(out),
                s(&scratch),
            ]),
    )
    .unwrap_or_else(|e| panic!("mkinitramfs MODULES={modules}: {e}"))
}

/// Kernel module files in an initrd, from our `inspect` (it reads every member of every
/// builder's initrd; initramfs-tools' lsinitramfs stops at our uncompressed extension member).
fn modules_in(initrd: &Path) -> Vec<String> {
    ours(&["inspect", s(initrd)])
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|path| {
            [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .any(|e| path.ends_with(e))
        })
        .map(str::to_owned)
        .collect()
}

/// The drivers along the sysfs path of the build host's root block device (disk, bus,
/// controller), e.g. "virtio_blk, virtio_mmio".
fn host_root_drivers() -> String {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").unwrap().dev();
    let (major, minor) = (dev_major(dev), dev_minor(dev));
    let Ok(path) = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")) else {
        return "an unknown device".into();
    };
    let drivers: Vec<String> = path
        .ancestors()
        .filter_map(|p| std::fs::read_link(p.join("driver")).ok())
        .filter_map(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if drivers.is_empty() {
        format!("{} (no driver links)", path.display())
    } else {
        drivers.join(", ")
    }
}

fn dev_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn dev_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

/// One boot's numbers: kernel -> /init, /init -> root's init (guest s), wall (s).
struct Run {
    to_init: Option<f64>,
    to_root: Option<f64>,
    wall: f64,
    merged: bool,
    modules: Option<String>,
    /// Boot mode's complaints about single modules ("module X: …").
    module_errors: Vec<String>,
}

fn measure(boot: &Boot) -> Run {
    let init = boot.time_of("Run /init as init process");
    let root = boot.time_of("ROOT-INIT-KMSG").or_else(|| {
        let line = boot.console.lines().find(|l| l.contains("ROOT-UPTIME: "))?;
        line.split_once("ROOT-UPTIME: ")?
            .1
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    });
    Run {
        to_init: init,
        to_root: match (init, root) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
        wall: boot.wall.as_secs_f64(),
        merged: boot.console.contains("merged 1 extension(s)"),
        modules: boot
            .console
            .lines()
            .find(|l| l.contains("initrd-sysext: modules: "))
            .and_then(|l| l.split_once("initrd-sysext: "))
            .map(|(_, m)| m.trim().to_owned()),
        module_errors: boot
            .console
            .lines()
            .filter_map(|l| l.split_once("initrd-sysext: module "))
            .map(|(_, m)| format!("module {}", m.trim()))
            .collect(),
    }
}

/// The console lines saying why a boot did not reach the root (each builder's words for it).
fn why_not(boot: &Boot) -> String {
    const SIGNS: [&str; 8] = [
        "does not exist",
        "ALERT!",
        "FATAL",
        "Gave up waiting",
        "did not appear",
        "Kernel panic",
        "Could not boot",
        "not found",
    ];
    let mut seen: Vec<&str> = Vec::new();
    for l in boot.console.lines() {
        let l = l.split_once("] ").map_or(l, |(_, rest)| rest).trim();
        if SIGNS.iter().any(|s| l.contains(s)) && !seen.contains(&l) {
            seen.push(l);
        }
    }
    if seen.is_empty() {
        seen.extend(boot.console.lines().last());
    }
    seen.iter().take(4).copied().collect::<Vec<_>>().join(" / ")
}

/// "min–max" of the values (or "-" when there are none).
fn span(values: impl Iterator<Item = Option<f64>>, scale: f64, digits: usize) -> String {
    let v: Vec<f64> = values.flatten().map(|x| x * scale).collect();
    if v.is_empty() {
        return "-".into();
    }
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    if format!("{lo:.digits$}") == format!("{hi:.digits$}") {
        format!("{lo:.digits$}")
    } else {
        format!("{lo:.digits$}–{hi:.digits$}")
    }
}

#[test]
#[ignore = "benchmark: scripts/bench-hardware"]
fn hardware_comparison() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (vmlinuz, mods) = debian_kernel();
    let kver = mods.file_name().unwrap().to_str().unwrap().to_owned();
    let boots: usize = std::env::var("BENCH_BOOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |label: &str| label.contains(only.as_str());

    // The extension: busybox as /usr/bin/busybox-sysext, verity-protected, unsigned.
    let extensions = d.join("extensions");
    std::fs::create_dir_all(&extensions).unwrap();
    let tree = d.join("tool-tree");
    write_tree(&tree, &[("usr/bin/busybox-sysext", &busybox(), 0o755)]);
    let ext = extensions.join("tool.raw");
    ours(&[
        "build",
        "sysext",
        "--tree",
        s(&tree),
        "--name",
        "tool",
        "--id",
        "_any",
        "--verity",
        "hash",
        "--output",
        s(&ext),
    ]);
    let root = root_tree(d, ROOT_SCRIPT);
    let (disk, part_uuid, _) = root_disk(d, &root);

    let mut rows: Vec<Contender> = Vec::new();
    let mut notes: Vec<String> = vec![format!(
        "extension: unsigned erofs + dm-verity (`--verity hash`), allowed by `{POLICY}` \
         (Debian's kernel does not trust our test key)"
    )];

    // Ours: --drivers generic / host, or the modules listed by hand before --drivers exists.
    let by_hand = [
        "--module",
        "virtio_pci",
        "--module",
        "virtio_blk",
        "--module",
        "ext4",
    ];
    let mut fell_back = false;
    for drivers in ["generic", "host"] {
        let label = format!("ours --drivers {drivers}");
        if !wanted(&label) && !wanted(BY_HAND) {
            continue;
        }
        let out = d.join(format!("ours-{drivers}.cpio.zst"));
        eprintln!("building: {label}");
        match ours_initrd(&mods, &ext, &["--drivers", drivers], &out) {
            Ok(build) => rows.push(Contender {
                label,
                initrd: out,
                build,
                with_extension: true,
            }),
            Err(e) => {
                notes.push(format!("`{label}` failed to build ({e})"));
                fell_back = true;
            }
        }
    }
    if fell_back {
        let label = BY_HAND.to_owned();
        let out = d.join("ours-by-hand.cpio.zst");
        eprintln!("building: {label}");
        let build = ours_initrd(&mods, &ext, &by_hand, &out).unwrap();
        notes.push(format!(
            "`--drivers` is not available in this binary: **{label}** stands in for both"
        ));
        rows.push(Contender {
            label,
            initrd: out,
            build,
            with_extension: true,
        });
    }

    // Debian's initramfs-tools: no sysext support, so it boots without the extension.
    for modules in ["most", "dep"] {
        let label = format!("initramfs-tools MODULES={modules}");
        if !wanted(&label) {
            continue;
        }
        eprintln!("building: {label}");
        let out = d.join(format!("initramfs-tools-{modules}.img"));
        let build = mkinitramfs(d, &kver, &mods, modules, &out);
        rows.push(Contender {
            label,
            initrd: out,
            build,
            with_extension: false,
        });
    }
    notes.push(format!(
        "the host-only builds (`--drivers host`, MODULES=dep, --hostonly) look at the build \
         host, not the guest: the build host's root disk is driven by {}",
        host_root_drivers()
    ));
    notes.push(
        "initramfs-tools has no system-extension support: its initrds carry no extension"
            .to_owned(),
    );

    // dracut 059: its plain (udev, no systemd) initrd with kernel-modules, generic and hostonly;
    // "+ initrd-sysext" = our dracut module embeds the extension and merges it in pre-mount.
    let base = dracut_base(d);
    let no_ext = d.join("no-extensions");
    std::fs::create_dir_all(&no_ext).unwrap();
    let modules = format!("{PLAIN} kernel-modules");
    for (label, hostonly, with_ours) in [
        ("dracut generic + initrd-sysext", false, true),
        ("dracut --hostonly + initrd-sysext", true, true),
        ("dracut generic, no extension", false, false),
    ] {
        if !wanted(label) {
            continue;
        }
        eprintln!("building: {label}");
        let out = d.join(format!("dracut-{}.img", rows.len()));
        let mut extra = vec!["--kver", &kver, "--kmoddir", s(&mods)];
        if hostonly {
            extra.push("--hostonly");
        }
        if with_ours {
            extra.extend(["--add", "initrd-sysext"]);
        }
        let start = Instant::now();
        let source = if with_ours { &extensions } else { &no_ext };
        dracut_initrd(d, &base, source, &modules, &extra, &out);
        rows.push(Contender {
            label: label.to_owned(),
            initrd: out,
            build: start.elapsed(),
            with_extension: with_ours,
        });
    }

    println!(
        "\nDebian kernel {kver}, QEMU TCG, 512 MB, virtio-blk (virtio-pci) ext4 root by \
         root=PARTUUID; {boots} boot(s) each, min–max"
    );
    println!(
        "| contender | build s | size MB | modules in initrd | kernel → /init s | /init → root's init s | wall s | extension merged |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut module_lines = Vec::new();
    for c in &rows {
        let mut runs = Vec::new();
        for i in 0..boots {
            eprintln!("booting: {} ({}/{boots})", c.label, i + 1);
            let boot = Qemu {
                kernel: &vmlinuz,
                initrd: &c.initrd,
                disks: vec![disk.clone()],
                extra: Vec::new(),
                append: format!("root=PARTUUID={part_uuid} {POLICY} {GIVE_UP}"),
                timeout: Duration::from_secs(240),
            }
            .boot();
            if std::env::var_os("BENCH_TIMELINE").is_some() {
                println!("--- {} boot {}:\n{}", c.label, i + 1, boot.console);
            }
            let run = measure(&boot);
            let reached = run.to_root.is_some();
            if !reached {
                notes.push(format!(
                    "{}: boot {} did not reach the root's init{}: {}",
                    c.label,
                    i + 1,
                    if boot.timed_out { ", QEMU killed" } else { "" },
                    why_not(&boot)
                ));
                let blk = modules_in(&c.initrd)
                    .iter()
                    .any(|m| m.contains("/virtio_blk.ko"));
                notes.push(format!(
                    "{}: virtio_blk is {}in the initrd",
                    c.label,
                    if blk { "" } else { "not " }
                ));
            }
            runs.push(run);
            if !reached {
                break; // a root that is not found the first time is not found the second
            }
        }
        let merged = if !c.with_extension {
            "n/a".to_owned()
        } else {
            let n = runs.iter().filter(|r| r.merged).count();
            format!("{n}/{}", runs.len())
        };
        println!(
            "| {} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
            c.label,
            c.build.as_secs_f64(),
            std::fs::metadata(&c.initrd).unwrap().len() as f64 / 1e6,
            modules_in(&c.initrd).len(),
            span(runs.iter().map(|r| r.to_init), 1.0, 2),
            span(runs.iter().map(|r| r.to_root), 1.0, 2),
            span(runs.iter().map(|r| Some(r.wall)), 1.0, 1),
            merged
        );
        if c.label.starts_with("ours") {
            for (i, r) in runs.iter().enumerate() {
                module_lines.push(format!(
                    "{} boot {}: {}",
                    c.label,
                    i + 1,
                    r.modules.as_deref().unwrap_or("-")
                ));
                module_lines.extend(r.module_errors.iter().map(|e| format!("    {e}")));
            }
        }
    }
    println!("\nboot mode's modules line (before switch root):");
    for l in module_lines {
        println!("  {l}");
    }
    println!("\nnotes:");
    for n in notes {
        println!("  - {n}");
    }
    println!(
        "\nwhole run: {:.0} s (builds, boots and setup)",
        started.elapsed().as_secs_f64()
    );
}
