"""Which webhook URLs runyard refuses (the SSRF guard), unit by unit; over HTTP in ``test_delivery.py``."""

from __future__ import annotations

import ipaddress

import pytest

from runyard.errors import InvalidWebhook
from runyard.webhooks.addresses import refused_because, resolve


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("::ffff:10.0.0.1", "private"),  # an IPv4-mapped address reaches the IPv4 one
        ("100.64.0.1", "not public"),  # carrier-grade NAT
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert refused_because(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["240.0.0.1", "255.255.255.255", "2001:db8::1"])
def test_reserved_and_documentation_addresses_are_refused(address: str) -> None:
    # Python's ipaddress files some of them as private, some as reserved: refused either way
    assert refused_because(ipaddress.ip_address(address)) in {"private", "reserved", "not public"}


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", "8.8.8.8"])
def test_public_addresses_are_not(address: str) -> None:
    assert refused_because(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/hook",
        "file:///etc/passwd",
        "127.0.0.1/hook",
        "http:///hook",
        "http://user:pw@127.0.0.1/hook",
        "http://127.0.0.1:99999/hook",
        "https://" + "a" * 2100 + ".com/",
        "http://bad\x00host/hook",
        "http://" + "a" * 70 + ".example/hook",  # a label longer than DNS allows
        "http://[::1/hook",
    ],
)
async def test_urls_runyard_does_not_call_are_refused_even_when_allowed(url: str) -> None:
    with pytest.raises(InvalidWebhook):
        await resolve(url, {"127.0.0.1", "a" * 2100 + ".com"})


async def test_an_allowed_host_is_called_at_the_address_it_resolves_to() -> None:
    target = await resolve("http://localhost:8123/hook?x=1", {"localhost"})
    assert target.host == "localhost" and target.address in {"127.0.0.1", "::1"}
    assert target.pinned_url in {"http://127.0.0.1:8123/hook?x=1", "http://[::1]:8123/hook?x=1"}


async def test_a_host_allowed_is_not_every_host() -> None:
    with pytest.raises(InvalidWebhook, match="loopback"):
        await resolve("http://localhost:8123/hook", {"127.0.0.1"})
