"""Bad input on every route: the contract's envelope ``{"error": {"code", "message"}}``
with the right status, never a 500, and nothing created."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runyard.servable import MAX_DEPTH
from tests.http.conftest import NewClient
from tests.http.helpers import (
    assert_error,
    assert_nothing_created,
    create_run,
    list_runs,
    raw_request,
    wait_finished,
)

CREATE_ROUTES = ["/v1/runs", "/v1/runs/stream", "/v1/runs/wait"]
TICKER = {"pipeline": "ticker", "input": {"marker": "m", "count": 1}}


@pytest.fixture
def finished_run(client: httpx.Client) -> dict[str, Any]:
    """A ticker run of the client's that has ended (its last ``seq`` is 4)."""
    run = create_run(client, "ticker", {"marker": "done", "count": 1})
    return wait_finished(client, run["run_id"])


# -- bodies that are not JSON ------------------------------------------------------------------

MALFORMED = [
    pytest.param(b"{bad", id="truncated-object"),
    pytest.param(b"{'pipeline': 'ticker'}", id="single-quotes"),
    pytest.param(b'{"pipeline": "ticker",}', id="trailing-comma"),
    pytest.param(b"pipeline=ticker&input=1", id="form-encoded"),
]


@pytest.mark.parametrize("route", CREATE_ROUTES)
@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_json_is_400_invalid_json_and_creates_nothing(client: httpx.Client, route: str, body: bytes) -> None:
    assert_error(client.post(route, content=body), 400, "invalid_json")
    assert_nothing_created(client)


@pytest.mark.parametrize("route", CREATE_ROUTES)
def test_empty_body_is_422_invalid_request_like_a_missing_body(client: httpx.Client, route: str) -> None:
    assert_error(client.post(route, content=b""), 422, "invalid_request")
    assert_nothing_created(client)


def test_empty_session_body_creates_a_session_without_metadata(client: httpx.Client) -> None:
    response = client.post("/v1/sessions", content=b"")
    assert response.status_code == 201
    assert response.json()["metadata"] == {}


def test_malformed_json_is_400_even_when_declared_as_another_content_type(client: httpx.Client) -> None:
    response = client.post("/v1/runs", content=b"{nope", headers={"Content-Type": "text/plain"})
    assert_error(response, 400, "invalid_json")
    assert_nothing_created(client)


@pytest.mark.parametrize("body", [b"\xff\xfe\x00", b'{"pipeline": "\xe9"}'], ids=["utf16-bom", "latin-1"])
def test_body_that_is_not_utf8_is_400_invalid_json(client: httpx.Client, body: bytes) -> None:
    assert_error(client.post("/v1/runs", content=body), 400, "invalid_json")
    assert_nothing_created(client)


def test_malformed_session_body_is_400_invalid_json(client: httpx.Client) -> None:
    assert_error(client.post("/v1/sessions", content=b"{"), 400, "invalid_json")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_tokens_are_400_invalid_json(client: httpx.Client, token: str) -> None:
    body = f'{{"pipeline": "whoami", "input": {token}}}'.encode()
    assert_error(client.post("/v1/runs", content=body), 400, "invalid_json")
    assert_nothing_created(client)


# -- JSON of the wrong shape -------------------------------------------------------------------

WRONG_SHAPE = [
    pytest.param({"pipeline": 5, "input": {}}, id="pipeline-is-a-number"),
    pytest.param({"input": {"marker": "m"}}, id="pipeline-missing"),
    pytest.param({"pipeline": "ticker"}, id="input-missing"),
    pytest.param({**TICKER, "metadata": []}, id="metadata-is-a-list"),
    pytest.param({**TICKER, "metadata": "labels"}, id="metadata-is-a-string"),
    pytest.param({**TICKER, "timeout_s": "x"}, id="timeout-is-a-string"),
    pytest.param({**TICKER, "timeout_s": 0}, id="timeout-is-zero"),
    pytest.param({**TICKER, "timeout_s": -1}, id="timeout-is-negative"),
    pytest.param({**TICKER, "timeout_s": True}, id="timeout-is-a-bool"),
    pytest.param({**TICKER, "multitask": "sometimes"}, id="multitask-unknown"),
    pytest.param({**TICKER, "multitask": 1}, id="multitask-is-a-number"),
    pytest.param({**TICKER, "session_id": 7}, id="session-id-is-a-number"),
    pytest.param({**TICKER, "session_id": "s" * 129}, id="session-id-too-long"),
    pytest.param({**TICKER, "surprise": True}, id="unknown-field"),
    pytest.param({**TICKER, "metadata": {str(i): i for i in range(65)}}, id="metadata-too-many-keys"),
    pytest.param({**TICKER, "metadata": {"k": "v" * 20_000}}, id="metadata-too-big"),
    pytest.param({**TICKER, "metadata": {"k" * 129: 1}}, id="metadata-key-too-long"),
    pytest.param([TICKER], id="body-is-a-list"),
    pytest.param("ticker", id="body-is-a-string"),
    pytest.param(None, id="body-is-null"),
    pytest.param(42, id="body-is-a-number"),
]


@pytest.mark.parametrize("route", CREATE_ROUTES)
@pytest.mark.parametrize("body", WRONG_SHAPE)
def test_wrong_shape_is_422_invalid_request_and_creates_nothing(client: httpx.Client, route: str, body: Any) -> None:
    assert_error(client.post(route, content=json.dumps(body)), 422, "invalid_request")
    assert_nothing_created(client)


def test_on_disconnect_is_checked_on_the_stream_route(client: httpx.Client) -> None:
    response = client.post("/v1/runs/stream", json={**TICKER, "on_disconnect": "explode"})
    assert_error(response, 422, "invalid_request")
    assert_nothing_created(client)


@pytest.mark.parametrize("route", ["/v1/runs", "/v1/runs/wait"])
def test_on_disconnect_is_an_unknown_field_off_the_stream_route(client: httpx.Client, route: str) -> None:
    response = client.post(route, json={**TICKER, "on_disconnect": "cancel"})
    assert_error(response, 422, "invalid_request")
    assert_nothing_created(client)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"metadata": []}, id="metadata-is-a-list"),
        pytest.param({"surprise": 1}, id="unknown-field"),
        pytest.param([], id="body-is-a-list"),
        pytest.param({"metadata": {str(i): i for i in range(65)}}, id="metadata-too-many-keys"),
    ],
)
def test_wrong_session_body_is_422_invalid_request(client: httpx.Client, body: Any) -> None:
    assert_error(client.post("/v1/sessions", json=body), 422, "invalid_request")


# -- pipelines and their input -----------------------------------------------------------------


@pytest.mark.parametrize("route", CREATE_ROUTES)
def test_unknown_pipeline_is_404_pipeline_not_found_and_creates_nothing(client: httpx.Client, route: str) -> None:
    response = client.post(route, json={"pipeline": "no_such_pipeline", "input": {}})
    body = assert_error(response, 404, "pipeline_not_found")
    assert "no_such_pipeline" in body["error"]["message"]
    assert_nothing_created(client)


BAD_TICKER_INPUT = [
    pytest.param({"marker": "m", "count": 1_000_001}, id="count-over-a-million"),
    pytest.param({"marker": "m", "payload_bytes": 65_537}, id="payload-over-64KiB"),
    pytest.param({"marker": "m", "count": -1}, id="negative-count"),
    pytest.param({"marker": "m", "interval_ms": -5}, id="negative-interval"),
    pytest.param({"marker": "m", "payload_bytes": -1}, id="negative-payload"),
    pytest.param({"marker": "m", "fail_at": -1}, id="negative-fail-at"),
    pytest.param({"marker": "m", "count": "3"}, id="count-is-a-string"),
    pytest.param({"marker": "m", "count": 2.5}, id="count-is-a-float"),
    pytest.param({"marker": "m", "colour": "red"}, id="unknown-field"),
    pytest.param({"count": 3}, id="marker-missing"),
    pytest.param([1, 2], id="input-is-a-list"),
    pytest.param(None, id="input-is-null"),
]


@pytest.mark.parametrize("route", CREATE_ROUTES)
@pytest.mark.parametrize("input", BAD_TICKER_INPUT)
def test_pipeline_input_failing_validation_is_422_and_creates_nothing(
    client: httpx.Client, route: str, input: Any
) -> None:
    response = client.post(route, json={"pipeline": "ticker", "input": input})
    body = assert_error(response, 422, "invalid_request")
    assert "ticker" in body["error"]["message"]
    assert_nothing_created(client)


@pytest.mark.parametrize(
    ("pipeline", "input"),
    [("research", {}), ("research", {"topic": 5}), ("chat", {"message": ["hi"]}), ("nap", {"seconds": "long"})],
)
def test_every_pipeline_validates_its_input(client: httpx.Client, pipeline: str, input: Any) -> None:
    assert_error(client.post("/v1/runs", json={"pipeline": pipeline, "input": input}), 422, "invalid_request")
    assert_nothing_created(client)


def test_ticker_limits_themselves_are_accepted(client: httpx.Client) -> None:
    """The bounds are inclusive; ``fail_at: 0`` keeps a million-tick run cheap."""
    input = {"marker": "edge", "count": 1_000_000, "payload_bytes": 65_536, "fail_at": 0}
    run = create_run(client, "ticker", input)
    assert wait_finished(client, run["run_id"])["status"] == "failed"


# -- bodies that are too large -----------------------------------------------------------------

MAX_BODY = 1 << 20  # the default RUNYARD_MAX_BODY_BYTES


def _oversize_body() -> bytes:
    return json.dumps({"pipeline": "whoami", "input": "x" * (MAX_BODY + 10)}).encode()


@pytest.mark.parametrize("route", [*CREATE_ROUTES, "/v1/sessions"])
def test_oversize_body_with_content_length_is_413_payload_too_large(client: httpx.Client, route: str) -> None:
    response = client.post(route, content=_oversize_body())
    assert_error(response, 413, "payload_too_large")
    assert_nothing_created(client)


@pytest.mark.parametrize("route", [*CREATE_ROUTES, "/v1/sessions"])
def test_oversize_chunked_body_is_413_payload_too_large(client: httpx.Client, route: str) -> None:
    body = _oversize_body()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = client.post(route, content=chunks())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert_error(response, 413, "payload_too_large")
    assert_nothing_created(client)


def test_oversize_body_that_is_not_even_json_is_413_not_400(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"x" * 65536

    assert_error(client.post("/v1/runs", content=chunks()), 413, "payload_too_large")
    assert_nothing_created(client)


def test_body_just_under_the_limit_is_accepted(client: httpx.Client) -> None:
    envelope = len(json.dumps({"pipeline": "whoami", "input": ""}))
    body = json.dumps({"pipeline": "whoami", "input": "x" * (MAX_BODY - envelope)}).encode()
    assert len(body) == MAX_BODY
    response = client.post("/v1/runs", content=body)
    assert response.status_code == 201, response.text[:300]


# -- JSON that parses but cannot be stored -----------------------------------------------------

UNSTORABLE = [
    pytest.param(b'{"pipeline": "whoami", "input": "\\ud800"}', id="lone-surrogate-in-input"),
    pytest.param(b'{"pipeline": "whoami", "input": 1, "metadata": {"k": "\\udfff"}}', id="lone-surrogate-in-metadata"),
    pytest.param(b'{"pipeline": "whoami", "input": 123456789012345678901234567890}', id="integer-over-64-bits"),
    pytest.param(b'{"pipeline": "whoami", "input": ' + b"[" * 300 + b"]" * 300 + b"}", id="nested-300-deep"),
]


@pytest.mark.parametrize("body", UNSTORABLE)
def test_json_that_cannot_be_stored_never_gets_a_500_nor_breaks_the_owners_list(
    client: httpx.Client, body: bytes
) -> None:
    response = client.post("/v1/runs", content=body)
    assert response.status_code != 500, response.text
    if response.status_code == 201:  # e.g. a big integer read as a float: the run must then work
        run_id = response.json()["run_id"]
        assert [run["run_id"] for run in list_runs(client)] == [run_id]
        wait_finished(client, run_id)
    else:
        assert_error(response, response.status_code, {"invalid_json", "invalid_request"})
        assert response.status_code in (400, 422)
        assert_nothing_created(client)


def test_session_metadata_that_cannot_be_stored_is_422(client: httpx.Client) -> None:
    response = client.post("/v1/sessions", content=b'{"metadata": {"k": "\\ud800"}}')
    assert response.status_code in (400, 422), response.text
    assert_error(response, response.status_code, {"invalid_json", "invalid_request"})


def nested(depth: int) -> Any:
    """``depth`` lists within one another around a number."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("route", CREATE_ROUTES)
@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"input": nested(254)}, id="input"),
        pytest.param({"input": {"marker": "m"}, "metadata": {"k": nested(253)}}, id="metadata"),
        pytest.param({"input": nested(MAX_DEPTH + 1)}, id="input-one-over-the-rule"),
    ],
)
def test_create_254_deep_is_422_and_creates_no_run(client: httpx.Client, route: str, fields: dict[str, Any]) -> None:
    """Issue 10: a value 254 deep passed validation on its own, then the snapshot added a
    level orjson refused: 500 *after* the run was stored and started (a retry made another),
    and every later page of ``GET /v1/runs`` holding it answered 500."""
    response = client.post(route, json={"pipeline": "whoami", **fields})
    body = assert_error(response, 422, "invalid_request")
    assert f"more than {MAX_DEPTH} levels deep" in body["error"]["message"]
    assert_nothing_created(client)


def test_session_metadata_254_deep_is_422_and_creates_no_session(client: httpx.Client) -> None:
    response = client.post("/v1/sessions", json={"metadata": {"k": nested(253)}})
    assert_error(response, 422, "invalid_request")


def test_values_as_deep_as_the_rule_allows_are_served_by_every_read(client: httpx.Client) -> None:
    """The rule leaves room for every wrapper the API puts around a value: input and
    metadata ``MAX_DEPTH`` deep are stored, and the snapshot, the list, the events and
    the session holding them all answer 200."""
    deepest = nested(MAX_DEPTH)
    run = create_run(client, "whoami", deepest, metadata={"k": nested(MAX_DEPTH - 1)})
    wait_finished(client, run["run_id"])
    assert client.get(f"/v1/runs/{run['run_id']}").json()["input"] == deepest
    assert [listed["input"] for listed in list_runs(client)] == [deepest]
    assert client.get(f"/v1/runs/{run['run_id']}/events").status_code == 200
    assert client.get(f"/v1/sessions/{run['session_id']}").status_code == 200
    session = client.post("/v1/sessions", json={"metadata": {"k": nested(MAX_DEPTH - 1)}})
    assert session.status_code == 201, session.text
    assert client.get(f"/v1/sessions/{session.json()['session_id']}").json()["metadata"] == {"k": nested(MAX_DEPTH - 1)}


def test_absurdly_deep_json_is_a_4xx_envelope(client: httpx.Client) -> None:
    body = b'{"pipeline": "whoami", "input": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = client.post("/v1/runs", content=body)
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code, {"invalid_json", "invalid_request", "bad_request"})
    assert_nothing_created(client)


# -- ids in paths ------------------------------------------------------------------------------

ODD_IDS = [
    pytest.param("r" * 5000, id="very-long"),
    pytest.param("r" * 65, id="one-over-the-id-limit"),
    pytest.param("run_\u00e9\u4e2d\U0001f680", id="unicode"),
    pytest.param("%2e%2e", id="encoded-dot-dot"),
    pytest.param("run_%00", id="nul"),
    pytest.param("run%20x", id="space"),
    pytest.param("run_000000000000000000000000", id="well-formed-but-missing"),
]
RUN_ROUTES = [
    pytest.param("GET", "/v1/runs/{id}", id="snapshot"),
    pytest.param("GET", "/v1/runs/{id}/events", id="events"),
    pytest.param("GET", "/v1/runs/{id}/stream", id="stream"),
    pytest.param("POST", "/v1/runs/{id}/cancel", id="cancel"),
]
SESSION_ROUTES = [
    pytest.param("GET", "/v1/sessions/{id}", id="get"),
    pytest.param("DELETE", "/v1/sessions/{id}", id="delete"),
]


@pytest.mark.parametrize(("method", "template"), RUN_ROUTES)
@pytest.mark.parametrize("run_id", ODD_IDS)
def test_odd_run_ids_are_404_run_not_found(client: httpx.Client, method: str, template: str, run_id: str) -> None:
    assert_error(client.request(method, template.format(id=run_id)), 404, "run_not_found")


@pytest.mark.parametrize(("method", "template"), SESSION_ROUTES)
@pytest.mark.parametrize("session_id", ODD_IDS)
def test_odd_session_ids_are_404_session_not_found(
    client: httpx.Client, method: str, template: str, session_id: str
) -> None:
    assert_error(client.request(method, template.format(id=session_id)), 404, "session_not_found")


@pytest.mark.parametrize(("method", "template"), [*RUN_ROUTES, *SESSION_ROUTES])
def test_ids_with_encoded_slashes_are_404(client: httpx.Client, method: str, template: str) -> None:
    """``%2F`` is decoded before routing, so the path may match no route at all (``not_found``)."""
    response = client.request(method, template.format(id="run%2F..%2Fx"))
    assert_error(response, 404, {"run_not_found", "session_not_found", "not_found"})


@pytest.mark.parametrize(
    ("request_line", "code"),
    [
        ("GET /v1/runs/.. HTTP/1.1", "run_not_found"),
        ("GET /v1/runs/../events HTTP/1.1", "run_not_found"),
        ("POST /v1/runs/../cancel HTTP/1.1", "run_not_found"),
        ("GET /v1/sessions/.. HTTP/1.1", "session_not_found"),
        ("DELETE /v1/sessions/.. HTTP/1.1", "session_not_found"),
    ],
)
def test_literal_dot_dot_ids_are_404(server: str, request_line: str, code: str) -> None:
    status, body = raw_request(server, request_line, {"X-Client-Id": "dots"})
    assert status == 404
    assert json.loads(body)["error"]["code"] == code


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/runs//events"), ("GET", "/v1/runs//stream"), ("POST", "/v1/runs//cancel")],
)
def test_empty_run_id_before_a_sub_resource_is_404(client: httpx.Client, method: str, path: str) -> None:
    assert_error(client.request(method, path), 404, {"run_not_found", "not_found"})


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/runs/"), ("GET", "/v1/sessions/"), ("DELETE", "/v1/sessions/")]
)
def test_empty_id_is_404(client: httpx.Client, method: str, path: str) -> None:
    assert_error(client.request(method, path), 404, {"run_not_found", "session_not_found", "not_found"})


# -- cursors, limits, filters ------------------------------------------------------------------

BAD_CURSORS = ["-1", "abc", "1.5", "1e3", "0x10", " 1", "1 ", "99999999999999999999"]


@pytest.mark.parametrize("route", ["events", "stream"])
@pytest.mark.parametrize("after", BAD_CURSORS)
def test_bad_after_cursor_is_400_invalid_cursor(
    client: httpx.Client, finished_run: dict[str, Any], route: str, after: str
) -> None:
    response = client.get(f"/v1/runs/{finished_run['run_id']}/{route}", params={"after": after})
    assert_error(response, 400, "invalid_cursor")


@pytest.mark.parametrize("last_event_id", ["x", "-1", "2.0", "1,2"])
def test_bad_last_event_id_is_400_invalid_cursor(
    client: httpx.Client, finished_run: dict[str, Any], last_event_id: str
) -> None:
    response = client.get(f"/v1/runs/{finished_run['run_id']}/stream", headers={"Last-Event-ID": last_event_id})
    assert_error(response, 400, "invalid_cursor")


def test_bad_last_event_id_wins_over_a_good_after(client: httpx.Client, finished_run: dict[str, Any]) -> None:
    response = client.get(
        f"/v1/runs/{finished_run['run_id']}/stream", params={"after": "1"}, headers={"Last-Event-ID": "x"}
    )
    assert_error(response, 400, "invalid_cursor")


@pytest.mark.parametrize("route", ["events", "stream"])
@pytest.mark.parametrize("after", ["\u00b2", "\u0663"], ids=["superscript-two", "arabic-indic-three"])
def test_non_ascii_digit_cursor_is_400_invalid_cursor(
    client: httpx.Client, finished_run: dict[str, Any], route: str, after: str
) -> None:
    response = client.get(f"/v1/runs/{finished_run['run_id']}/{route}", params={"after": after})
    assert_error(response, 400, "invalid_cursor")


def test_stream_cursor_past_the_last_event_is_400_invalid_cursor(
    client: httpx.Client, finished_run: dict[str, Any]
) -> None:
    run_id, last_seq = finished_run["run_id"], finished_run["last_seq"]
    assert_error(client.get(f"/v1/runs/{run_id}/stream", params={"after": last_seq + 1}), 400, "invalid_cursor")
    response = client.get(f"/v1/runs/{run_id}/stream", headers={"Last-Event-ID": str(last_seq + 1)})
    assert_error(response, 400, "invalid_cursor")


def test_events_cursor_past_the_last_event_is_400_invalid_cursor(
    client: httpx.Client, finished_run: dict[str, Any]
) -> None:
    response = client.get(f"/v1/runs/{finished_run['run_id']}/events", params={"after": finished_run["last_seq"] + 1})
    assert_error(response, 400, "invalid_cursor")


@pytest.mark.parametrize("limit", ["0", "-1", "10001", "abc", "1.5", ""])
def test_bad_events_limit_is_400(client: httpx.Client, finished_run: dict[str, Any], limit: str) -> None:
    response = client.get(f"/v1/runs/{finished_run['run_id']}/events", params={"limit": limit})
    assert_error(response, 400, {"invalid_query", "invalid_request", "bad_request"})


@pytest.mark.parametrize("limit", ["0", "-1", "201", "abc", "1.5", ""])
def test_bad_list_limit_is_400(client: httpx.Client, limit: str) -> None:
    assert_error(
        client.get("/v1/runs", params={"limit": limit}), 400, {"invalid_query", "invalid_request", "bad_request"}
    )


@pytest.mark.parametrize("status", ["done", "QUEUED", "finished", ""])
def test_bad_status_filter_is_400(client: httpx.Client, status: str) -> None:
    assert_error(client.get("/v1/runs", params={"status": status}), 400, {"invalid_query", "invalid_request"})


@pytest.mark.parametrize(
    "params",
    [{"before": "r" * 65}, {"session_id": "s" * 129}],
    ids=["before-too-long", "session-id-too-long"],
)
def test_bad_list_cursors_are_400(client: httpx.Client, params: dict[str, str]) -> None:
    assert_error(client.get("/v1/runs", params=params), 400, {"invalid_query", "invalid_cursor"})


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/v1/runs", {"json": {**TICKER, "session_id": "../etc"}}, 422),
        ("GET", "/v1/runs", {"params": {"session_id": "../etc"}}, 400),
        ("GET", "/v1/runs", {"params": {"before": "run x"}}, 400),
    ],
    ids=["body-session-id", "query-session-id", "query-before"],
)
def test_ids_with_characters_outside_the_id_alphabet_are_rejected(
    client: httpx.Client, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    response = client.request(method, path, **kwargs)
    assert_error(response, status, {"invalid_request", "invalid_query", "invalid_cursor"})
    assert_nothing_created(client)


@pytest.mark.parametrize("pad", ["-1", "x", "65537"])
def test_bad_pad_is_400(client: httpx.Client, finished_run: dict[str, Any], pad: str) -> None:
    response = client.get(f"/v1/runs/{finished_run['run_id']}/stream", params={"pad": pad})
    assert_error(response, 400, {"invalid_query", "invalid_request"})


# -- routes and methods ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nothing-here"),
        ("GET", "/v2/runs"),
        ("POST", "/v1/runs/run_x/explode"),
        ("GET", "/v1/runs/run_x/events/1"),
        ("GET", "/v1"),
        ("DELETE", "/nope"),
    ],
)
def test_unknown_route_is_404_not_found(client: httpx.Client, method: str, path: str) -> None:
    assert_error(client.request(method, path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/runs"),
        ("PUT", "/v1/runs"),
        ("PATCH", "/v1/runs"),
        ("DELETE", "/v1/runs/run_x"),
        ("GET", "/v1/runs/run_x/cancel"),
        ("POST", "/v1/runs/run_x/events"),
        ("DELETE", "/v1/sessions"),
        ("POST", "/v1/sessions/ses_x"),
        ("POST", "/v1/pipelines"),
        ("POST", "/healthz"),
        ("DELETE", "/metrics"),
    ],
)
def test_wrong_method_is_405_method_not_allowed(client: httpx.Client, method: str, path: str) -> None:
    assert_error(client.request(method, path), 405, "method_not_allowed")
    assert_nothing_created(client)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/runs", {"GET", "POST"}),
        ("PUT", "/v1/sessions/ses_x", {"GET", "DELETE"}),
        ("POST", "/v1/sessions/ses_x", {"GET", "DELETE"}),
        ("PATCH", "/v1/sessions", {"GET", "POST"}),
        ("DELETE", "/v1/runs/run_x", {"GET"}),
        ("GET", "/v1/runs/run_x/cancel", {"POST"}),
        ("POST", "/healthz", {"GET"}),
    ],
)
def test_405_allow_lists_every_method_the_path_serves(
    client: httpx.Client, method: str, path: str, allowed: set[str]
) -> None:
    """Issue 10, "a 405 lists one method in Allow": Starlette named only the first
    route whose path matched (``GET /v1/runs`` and ``POST /v1/runs`` are two routes)."""
    response = client.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


# -- owners ------------------------------------------------------------------------------------

BAD_CLIENT_IDS = [
    pytest.param("a" * 129, id="too-long"),
    pytest.param("a b", id="space"),
    pytest.param("a/b", id="slash"),
    pytest.param("<script>", id="markup"),
    pytest.param("alice:admin", id="colon"),
    pytest.param("caf\u00e9".encode(), id="non-ascii"),
]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/runs", None),
        ("POST", "/v1/runs", TICKER),
        ("POST", "/v1/runs/stream", TICKER),
        ("POST", "/v1/runs/wait", TICKER),
        ("GET", "/v1/runs/run_x", None),
        ("POST", "/v1/sessions", {}),
        ("GET", "/v1/sessions/ses_x", None),
    ],
)
@pytest.mark.parametrize("client_id", BAD_CLIENT_IDS)
def test_bad_client_id_is_400_with_the_envelope(
    server: str, method: str, path: str, body: Any, client_id: str | bytes
) -> None:
    raw_id = client_id if isinstance(client_id, bytes) else client_id.encode()
    with httpx.Client(base_url=server, timeout=10) as anyone:
        response = anyone.request(method, path, json=body, headers=[(b"X-Client-Id", raw_id)])
        assert_error(response, 400, "invalid_client_id")


def test_bad_client_id_creates_nothing_for_anybody(server: str, new_client: NewClient) -> None:
    anonymous = new_client(server, owner="anonymous")
    before = {run["run_id"] for run in list_runs(anonymous, limit=200)}
    with httpx.Client(base_url=server, timeout=10) as anyone:
        response = anyone.post("/v1/runs", json=TICKER, headers={"X-Client-Id": "not ok"})
        assert_error(response, 400, "invalid_client_id")
    assert {run["run_id"] for run in list_runs(anonymous, limit=200)} <= before


def test_client_id_of_128_allowed_characters_is_accepted(server: str, new_client: NewClient) -> None:
    owner = ("Az09_.-" * 19)[:128]
    client = new_client(server, owner=owner)
    run = create_run(client, "whoami", None)
    assert wait_finished(client, run["run_id"])["output"]["owner"] == owner


# -- sessions that do not exist ----------------------------------------------------------------


@pytest.mark.parametrize("route", CREATE_ROUTES)
def test_run_in_a_missing_session_is_404_session_not_found(client: httpx.Client, route: str) -> None:
    response = client.post(route, json={**TICKER, "session_id": "ses_000000000000000000000000"})
    assert_error(response, 404, "session_not_found")
    assert_nothing_created(client)


@pytest.mark.parametrize("route", CREATE_ROUTES)
def test_run_in_another_owners_session_is_404_session_not_found(
    client: httpx.Client, other: httpx.Client, route: str
) -> None:
    session_id = other.post("/v1/sessions").json()["session_id"]
    response = client.post(route, json={**TICKER, "session_id": session_id})
    assert_error(response, 404, "session_not_found")
    assert_nothing_created(client)
    assert list_runs(other) == []
