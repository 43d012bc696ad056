"""Property: whatever is posted to ``POST /v1/runs``, the answer is a run (201) or the
contract's envelope with a 4xx status, never a 500.

Needs ``hypothesis`` (skipped without it). Integers stay within 64 bits and text has
no lone surrogates: those known failures are pinned by
``test_errors.py::test_json_that_cannot_be_stored_never_gets_a_500_nor_breaks_the_owners_list``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("hypothesis")

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.http.helpers import assert_error, list_runs

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
LEAVES = st.none() | st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# In range (but tiny, so valid runs stay cheap) or out of range on either side.
SMALL_OR_OUT_OF_RANGE = (
    st.integers(0, 3) | st.integers(max_value=-1) | st.integers(min_value=1_000_001, max_value=2**63 - 1)
)
TICKER_INPUTS = st.fixed_dictionaries(
    {"marker": st.text(max_size=10) | JSON_VALUES},
    optional={
        "count": SMALL_OR_OUT_OF_RANGE | JSON_VALUES,
        "interval_ms": st.integers(-5, 5) | JSON_VALUES,
        "payload_bytes": SMALL_OR_OUT_OF_RANGE | JSON_VALUES,
        "fail_at": st.none() | st.integers(-2, 2) | JSON_VALUES,
        "extra": JSON_VALUES,
    },
)
# Only pipelines whose valid runs end at once: anything slower would pile up work.
RUN_BODIES = st.fixed_dictionaries(
    {"pipeline": st.sampled_from(["ticker", "boom", "whoami", "no_such"]) | st.text(max_size=70)},
    optional={
        "input": TICKER_INPUTS | JSON_VALUES,
        "session_id": st.none() | st.text(max_size=70) | JSON_VALUES,
        "metadata": st.none() | JSON_VALUES,
        "timeout_s": st.none() | st.floats(allow_nan=False, allow_infinity=False) | JSON_VALUES,
        "multitask": st.sampled_from(["enqueue", "reject", "interrupt"]) | JSON_VALUES,
        "unknown": JSON_VALUES,
    },
)


@pytest.fixture(scope="module")
def anyone(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=10, headers={"X-Client-Id": "hypothesis"}) as client:
        yield client


def _assert_run_or_envelope(response: httpx.Response) -> None:
    if response.status_code == 201:
        assert {"run_id", "status"} <= set(response.json())
        return
    assert response.status_code in (400, 404, 409, 413, 422), response.text[:300]
    assert_error(response, response.status_code, response.json()["error"]["code"])


@settings(max_examples=300, deadline=None, database=None)
@given(body=RUN_BODIES | JSON_VALUES)
def test_random_json_bodies_get_a_run_or_the_envelope_never_a_500(anyone: httpx.Client, body: Any) -> None:
    _assert_run_or_envelope(anyone.post("/v1/runs", content=json.dumps(body).encode()))


@settings(max_examples=150, deadline=None, database=None)
@given(body=st.binary(max_size=200))
def test_random_bytes_get_the_envelope_never_a_500(anyone: httpx.Client, body: bytes) -> None:
    response = anyone.post("/v1/runs", content=body)
    assert response.status_code in (400, 404, 422), (response.status_code, body)
    assert_error(response, response.status_code, response.json()["error"]["code"])


def test_the_server_still_answers_after_random_bodies(anyone: httpx.Client) -> None:
    assert anyone.get("/healthz").status_code == 200
    assert all(run["run_id"] for run in list_runs(anyone, limit=200))
