"""deploy/k8s, offline: every overlay renders with kubectl's built-in kustomize, the built-in
objects validate against Kubernetes' own schemas (kubernetes-validate, strict), and the
operators' objects (KEDA, RabbitMQ, CloudNativePG) use only fields we know they have. Then
the promises the services rely on: probes, limits, secrets only by reference, settings
spelled as the settings model spells them, every workload scaled and under a disruption
budget, grace periods longer than each service's drain, migrations before the pods.

Nothing here needs a cluster, Postgres or RabbitMQ.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from starlette.routing import Mount

from calltrail_common.settings import Settings
from calltrail_common.topology import CALL_PROCESSOR, DISPATCHER, Topology
from dispatcher.worker import RECORDER_CLOSE_SECONDS, shutdown_grace_seconds
from metrics_sync.worker import SHUTDOWN_GRACE_SECONDS as SYNC_SHUTDOWN_GRACE_SECONDS

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
VENV_BIN = REPO / ".venv" / "bin"
MIGRATIONS = REPO / "libs" / "common" / "src" / "calltrail_common" / "migrations"

OVERLAYS = ("cnpg", "managed")
# The oldest Kubernetes the manifests promise to work on (deploy/k8s/README.md).
KUBERNETES_VERSION = "1.30"
IMAGE = "ghcr.io/calltrail/calltrail"
# Created out of band (README.md); the operators generate the others.
APP_SECRET = "calltrail"
RABBITMQ_SECRET_SUFFIX = "-default-user"  # RabbitMQ Cluster Operator: <cluster>-default-user
CNPG_SECRET_SUFFIX = "-app"  # CloudNativePG: <cluster>-app, the database owner's credentials
# The objects no Kubernetes schema covers, each checked below by a test of its own.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "Pooler"),
}
# The KEDA trigger parameters the manifests may use (metadata, then authentication).
KEDA_TRIGGER_METADATA = {
    "rabbitmq": {"host", "protocol", "mode", "value", "activationValue", "queueName",
                 "vhostName", "excludeUnacknowledged", "useRegex", "operation"},
    "postgresql": {"query", "targetQueryValue", "activationTargetQueryValue", "host", "port",
                   "userName", "dbName", "sslmode"},
}
KEDA_AUTH_PARAMETERS = {
    "rabbitmq": {"host", "username", "password"},
    "postgresql": {"connection", "password"},
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
SERVICES = ("ingest", "call-processor", "metrics-sync", "api", "dispatcher")
# The settings field holding the port each service serves /healthz, /readyz and /metrics on.
PROBE_PORT_FIELD = {
    "ingest": "ingest_port",
    "api": "api_port",
    "call-processor": "processor_metrics_port",
    "metrics-sync": "metrics_sync_metrics_port",
    "dispatcher": "dispatcher_metrics_port",
}
# The settings field holding the port each service serves /metrics on, for Prometheus: the
# api's is a port of its own, which no Ingress reaches (decision 37).
METRICS_PORT_FIELD = {**PROBE_PORT_FIELD, "api": "api_metrics_port"}
# metrics-sync hands runs that outlived its grace period back to the queue within this
# (metrics_sync.worker, MetricsSync._sync_one).
SYNC_HAND_BACK_SECONDS = 5.0
# Closing the broker link and the pool, and the process's exit, after the drain.
CLOSE_SECONDS = 5.0
# Variables read by a server library, not by the settings model, and the container each
# is set on: uvicorn's trust in X-Forwarded-* (the api sits behind the Ingress).
SERVER_VARIABLES = {"api": {"FORWARDED_ALLOW_IPS"}}
SECRET_ISH_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|^DATABASE_URL$|^AMQP_URL$")
CREDENTIALS_IN_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)

Manifest = dict[str, Any]


class ManifestSettings(Settings):
    """The settings model fed only what a manifest sets: not this machine's environment,
    not a `.env` file."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


# --- rendering ----------------------------------------------------------------------------


@functools.cache
def render(overlay: str) -> tuple[Manifest, ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) renders deploy/k8s; install it"
    result = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"kubectl kustomize {overlay}: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def manifests(overlay: str) -> tuple[Manifest, ...]:
    return render(overlay)


def of_kind(manifests: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    found = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(manifests: tuple[Manifest, ...]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in WORKLOAD_KINDS]


def workload(manifests: tuple[Manifest, ...], name: str) -> Manifest:
    found = [m for m in workloads(manifests) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one workload {name}, found {len(found)}"
    return found[0]


def pod_spec(manifest: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def main_container(manifest: Manifest) -> dict[str, Any]:
    name = manifest["metadata"]["name"]
    found = [c for c in pod_spec(manifest)["containers"] if c["name"] == name]
    assert len(found) == 1, f"{name}: no container named after the workload"
    return found[0]


def all_containers(manifests: tuple[Manifest, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    for manifest in manifests:
        if manifest["kind"] in (*WORKLOAD_KINDS, "Job"):
            spec = pod_spec(manifest)
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                yield f"{manifest['kind']}/{manifest['metadata']['name']}", container


def literal_env(manifests: tuple[Manifest, ...], container: dict[str, Any]) -> dict[str, str]:
    """What the container's environment holds in the clear: its ConfigMaps, then `value`s."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, "envFrom only from ConfigMaps (secrets by name)"
        env.update(one(manifests, "ConfigMap", source["configMapRef"]["name"])["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
    return env


def secret_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each variable read from a Secret, and its secretKeyRef."""
    return {v["name"]: v["valueFrom"]["secretKeyRef"] for v in container.get("env", [])
            if "secretKeyRef" in v.get("valueFrom", {})}


def settings_of(manifests: tuple[Manifest, ...], container: dict[str, Any]) -> Settings:
    """The settings a container's process starts with, as far as the manifests decide."""
    values: dict[str, Any] = {k.lower(): v for k, v in literal_env(manifests, container).items()}
    return ManifestSettings(**values)


def named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    found = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert found, f"{container['name']}: no port named {port!r}"
    return int(found[0])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def image_tag(image: str) -> str:
    name, _, tag = image.rpartition(":")
    assert name == IMAGE, f"{image}: not the Calltrail image"
    return tag


def scaled_objects_for(manifests: tuple[Manifest, ...], manifest: Manifest) -> list[Manifest]:
    return [s for s in of_kind(manifests, "ScaledObject")
            if s["spec"]["scaleTargetRef"].get("kind", "Deployment") == manifest["kind"]
            and s["spec"]["scaleTargetRef"]["name"] == manifest["metadata"]["name"]]


def trigger_authentication(manifests: tuple[Manifest, ...], trigger: dict[str, Any]
                           ) -> dict[str, dict[str, Any]]:
    """The trigger's authentication: each parameter and its secretTargetRef."""
    auth = one(manifests, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    return {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}


def readme() -> str:
    return (K8S / "README.md").read_text()


# --- rendering and schemas ----------------------------------------------------------------


def test_every_overlay_is_tested() -> None:
    on_disk = {p.name for p in (K8S / "overlays").iterdir() if p.is_dir()}
    assert on_disk == set(OVERLAYS)


def test_every_object_validates_against_its_schema(manifests: tuple[Manifest, ...]) -> None:
    for manifest in manifests:
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # Not a built-in kind: then one whose fields a test below checks.
            assert (manifest["apiVersion"], manifest["kind"]) in CUSTOM_KINDS, \
                f"{name} ({manifest['apiVersion']}) is checked by no schema and no test"
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{name} is not valid Kubernetes {KUBERNETES_VERSION}: {path}: "
                        f"{error.message}")


def test_keda_objects_use_only_fields_keda_has(manifests: tuple[Manifest, ...]) -> None:
    # No package carries KEDA's CRD schema without side effects (cloudcoil's models bring a
    # pytest plugin into every run), so: the fields we use, spelled as KEDA's CRDs and
    # scaler docs spell them (keda.sh/v1alpha1, KEDA 2.16).
    for scaled in of_kind(manifests, "ScaledObject"):
        spec = scaled["spec"]
        assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount",
                             "pollingInterval", "advanced", "triggers"}
        assert set(spec["scaleTargetRef"]) <= {"apiVersion", "kind", "name"}
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert set(spec["advanced"]) == {"horizontalPodAutoscalerConfig"}
        assert set(spec["advanced"]["horizontalPodAutoscalerConfig"]) == {"behavior"}
        # KEDA hands this to the HPA it creates: it must be a valid autoscaling/v2 behavior.
        kubernetes_validate.validate({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "keda"},
            "spec": {"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": 1,
                     "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]},
        }, KUBERNETES_VERSION, strict=True)
        for trigger in spec["triggers"]:
            assert set(trigger) == {"type", "metadata", "authenticationRef"}
            assert set(trigger["authenticationRef"]) == {"name"}
            assert set(trigger["metadata"]) <= KEDA_TRIGGER_METADATA[trigger["type"]]
            # Trigger metadata is a map of strings: KEDA refuses numbers.
            assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger
            parameters = set(trigger_authentication(manifests, trigger))
            assert parameters <= KEDA_AUTH_PARAMETERS[trigger["type"]]
    for auth in of_kind(manifests, "TriggerAuthentication"):
        assert set(auth["spec"]) == {"secretTargetRef"}
        for ref in auth["spec"]["secretTargetRef"]:
            assert set(ref) == {"parameter", "name", "key"}


def test_rabbitmq_runs_as_a_three_node_cluster_with_prometheus(
        manifests: tuple[Manifest, ...]) -> None:
    # The RabbitmqCluster fields we rely on, spelled as in its CRD (rabbitmq.com/v1beta1).
    clusters = of_kind(manifests, "RabbitmqCluster")
    assert len(clusters) == 1
    cluster = clusters[0]
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    spec = cluster["spec"]
    assert set(spec) <= {"replicas", "image", "resources", "persistence", "rabbitmq"}
    assert spec["replicas"] == 3  # quorum queues: a majority survives one node's loss
    assert set(spec["rabbitmq"]) <= {"additionalPlugins", "additionalConfig"}
    assert "rabbitmq_prometheus" in spec["rabbitmq"]["additionalPlugins"]
    assert set(spec["persistence"]) <= {"storage", "storageClassName"}
    assert {"cpu", "memory"} <= set(spec["resources"]["limits"])


def test_cnpg_overlay_runs_postgres_behind_a_transaction_pooler(overlay: str) -> None:
    manifests = render(overlay)
    clusters, poolers = of_kind(manifests, "Cluster"), of_kind(manifests, "Pooler")
    if overlay == "managed":
        assert clusters == [] and poolers == []  # the database is outside the cluster
        return
    # The CloudNativePG fields we rely on, spelled as in its CRDs (postgresql.cnpg.io/v1).
    assert len(clusters) == 1 and len(poolers) == 1
    cluster, pooler = clusters[0], poolers[0]
    assert cluster["apiVersion"] == pooler["apiVersion"] == "postgresql.cnpg.io/v1"
    assert set(cluster["spec"]) <= {"instances", "bootstrap", "postgresql", "storage",
                                    "resources"}
    assert cluster["spec"]["instances"] >= 2
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    assert set(initdb) <= {"database", "owner"}
    assert set(pooler["spec"]) <= {"cluster", "instances", "type", "pgbouncer", "template"}
    assert pooler["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert pooler["spec"]["type"] == "rw"
    assert set(pooler["spec"]["pgbouncer"]) <= {"poolMode", "parameters"}
    assert pooler["spec"]["pgbouncer"]["poolMode"] == "transaction"
    assert pooler["spec"]["instances"] >= 2  # one PgBouncer lost never cuts the services off
    # The Pooler's pod template is a Kubernetes pod template: its schema applies.
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                  "spec": pooler["spec"]["template"]["spec"]},
                                 KUBERNETES_VERSION, strict=True)
    # The README's DATABASE_URL for this overlay goes through the Pooler, saying so.
    documented = re.findall(r"postgresql://\S+", readme())
    assert any(f"@{pooler['metadata']['name']}:5432/{initdb['database']}?" in url
               and "pgbouncer=true" in url for url in documented), documented


# --- containers ---------------------------------------------------------------------------


def test_every_container_has_cpu_and_memory_requests_and_limits(
        manifests: tuple[Manifest, ...]) -> None:
    for owner, container in all_containers(manifests):
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(bound, {})), \
                f"{owner} {container['name']}: no cpu/memory {bound}"


def test_every_service_is_probed_on_its_own_port_and_paths(
        manifests: tuple[Manifest, ...]) -> None:
    for name in SERVICES:
        container = main_container(workload(manifests, name))
        port = getattr(settings_of(manifests, container), PROBE_PORT_FIELD[name])
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            assert probe in container, f"{name}: no {probe}"
            check = container[probe]["httpGet"]
            # Liveness never asks about Postgres or the broker: an outage is no reason to
            # restart every pod at once.
            assert check["path"] == path, f"{name}: {probe} on {check['path']}"
            assert named_port(container, check["port"]) == port, f"{name}: {probe} port"


def test_secrets_are_referenced_never_written(manifests: tuple[Manifest, ...]) -> None:
    assert of_kind(manifests, "Secret") == [], "Secrets are created out of band (README.md)"
    for owner, container in all_containers(manifests):
        for name, value in literal_env(manifests, container).items():
            assert not SECRET_ISH_NAME.search(name), f"{owner}: {name} set in the clear"
            assert not CREDENTIALS_IN_URL.search(value), f"{owner}: {name} holds credentials"
    assert not CREDENTIALS_IN_URL.search(yaml.safe_dump_all(manifests))


def test_secret_references_name_the_app_secret_or_an_operators(
        manifests: tuple[Manifest, ...]) -> None:
    generated = {c["metadata"]["name"] + RABBITMQ_SECRET_SUFFIX
                 for c in of_kind(manifests, "RabbitmqCluster")}
    generated |= {c["metadata"]["name"] + CNPG_SECRET_SUFFIX for c in of_kind(manifests, "Cluster")}
    for owner, container in all_containers(manifests):
        for name, ref in secret_env(container).items():
            # The Secret's keys are the variables' names, as README.md's command creates them.
            assert (ref["name"], ref["key"]) == (APP_SECRET, name), f"{owner}: {name}: {ref}"
    for auth in of_kind(manifests, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["name"] in {APP_SECRET, *generated}, ref


def test_the_readme_creates_every_key_the_manifests_read(overlay: str) -> None:
    manifests = render(overlay)
    needed = {name for _, c in all_containers(manifests)
              for name, ref in secret_env(c).items() if not ref.get("optional")}
    needed |= {ref["key"] for auth in of_kind(manifests, "TriggerAuthentication")
               for ref in auth["spec"]["secretTargetRef"] if ref["name"] == APP_SECRET}
    documented = set(re.findall(r"--from-literal=([A-Z_]+)=", readme()))
    assert needed <= documented, f"README.md does not create {needed - documented}"


def test_every_variable_set_is_a_setting(manifests: tuple[Manifest, ...]) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for owner, container in all_containers(manifests):
        names = set(literal_env(manifests, container)) | set(secret_env(container))
        names -= SERVER_VARIABLES.get(container["name"], set())
        assert names <= fields, f"{owner}: {names - fields} are not Settings fields"
        settings_of(manifests, container)  # and every literal value parses


@functools.cache
def usage(command: tuple[str, ...]) -> str:
    """What `command --help` prints (the flags it takes)."""
    result = subprocess.run([str(VENV_BIN / command[0]), *command[1:], "--help"],
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def test_commands_are_the_repos_console_scripts(manifests: tuple[Manifest, ...]) -> None:
    expected = {"ingest": "calltrail-ingest", "call-processor": "calltrail-processor",
                "metrics-sync": "calltrail-metrics-sync", "api": "calltrail-api",
                "dispatcher": "calltrail-dispatcher"}
    for name, script in expected.items():
        assert main_container(workload(manifests, name))["command"] == [script]
    for owner, container in all_containers(manifests):
        command = container["command"]
        if command[:2] == ["sh", "-c"]:
            command = re.findall(r"calltrail[\w-]*(?: [\w-]+)*", command[2])[0].split()
        assert (VENV_BIN / command[0]).exists(), f"{owner} runs {command[0]!r}"
        flags = [arg for arg in command[1:] if arg.startswith("-")]
        words = tuple(arg for arg in command if not arg.startswith("-"))
        for flag in flags:
            assert flag in usage(words), f"{owner}: {' '.join(command)}: no {flag}"


# --- scaling and disruption ---------------------------------------------------------------


def test_every_workload_is_scaled_by_exactly_one_autoscaler(
        manifests: tuple[Manifest, ...]) -> None:
    assert {w["metadata"]["name"] for w in workloads(manifests)} == set(SERVICES)
    for manifest in workloads(manifests):
        name = manifest["metadata"]["name"]
        hpas = [h for h in of_kind(manifests, "HorizontalPodAutoscaler")
                if h["spec"]["scaleTargetRef"]["kind"] == manifest["kind"]
                and h["spec"]["scaleTargetRef"]["name"] == name]
        assert len(hpas) + len(scaled_objects_for(manifests, manifest)) == 1, name
        # The autoscaler owns the count: a `replicas` here would reset it on every apply.
        assert "replicas" not in manifest["spec"], name
    for name in ("ingest", "api"):
        hpa = one(manifests, "HorizontalPodAutoscaler", name)
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
        assert hpa["spec"]["minReplicas"] >= 2  # one replica lost never stops webhooks


def test_every_workload_has_a_disruption_budget_that_lets_a_drain_proceed(
        manifests: tuple[Manifest, ...]) -> None:
    for manifest in workloads(manifests):
        labels = manifest["spec"]["template"]["metadata"]["labels"]
        budgets = [p for p in of_kind(manifests, "PodDisruptionBudget")
                   if selects(p["spec"]["selector"]["matchLabels"], labels)]
        assert len(budgets) == 1, manifest["metadata"]["name"]
        assert budgets[0]["spec"].get("maxUnavailable", 0) >= 1, manifest["metadata"]["name"]


def test_call_processor_scales_on_its_queue_counting_unacked_messages(
        manifests: tuple[Manifest, ...]) -> None:
    processor = workload(manifests, "call-processor")
    settings = settings_of(manifests, main_container(processor))
    (scaled,) = scaled_objects_for(manifests, processor)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    metadata = trigger["metadata"]
    # Every queue holding the processor's work, summed: its partitions and its overflow.
    topology = Topology(settings.amqp_prefix)
    assert (metadata["useRegex"], metadata["operation"]) == ("true", "sum")
    matched = [name for name in topology.all_queues()
               if re.fullmatch(metadata["queueName"], name)]
    assert matched == topology.work_queues(CALL_PROCESSOR)
    # No more replicas than partitions: one more would have nothing of its own to consume.
    assert scaled["spec"]["maxReplicaCount"] <= CALL_PROCESSOR.partitions
    # QueueLength counts unacknowledged messages only through the management API.
    assert metadata["mode"] == "QueueLength"
    assert metadata["protocol"] == "http"
    assert metadata.get("excludeUnacknowledged", "false") == "false"
    # Each replica holds 2 x PROCESSOR_BATCH_SIZE unacked (its prefetch): a target at or
    # under that would count the replicas' own prefetch and scale for ever.
    assert float(metadata["value"]) > 2 * settings.processor_batch_size
    assert scaled["spec"]["minReplicaCount"] >= 1
    # KEDA runs in another namespace: the broker's full Service name, the cluster's own.
    (rabbitmq,) = of_kind(manifests, "RabbitmqCluster")
    host = urlsplit(metadata["host"])
    namespace = processor["metadata"]["namespace"]
    assert host.hostname == f"{rabbitmq['metadata']['name']}.{namespace}.svc"
    assert host.port == 15672
    auth = trigger_authentication(manifests, trigger)
    assert {auth[p]["name"] for p in ("username", "password")} == \
        {rabbitmq["metadata"]["name"] + RABBITMQ_SECRET_SUFFIX}


def test_dispatcher_scales_on_its_queue_not_its_retries(manifests: tuple[Manifest, ...]) -> None:
    dispatcher = workload(manifests, "dispatcher")
    settings = settings_of(manifests, main_container(dispatcher))
    (scaled,) = scaled_objects_for(manifests, dispatcher)
    (trigger,) = scaled["spec"]["triggers"]
    metadata = trigger["metadata"]
    assert (trigger["type"], metadata["mode"], metadata["protocol"]) == (
        "rabbitmq", "QueueLength", "http")
    assert metadata.get("excludeUnacknowledged", "false") == "false"
    # The deliveries to send now; a failing receiver's retries waiting out their delay are
    # not work more replicas could do.
    topology = Topology(settings.amqp_prefix)
    assert metadata["useRegex"] == "true"
    assert [name for name in topology.all_queues()
            if re.fullmatch(metadata["queueName"], name)] == [topology.queue(DISPATCHER)]
    # Each replica holds twice WEBHOOKS_CONCURRENCY unacked: the target is above that.
    assert float(metadata["value"]) > 2 * settings.webhooks_concurrency
    # Never 0: the replicas are also the relay that fills the queue.
    assert scaled["spec"]["minReplicaCount"] >= 1
    assert trigger_authentication(manifests, trigger) == trigger_authentication(
        manifests, scaled_objects_for(manifests, workload(manifests, "call-processor"))[0][
            "spec"]["triggers"][0])


def test_metrics_sync_scales_on_connected_accounts_and_never_to_zero(overlay: str) -> None:
    manifests = render(overlay)
    sync = workload(manifests, "metrics-sync")
    (scaled,) = scaled_objects_for(manifests, sync)
    assert scaled["spec"]["minReplicaCount"] >= 1
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    metadata = trigger["metadata"]
    assert float(metadata["targetQueryValue"]) > 0
    query = metadata["query"]
    assert re.fullmatch(
        r"SELECT count\(\*\) FROM (\w+) WHERE (\w+) = '(\w+)'", query), query
    table, column, value = re.findall(r"FROM (\w+) WHERE (\w+) = '(\w+)'", query)[0]
    schema = "\n".join(p.read_text() for p in sorted(MIGRATIONS.glob("*.sql")))
    created = re.search(rf"CREATE TABLE {table} \((.*?)\n\);", schema, re.DOTALL)
    assert created, f"no table {table} in the migrations"
    assert re.search(rf"^\s+{column}\s+text NOT NULL DEFAULT '{value}'", created.group(1),
                     re.MULTILINE), f"{table}.{column} is not a status defaulting to {value}"
    auth = trigger_authentication(manifests, trigger)
    if overlay == "managed":
        assert auth["connection"] == {"parameter": "connection", "name": APP_SECRET,
                                      "key": "KEDA_DATABASE_URL"}
    else:
        (cluster,) = of_kind(manifests, "Cluster")
        name, initdb = cluster["metadata"]["name"], cluster["spec"]["bootstrap"]["initdb"]
        # Straight to the primary (KEDA's driver prepares statements; the pooler would not
        # keep them), as the database's owner, with the password the operator generated.
        assert metadata["host"] == f"{name}-rw.{sync['metadata']['namespace']}.svc"
        assert (metadata["dbName"], metadata["userName"]) == (initdb["database"],
                                                             initdb["owner"])
        assert auth["password"]["name"] == name + CNPG_SECRET_SUFFIX


# --- lifecycle ----------------------------------------------------------------------------


def drain_seconds(name: str, settings: Settings) -> float:
    """How long each service may take, after SIGTERM, to finish the work in hand."""
    if name == "ingest":  # in-flight webhooks: a publisher confirm, else a spool fsync
        return settings.ingest_confirm_timeout_seconds
    if name == "api":  # in-flight requests: a Postgres statement or a call to Vapi
        return max(settings.database_command_timeout_seconds,
                   settings.vapi_request_timeout_seconds)
    if name == "call-processor":  # the batches in hand commit and are acked
        return settings.processor_shutdown_grace_seconds
    if name == "metrics-sync":  # runs in progress finish, or go back to the queue
        return SYNC_SHUTDOWN_GRACE_SECONDS + SYNC_HAND_BACK_SECONDS
    if name == "dispatcher":  # attempts in flight end and are settled, then the log written
        return shutdown_grace_seconds(settings) + RECORDER_CLOSE_SECONDS
    raise AssertionError(name)


def test_termination_grace_outlasts_each_services_drain(manifests: tuple[Manifest, ...]) -> None:
    for name in SERVICES:
        manifest = workload(manifests, name)
        container = main_container(manifest)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        sleep = float(pre_stop["command"][1]) if pre_stop.get("command", [""])[0] == "sleep" \
            else 0.0
        needed = sleep + drain_seconds(name, settings_of(manifests, container)) + CLOSE_SECONDS
        grace = pod_spec(manifest)["terminationGracePeriodSeconds"]
        assert grace >= needed, f"{name}: {grace} s of grace, its drain needs {needed} s"


def test_ingest_spools_onto_a_volume_that_survives_its_pod(
        manifests: tuple[Manifest, ...]) -> None:
    ingest = workload(manifests, "ingest")
    assert ingest["kind"] == "StatefulSet"
    claims = {t["metadata"]["name"] for t in ingest["spec"]["volumeClaimTemplates"]}
    spool_dir = str(settings_of(manifests, main_container(ingest)).spool_dir)
    mounts = {m["mountPath"]: m["name"] for m in main_container(ingest)["volumeMounts"]}
    assert mounts.get(spool_dir) in claims, f"SPOOL_DIR {spool_dir} is not on a claim"
    # A replica the autoscaler removes keeps its spool for when the ordinal returns.
    assert ingest["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


def test_pods_wait_for_the_releases_migration_job(manifests: tuple[Manifest, ...]) -> None:
    (job,) = of_kind(manifests, "Job")
    (migrate,) = pod_spec(job)["containers"]
    assert migrate["command"] == ["calltrail", "migrate"]
    tag = image_tag(migrate["image"])
    # Jobs are immutable: each release gets its own, named after its tag.
    assert job["metadata"]["name"] == f"calltrail-migrate-{tag}"
    # ... and a name its pods' `job-name` label can hold.
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?", job["metadata"]["name"])
    for manifest in workloads(manifests):
        name = manifest["metadata"]["name"]
        assert image_tag(main_container(manifest)["image"]) == tag, name
        waits = [c for c in pod_spec(manifest).get("initContainers", [])
                 if "calltrail migrate --check" in " ".join(c["command"])]
        assert len(waits) == 1, f"{name} does not wait for the migrations"
        assert waits[0]["image"] == migrate["image"], name
        assert secret_env(waits[0])["DATABASE_URL"] == secret_env(migrate)["DATABASE_URL"]


# --- traffic ------------------------------------------------------------------------------


def test_services_select_their_pods_and_reach_a_real_port(
        manifests: tuple[Manifest, ...]) -> None:
    for service in of_kind(manifests, "Service"):
        selector = service["spec"]["selector"]
        (target,) = [w for w in workloads(manifests)
                     if selects(selector, w["spec"]["template"]["metadata"]["labels"])]
        for port in service["spec"]["ports"]:
            named_port(main_container(target), port["targetPort"])


def ingress_backends(manifests: tuple[Manifest, ...], name: str
                     ) -> tuple[str, list[tuple[str, str, str]]]:
    """The Ingress's one host and its (path, path type, Service) routes."""
    (rule,) = one(manifests, "Ingress", name)["spec"]["rules"]
    return rule["host"], [(p["path"], p["pathType"], p["backend"]["service"]["name"])
                          for p in rule["http"]["paths"]]


def routed(routes: list[tuple[str, str, str]], path: str) -> bool:
    return any(path == prefix if kind == "Exact"
               else path == prefix or path.startswith(prefix.rstrip("/") + "/")
               for prefix, kind, _ in routes)


def test_vapi_reaches_ingests_webhook_endpoints(manifests: tuple[Manifest, ...]) -> None:
    host, routes = ingress_backends(manifests, "ingest")
    assert {service for _, _, service in routes} == {"ingest"}
    assert routed(routes, "/webhooks/vapi") and routed(routes, "/webhooks/vapi/endpoint-id")
    assert not routed(routes, "/metrics")
    settings = settings_of(manifests, main_container(workload(manifests, "ingest")))
    # Webhook URLs are printed with PUBLIC_BASE_URL: it must be this Ingress's address.
    assert settings.public_base_url == f"https://{host}"
    annotations = one(manifests, "Ingress", "ingest")["metadata"]["annotations"]
    body = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(body.removesuffix("m")) * 1024 * 1024 > settings.ingest_max_body_bytes


@functools.cache
def api_paths() -> frozenset[str]:
    """Every path the api serves, from its routes (example values in path parameters)."""
    from api.app import create_app
    from calltrail_common.crypto import KeyRing

    settings = ManifestSettings(encryption_key=SecretStr("k" * 32))

    def walk(routes: list[Any], prefix: str) -> Iterator[str]:
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI's include_router
            if included is not None:
                yield from walk(included.routes, prefix + route.include_context.prefix)
            elif isinstance(route, Mount):  # the static files
                yield f"{prefix}{route.path}/example"
            else:
                yield re.sub(r"\{[^}]+\}", "example", prefix + route.path)

    paths = frozenset(walk(create_app(settings, KeyRing.from_settings(settings)).routes, ""))
    assert {"/api/calls", "/healthz", "/"} <= paths, paths  # the walk found the routers
    return paths


def test_prometheus_is_pointed_at_the_port_each_service_serves_metrics_on(
        manifests: tuple[Manifest, ...]) -> None:
    for name in SERVICES:
        pod = workload(manifests, name)
        container = main_container(pod)
        port = getattr(settings_of(manifests, container), METRICS_PORT_FIELD[name])
        annotations = pod["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/path"] == "/metrics", name
        assert int(annotations["prometheus.io/port"]) == port, name
        assert port in [p["containerPort"] for p in container["ports"]], name


def test_no_ingress_reaches_the_apis_metrics_port(manifests: tuple[Manifest, ...]) -> None:
    api = main_container(workload(manifests, "api"))
    metrics_port = settings_of(manifests, api).api_metrics_port
    for ingress in of_kind(manifests, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = one(manifests, "Service", backend["name"])
                (port,) = [p for p in service["spec"]["ports"]
                           if p["name"] == backend["port"]["name"]]
                if selects(service["spec"]["selector"],
                           workload(manifests, "api")["spec"]["template"]["metadata"]["labels"]):
                    assert named_port(api, port["targetPort"]) != metrics_port, path["path"]
    (scraped,) = [p for p in one(manifests, "Service", "api-metrics")["spec"]["ports"]]
    assert named_port(api, scraped["targetPort"]) == metrics_port


def test_the_api_publishes_every_route_but_its_probes(manifests: tuple[Manifest, ...]) -> None:
    _, routes = ingress_backends(manifests, "api")
    assert {service for _, _, service in routes} == {"api"}
    internal = {"/healthz", "/readyz", "/metrics"}
    for path in api_paths():
        assert routed(routes, path) == (path not in internal), path
