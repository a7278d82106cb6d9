//! Build mode: turning directory trees into signed extension images and initrds.

pub mod genkey;
pub mod tree;
