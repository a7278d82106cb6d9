//! Command-line parsing (lexopt) and dispatch of the build-mode verbs.
//! Exit codes: 0 success, 1 failure, 2 usage error.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use lexopt::prelude::*;
use lexopt::{Parser, ValueExt};

use crate::build::genkey::{self, Issuer};
mod logging;
use crate::build::initrd::{self, Compression};
use crate::build::output;
use crate::build::project;
use crate::build::repart::{self, Flags};
use crate::build::sysext::{self, FsKind, Identity, Spec, VerityMode};
use crate::format::gpt::{Arch, Designator};
use crate::format::uuid::Uuid;
use crate::image::{certs, inspect, verify};
use crate::runtime::policy::Policy;
use crate::runtime::{merge, verbs};
use crate::tree;

pub const USAGE: &str = "\
usage: initrd-sysext [-v] COMMAND ...

  genkey --key K --cert C [--cn NAME] [--days N] [--ca-key K --ca-cert C] [--force]
  build sysext --tree DIR [--extra-tree SRC[:DST]]... [--base DIR] --name NAME [--version V] [--scope SCOPES]
               [--id ID [--version-id V] | --os-release FILE] [--arch x86-64|arm64]
               [--fs erofs|squashfs] [--partition root|usr] [--verity signed|defer|hash|off]
               [--key K --cert C] [--seed UUID] [--split] [--force] --output OUT.raw
               [--definitions DIR]  (systemd-repart *.conf instead of --fs/--partition/--verity)
  build initrd [--tree DIR] [--extra-tree SRC[:DST]]... [--kver V] [--modules-dir DIR] [--module NAME]... [--cert C]...
               [--secondary-cert C]...
               [--extension IMG]... [--init BINARY] [--compress zstd|none] [--level N]
               [--force] --output initrd.cpio.zst
  build extension-cpio IMG... [--force] --output X.cpio
  build --directory DIR [--init BINARY] [--force]   (a mkosi-style project: mkosi.conf, mkosi.images/*/)
  sign IMAGE (--key K | --signature FILE.p7s) --cert C [--force]   (a --verity defer image)
  inspect IMAGE|INITRD [--json] [--cert C]...
  verify IMAGE [--cert C]... [--verity-dir DIR]...
  check-kernel [CONFIG]   (default: /proc/config.gz or /boot/config-$(uname -r))
  merge | unmerge | refresh | status | list  [--root DIR] [--json=pretty|short|off]
               [--image-policy POLICY] [--userspace-verity] [--kernel-cmdline] [--force] [--noexec]
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

/// Parses and runs the command line.
pub fn run(args: Vec<OsString>) -> Result<(), CliError> {
    let mut p = Parser::from_args(args);
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
            Some(Value(v)) => break v.string()?,
            Some(other) => return Err(other.unexpected().into()),
            None => return Err(usage("no command given")),
        }
    };
    logging::init_stderr(verbosity);
    match command.as_str() {
        "genkey" => genkey_cmd(&mut p),
        "build" => match p.next()? {
            Some(Value(v)) => match v.string()?.as_str() {
                "sysext" => build_sysext(&mut p),
                "initrd" => build_initrd(&mut p),
                "extension-cpio" => build_extension_cpio(&mut p),
                other => Err(usage(format!("unknown build target {other:?}"))),
            },
            Some(Long("directory") | Short('C')) => {
                let dir = path(&mut p)?;
                build_project(&dir, &mut p)
            }
            Some(other) => Err(other.unexpected().into()),
            None => Err(usage(
                "build what? sysext, initrd, extension-cpio or --directory DIR",
            )),
        },
        "inspect" => inspect_cmd(&mut p),
        "sign" => sign_cmd(&mut p),
        "check-kernel" => check_kernel(&mut p),
        "merge" | "unmerge" | "refresh" | "status" | "list" => sysext_verb(&command, &mut p),
        "verify" => verify_cmd(&mut p),
        other => Err(usage(format!("unknown command {other:?}"))),
    }
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

fn genkey_cmd(p: &mut Parser) -> Result<(), CliError> {
    let (mut key, mut cert, mut ca_key, mut ca_cert) = (None, None, None, None);
    let (mut cn, mut days, mut force) = ("initrd-sysext signing key".to_owned(), 3650u32, false);
    while let Some(arg) = p.next()? {
        match arg {
            Long("key") => key = Some(path(p)?),
            Long("cert") => cert = Some(path(p)?),
            Long("cn") => cn = string(p)?,
            Long("days") => days = p.value()?.parse()?,
            Long("ca-key") => ca_key = Some(path(p)?),
            Long("ca-cert") => ca_cert = Some(path(p)?),
            Long("force") => force = true,
            other => return Err(other.unexpected().into()),
        }
    }
    let (key, cert) = (required(key, "--key")?, required(cert, "--cert")?);
    let ca = match (ca_key, ca_cert) {
        (Some(k), Some(c)) => Some(certs::load_pair(&k, &c).map_err(failed)?),
        (None, None) => None,
        _ => return Err(usage("--ca-key and --ca-cert go together")),
    };
    let issuer = match &ca {
        Some((key, cert)) => Issuer::Ca { key, cert },
        None => Issuer::SelfSigned,
    };
    let (k, c) = genkey::generate(&cn, days, issuer).map_err(failed)?;
    let pem = k.private_key_to_pem_pkcs8().map_err(failed)?;
    write_new(&key, &pem, force, 0o600)?;
    write_new(&cert, &c.to_pem().map_err(failed)?, force, 0o644)?;
    log::info!("wrote {} and {}", key.display(), cert.display());
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], force: bool, mode: u32) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    let written = output::write(path, bytes, force).map_err(failed)?;
    std::fs::set_permissions(&written, std::fs::Permissions::from_mode(mode)).map_err(failed)
}

fn build_sysext(p: &mut Parser) -> Result<(), CliError> {
    let mut s = Spec::new(PathBuf::new(), String::new(), PathBuf::new());
    s.source_date_epoch = source_date_epoch()?;
    let (mut tree, mut name, mut output, mut key, mut cert) = (None, None, None, None, None);
    let (mut id, mut version_id) = (None, None);
    let (mut flags, mut definitions) = (Flags::default(), None);
    while let Some(arg) = p.next()? {
        match arg {
            Long("tree") => tree = Some(path(p)?),
            Long("extra-tree") => s.extra_trees.push(tree::extra_tree(&string(p)?)),
            Long("base") => s.base = Some(path(p)?),
            Long("name") => name = Some(string(p)?),
            Long("version") => s.version = Some(string(p)?),
            Long("scope") => s.scope = string(p)?,
            Long("id") => id = Some(string(p)?),
            Long("version-id") => version_id = Some(string(p)?),
            Long("os-release") => s.identity = Identity::OsRelease(path(p)?),
            Long("arch") => {
                let a = string(p)?;
                let arch = Arch::from_name(&a)
                    .ok_or_else(|| usage(format!("--arch {a:?}: x86-64 or arm64")))?;
                flags.arch = Some(arch);
            }
            Long("fs") => {
                let kinds = [("erofs", FsKind::Erofs), ("squashfs", FsKind::Squashfs)];
                flags.fs = Some(choose(&string(p)?, "--fs", &kinds)?);
            }
            Long("partition") => {
                let designators = [("root", Designator::Root), ("usr", Designator::Usr)];
                flags.partition = Some(choose(&string(p)?, "--partition", &designators)?);
            }
            Long("verity") => {
                let modes = [
                    ("signed", VerityMode::Signed),
                    ("defer", VerityMode::Defer),
                    ("hash", VerityMode::Hash),
                    ("off", VerityMode::Off),
                ];
                flags.verity = Some(choose(&string(p)?, "--verity", &modes)?);
            }
            Long("definitions") => definitions = Some(path(p)?),
            Long("key") => key = Some(path(p)?),
            Long("cert") => cert = Some(path(p)?),
            Long("seed") => {
                let v = string(p)?;
                s.seed = Some(v.parse::<Uuid>().map_err(|e| usage(e.to_string()))?);
            }
            Long("split") => s.split = true,
            Long("force") => s.force = true,
            Long("output") | Short('o') => output = Some(path(p)?),
            other => return Err(other.unexpected().into()),
        }
    }
    s.tree = required(tree, "--tree")?;
    s.name = required(name, "--name")?;
    s.output = expand_output(&required(output, "--output")?, &s)?;
    if let Some(id) = id {
        if matches!(s.identity, Identity::OsRelease(_)) {
            return Err(usage("--id and --os-release exclude each other"));
        }
        s.identity = Identity::Explicit { id, version_id };
    } else if version_id.is_some() {
        return Err(usage("--version-id needs --id"));
    }
    s.signing = match (key, cert) {
        (Some(k), Some(c)) => Some((k, c)),
        (None, None) => None,
        _ => return Err(usage("--key and --cert go together")),
    };
    repart::layout(&mut s, flags, definitions.as_deref()).map_err(failed)?;
    let r = sysext::build(&s).map_err(failed)?;
    println!("{}", r.output.display());
    log::info!(
        "{} entries, {} content bytes, filesystem {} bytes, image {} bytes, seed {}, {:.2}s",
        r.files,
        r.content_bytes,
        r.fs_bytes,
        r.image_bytes,
        r.seed,
        r.seconds
    );
    if let Some(rh) = &r.root_hash {
        log::info!("root hash {rh}");
    }
    if let Some(fp) = &r.fingerprint {
        log::info!("signed by certificate {fp}");
    }
    Ok(())
}

fn build_initrd(p: &mut Parser) -> Result<(), CliError> {
    let mut s = initrd::Spec {
        init: std::env::current_exe().map_err(failed)?,
        compression: Compression::Zstd(3),
        source_date_epoch: source_date_epoch()?,
        ..initrd::Spec::default()
    };
    let (mut output, mut compress, mut level) = (None, "zstd".to_owned(), 3);
    while let Some(arg) = p.next()? {
        match arg {
            Long("tree") => s.tree = Some(path(p)?),
            Long("extra-tree") => s.extra_trees.push(tree::extra_tree(&string(p)?)),
            Long("kver") => s.kver = Some(string(p)?),
            Long("modules-dir") => s.modules_dir = Some(path(p)?),
            Long("module") => s.modules.push(string(p)?),
            Long("cert") => s.certs.push(path(p)?),
            Long("secondary-cert") => s.secondary_certs.push(path(p)?),
            Long("extension") => s.extensions.push(path(p)?),
            Long("init") => s.init = path(p)?,
            Long("compress") => compress = string(p)?,
            Long("level") => level = p.value()?.parse()?,
            Long("force") => s.force = true,
            Long("output") | Short('o') => output = Some(path(p)?),
            other => return Err(other.unexpected().into()),
        }
    }
    s.output = required(output, "--output")?;
    s.compression = match compress.as_str() {
        "zstd" => Compression::Zstd(level),
        "none" => Compression::None,
        other => return Err(usage(format!("--compress {other:?}: zstd or none"))),
    };
    let r = initrd::build(&s).map_err(failed)?;
    println!("{}", s.output.display());
    log::info!(
        "{} entries, {} bytes, modules: {}",
        r.entries,
        r.bytes,
        r.modules.join(" ")
    );
    Ok(())
}

/// `build --directory DIR [--force]`: every image of a mkosi-style project, in dependency order.
fn build_project(dir: &Path, p: &mut Parser) -> Result<(), CliError> {
    let (mut force, mut init) = (false, std::env::current_exe().map_err(failed)?);
    while let Some(arg) = p.next()? {
        match arg {
            Long("force") | Short('f') => force = true,
            Long("init") => init = path(p)?,
            other => return Err(other.unexpected().into()),
        }
    }
    let images = project::plan(dir, force).map_err(failed)?;
    for out in project::build(&images, &init, force).map_err(failed)? {
        println!("{}", out.display());
    }
    Ok(())
}

fn build_extension_cpio(p: &mut Parser) -> Result<(), CliError> {
    let (mut images, mut output, mut force) = (Vec::new(), None, false);
    while let Some(arg) = p.next()? {
        match arg {
            Long("force") => force = true,
            Long("output") | Short('o') => output = Some(path(p)?),
            Value(v) => images.push(PathBuf::from(v)),
            other => return Err(other.unexpected().into()),
        }
    }
    let output = required(output, "--output")?;
    if images.is_empty() {
        return Err(usage("no extension images given"));
    }
    initrd::extension_cpio(&images, &output, force, source_date_epoch()?).map_err(failed)?;
    println!("{}", output.display());
    Ok(())
}

/// `%a` (architecture) and `%v` (version) in `--output`, as mkosi's `Output=NAME-%v.%a`.
fn expand_output(output: &Path, s: &Spec) -> Result<PathBuf, CliError> {
    let text = output.to_string_lossy();
    if text.contains("%v") && s.version.is_none() {
        return Err(usage("--output uses %v but no --version was given"));
    }
    let expanded = text
        .replace("%a", s.arch.name())
        .replace("%v", s.version.as_deref().unwrap_or(""));
    Ok(PathBuf::from(expanded))
}

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

fn source_date_epoch() -> Result<Option<i64>, CliError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v.parse().map(Some).map_err(|_| {
            usage(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        }),
        _ => Ok(None),
    }
}

/// `--cert` files and `--verity-dir` directories; the standard verity.d dirs when neither is given.
fn certs(files: &[PathBuf], dirs: &[PathBuf]) -> Result<Vec<openssl::x509::X509>, CliError> {
    let mut certs = Vec::new();
    for f in files {
        certs.extend(certs::load_certs(f).map_err(failed)?);
    }
    let default_dirs: Vec<PathBuf> = certs::VERITY_DIRS.iter().map(PathBuf::from).collect();
    let dirs = if files.is_empty() && dirs.is_empty() {
        &default_dirs
    } else {
        dirs
    };
    certs.extend(certs::certs_in_dirs(dirs).map_err(failed)?);
    Ok(certs)
}

fn inspect_cmd(p: &mut Parser) -> Result<(), CliError> {
    let (mut image, mut json, mut cert_files) = (None, false, Vec::new());
    while let Some(arg) = p.next()? {
        match arg {
            Long("json") => json = true,
            Long("cert") => cert_files.push(path(p)?),
            Value(v) if image.is_none() => image = Some(PathBuf::from(v)),
            other => return Err(other.unexpected().into()),
        }
    }
    let image = required(image, "IMAGE")?;
    if inspect::is_cpio(&image).map_err(failed)? {
        let entries = inspect::cpio_entries(&image).map_err(failed)?;
        match json {
            true => println!(
                "{}",
                serde_json::to_string_pretty(&entries).map_err(failed)?
            ),
            false => print!("{}", inspect::render_cpio(&entries)),
        }
        return Ok(());
    }
    let certs = certs(&cert_files, &[])?;
    let v = inspect::describe(&image, &certs).map_err(failed)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).map_err(failed)?);
    } else {
        print!("{}", inspect::render_text(&v));
    }
    Ok(())
}

fn verify_cmd(p: &mut Parser) -> Result<(), CliError> {
    let (mut image, mut cert_files, mut dirs) = (None, Vec::new(), Vec::new());
    while let Some(arg) = p.next()? {
        match arg {
            Long("cert") => cert_files.push(path(p)?),
            Long("verity-dir") => dirs.push(path(p)?),
            Value(v) if image.is_none() => image = Some(PathBuf::from(v)),
            other => return Err(other.unexpected().into()),
        }
    }
    let image = required(image, "IMAGE")?;
    let certs = certs(&cert_files, &dirs)?;
    if certs.is_empty() {
        return Err(failed(
            "no certificates to verify against (--cert or --verity-dir)",
        ));
    }
    let v = verify::verify(&image, &certs).map_err(failed)?;
    println!(
        "{}: OK: {} data blocks match root hash {}, signed by {} ({})",
        image.display(),
        v.data_blocks,
        v.root_hash,
        v.signer_subject,
        v.signer_fingerprint
    );
    Ok(())
}

/// Output format of the systemd-sysext verbs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Json {
    Off,
    Short,
    Pretty,
}

fn print_value(
    v: &serde_json::Value,
    json: Json,
    text: impl FnOnce() -> String,
) -> Result<(), CliError> {
    match json {
        Json::Off => print!("{}", text()),
        Json::Short => println!("{v}"),
        Json::Pretty => println!("{}", serde_json::to_string_pretty(v).map_err(failed)?),
    }
    Ok(())
}

/// merge, unmerge, refresh, status, list — as systemd-sysext, on `--root` (default /).
fn sysext_verb(verb: &str, p: &mut Parser) -> Result<(), CliError> {
    let (mut root, mut json, mut policy, mut userspace) =
        (PathBuf::from("/"), Json::Off, None, false);
    let mut cmdline = None;
    let (mut force, mut noexec) = (false, false);
    while let Some(arg) = p.next()? {
        match arg {
            Long("root") => root = path(p)?,
            Long("json") => {
                let modes = [
                    ("off", Json::Off),
                    ("short", Json::Short),
                    ("pretty", Json::Pretty),
                ];
                json = choose(&string(p)?, "--json", &modes)?;
            }
            Long("image-policy") => {
                let text = string(p)?;
                policy = Some(
                    text.parse::<Policy>()
                        .map_err(|e| usage(format!("--image-policy: {e}")))?,
                );
            }
            Long("userspace-verity") => userspace = true,
            Long("force") => force = true,
            Long("noexec") => noexec = true,
            Long("kernel-cmdline") => {
                logging::to_kmsg();
                let line = std::fs::read_to_string("/proc/cmdline").map_err(failed)?;
                cmdline = Some(crate::boot::cmdline::Cmdline::parse(&line).0);
            }
            other => return Err(other.unexpected().into()),
        }
    }
    let mut ctx = verbs::context(&root, policy, userspace);
    (ctx.force, ctx.noexec) = (force, noexec);
    if let Some(c) = &cmdline {
        apply_cmdline(&mut ctx, c)?;
        if !c.sysext && matches!(verb, "merge" | "refresh") {
            println!("rd.sysext=0: not merging");
            return Ok(());
        }
    }
    match verb {
        "status" => {
            let v = verbs::status(&root);
            print_value(&v, json, || {
                verbs::table(&v, &["hierarchy", "extensions", "since"])
            })
        }
        "list" => {
            let v = verbs::list(&root, ctx.scope == crate::format::release::Scope::Initrd);
            print_value(&v, json, || {
                verbs::table(&v, &["name", "type", "path", "time"])
            })
        }
        "unmerge" => {
            let done = merge::unmerge(&root).map_err(failed)?;
            let v = serde_json::json!({ "unmerged": done });
            print_value(&v, json, || {
                done.iter().map(|h| format!("Unmerged {h}.\n")).collect()
            })
        }
        _ => {
            let report = match verb {
                "refresh" => verbs::refresh(&ctx),
                _ => verbs::merge(&ctx),
            }
            .map_err(failed)?;
            if let Some(c) = &cmdline {
                report.check_required(&c.required, false).map_err(failed)?;
            }
            let v = verbs::report_json(&report);
            print_value(&v, json, || {
                let mut out: String = report
                    .hierarchies
                    .iter()
                    .map(|h| format!("Merged extensions into {h}.\n"))
                    .collect();
                for (name, why) in &report.refused {
                    out += &format!("Refused {name}: {why}\n");
                }
                out
            })
        }
    }
}

/// `--kernel-cmdline`: rd.sysext.image_policy (else, in the initrd, signed only) and
/// rd.sysext.userspace_verity, as boot mode reads them.
fn apply_cmdline(
    ctx: &mut crate::runtime::activate::Context,
    c: &crate::boot::cmdline::Cmdline,
) -> Result<(), CliError> {
    if let Some(text) = &c.image_policy {
        let p = text
            .parse::<Policy>()
            .map_err(|e| failed(format!("rd.sysext.image_policy: {e}")))?;
        ctx.policy = Some(p);
    } else if ctx.policy.is_none() && ctx.scope == crate::format::release::Scope::Initrd {
        ctx.policy = Some(Policy::boot_default());
    }
    ctx.userspace_verity |= c.userspace_verity;
    Ok(())
}

/// `check-kernel [CONFIG]`: per feature, the options a kernel config lacks; exit 1 if any.
fn check_kernel(p: &mut Parser) -> Result<(), CliError> {
    use crate::boot::kconfig;
    let mut config = None;
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if config.is_none() => config = Some(PathBuf::from(v)),
            other => return Err(other.unexpected().into()),
        }
    }
    let path = match config {
        Some(c) => c,
        None => kconfig::default_path().map_err(failed)?,
    };
    let options = kconfig::parse(&kconfig::read(&path).map_err(failed)?);
    let report = kconfig::missing(&options);
    println!("{}:", path.display());
    for (feature, lacking) in &report {
        let word = if kconfig::optional(feature) {
            "lacks"
        } else {
            "MISSING"
        };
        match lacking.is_empty() {
            true => println!("  ok       {feature}"),
            false => println!(
                "  {word:<8} {feature}: CONFIG_{}",
                lacking.join(", CONFIG_")
            ),
        }
    }
    match report
        .iter()
        .all(|(f, l)| l.is_empty() || kconfig::optional(f))
    {
        true => Ok(()),
        false => Err(failed(
            "the kernel lacks options initrd-sysext needs (see above)",
        )),
    }
}

/// `sign IMAGE (--key K | --signature FILE.p7s) --cert C [--force]`.
fn sign_cmd(p: &mut Parser) -> Result<(), CliError> {
    use crate::build::sign::{self, Signer};
    let (mut image, mut key, mut sig, mut cert, mut force) = (None, None, None, None, false);
    while let Some(arg) = p.next()? {
        match arg {
            Long("key") => key = Some(path(p)?),
            Long("signature") => sig = Some(path(p)?),
            Long("cert") => cert = Some(path(p)?),
            Long("force") => force = true,
            Value(v) if image.is_none() => image = Some(PathBuf::from(v)),
            other => return Err(other.unexpected().into()),
        }
    }
    let image = required(image, "IMAGE")?;
    let cert_path = required(cert, "--cert")?;
    let root_hash = match (key, sig) {
        (Some(k), None) => {
            let (key, cert) = certs::load_pair(&k, &cert_path).map_err(failed)?;
            sign::sign(&image, Signer::Key(&key), &cert, force)
        }
        (None, Some(s)) => {
            let cert = certs::load_cert(&cert_path).map_err(failed)?;
            let der = std::fs::read(&s).map_err(|e| failed(format!("{}: {e}", s.display())))?;
            sign::sign(&image, Signer::Detached(&der), &cert, force)
        }
        _ => return Err(usage("give either --key or --signature")),
    }
    .map_err(failed)?;
    println!("{}: signed root hash {root_hash}", image.display());
    Ok(())
}
