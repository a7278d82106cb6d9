//! The metadata after the data area: inodes written bottom-up into the inode table with
//! their directories' listings in the directory table, the id and xattr tables they index,
//! and the fragment table; then the superblock that locates them all.

use std::collections::HashMap;

use super::data::Data;
use super::encode::{
    encode_inode, encode_run, runs, Body, Common, DirEntry, DirIndex, Listing, Written,
};
use super::meta::{append_table, MetaWriter};
use super::{Error, BLOCK_LOG, BLOCK_SIZE};
use crate::format::squashfs::layout::{
    meta_ref, FragmentEntry, Superblock, XattrEntry, XattrId, XattrTable, XattrValue, BLOCK_DEV,
    CHAR_DEV, COMPRESSION_ZSTD, DIR_SIZE_BIAS, FIFO, FLAG_ALWAYS_FRAGMENTS, MAGIC, METADATA_SIZE,
    NAME_MAX, NO_TABLE, NO_XATTR, SOCKET, XATTR_PREFIXES,
};
use crate::tree::{Kind, NodeId, Tree};

/// The id table: every uid and gid once, in order of first use.
#[derive(Default)]
struct Ids {
    list: Vec<u32>,
    index: HashMap<u32, u16>,
}

impl Ids {
    fn index(&mut self, id: u32) -> Result<u16, Error> {
        if let Some(&index) = self.index.get(&id) {
            return Ok(index);
        }
        let index = u16::try_from(self.list.len())
            .ok()
            .filter(|&i| i < u16::MAX)
            .ok_or(Error::Limit("more than 65535 distinct uids and gids"))?;
        self.list.push(id);
        self.index.insert(id, index);
        Ok(index)
    }
}

/// A node's extended attributes: full names and values, sorted by name.
type XattrSet = [(Vec<u8>, Vec<u8>)];

/// The xattr table: every distinct attribute set once, and the lookup entries inodes index.
struct Xattrs<'a> {
    kv: MetaWriter,
    entries: Vec<u8>,
    sets: HashMap<&'a XattrSet, u32>,
}

impl<'a> Xattrs<'a> {
    fn index(&mut self, tree: &Tree, id: NodeId, set: &'a XattrSet) -> Result<u32, Error> {
        if set.is_empty() {
            return Ok(NO_XATTR);
        }
        if let Some(&index) = self.sets.get(set) {
            return Ok(index);
        }
        let mut kv = Vec::new();
        for (name, value) in set {
            encode_xattr(name, value, &mut kv).map_err(|reason| Error::Xattr {
                path: tree.path(id),
                name: String::from_utf8_lossy(name).into_owned(),
                reason,
            })?;
        }
        let (block, offset) = self.kv.pos();
        self.kv.push(&kv)?;
        let index = self.sets.len() as u32;
        let entry = XattrId {
            reference: meta_ref(block, offset),
            count: set.len() as u32,
            size: kv.len() as u32,
        };
        self.entries.extend_from_slice(&entry.to_bytes());
        self.sets.insert(set, index);
        Ok(index)
    }
}

/// Appends one key/value pair, the value stored inline.
fn encode_xattr(name: &[u8], value: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    let (kind, suffix) = XATTR_PREFIXES
        .iter()
        .find_map(|&(prefix, kind)| name.strip_prefix(prefix).map(|s| (kind, s)))
        .ok_or("squashfs stores only the user., trusted. and security. namespaces")?;
    let name_size = u16::try_from(suffix.len()).map_err(|_| "name too long")?;
    let size = u32::try_from(value.len()).map_err(|_| "value too large")?;
    out.extend_from_slice(&XattrEntry { kind, name_size }.to_bytes());
    out.extend_from_slice(suffix);
    out.extend_from_slice(&XattrValue { size }.to_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// The order inodes are written in: each directory after all of its entries, every inode
/// once. Also every node's inode number: 1-based in that order, hard links sharing theirs.
fn inode_order(tree: &Tree) -> (Vec<NodeId>, Vec<u32>) {
    let is_dir = |id: NodeId| matches!(tree.nodes[id].kind, Kind::Dir { .. });
    // Pre-order visiting children last to first; reversed, it is post-order first to last.
    let mut dirs = Vec::new();
    let mut stack = vec![0];
    while let Some(dir) = stack.pop() {
        dirs.push(dir);
        stack.extend(tree.children(dir).iter().filter(|&&c| is_dir(c)));
    }
    let mut order = Vec::with_capacity(tree.nodes.len());
    let mut numbers = vec![0; tree.nodes.len()];
    for &dir in dirs.iter().rev() {
        for &child in tree.children(dir).iter().filter(|&&c| !is_dir(c)) {
            let anchor = tree.nodes[child].hardlink_of.unwrap_or(child);
            if numbers[anchor] == 0 {
                order.push(anchor);
                numbers[anchor] = order.len() as u32;
            }
            numbers[child] = numbers[anchor];
        }
        order.push(dir);
        numbers[dir] = order.len() as u32;
    }
    (order, numbers)
}

/// Link count of every inode, by the node holding it.
fn link_counts(tree: &Tree) -> Vec<u32> {
    let mut links = vec![0; tree.nodes.len()];
    for (id, node) in tree.nodes.iter().enumerate() {
        match node.kind {
            Kind::Dir { .. } => links[id] = tree.nlink(id),
            _ => links[node.hardlink_of.unwrap_or(id)] += 1,
        }
    }
    links
}

/// The inode and directory tables with what the other tables need.
pub(super) struct Metadata<'a> {
    inodes: Vec<u8>,
    dirs: Vec<u8>,
    root: Written,
    count: u32,
    ids: Vec<u32>,
    xattrs: Xattrs<'a>,
}

/// Builds the inode and directory tables.
pub(super) struct Inodes<'a> {
    tree: &'a Tree,
    data: &'a Data,
    count: u32,
    numbers: Vec<u32>,
    links: Vec<u32>,
    written: Vec<Option<Written>>,
    inodes: MetaWriter,
    dirs: MetaWriter,
    ids: Ids,
    xattrs: Xattrs<'a>,
}

impl<'a> Inodes<'a> {
    pub(super) fn write_all(
        tree: &'a Tree,
        data: &'a Data,
        level: i32,
    ) -> Result<Metadata<'a>, Error> {
        let (order, numbers) = inode_order(tree);
        let count = u32::try_from(order.len()).map_err(|_| Error::Limit("over 2^32 inodes"))?;
        let mut w = Inodes {
            tree,
            data,
            count,
            numbers,
            links: link_counts(tree),
            written: vec![None; tree.nodes.len()],
            inodes: MetaWriter::new(level)?,
            dirs: MetaWriter::new(level)?,
            ids: Ids::default(),
            xattrs: Xattrs {
                kv: MetaWriter::new(level)?,
                entries: Vec::new(),
                sets: HashMap::new(),
            },
        };
        for id in order {
            w.write_inode(id)?;
        }
        Ok(Metadata {
            root: w.written[0].ok_or(Error::Internal("root inode not written"))?,
            inodes: w.inodes.finish()?.0,
            dirs: w.dirs.finish()?.0,
            count,
            ids: w.ids.list,
            xattrs: w.xattrs,
        })
    }

    /// The fields every inode has; mtimes outside 1970..2106 are clamped.
    fn common(&mut self, id: NodeId) -> Result<Common, Error> {
        let meta = &self.tree.nodes[id].meta;
        Ok(Common {
            perm: (meta.perm & 0o7777) as u16,
            uid: self.ids.index(meta.uid)?,
            gid: self.ids.index(meta.gid)?,
            mtime: meta.mtime.clamp(0, u32::MAX.into()) as u32,
            number: self.numbers[id],
            nlink: self.links[id],
            xattr: self.xattrs.index(self.tree, id, &meta.xattrs)?,
        })
    }

    fn write_inode(&mut self, id: NodeId) -> Result<(), Error> {
        let (tree, data) = (self.tree, self.data);
        let node = &tree.nodes[id];
        let common = self.common(id)?;
        let listing;
        let body = match &node.kind {
            Kind::Dir { children } => {
                listing = self.write_listing(id, children)?;
                Body::Dir {
                    listing: &listing,
                    parent: self.parent_number(id),
                }
            }
            Kind::File { size, .. } => Body::File {
                data: data
                    .files
                    .get(&id)
                    .ok_or(Error::Internal("file data missing"))?,
                size: *size,
            },
            Kind::Symlink(target) => Body::Symlink(target),
            Kind::CharDev(rdev) => Body::Dev {
                kind: CHAR_DEV,
                rdev: encode_rdev(tree, id, *rdev)?,
            },
            Kind::BlockDev(rdev) => Body::Dev {
                kind: BLOCK_DEV,
                rdev: encode_rdev(tree, id, *rdev)?,
            },
            Kind::Fifo => Body::Ipc { kind: FIFO },
            Kind::Socket => Body::Ipc { kind: SOCKET },
        };
        let mut bytes = Vec::new();
        let kind = encode_inode(&common, &body, &mut bytes);
        let (block, offset) = self.inodes.pos();
        self.inodes.push(&bytes)?;
        self.written[id] = Some(Written {
            block,
            offset,
            number: common.number,
            kind,
        });
        Ok(())
    }

    /// The root's parent is one past the last inode, as mksquashfs does (never 0, which
    /// readdir callers may take for a deleted entry).
    fn parent_number(&self, dir: NodeId) -> u32 {
        match dir {
            0 => self.count.saturating_add(1),
            _ => self.numbers[self.tree.nodes[dir].parent],
        }
    }

    fn write_listing(&mut self, dir: NodeId, children: &[NodeId]) -> Result<Listing<'a>, Error> {
        let mut entries = children
            .iter()
            .map(|&c| self.entry(c))
            .collect::<Result<Vec<_>, _>>()?;
        // Lookups stop early and use the index, both assuming byte order (a no-op for trees
        // built by `Tree`).
        entries.sort_by_key(|e| e.name);
        let (block, offset) = self.dirs.pos();
        let begin = self.dirs.stream_pos();
        let mut index = Vec::new();
        let mut indexed_block = begin / METADATA_SIZE;
        let mut bytes = Vec::new();
        for run in runs(&entries, begin % METADATA_SIZE) {
            let here = self.dirs.stream_pos();
            if here / METADATA_SIZE != indexed_block {
                indexed_block = here / METADATA_SIZE;
                index.push(DirIndex {
                    index: (here - begin) as u32,
                    block: self.dirs.pos().0,
                    name: entries[run.start].name,
                });
            }
            bytes.clear();
            encode_run(&entries[run], &mut bytes);
            self.dirs.push(&bytes)?;
        }
        let size = u32::try_from(self.dirs.stream_pos() - begin + DIR_SIZE_BIAS)
            .ok()
            .filter(|_| index.len() <= u16::MAX.into())
            .ok_or_else(|| Error::Unsupported {
                path: self.tree.path(dir),
                what: "directory listing over 4 GiB",
            })?;
        Ok(Listing {
            block,
            offset,
            size,
            index,
        })
    }

    fn entry(&self, child: NodeId) -> Result<DirEntry<'a>, Error> {
        let node = &self.tree.nodes[child];
        if node.name.is_empty() || node.name.len() > NAME_MAX {
            return Err(Error::Unsupported {
                path: self.tree.path(child),
                what: "file name empty or longer than 256 bytes",
            });
        }
        let anchor = node.hardlink_of.unwrap_or(child);
        let inode = self.written[anchor].ok_or(Error::Internal("entry before its inode"))?;
        Ok(DirEntry {
            name: &node.name,
            inode,
        })
    }
}

/// A device number in the kernel's 32-bit encoding, which is the low half of glibc's `dev_t`
/// for every major below 2^12 and minor below 2^20 (all that Linux can make).
fn encode_rdev(tree: &Tree, id: NodeId, rdev: u64) -> Result<u32, Error> {
    u32::try_from(rdev).map_err(|_| Error::Unsupported {
        path: tree.path(id),
        what: "device number beyond major 4095 or minor 1048575",
    })
}

/// Everything after the data area (inode, directory, fragment, id and xattr tables), and
/// the superblock that locates it.
pub(super) fn tables(
    meta: Metadata,
    data: &Data,
    level: i32,
) -> Result<(Vec<u8>, Superblock), Error> {
    let base = data.end;
    let mut tail = meta.inodes;
    let dir_table = base + tail.len() as u64;
    tail.extend_from_slice(&meta.dirs);
    let mut fragments = Vec::new();
    for fragment in &data.fragments {
        let entry = FragmentEntry {
            start: fragment.pos,
            size: fragment.word,
            unused: 0,
        };
        fragments.extend_from_slice(&entry.to_bytes());
    }
    let fragment_table = append_table(&mut tail, base, &fragments, &[], level)?;
    let ids: Vec<u8> = meta.ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    let id_table = append_table(&mut tail, base, &ids, &[], level)?;
    let xattr_table = append_xattrs(&mut tail, base, meta.xattrs, level)?;
    let sb = Superblock {
        magic: u32::from_le_bytes(*MAGIC),
        inodes: meta.count,
        mkfs_time: 0,
        block_size: BLOCK_SIZE as u32,
        fragments: data.fragments.len() as u32,
        compression: COMPRESSION_ZSTD,
        block_log: BLOCK_LOG,
        flags: FLAG_ALWAYS_FRAGMENTS,
        ids: meta.ids.len() as u16,
        version_major: 4,
        version_minor: 0,
        root: meta_ref(meta.root.block, meta.root.offset),
        bytes_used: base + tail.len() as u64,
        id_table,
        xattr_table,
        inode_table: base,
        dir_table,
        fragment_table,
        export_table: NO_TABLE,
    };
    Ok((tail, sb))
}

/// Appends the xattr table: the key/value blocks, then the lookup table whose header locates
/// them. Returns where that header starts (the superblock's xattr table), if there are xattrs.
fn append_xattrs(tail: &mut Vec<u8>, base: u64, xattrs: Xattrs, level: i32) -> Result<u64, Error> {
    if xattrs.sets.is_empty() {
        return Ok(NO_TABLE);
    }
    let kv_start = base + tail.len() as u64;
    tail.extend_from_slice(&xattrs.kv.finish()?.0);
    let header = XattrTable {
        kv_start,
        ids: xattrs.sets.len() as u32,
        unused: 0,
    };
    append_table(tail, base, &xattrs.entries, &header.to_bytes(), level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::squashfs::test_util::{bytes, file_meta};
    use std::path::PathBuf;

    #[test]
    fn inode_order_puts_entries_before_their_directory() {
        let m = file_meta(0o755);
        let mut t = Tree::new(m.clone());
        let z = t.insert("a/z/file", m.clone(), bytes(b"1"), &m).unwrap();
        let x = t.insert("a/x", m.clone(), bytes(b"1"), &m).unwrap();
        let link = t.insert("b/link", m.clone(), bytes(b"1"), &m).unwrap();
        t.nodes[link].hardlink_of = Some(x);
        let (order, numbers) = inode_order(&t);
        let paths: Vec<_> = order.iter().map(|&id| t.path(id)).collect();
        let want = ["a/z/file", "a/z", "a/x", "a", "b", ""];
        assert_eq!(paths, want.map(PathBuf::from));
        assert_eq!(numbers[link], numbers[x]);
        assert_eq!(numbers[z], 1);
        assert_eq!(numbers[0], 6);
        let links = link_counts(&t);
        assert_eq!(
            (links[x], links[0], links[t.lookup("a").unwrap()]),
            (2, 4, 3)
        );
    }
}
