// Status: GET /v1/status rendered as it comes (objects as lists of terms, lists of objects as
// tables), so fields added or missing later need no change here. Refreshed every 5 s while shown.
import { api } from "./api.js";
import { $, h, say } from "./dom.js";
import { t, tr } from "./i18n.js";

let timer = null;

export function init() {
  $("#s-refresh").addEventListener("click", refresh);
}

export function shown() {
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, 5000);
}

export function hidden() {
  clearInterval(timer);
  timer = null;
}

const label = (key) => String(key).replaceAll("_", " ");

/** Any JSON value as DOM (text only). */
export function render(value, depth = 0) {
  if (value === null || value === undefined) return h("span", { class: "none" }, "–");
  if (typeof value !== "object") {
    const text = typeof value === "number" && !Number.isInteger(value) ? value.toFixed(3) : String(value);
    return h("span", { class: `value ${typeof value}` }, text);
  }
  if (Array.isArray(value)) {
    if (!value.length) return h("span", { class: "none" }, "–");
    if (value.every((v) => v && typeof v === "object" && !Array.isArray(v))) {
      const keys = [...new Set(value.flatMap((v) => Object.keys(v)))];
      return h(
        "table",
        {},
        h("thead", {}, h("tr", {}, keys.map((k) => h("th", { scope: "col" }, label(k))))),
        h("tbody", {}, value.map((row) => h("tr", {}, keys.map((k) => h("td", {}, render(row[k], depth + 1)))))),
      );
    }
    return h("span", { class: "value" }, value.map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v))).join(", "));
  }
  const entries = Object.entries(value);
  if (!entries.length) return h("span", { class: "none" }, "–");
  return h(
    "dl",
    { class: depth ? "nested" : "facts" },
    entries.flatMap(([k, v]) => [h("dt", {}, label(k)), h("dd", { dataset: { key: k } }, render(v, depth + 1))]),
  );
}

async function refresh() {
  const body = $("#s-body");
  const message = $("#s-message");
  try {
    const res = await api("v1/status", { raw: true });
    if (res.status === 404) {
      // A server without /v1/status: what it does have.
      const [ready, models] = await Promise.all(
        ["readyz", "v1/models"].map((p) =>
          api(p, { raw: true })
            .then((r) => r.json())
            .catch(() => null),
        ),
      );
      say(message, tr("status.missing"));
      body.replaceChildren(render({ ready, models: models?.data?.map((m) => m.id) }));
    } else if (!res.ok) {
      const err = await res.json().catch(() => ({}));
      throw new Error(err?.error?.message || `${res.status}`);
    } else {
      say(message, "");
      body.replaceChildren(render(await res.json()));
    }
    body.dataset.loaded = "true";
    $("#s-updated").textContent = t("status.updated", { time: new Date().toLocaleTimeString() });
  } catch (err) {
    say(message, err.message, "error");
  }
}
