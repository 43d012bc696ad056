"""The deployment files tell the truth about the code.

``.env.example`` lists every setting of ``runyard.settings.Settings`` once, as
``RUNYARD_<FIELD>=<the code's default>``; a setting without a default (None)
is listed commented out and empty, because ``RUNYARD_X=`` would set it to the
empty string. Adding a setting without documenting it here fails this file.

``docker-compose.yml`` runs the fleet that docs/fleet.md describes: two API
processes and two workers of the demo app sharing one PostgreSQL store and one
Redis broker, behind the nginx of ``deploy/nginx.conf``; with
``deploy/tracing.env``, Jaeger too, every runyard process exporting to it.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from runyard import Runyard
from runyard.cli import load_app
from runyard.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
TRACING_ENV = ROOT / "deploy" / "tracing.env"

PREFIX = Settings.model_config["env_prefix"]
# `RUNYARD_X=value`, or `# RUNYARD_X=value` for a setting left unset
SETTING_LINE = re.compile(rf"^(?P<unset>#\s*)?(?P<name>{PREFIX}[A-Z0-9_]+)=(?P<value>.*)$")


def variable(field: str) -> str:
    return PREFIX + field.upper()


KNOWN = {variable(field): field for field in Settings.model_fields}


def listed() -> list[tuple[str, bool, str]]:
    """Each setting line of .env.example: (variable, is it commented out, value)."""
    lines = (SETTING_LINE.match(line) for line in ENV_EXAMPLE.read_text().splitlines())
    return [(m["name"], m["unset"] is not None, m["value"]) for m in lines if m]


# -- .env.example ---------------------------------------------------------------------


def test_env_example_lists_exactly_the_settings_the_code_knows() -> None:
    names = {name for name, _, _ in listed()}
    missing, unknown = sorted(KNOWN.keys() - names), sorted(names - KNOWN.keys())
    assert not missing, f"settings missing from .env.example: {missing}"
    assert not unknown, f".env.example lists settings the code does not know: {unknown}"


def test_env_example_lists_each_setting_once() -> None:
    twice = [name for name, n in Counter(name for name, _, _ in listed()).items() if n > 1]
    assert not twice, f"listed more than once: {twice}"


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_env_example_shows_the_codes_default(name: str) -> None:
    field = Settings.model_fields[KNOWN[name]]
    entries = {n: (unset, value) for n, unset, value in listed()}
    assert name in entries, f"{name} is missing from .env.example"
    unset, value = entries[name]
    if field.default is None:
        assert (unset, value) == (True, ""), f"{name} has no default: list it as `# {name}=`"
    else:
        assert not unset, f"{name} has a default: list it as `{name}={field.default}`, not commented out"
        shown = TypeAdapter(field.annotation).validate_python(value)
        assert shown == field.default, f".env.example says {name}={value}, the code's default is {field.default!r}"


def test_env_example_loaded_as_it_is_configures_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KNOWN:
        monkeypatch.delenv(name, raising=False)  # the environment would win over the file
    assert Settings(_env_file=ENV_EXAMPLE).model_dump() == Settings().model_dump()


# -- docker-compose.yml -----------------------------------------------------------------

APP = "runyard.demo:app"
STORE = "postgresql://postgres:postgres@postgres:5432/runyard"
BROKER = "redis://redis:6379/0"
API = ["api-1", "api-2"]
WORKERS = ["worker-1", "worker-2"]


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")  # PyYAML comes with the dev extra (schemathesis)
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return dict(compose["services"])


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, f"write durations as 30s or 2m, not {duration!r}"
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_compose_runs_two_api_processes_two_workers_and_their_services(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "redis", "migrate", *API, *WORKERS, "nginx", "jaeger"}
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["migrate"]["command"] == ["runyard", "migrate"]
    for name in API:
        assert services[name]["command"] == ["runyard", "serve", APP, "--role", "api"]
    for name in WORKERS:
        assert services[name]["command"] == ["runyard", "worker", APP]


def test_the_app_the_fleet_serves_is_importable() -> None:
    assert isinstance(load_app(APP), Runyard)


def test_every_runyard_process_shares_one_store_one_broker_and_the_same_settings(services: dict[str, Any]) -> None:
    environments = [services[name]["environment"] for name in ["migrate", *API, *WORKERS]]
    assert all(environment == environments[0] for environment in environments)
    assert environments[0]["RUNYARD_STORE"] == STORE
    assert environments[0]["RUNYARD_BROKER"] == BROKER
    unknown = {name for name in environments[0] if not name.startswith("OTEL_")} - KNOWN.keys()
    assert not unknown, f"not runyard settings (a typo?): {sorted(unknown)}"


def test_processes_start_after_their_dependencies_are_healthy(services: dict[str, Any]) -> None:
    def waits_for(service: str) -> dict[str, str]:
        return {name: needs["condition"] for name, needs in services[service]["depends_on"].items()}

    for name in ["postgres", "redis"]:
        assert services[name]["healthcheck"]["test"]
    assert waits_for("migrate") == {"postgres": "service_healthy"}
    for name in API + WORKERS:
        assert waits_for(name) == {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "migrate": "service_completed_successfully",
        }
    assert waits_for("nginx") == dict.fromkeys(API, "service_healthy")


def test_a_runyard_process_is_healthy_when_ready(services: dict[str, Any]) -> None:
    for name in API + WORKERS:
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert "/readyz" in probe, f"{name} must be probed on /readyz (store and broker), not only /healthz"


def test_docker_waits_for_the_drain_before_killing_a_process(services: dict[str, Any]) -> None:
    """An API process first lets open requests end (up to drain_s + 5 s), then
    running runs finish for up to drain_s: Docker must wait longer than both."""
    for name in API + WORKERS:
        drain_s = float(services[name]["environment"].get("RUNYARD_DRAIN_S", Settings.model_fields["drain_s"].default))
        grace_s = seconds(services[name]["stop_grace_period"])
        assert grace_s > 2 * drain_s + 5, f"{name}: stop_grace_period {grace_s}s does not cover a {drain_s}s drain"


def test_nginx_balances_exactly_the_api_processes(services: dict[str, Any]) -> None:
    nginx = services["nginx"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert "8080:80" in nginx["ports"]
    upstream = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", NGINX_CONF.read_text(), re.MULTILINE)
    assert upstream == [(name, "8000") for name in API]


def test_the_tracing_profile_adds_jaeger_and_points_every_runyard_process_at_it(services: dict[str, Any]) -> None:
    jaeger = services["jaeger"]
    assert jaeger["profiles"] == ["tracing"], "Jaeger runs only with the profile"
    assert "jaegertracing/jaeger:2." in jaeger["image"]
    assert "16686:16686" in jaeger["ports"] and "4318" in jaeger["expose"]
    settings = dict(
        line.split("=", 1) for line in TRACING_ENV.read_text().splitlines() if line and not line.startswith("#")
    )
    assert settings == {"COMPOSE_PROFILES": "tracing", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}
    for name in ["migrate", *API, *WORKERS]:
        environment = services[name]["environment"]
        assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "${OTEL_EXPORTER_OTLP_ENDPOINT:-}", (
            "set from the env file, empty (nothing exported) without it"
        )
