//! The newc parser: walks the concatenated members of any `io::Read` the way the kernel
//! unpacks an initramfs, decompressing on the fly, and keeps each entry's data only where its
//! caller asks. [`list`] keeps symlink targets only, so memory stays bounded however large the
//! input, its members or its files (a decompression bomb is read through, not into memory);
//! [`crate::Reader`] keeps everything.

use std::io::{self, BufRead, BufReader, Read, Write};

use crate::decompress::{is_too_large, Codec};
use crate::error::ReadError;
use crate::format::{
    pad4, parse_name, verify_check, Checksum, Fault, Field, Problem, RawHeader, HEADER_LEN,
    TRAILER_NAME,
};
use crate::mode::{S_IFLNK, S_IFMT};
use crate::write::Header;

/// Largest entry data [`list`] keeps: a symlink target of up to PATH_MAX bytes.
pub const MAX_KEPT_DATA: u32 = 4096;

/// One archive entry (never the trailer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub raw: RawHeader,
    /// The name without its terminating NUL.
    pub name: Vec<u8>,
    /// The `c_filesize` bytes after the name: file content, or a symlink's target (empty
    /// where the data was not kept).
    pub data: Vec<u8>,
    /// Index of the member (plain archive or compressed stream) in the input, from 0.
    pub member: usize,
    /// Offset of the entry's header in its member: from the member's first byte for a plain
    /// member, in the decompressed bytes for a compressed one.
    pub offset: u64,
}

impl Entry {
    /// The writer-side description of this entry (with the raw mtime).
    pub fn header(&self) -> Header {
        Header {
            name: self.name.clone(),
            mode: self.raw.mode,
            uid: self.raw.uid,
            gid: self.raw.gid,
            mtime: self.raw.mtime.into(),
            rdev_major: self.raw.rdev_major,
            rdev_minor: self.raw.rdev_minor,
        }
    }
}

/// Calls `visit` with each entry of every member of `source`, in order, as [`crate::Reader`]
/// walks them (same members, offsets and errors), until it returns false. An entry's `data` is
/// kept only for a symlink of at most [`MAX_KEPT_DATA`] bytes; other data is read (and summed,
/// for `070702` archives) and dropped. A compressed member may decompress to at most `limit`
/// bytes.
pub fn list(
    source: impl Read,
    limit: u64,
    mut visit: impl FnMut(Entry) -> bool,
) -> Result<(), ReadError> {
    let source = BufReader::with_capacity(1 << 16, source);
    Walk {
        limit,
        whole_members: false,
        keep: short_symlink,
        visit: &mut visit,
    }
    .run(source)
}

fn short_symlink(raw: &RawHeader) -> bool {
    raw.mode & S_IFMT == S_IFLNK && raw.filesize <= MAX_KEPT_DATA
}

/// One walk over an input: between members, runs of NUL bytes are skipped; a plain archive
/// must start at a multiple of 4 bytes in the input and ends with its trailer; a compressed
/// member is one zstd frame or gzip member whose content is one or more archives, again
/// separated by NUL padding.
pub(crate) struct Walk<'v> {
    /// Cap on the decompressed size of each compressed member.
    pub(crate) limit: u64,
    /// Whether a compressed member is decompressed whole, into memory, before its entries are
    /// read (then a corrupt or oversized member yields none of them).
    pub(crate) whole_members: bool,
    /// Whether to keep the data of the entry with this header.
    pub(crate) keep: fn(&RawHeader) -> bool,
    /// Called with each entry in order; false stops the walk.
    pub(crate) visit: &'v mut dyn FnMut(Entry) -> bool,
}

/// Why reading a member stopped early: malformed content (at an offset in the member), or
/// the input or decompressor failed.
enum Stop {
    Fault(Fault),
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Stop {
        Stop::Io(e)
    }
}

impl From<Fault> for Stop {
    fn from(f: Fault) -> Stop {
        Stop::Fault(f)
    }
}

impl Stop {
    fn locate(self, member: usize, io: impl FnOnce(io::Error) -> ReadError) -> ReadError {
        match self {
            Stop::Fault(fault) => fault.locate(member),
            Stop::Io(e) => io(e),
        }
    }
}

fn io_error(input_offset: u64) -> impl FnOnce(io::Error) -> ReadError {
    move |source| ReadError::Io {
        input_offset,
        source,
    }
}

impl Walk<'_> {
    pub(crate) fn run(&mut self, source: impl BufRead) -> Result<(), ReadError> {
        let mut input = Counted::new(source);
        let mut member = 0;
        loop {
            skip_zeros(&mut input).map_err(io_error(input.pos))?;
            let start = input.pos;
            let Some(&first) = input.fill_buf().map_err(io_error(start))?.first() else {
                return Ok(());
            };
            let more = match first {
                b'0' => self.plain(&mut input, member)?,
                _ => self.compressed(&mut input, member)?,
            };
            if !more {
                return Ok(());
            }
            member += 1;
        }
    }

    /// Reads the plain archive at the input's position; false if `visit` asked to stop.
    fn plain(
        &mut self,
        input: &mut Counted<impl BufRead>,
        member: usize,
    ) -> Result<bool, ReadError> {
        let start = input.pos;
        if !start.is_multiple_of(4) {
            return Err(ReadError::MisalignedMember {
                member,
                input_offset: start,
            });
        }
        let mut body = Counted::new(input);
        self.archive(&mut body, member)
            .map_err(|stop| stop.locate(member, io_error(start + body.pos)))
    }

    /// Reads the compressed member at the input's position; false if `visit` asked to stop.
    fn compressed(
        &mut self,
        input: &mut Counted<impl BufRead>,
        member: usize,
    ) -> Result<bool, ReadError> {
        let start = input.pos;
        let mut magic = [0; 4];
        let n = read_full(input, &mut magic).map_err(io_error(start))?;
        let Some(codec) = Codec::detect(&magic[..n]) else {
            return Err(ReadError::UnknownMember {
                input_offset: start,
            });
        };
        let limit = self.limit;
        let decoder = codec.decoder((&magic[..n]).chain(input), limit);
        let result = decoder
            .map_err(Stop::Io)
            .and_then(|d| self.content(d, member));
        result.map_err(|stop| {
            stop.locate(member, |source| {
                if is_too_large(&source) {
                    ReadError::TooLarge {
                        member,
                        input_offset: start,
                        limit,
                    }
                } else {
                    ReadError::Decompress {
                        member,
                        input_offset: start,
                        source,
                    }
                }
            })
        })
    }

    /// A compressed member's content, from its decoder.
    fn content(&mut self, mut decoder: impl Read, member: usize) -> Result<bool, Stop> {
        if !self.whole_members {
            let body = BufReader::with_capacity(1 << 16, decoder);
            return self.archives(Counted::new(body), member);
        }
        let mut content = Vec::new();
        decoder.read_to_end(&mut content)?;
        self.archives(Counted::new(&content[..]), member)
    }

    /// Archives separated by NUL padding, up to the end of `body`.
    fn archives(&mut self, mut body: Counted<impl BufRead>, member: usize) -> Result<bool, Stop> {
        loop {
            if !self.archive(&mut body, member)? {
                return Ok(false);
            }
            skip_zeros(&mut body)?;
            if body.fill_buf()?.is_empty() {
                return Ok(true);
            }
            if !body.pos.is_multiple_of(4) {
                return Err(Fault::misaligned(body.pos).into());
            }
        }
    }

    /// Reads one archive's records through its trailer; false if `visit` asked to stop.
    fn archive(&mut self, r: &mut Counted<impl Read>, member: usize) -> Result<bool, Stop> {
        loop {
            let offset = r.pos;
            let record = self.record(r, member, offset).map_err(|stop| match stop {
                Stop::Fault(fault) => Stop::Fault(fault.shifted(offset)),
                io => io,
            })?;
            let Some(entry) = record else {
                return Ok(true);
            };
            if !(self.visit)(entry) {
                return Ok(false);
            }
        }
    }

    /// Reads the record at `offset` of `member`: the entry, its data kept or not, or `None`
    /// for the trailer. Fault offsets count from the record's first byte.
    fn record(&self, r: &mut impl Read, member: usize, offset: u64) -> Result<Option<Entry>, Stop> {
        let (raw, crc) = read_header(r)?;
        let mut name = vec![0; raw.namesize as usize];
        if read_full(r, &mut name)? < name.len() {
            return Err(Fault::at(Problem::Truncated, Field::Name).into());
        }
        let name = parse_name(name)?;
        let name_end = (HEADER_LEN + name.len() + 1) as u64;
        let padded = name_end + pad4(name_end) as u64;
        let data_start = name_end + skip(r, padded - name_end, &mut io::sink())?;
        if data_start < padded && raw.filesize > 0 {
            return Err(Fault::truncated_data(data_start).into());
        }
        let (data, sum) = read_data(r, raw.filesize, (self.keep)(&raw), data_start)?;
        if crc {
            verify_check(&raw, sum)?;
        }
        let data_end = data_start + u64::from(raw.filesize);
        skip(r, pad4(data_end) as u64, &mut io::sink())?;
        Ok((name != TRAILER_NAME).then_some(Entry {
            raw,
            name,
            data,
            member,
            offset,
        }))
    }
}

/// Reads and checks a header (a record with no byte is a missing trailer); returns it and
/// whether its data must sum to its check field.
fn read_header(r: &mut impl Read) -> Result<(RawHeader, bool), Stop> {
    let mut header = [0; HEADER_LEN];
    let fault = match read_full(r, &mut header)? {
        0 => Fault::at(Problem::MissingTrailer, Field::Magic),
        n if n < HEADER_LEN => Fault::at(Problem::Truncated, Field::cut_at(n)),
        _ => return Ok(RawHeader::parse(&header)?),
    };
    Err(fault.into())
}

/// Reads `size` bytes of data starting at `start` in the record, summing them; returns them
/// if `keep`, else nothing. Kept data grows with what is read, not with `size`.
fn read_data(
    r: &mut impl Read,
    size: u32,
    keep: bool,
    start: u64,
) -> Result<(Vec<u8>, Checksum), Stop> {
    let (mut data, mut sum) = (Vec::new(), Checksum::default());
    let mut bytes = r.take(size.into());
    let read = if keep {
        bytes.read_to_end(&mut data)?;
        sum.write_all(&data)?;
        data.len() as u64
    } else {
        io::copy(&mut bytes, &mut sum)?
    };
    if read < size.into() {
        return Err(Fault::truncated_data(start).into());
    }
    Ok((data, sum))
}

/// Reads until `buf` is full or the input ends; the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Passes up to `len` bytes of `r` to `to`; the number of bytes there were.
fn skip(r: &mut impl Read, len: u64, to: &mut impl Write) -> io::Result<u64> {
    io::copy(&mut r.take(len), to)
}

fn skip_zeros(r: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = r.fill_buf()?;
        let zeros = buf.iter().take_while(|&&b| b == 0).count();
        let done = zeros < buf.len() || buf.is_empty();
        r.consume(zeros);
        if done {
            return Ok(());
        }
    }
}

/// A reader that counts the bytes taken from it.
struct Counted<R> {
    inner: R,
    pos: u64,
}

impl<R> Counted<R> {
    fn new(inner: R) -> Self {
        Counted { inner, pos: 0 }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.pos += n as u64;
        self.inner.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::tests::header;
    use crate::{Reader, Writer};

    fn archive(content: &[u8]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.dir(&header("d", 0o40755)).unwrap();
        let h = header("d/f", 0o100644);
        w.file(&h, content.len() as u64, &mut &content[..]).unwrap();
        w.symlink(&header("d/l", 0o120777), b"f").unwrap();
        w.finish().unwrap()
    }

    fn listed(input: &[u8], limit: u64) -> (Vec<Entry>, Option<ReadError>) {
        let mut v = Vec::new();
        let r = list(input, limit, |e| {
            v.push(e);
            true
        });
        (v, r.err())
    }

    /// What `Reader` gives, with data dropped as `list` drops it.
    fn expected(input: &[u8]) -> (Vec<Entry>, Option<String>) {
        let mut v = Vec::new();
        for item in Reader::new(input) {
            match item {
                Ok(mut e) => {
                    if e.raw.mode & S_IFMT != S_IFLNK {
                        e.data.clear();
                    }
                    v.push(e);
                }
                Err(e) => return (v, Some(e.to_string())),
            }
        }
        (v, None)
    }

    #[test]
    fn lists_what_the_reader_reads_without_the_data() {
        let one = archive(b"hello");
        let zst =
            zstd::encode_all(&[one.clone(), vec![0; 8], one.clone()].concat()[..], 3).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&archive(&[9; 70_000])).unwrap();
        let gz = gz.finish().unwrap();
        let pad = |v: &[u8]| vec![0; 4 + pad4(v.len() as u64)];
        let input = [
            one.clone(),
            zst.clone(),
            pad(&zst),
            gz.clone(),
            pad(&gz),
            one,
        ]
        .concat();
        let (entries, err) = listed(&input, 1 << 20);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(entries, expected(&input).0);
        assert_eq!(entries.len(), 15);
        assert_eq!(entries[2].data, b"f");
        assert_eq!(entries[10].raw.filesize, 70_000);
        // Every cut gives the reader's error (or none, where the reader has none); streaming,
        // the entries of a compressed member before the cut come first.
        for cut in (0..input.len()).step_by(7) {
            let (entries, err) = listed(&input[..cut], 1 << 20);
            let (want, want_err) = expected(&input[..cut]);
            assert!(entries.starts_with(&want), "cut at {cut}");
            match (err, want_err) {
                (Some(ReadError::Decompress { .. }), Some(w)) => {
                    assert!(w.contains("input offset"), "cut at {cut}: {w}")
                }
                (err, want_err) => {
                    assert_eq!(entries, want, "cut at {cut}");
                    assert_eq!(err.map(|e| e.to_string()), want_err, "cut at {cut}");
                }
            }
        }
        let (_, err) = listed(&input, 1000);
        assert!(
            matches!(
                err,
                Some(ReadError::TooLarge {
                    member: 2,
                    limit: 1000,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn stops_when_asked() {
        let input = archive(b"x");
        let mut n = 0;
        list(&input[..], 1 << 20, |_| {
            n += 1;
            false
        })
        .unwrap();
        assert_eq!(n, 1);
    }
}
