//! Runtime: finding, checking, activating and merging extension images.

pub mod activate;
pub mod discover;
pub mod dm;
pub mod enroll;
pub mod keyring;
pub mod loopdev;
pub mod merge;
pub mod mutable;
pub mod policy;
pub mod verbs;
