//! Entry point: the CLI verbs (build mode, inspect, verify).

fn main() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if let Err(e) = initrd_sysext::cli::run(args) {
        eprintln!("initrd-sysext: {e}");
        std::process::exit(e.exit_code());
    }
}
