//! Reading images: dissecting a DDI or naked image with its sidecars, the certificates that
//! are trusted to sign them, full userspace verification, and describing them for `inspect`.

pub mod certs;
pub mod dissect;
pub mod fs;
pub mod inspect;
pub mod verify;
