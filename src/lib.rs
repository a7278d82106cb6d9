//! initrd-sysext: build, verify and merge signed systemd system extension images.
//! Layers, imports pointing down only: cli → boot → runtime | build → image → format → tree.

pub mod boot;
pub mod build;
pub mod cli;
pub mod format;
pub mod image;
pub mod runtime;
pub mod tree;
