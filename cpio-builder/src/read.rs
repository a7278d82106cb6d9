//! The in-memory reader: every entry of an input with its data, as an iterator, read by the
//! newc parser ([`crate::stream`]) with each compressed member decompressed whole first.

use std::borrow::Cow;
use std::io::{self, Read};
use std::vec;

use crate::error::ReadError;
use crate::stream::{Entry, Walk};

/// Default cap on the decompressed size of one compressed member: 4 GiB.
pub const DEFAULT_DECOMPRESSED_LIMIT: u64 = 4 << 30;

/// Iterates over the entries of all members of an input; see the crate documentation.
///
/// The input is read on the first call to `next`, all of it, up to its first error: each
/// compressed member is decompressed in memory (up to [`Reader::decompressed_limit`]) before
/// its entries are read, so a corrupt or oversized member yields none of them. The entries
/// come with their data; after the first error the iterator ends.
pub struct Reader<'a> {
    input: Cow<'a, [u8]>,
    limit: u64,
    /// The entries, and the error after them, once read.
    read: Option<vec::IntoIter<Result<Entry, ReadError>>>,
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
            limit: DEFAULT_DECOMPRESSED_LIMIT,
            read: None,
        }
    }

    fn read_all(&self) -> vec::IntoIter<Result<Entry, ReadError>> {
        let mut entries = Vec::new();
        let result = Walk {
            limit: self.limit,
            whole_members: true,
            keep: |_| true,
            visit: &mut |entry| {
                entries.push(Ok(entry));
                true
            },
        }
        .run(&self.input[..]);
        entries.extend(result.err().map(Err));
        entries.into_iter()
    }
}

impl Iterator for Reader<'_> {
    type Item = Result<Entry, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.read.is_none() {
            self.read = Some(self.read_all());
        }
        self.read.as_mut()?.next()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::{pad4, Field, RawHeader, MAGIC, MAGIC_CRC, TRAILER_NAME};
    use crate::{Header, Writer};

    /// The writer-side header of an entry with only a name and a mode.
    pub(crate) fn header(name: &str, mode: u32) -> Header {
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
