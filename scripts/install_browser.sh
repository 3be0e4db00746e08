#!/bin/sh
# Install the browser that tests/test_browser.py drives: Debian's `chromium` at /usr/bin/chromium.
# Playwright cannot download its own browser here (no internet), so it is pointed at this one.
# Idempotent: does nothing when /usr/bin/chromium is already there. `make test` runs it.
set -eu

if [ -x /usr/bin/chromium ]; then
    echo "install_browser: $(/usr/bin/chromium --version 2>/dev/null) already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    # macOS and non-Debian systems: the browser test skips there (it needs /usr/bin/chromium)
    echo "install_browser: no apt-get here; tests/test_browser.py will be skipped (it needs /usr/bin/chromium)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "install_browser: installing Debian's chromium package (apt-get)"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
/usr/bin/chromium --version 2>/dev/null
