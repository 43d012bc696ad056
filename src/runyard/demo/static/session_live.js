// The session page's live feed: every event of every run of the session, as
// GET /v1/sessions/<id>/stream persists them, resumed after any drop from the
// last frame's id (an opaque cursor: the server resumes exactly after it, so
// nothing is shown twice or skipped). The stream ends when the session is
// deleted or expires; runs created later (here, elsewhere) appear as they start.

import { ApiError, api, identity, sessionPath } from "./api.js";
import { h, json, runLink } from "./dom.js";
import { SSEParser } from "./stream.js";

const BACKOFF_MIN_MS = 400;
const BACKOFF_MAX_MS = 8000;
const SILENCE_MS = 45000; // three heartbeats: a connection this silent is dead
const SHOWN = 500; // newest events kept on the page
const FATAL = new Set([400, 401, 403, 404]);

/**
 * Follows the session; `onEvents(events)` gets each batch (each event has
 * `run_id`), `onState(state)` gets "live" | "reconnecting" | "ended" | "failed".
 * Returns `stop()`.
 */
export function followSession(sessionId, { onEvents, onState }) {
  const stopper = new AbortController();
  let cursor = null;
  let failures = 0;

  async function connect() {
    const attempt = new AbortController();
    const abort = () => attempt.abort();
    stopper.signal.addEventListener("abort", abort);
    let silence = setTimeout(abort, SILENCE_MS);
    try {
      const headers = { ...identity.headers(), Accept: "text/event-stream" };
      if (cursor !== null) headers["Last-Event-ID"] = cursor;
      const response = await fetch(`${sessionPath(sessionId)}/stream`, { headers, cache: "no-store",
        signal: attempt.signal });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        throw new ApiError(response.status, body?.error?.code || "http_error", body?.error?.message || "");
      }
      failures = 0;
      onState("live");
      const parser = new SSEParser();
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        clearTimeout(silence);
        silence = setTimeout(abort, SILENCE_MS);
        const fresh = [];
        for (const frame of parser.push(value)) {
          cursor = frame.id;
          fresh.push(JSON.parse(frame.data));
        }
        if (fresh.length) onEvents(fresh);
      }
    } finally {
      clearTimeout(silence);
      stopper.signal.removeEventListener("abort", abort);
    }
  }

  /** Whether a stream the server closed has ended for good (the session is gone). */
  async function over() {
    try {
      return (await api(sessionPath(sessionId))).status === "expired";
    } catch (error) {
      return error instanceof ApiError && error.status === 404;
    }
  }

  (async () => {
    while (!stopper.signal.aborted) {
      try {
        await connect();
        if (stopper.signal.aborted) break;
        if (await over()) {
          onState("ended");
          break;
        }
      } catch (error) {
        if (stopper.signal.aborted) break;
        if (error instanceof ApiError && FATAL.has(error.status)) {
          onState("failed");
          break;
        }
      }
      failures += 1;
      onState("reconnecting");
      const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (failures - 1));
      await new Promise((resolve) => setTimeout(resolve, ceiling / 2 + (Math.random() * ceiling) / 2));
    }
  })();
  return () => stopper.abort();
}

/** The "Live" card of the session page; `onRunChange()` is called when a run starts or ends. */
export function sessionLive(sessionId, onRunChange) {
  const list = h("ol", { id: "session-live", class: "activity", "aria-live": "polite" });
  const state = h("span", { id: "session-live-state", class: "muted" }, "connecting");
  const card = h("section", { class: "card" }, h("h2", {}, "Live ", state), list);
  const stop = followSession(sessionId, {
    onState: (value) => {
      state.textContent = value;
      card.dataset.state = value;
    },
    onEvents: (events) => {
      list.append(...events.map((event) => h("li", { dataset: { runId: event.run_id, seq: event.seq, type: event.type } },
        runLink(event.run_id), ` #${event.seq} `, h("strong", {}, event.type), " ",
        h("code", {}, json(event.data)))));
      while (list.children.length > SHOWN) list.firstElementChild.remove();
      if (events.some((event) => event.type === "status" || event.type === "end")) onRunChange();
    },
  });
  return { card, stop };
}
