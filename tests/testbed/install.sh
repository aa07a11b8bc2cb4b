#!/bin/sh
# Installs the Debian packages the xsgw testbed needs (idempotent; fast when present).
# Same as `/usr/bin/python3 tests/testbed/testbed.py install`, plus Debian's python3
# itself on a machine that lacks it.
set -eu
if [ ! -x /usr/bin/python3 ]; then
    export DEBIAN_FRONTEND=noninteractive
    if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
        apt-get update -q
    fi
    apt-get install -y -q --no-install-recommends python3
fi
exec /usr/bin/python3 "$(dirname "$0")/testbed.py" install "$@"
