//! Streaming newc writer: validates each entry, renumbers inodes from 1 and writes header,
//! name and data with 4-byte padding, in exactly the order the caller gives.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use crate::format::{pad4, Field, RawHeader, MAX_NAME_SIZE, TRAILER_NAME};
use crate::mode::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK};
use crate::order::clamp_mtime;

/// Longest symlink target Linux stores (PATH_MAX less the NUL).
const MAX_TARGET_LEN: usize = MAX_NAME_SIZE - 1;

/// Metadata of one archive entry as the caller describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// Path relative to the archive root, without a leading `/` (for example `usr/bin/sh`).
    pub name: Vec<u8>,
    /// Full `st_mode`: file type bits (see [`crate::mode`]) and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch; must fit in 32 bits after clamping.
    pub mtime: u64,
    /// Device number of a character or block device; 0 for other types.
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("{}: {field} value {value} does not fit in 32 bits", String::from_utf8_lossy(.name))]
    FieldOverflow {
        name: Vec<u8>,
        field: Field,
        value: u64,
    },
    #[error("invalid entry name {:?}: {reason}", String::from_utf8_lossy(.name))]
    InvalidName { name: Vec<u8>, reason: &'static str },
    #[error("{}: mode {mode:#o} is not {expected}", String::from_utf8_lossy(.name))]
    WrongType {
        name: Vec<u8>,
        mode: u32,
        expected: &'static str,
    },
    #[error("{}: invalid symlink target: {reason}", String::from_utf8_lossy(.name))]
    InvalidTarget { name: Vec<u8>, reason: &'static str },
    #[error("{}: data source ended after {actual} of {expected} bytes", String::from_utf8_lossy(.name))]
    ShortData {
        name: Vec<u8>,
        expected: u64,
        actual: u64,
    },
    #[error("{}: data source has more than {expected} bytes", String::from_utf8_lossy(.name))]
    LongData { name: Vec<u8>, expected: u64 },
    #[error("hard link group has no names")]
    EmptyLinkGroup,
    #[error("{}: hard link metadata differs from {}", String::from_utf8_lossy(.name), String::from_utf8_lossy(.first))]
    LinkMismatch { name: Vec<u8>, first: Vec<u8> },
    #[error("archive is incomplete after an earlier I/O or data size error")]
    Poisoned,
}

/// Writes a newc archive to `W`, one entry per call, then the trailer on [`Writer::finish`].
///
/// Validation errors (name, mode, field overflow) leave the writer usable: nothing was written.
/// An I/O error or a data source of the wrong size leaves a partial entry behind; every later
/// call then fails with [`WriteError::Poisoned`].
pub struct Writer<W: Write> {
    out: W,
    next_ino: u32,
    /// Link groups written with [`Writer::link_member`]: caller key -> (inode, first header).
    links: HashMap<u64, (u32, Header)>,
    source_date_epoch: Option<u64>,
    poisoned: bool,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer {
            out,
            next_ino: 1,
            links: HashMap::new(),
            source_date_epoch: None,
            poisoned: false,
        }
    }

    /// Clamps every later entry's mtime to `source_date_epoch` (see [`clamp_mtime`]).
    pub fn with_source_date_epoch(mut self, source_date_epoch: u64) -> Self {
        self.source_date_epoch = Some(source_date_epoch);
        self
    }

    /// A regular file whose content is exactly `size` bytes read from `data`.
    pub fn file(&mut self, h: &Header, size: u64, data: &mut dyn Read) -> Result<(), WriteError> {
        check_type(h, &[S_IFREG], "a regular file")?;
        self.entry(h, 1, size, data)
    }

    /// One regular file under several names (hard links), given in archive order.
    ///
    /// All names share one inode number and nlink = `headers.len()`. As GNU cpio does for
    /// newc, every entry but the last has size 0 and the last carries the `size` bytes of
    /// `data`. The headers must differ only in their names.
    pub fn hardlinked_file(
        &mut self,
        headers: &[Header],
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), WriteError> {
        let (last, rest) = headers.split_last().ok_or(WriteError::EmptyLinkGroup)?;
        let nlink = fit(&last.name, Field::Nlink, headers.len() as u64)?;
        let mut raws = Vec::with_capacity(headers.len());
        for (i, h) in headers.iter().enumerate() {
            check_type(h, &[S_IFREG], "a regular file")?;
            check_same_inode(h, &headers[0])?;
            let filesize = if i == rest.len() { size } else { 0 };
            raws.push(self.raw(h, nlink, filesize)?);
        }
        let ino = self.take_ino(&last.name)?;
        for (raw, h) in raws.iter().zip(rest) {
            self.put(RawHeader { ino, ..*raw }, &h.name, 0, &mut io::empty())?;
        }
        let last_raw = RawHeader {
            ino,
            ..raws[rest.len()]
        };
        self.put(last_raw, &last.name, size, data)
    }

    /// One name of a hard-link group, written at its own place in the archive (so entries can
    /// stay sorted). `group` is any caller key for the shared inode and `nlink` the number of
    /// names. Earlier names are written with size 0; the last one carries the content, passed
    /// as `data = Some((size, reader))`, as GNU cpio does and the kernel's unpacker expects.
    pub fn link_member(
        &mut self,
        h: &Header,
        group: u64,
        nlink: u32,
        data: Option<(u64, &mut dyn Read)>,
    ) -> Result<(), WriteError> {
        check_type(h, &[S_IFREG], "a regular file")?;
        if let Some((_, first)) = self.links.get(&group) {
            check_same_inode(h, first)?;
        }
        let size = data.as_ref().map_or(0, |(size, _)| *size);
        let raw = self.raw(h, nlink, size)?;
        let ino = match self.links.get(&group) {
            Some(&(ino, _)) => ino,
            None => {
                let ino = self.take_ino(&h.name)?;
                self.links.insert(group, (ino, h.clone()));
                ino
            }
        };
        let raw = RawHeader { ino, ..raw };
        match data {
            Some((size, reader)) => self.put(raw, &h.name, size, reader),
            None => self.put(raw, &h.name, 0, &mut io::empty()),
        }
    }

    pub fn dir(&mut self, h: &Header) -> Result<(), WriteError> {
        check_type(h, &[S_IFDIR], "a directory")?;
        self.entry(h, 2, 0, &mut io::empty())
    }

    /// A symbolic link; `target` is stored as the entry's data, without a NUL.
    pub fn symlink(&mut self, h: &Header, target: &[u8]) -> Result<(), WriteError> {
        check_type(h, &[S_IFLNK], "a symlink")?;
        check_target(&h.name, target)?;
        self.entry(h, 1, target.len() as u64, &mut &target[..])
    }

    /// A character or block device, fifo or socket: metadata only, nothing is created.
    pub fn special(&mut self, h: &Header) -> Result<(), WriteError> {
        let types = [S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK];
        check_type(h, &types, "a device, fifo or socket")?;
        self.entry(h, 1, 0, &mut io::empty())
    }

    /// Writes the `TRAILER!!!` entry (padded to 4 bytes), flushes and returns the output.
    pub fn finish(mut self) -> Result<W, WriteError> {
        let trailer = RawHeader {
            nlink: 1,
            namesize: TRAILER_NAME.len() as u32 + 1,
            ..RawHeader::default()
        };
        self.put(trailer, TRAILER_NAME, 0, &mut io::empty())?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Writes a single-name entry under a fresh inode number.
    fn entry(
        &mut self,
        h: &Header,
        nlink: u32,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), WriteError> {
        let raw = self.raw(h, nlink, size)?;
        let ino = self.take_ino(&h.name)?;
        self.put(RawHeader { ino, ..raw }, &h.name, size, data)
    }

    /// Validates `h` and builds its header, with inode 0 until [`Writer::take_ino`].
    fn raw(&self, h: &Header, nlink: u32, filesize: u64) -> Result<RawHeader, WriteError> {
        check_name(&h.name)?;
        let mtime = clamp_mtime(h.mtime, self.source_date_epoch);
        Ok(RawHeader {
            ino: 0,
            mode: h.mode,
            uid: h.uid,
            gid: h.gid,
            nlink,
            mtime: fit(&h.name, Field::Mtime, mtime)?,
            filesize: fit(&h.name, Field::FileSize, filesize)?,
            dev_major: 0,
            dev_minor: 0,
            rdev_major: h.rdev_major,
            rdev_minor: h.rdev_minor,
            namesize: h.name.len() as u32 + 1,
            check: 0,
        })
    }

    fn take_ino(&mut self, name: &[u8]) -> Result<u32, WriteError> {
        let ino = self.next_ino;
        self.next_ino = ino
            .checked_add(1)
            .ok_or_else(|| overflow(name, Field::Ino, u64::from(ino) + 1))?;
        Ok(ino)
    }

    /// Writes header, name, `size` bytes of `data` and padding.
    fn put(
        &mut self,
        raw: RawHeader,
        name: &[u8],
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), WriteError> {
        if self.poisoned {
            return Err(WriteError::Poisoned);
        }
        self.poisoned = true;
        let mut head = Vec::with_capacity(128 + name.len());
        raw.encode(&mut head);
        head.extend_from_slice(name);
        head.push(0);
        head.resize(head.len() + pad4(head.len() as u64), 0);
        self.out.write_all(&head)?;
        copy_exact(name, data, size, &mut self.out)?;
        self.out.write_all(&[0; 3][..pad4(size)])?;
        self.poisoned = false;
        Ok(())
    }
}

/// Copies exactly `size` bytes from `data`, failing if it has fewer or more.
fn copy_exact(
    name: &[u8],
    data: &mut dyn Read,
    size: u64,
    out: &mut dyn Write,
) -> Result<(), WriteError> {
    let copied = io::copy(&mut data.take(size), out)?;
    if copied < size {
        return Err(WriteError::ShortData {
            name: name.to_vec(),
            expected: size,
            actual: copied,
        });
    }
    if !at_eof(data)? {
        return Err(WriteError::LongData {
            name: name.to_vec(),
            expected: size,
        });
    }
    Ok(())
}

fn at_eof(data: &mut dyn Read) -> io::Result<bool> {
    let mut probe = [0u8; 1];
    loop {
        match data.read(&mut probe) {
            Ok(n) => return Ok(n == 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn overflow(name: &[u8], field: Field, value: u64) -> WriteError {
    WriteError::FieldOverflow {
        name: name.to_vec(),
        field,
        value,
    }
}

fn fit(name: &[u8], field: Field, value: u64) -> Result<u32, WriteError> {
    u32::try_from(value).map_err(|_| overflow(name, field, value))
}

fn check_name(name: &[u8]) -> Result<(), WriteError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains(&0) {
        "contains a NUL byte"
    } else if name[0] == b'/' {
        "absolute (starts with /)"
    } else if name == TRAILER_NAME {
        "reserved for the archive trailer"
    } else if name.len() >= MAX_NAME_SIZE {
        "longer than 4095 bytes"
    } else {
        return Ok(());
    };
    Err(WriteError::InvalidName {
        name: name.to_vec(),
        reason,
    })
}

fn check_target(name: &[u8], target: &[u8]) -> Result<(), WriteError> {
    let reason = if target.is_empty() {
        "empty"
    } else if target.contains(&0) {
        "contains a NUL byte"
    } else if target.len() > MAX_TARGET_LEN {
        "longer than 4095 bytes"
    } else {
        return Ok(());
    };
    Err(WriteError::InvalidTarget {
        name: name.to_vec(),
        reason,
    })
}

/// Checks that `h.mode` is a valid `st_mode` whose type is one of `types`.
fn check_type(h: &Header, types: &[u32], expected: &'static str) -> Result<(), WriteError> {
    let valid = h.mode & !(S_IFMT | 0o7777) == 0 && types.contains(&(h.mode & S_IFMT));
    if valid {
        return Ok(());
    }
    Err(WriteError::WrongType {
        name: h.name.clone(),
        mode: h.mode,
        expected,
    })
}

fn check_same_inode(h: &Header, first: &Header) -> Result<(), WriteError> {
    let same = Header {
        name: first.name.clone(),
        ..h.clone()
    } == *first;
    if same {
        return Ok(());
    }
    Err(WriteError::LinkMismatch {
        name: h.name.clone(),
        first: first.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, mode: u32) -> Header {
        Header {
            name: name.into(),
            mode,
            mtime: 1_700_000_000,
            ..Header::default()
        }
    }

    fn written(f: impl FnOnce(&mut Writer<Vec<u8>>) -> Result<(), WriteError>) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        f(&mut w).unwrap();
        w.finish().unwrap()
    }

    /// The hex field at `index` (0 = c_ino) of the header starting at `at`.
    fn field(archive: &[u8], at: usize, index: usize) -> u32 {
        let start = at + 6 + 8 * index;
        u32::from_str_radix(std::str::from_utf8(&archive[start..start + 8]).unwrap(), 16).unwrap()
    }

    #[test]
    fn link_members_share_an_inode_across_other_entries() {
        let out = written(|w| {
            w.link_member(&header("a", 0o100755), 9, 2, None)?;
            w.file(&header("b", 0o100644), 1, &mut &b"x"[..])?;
            w.link_member(&header("c", 0o100755), 9, 2, Some((3, &mut &b"abc"[..])))
        });
        let entries: Vec<_> = crate::Reader::new(&out).map(|e| e.unwrap()).collect();
        let (a, b, c) = (&entries[0].raw, &entries[1].raw, &entries[2].raw);
        assert_eq!((a.ino, a.nlink, a.filesize), (1, 2, 0));
        assert_eq!((b.ino, b.nlink), (2, 1));
        assert_eq!((c.ino, c.nlink, c.filesize), (1, 2, 3));
        assert_eq!(entries[2].data, b"abc");
        let mut w = Writer::new(Vec::new());
        w.link_member(&header("a", 0o100755), 1, 2, None).unwrap();
        let other = w.link_member(&header("b", 0o100644), 1, 2, None);
        assert!(matches!(other, Err(WriteError::LinkMismatch { .. })));
    }

    #[test]
    fn empty_archive_is_only_the_padded_trailer() {
        let out = written(|_| Ok(()));
        let mut expected = b"070701".to_vec();
        for v in [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0] {
            expected.extend(format!("{v:08X}").bytes());
        }
        expected.extend(b"TRAILER!!!\0\0\0\0");
        assert_eq!(out, expected);
        assert_eq!(out.len(), 124);
    }

    #[test]
    fn pads_name_and_data_to_four_bytes() {
        // 110 + "ab\0" = 113 -> 3 bytes of padding; data "xyzuv" = 5 -> 3 bytes of padding.
        let out = written(|w| w.file(&header("ab", 0o100644), 5, &mut &b"xyzuv"[..]));
        assert_eq!(&out[110..116], b"ab\0\0\0\0");
        assert_eq!(&out[116..124], b"xyzuv\0\0\0");
        assert_eq!(&out[124..130], b"070701");
        // 110 + "abc\0" = 114 -> 2 bytes; empty data -> none.
        let out = written(|w| w.file(&header("abc", 0o100644), 0, &mut io::empty()));
        assert_eq!(&out[110..116], b"abc\0\0\0");
        assert_eq!(&out[116..122], b"070701");
    }

    #[test]
    fn numbers_inodes_from_one_and_sets_nlink_by_type() {
        let out = written(|w| {
            w.dir(&header("d", 0o40755))?;
            w.symlink(&header("d/l", 0o120777), b"x")?;
            let links = [header("d/a", 0o100644), header("d/b", 0o100644)];
            w.hardlinked_file(&links, 2, &mut &b"hi"[..])?;
            w.special(&header("d/p", 0o10644))
        });
        // Entry offsets: "d" takes 112 bytes, "d/l" 116 + 4 of data, "d/a" 116, "d/b" 116 + 4.
        let starts = [0, 112, 232, 348, 468];
        let fields: Vec<(u32, u32, u32)> = starts
            .iter()
            .map(|&s| (field(&out, s, 0), field(&out, s, 4), field(&out, s, 6)))
            .collect();
        // (ino, nlink, filesize)
        assert_eq!(
            fields,
            [(1, 2, 0), (2, 1, 1), (3, 2, 0), (3, 2, 2), (4, 1, 0)]
        );
        assert_eq!(&out[348 + 110..348 + 120], b"d/b\0\0\0hi\0\0");
    }

    #[test]
    fn clamps_mtime_to_source_date_epoch() {
        let mut w = Writer::new(Vec::new()).with_source_date_epoch(1000);
        w.dir(&header("d", 0o40755)).unwrap();
        w.dir(&Header {
            mtime: 999,
            ..header("e", 0o40755)
        })
        .unwrap();
        let out = w.finish().unwrap();
        assert_eq!(field(&out, 0, 5), 1000);
        assert_eq!(field(&out, 112, 5), 999);
    }

    #[test]
    fn rejects_bad_names_without_writing() {
        let long = "x".repeat(MAX_NAME_SIZE);
        let ok_len = "x".repeat(MAX_NAME_SIZE - 1);
        let mut w = Writer::new(Vec::new());
        for name in ["", "/abs", "a\0b", "TRAILER!!!", &long] {
            let err = w.dir(&header(name, 0o40755)).unwrap_err();
            assert!(
                matches!(err, WriteError::InvalidName { .. }),
                "{name:?}: {err}"
            );
        }
        w.dir(&header(&ok_len, 0o40755)).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(
            field(&out, 0, 0),
            1,
            "rejected entries used no inode number"
        );
        assert_eq!(field(&out, 0, 11), MAX_NAME_SIZE as u32);
    }

    #[test]
    fn rejects_wrong_types_and_modes() {
        let mut w = Writer::new(Vec::new());
        let cases: Vec<Result<(), WriteError>> = vec![
            w.dir(&header("a", 0o100644)),
            w.file(&header("a", 0o40755), 0, &mut io::empty()),
            w.symlink(&header("a", 0o100777), b"x"),
            w.special(&header("a", 0o100644)),
            w.special(&header("a", 0o20644 | 0o1000000)),
            w.file(&header("a", 0o644), 0, &mut io::empty()),
        ];
        for r in cases {
            assert!(matches!(r, Err(WriteError::WrongType { .. })), "{r:?}");
        }
        assert_eq!(w.finish().unwrap().len(), 124);
    }

    #[test]
    fn rejects_bad_symlink_targets() {
        let mut w = Writer::new(Vec::new());
        let long = vec![b'x'; MAX_TARGET_LEN + 1];
        for target in [&b""[..], b"a\0b", &long] {
            let err = w.symlink(&header("l", 0o120777), target).unwrap_err();
            assert!(matches!(err, WriteError::InvalidTarget { .. }), "{err}");
        }
        w.symlink(&header("l", 0o120777), &long[1..]).unwrap();
    }

    #[test]
    fn overflowing_fields_are_typed_errors() {
        let mut w = Writer::new(Vec::new());
        let err = w
            .file(&header("big", 0o100644), 1 << 32, &mut io::empty())
            .unwrap_err();
        assert!(matches!(
            err,
            WriteError::FieldOverflow { field: Field::FileSize, value, .. } if value == 1 << 32
        ));
        let late = Header {
            mtime: 1 << 32,
            ..header("late", 0o40755)
        };
        let err = w.dir(&late).unwrap_err();
        assert!(matches!(
            err,
            WriteError::FieldOverflow {
                field: Field::Mtime,
                ..
            }
        ));
        assert_eq!(w.finish().unwrap().len(), 124);
    }

    #[test]
    fn inode_numbers_overflow_as_typed_error() {
        let mut w = Writer::new(Vec::new());
        w.next_ino = u32::MAX;
        let err = w.dir(&header("d", 0o40755)).unwrap_err();
        assert!(matches!(
            err,
            WriteError::FieldOverflow {
                field: Field::Ino,
                ..
            }
        ));
    }

    #[test]
    fn wrong_data_size_poisons_the_writer() {
        let mut w = Writer::new(Vec::new());
        let err = w
            .file(&header("f", 0o100644), 4, &mut &b"abc"[..])
            .unwrap_err();
        assert!(matches!(
            err,
            WriteError::ShortData {
                expected: 4,
                actual: 3,
                ..
            }
        ));
        let err = w.dir(&header("d", 0o40755)).unwrap_err();
        assert!(matches!(err, WriteError::Poisoned));
        assert!(matches!(w.finish(), Err(WriteError::Poisoned)));

        let mut w = Writer::new(Vec::new());
        let err = w
            .file(&header("f", 0o100644), 2, &mut &b"abc"[..])
            .unwrap_err();
        assert!(matches!(err, WriteError::LongData { expected: 2, .. }));
        assert!(matches!(w.finish(), Err(WriteError::Poisoned)));
    }

    #[test]
    fn hard_link_groups_are_validated() {
        let mut w = Writer::new(Vec::new());
        let err = w.hardlinked_file(&[], 0, &mut io::empty()).unwrap_err();
        assert!(matches!(err, WriteError::EmptyLinkGroup));
        let mismatched = [
            header("a", 0o100644),
            Header {
                uid: 1,
                ..header("b", 0o100644)
            },
        ];
        let err = w
            .hardlinked_file(&mismatched, 0, &mut io::empty())
            .unwrap_err();
        assert!(matches!(err, WriteError::LinkMismatch { .. }), "{err}");
        assert_eq!(w.finish().unwrap().len(), 124);
    }

    #[test]
    fn io_errors_surface_and_poison() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = Writer::new(Full);
        let err = w.dir(&header("d", 0o40755)).unwrap_err();
        assert!(matches!(err, WriteError::Io(_)));
        assert!(matches!(w.finish(), Err(WriteError::Poisoned)));
    }
}
