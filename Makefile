# xsgw — build, test, demo and install.
#   make demo      bring up the testbed of real peers and xsgw on a generated configuration
#   make test      lint, then unit, integration and testbed tests (installs what they need)
#   make lint      cargo fmt --check and clippy with warnings as errors (clippy.toml: the core/shell line)
#   make static    a fully static x86_64 binary (musl), size printed
#   make install   PREFIX=/usr/local DESTDIR= : binary, sample configuration, init script, unit
#   make deb       target/deb/xsgw_<version>_amd64.deb from the static binary (lintian-clean)
#   make fuzz      FUZZ_SECONDS=60 : each fuzz target for that long (fuzz/README.md)
#   make bench     protocol cores, then xsgw end to end between its own load generators

PREFIX     ?= /usr/local
DESTDIR    ?=
SYSCONFDIR ?= /etc
CARGO      ?= cargo
# Debian's python3: python3-slixmpp is installed for it, not for other pythons on PATH.
PYTHON     ?= /usr/bin/python3
MUSL       := x86_64-unknown-linux-musl
STATIC_BIN := target/$(MUSL)/release/xsgw
MAX_STATIC := 4194304
VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DEB_DIR    := target/deb
export DEBIAN_FRONTEND := noninteractive

.PHONY: all build static lint test test-deps unit-test testbed-test install-test deb deb-test bench bench-peers demo install clean \
	fuzz fuzz-smoke fuzz-build fuzz-corpus fuzz-deps

all: build

build:
	$(CARGO) build --release
	@ls -l target/release/xsgw

# ring builds C and assembly: with musl it needs musl-gcc (musl-tools).
static:
	@rustup target list --installed 2>/dev/null | grep -qx $(MUSL) || rustup target add $(MUSL)
	@command -v musl-gcc >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends musl-tools; }
	CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --release --target $(MUSL)
	@size=$$(stat -c %s $(STATIC_BIN)); \
	  echo "$(STATIC_BIN): $$size bytes ($$(( size / 1024 )) KiB)"; \
	  file $(STATIC_BIN); ldd $(STATIC_BIN) 2>&1 | sed 's/^/ldd: /'; \
	  file $(STATIC_BIN) | grep -Eq 'statically linked|static-pie linked' || { echo "not static"; exit 1; }; \
	  [ $$size -le $(MAX_STATIC) ] || { echo "larger than 4 MiB"; exit 1; }

# Everything the tests need on a fresh Debian machine: openssl for test certificates, and the
# real peers of the testbed (Prosody, Kamailio, SIPp, dnsmasq, slixmpp).
test-deps:
	@command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends openssl; }
	@[ -x $(PYTHON) ] || { apt-get update -qq && apt-get install -y -qq --no-install-recommends python3; }
	$(PYTHON) tests/testbed/testbed.py install

unit-test:
	$(CARGO) test

testbed-test:
	$(PYTHON) tests/testbed/testbed.py selftest

# First in `make test`, since it fails fastest: formatting, then clippy on every target with
# warnings as errors, which also checks that the protocol cores read no clock and own no
# thread, socket, channel or lock (clippy.toml, src/lib.rs).
lint:
	$(CARGO) fmt --check
	$(CARGO) fmt --check --manifest-path fuzz/Cargo.toml
	$(CARGO) clippy --all-targets -- -D warnings

test: lint test-deps unit-test testbed-test install-test deb-test fuzz-smoke

# make install into a scratch DESTDIR with another PREFIX: every file lands, paths follow PREFIX.
install-test:
	@d=$$(mktemp -d); $(MAKE) --no-print-directory install DESTDIR=$$d PREFIX=/opt/xsgw >/dev/null && \
	  for f in opt/xsgw/bin/xsgw etc/xsgw/xsgw.ini etc/init.d/xsgw opt/xsgw/lib/systemd/system/xsgw.service; do \
	    [ -f $$d/$$f ] || { echo "install-test: $$f missing"; exit 1; }; done && \
	  grep -q '^ExecStart=/opt/xsgw/bin/xsgw run' $$d/opt/xsgw/lib/systemd/system/xsgw.service && \
	  grep -q '^DAEMON=/opt/xsgw/bin/xsgw' $$d/etc/init.d/xsgw && \
	  $$d/opt/xsgw/bin/xsgw version && rm -rf $$d && echo "install-test: ok"

# The Debian package: static binary, man pages generated from the key table, maintainer
# scripts from packaging/deb/.
deb: static
	@command -v dpkg-deb >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends dpkg; }
	@mkdir -p $(DEB_DIR)/man
	$(CARGO) run --quiet --example manpages -- $(DEB_DIR)/man
	packaging/deb/build.sh $(VERSION) $(STATIC_BIN) $(DEB_DIR)/man $(DEB_DIR)

# The package as an admin meets it, in a throwaway overlay of this machine's root: lintian
# without errors; install, `xsgw check`, upgrade over an edited conffile, remove, purge.
deb-test: deb
	@command -v lintian >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends lintian; }
	tests/deb-test.sh $(DEB_DIR)/xsgw_$(VERSION)_amd64.deb $(VERSION) $(STATIC_BIN) $(DEB_DIR)/man

# Fuzzing (fuzz/README.md): one libFuzzer target per parser that takes network or file input.
# The toolchain is the machine's: nightly when rustup has it, else stable with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags). The corpus is built at run time in
# fuzz/corpus/ (not in git) from fuzz/seeds/, the RFC 4475 messages of
# $(XSGW_SHARED_DIR)/conformance/rfc4475 and etc/xsgw.ini; crashes land in fuzz/artifacts/.
FUZZ_TARGETS       := xmpp_stream xmpp_fragment xmpp_inbound xmpp_outbound sip_frame sip_message \
                      sip_link sdp pidf iscomposing dns_answer resolv_conf config state_file \
                      addresses
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 8
FUZZ_SANITIZER     ?= none
XSGW_SHARED_DIR    ?= ../shared
FUZZ_TOOLCHAIN     := $(shell rustup toolchain list 2>/dev/null | grep -q '^nightly' && echo +nightly)
FUZZ_CARGO         := $(if $(FUZZ_TOOLCHAIN),,RUSTC_BOOTSTRAP=1 )$(CARGO) $(FUZZ_TOOLCHAIN) fuzz
FUZZ_FLAGS          = -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
# Per target: its dictionary; whole streams get inputs longer than the smallest max_stanza
# (4096) so that the limits are reached.
FUZZ_TARGET_FLAGS   = case $$t in \
	  xmpp_stream|xmpp_inbound|xmpp_outbound) f="-dict=dict/xml.dict -max_len=20000";; \
	  xmpp_fragment|pidf|iscomposing) f="-dict=dict/xml.dict";; \
	  sip_frame|sip_message|sip_link|sdp|dns_answer|addresses) f="-dict=dict/sip.dict";; \
	  *) f="";; esac
# $(1): seconds per target. Stops at the first target that finds a crash (see fuzz/artifacts/).
fuzz_run = cd fuzz && for t in $(FUZZ_TARGETS); do \
	  $(FUZZ_TARGET_FLAGS); log=target/fuzz-$$t.log; \
	  if $(FUZZ_CARGO) run -s $(FUZZ_SANITIZER) $$t corpus/$$t -- \
	       -max_total_time=$(1) $(FUZZ_FLAGS) $$f >$$log 2>&1; then \
	    echo "fuzz $$t: $$(grep -E '^stat::(number_of_executed_units|peak_rss_mb)' $$log | tr '\n' ' ')$$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' $$log | tail -1)"; \
	  else tail -30 $$log; echo "fuzz $$t FAILED: fuzz/$$log, input in fuzz/artifacts/$$t/"; exit 1; fi; done

fuzz-deps:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

fuzz-build: fuzz-deps
	cd fuzz && $(FUZZ_CARGO) build -s $(FUZZ_SANITIZER)

fuzz-corpus:
	@for t in $(FUZZ_TARGETS); do mkdir -p fuzz/corpus/$$t && cp fuzz/seeds/$$t/* fuzz/corpus/$$t/; done
	@if [ -d $(XSGW_SHARED_DIR)/conformance/rfc4475 ]; then \
	  for t in sip_frame sip_message sip_link; do cp $(XSGW_SHARED_DIR)/conformance/rfc4475/*.dat fuzz/corpus/$$t/; done; \
	else echo "fuzz-corpus: no $(XSGW_SHARED_DIR)/conformance/rfc4475: SIP targets start from fuzz/seeds only"; fi
	@cp etc/xsgw.ini fuzz/corpus/config/xsgw.ini

# Each target for FUZZ_SECONDS (default 60); the corpus grows in fuzz/corpus/ between runs.
fuzz: fuzz-build fuzz-corpus
	@$(call fuzz_run,$(FUZZ_SECONDS))

# Part of `make test`: each target replays its corpus, then mutates it for FUZZ_SMOKE_SECONDS.
fuzz-smoke: fuzz-build fuzz-corpus
	@$(call fuzz_run,$(FUZZ_SMOKE_SECONDS))

# Throughput figures of the protocol cores (release build); compare ratios within one run.
# The real peers' figures first (bench-peers), so that ratios come from the same run; then
# xsgw end to end between the bench's own partner server and Edge (benches/e2e/):
# target/bench/e2e.json; E2E_* variables scale it (README, "Measuring it").
bench: bench-peers build
	$(CARGO) bench --bench parsers
	$(CARGO) bench --bench e2e

# The testbed's real peers (Prosody -> Prosody S2S, Kamailio's mutual-TLS path) and xsgw
# between them, driven by SIPp and slixmpp (benches/peers.py; PEERS_* variables scale it,
# ~2 minutes by default): a table, and target/bench/peers.json. Takes the testbed lock.
bench-peers: test-deps build
	$(PYTHON) benches/peers.py

demo: test-deps build
	./tests/demo.sh

install: build
	install -D -m 0755 target/release/xsgw $(DESTDIR)$(PREFIX)/bin/xsgw
	install -d -m 0750 $(DESTDIR)$(SYSCONFDIR)/xsgw
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/xsgw/xsgw.ini ]; then \
	  echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/xsgw/xsgw.ini; sample installed as xsgw.ini.sample"; \
	  install -m 0640 etc/xsgw.ini $(DESTDIR)$(SYSCONFDIR)/xsgw/xsgw.ini.sample; \
	else install -m 0640 etc/xsgw.ini $(DESTDIR)$(SYSCONFDIR)/xsgw/xsgw.ini; fi
	install -d $(DESTDIR)$(SYSCONFDIR)/init.d $(DESTDIR)$(PREFIX)/lib/systemd/system
	sed 's|/usr/local/bin/xsgw|$(PREFIX)/bin/xsgw|g; s|/etc/xsgw/|$(SYSCONFDIR)/xsgw/|g' etc/init.d/xsgw > $(DESTDIR)$(SYSCONFDIR)/init.d/xsgw
	chmod 0755 $(DESTDIR)$(SYSCONFDIR)/init.d/xsgw
	sed 's|/usr/local/bin/xsgw|$(PREFIX)/bin/xsgw|g; s|/etc/xsgw/|$(SYSCONFDIR)/xsgw/|g; s|/usr/local/share|$(PREFIX)/share|g' etc/xsgw.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/xsgw.service
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/xsgw/README.md
	@echo "installed under $(DESTDIR)$(PREFIX); create the user with: useradd --system --home /var/lib/xsgw --shell /usr/sbin/nologin xsgw"

clean:
	$(CARGO) clean
	rm -rf demo build fuzz/target
