//! Loading kernel modules at boot: names and their closure (dependencies and soft
//! dependencies from the module database) with `finit_module`, independent ones in parallel
//! (compressed modules via the kernel's decompressor), skipping what is loaded or built in.

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use rustix::io::Errno;

use crate::format::elf;
use crate::format::kmod::{self, ModuleDb};

/// `MODULE_INIT_COMPRESSED_FILE`: the kernel decompresses (CONFIG_MODULE_DECOMPRESS).
const COMPRESSED_FILE: i32 = 4;
/// Modules loaded at once; their init functions often wait on hardware.
const WORKERS: usize = 4;

/// The modules directory of the running kernel under `root`.
pub fn modules_dir(root: &Path) -> PathBuf {
    root.join("lib/modules").join(kernel_release())
}

pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// The database and what this boot has loaded from it.
pub struct Loader {
    pub db: ModuleDb,
    /// Modules loaded (or found loaded) so far.
    done: BTreeSet<String>,
    pub loaded: usize,
    pub failed: usize,
    /// Wall time while modules were loading (finit_module, several at a time): the
    /// kernel's share of the boot.
    pub kernel_time: Duration,
}

impl Loader {
    /// The database of `dir`; an empty one (logged) when the kernel has no module index
    /// there: extensions may still bring modules.
    pub fn open(dir: &Path, blacklist: &[String]) -> Loader {
        let t = Instant::now();
        let mut db = ModuleDb::load(dir).unwrap_or_else(|e| {
            info!("no module index ({e}); relying on built-in drivers");
            ModuleDb {
                dir: dir.to_owned(),
                ..ModuleDb::default()
            }
        });
        db.add_blacklist(&blacklist.join(","));
        info!(
            "module index: {} modules, {} aliases, in {} ms",
            db.modules.len(),
            db.aliases.len(),
            t.elapsed().as_millis()
        );
        Loader {
            db,
            done: BTreeSet::new(),
            loaded: 0,
            failed: 0,
            kernel_time: Duration::ZERO,
        }
    }

    /// Makes the modules under `dir` (the merged /usr/lib/modules/<kver>) that the database
    /// lacks loadable, each one's `.modinfo` giving its dependencies, aliases and soft
    /// dependencies; returns their names.
    pub fn add_dir(&mut self, dir: &Path) -> Vec<String> {
        let mut files = Vec::new();
        find_modules(dir, &mut files);
        let mut added = Vec::new();
        for path in files {
            let name = kmod::normalize(&path.to_string_lossy());
            if self.db.modules.contains_key(&name) {
                continue;
            }
            match elf::read_modinfo(&path) {
                Ok(info) => {
                    let path = path.to_string_lossy().into_owned();
                    self.db
                        .add(path, &name, &info.depends, &info.aliases, &info.softdeps);
                    added.push(name);
                }
                Err(e) => warn!("{}: {e}", path.display()),
            }
        }
        added
    }

    /// Loads `names` (modules or aliases) with their closure; `why` goes into the log.
    pub fn load(&mut self, names: &[&str], why: &str) {
        let order = match self.db.closure(names, false) {
            Ok(order) => order,
            Err(e) => return warn!("modules for {why}: {e}"),
        };
        let todo: Vec<String> = order
            .into_iter()
            .filter(|m| !self.done.contains(m) && !is_present(m))
            .collect();
        if todo.is_empty() {
            return;
        }
        let t = Instant::now();
        let (loaded, failed) = self.load_parallel(&todo);
        self.done.extend(todo.iter().cloned());
        self.loaded += loaded;
        self.failed += failed;
        self.kernel_time += t.elapsed();
        info!(
            "modules for {why}: {loaded} loaded ({}), {failed} failed, in {} ms",
            todo.join(" "),
            t.elapsed().as_millis()
        );
    }

    /// Loads `order` (each module after its dependencies) on a few threads: a module starts
    /// once every dependency of it in `order` has finished.
    fn load_parallel(&self, order: &[String]) -> (usize, usize) {
        // A module waits for its hard dependencies and `pre:` soft dependencies.
        let deps: Vec<Vec<usize>> = order
            .iter()
            .map(|m| {
                let hard = self.db.modules.get(m).map(|m| &m.deps[..]).unwrap_or(&[]);
                let pre = self.db.softdeps.get(m).map(|s| &s.0[..]).unwrap_or(&[]);
                (0..order.len())
                    .filter(|&i| hard.contains(&order[i]) || pre.contains(&order[i]))
                    .collect()
            })
            .collect();
        // started[i], finished[i], and the totals.
        let state = Mutex::new((vec![false; order.len()], vec![false; order.len()], 0, 0));
        let cv = Condvar::new();
        let next = |s: &mut (Vec<bool>, Vec<bool>, usize, usize)| {
            (0..order.len()).find(|&i| !s.0[i] && deps[i].iter().all(|&d| s.1[d]))
        };
        std::thread::scope(|scope| {
            for _ in 0..WORKERS.min(order.len()) {
                scope.spawn(|| loop {
                    let mut s = state.lock().unwrap();
                    let i = loop {
                        if let Some(i) = next(&mut s) {
                            break i;
                        }
                        if s.0.iter().all(|&x| x) {
                            return;
                        }
                        s = cv.wait(s).unwrap();
                    };
                    s.0[i] = true;
                    drop(s);
                    let path = self.db.dir.join(&self.db.modules[&order[i]].path);
                    let t = Instant::now();
                    // Some(loaded?), None: nothing to load here.
                    let ok = match finit(&path) {
                        Ok(_) => Some(true),
                        // The module's init found no hardware of its kind (crc32c_intel on
                        // a CPU without SSE4.2): as modprobe, not an error.
                        Err(e) if e.raw_os_error() == Some(Errno::NODEV.raw_os_error()) => {
                            debug!("module {}: no such device", order[i]);
                            None
                        }
                        Err(e) => {
                            warn!("module {}: {e}", order[i]);
                            Some(false)
                        }
                    };
                    debug!("module {}: {} us", order[i], t.elapsed().as_micros());
                    let mut s = state.lock().unwrap();
                    s.1[i] = true;
                    match ok {
                        Some(true) => s.2 += 1,
                        Some(false) => s.3 += 1,
                        None => {}
                    }
                    cv.notify_all();
                });
            }
        });
        let s = state.into_inner().unwrap();
        (s.2, s.3)
    }
}

/// Kernel modules (`*.ko`, compressed or not) below `dir`, not following symlinks.
fn find_modules(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if ft.is_dir() {
            find_modules(&path, found);
        } else if ft.is_file()
            && [".ko", ".ko.zst", ".ko.gz", ".ko.xz"]
                .iter()
                .any(|s| name.ends_with(s))
        {
            found.push(path);
        }
    }
}

/// Loaded, or built in with a sysfs entry: nothing to do.
fn is_present(name: &str) -> bool {
    Path::new("/sys/module").join(name).exists()
}

/// Loads one module file; Ok(false) if it was already loaded.
fn finit(path: &Path) -> std::io::Result<bool> {
    let file = File::open(path)?;
    let name = path.to_string_lossy();
    let compressed = [".xz", ".zst", ".gz"].iter().any(|s| name.ends_with(s));
    let flags = if compressed { COMPRESSED_FILE } else { 0 };
    let empty: &CStr = c"";
    match rustix::system::finit_module(&file, empty, flags) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
