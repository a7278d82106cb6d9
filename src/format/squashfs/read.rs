//! SquashFS 4.0 reader: looks up paths, lists directories and reads small regular files and
//! extended attributes of an image at a byte offset of a [`Blob`], without mounting it.
//!
//! It reads what our writer and mksquashfs make with gzip or zstd compression, or none
//! (xz, lzma, lzo and lz4 images are refused when opened): basic and extended inodes,
//! fragments, sparse blocks, and the xattr table with out-of-line values. The image is untrusted: every field is checked before
//! it is used, every read stays within `bytes_used`, decompression is bounded by the block
//! size, directories are capped at [`DIR_MAX`] bytes and xattr sets at [`XATTR_SET_MAX`].

use std::cell::RefCell;
use std::io;

mod meta;

use super::layout::{
    meta_ref, meta_ref_parts, probe, DevInode, DirEntry, DirHeader, DirInode, ExtDirInode,
    ExtFileInode, FileInode, FragmentEntry, InodeHeader, IpcInode, Superblock, SymlinkInode,
    XattrEntry, XattrId, XattrTable, XattrValue, BLOCK_UNCOMPRESSED, DIR, DIR_RUN_MAX,
    DIR_SIZE_BIAS, EXTENDED, EXT_BLOCK_DEV, EXT_CHAR_DEV, EXT_DIR, EXT_FIFO, EXT_FILE, EXT_SOCKET,
    EXT_SYMLINK, FILE, FRAGMENTS_PER_BLOCK, NAME_MAX, NO_FRAGMENT, NO_TABLE, NO_XATTR, SYMLINK,
    XATTR_IDS_PER_BLOCK, XATTR_OOL, XATTR_PREFIXES,
};
use crate::format::blob::Blob;
use crate::format::lookup::{check_size, not_a_dir, not_a_file, walk, Filesystem, Kind, PathError};
use meta::{CachedBlock, Compressor, Meta};

const BLOCK_SIZES: std::ops::RangeInclusive<u32> = 4096..=1 << 20;
/// Size bits of a data block's size word.
const BLOCK_SIZE_MASK: u32 = BLOCK_UNCOMPRESSED - 1;
const XATTR_NAME_MAX: u16 = 255;
/// Longest symlink target the kernel reads.
const SYMLINK_MAX: u32 = 4096;
/// Largest directory listing read, some 2 million entries.
pub const DIR_MAX: u64 = 64 << 20;
/// Largest set of xattrs read for one inode, in bytes as stored.
pub const XATTR_SET_MAX: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {len} bytes at byte {pos} of the image: {source}")]
    Io {
        pos: u64,
        len: u64,
        source: io::Error,
    },
    #[error("byte {pos} of the image: {field} is {value}, expected {expected}")]
    Corrupt {
        pos: u64,
        field: &'static str,
        value: u64,
        expected: &'static str,
    },
    #[error("byte {pos} of the image: {len} bytes would run past the filesystem's end at {end}")]
    PastEnd { pos: u64, len: u64, end: u64 },
    #[error(
        "compression {name} (compression_id {id}) is not supported: \
         initrd-sysext reads gzip and zstd squashfs"
    )]
    Compressor { id: u16, name: &'static str },
    #[error("byte {pos} of the image: {compressor} block: {reason}")]
    Decompress {
        pos: u64,
        compressor: &'static str,
        reason: String,
    },
    #[error("directory {path:?}: {reason}")]
    Directory { path: String, reason: &'static str },
    #[error(transparent)]
    Path(#[from] PathError),
}

/// A read-only view of a SquashFS filesystem at `offset` of a [`Blob`].
pub struct Reader<'a, B: Blob + ?Sized> {
    blob: &'a B,
    offset: u64,
    sb: Superblock,
    compressor: Compressor,
    /// Recently read metadata blocks.
    cache: RefCell<Vec<CachedBlock>>,
}

/// An inode: its basic type, xattr index and what lookups and reads need.
struct Inode {
    kind: u16,
    xattr: u32,
    body: Body,
}

enum Body {
    Dir(Listing),
    File(FileRef),
    Other,
}

/// Where a directory's listing is: block (relative to the table), offset, size in bytes.
struct Listing {
    block: u32,
    offset: u16,
    size: u64,
}

struct FileRef {
    start: u64,
    size: u64,
    fragment: u32,
    fragment_offset: u32,
}

struct Entry {
    name: Vec<u8>,
    inode: u64,
    kind: u16,
}

impl<'a, B: Blob + ?Sized> Reader<'a, B> {
    /// Parses and checks the superblock.
    pub fn open(blob: &'a B, offset: u64) -> Result<Self, ReadError> {
        let io = |len| {
            move |source| ReadError::Io {
                pos: offset,
                len,
                source,
            }
        };
        let size = blob.size().map_err(io(0))?;
        let mut b = [0; Superblock::SIZE];
        blob.read_exact_at(&mut b, offset)
            .map_err(io(Superblock::SIZE as u64))?;
        let sb = Superblock::parse(&b);
        let bad = |at: usize, field, value, expected| ReadError::Corrupt {
            pos: offset + at as u64,
            field,
            value,
            expected,
        };
        let at = Superblock::AT;
        if !probe(&b) {
            let expected = "\"hsqs\" and version 4.0";
            return Err(bad(at.magic, "magic", sb.magic.into(), expected));
        }
        let block_size = sb.block_size;
        if !BLOCK_SIZES.contains(&block_size)
            || !block_size.is_power_of_two()
            || u32::from(sb.block_log) != block_size.trailing_zeros()
        {
            let expected = "a power of two in 4 KiB..=1 MiB matching block_log";
            return Err(bad(
                at.block_size,
                "block_size",
                block_size.into(),
                expected,
            ));
        }
        if sb.bytes_used > size - offset {
            let bytes_used = sb.bytes_used;
            return Err(bad(
                at.bytes_used,
                "bytes_used",
                bytes_used,
                "within the image",
            ));
        }
        let compressor = Compressor::from_id(sb.compression)?;
        if sb.inode_table > sb.dir_table || sb.dir_table >= sb.bytes_used {
            let expected = "inode table <= directory table < bytes_used";
            return Err(bad(at.inode_table, "inode_table", sb.inode_table, expected));
        }
        if sb.xattr_table != NO_TABLE && sb.xattr_table >= sb.bytes_used {
            let xattr_table = sb.xattr_table;
            return Err(bad(
                at.xattr_table,
                "xattr_table",
                xattr_table,
                "below bytes_used",
            ));
        }
        Ok(Reader {
            blob,
            offset,
            sb,
            compressor,
            cache: RefCell::default(),
        })
    }

    /// The xattr set of inode xattr index `index`: the key/value area start, a stream at the
    /// set, and its entry count.
    fn xattr_set(&self, index: u32) -> Result<(u64, Meta<'_, 'a, B>, u32), ReadError> {
        let table = self.sb.xattr_table;
        if table == NO_TABLE {
            return Err(self.corrupt(56, "xattr_table", table, "a table, as inodes use it"));
        }
        let header = XattrTable::parse(&self.read_array(table)?);
        if index >= header.ids {
            let expected = "below the xattr id count";
            let at = table + XattrTable::AT.ids as u64;
            return Err(self.corrupt(at, "xattr index", index.into(), expected));
        }
        let index = u64::from(index);
        let slot = table + XattrTable::SIZE as u64 + index / XATTR_IDS_PER_BLOCK * 8;
        let block = u64::from_le_bytes(self.read_array(slot)?);
        let at = (index % XATTR_IDS_PER_BLOCK) as usize * XattrId::SIZE;
        let id = XattrId::parse(&Meta::new(self, block, at)?.array()?);
        let kv_start = header.kv_start;
        Ok((kv_start, self.meta_at(kv_start, id.reference)?, id.count))
    }

    /// An out-of-line value: its 8-byte reference in `kv`, then the value it points to.
    fn ool_value(&self, kv_start: u64, kv: &mut Meta<'_, 'a, B>) -> Result<Vec<u8>, ReadError> {
        let len = XattrValue::parse(&kv.array()?).size;
        if len != 8 {
            return Err(kv.corrupt("out-of-line xattr reference size", len.into(), "8"));
        }
        let reference = kv.u64()?;
        self.meta_at(kv_start, reference)?.sized_value()
    }

    /// The inode at the end of `path`, following no symlink.
    fn lookup(&self, path: &str) -> Result<Inode, ReadError> {
        Ok(self.lookup_with_blocks(path)?.0)
    }

    /// The inode at the end of `path`, and a stream at what follows it (a file's block sizes).
    fn lookup_with_blocks(&self, path: &str) -> Result<(Inode, Meta<'_, 'a, B>), ReadError> {
        walk(path, self.inode(self.sb.root)?, |(dir, _), parent, name| {
            let listing = expect_listing(dir, parent)?;
            let entries = self.entries(&listing, parent)?;
            match entries.into_iter().find(|e| e.name == name.as_bytes()) {
                Some(e) => Ok(Some(self.inode(e.inode)?)),
                None => Ok(None),
            }
        })
    }

    /// Reads the inode at `reference` (block << 16 | offset in the inode table).
    fn inode(&self, reference: u64) -> Result<(Inode, Meta<'_, 'a, B>), ReadError> {
        let (block, at) = meta_ref_parts(reference);
        let block = self.sb.inode_table.saturating_add(block);
        if block >= self.sb.dir_table {
            let root_at = Superblock::AT.root as u64;
            return Err(self.corrupt(root_at, "inode reference", reference, "in the inode table"));
        }
        let mut m = Meta::new(self, block, at)?;
        let kind = InodeHeader::parse(&m.array()?).kind;
        let basic = if kind > EXTENDED {
            kind - EXTENDED
        } else {
            kind
        };
        let (body, xattr) = inode_body(kind, &mut m)?;
        let inode = Inode {
            kind: basic,
            xattr,
            body,
        };
        Ok((inode, m))
    }

    /// A directory's entries in on-disk order.
    fn entries(&self, listing: &Listing, path: &str) -> Result<Vec<Entry>, ReadError> {
        let bad = |reason| ReadError::Directory {
            path: path.into(),
            reason,
        };
        let len = listing
            .size
            .checked_sub(DIR_SIZE_BIAS as u64)
            .ok_or(bad("size below 3"))?;
        check_size(len, DIR_MAX, path)?;
        let mut out = Vec::new();
        if len == 0 {
            return Ok(out);
        }
        let block = self.sb.dir_table.saturating_add(listing.block.into());
        let mut m = Meta::new(self, block, listing.offset.into())?;
        let mut used = 0;
        while used < len {
            let header = DirHeader::parse(&m.array()?);
            let count = u64::from(header.count) + 1;
            if count > DIR_RUN_MAX as u64 {
                return Err(bad("more than 256 entries under one header"));
            }
            used += DirHeader::SIZE as u64;
            for _ in 0..count {
                let entry = DirEntry::parse(&m.array()?);
                let name_len = usize::from(entry.name_size) + 1;
                if name_len > NAME_MAX {
                    return Err(bad("a name longer than 256 bytes"));
                }
                out.push(Entry {
                    name: m.bytes(name_len)?,
                    inode: meta_ref(header.start, entry.offset),
                    kind: entry.kind,
                });
                used += (DirEntry::SIZE + name_len) as u64;
            }
            if used > len {
                return Err(bad("entries run past the listing size"));
            }
        }
        Ok(out)
    }

    /// A file's bytes: its blocks (sizes read from `blocks`), then its fragment tail.
    fn file_data(&self, f: &FileRef, blocks: &mut Meta<'_, 'a, B>) -> Result<Vec<u8>, ReadError> {
        let block_size = u64::from(self.sb.block_size);
        let has_fragment = f.fragment != NO_FRAGMENT;
        let count = match has_fragment {
            true => f.size / block_size,
            false => f.size.div_ceil(block_size),
        };
        let mut out = Vec::new();
        let mut pos = f.start;
        for _ in 0..count {
            let word = blocks.u32()?;
            let want = (f.size - out.len() as u64).min(block_size);
            if word == 0 {
                out.resize(out.len() + want as usize, 0);
                continue;
            }
            let data = self.data_block(pos, word)?;
            if data.len() as u64 != want {
                let expected = "the block size, or the file's remaining size";
                return Err(self.corrupt(
                    pos,
                    "decompressed block size",
                    data.len() as u64,
                    expected,
                ));
            }
            out.extend(data);
            pos = pos.saturating_add((word & BLOCK_SIZE_MASK).into());
        }
        if has_fragment {
            let tail = (f.size - out.len() as u64) as usize;
            let fragment = self.fragment(f.fragment)?;
            let start = f.fragment_offset as usize;
            let bytes = start
                .checked_add(tail)
                .and_then(|end| fragment.get(start..end))
                .ok_or_else(|| {
                    let expected = "within the fragment block";
                    self.corrupt(f.start, "fragment offset", start as u64, expected)
                })?;
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    /// The uncompressed bytes of fragment block `index`.
    fn fragment(&self, index: u32) -> Result<Vec<u8>, ReadError> {
        if index >= self.sb.fragments {
            let expected = "below the fragment count";
            let at = Superblock::AT.fragments as u64;
            return Err(self.corrupt(at, "fragment index", index.into(), expected));
        }
        let index = u64::from(index);
        let slot = self
            .sb
            .fragment_table
            .saturating_add(index / FRAGMENTS_PER_BLOCK * 8);
        let block = u64::from_le_bytes(self.read_array(slot)?);
        let at = (index % FRAGMENTS_PER_BLOCK) as usize * FragmentEntry::SIZE;
        let entry = FragmentEntry::parse(&Meta::new(self, block, at)?.array()?);
        self.data_block(entry.start, entry.size)
    }

    /// A data or fragment block, given its size word.
    fn data_block(&self, pos: u64, word: u32) -> Result<Vec<u8>, ReadError> {
        let len = word & !BLOCK_UNCOMPRESSED;
        if len > self.sb.block_size {
            return Err(self.corrupt(
                pos,
                "block size word",
                word.into(),
                "at most the block size",
            ));
        }
        let raw = self.read(pos, len.into())?;
        match word & BLOCK_UNCOMPRESSED {
            0 => self.decompress(pos, &raw, self.sb.block_size as usize),
            _ => Ok(raw),
        }
    }
}

impl<'a, B: Blob + ?Sized> Filesystem for Reader<'a, B> {
    type Error = ReadError;

    /// Lists a directory: (name, is_dir) sorted by name.
    fn list(&self, dir: &str) -> Result<Vec<(String, bool)>, ReadError> {
        let listing = expect_listing(self.lookup(dir)?, dir)?;
        let mut out: Vec<(String, bool)> = self
            .entries(&listing, dir)?
            .into_iter()
            .map(|e| {
                let name = String::from_utf8_lossy(&e.name).into_owned();
                (name, e.kind == DIR || e.kind == EXT_DIR)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Reads a regular file of at most `max` bytes; a symlink is not followed.
    fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>, ReadError> {
        let (inode, mut blocks) = self.lookup_with_blocks(path)?;
        let file = match inode.body {
            Body::File(f) => f,
            _ => return Err(not_a_file(kind(&inode), path).into()),
        };
        check_size(file.size, max, path)?;
        self.file_data(&file, &mut blocks)
    }

    /// The value of extended attribute `name` (such as `user.foo`) of `path`, if it has one.
    fn xattr(&self, path: &str, name: &str) -> Result<Option<Vec<u8>>, ReadError> {
        let index = self.lookup(path)?.xattr;
        let wanted = XATTR_PREFIXES
            .iter()
            .find_map(|&(prefix, kind)| Some((kind, name.as_bytes().strip_prefix(prefix)?)));
        let Some((kind, suffix)) = wanted.filter(|_| index != NO_XATTR) else {
            return Ok(None);
        };
        let (kv_start, mut kv, count) = self.xattr_set(index)?;
        let mut used = 0u64;
        for _ in 0..count {
            let entry = XattrEntry::parse(&kv.array()?);
            let name_len = entry.name_size;
            if name_len > XATTR_NAME_MAX {
                return Err(kv.corrupt("xattr name size", name_len.into(), "at most 255"));
            }
            let entry_name = kv.bytes(name_len.into())?;
            let entry_kind = entry.kind;
            let value = match entry_kind & XATTR_OOL {
                0 => kv.sized_value()?,
                _ => self.ool_value(kv_start, &mut kv)?,
            };
            used += 8 + u64::from(name_len) + value.len() as u64;
            if used > XATTR_SET_MAX {
                return Err(kv.corrupt("xattr set size", used, "at most 4 MiB"));
            }
            if entry_kind & !XATTR_OOL == kind && entry_name == suffix {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    fn path_error(e: &ReadError) -> Option<&PathError> {
        match e {
            ReadError::Path(p) => Some(p),
            _ => None,
        }
    }
}

/// The type-specific part of an inode of type `kind`, read from `m`, and its xattr index.
fn inode_body<B: Blob + ?Sized>(
    kind: u16,
    m: &mut Meta<'_, '_, B>,
) -> Result<(Body, u32), ReadError> {
    let listing = |block, size: u32, offset| {
        let size = size.into();
        Body::Dir(Listing {
            block,
            offset,
            size,
        })
    };
    Ok(match kind {
        DIR => {
            let inode = DirInode::parse(&m.array()?);
            let size = inode.size.into();
            (listing(inode.block, size, inode.offset), NO_XATTR)
        }
        EXT_DIR => {
            let inode = ExtDirInode::parse(&m.array()?);
            (listing(inode.block, inode.size, inode.offset), inode.xattr)
        }
        FILE => {
            let inode = FileInode::parse(&m.array()?);
            let file = FileRef {
                start: inode.start.into(),
                size: inode.size.into(),
                fragment: inode.fragment,
                fragment_offset: inode.fragment_offset,
            };
            (Body::File(file), NO_XATTR)
        }
        EXT_FILE => {
            let inode = ExtFileInode::parse(&m.array()?);
            let file = FileRef {
                start: inode.start,
                size: inode.size,
                fragment: inode.fragment,
                fragment_offset: inode.fragment_offset,
            };
            (Body::File(file), inode.xattr)
        }
        EXT_SYMLINK => {
            let len = SymlinkInode::parse(&m.array()?).target_size;
            if len > SYMLINK_MAX {
                return Err(m.corrupt("symlink size", len.into(), "at most 4096"));
            }
            m.bytes(len as usize)?; // target
            (Body::Other, m.u32()?)
        }
        // Symlinks, devices, fifos and sockets.
        SYMLINK..=EXTENDED => (Body::Other, NO_XATTR),
        EXT_BLOCK_DEV | EXT_CHAR_DEV => {
            m.array::<{ DevInode::SIZE }>()?;
            (Body::Other, m.u32()?)
        }
        EXT_FIFO | EXT_SOCKET => {
            m.array::<{ IpcInode::SIZE }>()?;
            (Body::Other, m.u32()?)
        }
        _ => return Err(m.corrupt("inode type", kind.into(), "1..=14")),
    })
}

fn kind(inode: &Inode) -> Kind {
    match inode.body {
        Body::Dir(_) => Kind::Dir,
        Body::File(_) => Kind::File,
        _ if inode.kind == SYMLINK => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// A directory's listing; anything else stops a walk.
fn expect_listing(inode: Inode, path: &str) -> Result<Listing, PathError> {
    match inode.body {
        Body::Dir(listing) => Ok(listing),
        _ => Err(not_a_dir(kind(&inode), path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::squashfs::test_util::{assert_matches, fuzz, small_image, source, BLOCK};
    use crate::format::squashfs::{self, Options};
    use std::fs::{self, File};

    #[test]
    fn reads_our_images_at_an_offset() {
        let (tmp, tree) = source();
        let image = tmp.path().join("image");
        let file = File::create(&image).unwrap();
        squashfs::write(&tree, &file, 8192, &Options::default()).unwrap();
        let file = File::open(&image).unwrap();
        let r = Reader::open(&file, 8192).unwrap();
        assert_eq!(r.compressor, Compressor::Zstd);
        assert_matches(&r, &tree, "ours");
        assert_eq!(
            r.list("/usr//lib/./extension-release.d/").unwrap(),
            [("extension-release.foo".to_owned(), false)]
        );
        assert!(Reader::open(&file, 0).is_err());
    }

    #[test]
    fn path_errors_are_typed() {
        let (tmp, tree) = source();
        let image = tmp.path().join("image");
        squashfs::write(
            &tree,
            &File::create(&image).unwrap(),
            0,
            &Options::default(),
        )
        .unwrap();
        let bytes = fs::read(&image).unwrap();
        let r = Reader::open(&bytes[..], 0).unwrap();
        let err = |res: Result<Vec<u8>, ReadError>| res.unwrap_err();
        assert!(matches!(
            err(r.read_file("usr/missing", 10)),
            ReadError::Path(PathError::NotFound { path }) if path == "usr/missing"
        ));
        assert!(matches!(
            err(r.read_file("usr/lib/tail/x", 10)),
            ReadError::Path(PathError::NotADirectory { path }) if path == "usr/lib/tail"
        ));
        assert!(matches!(
            err(r.read_file("usr/lib/link/x", 10)),
            ReadError::Path(PathError::Symlink { path }) if path == "usr/lib/link"
        ));
        let size = 2 * BLOCK as u64 + 1000;
        assert!(matches!(
            err(r.read_file("usr/lib/tail", size - 1)),
            ReadError::Path(PathError::TooBig { size: s, .. }) if s == size
        ));
        assert_eq!(
            r.read_file("usr/lib/tail", size).unwrap().len() as u64,
            size
        );
        assert!(matches!(
            err(r.read_file("usr/lib/link", 10)),
            ReadError::Path(PathError::Symlink { .. })
        ));
        assert!(matches!(
            err(r.read_file("usr/../hard", 10)),
            ReadError::Path(PathError::BadPath { .. })
        ));
        assert!(matches!(
            r.list("hard"),
            Err(ReadError::Path(PathError::NotADirectory { .. }))
        ));
        assert!(matches!(
            r.xattr("nowhere", "user.x"),
            Err(ReadError::Path(PathError::NotFound { .. }))
        ));
    }

    #[test]
    fn bad_superblocks_are_refused() {
        let good = small_image();
        let open = |at: usize, value: u8| {
            let mut b = good.clone();
            b[at] = value;
            Reader::open(&b[..], 0).err()
        };
        assert!(open(0, b'h').is_none());
        assert!(matches!(
            open(0, b'x'),
            Some(ReadError::Corrupt {
                pos: 0,
                field: "magic",
                ..
            })
        ));
        assert!(matches!(
            open(22, 16),
            Some(ReadError::Corrupt {
                pos: 12,
                field: "block_size",
                ..
            })
        ));
        assert!(matches!(
            open(20, 3),
            Some(ReadError::Compressor { id: 3, name: "lzo" })
        ));
        let xz = open(20, 4).unwrap();
        assert_eq!(
            xz.to_string(),
            "compression xz (compression_id 4) is not supported: \
             initrd-sysext reads gzip and zstd squashfs"
        );
        assert!(matches!(
            open(47, 1),
            Some(ReadError::Corrupt {
                pos: 40,
                field: "bytes_used",
                ..
            })
        ));
        assert!(matches!(
            Reader::open(&good[..90], 0),
            Err(ReadError::Io { .. })
        ));
    }

    #[test]
    fn mutated_images_never_panic() {
        fuzz(&small_image(), 5000, 0x9e37_79b9_7f4a_7c15);
    }
}
