"""The load client of ``bench/streams.py`` and ``bench/scaleout.py``: one process
(or one shard of several) that creates ``ticker`` runs and reads their SSE streams,
validating every frame.

It is started by ``streams.py`` as ``python _loadgen.py '<config JSON>'`` and
prints JSON lines on stdout: ``{"event": "opened", ...}`` (idle mode, once every
stream is open; it then waits for a ``GO`` line on stdin) and finally
``{"event": "result", ...}``. It is built to be cheap, because on a 2-core
machine it competes with the server for CPU:

- uvloop, one aiohttp session, ``readany()`` on the raw body;
- SSE parsed at the bytes level: complete frames are split off each chunk (several
  per chunk are the norm), the ``id:`` line of every frame is read and checked
  (seq 1, 2, 3, ... no gap, no duplicate), every ``tick`` frame is checked to
  contain its run's marker with a bytes ``in`` test, and only one tick in
  ``sample`` is JSON-decoded, for its ``t`` (publish-to-receive latency);
- anything unusual (CRLF line ends, comments, other field orders) takes a slower
  general path, so heartbeats (``: ping``) are counted too.

``scaleout.py`` adds ``urls`` (several API processes: run ``i`` is created and
streamed on ``urls[i % n]``), ``pipeline`` and ``input_extra`` (another pipeline
taking the ticker's input), and two modes: ``loop`` (closed loop for
``duration_s``) and ``create`` (run creations only).

Everything is bounded by ``deadline_s``: the process always ends by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import select
import sys
import threading
import time
import uuid
from typing import Any

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import raise_nofile

try:
    import orjson

    loads = orjson.loads

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)
except ImportError:  # pragma: no cover - orjson is a runyard dependency
    loads = json.loads

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
# connection failures worth a retry for idempotent requests: a pooled keep-alive connection
# that the server closed just as it was reused
RETRYABLE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
RETRIES = 2
TICK_EVENT = b"event: tick\n"


def parse_fields(frame: bytes) -> tuple[bytes | None, bytes | None, bytes | None, int]:
    """General SSE frame parser: (id, event, data, number of ``: ping`` heartbeat lines)."""
    fid = kind = None
    data: list[bytes] = []
    comments = 0
    for line in frame.split(b"\n"):
        if not line:
            continue
        if line[:1] == b":":
            if line[1:].strip() == b"ping":  # a heartbeat; other comments are padding
                comments += 1
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"id":
            fid = value
        elif name == b"event":
            kind = value
        elif name == b"data":
            data.append(value)
    return fid, kind, (b"\n".join(data) if data else None), comments


class Stream:
    """Incremental parser and validator of one run's SSE stream."""

    __slots__ = (
        "bad_frames",
        "buf",
        "closed",
        "crlf",
        "dups",
        "end_status",
        "end_time",
        "ended",
        "first_emit",
        "first_tick",
        "frames",
        "gaps",
        "idx",
        "last_seq",
        "lat",
        "lat_at",
        "lat_pre",
        "leaks",
        "marker",
        "marker_q",
        "opened",
        "pings",
        "pings_mark",
        "run_id",
        "sample",
        "t0",
        "ticks",
    )

    def __init__(self, idx: int, marker: str, sample: int, lat: list[float], lat_at: list[float] | None = None) -> None:
        self.idx = idx
        self.marker = marker
        self.marker_q = b'"' + marker.encode() + b'"'
        self.sample = sample
        self.lat = lat  # shared list of latency samples, ms
        self.lat_at = lat_at  # if kept: when each sample was received (scaleout.py)
        # if kept (with lat_at): per sample, 1 if the tick was emitted before its stream's
        # response came (it was read from the run's history), else 0
        self.lat_pre: list[int] | None = None
        self.opened: float | None = None  # when the stream's response headers came
        self.buf = b""
        self.crlf = False
        self.last_seq = 0
        self.gaps = self.dups = self.leaks = self.ticks = self.frames = 0
        self.pings = self.pings_mark = self.bad_frames = 0
        self.ended = False
        self.closed = False
        self.end_status: str | None = None
        self.end_time: float | None = None
        self.first_tick: float | None = None
        self.first_emit: float | None = None  # when the server emitted the first tick (its ``t``)
        self.run_id: str | None = None
        self.t0 = 0.0

    def _seq(self, seq: int) -> None:
        last = self.last_seq
        if seq == last + 1:
            self.last_seq = seq
        elif seq <= last:
            self.dups += 1
        else:
            self.gaps += seq - last - 1
            self.last_seq = seq

    def _tick(self, frame: bytes, data: bytes | None, now: float) -> None:
        self.ticks += 1
        if self.marker_q not in frame:
            self.leaks += 1
        first = self.first_tick is None
        if first:
            self.first_tick = now
        s = self.sample
        if first or (s and (self.ticks - 1) % s == 0):
            if data is None:
                d = frame.find(b"\ndata:")
                e = frame.find(b"\n", d + 6)
                data = frame[d + 6 :] if e < 0 else frame[d + 6 : e]
            try:
                obj = loads(data)
                inner = obj.get("data") if "seq" in obj else obj
                if first:
                    self.first_emit = float(inner["t"])
                if not (s and (self.ticks - 1) % s == 0):
                    return
                self.lat.append((now - float(inner["t"])) * 1000.0)
                if self.lat_at is not None:
                    self.lat_at.append(now)
                if self.lat_pre is not None:
                    self.lat_pre.append(int(self.opened is None or float(inner["t"]) < self.opened))
            except (ValueError, KeyError, TypeError, AttributeError):
                self.bad_frames += 1

    def feed(self, chunk: bytes, now: float) -> bool:
        """Consumes one chunk received at ``now``; True once the ``end`` event was seen."""
        buf = self.buf + chunk if self.buf else chunk
        if self.crlf or b"\r" in chunk:
            self.crlf = True
            buf = buf.replace(b"\r\n", b"\n")
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.buf = buf
            return False
        self.buf = buf[end + 2 :]
        for frame in buf[:end].split(b"\n\n"):
            if frame[:3] == b"id:":
                nl = frame.find(b"\n")
                if nl > 0 and frame.startswith(TICK_EVENT, nl + 1):  # the fast path
                    self.frames += 1
                    try:
                        self._seq(int(frame[3:nl]))
                    except ValueError:
                        self.bad_frames += 1
                    self._tick(frame, None, now)
                    continue
            if not frame.strip(b"\n"):
                continue
            fid, kind, data, comments = parse_fields(frame)
            self.pings += comments
            if fid is None:
                if data is not None:
                    self.bad_frames += 1  # an event without an id: no seq to check
                continue
            self.frames += 1
            try:
                self._seq(int(fid))
            except ValueError:
                self.bad_frames += 1
            if kind == b"tick":
                self._tick(frame, data, now)
            elif kind == b"end":
                self.ended = True
                self.end_time = now
                try:
                    obj = loads(data or b"{}")
                    inner = obj.get("data") if "seq" in obj else obj
                    self.end_status = str(inner.get("status"))
                except (ValueError, TypeError, AttributeError):
                    self.bad_frames += 1
                return True
        return False


class Client:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        # several API processes (bench/scaleout.py): run idx is created and streamed on urls[idx % n]
        self.bases: list[str] = [str(u).rstrip("/") for u in cfg.get("urls") or [cfg["url"]]]
        self.errors: list[str] = []
        self.n_errors = 0
        self.retries = 0
        self.lat: list[float] = []
        # receive times of the latency samples, on demand: scaleout.py tells the ramp-up
        # (streams still being opened) from the settled phase
        self.lat_at: list[float] | None = [] if cfg.get("lat_times") else None
        self.lat_pre: list[int] | None = [] if cfg.get("lat_times") else None
        # with lat_times: per stream (create sent, create answered, stream opened, first tick), epoch s
        self.ramp: list[list[float | None]] = []
        self.streams: list[Stream] = []
        self.session: aiohttp.ClientSession | None = None

    def error(self, msg: str) -> None:
        self.n_errors += 1
        if len(self.errors) < 10:
            self.errors.append(msg[:300])

    @staticmethod
    def headers(idx: int) -> dict[str, str]:
        return {"X-Client-Id": f"load-{idx}"}

    def base_for(self, idx: int) -> str:
        return self.bases[idx % len(self.bases)]

    def new_stream(self, idx: int, sample: int) -> Stream:
        st = Stream(idx, f"r{idx}-{uuid.uuid4().hex}", sample, self.lat, self.lat_at)
        st.lat_pre = self.lat_pre
        self.streams.append(st)
        return st

    async def create(self, st: Stream, count: int, interval_ms: int) -> str | None:
        assert self.session is not None
        body = dumps(
            {
                "pipeline": self.cfg.get("pipeline", "ticker"),
                "input": {
                    "marker": st.marker,
                    "count": count,
                    "interval_ms": interval_ms,
                    "payload_bytes": self.cfg.get("payload_bytes", 0),
                    **self.cfg.get("input_extra", {}),
                },
            }
        )
        headers = {**self.headers(st.idx), "Content-Type": "application/json"}
        try:
            async with self.session.post(f"{self.base_for(st.idx)}/v1/runs", data=body, headers=headers) as r:
                raw = await r.read()
                if r.status not in (200, 201, 202):
                    self.error(f"create {r.status}: {raw[:200]!r}")
                    return None
                run_id = str(loads(raw)["run_id"])
        except (aiohttp.ClientError, OSError, ValueError, KeyError) as e:
            self.error(f"create: {type(e).__name__}: {e}")
            return None
        st.run_id = run_id
        return run_id

    async def stream(self, st: Stream, on_open: Any = None) -> None:
        """Reads the run's stream to its end. A connection that fails before any byte came
        (a pooled keep-alive connection the server had just closed) is retried; a stream
        that breaks later is an error: the validation then shows what was lost."""
        assert self.session is not None and st.run_id is not None
        url = f"{self.base_for(st.idx)}/v1/runs/{st.run_id}/stream"
        try:
            for attempt in range(RETRIES + 1):
                got_bytes = False
                try:
                    async with self.session.get(url, headers=self.headers(st.idx)) as r:
                        if r.status != 200:
                            self.error(f"stream {r.status}: {(await r.read())[:200]!r}")
                            return
                        st.opened = time.time()
                        content = r.content
                        while True:
                            chunk = await content.readany()
                            if not chunk:
                                return
                            got_bytes = True
                            if st.feed(chunk, time.time()):
                                return
                            if on_open is not None and st.first_tick is not None:
                                on_open()
                                on_open = None
                except RETRYABLE as e:
                    if got_bytes or attempt == RETRIES:
                        self.error(f"stream: {type(e).__name__}: {e}")
                        return
                    self.retries += 1
                    await asyncio.sleep(0.05)
                except (aiohttp.ClientError, OSError) as e:
                    self.error(f"stream: {type(e).__name__}: {e}")
                    return
        finally:
            st.closed = True
            if st.end_time is None:
                st.end_time = time.time()

    async def _call(self, method: str, url: str, idx: int, what: str) -> tuple[int, bytes] | None:
        """An idempotent request (snapshot, cancel), retried on connection errors."""
        assert self.session is not None
        for attempt in range(RETRIES + 1):
            try:
                async with self.session.request(method, url, headers=self.headers(idx)) as r:
                    return r.status, await r.read()
            except RETRYABLE as e:
                if attempt == RETRIES:
                    self.error(f"{what}: {type(e).__name__}: {e}")
                    return None
                self.retries += 1
                await asyncio.sleep(0.05)
            except (aiohttp.ClientError, OSError) as e:
                self.error(f"{what}: {type(e).__name__}: {e}")
                return None
        return None

    async def snapshot(self, st: Stream) -> dict[str, Any] | None:
        got = await self._call("GET", f"{self.base_for(st.idx)}/v1/runs/{st.run_id}", st.idx, "snapshot")
        if got is None:
            return None
        status, raw = got
        if status != 200:
            self.error(f"snapshot {status}: {raw[:200]!r}")
            return None
        try:
            return dict(loads(raw))
        except (ValueError, TypeError) as e:
            self.error(f"snapshot: {type(e).__name__}: {e}")
            return None

    async def cancel(self, st: Stream) -> None:
        got = await self._call("POST", f"{self.base_for(st.idx)}/v1/runs/{st.run_id}/cancel", st.idx, "cancel")
        if got is not None and got[0] not in (200, 202, 409):  # 409 run_finished: it ended meanwhile
            self.error(f"cancel {got[0]}: {got[1][:200]!r}")

    def summary(self, streams: list[Stream], count: int | None, expect_end: str | None) -> dict[str, Any]:
        """Counts over ``streams``; ``count`` = ticks each should have delivered (None: don't check)."""
        ttfe = [(s.first_tick - s.t0) * 1000.0 for s in streams if s.first_tick is not None]
        return {
            "streams": len(streams),
            "ticks": sum(s.ticks for s in streams),
            "frames": sum(s.frames for s in streams),
            "ended": sum(1 for s in streams if s.ended),
            "missing_end": sum(1 for s in streams if not s.ended),
            "short": (sum(1 for s in streams if s.ticks != count) if count is not None else 0),
            "gaps": sum(s.gaps for s in streams),
            "dups": sum(s.dups for s in streams),
            "leaks": sum(s.leaks for s in streams),
            "bad_frames": sum(s.bad_frames for s in streams),
            "bad_end_status": (sum(1 for s in streams if s.ended and s.end_status != expect_end) if expect_end else 0),
            "pings": sum(s.pings for s in streams),
            "ttfe_ms": [round(x, 3) for x in ttfe],
        }

    # ----------------------------------------------------------------- modes

    async def mode_streams(self) -> dict[str, Any]:
        """Each owner creates a ticker run and streams it to its end (burst, steady)."""
        cfg = self.cfg
        sem = asyncio.Semaphore(cfg["create_concurrency"])
        count, interval_ms, sample = cfg["count"], cfg["interval_ms"], cfg["sample"]

        async def one(idx: int) -> None:
            st = self.new_stream(idx, sample)
            async with sem:
                st.t0 = time.time()
                if await self.create(st, count, interval_ms) is None:
                    st.closed = True
                    return
            created = time.time()
            await self.stream(st)
            if self.lat_pre is not None:
                self.ramp.append([st.t0, created, st.opened, st.first_tick, st.first_emit])

        t_start = time.time()
        await self._bounded(asyncio.gather(*(one(i) for i in range(*cfg["indices"]))))
        ends = [s.end_time for s in self.streams if s.end_time is not None]
        out = self.summary(self.streams, count, "succeeded")
        out.update(t_start=t_start, t_end=max(ends) if ends else time.time())
        firsts = [s.first_tick for s in self.streams if s.first_tick is not None]
        out["live_at"] = [max(firsts)] if firsts else []  # a list: merged shards concatenate it
        return out

    async def mode_idle(self) -> dict[str, Any]:
        """Opens many streams on runs that stay silent, holds them until GO, then ends them."""
        cfg = self.cfg
        indices = list(range(*cfg["indices"]))
        sem = asyncio.Semaphore(cfg["create_concurrency"])
        settled = 0
        all_settled = asyncio.Event()
        if not indices:
            all_settled.set()
        tasks: list[asyncio.Task[None]] = []

        async def one(idx: int) -> None:
            nonlocal settled
            st = self.new_stream(idx, 1)
            done = False

            def release() -> None:
                nonlocal done, settled
                if not done:
                    done = True
                    sem.release()
                    settled += 1
                    if settled == len(indices):
                        all_settled.set()

            await sem.acquire()
            try:
                st.t0 = time.time()
                if await self.create(st, cfg["count"], cfg["interval_ms"]) is None:
                    st.closed = True
                    return
                await self.stream(st, on_open=release)
            finally:
                release()

        t_start = time.time()
        tasks = [asyncio.ensure_future(one(i)) for i in indices]
        try:
            await asyncio.wait_for(all_settled.wait(), cfg["open_timeout_s"])
        except TimeoutError:
            self.error("open phase timed out")
        t_open = time.time()
        n_open = sum(1 for s in self.streams if s.first_tick is not None and not s.closed)
        for s in self.streams:
            s.pings_mark = s.pings
        print(
            json.dumps(
                {
                    "event": "opened",
                    "n_open": n_open,
                    "n_streams": len(indices),
                    "open_s": round(t_open - t_start, 3),
                    "t": t_open,
                }
            ),
            flush=True,
        )

        # hold until the driver says GO (it measures the server meanwhile)
        loop = asyncio.get_running_loop()
        go: asyncio.Future[str] = loop.create_future()

        def set_go(line: str) -> None:
            if not go.done():
                go.set_result(line)

        def read_go() -> None:  # daemon thread: never keeps the process alive
            loop.call_soon_threadsafe(set_go, sys.stdin.readline())

        threading.Thread(target=read_go, daemon=True).start()
        try:
            await asyncio.wait_for(go, cfg["go_timeout_s"])
        except TimeoutError:
            self.error("no GO from the driver; ending")
        t_go = time.time()
        alive = [s for s in self.streams if s.first_tick is not None and not s.closed]
        held = {
            "held_open": len(alive),
            "heartbeating": sum(1 for s in alive if s.pings > s.pings_mark),
            "pings_in_hold": sum(s.pings - s.pings_mark for s in alive),
            "hold_s": round(t_go - t_open, 3),
        }

        # end them: cancel the runs (each stream then gets its end) or just close the streams
        if cfg["after"] == "cancel":
            csem = asyncio.Semaphore(cfg["create_concurrency"])

            async def cancel(st: Stream) -> None:
                async with csem:
                    await self.cancel(st)

            await self._bounded(
                asyncio.gather(*(cancel(s) for s in self.streams if s.run_id is not None and not s.ended))
            )
            _, pending = await asyncio.wait(tasks, timeout=cfg["end_timeout_s"]) if tasks else ((), ())
            if pending:
                self.error(f"{len(pending)} streams had no end {cfg['end_timeout_s']}s after cancel")
            expect = "cancelled"
        else:
            pending = set(tasks)
            expect = None
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
        out = self.summary(self.streams, None, expect)
        if cfg["after"] != "cancel":
            out["missing_end"] = 0  # closed on purpose: no end expected
        out.update(
            held,
            n_open=n_open,
            open_s=round(t_open - t_start, 3),
            after=cfg["after"],
            t_start=t_start,
            t_end=time.time(),
        )
        return out

    async def mode_replay(self) -> dict[str, Any]:
        """One long run; once finished, streamed again from the start, ``repeats`` times."""
        cfg = self.cfg
        count = cfg["count"]
        st = self.new_stream(0, 0)
        st.t0 = time.time()
        out: dict[str, Any] = {"replays": []}
        if await self.create(st, count, 0) is None:
            return {**out, **self.summary(self.streams, count, "succeeded")}
        if cfg["finish"] == "stream":  # the ceiling has no snapshot: stream it once to its end
            await self._bounded(self.stream(st))
            out["live_s"] = round((st.end_time or time.time()) - st.t0, 3)
        else:  # poll the snapshot until the run is finished
            status = None
            deadline = time.monotonic() + cfg["finish_timeout_s"]
            while time.monotonic() < deadline:
                snap = await self.snapshot(st)
                status = snap.get("status") if snap else None
                if status in TERMINAL:
                    break
                await asyncio.sleep(0.2)
            out["live_s"] = round(time.time() - st.t0, 3)
            out["finished_status"] = status
            if status != "succeeded":
                self.error(f"replay run did not succeed in time: status {status}")
            self.streams.remove(st)  # never streamed: nothing to validate
        replays = []
        for _ in range(cfg["repeats"]):
            rs = Stream(0, st.marker, 0, self.lat)
            rs.run_id = st.run_id
            self.streams.append(rs)
            rs.t0 = time.time()
            await self._bounded(self.stream(rs))
            dur = (rs.end_time or time.time()) - rs.t0
            replays.append(
                {
                    "ticks": rs.ticks,
                    "seconds": round(dur, 4),
                    "events_per_s": round(rs.ticks / dur) if dur > 0 else None,
                    "ttfe_ms": round((rs.first_tick - rs.t0) * 1000, 3) if rs.first_tick else None,
                }
            )
        out["replays"] = replays
        out.update(self.summary(self.streams, count, "succeeded"))
        return out

    async def mode_loop(self) -> dict[str, Any]:
        """Closed loop (``scaleout.py``): each owner creates a run, streams it to its end and
        starts the next, until ``duration_s`` has passed. The ticks received within that window
        give the sustained rate, free of the ramp-down while the last runs finish."""
        cfg = self.cfg
        count, interval_ms, sample = cfg["count"], cfg["interval_ms"], cfg["sample"]
        t_start = time.time()
        stop_at = t_start + cfg["duration_s"]

        async def owner(idx: int) -> None:
            while time.time() < stop_at:
                st = self.new_stream(idx, sample)
                st.t0 = time.time()
                if await self.create(st, count, interval_ms) is None:
                    st.closed = True
                    await asyncio.sleep(0.05)  # a failing server: do not spin on it
                    continue
                await self.stream(st)

        work = asyncio.ensure_future(asyncio.gather(*(owner(i) for i in range(*cfg["indices"]))))
        await asyncio.wait([work], timeout=max(0.0, stop_at - time.time()))
        window_ticks, window_s = sum(s.ticks for s in self.streams), time.time() - t_start
        await self._bounded(work)
        ends = [s.end_time for s in self.streams if s.end_time is not None]
        out = self.summary(self.streams, count, "succeeded")
        out.update(
            t_start=t_start,
            t_end=max(ends) if ends else time.time(),
            window_ticks=window_ticks,
            window_s=round(window_s, 3),
            runs=len(self.streams),
        )
        return out

    async def mode_create(self) -> dict[str, Any]:
        """Run creations only (``scaleout.py``): ``create_concurrency`` requests in flight until
        ``duration_s`` has passed; nothing is streamed. Creation latencies go into ``lat_ms``."""
        cfg = self.cfg
        stop_at = time.time() + cfg["duration_s"]
        created = failed = 0

        async def creator(idx: int) -> None:
            nonlocal created, failed
            n = 0
            while time.time() < stop_at:
                st = Stream(idx, f"c{idx}-{n}", 0, self.lat)  # not kept: there is no stream to check
                n += 1
                t0 = time.perf_counter()
                if await self.create(st, cfg["count"], 0) is None:
                    failed += 1
                    await asyncio.sleep(0.05)
                    continue
                created += 1
                self.lat.append((time.perf_counter() - t0) * 1000.0)

        t_start = time.time()
        await self._bounded(asyncio.gather(*(creator(i) for i in range(*cfg["indices"]))))
        return {"created": created, "create_failed": failed, "t_start": t_start, "t_end": time.time()}

    async def _bounded(self, aw: Any) -> Any:
        """Awaits ``aw`` but never past the client's deadline."""
        left = self.deadline - time.monotonic()
        try:
            return await asyncio.wait_for(aw, max(0.1, left))
        except TimeoutError:
            self.error("client deadline exceeded")
            return None

    async def run(self) -> dict[str, Any]:
        self.deadline = time.monotonic() + self.cfg["deadline_s"]
        ru0 = resource.getrusage(resource.RUSAGE_SELF)  # CPU of the load itself, not of the imports
        # keep idle pooled connections for less time than servers keep them (uvicorn: 5 s), so a
        # request is not sent on a connection the server is closing
        conn = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=None, keepalive_timeout=3.0)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
        async with aiohttp.ClientSession(
            connector=conn, timeout=timeout, auto_decompress=False, read_bufsize=1 << 18
        ) as session:
            self.session = session
            mode = self.cfg["mode"]
            out = await getattr(self, f"mode_{mode}")()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        if self.lat_at is not None:
            out["lat_at"] = [round(x, 4) for x in self.lat_at]
        if self.lat_pre is not None:
            out.update(lat_pre=self.lat_pre, ramp=self.ramp)
        out.update(
            event="result",
            mode=mode,
            errors=self.errors,
            retries=self.retries,
            n_errors=self.n_errors,
            lat_ms=[round(x, 3) for x in self.lat],
            client_cpu_s=round(ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime, 3),
            client_maxrss_kib=ru.ru_maxrss,
        )
        return out


def write_all(data: bytes) -> None:
    """Writes all of ``data`` to stdout. One write of a large result (MBs of latency
    samples) to the driver's pipe was seen to take only its first 64 KiB, silently,
    and the driver then got a cut line: loop until every byte is out."""
    sys.stdout.flush()
    fd = sys.stdout.fileno()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # a non-blocking pipe that is full: wait until it drains
            select.select([], [fd], [], 1.0)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    raise_nofile()
    client = Client(cfg)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        result = asyncio.run(client.run())
    else:
        if hasattr(uvloop, "run"):
            result = uvloop.run(client.run())
        else:  # pragma: no cover - old uvloop
            uvloop.install()
            result = asyncio.run(client.run())
    write_all(dumps(result) + b"\n")


if __name__ == "__main__":
    main()
