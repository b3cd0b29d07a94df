"""`make mutate`: mutation testing (mutmut 3) of the modules that hold the rules.

mutmut 3 knows one source root (`src/`) and names each mutant by its path under it, while
this workspace has a root per package (`services/*/src`, `libs/*/src`). So the run happens
in var/mutation/: every package copied side by side under `src/`, the tests, and the root
pyproject.toml, whose `[tool.mutmut]` names the modules to mutate and the fast tests that
cover them. mutmut runs the clean tests once to learn which test executes which function,
then, for each mutant, only those tests. At the end: the score per module and in total, and
every mutant that survived. See docs/mutation.md.

    python deploy/mutate.py            # a fresh run
    python deploy/mutate.py --resume   # go on from var/mutation/mutants (after an interrupt)
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "var" / "mutation"
MUTMUT = Path(sys.executable).parent / "mutmut"

# The attribution rule is calltrail_common.attribution; the handler that applies it lives in a
# module that does more (the batch's transaction): only the mutants of those functions are
# run and counted.
MUTANTS = [
    "call_processor.calls.*",
    "call_processor.events.*",
    "call_processor.handlers.x__organizations__mutmut_*",
    "call_processor.handlers.x__resolve__mutmut_*",
    "ingest.auth.*",
    "ingest.spool.*",
    "calltrail_common.crypto.*",
    "calltrail_common.attribution.*",
    "metrics_sync.usage.*",
    "api.cursors.*",
    "calltrail_common.access.*",
    "api.dashboard.throttle.*",
    "api.exports.*",
    # the pure rules of recordings (the cache class is exercised by the api tests)
    *(f"api.recordings.x_{rule}__mutmut_*" for rule in ("stored_url", "url_expiry",
                                                        "keep_seconds")),
    # the agency rules only: the rest of the module is SQL, covered by the slower tests
    *(f"calltrail_common.agencies.x_{rule}__mutmut_*" for rule in (
        "parse_markup", "billed", "billed_float", "parse_accent", "parse_logo_url",
        "parse_host_name", "host_of", "cost_view")),
    "calltrail_common.outbound_targets.*",
    "calltrail_common.structured_outputs.*",
    "call_processor.outbound.*",
    "dispatcher.attempts.*",
    "dispatcher.messages.*",
    # issue 19's rules: the pure functions only (the SQL is covered by the slower tests)
    *(f"calltrail_common.time_zones.x_{rule}__mutmut_*" for rule in (
        "_known_names", "zone", "local_day", "today")),
    "calltrail_common.time_zones.xǁOrganizationZoneǁ*",
    *(f"calltrail_common.erasure.x_{rule}__mutmut_*" for rule in (
        "erased_number", "withheld_fields", "anonymous_outputs", "parse_retention")),
    *(f"calltrail_common.vapi_wiring.x_{rule}__mutmut_*" for rule in (
        "target_of", "same_url", "effective_messages", "missing_messages", "assess",
        "wired_messages", "wire_body", "unwire_body", "_with_provider", "credential_body")),
    "metrics_sync.names.*",
    # the live board's hub (its broker link, LiveFeed, is proven by the api's own tests)
    *(f"api.live.x_{rule}__mutmut_*" for rule in (
        "_ms", "board_call", "sse", "parse_event_id", "stream", "clock_event")),
    *(f"api.live.xǁ{cls}ǁ*" for cls in ("Board", "_Ring", "LiveHub")),
]
_RESULT = re.compile(r"^\s*(?P<name>\S+__mutmut_\d+): (?P<status>.+)$")
_MODULE = re.compile(r"^(?P<module>.+?)\.x[_ǁ]")
KILLED = {"killed", "timeout", "caught by type check"}


def stage() -> None:
    """The packages under src/, the tests and the configuration, as mutmut expects them."""
    shutil.rmtree(WORK, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    # Only the packages with a module to mutate: the others (the test kit, which finds the
    # samples next to itself) are imported from where they are installed.
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]
    for package in sorted({Path(path).parts[1] for path in config["only_mutate"]}):
        (source,) = [*REPO.glob(f"libs/*/src/{package}"), *REPO.glob(f"services/*/src/{package}")]
        shutil.copytree(source, WORK / "src" / package, ignore=ignore)
    shutil.copytree(REPO / "tests", WORK / "tests", ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", WORK / "pyproject.toml")


def run(max_children: int) -> int:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([str(MUTMUT), "run", "--max-children", str(max_children), *MUTANTS],
                          cwd=WORK, env=env, check=False).returncode


def report() -> bool:
    """Print the score per module and in total, and the survivors; True when at least 90%."""
    output = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=WORK,
                            capture_output=True, text=True, check=True).stdout
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    survivors = []
    for line in output.splitlines():
        match = _RESULT.match(line)
        if match is None:
            continue
        name, status = match.group("name"), match.group("status")
        if status == "not checked":
            continue  # not selected (the rest of the attribution rule's module)
        module = _MODULE.match(name)
        counts[module.group("module") if module else name][status] += 1
        if status not in KILLED:
            survivors.append((name, status))
    total = collections.Counter[str]()
    print(f"\n{'module':<28}{'mutants':>8}{'killed':>8}{'score':>8}")
    for module in sorted(counts):
        total.update(counts[module])
        print(_row(module, counts[module]))
    print(_row("total", total))
    for name, status in survivors:
        print(f"  {status}: {name}    (mutmut show {name})")
    killed = sum(total[s] for s in KILLED)
    return bool(total) and killed >= 0.9 * sum(total.values())


def _row(module: str, counts: collections.Counter[str]) -> str:
    mutants = sum(counts.values())
    killed = sum(counts[s] for s in KILLED)
    return f"{module:<28}{mutants:>8}{killed:>8}{killed / max(mutants, 1):>8.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resume", action="store_true",
                        help="keep var/mutation/mutants and go on where it stopped")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    if not args.resume:
        stage()
    code = run(args.max_children)
    if code != 0:
        sys.exit(f"mutmut run exited with {code}")
    if not report():
        sys.exit("mutation score below 90%")


if __name__ == "__main__":
    main()
