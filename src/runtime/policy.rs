//! Image policies in systemd's syntax (`root=signed+absent:usr=…`), parsed and evaluated.
