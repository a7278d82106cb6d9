//! Logging for the CLI: `log` records to stderr, prefixed by level for warnings and errors; or,
//! for the verbs run inside an initrd (`--kernel-cmdline`), to /dev/kmsg as boot mode logs.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::boot::kmsg;

struct Stderr;

/// Set by `to_kmsg`: records go to the kernel log instead of stderr.
static KMSG: Mutex<Option<File>> = Mutex::new(None);

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut kmsg = KMSG.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = kmsg.as_mut() {
            let line = kmsg::record_line(r);
            if f.write_all(line.as_bytes()).is_ok() {
                return;
            }
        }
        match r.level() {
            Level::Error => eprintln!("error: {}", r.args()),
            Level::Warn => eprintln!("warning: {}", r.args()),
            _ => eprintln!("{}", r.args()),
        }
    }

    fn flush(&self) {}
}

/// Installs the stderr logger: progress (info) by default, details with `-v`.
pub fn init_stderr(verbosity: u8) {
    let level = match verbosity {
        0 => LevelFilter::Info,
        _ => LevelFilter::Debug,
    };
    if log::set_logger(&Stderr).is_ok() {
        log::set_max_level(level);
    }
}

/// From now on, log to /dev/kmsg (timestamped, beside the kernel's and dracut's or systemd's
/// messages; journald reads it too). Stays on stderr when /dev/kmsg cannot be opened.
pub fn to_kmsg() {
    if let Ok(f) = File::options().write(true).open("/dev/kmsg") {
        *KMSG.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }
}
