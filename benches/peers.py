#!/usr/bin/python3
"""make bench-peers: throughput, latency and CPU per message of the testbed's real peers, and
of xsgw between them, driven by Debian's SIPp and slixmpp on 127.0.10.0/24.

Four paths, each at a fixed rate (latency p50/p99) and at saturation (messages/s):

  sip_to_xmpp   SIPp UAC -> Kamailio (UDP in, mutual TLS out) -> xsgw -> Prosody (S2S)
                -> slixmpp client of alice@gmail.test. Latency: MESSAGE to its 200 at SIPp
                (xsgw answers 200 once Prosody answered its barrier ping). Also at 20/s.
  xmpp_to_sip   slixmpp senders (c2s) -> Prosody -> xsgw (S2S) -> Kamailio (mutual TLS in,
                UDP out) -> SIPp UAS at 127.0.10.40. Latency: the sender's clock in the body
                to SIPp's arrival time.
  prosody_s2s   slixmpp senders -> Prosody gmail.test -> S2S -> a second Prosody (bench.test
                on 127.0.10.6, started here) -> slixmpp client. Latency as above.
  kamailio_mtls SIPp UAC -> Kamailio -> mutual TLS -> stunnel (127.0.10.100:5061, the gateway's
                certificate; Debian's SIPp has no TLS) -> SIPp UAS over TCP; and the other way,
                SIPp UAC -> stunnel (client, the gateway's certificate) -> Kamailio 5061 ->
                SIPp UAS over UDP. Latency: MESSAGE to 200 at the UAC.

Every message is accounted for: delivered (counted by the receiving peer), answered with an
error (SIP final other than 200, XMPP error bounce) or lost (the rest). CPU per message of each
process comes from /proc (the threads' schedstat in ns, or utime+stime when a thread ended
during the run; the whole process group for Kamailio) or, for the SIPp UAC of a run, from
wait4()'s rusage. "busy" is CPU seconds per wall second during
the saturation run: the process near 1.0 is the limit (on 2 cores, near 2 for Kamailio's
several workers); when it is a driver (SIPp, slixmpp) the figure is the driver's limit.

Peers run as in production: Prosody logs at info (the testbed's default is debug), Kamailio
at debug=1 (no per-request line) with 512 MB of shared memory (the testbed's 64 MB run out at
~1,500 MESSAGE/s: its transactions stay 5 s after their final), xsgw at info with [partner gmail.test] stanza_rate = 0 (the
default 100/s per partner would be the figure otherwise).

Prints a table and writes target/bench/peers.json. Takes /tmp/xsgw-testbed.lock like the
tests. Environment (defaults keep the whole run near 2 minutes):
  PEERS_RATE=1000          fixed rate, messages/s
  PEERS_FIXED_SECONDS=3    seconds at the fixed rate
  PEERS_LOW_RATE=20        the issue's low rate (xsgw paths only; 0 skips it)
  PEERS_LOW_COUNT=60       messages at that rate
  PEERS_SAT_MSGS=5000      messages per saturation run
  PEERS_WINDOW=200         SIPp calls in flight at saturation (-l; at 1000 the UDP leg to
                           Kamailio drowns in retransmissions)
  PEERS_SENDERS=2          slixmpp sender processes at saturation
  PEERS_ONLY=...           comma-separated subset of the four paths
  PEERS_XSGW=target/release/xsgw
  PEERS_OUT=target/bench/peers.json
  PEERS_KEEP=1             keep the run's directory (logs) even when all went well
"""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

DEBIAN_PYTHON = "/usr/bin/python3"
if (os.path.exists(DEBIAN_PYTHON)
        and os.path.realpath(sys.executable) != os.path.realpath(DEBIAN_PYTHON)):
    os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON, os.path.abspath(__file__)] + sys.argv[1:])

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTBED_DIR = os.path.join(ROOT, "tests", "testbed")
TESTBED_PY = os.path.join(TESTBED_DIR, "testbed.py")
sys.path.insert(0, TESTBED_DIR)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import testbed as tb  # noqa: E402  (after the interpreter check: it would re-exec itself)

UAC = os.path.join(HERE, "sipp", "uac-load.xml")
UAS = os.path.join(HERE, "sipp", "uas-load.xml")
LOCK = "/tmp/xsgw-testbed.lock"
BENCH_DOMAIN = "bench.test"
BENCH_USER = ("dave", "dave-secret")
# SIPp UAS behind stunnel (kamailio_mtls, toward the gateway) and stunnel's client side.
STUNNEL_BACKEND_PORT = 5070
STUNNEL_CLIENT_PORT = 5071
CLK_TCK = os.sysconf("SC_CLK_TCK")
PATHS = ["kamailio_mtls", "prosody_s2s", "sip_to_xmpp", "xmpp_to_sip"]


def env_int(name, default):
    return int(os.environ.get(name, default))


RATE = env_int("PEERS_RATE", 1000)
FIXED_SECONDS = float(os.environ.get("PEERS_FIXED_SECONDS", "3"))
LOW_RATE = env_int("PEERS_LOW_RATE", 20)
LOW_COUNT = env_int("PEERS_LOW_COUNT", 60)
SAT_MSGS = env_int("PEERS_SAT_MSGS", 5000)
WINDOW = env_int("PEERS_WINDOW", 200)
SENDERS = env_int("PEERS_SENDERS", 2)
ONLY = [p for p in os.environ.get("PEERS_ONLY", ",".join(PATHS)).split(",") if p]
XSGW = os.path.join(ROOT, os.environ.get("PEERS_XSGW", "target/release/xsgw"))
OUT = os.path.join(ROOT, os.environ.get("PEERS_OUT", "target/bench/peers.json"))
DRAIN_IDLE = 5.0  # a receiver that got nothing new for this long has everything it will get


def say(msg):
    print("bench-peers: " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# the machine-wide testbed lock (as tests/common/testbed.rs and tests/demo.sh)
# ---------------------------------------------------------------------------
def take_lock():
    waited = False
    while True:
        try:
            os.mkdir(LOCK)
        except FileExistsError:
            try:
                with open(os.path.join(LOCK, "pid")) as f:
                    owner = int(f.read().strip())
            except (OSError, ValueError):
                owner = None
            if owner is not None and not os.path.exists("/proc/%d" % owner):
                shutil.rmtree(LOCK, ignore_errors=True)
                continue
            if not waited:
                say("waiting for the testbed lock (%s, pid %s)" % (LOCK, owner))
                waited = True
            time.sleep(0.5)
            continue
        with open(os.path.join(LOCK, "pid"), "w") as f:
            f.write(str(os.getpid()))
        return


def release_lock():
    try:
        with open(os.path.join(LOCK, "pid")) as f:
            if int(f.read().strip()) != os.getpid():
                return
    except (OSError, ValueError):
        return
    shutil.rmtree(LOCK, ignore_errors=True)


# ---------------------------------------------------------------------------
# CPU accounting
# ---------------------------------------------------------------------------
def proc_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)


def thread_ns(pid):
    """{tid: nanoseconds on a CPU} of the process's live threads (schedstat)."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                out[(pid, tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


class Proc:
    """A long-running process whose CPU time we read from /proc (its whole process group
    when `group`: Kamailio's workers)."""

    def __init__(self, name, pid, group=False):
        self.name, self.pid, self.group = name, pid, group

    def pids(self):
        return tb.group_members(self.pid) if self.group else [self.pid]

    def sample(self):
        pids = self.pids()
        ns = {}
        for p in pids:
            ns.update(thread_ns(p))
        return sum(proc_ticks(p) for p in pids) / CLK_TCK, ns


def cpu_snapshot(procs):
    return {p.name: p.sample() for p in procs}


def cpu_used(before, after):
    """CPU seconds between two samples: from the threads' schedstat (nanoseconds) unless a
    thread ended in between (one we saw before is gone, or the clock ticks of utime+stime,
    which keep ended threads, say more than two ticks were lost): then from the ticks."""
    (ticks0, ns0), (ticks1, ns1) = before, after
    ticks = ticks1 - ticks0
    if ns0 and set(ns0) <= set(ns1):
        ns = sum(ns1[t] - ns0.get(t, 0) for t in ns1) / 1e9
        if ns >= ticks - 2.0 / CLK_TCK:
            return ns
    return ticks


def cpu_report(before, after, extra, messages, wall):
    """{name: {"us_per_msg", "busy"}} from two snapshots plus finished processes' rusage."""
    out = {}
    used = {n: cpu_used(before[n], after[n]) for n in before}
    used.update(extra)
    for name, secs in used.items():
        out[name] = {"cpu_s": round(secs, 4),
                     "us_per_msg": round(secs * 1e6 / messages, 1) if messages else None,
                     "busy": round(secs / wall, 2) if wall > 0 else None}
    return out


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


# Latency buckets as issue 12 counted them ("3,945 of 5,000 take 20-50 ms").
BUCKETS_MS = [1, 5, 20, 50, 100, 500]


def latency_summary(ms):
    buckets, lo = {}, 0
    for hi in BUCKETS_MS + [None]:
        key = "%s-%s" % (lo, hi) if hi else ">=%s" % lo
        buckets[key] = sum(1 for x in ms if x >= lo and (hi is None or x < hi))
        lo = hi
    return {"n": len(ms), "p50_ms": r3(percentile(ms, 50)), "p99_ms": r3(percentile(ms, 99)),
            "max_ms": r3(max(ms) if ms else None), "buckets_ms": buckets}


def r3(x):
    return None if x is None else round(x, 3)


# ---------------------------------------------------------------------------
# SIPp
# ---------------------------------------------------------------------------
def sipp_argv(scenario, transport, addr, port, extra):
    # -cp 0: no fixed control port (parallel SIPps); -max_recv_loops/-max_sched_loops high so
    # that SIPp itself is not the first limit at saturation.
    return (["sipp", "-sf", scenario, "-nostdin", "-t", transport, "-i", addr, "-p", str(port),
             "-trace_logs", "-trace_stat", "-trace_err", "-fd", "1", "-max_recv_loops", "10000",
             "-max_sched_loops", "10000"] + extra)


def stat_last(path):
    """The cumulative counters of SIPp's last statistics line."""
    try:
        with open(path) as f:
            lines = [l for l in f.read().splitlines() if l.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    head, last = lines[0].split(";"), lines[-1].split(";")
    out = {}
    for k, v in zip(head, last):
        if k.endswith("(C)"):
            try:
                out[k[:-3]] = int(v)
            except ValueError:
                pass
    return out


def run_uac(work, tag, target, service, domain, from_uri, rate, count, window,
            transport="u1", addr=tb.UA_ADDR, port=tb.SIP_PORT):
    """Runs SIPp as the UAC to completion; returns the calls' outcome, latencies, rusage."""
    wd = os.path.join(work, tag)
    os.makedirs(wd, exist_ok=True)
    argv = sipp_argv(UAC, transport, addr, port,
                     ["-s", service, "-key", "domain", domain, "-key", "from", from_uri,
                      "-r", str(rate), "-rp", "1000", "-m", str(count), "-l", str(window),
                      "-stf", "stat.csv", "-timeout", "%ds" % (count / max(rate, 1) + 60),
                      target])
    with open(os.path.join(wd, "screen.log"), "wb") as out:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             cwd=wd)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    rtts, first, last = [], None, None
    for name in os.listdir(wd):
        if name.endswith("_logs.log"):
            with open(os.path.join(wd, name)) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 5 and parts[0] == "rtt":
                        s0 = float(parts[1]) + float(parts[2]) / 1e6
                        s1 = float(parts[3]) + float(parts[4]) / 1e6
                        rtts.append((s1 - s0) * 1000.0)
                        first = s0 if first is None else min(first, s0)
                        last = s1 if last is None else max(last, s1)
    codes = {}
    for name in os.listdir(wd):
        if name.endswith("_errors.log"):
            with open(os.path.join(wd, name), errors="replace") as f:
                for m in re.finditer(r"received 'SIP/2\.0 (\d{3})", f.read()):
                    codes[m.group(1)] = codes.get(m.group(1), 0) + 1
    st = stat_last(os.path.join(wd, "stat.csv"))
    ok = st.get("SuccessfulCall", len(rtts))
    errors = st.get("FailedUnexpectedMessage", 0)
    return {"sent": st.get("OutgoingCall", count), "ok": ok, "errors": errors,
            "unanswered": st.get("FailedCall", 0) - errors,
            "retransmissions": st.get("Retransmissions", 0),
            "error_codes": codes, "stats": {k: v for k, v in st.items() if v and k.startswith("Failed")},
            "rtt_ms": rtts, "first": first, "last": last, "exit": p.returncode,
            "cpu_s": ru.ru_utime + ru.ru_stime, "dir": wd}


class Uas:
    """SIPp answering MESSAGEs 200; counts them (one log line each, flushed per line)."""

    def __init__(self, work, tag, transport="u1", addr=tb.UA_ADDR, port=tb.SIP_PORT):
        self.wd = os.path.join(work, tag)
        os.makedirs(self.wd, exist_ok=True)
        self.out = open(os.path.join(self.wd, "screen.log"), "wb")
        self.p = subprocess.Popen(sipp_argv(UAS, transport, addr, port, ["-stf", "stat.csv"]),
                                  stdin=subprocess.DEVNULL, stdout=self.out,
                                  stderr=subprocess.STDOUT, cwd=self.wd)
        self.proc = Proc("sipp_uas", self.p.pid)
        self.offset = 0  # lines already taken by an earlier phase
        time.sleep(0.3)
        if self.p.poll() is not None:
            raise RuntimeError("SIPp UAS exited at start (see %s/screen.log)" % self.wd)

    def _lines(self):
        for name in os.listdir(self.wd):
            if name.endswith("_logs.log"):
                with open(os.path.join(self.wd, name)) as f:
                    return [l for l in f.read().splitlines() if l.startswith("arrival ")]
        return []

    def count(self):
        return len(self._lines()) - self.offset

    def take(self):
        """This phase's arrivals: their number, the latencies in ms from the send time in the
        body (when there is one), the last arrival time."""
        lines = self._lines()
        mine, self.offset = lines[self.offset:], len(lines)
        lat, last = [], None
        for line in mine:
            parts = line.split()  # arrival SEC USEC sent [SECONDS.MICROS]
            arrival = float(parts[1]) + float(parts[2]) / 1e6
            last = arrival if last is None else max(last, arrival)
            if len(parts) == 5:
                lat.append((arrival - float(parts[4])) * 1000.0)
        return {"received": len(mine), "lat_ms": lat, "last": last}

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.out.close()


# ---------------------------------------------------------------------------
# slixmpp peers (child processes: `peers.py xmpp-peer`), driven with JSON lines
# ---------------------------------------------------------------------------
class XmppPeer:
    def __init__(self, d, name, jid, password, host, ca):
        self.name = name
        self.err = open(os.path.join(d, "logs", "bench-%s.err" % name), "wb")
        self.p = subprocess.Popen(
            [DEBIAN_PYTHON, os.path.abspath(__file__), "xmpp-peer", "--jid", jid, "--password",
             password, "--host", host, "--ca", ca],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True, bufsize=1)
        self.proc = Proc(name, self.p.pid)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            ready = self.expect("ready", 20)
        except RuntimeError:
            ready = "no answer"
        if ready is not True:
            self.p.kill()
            self.p.wait()
            self.err.close()
            raise RuntimeError("%s (%s) did not log in: %s" % (name, jid, ready))

    def _read(self):
        for line in self.p.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass
        self.lines.put({"eof": True})

    def expect(self, key, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("%s: no %r within %ss" % (self.name, key, timeout))
            try:
                obj = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if "eof" in obj:
                raise RuntimeError("%s exited (see its .err log)" % self.name)
            if key in obj:
                return obj[key]

    def cmd(self, obj):
        self.p.stdin.write(json.dumps(obj) + "\n")
        self.p.stdin.flush()

    def count(self):
        self.cmd({"cmd": "count"})
        return self.expect("count", 10)

    def take(self):
        self.cmd({"cmd": "take"})
        return self.expect("take", 10)

    def stop(self):
        try:
            self.cmd({"cmd": "quit"})
            self.p.wait(5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.p.kill()
            self.p.wait()
        self.err.close()


def cmd_xmpp_peer(argv):
    """Child process: logs JID in (c2s, STARTTLS verified with --ca), sends initial presence,
    prints {"ready": true}; then counts every received message whose body starts with
    "peers " (and the latency from the body's t=SECONDS.MICROS, when present) and every
    error bounce. Commands on stdin, one JSON object per line:
      {"cmd": "send", "to": JID, "count": N, "rate": R, "tag": T}  (R 0: as fast as it can)
          -> {"sent": {"count": N, "first": t, "last": t}}
      {"cmd": "count"} -> {"count": {"received": n, "errors": e}}
      {"cmd": "take"}  -> {"take": {"received": n, "errors": e, "lat_ms": [...], "last": t}}
                          (t: the last arrival; the counts start again from zero)
      {"cmd": "quit"}"""
    import argparse
    import asyncio
    import logging

    import slixmpp

    ap = argparse.ArgumentParser()
    for k in ("--jid", "--password", "--host", "--ca"):
        ap.add_argument(k, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    c = slixmpp.ClientXMPP(args.jid, args.password)
    c.ca_certs = args.ca
    c.reconnect_max_attempts = 0
    state = {"received": 0, "errors": 0, "lat": [], "last": None, "conditions": {}}
    stamp = re.compile(r"t=([0-9]+\.[0-9]+)")

    def emit(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def on_start(_event):
        c.send_presence()
        emit({"ready": True})

    def on_fail(event):
        emit({"ready": "failed: %s" % (event,)})

    def on_message(msg):
        if msg["type"] == "error":
            state["errors"] += 1
            cond = msg["error"]["condition"] or "?"
            state["conditions"][cond] = state["conditions"].get(cond, 0) + 1
            return
        body = msg["body"]
        if body.startswith("peers "):
            state["received"] += 1
            state["last"] = time.time()
            m = stamp.search(body)
            if m:
                state["lat"].append((time.time() - float(m.group(1))) * 1000.0)

    async def send(cmd):
        to, count, rate, tag = cmd["to"], int(cmd["count"]), float(cmd["rate"]), cmd["tag"]
        start, sent, first = loop.time(), 0, time.time()
        while sent < count:
            due = count if not rate else min(count, int((loop.time() - start) * rate) + 1)
            due = min(due, sent + 200)
            while sent < due:
                c.send_message(mto=to, mbody="peers %s %d t=%.6f" % (tag, sent, time.time()),
                               mtype="chat")
                sent += 1
            await asyncio.sleep(0.001 if rate else 0)
        emit({"sent": {"count": sent, "first": first, "last": time.time()}})

    def command(line):
        try:
            cmd = json.loads(line)
        except ValueError:
            return
        name = cmd.get("cmd")
        if name == "send":
            loop.create_task(send(cmd))
        elif name == "count":
            emit({"count": {"received": state["received"], "errors": state["errors"]}})
        elif name == "take":
            emit({"take": {"received": state["received"], "errors": state["errors"],
                           "lat_ms": [round(x, 3) for x in state["lat"]], "last": state["last"],
                           "conditions": state["conditions"]}})
            state.update(received=0, errors=0, lat=[], last=None, conditions={})
        elif name == "quit":
            os._exit(0)

    def stdin_reader():
        for line in sys.stdin:
            loop.call_soon_threadsafe(command, line)
        loop.call_soon_threadsafe(os._exit, 0)

    c.add_event_handler("session_start", on_start)
    c.add_event_handler("failed_auth", on_fail)
    c.add_event_handler("connection_failed", on_fail)
    c.add_event_handler("message", on_message)
    c.connect(address=(args.host, tb.XMPP_PORT_C2S))
    threading.Thread(target=stdin_reader, daemon=True).start()
    loop.run_forever()


def drain(count_fn, expected, limit=300.0):
    """Waits until count_fn() reaches `expected` or stops growing for DRAIN_IDLE seconds."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        n = count_fn()
        if n >= expected:
            return n
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > DRAIN_IDLE:
            return n
        time.sleep(0.1)
    return count_fn()


# ---------------------------------------------------------------------------
# the bench
# ---------------------------------------------------------------------------
class Bench:
    def __init__(self, d):
        self.d = d
        self.work = os.path.join(d, "bench")
        os.makedirs(self.work, exist_ok=True)
        self.info = None
        self.kamailio = None
        self.prosody = None
        self.prosody_bench = None
        self.xsgw = None
        self.stunnel = None
        self.started = []  # (name, Popen) of what we started besides the testbed

    # --- setup -----------------------------------------------------------
    def up(self):
        r = subprocess.run([DEBIAN_PYTHON, TESTBED_PY, "up", "--dir", self.d, "--kamailio-debug", "1",
                            "--kamailio-memory", "512"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError("testbed up failed:\n" + r.stderr)
        # Prosody at info, as in production (the testbed logs every stanza at debug).
        cfg = os.path.join(self.d, "prosody", "prosody.cfg.lua")
        with open(cfg) as f:
            text = f.read()
        with open(cfg, "w") as f:
            f.write(text.replace('levels = { min = "debug" }', 'levels = { min = "info" }'))
        subprocess.run([DEBIAN_PYTHON, TESTBED_PY, "restart", "--dir", self.d, "prosody"], check=True)
        self.load_info()

    def load_info(self):
        with open(os.path.join(self.d, "testbed.json")) as f:
            self.info = json.load(f)
        self.kamailio = Proc("kamailio", self.info["services"]["kamailio"]["pid"], group=True)
        self.prosody = Proc("prosody", self.info["services"]["prosody"]["pid"])

    def ca(self):
        return self.info["pki"]["ca"]["cert"]

    def password(self, jid):
        return {u["jid"]: u["password"] for u in self.info["xmpp"]["users"]}[jid]

    def xmpp_peer(self, name, jid):
        return XmppPeer(self.d, name, jid, self.password(jid), tb.XMPP_ADDR, self.ca())

    def start_prosody_bench(self):
        """A second Prosody serving bench.test on 127.0.10.6 (the DNS has its SRV), with the
        same settings as the testbed's, user dave."""
        pki = os.path.join(self.d, "pki")
        with open(os.path.join(pki, "openssl.cnf"), "w") as f:
            f.write(tb.OPENSSL_CNF)
        cert, key = tb.make_leaf(pki, "bench", BENCH_DOMAIN, [BENCH_DOMAIN], "ca")
        base = os.path.join(self.d, "prosody-bench")
        os.makedirs(os.path.join(base, "data"), exist_ok=True)
        os.makedirs(os.path.join(base, "certs"), exist_ok=True)
        settings = self.info["xmpp"]["settings"]
        cfg = os.path.join(base, "prosody.cfg.lua")
        addr = tb.BENCH_XMPP_ADDR
        with open(cfg, "w") as f:
            f.write(PROSODY_BENCH_CFG % {
                "run": os.path.join(self.d, "run"), "data": os.path.join(base, "data"),
                "certs": os.path.join(base, "certs"), "log": os.path.join(self.d, "logs"),
                "addr": addr, "ca": self.ca(), "resolv": self.info["resolv_conf"],
                "cert": cert, "key": key, "domain": BENCH_DOMAIN,
                "req": tb.lua_bool(settings["s2s_require_encryption"]),
                "secure": tb.lua_bool(settings["s2s_secure_auth"]),
                "dialback": '"dialback";' if settings["dialback"] else ""})
        tb.run(["prosodyctl", "--config", cfg, "register", BENCH_USER[0], BENCH_DOMAIN,
                BENCH_USER[1]])
        pid = tb.spawn(self.d, "prosody-bench", ["prosody", "--config", cfg, "-F"])
        tb.wait_tcp(addr, tb.XMPP_PORT_C2S, 20, pid, "prosody-bench", self.d)
        tb.wait_tcp(addr, tb.XMPP_PORT_S2S, 20, pid, "prosody-bench", self.d)
        self.prosody_bench = Proc("prosody_bench", pid)

    def start_xsgw(self):
        r = subprocess.run([DEBIAN_PYTHON, TESTBED_PY, "gateway-config", "--dir", self.d,
                            "--log-level", "info"], check=True, capture_output=True, text=True)
        text = r.stdout.replace("[partner gmail.test]\n",
                                "[partner gmail.test]\n; bench-peers: no per-partner rate limit\n"
                                "stanza_rate = 0\n")
        if "stanza_rate = 0" not in text:
            raise RuntimeError("gateway-config has no [partner gmail.test] section")
        cfg = os.path.join(self.d, "xsgw.ini")
        with open(cfg, "w") as f:
            f.write(text)
        log = open(os.path.join(self.d, "logs", "xsgw.log"), "wb")
        p = subprocess.Popen([XSGW, "run", "-c", cfg], stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT)
        log.close()
        self.started.append(("xsgw", p))
        self.xsgw = Proc("xsgw", p.pid)
        deadline = time.monotonic() + 20
        while True:
            with open(os.path.join(self.d, "logs", "xsgw.log"), errors="replace") as f:
                if "connected to the Edge" in f.read():
                    return
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("xsgw did not connect to the Edge (see %s/logs/xsgw.log)" % self.d)
            time.sleep(0.1)

    def stop_xsgw(self):
        for name, p in list(self.started):
            if name == "xsgw":
                stop(p)
                self.started.remove((name, p))
        self.xsgw = None

    def start_stunnel(self):
        pki = self.info["pki"]
        cfg = os.path.join(self.d, "stunnel.conf")
        with open(cfg, "w") as f:
            f.write(STUNNEL_CFG % {
                "log": os.path.join(self.d, "logs", "stunnel.log"),
                "gw": tb.GW_ADDR, "sips": tb.SIPS_PORT, "backend": STUNNEL_BACKEND_PORT,
                "client": STUNNEL_CLIENT_PORT, "edge": tb.EDGE_ADDR,
                "cert": pki["gateway"]["cert"], "key": pki["gateway"]["key"], "ca": self.ca()})
        p = subprocess.Popen(["stunnel", cfg], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.started.append(("stunnel", p))
        self.stunnel = Proc("stunnel", p.pid)
        tb.wait_tcp(tb.GW_ADDR, tb.SIPS_PORT, 10, p.pid, "stunnel", self.d)

    def stop_stunnel(self):
        for name, p in list(self.started):
            if name == "stunnel":
                stop(p)
                self.started.remove((name, p))
        self.stunnel = None

    def close(self):
        for _, p in self.started:
            stop(p)
        self.started = []

    # --- runs ------------------------------------------------------------
    def sip_run(self, tag, rate, count, window, procs, uas=None, sink=None, target=None,
                service="alice", domain="gmail.test", from_uri="sip:bob@contoso.test",
                transport="u1", addr=tb.UA_ADDR, port=tb.SIP_PORT, delivered_by=None):
        """SIPp sends `count` MESSAGEs; the receiver (SIPp UAS or an XMPP sink) counts them."""
        before = cpu_snapshot(procs)
        t0 = time.monotonic()
        res = run_uac(self.work, tag, target or "%s:%d" % (tb.EDGE_ADDR, tb.SIP_PORT),
                      service, domain, from_uri, rate, count, window, transport, addr, port)
        if sink is not None:
            drain(lambda: sink.count()["received"], res["ok"])
            delivered = sink.take()["received"]
        else:
            drain(uas.count, res["ok"])
            delivered = uas.take()["received"]
        wall = time.monotonic() - t0
        after = cpu_snapshot(procs)
        answered = res["ok"] + res["errors"]
        lost = res["sent"] - answered + max(0, res["ok"] - delivered)
        span = (res["last"] - res["first"]) if res["first"] is not None else None
        out = {"rate": rate if rate < SATURATION_RATE else 0, "sent": res["sent"], "delivered": delivered, "ok_200": res["ok"],
               "errors": res["errors"], "error_codes": res["error_codes"],
               "sipp_failures": res["stats"], "unanswered": res["unanswered"], "lost": lost,
               "retransmissions": res["retransmissions"],
               "msgs_per_s": round(res["ok"] / span, 1) if span else None,
               "latency": latency_summary(res["rtt_ms"]),
               "cpu": cpu_report(before, after, {"sipp_uac": res["cpu_s"]}, res["ok"],
                                 span or wall)}
        if res["exit"] not in (0, 1):
            out["sipp_exit"] = res["exit"]
        return out

    def xmpp_run(self, tag, rate, count, senders, to, procs, uas=None, sink=None):
        """slixmpp senders send `count` messages in all (split between them) at `rate` in all
        (0: as fast as they can); the receiver counts them, the senders count bounces."""
        per = [count // len(senders) + (1 if i < count % len(senders) else 0)
               for i in range(len(senders))]
        before = cpu_snapshot(procs)
        t0 = time.monotonic()
        for s, n in zip(senders, per):
            s.cmd({"cmd": "send", "to": to, "count": n, "rate": rate / len(senders), "tag": tag})
        sent = [s.expect("sent", count / max(rate, 1) + 120) for s in senders]
        first = min(x["first"] for x in sent)
        total = sum(x["count"] for x in sent)

        def errors():
            return sum(s.count()["errors"] for s in senders)

        if sink is not None:
            drain(lambda: sink.count()["received"] + errors(), total)
            got = sink.take()
        else:
            drain(lambda: uas.count() + errors(), total)
            got = uas.take()
        delivered, lat = got["received"], got["lat_ms"]
        bounces = [s.take() for s in senders]
        bounced = sum(x["errors"] for x in bounces)
        conditions = {}
        for x in bounces:
            for k, v in x["conditions"].items():
                conditions[k] = conditions.get(k, 0) + v
        wall = time.monotonic() - t0
        after = cpu_snapshot(procs)
        # Throughput: from the first send to the arrival of the last message.
        span = (got["last"] - first) if got["last"] else None
        return {"rate": rate, "sent": total, "delivered": delivered, "errors": bounced,
                "error_conditions": conditions,
                "lost": total - delivered - bounced,
                "msgs_per_s": round(delivered / span, 1) if span else None,
                "latency": latency_summary(lat),
                "cpu": cpu_report(before, after, {}, delivered, span or wall)}


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


PROSODY_BENCH_CFG = """\
-- bench-peers: a second public XMPP service (%(domain)s) for the Prosody -> Prosody S2S figures,
-- the testbed's Prosody settings, logging at info.
run_as_root = true
daemonize = false
pidfile = "%(run)s/prosody-bench.pid"
data_path = "%(data)s"
plugin_paths = {}
certificates = "%(certs)s"
log = { { levels = { min = "info" }, to = "file", filename = "%(log)s/prosody-bench.log" }; }
interfaces = { "%(addr)s" }
local_interfaces = { "%(addr)s" }
c2s_interfaces = { "%(addr)s" }
c2s_ports = { 5222 }
s2s_interfaces = { "%(addr)s" }
s2s_ports = { 5269 }
c2s_direct_tls_ports = {}
s2s_direct_tls_ports = {}
http_ports = {}
https_ports = {}
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "time"; "version"; %(dialback)s }
authentication = "internal_hashed"
storage = "internal"
allow_registration = false
c2s_require_encryption = true
s2s_require_encryption = %(req)s
s2s_secure_auth = %(secure)s
s2s_timeout = 10
ssl = { cafile = "%(ca)s"; }
unbound = {
	resolvconf = "%(resolv)s";
	hoststxt = false;
	options = {
		["local-zone:"] = "test. transparent";
		["do-not-query-localhost:"] = "no";
	};
}
VirtualHost "%(domain)s"
	ssl = { certificate = "%(cert)s"; key = "%(key)s"; }
"""

# Debian's SIPp is built without TLS: stunnel holds the TLS side of SIPp with the gateway's
# certificate (mutual TLS with Kamailio, the private CA on both sides).
STUNNEL_CFG = """\
foreground = yes
pid =
output = %(log)s
debug = 4
[to-gateway]
accept = %(gw)s:%(sips)d
connect = %(gw)s:%(backend)d
cert = %(cert)s
key = %(key)s
CAfile = %(ca)s
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.2
[from-gateway]
client = yes
accept = %(gw)s:%(client)d
connect = %(edge)s:%(sips)d
local = %(gw)s
cert = %(cert)s
key = %(key)s
CAfile = %(ca)s
verifyChain = yes
checkHost = sip.contoso.test
sslVersionMin = TLSv1.2
"""


# ---------------------------------------------------------------------------
# the four paths
# ---------------------------------------------------------------------------
SATURATION_RATE = 100000  # SIPp's call rate at saturation: bounded by -l WINDOW in flight
FIXED_WINDOW = 10000  # in-flight bound at the fixed rate: high enough never to hold the rate
_open = []  # SIPp UASs and slixmpp peers to stop at the end, whatever happens


def keep(obj):
    _open.append(obj)
    return obj


def release(obj):
    obj.stop()
    if obj in _open:
        _open.remove(obj)


def fixed_count():
    return max(1, int(RATE * FIXED_SECONDS))


def path_kamailio_mtls(b):
    b.start_stunnel()
    out = {}
    try:
        # Toward the gateway: UDP in, mutual TLS out (the Edge's half of sip_to_xmpp).
        uas = keep(Uas(b.work, "kam-to-gw-uas", "t1", tb.GW_ADDR, STUNNEL_BACKEND_PORT))
        procs = [b.kamailio, b.stunnel, uas.proc]
        b.sip_run("kam-to-gw-warm", 20, 20, 20, procs, uas=uas)
        out["to_gateway"] = {
            "fixed": b.sip_run("kam-to-gw-fixed", RATE, fixed_count(), FIXED_WINDOW, procs, uas=uas),
            "saturation": b.sip_run("kam-to-gw-sat", SATURATION_RATE, SAT_MSGS, WINDOW, procs,
                                    uas=uas)}
        release(uas)
        # From the gateway: mutual TLS in, UDP out (the Edge's half of xmpp_to_sip).
        uas = keep(Uas(b.work, "kam-from-gw-uas"))
        procs = [b.kamailio, b.stunnel, uas.proc]
        kw = dict(uas=uas, target="%s:%d" % (tb.GW_ADDR, STUNNEL_CLIENT_PORT), service="bob",
                  domain="contoso.test", from_uri="sip:alice@gmail.test", transport="t1",
                  addr=tb.GW_ADDR, port=STUNNEL_CLIENT_PORT + 1)
        b.sip_run("kam-from-gw-warm", 20, 20, 20, procs, **kw)
        out["from_gateway"] = {
            "fixed": b.sip_run("kam-from-gw-fixed", RATE, fixed_count(), FIXED_WINDOW, procs, **kw),
            "saturation": b.sip_run("kam-from-gw-sat", SATURATION_RATE, SAT_MSGS, WINDOW, procs,
                                    **kw)}
        release(uas)
    finally:
        b.stop_stunnel()
    return out


def senders(b):
    users = ["alice@gmail.test", "bob@gmail.test", "carol@googlemail.test"][:max(1, SENDERS)]
    return [keep(b.xmpp_peer("sender-" + u.split("@")[0], u)) for u in users]


def path_prosody_s2s(b):
    b.start_prosody_bench()
    sink = keep(XmppPeer(b.d, "sink-dave", "%s@%s" % (BENCH_USER[0], BENCH_DOMAIN), BENCH_USER[1],
                         tb.BENCH_XMPP_ADDR, b.ca()))
    srcs = senders(b)
    procs = [b.prosody, b.prosody_bench, sink.proc] + [s.proc for s in srcs]
    to = "%s@%s" % (BENCH_USER[0], BENCH_DOMAIN)
    b.xmpp_run("s2s-warm", 20, 20, srcs[:1], to, procs, sink=sink)
    out = {"fixed": b.xmpp_run("s2s-fixed", RATE, fixed_count(), srcs, to, procs, sink=sink),
           "saturation": b.xmpp_run("s2s-sat", 0, SAT_MSGS, srcs, to, procs, sink=sink)}
    for p in [sink] + srcs:
        release(p)
    return out


def path_sip_to_xmpp(b):
    sink = keep(b.xmpp_peer("sink-alice", "alice@gmail.test"))
    procs = [b.kamailio, b.xsgw, b.prosody, sink.proc]
    b.sip_run("s2x-warm", 10, 10, 10, procs, sink=sink)  # xsgw's S2S stream to Prosody
    out = {}
    if LOW_RATE and LOW_COUNT:
        out["low"] = b.sip_run("s2x-low", LOW_RATE, LOW_COUNT, FIXED_WINDOW, procs, sink=sink)
    out["fixed"] = b.sip_run("s2x-fixed", RATE, fixed_count(), FIXED_WINDOW, procs, sink=sink)
    out["saturation"] = b.sip_run("s2x-sat", SATURATION_RATE, SAT_MSGS, WINDOW, procs, sink=sink)
    release(sink)
    return out


def path_xmpp_to_sip(b):
    uas = keep(Uas(b.work, "x2s-uas"))
    srcs = senders(b)
    procs = [b.prosody, b.xsgw, b.kamailio, uas.proc] + [s.proc for s in srcs]
    to = "bob@contoso.test"
    b.xmpp_run("x2s-warm", 10, 10, srcs[:1], to, procs, uas=uas)  # Prosody's S2S stream to xsgw
    out = {}
    if LOW_RATE and LOW_COUNT:
        out["low"] = b.xmpp_run("x2s-low", LOW_RATE, LOW_COUNT, srcs[:1], to, procs, uas=uas)
    out["fixed"] = b.xmpp_run("x2s-fixed", RATE, fixed_count(), srcs, to, procs, uas=uas)
    out["saturation"] = b.xmpp_run("x2s-sat", 0, SAT_MSGS, srcs, to, procs, uas=uas)
    for p in [uas] + srcs:
        release(p)
    return out


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
DRIVERS = ("sipp_", "sender-", "sink-", "stunnel")


def busiest(run):
    """The process that used the most CPU per second of the run: the limit when it is near
    one core (Kamailio: its workers together). A driver there (SIPp, slixmpp, stunnel) means
    the figure is the driver's limit, not the peer's."""
    name, c = max(run["cpu"].items(), key=lambda kv: kv[1]["busy"] or 0)
    busy = c["busy"] or 0
    if busy < 0.8:
        return ("none near a core (busiest %s, %.2f CPU s/s): bound by waiting (SIPp keeps "
                "PEERS_WINDOW=%d in flight; the slixmpp senders queue all at once) or by the "
                "machine's other load" % (name, busy, WINDOW))
    who = "a driver: the figure is its limit" if name.startswith(DRIVERS) else "a peer"
    return "%s (%.2f CPU s/s, %s)" % (name, busy, who)


def get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def summary(paths):
    s = {}
    kam = paths.get("kamailio_mtls", {})
    to_gw = get(kam, "to_gateway", "saturation", "msgs_per_s")
    from_gw = get(kam, "from_gateway", "saturation", "msgs_per_s")
    s["kamailio_mtls_msgs_per_s"] = min([x for x in (to_gw, from_gw) if x] or [None]) if kam else None
    s["kamailio_mtls_to_gateway_msgs_per_s"] = to_gw
    s["kamailio_mtls_from_gateway_msgs_per_s"] = from_gw
    s["kamailio_mtls_p99_ms"] = get(kam, "to_gateway", "fixed", "latency", "p99_ms")
    s["kamailio_cpu_us_per_msg"] = get(kam, "to_gateway", "fixed", "cpu", "kamailio", "us_per_msg")
    s2s = paths.get("prosody_s2s", {})
    s["prosody_s2s_msgs_per_s"] = get(s2s, "saturation", "msgs_per_s")
    s["prosody_s2s_p99_ms"] = get(s2s, "fixed", "latency", "p99_ms")
    # c2s in + s2s out, as Prosody works on the way to xsgw (issue 12's ~105 us).
    s["prosody_cpu_us_per_msg"] = get(s2s, "fixed", "cpu", "prosody", "us_per_msg")
    s["prosody_s2s_in_cpu_us_per_msg"] = get(s2s, "fixed", "cpu", "prosody_bench", "us_per_msg")
    s2x = paths.get("sip_to_xmpp", {})
    s["sip_to_xmpp_via_peers_msgs_per_s"] = get(s2x, "saturation", "msgs_per_s")
    s["sipp_kamailio_xsgw_prosody_p50_ms"] = get(s2x, "fixed", "latency", "p50_ms")
    s["sipp_kamailio_xsgw_prosody_p99_ms"] = get(s2x, "fixed", "latency", "p99_ms")
    s["sipp_kamailio_xsgw_prosody_p99_ms_at_low_rate"] = get(s2x, "low", "latency", "p99_ms")
    s["xsgw_cpu_us_per_msg_sip_to_xmpp"] = get(s2x, "fixed", "cpu", "xsgw", "us_per_msg")
    s["xsgw_cpu_us_per_msg_sip_to_xmpp_at_saturation"] = get(s2x, "saturation", "cpu", "xsgw",
                                                             "us_per_msg")
    x2s = paths.get("xmpp_to_sip", {})
    s["xmpp_to_sip_via_peers_msgs_per_s"] = get(x2s, "saturation", "msgs_per_s")
    s["slixmpp_prosody_xsgw_sipp_p50_ms"] = get(x2s, "fixed", "latency", "p50_ms")
    s["slixmpp_prosody_xsgw_sipp_p99_ms"] = get(x2s, "fixed", "latency", "p99_ms")
    s["slixmpp_prosody_xsgw_sipp_p99_ms_at_low_rate"] = get(x2s, "low", "latency", "p99_ms")
    s["xsgw_cpu_us_per_msg_xmpp_to_sip"] = get(x2s, "fixed", "cpu", "xsgw", "us_per_msg")
    s["xsgw_cpu_us_per_msg_xmpp_to_sip_at_saturation"] = get(x2s, "saturation", "cpu", "xsgw",
                                                             "us_per_msg")
    # Ratios within this run (absolute figures drift with the machine's other load).
    pro = s["prosody_cpu_us_per_msg"]
    for way in ("sip_to_xmpp", "xmpp_to_sip"):
        x = s["xsgw_cpu_us_per_msg_" + way]
        s["xsgw_vs_prosody_cpu_per_msg_" + way] = round(x / pro, 2) if x and pro else None
    s["lost"] = sum(r["lost"] for r in runs(paths))
    s["limits"] = {label: busiest(r) for label, r in labelled(paths) if label.endswith("saturation")}
    return s


def labelled(paths):
    for name, p in paths.items():
        for k, v in p.items():
            if isinstance(v, dict) and "cpu" in v:
                yield "%s %s" % (name, k), v
            elif isinstance(v, dict):
                for k2, v2 in v.items():
                    yield "%s %s %s" % (name, k, k2), v2


def runs(paths):
    return [r for _, r in labelled(paths)]


def table(paths):
    lines = ["%-40s %7s %7s %7s %5s %5s %9s %8s %8s  %s" % (
        "path / run", "rate/s", "sent", "deliv", "err", "lost", "msgs/s", "p50 ms", "p99 ms",
        "CPU us/msg (CPU s per s)")]
    for label, r in labelled(paths):
        cpu = ", ".join("%s %s (%.2f)" % (n, c["us_per_msg"], c["busy"] or 0)
                        for n, c in r["cpu"].items())
        lat = r["latency"]
        lines.append("%-40s %7s %7d %7d %5d %5d %9s %8s %8s  %s" % (
            label, r["rate"] or "max", r["sent"], r["delivered"], r["errors"], r["lost"],
            r["msgs_per_s"], lat["p50_ms"], lat["p99_ms"], cpu))
    return "\n".join(lines)


def main():
    if sys.argv[1:2] == ["xmpp-peer"]:
        return cmd_xmpp_peer(sys.argv[2:])
    if len(sys.argv) > 1:
        print(__doc__)
        return 0 if sys.argv[1] in ("-h", "--help") else 2
    for prog in ("sipp", "stunnel", "prosody", "kamailio"):
        if not shutil.which(prog):
            say("%s missing: run `make test-deps` (tests/testbed/install.sh)" % prog)
            return 2
    wanted = [p for p in PATHS if p in ONLY]
    if ("sip_to_xmpp" in wanted or "xmpp_to_sip" in wanted) and not os.access(XSGW, os.X_OK):
        say("%s missing: `cargo build --release` first" % XSGW)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    take_lock()
    d = tempfile.mkdtemp(prefix="xsgw-bench-peers-")
    b = Bench(d)
    ok = False
    paths, failed = {}, {}
    t0 = time.monotonic()
    try:
        say("testbed up in %s" % d)
        b.up()
        for name in wanted:
            say("%s ..." % name)
            try:
                if name in ("sip_to_xmpp", "xmpp_to_sip") and b.xsgw is None:
                    b.start_xsgw()
                paths[name] = globals()["path_" + name](b)
            except Exception as e:  # the other paths still run; the run fails at the end
                say("%s failed: %s: %s" % (name, type(e).__name__, e))
                failed[name] = "%s: %s" % (type(e).__name__, e)
                for obj in list(_open):
                    release(obj)
        ok = not failed and not any(r["lost"] or r["errors"] for r in runs(paths))
    finally:
        for obj in list(_open):
            release(obj)
        b.close()
        subprocess.run([DEBIAN_PYTHON, TESTBED_PY, "down", "--dir", d],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        release_lock()
        if ok and not os.environ.get("PEERS_KEEP"):
            shutil.rmtree(d, ignore_errors=True)
        else:
            say("logs kept in %s" % d)
    s = summary(paths)
    doc = {"version": 1, "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
           "settings": {"rate": RATE, "fixed_seconds": FIXED_SECONDS, "low_rate": LOW_RATE,
                        "low_count": LOW_COUNT, "saturation_msgs": SAT_MSGS, "window": WINDOW,
                        "senders": SENDERS, "xsgw": XSGW},
           "seconds": round(time.monotonic() - t0, 1), **s, "failed": failed, "paths": paths}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    print(table(paths))
    print()
    for k, v in s.items():
        if k != "limits":
            print("%-50s %s" % (k, v))
    for k, v in s["limits"].items():
        print("limit at %-41s %s" % (k, v))
    for k, v in failed.items():
        print("FAILED %s: %s" % (k, v))
    print("written %s (%.0f s)" % (os.path.relpath(OUT, ROOT), time.monotonic() - t0))
    return 0 if s["lost"] == 0 and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
