//! initrd-sysext: build, verify and merge signed systemd system extension images.

pub mod build;
pub mod format;
