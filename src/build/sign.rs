//! `sign`: fills the zeroed signature partition of a `--verity defer` image, with our key or a
//! detached PKCS#7 made elsewhere (an HSM, a signing service) — checked before it is written,
//! and written to a copy that replaces the image only when complete.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::format::signature::{self, SignatureError, SignatureJson, PARTITION_SIZE};
use crate::format::{gpt, hex, verity};
use crate::image::dissect::{self, DissectError, HashSource};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Dissect(#[from] DissectError),
    #[error("{path}: {reason}")]
    Refused { path: PathBuf, reason: String },
    #[error("{path}: the data does not match the hash tree: {source}")]
    Verity {
        path: PathBuf,
        source: verity::VerityError,
    },
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the signature comes from.
pub enum Signer<'a> {
    Key(&'a PKey<Private>),
    /// A detached DER PKCS#7 over the lowercase hex root hash, made elsewhere.
    Detached(&'a [u8]),
}

/// Signs `image` in place (atomically); returns the root hash that was signed.
pub fn sign(image: &Path, signer: Signer, cert: &X509, force: bool) -> Result<String, SignError> {
    let refused = |reason: String| SignError::Refused {
        path: image.to_owned(),
        reason,
    };
    let d = dissect::dissect(image, None)?;
    let table = d
        .table
        .as_ref()
        .ok_or_else(|| refused("not a GPT image: nothing to fill in".into()))?;
    let sig_part = table
        .partitions
        .iter()
        .find(|p| gpt::classify(p.type_uuid).is_some_and(|(_, r, _)| r == gpt::Role::Signature))
        .ok_or_else(|| refused("no signature partition (build it with --verity defer)".into()))?;
    if !d.signature_deferred && !force {
        return Err(refused(
            "already signed (use --force to replace the signature)".into(),
        ));
    }
    if sig_part.size < PARTITION_SIZE as u64 {
        return Err(refused(format!(
            "signature partition of {} bytes is too small",
            sig_part.size
        )));
    }
    let root_hash = d
        .uuid_root_hash
        .clone()
        .ok_or_else(|| refused("no verity partition".into()))?;
    check_data(image, &d, &root_hash)?;
    let rh = hex::encode(&root_hash);
    let der = match signer {
        Signer::Key(key) => signature::sign(&rh, key, cert)?,
        Signer::Detached(der) => {
            signature::verify(der, &rh, std::slice::from_ref(cert))?;
            der.to_vec()
        }
    };
    let json = SignatureJson {
        root_hash: rh.clone(),
        certificate_fingerprint: Some(signature::fingerprint(cert)?),
        signature: der,
    }
    .encode()?;
    replace_partition(image, sig_part.offset, &json)?;
    Ok(rh)
}

/// Never sign what the hash tree does not describe: every data block is checked first.
fn check_data(image: &Path, d: &dissect::Dissected, root_hash: &[u8]) -> Result<(), SignError> {
    let Some(HashSource::Partition(hash)) = &d.hash else {
        return Err(SignError::Refused {
            path: image.to_owned(),
            reason: "no verity hash partition".into(),
        });
    };
    let file = open(image)?;
    verity::verify(&file, d.data.offset, &file, hash.offset, root_hash).map_err(|source| {
        SignError::Verity {
            path: image.to_owned(),
            source,
        }
    })?;
    Ok(())
}

fn open(path: &Path) -> Result<File, SignError> {
    File::open(path).map_err(|source| SignError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Copies the image beside itself, writes `bytes` at `offset` in the copy, and renames it over
/// the original: a crash leaves either the old or the new image, never a mix.
fn replace_partition(image: &Path, offset: u64, bytes: &[u8]) -> Result<(), SignError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SignError::Io { path, source }
    };
    let name = image.file_name().unwrap_or_default().to_string_lossy();
    let temp = image.with_file_name(format!(".{name}.{}.sign.tmp", std::process::id()));
    let result = (|| {
        fs::copy(image, &temp).map_err(io(&temp))?;
        let f = File::options().write(true).open(&temp).map_err(io(&temp))?;
        f.write_all_at(bytes, offset).map_err(io(&temp))?;
        f.sync_data().map_err(io(&temp))?;
        fs::rename(&temp, image).map_err(io(image))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}
