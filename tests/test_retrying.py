"""The one retry rule (``runyard.retrying``): doubling, bounded, jittered, and
``retry`` running a call under it."""

from __future__ import annotations

import pytest

from runyard.retrying import Backoff, retry


def test_a_wait_doubles_from_the_first_up_to_the_ceiling() -> None:
    steady = Backoff(first_s=0.05, max_s=1.0, spread=(1.0, 1.0))
    assert [steady.delay(n) for n in range(1, 7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert steady.delay(10_000) == 1.0  # no float overflow after a long outage


def test_jitter_only_shortens_a_wait_by_default_so_the_ceiling_holds() -> None:
    jittered = Backoff(first_s=0.02, max_s=1.0)
    for failures in (1, 3, 20):
        base = min(1.0, 0.02 * 2 ** (failures - 1))
        assert all(base / 2 <= jittered.delay(failures) <= base for _ in range(100))


class Flaky:
    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.left, self.error, self.calls = failures, error, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise self.error("down")
        return "answer"


async def test_retry_calls_until_it_answers_and_reports_each_failure() -> None:
    call, heard = Flaky(3), []
    answer = await retry(call, Backoff(0.001, 0.001), on=ConnectionError, failed=heard.append)
    assert (answer, call.calls, len(heard)) == ("answer", 4, 3)


async def test_retry_raises_at_once_what_it_does_not_retry() -> None:
    call = Flaky(1, ValueError)
    with pytest.raises(ValueError):
        await retry(call, Backoff(0.001, 0.001), on=ConnectionError)
    assert call.calls == 1


async def test_retry_gives_up_with_the_last_failure_after_its_deadline() -> None:
    call, heard = Flaky(10**6), []
    with pytest.raises(ConnectionError):
        await retry(call, Backoff(0.005, 0.005), on=ConnectionError, failed=heard.append, give_up_after_s=0.05)
    assert 2 <= call.calls < 100 and len(heard) == call.calls  # the last failure is heard too
