//! Build-mode verbs: `genkey`, `build sysext|initrd|uki|extension-cpio|--directory`, `sign`.

use std::path::{Path, PathBuf};

use lexopt::prelude::*;
use lexopt::{Parser, ValueExt};

use super::{choose, failed, path, required, string, usage, CliError};
use crate::build::drivers::Drivers;
use crate::build::genkey::{self, Issuer};
use crate::build::initrd::{self, Compression};
use crate::build::modules::{self, Modules};
use crate::build::repart::{self, Flags};
use crate::build::sign::Signer;
use crate::build::sysext::{self, FsKind, Hierarchies, Identity, Spec, VerityMode};
use crate::build::{output, project, uki};
use crate::format::gpt::{Arch, Designator};
use crate::format::release::Class;
use crate::format::uuid::Uuid;
use crate::image::certs;
use crate::tree;

/// `build TARGET ...`.
pub fn build(p: &mut Parser) -> Result<(), CliError> {
    match p.next()? {
        Some(Value(v)) => match v.string()?.as_str() {
            "sysext" => SysextArgs::parse(p)?.run(Class::Sysext),
            "confext" => SysextArgs::parse(p)?.run(Class::Confext),
            "initrd" => build_initrd(p),
            "extension-cpio" => build_extension_cpio(p),
            "uki" => build_uki(p),
            other => Err(usage(format!("unknown build target {other:?}"))),
        },
        Some(Long("directory") | Short('C')) => {
            let dir = path(p)?;
            build_project(&dir, p)
        }
        Some(other) => Err(other.unexpected().into()),
        None => Err(usage(
            "build what? sysext, initrd, uki, extension-cpio or --directory DIR",
        )),
    }
}

/// `genkey --key K --cert C [--cn NAME] [--days N] [--ca-key K --ca-cert C] [--force]`.
pub fn genkey(p: &mut Parser) -> Result<(), CliError> {
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

/// `build sysext` as given on the command line.
#[derive(Default)]
struct SysextArgs {
    tree: Option<PathBuf>,
    extra_trees: Vec<(PathBuf, String)>,
    base: Option<PathBuf>,
    kver: Option<String>,
    modules_dir: Option<PathBuf>,
    modules: Vec<String>,
    firmware: bool,
    firmware_dir: Option<PathBuf>,
    name: Option<String>,
    version: Option<String>,
    scope: Option<String>,
    id: Option<String>,
    version_id: Option<String>,
    os_release: Option<PathBuf>,
    flags: Flags,
    definitions: Option<PathBuf>,
    key: Option<PathBuf>,
    cert: Option<PathBuf>,
    seed: Option<Uuid>,
    split: bool,
    force: bool,
    output: Option<PathBuf>,
}

impl SysextArgs {
    fn parse(p: &mut Parser) -> Result<SysextArgs, CliError> {
        let mut a = SysextArgs::default();
        while let Some(arg) = p.next()? {
            match arg {
                Long("tree") => a.tree = Some(path(p)?),
                Long("extra-tree") => a.extra_trees.push(tree::extra_tree(&string(p)?)),
                Long("base") => a.base = Some(path(p)?),
                Long("kver") => a.kver = Some(string(p)?),
                Long("modules-dir") => a.modules_dir = Some(path(p)?),
                Long("module") => a.modules.push(string(p)?),
                Long("firmware") => a.firmware = true,
                Long("firmware-dir") => a.firmware_dir = Some(path(p)?),
                Long("name") => a.name = Some(string(p)?),
                Long("version") => a.version = Some(string(p)?),
                Long("scope") => a.scope = Some(string(p)?),
                Long("id") => a.id = Some(string(p)?),
                Long("version-id") => a.version_id = Some(string(p)?),
                Long("os-release") => a.os_release = Some(path(p)?),
                Long("arch") => a.flags.arch = Some(arch(p)?),
                Long("fs") => {
                    let kinds = [("erofs", FsKind::Erofs), ("squashfs", FsKind::Squashfs)];
                    a.flags.fs = Some(choose(&string(p)?, "--fs", &kinds)?);
                }
                Long("partition") => {
                    let designators = [("root", Designator::Root), ("usr", Designator::Usr)];
                    a.flags.partition = Some(choose(&string(p)?, "--partition", &designators)?);
                }
                Long("verity") => {
                    let modes = [
                        ("signed", VerityMode::Signed),
                        ("defer", VerityMode::Defer),
                        ("hash", VerityMode::Hash),
                        ("off", VerityMode::Off),
                    ];
                    a.flags.verity = Some(choose(&string(p)?, "--verity", &modes)?);
                }
                Long("definitions") => a.definitions = Some(path(p)?),
                Long("key") => a.key = Some(path(p)?),
                Long("cert") => a.cert = Some(path(p)?),
                Long("seed") => {
                    let v = string(p)?;
                    a.seed = Some(v.parse::<Uuid>().map_err(|e| usage(e.to_string()))?);
                }
                Long("split") => a.split = true,
                Long("force") => a.force = true,
                Long("output") | Short('o') => a.output = Some(path(p)?),
                other => return Err(other.unexpected().into()),
            }
        }
        Ok(a)
    }

    /// The build's specification: the flags checked against each other, the layout decided.
    fn spec(self, class: Class) -> Result<Spec, CliError> {
        let tree = required(self.tree, "--tree")?;
        let name = required(self.name, "--name")?;
        let output = required(self.output, "--output")?;
        let identity = match (self.id, self.version_id, self.os_release) {
            (Some(_), _, Some(_)) => return Err(usage("--id and --os-release exclude each other")),
            (Some(id), version_id, None) => Identity::Explicit { id, version_id },
            (None, Some(_), _) => return Err(usage("--version-id needs --id")),
            (None, None, Some(f)) => Identity::OsRelease(f),
            (None, None, None) => Identity::Derived,
        };
        let signing = match (self.key, self.cert) {
            (Some(k), Some(c)) => Some((k, c)),
            (None, None) => None,
            _ => return Err(usage("--key and --cert go together")),
        };
        let mut layout = repart::layout(self.flags, self.definitions.as_deref(), signing.is_some())
            .map_err(failed)?;
        if class == Class::Confext {
            if self.definitions.is_some() {
                // repart's CopyFiles= here takes /usr and /opt only.
                return Err(usage("build confext takes no --definitions"));
            }
            layout.hierarchies = Hierarchies::ETC;
        }
        let output = expand_output(&output, layout.arch, self.version.as_deref())?;
        let modules = modules_spec(
            self.modules,
            self.modules_dir.as_deref(),
            self.kver.as_deref(),
            (self.firmware || self.firmware_dir.is_some()).then(|| {
                self.firmware_dir
                    .unwrap_or_else(|| PathBuf::from("/lib/firmware"))
            }),
        )?;
        let mut s = Spec::new(tree, name, output, layout);
        s.class = class;
        s.extra_trees = self.extra_trees;
        s.base = self.base;
        s.modules = modules;
        s.version = self.version;
        if let Some(scope) = self.scope {
            s.scope = scope;
        }
        s.identity = identity;
        s.signing = signing;
        s.seed = self.seed;
        s.split = self.split;
        s.force = self.force;
        s.source_date_epoch = source_date_epoch()?;
        Ok(s)
    }

    fn run(self, class: Class) -> Result<(), CliError> {
        let r = sysext::build(&self.spec(class)?).map_err(failed)?;
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
}

/// `--module NAME... [--kver V] [--modules-dir DIR] [--firmware [--firmware-dir DIR]]`.
fn modules_spec(
    names: Vec<String>,
    dir: Option<&Path>,
    kver: Option<&str>,
    firmware_dir: Option<PathBuf>,
) -> Result<Option<Modules>, CliError> {
    let location = modules::location(dir, kver);
    match (names.is_empty(), location) {
        (true, None) if firmware_dir.is_none() => Ok(None),
        (true, _) => Err(usage(
            "--kver, --modules-dir and --firmware go with --module",
        )),
        (false, None) => Err(usage("--module needs --kver or --modules-dir")),
        (false, Some((dir, kver))) => Ok(Some(Modules {
            dir,
            kver,
            names,
            firmware_dir,
        })),
    }
}

/// `--arch x86-64|arm64`.
fn arch(p: &mut Parser) -> Result<Arch, CliError> {
    let v = string(p)?;
    Arch::from_name(&v).ok_or_else(|| usage(format!("--arch {v:?}: x86-64 or arm64")))
}

/// `%a` (architecture) and `%v` (version) in `--output`, as mkosi's `Output=NAME-%v.%a`.
fn expand_output(output: &Path, arch: Arch, version: Option<&str>) -> Result<PathBuf, CliError> {
    let text = output.to_string_lossy();
    if text.contains("%v") && version.is_none() {
        return Err(usage("--output uses %v but no --version was given"));
    }
    let expanded = text
        .replace("%a", arch.name())
        .replace("%v", version.unwrap_or(""));
    Ok(PathBuf::from(expanded))
}

/// `build initrd`'s options (`--output` and `--force` aside), shared with `build uki`.
struct InitrdArgs {
    spec: initrd::Spec,
    compress: String,
    level: i32,
    /// Whether any was given.
    given: bool,
}

impl InitrdArgs {
    fn new() -> Result<InitrdArgs, CliError> {
        let spec = initrd::Spec {
            init: std::env::current_exe().map_err(failed)?,
            source_date_epoch: source_date_epoch()?,
            ..initrd::Spec::default()
        };
        let (compress, level, given) = ("zstd".to_owned(), 3, false);
        Ok(InitrdArgs {
            spec,
            compress,
            level,
            given,
        })
    }

    /// Takes `--name`'s value if it is one of these options; a usage error if it is not.
    fn take(&mut self, name: &str, p: &mut Parser) -> Result<(), CliError> {
        let s = &mut self.spec;
        match name {
            "tree" => s.tree = Some(path(p)?),
            "extra-tree" => s.extra_trees.push(tree::extra_tree(&string(p)?)),
            "kver" => s.kver = Some(string(p)?),
            "modules-dir" => s.modules_dir = Some(path(p)?),
            "module" => s.modules.push(string(p)?),
            "drivers" => {
                let sets = [("generic", Drivers::Generic), ("host", Drivers::Host)];
                s.drivers = Some(choose(&string(p)?, "--drivers", &sets)?);
            }
            "omit-driver" => s.omit.push(string(p)?),
            "cert" => s.certs.push(path(p)?),
            "secondary-cert" => s.secondary_certs.push(path(p)?),
            "extension" => s.extensions.push(path(p)?),
            "confext" => s.confexts.push(path(p)?),
            "init" => s.init = path(p)?,
            "arch" => s.arch = Some(arch(p)?),
            "compress" => self.compress = string(p)?,
            "level" => {
                self.level = p.value()?.parse()?;
                if !(1..=22).contains(&self.level) {
                    let level = self.level;
                    return Err(usage(format!("--level {level}: zstd levels are 1 to 22")));
                }
            }
            _ => return Err(Long(name).unexpected().into()),
        }
        self.given = true;
        Ok(())
    }

    fn finish(mut self) -> Result<initrd::Spec, CliError> {
        self.spec.compression = match self.compress.as_str() {
            "zstd" => Compression::Zstd(self.level),
            "none" => Compression::None,
            other => return Err(usage(format!("--compress {other:?}: zstd or none"))),
        };
        Ok(self.spec)
    }
}

/// `build initrd`: the options fill the initrd's specification directly.
fn build_initrd(p: &mut Parser) -> Result<(), CliError> {
    let (mut a, mut output, mut force) = (InitrdArgs::new()?, None, false);
    while let Some(arg) = p.next()? {
        match arg {
            Long("force") => force = true,
            Long("output") | Short('o') => output = Some(path(p)?),
            Long(name) => {
                let name = name.to_owned();
                a.take(&name, p)?;
            }
            other => return Err(other.unexpected().into()),
        }
    }
    let mut s = a.finish()?;
    s.output = required(output, "--output")?;
    s.force = force;
    let r = initrd::build(&s).map_err(failed)?;
    println!("{}", s.output.display());
    log::info!(
        "{} entries, {} bytes; {} modules, {} bytes{}",
        r.entries,
        r.bytes,
        r.modules.len(),
        r.module_bytes,
        s.drivers
            .map_or(String::new(), |d| format!(" ({})", d.name()))
    );
    Ok(())
}

/// `build uki [--stub S] --kernel K (--initrd I | build initrd's options) --cmdline TEXT
/// --os-release F [--uname V] [--force] --output X.efi`.
fn build_uki(p: &mut Parser) -> Result<(), CliError> {
    let mut a = InitrdArgs::new()?;
    let (mut stub, mut kernel, mut initrd_file) = (PathBuf::from(uki::DEFAULT_STUB), None, None);
    let (mut cmdline, mut os_release, mut uname) = (None, None, None);
    let (mut output, mut force) = (None, false);
    while let Some(arg) = p.next()? {
        match arg {
            Long("stub") => stub = path(p)?,
            Long("kernel") => kernel = Some(path(p)?),
            Long("initrd") => initrd_file = Some(path(p)?),
            Long("cmdline") => cmdline = Some(string(p)?),
            Long("os-release") => os_release = Some(path(p)?),
            Long("uname") => uname = Some(string(p)?),
            Long("force") => force = true,
            Long("output") | Short('o') => output = Some(path(p)?),
            Long(name) => {
                let name = name.to_owned();
                a.take(&name, p)?;
            }
            other => return Err(other.unexpected().into()),
        }
    }
    let output = required(output, "--output")?;
    let initrd = match (initrd_file, a.given) {
        (Some(_), true) => return Err(usage("--initrd excludes the options that build one")),
        (Some(f), false) => uki::Initrd::File(f),
        (None, _) => {
            let mut s = a.finish()?;
            s.output = output.clone();
            uki::Initrd::Build(Box::new(s))
        }
    };
    let spec = uki::Spec {
        stub,
        kernel: required(kernel, "--kernel")?,
        initrd,
        cmdline: required(cmdline, "--cmdline")?,
        os_release: required(os_release, "--os-release")?,
        uname,
        output,
        force,
    };
    let start = std::time::Instant::now();
    let r = uki::build(&spec).map_err(failed)?;
    println!("{}", spec.output.display());
    log::info!(
        "uname {}, initrd {} bytes, image {} bytes, {:.2}s",
        r.uname,
        r.initrd_bytes,
        r.bytes,
        start.elapsed().as_secs_f64()
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

/// `sign IMAGE (--key K | --signature FILE.p7s) --cert C [--force]`.
pub fn sign(p: &mut Parser) -> Result<(), CliError> {
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
            crate::build::sign::sign(&image, Signer::Key(&key), &cert, force)
        }
        (None, Some(s)) => {
            let cert = certs::load_cert(&cert_path).map_err(failed)?;
            let der = std::fs::read(&s).map_err(|e| failed(format!("{}: {e}", s.display())))?;
            crate::build::sign::sign(&image, Signer::Detached(&der), &cert, force)
        }
        _ => return Err(usage("give either --key or --signature")),
    }
    .map_err(failed)?;
    println!("{}: signed root hash {root_hash}", image.display());
    Ok(())
}
