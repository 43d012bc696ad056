"""RUNYARD_AUTH=jwt: bearer tokens, their owner, and the ways a token is refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from runyard.errors import ConfigurationError
from runyard.settings import Settings
from tests.support import make_app, serve_in_thread

SECRET = "s3cret-for-tests-only-0123456789abcdef"
TICK = {"pipeline": "ticker", "input": {"marker": "jwt", "count": 1}}


def token(sub: str | None = "alice", key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A signed token; a claim given as None is left out."""
    headers = {"kid": claims.pop("kid")} if "kid" in claims else None
    payload = {"sub": sub, "exp": int(time.time()) + 600, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=algorithm, headers=headers)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    app = make_app(
        store="memory://", auth="jwt", jwt_secret=SECRET, jwt_audience="runyard-tests", admin_subjects="root"
    )
    with serve_in_thread(app) as url:
        yield url


def create(server: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server}/v1/runs", json=TICK, headers=headers, timeout=10)


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith('Bearer realm="runyard"')


def test_a_request_without_a_token_is_401_with_a_bearer_challenge(server: str) -> None:
    assert_refused(create(server, {}))
    assert_refused(httpx.get(f"{server}/v1/runs", headers={"X-Client-Id": "alice"}))


@pytest.mark.parametrize(
    "claims",
    [
        {"key": "another-secret-entirely-0123456789"},
        {"exp": int(time.time()) - 10},
        {"nbf": int(time.time()) + 7 * 86400},  # valid a week after collection: a slow suite never gets there
        {"aud": "someone-else"},
        {"aud": None},
        {"exp": None},
        {"sub": None},
        {"sub": "not a valid owner"},
    ],
    ids=["bad-signature", "expired", "not-yet-valid", "wrong-audience", "no-audience", "no-exp", "no-sub", "bad-sub"],
)
def test_a_token_that_fails_any_check_is_401_and_creates_nothing(server: str, claims: dict[str, Any]) -> None:
    key = claims.pop("key", SECRET)
    fields = {"aud": "runyard-tests", **claims}
    refused = token(key=key, **fields)
    assert_refused(create(server, bearer(refused)))


def test_a_token_signed_with_none_is_refused(server: str) -> None:
    unsigned = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60, "aud": "runyard-tests"}, None, "none")
    assert_refused(create(server, bearer(unsigned)))


def test_a_valid_token_makes_its_sub_the_owner(server: str) -> None:
    alice = bearer(token("alice", aud="runyard-tests"))
    bob = bearer(token("bob", aud="runyard-tests"))
    created = create(server, alice)
    assert created.status_code == 201
    run_id = created.json()["run_id"]
    assert httpx.get(f"{server}/v1/runs/{run_id}", headers=alice).status_code == 200
    assert httpx.get(f"{server}/v1/runs/{run_id}", headers=bob).status_code == 404
    assert httpx.get(f"{server}/v1/runs/{run_id}", headers={"X-Client-Id": "alice"}).status_code == 401


def test_a_stream_accepts_the_token_in_the_query_for_event_source(server: str) -> None:
    alice = token("alice", aud="runyard-tests")
    run_id = create(server, bearer(alice)).json()["run_id"]
    with httpx.stream("GET", f"{server}/v1/runs/{run_id}/stream", params={"access_token": alice}) as response:
        assert response.status_code == 200
        assert any(line == "event: end" for line in response.iter_lines())


def test_probes_and_metrics_need_no_token(server: str) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert httpx.get(f"{server}{path}").status_code == 200, path


def test_an_admin_may_list_every_owners_runs_and_others_may_not(server: str) -> None:
    carol = bearer(token("carol", aud="runyard-tests"))
    run_id = create(server, carol).json()["run_id"]
    root = bearer(token("root", aud="runyard-tests"))
    everyone = httpx.get(f"{server}/v1/runs", params={"owner": "*", "limit": 200}, headers=root).json()["runs"]
    assert run_id in {run["run_id"] for run in everyone}
    carols = httpx.get(f"{server}/v1/runs", params={"owner": "carol"}, headers=root).json()["runs"]
    assert [run["run_id"] for run in carols] == [run_id]
    refused = httpx.get(f"{server}/v1/runs", params={"owner": "*"}, headers=carol)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


def test_admins_without_an_auth_that_proves_identity_are_refused_at_start_up() -> None:
    """Issue 10: under RUNYARD_AUTH=none, ``X-Client-Id: root`` (or ``?client_id=root``) made
    anyone the admin ``root``. Such settings no longer validate, so no server starts with them."""
    with pytest.raises(ValidationError, match="RUNYARD_ADMIN_SUBJECTS needs RUNYARD_AUTH=jwt"):
        Settings(store="memory://", admin_subjects="root")
    assert Settings(store="memory://", auth="jwt", jwt_secret=SECRET, admin_subjects="root").admin_subject_set == {
        "root"
    }


def _serve_public_key_app(tmp_path: Path, algorithm: str, private_key: Any, **settings: Any) -> None:
    app = make_app(store="memory://", auth="jwt", jwt_algorithms=algorithm, **settings)
    with serve_in_thread(app) as url:
        good = token("dana", key=private_key, algorithm=algorithm, kid="k1")
        assert create(url, bearer(good)).status_code == 201
        forged = token("dana", key=SECRET, algorithm="HS256", kid="k1")  # the algorithm-confusion attack
        assert_refused(create(url, bearer(forged)))


def test_rs256_with_a_pem_public_key(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _serve_public_key_app(tmp_path, "RS256", private, jwt_public_key=pem.decode())


def test_es256_with_a_jwks_file_chosen_by_kid(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}))
    _serve_public_key_app(tmp_path, "ES256", private, jwt_jwks_file=str(jwks))


@pytest.mark.parametrize(
    "settings",
    [
        {"jwt_algorithms": "HS256"},
        {"jwt_algorithms": "RS256"},
        {"jwt_algorithms": "HS256,RS256", "jwt_secret": SECRET},
        {"jwt_algorithms": "none", "jwt_secret": SECRET},
    ],
    ids=["hs-without-secret", "rs-without-key", "mixed-families", "unknown-algorithm"],
)
def test_a_jwt_configuration_that_cannot_work_fails_at_start_up(settings: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        make_app(store="memory://", auth="jwt", **settings).http()


def test_listing_pipelines_needs_a_token_too(server: str) -> None:
    assert_refused(httpx.get(f"{server}/v1/pipelines"))
    assert httpx.get(f"{server}/v1/pipelines", headers=bearer(token(aud="runyard-tests"))).status_code == 200
