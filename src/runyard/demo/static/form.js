// #/new: start any pipeline with its input.
//
// Simple schemas (flat objects of strings, numbers, booleans, nullable ones)
// get a field per property; the JSON editor below them always shows the
// exact input that will be sent, and editing either updates the other.

import { api, pipelines } from "./api.js";
import { h, json, notice } from "./dom.js";

// What the bundled pipelines start with: enough to show something happen.
const EXAMPLES = {
  ticker: { marker: "hello", count: 20, interval_ms: 200 },
  research: { topic: "solid-state batteries" },
  chat: { message: "Hi, my name is Ada." },
};
// Pipelines whose next run continues the last one's session unless told otherwise.
const CONVERSATIONS = new Set(["chat"]);
const SESSIONS_KEY = "runyard.sessions"; // pipeline -> the last session it ran in
const LONG_TEXT = 300; // strings allowed to be longer than this get a textarea

const lastSessions = () => JSON.parse(localStorage.getItem(SESSIONS_KEY) || "{}");

/** The type of a property this form can edit with one field, or null. */
function simpleType(spec) {
  const types = spec.anyOf ? spec.anyOf.map((s) => s.type) : [spec.type];
  const nullable = types.includes("null");
  const rest = types.filter((t) => t !== "null");
  if (rest.length !== 1 || !["string", "integer", "number", "boolean"].includes(rest[0])) return null;
  const base = spec.anyOf ? spec.anyOf.find((s) => s.type === rest[0]) : spec;
  return { type: rest[0], nullable, min: base.minimum, max: base.maximum, maxLength: base.maxLength, enum: base.enum };
}

function initialInput(pipeline) {
  const schema = pipeline.input_schema || {};
  const input = {};
  for (const [name, spec] of Object.entries(schema.properties || {})) {
    if ("default" in spec) input[name] = spec.default;
    else if (spec.examples?.length) input[name] = spec.examples[0];
    else if ((schema.required || []).includes(name) && simpleType(spec)?.type === "string") input[name] = "";
  }
  return { ...input, ...(schema.examples?.[0] ?? {}), ...(EXAMPLES[pipeline.name] ?? {}) };
}

export function formView(main, params) {
  const form = h("form", { id: "new-run", class: "card stack", novalidate: true });
  const problem = h("div", { id: "form-problem", "aria-live": "assertive" });
  main.replaceChildren(h("div", { class: "title-row" }, h("h1", { tabindex: -1 }, "Start a run")), problem, form);
  let stopped = false;

  pipelines().then((list) => {
    if (stopped) return;
    if (!list.length) {
      problem.replaceChildren(notice("warn", "This server serves no pipeline."));
      return;
    }
    build(list);
  }).catch((error) => problem.replaceChildren(notice("error", `The pipelines could not be read: ${error.message}`)));

  function build(list) {
    const byName = Object.fromEntries(list.map((p) => [p.name, p]));
    const chosen = byName[params.get("pipeline")] ? params.get("pipeline") : list[0].name;
    const pipelineSelect = h("select", { id: "pipeline", name: "pipeline", required: true },
      list.map((p) => h("option", { value: p.name, selected: p.name === chosen }, p.name)));
    const description = h("p", { class: "muted description", id: "pipeline-description" });
    const fields = h("div", { class: "fields", id: "input-fields" });
    const editor = h("textarea", { id: "input-json", name: "input", rows: 8, spellcheck: false,
      "aria-describedby": "input-json-help", class: "mono" });
    const editorProblem = h("p", { class: "field-problem", id: "input-json-problem", "aria-live": "polite" });
    const session = h("input", { id: "session-id", name: "session_id", type: "text", autocomplete: "off",
      placeholder: "empty: a new session", pattern: "[A-Za-z0-9_.\\-]{1,128}", class: "mono" });
    const timeout = h("input", { id: "timeout-s", name: "timeout_s", type: "number", min: "0.001", step: "any",
      placeholder: "the pipeline's default" });
    const multitask = h("select", { id: "multitask", name: "multitask" },
      ["enqueue", "reject", "interrupt"].map((m) => h("option", { value: m }, m)));
    const submit = h("button", { type: "submit", id: "start-run" }, "Start run");
    const controls = new Map(); // property -> [input, type]

    const readEditor = () => {
      const value = JSON.parse(editor.value);
      if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("it must be an object");
      return value;
    };

    function fieldValue(input, type) {
      if (type.type === "boolean") return input.checked;
      if (input.value === "") return type.nullable ? null : type.type === "string" ? "" : undefined;
      if (type.type === "integer" || type.type === "number") return Number(input.value);
      return input.value;
    }

    function fromFields() {
      let value;
      try {
        value = readEditor();
      } catch {
        value = {};
      }
      for (const [name, [input, type]] of controls) {
        const v = fieldValue(input, type);
        if (v === undefined) delete value[name];
        else value[name] = v;
      }
      editor.value = json(value);
      editorProblem.textContent = "";
    }

    function toFields() {
      let value;
      try {
        value = readEditor();
      } catch (error) {
        editorProblem.textContent = `Not valid JSON input: ${error.message}`;
        return;
      }
      editorProblem.textContent = "";
      for (const [name, [input, type]] of controls) {
        const v = value[name];
        if (type.type === "boolean") input.checked = Boolean(v);
        else input.value = v === null || v === undefined ? "" : String(v);
      }
    }

    function choose() {
      const pipeline = byName[pipelineSelect.value];
      description.textContent = pipeline.description || "";
      const schema = pipeline.input_schema || {};
      const required = new Set(schema.required || []);
      controls.clear();
      fields.replaceChildren();
      for (const [name, spec] of Object.entries(schema.properties || {})) {
        const type = simpleType(spec);
        if (!type) continue;
        const id = `field-${name}`;
        let input;
        if (type.type === "boolean") input = h("input", { id, name, type: "checkbox" });
        else if (type.enum) input = h("select", { id, name }, type.enum.map((v) => h("option", { value: v }, v)));
        else if (type.type === "string" && (type.maxLength ?? Infinity) > LONG_TEXT) {
          input = h("textarea", { id, name, rows: 2, maxlength: type.maxLength });
        } else if (type.type === "string") input = h("input", { id, name, type: "text", maxlength: type.maxLength });
        else {
          input = h("input", { id, name, type: "number", step: type.type === "integer" ? "1" : "any",
            min: type.min, max: type.max, placeholder: type.nullable ? "none" : undefined });
        }
        input.required = required.has(name);
        input.addEventListener("input", fromFields);
        input.addEventListener("change", fromFields);
        controls.set(name, [input, type]);
        const help = spec.description ? h("small", { class: "muted" }, spec.description) : null;
        fields.append(h("label", { class: `field ${type.type === "boolean" ? "checkbox" : ""}`, for: id },
          h("span", {}, spec.title || name, required.has(name) ? h("abbr", { title: "required" }, " *") : null),
          input, help));
      }
      fields.hidden = controls.size === 0;
      editor.value = json(initialInput(pipeline));
      toFields();
      const last = CONVERSATIONS.has(pipeline.name) ? lastSessions()[pipeline.name] : "";
      session.value = params.get("session") || last || "";
    }

    pipelineSelect.addEventListener("change", () => {
      params.delete("session");
      choose();
    });
    editor.addEventListener("input", toFields);

    form.replaceChildren(
      h("label", { class: "field", for: "pipeline" }, h("span", {}, "Pipeline"), pipelineSelect),
      description,
      fields,
      h("label", { class: "field", for: "input-json" }, h("span", {}, "Input (JSON)"), editor),
      h("small", { id: "input-json-help", class: "muted" }, "The fields above and this JSON are the same input."),
      editorProblem,
      h("div", { class: "field" },
        h("label", { for: "session-id" }, "Session"),
        h("div", { class: "row" }, session,
          h("button", { type: "button", class: "secondary", id: "new-session", onclick: () => {
            session.value = "";
            session.focus();
          } }, "New session")),
        h("small", { class: "muted" }, "Runs of one session share its memory (the chat pipeline remembers)."),
      ),
      h("details", { class: "advanced" }, h("summary", {}, "Advanced"),
        h("label", { class: "field", for: "timeout-s" }, h("span", {}, "Timeout (s)"), timeout),
        h("label", { class: "field", for: "multitask" },
          h("span", {}, "If the session is busy"), multitask)),
      h("div", { class: "row" }, submit),
    );
    choose();

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      let input;
      try {
        input = readEditor();
      } catch (error) {
        problem.replaceChildren(notice("error", `The input is not a JSON object: ${error.message}`));
        editor.focus();
        return;
      }
      const body = { pipeline: pipelineSelect.value, input };
      if (session.value.trim()) body.session_id = session.value.trim();
      if (timeout.value) body.timeout_s = Number(timeout.value);
      if (multitask.value !== "enqueue") body.multitask = multitask.value;
      submit.disabled = true;
      submit.textContent = "Starting…";
      try {
        const run = await api("/v1/runs", { method: "POST", body });
        localStorage.setItem(SESSIONS_KEY, JSON.stringify({ ...lastSessions(), [run.pipeline]: run.session_id }));
        location.hash = `#/runs/${encodeURIComponent(run.run_id)}`;
      } catch (error) {
        problem.replaceChildren(notice("error", `The run was not started: ${error.message}`,
          error.code ? h("code", {}, ` (${error.code})`) : null));
        submit.disabled = false;
        submit.textContent = "Start run";
      }
    });
  }

  return () => {
    stopped = true;
  };
}
