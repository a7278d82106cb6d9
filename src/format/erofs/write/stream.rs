//! The writer's output: the metadata area buffered in a window, the data area streamed out in
//! large chunks, and each inode's data (directory entries, symlink target, file content) read
//! once with its size checked.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::dir::{encode_dir, entries};
use super::plan::Slot;
use super::{Error, META_START};
use crate::tree::{Content, Kind, NodeId, Tree};

/// Settled metadata is written out in chunks of at least this size.
const META_BUF: usize = 1 << 20;
const DATA_BUF: usize = 8 << 20;

/// The metadata area, buffered from the lowest position a later record may still touch.
pub(super) struct MetaWindow<'f> {
    out: &'f File,
    /// Filesystem start in `out`.
    offset: u64,
    /// Filesystem position of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
}

impl<'f> MetaWindow<'f> {
    pub fn new(out: &'f File, offset: u64) -> Self {
        MetaWindow {
            out,
            offset,
            start: META_START,
            buf: Vec::new(),
        }
    }

    /// The `len` bytes at filesystem position `pos` (zeros until written).
    pub fn slice(&mut self, pos: u64, len: u64) -> &mut [u8] {
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
    pub fn settle(&mut self, pos: u64) -> Result<(), Error> {
        let n = (pos - self.start).min(self.buf.len() as u64) as usize;
        if n >= META_BUF {
            self.write_out(n)?;
        }
        Ok(())
    }

    /// Writes the rest, zero-padded up to `end`.
    pub fn finish(&mut self, end: u64) -> Result<(), Error> {
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
pub(super) struct Sink<'f> {
    out: &'f File,
    base: u64,
    buf: Vec<u8>,
    len: usize,
    flushed: u64,
}

impl<'f> Sink<'f> {
    pub fn new(out: &'f File, base: u64) -> Self {
        Sink {
            out,
            base,
            buf: vec![0; DATA_BUF],
            len: 0,
            flushed: 0,
        }
    }

    /// Bytes written so far, relative to `base`.
    pub fn pos(&self) -> u64 {
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
    pub fn pad_to(&mut self, pos: u64) -> Result<(), Error> {
        while self.pos() < pos {
            let left = pos - self.pos();
            let spare = self.spare()?;
            let n = left.min(spare.len() as u64) as usize;
            spare[..n].fill(0);
            self.commit(n);
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), Error> {
        self.out
            .write_all_at(&self.buf[..self.len], self.base + self.flushed)
            .map_err(Error::Write)?;
        self.flushed += self.len as u64;
        self.len = 0;
        Ok(())
    }
}

/// The data of one inode: directory entries, symlink target or file content.
pub(super) struct Source<'a> {
    reader: Box<dyn Read + 'a>,
    tree: &'a Tree,
    node: NodeId,
    size: u64,
}

impl<'a> Source<'a> {
    pub fn new(tree: &'a Tree, slot: &Slot, nids: &[u64]) -> Result<Source<'a>, Error> {
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
    pub fn copy_to(&mut self, sink: &mut Sink, mut len: u64) -> Result<(), Error> {
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

    pub fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<(), Error> {
        while !buf.is_empty() {
            match self.read(buf)? {
                0 => return Err(self.changed()),
                n => buf = &mut buf[n..],
            }
        }
        Ok(())
    }

    pub fn expect_eof(&mut self) -> Result<(), Error> {
        match self.read(&mut [0])? {
            0 => Ok(()),
            _ => Err(self.changed()),
        }
    }
}
