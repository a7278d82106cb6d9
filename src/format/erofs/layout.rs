//! The EROFS on-disk structures, defined once for the writer and the reader: the superblock,
//! compact and extended inodes, directory entries, xattr headers and entries, chunk indexes.
//!
//! Each has `encode` (to bytes) and `decode` (from bytes). A decoder gets the structure's bytes
//! (the caller reads at least its length) and the structure's byte position in the image, and
//! reports a bad field as a [`ReadError`] naming the field at its own position.

use super::read::ReadError;
use crate::format::bytes::{le16, le32, le64};

/// Byte position of the superblock.
pub const SB_OFFSET: usize = 1024;
/// On-disk length of the superblock.
pub const SB_LEN: usize = 128;
pub const MAGIC: u32 = 0xE0F5_E1E2;
/// `feature_compat`: the superblock carries a CRC-32C.
pub const COMPAT_SB_CHKSUM: u32 = 1;
/// Incompatible features that leave uncompressed data, directories and xattrs where the
/// reader looks: lz4 padding, compression configs, chunked files, the device table,
/// tail-packing, fragments and long xattr prefixes (whose entries are refused one by one).
/// Anything else (such as 48-bit block addresses) is refused.
pub const INCOMPAT_KNOWN: u32 = 0x7f;

/// Inode numbers (nids) count 32-byte slots from the start of the metadata area.
pub const INODE_SLOT: u64 = 32;
pub const COMPACT_LEN: usize = 32;
pub const EXTENDED_LEN: usize = 64;
/// Data layouts (`i_format >> 1`).
pub const LAYOUT_FLAT_PLAIN: u16 = 0;
pub const LAYOUT_COMPRESSED_FULL: u16 = 1;
pub const LAYOUT_FLAT_INLINE: u16 = 2;
pub const LAYOUT_COMPRESSED_COMPACT: u16 = 3;
pub const LAYOUT_CHUNK_BASED: u16 = 4;
/// `i_format` bits: version (compact/extended) and data layout.
const FORMAT_BITS: u16 = 0xf;
/// File type bits of `i_mode`.
pub const S_IFMT: u16 = 0o170000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFLNK: u16 = 0o120000;

/// Chunk-based inodes: `i_u` holds the chunk size bits and whether chunks have 8-byte indexes
/// (with a device id) rather than 4-byte block addresses.
const CHUNK_BLKBITS: u16 = 0x1f;
const CHUNK_INDEXES: u16 = 0x20;
/// Block address of a hole.
pub const NULL_ADDR: u32 = u32::MAX;

pub const DIRENT_LEN: usize = 12;
pub const NAME_MAX: usize = 255;
/// Directory entry file types.
pub const FT_REG_FILE: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHRDEV: u8 = 3;
pub const FT_BLKDEV: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;

pub const XATTR_HEADER_LEN: usize = 12;
const XATTR_ENTRY_LEN: usize = 4;
/// An xattr name index with this bit refers to a long prefix.
const XATTR_LONG_PREFIX: u8 = 0x80;
/// Xattr name indexes and what they stand for: a prefix, or a whole name for the ACLs.
/// Index 0 has none: the name is stored whole.
pub const XATTR_PREFIXES: [(u8, &str); 6] = [
    (1, "user."),
    (2, "system.posix_acl_access"),
    (3, "system.posix_acl_default"),
    (4, "trusted."),
    (5, "lustre."),
    (6, "security."),
];

fn corrupt(
    pos: u64,
    at: usize,
    field: &'static str,
    value: u64,
    expected: &'static str,
) -> ReadError {
    ReadError::Corrupt {
        pos: pos.saturating_add(at as u64),
        field,
        value,
        expected,
    }
}

fn unsupported(pos: u64, at: usize, what: &'static str) -> ReadError {
    ReadError::Unsupported {
        pos: pos.saturating_add(at as u64),
        what,
    }
}

/// True if `buf` (the start of a partition or device) holds an EROFS superblock.
pub fn probe(buf: &[u8]) -> bool {
    buf.get(SB_OFFSET..SB_OFFSET + 4) == Some(&MAGIC.to_le_bytes()[..])
}

/// The superblock fields we write or read; the others are zero when encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub checksum: u32,
    pub feature_compat: u32,
    pub blkszbits: u8,
    pub root_nid: u16,
    /// Inode count.
    pub inos: u64,
    pub build_time: i64,
    pub build_time_nsec: u32,
    pub blocks: u32,
    /// First block of the metadata (inode) area.
    pub meta_blkaddr: u32,
    /// First block of the shared xattr area.
    pub xattr_blkaddr: u32,
    pub uuid: [u8; 16],
    pub feature_incompat: u32,
    pub extra_devices: u16,
    pub dirblkbits: u8,
}

impl Superblock {
    const BLKSZBITS: usize = 12;
    const FEATURE_INCOMPAT: usize = 80;
    const EXTRA_DEVICES: usize = 86;
    const DIRBLKBITS: usize = 90;

    /// The [`SB_LEN`] bytes at [`SB_OFFSET`].
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(SB_LEN);
        b.extend(MAGIC.to_le_bytes());
        b.extend(self.checksum.to_le_bytes());
        b.extend(self.feature_compat.to_le_bytes());
        b.extend([self.blkszbits, 0]);
        b.extend(self.root_nid.to_le_bytes());
        b.extend(self.inos.to_le_bytes());
        b.extend(self.build_time.to_le_bytes());
        b.extend(self.build_time_nsec.to_le_bytes());
        b.extend(self.blocks.to_le_bytes());
        b.extend(self.meta_blkaddr.to_le_bytes());
        b.extend(self.xattr_blkaddr.to_le_bytes());
        b.extend(self.uuid);
        b.resize(Self::FEATURE_INCOMPAT, 0); // volume name
        b.extend(self.feature_incompat.to_le_bytes());
        b.resize(Self::EXTRA_DEVICES, 0);
        b.extend(self.extra_devices.to_le_bytes());
        b.resize(Self::DIRBLKBITS, 0);
        b.push(self.dirblkbits);
        b.resize(SB_LEN, 0);
        b
    }

    /// Decodes [`SB_LEN`] bytes at image position `pos`, checking the magic and block sizes.
    pub fn decode(b: &[u8], pos: u64) -> Result<Superblock, ReadError> {
        let magic = le32(b, 0);
        if magic != MAGIC {
            return Err(corrupt(pos, 0, "magic", magic.into(), "0xe0f5e1e2"));
        }
        let blkszbits = b[Self::BLKSZBITS];
        if !(9..=16).contains(&blkszbits) {
            let at = Self::BLKSZBITS;
            return Err(corrupt(pos, at, "blkszbits", blkszbits.into(), "9..=16"));
        }
        let dirblkbits = b[Self::DIRBLKBITS];
        if dirblkbits != 0 {
            let at = Self::DIRBLKBITS;
            return Err(corrupt(pos, at, "dirblkbits", dirblkbits.into(), "0"));
        }
        Ok(Superblock {
            checksum: le32(b, 4),
            feature_compat: le32(b, 8),
            blkszbits,
            root_nid: le16(b, 14),
            inos: le64(b, 16),
            build_time: le64(b, 24) as i64,
            build_time_nsec: le32(b, 32),
            blocks: le32(b, 36),
            meta_blkaddr: le32(b, 40),
            xattr_blkaddr: le32(b, 44),
            uuid: b[48..64].try_into().expect("16 bytes"),
            feature_incompat: le32(b, Self::FEATURE_INCOMPAT),
            extra_devices: le16(b, Self::EXTRA_DEVICES),
            dirblkbits,
        })
    }

    /// Refuses incompatible features outside [`INCOMPAT_KNOWN`]; `pos` as for `decode`.
    pub fn check_features(&self, pos: u64) -> Result<(), ReadError> {
        if self.feature_incompat & !INCOMPAT_KNOWN != 0 {
            let what = "an incompatible feature (such as 48-bit block addresses)";
            return Err(unsupported(pos, Self::FEATURE_INCOMPAT, what));
        }
        Ok(())
    }
}

/// Bytes from [`SB_OFFSET`] covered by the superblock checksum, for a block size.
pub fn checksum_len(blksz: u64) -> u64 {
    let sb = SB_OFFSET as u64;
    if blksz > sb {
        blksz - sb
    } else {
        blksz
    }
}

/// The superblock checksum of `area` (the superblock onwards, [`checksum_len`] bytes), taken
/// with the checksum field as zeros.
pub fn checksum(area: &[u8]) -> u32 {
    let mut d = CRC32C.digest();
    d.update(&area[..4]);
    d.update(&[0; 4]);
    d.update(&area[8..]);
    d.finalize()
}

/// CRC-32C as the kernel's `crc32c(~0, data, len)` gives it to erofs: no final inversion.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::Algorithm {
    xorout: 0,
    ..crc::CRC_32_ISCSI
});

/// [`CRC32C`] of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    CRC32C.checksum(data)
}

/// A compact (32-byte) or extended (64-byte) inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub extended: bool,
    /// Data layout, one of the `LAYOUT_*` values.
    pub layout: u16,
    pub xattr_icount: u16,
    pub mode: u16,
    pub nlink: u32,
    pub size: u64,
    /// Extended: seconds since the epoch. Compact: seconds after the superblock's build time
    /// (reserved in Linux 6.1).
    pub mtime: i64,
    /// Extended only.
    pub mtime_nsec: u32,
    /// `i_u`: first data block, device number or chunk format.
    pub i_u: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Inode {
    /// [`COMPACT_LEN`] or [`EXTENDED_LEN`]; compact fields are truncated to their width.
    pub fn encode(&self) -> Vec<u8> {
        let format = self.layout << 1 | u16::from(self.extended);
        let mut b = Vec::with_capacity(EXTENDED_LEN);
        b.extend(format.to_le_bytes());
        b.extend(self.xattr_icount.to_le_bytes());
        b.extend(self.mode.to_le_bytes());
        if self.extended {
            b.extend([0; 2]);
            b.extend(self.size.to_le_bytes());
            b.extend(self.i_u.to_le_bytes());
            b.extend(self.ino.to_le_bytes());
            b.extend(self.uid.to_le_bytes());
            b.extend(self.gid.to_le_bytes());
            b.extend(self.mtime.to_le_bytes());
            b.extend(self.mtime_nsec.to_le_bytes());
            b.extend(self.nlink.to_le_bytes());
        } else {
            b.extend((self.nlink as u16).to_le_bytes());
            b.extend((self.size as u32).to_le_bytes());
            b.extend((self.mtime as u32).to_le_bytes());
            b.extend(self.i_u.to_le_bytes());
            b.extend(self.ino.to_le_bytes());
            b.extend((self.uid as u16).to_le_bytes());
            b.extend((self.gid as u16).to_le_bytes());
        }
        b.resize(self.disk_len(), 0);
        b
    }

    /// The length of the inode at image position `pos` whose first [`COMPACT_LEN`] bytes are
    /// `head`, after checking its `i_format`.
    pub fn disk_len_of(head: &[u8], pos: u64) -> Result<usize, ReadError> {
        let format = le16(head, 0);
        if format & !FORMAT_BITS != 0 {
            return Err(corrupt(pos, 0, "i_format", format.into(), "0..=15"));
        }
        let layout = format >> 1;
        if layout > LAYOUT_CHUNK_BASED {
            return Err(corrupt(pos, 0, "data layout", layout.into(), "0..=4"));
        }
        Ok(match format & 1 != 0 {
            true => EXTENDED_LEN,
            false => COMPACT_LEN,
        })
    }

    /// Decodes the inode at image position `pos` from [`Inode::disk_len_of`] bytes.
    pub fn decode(b: &[u8], pos: u64) -> Result<Inode, ReadError> {
        let extended = Inode::disk_len_of(b, pos)? == EXTENDED_LEN;
        let common = |nlink, size, mtime, mtime_nsec, uid, gid| Inode {
            extended,
            layout: le16(b, 0) >> 1,
            xattr_icount: le16(b, 2),
            mode: le16(b, 4),
            nlink,
            size,
            mtime,
            mtime_nsec,
            i_u: le32(b, 16),
            ino: le32(b, 20),
            uid,
            gid,
        };
        Ok(match extended {
            true => common(
                le32(b, 44),
                le64(b, 8),
                le64(b, 32) as i64,
                le32(b, 40),
                le32(b, 24),
                le32(b, 28),
            ),
            false => common(
                le16(b, 6).into(),
                le32(b, 8).into(),
                le32(b, 12).into(),
                0,
                le16(b, 24).into(),
                le16(b, 26).into(),
            ),
        })
    }

    pub fn disk_len(&self) -> usize {
        match self.extended {
            true => EXTENDED_LEN,
            false => COMPACT_LEN,
        }
    }

    /// Length of the inline xattr area that follows the inode.
    pub fn xattr_len(&self) -> u64 {
        match self.xattr_icount {
            0 => 0,
            n => XATTR_HEADER_LEN as u64 + 4 * (u64::from(n) - 1),
        }
    }
}

/// `i_xattr_icount` for an inline xattr area of `len` bytes: 0 without xattrs, else the header
/// plus 4-byte units after it.
pub fn xattr_icount(len: usize) -> u16 {
    match len {
        0 => 0,
        n => ((n - XATTR_HEADER_LEN) / 4 + 1) as u16,
    }
}

/// Device number in the kernel's `new_encode_dev` form, for `i_u`.
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The chunk format of a chunk-based inode (its `i_u`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkFormat {
    /// Chunk size in blocks, as a power of two.
    pub blkbits: u32,
    /// 8-byte indexes with a device id, else 4-byte block addresses.
    pub indexes: bool,
}

impl ChunkFormat {
    /// Checks `i_u` of the inode at image position `pos`.
    pub fn decode(i_u: u32, pos: u64) -> Result<ChunkFormat, ReadError> {
        let format = i_u as u16;
        if u32::from(format) != i_u || format & !(CHUNK_BLKBITS | CHUNK_INDEXES) != 0 {
            return Err(corrupt(pos, 16, "i_u", i_u.into(), "a chunk format"));
        }
        Ok(ChunkFormat {
            blkbits: u32::from(format & CHUNK_BLKBITS),
            indexes: format & CHUNK_INDEXES != 0,
        })
    }

    /// Bytes per chunk entry.
    pub fn entry_len(&self) -> u64 {
        if self.indexes {
            8
        } else {
            4
        }
    }

    /// Device id and block address (or [`NULL_ADDR`]) from [`ChunkFormat::entry_len`] bytes.
    pub fn decode_entry(&self, b: &[u8]) -> (u16, u32) {
        match self.indexes {
            true => (le16(b, 2), le32(b, 4)),
            false => (0, le32(b, 0)),
        }
    }
}

/// A directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirent<'a> {
    pub name: &'a [u8],
    pub nid: u64,
    pub file_type: u8,
}

impl Dirent<'_> {
    /// Bytes it takes in a directory block: the entry and its name.
    pub fn encoded_len(&self) -> usize {
        DIRENT_LEN + self.name.len()
    }
}

/// Appends one directory block's used part: the entry array, then the names.
pub fn encode_dir_block(ents: &[Dirent], out: &mut Vec<u8>) {
    let mut nameoff = ents.len() * DIRENT_LEN;
    for e in ents {
        out.extend(e.nid.to_le_bytes());
        out.extend((nameoff as u16).to_le_bytes());
        out.extend([e.file_type, 0]);
        nameoff += e.name.len();
    }
    for e in ents {
        out.extend(e.name);
    }
}

/// Parses one directory block (its used part) like the kernel: the first entry's name offset
/// gives the entry count; names run to the next entry's, the last to a NUL or the end.
pub fn decode_dir_block<'a>(
    block: &'a [u8],
    out: &mut Vec<Dirent<'a>>,
) -> Result<(), &'static str> {
    if block.len() < DIRENT_LEN {
        return Err("shorter than one entry");
    }
    let first = usize::from(le16(block, 8));
    if first < DIRENT_LEN || first % DIRENT_LEN != 0 || first > block.len() {
        return Err("bad name offset of the first entry");
    }
    let count = first / DIRENT_LEN;
    for i in 0..count {
        let d = &block[i * DIRENT_LEN..];
        let start = usize::from(le16(d, 8));
        let end = match i + 1 < count {
            true => usize::from(le16(d, DIRENT_LEN + 8)),
            false => block[start.min(block.len())..]
                .iter()
                .position(|&c| c == 0)
                .map_or(block.len(), |n| start + n),
        };
        if start < first || end <= start || end > block.len() || end - start > NAME_MAX {
            return Err("bad name offset");
        }
        out.push(Dirent {
            name: &block[start..end],
            nid: le64(d, 0),
            file_type: d[10],
        });
    }
    Ok(())
}

/// The inline xattr area's header: the count of shared xattr ids that follow it.
pub fn encode_xattr_header(shared_count: u8) -> [u8; XATTR_HEADER_LEN] {
    let mut b = [0; XATTR_HEADER_LEN];
    b[4] = shared_count;
    b
}

/// The shared xattr count from an inline xattr area's header.
pub fn decode_xattr_header(b: &[u8]) -> u8 {
    b[4]
}

/// One xattr entry: a name index, the rest of the name, the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrEntry<'a> {
    pub name_index: u8,
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> XattrEntry<'a> {
    /// Appends the entry padded to 4 bytes; None if the name or value is too long.
    pub fn encode(&self, out: &mut Vec<u8>) -> Option<()> {
        out.push(u8::try_from(self.name.len()).ok()?);
        out.push(self.name_index);
        out.extend(u16::try_from(self.value.len()).ok()?.to_le_bytes());
        out.extend(self.name);
        out.extend(self.value);
        out.resize(out.len().next_multiple_of(4), 0);
        Some(())
    }

    /// Unpadded length of the entry whose first 4 bytes are `head`.
    pub fn len_of(head: &[u8]) -> u64 {
        (XATTR_ENTRY_LEN + usize::from(head[0]) + usize::from(le16(head, 2))) as u64
    }

    /// Decodes the entry at the start of `b` (at image position `pos`); also returns its padded
    /// length. Long name prefixes are refused.
    pub fn decode(b: &'a [u8], pos: u64) -> Result<(XattrEntry<'a>, u64), ReadError> {
        let head = b
            .get(..XATTR_ENTRY_LEN)
            .ok_or_else(|| corrupt(pos, 0, "xattr entry", b.len() as u64, "at least 4 bytes"))?;
        let (name_len, name_index) = (usize::from(head[0]), head[1]);
        let end = Self::len_of(head) as usize;
        if name_index & XATTR_LONG_PREFIX != 0 {
            return Err(unsupported(pos, 1, "a long xattr name prefix"));
        }
        let entry = b.get(..end).ok_or_else(|| {
            corrupt(
                pos,
                0,
                "xattr entry length",
                end as u64,
                "within the xattr area",
            )
        })?;
        let (name, value) = entry[XATTR_ENTRY_LEN..].split_at(name_len);
        let entry = XattrEntry {
            name_index,
            name,
            value,
        };
        Ok((entry, end.next_multiple_of(4) as u64))
    }
}

/// What xattr name index `index` stands for; None for indexes the kernel does not know.
pub fn xattr_prefix(index: u8) -> Option<&'static str> {
    match index {
        0 => Some(""),
        _ => XATTR_PREFIXES
            .iter()
            .find(|&&(i, _)| i == index)
            .map(|&(_, prefix)| prefix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_check_value() {
        assert_eq!(!crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn superblock_round_trips() {
        let sb = Superblock {
            checksum: 0x1234_5678,
            feature_compat: COMPAT_SB_CHKSUM,
            blkszbits: 12,
            root_nid: 36,
            inos: 5,
            build_time: -7,
            build_time_nsec: 9,
            blocks: 100,
            meta_blkaddr: 1,
            xattr_blkaddr: 3,
            uuid: [4; 16],
            feature_incompat: 0x10,
            extra_devices: 2,
            dirblkbits: 0,
        };
        let b = sb.encode();
        assert_eq!(b.len(), SB_LEN);
        assert_eq!(Superblock::decode(&b, 1024).unwrap(), sb);
        let mut area = [&b[..], &[0xaa; 3968 - SB_LEN]].concat();
        let sum = checksum(&area);
        area[4..8].fill(0);
        assert_eq!(sum, crc32c(&area));
        let mut bad = b.clone();
        bad[90] = 1;
        assert!(matches!(
            Superblock::decode(&bad, 1024),
            Err(ReadError::Corrupt {
                pos: 1114,
                field: "dirblkbits",
                ..
            })
        ));
    }

    #[test]
    fn inodes_round_trip() {
        let compact = Inode {
            extended: false,
            layout: LAYOUT_FLAT_INLINE,
            xattr_icount: 3,
            mode: 0o100644,
            nlink: 2,
            size: 10000,
            mtime: 0,
            mtime_nsec: 0,
            i_u: 5,
            ino: 9,
            uid: 1000,
            gid: 100,
        };
        let extended = Inode {
            extended: true,
            size: 1 << 33,
            mtime: -3,
            mtime_nsec: 123,
            uid: 70000,
            nlink: 70001,
            ..compact.clone()
        };
        for ino in [compact, extended] {
            let b = ino.encode();
            assert_eq!(b.len(), ino.disk_len());
            assert_eq!(Inode::disk_len_of(&b, 0).unwrap(), b.len());
            assert_eq!(Inode::decode(&b, 0).unwrap(), ino);
            assert_eq!(ino.xattr_len(), 20);
        }
        assert_eq!(xattr_icount(20), 3);
    }

    #[test]
    fn xattr_entries_round_trip() {
        let entry = XattrEntry {
            name_index: 1,
            name: b"test",
            value: b"hello",
        };
        let mut b = Vec::new();
        entry.encode(&mut b).unwrap();
        assert_eq!(b, b"\x04\x01\x05\x00testhello\0\0\0");
        assert_eq!(XattrEntry::len_of(&b), 13);
        assert_eq!(XattrEntry::decode(&b, 0).unwrap(), (entry, 16));
        assert!(XattrEntry::decode(&b[..12], 0).is_err());
        assert_eq!(xattr_prefix(6), Some("security."));
        assert_eq!(xattr_prefix(0), Some(""));
        assert_eq!(xattr_prefix(7), None);
    }

    #[test]
    fn dir_blocks_round_trip() {
        let ents = [
            Dirent {
                name: b".",
                nid: 1,
                file_type: FT_DIR,
            },
            Dirent {
                name: b"file",
                nid: 1 << 40,
                file_type: FT_REG_FILE,
            },
        ];
        let mut b = Vec::new();
        encode_dir_block(&ents, &mut b);
        assert_eq!(b.len(), ents.iter().map(Dirent::encoded_len).sum::<usize>());
        let mut out = Vec::new();
        decode_dir_block(&b, &mut out).unwrap();
        assert_eq!(out, ents);
        assert_eq!(
            decode_dir_block(&b[..11], &mut out),
            Err("shorter than one entry")
        );
    }
}
