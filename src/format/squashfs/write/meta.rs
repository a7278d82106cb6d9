//! Metadata tables: a stream packed into 8 KiB blocks, compressed where that helps, and the
//! lookup tables (fragment, id, xattr id) that locate their blocks.

use super::{compress, compressor, Error};
use crate::format::squashfs::layout::{METADATA_SIZE, META_UNCOMPRESSED};
use zstd::bulk::Compressor;

/// Packs a byte stream into 8 KiB metadata blocks, each compressed when that helps and
/// preceded by its 2-byte header.
pub(super) struct MetaWriter {
    zstd: Compressor<'static>,
    out: Vec<u8>,
    pending: Vec<u8>,
    /// Start of every finished block, relative to the table.
    starts: Vec<u32>,
}

impl MetaWriter {
    pub(super) fn new(level: i32) -> Result<MetaWriter, Error> {
        Ok(MetaWriter {
            zstd: compressor(level)?,
            out: Vec::new(),
            pending: Vec::with_capacity(METADATA_SIZE),
            starts: Vec::new(),
        })
    }

    /// Where the next byte goes: its block's start in the table and its offset in the block.
    pub(super) fn pos(&self) -> (u32, u16) {
        // `flush` keeps the table under 4 GiB; the offset is below METADATA_SIZE.
        (self.out.len() as u32, self.pending.len() as u16)
    }

    /// Position of the next byte in the uncompressed stream.
    pub(super) fn stream_pos(&self) -> usize {
        self.starts.len() * METADATA_SIZE + self.pending.len()
    }

    pub(super) fn push(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        while !bytes.is_empty() {
            let take = bytes.len().min(METADATA_SIZE - self.pending.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == METADATA_SIZE {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.starts.push(self.out.len() as u32);
        match compress(&mut self.zstd, &self.pending)? {
            Some(packed) => {
                let header = packed.len() as u16;
                self.out.extend_from_slice(&header.to_le_bytes());
                self.out.extend_from_slice(&packed);
            }
            None => {
                let header = self.pending.len() as u16 | META_UNCOMPRESSED;
                self.out.extend_from_slice(&header.to_le_bytes());
                self.out.extend_from_slice(&self.pending);
            }
        }
        self.pending.clear();
        if u32::try_from(self.out.len()).is_err() {
            return Err(Error::Limit("a metadata table is over 4 GiB"));
        }
        Ok(())
    }

    /// The table bytes and the start of each block.
    pub(super) fn finish(mut self) -> Result<(Vec<u8>, Vec<u32>), Error> {
        if !self.pending.is_empty() {
            self.flush()?;
        }
        Ok((self.out, self.starts))
    }
}

/// Appends a lookup table (fragment, id or xattr id entries) to `tail`, which starts at
/// absolute position `base`: the entries' metadata blocks, then `header`, then the blocks'
/// locations. Returns where `header` starts.
pub(super) fn append_table(
    tail: &mut Vec<u8>,
    base: u64,
    entries: &[u8],
    header: &[u8],
    level: i32,
) -> Result<u64, Error> {
    let blocks_at = base + tail.len() as u64;
    let mut meta = MetaWriter::new(level)?;
    meta.push(entries)?;
    let (blocks, starts) = meta.finish()?;
    tail.extend_from_slice(&blocks);
    let header_at = base + tail.len() as u64;
    tail.extend_from_slice(header);
    for start in starts {
        tail.extend_from_slice(&(blocks_at + u64::from(start)).to_le_bytes());
    }
    Ok(header_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::squashfs::test_util::noise;

    /// Decodes a metadata table into its uncompressed blocks, with each block's start.
    fn meta_blocks(table: &[u8]) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < table.len() {
            let header = u16::from_le_bytes([table[pos], table[pos + 1]]);
            let len = usize::from(header & !META_UNCOMPRESSED);
            let raw = &table[pos + 2..pos + 2 + len];
            let block = if header & META_UNCOMPRESSED != 0 {
                raw.to_vec()
            } else {
                zstd::bulk::decompress(raw, METADATA_SIZE).unwrap()
            };
            out.push((pos, block));
            pos += 2 + len;
        }
        out
    }

    #[test]
    fn metadata_blocks_pack_and_reference() {
        let mut meta = MetaWriter::new(3).unwrap();
        meta.push(&[0; 5000]).unwrap();
        assert_eq!(meta.pos(), (0, 5000));
        meta.push(&[0; 5000]).unwrap();
        let first_len = meta.out.len() as u32;
        assert_eq!(meta.pos(), (first_len, 1808));
        assert_eq!(meta.stream_pos(), 10_000);
        meta.push(&[0; METADATA_SIZE - 1808]).unwrap();
        assert_eq!(meta.pos(), (meta.out.len() as u32, 0));
        let noise = noise(METADATA_SIZE, 7);
        meta.push(&noise).unwrap();
        meta.push(b"tail").unwrap();
        let (table, starts) = meta.finish().unwrap();
        let blocks = meta_blocks(&table);
        assert_eq!(
            starts,
            blocks.iter().map(|(s, _)| *s as u32).collect::<Vec<_>>()
        );
        assert_eq!(blocks.len(), 4);
        // Zeros compress; noise is stored as it is.
        assert!(first_len < 100);
        let third = &table[starts[2] as usize..][..2];
        assert_eq!(
            third,
            (METADATA_SIZE as u16 | META_UNCOMPRESSED).to_le_bytes()
        );
        let stream: Vec<u8> = blocks.into_iter().flat_map(|(_, b)| b).collect();
        let mut want = vec![0; 2 * METADATA_SIZE];
        want.extend_from_slice(&noise);
        want.extend_from_slice(b"tail");
        assert_eq!(stream, want);
    }
}
