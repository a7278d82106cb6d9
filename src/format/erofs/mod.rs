//! EROFS: the on-disk structures ([`layout`]), an image writer and a reader that needs no mount.

pub mod layout;
pub mod read;
#[cfg(test)]
mod test_util;
mod write;

pub use layout::probe;
pub use read::{ReadError, Reader, DIR_MAX};
pub use write::{write, Error, Options};
