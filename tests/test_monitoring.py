"""deploy/monitoring: the alert rules, their unit tests, the Prometheus config and the Grafana
dashboard are valid, and speak of metrics that really exist.

promtool (Debian's `prometheus` package) checks the rules and the config and runs the rule
unit tests; without it these tests fail rather than skip, since nothing else can tell a rule
that never fires from one that works.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from calltrail_common.settings import Settings
from calltrail_common.topology import CALL_PROCESSOR, CONSUMERS, DISPATCHER, Topology

REPO = Path(__file__).resolve().parent.parent
MONITORING = REPO / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts.test.yml"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
DEFAULT_TOPOLOGY = Topology("calltrail")  # AMQP_PREFIX's default, which the rules assume

# What rabbitmq_prometheus's /metrics/detailed returns for each family it is asked for
# (deps/rabbitmq_prometheus/src/collectors/prometheus_rabbitmq_core_metrics_collector.erl,
# 3.10 to 3.13: the `rabbitmq_detailed_` prefix and the queue families' metrics).
RABBITMQ_DETAILED_FAMILIES = {
    "queue_coarse_metrics": {
        "rabbitmq_detailed_queue_messages_ready",
        "rabbitmq_detailed_queue_messages_unacked",
        "rabbitmq_detailed_queue_messages",
        "rabbitmq_detailed_queue_process_reductions_total",
    },
    "queue_consumer_count": {"rabbitmq_detailed_queue_consumers"},
}
# Series names each prometheus_client metric type is exposed under.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: `apt-get install prometheus` provides /usr/bin/promtool")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=60, check=False)


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _alert(name: str) -> dict[str, Any]:
    return next(rule for rule in _alert_rules() if rule["alert"] == name)


def _dashboard() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return parsed


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def _dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in _panels(_dashboard())
            for target in panel.get("targets", []) if target.get("expr")]


def _as_promql(grafana_expr: str) -> str:
    """A dashboard query as Prometheus receives it, Grafana's variables filled in."""
    return (grafana_expr.replace("$__rate_interval", "5m")
            .replace("$prefix", DEFAULT_TOPOLOGY.prefix))


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a tokenizer, not a parser: enough for
    the expressions written here, and tested below)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', " ", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    text = re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", " ", text)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if match.group() in PROMQL_KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue  # an operator, a function or an aggregation
        names.add(match.group())
    return names


@cache
def exported_metrics() -> dict[str, frozenset[str]]:
    """Each metric family the services export, with the series names it is scraped under.

    Found, not listed: every `services/*/src/*/metrics.py` is imported and each class in it
    that builds a registry with no arguments is instantiated (a new service's metrics are
    then checked too)."""
    families: dict[str, frozenset[str]] = {}
    for path in sorted(REPO.glob("services/*/src/*/metrics.py")):
        module = importlib.import_module(f"{path.parent.name}.metrics")
        for value in vars(module).values():
            if not isinstance(value, type) or value.__module__ != module.__name__:
                continue
            try:
                inspect.signature(value).bind()
            except TypeError:
                continue  # needs arguments: not a metrics holder
            registry = getattr(value(), "registry", None)
            if not isinstance(registry, CollectorRegistry):
                continue
            for family in registry.collect():
                families[family.name] = frozenset(family.name + suffix
                                                  for suffix in SUFFIXES[family.type])
    return families


def _scraped_rabbitmq_metrics() -> set[str]:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "rabbitmq")
    assert job["metrics_path"] == "/metrics/detailed"
    return {name for family in job["params"]["family"]
            for name in RABBITMQ_DETAILED_FAMILIES[family]}


# --- promtool ------------------------------------------------------------------------------

def test_the_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prometheus_config_and_the_rules_it_loads_pass_promtool_check() -> None:
    result = promtool("check", "config", PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(_alert_rules())} rules found" in result.stdout  # alerts.yml was loaded


# Where each service serves /metrics (the api's port of its own: decision 37).
SCRAPED_PORT_FIELD = {"ingest": "ingest_port", "call-processor": "processor_metrics_port",
                      "metrics-sync": "metrics_sync_metrics_port", "api": "api_metrics_port",
                      "dispatcher": "dispatcher_metrics_port"}


def test_each_service_is_scraped_on_its_metrics_port() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, field in SCRAPED_PORT_FIELD.items():
        (discovery,) = jobs[name]["dns_sd_configs"]
        assert discovery["port"] == Settings.model_fields[field].default, name
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics", name


def test_the_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def _with_alert_replaced(tmp_path: Path, name: str, expr: str) -> Path:
    """A copy of alerts.yml and its tests in which alert `name` has `expr` and no `for`."""
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                rule["expr"] = expr
                rule.pop("for", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts.test.yml")
    return tmp_path / "alerts.test.yml"


@pytest.mark.parametrize("name", [rule["alert"] for rule in _alert_rules()])
def test_each_alert_is_tested_both_firing_and_quiet(tmp_path: Path, name: str) -> None:
    # An alert that never fires must fail a test that expects it to fire...
    never = promtool("test", "rules", _with_alert_replaced(tmp_path, name, "vector(1) < 0"))
    assert never.returncode != 0, f"no test expects {name} to fire"
    assert f"alertname: {name}," in never.stdout + never.stderr
    # ...and one that always fires must fail a test that expects it to stay quiet.
    always = promtool("test", "rules", _with_alert_replaced(tmp_path, name, "vector(1)"))
    assert always.returncode != 0, f"no test expects {name} to stay quiet"
    assert re.search(rf"alertname: {name}, time: [^,]+, \n\s+exp:\[\],",
                     always.stdout + always.stderr), f"no test expects {name} to stay quiet"


# --- the rules themselves ------------------------------------------------------------------

def test_every_alert_has_a_severity_a_summary_and_a_runbook_line() -> None:
    rules = _alert_rules()
    assert len(rules) >= 5
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"].split()) >= 8, rule["alert"]


def test_the_rules_watch_the_queues_the_topology_declares() -> None:
    work = set(DEFAULT_TOPOLOGY.work_queues(CALL_PROCESSOR))  # the partitions, the overflow
    for name in ("CalltrailProcessorQueueGrowing", "CalltrailProcessorQueueHasNoConsumer"):
        [pattern] = re.findall(r"queue=~`([^`]+)`", _alert(name)["expr"])
        assert {q for q in DEFAULT_TOPOLOGY.all_queues() if re.fullmatch(pattern, q)} == work

    dispatcher = [DEFAULT_TOPOLOGY.queue(DISPATCHER)]
    for name in ("CalltrailDispatcherQueueGrowing", "CalltrailDispatcherQueueHasNoConsumer"):
        [pattern] = re.findall(r"queue=~`([^`]+)`", _alert(name)["expr"])
        assert [q for q in DEFAULT_TOPOLOGY.all_queues() if re.fullmatch(pattern, q)] == dispatcher

    # Every dead-letter queue but the dispatcher's (a dead webhook is CalltrailWebhooksDead's).
    expr = _alert("CalltrailDeadLettersArriving")["expr"]
    [pattern] = re.findall(r"queue=~`([^`]+)`", expr)
    excluded = set(re.findall(r'queue!="([^"]+)"', expr))
    assert excluded == {DEFAULT_TOPOLOGY.dead_letter_queue(DISPATCHER)}
    dead_letter_queues = {DEFAULT_TOPOLOGY.dead_letter_queue(c) for c in CONSUMERS} - excluded
    for queue in DEFAULT_TOPOLOGY.all_queues():  # PromQL regexes match the whole value
        watched = bool(re.fullmatch(pattern, queue)) and queue not in excluded
        assert watched == (queue in dead_letter_queues), queue


def test_the_dashboard_queue_matchers_name_the_topology_queues() -> None:
    exprs = [_as_promql(e) for e in _dashboard_exprs()]
    assert not [q for e in exprs for q in re.findall(r'queue="([^"]+)"', e)]
    patterns = [p.replace("\\\\", "\\") for e in exprs for p in re.findall(r'queue=~"([^"]+)"', e)]
    dead = {DEFAULT_TOPOLOGY.dead_letter_queue(c) for c in CONSUMERS}
    retry = {DEFAULT_TOPOLOGY.retry_queue(c, d) for c in CONSUMERS for d in c.retry_delays_ms}
    work = set(DEFAULT_TOPOLOGY.work_queues(CALL_PROCESSOR))
    dispatcher = {DEFAULT_TOPOLOGY.queue(DISPATCHER)}
    matched = {frozenset(q for q in DEFAULT_TOPOLOGY.all_queues() if re.fullmatch(p, q))
               for p in patterns}
    assert matched == {frozenset(dead), frozenset(retry), frozenset(work),
                       frozenset(dispatcher)}


# --- metric names --------------------------------------------------------------------------

def test_metric_names_finds_the_selected_metrics_and_nothing_else() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, route) (rate(a_seconds_bucket{x="y z"}[5m])))'
            ' / ignoring (q) b_total offset 1h > bool 1e3 and on () max(c{q=~`d.+`}) or vector(1)')
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c"}
    assert metric_names('sum(rate(x_total[$__rate_interval])) / max by (q) (y{q="$prefix.z"})'
                        ) == {"x_total", "y"}


def test_the_services_export_the_metrics_they_are_known_for() -> None:
    families = exported_metrics()
    for family in ("calltrail_ingest_requests", "calltrail_ingest_spool_depth",
                   "calltrail_processor_events", "calltrail_processor_lag_seconds",
                   "calltrail_sync_failures", "calltrail_api_request_seconds",
                   "calltrail_dispatcher_deliveries", "calltrail_dispatcher_relay_lag_seconds"):
        assert family in families, f"{family} is not exported: is its service's metrics.py found?"
    assert "calltrail_processor_events_total" in families["calltrail_processor_events"]
    assert "calltrail_api_request_seconds_bucket" in families["calltrail_api_request_seconds"]


@pytest.mark.parametrize("where", ["alerts", "dashboard"])
def test_every_metric_queried_is_exported_by_a_service_or_scraped_from_rabbitmq(
        where: str) -> None:
    exprs = ([rule["expr"] for rule in _alert_rules()] if where == "alerts"
             else _dashboard_exprs())
    known = {name for names in exported_metrics().values() for name in names}
    rabbitmq = _scraped_rabbitmq_metrics()
    used = set().union(*(metric_names(e) for e in exprs))
    assert used, "no metric found: the tokenizer or the file is broken"
    unknown = {name for name in used if name not in known and name not in rabbitmq}
    assert not unknown, f"{where} query metrics nobody exports (or not scraped): {unknown}"


def test_every_metric_a_service_exports_has_a_panel() -> None:
    used = set().union(*(metric_names(e) for e in _dashboard_exprs()))
    missing = sorted(family for family, names in exported_metrics().items()
                     if family.startswith("calltrail_") and not names & used)
    assert not missing, f"metrics without a dashboard panel: {missing}"


# --- the dashboard as Grafana reads it -----------------------------------------------------

def test_the_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels), "panel ids repeat"
    queried = [p for p in panels if p["type"] != "row"]
    assert queried
    for panel in queried:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses a rule's expression: each query becomes a recording rule.
    rules = [{"record": f"dashboard:query_{n}", "expr": _as_promql(expr)}
             for n, expr in enumerate(_dashboard_exprs())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_has_a_row_for_every_service_and_the_broker() -> None:
    rows = {p["title"] for p in _dashboard()["panels"] if p["type"] == "row"}
    services = {path.name for path in (REPO / "services").iterdir()
                if (path / "src").is_dir() and list(path.glob("src/*/metrics.py"))}
    assert services == {"ingest", "call-processor", "metrics-sync", "api", "dispatcher"}
    assert rows == services | {"RabbitMQ"}
