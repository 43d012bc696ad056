// Markdown outputs rendered safely: marked turns the text into HTML, DOMPurify
// removes whatever could run (scripts, handlers, javascript: URLs) before it
// reaches the page. Both are vendored single files (static/vendor/, with their licences).

import DOMPurify from "./vendor/purify.es.js";
import { marked } from "./vendor/marked.esm.js";
import { h } from "./dom.js";

// the string fields of an output that are shown as a document rather than as JSON
const DOCUMENT_FIELDS = ["report", "markdown", "answer", "reply", "text", "content", "summary"];

/** `markdown` as a sanitised element. */
export function renderMarkdown(markdown) {
  const root = h("div", { class: "markdown" });
  root.innerHTML = DOMPurify.sanitize(marked.parse(markdown, { async: false }), { USE_PROFILES: { html: true } });
  for (const link of root.querySelectorAll("a[href]")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
  return root;
}

/** An output split into its document (a string, or its first document field) and the rest (JSON). */
export function splitOutput(output) {
  if (typeof output === "string") return { document: output, rest: undefined, field: null };
  if (output && typeof output === "object" && !Array.isArray(output)) {
    const field = DOCUMENT_FIELDS.find((name) => typeof output[name] === "string" && output[name].includes("\n"));
    if (field) {
      const { [field]: document, ...rest } = output;
      return { document, rest, field };
    }
  }
  return { document: null, rest: output, field: null };
}
