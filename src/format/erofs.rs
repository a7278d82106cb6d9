//! EROFS image writer (uncompressed, inline tails) and superblock probe; the reader is in
//! [`super::erofs_read`].
//!
//! Layout: block 0 holds the superblock; the metadata area starts at block 1 and holds every
//! inode record: the inode, its inline xattrs and, when they fit in one block together, the
//! tail of its data (`FLAT_INLINE`). Records are packed first-fit into a sliding window of
//! metadata blocks. The data area follows with the whole blocks of every inode in
//! [`Tree::walk`] order. Everything is planned first, then written in one pass that opens and
//! reads each file once, streaming its blocks out in order.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::tree::{Content, Kind, Node, NodeId, Tree, TreeError};

const BLOCK: u64 = 4096;
const BLOCK_BITS: u8 = 12;
pub(super) const MAGIC: u32 = 0xE0F5_E1E2;
pub(super) const SB_OFFSET: usize = 1024;
pub(super) const COMPAT_SB_CHKSUM: u32 = 1;
/// The metadata area (inodes) starts at block 1; nids count 32-byte slots from there.
const META_BLKADDR: u64 = 1;
const META_START: u64 = META_BLKADDR * BLOCK;
pub(super) const INODE_SLOT: u64 = 32;
pub(super) const COMPACT_LEN: usize = 32;
pub(super) const EXTENDED_LEN: usize = 64;
pub(super) const LAYOUT_FLAT_PLAIN: u16 = 0;
pub(super) const LAYOUT_FLAT_INLINE: u16 = 2;
pub(super) const XATTR_HEADER_LEN: usize = 12;
pub(super) const DIRENT_LEN: usize = 12;
pub(super) const NAME_MAX: usize = 255;
pub(super) const FT_DIR: u8 = 2;
/// Metadata blocks kept open for first-fit packing.
const META_WINDOW: usize = 256;
/// Settled metadata is written out in chunks of at least this size.
const META_BUF: usize = 1 << 20;
const DATA_BUF: usize = 8 << 20;

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

/// True if `buf` (the start of a partition or device) holds an EROFS superblock.
pub fn probe(buf: &[u8]) -> bool {
    buf.get(SB_OFFSET..SB_OFFSET + 4) == Some(&MAGIC.to_le_bytes()[..])
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
    let inode = encode_inode(&tree.nodes[slot.node], slot, i as u32 + 1);
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

/// Where one inode, its xattrs and its data go.
struct Slot {
    node: NodeId,
    /// Byte offset of the inode from the start of the filesystem.
    pos: u64,
    extended: bool,
    /// Encoded inline xattrs (empty if none).
    xattrs: Vec<u8>,
    size: u64,
    nlink: u32,
    /// `FLAT_INLINE`: the last partial block follows the xattrs.
    inline: bool,
    /// First data block (0 if none).
    blkaddr: u64,
}

impl Slot {
    fn new(tree: &Tree, id: NodeId, nlink: u32, opts: &Options) -> Result<Slot, Error> {
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
    fn ibody_len(&self) -> u64 {
        (self.inode_len() + self.xattrs.len()) as u64
    }

    fn tail_len(&self) -> u64 {
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

struct Plan {
    /// Inodes in metadata order (hard links share their first node's slot).
    slots: Vec<Slot>,
    /// Nid of every node, by [`NodeId`].
    nids: Vec<u64>,
    /// End of the metadata area = start of the data area, block-aligned.
    meta_end: u64,
    blocks: u64,
}

/// Lays out every inode and data block without reading any file.
fn plan(tree: &Tree, opts: &Options) -> Result<Plan, Error> {
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
    let mut blocks = meta_end / BLOCK;
    for slot in &mut slots {
        let n = slot.data_blocks();
        slot.blkaddr = if n > 0 { blocks } else { 0 };
        blocks += n;
    }
    if blocks > u64::from(u32::MAX) {
        return Err(Error::ImageTooLarge { blocks });
    }
    let mut nids = vec![0; tree.nodes.len()];
    for slot in &slots {
        nids[slot.node] = slot.nid();
    }
    for &id in &order {
        if let Some(first) = tree.nodes[id].hardlink_of {
            nids[id] = nids[first];
        }
    }
    Ok(Plan {
        slots,
        nids,
        meta_end,
        blocks,
    })
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
fn settled_below(slots: &[Slot], end: u64) -> Vec<u64> {
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

/// The 32-byte compact or 64-byte extended on-disk inode.
fn encode_inode(node: &Node, slot: &Slot, ino: u32) -> Vec<u8> {
    let layout = if slot.inline {
        LAYOUT_FLAT_INLINE
    } else {
        LAYOUT_FLAT_PLAIN
    };
    let format = layout << 1 | u16::from(slot.extended);
    let icount = xattr_icount(slot.xattrs.len());
    let i_u = match node.kind {
        Kind::CharDev(rdev) | Kind::BlockDev(rdev) => encode_dev(rdev),
        _ => slot.blkaddr as u32,
    };
    let m = &node.meta;
    let mut b = Vec::with_capacity(EXTENDED_LEN);
    b.extend(format.to_le_bytes());
    b.extend(icount.to_le_bytes());
    b.extend((node.mode() as u16).to_le_bytes());
    if slot.extended {
        b.extend([0; 2]);
        b.extend(slot.size.to_le_bytes());
        b.extend(i_u.to_le_bytes());
        b.extend(ino.to_le_bytes());
        b.extend(m.uid.to_le_bytes());
        b.extend(m.gid.to_le_bytes());
        b.extend(m.mtime.to_le_bytes());
        b.extend(m.mtime_nsec.to_le_bytes());
        b.extend(slot.nlink.to_le_bytes());
    } else {
        b.extend((slot.nlink as u16).to_le_bytes());
        b.extend((slot.size as u32).to_le_bytes());
        // Reserved in Linux 6.1; later kernels read it as mtime minus build_time.
        b.extend([0; 4]);
        b.extend(i_u.to_le_bytes());
        b.extend(ino.to_le_bytes());
        b.extend((m.uid as u16).to_le_bytes());
        b.extend((m.gid as u16).to_le_bytes());
    }
    b.resize(slot.inode_len(), 0);
    b
}

/// Device number in the kernel's `new_encode_dev` form.
fn encode_dev(rdev: u64) -> u32 {
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// `i_xattr_icount`: 0 without xattrs, else the header plus 4-byte units after it.
fn xattr_icount(len: usize) -> u16 {
    match len {
        0 => 0,
        n => ((n - XATTR_HEADER_LEN) / 4 + 1) as u16,
    }
}

/// Name index and the rest of the name, for the prefixes the kernel knows.
fn xattr_index(name: &[u8]) -> (u8, &[u8]) {
    match name {
        b"system.posix_acl_access" => (2, b""),
        b"system.posix_acl_default" => (3, b""),
        _ => [(&b"user."[..], 1), (b"trusted.", 4), (b"security.", 6)]
            .into_iter()
            .find_map(|(prefix, index)| Some((index, name.strip_prefix(prefix)?)))
            .unwrap_or((0, name)),
    }
}

/// Inline xattr area: header, then 4-byte aligned entries. `None` if a field overflows.
fn encode_xattrs(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Option<Vec<u8>> {
    if xattrs.is_empty() {
        return Some(Vec::new());
    }
    let mut b = vec![0; XATTR_HEADER_LEN];
    for (name, value) in xattrs {
        let (index, suffix) = xattr_index(name);
        b.push(u8::try_from(suffix.len()).ok()?);
        b.push(index);
        b.extend(u16::try_from(value.len()).ok()?.to_le_bytes());
        b.extend(suffix);
        b.extend(value);
        b.resize(b.len().next_multiple_of(4), 0);
    }
    let fits = (b.len() - XATTR_HEADER_LEN) / 4 < usize::from(u16::MAX);
    fits.then_some(b)
}

struct Dirent<'a> {
    name: &'a [u8],
    nid: u64,
    file_type: u8,
}

/// A directory's entries including `.` and `..`, sorted bytewise by name as lookups require.
fn entries(
    tree: &Tree,
    dir: NodeId,
    nid: impl Fn(NodeId) -> u64,
) -> Result<Vec<Dirent<'_>>, Error> {
    let dot = |name, id| Dirent {
        name,
        nid: nid(id),
        file_type: FT_DIR,
    };
    let mut out = vec![dot(&b"."[..], dir), dot(b"..", tree.nodes[dir].parent)];
    for &child in tree.children(dir) {
        let node = &tree.nodes[child];
        if node.name.len() > NAME_MAX {
            return Err(Error::TooLong {
                path: tree.path(child),
                what: "file name",
            });
        }
        out.push(Dirent {
            name: &node.name,
            nid: nid(child),
            file_type: file_type(&node.kind),
        });
    }
    out.sort_unstable_by(|a, b| a.name.cmp(b.name));
    Ok(out)
}

fn file_type(kind: &Kind) -> u8 {
    match kind {
        Kind::File { .. } => 1,
        Kind::Dir { .. } => FT_DIR,
        Kind::CharDev(_) => 3,
        Kind::BlockDev(_) => 4,
        Kind::Fifo => 5,
        Kind::Socket => 6,
        Kind::Symlink(_) => 7,
    }
}

/// Splits sorted entries into directory blocks, each holding as many entries as fit.
fn dir_blocks<'e, 'a>(ents: &'e [Dirent<'a>]) -> Vec<&'e [Dirent<'a>]> {
    let mut blocks = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, e) in ents.iter().enumerate() {
        let len = DIRENT_LEN + e.name.len();
        if used + len > BLOCK as usize {
            blocks.push(&ents[start..i]);
            (start, used) = (i, 0);
        }
        used += len;
    }
    blocks.push(&ents[start..]);
    blocks
}

/// Directory size: full blocks, then the used part of the last one.
fn dir_size(ents: &[Dirent]) -> u64 {
    let blocks = dir_blocks(ents);
    let last: usize = blocks
        .last()
        .map_or(0, |b| b.iter().map(|e| DIRENT_LEN + e.name.len()).sum());
    (blocks.len() as u64 - 1) * BLOCK + last as u64
}

/// Directory data: per block, the dirent array then the names; all but the last block padded.
fn encode_dir(ents: &[Dirent]) -> Vec<u8> {
    let blocks = dir_blocks(ents);
    let mut b = Vec::with_capacity(blocks.len() * BLOCK as usize);
    for (i, block) in blocks.iter().enumerate() {
        let start = b.len();
        let mut nameoff = block.len() * DIRENT_LEN;
        for e in *block {
            b.extend(e.nid.to_le_bytes());
            b.extend((nameoff as u16).to_le_bytes());
            b.extend([e.file_type, 0]);
            nameoff += e.name.len();
        }
        for e in *block {
            b.extend(e.name);
        }
        if i + 1 < blocks.len() {
            b.resize(start + BLOCK as usize, 0);
        }
    }
    b
}

/// The superblock's block (block 0), with its checksum.
fn superblock(plan: &Plan, opts: &Options) -> Vec<u8> {
    let mut b = vec![0; SB_OFFSET];
    b.extend(MAGIC.to_le_bytes());
    b.extend([0; 4]); // checksum
    b.extend(COMPAT_SB_CHKSUM.to_le_bytes());
    b.extend([BLOCK_BITS, 0]);
    // The root is the first inode of the metadata area.
    b.extend((plan.nids[0] as u16).to_le_bytes());
    b.extend((plan.slots.len() as u64).to_le_bytes());
    b.extend(opts.build_time.to_le_bytes());
    b.extend([0; 4]); // build_time_nsec
    b.extend((plan.blocks as u32).to_le_bytes());
    b.extend((META_BLKADDR as u32).to_le_bytes());
    b.extend([0; 4]); // xattr_blkaddr: no shared xattrs
    b.extend(opts.uuid);
    b.resize(BLOCK as usize, 0);
    let crc = crc32c(!0, &b[SB_OFFSET..]);
    b[SB_OFFSET + 4..SB_OFFSET + 8].copy_from_slice(&crc.to_le_bytes());
    b
}

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32C like the kernel's `crc32c(seed, data, len)`: no final inversion.
pub(super) fn crc32c(seed: u32, data: &[u8]) -> u32 {
    data.iter().fold(seed, |c, &byte| {
        CRC32C_TABLE[((c ^ u32::from(byte)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// The metadata area, buffered from the lowest position a later record may still touch.
struct MetaWindow<'f> {
    out: &'f File,
    /// Filesystem start in `out`.
    offset: u64,
    /// Filesystem position of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
}

impl<'f> MetaWindow<'f> {
    fn new(out: &'f File, offset: u64) -> Self {
        MetaWindow {
            out,
            offset,
            start: META_START,
            buf: Vec::new(),
        }
    }

    /// The `len` bytes at filesystem position `pos` (zeros until written).
    fn slice(&mut self, pos: u64, len: u64) -> &mut [u8] {
        let (at, end) = (
            (pos - self.start) as usize,
            (pos + len - self.start) as usize,
        );
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        &mut self.buf[at..end]
    }

    /// Notes that nothing below `pos` changes any more; writes it out once that is enough.
    fn settle(&mut self, pos: u64) -> Result<(), Error> {
        let n = (pos - self.start).min(self.buf.len() as u64) as usize;
        if n >= META_BUF {
            self.write_out(n)?;
        }
        Ok(())
    }

    /// Writes the rest, zero-padded up to `end`.
    fn finish(&mut self, end: u64) -> Result<(), Error> {
        self.slice(end, 0);
        self.write_out(self.buf.len())
    }

    fn write_out(&mut self, n: usize) -> Result<(), Error> {
        self.out
            .write_all_at(&self.buf[..n], self.offset + self.start)
            .map_err(Error::Write)?;
        self.buf.drain(..n);
        self.start += n as u64;
        Ok(())
    }
}

/// The data area: a sequential writer to `out` from byte `base`, in large chunks.
struct Sink<'f> {
    out: &'f File,
    base: u64,
    buf: Vec<u8>,
    len: usize,
    flushed: u64,
}

impl<'f> Sink<'f> {
    fn new(out: &'f File, base: u64) -> Self {
        Sink {
            out,
            base,
            buf: vec![0; DATA_BUF],
            len: 0,
            flushed: 0,
        }
    }

    /// Bytes written so far, relative to `base`.
    fn pos(&self) -> u64 {
        self.flushed + self.len as u64
    }

    /// Free buffer space (never empty); fill a prefix, then [`Sink::commit`] it.
    fn spare(&mut self) -> Result<&mut [u8], Error> {
        if self.len == self.buf.len() {
            self.flush()?;
        }
        Ok(&mut self.buf[self.len..])
    }

    fn commit(&mut self, n: usize) {
        self.len += n;
    }

    /// Writes zeros up to `pos`.
    fn pad_to(&mut self, pos: u64) -> Result<(), Error> {
        while self.pos() < pos {
            let left = pos - self.pos();
            let spare = self.spare()?;
            let n = left.min(spare.len() as u64) as usize;
            spare[..n].fill(0);
            self.commit(n);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.out
            .write_all_at(&self.buf[..self.len], self.base + self.flushed)
            .map_err(Error::Write)?;
        self.flushed += self.len as u64;
        self.len = 0;
        Ok(())
    }
}

/// The data of one inode: directory entries, symlink target or file content.
struct Source<'a> {
    reader: Box<dyn Read + 'a>,
    tree: &'a Tree,
    node: NodeId,
    size: u64,
}

impl<'a> Source<'a> {
    fn new(tree: &'a Tree, slot: &Slot, nids: &[u64]) -> Result<Source<'a>, Error> {
        let reader: Box<dyn Read> = match &tree.nodes[slot.node].kind {
            Kind::Dir { .. } => Box::new(io::Cursor::new(encode_dir(&entries(
                tree,
                slot.node,
                |id| nids[id],
            )?))),
            Kind::File { content, .. } => content.open()?,
            Kind::Symlink(target) => Box::new(&target[..]),
            _ => Box::new(io::empty()),
        };
        Ok(Source {
            reader,
            tree,
            node: slot.node,
            size: slot.size,
        })
    }

    /// Path for error messages: the source file, else the path in the tree.
    fn path(&self) -> PathBuf {
        match &self.tree.nodes[self.node].kind {
            Kind::File {
                content: Content::Path(path),
                ..
            } => path.clone(),
            _ => self.tree.path(self.node),
        }
    }

    fn changed(&self) -> Error {
        Error::SizeChanged {
            path: self.path(),
            expected: self.size,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        loop {
            match self.reader.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => {
                    return r.map_err(|source| Error::Read {
                        path: self.path(),
                        source,
                    })
                }
            }
        }
    }

    /// Moves exactly `len` bytes into `sink`, reading straight into its buffer.
    fn copy_to(&mut self, sink: &mut Sink, mut len: u64) -> Result<(), Error> {
        while len > 0 {
            let spare = sink.spare()?;
            let want = len.min(spare.len() as u64) as usize;
            let n = self.read(&mut spare[..want])?;
            if n == 0 {
                return Err(self.changed());
            }
            sink.commit(n);
            len -= n as u64;
        }
        Ok(())
    }

    fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<(), Error> {
        while !buf.is_empty() {
            match self.read(buf)? {
                0 => return Err(self.changed()),
                n => buf = &mut buf[n..],
            }
        }
        Ok(())
    }

    fn expect_eof(&mut self) -> Result<(), Error> {
        match self.read(&mut [0])? {
            0 => Ok(()),
            _ => Err(self.changed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Meta, ScanOptions};
    use std::fs;
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, SystemTime};

    const EPOCH: i64 = 1_700_000_000;

    fn opts() -> Options {
        Options {
            uuid: [7; 16],
            build_time: EPOCH,
        }
    }

    fn meta() -> Meta {
        Meta::generated(0o644, EPOCH)
    }

    fn file(bytes: &[u8]) -> Kind {
        Kind::File {
            content: Content::Bytes(bytes.to_vec()),
            size: bytes.len() as u64,
        }
    }

    fn le16(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
    }

    fn le32(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn le64(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    fn slot(tree: &Tree, id: NodeId, nlink: u32) -> Slot {
        Slot::new(tree, id, nlink, &opts()).unwrap()
    }

    #[test]
    fn crc32c_matches_check_value() {
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
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
        let b = encode_inode(&t.nodes[id], &s, 9);
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
        let b = encode_inode(&t.nodes[id], &s, 3);
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
    fn decode_dir(data: &[u8]) -> Vec<(Vec<u8>, u64, u8)> {
        let mut out = Vec::new();
        for block in data.chunks(BLOCK as usize) {
            let count = le16(block, 8) as usize / DIRENT_LEN;
            for i in 0..count {
                let d = &block[i * DIRENT_LEN..];
                let start = le16(d, 8) as usize;
                let end = match i + 1 < count {
                    true => le16(d, DIRENT_LEN + 8) as usize,
                    false => block[start..]
                        .iter()
                        .position(|&c| c == 0)
                        .map_or(block.len(), |n| start + n),
                };
                out.push((block[start..end].to_vec(), le64(d, 0), d[10]));
            }
        }
        out
    }

    #[test]
    fn dirents_sorted_with_dots() {
        let mut t = Tree::new(meta());
        t.insert("a", meta(), file(b""), &meta()).unwrap();
        t.insert("-b", meta(), Kind::Fifo, &meta()).unwrap();
        t.insert("!c/x", meta(), Kind::Symlink(b"t".to_vec()), &meta())
            .unwrap();
        let nid = |id: NodeId| id as u64 * 10;
        let data = encode_dir(&entries(&t, 0, nid).unwrap());
        assert_eq!(le16(&data, 8), 5 * 12);
        assert_eq!(data.len(), 5 * 12 + 2 + 2 + 1 + 2 + 1);
        assert_eq!(dir_size(&entries(&t, 0, |_| 0).unwrap()), data.len() as u64);
        let got = decode_dir(&data);
        let want: Vec<(Vec<u8>, u64, u8)> = vec![
            (b"!c".to_vec(), nid(t.lookup("!c").unwrap()), FT_DIR),
            (b"-b".to_vec(), nid(t.lookup("-b").unwrap()), 5),
            (b".".to_vec(), 0, FT_DIR),
            (b"..".to_vec(), 0, FT_DIR),
            (b"a".to_vec(), nid(t.lookup("a").unwrap()), 1),
        ];
        assert_eq!(got, want);
        let sub = t.lookup("!c").unwrap();
        let names = decode_dir(&encode_dir(&entries(&t, sub, nid).unwrap()));
        assert_eq!(names[1], (b"..".to_vec(), 0, FT_DIR));
        assert_eq!(names[2].2, 7);
    }

    #[test]
    fn dirents_span_blocks() {
        let mut t = Tree::new(meta());
        for i in 0..300 {
            let name = format!("{i:03}{}", "n".repeat(37));
            t.insert(&name, meta(), file(b""), &meta()).unwrap();
        }
        let ents = entries(&t, 0, |id| id as u64).unwrap();
        let data = encode_dir(&ents);
        // Block 0: "." (13 bytes), ".." (14) and 78 entries of 52 bytes; then 78 per block.
        assert_eq!(data.len(), 3 * 4096 + (300 - 3 * 78) * 52);
        assert_eq!(dir_size(&ents), data.len() as u64);
        assert!(data[27 + 78 * 52..4096].iter().all(|&b| b == 0));
        let got: Vec<Vec<u8>> = decode_dir(&data).into_iter().map(|e| e.0).collect();
        let want: Vec<Vec<u8>> = ents.iter().map(|e| e.name.to_vec()).collect();
        assert_eq!(got, want);
        assert!(got.windows(2).all(|w| w[0] < w[1]));
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

    #[test]
    fn probe_detects_superblock() {
        let t = Tree::new(meta());
        let plan = plan(&t, &opts()).unwrap();
        let sb = superblock(&plan, &opts());
        assert!(probe(&sb));
        assert!(!probe(&[0; 4096]));
        assert!(!probe(&sb[..1027]));
        assert_eq!(le32(&sb, 1024 + 36), 2);
        let mut zeroed = sb[1024..].to_vec();
        zeroed[4..8].fill(0);
        assert_eq!(le32(&sb, 1028), crc32c(!0, &zeroed));
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
        assert!(probe(&a));
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

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn have(tool: &str) -> bool {
        Command::new(tool)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    fn set_mtime(path: &Path, secs: i64, nsec: u32) {
        let offset = Duration::new(secs.unsigned_abs(), 0);
        let t = match secs < 0 {
            true => SystemTime::UNIX_EPOCH - offset,
            false => SystemTime::UNIX_EPOCH + offset,
        } + Duration::from_nanos(nsec.into());
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(t).unwrap();
    }

    /// Creates a source tree covering every feature; some parts only as root.
    fn build_source(d: &Path) {
        fs::create_dir_all(d.join("dir/sub")).unwrap();
        fs::create_dir(d.join("+plus")).unwrap();
        fs::write(d.join("!bang"), b"!").unwrap();
        fs::write(d.join("empty"), b"").unwrap();
        fs::write(d.join("small"), b"hello world\n").unwrap();
        fs::write(d.join("block"), pattern(4096)).unwrap();
        fs::write(d.join("dir/tail"), pattern(10000)).unwrap();
        // A tail too large to inline after its inode.
        fs::write(d.join("dir/fat-tail"), pattern(4096 + 4090)).unwrap();
        fs::write(d.join("dir/sub/big"), pattern(3 << 20)).unwrap();
        // Larger than the data buffer.
        fs::write(d.join("dir/huge"), pattern(DATA_BUF + 5000)).unwrap();
        symlink("../small", d.join("dir/link")).unwrap();
        fs::write(d.join("hard1"), b"linked").unwrap();
        fs::hard_link(d.join("hard1"), d.join("dir/hard2")).unwrap();
        let fifo = rustix::fs::FileType::Fifo;
        rustix::fs::mknodat(rustix::fs::CWD, d.join("fifo"), fifo, 0o640.into(), 0).unwrap();
        drop(std::os::unix::net::UnixListener::bind(d.join("socket")).unwrap());
        fs::create_dir(d.join("many")).unwrap();
        for i in 0..300 {
            let name = format!("many/entry-{i:03}-{}", "x".repeat(i % 50));
            fs::write(d.join(name), i.to_string()).unwrap();
        }
        fs::write(d.join("many").join("n".repeat(255)), b"long").unwrap();
        fs::create_dir(d.join("d".repeat(255))).unwrap();
        fs::write(d.join("d".repeat(255)).join("f".repeat(255)), b"deep").unwrap();
        let xattr = |p: &str, k: &str, v: &[u8]| {
            rustix::fs::lsetxattr(d.join(p), k, v, rustix::fs::XattrFlags::empty()).unwrap()
        };
        xattr("small", "user.test", b"hello");
        xattr("dir", "user.dir", b"");
        fs::set_permissions(d.join("block"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::set_permissions(d.join("dir/sub"), fs::Permissions::from_mode(0o1777)).unwrap();
        set_mtime(&d.join("small"), EPOCH, 0);
        set_mtime(&d.join("empty"), EPOCH, 0);
        set_mtime(&d.join("dir/sub/big"), EPOCH + 12345, 678);
        set_mtime(&d.join("dir/tail"), -5, 0);
        if !is_root() {
            eprintln!("not root: no devices, trusted xattrs or foreign owners in the test tree");
            return;
        }
        xattr("small", "trusted.x", b"y");
        xattr("block", "security.test", b"sec");
        // ACL: user::rwx user:1000:r-- group::r-x mask::r-x other::r--
        let acl: Vec<u8> = [(1u16, 7u16, u32::MAX), (2, 4, 1000), (4, 5, u32::MAX)]
            .into_iter()
            .chain([(0x10, 5, u32::MAX), (0x20, 4, u32::MAX)])
            .flat_map(|(tag, perm, id)| {
                [tag.to_le_bytes(), perm.to_le_bytes()]
                    .concat()
                    .into_iter()
                    .chain(id.to_le_bytes())
            })
            .collect();
        xattr(
            "dir/tail",
            "system.posix_acl_access",
            &[&2u32.to_le_bytes()[..], &acl].concat(),
        );
        lchown(d.join("block"), Some(1000), Some(1000)).unwrap();
        lchown(d.join("dir/tail"), Some(70000), Some(70000)).unwrap();
        lchown(d.join("dir/link"), Some(1000), Some(70000)).unwrap();
        for (name, ty, dev) in [
            ("cdev", rustix::fs::FileType::CharacterDevice, (1, 3)),
            ("bdev", rustix::fs::FileType::BlockDevice, (259, 0x12345)),
        ] {
            let dev = rustix::fs::makedev(dev.0, dev.1);
            rustix::fs::mknodat(rustix::fs::CWD, d.join(name), ty, 0o600.into(), dev).unwrap();
        }
    }

    /// Asserts two scanned trees are the same: names, structure, kinds, contents, hard links,
    /// and (if `with_meta`) modes, owners, mtimes and xattrs.
    fn assert_same(a: &Tree, b: &Tree, with_meta: bool) {
        assert_eq!(a.nodes.len(), b.nodes.len(), "node count");
        for (id, (x, y)) in a.nodes.iter().zip(&b.nodes).enumerate() {
            let path = a.path(id);
            assert_eq!((&x.name, x.parent), (&y.name, y.parent), "{path:?}");
            if with_meta {
                assert_eq!(x.meta, y.meta, "{path:?}");
                assert_eq!(x.hardlink_of, y.hardlink_of, "{path:?}");
            }
            match (&x.kind, &y.kind) {
                (
                    Kind::File { content, size },
                    Kind::File {
                        content: c,
                        size: s,
                    },
                ) => {
                    assert_eq!(size, s, "{path:?}");
                    assert!(content.read().unwrap() == c.read().unwrap(), "{path:?}");
                }
                (k, l) => assert_eq!(k, l, "{path:?}"),
            }
        }
    }

    /// An image loop-mounted in a private mount namespace, seen through /proc/PID/root.
    struct Mounted {
        child: Child,
        dir: PathBuf,
    }

    impl Mounted {
        fn new(image: &Path, mnt: &Path) -> Mounted {
            let script = r#"mount -o loop,ro -t erofs "$0" "$1" && echo mounted && exec cat"#;
            let mut child = Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c", script])
                .args([image, mnt])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            let stdout = child.stdout.take().unwrap();
            BufReader::new(stdout).read_line(&mut line).unwrap();
            if line != "mounted\n" {
                drop(child.stdin.take());
                let out = child.wait_with_output().unwrap();
                panic!("mount failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let dir = PathBuf::from(format!("/proc/{}/root", child.id()));
            let dir = dir.join(mnt.strip_prefix("/").unwrap());
            Mounted { child, dir }
        }
    }

    impl Drop for Mounted {
        fn drop(&mut self) {
            drop(self.child.stdin.take());
            let _ = self.child.wait();
        }
    }

    fn check_fsck(image: &Path, extract: &Path, src: &Tree) {
        if !have("fsck.erofs") {
            eprintln!("fsck.erofs not found: skipping the fsck check");
            return;
        }
        let out = Command::new("fsck.erofs")
            .arg(format!("--extract={}", extract.display()))
            .arg(image)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "fsck.erofs: {log}");
        let extracted = Tree::scan(extract, &ScanOptions::default()).unwrap();
        assert_same(src, &extracted, false);
    }

    fn check_mounted(image: &Path, mnt: &Path, src: &Tree) {
        if !is_root() || !have("unshare") || !have("getfattr") {
            eprintln!("not root or unshare/getfattr missing: skipping the mount check");
            return;
        }
        fs::create_dir(mnt).unwrap();
        let m = Mounted::new(image, mnt);
        let mounted = Tree::scan(&m.dir, &ScanOptions::default()).unwrap();
        assert_same(src, &mounted, true);
        let names = |p: &str| -> Vec<String> {
            let xattrs = &mounted.nodes[mounted.lookup(p).unwrap()].meta.xattrs;
            xattrs
                .iter()
                .map(|(k, _)| String::from_utf8_lossy(k).into())
                .collect()
        };
        assert_eq!(names("small"), ["trusted.x", "user.test"]);
        assert_eq!(names("block"), ["security.test"]);
        assert_eq!(names("dir/tail"), ["system.posix_acl_access"]);
        let md = |p: &str| fs::symlink_metadata(m.dir.join(p)).unwrap();
        assert_eq!(md("hard1").ino(), md("dir/hard2").ino());
        assert_eq!(md("hard1").nlink(), 2);
        assert_eq!(md("dir").nlink(), 3);
        assert_eq!(md("cdev").rdev(), rustix::fs::makedev(1, 3));
        assert!(md("many").len() > 2 * BLOCK);
        let out = Command::new("getfattr")
            .args(["-d", "-m", "-", "--absolute-names"])
            .arg(m.dir.join("small"))
            .output()
            .unwrap();
        let attrs = String::from_utf8_lossy(&out.stdout);
        assert!(attrs.contains("trusted.x=\"y\"\n"), "{attrs}");
        assert!(attrs.contains("user.test=\"hello\"\n"), "{attrs}");
    }

    #[test]
    fn image_matches_source() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        build_source(&src);
        let tree = Tree::scan(&src, &ScanOptions::default()).unwrap();
        let slots = plan(&tree, &opts()).unwrap().slots;
        let kinds = |s: &Slot| (s.extended, s.inline, !s.size.is_multiple_of(BLOCK));
        for kind in [(false, true, true), (true, true, true), (true, false, true)] {
            assert!(slots.iter().any(|s| kinds(s) == kind), "no inode {kind:?}");
        }
        let image = tmp.path().join("image.erofs");
        let len = write(&tree, &File::create(&image).unwrap(), 0, &opts()).unwrap();
        assert_eq!(fs::metadata(&image).unwrap().len(), len);
        check_fsck(&image, &tmp.path().join("extract"), &tree);
        check_mounted(&image, &tmp.path().join("mnt"), &tree);
    }
}
