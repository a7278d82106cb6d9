//! Loop devices: attaching an image range read-only (LOOP_CONFIGURE, or LOOP_SET_FD +
//! LOOP_SET_STATUS64 on older kernels), autoclear, and the device node.
