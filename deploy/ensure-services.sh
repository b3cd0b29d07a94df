#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ answer on localhost; start them when they are installed
# but stopped; otherwise say plainly what is missing and how to get it.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 120); do port_open "$1" && return 0; sleep 0.5; done
  return 1
}

if ! port_open 5432; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    wait_port 5432 || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
  else
    echo "PostgreSQL is not running on 127.0.0.1:5432 and is not installed here." >&2
    echo "Install PostgreSQL 15+ (e.g. apt-get install postgresql) or use 'docker compose up'." >&2
    exit 1
  fi
fi

if ! port_open 5672; then
  if command -v rabbitmq-server >/dev/null; then
    echo "starting RabbitMQ"
    rabbitmq-server -detached
    # await_startup fails at once (exit 69) until the new node has registered with epmd,
    # which takes a moment after -detached returns: poll it, for up to three minutes.
    for _ in $(seq 1 90); do
      rabbitmqctl -q await_startup --timeout 10 >/dev/null 2>&1 && break
      sleep 2
    done
    wait_port 5672 || {
      echo "RabbitMQ did not come up on 127.0.0.1:5672; its log:" >&2
      tail -n 40 /var/log/rabbitmq/*.log >&2 2>/dev/null || true
      exit 1
    }
  else
    echo "RabbitMQ is not running on 127.0.0.1:5672 and is not installed here." >&2
    echo "Install RabbitMQ 3.10+ (e.g. apt-get install rabbitmq-server) or use 'docker compose up'." >&2
    exit 1
  fi
fi
