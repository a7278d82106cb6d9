//! Logging for the CLI: `log` records to stderr, prefixed by level for warnings and errors.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
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
