//! EROFS reader: looks up paths, lists directories and reads small regular files and extended
//! attributes of an image at a byte offset of a [`Blob`], without mounting it.
//!
//! It reads what our writer and mkfs.erofs make without compression: compact and extended
//! inodes; flat (plain or inline tail) and chunk-based data; inline and shared xattrs.
//! Compressed files are refused with [`ReadError::Compressed`]. The image is untrusted: every
//! field is checked before it is used, directories are capped at [`DIR_MAX`] bytes, and no
//! allocation is sized by the image beyond that and the caller's limit.

use std::io;

use super::layout::{
    checksum, checksum_len, decode_dir_block, decode_xattr_header, xattr_prefix, ChunkFormat,
    Dirent, Inode, Superblock, XattrEntry, COMPACT_LEN, COMPAT_SB_CHKSUM, FT_DIR, INODE_SLOT,
    LAYOUT_COMPRESSED_COMPACT, LAYOUT_COMPRESSED_FULL, LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN,
    NULL_ADDR, SB_LEN, SB_OFFSET, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, XATTR_HEADER_LEN,
};
use crate::format::blob::Blob;
use crate::format::bytes::le32;
use crate::format::lookup::{check_size, not_a_dir, not_a_file, walk, Filesystem, Kind, PathError};

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
    #[error(transparent)]
    Path(#[from] PathError),
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

/// A checked on-disk inode and its filesystem position.
struct Located {
    pos: u64,
    ino: Inode,
}

impl Located {
    /// Where the inline xattrs start.
    fn xattr_start(&self) -> u64 {
        self.pos + self.ino.disk_len() as u64
    }

    /// Where inline data or chunk indexes start.
    fn body_end(&self) -> u64 {
        self.xattr_start() + self.ino.xattr_len()
    }
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
        let sb = Superblock::decode(&r.read(sb_pos, SB_LEN as u64)?, r.at(sb_pos))?;
        r.blkbits = sb.blkszbits.into();
        if sb.feature_compat & COMPAT_SB_CHKSUM != 0 {
            r.check_sum(sb.checksum)?;
        }
        sb.check_features(r.at(sb_pos))?;
        r.root_nid = sb.root_nid.into();
        r.meta_start = u64::from(sb.meta_blkaddr) << r.blkbits;
        r.xattr_start = u64::from(sb.xattr_blkaddr) << r.blkbits;
        r.device_mask = ((u32::from(sb.extra_devices) + 1).next_power_of_two() - 1) as u16;
        Ok(r)
    }

    /// The inode at the end of `path`, following no symlink.
    fn lookup(&self, path: &str) -> Result<Located, ReadError> {
        walk(path, self.inode(self.root_nid)?, |dir, parent, name| {
            expect_dir(&dir, parent)?;
            let data = self.dir_data(&dir, parent)?;
            let entries = self.entries(&data, parent)?;
            match entries.into_iter().find(|e| e.name == name.as_bytes()) {
                Some(e) => Ok(Some(self.inode(e.nid)?)),
                None => Ok(None),
            }
        })
    }

    fn inode(&self, nid: u64) -> Result<Located, ReadError> {
        let pos = nid
            .checked_mul(INODE_SLOT)
            .and_then(|n| n.checked_add(self.meta_start))
            .ok_or_else(|| self.corrupt(self.meta_start, "nid", nid, "inside the image"))?;
        let mut b = self.read(pos, COMPACT_LEN as u64)?;
        let len = Inode::disk_len_of(&b, self.at(pos))?;
        if len > COMPACT_LEN {
            b = self.read(pos, len as u64)?;
        }
        let ino = Inode::decode(&b, self.at(pos))?;
        Ok(Located { pos, ino })
    }

    /// The whole data of an inode whose size the caller has checked.
    fn data(&self, ino: &Located, path: &str) -> Result<Vec<u8>, ReadError> {
        if matches!(
            ino.ino.layout,
            LAYOUT_COMPRESSED_FULL | LAYOUT_COMPRESSED_COMPACT
        ) {
            return Err(ReadError::Compressed { path: path.into() });
        }
        let size = ino.ino.size;
        let mut out = Vec::new();
        let mut index = 0;
        while (out.len() as u64) < size {
            let len = (size - out.len() as u64).min(self.blksz());
            match self.block(ino, index)? {
                Some(pos) => out.extend(self.read(pos, len)?),
                None => out.resize(out.len() + len as usize, 0),
            }
            index += 1;
        }
        Ok(out)
    }

    /// Filesystem position of data block `index` of an uncompressed inode; None for a hole.
    fn block(&self, ino: &Located, index: u64) -> Result<Option<u64>, ReadError> {
        let plain = |first: u32| Some((u64::from(first) + index) << self.blkbits);
        Ok(match ino.ino.layout {
            LAYOUT_FLAT_PLAIN => plain(ino.ino.i_u),
            LAYOUT_FLAT_INLINE if index + 1 == ino.ino.size.div_ceil(self.blksz()) => {
                Some(ino.body_end())
            }
            LAYOUT_FLAT_INLINE => plain(ino.ino.i_u),
            _ => self.chunk(ino, index)?,
        })
    }

    /// Block `index` of a chunk-based inode, from its chunk index or block map.
    fn chunk(&self, ino: &Located, index: u64) -> Result<Option<u64>, ReadError> {
        let format = ChunkFormat::decode(ino.ino.i_u, self.at(ino.pos))?;
        let unit = format.entry_len();
        let at = ino
            .body_end()
            .next_multiple_of(unit)
            .saturating_add((index >> format.blkbits).saturating_mul(unit));
        let (device, blkaddr) = format.decode_entry(&self.read(at, unit)?);
        if blkaddr == NULL_ADDR {
            return Ok(None);
        }
        if device & self.device_mask != 0 {
            return Err(self.unsupported(at, "a chunk on an extra device"));
        }
        let within = index & ((1 << format.blkbits) - 1);
        Ok(Some((u64::from(blkaddr) + within) << self.blkbits))
    }

    /// A directory's data, refused over [`DIR_MAX`] bytes.
    fn dir_data(&self, ino: &Located, path: &str) -> Result<Vec<u8>, ReadError> {
        check_size(ino.ino.size, DIR_MAX, path)?;
        self.data(ino, path)
    }

    /// The entries in directory data, `.` and `..` included, in on-disk order.
    fn entries<'d>(&self, data: &'d [u8], path: &str) -> Result<Vec<Dirent<'d>>, ReadError> {
        let mut out = Vec::new();
        for (block, bytes) in data.chunks(self.blksz() as usize).enumerate() {
            decode_dir_block(bytes, &mut out).map_err(|reason| ReadError::Dirent {
                path: path.into(),
                block: block as u64,
                reason,
            })?;
        }
        Ok(out)
    }

    /// The value of shared xattr `id` if it is `name`.
    fn shared_xattr(&self, id: u64, name: &str) -> Result<Option<Vec<u8>>, ReadError> {
        let pos = self.xattr_start.saturating_add(id * 4);
        let len = XattrEntry::len_of(&self.read(pos, 4)?);
        let bytes = self.read(pos, len)?;
        let (entry, _) = XattrEntry::decode(&bytes, self.at(pos))?;
        Ok(is_named(&entry, name).then(|| entry.value.to_vec()))
    }

    fn check_sum(&self, stored: u32) -> Result<(), ReadError> {
        let area = self.read(SB_OFFSET as u64, checksum_len(self.blksz()))?;
        let computed = checksum(&area);
        match stored == computed {
            true => Ok(()),
            false => Err(ReadError::Checksum { stored, computed }),
        }
    }

    fn blksz(&self) -> u64 {
        1 << self.blkbits
    }

    /// Image position of filesystem position `pos`.
    fn at(&self, pos: u64) -> u64 {
        self.offset.saturating_add(pos)
    }

    /// `len` bytes at filesystem position `pos`.
    fn read(&self, pos: u64, len: u64) -> Result<Vec<u8>, ReadError> {
        let at = self.at(pos);
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
            pos: self.at(pos),
            field,
            value,
            expected,
        }
    }

    fn unsupported(&self, pos: u64, what: &'static str) -> ReadError {
        ReadError::Unsupported {
            pos: self.at(pos),
            what,
        }
    }
}

impl<'a, B: Blob + ?Sized> Filesystem for Reader<'a, B> {
    type Error = ReadError;

    /// Lists a directory: (name, is_dir) sorted by name, without `.` and `..`.
    fn list(&self, dir: &str) -> Result<Vec<(String, bool)>, ReadError> {
        let ino = self.lookup(dir)?;
        expect_dir(&ino, dir)?;
        let data = self.dir_data(&ino, dir)?;
        let mut out: Vec<(String, bool)> = self
            .entries(&data, dir)?
            .into_iter()
            .filter(|e| e.name != b"." && e.name != b"..")
            .map(|e| {
                let name = String::from_utf8_lossy(e.name).into_owned();
                (name, e.file_type == FT_DIR)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Reads a regular file of at most `max` bytes; a symlink is not followed.
    fn read_file(&self, path: &str, max: u64) -> Result<Vec<u8>, ReadError> {
        let ino = self.lookup(path)?;
        match kind(&ino) {
            Kind::File => check_size(ino.ino.size, max, path)?,
            other => return Err(not_a_file(other, path).into()),
        }
        self.data(&ino, path)
    }

    /// The value of extended attribute `name` (such as `user.foo`) of `path`, if it has one.
    fn xattr(&self, path: &str, name: &str) -> Result<Option<Vec<u8>>, ReadError> {
        let ino = self.lookup(path)?;
        let len = ino.ino.xattr_len();
        if len == 0 {
            return Ok(None);
        }
        let at = ino.xattr_start();
        let area = self.read(at, len)?;
        let shared = u64::from(decode_xattr_header(&area));
        let inline_at = XATTR_HEADER_LEN as u64 + 4 * shared;
        if inline_at > len {
            let expected = "within the xattr area";
            return Err(self.corrupt(at + 4, "h_shared_count", shared, expected));
        }
        let mut pos = inline_at;
        while pos < len {
            let (entry, entry_len) = XattrEntry::decode(&area[pos as usize..], self.at(at + pos))?;
            if is_named(&entry, name) {
                return Ok(Some(entry.value.to_vec()));
            }
            pos += entry_len;
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

    fn path_error(e: &ReadError) -> Option<&PathError> {
        match e {
            ReadError::Path(p) => Some(p),
            _ => None,
        }
    }
}

/// True if `entry` is the xattr `name` (such as `user.foo`).
fn is_named(entry: &XattrEntry, name: &str) -> bool {
    xattr_prefix(entry.name_index)
        .and_then(|prefix| name.strip_prefix(prefix))
        .is_some_and(|rest| rest.as_bytes() == entry.name)
}

/// A walk goes on only through directories.
fn expect_dir(ino: &Located, path: &str) -> Result<(), PathError> {
    match kind(ino) {
        Kind::Dir => Ok(()),
        other => Err(not_a_dir(other, path)),
    }
}

fn kind(ino: &Located) -> Kind {
    match ino.ino.mode & S_IFMT {
        S_IFDIR => Kind::Dir,
        S_IFREG => Kind::File,
        S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::erofs::layout::crc32c;
    use crate::format::erofs::test_util::{pattern, source, RELEASE};
    use crate::format::erofs::{write, Options};
    use crate::format::test_fs::{self, set_xattr};
    use crate::tree::{ScanOptions, Tree};
    use std::fs::{self, File};
    use std::os::unix::fs::symlink;

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
        write(&tree, &file, 3 * 4096, &opts()).unwrap();
        let file = File::open(&image).unwrap();
        let r = Reader::open(&file, 3 * 4096).unwrap();
        test_fs::assert_matches(&r, &tree, "ours", |_| false);
        assert_eq!(
            r.list("/usr//lib/./extension-release.d/").unwrap(),
            [("extension-release.foo".to_owned(), false)]
        );
        assert_eq!(r.list("empty-dir").unwrap(), []);
        assert!(Reader::open(&file, 0).is_err());
    }

    #[test]
    fn path_errors_are_typed() {
        let (tmp, tree) = source();
        let image = tmp.path().join("image");
        write(&tree, &File::create(&image).unwrap(), 0, &opts()).unwrap();
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
        assert!(matches!(
            err(r.read_file("usr/lib/tail", 9999)),
            ReadError::Path(PathError::TooBig {
                size: 10000,
                max: 9999,
                ..
            })
        ));
        assert_eq!(r.read_file("usr/lib/tail", 10000).unwrap(), pattern(10000));
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

    /// Rewrites the superblock checksum after a change.
    fn reseal(image: &mut [u8]) {
        image[1028..1032].fill(0);
        let crc = crc32c(&image[1024..4096]);
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
        write(&tree, &File::create(&image).unwrap(), 0, &opts()).unwrap();
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
