// #/store[/<a.b.c>][?q=]: the signed-in owner's long-term store, one namespace at a time:
// the namespaces just below it, and the items in it and under it (searched by a query when given).

import { api } from "./api.js";
import { h, json, notice, time } from "./dom.js";

const LIMIT = 100;

export const storeHref = (parts, query = "") =>
  `#/store${parts.length ? "/" + parts.map(encodeURIComponent).join(".") : ""}${query ? `?q=${encodeURIComponent(query)}` : ""}`;

function breadcrumb(parts) {
  const crumbs = [h("a", { href: storeHref([]) }, "all")];
  parts.forEach((part, i) => crumbs.push(" / ", i === parts.length - 1
    ? h("strong", { "aria-current": "page" }, part)
    : h("a", { href: storeHref(parts.slice(0, i + 1)) }, part)));
  return h("nav", { class: "crumbs", "aria-label": "Namespace", id: "store-crumbs" }, crumbs);
}

function itemRow(item, onDelete, scored) {
  const remove = h("button", { type: "button", class: "secondary", "aria-label": `Delete item ${item.key}` }, "Delete");
  remove.addEventListener("click", () => onDelete(item));
  return h("tr", { dataset: { key: item.key, namespace: item.namespace.join(".") } },
    h("td", {}, h("a", { href: storeHref(item.namespace), class: "mono" }, item.namespace.join("."))),
    h("td", { class: "mono" }, item.key),
    h("td", {}, h("pre", { class: "mono item-value" }, json(item.value))),
    h("td", {}, time(item.updated_at)),
    scored ? h("td", { class: "mono" }, item.score.toFixed(3)) : null,
    h("td", {}, remove));
}

export function storeView(main, namespace, params) {
  const parts = namespace ? namespace.split(".") : [];
  const query = params.get("q") || "";
  const problem = h("div", { id: "store-problem" });
  const below = h("ul", { id: "store-namespaces", class: "inline-list" });
  const rows = h("tbody", { id: "store-items" });
  const search = h("input", { type: "search", id: "store-query", name: "q", value: query,
    placeholder: "Search by meaning or words", "aria-label": "Search the items" });
  const form = h("form", { class: "row", role: "search" }, search, h("button", { type: "submit" }, "Search"));
  const scored = Boolean(query);
  let stopped = false;

  main.replaceChildren(
    h("div", { class: "title-row" }, h("h1", { tabindex: -1 }, "Store")),
    breadcrumb(parts),
    problem,
    h("section", { class: "card" }, h("h2", {}, "Namespaces below"), below),
    h("section", { class: "card" }, h("h2", {}, scored ? `Items matching “${query}”` : "Items"), form,
      h("div", { class: "table-wrap" }, h("table", { class: "runs" },
        h("thead", {}, h("tr", {}, ["Namespace", "Key", "Value", "Updated", scored ? "Score" : null, ""]
          .filter((t) => t !== null).map((t) => h("th", { scope: "col" }, t)))),
        rows))),
  );

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = storeHref(parts, search.value.trim());
  });

  async function remove(item) {
    if (!confirm(`Delete item ${item.key} of ${item.namespace.join(".")}?`)) return;
    try {
      await api("/v1/store/items", { method: "DELETE", body: { namespace: item.namespace, key: item.key } });
      await load();
    } catch (error) {
      problem.replaceChildren(notice("error", `The item could not be deleted: ${error.message}`));
    }
  }

  async function load() {
    try {
      const [spaces, found] = await Promise.all([
        api("/v1/store/namespaces", { method: "POST", body: { prefix: parts, max_depth: Math.min(parts.length + 1, 8) } }),
        api("/v1/store/items/search", { method: "POST",
          body: { namespace_prefix: parts, limit: LIMIT, ...(query ? { query } : {}) } }),
      ]);
      if (stopped) return;
      const children = spaces.namespaces.filter((ns) => ns.length > parts.length);
      below.replaceChildren(...children.map((ns) =>
        h("li", {}, h("a", { href: storeHref(ns), class: "mono" }, ns[ns.length - 1]))));
      if (!children.length) below.replaceChildren(h("li", { class: "muted" }, "None."));
      rows.replaceChildren(...found.items.map((item) => itemRow(item, remove, scored)));
      if (!found.items.length) {
        rows.replaceChildren(h("tr", {}, h("td", { colspan: scored ? 6 : 5, class: "muted" },
          scored ? "No item matches." : "No items here for this identity.")));
      }
    } catch (error) {
      if (!stopped) problem.replaceChildren(notice("error", `The store could not be read: ${error.message}`));
    }
  }

  load();
  return () => {
    stopped = true;
  };
}
