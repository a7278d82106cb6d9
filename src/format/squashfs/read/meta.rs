//! The reader's byte access: checked reads below `bytes_used`, decompression (gzip, zstd),
//! metadata blocks (cached) and the metadata stream that spans them.

use std::rc::Rc;

use super::{ReadError, Reader};
use crate::format::blob::Blob;
use crate::format::squashfs::layout::{
    compression_name, meta_ref_parts, XattrValue, COMPRESSION_GZIP, COMPRESSION_ZSTD,
    METADATA_SIZE, META_UNCOMPRESSED,
};

const XATTR_VALUE_MAX: u32 = 65536;
/// Metadata blocks kept decompressed: every lookup walks the same directories again.
const META_CACHE: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compressor {
    Gzip,
    Zstd,
}

impl Compressor {
    pub(super) fn from_id(id: u16) -> Result<Compressor, ReadError> {
        match id {
            COMPRESSION_GZIP => Ok(Compressor::Gzip),
            COMPRESSION_ZSTD => Ok(Compressor::Zstd),
            _ => Err(ReadError::Compressor {
                id,
                name: compression_name(id),
            }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compressor::Gzip => "gzip",
            Compressor::Zstd => "zstd",
        }
    }

    /// Decompresses one block into at most `max` bytes.
    fn decompress(self, raw: &[u8], max: usize) -> Result<Vec<u8>, String> {
        match self {
            Compressor::Gzip => inflate(raw, max),
            Compressor::Zstd => zstd::bulk::decompress(raw, max).map_err(|e| e.to_string()),
        }
    }
}

/// A zlib stream (what squashfs calls gzip) of at most `max` bytes.
fn inflate(raw: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(max + 1);
    let mut z = flate2::Decompress::new(true);
    match z.decompress_vec(raw, &mut out, flate2::FlushDecompress::Finish) {
        Ok(flate2::Status::StreamEnd) if out.len() <= max => Ok(out),
        Ok(_) => Err(format!("truncated, or larger than {max} bytes")),
        Err(e) => Err(e.to_string()),
    }
}

/// A metadata block: its position, uncompressed bytes and the next block's position.
pub(super) struct CachedBlock {
    pos: u64,
    data: Rc<[u8]>,
    next: u64,
}

impl<'a, B: Blob + ?Sized> Reader<'a, B> {
    /// The metadata block at `pos`: its uncompressed bytes and where the next block starts.
    pub(super) fn meta_block(&self, pos: u64) -> Result<(Rc<[u8]>, u64), ReadError> {
        if let Some(c) = self.cache.borrow().iter().find(|c| c.pos == pos) {
            return Ok((c.data.clone(), c.next));
        }
        let header = u16::from_le_bytes(self.read_array(pos)?);
        let len = header & !META_UNCOMPRESSED;
        if len == 0 || usize::from(len) > METADATA_SIZE {
            let expected = "1..=8192";
            return Err(self.corrupt(pos, "metadata block size", len.into(), expected));
        }
        let raw = self.read(pos + 2, len.into())?;
        let data: Rc<[u8]> = match header & META_UNCOMPRESSED {
            0 => self.decompress(pos + 2, &raw, METADATA_SIZE)?.into(),
            _ => raw.into(),
        };
        let next = pos + 2 + u64::from(len);
        let mut cache = self.cache.borrow_mut();
        if cache.len() == META_CACHE {
            cache.remove(0);
        }
        cache.push(CachedBlock {
            pos,
            data: data.clone(),
            next,
        });
        Ok((data, next))
    }

    /// A metadata stream at `reference` (block << 16 | offset) of the table at `table`.
    pub(super) fn meta_at(&self, table: u64, reference: u64) -> Result<Meta<'_, 'a, B>, ReadError> {
        let (block, at) = meta_ref_parts(reference);
        Meta::new(self, table.saturating_add(block), at)
    }

    pub(super) fn decompress(
        &self,
        pos: u64,
        raw: &[u8],
        max: usize,
    ) -> Result<Vec<u8>, ReadError> {
        let c = self.compressor;
        c.decompress(raw, max)
            .map_err(|reason| ReadError::Decompress {
                pos: self.offset + pos,
                compressor: c.name(),
                reason,
            })
    }

    /// `len` bytes at filesystem position `pos`, all below `bytes_used`.
    pub(super) fn read(&self, pos: u64, len: u64) -> Result<Vec<u8>, ReadError> {
        let at = self.offset.saturating_add(pos);
        if pos
            .checked_add(len)
            .is_none_or(|end| end > self.sb.bytes_used)
        {
            return Err(ReadError::PastEnd {
                pos: at,
                len,
                end: self.offset + self.sb.bytes_used,
            });
        }
        self.blob
            .read_vec_at(at, len)
            .map_err(|source| ReadError::Io {
                pos: at,
                len,
                source,
            })
    }

    /// `N` bytes at filesystem position `pos`, all below `bytes_used`.
    pub(super) fn read_array<const N: usize>(&self, pos: u64) -> Result<[u8; N], ReadError> {
        let bytes = self.read(pos, N as u64)?;
        let mut out = [0; N];
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    pub(super) fn corrupt(
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
}

/// A stream of metadata bytes across consecutive metadata blocks.
pub(super) struct Meta<'r, 'a, B: Blob + ?Sized> {
    reader: &'r Reader<'a, B>,
    /// Filesystem position of the current block, for errors.
    block: u64,
    buf: Rc<[u8]>,
    at: usize,
    next: u64,
}

impl<'r, 'a, B: Blob + ?Sized> Meta<'r, 'a, B> {
    /// The stream from `offset` of the uncompressed block at `block`.
    pub(super) fn new(
        reader: &'r Reader<'a, B>,
        block: u64,
        offset: usize,
    ) -> Result<Self, ReadError> {
        let (buf, next) = reader.meta_block(block)?;
        if offset > buf.len() {
            let expected = "within the metadata block";
            return Err(reader.corrupt(block, "metadata offset", offset as u64, expected));
        }
        Ok(Meta {
            reader,
            block,
            buf,
            at: offset,
            next,
        })
    }

    /// Fills `out` from the stream; every block read moves forward in the image, so this ends.
    fn fill(&mut self, out: &mut [u8]) -> Result<(), ReadError> {
        let mut done = 0;
        while done < out.len() {
            if self.at == self.buf.len() {
                self.block = self.next;
                (self.buf, self.next) = self.reader.meta_block(self.next)?;
                self.at = 0;
            }
            let take = (out.len() - done).min(self.buf.len() - self.at);
            out[done..done + take].copy_from_slice(&self.buf[self.at..self.at + take]);
            (done, self.at) = (done + take, self.at + take);
        }
        Ok(())
    }

    /// The next `n` bytes (`n` is bounded by the caller).
    pub(super) fn bytes(&mut self, n: usize) -> Result<Vec<u8>, ReadError> {
        let mut out = vec![0; n];
        self.fill(&mut out)?;
        Ok(out)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let mut out = [0; N];
        self.fill(&mut out)?;
        Ok(out)
    }

    pub(super) fn u32(&mut self) -> Result<u32, ReadError> {
        self.array().map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Result<u64, ReadError> {
        self.array().map(u64::from_le_bytes)
    }

    /// A 4-byte size, then that many bytes (an xattr value).
    pub(super) fn sized_value(&mut self) -> Result<Vec<u8>, ReadError> {
        let len = XattrValue::parse(&self.array()?).size;
        if len > XATTR_VALUE_MAX {
            return Err(self.corrupt("xattr value size", len.into(), "at most 65536"));
        }
        self.bytes(len as usize)
    }

    pub(super) fn corrupt(
        &self,
        field: &'static str,
        value: u64,
        expected: &'static str,
    ) -> ReadError {
        self.reader.corrupt(self.block, field, value, expected)
    }
}
