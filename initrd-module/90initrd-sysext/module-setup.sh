#!/bin/bash
# dracut module for initrd-sysext: installs the static binary, the kernel modules and trusted
# certificates it needs, optional extension images, and the hook (non-systemd) or units (systemd)
# that merge initrd-scope extensions before the root is mounted.

# Settings (dracut.conf): initrd_sysext_binary (default: initrd-sysext from the PATH),
# initrd_sysext_verity_dir (trusted certificates, default /etc/verity.d) and
# initrd_sysext_extensions_dir (images to embed, default /etc/initrd-sysext/extensions).

check() {
    [ -x "${initrd_sysext_binary:-}" ] || require_binaries initrd-sysext || return 1
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
    local certs="${initrd_sysext_verity_dir:-/etc/verity.d}"
    local extensions="${initrd_sysext_extensions_dir:-/etc/initrd-sysext/extensions}"
    inst_simple "${initrd_sysext_binary:-$(command -v initrd-sysext)}" /usr/bin/initrd-sysext
    local f
    for f in "$certs"/*.crt; do
        [ -e "$f" ] && inst_simple "$f" "/etc/verity.d/${f##*/}"
    done
    for f in "$certs"/secondary/*.crt; do
        [ -e "$f" ] && inst_simple "$f" "/etc/verity.d/secondary/${f##*/}"
    done
    for f in "$extensions"/*.raw; do
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
