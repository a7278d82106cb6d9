//! dm-verity (format 1, as cryptsetup writes it): the 512-byte superblock, the hash-tree
//! layout, building the tree (level 0 hashed on all cores) and checking data against it.

use std::io;
use std::thread;

use sha2::{Digest, Sha256};

use crate::format::blob::Blob;
use crate::format::hex;
use crate::format::uuid::Uuid;

pub const SUPERBLOCK_SIZE: usize = 512;
const MAGIC: &[u8; 8] = b"verity\0\0";
/// Size of a sha256 digest: the root hash and each hash in the tree.
pub const DIGEST: usize = 32;
/// Largest block size dm-verity takes: the page size.
const MAX_BLOCK_SIZE: u32 = 4096;
/// Bytes read per I/O while hashing.
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error("verity superblock: {field} {reason}")]
    Superblock { field: &'static str, reason: String },
    #[error("data block {block} (byte {offset} of the data) does not match the hash tree")]
    DataBlock { block: u64, offset: u64 },
    #[error("hash tree level {level} block {block} (byte {offset} of the hash area) does not match its parent")]
    HashBlock {
        level: usize,
        block: u64,
        offset: u64,
    },
    #[error("root hash mismatch: the hash tree gives {computed}, expected {expected}")]
    RootHash { computed: String, expected: String },
    #[error("root hash of {0} bytes: expected {DIGEST} (sha256)")]
    RootHashSize(usize),
    #[error("verity I/O at {what}: {source}")]
    Io { what: String, source: io::Error },
}

fn io_at(what: impl Into<String>) -> impl FnOnce(io::Error) -> VerityError {
    let what = what.into();
    move |source| VerityError::Io { what, source }
}

/// Verity parameters: what the superblock carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub hash_type: u32,
    pub algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
    pub uuid: Uuid,
}

impl Params {
    /// The parameters we write: format 1, sha256, 4096-byte blocks.
    pub fn sha256(data_blocks: u64, salt: [u8; 32], uuid: Uuid) -> Params {
        Params {
            hash_type: 1,
            algorithm: "sha256".into(),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks,
            salt: salt.to_vec(),
            uuid,
        }
    }

    pub fn salt_hex(&self) -> String {
        hex::encode(&self.salt)
    }

    /// Byte offset of the tree's first block, relative to the superblock.
    pub fn tree_offset(&self) -> u64 {
        (SUPERBLOCK_SIZE as u64).div_ceil(self.hash_block_size as u64) * self.hash_block_size as u64
    }

    /// Hash blocks per level, bottom (level 0) first.
    pub fn level_blocks(&self) -> Vec<u64> {
        let per_block = (self.hash_block_size as usize / DIGEST) as u64;
        let mut levels = Vec::new();
        let mut n = self.data_blocks;
        while n > 1 {
            n = n.div_ceil(per_block);
            levels.push(n);
        }
        levels
    }

    /// Start of each level in hash blocks from the tree start (top level first on disk).
    fn level_starts(&self) -> Vec<u64> {
        let blocks = self.level_blocks();
        let mut starts = vec![0; blocks.len()];
        let mut pos = 0;
        for i in (0..blocks.len()).rev() {
            starts[i] = pos;
            pos += blocks[i];
        }
        starts
    }

    /// Size of the hash area: superblock (padded) plus the tree.
    pub fn hash_area_size(&self) -> u64 {
        self.tree_offset() + self.level_blocks().iter().sum::<u64>() * self.hash_block_size as u64
    }

    pub fn data_size(&self) -> u64 {
        self.data_blocks * self.data_block_size as u64
    }

    fn check(&self) -> Result<(), VerityError> {
        let bad = |field, reason: String| Err(VerityError::Superblock { field, reason });
        if self.hash_type != 1 {
            return bad(
                "hash type",
                format!("{} is not supported (only 1)", self.hash_type),
            );
        }
        if self.algorithm != "sha256" {
            return bad(
                "algorithm",
                format!("{:?} is not supported (only sha256)", self.algorithm),
            );
        }
        // What the kernel's dm-verity accepts: powers of two from 512 up to the page size
        // (4096, the smallest of the pages of the architectures we run on).
        for (field, size) in [
            ("data block size", self.data_block_size),
            ("hash block size", self.hash_block_size),
        ] {
            if !size.is_power_of_two() || !(512..=MAX_BLOCK_SIZE).contains(&size) {
                return bad(
                    field,
                    format!("{size} is not a power of two in 512..={MAX_BLOCK_SIZE}"),
                );
            }
        }
        if self.salt.len() > 256 {
            return bad("salt size", format!("{} exceeds 256", self.salt.len()));
        }
        if self.data_blocks == 0
            || self
                .data_blocks
                .checked_mul(self.data_block_size as u64)
                .is_none()
        {
            return bad(
                "data blocks",
                format!("{} is 0 or too large", self.data_blocks),
            );
        }
        Ok(())
    }

    /// Encodes the superblock (little-endian, as cryptsetup's `struct verity_sb`).
    pub fn superblock(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&self.hash_type.to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid.0);
        b[32..32 + self.algorithm.len()].copy_from_slice(self.algorithm.as_bytes());
        b[64..68].copy_from_slice(&self.data_block_size.to_le_bytes());
        b[68..72].copy_from_slice(&self.hash_block_size.to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        b[80..82].copy_from_slice(&(self.salt.len() as u16).to_le_bytes());
        b[88..88 + self.salt.len()].copy_from_slice(&self.salt);
        b
    }

    /// Parses and checks a superblock.
    pub fn parse(b: &[u8]) -> Result<Params, VerityError> {
        let bad = |field, reason: String| VerityError::Superblock { field, reason };
        if b.len() < SUPERBLOCK_SIZE || &b[0..8] != MAGIC {
            return Err(bad("magic", "is not \"verity\\0\\0\"".into()));
        }
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        if u32_at(8) != 1 {
            return Err(bad("version", format!("{} is not 1", u32_at(8))));
        }
        let alg = &b[32..64];
        let alg_len = alg.iter().position(|&c| c == 0).unwrap_or(32);
        let salt_size = u16::from_le_bytes([b[80], b[81]]) as usize;
        if salt_size > 256 {
            return Err(bad("salt size", format!("{salt_size} exceeds 256")));
        }
        let p = Params {
            hash_type: u32_at(12),
            algorithm: String::from_utf8_lossy(&alg[..alg_len]).into_owned(),
            data_block_size: u32_at(64),
            hash_block_size: u32_at(68),
            data_blocks: u64::from_le_bytes(b[72..80].try_into().expect("8 bytes")),
            salt: b[88..88 + salt_size].to_vec(),
            uuid: Uuid(b[16..32].try_into().expect("16 bytes")),
        };
        p.check()?;
        Ok(p)
    }
}

/// A salted sha256 of one block.
fn block_hash(salted: &Sha256, block: &[u8]) -> [u8; DIGEST] {
    salted.clone().chain_update(block).finalize().into()
}

fn salted(params: &Params) -> Sha256 {
    Sha256::new().chain_update(&params.salt)
}

/// Hashes `count` data blocks starting at `offset` of `data` into `out` (DIGEST bytes each),
/// spread over all cores.
fn hash_data_blocks(
    data: &(impl Blob + Sync + ?Sized),
    offset: u64,
    params: &Params,
    out: &mut [u8],
) -> Result<(), VerityError> {
    let bs = params.data_block_size as usize;
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    let blocks = out.len() / DIGEST;
    let per_thread = blocks.div_ceil(threads).max(1);
    let salted = salted(params);
    thread::scope(|s| {
        let workers: Vec<_> = out
            .chunks_mut(per_thread * DIGEST)
            .enumerate()
            .map(|(t, digests)| {
                let salted = &salted;
                s.spawn(move || {
                    let first = (t * per_thread) as u64;
                    hash_range(data, offset + first * bs as u64, bs, salted, digests)
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("hash worker panicked"))
    })
}

fn hash_range(
    data: &(impl Blob + ?Sized),
    offset: u64,
    bs: usize,
    salted: &Sha256,
    digests: &mut [u8],
) -> Result<(), VerityError> {
    let mut buf = vec![0u8; CHUNK.max(bs) / bs * bs];
    let per_read = buf.len() / bs;
    for (i, chunk) in digests.chunks_mut(per_read * DIGEST).enumerate() {
        let n = chunk.len() / DIGEST;
        let at = offset + (i * per_read * bs) as u64;
        data.read_exact_at(&mut buf[..n * bs], at)
            .map_err(io_at(format!("data byte {at}")))?;
        for (d, block) in chunk.chunks_mut(DIGEST).zip(buf.chunks(bs)) {
            d.copy_from_slice(&block_hash(salted, block));
        }
    }
    Ok(())
}

/// Packs digests into zero-padded hash blocks.
fn pack(digests: &[u8], hbs: usize) -> Vec<u8> {
    let mut v = digests.to_vec();
    v.resize(digests.len().div_ceil(hbs) * hbs, 0);
    v
}

/// The result of hashing: the tree (without superblock) and the root hash.
pub struct Tree {
    pub tree: Vec<u8>,
    pub root_hash: [u8; DIGEST],
}

/// Builds the hash tree over `params.data_blocks` blocks at `offset` of `data`.
pub fn build(
    data: &(impl Blob + Sync + ?Sized),
    offset: u64,
    params: &Params,
) -> Result<Tree, VerityError> {
    params.check()?;
    let hbs = params.hash_block_size as usize;
    let salted = salted(params);
    let mut digests = vec![0u8; params.data_blocks as usize * DIGEST];
    hash_data_blocks(data, offset, params, &mut digests)?;
    let starts = params.level_starts();
    let total: u64 = params.level_blocks().iter().sum();
    let mut tree = vec![0u8; total as usize * hbs];
    for start in starts {
        let level = pack(&digests, hbs);
        let at = start as usize * hbs;
        tree[at..at + level.len()].copy_from_slice(&level);
        digests = level
            .chunks(hbs)
            .flat_map(|b| block_hash(&salted, b))
            .collect();
    }
    Ok(Tree {
        tree,
        root_hash: digests[..DIGEST].try_into().expect("one digest"),
    })
}

/// Checks every data block and every hash block against `root_hash`, reporting the first
/// mismatch top-down. `hash_offset` is where the superblock starts in `hash`.
pub fn verify(
    data: &(impl Blob + Sync + ?Sized),
    data_offset: u64,
    hash: &(impl Blob + ?Sized),
    hash_offset: u64,
    root_hash: &[u8],
) -> Result<Params, VerityError> {
    if root_hash.len() != DIGEST {
        return Err(VerityError::RootHashSize(root_hash.len()));
    }
    let sb = hash
        .read_vec_at(hash_offset, SUPERBLOCK_SIZE as u64)
        .map_err(io_at(format!("verity superblock (byte {hash_offset})")))?;
    let params = Params::parse(&sb)?;
    let data_size = data.size().map_err(io_at("the data's size"))?;
    if data_offset
        .checked_add(params.data_size())
        .is_none_or(|end| end > data_size)
    {
        return Err(VerityError::Superblock {
            field: "data blocks",
            reason: format!(
                "{} blocks of {} bytes run past the end of the data",
                params.data_blocks, params.data_block_size
            ),
        });
    }
    let hbs = params.hash_block_size as usize;
    let salted = salted(&params);
    let tree_at = hash_offset + params.tree_offset();
    let blocks = params.level_blocks();
    let starts = params.level_starts();
    // Parent digests, top-down: start with the root.
    let mut parent = root_hash.to_vec();
    for level in (0..blocks.len()).rev() {
        let len = blocks[level] * hbs as u64;
        let at = tree_at + starts[level] * hbs as u64;
        let stored = hash
            .read_vec_at(at, len)
            .map_err(io_at(format!("hash tree level {level} (byte {at})")))?;
        for (i, b) in stored.chunks(hbs).enumerate() {
            let computed = block_hash(&salted, b);
            if computed[..] == parent[i * DIGEST..(i + 1) * DIGEST] {
                continue;
            }
            return Err(if level + 1 == blocks.len() {
                root_mismatch(&computed, root_hash)
            } else {
                VerityError::HashBlock {
                    level,
                    block: i as u64,
                    offset: at - hash_offset + (i * hbs) as u64,
                }
            });
        }
        parent = stored;
    }
    let mut digests = vec![0u8; params.data_blocks as usize * DIGEST];
    hash_data_blocks(data, data_offset, &params, &mut digests)?;
    if blocks.is_empty() && digests != root_hash {
        return Err(root_mismatch(&digests, root_hash));
    }
    match digests
        .chunks(DIGEST)
        .zip(parent.chunks(DIGEST))
        .position(|(a, b)| a != b)
    {
        Some(block) => Err(VerityError::DataBlock {
            block: block as u64,
            offset: block as u64 * params.data_block_size as u64,
        }),
        None => Ok(params),
    }
}

fn root_mismatch(computed: &[u8], expected: &[u8]) -> VerityError {
    VerityError::RootHash {
        computed: hex::encode(computed),
        expected: hex::encode(expected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(blocks: u64) -> Params {
        Params::sha256(blocks, [7; 32], Uuid([9; 16]))
    }

    #[test]
    fn superblock_round_trip() {
        let p = params(300);
        let sb = p.superblock();
        assert_eq!(Params::parse(&sb).unwrap(), p);
        let mut bad = sb;
        bad[12] = 0;
        assert!(matches!(
            Params::parse(&bad),
            Err(VerityError::Superblock {
                field: "hash type",
                ..
            })
        ));
        let mut bad = sb;
        bad[80] = 0xff;
        bad[81] = 0xff;
        assert!(Params::parse(&bad).is_err());
    }

    #[test]
    fn block_sizes_the_kernel_refuses_are_refused() {
        for (at, field) in [(64, "data block size"), (68, "hash block size")] {
            for size in [256u32, 3000, 8192, 1 << 20] {
                let mut sb = params(300).superblock();
                sb[at..at + 4].copy_from_slice(&size.to_le_bytes());
                let err = Params::parse(&sb).unwrap_err();
                assert!(
                    matches!(err, VerityError::Superblock { field: f, .. } if f == field),
                    "{field} {size}: {err}"
                );
            }
        }
        let mut p = params(300);
        p.data_block_size = 512;
        p.hash_block_size = 1024;
        assert_eq!(Params::parse(&p.superblock()).unwrap(), p);
    }

    #[test]
    fn short_root_hash_or_data_is_an_error() {
        let data = vec![5u8; 3 * 4096];
        let p = params(3);
        let t = build(&data[..], 0, &p).unwrap();
        let mut area = p.superblock().to_vec();
        area.resize(4096, 0);
        area.extend_from_slice(&t.tree);
        for short in [&t.root_hash[..31], &[][..]] {
            assert!(matches!(
                verify(&data[..], 0, &area[..], 0, short),
                Err(VerityError::RootHashSize(_))
            ));
        }
        assert!(matches!(
            verify(&data[..2 * 4096], 0, &area[..], 0, &t.root_hash),
            Err(VerityError::Superblock {
                field: "data blocks",
                ..
            })
        ));
    }

    #[test]
    fn levels_match_cryptsetup() {
        assert_eq!(params(1).level_blocks(), Vec::<u64>::new());
        assert_eq!(params(2).level_blocks(), vec![1]);
        assert_eq!(params(128).level_blocks(), vec![1]);
        assert_eq!(params(129).level_blocks(), vec![2, 1]);
        assert_eq!(params(20000).level_blocks(), vec![157, 2, 1]);
        assert_eq!(params(20000).level_starts(), vec![3, 1, 0]);
        assert_eq!(params(129).hash_area_size(), 4096 * 4);
    }

    #[test]
    fn build_and_verify_detect_tampering() {
        let data: Vec<u8> = (0..200 * 4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let p = params(200);
        let t = build(&data[..], 0, &p).unwrap();
        let mut area = p.superblock().to_vec();
        area.resize(4096, 0);
        area.extend_from_slice(&t.tree);
        assert_eq!(area.len() as u64, p.hash_area_size());
        verify(&data[..], 0, &area[..], 0, &t.root_hash).unwrap();

        let mut d = data.clone();
        d[150 * 4096 + 5] ^= 1;
        assert!(matches!(
            verify(&d[..], 0, &area[..], 0, &t.root_hash),
            Err(VerityError::DataBlock { block: 150, .. })
        ));
        let mut a = area.clone();
        a[2 * 4096 + 3] ^= 1; // level 0, block 0
        assert!(matches!(
            verify(&data[..], 0, &a[..], 0, &t.root_hash),
            Err(VerityError::HashBlock {
                level: 0,
                block: 0,
                ..
            })
        ));
        assert!(matches!(
            verify(&data[..], 0, &area[..], 0, &[0; 32]),
            Err(VerityError::RootHash { .. })
        ));
    }
}
