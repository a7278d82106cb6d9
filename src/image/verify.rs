//! `verify`: the full userspace check of an image — every data block against the hash tree,
//! the root hash against the partition UUIDs and the signature, the signature against certificates.

use std::fs::File;
use std::path::{Path, PathBuf};

use openssl::x509::X509;

use crate::format::signature::{self, SignatureError};
use crate::format::{hex, verity};
use crate::image::certs::KeyError;
use crate::image::dissect::{self, DissectError, HashSource};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Dissect(#[from] DissectError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {what}")]
    Refused { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Verity {
        path: PathBuf,
        source: verity::VerityError,
    },
    #[error("{path}: {source}")]
    Signature {
        path: PathBuf,
        source: SignatureError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct Verified {
    pub root_hash: String,
    pub data_blocks: u64,
    pub signer_subject: String,
    pub signer_fingerprint: String,
}

/// Checks `image` completely; `certs` are the only trusted signers.
pub fn verify(image: &Path, certs: &[X509]) -> Result<Verified, VerifyError> {
    let d = dissect::dissect(image, None)?;
    let refused = |what: String| VerifyError::Refused {
        path: image.to_owned(),
        what,
    };
    let (Some(params), Some(hash)) = (&d.verity, &d.hash) else {
        return Err(refused(
            "no dm-verity hash tree (partition or .verity sidecar)".into(),
        ));
    };
    if d.signature_deferred {
        return Err(refused(
            "signature deferred: the signature partition is still empty".into(),
        ));
    }
    let sig = d
        .signature
        .as_ref()
        .ok_or_else(|| refused("unsigned: no signature partition or .roothash.p7s".into()))?;
    let root_hash = d
        .root_hash
        .clone()
        .ok_or_else(|| refused("no root hash".into()))?;
    if sig.root_hash != hex::encode(&root_hash) {
        return Err(refused(format!(
            "signature rootHash {} is not lowercase hex",
            sig.root_hash
        )));
    }
    if let Some(uuid_rh) = &d.uuid_root_hash {
        if *uuid_rh != root_hash {
            return Err(refused(format!(
                "partition UUIDs give root hash {}, the signature says {}",
                hex::encode(uuid_rh),
                sig.root_hash
            )));
        }
    }
    check_coverage(&d, params).map_err(refused)?;
    check_tree(image, &d.data, hash, &root_hash)?;
    let sig_err = |source| VerifyError::Signature {
        path: image.to_owned(),
        source,
    };
    let signer = signature::verify(&sig.signature, &sig.root_hash, certs).map_err(sig_err)?;
    let fp = signature::fingerprint(&signer).map_err(sig_err)?;
    if let Some(claimed) = &sig.certificate_fingerprint {
        if !claimed.eq_ignore_ascii_case(&fp) {
            return Err(refused(format!(
                "signature JSON names certificate {claimed} but it was signed by {fp}"
            )));
        }
    }
    Ok(Verified {
        root_hash: sig.root_hash.clone(),
        data_blocks: params.data_blocks,
        signer_subject: signature::subject(&signer),
        signer_fingerprint: fp,
    })
}

/// Every byte the mounted filesystem can read must be under the signed root hash: the verity
/// superblock is not signed, so its `data_blocks` must cover the filesystem's own size (and
/// stay within the data partition), and the tree must fit its partition.
fn check_coverage(d: &dissect::Dissected, params: &verity::Params) -> Result<(), String> {
    let covered = params.data_size();
    let (blocks, bs) = (params.data_blocks, params.data_block_size);
    if covered > d.data.size {
        return Err(format!(
            "verity superblock data blocks: {blocks} blocks of {bs} bytes ({covered} bytes) \
             exceed the data's {} bytes",
            d.data.size
        ));
    }
    let Some(fs_size) = d.fs_size else {
        return Err(format!(
            "cannot tell the size of a {} filesystem: verity coverage cannot be checked",
            d.fs.name()
        ));
    };
    let fs_span = fs_size.div_ceil(u64::from(bs)) * u64::from(bs);
    if covered < fs_span {
        return Err(format!(
            "verity superblock data blocks: {blocks} blocks of {bs} bytes ({covered} bytes) \
             do not cover the {} filesystem's {fs_size} bytes (expected at least {} blocks)",
            d.fs.name(),
            fs_span / u64::from(bs)
        ));
    }
    if let Some(HashSource::Partition(r)) = &d.hash {
        if params.hash_area_size() > r.size {
            return Err(format!(
                "the verity hash area needs {} bytes but its partition has {}",
                params.hash_area_size(),
                r.size
            ));
        }
    }
    Ok(())
}

fn check_tree(
    image: &Path,
    data: &dissect::Region,
    hash: &HashSource,
    root_hash: &[u8],
) -> Result<(), VerifyError> {
    let open = |p: &Path| {
        File::open(p).map_err(|source| VerifyError::Io {
            path: p.to_owned(),
            source,
        })
    };
    let file = open(image)?;
    let (hash_file, hash_offset) = match hash {
        HashSource::Partition(r) => (open(image)?, r.offset),
        HashSource::Sidecar(p) => (open(p)?, 0),
    };
    verity::verify(&file, data.offset, &hash_file, hash_offset, root_hash).map_err(|source| {
        VerifyError::Verity {
            path: image.to_owned(),
            source,
        }
    })?;
    Ok(())
}
