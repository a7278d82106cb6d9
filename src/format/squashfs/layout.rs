//! The SquashFS 4.0 on-disk layout, shared by the writer and the reader: constants, and every
//! fixed-size record (superblock, inode parts, directory headers and entries, fragment, xattr
//! table entries) with its encoding (`to_bytes`) and decoding (`parse`), little-endian.
//!
//! Variable-length parts (names, symlink targets, block size lists, xattr values) follow their
//! record in the stream; extended inodes of other types than directory and file end in a
//! 4-byte xattr index after them.

pub const MAGIC: &[u8; 4] = b"hsqs";
pub const SUPERBLOCK_SIZE: u64 = Superblock::SIZE as u64;
/// Uncompressed size of a metadata block (inode, directory and lookup tables).
pub const METADATA_SIZE: usize = 8192;

pub const COMPRESSION_GZIP: u16 = 1;
pub const COMPRESSION_ZSTD: u16 = 6;
/// Name of every compression id, from 0.
const COMPRESSION_NAMES: [&str; 7] = ["none", "gzip", "lzma", "lzo", "xz", "lz4", "zstd"];

pub const FLAG_ALWAYS_FRAGMENTS: u16 = 0x0020;
pub const FLAG_COMPRESSOR_OPTIONS: u16 = 0x0400;

/// Size-word bit of a data or fragment block stored uncompressed.
pub const BLOCK_UNCOMPRESSED: u32 = 1 << 24;
/// Header bit of a metadata block stored uncompressed.
pub const META_UNCOMPRESSED: u16 = 0x8000;
pub const NO_FRAGMENT: u32 = u32::MAX;
pub const NO_XATTR: u32 = u32::MAX;
pub const NO_TABLE: u64 = u64::MAX;

/// Basic inode types.
pub const DIR: u16 = 1;
pub const FILE: u16 = 2;
pub const SYMLINK: u16 = 3;
pub const BLOCK_DEV: u16 = 4;
pub const CHAR_DEV: u16 = 5;
pub const FIFO: u16 = 6;
pub const SOCKET: u16 = 7;
/// Added to a basic inode type to get its extended variant.
pub const EXTENDED: u16 = 7;
pub const EXT_DIR: u16 = DIR + EXTENDED;
pub const EXT_FILE: u16 = FILE + EXTENDED;
pub const EXT_SYMLINK: u16 = SYMLINK + EXTENDED;
pub const EXT_BLOCK_DEV: u16 = BLOCK_DEV + EXTENDED;
pub const EXT_CHAR_DEV: u16 = CHAR_DEV + EXTENDED;
pub const EXT_FIFO: u16 = FIFO + EXTENDED;
pub const EXT_SOCKET: u16 = SOCKET + EXTENDED;

/// Most entries under one directory header.
pub const DIR_RUN_MAX: usize = 256;
/// Longest file name the kernel accepts.
pub const NAME_MAX: usize = 256;
/// Directory sizes count the `.` and `..` entries the kernel synthesises.
pub const DIR_SIZE_BIAS: usize = 3;

pub const FRAGMENTS_PER_BLOCK: u64 = (METADATA_SIZE / FragmentEntry::SIZE) as u64;
pub const XATTR_IDS_PER_BLOCK: u64 = (METADATA_SIZE / XattrId::SIZE) as u64;
/// Xattr name prefixes and their type ids.
pub const XATTR_PREFIXES: [(&[u8], u16); 3] = [(b"user.", 0), (b"trusted.", 1), (b"security.", 2)];
/// Xattr type bit: the value is a reference to a value stored elsewhere.
pub const XATTR_OOL: u16 = 0x100;

/// True if `buf` (first bytes of a partition) holds a squashfs 4.0 superblock (magic "hsqs").
pub fn probe(buf: &[u8]) -> bool {
    let version = Superblock::AT.version_major..Superblock::AT.version_minor + 2;
    buf.len() >= Superblock::SIZE && buf.starts_with(MAGIC) && buf[version] == [4, 0, 0, 0]
}

/// The name of compression id `id`, as mksquashfs's `-comp` calls it.
pub fn compression_name(id: u16) -> &'static str {
    COMPRESSION_NAMES.get(usize::from(id)).unwrap_or(&"unknown")
}

/// A metadata reference: a block's start relative to its table, and an offset in the block.
pub fn meta_ref(block: u32, offset: u16) -> u64 {
    u64::from(block) << 16 | u64::from(offset)
}

/// The block start and offset of a metadata reference.
pub fn meta_ref_parts(reference: u64) -> (u64, usize) {
    (reference >> 16, (reference & 0xffff) as usize)
}

/// Defines a record: a struct of little-endian integer fields in on-disk order, its `SIZE`,
/// each field's byte offset (`AT`, a struct named by the second identifier), `to_bytes` and
/// `parse`.
macro_rules! record {
    ($(#[$doc:meta])* $name:ident, $at:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        #[doc = concat!("Byte offset of every field of [`", stringify!($name), "`].")]
        pub struct $at {
            $(pub $field: usize,)*
        }

        impl $name {
            pub const SIZE: usize = 0 $(+ size_of::<$ty>())*;
            pub const AT: $at = {
                let at = 0;
                $(
                    let $field = at;
                    let at = at + size_of::<$ty>();
                )*
                let _ = at;
                $at { $($field,)* }
            };

            pub fn to_bytes(&self) -> [u8; Self::SIZE] {
                let mut out = [0; Self::SIZE];
                $(
                    let bytes = self.$field.to_le_bytes();
                    out[Self::AT.$field..][..bytes.len()].copy_from_slice(&bytes);
                )*
                out
            }

            pub fn parse(b: &[u8; Self::SIZE]) -> Self {
                $name {
                    $($field: <$ty>::from_le_bytes(field(b, Self::AT.$field)),)*
                }
            }
        }
    };
}

/// The `N` bytes at `at` of `b`.
fn field<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

record! {
    /// The superblock, at the start of the filesystem. Table positions are from that start.
    Superblock, SuperblockAt {
        /// [`MAGIC`], little-endian.
        magic: u32,
        inodes: u32,
        mkfs_time: u32,
        block_size: u32,
        fragments: u32,
        compression: u16,
        /// log2 of `block_size`.
        block_log: u16,
        flags: u16,
        ids: u16,
        version_major: u16,
        version_minor: u16,
        /// Metadata reference of the root inode.
        root: u64,
        bytes_used: u64,
        id_table: u64,
        xattr_table: u64,
        inode_table: u64,
        dir_table: u64,
        fragment_table: u64,
        export_table: u64,
    }
}

record! {
    /// What every inode starts with.
    InodeHeader, InodeHeaderAt {
        kind: u16,
        perm: u16,
        /// Index in the id table.
        uid: u16,
        gid: u16,
        mtime: u32,
        number: u32,
    }
}

record! {
    /// A basic directory inode after its header.
    DirInode, DirInodeAt {
        /// Listing's block start in the directory table.
        block: u32,
        nlink: u32,
        /// Listing size plus [`DIR_SIZE_BIAS`].
        size: u16,
        offset: u16,
        parent: u32,
    }
}

record! {
    /// An extended directory inode after its header; `index_count` [`DirIndex`] follow.
    ExtDirInode, ExtDirInodeAt {
        nlink: u32,
        size: u32,
        block: u32,
        parent: u32,
        index_count: u16,
        offset: u16,
        xattr: u32,
    }
}

record! {
    /// Directory index entry: where a run of entries starts; its first name follows.
    DirIndex, DirIndexAt {
        /// Offset of the run's header in the listing.
        index: u32,
        /// Start of the directory table block holding the header.
        block: u32,
        /// Name length minus one.
        name_size: u32,
    }
}

record! {
    /// A basic file inode after its header; the block size words follow.
    FileInode, FileInodeAt {
        start: u32,
        fragment: u32,
        fragment_offset: u32,
        size: u32,
    }
}

record! {
    /// An extended file inode after its header; the block size words follow.
    ExtFileInode, ExtFileInodeAt {
        start: u64,
        size: u64,
        /// Bytes not stored because their blocks are all zero.
        sparse: u64,
        nlink: u32,
        fragment: u32,
        fragment_offset: u32,
        xattr: u32,
    }
}

record! {
    /// A symlink inode after its header; the target follows.
    SymlinkInode, SymlinkInodeAt {
        nlink: u32,
        target_size: u32,
    }
}

record! {
    /// A device inode after its header.
    DevInode, DevInodeAt {
        nlink: u32,
        rdev: u32,
    }
}

record! {
    /// A fifo or socket inode after its header.
    IpcInode, IpcInodeAt {
        nlink: u32,
    }
}

record! {
    /// Header of a run of directory entries.
    DirHeader, DirHeaderAt {
        /// Entries in the run minus one.
        count: u32,
        /// Inode table block of the entries' inodes.
        start: u32,
        /// Inode number the entries' are relative to.
        number: u32,
    }
}

record! {
    /// A directory entry; its name follows.
    DirEntry, DirEntryAt {
        /// Offset of the inode in its block.
        offset: u16,
        /// Inode number minus the header's, as an `i16`.
        delta: u16,
        /// Basic inode type.
        kind: u16,
        /// Name length minus one.
        name_size: u16,
    }
}

record! {
    /// A fragment table entry: where a fragment block is and its size word.
    FragmentEntry, FragmentEntryAt {
        start: u64,
        size: u32,
        unused: u32,
    }
}

record! {
    /// Header of the xattr lookup table, which the superblock points to; the locations of
    /// the [`XattrId`] blocks follow.
    XattrTable, XattrTableAt {
        /// Start of the key/value blocks.
        kv_start: u64,
        ids: u32,
        unused: u32,
    }
}

record! {
    /// An xattr lookup entry: one inode xattr index's set of key/value pairs.
    XattrId, XattrIdAt {
        /// Metadata reference of the set, relative to `kv_start`.
        reference: u64,
        count: u32,
        /// Bytes of the set as stored.
        size: u32,
    }
}

record! {
    /// An xattr key; the name without its prefix follows, then an [`XattrValue`].
    XattrEntry, XattrEntryAt {
        /// Prefix id, with [`XATTR_OOL`] for a value stored elsewhere.
        kind: u16,
        name_size: u16,
    }
}

record! {
    /// An xattr value's size; the value follows (an 8-byte reference when out of line).
    XattrValue, XattrValueAt {
        size: u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_the_on_disk_sizes() {
        let sizes = [
            (Superblock::SIZE, 96),
            (InodeHeader::SIZE, 16),
            (DirInode::SIZE, 16),
            (ExtDirInode::SIZE, 24),
            (DirIndex::SIZE, 12),
            (FileInode::SIZE, 16),
            (ExtFileInode::SIZE, 40),
            (DirHeader::SIZE, 12),
            (DirEntry::SIZE, 8),
            (FragmentEntry::SIZE, 16),
            (XattrTable::SIZE, 16),
            (XattrId::SIZE, 16),
        ];
        for (got, want) in sizes {
            assert_eq!(got, want);
        }
        assert_eq!(Superblock::AT.bytes_used, 40);
        assert_eq!(Superblock::AT.export_table, 88);
    }

    #[test]
    fn superblock_round_trips_and_probes() {
        let sb = Superblock {
            magic: u32::from_le_bytes(*MAGIC),
            inodes: 3,
            block_size: 1 << 17,
            compression: COMPRESSION_ZSTD,
            block_log: 17,
            version_major: 4,
            bytes_used: 4000,
            export_table: NO_TABLE,
            ..Superblock::default()
        };
        let bytes = sb.to_bytes();
        assert_eq!(&bytes[..8], b"hsqs\x03\0\0\0");
        assert_eq!(bytes[12..16], (1u32 << 17).to_le_bytes());
        assert_eq!(bytes[20..24], [6, 0, 17, 0]);
        assert_eq!(bytes[88..96], [0xff; 8]);
        assert_eq!(Superblock::parse(&bytes), sb);
        assert!(probe(&bytes));
        assert!(!probe(&bytes[..95]));
        let mut v3 = bytes;
        v3[28] = 3;
        assert!(!probe(&v3));
        assert!(!probe(&[0; 4096]));
    }

    #[test]
    fn references_and_names() {
        assert_eq!(meta_ref(0x1234, 0x56), 0x1234_0056);
        assert_eq!(meta_ref_parts(0x1234_0056), (0x1234, 0x56));
        assert_eq!(compression_name(4), "xz");
        assert_eq!(compression_name(99), "unknown");
        let e = DirEntry {
            offset: 1,
            delta: 0xfffe,
            kind: FILE,
            name_size: 3,
        };
        assert_eq!(e.to_bytes(), [1, 0, 0xfe, 0xff, 2, 0, 3, 0]);
        assert_eq!(DirEntry::parse(&e.to_bytes()), e);
    }
}
