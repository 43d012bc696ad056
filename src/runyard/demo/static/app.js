// The dashboard's entry point: the hash router, the identity dialog, the counters.
//
//   #/runs[?q=&range=&status=&pipeline=&scope=]   the live list of runs, searchable
//   #/runs/<run_id>[?as=<owner>]        one run, live (as its owner, in a playground)
//   #/health[?window=]                  each pipeline's health, and charts of this server over time
//   #/sessions/<session_id>             a session's history and runs
//   #/new[?pipeline=&session=]          the form that starts a run
//   #/store[/<a.b>][?q=]                the owner's long-term store, by namespace
//   #/crons                             the caller's crons (scheduled runs)

import { CLIENT_ID, consoleSettings, identity } from "./api.js";
import { cronsView } from "./crons.js";
import { $, h, notice } from "./dom.js";
import { formView } from "./form.js";
import { healthView } from "./health.js";
import { mountCounters } from "./metrics.js";
import { runView } from "./run.js";
import { runsView } from "./runs.js";
import { sessionView } from "./session.js";
import { storeView } from "./store.js";

const main = $("#main");
let cleanup = null;
let first = true;

function route() {
  const hash = location.hash.replace(/^#/, "") || "/runs";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  cleanup?.();
  cleanup = null;
  let section = "";
  let title = "runyard";
  if (parts[0] === "runs" && parts.length === 1) {
    section = "runs";
    title = "Runs";
    cleanup = runsView(main, params);
  } else if (parts[0] === "runs" && parts.length === 2) {
    section = "runs";
    title = `Run ${parts[1]}`;
    cleanup = runView(main, parts[1], params);
  } else if (parts[0] === "health" && parts.length === 1) {
    section = "health";
    title = "Health";
    cleanup = healthView(main, params);
  } else if (parts[0] === "sessions" && parts.length === 2) {
    title = `Session ${parts[1]}`;
    cleanup = sessionView(main, parts[1]);
  } else if (parts[0] === "store" && parts.length <= 2) {
    section = "store";
    title = "Store";
    cleanup = storeView(main, parts[1] ?? "", params);
  } else if (parts[0] === "new") {
    section = "new";
    title = "New run";
    cleanup = formView(main, params);
  } else if (parts[0] === "crons") {
    section = "crons";
    title = "Crons";
    cleanup = cronsView(main);
  } else {
    main.replaceChildren(h("h1", { tabindex: -1 }, "Not found"),
      notice("warn", "This page does not exist. ", h("a", { href: "#/runs" }, "See the runs.")));
  }
  document.title = `${title} · runyard`;
  for (const link of document.querySelectorAll("nav a[data-section]")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  // move the focus to the new page's heading, as a page load would (not on the first load)
  if (!first) requestAnimationFrame(() => (main.querySelector("h1") ?? main).focus());
  first = false;
}

// -- who the page is ---------------------------------------------------------------
const dialog = $("#identity-dialog");
const who = $("#who");

function showWho() {
  who.textContent = identity.owner;
  who.title = identity.token ? "bearer token (RUNYARD_AUTH=jwt)" : "X-Client-Id (RUNYARD_AUTH=none)";
}

function openIdentity(reason = "") {
  $("#identity-client-id").value = identity.clientId;
  $("#identity-token").value = identity.token;
  $("#identity-reason").textContent = reason;
  $("#identity-problem").textContent = "";
  if (!dialog.open) dialog.showModal();
}

$("#identity-button").addEventListener("click", () => openIdentity());
$("#identity-cancel").addEventListener("click", () => dialog.close());
$("#identity-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const clientId = $("#identity-client-id").value.trim();
  if (!CLIENT_ID.test(clientId)) {
    $("#identity-problem").textContent = "A client id is 1 to 128 characters of A-Z, a-z, 0-9, _, . and -.";
    return;
  }
  identity.save(clientId, $("#identity-token").value.trim());
  dialog.close();
});
window.addEventListener("runyard:identity", () => {
  showWho();
  route();
});
let askedAt = -Infinity;
window.addEventListener("runyard:unauthorized", () => {
  // every poll that gets 401 says so: ask again at most every 30 s
  if (dialog.open || performance.now() - askedAt < 30000) return;
  askedAt = performance.now();
  openIdentity("This server wants a bearer token (RUNYARD_AUTH=jwt): paste one whose sub is your owner id.");
});

showWho();
mountCounters($("#counters"));
window.addEventListener("hashchange", route);
route();
consoleSettings()
  .then((settings) => {
    if (settings.playground && identity.adoptPlaygroundOwner()) window.dispatchEvent(new CustomEvent("runyard:identity"));
  })
  .catch(() => {}); // no settings: the page stays who it was
