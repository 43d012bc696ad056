// A run's event stream over fetch(), resumed with Last-Event-ID after any drop.
//
// EventSource is not used: it cannot send the identity headers, nor a
// Last-Event-ID of our choosing after a page reload. Here every (re)connection
// sends the last seq this page holds, and events at or below it are dropped,
// so a reconnect never shows an event twice nor skips one.

import { ApiError, identity, runPath } from "./api.js";

const BACKOFF_MIN_MS = 400;
const BACKOFF_MAX_MS = 8000;
// The server sends `: ping` after 15 s of silence (RUNYARD_SSE_HEARTBEAT_S); a
// connection silent for much longer than that is dead even if no error says so.
const SILENCE_MS = 45000;
// Answers that retrying cannot fix.
const FATAL = new Set([400, 401, 403, 404]);

/** Splits an SSE byte stream (already decoded to text) into frames `{event, data, id}`. */
export class SSEParser {
  constructor() {
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
    this.id = null;
  }

  /** Feeds a chunk; returns the frames it completes. */
  push(chunk) {
    let text = this.buffer + chunk;
    // a trailing "\r" may be the first half of "\r\n": keep it for the next chunk
    const held = text.endsWith("\r") ? "\r" : "";
    if (held) text = text.slice(0, -1);
    const lines = text.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + held; // the last piece is an unfinished line
    const frames = [];
    for (const line of lines) {
      if (line === "") {
        if (this.data.length) frames.push({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
        this.reset();
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (name === "data") this.data.push(value);
        else if (name === "event") this.event = value;
        else if (name === "id") this.id = value;
      }
    }
    return frames;
  }
}

/**
 * Follows `runId` from after `after` until its `end` event.
 *
 * `onEvents(events)` gets each batch of new events, in seq order, never one at
 * or below a seq already delivered; `onState(state)` gets the connection's
 * state: `{state: "connecting" | "live" | "reconnecting" | "offline" | "ended"
 * | "failed", attempt, delay, error, connects, cursor}`. Returns `stop()`.
 */
export function followRun(runId, { after = 0, onEvents, onState }) {
  const stopper = new AbortController();
  let lastSeq = after;
  let connects = 0;
  let failures = 0;
  let wake = null;

  const report = (state, extra = {}) => onState?.({ state, connects, cursor: lastSeq, ...extra });

  const onOnline = () => wake?.();
  window.addEventListener("online", onOnline);

  function pause(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        wake = null;
        stopper.signal.removeEventListener("abort", done);
        resolve();
      }
      wake = done;
      stopper.signal.addEventListener("abort", done);
    });
  }

  /** One connection; true once `end` has arrived. */
  async function connect() {
    const attempt = new AbortController();
    const abort = () => attempt.abort();
    stopper.signal.addEventListener("abort", abort);
    let silence = setTimeout(abort, SILENCE_MS);
    try {
      connects += 1;
      const response = await fetch(runPath(runId, "/stream"), {
        headers: { ...identity.headers(), Accept: "text/event-stream", "Last-Event-ID": String(lastSeq) },
        cache: "no-store",
        signal: attempt.signal,
      });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        throw new ApiError(response.status, body?.error?.code || "http_error",
          body?.error?.message || `${response.status} ${response.statusText}`);
      }
      failures = 0;
      report("live");
      const parser = new SSEParser();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false; // closed before `end`: the caller reconnects
        clearTimeout(silence);
        silence = setTimeout(abort, SILENCE_MS);
        const fresh = [];
        let ended = false;
        for (const frame of parser.push(value)) {
          const event = JSON.parse(frame.data);
          if (!(event.seq > lastSeq)) continue; // seen already: a replay after a reconnect
          lastSeq = event.seq;
          fresh.push(event);
          if (event.type === "end") ended = true;
        }
        if (fresh.length) onEvents(fresh);
        if (ended) {
          attempt.abort();
          return true;
        }
      }
    } finally {
      clearTimeout(silence);
      stopper.signal.removeEventListener("abort", abort);
    }
  }

  (async () => {
    report("connecting");
    while (!stopper.signal.aborted) {
      let error = null;
      try {
        if (await connect()) {
          report("ended");
          break;
        }
      } catch (caught) {
        if (stopper.signal.aborted) break;
        error = caught;
        if (caught instanceof ApiError && FATAL.has(caught.status)) {
          report("failed", { error: caught });
          break;
        }
      }
      failures += 1;
      const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (failures - 1));
      const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
      report(navigator.onLine ? "reconnecting" : "offline", { attempt: failures, delay, error });
      await pause(delay);
    }
    window.removeEventListener("online", onOnline);
  })();

  return () => {
    stopper.abort();
    window.removeEventListener("online", onOnline);
  };
}
