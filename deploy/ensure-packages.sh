#!/usr/bin/env bash
# Programs the tests drive for real, installed from Debian when missing:
#   chromium   the dashboard's browser tests (Playwright's own browser download cannot
#              reach its host from these machines)
#   pgbouncer  the tests of every service through a transaction-mode pooler
#   promtool   the alert rules' checks and unit tests (Debian's `prometheus` package)
# Otherwise say plainly what is missing and how to get it, so those tests fail instead of
# skipping.
set -euo pipefail

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
declare -A PACKAGE_OF=(
  ["$CHROMIUM"]=chromium
  [/usr/sbin/pgbouncer]=pgbouncer
  [/usr/bin/promtool]=prometheus
)

missing=()
for program in "${!PACKAGE_OF[@]}"; do
  [ -x "$program" ] || missing+=("${PACKAGE_OF[$program]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing ${missing[*]} (for the tests)"
  export DEBIAN_FRONTEND=noninteractive
  # --no-install-recommends; and the packages' own services are not wanted running.
  install() { apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
  install || { apt-get update >/dev/null && install; }
  for service in pgbouncer prometheus; do  # Debian starts them on install: stop them
    if command -v service >/dev/null; then service "$service" stop >/dev/null 2>&1 || true; fi
  done
fi
status=0
for program in "${!PACKAGE_OF[@]}"; do
  if [ ! -x "$program" ]; then
    echo "$program is missing; the tests need it." \
         "Install it (as root: apt-get install ${PACKAGE_OF[$program]})." >&2
    status=1
  fi
done
exit $status
