"""``runyard.webhooks.verify_signature``: what a receiver checks of a delivery."""

from __future__ import annotations

import hashlib
import hmac

from runyard.webhooks import sign, verify_signature

BODY = b'{"run_id":"run_1","status":"succeeded"}'
SECRET = "s3cret"
AT = 1_700_000_000


def test_the_signature_is_the_hmac_of_the_time_and_the_body() -> None:
    digest = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET, at=AT) == f"t=1700000000,v1={digest}"


def test_a_delivery_signed_with_the_secret_verifies() -> None:
    assert verify_signature(BODY, sign(BODY, SECRET, at=AT), SECRET, now=AT + 10)


def test_another_body_secret_or_signature_does_not() -> None:
    header = sign(BODY, SECRET, at=AT)
    assert not verify_signature(BODY + b" ", header, SECRET, now=AT)
    assert not verify_signature(BODY, header, "other", now=AT)
    assert not verify_signature(BODY, header[:-1] + ("0" if header[-1] != "0" else "1"), SECRET, now=AT)


def test_a_signature_older_or_newer_than_the_tolerance_does_not() -> None:
    header = sign(BODY, SECRET, at=AT)
    assert verify_signature(BODY, header, SECRET, tolerance_s=300, now=AT + 300)
    assert not verify_signature(BODY, header, SECRET, tolerance_s=300, now=AT + 301)
    assert not verify_signature(BODY, header, SECRET, tolerance_s=300, now=AT - 301)


def test_a_signature_of_another_time_does_not() -> None:
    digest = sign(BODY, SECRET, at=AT).split("v1=")[1]
    assert not verify_signature(BODY, f"t={AT + 1},v1={digest}", SECRET, now=AT)


def test_malformed_headers_are_not_valid() -> None:
    for header in [None, "", "v1=abc", "t=abc,v1=abc", f"t={AT}", f"t={AT},t={AT},v1=x", "garbage"]:
        assert not verify_signature(BODY, header, SECRET, now=AT), header


def test_any_of_several_v1_signatures_may_match() -> None:
    header = sign(BODY, SECRET, at=AT) + ",v1=" + "0" * 64
    assert verify_signature(BODY, header, SECRET, now=AT)
