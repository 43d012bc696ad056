// Small DOM and formatting helpers shared by the views.

/** `h("a", {href: "#/runs", class: "x"}, "text", child)`: an element with attributes and children. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

export const STATUSES = ["queued", "running", "waiting", "succeeded", "failed", "cancelled", "timed_out"];
export const FINISHED = new Set(["succeeded", "failed", "cancelled", "timed_out"]);
export const BAD = new Set(["failed", "timed_out"]);

export function badge(status) {
  return h("span", { class: `badge status-${status || "unknown"}`, dataset: { status: status || "" } },
    (status || "unknown").replace("_", " "));
}

export function shortId(id) {
  return id && id.length > 14 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id || "";
}

export function runLink(runId) {
  return h("a", { href: `#/runs/${encodeURIComponent(runId)}`, class: "mono", title: runId }, shortId(runId));
}

export function sessionLink(sessionId) {
  if (!sessionId) return "—";
  return h("a", { href: `#/sessions/${encodeURIComponent(sessionId)}`, class: "mono", title: sessionId },
    shortId(sessionId));
}

export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const date = new Date(iso);
  const today = date.toDateString() === new Date().toDateString();
  return h("time", { datetime: iso, title: date.toLocaleString() },
    today ? date.toLocaleTimeString() : date.toLocaleString());
}

/** "1.2 s", "3 min 4 s": the time from `start` to `end` (ISO strings or epoch ms; end defaults to now). */
export function duration(start, end) {
  if (!start) return "—";
  const from = typeof start === "number" ? start : Date.parse(start);
  const to = end ? (typeof end === "number" ? end : Date.parse(end)) : Date.now();
  const seconds = Math.max(0, (to - from) / 1000);
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

/** A message box; `kind` is "error", "info" or "warn". */
export function notice(kind, ...children) {
  return h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, ...children);
}

/** Calls `fn` now and then every `ms` while the page is visible; returns a stop function. */
export function every(ms, fn) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    timer = null;
    if (stopped) return;
    if (document.visibilityState !== "hidden") {
      try {
        await fn();
      } catch (error) {
        console.warn(error);
      }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  const wake = () => {
    if (document.visibilityState === "visible" && timer !== null) {
      clearTimeout(timer);
      tick();
    }
  };
  document.addEventListener("visibilitychange", wake);
  tick();
  return () => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    document.removeEventListener("visibilitychange", wake);
  };
}
