#!/bin/sh
# dracut pre-mount hook: merge initrd-scope extensions into the initrd's /usr and /opt before
# the root is mounted, so their tools can help mount it. rd.sysext=0 turns it off.
type getargbool >/dev/null 2>&1 || . /lib/dracut-lib.sh

if getargbool 1 rd.sysext && getargbool 1 rd.systemd.sysext; then
    for m in loop dm_mod dm_verity overlay erofs squashfs; do modprobe -q "$m" 2>/dev/null; done
    initrd-sysext merge --kernel-cmdline || warn "initrd-sysext: merging extensions failed"
else
    info "initrd-sysext: rd.sysext=0, not merging extensions"
fi
