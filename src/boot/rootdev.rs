//! Finding the root device: `root=/dev/…`, `PARTUUID=` (from GPT tables, read ourselves),
//! `UUID=` and `LABEL=` (from ext4, btrfs and erofs superblocks) — no blkid, no udev —
//! waiting for it to appear; and the filesystem type from its superblock.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::format::blob::Blob;
use crate::format::gpt;
use crate::format::uuid::Uuid;
use crate::image::dissect::FsType;
use crate::runtime::loopdev::raw_ioctl;
use rustix::ioctl::Opcode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    Path(PathBuf),
    PartUuid(Uuid),
    Uuid(String),
    Label(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootError {
    #[error("root={0:?} is not /dev/…, PARTUUID=, UUID= or LABEL=")]
    Syntax(String),
    #[error("no root= on the kernel command line")]
    Missing,
    #[error("root device {0} did not appear within {1:?} (block devices: {2})")]
    Timeout(RootSpec, Duration, String),
}

impl std::fmt::Display for RootSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            RootSpec::Path(p) => write!(f, "{}", p.display()),
            RootSpec::PartUuid(u) => write!(f, "PARTUUID={u}"),
            RootSpec::Uuid(u) => write!(f, "UUID={u}"),
            RootSpec::Label(l) => write!(f, "LABEL={l}"),
        }
    }
}

impl RootSpec {
    pub fn parse(s: &str) -> Result<RootSpec, RootError> {
        let bad = || RootError::Syntax(s.to_owned());
        if let Some(v) = s.strip_prefix("PARTUUID=") {
            return v.parse().map(RootSpec::PartUuid).map_err(|_| bad());
        }
        if let Some(v) = s.strip_prefix("UUID=") {
            return Ok(RootSpec::Uuid(v.to_ascii_lowercase()));
        }
        if let Some(v) = s.strip_prefix("LABEL=") {
            return Ok(RootSpec::Label(v.to_owned()));
        }
        if s.starts_with("/dev/") {
            return Ok(RootSpec::Path(PathBuf::from(s)));
        }
        Err(bad())
    }
}

/// Waits up to `timeout` for the device to appear; returns its /dev path. `wait(deadline)`
/// blocks until block devices may have changed (a uevent) or the deadline passes; it returns
/// whether to look again.
pub fn wait_for(
    spec: &RootSpec,
    timeout: Duration,
    mut wait: impl FnMut(Instant) -> bool,
) -> Result<PathBuf, RootError> {
    let deadline = Instant::now() + timeout;
    let mut look = true;
    loop {
        if look {
            if let Some(p) = find(spec) {
                return Ok(p);
            }
        }
        if Instant::now() >= deadline {
            let disks = block_devices().into_iter();
            let disks = disks.filter(|d| !d.starts_with("loop") && !d.starts_with("ram"));
            let present = disks.collect::<Vec<_>>().join(" ");
            let present = if present.is_empty() {
                "none".into()
            } else {
                present
            };
            return Err(RootError::Timeout(spec.clone(), timeout, present));
        }
        look = wait(deadline);
    }
}

fn find(spec: &RootSpec) -> Option<PathBuf> {
    match spec {
        RootSpec::Path(p) => p.exists().then(|| p.clone()),
        RootSpec::PartUuid(u) => block_devices()
            .into_iter()
            .find_map(|d| partuuid_match(&d, u)),
        RootSpec::Uuid(u) => block_devices()
            .into_iter()
            .find(|d| fs_ids(d).is_some_and(|(id, _)| &id == u))
            .map(dev_path),
        RootSpec::Label(l) => block_devices()
            .into_iter()
            .find(|d| fs_ids(d).is_some_and(|(_, lab)| &lab == l))
            .map(dev_path),
    }
}

/// Names under /sys/class/block (vda, vda1, loop0, …).
fn block_devices() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir("/sys/class/block")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// /dev/NAME, created from sysfs if devtmpfs has not (yet) made it.
fn dev_path(name: String) -> PathBuf {
    let p = PathBuf::from("/dev").join(&name);
    if !p.exists() {
        if let Some((maj, min)) = sysfs_devnum(&name) {
            let dev = rustix::fs::makedev(maj, min);
            let mode = rustix::fs::Mode::from_raw_mode(0o600);
            let _ = rustix::fs::mknodat(
                rustix::fs::CWD,
                &p,
                rustix::fs::FileType::BlockDevice,
                mode,
                dev,
            );
        }
    }
    p
}

fn sysfs_devnum(name: &str) -> Option<(u32, u32)> {
    let s = fs::read_to_string(format!("/sys/class/block/{name}/dev")).ok()?;
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// For a partition `name` whose disk's GPT gives it `uuid`: its /dev path.
fn partuuid_match(name: &str, uuid: &Uuid) -> Option<PathBuf> {
    let number: u32 = fs::read_to_string(format!("/sys/class/block/{name}/partition"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let real = fs::canonicalize(format!("/sys/class/block/{name}")).ok()?;
    let disk = real.parent()?.file_name()?.to_str()?.to_owned();
    let file = File::open(dev_path(disk)).ok()?;
    let table = gpt::read(&file).ok()?;
    table
        .partitions
        .iter()
        .any(|p| p.number == number && p.uuid == *uuid)
        .then(|| dev_path(name.to_owned()))
}

/// (UUID, label) of the filesystem on block device `name`.
fn fs_ids(name: &str) -> Option<(String, String)> {
    let file = File::open(dev_path(name.to_owned())).ok()?;
    let head = file.read_vec_at(0, 68 * 1024).ok()?;
    superblock_ids(&head)
}

/// (UUID, label) from ext4, btrfs or erofs superblocks in the first 68 KiB of a device.
pub fn superblock_ids(head: &[u8]) -> Option<(String, String)> {
    let text = |b: &[u8]| {
        String::from_utf8_lossy(&b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())])
            .into_owned()
    };
    let uuid = |b: &[u8]| -> Option<String> { Some(Uuid(b.try_into().ok()?).to_string()) };
    match FsType::probe(&head[..4096.min(head.len())]) {
        FsType::Ext4 => Some((
            uuid(&head[1024 + 0x68..1024 + 0x78])?,
            text(&head[1024 + 0x78..1024 + 0x88]),
        )),
        FsType::Erofs => Some((
            uuid(&head[1024 + 48..1024 + 64])?,
            text(&head[1024 + 64..1024 + 80]),
        )),
        _ if head.len() >= 0x10000 + 0x12b + 256 && &head[0x10040..0x10048] == b"_BHRfS_M" => {
            let sb = &head[0x10000..];
            Some((uuid(&sb[0x20..0x30])?, text(&sb[0x12b..0x12b + 256])))
        }
        _ => None,
    }
}

/// `BTRFS_IOC_SCAN_DEV`: `_IOW(0x94, 4, struct btrfs_ioctl_vol_args)`.
const BTRFS_IOC_SCAN_DEV: Opcode = 0x5000_9404;

/// `struct btrfs_ioctl_vol_args` of include/uapi/linux/btrfs.h.
#[repr(C)]
struct BtrfsVolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// Registers every block device that carries a btrfs superblock with the kernel (as `btrfs
/// device scan` does), so that a filesystem spanning several devices mounts; returns their
/// names.
pub fn btrfs_scan() -> std::io::Result<Vec<String>> {
    let control = File::options()
        .read(true)
        .write(true)
        .open("/dev/btrfs-control")?;
    let mut scanned = Vec::new();
    for name in block_devices() {
        let path = dev_path(name.clone());
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.read_vec_at(0x10040, 8).ok().as_deref() != Some(b"_BHRfS_M") {
            continue;
        }
        let mut args = BtrfsVolArgs {
            fd: 0,
            name: [0; 4088],
        };
        let bytes = path.as_os_str().as_encoded_bytes();
        args.name[..bytes.len().min(4087)].copy_from_slice(&bytes[..bytes.len().min(4087)]);
        // SAFETY: the argument is a struct btrfs_ioctl_vol_args the kernel reads.
        unsafe {
            raw_ioctl(
                &control,
                BTRFS_IOC_SCAN_DEV,
                (&mut args as *mut BtrfsVolArgs).cast(),
            )
        }
        .map_err(std::io::Error::from)?;
        scanned.push(name);
    }
    Ok(scanned)
}

/// The filesystem type on `dev`, from its superblock.
pub fn probe_fstype(dev: &Path) -> Option<&'static str> {
    let file = File::open(dev).ok()?;
    let head = file.read_vec_at(0, 68 * 1024).ok()?;
    match FsType::probe(&head[..4096]) {
        FsType::Unknown if &head[0x10040..0x10048] == b"_BHRfS_M" => Some("btrfs"),
        FsType::Unknown => None,
        t => Some(t.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            RootSpec::parse("/dev/vda1"),
            Ok(RootSpec::Path("/dev/vda1".into()))
        );
        assert!(matches!(
            RootSpec::parse("PARTUUID=4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
            Ok(RootSpec::PartUuid(_))
        ));
        assert_eq!(
            RootSpec::parse("UUID=ABC"),
            Ok(RootSpec::Uuid("abc".into()))
        );
        assert_eq!(
            RootSpec::parse("LABEL=root"),
            Ok(RootSpec::Label("root".into()))
        );
        assert!(RootSpec::parse("vda1").is_err());
        assert!(RootSpec::parse("PARTUUID=xyz").is_err());
    }

    #[test]
    fn reads_ext4_ids_made_by_mkfs() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        let ok = std::process::Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                "rootlabel",
                "-U",
                "01234567-89ab-cdef-0123-456789abcdef",
            ])
            .arg(&img)
            .arg("4M")
            .status();
        if !ok.is_ok_and(|s| s.success()) {
            eprintln!("mkfs.ext4 unavailable: skipping");
            return;
        }
        let head = std::fs::read(&img).unwrap();
        assert_eq!(
            superblock_ids(&head[..68 * 1024]),
            Some((
                "01234567-89ab-cdef-0123-456789abcdef".into(),
                "rootlabel".into()
            ))
        );
        assert_eq!(probe_fstype(&img), Some("ext4"));
    }
}
