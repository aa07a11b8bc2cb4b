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

# The testbed's fixed addresses allow one testbed on the machine: take the lock the test
# suite uses (a directory holding the owner's pid; a dead owner's lock is taken over).
LOCK=/tmp/xsgw-testbed.lock
take_lock() {
    local waited=0
    until mkdir "$LOCK" 2>/dev/null; do
        owner=$(cat "$LOCK/pid" 2>/dev/null || true)
        if [ -n "$owner" ] && ! kill -0 "$owner" 2>/dev/null; then rm -rf "$LOCK"; continue; fi
        if [ $waited -eq 0 ]; then echo "waiting for the testbed lock ($LOCK, pid ${owner:-?})"; fi
        waited=1; sleep 1
    done
    echo $$ > "$LOCK/pid"
}

cleanup() {
    if [ -n "$XSGW_PID" ] && kill -0 "$XSGW_PID" 2>/dev/null; then kill -TERM "$XSGW_PID" || true; wait "$XSGW_PID" || true; fi
    $PY $TB down --dir "$TESTBED" >/dev/null 2>&1 || true
    if [ "$(cat "$LOCK/pid" 2>/dev/null)" = "$$" ]; then rm -rf "$LOCK"; fi
}
trap cleanup EXIT
take_lock

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

step "4b. xsgw diagnose: the deployment checked with the network (DNS, certificates, firewall, Edge)"
say "one line per check; warn/fail carry a fix: line (--deep also authenticates an S2S stream to Prosody)"
diag=0
"$XSGW" diagnose -c "$DEMO/xsgw.ini" --deep > "$DEMO/diagnose.txt" || diag=$?
sed "s|$DEMO/||g" "$DEMO/diagnose.txt" | show
if [ $diag -eq 0 ] && grep -q '^ok    edge.allowed' "$DEMO/diagnose.txt" \
    && grep -q '^ok    live .*Edge connections: .*127\.0\.10\.30:5061' "$DEMO/diagnose.txt"; then
    record ok "xsgw diagnose: nothing fails on the testbed (exit 0); it sees the running xsgw's Edge connection"
else
    record fail "xsgw diagnose exit status $diag"
fi
say "and with the Edge pointed at its internal interface (127.0.10.30:5062, pool certificate, Digest):"
sed 's/^edge = sip.contoso.test:5061/edge = sip.contoso.test:5062/' "$DEMO/xsgw.ini" > "$DEMO/internal.ini"
diag=0
"$XSGW" diagnose -c "$DEMO/internal.ini" --only edge > "$DEMO/diagnose-internal.txt" || diag=$?
grep -A1 -E '^fail' "$DEMO/diagnose-internal.txt" | show
if [ $diag -eq 1 ] && grep -q '^fail  edge.federation-port .*internal interface' "$DEMO/diagnose-internal.txt"; then
    record ok "xsgw diagnose named the Edge's internal interface (exit 1) and the fix"
else
    record fail "xsgw diagnose did not recognise the internal interface"
fi

# Prints a conversation transcript from the peers' JSON lines (stdin): one line per event.
transcript() { $PY -c '
import json, sys
for raw in sys.stdin:
    raw = raw.strip()
    if not raw.startswith("{"):
        continue
    d = json.loads(raw)
    m = d.get("message") or {}
    r = d.get("request") or {}
    if m.get("kind") == "chatstate":
        print("   %-34s %s is %s" % ("[XMPP client of " + m["to"] + "]", m["from"], m["state"]))
    elif m.get("kind") == "message":
        print("   %-34s %s: %s" % ("[XMPP client of " + m["to"] + "]", m["from"], m["body"]))
    elif m.get("kind") == "error":
        print("   %-34s error from %s: %s (%s)" % ("[XMPP client of " + m["to"] + "]", m["from"], m["condition"], m.get("text") or ""))
    elif r and r.get("method") in ("MESSAGE", "INFO", "INVITE", "BYE"):
        ct = r.get("content_type") or ""
        what = r.get("body") if ct.startswith("text/plain") else ("typing notification (%s)" % ct if r["method"] != "INVITE" and r["method"] != "BYE" else "IM session (" + r["method"] + ")")
        print("   %-34s %s %s: %s" % ("[SIP phone of " + r["to"].replace("sip:", "") + "]", r["method"], r["from"].replace("sip:", ""), what))
    elif "finals" in d:
        for f in d["finals"]:
            print("   %-34s answered %s %s%s" % ("[SIP phone, sender]", f["code"], f["reason"], ("  Warning: " + f["warning"]) if f.get("warning") else ""))
    elif "invite" in d and "sent" in d:
        print("   %-34s INVITE answered %s; sent %s" % ("[SIP phone, sender]", d["invite"]["code"], ", ".join("%s %s" % (x["method"], x.get("code")) for x in d["sent"])))
        for x in d.get("received", []):
            print("   %-34s %s in the session from %s: %s" % ("[SIP phone of bob]", x["method"], x["from"].replace("sip:", ""), x["body"]))
'; }

step "5. Chat, SIP → XMPP: bob@contoso.test (behind the Edge) writes to alice@gmail.test"
say "alice logs in to Prosody with an XMPP client; bob types, then sends (non-ASCII and XML specials on purpose)"
$PY $TB xmpp-recv --dir "$TESTBED" --user alice@gmail.test --count 1 --timeout 15 > "$DEMO/alice1.json" &
RECV=$!; sleep 2
$PY $TB sip-send --dir "$TESTBED" --from sip:bob@contoso.test --to sip:alice@gmail.test \
    --content-type application/im-iscomposing+xml \
    --body '<?xml version="1.0" encoding="UTF-8"?><isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"><state>active</state></isComposing>' > "$DEMO/bob-typing.json"
$PY $TB sip-send --dir "$TESTBED" --from sip:bob@contoso.test --to sip:alice@gmail.test \
    --body 'Hello Alice! Grüße, 日本 — 1 < 2 & "quotes" ]]>' > "$DEMO/bob1.json"
wait $RECV || true
cat "$DEMO/bob-typing.json" "$DEMO/alice1.json" "$DEMO/bob1.json" | transcript
if grep -q '"code": 200' "$DEMO/bob1.json" && grep -q 'Hello Alice! Grüße, 日本 — 1 < 2 & \\"quotes\\" ]]>' "$DEMO/alice1.json" \
    && grep -q '"state": "composing"' "$DEMO/alice1.json"; then
    record ok "SIP → XMPP: bob's typing and message reached alice intact; 200 only after Prosody accepted it"
else
    record fail "SIP → XMPP chat"
fi

step "6. Chat, XMPP → SIP: alice answers bob; his SIP phone is a user agent at 127.0.10.40"
$PY $TB sip-recv --dir "$TESTBED" --count 2 --timeout 15 > "$DEMO/bob-phone.json" &
RECV=$!; sleep 1
$PY $TB xmpp-recv --dir "$TESTBED" --user alice@gmail.test --send bob@contoso.test --send-state composing \
    --body 'Hi Bob — ça va? <b>not bold</b>' --count 0 --timeout 3 > /dev/null || true
wait $RECV || true
transcript < "$DEMO/bob-phone.json"
if grep -q 'Hi Bob — ça va? <b>not bold</b>' "$DEMO/bob-phone.json" && grep -q 'im-iscomposing' "$DEMO/bob-phone.json"; then
    record ok "XMPP → SIP: alice's typing and message reached bob's SIP phone intact (page mode MESSAGE)"
else
    record fail "XMPP → SIP chat"
fi

step "7. An IM session, as Lync/Skype Edges use: bob opens it, alice replies inside it"
$PY $TB sip-session --dir "$TESTBED" --from sip:bob@contoso.test --to sip:alice@gmail.test --typing \
    --message 'Session time, Alice.' --linger 8 --expect 1 > "$DEMO/session.json" &
SESSION=$!; sleep 2
$PY $TB xmpp-recv --dir "$TESTBED" --user alice@gmail.test --send bob@contoso.test \
    --body 'Replying inside your session.' --count 1 --timeout 8 > "$DEMO/alice2.json" || true
wait $SESSION || true
cat "$DEMO/alice2.json" | transcript
tail -n 1 "$DEMO/session.json" | transcript
if grep -q '"received": \[{[^]]*Replying inside your session' "$DEMO/session.json"; then
    record ok "IM session: INVITE accepted with an m=message answer, messages both ways inside it, BYE"
else
    record fail "IM session"
fi

step "8. Errors reach the sender, mapped (RFC 7247 §7); nothing is answered 200 and lost"
$PY $TB sip-send --dir "$TESTBED" --from sip:bob@contoso.test --to sip:nobody@gmail.test --body 'anyone?' > "$DEMO/err1.json"
say "bob → nobody@gmail.test (no such XMPP user):"
transcript < "$DEMO/err1.json"
$PY $TB sip-recv --dir "$TESTBED" --count 1 --timeout 10 --status-for nobody=404 > /dev/null &
RECV=$!; sleep 1
say "alice → nobody@contoso.test (the Edge answers 404):"
$PY $TB xmpp-recv --dir "$TESTBED" --user alice@gmail.test --send nobody@contoso.test --body 'anyone?' \
    --count 1 --timeout 8 > "$DEMO/err2.json" || true
wait $RECV || true
transcript < "$DEMO/err2.json"
if grep -q '"code": 403' "$DEMO/err1.json" && grep -q 'item-not-found' "$DEMO/err2.json"; then
    record ok "errors: unknown XMPP user → SIP 403 (service-unavailable); unknown SIP user → XMPP item-not-found"
else
    record fail "error mapping"
fi

step "9. Presence both ways (RFC 8048): alice watches bob (SIP), carol (SIP) watches alice; each side changes status"
DIR="$TESTBED" TB="$TB" PY="$PY" $PY - > "$DEMO/presence.txt" <<'PRESENCE' || true
import json, os, queue, subprocess, threading, time
tb, d = os.environ["TB"], os.environ["DIR"]
def peer(args):
    p = subprocess.Popen([os.environ["PY"], tb] + args + ["--dir", d], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, bufsize=1)
    q = queue.Queue()
    threading.Thread(target=lambda: [q.put(json.loads(l)) for l in p.stdout if l.startswith("{")],
                     daemon=True).start()
    return p, q
def send(p, cmd): p.stdin.write(json.dumps(cmd) + "\n"); p.stdin.flush()
def wait(q, pred, what, t=15):
    end = time.time() + t
    while time.time() < end:
        try:
            x = q.get(timeout=0.2)
        except queue.Empty:
            continue
        try:
            if pred(x): return x
        except (KeyError, TypeError, AttributeError):
            pass
    print("MISSING %s" % what); return None
bob, bq = peer(["sip-presence", "--user", "sip:bob@contoso.test", "--note", "At my desk"])
wait(bq, lambda x: x["ready"], "bob ready")
alice, aq = peer(["xmpp-presence", "--user", "alice@gmail.test", "--available", "--status", "Reading mail"])
wait(aq, lambda x: x["ready"], "alice ready")
send(alice, {"cmd": "subscribe", "to": "bob@contoso.test"})
if wait(aq, lambda x: x["presence"]["type"] == "subscribed", "subscribed"):
    print("   [XMPP client of alice]  bob@contoso.test approved her subscription (NOTIFY active)")
send(bob, {"cmd": "publish", "basic": "open", "note": "In a meeting", "activity": "away"})
x = wait(aq, lambda x: x["presence"]["show"] == "away", "away")
if x:
    print("   [XMPP client of alice]  bob is %s: %s" % (x["presence"]["show"], x["presence"]["status"]))
    print("OK sip-to-xmpp")
carol, cq = peer(["sip-presence", "--user", "sip:carol@contoso.test", "--port", "0"])
wait(cq, lambda x: x["ready"], "carol ready")
send(carol, {"cmd": "subscribe", "to": "sip:alice@gmail.test", "expires": 600})
wait(aq, lambda x: x["presence"]["type"] == "subscribe", "subscription request")
print("   [XMPP client of alice]  carol@contoso.test asks to see her presence; alice approves")
send(alice, {"cmd": "approve", "to": "carol@contoso.test"})
wait(cq, lambda x: x["notify"]["state"] == "active", "NOTIFY active")
send(alice, {"cmd": "presence", "show": "dnd", "status": "Busy with a customer"})
x = wait(cq, lambda x: "Busy with a customer" in x["notify"]["body"], "NOTIFY busy")
if x:
    n = x["notify"]
    print("   [SIP phone of carol]    NOTIFY: alice is %s, %s (RPID: %s)" % (n["basic"], n["note"], ", ".join(n["activities"])))
    print("OK xmpp-to-sip")
for p in (alice, bob, carol):
    send(p, {"cmd": "quit"})
time.sleep(0.5)
PRESENCE
grep -v '^OK ' "$DEMO/presence.txt" || true
if grep -q '^OK sip-to-xmpp' "$DEMO/presence.txt" && grep -q '^OK xmpp-to-sip' "$DEMO/presence.txt"; then
    record ok "presence: a SIP user's away status reached alice; alice's busy status reached a SIP user's phone"
else
    record fail "presence"
fi

step "9b. xsgw status: what the running xsgw holds after the traffic above"
say "Edge connections, S2S streams with their authentication, counters, last errors (control socket under state_dir, mode 0600)"
st=0
"$XSGW" status -c "$DEMO/xsgw.ini" > "$DEMO/status.txt" || st=$?
sed "s|$DEMO/||g" "$DEMO/status.txt" | show
if [ $st -eq 0 ] && grep -q '(ours up)' "$DEMO/status.txt" \
    && grep -Eq '^  gmail\.test +inbound +authenticated' "$DEMO/status.txt"; then
    record ok "xsgw status: the Edge connections and the gmail.test streams with their authentication"
else
    record fail "xsgw status exit status $st"
fi

step "10. SIGTERM: orderly shutdown"
kill -TERM "$XSGW_PID"
status=0; wait "$XSGW_PID" || status=$?
XSGW_PID=
grep -E "translated:" "$LOG" | show
tail -n 2 "$LOG" | show
if [ $status -eq 0 ] && [ ! -e "$DEMO/xsgw.pid" ]; then
    record ok "xsgw stopped on SIGTERM with exit status 0 and removed its pidfile"
else
    record fail "xsgw exit status $status after SIGTERM"
fi

step "Summary"
for c in "${crossed[@]}"; do say "ok     $c"; done
for f in "${failed[@]+"${failed[@]}"}"; do say "FAILED $f"; done
say "full xsgw log: $LOG"
[ ${#failed[@]} -eq 0 ]
