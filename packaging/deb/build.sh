#!/bin/sh
# Builds xsgw_<version>_amd64.deb from a built static binary, with dpkg-deb only.
#   build.sh VERSION BINARY MANPAGE_DIR OUTDIR [SAMPLE_INI]
# Layout: /usr/bin/xsgw, /etc/xsgw/xsgw.ini and /etc/init.d/xsgw (conffiles),
# /lib/systemd/system/xsgw.service, man pages xsgw(8) and xsgw.ini(5), the README, the
# sample configuration and the copyright under /usr/share/doc/xsgw.
set -eu

version=$1 binary=$2 mandir=$3 outdir=$4
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
sample=${5:-$top/etc/xsgw.ini}

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
umask 022

install -D -m 0755 "$binary" "$root/usr/bin/xsgw"
install -D -m 0644 "$sample" "$root/etc/xsgw/xsgw.ini"
install -D -m 0644 "$sample" "$root/usr/share/doc/xsgw/examples/xsgw.ini"
install -d "$root/etc/init.d" "$root/lib/systemd/system"
sed 's|/usr/local/bin/xsgw|/usr/bin/xsgw|g' "$top/etc/init.d/xsgw" > "$root/etc/init.d/xsgw"
chmod 0755 "$root/etc/init.d/xsgw"
sed -e 's|/usr/local/bin/xsgw|/usr/bin/xsgw|g' \
    -e 's|^Documentation=.*|Documentation=man:xsgw(8) man:xsgw.ini(5)|' \
    "$top/etc/xsgw.service" > "$root/lib/systemd/system/xsgw.service"
chmod 0644 "$root/lib/systemd/system/xsgw.service"
install -D -m 0644 "$mandir/xsgw.8" "$root/usr/share/man/man8/xsgw.8"
install -D -m 0644 "$mandir/xsgw.ini.5" "$root/usr/share/man/man5/xsgw.ini.5"
gzip -9n "$root/usr/share/man/man8/xsgw.8" "$root/usr/share/man/man5/xsgw.ini.5"
install -D -m 0644 "$top/README.md" "$root/usr/share/doc/xsgw/README.md"
gzip -9n "$root/usr/share/doc/xsgw/README.md"
install -m 0644 "$here/copyright" "$root/usr/share/doc/xsgw/copyright"
install -D -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/xsgw"
# A native package's changelog: one entry for this version.
date=$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)}")
printf 'xsgw (%s) unstable; urgency=medium\n\n  * Release %s; see /usr/share/doc/xsgw/README.md.gz.\n\n -- xsgw developers <xsgw-dev@lists.contoso.test>  %s\n' \
    "$version" "$version" "$date" > "$root/usr/share/doc/xsgw/changelog"
gzip -9n "$root/usr/share/doc/xsgw/changelog"

install -d -m 0755 "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" "$here/control.in" > "$root/DEBIAN/control"
printf '/etc/init.d/xsgw\n/etc/xsgw/xsgw.ini\n' > "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do install -m 0755 "$here/$script" "$root/DEBIAN/$script"; done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort | xargs md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

mkdir -p "$outdir"
deb="$outdir/xsgw_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
