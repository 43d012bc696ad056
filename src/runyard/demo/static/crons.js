// #/crons: the caller's crons (scheduled runs): each with its schedule, time zone
// and next run, enabled or disabled in place, and a form that adds one.

import { api, pipelines } from "./api.js";
import { h, notice, shortId, time } from "./dom.js";

const POLL_MS = 5000;
const cronPath = (cronId) => `/v1/crons/${encodeURIComponent(cronId)}`;

function field(label, control, help) {
  return h("label", { class: "field" }, h("span", {}, label), control, help ? h("small", { class: "muted" }, help) : null);
}

export function cronsView(main) {
  const problem = h("div", { id: "crons-problem" });
  const rows = h("tbody", { id: "crons" });
  const pipeline = h("select", { id: "cron-pipeline", name: "pipeline", required: true });
  const schedule = h("input", { id: "cron-schedule", name: "schedule", class: "mono", required: true,
    value: "0 9 * * 1-5", autocomplete: "off", spellcheck: false });
  const timezone = h("input", { id: "cron-timezone", name: "timezone", class: "mono", value: "UTC", autocomplete: "off" });
  const input = h("textarea", { id: "cron-input", name: "input", class: "mono", rows: 3, spellcheck: false }, "{}");
  const formProblem = h("p", { id: "cron-form-problem", class: "field-problem", role: "alert" });
  const form = h("form", { id: "cron-form", class: "stack card" },
    h("h2", {}, "Add a cron"),
    field("Pipeline", pipeline),
    field("Schedule", schedule, "Five cron fields: minute hour day-of-month month day-of-week."),
    field("Time zone", timezone, "An IANA name, such as Europe/Paris."),
    field("Input (JSON)", input),
    formProblem,
    h("div", { class: "row" }, h("button", { type: "submit", id: "cron-add" }, "Add cron")));

  main.replaceChildren(
    h("h1", { tabindex: -1 }, "Crons"),
    problem,
    h("section", { class: "card" }, h("div", { class: "table-wrap" }, h("table", { class: "runs" },
      h("thead", {}, h("tr", {}, ["Cron", "Pipeline", "Schedule", "Next run", "Last run", "Enabled", ""].map((t) =>
        h("th", { scope: "col" }, t)))),
      rows))),
    form,
  );

  pipelines().then((list) => pipeline.replaceChildren(...list.map((p) => h("option", { value: p.name }, p.name))))
    .catch((error) => problem.replaceChildren(notice("error", `The pipelines could not be read: ${error.message}`)));

  async function change(action) {
    try {
      await action();
      problem.replaceChildren();
    } catch (error) {
      problem.replaceChildren(notice("error", `The cron could not be changed: ${error.message}`));
    }
    await refresh();
  }

  function row(cron) {
    const toggle = h("input", { type: "checkbox", checked: cron.enabled, class: "cron-enabled",
      "aria-label": `Cron ${cron.cron_id} enabled` });
    toggle.addEventListener("change", () => change(() =>
      api(cronPath(cron.cron_id), { method: "PATCH", body: { enabled: toggle.checked } })));
    const remove = h("button", { type: "button", class: "secondary cron-delete" }, "Delete");
    remove.addEventListener("click", () => {
      if (confirm(`Delete cron ${shortId(cron.cron_id)}? It makes no more runs.`)) {
        change(() => api(cronPath(cron.cron_id), { method: "DELETE" }));
      }
    });
    const last = cron.last_run_id
      ? h("a", { href: `#/runs/${encodeURIComponent(cron.last_run_id)}`, class: "mono" }, shortId(cron.last_run_id))
      : "—";
    return h("tr", { dataset: { cronId: cron.cron_id, enabled: String(cron.enabled) } },
      h("td", { class: "mono", title: cron.cron_id }, shortId(cron.cron_id)), h("td", {}, cron.pipeline),
      h("td", {}, h("code", {}, cron.schedule), " ", h("span", { class: "muted" }, cron.timezone)),
      h("td", { class: "cron-next" }, cron.enabled ? time(cron.next_run_at) : h("span", { class: "muted" }, "disabled")),
      h("td", {}, last), h("td", {}, toggle), h("td", {}, remove));
  }

  async function refresh() {
    const answer = await api("/v1/crons");
    rows.replaceChildren(...answer.crons.map(row));
    if (!answer.crons.length) rows.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No crons.")));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let value;
    try {
      value = JSON.parse(input.value);
    } catch (error) {
      formProblem.textContent = `The input is not valid JSON: ${error.message}`;
      return;
    }
    const body = { pipeline: pipeline.value, input: value, schedule: schedule.value.trim(),
      timezone: timezone.value.trim() || "UTC" };
    try {
      await api("/v1/crons", { method: "POST", body });
      formProblem.textContent = "";
    } catch (error) {
      formProblem.textContent = `${error.message} (${error.code})`;
      return;
    }
    await refresh();
  });

  let stopped = false;
  let timer = null;
  const tick = async () => {
    try {
      await refresh();
    } catch (error) {
      problem.replaceChildren(notice("error", `The crons could not be read: ${error.message}`));
    }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
