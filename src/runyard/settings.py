"""Every ``RUNYARD_*`` setting in one typed place.

Each field is read from the environment variable ``RUNYARD_<NAME>`` and, for the
``serve``/``demo`` commands, from the flag ``--<name-with-dashes>`` (the CLI builds
its flags from this class, so the two can never drift apart).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runyard.pricing import Price, parse_prices

MIN_LEASE_S = 1.0  # the shortest run or permit lease a renewal keeps safely (see _leases_can_be_renewed)


class Settings(BaseSettings):
    """The runtime's configuration; defaults are the embedded single-process setup."""

    model_config = SettingsConfigDict(env_prefix="RUNYARD_", extra="ignore", frozen=True)

    store: str = Field(
        "sqlite:///./runyard.db", description="Store URL: memory://, sqlite:///path.db, postgresql://user@host:port/db"
    )
    broker: str = Field("local://", description="Fan-out broker URL: local:// (in-process), redis://host:port/db")
    role: Literal["all", "api", "worker"] = Field(
        "all", description="What the process does: all, api (HTTP only) or worker (executes runs)"
    )
    host: str = Field("127.0.0.1", description="Address the HTTP server binds")
    port: int = Field(8000, ge=0, le=65535, description="Port the HTTP server binds")

    max_concurrent_runs: int = Field(64, ge=1, description="Runs executing at once in this (worker) process")
    history_max: int = Field(100, ge=1, description="Messages kept in a session's memory")
    retention_s: float = Field(7 * 86400, gt=0, description="How long finished runs and events are kept")
    sweep_interval_s: float = Field(60, gt=0, description="How often expired runs, sessions and store items are swept")
    lease_s: float = Field(30, gt=0, description="A running run's lease; a dead worker's run is recovered after it")
    drain_s: float = Field(10, ge=0, description="On shutdown, how long running runs may finish before hand-back")
    cancel_grace_s: float = Field(
        5,
        gt=0,
        description="How long a cancelled, timed-out or drained pipeline may take to stop before it is abandoned",
    )
    limit_lease_s: float = Field(
        10, description="A limit's permit lease: how soon the permits of a dead process come back (redis:// brokers)"
    )
    wait_max_s: float = Field(300, gt=0, description="POST /v1/runs/wait answers 202 after this long")
    session_ttl_s: float = Field(86400, gt=0, description="An idle session expires after this long")
    max_run_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="Bytes of events one run may store, over all its attempts; past it the run fails too_large",
    )

    sse_heartbeat_s: float = Field(15, gt=0, description="Heartbeat comment after this much silence")
    sse_pad_bytes: int = Field(0, ge=0, le=65536, description="Pad every SSE frame to at least this size")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest accepted request body (413 above)")
    read_timeout_s: float = Field(
        10,
        gt=0,
        description="A request's headers and body must arrive within this long of its first byte (or of the"
        " connection opening); slower connections are closed (408 if headers were cut short)",
    )
    # Longer than the clients' own idle expiry (httpx 5 s, aiohttp 15 s, Node's 4 s)
    # and common proxies' (an AWS ALB's 60 s): a client that reuses a connection the
    # server is closing at that moment gets an error for a request it cannot retry
    # (httpx: "Server disconnected without sending a response", seen in CI with
    # uvicorn's 5 s, the same as httpx's). nginx keeps 75 s too.
    keep_alive_s: int = Field(
        75,
        ge=1,
        description="An idle keep-alive connection is closed after this long; keep it above the idle timeout"
        " of the clients and proxies that reuse connections",
    )
    max_connections: int = Field(
        20_000,
        ge=1,
        description="Open connections (streams included) this process serves; past it requests get 503"
        " server_busy (/healthz and /metrics excepted)",
    )
    max_streams_per_owner: int = Field(
        100,
        ge=1,
        description="Streams one owner may have open at once across the deployment (counted in Redis with a"
        " redis:// broker; each process keeps its own count while Redis does not answer); 429 too_many_streams above",
    )
    cors_origins: str = Field("", description="Comma-separated origins allowed to call the API")

    auth: Literal["none", "jwt"] = Field(
        "none", description="How callers are identified: none (X-Client-Id) or jwt (bearer token, owner = sub)"
    )
    jwt_algorithms: str = Field("HS256", description="Comma-separated JWT algorithms accepted, e.g. HS256 or RS256")
    jwt_secret: str | None = Field(None, description="HS256 shared secret")
    jwt_public_key: str | None = Field(None, description="RS256/ES256 public key: PEM text, or a path to a PEM file")
    jwt_jwks_file: str | None = Field(None, description="Path to a JWKS file of public keys, chosen by kid")
    jwt_audience: str | None = Field(None, description="Required aud claim, if set")
    jwt_issuer: str | None = Field(None, description="Required iss claim, if set")
    admin_subjects: str = Field(
        "", description="Comma-separated owners who may list every owner's runs; needs RUNYARD_AUTH=jwt"
    )
    playground: bool = Field(
        False,
        description="A single-user playground: anyone may list every owner's runs (the dashboard shows them all);"
        " `runyard demo` is one unless --no-playground; honoured only under RUNYARD_AUTH=none, never under jwt",
    )
    rate_limit: str | None = Field(None, description="Run creations allowed per owner, e.g. 30/minute (429 above)")
    quota_runs: int | None = Field(
        None, ge=0, description="Runs each owner may ever create (429 quota_exceeded above), exactly, across processes"
    )
    webhook_secret: str | None = Field(
        None,
        description="Key of the HMAC-SHA256 signature on every webhook delivery; without it, a run with a"
        " webhook is refused (422 invalid_webhook)",
    )
    webhook_retry_s: float = Field(
        3600, gt=0, description="How long a webhook delivery is retried (with backoff) after its run finished"
    )
    webhook_allow_hosts: str = Field(
        "", description="Comma-separated webhook hosts allowed even though they resolve to a private or local address"
    )
    trace_url: str | None = Field(
        None,
        description="Where the dashboard links a run's trace, {trace_id} replaced by its id,"
        " e.g. http://localhost:16686/trace/{trace_id}",
    )
    prices: str | None = Field(
        None,
        description='Token prices per million for the dashboard\'s costs, JSON: {"<model or *>":'
        ' {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}',
    )
    log_level: str = Field("INFO", description="Log level")
    log_format: Literal["auto", "json", "console"] = Field("auto", description="Log format")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible endpoint for the chat demo")
    llm_model: str = Field("gpt-4o-mini", description="Model the chat demo asks that endpoint for")
    llm_api_key: str | None = Field(None, description="Bearer token for that endpoint")

    @model_validator(mode="after")
    def _roles_share_state(self) -> Settings:
        # an api process and a worker process meet only in a shared store and broker
        if self.role != "all" and not (self.store.startswith("postgresql://") and self.broker.startswith("redis://")):
            raise ValueError(
                f"role {self.role} needs a store and a broker shared between processes:"
                " RUNYARD_STORE=postgresql://... and RUNYARD_BROKER=redis://..."
            )
        return self

    @model_validator(mode="after")
    def _admins_need_proven_identities(self) -> Settings:
        # under auth=none the owner is whatever X-Client-Id says: anyone could name an admin
        if self.admin_subject_set and self.auth != "jwt":
            raise ValueError(
                f"RUNYARD_ADMIN_SUBJECTS needs RUNYARD_AUTH=jwt: under RUNYARD_AUTH={self.auth} any caller can claim"
                " an admin's name with X-Client-Id and list every owner's runs; set RUNYARD_AUTH=jwt or leave"
                " RUNYARD_ADMIN_SUBJECTS empty"
            )
        return self

    @model_validator(mode="after")
    def _console_settings_hold(self) -> Settings:
        parse_prices(self.prices)  # a bad table fails at start-up, not on the first page view
        if self.trace_url is not None and "{trace_id}" not in self.trace_url:
            raise ValueError(f"RUNYARD_TRACE_URL {self.trace_url!r} needs a {{trace_id}} to put the run's trace id in")
        return self

    @model_validator(mode="after")
    def _leases_can_be_renewed(self) -> Settings:
        # A run's lease is renewed every third of it, a permit's every quarter. A
        # healthy process must never lose one to a pause of its event loop (a full
        # garbage collection took 230 ms, server.py), or its run executes twice.
        for name, value, every in (("lease_s", self.lease_s, 3), ("limit_lease_s", self.limit_lease_s, 4)):
            if value < MIN_LEASE_S:
                flag = "--" + name.replace("_", "-")
                raise ValueError(
                    f"RUNYARD_{name.upper()} ({flag}) of {value:g} s is too short: it is renewed every"
                    f" 1/{every} of it ({value / every:.3g} s), so one pause of the event loop (a garbage"
                    f" collection can take 230 ms) would lose it on a healthy process; use at least {MIN_LEASE_S:g}"
                )
        return self

    @property
    def executes_runs(self) -> bool:
        return self.role != "api"

    @property
    def serves_api(self) -> bool:
        return self.role != "worker"

    @property
    def cors_origin_list(self) -> list[str]:
        return _items(self.cors_origins)

    @property
    def jwt_algorithm_list(self) -> list[str]:
        return _items(self.jwt_algorithms)

    @property
    def admin_subject_set(self) -> frozenset[str]:
        return frozenset(_items(self.admin_subjects))

    @property
    def lists_every_owner(self) -> bool:
        """Whether anyone may list every owner's runs: a playground, and only while
        identities are not proven (under jwt, owners are real people)."""
        return self.playground and self.auth == "none"

    @property
    def price_table(self) -> dict[str, Price]:
        return parse_prices(self.prices)

    @property
    def webhook_allowed_hosts(self) -> frozenset[str]:
        return frozenset(host.lower().strip("[]") for host in _items(self.webhook_allow_hosts))


SECRET_PARAMETERS = frozenset({"password", "passwd"})


def redact_url(url: str) -> str:
    """``url`` (a store's, a broker's) fit for a message: its password, in the
    authority or the query, replaced by ``***``."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    secret_query = any(name in SECRET_PARAMETERS for name, _ in query)
    if parts.password is None and not secret_query:
        return url  # as given: urlunsplit would drop the "//" of memory://
    netloc = parts.netloc
    if parts.password is not None:
        credentials, _, host = netloc.rpartition("@")
        netloc = f"{credentials.partition(':')[0]}:***@{host}"
    hidden = [(name, "***" if name in SECRET_PARAMETERS else value) for name, value in query]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(hidden, safe="*")))


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]
