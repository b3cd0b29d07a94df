"""Calltrail's test kit: what tests, benchmarks, the fault suite and `make demo` run the
services against, so that none of them copies it and none imports another's.

    fake_vapi     the Vapi REST API, served for real over HTTP (`python -m ...fake_vapi`)
    webhook_receiver  a receiver of outbound webhooks: records, verifies, misbehaves on
                  request (`python -m ...webhook_receiver`)
    vapi_sender   Vapi's side of a webhook: raw HTTP/1.1 requests and an open-loop sender
                  that retries with a back-off plan like Vapi's
    lifecycles    Vapi call lifecycles: seeded traffic, and hypothesis strategies
    samples       the Vapi sample payloads (tests/fixtures/vapi)
    stack         a prefix, a migrated database and the services as processes
    processes     a process with its log, free ports, CPU and memory readings
    rabbit_node   RabbitMQ nodes and clusters of our own, stopped and frozen for real
    pgbouncer     a PgBouncer in transaction mode with TLS, as managed Postgres is reached
    tcp_proxy     a proxy that cuts, stalls or delays a link (`python -m ...tcp_proxy`)
    direct_write  the design Calltrail replaces, as a server to compare with
    state         the observable state and the invariants between calls, leads and stats

Imported by tests/, bench/, chaos/ and deploy/demo.py; never by a service or by
calltrail_common (tests/test_layout.py checks it).
"""
