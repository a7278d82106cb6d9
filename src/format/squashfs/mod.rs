//! SquashFS 4.0: the writer builds images (zstd, in parallel), the reader looks into them
//! without mounting; both share the on-disk layout.

pub mod layout;
pub mod read;
#[cfg(test)]
mod test_util;
mod write;

pub use layout::probe;
pub use read::{ReadError, Reader};
pub use write::{write, Error, Options, DEFAULT_LEVEL};
