// #/runs: the live list of runs, found by anything one knows of them (q: id,
// session, owner, input or error text), by time range, status and pipeline.
//
// GET /v1/runs filters by status, text and time but not by pipeline, so the
// pipeline filter is applied here, on pages of the listing. An admin (or anyone
// in a playground: RUNYARD_PLAYGROUND) sees every owner's runs (owner=*), with an
// owner column; anyone else gets 403 for that and sees their own.

import { api, identity, pipelines, runPath } from "./api.js";
import { STATUSES, badge, duration, every, h, notice, runLink, sessionLink, time } from "./dom.js";

const POLL_MS = 1500;
const PAGE = 50;
const MAX_PAGES = 10; // per refresh, when a pipeline filter hides most runs
const admins = new Map(); // owner -> may list every owner's runs
const SEARCH_POLL_MS = 6000;
const SEARCH_DELAY_MS = 300; // typing pauses this long before the list is asked again
export const RANGES = [["", "any time"], ["15m", "last 15 min"], ["1h", "last hour"], ["24h", "last day"],
  ["7d", "last 7 days"]];
const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 };
const PROGRESS_READS = 8; // running runs whose latest events are read per refresh
const progressSeen = new Map(); // run_id -> {seq, fraction, text}

/** "15m" -> the ISO time that long ago. */
function sinceOf(range) {
  const match = /^(\d+)([mhd])$/.exec(range);
  return match ? new Date(Date.now() - Number(match[1]) * UNIT_MS[match[2]]).toISOString() : null;
}

/** The run's latest progress (a `progress` or `tick` event near its end), read as its owner. */
async function readProgress(run) {
  const known = progressSeen.get(run.run_id);
  if (known && known.seq === run.last_seq) return known;
  const headers = run.owner && !identity.token ? { "X-Client-Id": run.owner } : {};
  const after = Math.max(0, run.last_seq - 30);
  const page = await api(runPath(run.run_id, `/events?after=${after}&limit=30`), { headers });
  let found = { seq: run.last_seq, fraction: null, text: `${run.last_seq} events` };
  for (const event of page.events) {
    const data = event.data ?? {};
    if (event.type === "progress" && data.total) {
      found = { seq: run.last_seq, fraction: data.current / data.total, text: `${data.current} / ${data.total}` };
    } else if (event.type === "tick" && typeof run.input?.count === "number" && run.input.count > 0) {
      found = { seq: run.last_seq, fraction: (data.i + 1) / run.input.count, text: `${data.i + 1} / ${run.input.count}` };
    }
  }
  progressSeen.set(run.run_id, found);
  return found;
}

function progressCell(run) {
  if (run.status === "succeeded") return h("span", { class: "muted" }, "done");
  if (run.status !== "running") return h("span", { class: "muted" }, run.status === "queued" ? "queued" : "—");
  const known = progressSeen.get(run.run_id);
  if (!known) return h("span", { class: "muted" }, "…");
  return h("span", { class: "cell-progress" },
    known.fraction === null ? null : h("progress", { max: 1, value: Math.max(0, Math.min(1, known.fraction)) }),
    h("span", { class: "muted small" }, known.text));
}

/** Whether the current identity may list every owner's runs (asked once per identity). */
export async function isAdmin() {
  const owner = identity.owner;
  if (!admins.has(owner)) {
    try {
      await api("/v1/runs?owner=*&limit=1");
      admins.set(owner, true);
    } catch (error) {
      if (error.status !== 403) throw error;
      admins.set(owner, false);
    }
  }
  return admins.get(owner);
}

function select(id, label, options, value, onChange) {
  return h("label", { class: "field inline", for: id }, h("span", {}, label),
    h("select", { id, name: id, onchange: onChange },
      options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))));
}

export function runsView(main, params) {
  const filters = {
    q: params.get("q") || "",
    range: params.get("range") || "",
    status: params.get("status") || "",
    pipeline: params.get("pipeline") || "",
    scope: params.get("scope") || "",
  };
  let searchTimer = null;
  let wanted = PAGE;
  let admin = false;
  const rows = new Map(); // run_id -> <tr>

  const body = h("tbody", { id: "runs-body" });
  const summary = h("p", { class: "muted", id: "runs-summary" }, "loading…");
  const problem = h("div", { id: "runs-problem" });
  const more = h("button", { type: "button", class: "secondary", hidden: true, onclick: () => {
    wanted += PAGE;
    refresh();
  } }, "Show more");
  const scopeSlot = h("span");
  const pipelineSlot = h("span");

  const changed = (key) => (event) => {
    filters[key] = event.target.value;
    wanted = PAGE;
    const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    history.replaceState(null, "", `#/runs${query.toString() ? `?${query}` : ""}`);
    refresh().catch(showProblem);
  };
  const showProblem = (error) =>
    problem.replaceChildren(notice("error", `The runs could not be listed: ${error.message}`));
  const typed = (event) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => changed("q")(event), SEARCH_DELAY_MS);
  };
  const head = h("thead");

  main.replaceChildren(
    h("div", { class: "title-row" },
      h("h1", { tabindex: -1 }, "Runs"),
      h("a", { href: "#/new", class: "button" }, "New run")),
    h("form", { class: "filters", id: "run-filters", role: "search", onsubmit: (e) => e.preventDefault() },
      h("label", { class: "field inline search", for: "filter-q" }, h("span", {}, "Search"),
        h("input", { id: "filter-q", name: "q", type: "search", value: filters.q, maxlength: 200, autocomplete: "off",
          placeholder: "run id, session, owner, input or error text", oninput: typed,
          onchange: (e) => { clearTimeout(searchTimer); changed("q")(e); } })),
      select("filter-range", "Created", RANGES, filters.range, changed("range")),
      select("filter-status", "Status", [["", "any status"], ...STATUSES.map((s) => [s, s.replace("_", " ")])],
        filters.status, changed("status")),
      pipelineSlot,
      scopeSlot),
    problem,
    h("div", { class: "table-wrap" },
      h("table", { class: "runs", id: "runs-table" },
        h("caption", { class: "visually-hidden" }, "Runs, newest first"),
        head,
        body)),
    summary,
    more,
  );

  pipelines().then((list) => {
    pipelineSlot.replaceChildren(select("filter-pipeline", "Pipeline",
      [["", "any pipeline"], ...list.map((p) => [p.name, p.name])], filters.pipeline, changed("pipeline")));
  }).catch(() => {});

  function drawHead(everyone) {
    const titles = ["Run", ...(everyone ? ["Owner"] : []), "Pipeline", "Status", "Progress", "Error", "Created",
      "Duration", "Attempt", "Session"];
    if (head.dataset.titles === titles.join()) return;
    head.dataset.titles = titles.join();
    head.replaceChildren(h("tr", {}, titles.map((t) =>
      h("th", { scope: "col", class: t === "Attempt" ? "num" : undefined }, t))));
    rows.clear(); // the cells change with the columns
  }

  function row(run) {
    let tr = rows.get(run.run_id);
    const key = `${run.status}|${run.attempt}|${run.started_at}|${run.finished_at}|${progressSeen.get(run.run_id)?.seq}`;
    if (!tr) {
      tr = h("tr", { dataset: { runId: run.run_id } });
      rows.set(run.run_id, tr);
    }
    if (tr.dataset.key !== key || !run.finished_at) {
      tr.dataset.key = key;
      tr.dataset.status = run.status;
      tr.dataset.pipeline = run.pipeline;
      tr.className = `status-row-${run.status}`;
      const link = runLink(run.run_id);
      if (run.owner && run.owner !== identity.owner) link.href += `?as=${encodeURIComponent(run.owner)}`;
      const error = run.error ? `${run.error.code}: ${run.error.message}` : "";
      tr.replaceChildren(
        h("td", {}, link),
        run.owner !== undefined ? h("td", { class: "mono cell-owner" }, run.owner) : null,
        h("td", {}, run.pipeline),
        h("td", {}, badge(run.status)),
        h("td", { class: "cell-progress-col" }, progressCell(run)),
        h("td", { class: "cell-error", title: error }, error ? h("span", { class: "error-text" }, error) : ""),
        h("td", {}, time(run.created_at)),
        h("td", {}, run.started_at ? duration(run.started_at, run.finished_at) : "—"),
        h("td", { class: "num" }, String(run.attempt)),
        h("td", {}, sessionLink(run.session_id)),
      );
    }
    return tr;
  }

  let generation = 0; // the latest refresh: an older one's answer (other filters) is dropped

  async function refresh() {
    const mine = ++generation;
    admin = await isAdmin();
    if (admin && !scopeSlot.childElementCount) {
      scopeSlot.append(select("filter-scope", "Owners", [["", "all owners"], ["mine", "mine only"]],
        filters.scope, changed("scope")));
    }
    const everyone = admin && filters.scope !== "mine";
    drawHead(everyone);
    const since = sinceOf(filters.range);
    const found = [];
    let before = null;
    let hasMore = false;
    for (let page = 0; page < MAX_PAGES; page++) {
      const query = new URLSearchParams({ limit: String(filters.pipeline ? 200 : Math.min(200, wanted + 1)) });
      if (filters.status) query.set("status", filters.status);
      if (filters.q.trim()) query.set("q", filters.q.trim());
      if (since) query.set("since", since);
      if (everyone) query.set("owner", "*");
      if (before) query.set("before", before);
      const answer = await api(`/v1/runs?${query}`);
      found.push(...answer.runs.filter((run) => !filters.pipeline || run.pipeline === filters.pipeline));
      before = answer.next;
      if (found.length > wanted || !before) {
        hasMore = found.length > wanted || Boolean(before);
        break;
      }
    }
    const shown = found.slice(0, wanted);
    const running = shown.filter((run) => run.status === "running").slice(0, PROGRESS_READS);
    await Promise.all(running.map((run) => readProgress(run).catch(() => null)));
    if (mine !== generation) return;
    const trs = shown.map(row);
    const current = [...body.children];
    if (current.length !== trs.length || current.some((tr, i) => tr !== trs[i])) body.replaceChildren(...trs);
    for (const id of rows.keys()) if (!shown.some((run) => run.run_id === id)) rows.delete(id);
    more.hidden = !hasMore;
    problem.replaceChildren();
    const whose = (everyone ? "every owner's" : `${identity.owner}'s`) + (filters.q.trim() ? " matching" : "");
    summary.replaceChildren(shown.length
      ? `${shown.length} of ${whose} runs shown, newest first; refreshed ${new Date().toLocaleTimeString()}.`
      : h("span", {}, `No runs match (${whose} runs). `, h("a", { href: "#/new" }, "Start one.")));
  }

  let lastPoll = 0;
  const stop = every(POLL_MS, async () => {
    // a text search scans the window's rows: while one is set, the list is asked again less often
    if (filters.q.trim() && performance.now() - lastPoll < SEARCH_POLL_MS) return;
    lastPoll = performance.now();
    try {
      await refresh();
    } catch (error) {
      showProblem(error);
    }
  });
  return () => {
    clearTimeout(searchTimer);
    stop();
  };
}
