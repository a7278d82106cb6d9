//! Runtime: finding, checking, activating and merging extension images.

pub mod dissect;
