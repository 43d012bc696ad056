"""``runyard loadtest``: many users at once against a server, every event checked.

N sessions start together. Each is its own owner (``X-Client-Id: <prefix>-<i>``,
unless a client id or token is given) with a marker of its own, and creates
``ticker`` runs one after another in one session, reading each run's stream and
resuming it with ``Last-Event-ID`` when it drops. Every event is checked as it
arrives; a violation is one of ``KINDS``:

    gap               seq jumped past previous + 1: an event was lost
    duplicate         seq not above the previous one: an event came twice
    foreign_marker    a tick carrying another session's marker: isolation broken
    tick_order        a tick whose ``i`` is not the previous + 1
    tick_count        the run succeeded with another number of ticks than asked
    bad_frame         an SSE frame that is no event, or whose ``id`` is not its ``seq``
    event_after_end   anything after ``end``, a second ``end`` included
    open_after_end    the stream stayed open after ``end``
    run_failed        ``end`` with a status other than ``succeeded``
    snapshot_mismatch ``GET /v1/runs/{id}`` disagrees with the stream
    session_mismatch  a later run of the session landed in another session
    stream_lost       no ``end``: the stream could not be resumed
    timeout           no ``end`` when ``--timeout`` ran out
    http_error        an error answer; transport_error: no answer; bad_response: not the contract's JSON

Tick latency is the receive time minus the tick's ``t``, the server's wall clock
against this machine's: exact only when both share a clock (loopback).
"""

from runyard.loadtest.checks import KINDS, RunCheck, Tally, Violation
from runyard.loadtest.config import PIPELINE, Config
from runyard.loadtest.generator import run
from runyard.loadtest.report import percentiles, report, show

__all__ = ["KINDS", "PIPELINE", "Config", "RunCheck", "Tally", "Violation", "percentiles", "report", "run", "show"]
