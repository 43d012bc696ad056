// #/runs: the live list of runs, filtered by status and pipeline.
//
// GET /v1/runs filters by status but not by pipeline, so the pipeline filter is
// applied here, on pages of the listing. An admin sees every owner's runs
// (owner=*); anyone else gets 403 for that and sees their own.

import { api, identity, pipelines } from "./api.js";
import { STATUSES, badge, duration, every, h, notice, runLink, sessionLink, time } from "./dom.js";

const POLL_MS = 1500;
const PAGE = 50;
const MAX_PAGES = 10; // per refresh, when a pipeline filter hides most runs
const admins = new Map(); // owner -> may list every owner's runs

/** Whether the current identity may list every owner's runs (asked once per identity). */
async function isAdmin() {
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
    status: params.get("status") || "",
    pipeline: params.get("pipeline") || "",
    scope: params.get("scope") || "",
  };
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
    refresh();
  };

  main.replaceChildren(
    h("div", { class: "title-row" },
      h("h1", { tabindex: -1 }, "Runs"),
      h("a", { href: "#/new", class: "button" }, "New run")),
    h("form", { class: "filters", id: "run-filters", onsubmit: (e) => e.preventDefault() },
      select("filter-status", "Status", [["", "any status"], ...STATUSES.map((s) => [s, s.replace("_", " ")])],
        filters.status, changed("status")),
      pipelineSlot,
      scopeSlot),
    problem,
    h("div", { class: "table-wrap" },
      h("table", { class: "runs", id: "runs-table" },
        h("caption", { class: "visually-hidden" }, "Runs, newest first"),
        h("thead", {}, h("tr", {},
          ["Run", "Pipeline", "Status", "Created", "Duration", "Attempt", "Session"].map((t) =>
            h("th", { scope: "col", class: t === "Attempt" ? "num" : undefined }, t)))),
        body)),
    summary,
    more,
  );

  pipelines().then((list) => {
    pipelineSlot.replaceChildren(select("filter-pipeline", "Pipeline",
      [["", "any pipeline"], ...list.map((p) => [p.name, p.name])], filters.pipeline, changed("pipeline")));
  }).catch(() => {});

  function row(run) {
    let tr = rows.get(run.run_id);
    const key = `${run.status}|${run.attempt}|${run.started_at}|${run.finished_at}`;
    if (!tr) {
      tr = h("tr", { dataset: { runId: run.run_id } });
      rows.set(run.run_id, tr);
    }
    if (tr.dataset.key !== key || !run.finished_at) {
      tr.dataset.key = key;
      tr.dataset.status = run.status;
      tr.dataset.pipeline = run.pipeline;
      tr.className = `status-row-${run.status}`;
      tr.replaceChildren(
        h("td", {}, runLink(run.run_id)),
        h("td", {}, run.pipeline),
        h("td", {}, badge(run.status)),
        h("td", {}, time(run.created_at)),
        h("td", {}, run.started_at ? duration(run.started_at, run.finished_at) : "—"),
        h("td", { class: "num" }, String(run.attempt)),
        h("td", {}, sessionLink(run.session_id)),
      );
    }
    return tr;
  }

  async function refresh() {
    admin = await isAdmin();
    if (admin && !scopeSlot.childElementCount) {
      scopeSlot.append(select("filter-scope", "Owners", [["", "all owners"], ["mine", "mine only"]],
        filters.scope, changed("scope")));
    }
    const everyone = admin && filters.scope !== "mine";
    const found = [];
    let before = null;
    let hasMore = false;
    for (let page = 0; page < MAX_PAGES; page++) {
      const query = new URLSearchParams({ limit: String(filters.pipeline ? 200 : Math.min(200, wanted + 1)) });
      if (filters.status) query.set("status", filters.status);
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
    const trs = shown.map(row);
    const current = [...body.children];
    if (current.length !== trs.length || current.some((tr, i) => tr !== trs[i])) body.replaceChildren(...trs);
    for (const id of rows.keys()) if (!shown.some((run) => run.run_id === id)) rows.delete(id);
    more.hidden = !hasMore;
    problem.replaceChildren();
    const whose = everyone ? "every owner's" : `${identity.owner}'s`;
    summary.replaceChildren(shown.length
      ? `${shown.length} of ${whose} runs shown, newest first; refreshed ${new Date().toLocaleTimeString()}.`
      : h("span", {}, `No runs match (${whose} runs). `, h("a", { href: "#/new" }, "Start one.")));
  }

  return every(POLL_MS, async () => {
    try {
      await refresh();
    } catch (error) {
      problem.replaceChildren(notice("error", `The runs could not be listed: ${error.message}`));
    }
  });
}
