//! SquashFS 4.0 image writer (zstd, parallel) and superblock probe.
