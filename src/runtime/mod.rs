//! Runtime: finding, checking, activating and merging extension images.

pub mod dissect;
pub mod dm;
pub mod keyring;
pub mod loopdev;
pub mod policy;
