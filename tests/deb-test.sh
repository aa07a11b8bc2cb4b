#!/bin/sh
# The Debian package as an admin meets it:
#   deb-test.sh DEB VERSION STATIC_BINARY MANPAGE_DIR
# 1. lintian reports no error;
# 2. in a throwaway overlay of this machine's root (a mount namespace: nothing reaches the
#    real system), dpkg -i installs it: the xsgw system user, /var/lib/xsgw owned by it,
#    /etc/xsgw/xsgw.ini readable by root and xsgw only, man pages, the unit and the init
#    script registered; `xsgw check` on the sample names the missing certificate, and passes
#    once an admin has put certificates in place;
# 3. an upgrade to a newer version whose sample changed keeps the admin's edited xsgw.ini and
#    leaves the new one beside it as xsgw.ini.dpkg-dist;
# 4. dpkg -r removes the program and keeps the configuration; dpkg -P removes the
#    configuration, the state and the registrations, and keeps the admin's certificates.
# Needs root (mount namespaces, overlayfs, chroot), as `make test` has in CI.
set -eu

deb=$1 version=$2 binary=$3 mandir=$4
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "deb-test: skipped (needs root for a mount namespace and chroot)"
    exit 0
fi

work=$(mktemp -d /tmp/xsgw-deb-test.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "deb-test: lintian $deb"
lintian --fail-on error --tag-display-limit 0 "$deb" > "$work/lintian.txt" 2>&1 || {
    cat "$work/lintian.txt"
    echo "deb-test: FAIL: lintian reports errors"
    exit 1
}
sed 's/^/deb-test: lintian: /' "$work/lintian.txt"

# A newer version whose sample configuration changed, for the upgrade.
newer="$version+debtest1"
sed 's/^; xsgw — XMPP <-> SIP federation gateway: annotated configuration\./&\n; (changed in the upgrade test)/' \
    "$top/etc/xsgw.ini" > "$work/newer.ini"
grep -q 'changed in the upgrade test' "$work/newer.ini"
"$top/packaging/deb/build.sh" "$newer" "$binary" "$mandir" "$work" "$work/newer.ini" >/dev/null

mkdir -p "$work/upper" "$work/overlay-work" "$work/root"
cp "$deb" "$work/upper-old.deb"
cp "$work/xsgw_${newer}_amd64.deb" "$work/upper-new.deb"
cp "$here/deb-test-inside.sh" "$work/inside.sh"

unshare --mount --propagation private sh -c "
    set -e
    mount -t overlay overlay -o lowerdir=/,upperdir='$work/upper',workdir='$work/overlay-work' '$work/root'
    mount --bind /proc '$work/root/proc'
    mount --bind /dev '$work/root/dev'
    mount -t tmpfs tmpfs '$work/root/run'
    mkdir -p '$work/root/tmp/debtest'
    cp '$work/upper-old.deb' '$work/root/tmp/debtest/old.deb'
    cp '$work/upper-new.deb' '$work/root/tmp/debtest/new.deb'
    cp '$work/inside.sh' '$work/root/tmp/debtest/inside.sh'
    chroot '$work/root' /bin/sh /tmp/debtest/inside.sh '$version' '$newer'
"
echo "deb-test: ok"
