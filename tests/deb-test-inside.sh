#!/bin/sh
# Run by deb-test.sh inside the throwaway chroot: install, check, upgrade, remove, purge.
#   deb-test-inside.sh VERSION NEWER_VERSION
set -eu
version=$1 newer=$2
cd /tmp/debtest
fail() { echo "deb-test: FAIL: $*"; exit 1; }
step() { echo "deb-test: $*"; }

# A chroot must not start services (policy-rc.d, as debootstrap and image builders do).
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d

had_user=no
getent passwd xsgw >/dev/null && had_user=yes

step "install $version"
dpkg -i old.deb > install.log 2>&1 || { cat install.log; fail "dpkg -i"; }
grep -q 'not started: /etc/xsgw/xsgw.ini is not usable yet' install.log ||
    { cat install.log; fail "postinst does not say why xsgw was not started"; }
[ "$(dpkg-query -W -f='${Status} ${Version}' xsgw)" = "install ok installed $version" ] || fail "dpkg status"
/usr/bin/xsgw version | grep -qx "xsgw $version" || fail "xsgw version"
getent passwd xsgw >/dev/null || fail "no xsgw user"
[ $had_user = yes ] || {
    uid=$(getent passwd xsgw | cut -d: -f3)
    [ "$uid" -lt 1000 ] || fail "xsgw is not a system user (uid $uid)"
    [ "$(getent passwd xsgw | cut -d: -f7)" = /usr/sbin/nologin ] || fail "xsgw can log in"
}
[ "$(stat -c '%U:%G %a' /var/lib/xsgw)" = "xsgw:xsgw 750" ] || fail "/var/lib/xsgw: $(stat -c '%U:%G %a' /var/lib/xsgw)"
[ "$(stat -c '%U:%G %a' /etc/xsgw/xsgw.ini)" = "root:xsgw 640" ] || fail "xsgw.ini: $(stat -c '%U:%G %a' /etc/xsgw/xsgw.ini)"
[ "$(stat -c '%U:%G %a' /etc/xsgw)" = "root:xsgw 750" ] || fail "/etc/xsgw: $(stat -c '%U:%G %a' /etc/xsgw)"
dpkg-query -W -f='${Conffiles}\n' xsgw | grep -q '/etc/xsgw/xsgw.ini' || fail "xsgw.ini is not a conffile"
dpkg-query -W -f='${Conffiles}\n' xsgw | grep -q '/etc/init.d/xsgw' || fail "the init script is not a conffile"
[ -x /etc/init.d/xsgw ] && grep -q '^DAEMON=/usr/bin/xsgw' /etc/init.d/xsgw || fail "init script"
ls /etc/rc2.d/S*xsgw >/dev/null 2>&1 || fail "init script not registered (update-rc.d)"
grep -q '^ExecStart=/usr/bin/xsgw run -c /etc/xsgw/xsgw.ini' /lib/systemd/system/xsgw.service || fail "unit"
[ -L /etc/systemd/system/multi-user.target.wants/xsgw.service ] || fail "unit not enabled"
zcat /usr/share/man/man5/xsgw.ini.5.gz | grep -q 'max_stanza' || fail "xsgw.ini(5) lacks the keys"
zcat /usr/share/man/man8/xsgw.8.gz | grep -q 'xsgw check' || fail "xsgw(8)"
if command -v man >/dev/null; then
    man -l /usr/share/man/man5/xsgw.ini.5.gz 2>/dev/null | grep -q 'state_dir' || fail "man cannot show xsgw.ini(5)"
fi

step "xsgw check on the installed sample, as the service user"
if su -s /bin/sh -c 'xsgw check -c /etc/xsgw/xsgw.ini' xsgw > check.log 2>&1; then
    cat check.log; fail "check passed without certificates"
fi
grep -q '/etc/xsgw/xmpp.pem' check.log || { cat check.log; fail "check does not name the missing certificate"; }

step "an admin provides certificates for the sample's names; check passes"
cd /etc/xsgw
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout internal-ca.key \
    -out internal-ca.pem -days 30 -subj /CN=debtest-ca >/dev/null 2>&1
for n in gateway xmpp; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $n.key -out $n.csr \
        -subj /CN=xmpp.jds.local >/dev/null 2>&1
    printf 'subjectAltName=DNS:xmpp.jds.local,DNS:contoso.com,DNS:xmpp.contoso.com\nextendedKeyUsage=serverAuth,clientAuth\n' > $n.ext
    openssl x509 -req -in $n.csr -CA internal-ca.pem -CAkey internal-ca.key -CAcreateserial \
        -out $n.pem -days 30 -extfile $n.ext >/dev/null 2>&1
    rm $n.csr $n.ext
done
chgrp xsgw ./*.key ./*.pem && chmod 0640 ./*.key ./*.pem
cd /tmp/debtest
su -s /bin/sh -c 'xsgw check -c /etc/xsgw/xsgw.ini' xsgw > check.log 2>&1 ||
    { cat check.log; fail "check refused the configured sample"; }

step "the admin edits xsgw.ini; upgrade to $newer keeps the edit"
sed -i 's/^max_per_partner = 20$/max_per_partner = 7/' /etc/xsgw/xsgw.ini
grep -q '^max_per_partner = 7$' /etc/xsgw/xsgw.ini || fail "edit"
dpkg -i --force-confold new.deb > upgrade.log 2>&1 || { cat upgrade.log; fail "upgrade"; }
[ "$(dpkg-query -W -f='${Version}' xsgw)" = "$newer" ] || fail "version after upgrade"
grep -q '^max_per_partner = 7$' /etc/xsgw/xsgw.ini || fail "the admin's edit was lost"
grep -q 'changed in the upgrade test' /etc/xsgw/xsgw.ini.dpkg-dist || fail "no xsgw.ini.dpkg-dist with the new sample"
[ "$(stat -c '%U:%G %a' /etc/xsgw/xsgw.ini)" = "root:xsgw 640" ] || fail "permissions after upgrade"
getent passwd xsgw >/dev/null || fail "user gone after upgrade"

step "remove: the program goes, the configuration stays"
echo "state" > /var/lib/xsgw/subscriptions
dpkg -r xsgw > remove.log 2>&1 || { cat remove.log; fail "dpkg -r"; }
[ ! -e /usr/bin/xsgw ] || fail "binary left after remove"
[ -f /etc/xsgw/xsgw.ini ] || fail "configuration removed by dpkg -r"
[ "$(dpkg-query -W -f='${Status}' xsgw)" = "deinstall ok config-files" ] || fail "status after remove"

step "purge: configuration, state and registrations go; the admin's certificates stay"
dpkg -P xsgw > purge.log 2>&1 || { cat purge.log; fail "dpkg -P"; }
[ ! -e /etc/xsgw/xsgw.ini ] || fail "xsgw.ini left after purge"
[ ! -e /var/lib/xsgw ] || fail "state left after purge"
[ ! -e /etc/init.d/xsgw ] || fail "init script left after purge"
! ls /etc/rc2.d/S*xsgw >/dev/null 2>&1 || fail "rc links left after purge"
[ ! -e /etc/systemd/system/multi-user.target.wants/xsgw.service ] || fail "unit still enabled after purge"
[ -f /etc/xsgw/gateway.pem ] || fail "purge removed the admin's certificate"
dpkg-query -W -f='${Status}' xsgw 2>/dev/null | grep -q 'not-installed' ||
    ! dpkg-query -W xsgw >/dev/null 2>&1 || fail "still known to dpkg after purge"
step "install, check, upgrade, remove, purge: ok"
