//! The sample archive shared by the integration tests: directories, regular files of several
//! sizes, symlinks, a hard-link pair, devices, a fifo, a socket, setuid and non-root owners.
#![allow(dead_code)] // each test binary uses a different part of this module

use cpio_builder::mode::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFSOCK};
use cpio_builder::{Header, Writer};

/// mtime of the first entry: 2020-09-13 12:26:40 UTC; later entries add one second each.
pub const BASE_MTIME: u64 = 1_600_000_000;

/// One call to the writer.
pub enum Item {
    Dir(Header),
    File(Header, Vec<u8>),
    Symlink(Header, Vec<u8>),
    Special(Header),
    HardLinks(Vec<Header>, Vec<u8>),
}

/// What one archive entry should look like after writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub header: Header,
    pub ino: u32,
    pub nlink: u32,
    /// Content (empty for all but the last name of a hard-link group), or symlink target.
    pub data: Vec<u8>,
}

fn h(name: &str, mode: u32, uid: u32, gid: u32) -> Header {
    Header {
        name: name.into(),
        mode,
        uid,
        gid,
        ..Header::default()
    }
}

fn dev(name: &str, mode: u32, major: u32, minor: u32) -> Header {
    Header {
        rdev_major: major,
        rdev_minor: minor,
        ..h(name, mode, 0, 0)
    }
}

/// 4097 bytes that are not all alike.
pub fn big_content() -> Vec<u8> {
    (0..4097u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// The sample items, already in [`cpio_builder::path_order`] order, mtimes not yet set.
fn items_without_mtimes() -> Vec<Item> {
    vec![
        Item::Dir(h("bin", S_IFDIR | 0o755, 0, 0)),
        Item::HardLinks(
            vec![
                h("bin/a", S_IFREG | 0o755, 0, 0),
                h("bin/b", S_IFREG | 0o755, 0, 0),
            ],
            b"hardlinked\n".to_vec(),
        ),
        Item::File(h("bin/big", S_IFREG | 0o755, 0, 0), big_content()),
        Item::Symlink(h("bin/sh", S_IFLNK | 0o777, 0, 0), b"big".to_vec()),
        Item::File(h("bin/su", S_IFREG | 0o4755, 0, 0), b"#!su\n".to_vec()),
        Item::Dir(h("dev", S_IFDIR | 0o755, 0, 0)),
        Item::Special(dev("dev/console", S_IFCHR | 0o600, 5, 1)),
        Item::Special(h("dev/initctl", S_IFIFO | 0o600, 0, 0)),
        Item::Special(Header {
            gid: 6,
            ..dev("dev/loop0", S_IFBLK | 0o660, 7, 0)
        }),
        Item::Dir(h("etc", S_IFDIR | 0o755, 0, 0)),
        Item::File(h("etc/empty", S_IFREG | 0o644, 0, 0), Vec::new()),
        Item::Symlink(
            h("etc/mtab", S_IFLNK | 0o777, 0, 0),
            b"/proc/self/mounts".to_vec(),
        ),
        Item::File(h("etc/one", S_IFREG | 0o644, 0, 0), b"1".to_vec()),
        Item::File(h("etc/three", S_IFREG | 0o600, 0, 0), b"abc".to_vec()),
        Item::Dir(h("home", S_IFDIR | 0o755, 0, 0)),
        Item::Dir(h("home/user", S_IFDIR | 0o750, 1000, 1000)),
        Item::File(
            h("home/user/notes", S_IFREG | 0o640, 1000, 1000),
            b"mine\n".to_vec(),
        ),
        Item::Dir(h("run", S_IFDIR | 0o755, 0, 0)),
        Item::Special(h("run/sock", S_IFSOCK | 0o666, 0, 0)),
        Item::Dir(h("tmp", S_IFDIR | 0o1777, 0, 0)),
    ]
}

impl Item {
    fn headers_mut(&mut self) -> Vec<&mut Header> {
        match self {
            Item::Dir(h) | Item::File(h, _) | Item::Symlink(h, _) | Item::Special(h) => vec![h],
            Item::HardLinks(hs, _) => hs.iter_mut().collect(),
        }
    }

    /// The entries this item becomes, given its inode number.
    fn expected(&self, ino: u32) -> Vec<Expected> {
        let one = |header: &Header, nlink, data: &[u8]| Expected {
            header: header.clone(),
            ino,
            nlink,
            data: data.to_vec(),
        };
        match self {
            Item::Dir(h) => vec![one(h, 2, b"")],
            Item::Special(h) => vec![one(h, 1, b"")],
            Item::File(h, data) | Item::Symlink(h, data) => vec![one(h, 1, data)],
            Item::HardLinks(hs, data) => {
                let nlink = hs.len() as u32;
                let (last, rest) = hs.split_last().unwrap();
                let mut all: Vec<Expected> = rest.iter().map(|h| one(h, nlink, b"")).collect();
                all.push(one(last, nlink, data));
                all
            }
        }
    }

    pub fn write(&self, w: &mut Writer<Vec<u8>>) {
        let result = match self {
            Item::Dir(h) => w.dir(h),
            Item::File(h, data) => w.file(h, data.len() as u64, &mut &data[..]),
            Item::Symlink(h, target) => w.symlink(h, target),
            Item::Special(h) => w.special(h),
            Item::HardLinks(hs, data) => w.hardlinked_file(hs, data.len() as u64, &mut &data[..]),
        };
        result.unwrap();
    }
}

/// The sample items with distinct mtimes, in archive order.
pub fn sample() -> Vec<Item> {
    let mut items = items_without_mtimes();
    for (mtime, item) in (BASE_MTIME..).zip(&mut items) {
        for header in item.headers_mut() {
            header.mtime = mtime;
        }
    }
    items
}

/// The archive bytes for `items`.
pub fn write(items: &[Item]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    for item in items {
        item.write(&mut w);
    }
    w.finish().unwrap()
}

/// The entries `items` should produce, inodes numbered from 1 in item order.
pub fn expected(items: &[Item]) -> Vec<Expected> {
    (1..)
        .zip(items)
        .flat_map(|(ino, item)| item.expected(ino))
        .collect()
}

/// A small archive of one directory and one file, named after `prefix`.
pub fn small(prefix: &str) -> Vec<Item> {
    vec![
        Item::Dir(h(prefix, S_IFDIR | 0o755, 0, 0)),
        Item::File(
            h(&format!("{prefix}/file"), S_IFREG | 0o644, 0, 0),
            prefix.as_bytes().to_vec(),
        ),
    ]
}
