//! Build mode: turning directory trees into signed extension images and initrds.

pub mod directory;
pub mod drivers;
pub mod genkey;
pub mod initrd;
pub mod modules;
pub mod output;
pub mod project;
pub mod repart;
pub mod sign;
pub mod sysext;
pub mod uki;
