//! Boot-mode logging: `log` records to /dev/kmsg (the kernel timestamps them), so they
//! interleave with the kernel's own messages on the console and in dmesg.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Kmsg(Mutex<Option<File>>);

/// syslog priority per level (kernel facility, as `<N>` prefixes in /dev/kmsg).
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One /dev/kmsg message (one write each): `<priority>initrd-sysext: text`.
pub fn record_line(r: &Record) -> String {
    format!("<{}>initrd-sysext: {}\n", priority(r.level()), r.args())
}

impl Log for Kmsg {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = record_line(r);
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let written = guard
            .as_mut()
            .is_some_and(|f| f.write_all(line.as_bytes()).is_ok());
        if !written {
            eprint!("initrd-sysext: {}", &line[3..]);
        }
    }

    fn flush(&self) {}
}

static LOGGER: Kmsg = Kmsg(Mutex::new(None));

/// Opens /dev/kmsg (falling back to stderr) and installs the logger at info level.
pub fn init() {
    if let Ok(f) = File::options().write(true).open("/dev/kmsg") {
        *LOGGER.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}

/// `rd.sysext.debug`: details too.
pub fn set_debug(debug: bool) {
    log::set_max_level(if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    });
}

/// One line straight to the console, for what must be seen even with `quiet`.
pub fn console(line: &str) {
    if let Ok(mut c) = File::options().write(true).open("/dev/console") {
        let _ = writeln!(c, "initrd-sysext: {line}");
    }
}
