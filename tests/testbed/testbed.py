#!/usr/bin/python3
"""Testbed of real peers for xsgw: DNS (dnsmasq), a public XMPP service (Prosody as
gmail.test) and the enterprise SIP Access Edge (Kamailio as sip.contoso.test), all on
127.0.10.0/24, with a throwaway private PKI.

Run it with Debian's Python (/usr/bin/python3): python3-slixmpp is only visible there.

    testbed.py install                 install the Debian packages it needs (idempotent)
    testbed.py up --dir DIR [options]  make PKI + configs in DIR, start services, write DIR/testbed.json
    testbed.py down --dir DIR          stop every service started in DIR (idempotent)
    testbed.py restart --dir DIR NAME  restart one service (e.g. after editing its config)
    testbed.py selftest [--dir DIR]    up, check every peer really works, down; "N passed, M failed"
    testbed.py gateway-config --dir DIR   an xsgw.ini for this testbed

Peers for tests (JSON on stdout, non-ASCII as UTF-8; see README.md for every shape):
    testbed.py sip-send --dir DIR ...     MESSAGE(s) from an internal SIP user via the Edge
    testbed.py sip-recv --dir DIR ...     be the SIP users at 127.0.10.40: report and answer requests
    testbed.py sip-session --dir DIR ...  an IM session (INVITE m=message ... BYE) via the Edge
    testbed.py xmpp-send --dir DIR ...    Prosody user: local check, messages to remote JIDs, bounces
    testbed.py xmpp-recv --dir DIR ...    Prosody user: send, then report messages/chat states/errors
    testbed.py sip-presence --dir DIR ... SIP user for presence (notifier + subscriber), stdin commands
    testbed.py xmpp-presence --dir DIR ... Prosody user for presence/subscriptions, stdin commands

The gateway under test (127.0.10.100: XMPP 5269, SIP TLS 5061) is never started here.
See README.md next to this file for the address plan and the testbed.json schema.
"""

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEBIAN_PYTHON = "/usr/bin/python3"

# python3-slixmpp and python3-dnspython are Debian packages, visible only to Debian's
# Python: if started by another interpreter (e.g. a pyenv shim first on PATH), switch.
if (os.path.exists(DEBIAN_PYTHON)
        and os.path.realpath(sys.executable) != os.path.realpath(DEBIAN_PYTHON)
        and not os.environ.get("XSGW_TESTBED_ANY_PYTHON")):
    os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON, os.path.abspath(__file__)] + sys.argv[1:])
SCHEMA_VERSION = 1

# ---------------------------------------------------------------------------
# Address plan (fixed: the gateway's code and demo rely on it)
# ---------------------------------------------------------------------------
DNS_ADDR = "127.0.10.53"
XMPP_ADDR = "127.0.10.5"  # xmpp-server.l.gmail.test, xmpp.l.gmail.test (c2s + s2s)
XMPP_ALT_ADDRS = ["127.0.10.21", "127.0.10.22", "127.0.10.23", "127.0.10.24"]  # alt1..alt4
EDGE_ADDR = "127.0.10.30"  # sip.contoso.test (Kamailio)
UA_ADDR = "127.0.10.40"  # internal SIP users (SIPp, started by tests)
GW_ADDR = "127.0.10.100"  # the gateway: gw.contoso.test, xmpp.contoso.test
# xmpp.bench.test: a second Prosody that benches/peers.py starts for the Prosody -> Prosody
# S2S figures (`make bench-peers`); DNS publishes it, `up` starts nothing there.
BENCH_XMPP_ADDR = "127.0.10.6"

GW_NAME = "gw.contoso.test"
EDGE_NAME = "sip.contoso.test"
XMPP_PORT_C2S = 5222
XMPP_PORT_S2S = 5269
SIP_PORT = 5060
SIPS_PORT = 5061
# The Edge's internal interface (what a pool talks to): TLS, a pool-name certificate, and
# Digest authentication demanded of every request. A gateway must never be pointed at it.
EDGE_INTERNAL_PORT = 5062
EDGE_POOL_NAME = "pool01.contoso.test"

DEFAULT_USERS = [
    ("alice", "gmail.test", "alice-secret"),
    ("bob", "gmail.test", "bob-secret"),
    ("carol", "googlemail.test", "carol-secret"),
]

PACKAGES = [
    "prosody",
    "lua-unbound",
    "kamailio",
    "kamailio-tls-modules",
    "sip-tester",
    "stunnel4",
    "dnsmasq",
    "python3-slixmpp",
    "python3-dnspython",
    "openssl",
    "bind9-dnsutils",
    "util-linux",
    "iproute2",
    # promtool, for tests/status.rs (`promtool check metrics` on xsgw's /metrics)
    "prometheus",
]
# System services that Debian's packages may start; the testbed runs its own copies.
SYSTEM_SERVICES = ["prosody", "kamailio", "dnsmasq", "stunnel4", "prometheus"]

SERVICE_ORDER = ["dnsmasq", "prosody", "kamailio"]

# Every DIR that `up` used, so that `down --all` can clean up after a killed test run.
REGISTRY = os.path.join(tempfile.gettempdir(), "xsgw-testbed.dirs")


class TestbedError(Exception):
    pass


def log(msg):
    print("testbed: " + msg, file=sys.stderr, flush=True)


def run(argv, **kw):
    """Run a command, raise TestbedError with its output if it fails."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    if p.returncode != 0:
        raise TestbedError(
            "command failed (%d): %s\n%s"
            % (p.returncode, " ".join(argv), p.stdout.decode(errors="replace"))
        )
    return p.stdout.decode(errors="replace")


# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------
def missing_packages(pkgs):
    missing = []
    for pkg in pkgs:
        p = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status}", pkg],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        if p.returncode != 0 or p.stdout.decode().strip() != "installed":
            missing.append(pkg)
    return missing


def stop_system_services():
    """Debian's postinst may start prosody/kamailio/dnsmasq on system ports: stop them."""
    for svc in SYSTEM_SERVICES:
        if os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
            subprocess.run(
                ["systemctl", "disable", "--now", svc],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        elif os.path.exists("/etc/init.d/" + svc):
            subprocess.run(
                ["/etc/init.d/" + svc, "stop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if shutil.which("update-rc.d"):
                subprocess.run(
                    ["update-rc.d", svc, "disable"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )


def cmd_install(_args):
    if os.geteuid() != 0:
        raise TestbedError("install must run as root")
    missing = missing_packages(PACKAGES)
    if not missing:
        log("all packages present")
        return 0
    log("installing: " + " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Keep Debian from starting the packaged daemons while installing (policy-rc.d).
    policy = "/usr/sbin/policy-rc.d"
    own_policy = not os.path.exists(policy)
    if own_policy:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\n# temporary, written by xsgw tests/testbed/testbed.py install\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        lists = "/var/lib/apt/lists"
        have_lists = os.path.isdir(lists) and any(
            n.endswith("_Packages") or "_Packages." in n for n in os.listdir(lists)
        )
        apt = ["apt-get", "-y", "-q", "-o", "Dpkg::Options::=--force-confdef",
               "-o", "Dpkg::Options::=--force-confold"]
        if not have_lists:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        p = subprocess.run(apt + ["install", "--no-install-recommends"] + missing, env=env)
        if p.returncode != 0:
            # A stale package list is the usual cause: refresh once and retry.
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
            subprocess.run(apt + ["install", "--no-install-recommends"] + missing, env=env, check=True)
    finally:
        if own_policy:
            os.unlink(policy)
        stop_system_services()
    still = missing_packages(PACKAGES)
    if still:
        raise TestbedError("still missing after install: " + " ".join(still))
    log("installed")
    return 0


# ---------------------------------------------------------------------------
# PKI (openssl CLI)
# ---------------------------------------------------------------------------
OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
"""


def _ext_file(path, sans, ca=False):
    with open(path, "w") as f:
        f.write("[v3]\n")
        if ca:
            f.write("basicConstraints = critical, CA:TRUE\n")
            f.write("keyUsage = critical, keyCertSign, cRLSign\n")
            f.write("subjectKeyIdentifier = hash\n")
        else:
            f.write("basicConstraints = critical, CA:FALSE\n")
            f.write("keyUsage = critical, digitalSignature\n")
            f.write("extendedKeyUsage = serverAuth, clientAuth\n")
            f.write("subjectKeyIdentifier = hash\n")
            f.write("authorityKeyIdentifier = keyid\n")
            f.write("subjectAltName = " + ", ".join("DNS:" + s for s in sans) + "\n")


def _serial():
    return "0x" + secrets.token_hex(16)


def make_ca(pki, name, cn):
    key, cert = os.path.join(pki, name + ".key"), os.path.join(pki, name + ".pem")
    cnf = os.path.join(pki, name + ".cnf")
    with open(os.path.join(pki, "openssl.cnf")) as f:
        base = f.read()
    _ext_file(cnf, [], ca=True)
    with open(cnf) as f:
        ext = f.read()
    with open(cnf, "w") as f:
        f.write(base + ext)
    run(["openssl", "req", "-config", cnf, "-extensions", "v3", "-x509", "-new",
         "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "3650", "-set_serial", _serial(),
         "-subj", "/O=xsgw testbed/CN=" + cn])
    os.unlink(cnf)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    return cert, key


def make_leaf(pki, name, cn, sans, ca_name):
    key, cert = os.path.join(pki, name + ".key"), os.path.join(pki, name + ".pem")
    csr, ext = os.path.join(pki, name + ".csr"), os.path.join(pki, name + ".ext")
    cnf = os.path.join(pki, "openssl.cnf")
    _ext_file(ext, sans)
    run(["openssl", "req", "-config", cnf, "-new", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/O=xsgw testbed/CN=" + cn])
    run(["openssl", "x509", "-req", "-in", csr,
         "-CA", os.path.join(pki, ca_name + ".pem"), "-CAkey", os.path.join(pki, ca_name + ".key"),
         "-set_serial", _serial(), "-days", "825", "-extfile", ext, "-extensions", "v3",
         "-out", cert])
    os.unlink(csr)
    os.unlink(ext)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    return cert, key


# name -> (CN, SANs, issuing CA)
LEAVES = {
    "edge": (EDGE_NAME, [EDGE_NAME], "ca"),
    "gateway": (GW_NAME, [GW_NAME], "ca"),
    "xmpp": ("contoso.test", ["contoso.test", "fabrikam.test", "xmpp.contoso.test"], "ca"),
    "gmail": ("gmail.test", ["gmail.test", "googlemail.test"], "ca"),
    "wrongname": ("rogue.contoso.test", ["rogue.contoso.test"], "ca"),
    # Any internal certificate for the whole domain: must not pass for the Edge.
    "wildcard": ("*.contoso.test", ["*.contoso.test"], "ca"),
    "other": (GW_NAME, [GW_NAME], "other-ca"),
    "pool": (EDGE_POOL_NAME, [EDGE_POOL_NAME], "ca"),
}


def make_pki(pki):
    os.makedirs(pki, exist_ok=True)
    os.chmod(pki, 0o755)
    old = os.umask(0o077)
    try:
        with open(os.path.join(pki, "openssl.cnf"), "w") as f:
            f.write(OPENSSL_CNF)
        make_ca(pki, "ca", "xsgw testbed internal CA")
        make_ca(pki, "other-ca", "unrelated CA")
        for name, (cn, sans, ca) in LEAVES.items():
            make_leaf(pki, name, cn, sans, ca)
        os.unlink(os.path.join(pki, "openssl.cnf"))
    finally:
        os.umask(old)
    info = {
        "ca": {"cert": os.path.join(pki, "ca.pem"), "key": os.path.join(pki, "ca.key")},
        "other_ca": {"cert": os.path.join(pki, "other-ca.pem"),
                     "key": os.path.join(pki, "other-ca.key")},
    }
    for name, (cn, sans, ca) in LEAVES.items():
        info[name] = {
            "cert": os.path.join(pki, name + ".pem"),
            "key": os.path.join(pki, name + ".key"),
            "cn": cn,
            "sans": sans,
            "issuer": "other_ca" if ca == "other-ca" else "ca",
        }
    return info


# ---------------------------------------------------------------------------
# templates
# ---------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"@@([A-Z0-9_]+)@@")


def render(template, out, values):
    with open(os.path.join(HERE, template)) as f:
        text = f.read()

    def sub(m):
        key = m.group(1)
        if key not in values:
            raise TestbedError("%s: no value for @@%s@@" % (template, key))
        return str(values[key])

    with open(out, "w") as f:
        f.write(_PLACEHOLDER.sub(sub, text))


def lua_bool(b):
    return "true" if b else "false"


# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------
_children = {}  # pid -> Popen, so that an in-process `down` can reap them


def _no_core():
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def spawn(d, name, argv, mount_ns=False):
    """Start a service in its own session (process group) with its output in
    DIR/logs/NAME.out; with mount_ns it runs in a private mount namespace where
    DIR/resolv.conf and DIR/hosts are bind-mounted over /etc/resolv.conf and /etc/hosts."""
    if mount_ns:
        script = ('mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts '
                  '&& shift 2 && exec "$@"')
        argv = (["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                 os.path.join(d, "resolv.conf"), os.path.join(d, "hosts")] + argv)
    out = open(os.path.join(d, "logs", name + ".out"), "ab")
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, preexec_fn=_no_core, close_fds=True, cwd=d)
    finally:
        out.close()
    _children[p.pid] = p
    with open(os.path.join(d, "pids", name + ".pid"), "w") as f:
        f.write("%d\n" % p.pid)
    return p.pid


def _proc_stat(pid):
    """(state, pgid) of a process, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[2])


def alive(pid):
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _reap(pid):
    p = _children.get(pid)
    if p is not None:
        try:
            p.wait(timeout=0)
            _children.pop(pid, None)
        except subprocess.TimeoutExpired:
            pass


def group_members(pgid):
    out = []
    for n in os.listdir("/proc"):
        if n.isdigit():
            st = _proc_stat(int(n))
            if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
                out.append(int(n))
    return out


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_pid(pid, d, name, wait=5.0):
    """SIGTERM the service's main process (it stops its own children), then SIGKILL
    its whole process group if anything is left after `wait` seconds."""
    _reap(pid)
    leader_ok = alive(pid) and d in _cmdline(pid)
    # Never signal a reused PID: without our leader, only group members that still
    # name our directory on their command line are ours.
    members = [m for m in group_members(pid) if leader_ok or d in _cmdline(m)]
    if not leader_ok and not members:
        return True

    def remaining():
        _reap(pid)
        left = {m for m in group_members(pid) if leader_ok or d in _cmdline(m)}
        if leader_ok and alive(pid):
            left.add(pid)
        return left

    def settle(limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not remaining():
                return True
            time.sleep(0.05)
        return not remaining()

    for t in ([pid] if leader_ok else members):
        try:
            os.kill(t, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if settle(wait):
        return True
    log("%s (pid %d) still running %.0fs after SIGTERM, sending SIGKILL" % (name, pid, wait))
    for t in remaining():
        try:
            os.kill(t, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return settle(3.0)


def wait_tcp(addr, port, timeout, pid=None, name="service", d=None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((addr, port), timeout=0.5):
                return
        except OSError:
            pass
        if pid is not None and not alive(pid):
            raise TestbedError("%s exited during start-up%s" % (name, _log_tail(d, name)))
        if time.monotonic() > deadline:
            raise TestbedError("%s: %s:%d not open after %.0fs%s"
                               % (name, addr, port, timeout, _log_tail(d, name)))
        time.sleep(0.05)


def wait_sip_options(pid, d, timeout):
    deadline = time.monotonic() + timeout
    for transport in ("UDP", "TCP"):
        while True:
            try:
                if sip_options_ok(transport):
                    break
            except OSError:
                pass
            if not alive(pid):
                raise TestbedError("kamailio exited during start-up" + _log_tail(d, "kamailio"))
            if time.monotonic() > deadline:
                raise TestbedError("kamailio: no 200 to OPTIONS over %s after %.0fs%s"
                                   % (transport, timeout, _log_tail(d, "kamailio")))
            time.sleep(0.1)


def sip_options_ok(transport):
    """One OPTIONS to the Edge's internal listener from 127.0.0.1; True on a 200."""
    kind = socket.SOCK_DGRAM if transport == "UDP" else socket.SOCK_STREAM
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.settimeout(1.0)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        req = sip_request("OPTIONS", "sip:%s" % EDGE_NAME, transport, "127.0.0.1", port,
                          "sip:readiness@testbed.test", "sip:%s" % EDGE_NAME)
        if transport == "UDP":
            s.sendto(req, (EDGE_ADDR, SIP_PORT))
            data = s.recv(65536)
        else:
            s.connect((EDGE_ADDR, SIP_PORT))
            s.sendall(req)
            data = read_sip_stream(s, time.monotonic() + 1.0)
        return data.startswith(b"SIP/2.0 200")
    except (socket.timeout, EOFError, TimeoutError):
        return False
    finally:
        s.close()


def _log_tail(d, name):
    if d is None:
        return ""
    out = ""
    for fn in (name + ".out", name + ".log"):
        path = os.path.join(d, "logs", fn)
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                lines = f.readlines()[-25:]
            out += "\n--- tail of %s ---\n%s" % (path, "".join(lines))
    return out


def check_free(addr, port, kind):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
    except OSError as e:
        raise TestbedError("%s %s:%d is in use (%s): is another testbed up? "
                           "Run `testbed.py down --dir DIR` (or `down --all`)." % (kind, addr, port, e.strerror))
    finally:
        s.close()


# ---------------------------------------------------------------------------
# DNS queries (minimal client, used for readiness; the selftest uses dnspython)
# ---------------------------------------------------------------------------
def dns_ready(addr, name="gw.contoso.test", timeout=0.5):
    qid = secrets.randbits(16)
    q = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00\x00\x01\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, (addr, 53))
        data = s.recv(512)
        return data[:2] == q[:2] and (data[3] & 0x0F) == 0 and int.from_bytes(data[6:8], "big") > 0
    except OSError:
        return False
    finally:
        s.close()


# ---------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------
def parse_ifaces(text):
    out = []
    for a in text.split(","):
        a = a.strip()
        if a:
            try:
                socket.inet_pton(socket.AF_INET, a)
            except OSError:
                raise TestbedError("s2s interface %r is not an IPv4 address" % a)
            if not a.startswith("127.0.10."):
                raise TestbedError("s2s interface %s is outside 127.0.10.0/24" % a)
            out.append(a)
    if not out:
        raise TestbedError("--prosody-s2s needs at least one address")
    return out


def cmd_up(args):
    d = os.path.abspath(args.dir)
    if re.search(r"[\s'\"\\#;]", d):
        # The path goes unquoted into dnsmasq's and Kamailio's TLS configuration.
        raise TestbedError("--dir must not contain whitespace, quotes, '#', ';' or '\\': %r" % d)
    s2s_ifaces = parse_ifaces(args.prosody_s2s)
    os.makedirs(d, exist_ok=True)
    if os.path.isdir(os.path.join(d, "pids")) and os.listdir(os.path.join(d, "pids")):
        log("stopping what was left running in " + d)
        do_down(d)
    # Throwaway state: a new PKI, empty Prosody storage and fresh logs on every `up`.
    for sub in ("pki", "logs", "run", os.path.join("prosody", "data")):
        shutil.rmtree(os.path.join(d, sub), ignore_errors=True)
    for sub in ("pki", "logs", "pids", "run", "prosody", "kamailio"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    for stale in ("testbed.json", "testbed.env"):
        if os.path.exists(os.path.join(d, stale)):
            os.unlink(os.path.join(d, stale))
    register_dir(d)
    try:
        info = _up(d, args, s2s_ifaces)
    except BaseException:
        do_down(d)
        raise
    write_info(d, info)
    print(os.path.join(d, "testbed.json"))
    return 0


def flatten(value, prefix=""):
    """testbed.json as KEY=VALUE pairs: nested keys joined by '_', list items by index,
    upper case (PKI_GATEWAY_CERT, XMPP_USERS_0_JID). For shell scripts and Rust tests,
    which then need no JSON parser."""
    if isinstance(value, dict):
        for k in sorted(value):
            key = re.sub(r"[^A-Za-z0-9]", "_", str(k)).upper()
            yield from flatten(value[k], prefix + "_" + key if prefix else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from flatten(item, "%s_%d" % (prefix, i))
    elif isinstance(value, bool):
        yield prefix, "yes" if value else "no"
    elif value is not None:
        yield prefix, str(value)


def write_info(d, info):
    """Writes DIR/testbed.json and its flat twin DIR/testbed.env, each atomically."""
    path = os.path.join(d, "testbed.json")
    with open(path + ".tmp", "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")
    os.rename(path + ".tmp", path)
    env = os.path.join(d, "testbed.env")
    with open(env + ".tmp", "w") as f:
        for key, value in flatten(info):
            if "\n" in value or "'" in value:
                continue
            f.write("%s='%s'\n" % (key, value))
    os.rename(env + ".tmp", env)


def _up(d, args, s2s_ifaces):
    t0 = time.monotonic()
    for addr, port, kind in [(DNS_ADDR, 53, "udp"), (DNS_ADDR, 53, "tcp"),
                             (XMPP_ADDR, XMPP_PORT_C2S, "tcp"),
                             (EDGE_ADDR, SIP_PORT, "udp"), (EDGE_ADDR, SIP_PORT, "tcp"),
                             (EDGE_ADDR, SIPS_PORT, "tcp"),
                             (EDGE_ADDR, EDGE_INTERNAL_PORT, "tcp")] + [
                                 (a, XMPP_PORT_S2S, "tcp") for a in s2s_ifaces]:
        check_free(addr, port, kind)

    pki = make_pki(os.path.join(d, "pki"))
    logs, run_dir = os.path.join(d, "logs"), os.path.join(d, "run")

    # Resolver files for the services' private mount namespaces.
    resolv = os.path.join(d, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("# xsgw testbed: only the testbed DNS\nnameserver %s\noptions timeout:1 attempts:2\n"
                % DNS_ADDR)
    with open(os.path.join(d, "hosts"), "w") as f:
        f.write("127.0.0.1\tlocalhost\n")

    values = {
        "DNS_ADDR": DNS_ADDR, "XMPP_ADDR": XMPP_ADDR, "EDGE_ADDR": EDGE_ADDR,
        "UA_ADDR": UA_ADDR, "UA_PORT": args.ua_port, "UA_TRANSPORT": args.ua_transport,
        "GW_ADDR": GW_ADDR, "GW_NAME": GW_NAME, "GW_SIP_PORT": SIPS_PORT,
        "BENCH_XMPP_ADDR": BENCH_XMPP_ADDR,
        "EDGE_INTERNAL_PORT": EDGE_INTERNAL_PORT, "POOL_NAME": EDGE_POOL_NAME,
        "POOL_CERT": pki["pool"]["cert"], "POOL_KEY": pki["pool"]["key"],
        "LOG_DIR": logs, "RUN_DIR": run_dir,
        "CA_CERT": pki["ca"]["cert"], "EDGE_CERT": pki["edge"]["cert"],
        "EDGE_KEY": pki["edge"]["key"], "GMAIL_CERT": pki["gmail"]["cert"],
        "GMAIL_KEY": pki["gmail"]["key"], "S2S_CERT": pki[args.prosody_s2s_cert]["cert"],
        "S2S_KEY": pki[args.prosody_s2s_cert]["key"], "RESOLV_CONF": resolv,
        "PROSODY_DATA": os.path.join(d, "prosody", "data"),
        "PROSODY_CERTS": os.path.join(d, "prosody", "certs"),
        "S2S_INTERFACES": "; ".join('"%s"' % a for a in s2s_ifaces),
        "S2S_REQUIRE_ENCRYPTION": lua_bool(args.s2s_require_encryption),
        "S2S_SECURE_AUTH": lua_bool(args.s2s_secure_auth),
        "DIALBACK_MODULE": '"dialback";' if args.dialback else "-- mod_dialback not loaded (--no-dialback)",
        "TLS_CFG": os.path.join(d, "kamailio", "tls.cfg"),
        "TLS_METHOD": "TLSv1.2+",
        "DEBUG_LEVEL": args.kamailio_debug,
    }
    for i, a in enumerate(XMPP_ALT_ADDRS):
        values["XMPP_ALT%d" % (i + 1)] = a
    render("dnsmasq.conf.in", os.path.join(d, "dnsmasq.conf"), values)
    render("prosody.cfg.lua.in", os.path.join(d, "prosody", "prosody.cfg.lua"), values)
    render("kamailio.cfg.in", os.path.join(d, "kamailio", "kamailio.cfg"), values)
    render("kamailio-tls.cfg.in", os.path.join(d, "kamailio", "tls.cfg"), values)
    os.makedirs(values["PROSODY_DATA"], exist_ok=True)
    os.makedirs(values["PROSODY_CERTS"], exist_ok=True)

    # Prosody users (before start: prosodyctl writes the data files directly).
    users = []
    for user, host, password in DEFAULT_USERS:
        run(["prosodyctl", "--config", os.path.join(d, "prosody", "prosody.cfg.lua"),
             "register", user, host, password])
        users.append({"jid": "%s@%s" % (user, host), "user": user, "domain": host,
                      "password": password})

    pids = {}
    for name in SERVICE_ORDER:
        pids[name] = start_service(d, name, s2s_ifaces, args.kamailio_memory)

    services = {}
    for name in SERVICE_ORDER:
        services[name] = {
            "pid": pids[name],
            "pidfile": os.path.join(d, "pids", name + ".pid"),
            "log": os.path.join(logs, name + ".log"),
            "stdout": os.path.join(logs, name + ".out"),
        }
    services["dnsmasq"]["config"] = os.path.join(d, "dnsmasq.conf")
    services["prosody"]["config"] = os.path.join(d, "prosody", "prosody.cfg.lua")
    services["kamailio"]["config"] = os.path.join(d, "kamailio", "kamailio.cfg")
    services["kamailio"]["tls_config"] = values["TLS_CFG"]
    services["kamailio"]["log"] = os.path.join(logs, "kamailio.out")

    info = {
        "version": SCHEMA_VERSION,
        "dir": d,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "startup_seconds": round(time.monotonic() - t0, 2),
        "resolv_conf": resolv,
        "addresses": {
            "dns": DNS_ADDR,
            "xmpp": XMPP_ADDR,
            "xmpp_alt": XMPP_ALT_ADDRS,
            "edge": EDGE_ADDR,
            "sip_users": UA_ADDR,
            "gateway": GW_ADDR,
        },
        "dns": {"address": DNS_ADDR, "port": 53, "zones": ["test"]},
        "pki": pki,
        "xmpp": {
            "domain": "gmail.test",
            "domains": ["gmail.test", "googlemail.test"],
            "c2s": {"host": XMPP_ADDR, "port": XMPP_PORT_C2S},
            "s2s": [{"host": a, "port": XMPP_PORT_S2S} for a in s2s_ifaces],
            "srv": {
                "_xmpp-server._tcp.gmail.test": _srv_plan(),
                "_xmpp-server._tcp.googlemail.test": _srv_plan(),
                "_xmpp-client._tcp.gmail.test": [
                    {"priority": 5, "weight": 0, "port": XMPP_PORT_C2S,
                     "target": "xmpp.l.gmail.test", "address": XMPP_ADDR}],
                # Not hosted by the gateway, yet its SRV leads there (relay tests).
                "_xmpp-server._tcp.northwind.test": [
                    {"priority": 10, "weight": 0, "port": XMPP_PORT_S2S,
                     "target": "xmpp.contoso.test", "address": GW_ADDR}],
            },
            "users": users,
            "settings": {
                "s2s_require_encryption": args.s2s_require_encryption,
                "s2s_secure_auth": args.s2s_secure_auth,
                "s2s_cert": args.prosody_s2s_cert,
                "dialback": args.dialback,
            },
            "config": services["prosody"]["config"],
            "log": services["prosody"]["log"],
        },
        "sip": {
            "edge": {
                "name": EDGE_NAME,
                "address": EDGE_ADDR,
                "tls": {"host": EDGE_ADDR, "port": SIPS_PORT},
                # The internal interface: pool certificate, 401 Digest to every request.
                "internal_tls": {"host": EDGE_ADDR, "port": EDGE_INTERNAL_PORT,
                                 "cert_name": EDGE_POOL_NAME},
                "tcp": {"host": EDGE_ADDR, "port": SIP_PORT},
                "udp": {"host": EDGE_ADDR, "port": SIP_PORT},
                "cert": pki["edge"]["cert"],
                "key": pki["edge"]["key"],
                "accepts_peer_cn": GW_NAME,
                "memory_mb": args.kamailio_memory,
                "routes": {
                    "gmail.test": "tls:%s:%d" % (GW_NAME, SIPS_PORT),
                    "googlemail.test": "tls:%s:%d" % (GW_NAME, SIPS_PORT),
                    "contoso.test": "%s:%s:%d" % (args.ua_transport, UA_ADDR, args.ua_port),
                    "fabrikam.test": "%s:%s:%d" % (args.ua_transport, UA_ADDR, args.ua_port),
                    # Not federated by the gateway: it must answer 404.
                    "jabber.test": "tls:%s:%d" % (GW_NAME, SIPS_PORT),
                },
                "config": services["kamailio"]["config"],
                "log": services["kamailio"]["log"],
            },
            "users": {"address": UA_ADDR, "port": args.ua_port, "transport": args.ua_transport,
                      "domain": "contoso.test"},
        },
        "gateway": {
            "address": GW_ADDR,
            "sip_name": GW_NAME,
            "xmpp_port": XMPP_PORT_S2S,
            "sip_tls_port": SIPS_PORT,
            "xmpp_domains": ["contoso.test", "fabrikam.test"],
            "sip_domain": "contoso.test",
            "sip_cert": pki["gateway"]["cert"],
            "sip_key": pki["gateway"]["key"],
            "xmpp_cert": pki["xmpp"]["cert"],
            "xmpp_key": pki["xmpp"]["key"],
            "ca": pki["ca"]["cert"],
            "edge": {"host": EDGE_NAME, "address": EDGE_ADDR, "port": SIPS_PORT},
            # Domains whose traffic reaches the gateway although it serves neither:
            # XMPP northwind.test (SRV -> xmpp.contoso.test; not hosted: must refuse) and
            # SIP jabber.test (Edge route -> gateway; not federated: must answer 404).
            "refused_domains": {"xmpp": "northwind.test", "sip": "jabber.test"},
        },
        "services": services,
    }
    return info


def _srv_plan():
    plan = [{"priority": 5, "weight": 0, "port": XMPP_PORT_S2S,
             "target": "xmpp-server.l.gmail.test", "address": XMPP_ADDR}]
    for i, a in enumerate(XMPP_ALT_ADDRS):
        plan.append({"priority": 20, "weight": 0, "port": XMPP_PORT_S2S,
                     "target": "alt%d.xmpp-server.l.gmail.test" % (i + 1), "address": a})
    return plan


def start_service(d, name, s2s_ifaces, kamailio_memory=64):
    if name == "dnsmasq":
        pid = spawn(d, name, ["dnsmasq", "--keep-in-foreground", "--conf-file=" + os.path.join(d, "dnsmasq.conf")])
        deadline = time.monotonic() + 10
        while not dns_ready(DNS_ADDR):
            if not alive(pid):
                raise TestbedError("dnsmasq exited during start-up" + _log_tail(d, name))
            if time.monotonic() > deadline:
                raise TestbedError("dnsmasq not answering" + _log_tail(d, name))
            time.sleep(0.05)
        return pid
    if name == "prosody":
        cfg = os.path.join(d, "prosody", "prosody.cfg.lua")
        pid = spawn(d, name, ["prosody", "--config", cfg, "-F"])
        wait_tcp(XMPP_ADDR, XMPP_PORT_C2S, 20, pid, name, d)
        for a in s2s_ifaces:
            wait_tcp(a, XMPP_PORT_S2S, 10, pid, name, d)
        return pid
    if name == "kamailio":
        cfg = os.path.join(d, "kamailio", "kamailio.cfg")
        run(["kamailio", "-c", "-f", cfg])  # syntax check first: clearer errors
        pid = spawn(d, name, ["kamailio", "-f", cfg, "-DD", "-E", "-m", str(kamailio_memory), "-M", "8",
                              "-Y", os.path.join(d, "run")], mount_ns=True)
        wait_tcp(EDGE_ADDR, SIP_PORT, 20, pid, name, d)
        wait_tcp(EDGE_ADDR, SIPS_PORT, 10, pid, name, d)
        # Open ports only mean the TCP main process is up: wait until the SIP workers
        # answer, too (a SIGTERM while they still initialise can hang Kamailio's exit).
        wait_sip_options(pid, d, 20)
        return pid
    raise TestbedError("unknown service " + name)


# ---------------------------------------------------------------------------
# down / restart
# ---------------------------------------------------------------------------
def do_down(d):
    d = os.path.abspath(d)
    piddir = os.path.join(d, "pids")
    ok = True
    if not os.path.isdir(piddir):
        return True
    names = [n[:-4] for n in os.listdir(piddir) if n.endswith(".pid")]
    # Reverse start order: kamailio, prosody, dnsmasq, then anything unknown.
    names.sort(key=lambda n: -SERVICE_ORDER.index(n) if n in SERVICE_ORDER else -99)
    for name in names:
        path = os.path.join(piddir, name + ".pid")
        try:
            with open(path) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            os.unlink(path)
            continue
        if stop_pid(pid, d, name):
            os.unlink(path)
        else:
            log("could not stop %s (pid %d)" % (name, pid))
            ok = False
    return ok


def register_dir(d):
    dirs = registered_dirs()
    if d not in dirs:
        with open(REGISTRY, "a") as f:
            f.write(d + "\n")


def registered_dirs():
    try:
        with open(REGISTRY) as f:
            return [line.strip() for line in f if line.strip()]
    except OSError:
        return []


def cmd_down(args):
    if args.all:
        ok = True
        for d in registered_dirs():
            if os.path.isdir(os.path.join(d, "pids")):
                ok = do_down(d) and ok
        if ok and os.path.exists(REGISTRY):
            os.unlink(REGISTRY)
        return 0 if ok else 1
    if not args.dir:
        raise TestbedError("down needs --dir DIR or --all")
    return 0 if do_down(args.dir) else 1


def cmd_restart(args):
    d = os.path.abspath(args.dir)
    try:
        with open(os.path.join(d, "testbed.json")) as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise TestbedError("no testbed up in %s (%s)" % (d, e))
    name = args.service
    if name not in SERVICE_ORDER:
        raise TestbedError("unknown service %s (one of %s)" % (name, ", ".join(SERVICE_ORDER)))
    pidfile = os.path.join(d, "pids", name + ".pid")
    if os.path.exists(pidfile):
        with open(pidfile) as f:
            pid = int(f.read().strip())
        if not stop_pid(pid, d, name):
            raise TestbedError("could not stop " + name)
        os.unlink(pidfile)
    s2s_ifaces = [e["host"] for e in info["xmpp"]["s2s"]]
    pid = start_service(d, name, s2s_ifaces, info["sip"]["edge"].get("memory_mb", 64))
    info["services"][name]["pid"] = pid
    write_info(d, info)
    return 0


# ---------------------------------------------------------------------------
# SIP helpers (selftest)
# ---------------------------------------------------------------------------
def sip_request(method, ruri, via_proto, via_host, via_port, from_uri, to_uri, body="",
                extra=(), call_id=None):
    """A SIP request; from_uri/to_uri are bare URIs (a tag is added to From) or full
    header values (starting with '<', used verbatim); `extra` are "Name: value" lines."""
    branch = "z9hG4bK-tb" + secrets.token_hex(8)
    lines = [
        "%s %s SIP/2.0" % (method, ruri),
        "Via: SIP/2.0/%s %s:%d;branch=%s;rport" % (via_proto, via_host, via_port, branch),
        "Max-Forwards: 70",
        "From: " + (from_uri if from_uri.startswith("<")
                    else "<%s>;tag=%s" % (from_uri, secrets.token_hex(4))),
        "To: " + (to_uri if to_uri.startswith("<") else "<%s>" % to_uri),
        "Call-ID: %s" % (call_id or secrets.token_hex(8) + "@testbed"),
        "CSeq: 1 %s" % method,
    ] + list(extra)
    if body:
        lines.append("Content-Type: text/plain")
    lines.append("Content-Length: %d" % len(body.encode()))
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def sip_headers(msg):
    head = msg.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    lines = head.split("\r\n")
    hdrs = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs.append((k.strip(), v.strip()))
    return lines[0], hdrs


def sip_header(hdrs, *names):
    """First value of a header (any of its names), or None."""
    for k, v in hdrs:
        if k.lower() in names:
            return v
    return None


def sip_response_to(request, code=200, reason="OK", to_tag=None, extra=()):
    _, hdrs = sip_headers(request)
    out = ["SIP/2.0 %d %s" % (code, reason)]
    for k, v in hdrs:
        kl = k.lower()
        if kl in ("via", "v", "from", "f", "call-id", "i", "cseq", "record-route"):
            out.append("%s: %s" % (k, v))
        elif kl in ("to", "t"):
            out.append("%s: %s%s" % (k, v, "" if ";tag=" in v
                                     else ";tag=" + (to_tag or secrets.token_hex(4))))
    out.extend(extra)
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode()


def read_sip_stream(sock, deadline):
    """Read one SIP message from a stream socket (headers + Content-Length body)."""
    buf = b""
    while True:
        if b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
            need = int(m.group(1)) if m else 0
            if len(rest) >= need:
                return head + b"\r\n\r\n" + rest[:need]
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete SIP message (got %d bytes)" % len(buf))
        sock.settimeout(left)
        data = sock.recv(65536)
        if not data:
            raise EOFError("connection closed after %d bytes" % len(buf))
        buf += data


def tls_client_ctx(info, cert, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = version
    ctx.maximum_version = version
    ctx.load_verify_locations(info["pki"]["ca"]["cert"])
    ctx.check_hostname = True
    if cert is not None:
        ctx.load_cert_chain(info["pki"][cert]["cert"], info["pki"][cert]["key"])
    return ctx


def edge_tls_exchange(info, cert, version, request, timeout=5.0):
    """Connect to the Edge's federation listener from the gateway address with client
    certificate `cert` (a pki name or None), send `request`, return
    ("refused", why) or ("response", message bytes)."""
    ctx = tls_client_ctx(info, cert, version)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        raw.bind((GW_ADDR, 0))
        raw.connect((EDGE_ADDR, SIPS_PORT))
        try:
            s = ctx.wrap_socket(raw, server_hostname=EDGE_NAME)
        except (ssl.SSLError, OSError) as e:
            return "refused", "handshake failed: %s" % e
        try:
            s.sendall(request)
            return "response", read_sip_stream(s, deadline)
        except (ssl.SSLError, OSError, EOFError) as e:
            # TLS 1.3: the server checks the client certificate after the client's
            # Finished, so refusal arrives as an alert (or EOF) on the first read.
            return "refused", "first read failed: %s" % e
        finally:
            s.close()
    finally:
        raw.close()


class TlsSipServer(threading.Thread):
    """Stands in for the gateway's SIP TLS listener: accepts one connection (client
    certificate required, private CA), reads one request, answers 200 OK."""

    def __init__(self, info, timeout):
        super().__init__(daemon=True)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(info["pki"]["gateway"]["cert"], info["pki"]["gateway"]["key"])
        self.ctx.load_verify_locations(info["pki"]["ca"]["cert"])
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.sni_callback = self._sni
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((GW_ADDR, SIPS_PORT))
        self.sock.listen(4)
        self.timeout = timeout
        self.peer = None
        self.peer_cn = None
        self.sni = None
        self.request = None
        self.error = None

    def _sni(self, _sock, name, _ctx):
        self.sni = name

    def run(self):
        deadline = time.monotonic() + self.timeout
        try:
            self.sock.settimeout(self.timeout)
            conn, self.peer = self.sock.accept()
            with self.ctx.wrap_socket(conn, server_side=True) as s:
                cert = s.getpeercert()
                for rdn in cert.get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            self.peer_cn = v
                self.request = read_sip_stream(s, deadline)
                s.sendall(sip_response_to(self.request))
                time.sleep(0.3)
        except Exception as e:  # reported by the check
            self.error = "%s: %s" % (type(e).__name__, e)
        finally:
            self.sock.close()


def udp_recv_sip(sock, deadline, want):
    """Receive datagrams until one whose first line matches `want` (a regex)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("nothing matching %r" % want)
        sock.settimeout(left)
        data, src = sock.recvfrom(65536)
        first = data.split(b"\r\n", 1)[0].decode(errors="replace")
        if re.match(want, first):
            return data, src


# ---------------------------------------------------------------------------
# XMPP probe (runs in a child process so a stuck client cannot hang the selftest)
# ---------------------------------------------------------------------------
CHAT_STATES = ("active", "composing", "paused", "inactive", "gone")  # XEP-0085


def xmpp_client(loop, info, jid, ca, on_error=None):
    """A slixmpp client logging `jid` (a testbed user) in to Prosody's c2s port, trusting `ca`.
    Returns (client, ready, inbox): `ready` resolves to True once the session started (presence
    sent, roster fetched) or to "failed: ..."; received messages with a body and chat-state-only
    messages (XEP-0085) go to `inbox`, and message errors to `on_error` (to `inbox` too when it
    is None). Each stanza arrives once."""
    import asyncio
    import slixmpp

    users = {u["jid"]: u["password"] for u in info["xmpp"]["users"]}
    c = slixmpp.ClientXMPP(jid, users[jid])
    c.register_plugin("xep_0085")  # chat states: stanza interface + 'chatstate' event
    c.ca_certs = ca
    c.reconnect_max_attempts = 0
    ready = loop.create_future()
    inbox = asyncio.Queue()

    async def on_start(_event):
        c.send_presence()
        await c.get_roster()
        if not ready.done():
            ready.set_result(True)

    def on_fail(event):
        if not ready.done():
            ready.set_result("failed: %s" % (event,))

    def on_msg(msg):
        # Errors come through message_error (an error may carry the original body too).
        if msg["type"] != "error":
            inbox.put_nowait(msg)

    def on_state(msg):
        # Messages with a body already came through on_msg.
        if msg["type"] != "error" and msg.xml.find("{%s}body" % msg.namespace) is None:
            inbox.put_nowait(msg)

    c.add_event_handler("session_start", on_start)
    c.add_event_handler("failed_auth", on_fail)
    c.add_event_handler("connection_failed", on_fail)
    c.add_event_handler("message", on_msg)
    c.add_event_handler("chatstate", on_state)
    c.add_event_handler("message_error", on_error or inbox.put_nowait)
    c.connect(address=(info["xmpp"]["c2s"]["host"], info["xmpp"]["c2s"]["port"]))
    return c, ready, inbox


def xmpp_send_chat(c, to, body=None, state=None):
    """A chat message: a body, a chat state, or both; returns its id."""
    m = c.make_message(mto=to, mbody=body, mtype="chat")
    if state:
        m["chat_state"] = state
    m["id"] = c.new_id()
    m.send()
    return m["id"]


def message_entry(msg):
    """What xmpp-recv and xmpp-send report of a received message stanza."""
    has_body = msg.xml.find("{%s}body" % msg.namespace) is not None
    state = None
    for name in CHAT_STATES:
        if msg.xml.find("{http://jabber.org/protocol/chatstates}%s" % name) is not None:
            state = name
    kind = "error" if msg["type"] == "error" else ("message" if has_body else
                                                   "chatstate" if state else "message")
    entry = {"kind": kind, "from": str(msg["from"]), "to": str(msg["to"]), "type": msg["type"],
             "body": msg["body"] if has_body else "", "id": msg["id"], "state": state}
    if msg["type"] == "error":
        entry["condition"] = msg["error"]["condition"]
        entry["text"] = msg["error"]["text"]
        entry["error_type"] = msg["error"]["type"]
    return entry


def cmd_xmpp_probe(args):
    import asyncio
    import logging

    logging.basicConfig(level=logging.CRITICAL)

    with open(os.path.join(args.dir, "testbed.json")) as f:
        info = json.load(f)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    result = {}
    errors = []

    sent_ids = {}  # id -> "body" | "state", to tell which of our messages bounced

    def on_error(msg):
        errors.append({"from": str(msg["from"]), "condition": msg["error"]["condition"],
                       "text": msg["error"]["text"], "error_type": msg["error"]["type"],
                       "id": msg["id"], "of": sent_ids.get(msg["id"])})

    def client(jid, ca):
        return xmpp_client(loop, info, jid, ca, on_error)

    async def main():
        ca = info["pki"]["ca"]["cert"]
        alice, a_ready, _ = client(args.sender, ca)
        bob, b_ready, b_inbox = client(args.receiver, ca)
        a, b = await asyncio.wait_for(asyncio.gather(a_ready, b_ready), 15)
        result["login"] = {"alice": a, "bob": b}
        if a is not True or b is not True:
            return
        token = "testbed-" + secrets.token_hex(6)
        alice.send_message(mto=args.receiver, mbody=token, mtype="chat")
        while True:
            msg = await asyncio.wait_for(b_inbox.get(), 10)
            if msg["type"] in ("chat", "normal") and msg["body"]:
                result["received"] = {"from": str(msg["from"].bare), "body": msg["body"],
                                      "expected": token}
                break
        for to in args.remote:
            if args.state:
                sent_ids[xmpp_send_chat(alice, to, state=args.state)] = "state"
            sent_ids[xmpp_send_chat(alice, to, body=args.body, state=args.body_state)] = "body"
        result["sent_remote"] = list(args.remote)
        expected = len(args.remote) * (2 if args.state else 1)
        waited = 0.0
        while len(errors) < expected and waited < args.wait:
            await asyncio.sleep(0.1)
            waited += 0.1
        result["errors"] = list(errors)
        # A client that trusts an unrelated CA must not get a session: proves the
        # first login really verified Prosody's certificate.
        if args.wrong_ca:
            mallory, m_ready, _ = client(args.sender, info["pki"]["other_ca"]["cert"])
            try:
                r = await asyncio.wait_for(m_ready, 4)
            except asyncio.TimeoutError:
                r = "no session"
            result["wrong_ca_login"] = r
            mallory.disconnect()
        alice.disconnect()
        bob.disconnect()
        await asyncio.sleep(0.2)

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 40))
    except Exception as e:
        result["error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(result, ensure_ascii=False))
    sys.stdout.flush()
    os._exit(0)  # slixmpp may leave tasks behind; don't wait for them


def cmd_xmpp_recv(args):
    """Logs --user in, prints {"ready": true} (one line), sends to each --send JID (chat
    states before and after the body as asked), then prints one JSON line {"message": {...}}
    per stanza received (kind "message", "chatstate" or "error") until --count of the kinds
    in --count-kind arrived or --timeout seconds; then {"done": true}."""
    import asyncio
    import logging

    logging.basicConfig(level=logging.CRITICAL)

    with open(os.path.join(args.dir, "testbed.json")) as f:
        info = json.load(f)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    counted = set(args.count_kind or ["message", "error"])
    body = args.body
    if args.body_file:
        with open(args.body_file, encoding="utf-8") as f:
            body = f.read()

    def emit(obj):
        print(json.dumps(obj, ensure_ascii=False))
        sys.stdout.flush()

    async def main():
        c, ready, inbox = xmpp_client(loop, info, args.user, info["pki"]["ca"]["cert"])
        r = await asyncio.wait_for(ready, 15)
        emit({"ready": r})
        if r is not True:
            return
        for to in args.send:
            for state in args.send_state:
                xmpp_send_chat(c, to, state=state)
                if args.send_delay:
                    await asyncio.sleep(args.send_delay)
            if not args.no_body:
                xmpp_send_chat(c, to, body=body, state=args.body_state)
            for state in args.send_state_after:
                if args.send_delay:
                    await asyncio.sleep(args.send_delay)
                xmpp_send_chat(c, to, state=state)
        got = 0
        deadline = loop.time() + args.timeout
        while got < args.count:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                msg = await asyncio.wait_for(inbox.get(), left)
            except asyncio.TimeoutError:
                break
            entry = message_entry(msg)
            emit({"message": entry})
            if entry["kind"] in counted:
                got += 1
        c.disconnect()
        await asyncio.sleep(0.2)

    try:
        loop.run_until_complete(asyncio.wait_for(main(), args.timeout + 20))
    except Exception as e:
        emit({"error": "%s: %s" % (type(e).__name__, e)})
    emit({"done": True})
    os._exit(0)  # slixmpp may leave tasks behind; don't wait for them


# ---------------------------------------------------------------------------
# selftest
# ---------------------------------------------------------------------------
class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print("ok - " + what, flush=True)
        else:
            self.failed += 1
            print("not ok - " + what + (": " + detail if detail else ""), flush=True)
        return ok

    def run(self, what, fn):
        """fn() returns (ok, detail) or raises."""
        try:
            ok, detail = fn()
        except Exception as e:
            ok, detail = False, "%s: %s" % (type(e).__name__, e)
        return self.check(ok, what, detail)


def check_listeners(info):
    """Every socket a testbed process listens on is on 127.0.10.0/24."""
    pids = set()
    for svc in info["services"].values():
        pids.add(svc["pid"])
        pids.update(group_members(svc["pid"]))
    out = run(["ss", "-H", "-lntup"])
    seen, bad = [], []
    for line in out.splitlines():
        m = re.search(r"pid=(\d+)", line)
        if not m or not any(int(p) in pids for p in re.findall(r"pid=(\d+)", line)):
            continue
        local = line.split()[4]
        seen.append(local)
        if not local.startswith("127.0.10."):
            bad.append(line.strip())
    if bad:
        return False, "outside 127.0.10.0/24: " + "; ".join(bad)
    want = {"%s:53" % DNS_ADDR, "%s:%d" % (XMPP_ADDR, XMPP_PORT_C2S), "%s:%d" % (EDGE_ADDR, SIPS_PORT),
            "%s:%d" % (EDGE_ADDR, SIP_PORT)}
    want |= {"%s:%d" % (s["host"], s["port"]) for s in info["xmpp"]["s2s"]}
    missing = want - set(seen)
    if missing:
        return False, "expected listeners missing: %s" % sorted(missing)
    return True, ""


def check_dns(info, res):
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    def query(name, rtype):
        r = dns.query.udp(dns.message.make_query(name, rtype), DNS_ADDR, timeout=2)
        recs = []
        for rrset in r.answer:
            for rd in rrset:
                recs.append(rd)
        return r, recs

    def srv_ok(name, expected):
        _, recs = query(name, "SRV")
        got = sorted((rd.priority, rd.port, str(rd.target).rstrip(".")) for rd in recs
                     if rd.rdtype == dns.rdatatype.SRV)
        want = sorted((e["priority"], e["port"], e["target"]) for e in expected)
        return got == want, "got %s, want %s" % (got, want)

    plan = info["xmpp"]["srv"]["_xmpp-server._tcp.gmail.test"]

    def gmail_srv():
        ok, detail = srv_ok("_xmpp-server._tcp.gmail.test", plan)
        prios = sorted(e["priority"] for e in plan)
        return ok and prios == [5, 20, 20, 20, 20], detail

    res.run("dns: _xmpp-server._tcp.gmail.test SRV = 1 x priority 5 + 4 x priority 20", gmail_srv)
    res.run("dns: _xmpp-server._tcp.googlemail.test SRV = same set",
            lambda: srv_ok("_xmpp-server._tcp.googlemail.test", plan))
    res.run("dns: _xmpp-client._tcp.gmail.test SRV -> xmpp.l.gmail.test:5222",
            lambda: srv_ok("_xmpp-client._tcp.gmail.test",
                           info["xmpp"]["srv"]["_xmpp-client._tcp.gmail.test"]))
    res.run("dns: _xmpp-server._tcp.contoso.test and fabrikam.test SRV -> xmpp.contoso.test:5269",
            lambda: _both(
                srv_ok("_xmpp-server._tcp.contoso.test",
                       [{"priority": 10, "port": 5269, "target": "xmpp.contoso.test"}]),
                srv_ok("_xmpp-server._tcp.fabrikam.test",
                       [{"priority": 10, "port": 5269, "target": "xmpp.contoso.test"}])))

    res.run("dns: _xmpp-server._tcp.northwind.test SRV -> xmpp.contoso.test:5269 (not hosted: relay tests)",
            lambda: srv_ok("_xmpp-server._tcp.northwind.test",
                           info["xmpp"]["srv"]["_xmpp-server._tcp.northwind.test"]))

    def a_records():
        want = {e["target"]: e["address"] for e in plan}
        want.update({"xmpp.l.gmail.test": XMPP_ADDR, "xmpp.contoso.test": GW_ADDR,
                     GW_NAME: GW_ADDR, EDGE_NAME: EDGE_ADDR, "ua.contoso.test": UA_ADDR})
        bad = []
        for name, addr in sorted(want.items()):
            _, recs = query(name, "A")
            got = [rd.address for rd in recs if rd.rdtype == dns.rdatatype.A]
            if got != [addr]:
                bad.append("%s -> %s (want %s)" % (name, got, addr))
        return not bad, "; ".join(bad)

    res.run("dns: A records of every target (%s)" % ", ".join(
        sorted({e["target"] for e in plan} | {"xmpp.contoso.test", GW_NAME, EDGE_NAME})), a_records)

    def no_forwarding():
        r, recs = query("example.com", "A")
        r2, recs2 = query("nosuch.gmail.test", "A")
        return (not recs and not recs2 and r2.rcode() == dns.rcode.NXDOMAIN,
                "example.com rcode %s answers %d; nosuch.gmail.test rcode %s answers %d"
                % (dns.rcode.to_text(r.rcode()), len(recs), dns.rcode.to_text(r2.rcode()), len(recs2)))

    res.run("dns: nothing outside the plan (example.com unanswered, unknown .test NXDOMAIN)",
            no_forwarding)


def _both(a, b):
    return a[0] and b[0], "%s | %s" % (a[1], b[1])


def check_xmpp(d, info, res):
    # Stand in for the gateway's XMPP listener to see where Prosody's SRV lookup leads.
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((GW_ADDR, XMPP_PORT_S2S))
    lst.listen(8)
    seen = {"headers": [], "peers": [], "sessions": {}, "error": None}
    # contoso.test gets the gateway's real XMPP certificate, fabrikam.test one from an
    # unrelated CA: Prosody must call the first chain valid and the second invalid.
    certs = {"contoso.test": "xmpp", "fabrikam.test": "other"}

    def listener():
        deadline = time.monotonic() + 35
        try:
            while time.monotonic() < deadline and len(seen["headers"]) < 2:
                lst.settimeout(max(0.1, deadline - time.monotonic()))
                conn, peer = lst.accept()
                with conn:
                    seen["peers"].append(peer[0])
                    sess = fake_s2s_starttls(conn, info, certs, seen)
                    if sess.get("to"):
                        seen["sessions"][sess["to"]] = sess
        except Exception as e:
            seen["error"] = "%s: %s" % (type(e).__name__, e)
        finally:
            lst.close()

    th = threading.Thread(target=listener, daemon=True)
    th.start()
    py = DEBIAN_PYTHON if os.path.exists(DEBIAN_PYTHON) else sys.executable
    users = [u["jid"] for u in info["xmpp"]["users"]]
    p = subprocess.run([py, os.path.abspath(__file__), "xmpp-send", "--dir", d,
                        "--sender", users[0], "--receiver", users[1], "--wrong-ca",
                        "--remote", "nobody@contoso.test", "--remote", "nobody@fabrikam.test"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    try:
        r = json.loads(p.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        r = {"error": "probe output: %r %r" % (p.stdout[-500:], p.stderr[-1500:])}
    login = r.get("login", {})
    res.check(login.get("alice") is True and login.get("bob") is True,
              "xmpp: alice@gmail.test and bob@gmail.test log in to Prosody (STARTTLS, cert verified with the private CA)",
              json.dumps(r))
    rec = r.get("received", {})
    res.check(bool(rec) and rec.get("body") == rec.get("expected") and rec.get("from") == users[0],
              "xmpp: a message from alice reaches bob", json.dumps(r))
    res.check(r.get("wrong_ca_login") not in (None, True),
              "xmpp: a client trusting an unrelated CA gets no session (verification is real)",
              json.dumps(r))
    th.join(40)

    def prosody_srv():
        hdrs = seen["headers"]
        tos = sorted(set(re.findall(r"""\bto=['"]([^'"]+)['"]""", " ".join(hdrs))))
        ok = "contoso.test" in tos and "fabrikam.test" in tos
        return ok, "streams seen at %s:%d: to=%s, error=%s%s" % (
            GW_ADDR, XMPP_PORT_S2S, tos, seen["error"], "" if ok else _log_tail(d, "prosody"))

    res.run("xmpp: Prosody resolves SRV via the test DNS (s2s streams to contoso.test and "
            "fabrikam.test arrive at xmpp.contoso.test = %s:%d)" % (GW_ADDR, XMPP_PORT_S2S), prosody_srv)

    def prosody_tls():
        with open(info["xmpp"]["log"], errors="replace") as f:
            text = f.read()
        results = {}
        for to, sess in seen["sessions"].items():
            # Prosody names the session in every line; the last one for gmail.test->TO is ours.
            sids = re.findall(r"\s(s2sout\w+)\s+\w+\s+.*gmail\.test->%s\b" % re.escape(to), text)
            sid = sids[-1] if sids else "-"
            chain = re.findall(r"\s%s\s+debug\s+certificate chain validation result: (\w+)"
                               % re.escape(sid), text)
            ident = re.findall(r"\s%s\s+debug\s+certificate identity validation result: (\w+)"
                               % re.escape(sid), text)
            results[to] = {"client_cert_cn": sess.get("peer_cn"), "chain": chain, "identity": ident,
                           "error": sess.get("error")}
        c, f = results.get("contoso.test", {}), results.get("fabrikam.test", {})
        ok = (c.get("client_cert_cn") == "gmail.test" and c.get("chain") == ["valid"]
              and c.get("identity") == ["valid"] and f.get("chain") == ["invalid"])
        return ok, json.dumps(results)

    res.run("xmpp: Prosody's s2s STARTTLS presents gmail.pem, trusts the private CA "
            "(xmpp.pem: chain+identity valid) and not an unrelated one (other.pem: chain invalid)",
            prosody_tls)


def s2s_in_external(info, cert, timeout=8.0):
    """Connect to Prosody's s2s port as contoso.test (from the gateway's address), STARTTLS
    with client certificate `cert`, then try SASL EXTERNAL. Returns a dict of what happened."""
    out = {"cert": cert}
    deadline = time.monotonic() + timeout
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(timeout)
    try:
        raw.bind((GW_ADDR, 0))
        s2s = info["xmpp"]["s2s"][0]
        raw.connect((s2s["host"], s2s["port"]))
        header = ("<?xml version='1.0'?><stream:stream %s from='contoso.test' to='gmail.test' "
                  "version='1.0'>" % STREAM_NS).encode()
        raw.sendall(header)
        buf = _read_until(raw, b"", rb"</stream:features>", deadline)
        out["starttls_offered"] = b"urn:ietf:params:xml:ns:xmpp-tls" in buf
        raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        buf = _read_until(raw, b"", rb"<proceed|<failure", deadline)
        if b"<proceed" not in buf:
            out["error"] = "no <proceed/>"
            return out
        ctx = tls_client_ctx(info, cert, ssl.TLSVersion.TLSv1_3)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        with ctx.wrap_socket(raw, server_hostname="gmail.test") as tls:
            tls.sendall(header)
            buf = _read_until(tls, b"", rb"</stream:features>|<stream:features/>", deadline)
            mechs = re.findall(rb"<mechanism>([^<]+)</mechanism>", buf)
            out["mechanisms"] = [m.decode() for m in mechs]
            if b"EXTERNAL" in mechs:
                tls.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>"
                            b"Y29udG9zby50ZXN0</auth>")  # base64("contoso.test")
                buf = _read_until(tls, b"", rb"<success|<failure", deadline)
                out["sasl"] = "success" if b"<success" in buf else "failure"
            tls.sendall(b"</stream:stream>")
    except Exception as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        raw.close()
    return out


def check_prosody_s2s_in(info, res):
    def good():
        r = s2s_in_external(info, "xmpp")
        return r.get("sasl") == "success", json.dumps(r)

    res.run("xmpp: an s2s peer contoso.test presenting xmpp.pem (private CA) gets SASL EXTERNAL "
            "from Prosody after STARTTLS", good)

    def bad():
        r = s2s_in_external(info, "wrongname")
        # Refused either way: features without EXTERNAL (dialback may follow), or (with
        # s2s_secure_auth) a stream error right after TLS.
        refused = "mechanisms" in r or "stream:error" in r.get("error", "")
        return (refused and "EXTERNAL" not in r.get("mechanisms", [])
                and r.get("sasl") != "success"), json.dumps(r)

    res.run("xmpp: an s2s peer claiming contoso.test with wrongname.pem (rogue.contoso.test) is "
            "not offered SASL EXTERNAL", bad)


STREAM_NS = ("xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
             "xmlns:db='jabber:server:dialback'")


def _read_until(conn, buf, pattern, deadline):
    while not re.search(pattern, buf):
        conn.settimeout(max(0.05, deadline - time.monotonic()))
        data = conn.recv(4096)
        if not data:
            raise EOFError("peer closed; had %r" % buf[-200:])
        buf += data
    return buf


def fake_s2s_starttls(conn, info, certs, seen):
    """Play the receiving server of an XMPP s2s stream up to the TLS-secured second
    stream header: enough for Prosody to validate our certificate and log the result."""
    sess = {}
    deadline = time.monotonic() + 8
    try:
        buf = _read_until(conn, b"", rb"<stream:stream[^>]*>", deadline)
        header = re.search(rb"<stream:stream[^>]*>", buf).group(0).decode(errors="replace")
        seen["headers"].append(header)
        m = re.search(r"""\bto=['"]([^'"]+)['"]""", header)
        to = m.group(1) if m else ""
        sess["to"] = to
        conn.sendall(("<?xml version='1.0'?><stream:stream %s from='%s' to='gmail.test' id='tb-%s' "
                      "version='1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                      "<required/></starttls></stream:features>" % (STREAM_NS, to, secrets.token_hex(4))
                      ).encode())
        _read_until(conn, b"", rb"<starttls[^>]*>", deadline)
        conn.sendall(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        name = certs.get(to, "xmpp")
        ctx.load_cert_chain(info["pki"][name]["cert"], info["pki"][name]["key"])
        ctx.load_verify_locations(info["pki"]["ca"]["cert"])
        ctx.verify_mode = ssl.CERT_OPTIONAL
        conn.settimeout(max(0.05, deadline - time.monotonic()))
        with ctx.wrap_socket(conn, server_side=True) as tls:
            cert = tls.getpeercert() or {}
            for rdn in cert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        sess["peer_cn"] = v
            _read_until(tls, b"", rb"<stream:stream[^>]*>", deadline)
            tls.sendall(("<stream:stream %s from='%s' to='gmail.test' id='tb-%s' version='1.0'>"
                         "<stream:features/>" % (STREAM_NS, to, secrets.token_hex(4))).encode())
            # Prosody validates the certificate on our second header; give it a moment,
            # then find its session id in the log by our stream id.
            time.sleep(0.5)
            tls.sendall(b"</stream:stream>")
    except Exception as e:
        sess["error"] = "%s: %s" % (type(e).__name__, e)
    return sess


def check_edge(d, info, res):
    options = lambda: sip_request("OPTIONS", "sip:%s" % EDGE_NAME, "TLS", GW_ADDR, SIPS_PORT,
                                  "sip:probe@%s" % GW_NAME, "sip:%s" % EDGE_NAME)
    versions = [("TLS 1.2", ssl.TLSVersion.TLSv1_2), ("TLS 1.3", ssl.TLSVersion.TLSv1_3)]
    for vname, v in versions:
        def good(v=v):
            kind, data = edge_tls_exchange(info, "gateway", v, options())
            if kind != "response":
                return False, data
            first = data.split(b"\r\n", 1)[0].decode(errors="replace")
            return first.startswith("SIP/2.0 200"), first
        res.run("edge: %s client with gateway.pem (gw.contoso.test, private CA) gets 200 to OPTIONS"
                % vname, good)
    for cert, why in ((None, "no client certificate"), ("other", "other.pem (unrelated CA)")):
        for vname, v in versions:
            def refused(cert=cert, v=v):
                kind, data = edge_tls_exchange(info, cert, v, options())
                if kind == "refused":
                    return True, data
                return False, "got a SIP response: %r" % data.split(b"\r\n", 1)[0]
            res.run("edge: %s client with %s is refused" % (vname, why), refused)
    for vname, v in versions:
        def wrongname(v=v):
            kind, data = edge_tls_exchange(info, "wrongname", v, options())
            if kind != "response":
                return False, data
            first = data.split(b"\r\n", 1)[0].decode(errors="replace")
            return first.startswith("SIP/2.0 403"), first
        res.run("edge: %s client with wrongname.pem (rogue.contoso.test, private CA) gets 403" % vname,
                wrongname)

    def domain_options():
        req = sip_request("OPTIONS", "sip:contoso.test", "TLS", GW_ADDR, SIPS_PORT,
                          "sip:probe@gmail.test", "sip:contoso.test")
        kind, data = edge_tls_exchange(info, "gateway", ssl.TLSVersion.TLSv1_3, req)
        if kind != "response":
            return False, data
        first = data.split(b"\r\n", 1)[0].decode(errors="replace")
        return first.startswith("SIP/2.0 200"), first
    res.run("edge: OPTIONS sip:contoso.test (no user) from the gateway gets 200 from the Edge",
            domain_options)

    def internal():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(info["pki"]["ca"]["cert"])
        ctx.check_hostname = False
        raw = socket.create_connection((EDGE_ADDR, EDGE_INTERNAL_PORT), timeout=5)
        try:
            s = ctx.wrap_socket(raw, server_hostname=EDGE_NAME)
            der = s.getpeercert()
            names = [v for k, v in der.get("subjectAltName", ()) if k == "DNS"]
            s.sendall(sip_request("OPTIONS", "sip:contoso.test", "TLS", GW_ADDR, SIPS_PORT,
                                  "sip:probe@gmail.test", "sip:contoso.test"))
            data = read_sip_stream(s, time.monotonic() + 5)
            s.close()
        finally:
            raw.close()
        first = data.split(b"\r\n", 1)[0].decode(errors="replace")
        digest = b"\r\nWWW-Authenticate: Digest " in data
        return (first.startswith("SIP/2.0 401") and digest and names == [EDGE_POOL_NAME],
                "%s, Digest challenge %s, certificate names %s" % (first, digest, names))
    res.run("edge: the internal interface %s:%d presents %s and answers 401 with a Digest challenge"
            % (EDGE_ADDR, EDGE_INTERNAL_PORT, EDGE_POOL_NAME), internal)

    # Internal user -> Edge (UDP) -> gateway (TLS, resolved gw.contoso.test via test DNS).
    def outbound(user="alice@gmail.test"):
        srv = TlsSipServer(info, 15)
        srv.start()
        ua = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            ua.bind((UA_ADDR, info["sip"]["users"]["port"]))
            req = sip_request("MESSAGE", "sip:" + user, "UDP", UA_ADDR,
                              info["sip"]["users"]["port"], "sip:bob@contoso.test",
                              "sip:" + user, body="hello over the edge")
            ua.sendto(req, (EDGE_ADDR, SIP_PORT))
            deadline = time.monotonic() + 12
            try:
                resp, _ = udp_recv_sip(ua, deadline, r"SIP/2\.0 [2-6]\d\d")
                first = resp.split(b"\r\n", 1)[0].decode()
            except (TimeoutError, socket.timeout) as e:
                first = "no final response (%s)" % e
        finally:
            ua.close()
        srv.join(5)
        problems = []
        if srv.request is None:
            problems.append("nothing arrived at %s:%d (%s)" % (GW_ADDR, SIPS_PORT, srv.error))
        else:
            line, hdrs = sip_headers(srv.request)
            if line != "MESSAGE sip:%s SIP/2.0" % user:
                problems.append("request line %r" % line)
            if not any(k.lower() == "record-route" for k, _ in hdrs):
                problems.append("no Record-Route")
            if srv.peer_cn != EDGE_NAME:
                problems.append("client certificate CN %r" % srv.peer_cn)
            if srv.sni != GW_NAME:
                problems.append("SNI %r" % srv.sni)
            if srv.peer[0] != EDGE_ADDR:
                problems.append("connection from %s, not %s" % (srv.peer[0], EDGE_ADDR))
        if not first.startswith("SIP/2.0 200"):
            problems.append("UA got %r" % first)
        if problems:
            return False, "; ".join(problems) + _log_tail(d, "kamailio")
        return True, ""

    res.run("edge: MESSAGE from a contoso.test user (UDP %s -> %s:%d) for sip:alice@gmail.test is "
            "relayed over TLS (SNI gw.contoso.test) to %s:%d with the Edge certificate, 200 comes back"
            % (UA_ADDR, EDGE_ADDR, SIP_PORT, GW_ADDR, SIPS_PORT), outbound)
    res.run("edge: a MESSAGE for sip:x@jabber.test (a domain the gateway does not federate) is "
            "routed to the gateway too", lambda: outbound("x@jabber.test"))

    # Gateway (TLS, gateway.pem) -> Edge -> internal user (UDP).
    def inbound():
        ua = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        result = {}
        try:
            ua.bind((UA_ADDR, info["sip"]["users"]["port"]))

            def user_agent():
                try:
                    req, src = udp_recv_sip(ua, time.monotonic() + 10, r"MESSAGE ")
                    result["request"], result["src"] = req, src
                    ua.sendto(sip_response_to(req), src)
                except Exception as e:
                    result["error"] = "%s: %s" % (type(e).__name__, e)

            th = threading.Thread(target=user_agent, daemon=True)
            th.start()
            req = sip_request("MESSAGE", "sip:bob@contoso.test", "TLS", GW_ADDR, SIPS_PORT,
                              "sip:alice@gmail.test", "sip:bob@contoso.test", body="hello bob")
            kind, data = edge_tls_exchange(info, "gateway", ssl.TLSVersion.TLSv1_3, req, timeout=10)
            th.join(11)
        finally:
            ua.close()
        problems = []
        if "request" not in result:
            problems.append("nothing reached the UA (%s)" % result.get("error"))
        else:
            line, _ = sip_headers(result["request"])
            if line != "MESSAGE sip:bob@contoso.test SIP/2.0":
                problems.append("UA got %r" % line)
            if result["src"][0] != EDGE_ADDR:
                problems.append("UA got it from %s" % (result["src"],))
        first = data.split(b"\r\n", 1)[0].decode(errors="replace") if kind == "response" else data
        if not first.startswith("SIP/2.0 200"):
            problems.append("gateway got %r" % first)
        return not problems, "; ".join(problems)

    res.run("edge: MESSAGE from the gateway (TLS, gateway.pem) for sip:bob@contoso.test reaches the UA "
            "at %s:%d, 200 comes back" % (UA_ADDR, info["sip"]["users"]["port"]), inbound)

    # A dialog: the gateway SUBSCRIBEs (TLS) to a user; the user's in-dialog NOTIFY
    # follows the Record-Route set back through the Edge to the gateway's Contact.
    def dialog():
        gw_contact = "sip:alice@%s:%d;transport=tls" % (GW_NAME, SIPS_PORT)
        srv = TlsSipServer(info, 15)  # the gateway's listener, receives the NOTIFY
        srv.start()
        ua = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ua_port = info["sip"]["users"]["port"]
        result = {}
        try:
            ua.bind((UA_ADDR, ua_port))

            def user_agent():
                try:
                    deadline = time.monotonic() + 10
                    sub, src = udp_recv_sip(ua, deadline, r"SUBSCRIBE ")
                    _, hdrs = sip_headers(sub)
                    tag = secrets.token_hex(4)
                    ua.sendto(sip_response_to(sub, to_tag=tag, extra=[
                        "Contact: <sip:bob@%s:%d>" % (UA_ADDR, ua_port), "Expires: 60"]), src)
                    routes = [v for k, v in hdrs if k.lower() == "record-route"]
                    result["route_set"] = routes
                    contact = re.search(r"<([^>]+)>", sip_header(hdrs, "contact", "m") or "")
                    notify = sip_request(
                        "NOTIFY", contact.group(1) if contact else "sip:missing-contact@invalid",
                        "UDP", UA_ADDR, ua_port,
                        "%s;tag=%s" % (sip_header(hdrs, "to", "t"), tag), sip_header(hdrs, "from", "f"),
                        call_id=sip_header(hdrs, "call-id", "i"),
                        extra=["Route: " + r for r in routes] + [
                            "Contact: <sip:bob@%s:%d>" % (UA_ADDR, ua_port),
                            "Event: presence", "Subscription-State: active;expires=60"])
                    first = routes[0] if routes else ""
                    m = re.search(r"sip:([\d.]+)(?::(\d+))?", first)
                    hop = (m.group(1), int(m.group(2) or 5060)) if m else (EDGE_ADDR, SIP_PORT)
                    ua.sendto(notify, hop)
                    resp, _ = udp_recv_sip(ua, deadline, r"SIP/2\.0 [2-6]\d\d")
                    result["notify_response"] = resp.split(b"\r\n", 1)[0].decode()
                except Exception as e:
                    result["error"] = "%s: %s" % (type(e).__name__, e)

            th = threading.Thread(target=user_agent, daemon=True)
            th.start()
            req = sip_request("SUBSCRIBE", "sip:bob@contoso.test", "TLS", GW_ADDR, SIPS_PORT,
                              "sip:alice@gmail.test", "sip:bob@contoso.test",
                              extra=["Contact: <%s>" % gw_contact, "Event: presence",
                                     "Expires: 60", "Accept: application/pidf+xml"])
            kind, data = edge_tls_exchange(info, "gateway", ssl.TLSVersion.TLSv1_3, req, timeout=10)
            th.join(11)
            srv.join(5)
        finally:
            ua.close()
        problems = []
        first = data.split(b"\r\n", 1)[0].decode(errors="replace") if kind == "response" else data
        if not first.startswith("SIP/2.0 200"):
            problems.append("SUBSCRIBE got %r" % first)
        if len(result.get("route_set", [])) != 2:
            problems.append("UA saw Record-Route %r" % result.get("route_set"))
        if srv.request is None:
            problems.append("no NOTIFY at %s:%d (%s)" % (GW_ADDR, SIPS_PORT, srv.error))
        else:
            line, hdrs = sip_headers(srv.request)
            if line != "NOTIFY %s SIP/2.0" % gw_contact:
                problems.append("gateway got %r" % line)
            if sip_header(hdrs, "route") is not None:
                problems.append("Route left in NOTIFY: %r" % sip_header(hdrs, "route"))
            if srv.peer_cn != EDGE_NAME:
                problems.append("NOTIFY connection's client certificate CN %r" % srv.peer_cn)
        if not result.get("notify_response", "").startswith("SIP/2.0 200"):
            problems.append("NOTIFY: %s" % (result.get("notify_response") or result.get("error")))
        return not problems, "; ".join(problems) + ("" if not problems else _log_tail(d, "kamailio"))

    res.run("edge: SUBSCRIBE from the gateway reaches the UA; its in-dialog NOTIFY follows the "
            "Record-Route set back over TLS to the gateway's Contact", dialog)

    check_sipp(d, info, res)
    check_sip_tools(d, info, res)
    if info["sip"]["users"]["transport"] != "udp" or info["sip"]["users"]["port"] != SIP_PORT:
        res.check(True, "sip-presence: skipped (testbed not on the default UDP %s:%d)"
                  % (UA_ADDR, SIP_PORT))
    else:
        res.run("sip-presence: carol SUBSCRIBEs to bob through the Edge (Record-Route); bob's "
                "NOTIFYs (PIDF: open/closed, note, RPID away) follow the route set back; a "
                "refresh is answered, one refused with 481, Expires 0 ends in NOTIFY terminated",
                lambda: check_sip_presence(d, info))
        res.run("edge: presence dialogs with a stand-in gateway (TLS) both ways: its SUBSCRIBE, "
                "refresh and unsubscribe reach sip-presence and the NOTIFYs its Contact; a user's "
                "SUBSCRIBE reaches it, its NOTIFY (before its 200) and the user's refresh pass",
                lambda: check_presence_with_gateway(d, info))


def run_sipp(d, name, args, timeout):
    """Run SIPp (non-interactive) with a scenario from tests/testbed/sipp/, output in
    D/logs/NAME.log; returns the Popen."""
    logf = open(os.path.join(d, "logs", name + ".log"), "wb")
    try:
        return subprocess.Popen(
            ["sipp", "-sf", os.path.join(HERE, "sipp", args[0]), "-nostdin", "-m", "1",
             "-timeout", "%ds" % timeout, "-timeout_error", "-t", "u1", "-i", UA_ADDR,
             "-p", str(SIP_PORT)] + args[1:],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            cwd=os.path.join(d, "run"), preexec_fn=_no_core)
    finally:
        logf.close()


def check_sipp(d, info, res):
    """SIPp (the tests' SIP users) works against the Edge, with the scenarios shipped here."""
    if info["sip"]["users"]["transport"] != "udp" or info["sip"]["users"]["port"] != SIP_PORT:
        res.check(True, "sipp: skipped (testbed not on the default UDP %s:%d)" % (UA_ADDR, SIP_PORT))
        return

    def uas():
        p = run_sipp(d, "sipp-uas", ["uas-message.xml"], 15)
        try:
            time.sleep(0.5)  # let SIPp bind
            req = sip_request("MESSAGE", "sip:bob@contoso.test", "TLS", GW_ADDR, SIPS_PORT,
                              "sip:alice@gmail.test", "sip:bob@contoso.test", body="hello sipp")
            kind, data = edge_tls_exchange(info, "gateway", ssl.TLSVersion.TLSv1_3, req, timeout=10)
            rc = p.wait(15)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        first = data.split(b"\r\n", 1)[0].decode(errors="replace") if kind == "response" else data
        return (first.startswith("SIP/2.0 200") and rc == 0,
                "gateway got %r, sipp exit %s (see %s/logs/sipp-uas.log)" % (first, rc, d))

    res.run("sipp: uas-message.xml at %s:%d answers a MESSAGE relayed from the gateway" % (UA_ADDR, SIP_PORT),
            uas)

    def uac():
        srv = TlsSipServer(info, 15)
        srv.start()
        p = run_sipp(d, "sipp-uac", ["uac-message.xml", "-s", "alice", "%s:%d" % (EDGE_ADDR, SIP_PORT)], 15)
        try:
            rc = p.wait(20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        srv.join(5)
        line = sip_headers(srv.request)[0] if srv.request else srv.error
        return (rc == 0 and line == "MESSAGE sip:alice@gmail.test SIP/2.0",
                "gateway got %r, sipp exit %s (see %s/logs/sipp-uac.log)" % (line, rc, d))

    res.run("sipp: uac-message.xml sends a MESSAGE via the Edge to the gateway and gets 200", uac)


def check_xmpp_tools(d, info):
    me = [DEBIAN_PYTHON if os.path.exists(DEBIAN_PYTHON) else sys.executable, os.path.abspath(__file__)]
    users = [u["jid"] for u in info["xmpp"]["users"]]
    body = "  <a & \"b\" ]]> \u00fc \u65e5\u672c\n "
    recv = subprocess.Popen(me + ["xmpp-recv", "--dir", d, "--user", users[1], "--count", "2",
                                  "--count-kind", "message", "--count-kind", "chatstate",
                                  "--timeout", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = recv.stdout.readline().decode()
        if '"ready": true' not in first:
            return False, "xmpp-recv: %r" % first
        subprocess.run(me + ["xmpp-recv", "--dir", d, "--user", users[0], "--send", users[1],
                             "--send-state", "composing", "--body", body, "--body-state", "active",
                             "--count", "0", "--timeout", "1"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        out, _ = recv.communicate(timeout=20)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    got = [json.loads(x)["message"] for x in out.decode().splitlines() if '"message"' in x]
    seen = [(m["kind"], m["state"], m["body"]) for m in got]
    want = [("chatstate", "composing", ""), ("message", "active", body)]
    return seen == want, "got %s" % seen


def check_sip_tools(d, info, res):
    """sip-recv answers what sip-send and sip-session send through the Edge (a session both
    ways, with --send-after-invite), bodies exact."""
    if info["sip"]["users"]["transport"] != "udp" or info["sip"]["users"]["port"] != SIP_PORT:
        res.check(True, "sip tools: skipped (testbed not on the default UDP %s:%d)" % (UA_ADDR, SIP_PORT))
        return

    def tools():
        me = [DEBIAN_PYTHON if os.path.exists(DEBIAN_PYTHON) else sys.executable,
              os.path.abspath(__file__)]
        body = "<a & \"b\" 'c' ]]> \u00fc \u65e5\u672c >\n"
        recv = subprocess.Popen(me + ["sip-recv", "--dir", d, "--count", "5", "--timeout", "15",
                                      "--status-for", "carol=486", "--send-after-invite", body],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            first = recv.stdout.readline().decode()
            if '"ready": true' not in first:
                return False, "sip-recv: %r" % first
            send = json.loads(subprocess.run(
                me + ["sip-send", "--dir", d, "--to", "sip:carol@contoso.test", "--body", body],
                stdout=subprocess.PIPE, timeout=20).stdout.decode().splitlines()[-1])
            sess = json.loads(subprocess.run(
                me + ["sip-session", "--dir", d, "--to", "sip:bob@fabrikam.test", "--typing",
                      "--message", body, "--linger", "5", "--expect", "1"],
                stdout=subprocess.PIPE, timeout=30).stdout.decode().splitlines()[-1])
            out, _ = recv.communicate(timeout=20)
        finally:
            if recv.poll() is None:
                recv.kill()
                recv.wait()
        lines = [json.loads(x) for x in out.decode().splitlines() if x.strip()]
        got = [(x["request"]["method"], x["request"]["body"]) for x in lines if "request" in x]
        problems = []
        if send.get("code") != 486:
            problems.append("sip-send got %s" % send)
        if sess.get("invite", {}).get("code") != 200 or [x.get("code") for x in sess.get("sent", [])] != [200] * 3:
            problems.append("sip-session: %s" % sess)
        if [r.get("body") for r in sess.get("received", [])] != [body]:
            problems.append("sip-session received %s" % sess.get("received"))
        want = [("MESSAGE", body), ("INVITE", None), ("ACK", ""), ("INFO", TYPING_INFO),
                ("MESSAGE", body), ("BYE", "")]
        if sorted((m, b) for m, b in got if m != "INVITE") != sorted(w for w in want if w[0] != "INVITE") \
                or [m for m, _ in got].count("INVITE") != 1:
            problems.append("sip-recv got %s" % got)
        return not problems, "; ".join(problems)

    res.run("sip tools: sip-send and sip-session (INVITE, ACK, INFO, MESSAGE, BYE, and a MESSAGE "
            "back in the dialog) reach sip-recv through the Edge, UTF-8 bodies exact", tools)


class JsonLinesPeer:
    """A testbed peer command run as a child process: JSON commands to its stdin, its
    stdout's JSON lines read by a thread; stderr to D/logs/NAME.err."""

    def __init__(self, d, name, argv):
        import queue

        me = [DEBIAN_PYTHON if os.path.exists(DEBIAN_PYTHON) else sys.executable,
              os.path.abspath(__file__)]
        self.name = name
        self.err = open(os.path.join(d, "logs", name + ".err"), "wb")
        self.p = subprocess.Popen(me + argv + ["--dir", d], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.err)
        self.q = queue.Queue()
        self.seen = []
        self.backlog = []

        def reader():
            for raw in self.p.stdout:
                try:
                    self.q.put(json.loads(raw.decode("utf-8")))
                except ValueError:
                    self.q.put({"unparsed": raw.decode("utf-8", "replace")})
            self.q.put(None)

        threading.Thread(target=reader, daemon=True).start()

    def send(self, obj):
        self.p.stdin.write((json.dumps(obj) + "\n").encode())
        self.p.stdin.flush()

    def expect(self, pred, what, timeout=8.0):
        """The first line, in order, for which pred(line) holds; lines that do not match stay
        for later calls (so order between independent events does not matter)."""
        import queue

        def match(line):
            try:
                return bool(pred(line))
            except (KeyError, TypeError, AttributeError):
                return False

        for i, line in enumerate(self.backlog):
            if match(line):
                del self.backlog[i]
                return line
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.q.get(timeout=left) if left > 0 else None
                if line is None and left > 0:
                    self.q.put(None)  # end of output: later calls see it too
            except queue.Empty:
                line = None
            if line is None:
                raise TimeoutError("%s: no %s; unmatched: %s" % (self.name, what, self.backlog[-6:]))
            self.seen.append(line)
            if match(line):
                return line
            self.backlog.append(line)

    def absent(self, pred, timeout):
        """True when no line matching pred arrives (or is waiting) within timeout."""
        try:
            self.expect(pred, "", timeout)
            return False
        except TimeoutError:
            return True

    def close(self):
        try:
            self.send({"cmd": "quit"})
            self.p.stdin.close()
            self.p.wait(5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.err.close()


def check_sip_presence(d, info):
    """Two sip-presence users through the Edge: carol (free port) SUBSCRIBEs to bob (5060),
    bob NOTIFYs, publishes, answers a refresh, refuses one with 481, and a new subscription
    ends with Expires 0 and NOTIFY terminated."""
    bob = JsonLinesPeer(d, "sip-presence-bob", [
        "sip-presence", "--user", "sip:bob@contoso.test", "--timeout", "40", "--note", "Here"])
    carol = JsonLinesPeer(d, "sip-presence-carol", [
        "sip-presence", "--user", "sip:carol@contoso.test", "--port", "0", "--timeout", "40"])
    problems = []
    try:
        bob.expect(lambda x: x["ready"] is True, "ready")
        carol.expect(lambda x: x["ready"] is True, "ready")
        to = "sip:bob@contoso.test"

        def response(kind, code):
            r = carol.expect(lambda x: x["response"]["kind"] == kind, kind + " response")["response"]
            if r["code"] != code:
                problems.append("%s got %s %s" % (kind, r["code"], r["reason"]))
            return r

        def notify(want):
            n = carol.expect(lambda x: "notify" in x, "NOTIFY")["notify"]
            got = {k: n.get(k) for k in want}
            if got != want:
                problems.append("NOTIFY %s, wanted %s" % (got, want))
            return n

        carol.send({"cmd": "subscribe", "to": to, "expires": 600})
        sub = bob.expect(lambda x: x["request"]["method"] == "SUBSCRIBE", "SUBSCRIBE")["request"]
        if sub["source"] != "%s:%d" % (EDGE_ADDR, SIP_PORT) or not sub["record_route"]:
            problems.append("SUBSCRIBE came from %s with Record-Route %s"
                            % (sub["source"], sub["record_route"]))
        r = response("subscribe", 200)
        if r.get("expires") != "600":
            problems.append("200 to SUBSCRIBE has Expires %r" % r.get("expires"))
        n = notify({"state": "active", "basic": "open", "note": "Here", "activities": [],
                    "entity": to})
        req = carol.expect(lambda x: x["request"]["method"] == "NOTIFY", "NOTIFY request")["request"]
        if req.get("source") != "%s:%d" % (EDGE_ADDR, SIP_PORT):
            problems.append("NOTIFY came from %s, not through the Edge" % req.get("source"))
        if not 590 <= (n.get("expires") or 0) <= 600:
            problems.append("NOTIFY expires %r" % n.get("expires"))
        bob.send({"cmd": "publish", "basic": "closed", "note": "Gone <home> & \u00fc",
                  "activity": "away"})
        notify({"state": "active", "basic": "closed", "note": "Gone <home> & \u00fc",
                "activities": ["away"]})
        carol.send({"cmd": "refresh", "to": to, "expires": 300})
        response("refresh", 200)
        notify({"state": "active", "basic": "closed"})
        bob.send({"cmd": "refresh-status", "code": 481})
        bob.expect(lambda x: x["ack"]["cmd"] == "refresh-status", "ack")
        carol.send({"cmd": "refresh", "to": to})
        response("refresh", 481)
        carol.send({"cmd": "subscribe", "to": to, "expires": 60})
        response("subscribe", 200)
        notify({"state": "active", "basic": "closed"})
        carol.send({"cmd": "unsubscribe", "to": to})
        response("unsubscribe", 200)
        notify({"state": "terminated", "reason": "timeout", "body": ""})
        bob.send({"cmd": "watchers"})
        w = bob.expect(lambda x: x["ack"]["cmd"] == "watchers", "watchers ack")["ack"]["watchers"]
        if w:
            problems.append("watchers left at bob: %s" % w)
    finally:
        bob.close()
        carol.close()
    return not problems, "; ".join(problems)


def check_xmpp_presence(d, info):
    """alice subscribes to bob (xmpp-presence, both available): bob sees the request and
    nothing answers it for him; bob approves; alice sees subscribed, the roster push and
    bob's presence, then his away; a new alice session finds bob in her stored roster."""
    a, b = "alice@gmail.test", "bob@gmail.test"
    problems = []
    alice = JsonLinesPeer(d, "xmpp-presence-alice", ["xmpp-presence", "--user", a, "--available"])
    bob = JsonLinesPeer(d, "xmpp-presence-bob", ["xmpp-presence", "--user", b, "--available",
                                                 "--status", "Hello"])
    try:
        alice.expect(lambda x: x["ready"] is True, "ready", 20)
        bob.expect(lambda x: x["ready"] is True, "ready", 20)
        # Start from empty rosters (the testbed may have been used before).
        alice.send({"cmd": "remove", "jid": b})
        bob.send({"cmd": "remove", "jid": a})
        alice.expect(lambda x: x["ack"]["cmd"] == "remove", "remove ack")
        bob.expect(lambda x: x["ack"]["cmd"] == "remove", "remove ack")
        alice.send({"cmd": "subscribe", "to": b})
        req = bob.expect(lambda x: x["presence"]["type"] == "subscribe", "subscribe")["presence"]
        if req["from"] != a:
            problems.append("subscribe from %r" % req["from"])
        alice.expect(lambda x: x["roster"]["jid"] == b and x["roster"]["ask"] == "subscribe",
                     "roster push ask=subscribe")
        if not alice.absent(lambda x: x["presence"]["type"] == "subscribed", 0.5):
            problems.append("subscribed before bob approved")
        bob.send({"cmd": "approve", "to": a})
        alice.expect(lambda x: x["presence"]["type"] == "subscribed" and x["presence"]["from"] == b,
                     "subscribed")
        alice.expect(lambda x: x["roster"]["jid"] == b and x["roster"]["subscription"] == "to",
                     "roster push subscription=to")
        p = alice.expect(lambda x: x["presence"]["from"].startswith(b + "/")
                         and x["presence"]["type"] is None, "bob's presence")["presence"]
        if p["status"] != "Hello":
            problems.append("bob's presence %s" % p)
        bob.send({"cmd": "presence", "show": "away", "status": "Lunch"})
        p = alice.expect(lambda x: x["presence"]["from"].startswith(b + "/")
                         and x["presence"]["show"] == "away", "bob away")["presence"]
        if p["status"] != "Lunch" or p["type"] is not None:
            problems.append("bob away: %s" % p)
    finally:
        alice.close()
        bob.close()
    again = JsonLinesPeer(d, "xmpp-presence-alice2", ["xmpp-presence", "--user", a])
    try:
        again.expect(lambda x: x["ready"] is True, "ready", 20)
        again.send({"cmd": "roster"})
        items = again.expect(lambda x: x["ack"]["cmd"] == "roster", "roster ack")["ack"]["items"]
        if [(i["jid"], i["subscription"]) for i in items] != [(b, "to")]:
            problems.append("alice's stored roster: %s" % items)
        again.send({"cmd": "remove", "jid": b})
        again.expect(lambda x: x["ack"]["cmd"] == "remove", "remove ack")
    finally:
        again.close()
    return not problems, "; ".join(problems)


class StandInGateway:
    """The gateway's SIP side for presence dialogs: a TLS listener on GW_ADDR:5061 (any number
    of connections from the Edge) and one TLS connection of its own to the Edge; every SIP
    message from either goes to one inbox, taken with wait() (non-matching ones are kept)."""

    CONTACT = "<sip:alice@%s:%d;transport=tls>" % (GW_NAME, SIPS_PORT)

    def __init__(self, info):
        import queue

        self.inbox = queue.Queue()
        self.backlog = []
        self.tags = {}
        self.closed = False
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(info["pki"]["gateway"]["cert"], info["pki"]["gateway"]["key"])
        self.ctx.load_verify_locations(info["pki"]["ca"]["cert"])
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((GW_ADDR, SIPS_PORT))
        self.listener.listen(4)
        self.listener.settimeout(0.2)
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.settimeout(5)
        raw.bind((GW_ADDR, 0))
        raw.connect((EDGE_ADDR, SIPS_PORT))
        self.out = tls_client_ctx(info, "gateway", ssl.TLSVersion.TLSv1_3).wrap_socket(
            raw, server_hostname=EDGE_NAME)
        self.out.settimeout(None)
        self.conns.append(self.out)
        threading.Thread(target=self._read, args=(self.out, "own"), daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, peer = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                conn.settimeout(5)
                s = self.ctx.wrap_socket(conn, server_side=True)
                s.settimeout(None)
            except (ssl.SSLError, OSError):
                conn.close()
                continue
            self.conns.append(s)
            threading.Thread(target=self._read, args=(s, "from %s:%d" % peer), daemon=True).start()

    def _read(self, s, name):
        buf = b""
        while True:
            try:
                data = s.recv(65536)
            except OSError:
                return
            if not data:
                return
            msgs, buf = stream_frames(buf + data)
            for m in msgs:
                self.inbox.put((SipMsg(m), s, name))

    def wait(self, pred, what, timeout=8.0):
        import queue

        for i, item in enumerate(self.backlog):
            if pred(item[0]):
                del self.backlog[i]
                return item
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError("gateway: no %s; kept %s" % (what, [m.first for m, _, _ in self.backlog]))
            if pred(item[0]):
                return item
            self.backlog.append(item)

    def answer(self, req, conn, code=200, extra=()):
        tag = self.tags.setdefault(req.get("call-id"), secrets.token_hex(4))
        conn.sendall(build_sip_response(req, code, to_tag=tag, extra=list(extra)))

    def request(self, method, ruri, from_hdr, to_hdr, call_id, cseq, extra=(), body=b"", ctype=None):
        via = "SIP/2.0/TLS %s:%d;branch=z9hG4bK-gw%s" % (GW_ADDR, SIPS_PORT, secrets.token_hex(6))
        self.out.sendall(build_sip_request(method, ruri, via, from_hdr, to_hdr, call_id, cseq,
                                           list(extra), body, ctype))
        resp, _, _ = self.wait(lambda m: not m.is_request and m.code >= 200
                               and m.get("call-id") == call_id and m.cseq() == (cseq, method),
                               "final to %s %d" % (method, cseq))
        return resp

    def close(self):
        self.closed = True
        for s in [self.listener] + self.conns:
            try:
                s.close()
            except OSError:
                pass


def check_presence_with_gateway(d, info):
    """Presence dialogs between a stand-in gateway (TLS) and sip-presence users, through the
    Edge, both ways, with refreshes in the dialog."""
    problems = []
    gw = StandInGateway(info)
    bob = JsonLinesPeer(d, "sip-presence-gw-bob", ["sip-presence", "--timeout", "40"])
    carol = JsonLinesPeer(d, "sip-presence-gw-carol", [
        "sip-presence", "--user", "sip:carol@contoso.test", "--port", "0", "--timeout", "40"])
    try:
        bob.expect(lambda x: x["ready"] is True, "ready")
        carol.expect(lambda x: x["ready"] is True, "ready")
        # The gateway watches bob: SUBSCRIBE, refresh and unsubscribe from the gateway,
        # bob's NOTIFYs back to the gateway's Contact.
        cid = secrets.token_hex(8) + "@gw"
        me = "<sip:alice@gmail.test>;tag=%s" % secrets.token_hex(4)
        head = ["Contact: " + gw.CONTACT, "Event: presence", "Accept: " + PIDF_TYPE]
        ok = gw.request("SUBSCRIBE", "sip:bob@contoso.test", me, "<sip:bob@contoso.test>", cid, 1,
                        head + ["Expires: 600"])
        if ok.code != 200:
            raise AssertionError("gateway's SUBSCRIBE got %s" % ok.first)
        routes = list(reversed(ok.all("record-route")))
        remote, to_hdr = uri_of(ok.get("contact")), ok.get("to")
        for n, (expires, state) in enumerate([(None, "active;expires=600"),
                                              (300, "active;expires=300"),
                                              (0, "terminated;reason=timeout")]):
            if expires is not None:
                r = gw.request("SUBSCRIBE", remote, me, to_hdr, cid, n + 1,
                               ["Route: " + x for x in routes] + head + ["Expires: %d" % expires])
                if r.code != 200:
                    problems.append("gateway's in-dialog SUBSCRIBE (Expires %d) got %s" % (expires, r.first))
            notify, conn, _ = gw.wait(lambda m: m.method == "NOTIFY" and m.get("call-id") == cid,
                                      "NOTIFY %d" % (n + 1))
            gw.answer(notify, conn)
            if (notify.ruri != uri_of(gw.CONTACT) or notify.all("route")
                    or notify.get("subscription-state") != state):
                problems.append("NOTIFY at the gateway: %s, Route %s, %s"
                                % (notify.first, notify.all("route"), notify.get("subscription-state")))
        # carol watches alice@gmail.test: the gateway NOTIFYs before its 200 (RFC 6665
        # allows it); carol's refresh reaches the gateway's Contact.
        carol.send({"cmd": "subscribe", "to": "sip:alice@gmail.test", "expires": 600})
        sub, conn, _ = gw.wait(lambda m: m.method == "SUBSCRIBE" and m.ruri == "sip:alice@gmail.test",
                               "carol's SUBSCRIBE")
        rr = sub.all("record-route")
        tag = gw.tags.setdefault(sub.get("call-id"), secrets.token_hex(4))
        body = pidf_document("sip:alice@gmail.test", "open", "From XMPP").encode()
        r = gw.request("NOTIFY", uri_of(sub.get("contact")), "%s;tag=%s" % (sub.get("to"), tag),
                       sub.get("from"), sub.get("call-id"), 1,
                       ["Route: " + x for x in rr] + ["Contact: " + gw.CONTACT, "Event: presence",
                                                      "Subscription-State: active;expires=600"],
                       body, PIDF_TYPE)
        gw.answer(sub, conn, 200, ["Contact: " + gw.CONTACT, "Expires: 600"]
                  + ["Record-Route: " + x for x in rr])
        n = carol.expect(lambda x: "notify" in x, "NOTIFY")["notify"]
        if r.code != 200 or (n["basic"], n["note"], n["state"]) != ("open", "From XMPP", "active"):
            problems.append("gateway's NOTIFY got %s, carol saw %s" % (r.first, n))
        carol.expect(lambda x: x["response"]["kind"] == "subscribe", "200 to SUBSCRIBE")
        carol.send({"cmd": "refresh", "to": "sip:alice@gmail.test", "expires": 300})
        ref, conn, _ = gw.wait(lambda m: m.method == "SUBSCRIBE" and m.get("call-id") == sub.get("call-id"),
                               "carol's refresh")
        gw.answer(ref, conn, 200, ["Contact: " + gw.CONTACT, "Expires: 300"])
        if ref.ruri != uri_of(gw.CONTACT) or ref.all("route") or ref.get("expires") != "300":
            problems.append("refresh at the gateway: %s, Route %s" % (ref.first, ref.all("route")))
        r = carol.expect(lambda x: x["response"]["kind"] == "refresh", "200 to refresh")["response"]
        if r["code"] != 200:
            problems.append("carol's refresh got %s" % r["code"])
    finally:
        bob.close()
        carol.close()
        gw.close()
    return not problems, "; ".join(problems)


def _live_testbed(d):
    path = os.path.join(d, "testbed.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        info = json.load(f)
    if all(alive(s["pid"]) for s in info["services"].values()):
        return info
    return None


def _terminate(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def cmd_selftest(args):
    # SIGTERM/SIGHUP (e.g. a CI timeout) unwind like Ctrl-C, so `down` still runs.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    t0 = time.monotonic()
    res = Results()
    own_dir = args.dir is None
    d = os.path.abspath(args.dir) if args.dir else tempfile.mkdtemp(prefix="xsgw-testbed-")
    info = None if own_dir else _live_testbed(d)
    bring_up = info is None
    interrupted = False
    all_pgids = []
    try:
        if bring_up:
            up_args = build_parser().parse_args(["up", "--dir", d])
            try:
                with open(os.devnull, "w") as devnull:
                    old = sys.stdout
                    sys.stdout = devnull
                    try:
                        cmd_up(up_args)
                    finally:
                        sys.stdout = old
                with open(os.path.join(d, "testbed.json")) as f:
                    info = json.load(f)
                res.check(True, "up: dnsmasq, prosody, kamailio started in %s (%.1fs)"
                          % (d, info["startup_seconds"]))
            except Exception as e:
                res.check(False, "up", "%s: %s" % (type(e).__name__, e))
        else:
            res.check(True, "using the testbed already up in " + d)
        if info is not None:
            all_pgids = [s["pid"] for s in info["services"].values()]
            res.run("listeners: every testbed socket is on 127.0.10.0/24", lambda: check_listeners(info))
            check_dns(info, res)
            try:
                check_xmpp(d, info, res)
            except Exception as e:
                res.check(False, "xmpp checks", "%s: %s" % (type(e).__name__, e))
            res.run("xmpp tools: xmpp-recv reports a chat state (kind chatstate) and a body with "
                    "its state exactly as xmpp-recv --send-state/--body-state sent them",
                    lambda: check_xmpp_tools(d, info))
            res.run("xmpp-presence: alice's subscription request reaches bob unanswered until "
                    "he approves; alice gets subscribed, the roster push and bob's presence and "
                    "away; her roster (bob, to) is still stored for a new session",
                    lambda: check_xmpp_presence(d, info))
            try:
                check_prosody_s2s_in(info, res)
            except Exception as e:
                res.check(False, "xmpp s2s-in checks", "%s: %s" % (type(e).__name__, e))
            try:
                check_edge(d, info, res)
            except Exception as e:
                res.check(False, "edge checks", "%s: %s" % (type(e).__name__, e))
            res.run("services still running after the checks",
                    lambda: (all(alive(p) for p in all_pgids), str(
                        {n: alive(s["pid"]) for n, s in info["services"].items()})))
    except KeyboardInterrupt as e:
        interrupted = True
        res.check(False, "selftest interrupted", str(e))
    finally:
        if bring_up:
            ok = do_down(d)
            left = [p for g in all_pgids for p in group_members(g)]
            res.check(ok and not left, "down: every service stopped, no process left",
                      "left: %s" % left)
    if own_dir and res.failed == 0:
        shutil.rmtree(d, ignore_errors=True)
    elif res.failed:
        print("# logs kept in %s/logs" % d)
    print("# selftest took %.1fs" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (res.passed, res.failed))
    if interrupted:
        return 130
    return 0 if res.failed == 0 else 1


# ---------------------------------------------------------------------------
# SIP user agents of the internal users (sip-send, sip-recv, sip-session)
# ---------------------------------------------------------------------------
# A small RFC 3261 user agent on 127.0.10.40: enough transaction layer for UDP (requests
# retransmitted until a final response, retransmitted requests answered with the same
# response, 2xx to INVITE retransmitted until the ACK) and dialogs with a route set.

SIP_COMPACT = {"f": "from", "t": "to", "i": "call-id", "v": "via", "m": "contact",
               "l": "content-length", "c": "content-type", "s": "subject", "k": "supported",
               "o": "event", "r": "refer-to", "e": "content-encoding"}
IM_ACCEPT_TYPES = "text/plain application/im-iscomposing+xml"
TYPING_INFO = '<?xml version="1.0"?><KeyboardActivity><status status="type"/></KeyboardActivity>'
REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 202: "Accepted", 400: "Bad Request",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           415: "Unsupported Media Type", 480: "Temporarily Unavailable",
           481: "Call/Transaction Does Not Exist", 486: "Busy Here", 488: "Not Acceptable Here",
           489: "Bad Event", 500: "Server Internal Error", 501: "Not Implemented",
           503: "Service Unavailable", 603: "Decline"}


def split_commas(value):
    """Splits a header value at commas outside <...> and quotes (Via, Route, Record-Route)."""
    out, cur, depth, quoted = [], "", 0, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def uri_of(value):
    """The URI in a name-addr (<...>) or addr-spec header value."""
    if value is None:
        return None
    m = re.search(r"<([^>]*)>", value)
    if m:
        return m.group(1)
    return value.split(";", 1)[0].strip()


def uri_user(uri):
    m = re.match(r"^sips?:([^@;>]+)@", uri or "")
    return m.group(1) if m else ""


def uri_hostport(uri):
    """(host, port, transport) of a SIP URI."""
    m = re.match(r"^sips?:(?:[^@]*@)?(\[[^\]]+\]|[^:;>?]+)(?::(\d+))?([^?>]*)", uri or "")
    if not m:
        return None
    t = re.search(r";transport=(\w+)", m.group(3) or "", re.I)
    return m.group(1), int(m.group(2) or 5060), (t.group(1).lower() if t else "udp")


class SipMsg:
    def __init__(self, raw):
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.raw = raw
        self.first = lines[0]
        self.hdrs = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and self.hdrs:
                k, v = self.hdrs[-1]
                self.hdrs[-1] = (k, v + " " + line.strip())
            elif ":" in line:
                k, v = line.split(":", 1)
                self.hdrs.append((k.strip(), v.strip()))
        cl = self.get("content-length")
        self.body = body[:int(cl)] if cl and cl.isdigit() else body
        parts = self.first.split(" ", 2)
        self.is_request = not self.first.startswith("SIP/")
        if self.is_request:
            self.method, self.ruri = parts[0], parts[1] if len(parts) > 1 else ""
            self.code, self.reason = None, None
        else:
            self.method = None
            self.code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self.reason = parts[2] if len(parts) > 2 else ""
            self.ruri = None

    def all(self, name):
        """Every value of a header (compact forms too; comma lists split for list headers)."""
        name = name.lower()
        out = []
        for k, v in self.hdrs:
            k = k.lower()
            if SIP_COMPACT.get(k, k) == name:
                out.extend(split_commas(v) if name in ("via", "route", "record-route") else [v])
        return out

    def get(self, name):
        vals = self.all(name)
        return vals[0] if vals else None

    def branch(self):
        m = re.search(r";\s*branch=([^;,\s]+)", self.get("via") or "")
        return m.group(1) if m else ""

    def cseq(self):
        m = re.match(r"\s*(\d+)\s+(\S+)", self.get("cseq") or "")
        return (int(m.group(1)), m.group(2).upper()) if m else (0, "")

    def text(self):
        return self.body.decode("utf-8", "replace")


def sip_tag(value):
    m = re.search(r";\s*tag=([^;>\s]+)", value or "")
    return m.group(1) if m else None


def build_sip_request(method, ruri, via, from_hdr, to_hdr, call_id, cseq, extra=(),
                      body=b"", content_type=None):
    lines = ["%s %s SIP/2.0" % (method, ruri), "Via: " + via, "Max-Forwards: 70",
             "From: " + from_hdr, "To: " + to_hdr, "Call-ID: " + call_id,
             "CSeq: %d %s" % (cseq, method)] + list(extra)
    if body and content_type:
        lines.append("Content-Type: " + content_type)
    lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def build_sip_response(req, code, reason=None, to_tag=None, extra=(), body=b"",
                       content_type=None):
    out = ["SIP/2.0 %d %s" % (code, reason or REASONS.get(code, "Response"))]
    for v in req.all("via"):
        out.append("Via: " + v)
    out.append("From: " + (req.get("from") or ""))
    to = req.get("to") or ""
    if code > 100 and sip_tag(to) is None:
        to += ";tag=" + (to_tag or secrets.token_hex(4))
    out.append("To: " + to)
    out.append("Call-ID: " + (req.get("call-id") or ""))
    out.append("CSeq: " + (req.get("cseq") or ""))
    if 100 < code < 300 and req.method == "INVITE":
        out.extend("Record-Route: " + r for r in req.all("record-route"))
    out.extend(extra)
    if body and content_type:
        out.append("Content-Type: " + content_type)
    out.append("Content-Length: %d" % len(body))
    return ("\r\n".join(out) + "\r\n\r\n").encode() + body


def stream_frames(buf):
    """Complete SIP messages at the start of a stream buffer: (messages, rest)."""
    msgs = []
    while True:
        buf = buf.lstrip(b"\r\n")  # keep-alive CRLFs
        if b"\r\n\r\n" not in buf:
            return msgs, buf
        head, rest = buf.split(b"\r\n\r\n", 1)
        m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
        need = int(m.group(1)) if m else 0
        if len(rest) < need:
            return msgs, buf
        msgs.append(head + b"\r\n\r\n" + rest[:need])
        buf = rest[need:]


class SipUA:
    """One SIP endpoint on UA_ADDR:port (UDP, and TCP when asked): sends requests as client
    transactions, answers requests through `on_request(msg, target) -> (code, reason, extra,
    body, content_type) | None` and reports responses, and keeps the RFC 3261 timers."""

    def __init__(self, port=0, tcp=False, on_request=None):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((UA_ADDR, port))
        self.port = self.udp.getsockname()[1]
        self.listener = None
        if tcp:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((UA_ADDR, self.port))
            self.listener.listen(8)
        self.conns = {}  # socket -> receive buffer
        self.on_request = on_request
        self.server_tx = {}  # (branch, method) -> response bytes already sent
        self.client_tx = {}  # branch -> dict
        self.pending_2xx = {}  # call-id -> dict: a 2xx to INVITE waiting for its ACK
        self.to_tags = {}  # call-id -> our To tag (one per dialog)
        self.closed = False

    def close(self):
        for s in [self.udp, self.listener] + list(self.conns):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    def via(self, transport="udp"):
        return "SIP/2.0/%s %s:%d;branch=z9hG4bK-tb%s;rport" % (
            transport.upper(), UA_ADDR, self.port, secrets.token_hex(8))

    def target_for(self, uri):
        """Where to send a request whose next hop is `uri` (a Route or the Edge)."""
        hp = uri_hostport(uri)
        if hp is None or hp[2] == "tls":
            return ("udp", (EDGE_ADDR, SIP_PORT))
        host, port, transport = hp
        if transport == "tcp":
            for s in self.conns:
                try:
                    if s.getpeername() == (host, port):
                        return ("tcp", s)
                except OSError:
                    pass
            s = socket.create_connection((host, port), timeout=3)
            self.conns[s] = b""
            return ("tcp", s)
        return ("udp", (host, port))

    def send(self, data, target):
        kind, where = target
        if kind == "udp":
            self.udp.sendto(data, where)
        else:
            where.sendall(data)

    # -- client transactions --------------------------------------------------
    def request(self, data, target, on_final_retransmit=None):
        """Sends a request (bytes) as a client transaction; returns its branch."""
        msg = SipMsg(data)
        branch = msg.branch()
        now = time.monotonic()
        self.client_tx[branch] = {
            "data": data, "target": target, "invite": msg.method == "INVITE",
            "interval": 0.5, "next": now + 0.5, "provisional": None, "final": None,
            "on_final_retransmit": on_final_retransmit, "method": msg.method}
        self.send(data, target)
        return branch

    def wait_final(self, branch, timeout):
        """Runs the endpoint until the transaction's final response (SipMsg) or None."""
        deadline = time.monotonic() + timeout
        tx = self.client_tx[branch]
        while tx["final"] is None and time.monotonic() < deadline:
            self.step(min(0.1, max(0.0, deadline - time.monotonic())))
        return tx["final"]

    # -- the loop -------------------------------------------------------------
    def step(self, timeout):
        import select

        socks = [self.udp] + list(self.conns) + ([self.listener] if self.listener else [])
        try:
            ready, _, _ = select.select(socks, [], [], max(0.0, timeout))
        except (OSError, ValueError):
            ready = []
        for s in ready:
            if s is self.udp:
                try:
                    data, src = self.udp.recvfrom(65535)
                except OSError:
                    continue
                if data.strip(b"\r\n"):
                    self.handle(data, ("udp", src))
            elif s is self.listener:
                conn, _ = self.listener.accept()
                self.conns[conn] = b""
            else:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.conns.pop(s, None)
                    s.close()
                    continue
                msgs, self.conns[s] = stream_frames(self.conns[s] + data)
                for m in msgs:
                    self.handle(m, ("tcp", s))
        self.timers()

    def timers(self):
        now = time.monotonic()
        for tx in self.client_tx.values():
            if tx["target"][0] != "udp" or tx["final"] is not None or now < tx["next"]:
                continue
            if tx["invite"] and tx["provisional"] is not None:
                continue
            self.send(tx["data"], tx["target"])
            tx["interval"] = min(tx["interval"] * 2, 4.0 if not tx["invite"] else 16.0)
            tx["next"] = now + tx["interval"]
        for cid, p in list(self.pending_2xx.items()):
            if now >= p["give_up"]:
                del self.pending_2xx[cid]
            elif now >= p["next"] and p["target"][0] == "udp":
                self.send(p["data"], p["target"])
                p["interval"] = min(p["interval"] * 2, 4.0)
                p["next"] = now + p["interval"]

    def handle(self, data, target):
        try:
            msg = SipMsg(data)
        except Exception:
            return
        if not msg.is_request:
            tx = self.client_tx.get(msg.branch())
            if tx is None:
                return
            if msg.code < 200:
                tx["provisional"] = msg
            elif tx["final"] is None:
                tx["final"] = msg
            elif tx["on_final_retransmit"] is not None:
                tx["on_final_retransmit"](msg)
            return
        key = (msg.branch(), msg.method)
        if msg.method == "ACK":
            self.pending_2xx.pop(msg.get("call-id"), None)
            if key in self.server_tx:
                return  # retransmitted ACK
            self.server_tx[key] = b""
            if self.on_request:
                self.on_request(msg, target)
            return
        if key in self.server_tx:
            self.send(self.server_tx[key], target)  # a retransmission: the same answer
            return
        answer = self.on_request(msg, target) if self.on_request else (501, None, [], b"", None)
        code, reason, extra, body, ctype = answer
        cid = msg.get("call-id") or ""
        tag = self.to_tags.setdefault(cid, secrets.token_hex(4))
        resp = build_sip_response(msg, code, reason, to_tag=tag, extra=extra, body=body,
                                  content_type=ctype)
        self.server_tx[key] = resp
        self.send(resp, target)
        if msg.method == "INVITE" and 200 <= code < 300:
            now = time.monotonic()
            self.pending_2xx[cid] = {"data": resp, "target": target, "interval": 0.5,
                                     "next": now + 0.5, "give_up": now + 32}


def emit_json(obj):
    print(json.dumps(obj, ensure_ascii=False))
    sys.stdout.flush()


def response_summary(msg):
    if msg is None:
        return {"code": None, "reason": "timeout", "warning": None}
    return {"code": msg.code, "reason": msg.reason, "warning": msg.get("warning"),
            "final": msg.first}


def request_summary(msg, target):
    """What sip-recv and sip-session report of a request they received."""
    src = target[1] if target[0] == "udp" else target[1].getpeername()
    body = msg.body
    try:
        text, valid = body.decode("utf-8"), True
    except UnicodeDecodeError:
        text, valid = body.decode("utf-8", "replace"), False
    out = {
        "method": msg.method, "request_uri": msg.ruri,
        "from": uri_of(msg.get("from")), "to": uri_of(msg.get("to")),
        "from_header": msg.get("from"), "to_header": msg.get("to"),
        "call_id": msg.get("call-id"), "cseq": msg.get("cseq"),
        "content_type": msg.get("content-type"), "body": text,
        "subject": msg.get("subject"), "ms_conversation_id": msg.get("ms-conversation-id"),
        "contact": msg.get("contact"),
        "transport": target[0], "source": "%s:%d" % (src[0], src[1]),
        "headers": [[k, v] for k, v in msg.hdrs],
    }
    if not valid:
        out["body_hex"] = body.hex()
    return out


def sip_body_arg(args):
    if getattr(args, "body_file", None):
        with open(args.body_file, "rb") as f:
            return f.read()
    return args.body.encode("utf-8", "surrogateescape")


def sdp_offer_message(port):
    return ("v=0\r\no=- 0 0 IN IP4 %s\r\ns=session\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=message %d sip null\r\na=accept-types:%s\r\n"
            % (UA_ADDR, UA_ADDR, port, IM_ACCEPT_TYPES)).encode()


# ---------------------------------------------------------------------------
# sip-send: MESSAGEs from an internal SIP user, through the Edge
# ---------------------------------------------------------------------------
def cmd_sip_send(args):
    """Sends --count MESSAGEs (one Call-ID, CSeq 1..N, each after the previous one's final)
    over UDP from UA_ADDR to the Edge's internal port; prints one JSON line."""
    body = sip_body_arg(args)
    result = {"to": args.to}
    finals = []
    ua = None
    try:
        ua = SipUA(args.port)
        call_id = secrets.token_hex(8) + "@testbed"
        from_hdr = "<%s>;tag=%s" % (args.sender, secrets.token_hex(4))
        for n in range(1, args.count + 1):
            extra = list(args.header)
            req = build_sip_request("MESSAGE", args.to, ua.via(), from_hdr, "<%s>" % args.to,
                                    call_id, n, extra, body, args.content_type)
            branch = ua.request(req, ("udp", (EDGE_ADDR, SIP_PORT)))
            final = ua.wait_final(branch, args.timeout)
            finals.append(response_summary(final))
            if final is None:
                result["error"] = "timeout: no final response within %.1fs" % args.timeout
                break
    except OSError as e:
        result["error"] = "%s" % e
    finally:
        if ua is not None:
            ua.close()
    result["finals"] = finals
    if finals and finals[-1]["code"] is not None:
        last = finals[-1]
        result.update({"final": last["final"], "code": last["code"], "reason": last["reason"],
                       "warning": last["warning"]})
    print(json.dumps(result, ensure_ascii=False))
    return 0


# ---------------------------------------------------------------------------
# sip-recv: the SIP user agents at 127.0.10.40 that the Edge delivers to
# ---------------------------------------------------------------------------
def cmd_sip_recv(args):
    """Binds UA_ADDR:--port (UDP; TCP too with --tcp), prints {"ready": true}, then one JSON
    line {"request": {...}} per new request (retransmissions are answered again, not
    reported); after --count requests (ACK not counted) or --timeout seconds it prints
    {"done": true, "received": K}."""
    per_user = {}
    for item in args.status_for:
        user, _, code = item.partition("=")
        per_user[user] = int(code)
    state = {"received": 0, "invites": []}

    def code_for(msg, default):
        return per_user.get(uri_user(msg.ruri), default)

    def on_request(msg, target):
        m = msg.method
        ctype = None
        body = b""
        extra = []
        if m == "ACK":
            emit_json({"request": request_summary(msg, target)})
            return None
        if m in ("MESSAGE", "INFO", "NOTIFY"):
            code = code_for(msg, args.status)
        elif m == "INVITE":
            code = code_for(msg, args.invite_status)
            sdp = msg.text()
            if code == 200 and not re.search(r"(?m)^m=message \d+ \S*sip\b", sdp):
                code = 488
            if code == 200:
                user = uri_user(msg.ruri) or "user"
                to_uri = uri_of(msg.get("to")) or ""
                domain = to_uri.split("@", 1)[1] if "@" in to_uri else "contoso.test"
                body = ("v=0\r\no=- 0 0 IN IP4 %s\r\ns=session\r\nc=IN IP4 %s\r\nt=0 0\r\n"
                        "m=message %d sip sip:%s@%s\r\na=accept-types:%s\r\n"
                        % (UA_ADDR, UA_ADDR, ua.port, user, domain, IM_ACCEPT_TYPES)).encode()
                ctype = "application/sdp"
                extra.append("Contact: <sip:%s@%s:%d%s>" % (
                    user, UA_ADDR, ua.port, ";transport=tcp" if target[0] == "tcp" else ""))
                state["invites"].append((msg, target, time.monotonic()))
        elif m in ("OPTIONS", "BYE", "CANCEL"):
            code = 200
        else:
            code = args.other_status
        state["received"] += 1
        summary = request_summary(msg, target)
        summary["answered"] = code
        emit_json({"request": summary})
        return code, None, extra, body, ctype

    ua = SipUA(args.port, tcp=args.tcp, on_request=on_request)
    callee_sends = (args.send_after_invite is not None or args.typing_after_invite
                    or args.bye_after_invite)
    emit_json({"ready": True, "port": ua.port, "tcp": bool(args.tcp)})
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            owed = callee_sends and state["invites"]
            if args.count and state["received"] >= args.count and not owed:
                break
            ua.step(0.05)
            if callee_sends and state["invites"]:
                invite, target, _ = state["invites"][0]
                cid = invite.get("call-id")
                if cid in ua.pending_2xx and time.monotonic() - state["invites"][0][2] < 2:
                    continue  # give the ACK a moment to arrive first
                state["invites"].pop(0)
                send_in_dialog_as_uas(ua, args, invite, target)
        # Stay a moment to answer retransmissions and take the ACK of a last INVITE.
        linger = time.monotonic() + args.linger
        while time.monotonic() < min(linger, deadline) or (
                ua.pending_2xx and time.monotonic() < linger + 4):
            ua.step(0.05)
    finally:
        ua.close()
    emit_json({"done": True, "received": state["received"]})
    return 0


def send_in_dialog_as_uas(ua, args, invite, target):
    """The callee's own requests in the dialog the INVITE made: INFO typing
    (--typing-after-invite), a MESSAGE (--send-after-invite), BYE (--bye-after-invite)."""
    routes = invite.all("record-route")  # the callee uses them in order
    remote = uri_of(invite.get("contact")) or uri_of(invite.get("from"))
    cid = invite.get("call-id")
    to_uri = uri_of(invite.get("to"))
    from_hdr = "<%s>;tag=%s" % (to_uri, ua.to_tags.get(cid, secrets.token_hex(4)))
    hop = uri_of(routes[0]) if routes else remote
    tgt = ua.target_for(hop) if routes or target[0] == "udp" else target
    extra = ["Route: " + r for r in routes]
    extra.append("Contact: <sip:%s@%s:%d>" % (uri_user(to_uri) or "user", UA_ADDR, ua.port))
    todo = []
    if args.typing_after_invite:
        todo.append(("INFO", TYPING_INFO, "application/xml"))
    if args.send_after_invite is not None:
        todo.append(("MESSAGE", args.send_after_invite, "text/plain; charset=UTF-8"))
    if args.bye_after_invite:
        todo.append(("BYE", "", None))
    for cseq, (method, text, ctype) in enumerate(todo, start=1):
        body = text.encode("utf-8", "surrogateescape")
        req = build_sip_request(method, remote, ua.via(tgt[0]), from_hdr, invite.get("from"),
                                cid, cseq, extra, body, ctype)
        final = ua.wait_final(ua.request(req, tgt), 10)
        out = {"method": method, "call_id": cid, "content_type": ctype, "body": text}
        out.update(response_summary(final))
        emit_json({"sent": out})


# ---------------------------------------------------------------------------
# sip-session: a Microsoft-style IM session (INVITE m=message) from an internal user
# ---------------------------------------------------------------------------
def cmd_sip_session(args):
    """INVITE (SDP m=message) via the Edge; on 200: ACK, INFO typing (--typing), each
    --message, --linger, BYE, all along the route set; answers the far end's in-dialog
    requests with 200. Prints JSON lines as it goes and a summary line {"done": true, ...}."""
    received = []
    sent = []
    dialog = {"bye_from_far_end": False}

    def on_request(msg, target):
        if msg.method == "ACK":
            return None
        summary = request_summary(msg, target)
        summary["answered"] = 200
        if msg.method == "BYE":
            dialog["bye_from_far_end"] = True
        received.append({k: summary[k] for k in ("method", "content_type", "body", "from", "to",
                                                  "call_id", "cseq", "request_uri")})
        emit_json({"request": summary})
        return 200, None, [], b"", None

    ua = SipUA(args.port, on_request=on_request)
    edge = ("udp", (EDGE_ADDR, SIP_PORT))
    call_id = secrets.token_hex(8) + "@testbed"
    conv_id = args.conversation_id or secrets.token_hex(16)
    from_tag = secrets.token_hex(4)
    from_hdr = "<%s>;tag=%s" % (args.sender, from_tag)
    contact = "<sip:%s@%s:%d>" % (uri_user(args.sender) or "user", UA_ADDR, ua.port)
    result = {"to": args.to, "call_id": call_id}
    try:
        invite = build_sip_request(
            "INVITE", args.to, ua.via(), from_hdr, "<%s>" % args.to, call_id, 1,
            ["Contact: " + contact, "Ms-Conversation-ID: " + conv_id,
             "Supported: ms-text-format"] + list(args.header),
            sdp_offer_message(ua.port), "application/sdp")
        acks = {}

        def reack(resp):
            if resp.code >= 200 and "ack" in acks:
                ua.send(acks["ack"], acks["target"])

        branch = ua.request(invite, edge, on_final_retransmit=reack)
        final = ua.wait_final(branch, args.timeout)
        inv = response_summary(final)
        inv["body"] = final.text() if final is not None else None
        inv["content_type"] = final.get("content-type") if final is not None else None
        inv["contact"] = final.get("contact") if final is not None else None
        result["invite"] = inv
        emit_json({"invite": inv})
        if final is None:
            result["error"] = "timeout: no final response to INVITE"
        elif final.code >= 300:
            # The transaction's ACK for a non-2xx final: same branch, hop by hop.
            ack = build_sip_request("ACK", args.to, (SipMsg(invite).get("via")), from_hdr,
                                    final.get("to"), call_id, 1)
            acks.update(ack=ack, target=edge)
            ua.send(ack, edge)
        else:
            routes = list(reversed(final.all("record-route")))
            remote = uri_of(final.get("contact")) or args.to
            to_hdr = final.get("to")
            target = ua.target_for(uri_of(routes[0])) if routes else edge
            route_hdrs = ["Route: " + r for r in routes]
            cseq = [1]

            def in_dialog(method, body=b"", ctype=None, extra=()):
                cseq[0] += 1
                return build_sip_request(method, remote, ua.via(target[0]), from_hdr, to_hdr,
                                         call_id, cseq[0], route_hdrs + list(extra), body, ctype)

            ack = build_sip_request("ACK", remote, ua.via(target[0]), from_hdr, to_hdr, call_id,
                                    1, route_hdrs)
            acks.update(ack=ack, target=target)
            ua.send(ack, target)
            result["route_set"] = routes

            def transact(method, body_text, ctype, extra=()):
                body = body_text.encode("utf-8", "surrogateescape")
                req = in_dialog(method, body, ctype, extra)
                fin = ua.wait_final(ua.request(req, target), args.timeout)
                out = {"method": method, "content_type": ctype, "body": body_text}
                out.update(response_summary(fin))
                sent.append(out)
                emit_json({"sent": out})
                return fin

            if args.typing and not dialog["bye_from_far_end"]:
                transact("INFO", TYPING_INFO, "application/xml")
            for text in args.message:
                if dialog["bye_from_far_end"]:
                    break
                transact("MESSAGE", text, args.content_type)
            end = time.monotonic() + args.linger
            while time.monotonic() < end and not dialog["bye_from_far_end"]:
                if args.expect and sum(1 for r in received if r["method"] != "BYE") >= args.expect:
                    break
                ua.step(0.05)
            if not dialog["bye_from_far_end"] and not args.no_bye:
                transact("BYE", "", None)
        # Answer late retransmissions for a moment.
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            ua.step(0.05)
    except OSError as e:
        result["error"] = "%s" % e
    finally:
        ua.close()
    result.update({"done": True, "sent": sent, "received": received,
                   "bye_from_far_end": dialog["bye_from_far_end"]})
    emit_json(result)
    return 0


# ---------------------------------------------------------------------------
# sip-presence: a SIP user for presence (RFC 6665 / RFC 3856 / PIDF RFC 3863), driven by
# JSON commands on stdin: a notifier others SUBSCRIBE to and a subscriber of its own
# ---------------------------------------------------------------------------
PIDF_NS = "urn:ietf:params:xml:ns:pidf"
PIDF_DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
PIDF_RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
PIDF_TYPE = "application/pidf+xml"


def pidf_document(entity, basic, note=None, activities=(), tuple_id="t1"):
    """A PIDF document (RFC 3863): one tuple with <basic> and <note>, and RPID activities
    (RFC 4480) in a data-model person element when there are any."""
    from xml.sax.saxutils import escape, quoteattr

    out = ['<?xml version="1.0" encoding="UTF-8"?>\n',
           '<presence xmlns="%s" xmlns:dm="%s" xmlns:rpid="%s" entity=%s>\n'
           % (PIDF_NS, PIDF_DM_NS, PIDF_RPID_NS, quoteattr(entity)),
           '  <tuple id=%s>\n' % quoteattr(tuple_id),
           '    <status><basic>%s</basic></status>\n' % escape(basic),
           '    <contact>%s</contact>\n' % escape(entity)]
    if note is not None:
        out.append('    <note>%s</note>\n' % escape(note))
    out.append('  </tuple>\n')
    if activities:
        out.append('  <dm:person id="p1">\n    <rpid:activities>%s</rpid:activities>\n'
                   '  </dm:person>\n' % "".join("<rpid:%s/>" % a for a in activities))
    out.append('</presence>\n')
    return "".join(out)


def pidf_parse(text):
    """What a test wants to know of a PIDF body: entity, the first tuple's basic and note
    (else the first note anywhere), RPID activities, and every tuple."""
    import xml.etree.ElementTree as ET

    out = {"entity": None, "basic": None, "note": None, "activities": [], "tuples": []}
    try:
        root = ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as e:
        out["pidf_error"] = str(e)
        return out
    p = "{%s}" % PIDF_NS
    out["entity"] = root.get("entity")
    for t in root.findall(p + "tuple"):
        contact = t.find(p + "contact")
        note = t.find(p + "note")
        out["tuples"].append({
            "id": t.get("id"),
            "basic": t.findtext("%sstatus/%sbasic" % (p, p)),
            "note": note.text if note is not None else None,
            "contact": contact.text if contact is not None else None,
            "priority": contact.get("priority") if contact is not None else None})
    if out["tuples"]:
        out["basic"] = out["tuples"][0]["basic"]
        out["note"] = out["tuples"][0]["note"]
    if out["note"] is None:
        for el in root.iter():
            if isinstance(el.tag, str) and el.tag.endswith("}note") and el.text is not None:
                out["note"] = el.text
                break
    for acts in root.iter("{%s}activities" % PIDF_RPID_NS):
        for a in acts:
            if isinstance(a.tag, str):
                out["activities"].append(a.tag.split("}", 1)[-1])
    return out


def subscription_state(value):
    """(state, {param: value}) of a Subscription-State header (RFC 6665 §8.2.3)."""
    if not value:
        return None, {}
    parts = [x.strip() for x in value.split(";")]
    params = {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        params[k.strip().lower()] = v.strip()
    return parts[0].lower(), params


def sip_expires(msg, default):
    v = (msg.get("expires") or "").strip()
    return int(v) if v.isdigit() else default


def stdin_lines():
    """A queue of stdin lines (str), then None at EOF; read by a daemon thread."""
    import queue

    q = queue.Queue()

    def reader():
        try:
            for raw in sys.stdin.buffer:
                q.put(raw.decode("utf-8", "replace"))
        except (OSError, ValueError):
            pass
        q.put(None)

    threading.Thread(target=reader, daemon=True).start()
    return q


def parse_command(line):
    """A JSON command object from a stdin line, or raises ValueError."""
    cmd = json.loads(line)
    if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
        raise ValueError('not a JSON object with a string "cmd"')
    return cmd


def sip_uri_norm(uri):
    """`sip:user@domain` of a URI or name-addr (port, parameters and headers dropped)."""
    uri = uri_of(uri) or ""
    m = re.match(r"^(sips?):([^@;>?]+)@([^:;>?]+)", uri)
    if not m:
        return uri
    return "sip:%s@%s" % (m.group(2), m.group(3).lower())


def activities_arg(value):
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


class PresenceUA:
    """The state of `sip-presence`: watchers of our users (we are the notifier) and our
    own subscriptions (we are the subscriber), over one SipUA."""

    def __init__(self, args):
        self.args = args
        self.users = [sip_uri_norm(u) for u in args.user or ["sip:bob@contoso.test"]]
        self.state = {u: {"basic": args.basic, "note": args.note,
                          "activities": list(args.activity), "body": None,
                          "content_type": PIDF_TYPE} for u in self.users}
        self.watchers = {}  # (call-id, our tag) -> dict: subscriptions to our users
        self.subs = {}  # to-URI -> dict: our subscriptions
        self.pending = {}  # branch -> {"deadline", "info", "then"}
        self.later = []  # actions to run once the current request was answered
        self.subscribe_status = args.subscribe_status
        self.refresh_status = None  # one shot
        self.notify_status = None  # one shot
        self.ua = SipUA(args.port, on_request=self.on_request)
        self.contact_port = self.ua.port

    # -- helpers --------------------------------------------------------------
    def contact(self, user_uri):
        return "<sip:%s@%s:%d>" % (uri_user(user_uri) or "user", UA_ADDR, self.ua.port)

    def request_line(self, msg, target, answered):
        s = request_summary(msg, target)
        state, params = subscription_state(msg.get("subscription-state"))
        s.update({
            "from_tag": sip_tag(msg.get("from")), "to_tag": sip_tag(msg.get("to")),
            "event": msg.get("event"), "expires": msg.get("expires"),
            "subscription_state": msg.get("subscription-state"),
            "accept": msg.get("accept"), "record_route": msg.all("record-route"),
            "route": msg.all("route")})
        if answered is not None:
            s["answered"] = answered
        emit_json({"request": s})

    def send(self, data, target, info, then=None):
        """Sends a request as a client transaction; its final (or timeout) is printed as
        {"response": {...info...}} and passed to `then`."""
        branch = self.ua.request(data, target)
        self.pending[branch] = {"deadline": time.monotonic() + self.args.request_timeout,
                                "info": info, "then": then}
        return branch

    def poll_finals(self):
        now = time.monotonic()
        for branch, p in list(self.pending.items()):
            tx = self.ua.client_tx.get(branch)
            final = tx["final"] if tx else None
            if final is None and now < p["deadline"]:
                continue
            del self.pending[branch]
            self.ua.client_tx.pop(branch, None)  # stop retransmitting
            out = dict(p["info"])
            out.update(response_summary(final))
            if final is not None:
                out.update({
                    "to_tag": sip_tag(final.get("to")), "event": final.get("event"),
                    "expires": final.get("expires"), "contact": final.get("contact"),
                    "record_route": final.all("record-route")})
            emit_json({"response": out})
            if p["then"] is not None:
                p["then"](final)

    # -- incoming requests ----------------------------------------------------
    def on_request(self, msg, target):
        m = msg.method
        if m == "ACK":
            self.request_line(msg, target, None)
            return None
        extra, body, ctype = [], b"", None
        if m == "SUBSCRIBE":
            code, extra = self.on_subscribe(msg, target)
        elif m == "NOTIFY":
            code = self.on_notify(msg, target)
        elif m in ("MESSAGE", "INFO", "OPTIONS", "BYE"):
            code = self.args.message_status if m == "MESSAGE" else 200
        else:
            code = self.args.other_status
            if code == 405 or code == 501:
                extra = ["Allow: SUBSCRIBE, NOTIFY, MESSAGE, INFO, OPTIONS, BYE, ACK"]
        self.request_line(msg, target, code)
        if m == "NOTIFY" and 200 <= code < 300:
            self.later.append(lambda: self.report_notify(msg))
        return code, None, extra, body, ctype

    def target_user(self, msg):
        for cand in (msg.ruri, msg.get("to")):
            u = sip_uri_norm(cand)
            if u in self.users:
                return u
        return None

    def on_subscribe(self, msg, target):
        cid = msg.get("call-id") or ""
        to_tag = sip_tag(msg.get("to"))
        event = (msg.get("event") or "").split(";", 1)[0].strip().lower()
        if event != "presence":
            return 489, ["Allow-Events: presence"]
        requested = sip_expires(msg, 3600)
        expires = min(requested, self.args.max_expires)
        if to_tag is not None:
            # A refresh (or an unsubscribe) in a dialog we made.
            w = self.watchers.get((cid, to_tag))
            if w is None:
                return 481, []
            if self.refresh_status is not None:
                code, self.refresh_status = self.refresh_status, None
                if code >= 300:
                    if code not in (423,) and not 500 <= code < 600:
                        self.watchers.pop((cid, to_tag), None)  # the subscription is gone
                    return code, []
            else:
                code = 200
            w["remote_target"] = uri_of(msg.get("contact")) or w["remote_target"]
            self.refresh_watcher(w, expires)
            return code, ["Expires: %d" % expires, "Contact: " + self.contact(w["user"])]
        user = self.target_user(msg)
        if user is None:
            return 404, []
        code = self.subscribe_status
        if code >= 300:
            return code, []
        tag = self.ua.to_tags.setdefault(cid, secrets.token_hex(4))
        w = {"call_id": cid, "tag": tag, "user": user,
             "watcher": sip_uri_norm(msg.get("from")),
             "local": "%s;tag=%s" % (msg.get("to"), tag), "remote": msg.get("from"),
             "remote_target": uri_of(msg.get("contact")) or uri_of(msg.get("from")),
             "route_set": msg.all("record-route"), "cseq": 0,
             "state": "pending" if self.args.pending else "active",
             "expires_at": 0, "target": target}
        self.watchers[(cid, tag)] = w
        self.refresh_watcher(w, expires)
        extra = ["Expires: %d" % expires, "Contact: " + self.contact(user)]
        extra += ["Record-Route: " + r for r in msg.all("record-route")]
        return code, extra

    def refresh_watcher(self, w, expires):
        """After a 2xx to SUBSCRIBE: NOTIFY with the current state (RFC 6665 §4.2.1.2),
        terminated;reason=timeout for Expires 0."""
        key = (w["call_id"], w["tag"])
        if expires == 0:
            # A fetch (Expires 0 outside a dialog, RFC 6665 §4.4.3) gets the current state
            # in its terminating NOTIFY; an unsubscribe in the dialog gets none.
            fetch = w["cseq"] == 0 and w["state"] == "active"
            self.watchers.pop(key, None)
            self.later.append(lambda: self.notify(w, "terminated;reason=timeout", with_state=fetch))
            return
        w["expires_at"] = time.monotonic() + expires
        self.later.append(lambda: self.notify_current(w))

    def notify_current(self, w):
        left = max(0, int(round(w["expires_at"] - time.monotonic())))
        if w["state"] == "pending":
            self.notify(w, "pending;expires=%d" % left)
        else:
            self.notify(w, "active;expires=%d" % left, with_state=True)

    def notify(self, w, sub_state, with_state=False):
        """A NOTIFY in the watcher's dialog: Request-URI its Contact, Route its
        Record-Route set (in order: we are the UAS of the SUBSCRIBE)."""
        w["cseq"] += 1
        routes = w["route_set"]
        hop = uri_of(routes[0]) if routes else w["remote_target"]
        target = self.ua.target_for(hop) if (routes or w["target"][0] == "udp") else w["target"]
        body, ctype, sent = b"", None, {"subscription_state": sub_state}
        if with_state:
            st = self.state[w["user"]]
            if st["body"] is not None:
                text, ctype = st["body"], st["content_type"]
            else:
                text, ctype = pidf_document(w["user"], st["basic"], st["note"], st["activities"]), PIDF_TYPE
            body = text.encode("utf-8", "surrogateescape")
            sent.update({"basic": st["basic"], "note": st["note"],
                         "activities": st["activities"], "content_type": ctype, "body": text})
        extra = ["Route: " + r for r in routes] + [
            "Contact: " + self.contact(w["user"]), "Event: presence",
            "Subscription-State: " + sub_state]
        req = build_sip_request("NOTIFY", w["remote_target"], self.ua.via(target[0]), w["local"],
                                w["remote"], w["call_id"], w["cseq"], extra, body, ctype)
        info = {"method": "NOTIFY", "call_id": w["call_id"], "cseq": "%d NOTIFY" % w["cseq"],
                "to": w["watcher"], "from": w["user"], "sent": sent}
        key = (w["call_id"], w["tag"])

        def then(final):
            if final is None or final.code in (481, 408) or (
                    final.code >= 300 and sub_state.startswith("active")
                    and final.code not in (500, 503)):
                self.watchers.pop(key, None)  # RFC 6665 §4.2.2: the subscription is gone

        self.send(req, target, info, then)

    def expire_watchers(self):
        now = time.monotonic()
        for key, w in list(self.watchers.items()):
            if w["expires_at"] and now >= w["expires_at"]:
                del self.watchers[key]
                self.notify(w, "terminated;reason=timeout")

    def pick_watchers(self, cmd, states=("active", "pending")):
        user = sip_uri_norm(cmd["user"]) if cmd.get("user") else None
        watcher = sip_uri_norm(cmd["watcher"]) if cmd.get("watcher") else None
        return [w for w in self.watchers.values() if w["state"] in states
                and (user is None or w["user"] == user)
                and (watcher is None or w["watcher"] == watcher)]

    # -- our own subscriptions ------------------------------------------------
    def on_notify(self, msg, target):
        cid = msg.get("call-id")
        our_tag = sip_tag(msg.get("to"))
        their_tag = sip_tag(msg.get("from"))
        sub = None
        for s in self.subs.values():
            if s["call_id"] == cid and s["from_tag"] == our_tag:
                sub = s
        if sub is None or (sub["to_tag"] is not None and sub["to_tag"] != their_tag):
            return 481
        if sub["to_tag"] is None:
            # NOTIFY before the 2xx (RFC 6665 §4.1.2.4): it establishes the dialog.
            sub["to_tag"] = their_tag
            sub["to_hdr"] = msg.get("from")
            sub["route_set"] = msg.all("record-route")
            sub["dialog_from"] = "notify"
        if msg.get("contact"):
            sub["remote_target"] = uri_of(msg.get("contact"))
        code = 200
        if self.notify_status is not None:
            code, self.notify_status = self.notify_status, None
        state, _ = subscription_state(msg.get("subscription-state"))
        if state == "terminated" or code == 481:
            sub["state"] = "terminated"
        elif 200 <= code < 300 and state in ("active", "pending"):
            sub["state"] = state
        return code

    def report_notify(self, msg):
        out = {"from": uri_of(msg.get("from")), "to": uri_of(msg.get("to")),
               "call_id": msg.get("call-id"), "cseq": msg.get("cseq"),
               "subscription_state": msg.get("subscription-state"),
               "content_type": msg.get("content-type"), "body": msg.text(),
               "entity": None, "basic": None, "note": None, "activities": [], "tuples": []}
        state, params = subscription_state(msg.get("subscription-state"))
        out["state"] = state
        out["reason"] = params.get("reason")
        out["expires"] = int(params["expires"]) if params.get("expires", "").isdigit() else None
        ctype = (msg.get("content-type") or "").split(";", 1)[0].strip().lower()
        if msg.body and ctype == PIDF_TYPE:
            out.update(pidf_parse(msg.text()))
        emit_json({"notify": out})

    def subscribe(self, cmd):
        to = cmd["to"]
        sender = cmd.get("from") or self.users[0]
        expires = int(cmd.get("expires", 3600))
        cid = secrets.token_hex(8) + "@testbed"
        ftag = secrets.token_hex(4)
        sub = {"to": to, "from": sender, "call_id": cid, "from_tag": ftag,
               "from_hdr": "<%s>;tag=%s" % (sender, ftag), "to_hdr": "<%s>" % to,
               "to_tag": None, "route_set": [], "remote_target": None, "cseq": 1,
               "expires": expires, "state": "init", "dialog_from": None,
               "contact": self.contact(sender)}
        self.subs[to] = sub
        extra = ["Contact: " + sub["contact"], "Event: presence", "Accept: " + PIDF_TYPE,
                 "Expires: %d" % expires] + list(cmd.get("headers", []))
        req = build_sip_request("SUBSCRIBE", to, self.ua.via(), sub["from_hdr"], sub["to_hdr"],
                                cid, 1, extra)

        def then(final):
            if final is None or final.code >= 300:
                if sub["to_tag"] is None:
                    sub["state"] = "failed"
                return
            tag = sip_tag(final.get("to"))
            if sub["to_tag"] is None:
                sub["to_tag"], sub["to_hdr"] = tag, final.get("to")
            if sub["to_tag"] == tag:
                # The 2xx's route set wins over a NOTIFY's that came first: the Edge
                # record-routes only requests outside a dialog.
                routes = list(reversed(final.all("record-route")))
                if routes or sub["dialog_from"] != "notify":
                    sub["route_set"] = routes
                if final.get("contact"):
                    sub["remote_target"] = uri_of(final.get("contact"))
                sub["dialog_from"] = "2xx"
            if sub["state"] == "init":
                sub["state"] = "accepted"

        self.send(req, ("udp", (EDGE_ADDR, SIP_PORT)),
                  {"method": "SUBSCRIBE", "kind": "subscribe", "to": to, "from": sender,
                   "call_id": cid, "cseq": "1 SUBSCRIBE", "expires_sent": expires}, then)
        return {"call_id": cid}

    def in_dialog_subscribe(self, cmd, kind):
        sub = self.subs.get(cmd.get("to"))
        if sub is None:
            raise ValueError("no subscription to %r" % cmd.get("to"))
        if sub["to_tag"] is None:
            raise ValueError("the subscription to %s has no dialog (state %s)"
                             % (sub["to"], sub["state"]))
        expires = 0 if kind == "unsubscribe" else int(cmd.get("expires", sub["expires"]))
        sub["cseq"] += 1
        routes = sub["route_set"]
        remote = sub["remote_target"] or sub["to"]
        target = self.ua.target_for(uri_of(routes[0]) if routes else remote)
        extra = ["Route: " + r for r in routes] + [
            "Contact: " + sub["contact"], "Event: presence", "Accept: " + PIDF_TYPE,
            "Expires: %d" % expires] + list(cmd.get("headers", []))
        req = build_sip_request("SUBSCRIBE", remote, self.ua.via(target[0]), sub["from_hdr"],
                                sub["to_hdr"], sub["call_id"], sub["cseq"], extra)

        def then(final):
            if final is None or final.code in (481, 408, 403, 489, 603):
                sub["state"] = "terminated"

        self.send(req, target, {"method": "SUBSCRIBE", "kind": kind, "to": sub["to"],
                                "from": sub["from"], "call_id": sub["call_id"],
                                "cseq": "%d SUBSCRIBE" % sub["cseq"], "expires_sent": expires},
                  then)
        return {"call_id": sub["call_id"], "route_set": routes, "request_uri": remote}

    # -- commands -------------------------------------------------------------
    def command(self, cmd):
        """Runs one command; returns the extra fields of its {"ack": ...} line, or raises
        ValueError/KeyError/TypeError for a bad command."""
        name = cmd["cmd"]
        if name == "subscribe-status":
            self.subscribe_status = int(cmd["code"])
            return {"code": self.subscribe_status}
        if name == "refresh-status":
            self.refresh_status = int(cmd["code"])
            return {"code": self.refresh_status}
        if name == "notify-status":
            self.notify_status = int(cmd["code"])
            return {"code": self.notify_status}
        if name == "publish":
            user = sip_uri_norm(cmd["user"]) if cmd.get("user") else self.users[0]
            if user not in self.state:
                raise ValueError("not one of our users: %s" % user)
            st = self.state[user]
            st["basic"] = cmd.get("basic", "open")
            st["note"] = cmd.get("note")
            st["activities"] = activities_arg(cmd.get("activity", cmd.get("activities")))
            st["body"] = cmd.get("body")
            st["content_type"] = cmd.get("content_type", PIDF_TYPE)
            ws = [w for w in self.watchers.values() if w["user"] == user and w["state"] == "active"]
            for w in ws:
                self.notify_current(w)
            return {"user": user, "basic": st["basic"], "note": st["note"],
                    "activities": st["activities"], "notified": len(ws)}
        if name == "approve":
            ws = self.pick_watchers(cmd, ("pending",))
            for w in ws:
                w["state"] = "active"
                self.notify_current(w)
            return {"approved": len(ws)}
        if name == "terminate":
            reason = cmd.get("reason", "rejected")
            ws = self.pick_watchers(cmd)
            for w in ws:
                self.watchers.pop((w["call_id"], w["tag"]), None)
                self.notify(w, "terminated;reason=%s" % reason if reason else "terminated")
            return {"terminated": len(ws), "reason": reason}
        if name == "watchers":
            now = time.monotonic()
            return {"watchers": [{"watcher": w["watcher"], "user": w["user"],
                                  "call_id": w["call_id"], "state": w["state"],
                                  "expires_in": int(round(w["expires_at"] - now))}
                                 for w in self.watchers.values()]}
        if name == "subscribe":
            return self.subscribe(cmd)
        if name == "refresh":
            return self.in_dialog_subscribe(cmd, "refresh")
        if name == "unsubscribe":
            return self.in_dialog_subscribe(cmd, "unsubscribe")
        if name == "message":
            to, sender = cmd["to"], cmd.get("from") or self.users[0]
            body = cmd.get("body", "").encode("utf-8", "surrogateescape")
            ctype = cmd.get("content_type", "text/plain; charset=UTF-8")
            cid = secrets.token_hex(8) + "@testbed"
            req = build_sip_request("MESSAGE", to, self.ua.via(),
                                    "<%s>;tag=%s" % (sender, secrets.token_hex(4)), "<%s>" % to,
                                    cid, 1, list(cmd.get("headers", [])), body, ctype)
            self.send(req, ("udp", (EDGE_ADDR, SIP_PORT)),
                      {"method": "MESSAGE", "kind": "message", "to": to, "from": sender,
                       "call_id": cid, "cseq": "1 MESSAGE"})
            return {"call_id": cid}
        if name == "subscriptions":
            return {"subscriptions": [
                {"to": s["to"], "from": s["from"], "call_id": s["call_id"], "state": s["state"],
                 "to_tag": s["to_tag"], "route_set": s["route_set"],
                 "remote_target": s["remote_target"]} for s in self.subs.values()]}
        raise ValueError("unknown command %r" % name)


def cmd_sip_presence(args):
    """A long-running SIP user at UA_ADDR:--port for presence: prints {"ready": true, ...},
    then runs stdin commands (one JSON object a line) and prints what happens as JSON lines,
    until {"cmd": "quit"}, stdin EOF or --timeout; then {"done": true, "reason": ...}."""
    try:
        pua = PresenceUA(args)
    except OSError as e:
        emit_json({"ready": False, "error": "%s" % e})
        emit_json({"done": True, "reason": "error"})
        return 0
    import queue

    commands = queue.Queue() if args.no_stdin else stdin_lines()
    emit_json({"ready": True, "port": pua.ua.port, "users": pua.users})
    deadline = time.monotonic() + args.timeout
    reason = "timeout"
    try:
        while time.monotonic() < deadline:
            pua.ua.step(0.02)
            while pua.later:
                pua.later.pop(0)()
            pua.poll_finals()
            pua.expire_watchers()
            stop = False
            while True:
                try:
                    line = commands.get_nowait()
                except queue.Empty:
                    break
                if line is None:
                    reason, stop = "eof", True
                    break
                if not line.strip():
                    continue
                try:
                    cmd = parse_command(line)
                    if cmd["cmd"] == "quit":
                        reason, stop = "quit", True
                        break
                    ack = {"cmd": cmd["cmd"]}
                    ack.update(pua.command(cmd))
                    emit_json({"ack": ack})
                except (ValueError, KeyError, TypeError) as e:
                    emit_json({"error": "bad command %s: %s: %s"
                               % (line.strip(), type(e).__name__, e)})
                while pua.later:
                    pua.later.pop(0)()
            if stop:
                break
    except OSError as e:
        emit_json({"error": "%s" % e})
        reason = "error"
    finally:
        pua.ua.close()
    try:
        emit_json({"done": True, "reason": reason})
    except OSError:
        pass  # nobody reads any more
    # Not a normal exit: the stdin reader thread may hold stdin's lock at shutdown.
    os._exit(0)


# ---------------------------------------------------------------------------
# xmpp-presence: a Prosody user for presence and subscriptions (RFC 6121 §3-4), driven by
# JSON commands on stdin; approval is left to the test (no automatic answers)
# ---------------------------------------------------------------------------
def presence_entry(pres):
    """What xmpp-presence reports of a presence stanza (type null when available)."""
    x = pres.xml
    ns = pres.namespace
    show = x.find("{%s}show" % ns)
    status = x.find("{%s}status" % ns)
    prio = x.find("{%s}priority" % ns)
    try:
        priority = int(prio.text) if prio is not None and prio.text else None
    except ValueError:
        priority = prio.text
    entry = {"from": str(pres["from"]), "to": str(pres["to"]), "type": x.get("type"),
             "show": show.text if show is not None else None,
             "status": status.text if status is not None else None,
             "priority": priority, "id": x.get("id")}
    if x.get("type") == "error":
        entry["condition"] = pres["error"]["condition"]
        entry["text"] = pres["error"]["text"]
        entry["error_type"] = pres["error"]["type"]
    return entry


def roster_entries(iq):
    return [{"jid": str(jid), "subscription": item["subscription"] or "none",
             "ask": item["ask"] or None, "name": item["name"] or None}
            for jid, item in iq["roster"]["items"].items()]


def cmd_xmpp_presence(args):
    """Logs --user in (no initial presence unless --available), prints {"ready": true, ...},
    then runs stdin commands (one JSON object a line), printing {"ack": ...} for each, and
    every presence stanza and roster push received, until {"cmd": "quit"}, stdin EOF or
    --timeout; then {"done": true, "reason": ...}."""
    import asyncio
    import logging

    logging.basicConfig(level=logging.CRITICAL)

    with open(os.path.join(args.dir, "testbed.json")) as f:
        info = json.load(f)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    outcome = {"reason": "timeout"}

    async def main():
        import slixmpp

        users = {u["jid"]: u["password"] for u in info["xmpp"]["users"]}
        if args.user not in users:
            emit_json({"ready": "failed: %s is not a testbed user (%s)"
                       % (args.user, ", ".join(users))})
            outcome["reason"] = "error"
            return
        jid = args.user + ("/" + args.resource if args.resource else "")
        c = slixmpp.ClientXMPP(jid, users[args.user])
        # The test decides: no automatic approval, refusal or subscription back
        # (auto_authorize None = leave requests alone; False would refuse them).
        c.roster.auto_authorize = None
        c.roster.auto_subscribe = False
        c.ca_certs = info["pki"]["ca"]["cert"]
        c.reconnect_max_attempts = 0
        ready = loop.create_future()
        lines = asyncio.Queue()

        async def on_start(_event):
            # Fetching the roster makes this session an "interested resource" (RFC 6121
            # §2.1.6): only those get roster pushes and subscription states from Prosody.
            try:
                await c.get_roster(timeout=10)
            except Exception as e:
                if not ready.done():
                    ready.set_result("failed: roster: %s: %s" % (type(e).__name__, e))
            if not ready.done():
                ready.set_result(True)

        def on_fail(event):
            if not ready.done():
                ready.set_result("failed: %s" % (event,))

        def on_presence(pres):
            emit_json({"presence": presence_entry(pres)})

        def on_roster(iq):
            if iq["type"] == "set":  # a push (the answer to our own get is reported by "roster")
                for item in roster_entries(iq):
                    emit_json({"roster": item})

        def on_disconnected(_event):
            if ready.done() and not outcome.get("closing"):
                emit_json({"error": "disconnected"})

        c.add_event_handler("session_start", on_start)
        c.add_event_handler("failed_auth", on_fail)
        c.add_event_handler("connection_failed", on_fail)
        c.add_event_handler("presence", on_presence)
        c.add_event_handler("roster_update", on_roster)
        c.add_event_handler("disconnected", on_disconnected)
        c.connect(address=(info["xmpp"]["c2s"]["host"], info["xmpp"]["c2s"]["port"]))
        try:
            r = await asyncio.wait_for(ready, 15)
        except asyncio.TimeoutError:
            r = "failed: no session within 15 s"
        if r is True and args.available:
            c.send_presence(pshow=args.show, pstatus=args.status, ppriority=args.priority)
        emit_json({"ready": r} if r is not True else {"ready": True, "jid": str(c.boundjid)})
        if r is not True:
            outcome["reason"] = "error"
            return

        def reader():
            try:
                for raw in sys.stdin.buffer:
                    loop.call_soon_threadsafe(lines.put_nowait, raw.decode("utf-8", "replace"))
            except (OSError, ValueError):
                pass
            loop.call_soon_threadsafe(lines.put_nowait, None)

        if not args.no_stdin:
            threading.Thread(target=reader, daemon=True).start()

        async def run(cmd):
            name = cmd["cmd"]
            to = cmd.get("to")
            if name in ("subscribe", "unsubscribe", "approve", "refuse"):
                if not to:
                    raise ValueError('"to" is required')
                ptype = {"approve": "subscribed", "refuse": "unsubscribed"}.get(name, name)
                c.send_presence(pto=to, ptype=ptype)
                return {"to": to, "type": ptype}
            if name in ("presence", "available"):
                prio = cmd.get("priority")
                c.send_presence(pto=to, pshow=cmd.get("show"), pstatus=cmd.get("status"),
                                ppriority=int(prio) if prio is not None else None)
                return {"to": to, "show": cmd.get("show"), "status": cmd.get("status"),
                        "priority": prio}
            if name == "unavailable":
                c.send_presence(pto=to, ptype="unavailable", pstatus=cmd.get("status"))
                return {"to": to, "status": cmd.get("status")}
            if name == "probe":
                c.send_presence(pto=to, ptype="probe")
                return {"to": to}
            if name == "roster":
                iq = c.Iq()
                iq["type"] = "get"
                iq.enable("roster")
                resp = await iq.send(timeout=10)
                return {"items": roster_entries(resp)}
            if name == "remove":
                if not cmd.get("jid"):
                    raise ValueError('"jid" is required')
                iq = c.Iq()
                iq["type"] = "set"
                iq["roster"]["items"] = {cmd["jid"]: {"subscription": "remove"}}
                try:
                    await iq.send(timeout=10)
                except slixmpp.exceptions.IqError as e:
                    if e.iq["error"]["condition"] != "item-not-found":
                        raise
                    return {"jid": cmd["jid"], "removed": False}  # was not in the roster
                return {"jid": cmd["jid"], "removed": True}
            raise ValueError("unknown command %r" % name)

        deadline = loop.time() + args.timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                line = await asyncio.wait_for(lines.get(), left)
            except asyncio.TimeoutError:
                break
            if line is None:
                outcome["reason"] = "eof"
                break
            if not line.strip():
                continue
            try:
                cmd = parse_command(line)
                if cmd["cmd"] == "quit":
                    outcome["reason"] = "quit"
                    break
                ack = {"cmd": cmd["cmd"]}
                ack.update(await run(cmd))
                emit_json({"ack": ack})
            except (ValueError, KeyError, TypeError) as e:
                emit_json({"error": "bad command %s: %s: %s" % (line.strip(), type(e).__name__, e)})
            except Exception as e:  # an iq error or timeout: report, keep going
                emit_json({"error": "command %s failed: %s: %s"
                           % (line.strip(), type(e).__name__, e)})
        outcome["closing"] = True
        c.disconnect()
        await asyncio.sleep(0.2)

    try:
        loop.run_until_complete(asyncio.wait_for(main(), args.timeout + 20))
    except Exception as e:
        outcome["reason"] = "error"
        try:
            emit_json({"error": "%s: %s" % (type(e).__name__, e)})
        except OSError:
            pass
    try:
        emit_json({"done": True, "reason": outcome["reason"]})
    except OSError:
        pass  # nobody reads any more
    os._exit(0)  # slixmpp may leave tasks behind; don't wait for them


# ---------------------------------------------------------------------------
# gateway-config: an xsgw.ini for the gateway under test in this testbed
# ---------------------------------------------------------------------------
GATEWAY_CONFIG = """\
; xsgw configuration for the testbed in {dir} (generated by testbed.py gateway-config)
[gateway]
fqdn = {sip_name}
sip_domains = {domains}
state_dir = {state}

[xmpp]
listen = {address}:{xmpp_port}
public_name = xmpp.contoso.test
cert = {xmpp_cert}
key = {xmpp_key}
ca = {ca}
dialback_secret = {state}/dialback.secret

[sip]
listen = {address}:{sip_port}
edge = {edge_host}:{edge_port}
edge_names = {edge_host}
cert = {sip_cert}
key = {sip_key}
ca = {ca}

[federation]
; Every peer of the testbed is on 127.0.10.0/24 (loopback): a real deployment keeps refuse.
private_addresses = allow

[partner {xmpp_domain}]
aliases = {aliases}

[hosts]
; Edge traffic stays on the testbed's addresses, as admins do with a hosts entry.
{edge_host} = {edge_address}

[dns]
servers = {dns}:{dns_port}
timeout = 2s

[log]
level = {level}
"""


def cmd_silent_listener(args):
    """A TCP listener whose accept queue is full: further connection attempts get no
    answer at all (their SYNs are dropped), as behind a firewall that drops silently."""
    ip = args.addr
    if not ip.startswith("127.") or ip.startswith("127.0.10."):
        raise TestbedError("silent-listener: use a loopback address outside 127.0.10.0/24")
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((ip, args.port))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(3):  # backlog 0 holds one; the rest wait in SYN-SENT, as any later client
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect((ip, port))
        except BlockingIOError:
            pass
        fillers.append(c)
    time.sleep(0.2)
    emit_json({"ready": True, "address": ip, "port": port})
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            if args.no_stdin:
                time.sleep(0.2)
            elif not sys.stdin.readline():
                break
    finally:
        for c in fillers:
            c.close()
        srv.close()
    emit_json({"done": True})
    return 0


def cmd_gateway_config(args):
    with open(os.path.join(os.path.abspath(args.dir), "testbed.json")) as f:
        info = json.load(f)
    gw = info["gateway"]
    xmpp_domain = info["xmpp"]["domain"]
    print(GATEWAY_CONFIG.format(
        dir=info["dir"], sip_name=gw["sip_name"], domains=", ".join(gw["xmpp_domains"]),
        state=args.state or os.path.join(info["dir"], "xsgw-state"),
        address=gw["address"], xmpp_port=gw["xmpp_port"], sip_port=gw["sip_tls_port"],
        xmpp_cert=gw["xmpp_cert"], xmpp_key=gw["xmpp_key"], ca=gw["ca"],
        sip_cert=gw["sip_cert"], sip_key=gw["sip_key"],
        edge_host=gw["edge"]["host"], edge_port=gw["edge"]["port"], edge_address=gw["edge"]["address"],
        xmpp_domain=xmpp_domain,
        aliases=", ".join(d for d in info["xmpp"]["domains"] if d != xmpp_domain),
        dns=info["dns"]["address"], dns_port=info["dns"]["port"], level=args.log_level), end="")
    return 0


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    sub.add_parser("install", help="install the Debian packages the testbed needs")

    up = sub.add_parser("up", help="start the testbed in DIR and write DIR/testbed.json")
    up.add_argument("--dir", required=True)
    up.add_argument("--prosody-s2s", default=",".join([XMPP_ADDR, XMPP_ALT_ADDRS[0]]),
                    help="comma-separated s2s listen addresses of Prosody "
                         "(default %(default)s; e.g. 127.0.10.21 to make the priority-5 host refuse)")
    up.add_argument("--s2s-require-encryption", action=argparse.BooleanOptionalAction, default=False,
                    help="Prosody s2s_require_encryption (default off)")
    up.add_argument("--s2s-secure-auth", action=argparse.BooleanOptionalAction, default=False,
                    help="Prosody s2s_secure_auth (default off: dialback accepted)")
    up.add_argument("--dialback", action=argparse.BooleanOptionalAction, default=True,
                    help="load mod_dialback in Prosody (default on)")
    up.add_argument("--prosody-s2s-cert", choices=["gmail", "wrongname", "other"], default="gmail",
                    help="the PKI leaf Prosody presents on s2s for its domains (default gmail; "
                         "wrongname names rogue.contoso.test; other is from the unrelated CA); "
                         "c2s keeps gmail")
    up.add_argument("--ua-transport", choices=["udp", "tcp"], default="udp",
                    help="transport from the Edge to the SIP users at %s (default udp)" % UA_ADDR)
    up.add_argument("--ua-port", type=int, default=SIP_PORT)
    up.add_argument("--kamailio-debug", type=int, default=2, help="Kamailio debug level (default 2)")
    up.add_argument("--kamailio-memory", type=int, default=64, metavar="MB",
                    help="Kamailio's shared memory in MB (default 64; make bench-peers: 512)")

    down = sub.add_parser("down", help="stop every service started in DIR")
    down.add_argument("--dir")
    down.add_argument("--all", action="store_true",
                      help="stop the testbeds of every DIR that `up` ever used (listed in %s)" % REGISTRY)

    rs = sub.add_parser("restart", help="restart one service of a running testbed")
    rs.add_argument("--dir", required=True)
    rs.add_argument("service", choices=SERVICE_ORDER)

    st = sub.add_parser("selftest", help="check that every peer works; 'N passed, M failed'")
    st.add_argument("--dir", help="directory to use (a testbed already up there is used as is)")

    ss = sub.add_parser("sip-send", help="send MESSAGEs from an internal SIP user via the Edge; "
                        "one JSON line with the final responses")
    ss.add_argument("--dir", required=True)
    ss.add_argument("--from", dest="sender", default="sip:bob@contoso.test")
    ss.add_argument("--to", default="sip:alice@gmail.test")
    ss.add_argument("--body", default="hello from SIP",
                    help="the body, sent exactly as given (UTF-8); '' sends none")
    ss.add_argument("--body-file", help="read the body (bytes, as is) from this file instead")
    ss.add_argument("--content-type", default="text/plain; charset=UTF-8")
    ss.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                    help="an extra header line (repeatable)")
    ss.add_argument("--count", type=int, default=1,
                    help="MESSAGEs to send in sequence, each after the previous final (default 1)")
    ss.add_argument("--port", type=int, default=0,
                    help="the user's UDP port on %s (default 0: any free port, so that "
                         "sip-recv can hold 5060)" % UA_ADDR)
    ss.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each final")

    sr = sub.add_parser("sip-recv", help="be the SIP users at %s: print {\"ready\": true}, then "
                        "each request the Edge delivers as a JSON line, answer it" % UA_ADDR)
    sr.add_argument("--dir", required=True)
    sr.add_argument("--port", type=int, default=SIP_PORT)
    sr.add_argument("--tcp", action="store_true",
                    help="listen on TCP too (for `up --ua-transport tcp`)")
    sr.add_argument("--count", type=int, default=0,
                    help="exit after this many requests (ACK not counted; 0 = until --timeout)")
    sr.add_argument("--timeout", type=float, default=20.0)
    sr.add_argument("--status", type=int, default=200, help="answer to MESSAGE/INFO/NOTIFY")
    sr.add_argument("--status-for", action="append", default=[], metavar="USER=CODE",
                    help="answer to MESSAGE/INFO/NOTIFY/INVITE whose Request-URI user is USER")
    sr.add_argument("--invite-status", type=int, default=200,
                    help="answer to INVITE (200 needs SDP m=message ... sip, else 488)")
    sr.add_argument("--other-status", type=int, default=501,
                    help="answer to other methods (SUBSCRIBE, PUBLISH, ...; default 501)")
    sr.add_argument("--send-after-invite", metavar="BODY",
                    help="after answering an INVITE 200 (and its ACK), send one MESSAGE with "
                         "BODY in that dialog; prints {\"sent\": {...}} with its final")
    sr.add_argument("--typing-after-invite", action="store_true",
                    help="after answering an INVITE 200, send INFO KeyboardActivity in that dialog "
                         "(before the --send-after-invite MESSAGE)")
    sr.add_argument("--bye-after-invite", action="store_true",
                    help="after answering an INVITE 200 (and the requests above), hang up: BYE")
    sr.add_argument("--linger", type=float, default=0.5,
                    help="seconds to keep answering retransmissions after --count (default 0.5)")

    se = sub.add_parser("sip-session", help="an IM session (INVITE m=message, ACK, INFO, MESSAGE, "
                        "BYE) from an internal SIP user via the Edge; JSON lines")
    se.add_argument("--dir", required=True)
    se.add_argument("--from", dest="sender", default="sip:bob@contoso.test")
    se.add_argument("--to", default="sip:alice@gmail.test")
    se.add_argument("--message", action="append", default=[], metavar="BODY",
                    help="a MESSAGE sent in the dialog (repeatable, in order)")
    se.add_argument("--content-type", default="text/plain; charset=UTF-8",
                    help="Content-Type of the MESSAGEs")
    se.add_argument("--typing", action="store_true",
                    help="send INFO KeyboardActivity (application/xml) before the messages")
    se.add_argument("--linger", type=float, default=0.0,
                    help="seconds to wait for the far end's requests before BYE")
    se.add_argument("--no-bye", action="store_true",
                    help="leave the session open at the end (no BYE)")
    se.add_argument("--expect", type=int, default=0,
                    help="end the --linger wait once this many requests (BYE aside) came in")
    se.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                    help="an extra header line on the INVITE (repeatable)")
    se.add_argument("--conversation-id", help="Ms-Conversation-ID (default random)")
    se.add_argument("--port", type=int, default=0,
                    help="the user's UDP port on %s (default 0: any free port)" % UA_ADDR)
    se.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each final")

    gc = sub.add_parser("gateway-config", help="print an xsgw.ini for the gateway in this testbed")
    gc.add_argument("--dir", required=True)
    gc.add_argument("--state", help="xsgw state directory (default DIR/xsgw-state)")
    gc.add_argument("--log-level", default="info")

    xp = sub.add_parser("xmpp-send", help="log in as --sender, check a message to --receiver "
                        "arrives, send one to each --remote; JSON result")
    xp.add_argument("--dir", required=True)
    xp.add_argument("--sender", required=True)
    xp.add_argument("--receiver", required=True)
    xp.add_argument("--remote", action="append", default=[])
    xp.add_argument("--wrong-ca", action="store_true")
    xp.add_argument("--wait", type=float, default=0.5,
                    help="seconds to wait for error bounces of the --remote messages")
    xp.add_argument("--body", default="hello from the testbed")
    xp.add_argument("--state", choices=CHAT_STATES,
                    help="send a chat-state-only message (XEP-0085) to each --remote before the body")
    xp.add_argument("--body-state", choices=CHAT_STATES,
                    help="a chat state carried with the body (e.g. active)")

    xr = sub.add_parser("xmpp-recv", help="log in as --user, print {\"ready\": true}, then each "
                        "message received as a JSON line (optionally sending --send first)")
    xr.add_argument("--dir", required=True)
    xr.add_argument("--user", required=True)
    xr.add_argument("--send", action="append", default=[], help="JIDs to send --body to once logged in")
    xr.add_argument("--body", default="hello from the testbed")
    xr.add_argument("--body-file", help="read --body from this file (UTF-8, exact)")
    xr.add_argument("--no-body", action="store_true", help="send only the chat states")
    xr.add_argument("--body-state", choices=CHAT_STATES,
                    help="a chat state carried with the body (e.g. active)")
    xr.add_argument("--send-state", action="append", default=[], choices=CHAT_STATES,
                    help="a chat-state-only message sent to each --send JID before the body (repeatable)")
    xr.add_argument("--send-state-after", action="append", default=[], choices=CHAT_STATES,
                    help="a chat-state-only message sent after the body (repeatable)")
    xr.add_argument("--send-delay", type=float, default=0.0,
                    help="seconds between the chat-state messages and the body")
    xr.add_argument("--count", type=int, default=1,
                    help="stanzas to wait for, of the --count-kind kinds (default 1)")
    xr.add_argument("--count-kind", action="append", choices=["message", "chatstate", "error"],
                    help="kinds that count toward --count (repeatable; default message and error: "
                         "chat states are reported but not counted)")
    xr.add_argument("--timeout", type=float, default=15.0)

    sp = sub.add_parser("sip-presence", help="a SIP user for presence at %s (notifier and "
                        "subscriber), driven by JSON commands on stdin; JSON lines" % UA_ADDR)
    sp.add_argument("--dir", required=True)
    sp.add_argument("--user", action="append", default=[], metavar="URI",
                    help="a SIP user played here (repeatable; default sip:bob@contoso.test); the "
                         "first is the default subscriber and publisher")
    sp.add_argument("--port", type=int, default=SIP_PORT,
                    help="UDP port on %s (default %d, where the Edge delivers; a subscriber "
                         "next to a notifier uses another one, 0 = any)" % (UA_ADDR, SIP_PORT))
    sp.add_argument("--timeout", type=float, default=300.0, help="total run time cap (seconds)")
    sp.add_argument("--request-timeout", type=float, default=10.0,
                    help="seconds to wait for the final response to our own requests")
    sp.add_argument("--subscribe-status", type=int, default=200,
                    help="answer to new SUBSCRIBEs (default 200)")
    sp.add_argument("--max-expires", type=int, default=3600,
                    help="cap on the Expires granted to SUBSCRIBEs")
    sp.add_argument("--pending", action="store_true",
                    help="new subscriptions start pending (NOTIFY pending, no body) until "
                         "{\"cmd\": \"approve\"}")
    sp.add_argument("--basic", choices=["open", "closed"], default="open",
                    help="initial PIDF basic status of the users (default open)")
    sp.add_argument("--note", help="initial PIDF note")
    sp.add_argument("--activity", action="append", default=[],
                    help="initial RPID activity (away, busy, ...; repeatable)")
    sp.add_argument("--no-stdin", action="store_true",
                    help="read no commands (stdin EOF does not end it): run until --timeout")
    sp.add_argument("--message-status", type=int, default=200, help="answer to MESSAGE")
    sp.add_argument("--other-status", type=int, default=501,
                    help="answer to methods other than SUBSCRIBE, NOTIFY, MESSAGE, INFO, OPTIONS, BYE")

    xpr = sub.add_parser("xmpp-presence", help="log in as --user (no initial presence unless "
                         "--available), driven by JSON commands on stdin; JSON lines")
    xpr.add_argument("--dir", required=True)
    xpr.add_argument("--user", required=True, help="bare JID of a testbed user")
    xpr.add_argument("--resource", help="resource to bind (default: the server's choice)")
    xpr.add_argument("--available", action="store_true",
                     help="send initial presence before printing ready")
    xpr.add_argument("--show", choices=["away", "chat", "dnd", "xa"], help="with --available")
    xpr.add_argument("--status", help="with --available")
    xpr.add_argument("--priority", type=int, help="with --available")
    xpr.add_argument("--timeout", type=float, default=300.0, help="total run time cap (seconds)")
    xpr.add_argument("--no-stdin", action="store_true",
                     help="read no commands (stdin EOF does not end it): run until --timeout")
    sl = sub.add_parser("silent-listener", help="a TCP listener with a full accept queue: "
                        "connection attempts to it get no answer (a silently dropping firewall)")
    sl.add_argument("--dir", help="ignored (accepted like every other command)")
    sl.add_argument("--addr", default="127.0.30.1",
                    help="loopback address outside 127.0.10.0/24 (default %(default)s)")
    sl.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    sl.add_argument("--timeout", type=float, default=60.0, help="total run time cap (seconds)")
    sl.add_argument("--no-stdin", action="store_true",
                    help="do not end at the end of stdin: run until --timeout")
    return ap


def main(argv):
    # JSON output keeps non-ASCII text as is (UTF-8), whatever the caller's locale.
    sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace")
    args = build_parser().parse_args(argv)
    cmds = {"install": cmd_install, "up": cmd_up, "down": cmd_down, "restart": cmd_restart,
            "selftest": cmd_selftest, "gateway-config": cmd_gateway_config, "sip-send": cmd_sip_send,
            "sip-recv": cmd_sip_recv, "sip-session": cmd_sip_session,
            "xmpp-send": cmd_xmpp_probe, "xmpp-recv": cmd_xmpp_recv,
            "sip-presence": cmd_sip_presence, "xmpp-presence": cmd_xmpp_presence,
            "silent-listener": cmd_silent_listener}
    try:
        return cmds[args.cmd](args)
    except TestbedError as e:
        log("error: %s" % e)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
