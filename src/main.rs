//! Entry point: boot mode when running as PID 1 (or invoked as `init`), else the CLI.

use std::path::Path;

fn main() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let as_init = Path::new(&argv0).file_name().is_some_and(|n| n == "init");
    if rustix::process::getpid().is_init() || as_init {
        initrd_sysext::boot::init::run();
    }
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if let Err(e) = initrd_sysext::cli::run(args) {
        eprintln!("initrd-sysext: {e}");
        std::process::exit(e.exit_code());
    }
}
