//! `build initrd --drivers generic|host`: which kernel modules an initrd ships besides the
//! defaults — dracut's generic storage/filesystem set, or what this build host's block devices
//! and root filesystem need (dracut's `--hostonly`), found through sysfs.

use std::collections::BTreeSet;
use std::path::Path;

use crate::format::kmod::{normalize, ModuleDb};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drivers {
    Generic,
    Host,
}

impl Drivers {
    pub fn name(self) -> &'static str {
        match self {
            Drivers::Generic => "generic",
            Drivers::Host => "host",
        }
    }
}

/// What `--drivers generic` takes, after dracut's 90kernel-modules (its generic mode): the
/// storage controllers and their buses (ATA, SCSI, NVMe, MMC, UFS, virtio, USB storage and
/// host controllers, PCI host bridges such as Intel VMD) and the filesystems a root or an
/// extension may be on. dracut also takes drivers/md and all of fs/; we leave out md (RAID
/// and LVM need userspace we do not ship; dm-mod and dm-verity are defaults anyway) and keep
/// to local filesystems.
const GENERIC: [&str; 18] = [
    "kernel/drivers/ata/",
    "kernel/drivers/block/",
    "kernel/drivers/mmc/",
    "kernel/drivers/nvme/host/",
    "kernel/drivers/pci/controller/",
    "kernel/drivers/scsi/",
    "kernel/drivers/ufs/",
    "kernel/drivers/usb/host/",
    "kernel/drivers/usb/storage/",
    "kernel/drivers/virtio/",
    "kernel/fs/btrfs/",
    "kernel/fs/erofs/",
    "kernel/fs/ext4/",
    "kernel/fs/fat/",
    "kernel/fs/isofs/",
    "kernel/fs/overlayfs/",
    "kernel/fs/squashfs/",
    "kernel/fs/xfs/",
];

/// Left out of [`GENERIC`]: storage reached over a network (Fibre Channel, FCoE, iSCSI and
/// NVMe-oF offload adapters, Ceph, AoE, DRBD: they need a network the initrd does not bring
/// up, and are the heaviest drivers there), RAM-backed and test devices, the Xen backend.
const GENERIC_EXCLUDED: [&str; 27] = [
    "kernel/drivers/block/aoe/",
    "kernel/drivers/block/brd.",
    "kernel/drivers/block/drbd/",
    "kernel/drivers/block/floppy.",
    "kernel/drivers/block/nbd.",
    "kernel/drivers/block/null_blk/",
    "kernel/drivers/block/rbd.",
    "kernel/drivers/block/xen-blkback/",
    "kernel/drivers/block/zram/",
    "kernel/drivers/nvme/host/nvme-fc.",
    "kernel/drivers/nvme/host/nvme-rdma.",
    "kernel/drivers/nvme/host/nvme-tcp.",
    "kernel/drivers/scsi/be2iscsi/",
    "kernel/drivers/scsi/bfa/",
    "kernel/drivers/scsi/bnx2fc/",
    "kernel/drivers/scsi/bnx2i/",
    "kernel/drivers/scsi/csiostor/",
    "kernel/drivers/scsi/cxgbi/",
    "kernel/drivers/scsi/fcoe/",
    "kernel/drivers/scsi/fnic/",
    "kernel/drivers/scsi/iscsi_tcp.",
    "kernel/drivers/scsi/libfc/",
    "kernel/drivers/scsi/lpfc/",
    "kernel/drivers/scsi/qedf/",
    "kernel/drivers/scsi/qedi/",
    "kernel/drivers/scsi/qla2xxx/",
    "kernel/drivers/scsi/qla4xxx/",
];

/// Named outside those directories: the code pages vfat mounts with by default.
const GENERIC_NAMES: [&str; 3] = ["nls_cp437", "nls_iso8859_1", "nls_utf8"];

/// The modules `--drivers generic` takes from `db` (their closure is the caller's).
pub fn generic(db: &ModuleDb) -> Vec<String> {
    let wanted = |path: &str| {
        GENERIC.iter().any(|d| path.starts_with(d))
            && !GENERIC_EXCLUDED.iter().any(|d| path.starts_with(d))
    };
    let by_path = db.modules.iter().filter(|(_, m)| wanted(&m.path));
    let mut names: Vec<String> = by_path.map(|(n, _)| n.clone()).collect();
    names.extend(GENERIC_NAMES.iter().map(|n| n.to_string()));
    names
}

/// What this host's disks and root filesystem need, as names and aliases for
/// [`ModuleDb::closure`]: for each block device under `sysfs`/class/block that is not virtual
/// (loop, ram, zram, dm, md, nbd), every level of its device path upwards gives the module
/// behind its driver (`driver/module`) and its `modalias`; `mounts` (as /proc/self/mounts)
/// gives the root filesystem's `fs-<type>`.
pub fn host(sysfs: &Path, mounts: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let devices = sysfs.join("devices");
    let entries = std::fs::read_dir(sysfs.join("class/block"))
        .into_iter()
        .flatten();
    for entry in entries.flatten() {
        let Ok(dev) = entry.path().canonicalize() else {
            continue;
        };
        if !dev.starts_with(&devices) || dev.starts_with(devices.join("virtual")) {
            continue;
        }
        for level in dev.ancestors().take_while(|p| *p != devices) {
            names.extend(level_modules(level));
        }
    }
    names.extend(root_fs(mounts).map(|t| format!("fs-{t}")));
    names
}

/// One sysfs device directory's driver module (`driver/module`; for a built-in driver, which
/// has none, the driver's own name, often its module's in another build of the kernel) and
/// modalias.
fn level_modules(dir: &Path) -> impl Iterator<Item = String> {
    let link_name = |p: &Path| {
        let target = std::fs::read_link(p).ok()?;
        Some(normalize(&target.file_name()?.to_string_lossy()))
    };
    let module = link_name(&dir.join("driver/module")).or_else(|| link_name(&dir.join("driver")));
    let modalias = std::fs::read_to_string(dir.join("modalias"))
        .ok()
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty());
    module.into_iter().chain(modalias)
}

/// The filesystem type mounted at `/` last (the one in effect).
fn root_fs(mounts: &str) -> Option<&str> {
    mounts.lines().rev().find_map(|l| {
        let mut w = l.split_whitespace().skip(1);
        (w.next() == Some("/")).then(|| w.next()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A fake sysfs: a SATA disk behind ahci (a module) and libata, a loop device, the
    /// module directory the driver links point at.
    fn fake_sysfs(root: &Path) {
        let pci = root.join("devices/pci0000:00/0000:00:1f.2");
        let disk = pci.join("ata1/host0/target0:0:0/0:0:0:0");
        fs::create_dir_all(disk.join("block/sda/sda1")).unwrap();
        fs::create_dir_all(root.join("devices/virtual/block/loop0")).unwrap();
        fs::create_dir_all(root.join("class/block")).unwrap();
        fs::create_dir_all(root.join("bus/pci/drivers/ahci")).unwrap();
        fs::create_dir_all(root.join("bus/scsi/drivers/sd")).unwrap();
        for m in ["ahci", "sd_mod", "loop"] {
            fs::create_dir_all(root.join("module").join(m)).unwrap();
        }
        symlink(
            "../../../../module/ahci",
            root.join("bus/pci/drivers/ahci/module"),
        )
        .unwrap();
        symlink(
            "../../../../module/sd_mod",
            root.join("bus/scsi/drivers/sd/module"),
        )
        .unwrap();
        symlink("../../../bus/pci/drivers/ahci", pci.join("driver")).unwrap();
        fs::write(pci.join("modalias"), "pci:v00008086d00002922sv*\n").unwrap();
        let sd = "../../../../../../../bus/scsi/drivers/sd";
        symlink(sd, disk.join("driver")).unwrap();
        fs::write(disk.join("modalias"), "scsi:t-0x00\n").unwrap();
        let class = root.join("class/block");
        let rel = "../../devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda";
        symlink(rel, class.join("sda")).unwrap();
        symlink(format!("{rel}/sda1"), class.join("sda1")).unwrap();
        symlink("../../devices/virtual/block/loop0", class.join("loop0")).unwrap();
        // A built-in driver: no driver/module link.
        let virtio = root.join("devices/pci0000:00/0000:00:02.0/virtio1");
        fs::create_dir_all(virtio.join("block/vda")).unwrap();
        fs::create_dir_all(root.join("bus/virtio/drivers/virtio_blk")).unwrap();
        symlink(
            "../../../../bus/virtio/drivers/virtio_blk",
            virtio.join("driver"),
        )
        .unwrap();
        let rel = "../../devices/pci0000:00/0000:00:02.0/virtio1/block/vda";
        symlink(rel, class.join("vda")).unwrap();
    }

    #[test]
    fn host_walks_block_devices_up_to_their_drivers() {
        let dir = tempfile::tempdir().unwrap();
        fake_sysfs(dir.path());
        let mounts = "proc /proc proc rw 0 0\n/dev/sda1 / ext4 rw 0 0\n/dev/sda1 / btrfs rw 0 0\n";
        let got = host(dir.path(), mounts);
        let want = [
            "ahci",
            "fs-btrfs",
            "pci:v00008086d00002922sv*",
            "scsi:t-0x00",
            "sd_mod",
            "virtio_blk",
        ];
        assert_eq!(got.iter().map(String::as_str).collect::<Vec<_>>(), want);
        let empty = tempfile::tempdir().unwrap();
        assert!(host(empty.path(), "").is_empty());
    }

    #[test]
    fn generic_takes_storage_and_filesystems_but_not_network_storage() {
        let dep = "kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko\n\
                   kernel/drivers/ata/libahci.ko:\n\
                   kernel/drivers/scsi/qla2xxx/qla2xxx.ko:\n\
                   kernel/drivers/nvme/host/nvme-tcp.ko:\n\
                   kernel/drivers/net/e1000e.ko:\n\
                   kernel/fs/btrfs/btrfs.ko:\n";
        let db = ModuleDb::parse(Path::new("/m"), dep, "", "", "").unwrap();
        let got = generic(&db);
        assert_eq!(got[..3], ["ahci", "btrfs", "libahci"]);
        assert_eq!(got[3..], GENERIC_NAMES);
    }
}
