//! On-disk formats, shared by the builder and the runtime.

pub mod base64;
pub mod blob;
pub mod bytes;
pub mod elf;
pub mod erofs;
pub mod gpt;
pub mod hex;
pub mod kmod;
pub mod lookup;
pub mod pe;
pub mod release;
pub mod signature;
pub mod squashfs;
#[cfg(test)]
pub mod test_fs;
pub mod tpm2;
pub mod unit;
pub mod uuid;
pub mod verity;
pub mod vpick;
