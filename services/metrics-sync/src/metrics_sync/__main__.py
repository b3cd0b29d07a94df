"""`calltrail-metrics-sync`: placeholder until the service lands."""


def main() -> None:
    raise SystemExit("metrics-sync is not built yet")
