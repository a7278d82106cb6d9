//! Encoding of inodes and directory listings: which inode variant (basic or extended) an
//! entry needs, and how a directory's entries split into runs under shared headers.

use std::ops::Range;

use super::data::FileData;
use crate::format::squashfs::layout::{
    self, DevInode, DirHeader, DirInode, ExtDirInode, ExtFileInode, FileInode, InodeHeader,
    IpcInode, SymlinkInode, DIR, DIR_RUN_MAX, EXTENDED, FILE, METADATA_SIZE, NO_FRAGMENT, NO_XATTR,
    SYMLINK,
};

/// Fields that every inode has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Common {
    pub(super) perm: u16,
    pub(super) uid: u16,
    pub(super) gid: u16,
    pub(super) mtime: u32,
    pub(super) number: u32,
    pub(super) nlink: u32,
    pub(super) xattr: u32,
}

/// Directory index entry: where a run of entries starts, for lookups in large directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DirIndex<'a> {
    /// Offset of the run's header in the listing.
    pub(super) index: u32,
    /// Start of the directory table block holding the header.
    pub(super) block: u32,
    /// Name of the run's first entry.
    pub(super) name: &'a [u8],
}

/// The type-specific part of an inode.
pub(super) enum Body<'a> {
    Dir {
        listing: &'a Listing<'a>,
        parent: u32,
    },
    File {
        data: &'a FileData,
        size: u64,
    },
    Symlink(&'a [u8]),
    Dev {
        kind: u16,
        rdev: u32,
    },
    Ipc {
        kind: u16,
    },
}

impl Body<'_> {
    fn basic_type(&self) -> u16 {
        match self {
            Body::Dir { .. } => DIR,
            Body::File { .. } => FILE,
            Body::Symlink(_) => SYMLINK,
            Body::Dev { kind, .. } | Body::Ipc { kind } => *kind,
        }
    }

    /// Whether the basic inode type cannot hold this inode.
    fn needs_extended(&self, c: &Common) -> bool {
        c.xattr != NO_XATTR
            || match self {
                Body::Dir { listing, .. } => {
                    !listing.index.is_empty() || listing.size > u16::MAX.into()
                }
                Body::File { data, size } => {
                    c.nlink > 1
                        || data.start > u32::MAX.into()
                        || *size > u32::MAX.into()
                        || data.sparse > 0
                }
                _ => false,
            }
    }
}

/// Appends an inode, basic or extended as needed; returns its basic type, as directory
/// entries record it.
pub(super) fn encode_inode(c: &Common, body: &Body, out: &mut Vec<u8>) -> u16 {
    let basic = body.basic_type();
    let extended = body.needs_extended(c);
    let header = InodeHeader {
        kind: if extended { basic + EXTENDED } else { basic },
        perm: c.perm,
        uid: c.uid,
        gid: c.gid,
        mtime: c.mtime,
        number: c.number,
    };
    out.extend_from_slice(&header.to_bytes());
    let nlink = c.nlink;
    match *body {
        Body::Dir { listing, parent } => encode_dir(c, listing, parent, extended, out),
        Body::File { data, size } => encode_file(c, data, size, extended, out),
        Body::Symlink(target) => {
            let target_size = target.len() as u32;
            out.extend_from_slice(&SymlinkInode { nlink, target_size }.to_bytes());
            out.extend_from_slice(target);
        }
        Body::Dev { rdev, .. } => out.extend_from_slice(&DevInode { nlink, rdev }.to_bytes()),
        Body::Ipc { .. } => out.extend_from_slice(&IpcInode { nlink }.to_bytes()),
    }
    if extended && !matches!(body, Body::Dir { .. } | Body::File { .. }) {
        out.extend_from_slice(&c.xattr.to_le_bytes());
    }
    basic
}

fn encode_dir(c: &Common, listing: &Listing, parent: u32, extended: bool, out: &mut Vec<u8>) {
    if !extended {
        let inode = DirInode {
            block: listing.block,
            nlink: c.nlink,
            size: listing.size as u16,
            offset: listing.offset,
            parent,
        };
        out.extend_from_slice(&inode.to_bytes());
        return;
    }
    let inode = ExtDirInode {
        nlink: c.nlink,
        size: listing.size,
        block: listing.block,
        parent,
        index_count: listing.index.len() as u16,
        offset: listing.offset,
        xattr: c.xattr,
    };
    out.extend_from_slice(&inode.to_bytes());
    for entry in &listing.index {
        let index = layout::DirIndex {
            index: entry.index,
            block: entry.block,
            name_size: entry.name.len().saturating_sub(1) as u32,
        };
        out.extend_from_slice(&index.to_bytes());
        out.extend_from_slice(entry.name);
    }
}

fn encode_file(c: &Common, data: &FileData, size: u64, extended: bool, out: &mut Vec<u8>) {
    let (fragment, fragment_offset) = data.fragment.unwrap_or((NO_FRAGMENT, 0));
    if extended {
        let inode = ExtFileInode {
            start: data.start,
            size,
            sparse: data.sparse,
            nlink: c.nlink,
            fragment,
            fragment_offset,
            xattr: c.xattr,
        };
        out.extend_from_slice(&inode.to_bytes());
    } else {
        let inode = FileInode {
            start: data.start as u32,
            fragment,
            fragment_offset,
            size: size as u32,
        };
        out.extend_from_slice(&inode.to_bytes());
    }
    for &word in &data.blocks {
        out.extend_from_slice(&word.to_le_bytes());
    }
}

/// A written inode: its place in the inode table, its number and basic type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Written {
    pub(super) block: u32,
    pub(super) offset: u16,
    pub(super) number: u32,
    pub(super) kind: u16,
}

/// A directory entry naming a written inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DirEntry<'a> {
    pub(super) name: &'a [u8],
    pub(super) inode: Written,
}

/// Splits a directory's entries into runs that share a header: at most 256 entries with
/// their inodes in one inode table block and inode numbers within an `i16` of the first's.
/// A run also ends where an entry would start in a later directory table block than its
/// header, so that every block's first header can be indexed. `at` is the listing's offset
/// in its first directory table block.
pub(super) fn runs(entries: &[DirEntry], at: usize) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut pos = at;
    let mut start = 0;
    let mut header_block = 0;
    for (i, entry) in entries.iter().enumerate() {
        let head = entries[start].inode;
        let delta = i64::from(entry.inode.number) - i64::from(head.number);
        let fresh = i == 0
            || i - start == DIR_RUN_MAX
            || entry.inode.block != head.block
            || i16::try_from(delta).is_err()
            || pos / METADATA_SIZE != header_block;
        if fresh {
            if i > 0 {
                runs.push(start..i);
            }
            start = i;
            header_block = pos / METADATA_SIZE;
            pos += DirHeader::SIZE;
        }
        pos += layout::DirEntry::SIZE + entry.name.len();
    }
    if !entries.is_empty() {
        runs.push(start..entries.len());
    }
    runs
}

/// Appends a directory header and its entries.
pub(super) fn encode_run(run: &[DirEntry], out: &mut Vec<u8>) {
    let Some(head) = run.first().map(|e| e.inode) else {
        return;
    };
    let header = DirHeader {
        count: run.len() as u32 - 1,
        start: head.block,
        number: head.number,
    };
    out.extend_from_slice(&header.to_bytes());
    for entry in run {
        let e = layout::DirEntry {
            offset: entry.inode.offset,
            delta: entry.inode.number.wrapping_sub(head.number) as u16,
            kind: entry.inode.kind,
            name_size: entry.name.len().saturating_sub(1) as u16,
        };
        out.extend_from_slice(&e.to_bytes());
        out.extend_from_slice(entry.name);
    }
}

/// Where a directory's listing is in the directory table.
pub(super) struct Listing<'a> {
    pub(super) block: u32,
    pub(super) offset: u16,
    /// Listing size plus [`DIR_SIZE_BIAS`].
    pub(super) size: u32,
    pub(super) index: Vec<DirIndex<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::squashfs::layout::{BLOCK_DEV, BLOCK_UNCOMPRESSED, CHAR_DEV, FIFO, SOCKET};

    const BLOCK_SIZE: usize = 128 * 1024;

    fn common() -> Common {
        Common {
            perm: 0o4755,
            uid: 1,
            gid: 2,
            mtime: 0x1234_5678,
            number: 9,
            nlink: 1,
            xattr: NO_XATTR,
        }
    }

    fn le(words: &[(u64, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(v, size) in words {
            out.extend_from_slice(&v.to_le_bytes()[..size]);
        }
        out
    }

    #[test]
    fn file_inodes_basic_and_extended() {
        let data = FileData {
            start: 96,
            blocks: vec![1000, BLOCK_UNCOMPRESSED | BLOCK_SIZE as u32],
            fragment: Some((3, 40)),
            sparse: 0,
        };
        let size = 2 * BLOCK_SIZE as u64 + 10;
        let mut out = Vec::new();
        let body = Body::File { data: &data, size };
        assert_eq!(encode_inode(&common(), &body, &mut out), FILE);
        let header = [
            (2, 2),
            (0o4755, 2),
            (1, 2),
            (2, 2),
            (0x1234_5678, 4),
            (9, 4),
        ];
        let mut want = le(&header);
        want.extend(le(&[(96, 4), (3, 4), (40, 4), (size, 4), (1000, 4)]));
        want.extend(le(&[((1 << 24) | 131072, 4)]));
        assert_eq!(out, want);

        // A hard-linked file needs the extended inode for its link count.
        let linked = Common {
            nlink: 2,
            ..common()
        };
        out.clear();
        assert_eq!(encode_inode(&linked, &body, &mut out), FILE);
        let mut want = le(&[
            (9, 2),
            (0o4755, 2),
            (1, 2),
            (2, 2),
            (0x1234_5678, 4),
            (9, 4),
        ]);
        want.extend(le(&[(96, 8), (size, 8), (0, 8), (2, 4), (3, 4), (40, 4)]));
        want.extend(le(&[
            (u64::from(NO_XATTR), 4),
            (1000, 4),
            ((1 << 24) | 131072, 4),
        ]));
        assert_eq!(out, want);

        // So do sparse blocks, a size over 4 GiB, and xattrs.
        for (data, size, xattr) in [
            (
                FileData {
                    sparse: 1,
                    ..data.clone()
                },
                1,
                NO_XATTR,
            ),
            (data.clone(), 1 << 32, NO_XATTR),
            (data.clone(), 1, 0),
        ] {
            out.clear();
            let c = Common { xattr, ..common() };
            encode_inode(&c, &Body::File { data: &data, size }, &mut out);
            assert_eq!(out[0], 9);
            assert_eq!(out.len(), 16 + 40 + 8);
        }
    }

    #[test]
    fn directory_inodes_basic_and_extended() {
        let mut out = Vec::new();
        let listing = Listing {
            block: 8200,
            offset: 17,
            size: 3,
            index: Vec::new(),
        };
        let small = Body::Dir {
            listing: &listing,
            parent: 4,
        };
        assert_eq!(encode_inode(&common(), &small, &mut out), DIR);
        let mut want = le(&[
            (1, 2),
            (0o4755, 2),
            (1, 2),
            (2, 2),
            (0x1234_5678, 4),
            (9, 4),
        ]);
        want.extend(le(&[(8200, 4), (1, 4), (3, 2), (17, 2), (4, 4)]));
        assert_eq!(out, want);

        let listing = Listing {
            size: 70_000,
            index: vec![DirIndex {
                index: 8000,
                block: 300,
                name: b"zz",
            }],
            ..listing
        };
        let large = Body::Dir {
            listing: &listing,
            parent: 4,
        };
        out.clear();
        assert_eq!(encode_inode(&common(), &large, &mut out), DIR);
        let mut want = le(&[
            (8, 2),
            (0o4755, 2),
            (1, 2),
            (2, 2),
            (0x1234_5678, 4),
            (9, 4),
        ]);
        want.extend(le(&[
            (1, 4),
            (70_000, 4),
            (8200, 4),
            (4, 4),
            (1, 2),
            (17, 2),
        ]));
        want.extend(le(&[(u64::from(NO_XATTR), 4), (8000, 4), (300, 4), (1, 4)]));
        want.extend(b"zz");
        assert_eq!(out, want);
    }

    #[test]
    fn other_inodes_basic_and_extended() {
        let cases: [(Body, u16, usize); 4] = [
            (Body::Symlink(b"target"), SYMLINK, 8 + 6),
            (
                Body::Dev {
                    kind: CHAR_DEV,
                    rdev: 0x103,
                },
                CHAR_DEV,
                8,
            ),
            (
                Body::Dev {
                    kind: BLOCK_DEV,
                    rdev: 0x700,
                },
                BLOCK_DEV,
                8,
            ),
            (Body::Ipc { kind: SOCKET }, SOCKET, 4),
        ];
        for (body, kind, len) in cases {
            let mut out = Vec::new();
            assert_eq!(encode_inode(&common(), &body, &mut out), kind);
            assert_eq!((out[0], out.len()), (kind as u8, 16 + len));
            assert_eq!(out[16..20], 1u32.to_le_bytes());
            let with_xattr = Common {
                xattr: 5,
                ..common()
            };
            out.clear();
            assert_eq!(encode_inode(&with_xattr, &body, &mut out), kind);
            assert_eq!((out[0], out.len()), ((kind + 7) as u8, 16 + len + 4));
            assert_eq!(out[out.len() - 4..], 5u32.to_le_bytes());
        }
        let mut out = Vec::new();
        encode_inode(&common(), &Body::Symlink(b"target"), &mut out);
        assert_eq!(&out[20..], b"\x06\0\0\0target");
        assert_eq!(
            encode_inode(&common(), &Body::Ipc { kind: FIFO }, &mut out),
            FIFO
        );
    }

    fn entries(
        names: &[Vec<u8>],
        block: impl Fn(usize) -> u32,
        number: impl Fn(usize) -> u32,
    ) -> Vec<DirEntry<'_>> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| DirEntry {
                name,
                inode: Written {
                    block: block(i),
                    offset: (i * 20) as u16,
                    number: number(i),
                    kind: FILE,
                },
            })
            .collect()
    }

    #[test]
    fn directory_runs_split_where_squashfs_requires() {
        let names: Vec<Vec<u8>> = (0..300).map(|i| vec![b'a' + (i % 26) as u8]).collect();
        // At most 256 entries per header.
        let e = entries(&names, |_| 0, |i| i as u32 + 1);
        assert_eq!(runs(&e, 0), vec![0..256, 256..300]);
        // A new header whenever the inode block changes...
        let e = entries(&names[..4], |i| [0, 0, 500, 0][i], |i| i as u32 + 1);
        assert_eq!(runs(&e, 0), vec![0..2, 2..3, 3..4]);
        // ... or an inode number is out of reach of the header's...
        let e = entries(&names[..3], |_| 0, |i| [40_000, 7_232, 7_231][i]);
        assert_eq!(runs(&e, 0), vec![0..2, 2..3]);
        // ... or an entry would start in the next directory table block.
        let e = entries(&names[..3], |_| 0, |i| i as u32 + 1);
        assert_eq!(runs(&e, METADATA_SIZE - 12), vec![0..1, 1..3]);
        assert_eq!(runs(&e, METADATA_SIZE - 21), vec![0..1, 1..3]);
        assert_eq!(runs(&e, METADATA_SIZE - 22), vec![0..2, 2..3]);
        assert_eq!(runs(&e, 0), vec![0..3]);
        assert!(runs(&[], 0).is_empty());

        let mut out = Vec::new();
        let e = entries(&names[..2], |_| 77, |i| [10, 8][i]);
        encode_run(&e, &mut out);
        let mut want = le(&[(1, 4), (77, 4), (10, 4)]);
        want.extend(le(&[(0, 2), (0, 2), (2, 2), (0, 2)]));
        want.push(b'a');
        want.extend(le(&[(20, 2), (0xfffe, 2), (2, 2), (0, 2)]));
        want.push(b'b');
        assert_eq!(out, want);
    }
}
