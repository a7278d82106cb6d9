//! Reader for a sequence of concatenated members, each a plain newc archive or a zstd frame /
//! gzip member holding newc archives, walked the way the kernel unpacks an initramfs.

use std::borrow::Cow;
use std::io::{self, Read};

use crate::decompress::{Codec, Failure};
use crate::format::{
    pad4, Field, RawHeader, HEADER_LEN, MAGIC, MAGIC_CRC, MAX_NAME_SIZE, TRAILER_NAME,
};
use crate::write::Header;

/// Default cap on the decompressed size of one compressed member: 4 GiB.
pub const DEFAULT_DECOMPRESSED_LIMIT: u64 = 4 << 30;

/// One archive entry (never the trailer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub raw: RawHeader,
    /// The name without its terminating NUL.
    pub name: Vec<u8>,
    /// The `c_filesize` bytes after the name: file content, or a symlink's target.
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

/// Malformed input. `member` and `offset` locate the problem as [`Entry`] does (`offset` is
/// where `field` starts, or for a truncation where the input ends inside it); `input_offset`
/// is an offset in the whole input.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("member {member}, offset {offset}: {field}: no newc magic (070701 or 070702)")]
    BadMagic {
        member: usize,
        offset: u64,
        field: Field,
    },
    #[error("member {member}, offset {offset}: {field}: not 8 hex digits")]
    NotHex {
        member: usize,
        offset: u64,
        field: Field,
    },
    #[error(
        "member {member}, offset {offset}: {field}: name size {size} is 0 or above {MAX_NAME_SIZE}"
    )]
    BadNameSize {
        member: usize,
        offset: u64,
        field: Field,
        size: u32,
    },
    #[error("member {member}, offset {offset}: {field}: not NUL-terminated or contains a NUL")]
    BadName {
        member: usize,
        offset: u64,
        field: Field,
    },
    #[error("member {member}, offset {offset}: {field}: input ends inside it")]
    Truncated {
        member: usize,
        offset: u64,
        field: Field,
    },
    #[error("member {member}, offset {offset}: {field}: check {expected:#x} but data sums to {actual:#x}")]
    Checksum {
        member: usize,
        offset: u64,
        field: Field,
        expected: u32,
        actual: u32,
    },
    #[error("member {member}, offset {offset}: archive ends without TRAILER!!!")]
    MissingTrailer { member: usize, offset: u64 },
    #[error("member {member}, offset {offset}: archive does not start at a multiple of 4 bytes")]
    Misaligned { member: usize, offset: u64 },
    #[error("member {member}: plain archive at input offset {input_offset} is not 4-byte aligned")]
    MisalignedMember { member: usize, input_offset: u64 },
    #[error("input offset {input_offset}: neither a newc archive, zstd nor gzip")]
    UnknownMember { input_offset: u64 },
    #[error("member {member} at input offset {input_offset}: {source}")]
    Decompress {
        member: usize,
        input_offset: u64,
        source: io::Error,
    },
    #[error("input offset {input_offset}: {source}")]
    Io {
        input_offset: u64,
        source: io::Error,
    },
    #[error(
        "member {member} at input offset {input_offset}: decompresses to more than {limit} bytes"
    )]
    TooLarge {
        member: usize,
        input_offset: u64,
        limit: u64,
    },
}

/// Iterates over the entries of all members of an input; see the crate documentation.
///
/// Between members, runs of NUL bytes are skipped; a plain archive must start at a multiple of
/// 4 bytes in the input. A compressed member is one zstd frame or gzip member, decompressed in
/// memory (up to [`Reader::decompressed_limit`]); its content is one or more archives, again
/// separated by NUL padding. After the first error the iterator ends.
pub struct Reader<'a> {
    input: Cow<'a, [u8]>,
    /// Input offset of the next member once the current one is done.
    next_member: usize,
    current: Option<Member>,
    members_started: usize,
    limit: u64,
    failed: bool,
}

/// The member being read.
struct Member {
    index: usize,
    body: Body,
    /// Offset of the next record in the member.
    pos: usize,
}

enum Body {
    /// A plain archive starting at this input offset; it ends after its trailer.
    Plain(usize),
    /// Decompressed content; it ends with its bytes.
    Decompressed(Vec<u8>),
}

/// What one parsed record was.
enum Record {
    Entry(Entry),
    Trailer,
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Self::over(Cow::Borrowed(input))
    }

    /// Reads all of `source` into memory, then iterates over it.
    pub fn from_read(mut source: impl Read) -> io::Result<Reader<'static>> {
        let mut input = Vec::new();
        source.read_to_end(&mut input)?;
        Ok(Reader::over(Cow::Owned(input)))
    }

    /// Sets the cap on the decompressed size of each compressed member.
    pub fn decompressed_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    fn over(input: Cow<'a, [u8]>) -> Self {
        Reader {
            input,
            next_member: 0,
            current: None,
            members_started: 0,
            limit: DEFAULT_DECOMPRESSED_LIMIT,
            failed: false,
        }
    }

    fn advance(&mut self) -> Result<Option<Entry>, ReadError> {
        loop {
            if self.current.is_none() && !self.open_member()? {
                return Ok(None);
            }
            if let Some(entry) = self.read_record()? {
                return Ok(Some(entry));
            }
        }
    }

    /// Starts the next member after skipping NUL padding; false at the end of the input.
    fn open_member(&mut self) -> Result<bool, ReadError> {
        let start = skip_zeros(&self.input, self.next_member);
        if start == self.input.len() {
            return Ok(false);
        }
        let index = self.members_started;
        self.members_started += 1;
        let rest = &self.input[start..];
        let body = if rest[0] == b'0' {
            if !start.is_multiple_of(4) {
                return Err(ReadError::MisalignedMember {
                    member: index,
                    input_offset: start as u64,
                });
            }
            Body::Plain(start)
        } else {
            let codec = Codec::detect(rest).ok_or(ReadError::UnknownMember {
                input_offset: start as u64,
            })?;
            let (content, used) = codec
                .decompress(rest, self.limit)
                .map_err(|f| self.decompress_error(f, index, start))?;
            self.next_member = start + used;
            Body::Decompressed(content)
        };
        self.current = Some(Member {
            index,
            body,
            pos: 0,
        });
        Ok(true)
    }

    fn decompress_error(&self, failure: Failure, member: usize, start: usize) -> ReadError {
        let input_offset = start as u64;
        match failure {
            Failure::Corrupt(source) => ReadError::Decompress {
                member,
                input_offset,
                source,
            },
            Failure::TooLarge => ReadError::TooLarge {
                member,
                input_offset,
                limit: self.limit,
            },
        }
    }

    /// Parses the current member's next record; closes the member when it is done.
    fn read_record(&mut self) -> Result<Option<Entry>, ReadError> {
        let Some(member) = self.current.as_mut() else {
            return Ok(None);
        };
        let bytes = match &member.body {
            Body::Plain(start) => &self.input[*start..],
            Body::Decompressed(content) => content.as_slice(),
        };
        let (record, next) = parse_record(bytes, member.pos, member.index)?;
        member.pos = next;
        match (record, &member.body) {
            (Record::Entry(entry), _) => return Ok(Some(entry)),
            (Record::Trailer, Body::Plain(start)) => self.next_member = start + next,
            (Record::Trailer, Body::Decompressed(content)) => {
                member.pos = skip_zeros(content, next);
                if member.pos < content.len() {
                    check_aligned(member)?;
                    return Ok(None);
                }
            }
        }
        self.current = None;
        Ok(None)
    }
}

impl Iterator for Reader<'_> {
    type Item = Result<Entry, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = self.advance();
        self.failed = result.is_err();
        result.transpose()
    }
}

fn skip_zeros(bytes: &[u8], from: usize) -> usize {
    from + bytes[from..].iter().take_while(|&&b| b == 0).count()
}

fn check_aligned(member: &Member) -> Result<(), ReadError> {
    if member.pos.is_multiple_of(4) {
        return Ok(());
    }
    Err(ReadError::Misaligned {
        member: member.index,
        offset: member.pos as u64,
    })
}

/// Parses the record at `pos` of a member's bytes; returns it and the offset after it.
fn parse_record(bytes: &[u8], pos: usize, member: usize) -> Result<(Record, usize), ReadError> {
    let (parsed, len) = parse_at(&bytes[pos..]).map_err(|f| f.locate(member, pos))?;
    let record = match parsed {
        None => Record::Trailer,
        Some(p) => Record::Entry(Entry {
            raw: p.raw,
            name: p.name.to_vec(),
            data: p.data.to_vec(),
            member,
            offset: pos as u64,
        }),
    };
    Ok((record, pos + len))
}

/// The parts of a record other than the trailer, borrowed from the input.
struct Parsed<'b> {
    raw: RawHeader,
    name: &'b [u8],
    data: &'b [u8],
}

/// What is wrong with a record, and where, relative to the record's first byte.
pub(crate) struct Fault {
    pub(crate) problem: Problem,
    pub(crate) field: Field,
    pub(crate) offset: usize,
}

pub(crate) enum Problem {
    MissingTrailer,
    Truncated,
    BadMagic,
    NotHex,
    BadNameSize(u32),
    BadName,
    Checksum { expected: u32, actual: u32 },
}

impl Fault {
    /// A fault at the start of `field` (a header field, or the name).
    pub(crate) fn at(problem: Problem, field: Field) -> Fault {
        Fault {
            problem,
            field,
            offset: field.offset_in_header(),
        }
    }

    /// Places the fault of the record at `pos` of member `member`.
    pub(crate) fn locate(self, member: usize, pos: usize) -> ReadError {
        let offset = (pos + self.offset) as u64;
        let field = self.field;
        match self.problem {
            Problem::MissingTrailer => ReadError::MissingTrailer { member, offset },
            Problem::Truncated => ReadError::Truncated {
                member,
                offset,
                field,
            },
            Problem::BadMagic => ReadError::BadMagic {
                member,
                offset,
                field,
            },
            Problem::NotHex => ReadError::NotHex {
                member,
                offset,
                field,
            },
            Problem::BadNameSize(size) => ReadError::BadNameSize {
                member,
                offset,
                field,
                size,
            },
            Problem::BadName => ReadError::BadName {
                member,
                offset,
                field,
            },
            Problem::Checksum { expected, actual } => ReadError::Checksum {
                member,
                offset,
                field,
                expected,
                actual,
            },
        }
    }
}

/// Parses the record at the start of `rest`: `None` for the trailer, and the record's length
/// including padding (the padding may be cut off by the end of `rest`).
fn parse_at(rest: &[u8]) -> Result<(Option<Parsed<'_>>, usize), Fault> {
    if rest.is_empty() {
        return Err(Fault::at(Problem::MissingTrailer, Field::Magic));
    }
    let Some(header) = rest.first_chunk::<HEADER_LEN>() else {
        return Err(Fault::at(Problem::Truncated, Field::cut_at(rest.len())));
    };
    let magic = &header[..6];
    if magic != MAGIC && magic != MAGIC_CRC {
        return Err(Fault::at(Problem::BadMagic, Field::Magic));
    }
    let raw = RawHeader::decode(header).map_err(|field| Fault::at(Problem::NotHex, field))?;
    let name = parse_name(rest, raw.namesize)?;
    let name_end = HEADER_LEN + name.len() + 1;
    let data_start = (name_end + pad4(name_end as u64)).min(rest.len());
    let data_end = data_start.saturating_add(raw.filesize as usize);
    let data = rest.get(data_start..data_end).ok_or(Fault {
        problem: Problem::Truncated,
        field: Field::Data,
        offset: data_start,
    })?;
    if magic == MAGIC_CRC {
        verify_check(raw.check, data)?;
    }
    let len = (data_end + pad4(data_end as u64)).min(rest.len());
    if name == TRAILER_NAME {
        return Ok((None, len));
    }
    Ok((Some(Parsed { raw, name, data }), len))
}

/// The name after the header, without its NUL; `namesize` counts the NUL.
fn parse_name(rest: &[u8], namesize: u32) -> Result<&[u8], Fault> {
    let size = namesize as usize;
    if size == 0 || size > MAX_NAME_SIZE {
        return Err(Fault::at(Problem::BadNameSize(namesize), Field::NameSize));
    }
    let stored = rest
        .get(HEADER_LEN..HEADER_LEN + size)
        .ok_or(Fault::at(Problem::Truncated, Field::Name))?;
    match stored.split_last() {
        Some((0, name)) if !name.contains(&0) => Ok(name),
        _ => Err(Fault::at(Problem::BadName, Field::Name)),
    }
}

/// For the `070702` variant: the check field must be the 32-bit sum of the data bytes.
fn verify_check(expected: u32, data: &[u8]) -> Result<(), Fault> {
    let actual = data.iter().fold(0u32, |sum, &b| sum.wrapping_add(b.into()));
    if actual == expected {
        return Ok(());
    }
    Err(Fault::at(
        Problem::Checksum { expected, actual },
        Field::Check,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Writer;

    fn header(name: &str, mode: u32) -> Header {
        Header {
            name: name.into(),
            mode,
            ..Header::default()
        }
    }

    /// An archive with a directory "d" (112 bytes) and a file "d/f" holding "hello"
    /// (header+name 116 bytes, data 8 bytes with padding), then the trailer (124 bytes).
    fn archive() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.dir(&header("d", 0o40755)).unwrap();
        w.file(&header("d/f", 0o100644), 5, &mut &b"hello"[..])
            .unwrap();
        w.finish().unwrap()
    }

    /// A single record with the given magic, check field, name and data.
    fn record(magic: &[u8; 6], check: u32, name: &[u8], data: &[u8]) -> Vec<u8> {
        let raw = RawHeader {
            mode: 0o100644,
            filesize: data.len() as u32,
            namesize: name.len() as u32 + 1,
            check,
            ..RawHeader::default()
        };
        let mut out = Vec::new();
        raw.encode(&mut out);
        out[..6].copy_from_slice(magic);
        out.extend(name);
        out.push(0);
        out.resize(out.len() + pad4(out.len() as u64), 0);
        out.extend(data);
        out.resize(out.len() + pad4(out.len() as u64), 0);
        out
    }

    fn names_and_errors(input: &[u8]) -> (Vec<Vec<u8>>, Option<ReadError>) {
        let mut names = Vec::new();
        for item in Reader::new(input) {
            match item {
                Ok(e) => names.push(e.name),
                Err(e) => return (names, Some(e)),
            }
        }
        (names, None)
    }

    fn only_error(input: &[u8]) -> ReadError {
        names_and_errors(input).1.expect("an error")
    }

    #[test]
    fn reads_entries_with_offsets() {
        let entries: Vec<Entry> = Reader::new(&archive()).collect::<Result<_, _>>().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].offset, entries[1].offset), (0, 112));
        assert_eq!(entries[1].name, b"d/f");
        assert_eq!(entries[1].data, b"hello");
        assert_eq!(entries[1].raw.ino, 2);
        assert_eq!(entries[1].header(), header("d/f", 0o100644));
    }

    #[test]
    fn missing_trailer() {
        let full = archive();
        let cut = &full[..full.len() - 124];
        let (names, err) = names_and_errors(cut);
        assert_eq!(names.len(), 2);
        assert!(
            matches!(
                err,
                Some(ReadError::MissingTrailer {
                    member: 0,
                    offset: 236
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn empty_input_and_zero_padding_have_no_entries() {
        assert!(names_and_errors(b"").1.is_none());
        assert!(names_and_errors(&[0; 9]).1.is_none());
        assert!(names_and_errors(b"").0.is_empty());
    }

    #[test]
    fn truncated_header_names_the_field() {
        let full = archive();
        for (cut, field, offset) in [
            (3, Field::Magic, 0),
            (60, Field::FileSize, 54),
            (109, Field::Check, 102),
            (112 + 20, Field::Mode, 112 + 14),
        ] {
            let err = only_error(&full[..cut]);
            assert!(
                matches!(err, ReadError::Truncated { member: 0, field: f, offset: o } if f == field && o == offset),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn truncated_name_and_data() {
        let full = archive();
        let err = only_error(&full[..112 + 112]);
        assert!(
            matches!(
                err,
                ReadError::Truncated {
                    field: Field::Name,
                    offset: 222,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = only_error(&full[..112 + 116 + 4]);
        assert!(
            matches!(
                err,
                ReadError::Truncated {
                    field: Field::Data,
                    offset: 228,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn trailer_padding_may_be_cut() {
        let full = archive();
        let (names, err) = names_and_errors(&full[..full.len() - 3]);
        assert_eq!((names.len(), err.is_none()), (2, true));
    }

    #[test]
    fn bad_magic_and_non_hex_fields() {
        let mut odc = archive();
        odc[..6].copy_from_slice(b"070707");
        let err = only_error(&odc);
        assert!(
            matches!(
                err,
                ReadError::BadMagic {
                    offset: 0,
                    field: Field::Magic,
                    ..
                }
            ),
            "{err:?}"
        );
        let mut bad = archive();
        bad[112 + 14 + 3] = b'z';
        let err = only_error(&bad);
        assert!(
            matches!(
                err,
                ReadError::NotHex {
                    offset: 126,
                    field: Field::Mode,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn name_size_zero_or_too_large() {
        for size in ["00000000", "00001001", "FFFFFFFF"] {
            let mut bad = archive();
            bad[94..102].copy_from_slice(size.as_bytes());
            let err = only_error(&bad);
            assert!(
                matches!(
                    err,
                    ReadError::BadNameSize {
                        offset: 94,
                        field: Field::NameSize,
                        ..
                    }
                ),
                "{size}: {err:?}"
            );
        }
    }

    #[test]
    fn name_must_be_nul_terminated_without_inner_nul() {
        let mut bad = archive();
        bad[94..102].copy_from_slice(b"00000001"); // name "d\0" read as one byte "d"
        let err = only_error(&bad);
        assert!(
            matches!(
                err,
                ReadError::BadName {
                    offset: 110,
                    field: Field::Name,
                    ..
                }
            ),
            "{err:?}"
        );
        let inner = [
            record(MAGIC, 0, b"a\0b", b""),
            record(MAGIC, 0, TRAILER_NAME, b""),
        ]
        .concat();
        assert!(matches!(only_error(&inner), ReadError::BadName { .. }));
    }

    #[test]
    fn file_size_beyond_input_is_truncation_without_allocation() {
        let mut bad = archive();
        bad[112 + 54..112 + 62].copy_from_slice(b"FFFFFFFF");
        let err = only_error(&bad);
        assert!(
            matches!(
                err,
                ReadError::Truncated {
                    field: Field::Data,
                    offset: 228,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn crc_variant_is_verified() {
        let sum = b"abc".iter().map(|&b| u32::from(b)).sum();
        let trailer = record(MAGIC, 0, TRAILER_NAME, b"");
        let good = [record(MAGIC_CRC, sum, b"f", b"abc"), trailer.clone()].concat();
        let entries: Vec<Entry> = Reader::new(&good).collect::<Result<_, _>>().unwrap();
        assert_eq!(entries[0].data, b"abc");
        let bad = [record(MAGIC_CRC, sum + 1, b"f", b"abc"), trailer].concat();
        let err = only_error(&bad);
        assert!(
            matches!(err, ReadError::Checksum { offset: 102, field: Field::Check, expected, actual, .. } if expected == sum + 1 && actual == sum),
            "{err:?}"
        );
    }

    #[test]
    fn plain_members_after_nul_padding() {
        let one = archive();
        let mut input = one.clone();
        input.resize(512, 0);
        input.extend(&one);
        let entries: Vec<Entry> = Reader::new(&input).collect::<Result<_, _>>().unwrap();
        let places: Vec<(usize, u64)> = entries.iter().map(|e| (e.member, e.offset)).collect();
        assert_eq!(places, [(0, 0), (0, 112), (1, 0), (1, 112)]);
    }

    #[test]
    fn plain_member_must_be_aligned() {
        let input = [vec![0; 2], archive()].concat();
        let err = only_error(&input);
        assert!(
            matches!(
                err,
                ReadError::MisalignedMember {
                    member: 0,
                    input_offset: 2
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_member_stops_iteration() {
        let input = [archive(), b"junk".to_vec(), archive()].concat();
        let mut reader = Reader::new(&input);
        assert_eq!(reader.by_ref().take(2).filter(Result::is_ok).count(), 2);
        let err = reader.next().unwrap().unwrap_err();
        assert!(
            matches!(err, ReadError::UnknownMember { input_offset: 360 }),
            "{err:?}"
        );
        assert!(reader.next().is_none());
    }

    #[test]
    fn compressed_member_may_hold_several_archives() {
        let mut content = archive();
        content.extend([0; 8]);
        content.extend(archive());
        let zst = zstd::encode_all(&content[..], 3).unwrap();
        let padding = vec![0; 4 + pad4(zst.len() as u64)];
        let input = [archive(), zst, padding, archive()].concat();
        let entries: Vec<Entry> = Reader::new(&input).collect::<Result<_, _>>().unwrap();
        let places: Vec<(usize, u64)> = entries.iter().map(|e| (e.member, e.offset)).collect();
        let second = content.len() as u64 - 360;
        assert_eq!(
            places,
            [
                (0, 0),
                (0, 112),
                (1, 0),
                (1, 112),
                (1, second),
                (1, second + 112),
                (2, 0),
                (2, 112)
            ]
        );
    }

    #[test]
    fn compressed_content_must_end_with_a_trailer() {
        let full = archive();
        let zst = zstd::encode_all(&full[..full.len() - 124], 3).unwrap();
        let err = only_error(&zst);
        assert!(
            matches!(
                err,
                ReadError::MissingTrailer {
                    member: 0,
                    offset: 236
                }
            ),
            "{err:?}"
        );
        let misaligned =
            zstd::encode_all(&[full.clone(), vec![0; 2], full].concat()[..], 3).unwrap();
        let err = only_error(&misaligned);
        assert!(
            matches!(
                err,
                ReadError::Misaligned {
                    member: 0,
                    offset: 362
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn decompression_errors_and_limit() {
        let zst = zstd::encode_all(&archive()[..], 3).unwrap();
        let err = only_error(&zst[..zst.len() - 2]);
        assert!(
            matches!(
                err,
                ReadError::Decompress {
                    member: 0,
                    input_offset: 0,
                    ..
                }
            ),
            "{err:?}"
        );
        let input = [archive(), zst].concat();
        let limited = Reader::new(&input).decompressed_limit(100);
        let err = limited.filter_map(Result::err).next().unwrap();
        assert!(
            matches!(
                err,
                ReadError::TooLarge {
                    member: 1,
                    input_offset: 360,
                    limit: 100
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn from_read_owns_its_input() {
        let reader = Reader::from_read(&archive()[..]).unwrap();
        assert_eq!(reader.count(), 2);
    }
}
