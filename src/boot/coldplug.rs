//! Drivers without udev: every device's sysfs `modalias` matched against the module database
//! (kmod's rules), the matching drivers loaded (coldplug); then the uevent socket for devices
//! that appear later (hotplug), until switch root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::boot::modload::Loader;
use crate::boot::uevent::{Monitor, Uevent};
use crate::format::kmod::{self, AliasIndex, Provider};

/// The module loader and the uevent socket.
pub struct Devices {
    pub loader: Loader,
    monitor: Option<Monitor>,
    /// Modaliases already matched.
    seen: BTreeSet<String>,
    /// modalias -> device, for devices no shipped or built-in driver matches (yet).
    missing: BTreeMap<String, String>,
    /// The kernel's aliases of the modules this initrd lacks, read when first needed.
    unshipped: Option<AliasIndex>,
    /// Whether a missing module is reported at once (after the initrd merge) or kept for
    /// [`Devices::report_missing`] (an extension may still bring it).
    warn_now: bool,
}

impl Devices {
    /// Opens the uevent socket first, so that nothing that appears from now on is missed.
    pub fn start(loader: Loader) -> Devices {
        let monitor = Monitor::open()
            .map_err(|e| info!("no uevent socket ({e}): polling for the root device"))
            .ok();
        Devices {
            loader,
            monitor,
            seen: BTreeSet::new(),
            missing: BTreeMap::new(),
            unshipped: None,
            warn_now: false,
        }
    }

    pub fn load(&mut self, names: &[&str], why: &str) {
        self.loader.load(names, why);
    }

    /// Matches every device under /sys/devices and loads the drivers, then what the events
    /// of the devices those drivers created ask for.
    pub fn coldplug(&mut self) {
        if self.loader.db.modules.is_empty() {
            return;
        }
        let t = Instant::now();
        let mut found = Vec::new();
        walk(Path::new("/sys/devices"), &mut found);
        let devices = found.len();
        self.handle(found, "coldplug");
        if let Some(m) = &self.monitor {
            let events = m.drain();
            self.handle_events(events);
        }
        info!(
            "coldplug: {devices} devices with a modalias, {} distinct, in {} ms",
            self.seen.len(),
            t.elapsed().as_millis()
        );
    }

    /// Loads the modules matching the (modalias, device) pairs not seen before.
    fn handle(&mut self, found: Vec<(String, String)>, why: &str) {
        let loader = &mut self.loader;
        let mut names = BTreeSet::new();
        for (alias, device) in found {
            if !self.seen.insert(alias.clone()) {
                continue;
            }
            let drivers = loader.db.modalias(&alias);
            let loadable = drivers.iter().filter(|d| d.provider == Provider::Loadable);
            let loadable: Vec<String> = loadable.map(|d| d.module.clone()).collect();
            debug!("{device}: {alias}: [{}]", loadable.join(" "));
            if drivers.iter().all(|d| d.provider == Provider::NotShipped) {
                self.missing.insert(alias, device);
            }
            names.extend(loadable);
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if !names.is_empty() {
            loader.load(&names, why);
        }
        if self.warn_now {
            self.report_missing();
        }
    }

    /// Loads what the devices of `events` need; true when a block device appeared or
    /// changed. Lost events (None) mean looking at sysfs again.
    fn handle_events(&mut self, events: Option<Vec<Uevent>>) -> bool {
        let Some(events) = events else {
            warn!("uevents were lost: looking at every device again");
            let mut found = Vec::new();
            walk(Path::new("/sys/devices"), &mut found);
            self.handle(found, "rescan");
            return true;
        };
        let mut block = false;
        let mut found = Vec::new();
        for ev in events {
            if ev.action == "add" || ev.action == "change" {
                block |= ev.subsystem == "block";
                if let Some(alias) = ev.modalias {
                    found.push((alias, ev.devpath));
                }
            }
        }
        self.handle(found, "hotplug");
        block
    }

    /// Waits for devices until `deadline`: loads what new ones need; true when a block
    /// device appeared or changed (or, without the socket, after a short sleep).
    pub fn wait(&mut self, deadline: Instant) -> bool {
        let Some(m) = &self.monitor else {
            std::thread::sleep(
                Duration::from_millis(25).min(deadline.saturating_duration_since(Instant::now())),
            );
            return true;
        };
        let events = m.wait(deadline);
        self.handle_events(events)
    }

    /// One warning per device that may lead to a disk and whose driver this initrd lacks
    /// (later ones as they appear); the others (sound, network, input…) are counted in one
    /// line and listed under rd.sysext.debug.
    pub fn report_missing(&mut self) {
        let mut others = 0;
        for (alias, device) in std::mem::take(&mut self.missing) {
            let drivers = self.loader.db.modalias(&alias);
            if drivers.iter().any(|d| d.provider != Provider::NotShipped) {
                continue;
            }
            if !leads_to_storage(&alias) {
                debug!("device {device} (modalias {alias}): no driver in this initrd");
                others += 1;
                continue;
            }
            let modules = self.unshipped().lookup(&alias).join(" or ");
            if modules.is_empty() {
                debug!("device {device} (modalias {alias}): no driver in this kernel");
            } else {
                warn!(
                    "device {device} (modalias {alias}) needs module {modules}, which is not in this initrd"
                );
            }
        }
        if others > 0 {
            info!("{others} devices that are not storage have no driver in this initrd");
        }
        self.warn_now = true;
    }

    fn unshipped(&mut self) -> &AliasIndex {
        let path = self.loader.db.dir.join(kmod::UNSHIPPED_ALIAS);
        self.unshipped.get_or_insert_with(|| {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            kmod::alias_index(&text)
        })
    }
}

/// Whether a device may lead to a disk: mass-storage, USB, SD and Fibre Channel controllers
/// on PCI (virtio-blk and virtio-scsi are mass storage there too), virtio block and SCSI
/// devices, SCSI disks, USB mass-storage interfaces, MMC cards.
fn leads_to_storage(alias: &str) -> bool {
    if let Some(pci) = alias.strip_prefix("pci:") {
        let class = pci.find("bc").map_or("", |i| &pci[i + 2..]);
        return ["01", "0Csc03", "0Csc04", "08sc05"]
            .iter()
            .any(|c| class.starts_with(c));
    }
    [
        "virtio:d00000002v",
        "virtio:d00000008v",
        "scsi:t-0x00",
        "scsi:t-0x0e",
        "mmc:",
    ]
    .iter()
    .any(|p| alias.starts_with(p))
        || alias.starts_with("usb:") && alias.contains("ic08")
}

/// (modalias, device path under /sys) of every device below `dir`, not following symlinks;
/// /sys/devices/virtual (no drivers to load) is skipped.
fn walk(dir: &Path, found: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name();
        if ft.is_dir() && name != "virtual" {
            walk(&e.path(), found);
        } else if ft.is_file() && name == "modalias" {
            if let Ok(alias) = std::fs::read_to_string(e.path()) {
                let alias = alias.trim();
                if !alias.is_empty() {
                    let device = dir.to_string_lossy().trim_start_matches("/sys").to_owned();
                    found.push((alias.to_owned(), device));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_devices_are_told_from_others() {
        for alias in [
            "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02", // NVMe
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", // AHCI
            "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00", // virtio-blk
            "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30", // xHCI
            "virtio:d00000002v00001AF4",
            "scsi:t-0x00",
            "usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00",
        ] {
            assert!(leads_to_storage(alias), "{alias}");
        }
        for alias in [
            "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", // e1000
            "pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00", // bochs
            "acpi:PNP0700:",
            "usb:v0627p0001d0000dc00dsc00dp00ic03isc00ip00in00", // tablet
            "cpu:type:x86,ven0002fam000Fmod006B:feature:,0000",
        ] {
            assert!(!leads_to_storage(alias), "{alias}");
        }
    }
}
