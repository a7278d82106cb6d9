//! Keys and certificates from files: PEM/DER loading, key/certificate pairs, and the `verity.d`
//! directories whose `*.crt` files are the trusted signers (build, sign, verify and runtime).

use std::path::{Path, PathBuf};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// Where certificates are looked for when none are named (as systemd does).
pub const VERITY_DIRS: [&str; 4] = [
    "/etc/verity.d",
    "/run/verity.d",
    "/usr/local/lib/verity.d",
    "/usr/lib/verity.d",
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a PEM {what}: {source}")]
    Parse {
        path: String,
        what: &'static str,
        source: openssl::error::ErrorStack,
    },
    #[error("{path}: no certificate in the file")]
    NoCert { path: String },
    #[error("{path}: the private key does not match certificate {cert}")]
    Mismatch { path: String, cert: String },
    #[error("generating a key: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// The `*.crt` files of `dirs`, in directory order then name order.
pub fn certs_in_dirs(dirs: &[PathBuf]) -> Result<Vec<X509>, KeyError> {
    let mut certs = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "crt"))
            .collect();
        paths.sort();
        for p in paths {
            certs.extend(load_certs(&p)?);
        }
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Loads a PEM private key.
pub fn load_key(path: &Path) -> Result<PKey<Private>, KeyError> {
    PKey::private_key_from_pem(&read(path)?).map_err(|source| KeyError::Parse {
        path: path.display().to_string(),
        what: "private key",
        source,
    })
}

/// Loads every certificate of a PEM file (or one DER certificate).
pub fn load_certs(path: &Path) -> Result<Vec<X509>, KeyError> {
    let bytes = read(path)?;
    let parse_err = |source| KeyError::Parse {
        path: path.display().to_string(),
        what: "certificate",
        source,
    };
    // A DER certificate starts with a SEQUENCE tag; anything else is read as PEM.
    let certs = if bytes.first() == Some(&0x30) {
        vec![X509::from_der(&bytes).map_err(parse_err)?]
    } else {
        X509::stack_from_pem(&bytes).map_err(parse_err)?
    };
    if certs.is_empty() {
        return Err(KeyError::NoCert {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// Loads the first certificate of a file.
pub fn load_cert(path: &Path) -> Result<X509, KeyError> {
    Ok(load_certs(path)?.swap_remove(0))
}

/// Loads a key and its certificate, checking that they belong together.
pub fn load_pair(key: &Path, cert: &Path) -> Result<(PKey<Private>, X509), KeyError> {
    let k = load_key(key)?;
    let c = load_cert(cert)?;
    let matches = c.public_key().map(|p| p.public_eq(&k)).unwrap_or(false);
    if !matches {
        return Err(KeyError::Mismatch {
            path: key.display().to_string(),
            cert: cert.display().to_string(),
        });
    }
    Ok((k, c))
}
