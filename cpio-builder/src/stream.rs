//! Streaming listing: the entries of concatenated members read from any `io::Read`,
//! decompressed on the fly with file contents skipped, so memory stays bounded however large
//! the input, its members or its files (a decompression bomb is read through, not into memory).

use std::io::{self, BufRead, BufReader, Read, Write};

use crate::decompress::Codec;
use crate::format::{pad4, Field, RawHeader, HEADER_LEN, MAGIC, MAGIC_CRC, MAX_NAME_SIZE};
use crate::mode::{S_IFLNK, S_IFMT};
use crate::read::{Entry, Fault, Problem, ReadError};
use crate::TRAILER_NAME;

/// Largest entry data [`list`] keeps: a symlink target of up to PATH_MAX bytes.
pub const MAX_KEPT_DATA: u32 = 4096;

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
    let mut input = Counted::new(BufReader::with_capacity(1 << 16, source));
    for member in 0.. {
        let io = |input_offset| {
            move |source| ReadError::Io {
                input_offset,
                source,
            }
        };
        skip_zeros(&mut input).map_err(io(input.pos))?;
        let start = input.pos;
        let Some(&first) = input.fill_buf().map_err(io(start))?.first() else {
            return Ok(());
        };
        let more = if first == b'0' {
            if !start.is_multiple_of(4) {
                return Err(ReadError::MisalignedMember {
                    member,
                    input_offset: start,
                });
            }
            let mut body = Counted::new(&mut input);
            match archive(&mut body, member, &mut visit) {
                Ok(more) => more,
                Err(Stop::Fault(e)) => return Err(e),
                Err(Stop::Io(e)) => return Err(io(start + body.pos)(e)),
            }
        } else {
            let mut magic = [0; 4];
            let n = read_full(&mut input, &mut magic).map_err(io(start))?;
            let Some(codec) = Codec::detect(&magic[..n]) else {
                return Err(ReadError::UnknownMember {
                    input_offset: start,
                });
            };
            let compressed = (&magic[..n]).chain(&mut input);
            let mut content = |r| compressed_member(r, limit, member, &mut visit);
            let result = match codec {
                Codec::Zstd => zstd::stream::read::Decoder::with_buffer(compressed)
                    .map_err(Stop::Io)
                    .and_then(|d| content(Box::new(d.single_frame()))),
                Codec::Gzip => content(Box::new(flate2::bufread::GzDecoder::new(compressed))),
            };
            match result {
                Ok(more) => more,
                Err(Stop::Fault(e)) => return Err(e),
                Err(Stop::Io(e)) if e.get_ref().is_some_and(|e| e.is::<TooLarge>()) => {
                    return Err(ReadError::TooLarge {
                        member,
                        input_offset: start,
                        limit,
                    })
                }
                Err(Stop::Io(source)) => {
                    return Err(ReadError::Decompress {
                        member,
                        input_offset: start,
                        source,
                    })
                }
            }
        };
        if !more {
            return Ok(());
        }
    }
    Ok(())
}

/// Why reading stopped: malformed content, or the input (or decompressor) failed.
enum Stop {
    Fault(ReadError),
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Stop {
        Stop::Io(e)
    }
}

/// A compressed member's content: archives separated by NUL padding, up to its end.
fn compressed_member(
    decoder: Box<dyn Read + '_>,
    limit: u64,
    member: usize,
    visit: &mut dyn FnMut(Entry) -> bool,
) -> Result<bool, Stop> {
    let capped = Capped {
        inner: decoder,
        left: limit,
    };
    let mut body = Counted::new(BufReader::with_capacity(1 << 16, capped));
    loop {
        if !archive(&mut body, member, visit)? {
            return Ok(false);
        }
        skip_zeros(&mut body)?;
        if body.fill_buf()?.is_empty() {
            return Ok(true);
        }
        if !body.pos.is_multiple_of(4) {
            return Err(Stop::Fault(ReadError::Misaligned {
                member,
                offset: body.pos,
            }));
        }
    }
}

/// Reads one archive's records through its trailer; false if `visit` asked to stop.
fn archive<R: BufRead>(
    r: &mut Counted<R>,
    member: usize,
    visit: &mut dyn FnMut(Entry) -> bool,
) -> Result<bool, Stop> {
    loop {
        let pos = r.pos;
        let fault = |f: Fault| Stop::Fault(f.locate(member, pos as usize));
        let mut header = [0; HEADER_LEN];
        match read_full(r, &mut header)? {
            0 => return Err(fault(Fault::at(Problem::MissingTrailer, Field::Magic))),
            n if n < HEADER_LEN => {
                return Err(fault(Fault::at(Problem::Truncated, Field::cut_at(n))))
            }
            _ => {}
        }
        let magic = &header[..6];
        if magic != MAGIC && magic != MAGIC_CRC {
            return Err(fault(Fault::at(Problem::BadMagic, Field::Magic)));
        }
        let raw = RawHeader::decode(&header).map_err(|f| fault(Fault::at(Problem::NotHex, f)))?;
        let size = raw.namesize as usize;
        if size == 0 || size > MAX_NAME_SIZE {
            let problem = Problem::BadNameSize(raw.namesize);
            return Err(fault(Fault::at(problem, Field::NameSize)));
        }
        let mut name = vec![0; size];
        if read_full(r, &mut name)? < size {
            return Err(fault(Fault::at(Problem::Truncated, Field::Name)));
        }
        if name.pop() != Some(0) || name.contains(&0) {
            return Err(fault(Fault::at(Problem::BadName, Field::Name)));
        }
        let name_end = HEADER_LEN + size;
        let data_start = name_end + skip(r, pad4(name_end as u64) as u64, &mut io::sink())?;
        let truncated_data = Fault {
            problem: Problem::Truncated,
            field: Field::Data,
            offset: data_start,
        };
        let size = u64::from(raw.filesize);
        if data_start < name_end + pad4(name_end as u64) && size > 0 {
            return Err(fault(truncated_data));
        }
        let keep = raw.mode & S_IFMT == S_IFLNK && raw.filesize <= MAX_KEPT_DATA;
        let mut sum = Sum(0);
        let data = if keep {
            let mut data = vec![0; size as usize];
            if read_full(r, &mut data)? < data.len() {
                return Err(fault(truncated_data));
            }
            sum.write_all(&data)?;
            data
        } else {
            if skip(r, size, &mut sum)? < size as usize {
                return Err(fault(truncated_data));
            }
            Vec::new()
        };
        if magic == MAGIC_CRC && sum.0 != raw.check {
            let (expected, actual) = (raw.check, sum.0);
            let problem = Problem::Checksum { expected, actual };
            return Err(fault(Fault::at(problem, Field::Check)));
        }
        let data_end = data_start as u64 + size;
        skip(r, pad4(data_end) as u64, &mut io::sink())?;
        if name == TRAILER_NAME {
            return Ok(true);
        }
        let entry = Entry {
            raw,
            name,
            data,
            member,
            offset: pos,
        };
        if !visit(entry) {
            return Ok(false);
        }
    }
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
fn skip(r: &mut impl Read, len: u64, to: &mut impl Write) -> io::Result<usize> {
    Ok(io::copy(&mut r.take(len), to)? as usize)
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

/// The marker error of [`Capped`].
#[derive(Debug)]
struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("decompressed size limit exceeded")
    }
}

impl std::error::Error for TooLarge {}

/// A reader that fails with [`TooLarge`] once more than `left` bytes come out of `inner`.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self
            .left
            .checked_sub(n as u64)
            .ok_or_else(|| io::Error::other(TooLarge))?;
        Ok(n)
    }
}

/// The 32-bit byte sum of what is written (the `070702` check).
struct Sum(u32);

impl Write for Sum {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = buf
            .iter()
            .fold(self.0, |sum, &b| sum.wrapping_add(b.into()));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Header, Reader, Writer};

    fn header(name: &str, mode: u32) -> Header {
        Header {
            name: name.into(),
            mode,
            ..Header::default()
        }
    }

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
