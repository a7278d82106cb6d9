//! Random-access byte sources (image files, block devices, in-memory buffers) for the format readers.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub trait Blob {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;

    /// Reads `len` bytes at `offset`, refusing ranges past the end without allocating for them.
    fn read_vec_at(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let size = self.size()?;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("range {offset}+{len} is past the end"),
            ));
        }
        let mut buf = vec![0; len as usize];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

impl Blob for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        let md = self.metadata()?;
        if md.file_type().is_file() {
            return Ok(md.len());
        }
        // Block devices report 0 in st_size: ask for the end.
        use std::io::Seek;
        let mut f = self;
        f.seek(io::SeekFrom::End(0))
    }
}

impl Blob for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}
