#!/usr/bin/env bash
# `make up` / `make down`: Docker Compose where a Docker engine runs; otherwise the services
# run natively as background processes against PostgreSQL and RabbitMQ on localhost, with
# pid files and logs under var/.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=var/run
LOG_DIR=var/log
# Each service: name, console script, health URL (empty: none).
SERVICES=(
  "ingest calltrail-ingest http://127.0.0.1:${INGEST_PORT:-8000}/healthz"
  "call-processor calltrail-processor"
  "metrics-sync calltrail-metrics-sync http://127.0.0.1:${METRICS_SYNC_METRICS_PORT:-9102}/healthz"
  "api calltrail-api http://127.0.0.1:${API_PORT:-8001}/healthz"
  "dispatcher calltrail-dispatcher http://127.0.0.1:${DISPATCHER_METRICS_PORT:-9104}/healthz"
)

docker_engine() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

# metrics-sync, the api and the CLI need ENCRYPTION_KEY (>= 32 characters) to seal Vapi API
# keys. A fresh clone has none: create .env from .env.example with a random key, once. Keep
# it: a lost key means reconnecting every Vapi account.
ensure_encryption_key() {
  [ -n "${ENCRYPTION_KEY:-}" ] && return
  [ -f .env ] || cp .env.example .env
  if grep -q '^ENCRYPTION_KEY=$' .env; then
    key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
    sed -i "s|^ENCRYPTION_KEY=$|ENCRYPTION_KEY=$key|" .env
    echo "ENCRYPTION_KEY generated into .env (keep it secret, keep it safe)"
  fi
}

native_up() {
  deploy/ensure-services.sh
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  .venv/bin/calltrail migrate >/dev/null
  for entry in "${SERVICES[@]}"; do
    read -r name script health <<<"$entry"
    health=${health:-}
    pidfile="$RUN_DIR/$name.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "$name already running (pid $(cat "$pidfile"))"; continue
    fi
    nohup ".venv/bin/$script" >>"$LOG_DIR/$name.log" 2>&1 &
    echo $! >"$pidfile"
    if [ -n "$health" ]; then
      for _ in $(seq 1 100); do
        curl -fsS "$health" >/dev/null 2>&1 && break
        kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "$name failed to start; see $LOG_DIR/$name.log" >&2; exit 1; }
        sleep 0.1
      done
    else
      sleep 1
      kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "$name failed to start; see $LOG_DIR/$name.log" >&2; exit 1; }
    fi
    echo "$name started (pid $(cat "$pidfile"), log $LOG_DIR/$name.log)"
  done
  echo "ingest: http://localhost:${INGEST_PORT:-8000}/webhooks/vapi"
  echo "api:    http://localhost:${API_PORT:-8001}/api (OpenAPI: /openapi.json)"
  echo "dashboard: http://localhost:${API_PORT:-8001}/ (make demo prints people to sign in as)"
}

native_down() {
  # The services, and what `make demo` started beside them (the fake Vapi API).
  for entry in "${SERVICES[@]}" "fake-vapi"; do
    read -r name _ _ <<<"$entry"
    pidfile="$RUN_DIR/$name.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "$name stopped"
    fi
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  up)   ensure_encryption_key
        if docker_engine; then docker compose up -d --build --wait; else native_up; fi ;;
  down) if docker_engine && [ ! -d "$RUN_DIR" ]; then docker compose down; else native_down; fi ;;
  *)    echo "usage: $0 up|down" >&2; exit 2 ;;
esac
