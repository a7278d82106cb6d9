//! On-disk formats, shared by the builder and the runtime.

pub mod erofs;
pub mod squashfs;
