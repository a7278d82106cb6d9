#!/bin/sh
# Installs the dracut module under $DESTDIR/usr/lib/dracut/modules.d and, if given, the binary.
# Usage: initrd-module/install.sh [BINARY]   (DESTDIR honoured)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest="${DESTDIR:-}/usr/lib/dracut/modules.d/90initrd-sysext"
mkdir -p "$dest"
for f in "$here"/90initrd-sysext/*; do
    case "$f" in *.sh) mode=0755 ;; *) mode=0644 ;; esac
    install -m "$mode" "$f" "$dest/"
done
if [ $# -ge 1 ]; then
    install -D -m 0755 "$1" "${DESTDIR:-}/usr/bin/initrd-sysext"
fi
echo "installed $dest"
