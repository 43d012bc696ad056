// #/sessions/<id>: a session's status, its memory (the conversation) and its runs.

import { ApiError, api, sessionPath } from "./api.js";
import { badge, duration, every, h, json, notice, runLink, shortId, time } from "./dom.js";
import { sessionLive } from "./session_live.js";

const POLL_MS = 2000;

function content(value) {
  return typeof value === "string" ? value : h("pre", { class: "mono" }, json(value));
}

export function sessionView(main, sessionId) {
  const title = h("h1", { tabindex: -1 }, "Session ", h("code", { title: sessionId }, sessionId));
  const statusSlot = h("span", { id: "session-status" });
  const problem = h("div", { id: "session-problem" });
  const meta = h("dl", { class: "meta", id: "session-meta" });
  const history = h("ol", { id: "history", class: "transcript", "aria-live": "polite" });
  const historyNote = h("p", { class: "muted", id: "history-note" });
  const runs = h("tbody", { id: "session-runs" });
  const proceed = h("a", { class: "button", id: "continue-session",
    href: `#/new?session=${encodeURIComponent(sessionId)}` }, "Continue this session");
  const remove = h("button", { type: "button", class: "danger", id: "delete-session" }, "Delete session");
  let shownHistory = "";
  let stop = null;

  main.replaceChildren(
    h("div", { class: "title-row" }, title, statusSlot, proceed, remove),
    problem,
    meta,
    h("section", { class: "card" }, h("h2", {}, "History"), historyNote, history),
    h("section", { class: "card" }, h("h2", {}, "Runs"),
      h("div", { class: "table-wrap" }, h("table", { class: "runs" },
        h("thead", {}, h("tr", {}, ["Run", "Pipeline", "Status", "Created", "Duration"].map((t) =>
          h("th", { scope: "col" }, t)))),
        runs))),
  );
  const live = sessionLive(sessionId, () => refresh());
  main.append(live.card);

  remove.addEventListener("click", async () => {
    if (!confirm(`Delete session ${shortId(sessionId)}? Its unfinished runs are cancelled and its memory forgotten.`)) {
      return;
    }
    try {
      await api(sessionPath(sessionId), { method: "DELETE" });
      problem.replaceChildren(notice("info", "The session was deleted; its runs stay readable."));
    } catch (error) {
      problem.replaceChildren(notice("error", `The session could not be deleted: ${error.message}`));
    }
  });

  async function refresh() {
    let session;
    try {
      session = await api(sessionPath(sessionId));
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        problem.replaceChildren(notice("warn",
          "No such session for this identity: it never existed, belongs to another owner, was deleted or expired."));
        statusSlot.replaceChildren();
        proceed.hidden = remove.hidden = true;
      } else {
        problem.replaceChildren(notice("error", `The session could not be read: ${error.message}`));
      }
      session = null;
    }
    if (session) {
      if (problem.querySelector(".notice-warn, .notice-error")) problem.replaceChildren();
      proceed.hidden = remove.hidden = session.status === "expired";
      statusSlot.replaceChildren(badge(session.status));
      const pairs = [
        ["Created", time(session.created_at)],
        ["Last activity", time(session.last_activity)],
        ["Idle for", duration(session.last_activity)],
        ["Messages", String(session.history.length)],
      ];
      if (Object.keys(session.metadata ?? {}).length) {
        pairs.push(["Metadata", h("code", {}, JSON.stringify(session.metadata))]);
      }
      meta.replaceChildren(...pairs.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
      const fingerprint = JSON.stringify(session.history);
      if (fingerprint !== shownHistory) {
        shownHistory = fingerprint;
        history.replaceChildren(...session.history.map((message) => {
          const role = String(message.role ?? "note");
          return h("li", { class: `message message-${role}`, dataset: { role } },
            h("div", { class: "message-head" }, h("strong", {}, role), " ", time(message.ts)),
            h("div", { class: "message-body" }, content(message.content)));
        }));
      }
      historyNote.textContent = session.history.length ? "" : "Nothing in this session's memory yet.";
    }
    const answer = await api(`/v1/runs?session_id=${encodeURIComponent(sessionId)}&limit=100`);
    if (answer.runs.length) {
      proceed.href = `#/new?session=${encodeURIComponent(sessionId)}&pipeline=${encodeURIComponent(answer.runs[0].pipeline)}`;
    }
    runs.replaceChildren(...answer.runs.map((run) => h("tr", { dataset: { runId: run.run_id, status: run.status } },
      h("td", {}, runLink(run.run_id)), h("td", {}, run.pipeline), h("td", {}, badge(run.status)),
      h("td", {}, time(run.created_at)),
      h("td", {}, run.started_at ? duration(run.started_at, run.finished_at) : "—"))));
    if (!answer.runs.length) runs.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No runs.")));
  }

  stop = every(POLL_MS, refresh);
  return () => {
    stop?.();
    live.stop();
  };
}
