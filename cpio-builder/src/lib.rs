//! Deterministic streaming cpio (newc) writer and reader, for reproducible Linux initrds.
//!
//! Write side: [`Writer`] takes entries in the order the caller gives (sort the paths with
//! [`path_order`] so that parents come before children), renumbers inodes from 1, zeroes the
//! device numbers and the check field, and pads headers, names and data to 4 bytes exactly as
//! the kernel's initramfs unpacker, GNU cpio and libarchive expect. Directories get nlink 2,
//! hard-link groups nlink = number of names, everything else nlink 1. The archive ends with the
//! `TRAILER!!!` entry padded to 4 bytes; no padding to 512-byte blocks is added.
//!
//! Read side: one parser walks one or more concatenated members, each a plain newc archive or
//! a zstd frame / gzip member holding one or more archives, the way the kernel unpacks an
//! initramfs: NUL bytes between members are skipped, a plain archive must start 4-byte
//! aligned, and a compressed member is a single zstd frame (as the kernel's unzstd reads it) or
//! a single gzip member. `070702` (crc) archives are read and their checksums verified. Every
//! problem is a [`ReadError`] naming the member, offset and field; a size taken from a header
//! is never allocated up front beyond [`MAX_NAME_SIZE`]. [`list`] streams from any `io::Read`: it
//! decompresses on the fly and skips file contents, for listing archives of any size in bounded
//! memory. [`Reader`] iterates over the entries of an input in memory, with their data.

mod decompress;
mod error;
mod format;
mod order;
mod read;
mod stream;
mod write;

pub use error::ReadError;
pub use format::{Field, RawHeader, MAX_NAME_SIZE, TRAILER_NAME};
pub use order::{clamp_mtime, path_order};
pub use read::{Reader, DEFAULT_DECOMPRESSED_LIMIT};
pub use stream::{list, Entry, MAX_KEPT_DATA};
pub use write::{Header, WriteError, Writer};

/// `st_mode` file type bits, for building [`Header::mode`].
pub mod mode {
    /// Mask of the file type bits.
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFSOCK: u32 = 0o140000;
    pub const S_IFLNK: u32 = 0o120000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFBLK: u32 = 0o060000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFIFO: u32 = 0o010000;
}
