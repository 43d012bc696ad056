// The live counters in the header, read from GET /metrics (Prometheus text format),
// and the history of those scrapes that the health page charts (`history`).

import { every, h } from "./dom.js";

const SCRAPE_MS = 2000;
const HISTORY_MAX = 900; // points kept: 30 min of scrapes

/** The scrapes of this page load as points over time; `listen(fn)` calls fn after each. */
export const history = {
  points: [],
  listeners: new Set(),
  listen(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  },
  push(point) {
    this.points.push(point);
    if (this.points.length > HISTORY_MAX) this.points.shift();
    for (const fn of this.listeners) fn(this.points);
  },
};

const sumWhere = (samples, name, keep) =>
  samples.filter((s) => s.name === name && keep(s.labels)).reduce((sum, s) => sum + s.value, 0);

/** The counters that charts show as rates, and the gauges they show as they are. */
function reading(samples) {
  return {
    created: sumWhere(samples, "runyard_http_requests_total",
      (l) => l.status === "201" && (l.route ?? "").startsWith("/v1/runs")),
    finished: total(samples, "runyard_runs_total"),
    events: total(samples, "runyard_events_total"),
    limitWaits: total(samples, "runyard_limit_wait_seconds_count"),
    active: total(samples, "runyard_runs_active"),
    queued: total(samples, "runyard_queue_depth"),
    streams: total(samples, "runyard_stream_subscribers"),
    breakers: total(samples, "runyard_breaker_open"),
  };
}

/** A point of the history: per-second rates between two readings (0 after a restart), gauges as read. */
function point(now, previous, at) {
  const seconds = previous ? (at - previous.at) / 1000 : 0;
  const rate = (key) => (seconds > 0 ? Math.max(0, (now[key] - previous.reading[key]) / seconds) : 0);
  return {
    t: Date.now() / 1000,
    created: rate("created"), finished: rate("finished"), events: rate("events"), limitWaits: rate("limitWaits"),
    active: now.active, queued: now.queued, streams: now.streams, breakers: now.breakers,
  };
}

/** Parses Prometheus text exposition into `[{name, labels, value}]` (comments and bad lines skipped). */
export function parsePrometheus(text) {
  const samples = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const raw of text.split("\n")) {
    if (!raw || raw.startsWith("#")) continue;
    const match = line.exec(raw);
    if (!match) continue;
    const labels = {};
    for (const [, name, value] of (match[2] ?? "").matchAll(label)) {
      labels[name] = value.replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
    }
    const value = Number(match[3]);
    if (!Number.isNaN(value)) samples.push({ name: match[1], labels, value });
  }
  return samples;
}

/** The sum of every sample of `name`, over all label values. */
export function total(samples, name) {
  return samples.filter((s) => s.name === name).reduce((sum, s) => sum + s.value, 0);
}

const COUNTERS = [
  ["active", "active runs", "Runs executing now in this process (runyard_runs_active)"],
  ["queued", "queue depth", "Runs waiting for a worker (runyard_queue_depth)"],
  ["rate", "events/s", "Events persisted per second, from two successive scrapes (runyard_events_total)"],
  ["streams", "open streams", "Event streams open on this process (runyard_stream_subscribers)"],
];

/** Mounts the counters into `root` and keeps them fresh; returns a stop function. */
export function mountCounters(root) {
  const values = {};
  root.replaceChildren(
    ...COUNTERS.map(([key, label, title]) => {
      values[key] = h("span", { class: "counter-value", id: `counter-${key}`, dataset: { value: "" } }, "–");
      return h("div", { class: "counter", title }, values[key], h("span", { class: "counter-label" }, label));
    }),
  );
  let previous = null;

  const show = (key, value, text = String(value)) => {
    values[key].textContent = text;
    values[key].dataset.value = String(value);
  };

  return every(SCRAPE_MS, async () => {
    let text;
    try {
      const response = await fetch("/metrics", { cache: "no-store" });
      if (!response.ok) throw new Error(String(response.status));
      text = await response.text();
    } catch {
      root.classList.add("stale");
      root.title = "metrics unavailable";
      return;
    }
    root.classList.remove("stale");
    root.removeAttribute("title");
    const samples = parsePrometheus(text);
    const now = performance.now();
    const events = total(samples, "runyard_events_total");
    const current = reading(samples);
    history.push(point(current, previous, now));
    show("active", total(samples, "runyard_runs_active"));
    show("queued", total(samples, "runyard_queue_depth"));
    show("streams", total(samples, "runyard_stream_subscribers"));
    if (previous && now > previous.at) {
      // a restarted server resets its counters: a negative delta means "no rate yet"
      const rate = Math.max(0, (events - previous.events) / ((now - previous.at) / 1000));
      show("rate", Math.round(rate * 10) / 10, rate >= 100 ? Math.round(rate).toLocaleString() : rate.toFixed(1));
    }
    previous = { events, at: now, reading: current };
  });
}
