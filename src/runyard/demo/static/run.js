// #/runs/<id>: one run, live: phases as a timeline, tokens as flowing text,
// progress bars, errors highlighted, every event in a collapsible log.
//
// The history comes from GET /v1/runs/{id}/events, then the stream goes on
// after the last seq rendered (stream.js resumes it after drops). The last seq
// rendered is kept in sessionStorage, so a reload can say where it resumed.

import { ApiError, api, consoleSettings, identity, runPath } from "./api.js";
import { waitingPanel } from "./ask.js";
import { BAD, FINISHED, badge, duration, h, json, notice, sessionLink, shortId, time } from "./dom.js";
import { money } from "./health.js";
import { renderMarkdown, splitOutput } from "./markdown.js";
import { followRun } from "./stream.js";
import { timelineBars } from "./timeline_bars.js";
import { progressBar, summary, timeline } from "./widgets.js";

const PAGE = 1000; // events per history request
const HISTORY_MAX = 20000; // a longer history shows only its tail
const LOG_MAX = 2000; // raw log entries kept in the page
const TICKS_MAX = 500; // tick rows kept in the page
const ACTIVITY_MAX = 500; // activity entries kept in the page
const FLUSH_MS = 40; // events are drawn in batches, at most this late

const seqKey = (runId) => `runyard.seq.${runId}`;
const atEnd = (el) => el.scrollTop + el.clientHeight >= el.scrollHeight - 8;

/** Tokens by model, summed from `usage` events, and what they cost under the server's prices. */
function usageMeter() {
  const byModel = new Map();
  return {
    add(data) {
      const count = (v) => (Number.isInteger(v) && v >= 0 ? v : 0);
      const model = typeof data?.model === "string" ? data.model : "";
      const seen = byModel.get(model) ?? { input: 0, output: 0 };
      byModel.set(model, { input: seen.input + count(data?.input_tokens), output: seen.output + count(data?.output_tokens) });
    },
    get seen() {
      return byModel.size > 0;
    },
    totals() {
      let input = 0;
      let output = 0;
      for (const used of byModel.values()) {
        input += used.input;
        output += used.output;
      }
      return { input, output };
    },
    cost(prices) {
      let total = null;
      for (const [model, used] of byModel) {
        const price = prices?.[model] ?? prices?.["*"];
        if (price) total = (total ?? 0) + (used.input * price.input_per_mtok + used.output * price.output_per_mtok) / 1e6;
      }
      return total;
    },
  };
}

const OWNERS_EXPLAINED = "Runs are visible only to their owner, and anyone else gets this same 404, " +
  "exactly as for an id that does not exist. Under RUNYARD_AUTH=none the owner is the client id the page sends " +
  "(X-Client-Id; change it with the button at the top right); under RUNYARD_AUTH=jwt it is the token's sub. " +
  "In a playground (runyard demo, or RUNYARD_PLAYGROUND=true) the runs list shows every owner's runs and opens each as its owner.";

export function runView(main, runId, params = new URLSearchParams()) {
  const actingAs = params.get("as");
  let stopStream = null;
  let stopped = false;
  let run = null;
  let lastSeq = 0;
  let pending = [];
  let flushTimer = null;
  let snapshotTimer = null;
  let clock = null; // redraws the running duration
  let ticks = 0;
  let trimmedLog = 0;
  let settings = null; // GET /v1/console
  const usage = usageMeter();
  const bars = timelineBars();

  const view = h("article", { id: "run-view", class: "run", dataset: { runId, lastSeq: "0", connects: "0" } });
  main.replaceChildren(view);
  view.append(h("p", { class: "muted" }, "loading…"));

  // -- the parts of the page ---------------------------------------------------
  const statusSlot = h("span", { id: "run-status" });
  const connection = h("span", { id: "connection", class: "connection", role: "status", "aria-live": "polite" });
  const cancel = h("button", { type: "button", id: "cancel-run", class: "danger", hidden: true }, "Cancel run");
  const meta = h("dl", { class: "meta", id: "run-meta" });
  const alerts = h("div", { id: "run-alerts" });
  const waiting = waitingPanel(runId, (snapshot) => setStatus(snapshot.status));
  const phases = timeline();
  const ticksBar = progressBar("ticks-progress", "Ticks");
  const progress = progressBar("run-progress", "Progress");
  const text = h("div", { id: "run-text", class: "flow", tabindex: 0, "aria-label": "Streamed text" });
  const tickBody = h("tbody", { id: "ticks" });
  const tickCount = h("span", { id: "tick-count", class: "muted" });
  const tickScroller = h("div", { class: "table-wrap short" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "num" }, "seq"),
      h("th", { scope: "col", class: "num" }, "i"), h("th", { scope: "col" }, "marker"),
      h("th", { scope: "col" }, "sent"))),
    tickBody));
  const ticksSection = h("section", { id: "ticks-section", class: "card", hidden: true },
    h("h2", {}, "Ticks ", tickCount), tickScroller);
  const activity = h("ol", { id: "activity", class: "activity" });
  const activitySection = h("section", { class: "card", hidden: true }, h("h2", {}, "Activity"), activity);
  const textSection = h("section", { class: "card", hidden: true }, h("h2", {}, "Output text"), text);
  const output = h("pre", { id: "run-output", class: "mono" }, "—");
  const documentSlot = h("div", { id: "run-document" });
  const rerun = h("button", { type: "button", id: "rerun", class: "secondary" }, "Re-run");
  const outputTitle = h("h2", {}, "Output");
  const log = h("ol", { id: "event-log", class: "event-log mono" });
  const logCount = h("span", { id: "event-count" }, "0");
  const logNote = h("p", { class: "muted", hidden: true });

  // -- drawing events --------------------------------------------------------------
  function setStatus(status, final = false) {
    if (view.dataset.ended && !final) return; // a late answer (a cancel's 202) must not undo the end
    view.dataset.status = status;
    statusSlot.replaceChildren(badge(status));
    cancel.hidden = FINISHED.has(status);
  }

  function showError(error, title = "Error", kind = "error") {
    // the run's last `error` event and its `end` usually carry the same error: show it once
    const key = `${error?.code}|${error?.message}`;
    const shown = [...alerts.children].find((el) => el.dataset.key === key);
    if (shown) {
      shown.querySelector("strong").textContent = `${title}: `;
      return;
    }
    const box = notice(kind, h("strong", {}, `${title}: `), error?.message || summary(error),
      error?.code ? h("code", {}, ` ${error.code}`) : null);
    box.dataset.key = key;
    alerts.append(box);
  }

  function addActivity(event, ...content) {
    activitySection.hidden = false;
    activity.append(h("li", { dataset: { seq: event.seq, type: event.type } },
      h("span", { class: "activity-type" }, event.type), " ", ...content));
    if (activity.childElementCount > ACTIVITY_MAX) activity.firstElementChild.remove();
  }

  function tick(event, shown) {
    const data = event.data ?? {};
    ticks += 1;
    ticksSection.hidden = false;
    if (shown) {
      const sent = typeof data.t === "number" ? new Date(data.t * 1000).toLocaleTimeString() : "";
      tickBody.append(h("tr", { dataset: { seq: event.seq, i: data.i } },
        h("td", { class: "num" }, String(event.seq)), h("td", { class: "num" }, String(data.i)),
        h("td", {}, String(data.marker ?? "")), h("td", {}, sent)));
      if (tickBody.childElementCount > TICKS_MAX) tickBody.firstElementChild.remove();
    }
    const count = run?.input?.count;
    // a long history shows only its tail: the tick's own index says how many came before
    const received = Math.max(ticks, Number.isInteger(data.i) ? data.i + 1 : 0);
    tickCount.textContent = `(${received}${typeof count === "number" ? ` of ${count}` : ""})`;
    if (typeof count === "number" && count > 0) {
      ticksBar.set((Number(data.i) + 1) / count, `${Number(data.i) + 1} / ${count}`);
    }
  }

  function end(event) {
    const data = event.data ?? {};
    waiting.clear();
    setStatus(data.status, true);
    view.dataset.ended = "true";
    const parts = data.output !== undefined ? splitOutput(data.output) : { document: null, rest: data.error ?? null };
    if (parts.document !== null) {
      // the document replaces the text streamed while it was written: one copy, rendered
      documentSlot.replaceChildren(renderMarkdown(parts.document));
      textSection.hidden = true;
    }
    output.hidden = parts.document !== null && parts.rest === undefined;
    output.textContent = json(parts.rest ?? null);
    output.classList.toggle("bad", data.output === undefined);
    outputTitle.textContent = data.output === undefined ? "Error" : "Output";
    if (data.error) {
      showError(data.error, `Run ${data.status.replace("_", " ")}`, BAD.has(data.status) ? "error" : "warn");
    }
    phases.finish(data.status, event.ts);
    refreshSnapshot();
  }

  /** Draws one event; `shown.row` and `shown.log` say whether it still gets a tick row and
   * a log entry (a batch longer than the page keeps does not build the ones it would drop). */
  function draw(event, shown) {
    const data = event.data ?? {};
    switch (event.type) {
      case "status":
        setStatus(data.status);
        if (data.status === "waiting" && data.until) waiting.sleep(data.until);
        else if (data.status !== "waiting") waiting.clear(); // an ask's panel comes with input.requested
        refreshSnapshot();
        break;
      case "input.requested":
        waiting.ask(data);
        addActivity(event, "asked ", h("span", { class: "mono" }, summary(data.request)));
        break;
      case "input.received":
        waiting.clear();
        addActivity(event, "answer received");
        break;
      case "phase":
        phases.update(event);
        break;
      case "token":
        break; // appended in bulk by flush()
      case "progress": {
        const fraction = data.fraction ?? (data.total ? data.current / data.total : null);
        const counts = data.total ? `${data.current} / ${data.total}` : data.current ?? "";
        progress.set(fraction, [counts, data.message].filter((x) => x !== "" && x != null).join(" · "));
        break;
      }
      case "tick":
        tick(event, shown.row);
        break;
      case "error":
        showError(data);
        break;
      case "end":
        end(event);
        break;
      case "usage":
        usage.add(data);
        drawMeta();
        addActivity(event, h("span", { class: "mono" }, summary(data)));
        break;
      case "limit.wait":
        addActivity(event, `waiting for the limit “${data.limit}”`,
          data.queued_behind != null ? ` behind ${data.queued_behind}` : "");
        break;
      case "finding":
        addActivity(event, h("strong", {}, data.title ?? ""), " ",
          data.url ? h("span", { class: "mono muted" }, data.url) : null,
          data.summary ? h("div", {}, data.summary) : null);
        break;
      case "search":
        addActivity(event, `“${data.query}”: ${data.hits} results`);
        break;
      case "plan":
        addActivity(event, h("ul", {}, (data.queries ?? []).map((q) => h("li", {}, q))));
        break;
      default:
        addActivity(event, h("span", { class: "mono" }, summary(data)));
    }
    if (!shown.log) {
      trimmedLog += 1;
      return;
    }
    const li = h("li", { dataset: { seq: event.seq, type: event.type }, class: `log-${event.type}` },
      h("span", { class: "log-seq" }, String(event.seq)), " ",
      h("span", { class: "log-type" }, event.type), " ",
      h("span", { class: "log-data" }, summary(event.data)));
    if (event.type === "end" && BAD.has(data.status)) li.dataset.bad = "true";
    log.append(li);
  }

  function flush() {
    flushTimer = null;
    const fresh = [];
    for (const event of pending) {
      if (!(event.seq > lastSeq)) continue; // never draw an event twice
      lastSeq = event.seq;
      fresh.push(event);
    }
    pending = [];
    // lists scrolled to their end follow what comes; one scrolled up stays where it is
    const following = [tickScroller, activity, log].filter(atEnd);
    let tokens = "";
    let rowsToSkip = fresh.filter((event) => event.type === "tick").length - TICKS_MAX;
    let logsToSkip = fresh.length - LOG_MAX;
    for (const event of fresh) {
      if (event.type === "token") tokens += event.data?.text ?? "";
      else if (tokens) {
        appendText(tokens);
        tokens = "";
      }
      draw(event, { row: event.type !== "tick" || rowsToSkip-- <= 0, log: logsToSkip-- <= 0 });
    }
    if (tokens) appendText(tokens);
    while (log.childElementCount > LOG_MAX) {
      log.firstElementChild.remove();
      trimmedLog += 1;
    }
    bars.events(fresh);
    for (const el of following) el.scrollTop = el.scrollHeight;
    logNote.hidden = trimmedLog === 0;
    logNote.textContent = `${trimmedLog} earlier events are not shown here.`;
    logCount.textContent = String(lastSeq);
    view.dataset.lastSeq = String(lastSeq);
    sessionStorage.setItem(seqKey(runId), String(lastSeq));
  }

  function appendText(piece) {
    textSection.hidden = false;
    const follow = atEnd(text);
    text.append(piece);
    if (follow) text.scrollTop = text.scrollHeight;
  }

  function receive(events) {
    pending.push(...events);
    flushTimer ??= setTimeout(flush, FLUSH_MS);
  }

  function drawConnection({ state, attempt, delay, error, connects, cursor }) {
    if (pending.length) {
      // what arrived before a drop is drawn now, so that the page and the cursor agree
      clearTimeout(flushTimer);
      flush();
    }
    view.dataset.connection = state;
    view.dataset.connects = String(connects);
    if (state === "live") {
      // where each connection started from: what a reader (or a test) checks resumes against
      view.dataset.cursors = `${view.dataset.cursors ?? ""} ${cursor}`.trim();
      if (connects > 1) view.dataset.resumes = String(Number(view.dataset.resumes || 0) + 1);
    }
    const words = {
      connecting: "connecting…",
      live: connects > 1 ? `live (resumed after event ${cursor})`
        : view.dataset.resumedFrom ? `live (continued after the reload from event ${cursor})` : "live",
      reconnecting: `connection lost; retrying in ${(delay / 1000).toFixed(1)} s (attempt ${attempt})`,
      offline: "offline; waiting for the network",
      ended: "ended",
      failed: `stream refused: ${error?.message}`,
    };
    connection.className = `connection connection-${state}`;
    connection.textContent = words[state] ?? state;
    if (state === "failed") showError(error, "Stream");
  }

  // -- the snapshot ----------------------------------------------------------------
  function drawMeta() {
    if (!run) return;
    const trace = run.trace_id
      ? settings?.trace_url
        ? h("a", { id: "trace-link", class: "mono", href: settings.trace_url.replace("{trace_id}", run.trace_id),
          target: "_blank", rel: "noopener noreferrer", title: "Open the trace (RUNYARD_TRACE_URL)" },
        shortId(run.trace_id))
        : h("span", { id: "trace-id", class: "mono", title: "Set RUNYARD_TRACE_URL to link to your tracing UI" },
          run.trace_id)
      : null;
    const used = usage.totals();
    const cost = usage.cost(settings?.prices);
    const rows = [
      ...(actingAs ? [["Owner", h("span", { class: "mono", id: "run-owner" }, actingAs)]] : []),
      ["Pipeline", run.pipeline],
      ["Attempt", String(run.attempt)],
      ["Created", time(run.created_at)],
      ["Started", time(run.started_at)],
      ["Finished", time(run.finished_at)],
      ["Duration", run.started_at ? duration(run.started_at, run.finished_at) : "—"],
      ...(usage.seen ? [["Tokens", h("span", { id: "run-tokens", dataset: { input: used.input, output: used.output } },
        `${used.input.toLocaleString()} in · ${used.output.toLocaleString()} out`)],
      ["Cost", h("span", { id: "run-cost", dataset: { cost: cost ?? "" } }, cost === null ? "no price set" : money(cost))]]
        : []),
      ...(trace ? [["Trace", trace]] : []),
      ["Session", h("span", {}, sessionLink(run.session_id), " ",
        h("a", { href: `#/new?pipeline=${encodeURIComponent(run.pipeline)}&session=${encodeURIComponent(run.session_id)}`,
          class: "small" }, "continue it"))],
    ];
    meta.replaceChildren(...rows.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
  }

  function refreshSnapshot(delay = 150, tries = 5) {
    clearTimeout(snapshotTimer);
    snapshotTimer = setTimeout(async () => {
      try {
        run = await api(runPath(runId));
        if (stopped) return;
        drawMeta();
        bars.run(run);
        // the end event may be seen a moment before the snapshot says finished
        if (view.dataset.ended && !run.finished_at && tries > 1) refreshSnapshot(delay * 2, tries - 1);
      } catch {
        // the stream still says what matters; the next status change tries again
      }
    }, delay);
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      const snapshot = await api(runPath(runId, "/cancel"), { method: "POST" });
      setStatus(snapshot.status);
    } catch (error) {
      if (error.code !== "run_finished") alerts.append(notice("error", `Cancel failed: ${error.message}`));
    } finally {
      cancel.disabled = false;
    }
  });

  rerun.addEventListener("click", async () => {
    rerun.disabled = true;
    try {
      const fresh = await api("/v1/runs", { method: "POST", body: { pipeline: run.pipeline, input: run.input } });
      const as = identity.actingAs ? `?as=${encodeURIComponent(identity.actingAs)}` : "";
      location.hash = `#/runs/${encodeURIComponent(fresh.run_id)}${as}`;
    } catch (error) {
      alerts.append(notice("error", `Re-run failed: ${error.message}`));
    } finally {
      rerun.disabled = false;
    }
  });

  async function load() {
    settings = await consoleSettings().catch(() => null);
    if (stopped) return;
    identity.actAs(actingAs && settings?.playground ? actingAs : null);
    try {
      run = await api(runPath(runId));
    } catch (error) {
      const missing = error instanceof ApiError && error.status === 404;
      view.replaceChildren(h("h1", { tabindex: -1 }, "Run ", h("code", {}, shortId(runId))),
        notice("error", missing
          ? h("span", { id: "run-missing" }, h("strong", {}, `No run ${runId} for ${identity.actingAs ?? identity.owner}. `),
            OWNERS_EXPLAINED)
          : `The run could not be read: ${error.message}`),
        h("p", {}, h("a", { href: "#/runs" }, "Back to the runs")));
      return;
    }
    if (stopped) return;
    view.replaceChildren(
      h("div", { class: "title-row" },
        h("h1", { tabindex: -1 }, "Run ", h("code", { title: runId }, runId)), statusSlot, rerun, cancel),
      h("p", { class: "muted" }, connection),
      meta,
      alerts,
      waiting.root,
      h("details", { class: "input" }, h("summary", {}, "Input"), h("pre", { class: "mono" }, json(run.input))),
      phases.root,
      h("section", { class: "card bars" }, ticksBar.root, progress.root),
      bars.root,
      textSection,
      ticksSection,
      activitySection,
      h("section", { class: "card" }, outputTitle, documentSlot, output),
      h("details", { class: "card raw", id: "raw-events" },
        h("summary", {}, "Raw events (", logCount, ")"), logNote, log),
    );
    setStatus(run.status);
    drawMeta();
    bars.run(run);
    waiting.fromSnapshot(run); // the history below updates it, whatever happened since
    const remembered = Number(sessionStorage.getItem(seqKey(runId)) || 0);
    if (remembered > 0 && remembered <= run.last_seq) view.dataset.resumedFrom = String(remembered);

    // the history, then the stream after it
    let after = run.last_seq > HISTORY_MAX ? run.last_seq - HISTORY_MAX : 0;
    trimmedLog = after;
    let ended = false;
    try {
      for (;;) {
        const page = await api(runPath(runId, `/events?after=${after}&limit=${PAGE}`));
        if (stopped) return;
        receive(page.events);
        after = page.next_after;
        ended ||= page.events.some((event) => event.type === "end");
        if (page.events.length < PAGE) break;
      }
    } catch (error) {
      showError(error, "History");
    }
    clearTimeout(flushTimer);
    flush();
    if (ended) {
      drawConnection({ state: "ended", connects: 0, cursor: lastSeq });
      return;
    }
    clock = setInterval(() => {
      if (run && run.started_at && !run.finished_at && !stopped) drawMeta();
      bars.tick();
    }, 1000);
    stopStream = followRun(runId, { after: lastSeq, onEvents: receive, onState: drawConnection });
  }

  load();
  return () => {
    stopped = true;
    identity.actAs(null);
    stopStream?.();
    clearTimeout(flushTimer);
    clearTimeout(snapshotTimer);
    clearInterval(clock);
  };
}
