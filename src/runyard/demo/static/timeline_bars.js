// A run's time line: its phases, durable steps, tool calls and limit waits as
// bars on one time axis, each as long as it took, with times relative to the
// run's start ("+1.2 s"). Built from the run's events; redrawn as they come.

import { h } from "./dom.js";

const SETTLED = new Set(["done", "succeeded", "completed", "finished", "ok", "failed", "error", "errored",
  "timed_out", "cancelled"]);
const FAILED = new Set(["failed", "error", "errored", "timed_out", "cancelled"]);

const rel = (ms) => (ms < 10_000 ? `+${(ms / 1000).toFixed(2)} s` : `+${(ms / 1000).toFixed(1)} s`);
const took = (ms) => (ms < 10_000 ? `${(ms / 1000).toFixed(2)} s` : `${(ms / 1000).toFixed(1)} s`);

/** Which span an event opens or closes: [kind, key, label, state] or null. */
function spanOf(event) {
  const data = event.data ?? {};
  switch (event.type) {
    case "phase":
      return data.name ? ["phase", `phase:${data.name}`, data.name, data.status] : null;
    case "step":
      return data.name ? ["step", `step:${data.name}#${data.n}`, `step ${data.name}`, data.status] : null;
    case "tool.start":
      return ["tool", `tool:${data.id ?? data.name}`, `tool ${data.name ?? ""}`, "started"];
    case "tool.end":
      return ["tool", `tool:${data.id ?? data.name}`, `tool ${data.name ?? ""}`, "done"];
    case "tool.error":
      return ["tool", `tool:${data.id ?? data.name}`, `tool ${data.name ?? ""}`, "failed"];
    case "limit.wait":
      return ["wait", `wait:${event.seq}`, `waits for ${data.limit}`, "mark"];
    default:
      return null;
  }
}

export function timelineBars() {
  const list = h("ol", { class: "bars-timeline", id: "timeline", "aria-label": "Time line" });
  const axis = h("p", { class: "muted small", id: "timeline-axis" });
  const root = h("section", { class: "card", id: "timeline-card", hidden: true },
    h("h2", {}, "Time line"), axis, list);
  const spans = new Map(); // key -> {kind, label, start, end, state}
  let origin = null; // the run's start (ms)
  let finish = null; // the run's end (ms), or null while it runs

  function draw() {
    if (!spans.size || origin === null) return;
    root.hidden = false;
    const last = Math.max(...[...spans.values()].map((s) => s.end ?? s.start));
    const end = finish ?? Math.max(Date.now(), last);
    const total = Math.max(1, end - origin);
    axis.textContent = `0 to ${took(total)} after the run started${finish === null ? " (running)" : ""}`;
    list.replaceChildren(...[...spans.entries()].map(([key, span]) => {
      const stop = span.end ?? (span.kind === "wait" ? span.start : end);
      const left = ((span.start - origin) / total) * 100;
      const width = ((stop - span.start) / total) * 100;
      const state = span.kind === "wait" ? "wait" : FAILED.has(span.state) ? "failed" : span.end ? "done" : "open";
      return h("li", { class: `span span-${span.kind} span-${state}`,
        dataset: { key, kind: span.kind, start: String(span.start - origin), end: String(stop - origin) } },
        h("span", { class: "span-label" }, span.label),
        h("span", { class: "span-track" },
          h("span", { class: "span-bar", style: `left:${left}%;width:${width}%`,
            title: `${span.label}: ${rel(span.start - origin)}, ${took(stop - span.start)}` })),
        h("span", { class: "span-time muted" }, rel(span.start - origin),
          span.kind === "wait" ? "" : ` · ${span.end ? took(stop - span.start) : "…"}`));
    }));
  }

  return {
    root,
    /** The run's snapshot: its start (or creation) is the time line's zero. */
    run(run) {
      const start = Date.parse(run.started_at ?? run.created_at);
      if (origin === null || start < origin) origin = start;
      if (run.finished_at) finish = Date.parse(run.finished_at);
      draw();
    },
    /** A batch of events, in order. */
    events(events) {
      let changed = false;
      for (const event of events) {
        const ts = Date.parse(event.ts);
        if (event.type === "end") {
          finish = ts;
          for (const span of spans.values()) span.end ??= span.kind === "wait" ? null : ts;
          changed = true;
          continue;
        }
        const found = spanOf(event);
        if (!found) continue;
        const [kind, foundKey, label, state] = found;
        let key = foundKey;
        if (event.type === "tool.error" && !spans.has(key)) {
          // the LangChain adapter's tool.error names the tool, not the call: the latest open call of that tool
          key = [...spans.entries()].reverse().find(([, s]) => s.kind === "tool" && s.label === label && !s.end)?.[0]
            ?? key;
        }
        let span = spans.get(key);
        if (!span) {
          span = { kind, label, start: ts, end: null, state };
          spans.set(key, span);
          if (origin === null) origin = ts;
        }
        span.state = state;
        if (SETTLED.has(state)) span.end = ts;
        changed = true;
      }
      if (changed) draw();
    },
    /** Redraws an open time line (its running spans grow). */
    tick() {
      if (finish === null) draw();
    },
  };
}
