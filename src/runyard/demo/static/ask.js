// A waiting run on its page: the question it asked (ctx.ask) with a form to answer
// it, or the time a sleeping run (ctx.sleep) wakes at.
//
// A JSON Schema that is an object of strings, numbers, integers, booleans and
// enums gets a field per property; any other schema gets a JSON editor. The
// answer goes to POST /v1/runs/{id}/input with the question's ask_id, so it
// never lands on a question it was not meant for; a refusal (422 invalid_input,
// 409 ask_mismatch or run_not_waiting) is shown with the server's message.

import { api, runPath } from "./api.js";
import { h, json, notice, time } from "./dom.js";

/** `#/$defs/Name` within `root`, or `spec` itself (pydantic puts enums there). */
function resolve(spec, root) {
  const ref = spec?.$ref;
  if (typeof ref !== "string" || !ref.startsWith("#/$defs/")) return spec;
  return root?.$defs?.[ref.slice("#/$defs/".length)] ?? spec;
}

/** How one property is answered with one field: {kind, nullable, choices}, or null. */
function fieldKind(spec, root) {
  const options = (spec.anyOf ?? [spec]).map((option) => resolve(option, root));
  const nullable = options.some((option) => option?.type === "null");
  const rest = options.filter((option) => option?.type !== "null");
  if (rest.length !== 1) return null;
  const [only] = rest;
  if (Array.isArray(only.enum) && only.enum.length) return { kind: "enum", nullable, choices: only.enum };
  if (["string", "number", "integer", "boolean"].includes(only.type)) return { kind: only.type, nullable };
  return null;
}

/** The fields of a schema answered by a form, or null when it needs the JSON editor. */
function formFields(schema) {
  if (schema?.type !== "object" || !schema.properties || !Object.keys(schema.properties).length) return null;
  const required = new Set(schema.required ?? []);
  const fields = [];
  for (const [name, raw] of Object.entries(schema.properties)) {
    const spec = resolve(raw, schema);
    const kind = fieldKind(spec, schema);
    if (!kind) return null;
    fields.push({ name, spec, required: required.has(name), ...kind });
  }
  return fields;
}

/** Whether a plain text may answer: no schema, or one a string meets. */
function takesText(schema) {
  if (!schema || typeof schema !== "object" || !Object.keys(schema).length) return true;
  if (schema.enum) return schema.enum.some((choice) => typeof choice === "string");
  if (schema.anyOf) return schema.anyOf.some(takesText);
  return schema.type === "string" || (Array.isArray(schema.type) && schema.type.includes("string"));
}

/** The field for one property, holding the schema's default when it has one. */
function fieldInput(field) {
  const id = `answer-${field.name}`;
  const initial = field.spec.default;
  if (field.kind === "boolean") return h("input", { id, name: field.name, type: "checkbox", checked: initial === true });
  if (field.kind === "enum") {
    const none = field.nullable || !field.required ? [h("option", { value: "" }, "—")] : [];
    return h("select", { id, name: field.name }, ...none, field.choices.map((choice, i) =>
      h("option", { value: String(i), selected: "default" in field.spec && choice === initial }, String(choice))));
  }
  const value = initial === undefined || initial === null ? undefined : String(initial);
  if (field.kind === "string") return h("input", { id, name: field.name, type: "text", autocomplete: "off", value });
  return h("input", { id, name: field.name, type: "number", step: field.kind === "integer" ? "1" : "any", value });
}

/** The value a field holds; undefined leaves the property out (the server says if it is required). */
function fieldValue(field, input) {
  if (field.kind === "boolean") return input.checked;
  if (input.value === "") return field.nullable ? null : field.kind === "string" && field.required ? "" : undefined;
  if (field.kind === "enum") return field.choices[Number(input.value)];
  if (field.kind === "string") return input.value;
  return Number(input.value);
}

/** The form for one question: fields from the schema, or a JSON editor. */
function answerForm(asked, send) {
  const fields = formFields(asked.schema);
  const controls = (fields ?? []).map((field) => [field, fieldInput(field)]);
  const editor = fields ? null : h("textarea", { id: "answer-json", name: "value", rows: 4, class: "mono",
    spellcheck: false, "aria-describedby": "answer-json-help" });
  const problem = h("div", { id: "answer-problem", "aria-live": "assertive" });
  const submit = h("button", { type: "submit", id: "answer-submit" }, "Send answer");
  const text = takesText(asked.schema);

  function read() {
    if (fields) {
      const value = {};
      for (const [field, input] of controls) {
        const v = fieldValue(field, input);
        if (v !== undefined) value[field.name] = v;
      }
      return value;
    }
    try {
      return JSON.parse(editor.value);
    } catch (error) {
      if (text) return editor.value; // a question any text may answer
      throw new Error(`the answer is not valid JSON (${error.message})`);
    }
  }

  const form = h("form", { id: "answer-form", class: "stack", novalidate: true, onsubmit: async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    let value;
    try {
      value = read();
    } catch (error) {
      problem.replaceChildren(notice("error", error.message));
      return;
    }
    submit.disabled = true;
    try {
      await send(value);
    } catch (error) {
      problem.replaceChildren(notice("error", `Not answered: ${error.message}`,
        error.code ? h("code", {}, ` (${error.code})`) : null));
      submit.disabled = false;
    }
  } },
  fields ? h("div", { class: "fields", id: "answer-fields" }, controls.map(([field, input]) =>
    h("label", { class: `field ${field.kind === "boolean" ? "checkbox" : ""}`, for: input.id },
      h("span", {}, field.spec.title || field.name, field.required ? h("abbr", { title: "required" }, " *") : null),
      input, field.spec.description ? h("small", { class: "muted" }, field.spec.description) : null)))
    : h("label", { class: "field", for: "answer-json" }, h("span", {}, "Answer (JSON)"), editor,
      h("small", { id: "answer-json-help", class: "muted" }, text
        ? "JSON, or plain text (sent as a string)." : "JSON that fits the schema below.")),
  asked.schema && !fields ? h("details", {}, h("summary", {}, "Schema"),
    h("pre", { class: "mono", id: "answer-schema" }, json(asked.schema))) : null,
  problem,
  h("div", { class: "row" }, submit));
  return form;
}

/**
 * The waiting panel of run `runId`: `ask(requested)` shows a question ({ask_id, request,
 * schema}, as in `input.requested` and the snapshot's `waiting_for`), `sleep(until)` a
 * sleep, `clear()` hides it. `onAnswered(snapshot)` follows an accepted answer.
 */
export function waitingPanel(runId, onAnswered) {
  const root = h("section", { id: "waiting", class: "card waiting", hidden: true, "aria-live": "polite" });
  let shown = null; // the ask_id or until on display

  async function send(askId, value) {
    const snapshot = await api(runPath(runId, "/input"), { method: "POST", body: { value, ask_id: askId } });
    if (shown !== askId) return; // the stream got there first: what it drew is newer than this answer
    clear();
    root.hidden = false;
    root.append(notice("info", "Answer sent; the run goes on."));
    onAnswered(snapshot);
  }

  function ask(requested) {
    if (!requested?.ask_id || shown === requested.ask_id) return;
    shown = requested.ask_id;
    const request = requested.request;
    root.dataset.askId = requested.ask_id;
    root.dataset.kind = "ask";
    root.replaceChildren(
      h("h2", {}, "Waiting for your answer"),
      h("div", { id: "waiting-request", class: "request" }, typeof request === "string" ? request
        : h("pre", { class: "mono" }, json(request))),
      answerForm(requested, (value) => send(requested.ask_id, value)));
    root.hidden = false;
  }

  function sleep(until) {
    if (shown === until) return;
    shown = until;
    root.dataset.kind = "sleep";
    delete root.dataset.askId;
    root.replaceChildren(h("p", { id: "sleeping" }, "sleeping until ", time(until)));
    root.hidden = false;
  }

  function clear() {
    shown = null;
    delete root.dataset.askId;
    delete root.dataset.kind;
    root.replaceChildren();
    root.hidden = true;
  }

  /** The panel the snapshot calls for (`waiting_for` of a waiting run). */
  function fromSnapshot(run) {
    const waiting = run.status === "waiting" ? run.waiting_for : null;
    if (waiting?.ask_id) ask(waiting);
    else if (waiting?.until) sleep(waiting.until);
  }

  return { root, ask, sleep, clear, fromSnapshot };
}
