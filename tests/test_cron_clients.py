"""Crons (issue 13) from the Python clients (both) and from ``runyard cron
add|list|rm``, against a real server; and ``after_s`` from the clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runyard.cli import main
from runyard.client import APIError, AsyncClient, Client
from tests.support import make_app, serve_in_thread


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(make_app(store="memory://", drain_s=0.2)) as url:
        yield url


def test_the_blocking_client_creates_lists_reads_changes_and_deletes_a_cron(server: str) -> None:
    with Client(server, client_id="cron-sync") as client:
        cron = client.create_cron("nap", {"seconds": 0.01}, "0 9 * * *", timezone="Europe/Paris")
        assert (cron["schedule"], cron["timezone"], cron["enabled"]) == ("0 9 * * *", "Europe/Paris", True)
        assert client.crons() == [cron]
        assert client.cron(cron["cron_id"]) == cron
        assert client.update_cron(cron["cron_id"], enabled=False)["next_run_at"] is None
        assert client.update_cron(cron["cron_id"], input={"seconds": 0.02})["input"]["seconds"] == 0.02
        client.delete_cron(cron["cron_id"])
        with pytest.raises(APIError) as missing:
            client.cron(cron["cron_id"])
        assert (missing.value.status, missing.value.code) == (404, "cron_not_found")
        with pytest.raises(APIError) as bad:
            client.create_cron("nap", {"seconds": 0.01}, "whenever")
        assert (bad.value.status, bad.value.code) == (422, "invalid_schedule")
        assert client.create("nap", {"seconds": 0.01}, after_s=30)["scheduled_for"] is not None


async def test_the_async_client_does_the_same(server: str) -> None:
    async with AsyncClient(server, client_id="cron-async") as client:
        cron = await client.create_cron("nap", {"seconds": 0.01}, "*/10 * * * *", enabled=False)
        assert cron["next_run_at"] is None
        assert await client.crons() == [cron]
        assert await client.cron(cron["cron_id"]) == cron
        enabled = await client.update_cron(cron["cron_id"], schedule="0 * * * *", enabled=True)
        assert enabled["next_run_at"].endswith(":00:00.000000Z")
        await client.delete_cron(cron["cron_id"])
        assert await client.crons() == []
        run = await client.create("nap", {"seconds": 0.01}, after_s=30)
        assert (run["status"], run["scheduled_for"] is not None) == ("queued", True)


def test_runyard_cron_adds_lists_and_removes(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--url", server, "--client-id", "cron-cli"]
    assert main(["cron", "add", "nap", "0 9 * * 1-5", "--input", '{"seconds": 0.01}', "--timezone", "UTC", *flags]) == 0
    added = capsys.readouterr().out
    cron_id = added.split()[1]
    assert added.startswith(f"cron {cron_id} added; next run 20")
    assert main(["cron", "list", *flags]) == 0
    listed = capsys.readouterr().out
    assert cron_id in listed and "'0 9 * * 1-5' UTC" in listed and "nap" in listed
    assert main(["cron", "rm", cron_id, *flags]) == 0
    assert capsys.readouterr().out == f"cron {cron_id} removed\n"
    assert main(["cron", "list", *flags]) == 0
    assert capsys.readouterr().out == "no crons\n"


def test_runyard_cron_reports_a_bad_schedule_and_an_unknown_cron(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--url", server, "--client-id", "cron-cli-errors"]
    assert main(["cron", "add", "nap", "not a schedule", "--input", "{}", *flags]) == 2
    assert "invalid_schedule" in capsys.readouterr().err
    assert main(["cron", "rm", "cron_missing", *flags]) == 2
    assert "cron_not_found" in capsys.readouterr().err
