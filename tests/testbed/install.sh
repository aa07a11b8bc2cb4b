#!/bin/sh
# Installs the Debian packages the xsgw testbed needs (idempotent; fast when present).
# Same as: /usr/bin/python3 tests/testbed/testbed.py install
set -eu
exec /usr/bin/python3 "$(dirname "$0")/testbed.py" install "$@"
