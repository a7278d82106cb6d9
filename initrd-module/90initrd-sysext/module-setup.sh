#!/bin/bash
# dracut module for initrd-sysext: installs the static binary, the kernel modules and trusted
# certificates it needs, optional extension images, and the hook (non-systemd) or units (systemd)
# that merge initrd-scope extensions before the root is mounted.

check() {
    require_binaries initrd-sysext || return 1
    # Only when asked for (--add initrd-sysext or add_dracutmodules+=).
    return 255
}

depends() {
    return 0
}

installkernel() {
    hostonly='' instmods loop dm-mod dm-verity overlay erofs squashfs
}

install() {
    inst_simple "$(command -v initrd-sysext)" /usr/bin/initrd-sysext
    local f
    for f in /etc/verity.d/*.crt /etc/verity.d/secondary/*.crt; do
        [ -e "$f" ] && inst_simple "$f"
    done
    # Extension images to embed: /etc/initrd-sysext/extensions/*.raw -> /etc/extensions/.
    for f in /etc/initrd-sysext/extensions/*.raw; do
        [ -e "$f" ] && inst_simple "$f" "/etc/extensions/${f##*/}"
    done
    if dracut_module_included "systemd"; then
        inst_simple "$moddir/initrd-sysext.service" "$systemdsystemunitdir/initrd-sysext.service"
        inst_simple "$moddir/initrd-sysext-sysroot.service" "$systemdsystemunitdir/initrd-sysext-sysroot.service"
        $SYSTEMCTL -q --root "$initdir" enable initrd-sysext.service initrd-sysext-sysroot.service
    else
        inst_hook pre-mount 10 "$moddir/initrd-sysext-merge.sh"
        inst_hook pre-pivot 10 "$moddir/initrd-sysext-sysroot.sh"
    fi
}
