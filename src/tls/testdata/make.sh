#!/bin/sh
# Regenerates the certificates of the unit tests in src/tls/names.rs (run from this
# directory; needs the openssl command). Keys are thrown away: the tests only read
# certificates, and verify them at a fixed time, so these never expire for them.
#   ca.pem          internal CA
#   nc-ca.pem       a CA constrained to names under contoso.test (nameConstraints)
#   edge.pem        CN and SAN sip.contoso.test, from ca          (+ edge.pin, by openssl)
#   wildcard.pem    CN and SAN *.contoso.test, from ca
#   cn-only.pem     CN sip.contoso.test, no subjectAltName, from ca
#   cn-partner.pem  CN gmail.test, SAN mail.unrelated.test, from ca
#   nc-inside.pem   SAN sip.contoso.test, from nc-ca
#   nc-outside.pem  SAN sip.fabrikam.test, from nc-ca (outside its constraint)
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ca() { # name cn extra-extension...
    name=$1 cn=$2
    shift 2
    set -- -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" "$@"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/$name.key" \
        -out "$name.pem" -days 36500 -subj "/CN=$cn" "$@" 2>/dev/null
}
leaf() { # name issuer cn [san-list]
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' >"$tmp/ext"
    [ -n "${4:-}" ] && printf 'subjectAltName=%s\n' "$4" >>"$tmp/ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/$1.key" \
        -out "$tmp/$1.csr" -subj "/CN=$3" 2>/dev/null
    openssl x509 -req -in "$tmp/$1.csr" -CA "$2.pem" -CAkey "$tmp/$2.key" -set_serial "0x$(openssl rand -hex 16)" \
        -days 36500 -extfile "$tmp/ext" -out "$1.pem" 2>/dev/null
}
ca ca "xsgw unit-test CA"
ca nc-ca "xsgw unit-test constrained CA" -addext "nameConstraints=critical,permitted;DNS:contoso.test"
leaf edge ca sip.contoso.test DNS:sip.contoso.test
leaf wildcard ca '*.contoso.test' 'DNS:*.contoso.test'
leaf cn-only ca sip.contoso.test
leaf cn-partner ca gmail.test DNS:mail.unrelated.test
leaf nc-inside nc-ca sip.contoso.test DNS:sip.contoso.test
leaf nc-outside nc-ca sip.fabrikam.test DNS:sip.fabrikam.test
# The pin as etc/xsgw.ini says to compute it.
printf 'sha256/%s\n' "$(openssl x509 -in edge.pem -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | openssl base64)" >edge.pin
