//! Entry point: boot mode when running as PID 1 (or invoked as `init`), else the CLI (as
//! `systemd-sysext` or `systemd-confext` when invoked by that name).

use std::path::Path;

fn main() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let as_init = Path::new(&argv0).file_name().is_some_and(|n| n == "init");
    if rustix::process::getpid().is_init() || as_init {
        initrd_sysext::boot::init::run();
    }
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let name = Path::new(&argv0).file_name().unwrap_or_default();
    use initrd_sysext::format::release::Class;
    let result = match name.to_str() {
        Some("systemd-sysext") => initrd_sysext::cli::run_sysext(args, Class::Sysext),
        Some("systemd-confext") => initrd_sysext::cli::run_sysext(args, Class::Confext),
        _ => initrd_sysext::cli::run(args),
    };
    if let Err(e) = result {
        eprintln!("{}: {e}", name.to_string_lossy());
        std::process::exit(e.exit_code());
    }
}
