//! `build uki`: a Unified Kernel Image from systemd-stub, a kernel, an initrd (a file, or built
//! here), a command line and an os-release file, laid out as systemd's `ukify` does: the
//! stub's sections kept, then `.osrel`, `.cmdline`, `.uname`, `.initrd` and, last, `.linux`.
//! Nothing time-dependent is added: the same inputs give the same bytes.

use std::path::{Path, PathBuf};

use crate::build::initrd::{self, InitrdError};
use crate::build::output::{Output, OutputError};
use crate::format::pe::{self, PeError};

/// Debian's systemd-stub (package systemd-boot-efi).
pub const DEFAULT_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Pe { path: PathBuf, source: PeError },
    #[error(transparent)]
    Initrd(#[from] InitrdError),
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// Where the `.initrd` section comes from.
#[derive(Debug)]
pub enum Initrd {
    File(PathBuf),
    /// Built in memory; with modules but no `--kver`/`--modules-dir`, for the UKI's kernel.
    Build(Box<initrd::Spec>),
}

#[derive(Debug)]
pub struct Spec {
    pub stub: PathBuf,
    pub kernel: PathBuf,
    pub initrd: Initrd,
    pub cmdline: String,
    pub os_release: PathBuf,
    /// `.uname`; default: the bzImage's own version string.
    pub uname: Option<String>,
    pub output: PathBuf,
    pub force: bool,
}

/// What was written.
#[derive(Debug)]
pub struct Report {
    pub uname: String,
    pub initrd_bytes: usize,
    pub bytes: usize,
}

fn read(path: &Path) -> Result<Vec<u8>, UkiError> {
    std::fs::read(path).map_err(|source| UkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn pe_err(path: &Path) -> impl FnOnce(PeError) -> UkiError + '_ {
    move |source| UkiError::Pe {
        path: path.to_owned(),
        source,
    }
}

pub fn build(spec: &Spec) -> Result<Report, UkiError> {
    let mut out = Output::create(&spec.output, spec.force)?;
    let stub = read(&spec.stub)?;
    let kernel = read(&spec.kernel)?;
    pe::Pe::parse(&kernel)
        .map_err(|e| PeError::from(format!("{e} (systemd-stub needs an EFI-stub kernel)")))
        .map_err(pe_err(&spec.kernel))?;
    let uname = match &spec.uname {
        Some(u) => u.clone(),
        None => pe::linux_version(&kernel)
            .map_err(|e| PeError::from(format!("{e}; give --uname")))
            .map_err(pe_err(&spec.kernel))?,
    };
    let osrel = read(&spec.os_release)?;
    let initrd = initrd_bytes(&spec.initrd, &uname)?;
    let sections: [(&str, &[u8]); 5] = [
        (".osrel", &osrel),
        (".cmdline", spec.cmdline.as_bytes()),
        (".uname", uname.as_bytes()),
        (".initrd", &initrd),
        (".linux", &kernel),
    ];
    let image = pe::append_sections(&stub, &sections).map_err(pe_err(&spec.stub))?;
    out.write_all(&image)?;
    out.commit()?;
    Ok(Report {
        uname,
        initrd_bytes: initrd.len(),
        bytes: image.len(),
    })
}

fn initrd_bytes(source: &Initrd, uname: &str) -> Result<Vec<u8>, UkiError> {
    match source {
        Initrd::File(path) => read(path),
        Initrd::Build(spec) => {
            let mut spec = spec.as_ref().clone();
            let modules = spec.drivers.is_some() || !spec.modules.is_empty();
            if modules && spec.kver.is_none() && spec.modules_dir.is_none() {
                spec.kver = Some(uname.to_owned());
            }
            Ok(initrd::build_bytes(&spec)?.0)
        }
    }
}
