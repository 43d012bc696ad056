// #/health: each pipeline's health over the last window (GET /v1/stats/pipelines:
// runs, success rate, p50/p95 duration, tokens, cost), and this server's activity
// over time, charted from the page's own scrapes of /metrics (metrics.js `history`).

import { api } from "./api.js";
import { every, h, notice } from "./dom.js";
import { history } from "./metrics.js";
import { isAdmin } from "./runs.js";
import uPlot from "./vendor/uplot.esm.js";

const POLL_MS = 5000;
const WINDOWS = [["15m", "last 15 min"], ["1h", "last hour"], ["24h", "last day"], ["7d", "last 7 days"]];
const CHARTS = [
  ["chart-runs", "Runs", [["created", "created/s", "#2f55d4"], ["finished", "finished/s", "#146c2e"],
    ["active", "active", "#b66b00"]]],
  ["chart-events", "Events", [["events", "events/s", "#2f55d4"]]],
  ["chart-queue", "Queue and streams", [["queued", "queue depth", "#b42318"], ["streams", "open streams", "#6b3fa0"]]],
  ["chart-limits", "Limits", [["limitWaits", "limit waits/s", "#b66b00"], ["breakers", "breakers open", "#b42318"]]],
];

const seconds = (value) => (value == null ? "—" : value < 10 ? `${value.toFixed(2)} s` : `${value.toFixed(1)} s`);
const percent = (value) => (value == null ? "—" : `${(value * 100).toFixed(value === 1 ? 0 : 1)} %`);
const count = (value) => Number(value).toLocaleString();
export const money = (value) => (value == null ? "—" : value < 0.01 ? `${value.toFixed(4)}` : `${value.toFixed(2)}`);

function chart(id, title, series) {
  const root = h("figure", { class: "card chart", id, dataset: { points: "0" } },
    h("figcaption", {}, h("h2", {}, title)));
  let plot = null;
  let drawn = [];
  const width = () => Math.max(260, root.clientWidth - 32);
  const draw = (points) => {
    if (!root.isConnected) return;
    const data = [points.map((p) => p.t), ...series.map(([key]) => points.map((p) => p[key]))];
    if (!plot) {
      plot = new uPlot({
        width: width(), height: 160, legend: { live: false },
        scales: { x: { time: true } },
        axes: [{}, { size: 48 }],
        series: [{}, ...series.map(([, label, stroke]) => ({ label, stroke, width: 2, points: { show: false } }))],
      }, data, root);
    } else {
      plot.setData(data);
    }
    drawn = points;
    root.dataset.points = String(points.length);
    // the latest value of each series, for a reader (and a test)
    for (const [key] of series) root.dataset[key] = String(points.at(-1)?.[key] ?? 0);
  };
  const resize = () => plot?.setSize({ width: width(), height: 160 });
  return { root, draw, resize, get drawn() { return drawn; } };
}

export function healthView(main, params) {
  let window_ = params.get("window") || "1h";
  const body = h("tbody", { id: "health-body" });
  const problem = h("div", { id: "health-problem" });
  const summary = h("p", { class: "muted", id: "health-summary" }, "loading…");
  const charts = CHARTS.map(([id, title, series]) => chart(id, title, series));
  const onWindow = (event) => {
    window_ = event.target.value;
    window.history.replaceState(null, "", `#/health?window=${encodeURIComponent(window_)}`);
    refresh().catch(show);
  };
  main.replaceChildren(
    h("div", { class: "title-row" }, h("h1", { tabindex: -1 }, "Health")),
    h("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
      h("label", { class: "field inline", for: "health-window" }, h("span", {}, "Finished in the"),
        h("select", { id: "health-window", onchange: onWindow },
          WINDOWS.map(([value, text]) => h("option", { value, selected: value === window_ }, text))))),
    problem,
    h("div", { class: "table-wrap" }, h("table", { id: "health-table" },
      h("caption", { class: "visually-hidden" }, "Each pipeline's runs that finished in the window"),
      h("thead", {}, h("tr", {}, ["Pipeline", "Runs", "Succeeded", "Failed", "Success", "p50", "p95", "Tokens in",
        "Tokens out", "Cost"].map((t, i) => h("th", { scope: "col", class: i ? "num" : undefined }, t)))),
      body)),
    summary,
    h("h2", { class: "section-title" }, "This server over time ",
      h("span", { class: "muted small" }, "(from /metrics, every 2 s, since this page was opened)")),
    h("div", { class: "charts" }, ...charts.map((c) => c.root)),
  );

  function show(error) {
    problem.replaceChildren(notice("error", `The health could not be read: ${error.message}`));
  }

  let generation = 0; // the latest refresh: an older one's answer (another window) is dropped

  async function refresh() {
    const mine = ++generation;
    const everyone = await isAdmin();
    const query = new URLSearchParams({ window: window_ });
    if (everyone) query.set("owner", "*");
    const stats = await api(`/v1/stats/pipelines?${query}`);
    if (mine !== generation) return;
    body.replaceChildren(...stats.pipelines.map((p) => h("tr", { dataset: { pipeline: p.pipeline } },
      h("td", {}, h("a", { href: `#/runs?pipeline=${encodeURIComponent(p.pipeline)}` }, p.pipeline)),
      h("td", { class: "num" }, count(p.runs)),
      h("td", { class: "num" }, count(p.succeeded)),
      h("td", { class: `num${p.failed ? " bad-text" : ""}` }, count(p.failed)),
      h("td", { class: "num", dataset: { rate: p.success_rate ?? "" } }, percent(p.success_rate)),
      h("td", { class: "num" }, seconds(p.p50_s)),
      h("td", { class: "num" }, seconds(p.p95_s)),
      h("td", { class: "num" }, count(p.input_tokens)),
      h("td", { class: "num" }, count(p.output_tokens)),
      h("td", { class: "num" }, money(p.cost)))));
    problem.replaceChildren();
    const whose = everyone ? "every owner's" : "your";
    summary.textContent = stats.pipelines.length
      ? `${whose} runs that finished since ${new Date(stats.since).toLocaleString()}; refreshed ${new Date().toLocaleTimeString()}.`
      : `None of ${whose} runs finished in this window.`;
  }

  const drawAll = (points) => charts.forEach((c) => c.draw(points));
  const unlisten = history.listen(drawAll);
  requestAnimationFrame(() => drawAll(history.points));
  const onResize = () => charts.forEach((c) => c.resize());
  window.addEventListener("resize", onResize);
  const stop = every(POLL_MS, () => refresh().catch(show));
  return () => {
    stop();
    unlisten();
    window.removeEventListener("resize", onResize);
  };
}
