// Who the page is (a client id, or a bearer token) and the HTTP API calls made as that identity.

const CLIENT_ID_KEY = "runyard.client_id";
const TOKEN_KEY = "runyard.token";
const GENERATED_KEY = "runyard.client_id.generated"; // the id this page made up, not one a person chose
const PLAYGROUND_OWNER = "anonymous"; // the CLI's owner when it sends no X-Client-Id
export const CLIENT_ID = /^[A-Za-z0-9_.-]{1,128}$/;

function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

let actingAs = null; // a playground's run page acts as the run's owner (RUNYARD_AUTH=none only)

export const identity = {
  /** The owner under RUNYARD_AUTH=none (the X-Client-Id header). */
  get clientId() {
    let id = localStorage.getItem(CLIENT_ID_KEY);
    if (!id || !CLIENT_ID.test(id)) {
      id = newClientId();
      localStorage.setItem(CLIENT_ID_KEY, id);
      localStorage.setItem(GENERATED_KEY, id);
    }
    return id;
  },
  /** The bearer token under RUNYARD_AUTH=jwt ("" when none is set). */
  get token() {
    return localStorage.getItem(TOKEN_KEY) || "";
  },
  save(clientId, token) {
    if (!CLIENT_ID.test(clientId)) throw new Error("a client id is 1-128 characters of A-Z a-z 0-9 _ . -");
    localStorage.setItem(CLIENT_ID_KEY, clientId);
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
    window.dispatchEvent(new CustomEvent("runyard:identity"));
  },
  /** Who the server will take us for: the token's `sub` when a token is set, else the client id. */
  get owner() {
    const token = this.token;
    if (!token) return this.clientId;
    try {
      const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(payload)).sub || "(token without sub)";
    } catch {
      return "(unreadable token)";
    }
  },
  /** In a playground the page is the CLI's user, `anonymous`, unless an id was
   * chosen here: runs started on either side are the other's too. True if it changed. */
  adoptPlaygroundOwner() {
    const stored = localStorage.getItem(CLIENT_ID_KEY);
    const madeUp = !stored || stored === localStorage.getItem(GENERATED_KEY);
    if (this.token || !madeUp || stored === PLAYGROUND_OWNER) return false;
    localStorage.setItem(CLIENT_ID_KEY, PLAYGROUND_OWNER);
    return true;
  },
  /** In a playground, act as `owner` (null: as oneself again); a token always wins. */
  actAs(owner) {
    actingAs = owner && CLIENT_ID.test(owner) ? owner : null;
  },
  get actingAs() {
    return this.token ? null : actingAs;
  },
  headers() {
    const headers = { "X-Client-Id": actingAs ?? this.clientId };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    return headers;
  },
};

/** An HTTP error from the API, with the contract's error code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      signal,
      headers: { ...identity.headers(), ...(body !== undefined ? { "Content-Type": "application/json" } : {}), ...headers },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network_error", `the server cannot be reached (${error.message})`);
  }
  if (response.status === 204) return null;
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    const failure = payload?.error ?? {};
    if (response.status === 401) window.dispatchEvent(new CustomEvent("runyard:unauthorized"));
    throw new ApiError(response.status, failure.code || "http_error",
      failure.message || `${response.status} ${response.statusText}`);
  }
  return payload;
}

export const runPath = (runId, rest = "") => `/v1/runs/${encodeURIComponent(runId)}${rest}`;
export const sessionPath = (sessionId) => `/v1/sessions/${encodeURIComponent(sessionId)}`;

let pipelinesPromise = null;

/** GET /v1/pipelines, once per page load. */
export function pipelines() {
  pipelinesPromise ??= api("/v1/pipelines").then((body) => body.pipelines).catch((error) => {
    pipelinesPromise = null;
    throw error;
  });
  return pipelinesPromise;
}

let consolePromise = null;

/** GET /v1/console (auth mode, playground, trace URL, prices), once per page load. */
export function consoleSettings() {
  consolePromise ??= api("/v1/console").catch((error) => {
    consolePromise = null;
    throw error;
  });
  return consolePromise;
}
