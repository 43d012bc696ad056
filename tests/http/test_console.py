"""The operations console's API (issue 16): search and time ranges on
``GET /v1/runs``, every owner's runs in a playground, each pipeline's health
(``GET /v1/stats/pipelines``) and the dashboard's settings (``GET /v1/console``).
The stores' side of the same is ``tests/store/test_console_contract.py``."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import ValidationError

from runyard.settings import Settings
from tests.http.conftest import NewClient, Serve
from tests.http.helpers import assert_error, list_runs, ticker, wait_finished

PRICES = '{"sim-writer": {"input_per_mtok": 1000, "output_per_mtok": 2000}}'
TRACE_URL = "http://localhost:16686/trace/{trace_id}"


@pytest.fixture(scope="module")
def playground() -> str:
    """A playground server (as ``runyard demo`` serves it) with prices and a trace URL."""
    from tests.support import make_app, serve_in_thread

    app = make_app(store="memory://", drain_s=0.2, playground=True, prices=PRICES, trace_url=TRACE_URL)
    with serve_in_thread(app) as url:
        yield url


def test_search_finds_runs_by_error_text_input_and_id(client: httpx.Client) -> None:
    marker = f"m-{uuid.uuid4().hex[:8]}"
    failed = wait_finished(client, ticker(client, count=3, fail_at=2, marker=marker)["run_id"])
    fine = wait_finished(client, ticker(client, count=1, marker=f"{marker}-ok")["run_id"])

    assert [r["run_id"] for r in list_runs(client, q="Failed At 2")] == [failed["run_id"]]
    assert [r["run_id"] for r in list_runs(client, q=marker)] == [fine["run_id"], failed["run_id"]]
    assert [r["run_id"] for r in list_runs(client, q=fine["run_id"])] == [fine["run_id"]]


def test_since_and_until_bound_the_creation_time(client: httpx.Client) -> None:
    first = ticker(client, count=0)
    time.sleep(0.05)
    cut = datetime.now(UTC)
    time.sleep(0.05)
    second = ticker(client, count=0)

    assert [r["run_id"] for r in list_runs(client, since=cut.isoformat())] == [second["run_id"]]
    assert [r["run_id"] for r in list_runs(client, until=cut.isoformat())] == [first["run_id"]]


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"q": ""}, 400, "invalid_query"),
        ({"q": "x" * 201}, 400, "invalid_query"),
        ({"since": "yesterday"}, 400, "invalid_query"),
        ({"since": "2026-01-01T00:00:00"}, 400, "invalid_query"),  # no time zone: which time is it?
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 400, "invalid_query"),
    ],
)
def test_bad_search_parameters_are_refused_clearly(
    client: httpx.Client, params: dict[str, str], status: int, code: str
) -> None:
    assert_error(client.get("/v1/runs", params=params), status, code)


def test_outside_a_playground_only_an_admin_lists_other_owners(client: httpx.Client) -> None:
    assert_error(client.get("/v1/runs", params={"owner": "*"}), 403, "forbidden")
    assert_error(client.get("/v1/stats/pipelines", params={"owner": "*"}), 403, "forbidden")
    assert client.get("/v1/console").json()["playground"] is False


def test_a_playground_lists_every_owners_runs_with_their_owner(playground: str, new_client: NewClient) -> None:
    alice, bob = new_client(playground, "alice-" + uuid.uuid4().hex[:6]), new_client(playground)
    run = ticker(alice, count=0)
    everyone = list_runs(bob, owner="*", limit=200)
    assert {"run_id": run["run_id"], "owner": alice.headers["X-Client-Id"]}.items() <= next(
        r for r in everyone if r["run_id"] == run["run_id"]
    ).items()
    assert all("owner" not in r for r in list_runs(alice))  # one's own listing is the contract's, unchanged
    # the run itself stays its owner's: others get 404 as for a missing id
    assert_error(bob.get(f"/v1/runs/{run['run_id']}"), 404, "run_not_found")


def test_a_playground_is_never_one_under_jwt() -> None:
    settings = Settings(store="memory://", auth="jwt", jwt_secret="s" * 32, playground=True)
    assert settings.lists_every_owner is False
    assert Settings(store="memory://", playground=True).lists_every_owner is True


def test_pipeline_stats_count_outcomes_durations_tokens_and_cost(playground: str, new_client: NewClient) -> None:
    client = new_client(playground)
    for topic in ("otters", "kelp"):
        wait_finished(
            client,
            client.post("/v1/runs", json={"pipeline": "research", "input": {"topic": topic}}).json()["run_id"],
            30,
        )
    wait_finished(client, ticker(client, count=1, fail_at=0)["run_id"])

    body = client.get("/v1/stats/pipelines", params={"window": "15m"}).json()
    assert body["window"] == "15m"
    assert datetime.fromisoformat(body["since"]) > datetime.now(UTC) - timedelta(minutes=16)
    research, tick = body["pipelines"]
    assert (research["pipeline"], research["runs"], research["succeeded"], research["success_rate"]) == (
        "research",
        2,
        2,
        1.0,
    )
    assert 0 < research["p50_s"] <= research["p95_s"]
    assert research["input_tokens"] > 0 and research["output_tokens"] > 0
    expected = (research["input_tokens"] * 1000 + research["output_tokens"] * 2000) / 1_000_000
    assert research["cost"] == pytest.approx(expected)
    assert (tick["pipeline"], tick["failed"], tick["success_rate"], tick["cost"]) == ("ticker", 1, 0.0, None)
    # every owner's, in a playground
    everyone = client.get("/v1/stats/pipelines", params={"owner": "*"}).json()["pipelines"]
    assert sum(p["runs"] for p in everyone) >= 3


@pytest.mark.parametrize("window", ["0h", "2w", "h", "1.5h", "10000d"])
def test_a_bad_window_is_refused(client: httpx.Client, window: str) -> None:
    assert_error(client.get("/v1/stats/pipelines", params={"window": window}), 400, "invalid_query")


def test_the_console_settings_tell_the_page_the_trace_url_and_prices(playground: str, new_client: NewClient) -> None:
    body = new_client(playground).get("/v1/console").json()
    assert body == {
        "auth": "none",
        "playground": True,
        "trace_url": TRACE_URL,
        "prices": {"sim-writer": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}},
    }


@pytest.mark.parametrize(
    "settings",
    [
        {"prices": "{not json"},
        {"prices": '{"m": {"input_per_mtok": -1, "output_per_mtok": 1}}'},
        {"prices": '{"m": {"input_per_mtok": 1}}'},
        {"prices": "[]"},
        {"trace_url": "http://localhost:16686/trace/"},
    ],
)
def test_bad_console_settings_are_refused_at_start_up(settings: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(store="memory://", **settings)  # type: ignore[arg-type]


def test_the_console_settings_need_a_token_under_jwt(serve: Serve) -> None:
    url = serve(auth="jwt", jwt_secret="s" * 32)
    assert_error(httpx.get(f"{url}/v1/console"), 401, "unauthorized")
