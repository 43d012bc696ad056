"""Who is asking: the owner of the runs and sessions a request may see.

``RUNYARD_AUTH=none``: the owner is the ``X-Client-Id`` header (or the
``client_id`` query parameter, for a browser's ``EventSource``, which cannot
send headers), else ``anonymous``. ``RUNYARD_AUTH=jwt``: a bearer token is
required (``Authorization: Bearer``, or ``access_token`` in the query for
``EventSource``); its ``sub`` is the owner. The algorithms accepted come from
configuration, never from the token, and symmetric and asymmetric ones are
never mixed (RFC 8725 2.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from fastapi import Request

from runyard.errors import ConfigurationError, RunyardError
from runyard.settings import Settings

CLIENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
ANONYMOUS = "anonymous"
SYMMETRIC = {"HS256", "HS384", "HS512"}
ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}


class InvalidClientId(RunyardError):
    code = "invalid_client_id"
    status = 400


class Unauthorized(RunyardError):
    """401, with the ``WWW-Authenticate`` challenge of RFC 6750."""

    code = "unauthorized"
    status = 401

    @property
    def headers(self) -> dict[str, str]:
        description = self.message.replace('"', "'")
        challenge = f'Bearer realm="runyard", error="invalid_token", error_description="{description}"'
        return {"WWW-Authenticate": challenge}


class Forbidden(RunyardError):
    code = "forbidden"
    status = 403


@dataclass(frozen=True, slots=True)
class Principal:
    owner: str
    admin: bool = False
    playground: bool = False  # RUNYARD_PLAYGROUND under auth=none: anyone may list every owner's runs

    def listed_owner(self, asked: str | None) -> str | None:
        """Whose runs a listing shows: the caller's; an admin, or anyone in a
        playground, may ask for anyone's (``*``: every owner's, None)."""
        if asked is None or asked == self.owner:
            return self.owner
        if not (self.admin or self.playground):
            raise Forbidden("only an admin may list another owner's runs")
        return None if asked == "*" else asked


class Authenticator:
    """Turns a request into a ``Principal``, per the configured scheme."""

    def __init__(self, settings: Settings) -> None:
        self._jwt = settings.auth == "jwt"
        self._admins = settings.admin_subject_set
        self._playground = settings.lists_every_owner
        self._algorithms = settings.jwt_algorithm_list
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._key: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        if self._jwt:
            self._configure_keys(settings)

    def _configure_keys(self, settings: Settings) -> None:
        algorithms = set(self._algorithms)
        if not algorithms or not algorithms <= SYMMETRIC | ASYMMETRIC:
            raise ConfigurationError(f"RUNYARD_JWT_ALGORITHMS {settings.jwt_algorithms!r} names no known algorithm")
        if algorithms & SYMMETRIC and algorithms & ASYMMETRIC:
            raise ConfigurationError("RUNYARD_JWT_ALGORITHMS must not mix HS* with public-key algorithms")
        if algorithms <= SYMMETRIC:
            if not settings.jwt_secret:
                raise ConfigurationError("RUNYARD_AUTH=jwt with HS* algorithms needs RUNYARD_JWT_SECRET")
            self._key = settings.jwt_secret
        elif settings.jwt_jwks_file:
            self._jwks = jwt.PyJWKSet.from_json(Path(settings.jwt_jwks_file).read_text())
        elif settings.jwt_public_key:
            key = settings.jwt_public_key
            self._key = key if key.lstrip().startswith("-----BEGIN") else Path(key).read_text()
        else:
            raise ConfigurationError(
                "RUNYARD_AUTH=jwt with public-key algorithms needs RUNYARD_JWT_PUBLIC_KEY or RUNYARD_JWT_JWKS_FILE"
            )

    def check(self, request: Request) -> None:
        """Refuse an unauthenticated caller (a route that shows no owner's data still
        needs a token under ``jwt``; any client id will do under ``none``)."""
        if self._jwt:
            self._subject(request)

    def principal(self, request: Request) -> Principal:
        owner = self._subject(request) if self._jwt else _client_id(request)
        return Principal(owner, admin=owner in self._admins, playground=self._playground)

    def _subject(self, request: Request) -> str:
        token = _bearer(request)
        try:
            claims = jwt.decode(
                token,
                self._signing_key(token),
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token was refused: {exc}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not CLIENT_ID.fullmatch(subject):
            raise Unauthorized("the token's sub must be 1-128 characters of [A-Za-z0-9_.-]")
        return subject

    def _signing_key(self, token: str) -> Any:
        if self._jwks is None:
            return self._key
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            return self._jwks[kid].key if kid else self._jwks.keys[0].key
        except (jwt.PyJWTError, KeyError, IndexError) as exc:
            raise Unauthorized(f"no key for this token: {exc}") from None


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return token.strip()
    query_token = request.query_params.get("access_token")
    if not query_token:
        raise Unauthorized("a bearer token is required")
    return query_token


def _client_id(request: Request) -> str:
    client_id = request.headers.get("x-client-id") or request.query_params.get("client_id")
    if client_id is None:
        return ANONYMOUS
    if not CLIENT_ID.fullmatch(client_id):
        raise InvalidClientId("X-Client-Id must be 1-128 characters of [A-Za-z0-9_.-]")
    return client_id


def principal_of(request: Request) -> Principal:
    authenticator: Authenticator = request.app.state.auth
    return authenticator.principal(request)


def owner_of(request: Request) -> str:
    """The owner whose runs and sessions this request may see."""
    return principal_of(request).owner
