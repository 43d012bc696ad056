"""Which webhook URLs runyard calls, and where it connects for them.

Only ``http`` and ``https``; the host is resolved and every address it resolves
to must be public: a loopback, private, link-local, multicast, unspecified or
reserved address is refused (the server-side request forgery guard: a caller
must not make runyard reach the metadata service or its own network), unless
the host is in ``RUNYARD_WEBHOOK_ALLOW_HOSTS``. The check runs when the run is
created and again at each delivery, which connects to the address just checked
(``Target.address``), so a DNS answer changed in between cannot redirect it."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

from runyard.errors import InvalidWebhook

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_S = 10.0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Target:
    """Where a delivery goes: ``url`` as given, its ``host``, and the checked ``address`` to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    @property
    def pinned_url(self) -> str:
        """``url`` with its host replaced by the checked address (the path and query kept)."""
        parts = urlsplit(self.url)
        host = f"[{self.address}]" if ":" in self.address else self.address
        return parts._replace(netloc=f"{host}:{self.port}").geturl()


def refused_because(ip: IPAddress) -> str | None:
    """Why runyard will not call ``ip``, or None for a public address."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:10.0.0.1 reaches 10.0.0.1
        ip = mapped
    for reason, hit in (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if hit:
            return reason
    return None if ip.is_global else "not public"


def parse(url: str) -> tuple[str, str, int]:
    """``url``'s scheme, host (lower case, IPv6 without brackets) and port;
    ``InvalidWebhook`` if it is not a URL runyard calls."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook(f"webhook URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidWebhook(f"webhook URL {url!r} is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhook(f"webhook URL must be http or https, not {parts.scheme or 'schemeless'}: {url!r}")
    if not parts.hostname:
        raise InvalidWebhook(f"webhook URL {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhook("webhook URL must not carry credentials")
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


async def resolve(url: str, allowed_hosts: Collection[str]) -> Target:
    """The target of ``url``, once its host resolved to an address runyard may
    call; ``InvalidWebhook`` otherwise (nothing is connected to)."""
    scheme, host, port = parse(url)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise InvalidWebhook(f"webhook host {host!r} did not resolve within {RESOLVE_TIMEOUT_S:g} s") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the host; UnicodeError: a label IDNA refuses
        raise InvalidWebhook(f"webhook host {host!r} does not resolve: {exc}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
    if not addresses:
        raise InvalidWebhook(f"webhook host {host!r} does not resolve")
    if host not in allowed_hosts:
        for ip in addresses:
            reason = refused_because(ip)
            if reason is not None:
                raise InvalidWebhook(
                    f"webhook host {host!r} resolves to {ip}, a {reason} address runyard does not call;"
                    " allow the host with RUNYARD_WEBHOOK_ALLOW_HOSTS if it is yours"
                )
    return Target(url, scheme, host, port, str(addresses[0]))
