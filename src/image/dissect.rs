//! Dissecting an extension image: a GPT DDI (data, verity and signature partitions matched
//! by type, designator and root-hash UUID halves) or a naked filesystem with sidecar files.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::format::blob::Blob;
use crate::format::gpt::{self, Arch, Designator, GptError, Partition, Role};
use crate::format::signature::{self, SignatureError, SignatureJson};
use crate::format::verity::{self, VerityError};
use crate::format::{erofs, hex, squashfs};

#[derive(Debug, thiserror::Error)]
pub enum DissectError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Gpt { path: PathBuf, source: GptError },
    #[error("{path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Verity { path: PathBuf, source: VerityError },
    #[error("{path}: {source}")]
    Signature {
        path: PathBuf,
        source: SignatureError,
    },
}

/// A byte range of the image (or of a sidecar file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Erofs,
    Squashfs,
    Ext4,
    Unknown,
}

impl FsType {
    pub fn name(self) -> &'static str {
        match self {
            FsType::Erofs => "erofs",
            FsType::Squashfs => "squashfs",
            FsType::Ext4 => "ext4",
            FsType::Unknown => "unknown",
        }
    }

    /// Probes a filesystem from its first 4 KiB.
    pub fn probe(head: &[u8]) -> FsType {
        if erofs::probe(head) {
            FsType::Erofs
        } else if squashfs::probe(head) {
            FsType::Squashfs
        } else if head.len() >= 1082 && head[1080..1082] == [0x53, 0xef] {
            FsType::Ext4
        } else {
            FsType::Unknown
        }
    }
}

/// The hash tree's location: in a partition of the image, or in a `.verity` sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashSource {
    Partition(Region),
    Sidecar(PathBuf),
}

/// The protection an image's partition offers (or was set up with). A signed partition also
/// qualifies as verity and as unprotected, a verity one as unprotected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protection {
    Unprotected,
    Verity,
    Signed,
}

impl Protection {
    /// The most `d` offers (what the default image policies take).
    pub fn offered(d: &Dissected) -> Protection {
        match (&d.verity, &d.root_hash, &d.signature) {
            (Some(_), Some(_), Some(_)) => Protection::Signed,
            (Some(_), Some(_), None) => Protection::Verity,
            _ => Protection::Unprotected,
        }
    }
}

#[derive(Debug)]
pub struct Dissected {
    pub path: PathBuf,
    pub table: Option<gpt::Table>,
    pub designator: Option<Designator>,
    pub arch: Option<Arch>,
    pub data: Region,
    pub fs: FsType,
    /// The filesystem's size by its own superblock (None for an unknown filesystem).
    pub fs_size: Option<u64>,
    pub hash: Option<HashSource>,
    pub verity: Option<verity::Params>,
    pub signature: Option<SignatureJson>,
    /// The root hash: from the signature, a `.roothash` sidecar, or the partition UUIDs.
    pub root_hash: Option<Vec<u8>>,
    /// The root hash read from the data and verity partition UUIDs.
    pub uuid_root_hash: Option<Vec<u8>>,
    /// The signature partition exists but is still zero-filled (`--verity defer`).
    pub signature_deferred: bool,
}

impl Dissected {
    pub fn root_hash_hex(&self) -> Option<String> {
        self.root_hash.as_deref().map(hex::encode)
    }
}

/// Dissects the image at `path`, preferring `arch` partitions when it has several.
pub fn dissect(path: &Path, arch: Option<Arch>) -> Result<Dissected, DissectError> {
    let file = File::open(path).map_err(|source| DissectError::Io {
        path: path.to_owned(),
        source,
    })?;
    let size = file.size().map_err(|source| DissectError::Io {
        path: path.to_owned(),
        source,
    })?;
    match gpt::read(&file) {
        Ok(table) => dissect_gpt(path, &file, table, arch),
        Err(GptError::NoHeader) => dissect_naked(path, &file, size),
        Err(source) => Err(DissectError::Gpt {
            path: path.to_owned(),
            source,
        }),
    }
}

fn layout(path: &Path, reason: String) -> DissectError {
    DissectError::Layout {
        path: path.to_owned(),
        reason,
    }
}

/// Partitions we consider: DPS types, not no-auto, not labelled `_empty`.
fn candidates(table: &gpt::Table) -> Vec<(&Partition, Designator, Role, Arch)> {
    table
        .partitions
        .iter()
        .filter(|p| p.flags & gpt::FLAG_NO_AUTO == 0 && p.label != "_empty")
        .filter_map(|p| gpt::classify(p.type_uuid).map(|(d, r, a)| (p, d, r, a)))
        .collect()
}

fn dissect_gpt(
    path: &Path,
    file: &File,
    table: gpt::Table,
    arch: Option<Arch>,
) -> Result<Dissected, DissectError> {
    let parts = candidates(&table);
    let pick = |d: Designator, a: Arch, r: Role| -> Result<Option<&Partition>, DissectError> {
        let found: Vec<_> = parts
            .iter()
            .filter(|(_, pd, pr, pa)| (*pd, *pr, *pa) == (d, r, a))
            .collect();
        match found.len() {
            0 => Ok(None),
            1 => Ok(Some(found[0].0)),
            n => Err(layout(
                path,
                format!(
                    "{n} {} partitions of type {}",
                    a.name(),
                    gpt::default_label(d, r, a)
                ),
            )),
        }
    };
    let arches: Vec<Arch> = match arch {
        Some(a) => vec![a],
        None => Arch::ALL.to_vec(),
    };
    let mut chosen = None;
    'outer: for d in [Designator::Root, Designator::Usr] {
        for &a in &arches {
            if let Some(p) = pick(d, a, Role::Data)? {
                chosen = Some((d, a, p));
                break 'outer;
            }
        }
    }
    let (d, a, data) = chosen.ok_or_else(|| {
        let want = arches
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(" or ");
        layout(path, format!("no root or usr data partition for {want}"))
    })?;
    let region = |p: &Partition| Region {
        offset: p.offset,
        size: p.size,
    };
    let verity_part = pick(d, a, Role::Verity)?;
    let sig_part = pick(d, a, Role::Signature)?;
    if sig_part.is_some() && verity_part.is_none() {
        return Err(layout(
            path,
            "a signature partition without a verity partition".into(),
        ));
    }
    check_disjoint(path, [Some(data), verity_part, sig_part])?;
    let verity = verity_part
        .map(|v| read_superblock(path, file, v.offset))
        .transpose()?;
    let (signature, deferred) = match sig_part {
        Some(s) => read_signature(path, file, region(s))?,
        None => (None, false),
    };
    let uuid_root_hash = verity_part.map(|v| [data.uuid.0, v.uuid.0].concat());
    let (fs, fs_size) = probe_fs(path, file, data.offset)?;
    let root_hash = match &signature {
        Some(sig) => Some(
            root_hash_bytes(&sig.root_hash)
                .map_err(|e| layout(path, format!("signature rootHash: {e}")))?,
        ),
        None => sidecar_root_hash(path)?.or(uuid_root_hash.clone()),
    };
    Ok(Dissected {
        path: path.to_owned(),
        designator: Some(d),
        arch: Some(a),
        data: region(data),
        fs,
        fs_size,
        hash: verity_part.map(|v| HashSource::Partition(region(v))),
        verity,
        signature,
        root_hash,
        uuid_root_hash,
        signature_deferred: deferred,
        table: Some(table),
    })
}

/// The data, verity and signature partitions must not share a byte: the data must not
/// reach into what describes it.
fn check_disjoint(path: &Path, parts: [Option<&Partition>; 3]) -> Result<(), DissectError> {
    let parts: Vec<&Partition> = parts.into_iter().flatten().collect();
    for (i, a) in parts.iter().enumerate() {
        for b in &parts[i + 1..] {
            let end = |p: &Partition| p.offset.saturating_add(p.size);
            if a.offset < end(b) && b.offset < end(a) {
                return Err(layout(
                    path,
                    format!(
                        "partition {} (bytes {}..{}) overlaps partition {} (bytes {}..{})",
                        a.number,
                        a.offset,
                        end(a),
                        b.number,
                        b.offset,
                        end(b)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn read_superblock(
    path: &Path,
    blob: &(impl Blob + ?Sized),
    offset: u64,
) -> Result<verity::Params, DissectError> {
    let sb = blob
        .read_vec_at(offset, verity::SUPERBLOCK_SIZE as u64)
        .map_err(|source| DissectError::Io {
            path: path.to_owned(),
            source,
        })?;
    verity::Params::parse(&sb).map_err(|source| DissectError::Verity {
        path: path.to_owned(),
        source,
    })
}

/// The signature JSON, or `deferred` when the partition is all zeros.
fn read_signature(
    path: &Path,
    file: &File,
    r: Region,
) -> Result<(Option<SignatureJson>, bool), DissectError> {
    let sig_err = |source| DissectError::Signature {
        path: path.to_owned(),
        source,
    };
    if r.size > signature::MAX_SIZE {
        return Err(sig_err(SignatureError::TooLarge(r.size)));
    }
    let bytes = file
        .read_vec_at(r.offset, r.size)
        .map_err(|source| DissectError::Io {
            path: path.to_owned(),
            source,
        })?;
    if bytes.iter().all(|&b| b == 0) {
        return Ok((None, true));
    }
    Ok((Some(SignatureJson::parse(&bytes).map_err(sig_err)?), false))
}

/// The filesystem type at `offset`, and the size its superblock claims (what the mounted
/// filesystem may read), when the type is known.
fn probe_fs(
    path: &Path,
    blob: &(impl Blob + ?Sized),
    offset: u64,
) -> Result<(FsType, Option<u64>), DissectError> {
    let mut head = vec![0u8; 4096];
    blob.read_exact_at(&mut head, offset)
        .map_err(|source| DissectError::Io {
            path: path.to_owned(),
            source,
        })?;
    let fs = FsType::probe(&head);
    Ok((fs, fs_size(fs, &head)))
}

/// The bytes a filesystem spans by its superblock in `head` (its first 4 KiB): erofs
/// `blocks << blkszbits`, squashfs `bytes_used`, ext4 `blocks_count << (10 + log_block_size)`.
pub fn fs_size(fs: FsType, head: &[u8]) -> Option<u64> {
    let le32 = |at: usize| Some(u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?));
    match fs {
        FsType::Erofs => {
            let at = erofs::layout::SB_OFFSET;
            let sb = head.get(at..at + erofs::layout::SB_LEN)?;
            let sb = erofs::layout::Superblock::decode(sb, at as u64).ok()?;
            Some(u64::from(sb.blocks) << sb.blkszbits)
        }
        FsType::Squashfs => {
            let sb = head.get(..squashfs::layout::Superblock::SIZE)?;
            Some(squashfs::layout::Superblock::parse(sb.try_into().ok()?).bytes_used)
        }
        FsType::Ext4 => {
            let log = le32(1024 + 24)?;
            let lo = u64::from(le32(1024 + 4)?);
            let hi = match le32(1024 + 0x60)? & 0x80 != 0 {
                true => u64::from(le32(1024 + 0x150)?),
                false => 0,
            };
            (log <= 6).then(|| (hi << 32 | lo) << (10 + log))
        }
        FsType::Unknown => None,
    }
}

/// A sha256 root hash from its hex form: exactly 64 hex digits.
fn root_hash_bytes(text: &str) -> Result<Vec<u8>, String> {
    let want = 2 * verity::DIGEST;
    if text.len() != want {
        return Err(format!(
            "{} characters, expected {want} hex digits (a sha256 root hash)",
            text.len()
        ));
    }
    hex::decode(text).map_err(|e| format!("{e}, expected {want} hex digits"))
}

/// `X.roothash` beside `X.raw` (hex, whitespace trimmed).
fn sidecar_root_hash(path: &Path) -> Result<Option<Vec<u8>>, DissectError> {
    let p = sidecar(path, "roothash");
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Ok(None);
    };
    root_hash_bytes(text.trim())
        .map(Some)
        .map_err(|e| layout(&p, format!("not a root hash: {e}")))
}

/// `X.<ext>` for image `X.raw`.
pub fn sidecar(path: &Path, ext: &str) -> PathBuf {
    let s = path.to_string_lossy();
    let stem = s.strip_suffix(".raw").unwrap_or(&s);
    PathBuf::from(format!("{stem}.{ext}"))
}

/// A naked filesystem image with optional `.roothash`, `.roothash.p7s` and `.verity` sidecars.
fn dissect_naked(path: &Path, file: &File, size: u64) -> Result<Dissected, DissectError> {
    let (fs, fs_size) = probe_fs(path, file, 0)?;
    if fs == FsType::Unknown {
        return Err(layout(
            path,
            "neither a GPT disk image nor an erofs, squashfs or ext4 filesystem".into(),
        ));
    }
    let verity_path = sidecar(path, "verity");
    let verity = match File::open(&verity_path) {
        Ok(v) => Some(read_superblock(&verity_path, &v, 0)?),
        Err(_) => None,
    };
    let root_hash = sidecar_root_hash(path)?;
    let signature = match std::fs::read(sidecar(path, "roothash.p7s")) {
        Ok(der) => root_hash.as_ref().map(|rh| SignatureJson {
            root_hash: hex::encode(rh),
            certificate_fingerprint: None,
            signature: der,
        }),
        Err(_) => None,
    };
    Ok(Dissected {
        path: path.to_owned(),
        table: None,
        designator: None,
        arch: None,
        data: Region { offset: 0, size },
        fs,
        fs_size,
        hash: verity.as_ref().map(|_| HashSource::Sidecar(verity_path)),
        verity,
        signature,
        root_hash,
        uuid_root_hash: None,
        signature_deferred: false,
    })
}
