//! EROFS image writer (uncompressed, inline tails) and superblock probe.
