// The real @langchain/langgraph-sdk against runyard's /langgraph (run by
// tests/langgraph_api/test_js_sdk.py): a thread, a run streamed in several
// modes, a dropped stream joined again by lastEventId, an interrupt resumed.
// Usage: node langgraph_sdk.mjs <base url> <client id>; exits 1 on the first failed check.
import assert from "node:assert/strict";
import { Client } from "@langchain/langgraph-sdk";

const [baseUrl, clientId] = process.argv.slice(2);
const client = new Client({ apiUrl: `${baseUrl}/langgraph`, defaultHeaders: { "X-Client-Id": clientId } });

async function collect(stream) {
  const parts = [];
  for await (const part of stream) parts.push(part);
  return parts;
}
const of = (parts, event) => parts.filter((p) => p.event === event).map((p) => p.data);

// the assistants are the pipelines
const assistants = await client.assistants.search();
assert.ok(assistants.some((a) => a.assistant_id === "parrot" && a.graph_id === "parrot"));

// a thread, and a run streamed in several modes: metadata first, end last
const thread = await client.threads.create({ metadata: { from: "node" } });
assert.equal((await client.threads.get(thread.thread_id)).metadata.from, "node");
const parts = await collect(
  client.runs.stream(thread.thread_id, "parrot", {
    input: { message: "hello from node" },
    streamMode: ["values", "updates", "messages-tuple", "custom"],
  }),
);
assert.equal(parts[0].event, "metadata");
assert.equal(parts.at(-1).event, "end");
assert.deepEqual(of(parts, "values"), [{ reply: "hello from node" }]);
assert.deepEqual(of(parts, "messages").map(([chunk]) => chunk.content).join(""), "hello from node ");
assert.deepEqual(of(parts, "custom"), [{ type: "note", words: 3 }]);
assert.ok(of(parts, "updates").some((u) => u.speak?.status === "started"));

// a stream dropped mid-run, joined again from the last id it saw: no gap, no repeat
const first = [];
for await (const part of client.runs.stream(thread.thread_id, "ticker", {
  input: { count: 20, interval_ms: 5 },
  streamMode: ["custom"],
  streamResumable: true,
})) {
  first.push(part);
  if (first.length === 8) break;
}
const runId = first[0].data.run_id;
const rest = await collect(
  client.runs.joinStream(thread.thread_id, runId, { lastEventId: first.at(-1).id, streamMode: ["custom"] }),
);
const ticks = of([...first, ...rest], "custom").map((t) => t.i);
assert.deepEqual(ticks, [...Array(20).keys()]);
assert.equal(rest.at(-1).event, "end");

// an interrupt (ctx.ask) shows as __interrupt__, and command.resume answers it
const asked = await collect(
  client.runs.stream(thread.thread_id, "approval", { input: { message: "deploy" }, streamMode: ["values", "updates"] }),
);
const [interrupt] = of(asked, "updates").at(-1).__interrupt__;
assert.deepEqual(interrupt.value, { question: "approve deploy?" });
const state = await client.threads.getState(thread.thread_id);
assert.deepEqual(state.interrupts, [interrupt]);
const resumed = await collect(
  client.runs.stream(thread.thread_id, "approval", { command: { resume: "yes" }, streamMode: ["values"] }),
);
assert.deepEqual(of(resumed, "values"), [{ message: "deploy", approved: "yes" }]);
assert.equal((await client.threads.get(thread.thread_id)).status, "idle");

// a run waited for gives its values; the thread's history (what useStream reads) its latest state
assert.deepEqual(await client.runs.wait(thread.thread_id, "parrot", { input: { message: "bye" } }), { reply: "bye" });
const [latest] = await client.threads.getHistory(thread.thread_id, { limit: 10 });
assert.deepEqual(latest.values, { reply: "bye" });

console.log(JSON.stringify({ ok: true, thread: thread.thread_id, parts: parts.length, ticks: ticks.length }));
