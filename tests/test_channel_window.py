"""A run's channel keeps its newest frames (``RunChannel``'s window) for followers
that are nearly caught up; a follower the window cannot serve reads the store."""

from __future__ import annotations

import gc

from runyard.events.hub import WINDOW, WINDOW_BYTES, RunChannel
from runyard.models import Event


def event(seq: int, type_: str = "tick") -> Event:
    return Event("run_a", seq, type_, b'{"i":%d}' % seq, 1_700_000_000.0)


def delivered(*seqs: int) -> RunChannel:
    channel = RunChannel("run_a")
    channel.deliver([event(seq) for seq in seqs])
    return channel


def seqs(frames: list[tuple[int, bool, bytes]] | None) -> list[int] | None:
    return None if frames is None else [seq for seq, _, _ in frames]


def test_the_window_gives_the_frames_past_a_cursor_in_order_at_most_limit() -> None:
    channel = delivered(1, 2, 3, 4)
    assert seqs(channel.after(1, 10)) == [2, 3, 4]
    assert seqs(channel.after(0, 2)) == [1, 2]
    assert channel.after(4, 10) == []  # caught up


def test_only_the_runs_end_is_marked_as_the_end() -> None:
    channel = delivered(1)
    channel.deliver([event(2), event(3, "end")])
    assert [(seq, is_end) for seq, is_end, _ in channel.after(0, 10) or []] == [(1, False), (2, False), (3, True)]
    assert [is_end for _, is_end, _ in channel.after(0, 2) or []] == [False, False]


def test_a_cursor_before_the_window_sends_the_follower_to_the_store() -> None:
    channel = RunChannel("run_a")
    channel.deliver([event(5), event(6)])  # joined after the run's start
    assert channel.after(3, 10) is None
    assert seqs(channel.after(4, 10)) == [5, 6]


def test_a_duplicate_delivery_is_ignored_and_a_gap_restarts_the_window() -> None:
    channel = delivered(1, 2, 3)
    channel.deliver([event(2), event(3)])
    assert seqs(channel.after(0, 10)) == [1, 2, 3]
    channel.deliver([event(7)])  # 4 to 6 never reached this process
    assert channel.after(3, 10) is None
    assert seqs(channel.after(6, 10)) == [7]


def test_past_twice_its_size_the_window_keeps_its_newest_events() -> None:
    channel = delivered(*range(1, 2 * WINDOW + 2))
    newest = 2 * WINDOW + 1
    assert channel.after(newest - WINDOW - 1, 1) is None
    assert seqs(channel.after(newest - WINDOW, 1)) == [newest - WINDOW + 1]
    assert seqs(channel.after(newest - 1, 10)) == [newest]


def test_past_its_bytes_the_window_keeps_only_the_newest_frames_that_fit() -> None:
    channel = RunChannel("run_a")
    mib = b'"' + b"x" * (1 << 20) + b'"'
    channel.deliver([Event("run_a", seq, "tick", mib, 1_700_000_000.0) for seq in range(1, 6)])
    assert channel.after(1, 10) is None  # 5 MiB of frames: the oldest two went
    assert seqs(channel.after(2, 10)) == [3, 4, 5]
    channel.deliver([Event("run_a", 6, "tick", b'"' + b"x" * WINDOW_BYTES + b'"', 1_700_000_000.0)])
    assert channel.after(5, 10) is None  # a frame larger than the window: nothing is kept


def test_the_window_holds_nothing_the_garbage_collector_tracks_per_event() -> None:
    """Each tracked object stays young until a pass of the collector looks at it:
    1,000 followed runs at 10 events/s made a pass (the whole process stopped
    for 15-25 ms) every few seconds."""
    channel = RunChannel("run_a")
    events = [event(seq) for seq in range(1, WINDOW + 1)]
    gc.disable()
    try:
        young = len(gc.get_objects(generation=0))
        for one in events:
            channel.deliver([one])
        assert len(gc.get_objects(generation=0)) - young < WINDOW // 10
    finally:
        gc.enable()
    assert seqs(channel.after(0, WINDOW)) == list(range(1, WINDOW + 1))
