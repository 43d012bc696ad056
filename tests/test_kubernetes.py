"""The Kubernetes manifests of ``deploy/kubernetes`` (``kubectl apply -k``) run
the fleet of docs/fleet.md: API and worker Deployments of one image sharing
one ConfigMap of ``RUNYARD_*`` and ``OTEL_*`` settings (the store's URL from a
Secret), a Service in front of the API pods only, probes on ``/readyz`` and
``/healthz``, and time to drain before a pod is killed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runyard.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
APP = "runyard.demo:app"
COMMANDS = {
    "runyard-api": ["runyard", "serve", APP, "--role", "api"],
    "runyard-worker": ["runyard", "worker", APP],
}
PREFIX = Settings.model_config["env_prefix"]


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object the kustomization applies, by (kind, name)."""
    yaml = pytest.importorskip("yaml")  # PyYAML comes with the dev extra
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((MANIFESTS / resource).read_text()):
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_the_kustomization_applies_a_configmap_two_deployments_and_a_service(objects: dict[Any, Any]) -> None:
    assert set(objects) == {
        ("ConfigMap", "runyard"),
        ("Deployment", "runyard-api"),
        ("Deployment", "runyard-worker"),
        ("Service", "runyard"),
    }


def test_the_configmap_holds_runyard_settings_and_the_otel_variables(
    objects: dict[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    data: dict[str, str] = objects[("ConfigMap", "runyard")]["data"]
    assert all(isinstance(value, str) for value in data.values()), "a ConfigMap's values are strings"
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318"), "OTLP/HTTP"
    assert data["OTEL_SERVICE_NAME"] == "runyard"
    runyard = {name: value for name, value in data.items() if name.startswith(PREFIX)}
    assert set(data) - set(runyard) <= {
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_BSP_SCHEDULE_DELAY",
    }
    unknown = {name for name in runyard if name.removeprefix(PREFIX).lower() not in Settings.model_fields}
    assert not unknown, f"not runyard settings (a typo?): {sorted(unknown)}"
    for name, value in runyard.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(f"{PREFIX}STORE", "postgresql://runyard@postgres:5432/runyard")  # the Secret's
    settings = Settings()
    assert settings.broker == runyard[f"{PREFIX}BROKER"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_deployment_runs_its_role_with_the_shared_settings_and_probes(objects: dict[Any, Any], name: str) -> None:
    deployment = objects[("Deployment", name)]
    pod = container(deployment)
    assert pod["command"] == COMMANDS[name]
    assert pod["envFrom"] == [{"configMapRef": {"name": "runyard"}}]
    env = {item["name"]: item for item in pod["env"]}
    assert env[f"{PREFIX}STORE"]["valueFrom"]["secretKeyRef"] == {"name": "runyard", "key": "store"}
    assert "service.instance.id=$(POD_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    assert list(env).index("POD_NAME") < list(env).index("OTEL_RESOURCE_ATTRIBUTES"), "defined before it is used"
    assert pod["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["livenessProbe"]["httpGet"]["path"] == "/healthz"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    drain_s = float(objects[("ConfigMap", "runyard")]["data"][f"{PREFIX}DRAIN_S"])
    grace_s = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_s > 2 * drain_s + 5, "Kubernetes must wait for the drain before killing a pod"


def test_the_service_sends_requests_to_the_api_pods_only(objects: dict[Any, Any]) -> None:
    service = objects[("Service", "runyard")]
    api = objects[("Deployment", "runyard-api")]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == api
    assert api["app.kubernetes.io/component"] == "api"
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == container(objects[("Deployment", "runyard-api")])["ports"][0]["name"]
