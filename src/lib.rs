//! initrd-sysext: build, verify and merge signed systemd system extension images.

pub mod boot;
pub mod build;
pub mod cli;
pub mod format;
pub mod inspect;
pub mod logging;
pub mod runtime;
pub mod verify;
