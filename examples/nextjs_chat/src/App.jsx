// One chat with runyard's `chat` demo pipeline through the AI SDK's useChat.
//
// The chat's id is a runyard session (created by the first message), so the
// pipeline remembers the conversation. `resume: true` asks the server, on every
// page load, for the chat's unfinished answer (GET /v1/ai-sdk/chat/{id}/stream):
// reload mid-answer and the answer carries on, whole, from where the run is.
import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport, generateId } from "ai";
import { useEffect, useState } from "react";

const PIPELINE = "chat";

// Kept in localStorage so that a reload is the same chat, as the same runyard client.
function stored(key, make) {
  let value = localStorage.getItem(key);
  if (value === null) {
    value = make();
    localStorage.setItem(key, value);
  }
  return value;
}

const chatId = stored("runyard.chat_id", generateId);
const clientId = stored("runyard.client_id", () => `web-${generateId()}`);
const saved = JSON.parse(localStorage.getItem("runyard.chat_messages") ?? "[]");

const transport = new DefaultChatTransport({
  api: `/v1/ai-sdk/${PIPELINE}`,
  headers: { "X-Client-Id": clientId }, // runyard's owner (RUNYARD_AUTH=none); a bearer token with jwt
});

export function App() {
  const { messages, sendMessage, status, error } = useChat({ id: chatId, messages: saved, transport, resume: true });
  const [input, setInput] = useState("");

  useEffect(() => {
    // an answer still streaming is not kept: after a reload the resumed stream brings it whole
    const settled = status === "streaming" ? messages.slice(0, -1) : messages;
    localStorage.setItem("runyard.chat_messages", JSON.stringify(settled));
  }, [messages, status]);

  function submit(event) {
    event.preventDefault();
    if (!input.trim()) return;
    sendMessage({ text: input });
    setInput("");
  }

  function newChat() {
    localStorage.removeItem("runyard.chat_id");
    localStorage.removeItem("runyard.chat_messages");
    location.reload();
  }

  return (
    <main>
      <header>
        <h1>runyard chat</h1>
        <button type="button" onClick={newChat}>
          New chat
        </button>
      </header>
      <ol className="messages">
        {messages.map((message) => (
          <li key={message.id} className={message.role} data-role={message.role}>
            {message.parts
              .filter((part) => part.type === "text")
              .map((part) => part.text)
              .join("")}
          </li>
        ))}
      </ol>
      {error && <p className="error">{error.message}</p>}
      <form onSubmit={submit}>
        <input
          aria-label="Message"
          value={input}
          onChange={(event) => setInput(event.target.value)}
          placeholder="Say something"
          autoFocus
        />
        <button type="submit" disabled={status !== "ready" && status !== "error"}>
          Send
        </button>
      </form>
      <p className="status" data-status={status}>
        {status}
      </p>
    </main>
  );
}
