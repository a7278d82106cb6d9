//! EROFS image writer (uncompressed, inline tails): encodes inodes, xattrs and the superblock,
//! and drives the plan ([`plan`]) and the streaming output ([`stream`]).
//!
//! Layout: block 0 holds the superblock; the metadata area starts at block 1 and holds every
//! inode record: the inode, its inline xattrs and, when they fit in one block together, the
//! tail of its data (`FLAT_INLINE`). Records are packed first-fit into a sliding window of
//! metadata blocks. The data area follows with the whole blocks of every inode in
//! [`Tree::walk`] order. Everything is planned first, then written in one pass that opens and
//! reads each file once, streaming its blocks out in order.

mod dir;
mod plan;
mod stream;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::layout::{
    self, encode_xattr_header, xattr_icount, Inode, Superblock, XattrEntry, COMPAT_SB_CHKSUM,
    LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN, SB_OFFSET, XATTR_HEADER_LEN, XATTR_PREFIXES,
};
use crate::tree::{Kind, Node, Tree, TreeError};
use plan::{plan, settled_below, Plan, Slot};
use stream::{MetaWindow, Sink, Source};

const BLOCK: u64 = 4096;
const BLOCK_BITS: u8 = 12;
/// The metadata area (inodes) starts at block 1; nids count 32-byte slots from there.
const META_BLKADDR: u64 = 1;
const META_START: u64 = META_BLKADDR * BLOCK;
/// The xattr name index the kernel has no handler for: such names are stored whole.
const XATTR_INDEX_LUSTRE: u8 = 5;

/// Image-wide settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub uuid: [u8; 16],
    /// `SOURCE_DATE_EPOCH` (or 0): the superblock time, and the mtime of compact inodes.
    pub build_time: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Open(#[from] TreeError),
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: size changed while reading (expected {expected} bytes)")]
    SizeChanged { path: PathBuf, expected: u64 },
    #[error("{path}: {what} too long for EROFS")]
    TooLong { path: PathBuf, what: &'static str },
    #[error("image too large for EROFS ({blocks} blocks of 4096 bytes)")]
    ImageTooLarge { blocks: u64 },
    #[error("writing EROFS image: {0}")]
    Write(#[source] io::Error),
}

/// Writes the filesystem at byte `offset` of `out` with positional writes; returns its length
/// in bytes, a multiple of 4096.
pub fn write(tree: &Tree, out: &File, offset: u64, opts: &Options) -> Result<u64, Error> {
    let plan = plan(tree, opts)?;
    let settled = settled_below(&plan.slots, plan.meta_end);
    let mut meta = MetaWindow::new(out, offset);
    let mut data = Sink::new(out, offset + plan.meta_end);
    for (i, &low) in settled.iter().enumerate() {
        write_inode(tree, &plan, i, &mut meta, &mut data)?;
        meta.settle(low)?;
    }
    meta.finish(plan.meta_end)?;
    data.flush()?;
    out.write_all_at(&superblock(&plan, opts), offset)
        .map_err(Error::Write)?;
    Ok(plan.blocks * BLOCK)
}

/// Writes inode `i` of the plan: its record to the metadata area, its blocks to the data area.
fn write_inode(
    tree: &Tree,
    plan: &Plan,
    i: usize,
    meta: &mut MetaWindow,
    data: &mut Sink,
) -> Result<(), Error> {
    let slot = &plan.slots[i];
    let inode = inode(&tree.nodes[slot.node], slot, i as u32 + 1).encode();
    let record = meta.slice(slot.pos, slot.ibody_len() + slot.tail_len());
    let (head, tail) = record.split_at_mut(slot.ibody_len() as usize);
    head[..inode.len()].copy_from_slice(&inode);
    head[inode.len()..].copy_from_slice(&slot.xattrs);
    let mut src = Source::new(tree, slot, &plan.nids)?;
    src.copy_to(data, slot.size - slot.tail_len())?;
    data.pad_to(data.pos().next_multiple_of(BLOCK))?;
    src.read_exact(tail)?;
    src.expect_eof()
}

/// The compact or extended on-disk inode of a planned slot.
fn inode(node: &Node, slot: &Slot, ino: u32) -> Inode {
    let layout = match slot.inline {
        true => LAYOUT_FLAT_INLINE,
        false => LAYOUT_FLAT_PLAIN,
    };
    let i_u = match node.kind {
        Kind::CharDev(rdev) | Kind::BlockDev(rdev) => {
            layout::encode_dev(rustix::fs::major(rdev), rustix::fs::minor(rdev))
        }
        _ => slot.blkaddr as u32,
    };
    let m = &node.meta;
    Inode {
        extended: slot.extended,
        layout,
        xattr_icount: xattr_icount(slot.xattrs.len()),
        mode: node.mode() as u16,
        nlink: slot.nlink,
        size: slot.size,
        // A compact inode's mtime is the build time: 0 seconds after it.
        mtime: if slot.extended { m.mtime } else { 0 },
        mtime_nsec: m.mtime_nsec,
        i_u,
        ino,
        uid: m.uid,
        gid: m.gid,
    }
}

/// Name index and the rest of the name, for the prefixes the kernel knows.
fn xattr_index(name: &[u8]) -> (u8, &[u8]) {
    XATTR_PREFIXES
        .iter()
        .filter(|&&(index, _)| index != XATTR_INDEX_LUSTRE)
        .find_map(|&(index, prefix)| {
            let rest = name.strip_prefix(prefix.as_bytes())?;
            // The ACL indexes stand for whole names.
            (prefix.ends_with('.') || rest.is_empty()).then_some((index, rest))
        })
        .unwrap_or((0, name))
}

/// Inline xattr area: header, then 4-byte aligned entries. `None` if a field overflows.
fn encode_xattrs(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Option<Vec<u8>> {
    if xattrs.is_empty() {
        return Some(Vec::new());
    }
    let mut b = encode_xattr_header(0).to_vec();
    for (name, value) in xattrs {
        let (name_index, name) = xattr_index(name);
        XattrEntry {
            name_index,
            name,
            value,
        }
        .encode(&mut b)?;
    }
    let fits = (b.len() - XATTR_HEADER_LEN) / 4 < usize::from(u16::MAX);
    fits.then_some(b)
}

/// The superblock's block (block 0), with its checksum.
fn superblock(plan: &Plan, opts: &Options) -> Vec<u8> {
    let sb = Superblock {
        checksum: 0,
        feature_compat: COMPAT_SB_CHKSUM,
        blkszbits: BLOCK_BITS,
        // The root is the first inode of the metadata area.
        root_nid: plan.nids[0] as u16,
        inos: plan.slots.len() as u64,
        build_time: opts.build_time,
        build_time_nsec: 0,
        blocks: plan.blocks as u32,
        meta_blkaddr: META_BLKADDR as u32,
        // No shared xattrs.
        xattr_blkaddr: 0,
        uuid: opts.uuid,
        feature_incompat: 0,
        extra_devices: 0,
        dirblkbits: 0,
    };
    let mut b = vec![0; SB_OFFSET];
    b.extend(sb.encode());
    b.resize(BLOCK as usize, 0);
    let crc = layout::checksum(&b[SB_OFFSET..]);
    b[SB_OFFSET + 4..SB_OFFSET + 8].copy_from_slice(&crc.to_le_bytes());
    b
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::format::bytes::{le16, le32, le64};
    use crate::tree::{Content, Meta, NodeId};
    use std::fs;
    use std::path::Path;

    const EPOCH: i64 = 1_700_000_000;

    pub(super) fn opts() -> Options {
        Options {
            uuid: [7; 16],
            build_time: EPOCH,
        }
    }

    pub(super) fn meta() -> Meta {
        Meta::generated(0o644, EPOCH)
    }

    pub(super) fn file(bytes: &[u8]) -> Kind {
        Kind::File {
            content: Content::Bytes(bytes.to_vec()),
            size: bytes.len() as u64,
        }
    }

    pub(super) fn slot(tree: &Tree, id: NodeId, nlink: u32) -> Slot {
        Slot::new(tree, id, nlink, &opts()).unwrap()
    }

    #[test]
    fn compact_inode_layout() {
        let mut t = Tree::new(meta());
        let m = Meta {
            uid: 1000,
            gid: 100,
            ..Meta::generated(0o4755, EPOCH)
        };
        let id = t.insert("f", m, file(&[1; 10000]), &meta()).unwrap();
        let mut s = slot(&t, id, 1);
        assert!(!s.extended);
        (s.inline, s.blkaddr) = (true, 5);
        let b = inode(&t.nodes[id], &s, 9).encode();
        assert_eq!(b.len(), 32);
        assert_eq!(le16(&b, 0), LAYOUT_FLAT_INLINE << 1);
        assert_eq!(le16(&b, 2), 0);
        assert_eq!(le16(&b, 4), 0o104755);
        assert_eq!(le16(&b, 6), 1);
        assert_eq!(le32(&b, 8), 10000);
        assert_eq!(le32(&b, 12), 0);
        assert_eq!(le32(&b, 16), 5);
        assert_eq!(le32(&b, 20), 9);
        assert_eq!((le16(&b, 24), le16(&b, 26)), (1000, 100));
        assert_eq!(le32(&b, 28), 0);
    }

    #[test]
    fn extended_inode_layout() {
        let mut t = Tree::new(meta());
        let m = Meta {
            uid: 70000,
            gid: 5,
            mtime: EPOCH - 3,
            mtime_nsec: 123,
            ..Meta::generated(0o644, EPOCH)
        };
        let id = t.insert(
            "c",
            m,
            Kind::CharDev(rustix::fs::makedev(4, 0x12345)),
            &meta(),
        );
        let id = id.unwrap();
        let s = slot(&t, id, 70001);
        assert!(s.extended);
        let b = inode(&t.nodes[id], &s, 3).encode();
        assert_eq!(b.len(), 64);
        assert_eq!(le16(&b, 0), 1);
        assert_eq!(le16(&b, 4), 0o020644);
        assert_eq!(le64(&b, 8), 0);
        assert_eq!(le32(&b, 16), 0x45 | 4 << 8 | 0x12300 << 12);
        assert_eq!(le32(&b, 20), 3);
        assert_eq!((le32(&b, 24), le32(&b, 28)), (70000, 5));
        assert_eq!(le64(&b, 32) as i64, EPOCH - 3);
        assert_eq!(le32(&b, 40), 123);
        assert_eq!(le32(&b, 44), 70001);
        assert!(b[48..].iter().all(|&x| x == 0));
    }

    #[test]
    fn xattr_encoding() {
        let xattrs = vec![
            (b"trusted.x".to_vec(), b"y".to_vec()),
            (b"user.test".to_vec(), b"hello".to_vec()),
        ];
        let b = encode_xattrs(&xattrs).unwrap();
        let mut want = vec![0; 12];
        want.extend(b"\x01\x04\x01\x00xy\0\0");
        want.extend(b"\x04\x01\x05\x00testhello\0\0\0");
        assert_eq!(b, want);
        assert_eq!(xattr_icount(b.len()), 7);
        assert_eq!(xattr_icount(0), 0);
        assert_eq!(encode_xattrs(&[]), Some(Vec::new()));
        assert_eq!(xattr_index(b"security.selinux"), (6, &b"selinux"[..]));
        assert_eq!(xattr_index(b"system.posix_acl_access"), (2, &b""[..]));
        assert_eq!(xattr_index(b"system.posix_acl_default"), (3, &b""[..]));
        assert_eq!(xattr_index(b"system.other"), (0, &b"system.other"[..]));
        let huge = vec![(b"user.v".to_vec(), vec![0; 65536])];
        assert_eq!(encode_xattrs(&huge), None);
    }

    /// Reads directory data back the way the kernel does.

    #[test]
    fn probe_detects_superblock() {
        let t = Tree::new(meta());
        let plan = plan(&t, &opts()).unwrap();
        let sb = superblock(&plan, &opts());
        assert!(layout::probe(&sb));
        assert!(!layout::probe(&[0; 4096]));
        assert!(!layout::probe(&sb[..1027]));
        assert_eq!(le32(&sb, 1024 + 36), 2);
        let mut zeroed = sb[1024..].to_vec();
        zeroed[4..8].fill(0);
        assert_eq!(le32(&sb, 1028), layout::crc32c(&zeroed));
    }

    fn sample_tree() -> Tree {
        let mut t = Tree::new(meta());
        t.insert("usr/lib/a", meta(), file(&[3; 9000]), &meta())
            .unwrap();
        t.insert("usr/lib/b", meta(), file(b"bee"), &meta())
            .unwrap();
        t.insert(
            "usr/bin/l",
            meta(),
            Kind::Symlink(b"../lib/a".into()),
            &meta(),
        )
        .unwrap();
        t
    }

    #[test]
    fn deterministic_and_offset_independent() {
        let dir = tempfile::tempdir().unwrap();
        let t = sample_tree();
        let image = |path: &Path, offset: u64| {
            let out = File::create(path).unwrap();
            let len = write(&t, &out, offset, &opts()).unwrap();
            let bytes = fs::read(path).unwrap();
            assert_eq!(bytes.len() as u64, offset + len);
            assert_eq!(len % BLOCK, 0);
            bytes[offset as usize..].to_vec()
        };
        let a = image(&dir.path().join("a"), 0);
        let b = image(&dir.path().join("b"), 3 * BLOCK);
        assert_eq!(a, b);
        assert!(layout::probe(&a));
        // Superblock, metadata block, one data block for the 9000-byte file's two full blocks.
        assert_eq!(a.len() as u64, 4 * BLOCK);
    }

    #[test]
    fn bad_input_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let out = File::create(dir.path().join("img")).unwrap();
        let mut t = Tree::new(meta());
        let short = Kind::File {
            content: Content::Bytes(b"abc".to_vec()),
            size: 5,
        };
        t.insert("d/short", meta(), short, &meta()).unwrap();
        let err = write(&t, &out, 0, &opts()).unwrap_err();
        assert!(
            matches!(&err, Error::SizeChanged { path, expected: 5 } if path == Path::new("d/short"))
        );
        let long = Kind::File {
            content: Content::Bytes(b"abcdef".to_vec()),
            size: 5,
        };
        t.insert("d/short", meta(), long, &meta()).unwrap();
        assert!(matches!(
            write(&t, &out, 0, &opts()),
            Err(Error::SizeChanged { .. })
        ));
        let missing = dir.path().join("missing");
        let gone = Kind::File {
            content: Content::Path(missing.clone()),
            size: 1,
        };
        t.insert("d/short", meta(), gone, &meta()).unwrap();
        let err = write(&t, &out, 0, &opts()).unwrap_err().to_string();
        assert!(err.contains(&*missing.to_string_lossy()), "{err}");
        t.insert(&"x".repeat(256), meta(), file(b""), &meta())
            .unwrap();
        assert!(matches!(
            write(&t, &out, 0, &opts()),
            Err(Error::TooLong { .. })
        ));
    }
}
