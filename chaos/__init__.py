"""Fault suite (`make chaos`): one fault at a time under a steady load of real call lifecycles.

    .venv/bin/python -m chaos [--faults a,b,...] [--short] [--rate R] [--duration S]
                              [--fault-at S] [--fault-seconds S] [--no-direct-write]

Each fault runs in a world of its own on a RabbitMQ node of the suite's own (or a cluster of
three), and is judged by what the sender saw answered 200 against what the database holds.

    rig.py       the world: sizes (`Plan`), services, proxies, the load, what is sampled
    faults.py    each webhook fault, and `run_fault`: one fault from a new world to its row
    verdict.py   what is checked (lost, counted twice, drained, resumed) and the table
    baseline.py  the direct-write baseline under the same Postgres cut
    sync.py      metrics-sync's faults, with a rig, checks and a table of their own
    outbound.py  the outbound webhooks' faults (receiver down, a dispatcher killed), the same
    __main__.py  the command line: every fault in turn, the table, the JSON

Results: `bench/results/chaos-<UTC>.json`. Everything the suite creates (node, databases,
prefixes, processes, mounts, temp dirs) is removed at the end, also when a run fails.
tests/test_chaos.py runs the same faults at the small sizes (`SHORT`, `SYNC_SHORT`,
`OUTBOUND_SHORT`).
"""
