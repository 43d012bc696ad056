"""The report: the ``--json`` document, and its tables for a person."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from runyard.loadtest.checks import KINDS, Tally
from runyard.loadtest.config import Config

CLOCK_NOTE = "tick latency: arrival minus the tick's t (server clock); exact on loopback"


def percentiles(values: list[float]) -> dict[str, Any]:
    """Nearest-rank p50, p90, p99 and the maximum, in the values' unit, rounded to 0.01."""
    ordered = sorted(values)
    result: dict[str, Any] = {"count": len(ordered)}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        rank = max(1, math.ceil(q * len(ordered)))
        result[name] = round(ordered[rank - 1], 2) if ordered else None
    return result


def report(config: Config, tally: Tally, elapsed: float) -> dict[str, Any]:
    def per_s(count: int) -> float | None:
        return round(count / elapsed, 1) if elapsed > 0 else None

    return {
        "ok": not tally.by_kind,
        "config": {
            "url": config.url,
            "sessions": config.sessions,
            "events": config.events,
            "interval_ms": config.interval_ms,
            "duration_s": config.duration_s,
            "timeout_s": config.deadline_s,
            "owners": "shared" if config.shared_owner else "one per session",
            "prefix": config.prefix,
        },
        "totals": {
            "runs": tally.runs,
            "runs_succeeded": tally.succeeded,
            "events": tally.events,
            "ticks": tally.ticks,
            "reconnects": tally.reconnects,
            "retries": tally.retries,
            "elapsed_s": round(elapsed, 3),
            "runs_per_s": per_s(tally.runs),
            "events_per_s": per_s(tally.events),
            "ticks_per_s": per_s(tally.ticks),
        },
        "latency_ms": {"create": percentiles(tally.create_ms), "tick": percentiles(tally.tick_ms)},
        "latency_note": CLOCK_NOTE,
        "violations_total": sum(tally.by_kind.values()),
        "violations_by_kind": {kind: tally.by_kind[kind] for kind in KINDS},
        "violations": [asdict(violation) for violation in tally.violations],
    }


def show(report: dict[str, Any], console: Console) -> None:
    """The report as tables, for a person."""
    config, totals = report["config"], report["totals"]
    runs = "one run each" if config["duration_s"] is None else f"new runs for {config['duration_s']:g} s"
    console.print(Text(f"runyard loadtest → {config['url']}", style="bold"))
    shape = f"{config['sessions']} sessions x {config['events']} ticks every {config['interval_ms']} ms"
    console.print(Text(f"{shape} · {runs} · owners: {config['owners']}"))
    console.print(_totals_table(totals))
    console.print(_latency_table(report["latency_ms"]))
    console.print(Text(report["latency_note"], style="dim"))
    if report["ok"]:
        console.print(Text("✓ no violations", style="bold green"))
        return
    console.print(_violations_table(report))
    console.print(Text(f"✗ {report['violations_total']} violations", style="bold red"))


def _totals_table(totals: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column(justify="right")
    table.add_row("runs", f"{totals['runs']:,} ({totals['runs_succeeded']:,} succeeded)", _rate(totals["runs_per_s"]))
    table.add_row("events", f"{totals['events']:,}", _rate(totals["events_per_s"]))
    table.add_row("ticks", f"{totals['ticks']:,}", _rate(totals["ticks_per_s"]))
    table.add_row("reconnects", f"{totals['reconnects']:,}", f"retries {totals['retries']:,}")
    table.add_row("elapsed", f"{totals['elapsed_s']:.2f} s", "")
    return table


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}/s"


def _latency_table(latency: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="latency (ms)", title_justify="left")
    table.add_column("")
    for name in ("p50", "p90", "p99", "max", "count"):
        table.add_column(name, justify="right")
    for name, label in (("create", "create (POST /v1/runs)"), ("tick", "tick (sent → received)")):
        row = latency[name]
        cells = ["-" if row[key] is None else f"{row[key]:.2f}" for key in ("p50", "p90", "p99", "max")]
        table.add_row(label, *cells, f"{row['count']:,}")
    return table


def _violations_table(report: dict[str, Any]) -> Table:
    table = Table(title="violations", title_justify="left", title_style="bold red")
    table.add_column("kind", style="red")
    table.add_column("count", justify="right")
    table.add_column("first seen")
    for kind, count in report["violations_by_kind"].items():
        if count:
            first = next((v for v in report["violations"] if v["kind"] == kind), None)
            where = "" if first is None else _where(first)
            table.add_row(kind, f"{count:,}", where)
    return table


def _where(violation: dict[str, Any]) -> str:
    run = f", {violation['run_id']}" if violation["run_id"] else ""
    return f"session {violation['session']}{run}: {violation['detail']}"
