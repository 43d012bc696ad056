// The run page's live widgets: the phase timeline and progress bars.

import { duration, h } from "./dom.js";

const DONE = new Set(["done", "succeeded", "completed", "finished", "ok"]);
const FAILED = new Set(["failed", "error", "errored", "timed_out", "cancelled"]);
const settled = (status) => DONE.has(status) || FAILED.has(status);

export function summary(data) {
  const text = typeof data === "string" ? data : JSON.stringify(data);
  return text && text.length > 240 ? `${text.slice(0, 240)}…` : text ?? "";
}

/** A labelled progress bar, hidden until its first `set(fraction, text)` (fraction null: indeterminate). */
export function progressBar(id, label) {
  const progress = h("progress", { id: `${id}-bar`, max: 1, "aria-labelledby": `${id}-label` });
  const caption = h("span", { id: `${id}-label`, class: "bar-label" }, label);
  const detail = h("span", { id: `${id}-detail`, class: "muted" });
  const root = h("div", { class: "bar", id, hidden: true }, h("div", { class: "bar-head" }, caption, detail), progress);
  return {
    root,
    set(fraction, text) {
      root.hidden = false;
      if (fraction === null || fraction === undefined || Number.isNaN(fraction)) progress.removeAttribute("value");
      else progress.value = Math.max(0, Math.min(1, fraction));
      detail.textContent = text;
    },
  };
}

/**
 * The `phase` events ({name, status, ...extra}) as a timeline: one step per
 * name, in the order they started, with their status, duration and extras.
 * `root` stays hidden until the first phase.
 */
export function timeline() {
  const list = h("ol", { class: "timeline", id: "phases", "aria-label": "Phases" });
  const root = h("section", { class: "card", id: "timeline-section", hidden: true }, h("h2", {}, "Phases"), list);
  const steps = new Map(); // name -> {li, status, started, ended, extra}

  function draw(name, step) {
    const state = DONE.has(step.status) ? "done" : FAILED.has(step.status) ? "failed" : "active";
    const details = Object.entries(step.extra).map(([k, v]) => `${k}: ${summary(v)}`).join(", ");
    step.li.className = `phase phase-${state}`;
    step.li.dataset.phase = name;
    step.li.dataset.status = step.status;
    step.li.replaceChildren(...[
      h("span", { class: "phase-dot", "aria-hidden": "true" }),
      h("span", { class: "phase-name" }, name),
      h("span", { class: "phase-status" }, step.status),
      h("span", { class: "phase-time muted" }, step.ended ? duration(step.started, step.ended) : "…"),
      details ? h("span", { class: "phase-extra muted" }, details) : null,
    ].filter(Boolean));
  }

  return {
    root,
    /** A `phase` event. */
    update(event) {
      const { name, status, ...extra } = event.data ?? {};
      if (!name) return;
      let step = steps.get(name);
      if (!step) {
        root.hidden = false;
        step = { li: h("li"), status, started: event.ts, ended: null, extra: {} };
        steps.set(name, step);
        list.append(step.li);
      }
      step.status = status;
      Object.assign(step.extra, extra);
      if (settled(status)) step.ended = event.ts;
      draw(name, step);
    },
    /** The run ended with `status` at `ts`: phases still open are done, or interrupted. */
    finish(status, ts) {
      for (const [name, step] of steps) {
        if (settled(step.status)) continue;
        step.status = status === "succeeded" ? "done" : "interrupted";
        step.ended = ts;
        if (step.status === "interrupted") step.li.dataset.interrupted = "true";
        draw(name, step);
      }
    },
  };
}
