// Talking to the server: every call goes through here, so that a 401 asks for an API key once
// (kept in sessionStorage only: gone when the tab closes) and every later call carries it as
// `Authorization: Bearer <key>` (WebSockets: `?api_key=<key>`).
import { saveBlob } from "./dom.js";
import { t } from "./i18n.js";

const KEY = "funasr-serve.api-key";

/** The app's root: the console lives at <root>/ui/, the API at <root>/v1/... */
export const root = new URL("../", window.location.href);

export function url(path) {
  return new URL(path.replace(/^\//, ""), root);
}

export function wsUrl(path) {
  const u = url(path);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  const key = apiKey();
  if (key) u.searchParams.set("api_key", key);
  return u;
}

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** An error the server shaped as {"error": {"type", "message"}}, or a network failure. */
export class ApiError extends Error {
  constructor(status, message, type = "") {
    super(message);
    this.status = status;
    this.type = type;
  }
}

export async function errorOf(res) {
  let message = `${res.status} ${res.statusText}`;
  let type = "";
  try {
    const body = await res.json();
    if (body?.error?.message) ({ message, type } = body.error);
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, message, type);
}

let asking = null;

/** Ask for a key in the dialog (one dialog for every caller waiting); resolves true when given. */
export function askKey(rejected) {
  if (asking) return asking;
  const dialog = document.getElementById("key-dialog");
  const form = dialog.querySelector("form");
  const input = dialog.querySelector("input");
  const note = dialog.querySelector("[data-role=note]");
  note.dataset.i18n = rejected ? "key.rejected" : "key.needed";
  note.textContent = t(note.dataset.i18n);
  input.value = "";
  asking = new Promise((resolve) => {
    const done = (ok) => {
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("close", onClose);
      asking = null;
      resolve(ok);
    };
    const onSubmit = (event) => {
      const key = input.value.trim();
      if (event.submitter?.value === "cancel" || !key) return; // the dialog closes: onClose
      sessionStorage.setItem(KEY, key);
      done(true);
    };
    const onClose = () => done(false); // cancelled, Escape, or an empty key
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    input.focus();
  });
  return asking;
}

/** fetch() with the key; on 401, ask for one and try again. Throws ApiError on other errors
 * unless `raw` (then the Response is returned whatever its status). */
export async function api(path, { raw = false, ...init } = {}) {
  for (;;) {
    let res;
    try {
      res = await fetch(url(path), { ...init, headers: { ...init.headers, ...authHeaders() } });
    } catch (err) {
      throw new ApiError(0, t("error.network", { detail: err.message }));
    }
    if (res.status === 401) {
      const hadKey = Boolean(apiKey());
      forgetKey(); // a key the server refused is no use to the next call either
      if (await askKey(hadKey)) continue;
      throw await errorOf(res);
    }
    if (!raw && !res.ok) throw await errorOf(res);
    return res;
  }
}

export async function getJson(path, init) {
  return (await api(path, init)).json();
}

/** An upload with progress (fetch reports none): XMLHttpRequest, with the same 401 handling.
 * Resolves {status, body} (body parsed as JSON when it is). */
export function send(method, path, body, { onProgress, headers = {} } = {}) {
  const once = () =>
    new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(method, url(path));
      for (const [k, v] of Object.entries({ ...headers, ...authHeaders() })) xhr.setRequestHeader(k, v);
      if (onProgress) {
        xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded, e.lengthComputable ? e.total : 0));
        xhr.upload.addEventListener("load", () => onProgress(1, 1, true));
      }
      xhr.addEventListener("load", () => {
        let parsed = xhr.responseText;
        try {
          parsed = JSON.parse(xhr.responseText);
        } catch {
          // text
        }
        resolve({ status: xhr.status, body: parsed });
      });
      xhr.addEventListener("error", () => reject(new ApiError(0, t("error.network", { detail: method }))));
      xhr.addEventListener("abort", () => reject(new ApiError(0, t("error.aborted"))));
      xhr.send(body);
    });
  return (async () => {
    for (;;) {
      const res = await once();
      if (res.status === 401) {
        const hadKey = Boolean(apiKey());
        forgetKey();
        if (await askKey(hadKey)) continue;
      }
      if (res.status >= 400) {
        const err = res.body?.error;
        throw new ApiError(res.status, err?.message || `${res.status}`, err?.type || "");
      }
      return res;
    }
  })();
}

/** Download what a (keyed) endpoint returns: links cannot carry the Authorization header. */
export async function download(path, filename) {
  const res = await api(path);
  saveBlob(await res.blob(), filename);
}

/** Server-sent events read through fetch (EventSource cannot send the Authorization header).
 * Calls onEvent(name, data) per event; resolves when the stream ends or `signal` aborts. */
export async function events(path, onEvent, signal) {
  const res = await api(path, { signal, headers: { Accept: "text/event-stream" } });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      let name = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}
