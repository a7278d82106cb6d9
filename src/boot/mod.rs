//! Boot mode: PID 1 in the initrd.

pub mod cmdline;
pub mod coldplug;
pub mod init;
pub mod kconfig;
pub mod kmsg;
pub mod measure;
pub mod modload;
pub mod rootdev;
pub mod switch_root;
pub mod uevent;
