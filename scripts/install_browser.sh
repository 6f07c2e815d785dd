#!/usr/bin/env bash
# Headless Chromium for the leaderboard's browser test (tests/test_site_browser.py).
#
# Chromium comes from the distribution (apt), Playwright for Python from the venv's pip. Playwright's own
# browser download (`playwright install`) is never used: the test launches /usr/bin/chromium directly.
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    echo "chromium: $CHROMIUM already installed"
else
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "chromium: installing the Debian package (apt-get)"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi

if "$PY" -c "import playwright" 2>/dev/null; then
    echo "playwright: already installed in $PY"
else
    echo "playwright: installing into $PY (no browser download)"
    "$PY" -m pip install -q playwright
fi
