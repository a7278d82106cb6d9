//! Deterministic streaming cpio (newc) writer and reader.
