//! EROFS reader: looks up paths, lists directories and reads small regular files and extended
//! attributes of an image at a byte offset of a [`Blob`], without mounting it.
//!
//! It reads what our writer and mkfs.erofs make without compression: compact and extended
//! inodes; flat (plain or inline tail) and chunk-based data; inline and shared xattrs.
//! Compressed files are refused with [`ReadError::Compressed`]. The image is untrusted: every
//! field is checked before it is used, directories are capped at [`DIR_MAX`] bytes, and no
//! allocation is sized by the image beyond that and the caller's limit.

use crate::format::bytes::{components, le16, le32, le64, push};
use std::io;

use super::blob::Blob;
use super::erofs::{
    crc32c, COMPACT_LEN, COMPAT_SB_CHKSUM, DIRENT_LEN, EXTENDED_LEN, FT_DIR, INODE_SLOT,
    LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN, MAGIC, NAME_MAX, SB_OFFSET, XATTR_HEADER_LEN,
};

const SB_LEN: u64 = 128;
const LAYOUT_COMPRESSED_FULL: u16 = 1;
const LAYOUT_COMPRESSED_COMPACT: u16 = 3;
const LAYOUT_CHUNK_BASED: u16 = 4;
/// `i_format` bits: version (compact/extended) and data layout.
const FORMAT_BITS: u16 = 0xf;
const CHUNK_BLKBITS: u16 = 0x1f;
const CHUNK_INDEXES: u16 = 0x20;
const NULL_ADDR: u32 = u32::MAX;
/// Incompatible features that leave uncompressed data, directories and xattrs where this
/// reader looks: lz4 padding, compression configs, chunked files, the device table,
/// tail-packing, fragments and long xattr prefixes (whose entries are refused one by one).
/// Anything else (such as 48-bit block addresses) is refused.
const INCOMPAT_KNOWN: u32 = 0x7f;
/// An xattr name index with this bit refers to a long prefix.
const XATTR_LONG_PREFIX: u8 = 0x80;
const S_IFMT: u16 = 0o170000;
const S_IFDIR: u16 = 0o040000;
const S_IFREG: u16 = 0o100000;
const S_IFLNK: u16 = 0o120000;
/// Largest directory read, some 2 million entries.
pub const DIR_MAX: u64 = 64 << 20;

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
    #[error("superblock checksum is {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("byte {pos} of the image: {what} is not supported")]
    Unsupported { pos: u64, what: &'static str },
    #[error("directory {path:?}, block {block}: {reason}")]
    Dirent {
        path: String,
        block: u64,
        reason: &'static str,
    },
    #[error("{path:?}: compressed files are not supported")]
    Compressed { path: String },
    #[error("{path:?}: '..' is not allowed in paths")]
    BadPath { path: String },
    #[error("{path:?}: no such file or directory")]
    NotFound { path: String },
    #[error("{path:?}: not a directory")]
    NotADirectory { path: String },
    #[error("{path:?}: is a symbolic link, which is not followed")]
    Symlink { path: String },
    #[error("{path:?}: not a regular file")]
    NotAFile { path: String },
    #[error("{path:?}: {size} bytes, over the limit of {max}")]
    TooBig { path: String, size: u64, max: u64 },
}

/// A read-only view of an EROFS filesystem at `offset` of a [`Blob`].
pub struct Reader<'a, B: Blob + ?Sized> {
    blob: &'a B,
    offset: u64,
    blkbits: u32,
    root_nid: u64,
    /// Filesystem positions of the inode and shared xattr areas.
    meta_start: u64,
    xattr_start: u64,
    /// Chunk device ids that name an extra device.
    device_mask: u16,
}

/// A checked on-disk inode.
struct Inode {
    /// Filesystem position of the inode.
    pos: u64,
    mode: u16,
    layout: u16,
    size: u64,
    /// `i_u`: first block, or the chunk format.
    raw: u32,
    inode_len: u64,
    xattr_len: u64,
}

impl Inode {
    /// Where inline data or chunk indexes start.
    fn body_end(&self) -> u64 {
        self.pos + self.inode_len + self.xattr_len
    }
}

struct Dirent {
    name: Vec<u8>,
    nid: u64,
    file_type: u8,
}

impl<'a, B: Blob + ?Sized> Reader<'a, B> {
    /// Parses and checks the superblock.
    pub fn open(blob: &'a B, offset: u64) -> Result<Self, ReadError> {
        let mut r = Reader {
            blob,
            offset,
            blkbits: 0,
            root_nid: 0,
            meta_start: 0,
            xattr_start: 0,
            device_mask: 0,
        };
        let sb_pos = SB_OFFSET as u64;
        let sb = r.read(sb_pos, SB_LEN)?;
        let bad = |at: u64, field, value, expected| r.corrupt(sb_pos + at, field, value, expected);
        if le32(&sb, 0) != MAGIC {
            return Err(bad(0, "magic", le32(&sb, 0).into(), "0xe0f5e1e2"));
        }
        let blkbits = sb[12];
        if !(9..=16).contains(&blkbits) {
            return Err(bad(12, "blkszbits", blkbits.into(), "9..=16"));
        }
        if sb[90] != 0 {
            return Err(bad(90, "dirblkbits", sb[90].into(), "0"));
        }
        r.blkbits = blkbits.into();
        if le32(&sb, 8) & COMPAT_SB_CHKSUM != 0 {
            r.check_sum()?;
        }
        let incompat = le32(&sb, 80);
        if incompat & !INCOMPAT_KNOWN != 0 {
            let what = "an incompatible feature (such as 48-bit block addresses)";
            return Err(r.unsupported(sb_pos + 80, what));
        }
        r.root_nid = le16(&sb, 14).into();
        r.meta_start = u64::from(le32(&sb, 40)) << blkbits;
        r.xattr_start = u64::from(le32(&sb, 44)) << blkbits;
        r.device_mask = ((u32::from(le16(&sb, 86)) + 1).next_power_of_two() - 1) as u16;
        Ok(r)
    }

    /// Lists a directory: (name, is_dir) sorted by name, without `.` and `..`.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, bool)>, ReadError> {
        let ino = self.lookup(dir)?;
        expect_dir(&ino, dir)?;
        let mut out: Vec<(String, bool)> = self
            .entries(&ino, dir)?
            .into_iter()
            .filter(|e| e.name != b"." && e.name != b"..")
            .map(|e| {
                let name = String::from_utf8_lossy(&e.name).into_owned();
                (name, e.file_type == FT_DIR)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Reads a regular file of at most `max` bytes; a symlink is not followed.
    pub fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>, ReadError> {
        let ino = self.lookup(path)?;
        match ino.mode & S_IFMT {
            S_IFREG => {}
            S_IFLNK => return Err(ReadError::Symlink { path: path.into() }),
            _ => return Err(ReadError::NotAFile { path: path.into() }),
        }
        if ino.size > max {
            return Err(ReadError::TooBig {
                path: path.into(),
                size: ino.size,
                max,
            });
        }
        self.data(&ino, path)
    }

    /// The value of extended attribute `name` (such as `user.foo`) of `path`, if it has one.
    pub fn xattr(&self, path: &str, name: &str) -> Result<Option<Vec<u8>>, ReadError> {
        let ino = self.lookup(path)?;
        if ino.xattr_len == 0 {
            return Ok(None);
        }
        let at = ino.pos + ino.inode_len;
        let area = self.read(at, ino.xattr_len)?;
        let shared = u64::from(area[4]);
        let inline_at = XATTR_HEADER_LEN as u64 + 4 * shared;
        if inline_at > ino.xattr_len {
            let expected = "within the xattr area";
            return Err(self.corrupt(at + 4, "h_shared_count", shared, expected));
        }
        let mut pos = inline_at;
        while pos < ino.xattr_len {
            let (len, value) = self.xattr_entry(at + pos, &area[pos as usize..], name)?;
            if value.is_some() {
                return Ok(value);
            }
            pos += len;
        }
        for i in 0..shared as usize {
            let id = le32(&area, XATTR_HEADER_LEN + 4 * i);
            let value = self.shared_xattr(u64::from(id), name)?;
            if value.is_some() {
                return Ok(value);
            }
        }
        Ok(None)
    }

    /// The inode at the end of `path`, following no symlink.
    fn lookup(&self, path: &str) -> Result<Inode, ReadError> {
        let mut ino = self.inode(self.root_nid)?;
        let mut walked = String::new();
        for name in components(path).ok_or_else(|| ReadError::BadPath { path: path.into() })? {
            expect_dir(&ino, &walked)?;
            let entries = self.entries(&ino, &walked)?;
            push(&mut walked, name);
            let entry = entries
                .into_iter()
                .find(|e| e.name == name.as_bytes())
                .ok_or_else(|| ReadError::NotFound {
                    path: walked.clone(),
                })?;
            ino = self.inode(entry.nid)?;
        }
        Ok(ino)
    }

    fn inode(&self, nid: u64) -> Result<Inode, ReadError> {
        let pos = nid
            .checked_mul(INODE_SLOT)
            .and_then(|n| n.checked_add(self.meta_start))
            .ok_or_else(|| self.corrupt(self.meta_start, "nid", nid, "inside the image"))?;
        let mut b = self.read(pos, COMPACT_LEN as u64)?;
        let format = le16(&b, 0);
        if format & !FORMAT_BITS != 0 {
            return Err(self.corrupt(pos, "i_format", format.into(), "0..=15"));
        }
        let layout = format >> 1;
        if layout > LAYOUT_CHUNK_BASED {
            return Err(self.corrupt(pos, "data layout", layout.into(), "0..=4"));
        }
        let extended = format & 1 != 0;
        if extended {
            b = self.read(pos, EXTENDED_LEN as u64)?;
        }
        let icount = u64::from(le16(&b, 2));
        Ok(Inode {
            pos,
            mode: le16(&b, 4),
            layout,
            size: match extended {
                true => le64(&b, 8),
                false => le32(&b, 8).into(),
            },
            raw: le32(&b, 16),
            inode_len: b.len() as u64,
            xattr_len: match icount {
                0 => 0,
                n => XATTR_HEADER_LEN as u64 + 4 * (n - 1),
            },
        })
    }

    /// The whole data of an inode whose size the caller has checked.
    fn data(&self, ino: &Inode, path: &str) -> Result<Vec<u8>, ReadError> {
        if matches!(
            ino.layout,
            LAYOUT_COMPRESSED_FULL | LAYOUT_COMPRESSED_COMPACT
        ) {
            return Err(ReadError::Compressed { path: path.into() });
        }
        let blksz = self.blksz();
        let mut out = Vec::new();
        let mut index = 0;
        while (out.len() as u64) < ino.size {
            let len = (ino.size - out.len() as u64).min(blksz);
            match self.block(ino, index)? {
                Some(pos) => out.extend(self.read(pos, len)?),
                None => out.resize(out.len() + len as usize, 0),
            }
            index += 1;
        }
        Ok(out)
    }

    /// Filesystem position of data block `index` of an uncompressed inode; None for a hole.
    fn block(&self, ino: &Inode, index: u64) -> Result<Option<u64>, ReadError> {
        let plain = |first: u64| Some((first + index) << self.blkbits);
        Ok(match ino.layout {
            LAYOUT_FLAT_PLAIN => plain(ino.raw.into()),
            LAYOUT_FLAT_INLINE if index + 1 == ino.size.div_ceil(self.blksz()) => {
                Some(ino.body_end())
            }
            LAYOUT_FLAT_INLINE => plain(ino.raw.into()),
            _ => self.chunk(ino, index)?,
        })
    }

    /// Block `index` of a chunk-based inode, from its chunk index or block map.
    fn chunk(&self, ino: &Inode, index: u64) -> Result<Option<u64>, ReadError> {
        let format = ino.raw as u16;
        if u32::from(format) != ino.raw || format & !(CHUNK_BLKBITS | CHUNK_INDEXES) != 0 {
            let expected = "a chunk format";
            return Err(self.corrupt(ino.pos + 16, "i_u", ino.raw.into(), expected));
        }
        let bits = u32::from(format & CHUNK_BLKBITS);
        let unit = if format & CHUNK_INDEXES != 0 { 8 } else { 4 };
        let at = ino
            .body_end()
            .next_multiple_of(unit)
            .saturating_add((index >> bits).saturating_mul(unit));
        let entry = self.read(at, unit)?;
        let (device, blkaddr) = match unit {
            8 => (le16(&entry, 2), le32(&entry, 4)),
            _ => (0, le32(&entry, 0)),
        };
        if blkaddr == NULL_ADDR {
            return Ok(None);
        }
        if device & self.device_mask != 0 {
            return Err(self.unsupported(at, "a chunk on an extra device"));
        }
        let within = index & ((1 << bits) - 1);
        Ok(Some((u64::from(blkaddr) + within) << self.blkbits))
    }

    /// A directory's entries, `.` and `..` included, in on-disk order.
    fn entries(&self, ino: &Inode, path: &str) -> Result<Vec<Dirent>, ReadError> {
        if ino.size > DIR_MAX {
            return Err(ReadError::TooBig {
                path: path.into(),
                size: ino.size,
                max: DIR_MAX,
            });
        }
        let data = self.data(ino, path)?;
        let mut out = Vec::new();
        for (block, bytes) in data.chunks(self.blksz() as usize).enumerate() {
            dirents(bytes, &mut out).map_err(|reason| ReadError::Dirent {
                path: path.into(),
                block: block as u64,
                reason,
            })?;
        }
        Ok(out)
    }

    /// Reads the xattr entry at the start of `b` (at filesystem position `pos`): its encoded
    /// length, and its value if it is `name`.
    fn xattr_entry(
        &self,
        pos: u64,
        b: &[u8],
        name: &str,
    ) -> Result<(u64, Option<Vec<u8>>), ReadError> {
        let header = b
            .get(..4)
            .ok_or_else(|| self.corrupt(pos, "xattr entry", b.len() as u64, "at least 4 bytes"))?;
        let (name_len, index) = (usize::from(header[0]), header[1]);
        let end = 4 + name_len + usize::from(le16(header, 2));
        if index & XATTR_LONG_PREFIX != 0 {
            return Err(self.unsupported(pos + 1, "a long xattr name prefix"));
        }
        let entry = b.get(..end).ok_or_else(|| {
            self.corrupt(
                pos,
                "xattr entry length",
                end as u64,
                "within the xattr area",
            )
        })?;
        let (suffix, value) = entry[4..].split_at(name_len);
        let found = xattr_prefix(index)
            .and_then(|prefix| name.strip_prefix(prefix))
            .is_some_and(|rest| rest.as_bytes() == suffix);
        Ok((
            end.next_multiple_of(4) as u64,
            found.then(|| value.to_vec()),
        ))
    }

    /// The value of shared xattr `id` if it is `name`.
    fn shared_xattr(&self, id: u64, name: &str) -> Result<Option<Vec<u8>>, ReadError> {
        let pos = self.xattr_start.saturating_add(id * 4);
        let header = self.read(pos, 4)?;
        let len = 4 + u64::from(header[0]) + u64::from(le16(&header, 2));
        let entry = self.read(pos, len)?;
        Ok(self.xattr_entry(pos, &entry, name)?.1)
    }

    fn check_sum(&self) -> Result<(), ReadError> {
        let blksz = self.blksz();
        let sb_pos = SB_OFFSET as u64;
        let len = if blksz > sb_pos {
            blksz - sb_pos
        } else {
            blksz
        };
        let mut sb = self.read(sb_pos, len)?;
        let stored = le32(&sb, 4);
        sb[4..8].fill(0);
        let computed = crc32c(!0, &sb);
        match stored == computed {
            true => Ok(()),
            false => Err(ReadError::Checksum { stored, computed }),
        }
    }

    fn blksz(&self) -> u64 {
        1 << self.blkbits
    }

    /// `len` bytes at filesystem position `pos`.
    fn read(&self, pos: u64, len: u64) -> Result<Vec<u8>, ReadError> {
        let at = self.offset.saturating_add(pos);
        self.blob
            .read_vec_at(at, len)
            .map_err(|source| ReadError::Io {
                pos: at,
                len,
                source,
            })
    }

    fn corrupt(
        &self,
        pos: u64,
        field: &'static str,
        value: u64,
        expected: &'static str,
    ) -> ReadError {
        ReadError::Corrupt {
            pos: self.offset.saturating_add(pos),
            field,
            value,
            expected,
        }
    }

    fn unsupported(&self, pos: u64, what: &'static str) -> ReadError {
        ReadError::Unsupported {
            pos: self.offset.saturating_add(pos),
            what,
        }
    }
}

/// Parses one directory block (its used part) like the kernel: the first entry's name offset
/// gives the entry count; names run to the next entry's, the last to a NUL or the end.
fn dirents(block: &[u8], out: &mut Vec<Dirent>) -> Result<(), &'static str> {
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
            name: block[start..end].to_vec(),
            nid: le64(d, 0),
            file_type: d[10],
        });
    }
    Ok(())
}

/// The prefix an xattr name index stands for; None for indexes the kernel does not know.
/// Index 0 has none: our writer stores names outside the known prefixes whole.
fn xattr_prefix(index: u8) -> Option<&'static str> {
    Some(match index {
        0 => "",
        1 => "user.",
        2 => "system.posix_acl_access",
        3 => "system.posix_acl_default",
        4 => "trusted.",
        5 => "lustre.",
        6 => "security.",
        _ => return None,
    })
}

fn expect_dir(ino: &Inode, path: &str) -> Result<(), ReadError> {
    match ino.mode & S_IFMT {
        S_IFDIR => Ok(()),
        S_IFLNK => Err(ReadError::Symlink { path: path.into() }),
        _ => Err(ReadError::NotADirectory { path: path.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::erofs::{self, Options};
    use crate::tree::{Kind, ScanOptions, Tree};
    use std::fs::{self, File};
    use std::os::unix::fs::symlink;
    use std::path::Path;
    use std::process::Command;

    const RELEASE: &str = "usr/lib/extension-release.d/extension-release.foo";

    fn set_xattr(path: &Path, name: &str, value: &[u8]) {
        rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap();
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    /// A source tree with inline tails, whole blocks, multi-block directories, symlinks,
    /// a fifo, hard links and xattrs (one value shared by several files).
    fn populate(d: &Path) {
        fs::create_dir_all(d.join("usr/lib/extension-release.d")).unwrap();
        fs::create_dir_all(d.join("empty-dir")).unwrap();
        fs::create_dir_all(d.join("many")).unwrap();
        fs::write(d.join(RELEASE), b"ID=_any\nSYSEXT_SCOPE=initrd\n").unwrap();
        fs::write(d.join("usr/lib/empty"), b"").unwrap();
        fs::write(d.join("usr/lib/block"), pattern(8192)).unwrap();
        fs::write(d.join("usr/lib/tail"), pattern(10000)).unwrap();
        fs::write(d.join("usr/lib/big"), pattern(100_000)).unwrap();
        symlink("tail", d.join("usr/lib/link")).unwrap();
        fs::hard_link(d.join("usr/lib/tail"), d.join("hard")).unwrap();
        let fifo = rustix::fs::FileType::Fifo;
        rustix::fs::mknodat(rustix::fs::CWD, d.join("fifo"), fifo, 0o600.into(), 0).unwrap();
        for i in 0..300 {
            let name = format!("many/{i:03}-{}", "n".repeat(i % 60));
            fs::write(d.join(name), i.to_string()).unwrap();
        }
        set_xattr(&d.join(RELEASE), "user.extension-release.strict", b"0");
        for f in ["usr/lib/block", "usr/lib/big", "many/007-nnnnnnn"] {
            set_xattr(&d.join(f), "user.shared", b"same value");
        }
        set_xattr(&d.join("usr/lib/big"), "user.own", b"big");
        set_xattr(&d.join("usr"), "user.dir", b"");
    }

    fn source() -> (tempfile::TempDir, Tree) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        populate(&src);
        let tree = Tree::scan(&src, &ScanOptions::default()).unwrap();
        (tmp, tree)
    }

    /// Every directory lists like the tree, every file reads back, every xattr is found.
    fn assert_matches<B: Blob + ?Sized>(r: &Reader<B>, tree: &Tree) {
        for id in tree.walk() {
            let node = &tree.nodes[id];
            let path = tree.path(id).to_str().unwrap().to_owned();
            let read = r.read_file(&path, u64::MAX);
            match &node.kind {
                Kind::Dir { children } => {
                    let want: Vec<(String, bool)> = children
                        .iter()
                        .map(|&c| {
                            let name = String::from_utf8(tree.nodes[c].name.clone()).unwrap();
                            (name, matches!(tree.nodes[c].kind, Kind::Dir { .. }))
                        })
                        .collect();
                    assert_eq!(r.list(&path).unwrap(), want, "{path:?}");
                    assert!(matches!(read, Err(ReadError::NotAFile { .. })), "{path:?}");
                }
                Kind::File { content, .. } => {
                    assert!(read.unwrap() == content.read().unwrap(), "{path:?}");
                }
                Kind::Symlink(_) => assert!(matches!(read, Err(ReadError::Symlink { .. }))),
                _ => assert!(matches!(read, Err(ReadError::NotAFile { .. })), "{path:?}"),
            }
            for (name, value) in &node.meta.xattrs {
                let name = std::str::from_utf8(name).unwrap();
                let got = r.xattr(&path, name).unwrap();
                assert_eq!(got.as_ref(), Some(value), "{path:?} {name}");
            }
            assert_eq!(r.xattr(&path, "user.absent").unwrap(), None);
        }
    }

    fn opts() -> Options {
        Options {
            uuid: [1; 16],
            build_time: 1_700_000_000,
        }
    }

    #[test]
    fn reads_our_images_at_an_offset() {
        let (tmp, tree) = source();
        let image = tmp.path().join("image");
        let file = File::create(&image).unwrap();
        erofs::write(&tree, &file, 3 * 4096, &opts()).unwrap();
        let file = File::open(&image).unwrap();
        let r = Reader::open(&file, 3 * 4096).unwrap();
        assert_matches(&r, &tree);
        assert_eq!(
            r.list("/usr//lib/./extension-release.d/").unwrap(),
            [("extension-release.foo".to_owned(), false)]
        );
        assert_eq!(r.list("empty-dir").unwrap(), []);
        assert!(Reader::open(&file, 0).is_err());
    }

    fn have(tool: &str) -> bool {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn mkfs(src: &Path, image: &Path, args: &[&str]) {
        let out = Command::new("mkfs.erofs")
            .args(["--quiet", "-T0"])
            .args(args)
            .arg(image)
            .arg(src)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "mkfs.erofs {args:?}: {err}");
    }

    #[test]
    fn reads_mkfs_erofs_images() {
        if !have("mkfs.erofs") {
            eprintln!("skipping: mkfs.erofs not found");
            return;
        }
        let (tmp, tree) = source();
        let src = tmp.path().join("src");
        let variants: [&[&str]; 5] = [
            &[],
            &["-Eforce-inode-extended"],
            &["-Eforce-inode-compact", "--ignore-mtime"],
            &["--chunksize=4096"],
            &["--chunksize=65536"],
        ];
        for (i, args) in variants.into_iter().enumerate() {
            let image = tmp.path().join(format!("image{i}"));
            mkfs(&src, &image, args);
            let bytes = fs::read(&image).unwrap();
            let r = Reader::open(&bytes[..], 0).unwrap();
            assert_matches(&r, &tree);
        }
    }

    #[test]
    fn compressed_files_are_refused_but_directories_read() {
        if !have("mkfs.erofs") {
            eprintln!("skipping: mkfs.erofs not found");
            return;
        }
        let (tmp, tree) = source();
        let image = tmp.path().join("image");
        mkfs(&tmp.path().join("src"), &image, &["-zlz4hc"]);
        let bytes = fs::read(&image).unwrap();
        let r = Reader::open(&bytes[..], 0).unwrap();
        let lib = r.list("usr/lib").unwrap();
        assert_eq!(
            lib.len(),
            tree.children(tree.lookup("usr/lib").unwrap()).len()
        );
        assert!(matches!(
            r.read_file("usr/lib/big", u64::MAX),
            Err(ReadError::Compressed { .. })
        ));
        assert_eq!(
            r.xattr("usr/lib/big", "user.own").unwrap().as_deref(),
            Some(&b"big"[..])
        );
    }

    #[test]
    fn path_errors_are_typed() {
        let (tmp, tree) = source();
        let image = tmp.path().join("image");
        erofs::write(&tree, &File::create(&image).unwrap(), 0, &opts()).unwrap();
        let bytes = fs::read(&image).unwrap();
        let r = Reader::open(&bytes[..], 0).unwrap();
        let err = |res: Result<Vec<u8>, ReadError>| res.unwrap_err();
        assert!(matches!(
            err(r.read_file("usr/missing", 10)),
            ReadError::NotFound { path } if path == "usr/missing"
        ));
        assert!(matches!(
            err(r.read_file("usr/lib/tail/x", 10)),
            ReadError::NotADirectory { path } if path == "usr/lib/tail"
        ));
        assert!(matches!(
            err(r.read_file("usr/lib/link/x", 10)),
            ReadError::Symlink { path } if path == "usr/lib/link"
        ));
        assert!(matches!(
            err(r.read_file("usr/lib/tail", 9999)),
            ReadError::TooBig {
                size: 10000,
                max: 9999,
                ..
            }
        ));
        assert_eq!(r.read_file("usr/lib/tail", 10000).unwrap(), pattern(10000));
        assert!(matches!(
            err(r.read_file("usr/lib/link", 10)),
            ReadError::Symlink { .. }
        ));
        assert!(matches!(
            err(r.read_file("usr/../hard", 10)),
            ReadError::BadPath { .. }
        ));
        assert!(matches!(
            r.list("hard"),
            Err(ReadError::NotADirectory { .. })
        ));
        assert!(matches!(
            r.xattr("nowhere", "user.x"),
            Err(ReadError::NotFound { .. })
        ));
    }

    /// Rewrites the superblock checksum after a change.
    fn reseal(image: &mut [u8]) {
        image[1028..1032].fill(0);
        let crc = crc32c(!0, &image[1024..4096]);
        image[1028..1032].copy_from_slice(&crc.to_le_bytes());
    }

    fn small_image() -> Vec<u8> {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("usr/lib/extension-release.d")).unwrap();
        fs::write(src.join(RELEASE), b"ID=_any\n").unwrap();
        fs::write(src.join("usr/tail"), pattern(5000)).unwrap();
        symlink("tail", src.join("usr/link")).unwrap();
        set_xattr(&src.join(RELEASE), "user.extension-release.strict", b"0");
        let tree = Tree::scan(&src, &ScanOptions::default()).unwrap();
        let image = tmp.path().join("image");
        erofs::write(&tree, &File::create(&image).unwrap(), 0, &opts()).unwrap();
        fs::read(&image).unwrap()
    }

    #[test]
    fn bad_superblocks_are_refused() {
        let good = small_image();
        let open = |change: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            change(&mut b);
            Reader::open(&b[..], 0).err()
        };
        assert!(open(&|_| {}).is_none());
        assert!(matches!(
            open(&|b| b[1024] ^= 1),
            Some(ReadError::Corrupt {
                pos: 1024,
                field: "magic",
                ..
            })
        ));
        assert!(matches!(
            open(&|b| b[1100] ^= 1),
            Some(ReadError::Checksum { .. })
        ));
        let reseal_with = |at: usize, v: u8| {
            open(&move |b: &mut Vec<u8>| {
                b[at] = v;
                reseal(b);
            })
        };
        assert!(matches!(
            reseal_with(1036, 20),
            Some(ReadError::Corrupt {
                field: "blkszbits",
                value: 20,
                ..
            })
        ));
        assert!(matches!(
            reseal_with(1104, 0x80),
            Some(ReadError::Unsupported { pos: 1104, .. })
        ));
        assert!(matches!(
            open(&|b| b.truncate(1100)),
            Some(ReadError::Io { .. })
        ));
    }

    /// Tries every operation; only panics (and hangs) matter.
    fn exercise(image: &[u8]) {
        let Ok(r) = Reader::open(image, 0) else {
            return;
        };
        for dir in ["", "usr", "usr/lib/extension-release.d"] {
            let _ = r.list(dir);
        }
        for file in [RELEASE, "usr/tail", "usr/link"] {
            let _ = r.read_file(file, 1 << 20);
            let _ = r.xattr(file, "user.extension-release.strict");
        }
    }

    #[test]
    fn mutated_images_never_panic() {
        let good = small_image();
        let len = good.len();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..6000 {
            let mut b = good.clone();
            for _ in 0..1 + next() % 4 {
                // Half the changes hit the superblock or the first metadata block.
                let span = if next() % 2 == 0 { 8192 } else { len };
                let at = (next() % span as u64) as usize;
                b[at] = match next() % 3 {
                    0 => next() as u8,
                    1 => b[at] ^ (1 << (next() % 8)),
                    _ => [0, 0xff, 0x80, 0x7f][(next() % 4) as usize],
                };
            }
            if i % 4 != 0 {
                reseal(&mut b);
            }
            exercise(&b);
            b.truncate((next() % len as u64) as usize);
            exercise(&b);
        }
    }
}
