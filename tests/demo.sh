#!/usr/bin/env bash
# make demo: the testbed of real peers and xsgw on a generated configuration, narrated.
# Everything listens on 127.0.10.0/24 and is stopped by PID at the end (also on Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
TB=tests/testbed/testbed.py
XSGW=${XSGW:-target/release/xsgw}
DEMO=${DEMO_DIR:-$PWD/demo}
TESTBED=$DEMO/testbed
LOG=$DEMO/xsgw.log
XSGW_PID=

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
show() { sed 's/^/   | /'; }

cleanup() {
    if [ -n "$XSGW_PID" ] && kill -0 "$XSGW_PID" 2>/dev/null; then kill -TERM "$XSGW_PID" || true; wait "$XSGW_PID" || true; fi
    $PY $TB down --dir "$TESTBED" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Waits up to $2 seconds for a line matching $1 in the xsgw log; prints it.
await_log() {
    local pattern=$1 limit=${2:-15} i=0
    while [ $i -lt $((limit * 10)) ]; do
        if grep -m1 -E "$pattern" "$LOG"; then return 0; fi
        sleep 0.1; i=$((i + 1))
    done
    echo "   (no log line matching '$pattern' within ${limit}s)"; return 1
}

crossed=()
failed=()
record() { if [ "$1" = ok ]; then crossed+=("$2"); else failed+=("$2"); fi; }

rm -rf "$DEMO"; mkdir -p "$DEMO"

step "1. Testbed of real peers on 127.0.10.0/24"
say "dnsmasq (test DNS), Prosody serving gmail.test, Kamailio as the Access Edge sip.contoso.test"
$PY $TB up --dir "$TESTBED" >/dev/null
say "up: $(grep -c . "$TESTBED/testbed.env") facts in $TESTBED/testbed.env"

step "2. DNS as the partners see it (dig @127.0.10.53)"
say "_xmpp-server._tcp.gmail.test (Gmail's published shape: one priority 5, four priority 20):"
dig +short @127.0.10.53 SRV _xmpp-server._tcp.gmail.test | sort -n | show
say "_xmpp-server._tcp.contoso.test (the hosted SIP domain points at xsgw's public name):"
dig +short @127.0.10.53 SRV _xmpp-server._tcp.contoso.test | show
say "xmpp.contoso.test A: $(dig +short @127.0.10.53 A xmpp.contoso.test)"

step "3. Configuration, checked before anything starts"
$PY $TB gateway-config --dir "$TESTBED" > "$DEMO/xsgw.ini"
say "generated $DEMO/xsgw.ini; xsgw check says:"
"$XSGW" check -c "$DEMO/xsgw.ini" | show
say "and a broken copy (typo, certificate for the wrong name) is refused with every reason:"
sed -e 's/^dialback_secret/dialbak_secret/' -e 's/^fqdn = gw.contoso.test/fqdn = xsgw.contoso.test/' \
    "$DEMO/xsgw.ini" > "$DEMO/broken.ini"
if "$XSGW" check -c "$DEMO/broken.ini" > "$DEMO/broken.out"; then
    record fail "a broken configuration was accepted"
else
    grep -E 'error' "$DEMO/broken.out" | sed "s|$DEMO/||" | show
    record ok "xsgw check refused a broken configuration (exit 1) and named each problem"
fi

step "4. xsgw run"
"$XSGW" run -c "$DEMO/xsgw.ini" --pidfile "$DEMO/xsgw.pid" 2> "$LOG" &
XSGW_PID=$!
await_log "started: XMPP on" | show
say "pid $(cat "$DEMO/xsgw.pid"); listening:"
ss -ltn | grep -E '127\.0\.10\.100:(5269|5061)' | awk '{print $4}' | show
say "and its own connection to the Edge's federation port, certificate checked:"
if await_log "connected to the Edge .* over mutual TLS" | show; then
    record ok "xsgw connected to the Edge (Kamailio) over mutual TLS and verified its certificate"
else
    record fail "xsgw did not connect to the Edge"
fi

step "5. SIP leg: bob@contoso.test writes to alice@gmail.test; the Edge routes gmail.test to xsgw"
$PY $TB sip-send --dir "$TESTBED" --from sip:bob@contoso.test --to sip:alice@gmail.test \
    --body "Hello Alice" --timeout 5 > "$DEMO/sip.json"
show < "$DEMO/sip.json"
if await_log "mutual TLS established" | show; then
    record ok "Kamailio (the Edge) reached xsgw over mutual TLS; xsgw verified the Edge certificate"
else
    record fail "the Edge did not reach xsgw over mutual TLS"
fi
if grep -q '"final": "SIP/2.0 480' "$DEMO/sip.json"; then
    record ok "bob's MESSAGE was answered 480 (translation not built yet): no 200 for what xsgw cannot deliver"
else
    record fail "bob's MESSAGE got no honest final answer"
fi

step "6. XMPP leg: alice@gmail.test writes to carol@contoso.test; Prosody finds xsgw by SRV"
$PY $TB xmpp-send --dir "$TESTBED" --sender alice@gmail.test --receiver bob@gmail.test \
    --remote carol@contoso.test --wait 5 --body "Hello Carol" > "$DEMO/xmpp.json"
show < "$DEMO/xmpp.json"
if await_log "gmail.test authenticated toward contoso.test" | show; then
    record ok "Prosody found xsgw by SRV, and the S2S stream authenticated (see the method above)"
else
    record fail "Prosody's stream to xsgw did not authenticate"
fi
if grep -q '"errors": \[{' "$DEMO/xmpp.json"; then
    record ok "alice's message, which xsgw cannot translate yet, came back to her as an error (not lost)"
else
    record fail "alice's message neither crossed nor bounced"
fi

step "7. SIGTERM: orderly shutdown"
kill -TERM "$XSGW_PID"
status=0; wait "$XSGW_PID" || status=$?
XSGW_PID=
tail -n 3 "$LOG" | show
if [ $status -eq 0 ] && [ ! -e "$DEMO/xsgw.pid" ]; then
    record ok "xsgw stopped on SIGTERM with exit status 0 and removed its pidfile"
else
    record fail "xsgw exit status $status after SIGTERM"
fi

step "Summary"
for c in "${crossed[@]}"; do say "ok     $c"; done
for f in "${failed[@]+"${failed[@]}"}"; do say "FAILED $f"; done
say "not yet: messages and presence translated between XMPP and SIP (next issues)"
say "full xsgw log: $LOG"
[ ${#failed[@]} -eq 0 ]
