//! Kernel keyrings through raw `add_key`/`keyctl` syscalls: the root-hash signature as a
//! `user` key for dm-verity, and enrolling certificates into `.secondary_trusted_keys`.
