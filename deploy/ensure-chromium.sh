#!/usr/bin/env bash
# The dashboard's browser tests drive Debian's Chromium (Playwright's own browser download
# cannot reach its host from these machines). Install it when it is missing; otherwise say
# plainly what is missing and how to get it, so the browser tests fail instead of skipping.
set -euo pipefail

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] && exit 0

if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing chromium (for the dashboard's browser tests)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends chromium >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "Chromium is not at $CHROMIUM; the dashboard's browser tests need it." >&2
  echo "Install it (as root: apt-get install chromium) or set CHROMIUM_PATH." >&2
  exit 1
fi
