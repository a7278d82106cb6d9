//! The writer's plan: every inode's record position in the metadata area (packed first-fit)
//! and its first data block, laid out before any file is read.

use std::collections::VecDeque;

use super::dir::{dir_size, entries};
use super::{encode_xattrs, Error, Options, BLOCK, META_BLKADDR, META_START};
use crate::format::erofs::layout::{COMPACT_LEN, EXTENDED_LEN, INODE_SLOT};
use crate::tree::{Kind, NodeId, Tree};

/// Metadata blocks kept open for first-fit packing.
const META_WINDOW: usize = 256;

/// Where one inode, its xattrs and its data go.
pub(super) struct Slot {
    pub node: NodeId,
    /// Byte offset of the inode from the start of the filesystem.
    pub pos: u64,
    pub extended: bool,
    /// Encoded inline xattrs (empty if none).
    pub xattrs: Vec<u8>,
    pub size: u64,
    pub nlink: u32,
    /// `FLAT_INLINE`: the last partial block follows the xattrs.
    pub inline: bool,
    /// First data block (0 if none).
    pub blkaddr: u64,
}

impl Slot {
    pub fn new(tree: &Tree, id: NodeId, nlink: u32, opts: &Options) -> Result<Slot, Error> {
        let node = &tree.nodes[id];
        let size = match &node.kind {
            Kind::Dir { .. } => dir_size(&entries(tree, id, |_| 0)?),
            Kind::File { size, .. } => *size,
            Kind::Symlink(target) => target.len() as u64,
            _ => 0,
        };
        let m = &node.meta;
        let xattrs = encode_xattrs(&m.xattrs).ok_or_else(|| Error::TooLong {
            path: tree.path(id),
            what: "extended attributes",
        })?;
        let extended = m.uid > 0xFFFF
            || m.gid > 0xFFFF
            || nlink > 0xFFFF
            || size > u64::from(u32::MAX)
            || (m.mtime, m.mtime_nsec) != (opts.build_time, 0);
        Ok(Slot {
            node: id,
            pos: 0,
            extended,
            xattrs,
            size,
            nlink,
            inline: false,
            blkaddr: 0,
        })
    }

    fn inode_len(&self) -> usize {
        if self.extended {
            EXTENDED_LEN
        } else {
            COMPACT_LEN
        }
    }

    /// Inode plus inline xattrs.
    pub fn ibody_len(&self) -> u64 {
        (self.inode_len() + self.xattrs.len()) as u64
    }

    pub fn tail_len(&self) -> u64 {
        if self.inline {
            self.size % BLOCK
        } else {
            0
        }
    }

    fn data_blocks(&self) -> u64 {
        (self.size - self.tail_len()).div_ceil(BLOCK)
    }

    fn nid(&self) -> u64 {
        (self.pos - META_START) / INODE_SLOT
    }
}

pub(super) struct Plan {
    /// Inodes in metadata order (hard links share their first node's slot).
    pub slots: Vec<Slot>,
    /// Nid of every node, by [`NodeId`].
    pub nids: Vec<u64>,
    /// End of the metadata area = start of the data area, block-aligned.
    pub meta_end: u64,
    pub blocks: u64,
}

/// Lays out every inode and data block without reading any file.
pub(super) fn plan(tree: &Tree, opts: &Options) -> Result<Plan, Error> {
    let order = tree.walk();
    let nlinks = link_counts(tree, &order);
    let mut slots = Vec::new();
    let mut packer = Packer::default();
    for &id in order
        .iter()
        .filter(|&&id| tree.nodes[id].hardlink_of.is_none())
    {
        let mut slot = Slot::new(tree, id, nlinks[id], opts)?;
        let tail = slot.size % BLOCK;
        slot.inline = tail > 0 && slot.ibody_len() + tail <= BLOCK;
        slot.pos = packer.place(slot.ibody_len() + slot.tail_len());
        slots.push(slot);
    }
    let meta_end = packer.end();
    let blocks = place_data(&mut slots, meta_end / BLOCK);
    if blocks > u64::from(u32::MAX) {
        return Err(Error::ImageTooLarge { blocks });
    }
    let nids = nids(tree, &order, &slots);
    Ok(Plan {
        slots,
        nids,
        meta_end,
        blocks,
    })
}

/// Gives each slot with whole blocks its first block, from block `first`; returns the end.
fn place_data(slots: &mut [Slot], first: u64) -> u64 {
    let mut blocks = first;
    for slot in slots {
        let n = slot.data_blocks();
        slot.blkaddr = if n > 0 { blocks } else { 0 };
        blocks += n;
    }
    blocks
}

/// Nid of every node; a hard link gets its first node's.
fn nids(tree: &Tree, order: &[NodeId], slots: &[Slot]) -> Vec<u64> {
    let mut nids = vec![0; tree.nodes.len()];
    for slot in slots {
        nids[slot.node] = slot.nid();
    }
    for &id in order {
        if let Some(first) = tree.nodes[id].hardlink_of {
            nids[id] = nids[first];
        }
    }
    nids
}

/// Link count of every reachable inode: names for files, 2 + subdirectories for directories.
fn link_counts(tree: &Tree, order: &[NodeId]) -> Vec<u32> {
    let mut n = vec![0u32; tree.nodes.len()];
    for &id in order {
        let node = &tree.nodes[id];
        match node.kind {
            Kind::Dir { .. } => {
                n[id] += 2;
                if id != 0 {
                    n[node.parent] += 1;
                }
            }
            _ => n[node.hardlink_of.unwrap_or(id)] += 1,
        }
    }
    n
}

/// First-fit placement of inode records into a sliding window of metadata blocks. A record
/// never crosses a block boundary unless it is larger than a block.
struct Packer {
    /// Block number of `open[0]`.
    first: u64,
    /// Bytes used in each open block.
    open: VecDeque<u64>,
}

impl Default for Packer {
    fn default() -> Self {
        Packer {
            first: META_BLKADDR,
            open: VecDeque::new(),
        }
    }
}

impl Packer {
    /// Byte position (32-byte aligned) for a record of `len` bytes.
    fn place(&mut self, len: u64) -> u64 {
        let fit = self.open.iter().position(|&used| used + len <= BLOCK);
        let i = fit.unwrap_or_else(|| {
            let new = self.open.len();
            self.open
                .extend(std::iter::repeat_n(0, len.div_ceil(BLOCK) as usize));
            new
        });
        let pos = (self.first + i as u64) * BLOCK + self.open[i];
        let mut rest = len.next_multiple_of(INODE_SLOT);
        for used in self.open.range_mut(i..) {
            let take = rest.min(BLOCK - *used);
            (*used, rest) = (*used + take, rest - take);
        }
        while self.open.len() > META_WINDOW {
            self.open.pop_front();
            self.first += 1;
        }
        pos
    }

    /// End of the metadata area.
    fn end(&self) -> u64 {
        (self.first + self.open.len() as u64) * BLOCK
    }
}

/// For each slot, the lowest position of any later record: metadata below it is final.
pub(super) fn settled_below(slots: &[Slot], end: u64) -> Vec<u64> {
    let mut low = end;
    let mut out: Vec<u64> = slots
        .iter()
        .rev()
        .map(|slot| {
            let settled = low;
            low = low.min(slot.pos);
            settled
        })
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{file, meta, slot};
    use super::*;
    use crate::tree::{Content, Meta};

    #[test]
    fn extended_only_when_needed() {
        let mut t = Tree::new(meta());
        let plain = t.insert("a", meta(), file(b"x"), &meta()).unwrap();
        assert!(!slot(&t, plain, 1).extended);
        assert!(slot(&t, plain, 65536).extended);
        let cases: [fn(&mut Meta); 4] = [
            |m| m.uid = 65536,
            |m| m.gid = 65536,
            |m| m.mtime += 1,
            |m| m.mtime_nsec = 1,
        ];
        for change in cases {
            let mut m = meta();
            change(&mut m);
            let id = t.insert("b", m, file(b"x"), &meta()).unwrap();
            assert!(slot(&t, id, 1).extended);
        }
        let big = Kind::File {
            content: Content::Bytes(Vec::new()),
            size: 1 << 32,
        };
        let id = t.insert("big", meta(), big, &meta()).unwrap();
        assert!(slot(&t, id, 1).extended);
    }

    #[test]
    fn inodes_are_compact_or_extended_with_inline_tails_that_fit() {
        let mut t = Tree::new(meta());
        let old = Meta {
            mtime: -5,
            ..meta()
        };
        t.insert("small", meta(), file(b"hello"), &meta()).unwrap();
        t.insert("tail", old.clone(), file(&[1; 10000]), &meta())
            .unwrap();
        // A tail too large to inline after its inode.
        t.insert("fat", old, file(&[2; 4096 + 4090]), &meta())
            .unwrap();
        let plan = plan(&t, &super::super::tests::opts()).unwrap();
        let kind = |name| {
            let s = plan
                .slots
                .iter()
                .find(|s| s.node == t.lookup(name).unwrap());
            s.map(|s| (s.extended, s.inline, s.data_blocks(), s.blkaddr > 0))
        };
        assert_eq!(kind("small"), Some((false, true, 0, false)));
        assert_eq!(kind("tail"), Some((true, true, 2, true)));
        assert_eq!(kind("fat"), Some((true, false, 2, true)));
    }

    #[test]
    fn packer_first_fit() {
        let mut p = Packer::default();
        assert_eq!(p.place(100), 4096);
        assert_eq!(p.place(4000), 8192);
        // Fits after the first record (128 bytes with alignment).
        assert_eq!(p.place(3968), 4096 + 128);
        assert_eq!(p.place(64), 8192 + 4000);
        assert_eq!(p.place(4000), 12288);
        // Larger than a block: new blocks 4 and 5, 928 bytes of block 5 used.
        assert_eq!(p.place(5000), 16384);
        // First fit: fills block 2.
        assert_eq!(p.place(32), 8192 + 4064);
        // No room anywhere: block 6.
        assert_eq!(p.place(4050), 24576);
        assert_eq!(p.place(3168), 20480 + 928);
        assert_eq!(p.end(), 7 * 4096);
        for _ in 0..META_WINDOW + 10 {
            p.place(4096);
        }
        assert_eq!(p.open.len(), META_WINDOW);
        let end = p.end();
        assert_eq!(end, (7 + META_WINDOW as u64 + 10) * 4096);
        // The blocks with room were closed: a new block.
        assert_eq!(p.place(32), end);
    }

    #[test]
    fn settled_is_the_lowest_later_position() {
        let slot = |pos| Slot {
            pos,
            ..slot(&Tree::new(meta()), 0, 2)
        };
        let slots = [slot(4096), slot(8192), slot(4096 + 64), slot(12288)];
        assert_eq!(
            settled_below(&slots, 16384),
            [4096 + 64, 4096 + 64, 12288, 16384]
        );
    }
}
