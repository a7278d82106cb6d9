//! [`ReadError`]: what the reader reports about malformed input, placed by member and offset.

use std::io;

use crate::format::{Fault, Field, Problem, MAX_NAME_SIZE};

/// Malformed input. `member` and `offset` locate the problem as [`crate::Entry`] does (`offset`
/// is where `field` starts, or for a truncation where the input ends inside it);
/// `input_offset` is an offset in the whole input.
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

impl Fault {
    /// The error for this fault (its offset counted in its member) in member `member`.
    pub(crate) fn locate(self, member: usize) -> ReadError {
        let Fault {
            problem,
            field,
            offset,
        } = self;
        match problem {
            Problem::MissingTrailer => ReadError::MissingTrailer { member, offset },
            Problem::Misaligned => ReadError::Misaligned { member, offset },
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
