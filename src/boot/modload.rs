//! Loading kernel modules at boot: the default set and `/etc/initrd-sysext/modules`, in
//! `modules.dep` order, with `finit_module` (compressed modules via the kernel's decompressor).

use std::ffi::CStr;
use std::fs::File;
use std::path::{Path, PathBuf};

use log::{debug, info, warn};

use crate::format::kmod::{self, ModuleDb};

/// `MODULE_INIT_COMPRESSED_FILE`: the kernel decompresses (CONFIG_MODULE_DECOMPRESS).
const COMPRESSED_FILE: i32 = 4;

/// The modules directory of the running kernel.
pub fn modules_dir(root: &Path) -> PathBuf {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    root.join("lib/modules").join(release)
}

/// Loads the default modules plus those listed in `/etc/initrd-sysext/modules`. Missing
/// metadata (a kernel with everything built in) is fine; a module that fails to load is
/// logged and the rest go on (the feature it serves reports its own error later).
pub fn load_all(root: &Path) {
    let dir = modules_dir(root);
    let db = match ModuleDb::load(&dir) {
        Ok(db) => db,
        Err(e) => {
            info!("no loadable modules ({e}); relying on built-in drivers");
            return;
        }
    };
    let listed =
        std::fs::read_to_string(root.join("etc/initrd-sysext/modules")).unwrap_or_default();
    let mut names: Vec<&str> = kmod::DEFAULT_MODULES.to_vec();
    names.extend(
        listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#')),
    );
    let order = match db.closure(&names, false) {
        Ok(order) => order,
        Err(e) => return warn!("modules: {e}"),
    };
    let (mut loaded, mut failed) = (0, 0);
    for name in &order {
        match load(&dir.join(&db.modules[name].path)) {
            Ok(true) => loaded += 1,
            Ok(false) => debug!("module {name}: already loaded"),
            Err(e) => {
                failed += 1;
                warn!("module {name}: {e}");
            }
        }
    }
    info!(
        "modules: {loaded} loaded, {failed} failed, of {}",
        order.len()
    );
}

/// Loads one module file; Ok(false) if it was already loaded.
fn load(path: &Path) -> std::io::Result<bool> {
    let file = File::open(path)?;
    let name = path.to_string_lossy();
    let compressed = [".xz", ".zst", ".gz"].iter().any(|s| name.ends_with(s));
    let flags = if compressed { COMPRESSED_FILE } else { 0 };
    let empty: &CStr = c"";
    match rustix::system::finit_module(&file, empty, flags) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
