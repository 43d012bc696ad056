// A chat with runyard's `chat` pipeline through useStream, unchanged: the
// assistant is the pipeline, the thread a runyard session (its memory keeps
// the conversation), and the reply streams as messages-tuple parts.
import { useStream } from "@langchain/langgraph-sdk/react";
import { useState } from "react";

const apiUrl = `${window.location.origin}/langgraph`;
const owner = new URLSearchParams(window.location.search).get("owner") ?? "langgraph-ui";

export function App() {
  const [threadId, setThreadId] = useState(null);
  const [turns, setTurns] = useState([]); // [{ you, reply }]: the run's values carry the reply
  const stream = useStream({
    apiUrl,
    assistantId: "chat",
    defaultHeaders: { "X-Client-Id": owner }, // or Authorization: Bearer <token> under RUNYARD_AUTH=jwt
    threadId,
    onThreadId: setThreadId,
    onFinish: (state) => {
      const reply = state?.values?.reply;
      if (reply) setTurns((done) => done.map((turn, i) => (i === done.length - 1 ? { ...turn, reply } : turn)));
    },
  });
  const streaming = stream.messages.filter((m) => m.type === "ai").map((m) => contentOf(m)).join("");

  function send(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const message = new FormData(form).get("message").trim();
    if (!message) return;
    setTurns((done) => [...done, { you: message, reply: null }]);
    stream.submit({ message }, { streamMode: ["values", "messages-tuple"] });
    form.reset();
  }

  return (
    <main style={{ fontFamily: "system-ui", maxWidth: 640, margin: "2rem auto" }}>
      <h1>runyard · chat over useStream</h1>
      <p>
        thread <code data-testid="thread">{threadId ?? "(new)"}</code>
      </p>
      <ol data-testid="turns">
        {turns.map((turn, i) => (
          <li key={i}>
            <p>
              <b>you:</b> {turn.you}
            </p>
            <p data-testid="reply">
              <b>chat:</b> {turn.reply ?? (i === turns.length - 1 ? streaming : "")}
            </p>
          </li>
        ))}
      </ol>
      {stream.error ? <p role="alert">{String(stream.error.message ?? stream.error)}</p> : null}
      <form onSubmit={send}>
        <input name="message" placeholder="Say something" autoComplete="off" disabled={stream.isLoading} />
        <button type="submit" disabled={stream.isLoading}>
          Send
        </button>
      </form>
    </main>
  );
}

function contentOf(message) {
  if (typeof message.content === "string") return message.content;
  return (message.content ?? []).map((part) => part.text ?? "").join("");
}
