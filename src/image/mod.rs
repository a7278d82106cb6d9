//! Reading images: dissecting a DDI or naked image with its sidecars, the certificates that
//! are trusted to sign them, full userspace verification, describing them for `inspect`, and
//! what measured boot extends PCR 13 with for them.

pub mod certs;
pub mod dissect;
pub mod fs;
pub mod inspect;
pub mod measure;
pub mod verify;
