//! Device-mapper through its ioctls (no libdevmapper): creating, loading and resuming
//! dm-verity devices, and removing them.
