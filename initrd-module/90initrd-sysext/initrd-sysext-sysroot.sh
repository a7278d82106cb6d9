#!/bin/sh
# dracut pre-pivot hook: with rd.sysext.sysroot=1, merge system-scope extensions into $NEWROOT;
# then unmerge the initrd's own extensions so nothing of the initrd stays busy after switch root.
type getargbool >/dev/null 2>&1 || . /lib/dracut-lib.sh

if getargbool 0 rd.sysext.sysroot && getargbool 1 rd.sysext; then
    initrd-sysext merge --kernel-cmdline --root "$NEWROOT" || warn "initrd-sysext: merging into $NEWROOT failed"
fi
initrd-sysext unmerge >/dev/null 2>&1 || :
