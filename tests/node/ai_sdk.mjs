// The Vercel AI SDK (the real `ai` package, pinned in package.json) talking to a
// runyard server's /v1/ai-sdk endpoints. Driven by tests/ai_sdk/test_ai_sdk_client.py:
//
//   node ai_sdk.mjs ask    BASE_URL OWNER PIPELINE CHAT_ID TEXT
//   node ai_sdk.mjs resume BASE_URL OWNER PIPELINE CHAT_ID TEXT DELTAS
//   node ai_sdk.mjs idle   BASE_URL OWNER PIPELINE CHAT_ID
//
// `ask` sends TEXT with DefaultChatTransport.sendMessages and reads the answer with
// readUIMessageStream; `resume` does the same but aborts after DELTAS text deltas,
// then reconnects (reconnectToStream, as useChat's `resume: true` does) and reads the
// whole answer; `idle` only reconnects. Each prints one JSON object on stdout.
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [command, baseUrl, owner, pipeline, chatId, text, deltas] = process.argv.slice(2);

const transport = new DefaultChatTransport({
  api: `${baseUrl}/v1/ai-sdk/${pipeline}`,
  headers: { "X-Client-Id": owner },
});

const messages = [{ id: "user-1", role: "user", parts: [{ type: "text", text }] }];

function send(abortSignal) {
  return transport.sendMessages({
    chatId,
    messages,
    abortSignal,
    trigger: "submit-message",
    messageId: undefined,
  });
}

// The last snapshot readUIMessageStream gives is the whole assistant message.
async function lastMessage(chunks) {
  const errors = [];
  let message;
  for await (const snapshot of readUIMessageStream({ stream: chunks, onError: (e) => errors.push(e.message) })) {
    message = snapshot;
  }
  return { message, errors };
}

// Reads chunks until `count` text deltas have arrived, then aborts the request.
async function readThenAbort(chunks, controller, count) {
  const seen = [];
  const reader = chunks.getReader();
  let textDeltas = 0;
  while (textDeltas < count) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the stream ended after ${textDeltas} text deltas`);
    seen.push(value);
    if (value.type === "text-delta") textDeltas += 1;
  }
  controller.abort();
  await reader.cancel().catch(() => {});
  return seen;
}

async function main() {
  if (command === "ask") {
    const { message, errors } = await lastMessage(await send(undefined));
    return { message, errors };
  }
  if (command === "resume") {
    const controller = new AbortController();
    const before = await readThenAbort(await send(controller.signal), controller, Number(deltas));
    const again = await transport.reconnectToStream({ chatId });
    if (again === null) return { before, resumed: null };
    const { message, errors } = await lastMessage(again);
    return { before, resumed: message, errors };
  }
  if (command === "idle") {
    return { resumed: await transport.reconnectToStream({ chatId }) };
  }
  throw new Error(`unknown command ${command}`);
}

process.stdout.write(JSON.stringify(await main()) + "\n");
