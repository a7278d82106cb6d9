//! The command line: arguments (lexopt) → verbs, one file per verb family (build, image, the
//! systemd-sysext verbs, boot checks), and the rendering of their results.
//! Exit codes: 0 success, 1 failure, 2 usage error.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;
use lexopt::{Parser, ValueExt};

use crate::format::release::Class;

mod boot;
mod build;
mod image;
mod logging;
mod sysext;

pub const USAGE: &str = "\
usage: initrd-sysext [-v] COMMAND ...

  genkey --key K --cert C [--cn NAME] [--days N] [--ca-key K --ca-cert C] [--force]
  build sysext|confext --tree DIR [--extra-tree SRC[:DST]]... [--base DIR] --name NAME [--version V] [--scope SCOPES]
               [--id ID [--version-id V] | --os-release FILE] [--arch x86-64|arm64]
               [--fs erofs|squashfs] [--partition root|usr] [--verity signed|defer|hash|off]
               [--key K --cert C] [--seed UUID] [--split] [--force] --output OUT.raw
               [--module NAME... [--kver V] [--modules-dir DIR] [--firmware [--firmware-dir DIR]]]
               [--definitions DIR]  (systemd-repart *.conf instead of --fs/--partition/--verity)
  build initrd [--tree DIR] [--extra-tree SRC[:DST]]... [--kver V] [--modules-dir DIR] [--module NAME]...
               [--drivers generic|host] [--omit-driver M]... [--cert C]... [--secondary-cert C]...
               [--extension IMG]... [--confext IMG]... [--init BINARY] [--arch x86-64|arm64] [--compress zstd|none] [--level N]
               [--force] --output initrd.cpio.zst
  build uki [--stub STUB] --kernel K (--initrd I | build initrd's options) --cmdline TEXT
            --os-release FILE [--uname V] [--force] --output X.efi
            (default stub: Debian's linuxx64.efi.stub; --uname: the bzImage's version string)
  build extension-cpio IMG... [--force] --output X.cpio
  build --directory DIR [--init BINARY] [--force]   (a mkosi-style project: mkosi.conf, mkosi.images/*/)
  sign IMAGE (--key K | --signature FILE.p7s) --cert C [--force]   (a --verity defer image)
  inspect IMAGE|INITRD|UKI [--json] [--cert C]...
  verify IMAGE [--cert C]... [--verity-dir DIR]...
  pcr predict [--bank sha1|sha256|sha384|sha512]... [--stub-extension FILE.raw]... [EXTENSION | --confext C]...
              (PCR 13 after systemd-stub's event and boot mode's, EXTENSIONs in merge order)
  check-kernel [CONFIG]   (default: /proc/config.gz or /boot/config-$(uname -r))
  [sysext|confext] [OPTIONS] [status|merge|unmerge|refresh|list] [OPTIONS]   (systemd-sysext's
               grammar; also as argv[0] systemd-sysext, systemd-confext)  --root DIR
               --json=pretty|short|off  --force  --image-policy POLICY  --noexec=BOOL
               --mutable=no|yes|auto|import|ephemeral|ephemeral-import  --always-refresh=BOOL
               --no-reload  --no-legend  --no-pager  --userspace-verity  --kernel-cmdline
  --version, --help
";

/// A failure with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}\n\n{USAGE}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }

    /// A usage error as systemd's tools report it: one line, exit status 1.
    fn into_systemd(self) -> CliError {
        match self {
            CliError::Usage(msg) => CliError::Failed(msg),
            failed => failed,
        }
    }
}

impl From<lexopt::Error> for CliError {
    fn from(e: lexopt::Error) -> CliError {
        CliError::Usage(e.to_string())
    }
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

/// Parses and runs the command line. The systemd-sysext verbs take systemd's grammar (options
/// before or after the verb, the verb defaulting to `status`), with or without the word
/// `sysext` before them.
pub fn run(args: Vec<OsString>) -> Result<(), CliError> {
    let mut p = Parser::from_args(args.clone());
    let mut verbosity = 0;
    let command = loop {
        match p.next()? {
            Some(Short('v') | Long("verbose")) => verbosity += 1,
            Some(Long("version")) => {
                println!("initrd-sysext {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            Some(Short('h') | Long("help")) => {
                print!("{USAGE}");
                return Ok(());
            }
            Some(Long(o)) if sysext::OPTIONS.contains(&o) => {
                return run_sysext(args, Class::Sysext)
            }
            Some(Value(v)) => break v.string()?,
            Some(other) => return Err(other.unexpected().into()),
            None => return Err(usage("no command given")),
        }
    };
    logging::init_stderr(verbosity);
    match command.as_str() {
        "genkey" => build::genkey(&mut p),
        "build" => build::build(&mut p),
        "sign" => build::sign(&mut p),
        "inspect" => image::inspect(&mut p),
        "verify" => image::verify(&mut p),
        "pcr" => image::pcr(&mut p),
        "check-kernel" => boot::check_kernel(&mut p),
        "sysext" => sysext::run(&mut p, Class::Sysext).map_err(CliError::into_systemd),
        "confext" => sysext::run(&mut p, Class::Confext).map_err(CliError::into_systemd),
        verb if sysext::VERBS.contains(&verb) => run_sysext(args, Class::Sysext),
        other => Err(usage(format!("unknown command {other:?}"))),
    }
}

/// The command line of `systemd-sysext` or `systemd-confext` (the binary invoked by that name,
/// or the verbs).
pub fn run_sysext(args: Vec<OsString>, class: Class) -> Result<(), CliError> {
    let verbosity = args
        .iter()
        .filter(|a| *a == "-v" || *a == "--verbose")
        .count();
    logging::init_stderr(verbosity.min(255) as u8);
    sysext::run(&mut Parser::from_args(args), class).map_err(CliError::into_systemd)
}

fn path(p: &mut Parser) -> Result<PathBuf, CliError> {
    Ok(PathBuf::from(p.value()?))
}

fn string(p: &mut Parser) -> Result<String, CliError> {
    Ok(p.value()?.string()?)
}

fn required<T>(v: Option<T>, name: &str) -> Result<T, CliError> {
    v.ok_or_else(|| usage(format!("{name} is required")))
}

/// One of the named `choices` for option `opt`.
fn choose<T: Copy>(v: &str, opt: &str, choices: &[(&str, T)]) -> Result<T, CliError> {
    choices
        .iter()
        .find(|(n, _)| *n == v)
        .map(|&(_, t)| t)
        .ok_or_else(|| {
            let names: Vec<_> = choices.iter().map(|(n, _)| *n).collect();
            usage(format!("{opt} {v:?}: expected one of {}", names.join(", ")))
        })
}
