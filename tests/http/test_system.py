"""Health, readiness, metrics, the pipeline catalogue, OpenAPI and CORS."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.http.conftest import BASE_SETTINGS, NewClient
from tests.http.helpers import assert_error, create_run, sse_events, wait_finished
from tests.support import make_app, serve_in_thread

METRIC_FAMILIES = [
    "runyard_runs_total",
    "runyard_runs_active",
    "runyard_run_duration_seconds",
    "runyard_queue_depth",
    "runyard_events_total",
    "runyard_stream_subscribers",
    "runyard_replay_seconds",
    "runyard_store_write_seconds",
    "runyard_limit_wait_seconds",
    "runyard_limit_in_flight",
    "runyard_breaker_open",
    "runyard_http_requests_total",
]


def metrics_text(client: httpx.Client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels}`` (labels in any order), or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match[3])
    return None


# -- health ------------------------------------------------------------------------------------


def test_healthz_is_200(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_with_the_store_and_broker_checks(any_server: str, new_client: NewClient) -> None:
    response = new_client(any_server).get("/readyz")
    assert response.status_code == 200
    # every pipeline has a live worker here (this process): none is unserved
    assert response.json() == {"status": "ready", "checks": {"store": "ok", "broker": "ok"}, "unserved": {}}


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/v1/pipelines"])
def test_system_routes_need_no_valid_client_id(server: str, path: str) -> None:
    response = httpx.get(server + path, headers={"X-Client-Id": "not a valid id"}, timeout=10)
    assert response.status_code == 200


# -- metrics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", METRIC_FAMILIES)
def test_metrics_declare_every_family_of_the_contract(client: httpx.Client, family: str) -> None:
    text = metrics_text(client)
    assert re.search(rf"^# HELP {family} \S", text, re.MULTILINE), family
    assert re.search(rf"^# TYPE {family} (counter|gauge|histogram)$", text, re.MULTILINE), family


def test_metrics_count_runs_events_streams_and_requests(client: httpx.Client) -> None:
    before = metrics_text(client)
    run = create_run(client, "ticker", {"marker": "metrics", "count": 3})
    wait_finished(client, run["run_id"])
    with client.stream("GET", f"/v1/runs/{run['run_id']}/stream") as response:
        list(sse_events(response))
    after = metrics_text(client)

    def grew(name: str, **labels: str) -> float:
        return (sample(after, name, **labels) or 0) - (sample(before, name, **labels) or 0)

    assert grew("runyard_runs_total", pipeline="ticker", status="succeeded") >= 1
    assert grew("runyard_events_total", type="tick") >= 3
    assert grew("runyard_events_total", type="end") >= 1
    assert grew("runyard_run_duration_seconds_count", pipeline="ticker") >= 1
    assert grew("runyard_store_write_seconds_count") >= 1
    assert grew("runyard_replay_seconds_count") >= 1
    assert grew("runyard_http_requests_total", route="/v1/runs/{run_id}/stream", status="200") >= 1
    assert sample(after, "runyard_runs_active", pipeline="ticker") is not None
    assert sample(after, "runyard_queue_depth") is not None
    assert sample(after, "runyard_stream_subscribers") is not None


def test_metrics_count_errors_by_route_template_not_by_path(client: httpx.Client) -> None:
    client.get("/v1/runs/run_does_not_exist_1")
    client.get("/v1/runs/run_does_not_exist_2")
    text = metrics_text(client)
    assert (sample(text, "runyard_http_requests_total", route="/v1/runs/{run_id}", status="404") or 0) >= 2
    assert "run_does_not_exist" not in text


@pytest.mark.parametrize(
    ("path", "body", "route", "status"),
    [
        ("/v1/runs", {"pipeline": "whoami", "input": None}, "/v1/runs", "201"),
        ("/v1/runs/wait", {"pipeline": "whoami", "input": None}, "/v1/runs/wait", "200"),
        ("/v1/sessions", {}, "/v1/sessions", "201"),
        ("/v1/runs", {"pipeline": "no_such", "input": None}, "/v1/runs", "404"),
    ],
)
def test_metrics_count_post_requests_by_route_template(
    client: httpx.Client, path: str, body: object, route: str, status: str
) -> None:
    before = sample(metrics_text(client), "runyard_http_requests_total", route=route, status=status) or 0
    assert str(client.post(path, json=body).status_code) == status
    after = sample(metrics_text(client), "runyard_http_requests_total", route=route, status=status) or 0
    assert after == before + 1


def test_metrics_show_a_limits_use(client: httpx.Client) -> None:
    run = create_run(client, "limited", {"hold": 0.05})
    wait_finished(client, run["run_id"])
    text = metrics_text(client)
    assert sample(text, "runyard_limit_in_flight", limit="test-api") is not None
    assert (sample(text, "runyard_limit_wait_seconds_count", limit="test-api") or 0) >= 1


# -- pipelines ---------------------------------------------------------------------------------


def test_pipelines_lists_the_demo_pipelines_with_their_input_schemas(client: httpx.Client) -> None:
    response = client.get("/v1/pipelines")
    assert response.status_code == 200
    pipelines = {p["name"]: p for p in response.json()["pipelines"]}
    assert {"ticker", "research", "chat"} <= set(pipelines)
    ticker = pipelines["ticker"]["input_schema"]
    assert ticker["type"] == "object"
    assert {"marker", "count", "interval_ms", "fail_at", "payload_bytes"} <= set(ticker["properties"])
    assert ticker["properties"]["count"]["maximum"] == 1_000_000
    assert ticker["properties"]["payload_bytes"]["maximum"] == 65_536
    assert "topic" in pipelines["research"]["input_schema"]["properties"]
    assert "message" in pipelines["chat"]["input_schema"]["properties"]
    for pipeline in pipelines.values():
        assert isinstance(pipeline["input_schema"], dict)


# -- OpenAPI -----------------------------------------------------------------------------------

ROUTES = {
    "/v1/runs": {"get", "post"},
    "/v1/runs/stream": {"post"},
    "/v1/runs/wait": {"post"},
    "/v1/runs/{run_id}": {"get"},
    "/v1/runs/{run_id}/events": {"get"},
    "/v1/runs/{run_id}/stream": {"get"},
    "/v1/runs/{run_id}/cancel": {"post"},
    "/v1/sessions": {"post"},
    "/v1/sessions/{session_id}": {"get", "delete"},
    "/v1/pipelines": {"get"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
}


def test_docs_is_an_html_page(client: httpx.Client) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text


def test_openapi_describes_every_route(client: httpx.Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"]
    for path, methods in ROUTES.items():
        assert path in spec["paths"], path
        assert methods <= set(spec["paths"][path]), (path, set(spec["paths"][path]))


def test_openapi_documents_the_run_request_body(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/runs"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"pipeline", "input"} <= set(schema["required"])
    assert {"pipeline", "input", "session_id", "metadata", "timeout_s", "multitask"} <= set(schema["properties"])


# -- CORS --------------------------------------------------------------------------------------

ORIGIN = "https://app.example"


def test_cors_headers_are_absent_without_the_setting(client: httpx.Client) -> None:
    response = client.get("/v1/pipelines", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options("/v1/runs", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers
    assert_error(preflight, 405, "method_not_allowed")


@pytest.fixture(scope="module")
def cors_server() -> Iterator[str]:
    """A server that lets two origins in."""
    with serve_in_thread(make_app(**{**BASE_SETTINGS, "cors_origins": f"{ORIGIN}, https://other.example"})) as url:
        yield url


def test_cors_allows_a_configured_origin(cors_server: str, new_client: NewClient) -> None:
    client = new_client(cors_server)
    response = client.post(
        "/v1/runs", json={"pipeline": "whoami", "input": None}, headers={"Origin": "https://other.example"}
    )
    assert response.status_code == 201
    assert response.headers["access-control-allow-origin"] == "https://other.example"
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert "location" in exposed


def test_cors_preflight_allows_the_api_headers(cors_server: str, new_client: NewClient) -> None:
    client = new_client(cors_server)
    response = client.options(
        "/v1/runs",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-client-id, idempotency-key",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-client-id", "idempotency-key"} <= allowed


def test_cors_preflight_allows_resuming_a_stream(cors_server: str, new_client: NewClient) -> None:
    client = new_client(cors_server)
    response = client.options(
        "/v1/runs/run_x/stream",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "last-event-id",
        },
    )
    assert response.status_code == 200
    assert "last-event-id" in response.headers["access-control-allow-headers"].lower()


def test_cors_lets_a_browser_read_a_stream_and_errors(cors_server: str, new_client: NewClient) -> None:
    client = new_client(cors_server)
    run = create_run(client, "ticker", {"marker": "cors", "count": 1})
    wait_finished(client, run["run_id"])
    with client.stream("GET", f"/v1/runs/{run['run_id']}/stream", headers={"Origin": ORIGIN}) as response:
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert list(sse_events(response))
    missing = client.get("/v1/runs/run_missing", headers={"Origin": ORIGIN})
    assert_error(missing, 404, "run_not_found")
    assert missing.headers["access-control-allow-origin"] == ORIGIN


def test_cors_refuses_an_origin_not_configured(cors_server: str, new_client: NewClient) -> None:
    client = new_client(cors_server)
    response = client.get("/v1/pipelines", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/v1/runs", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_dashboard_is_served_at_the_root(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


def test_the_dashboards_assets_are_revalidated_on_every_load(client: httpx.Client) -> None:
    response = client.get("/static/app.js")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache" and response.headers["etag"]
