//! The newc record layout shared by the writer and the reader: magic, the thirteen 8-digit
//! hex fields in order, name limits, 4-byte padding and the `070702` check; encoding, and
//! decoding into what is wrong with a record ([`Fault`]) when it is malformed.

use std::fmt;
use std::io::{self, Write};

/// Magic of the plain newc format.
pub(crate) const MAGIC: &[u8; 6] = b"070701";
/// Magic of the newc variant whose check field is the byte sum of the data.
pub(crate) const MAGIC_CRC: &[u8; 6] = b"070702";
/// Length of the fixed part of a header: magic plus 13 fields of 8 hex digits.
pub(crate) const HEADER_LEN: usize = 110;
/// Name of the entry that ends an archive.
pub const TRAILER_NAME: &[u8] = b"TRAILER!!!";
/// Largest `c_namesize` (name plus its NUL) accepted: the kernel's initramfs unpacker
/// rejects longer names (PATH_MAX).
pub const MAX_NAME_SIZE: usize = 4096;

/// A part of an entry, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Magic,
    Ino,
    Mode,
    Uid,
    Gid,
    Nlink,
    Mtime,
    FileSize,
    DevMajor,
    DevMinor,
    RdevMajor,
    RdevMinor,
    NameSize,
    Check,
    /// The NUL-terminated name after the header.
    Name,
    /// File content or symlink target after the name.
    Data,
}

/// The numeric header fields in the order they appear after the magic.
const NUMERIC: [Field; 13] = [
    Field::Ino,
    Field::Mode,
    Field::Uid,
    Field::Gid,
    Field::Nlink,
    Field::Mtime,
    Field::FileSize,
    Field::DevMajor,
    Field::DevMinor,
    Field::RdevMajor,
    Field::RdevMinor,
    Field::NameSize,
    Field::Check,
];

impl Field {
    /// The field's name as in the newc specification (`c_ino`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Magic => "c_magic",
            Field::Ino => "c_ino",
            Field::Mode => "c_mode",
            Field::Uid => "c_uid",
            Field::Gid => "c_gid",
            Field::Nlink => "c_nlink",
            Field::Mtime => "c_mtime",
            Field::FileSize => "c_filesize",
            Field::DevMajor => "c_devmajor",
            Field::DevMinor => "c_devminor",
            Field::RdevMajor => "c_rdevmajor",
            Field::RdevMinor => "c_rdevminor",
            Field::NameSize => "c_namesize",
            Field::Check => "c_check",
            Field::Name => "name",
            Field::Data => "data",
        }
    }

    /// Offset of the field from the start of the header; for the name and the data, the
    /// offset where the variable part after the header starts.
    pub(crate) fn offset_in_header(self) -> usize {
        match self {
            Field::Magic => 0,
            Field::Name | Field::Data => HEADER_LEN,
            _ => 6 + 8 * NUMERIC.iter().position(|&f| f == self).unwrap_or(0),
        }
    }

    /// The header field that `len` available header bytes end inside (`len < HEADER_LEN`).
    pub(crate) fn cut_at(len: usize) -> Field {
        match len.checked_sub(6) {
            None => Field::Magic,
            Some(rest) => NUMERIC[(rest / 8).min(NUMERIC.len() - 1)],
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The thirteen numeric fields of a newc header, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawHeader {
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// Length of the name including its terminating NUL.
    pub namesize: u32,
    pub check: u32,
}

impl RawHeader {
    fn to_array(self) -> [u32; 13] {
        [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.filesize,
            self.dev_major,
            self.dev_minor,
            self.rdev_major,
            self.rdev_minor,
            self.namesize,
            self.check,
        ]
    }

    fn from_array(v: [u32; 13]) -> RawHeader {
        let [ino, mode, uid, gid, nlink, mtime, filesize, dev_major, dev_minor, rdev_major, rdev_minor, namesize, check] =
            v;
        RawHeader {
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            filesize,
            dev_major,
            dev_minor,
            rdev_major,
            rdev_minor,
            namesize,
            check,
        }
    }

    /// Appends the 110-byte header with magic `070701` and upper-case hex digits
    /// (as GNU cpio and the kernel's gen_init_cpio write them).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        for v in self.to_array() {
            out.extend_from_slice(format!("{v:08X}").as_bytes());
        }
    }

    /// Parses the numeric fields of a header whose magic was already checked.
    /// On a non-hex field, returns that field.
    pub(crate) fn decode(header: &[u8; HEADER_LEN]) -> Result<RawHeader, Field> {
        let mut v = [0u32; 13];
        for (i, (slot, chunk)) in v.iter_mut().zip(header[6..].chunks_exact(8)).enumerate() {
            *slot = parse_hex8(chunk).ok_or(NUMERIC[i])?;
        }
        Ok(RawHeader::from_array(v))
    }

    /// Checks the magic, decodes the fields and bounds the name size; returns the header and
    /// whether the data must sum to its check field (`070702`).
    pub(crate) fn parse(header: &[u8; HEADER_LEN]) -> Result<(RawHeader, bool), Fault> {
        let magic = &header[..6];
        if magic != MAGIC && magic != MAGIC_CRC {
            return Err(Fault::at(Problem::BadMagic, Field::Magic));
        }
        let raw = RawHeader::decode(header).map_err(|field| Fault::at(Problem::NotHex, field))?;
        let size = raw.namesize as usize;
        if size == 0 || size > MAX_NAME_SIZE {
            let problem = Problem::BadNameSize(raw.namesize);
            return Err(Fault::at(problem, Field::NameSize));
        }
        Ok((raw, magic == MAGIC_CRC))
    }
}

/// The name from its `c_namesize` stored bytes: NUL-terminated, with no other NUL.
pub(crate) fn parse_name(mut stored: Vec<u8>) -> Result<Vec<u8>, Fault> {
    if stored.pop() != Some(0) || stored.contains(&0) {
        return Err(Fault::at(Problem::BadName, Field::Name));
    }
    Ok(stored)
}

/// For the `070702` variant: the check field must be the 32-bit sum of the data bytes.
pub(crate) fn verify_check(raw: &RawHeader, sum: Checksum) -> Result<(), Fault> {
    let (expected, actual) = (raw.check, sum.0);
    if actual == expected {
        return Ok(());
    }
    let problem = Problem::Checksum { expected, actual };
    Err(Fault::at(problem, Field::Check))
}

/// The 32-bit byte sum of what is written to it (the `070702` check).
#[derive(Default)]
pub(crate) struct Checksum(u32);

impl Write for Checksum {
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

/// What is wrong with a record, and where: `offset` counts from the record's first byte
/// until [`Fault::shifted`] makes it an offset in the member.
pub(crate) struct Fault {
    pub(crate) problem: Problem,
    pub(crate) field: Field,
    pub(crate) offset: u64,
}

pub(crate) enum Problem {
    MissingTrailer,
    /// An archive after the first one in a compressed member starts unaligned.
    Misaligned,
    Truncated,
    BadMagic,
    NotHex,
    BadNameSize(u32),
    BadName,
    Checksum {
        expected: u32,
        actual: u32,
    },
}

impl Fault {
    /// A fault at the start of `field` (a header field, or the name).
    pub(crate) fn at(problem: Problem, field: Field) -> Fault {
        Fault {
            problem,
            field,
            offset: field.offset_in_header() as u64,
        }
    }

    /// The data ends early; it starts (or the input ends) at `offset`.
    pub(crate) fn truncated_data(offset: u64) -> Fault {
        Fault {
            problem: Problem::Truncated,
            field: Field::Data,
            offset,
        }
    }

    /// An archive starts at `offset`, not a multiple of 4.
    pub(crate) fn misaligned(offset: u64) -> Fault {
        Fault {
            problem: Problem::Misaligned,
            field: Field::Magic,
            offset,
        }
    }

    /// The same fault, `by` bytes further on.
    pub(crate) fn shifted(self, by: u64) -> Fault {
        Fault {
            offset: self.offset + by,
            ..self
        }
    }
}

/// Parses exactly eight hex digits (either case; no sign, no spaces).
fn parse_hex8(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &d| {
        let nibble = (d as char).to_digit(16)?;
        Some(acc << 4 | nibble)
    })
}

/// Bytes needed after `len` bytes to reach a multiple of 4.
pub(crate) fn pad4(len: u64) -> usize {
    (len.wrapping_neg() & 3) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RawHeader {
        RawHeader {
            ino: 1,
            mode: 0o100644,
            uid: 1000,
            gid: 0xabcdef01,
            nlink: 1,
            mtime: 0x5f5e1000,
            filesize: 4097,
            dev_major: 0,
            dev_minor: 0,
            rdev_major: 5,
            rdev_minor: 1,
            namesize: 4,
            check: 0,
        }
    }

    #[test]
    fn encodes_fields_in_order_as_upper_hex() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        let expected = concat!(
            "070701", "00000001", "000081A4", "000003E8", "ABCDEF01", "00000001", "5F5E1000",
            "00001001", "00000000", "00000000", "00000005", "00000001", "00000004", "00000000"
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn decode_inverts_encode_and_accepts_lower_case() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        let upper: [u8; HEADER_LEN] = out.clone().try_into().unwrap();
        assert_eq!(RawHeader::decode(&upper), Ok(sample()));
        let lower: [u8; HEADER_LEN] = out.to_ascii_lowercase().try_into().unwrap();
        assert_eq!(RawHeader::decode(&lower), Ok(sample()));
    }

    #[test]
    fn decode_names_the_non_hex_field() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        for (pos, bad) in [(6, b'g'), (60, b'+'), (109, b' '), (102, b'x')] {
            let mut h: [u8; HEADER_LEN] = out.clone().try_into().unwrap();
            h[pos] = bad;
            let field = RawHeader::decode(&h).unwrap_err();
            assert_eq!(field, Field::cut_at(pos), "byte {pos}");
            assert!(field.offset_in_header() <= pos && pos < field.offset_in_header() + 8);
        }
    }

    #[test]
    fn field_offsets_match_the_layout() {
        assert_eq!(Field::Magic.offset_in_header(), 0);
        assert_eq!(Field::Ino.offset_in_header(), 6);
        assert_eq!(Field::FileSize.offset_in_header(), 54);
        assert_eq!(Field::Check.offset_in_header(), 102);
        assert_eq!(Field::Name.offset_in_header(), HEADER_LEN);
        assert_eq!(Field::cut_at(0), Field::Magic);
        assert_eq!(Field::cut_at(5), Field::Magic);
        assert_eq!(Field::cut_at(6), Field::Ino);
        assert_eq!(Field::cut_at(109), Field::Check);
    }

    #[test]
    fn pads_to_four() {
        let pads: Vec<usize> = (0..9).map(pad4).collect();
        assert_eq!(pads, [0, 3, 2, 1, 0, 3, 2, 1, 0]);
        assert_eq!(pad4(u64::MAX), 1);
    }
}
