// Status: the page an operator keeps open. From GET /v1/status: what is saturated (in words),
// audio today and over the last 15 minutes with a per-minute plot (inline SVG built with DOM
// calls: no library, nothing inline for the CSP to refuse), a table per stage (replicas by
// state, busy share, queued audio, CPU-s per audio-s, cores), then every other field as it comes.
// Figures carry data-figure and data-value (the raw number) for the browser test. Refreshed
// every 5 s while shown.
import { api } from "./api.js";
import { $, h, say } from "./dom.js";
import { t, tr } from "./i18n.js";

const SVG = "http://www.w3.org/2000/svg";
let timer = null;
let last = null;

export function init() {
  $("#s-refresh").addEventListener("click", refresh);
  document.addEventListener("languagechange", () => last && draw(last));
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

const num = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const pct = (share) => (share === null || share === undefined ? "–" : `${Math.round(share * 100)} %`);

/** A figure: its text, and its raw value in data-value ("" when unknown). */
function figure(tag, name, value, text) {
  return h(tag, { dataset: { figure: name, value: value ?? "" } }, text);
}

/** A finding in the reader's language, from its kind and figures. */
export function finding(f) {
  const vars = {
    stage: f.stage,
    pct: Math.round((f.busy_share ?? 0) * 100),
    queued: Math.round(f.queued_audio_s ?? 0),
    state: f.status ?? "",
  };
  const key = f.kind === "busy" && vars.queued >= 1 ? "status.finding.busy_queued" : `status.finding.${f.kind}`;
  const text = t(key, vars);
  return text === key ? f.text : text;
}

function findings(load) {
  const items = load.saturated.length
    ? load.saturated.map((f) => h("li", { dataset: { kind: f.kind, stage: f.stage } }, finding(f)))
    : [h("li", { dataset: { kind: "none" }, i18n: "status.nothing" })];
  return h("section", { class: "findings" }, h("h3", { i18n: "status.findings" }), h("ul", { id: "s-findings" }, items));
}

/** Bars of audio seconds per minute, oldest left, the current (filling) minute right. */
function plot(tp) {
  const width = 300;
  const height = 80;
  const n = tp.audio_s.length;
  const top = Math.max(60, ...tp.audio_s);
  const svg = document.createElementNS(SVG, "svg");
  const set = (node, attrs) => Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, String(v)));
  set(svg, { id: "s-plot", class: "plot", viewBox: `0 0 ${width} ${height + 14}`, role: "img", "data-start": tp.start });
  svg.setAttribute("aria-label", t("status.plot"));
  const start = Date.parse(tp.start);
  const slot = width / n;
  tp.audio_s.forEach((v, i) => {
    const bar = document.createElementNS(SVG, "rect");
    const barH = (v / top) * height;
    set(bar, { class: "bar", x: i * slot + 1, y: height - barH, width: slot - 2, height: barH, "data-minute": i, "data-value": v });
    const title = document.createElementNS(SVG, "title");
    const at = new Date(start + i * tp.minute_s * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    title.textContent = `${at}: ${t("unit.s", { n: Math.round(v) })}`;
    bar.append(title);
    svg.append(bar);
  });
  const base = document.createElementNS(SVG, "line");
  set(base, { class: "axis", x1: 0, y1: height, x2: width, y2: height });
  const scale = document.createElementNS(SVG, "text");
  set(scale, { class: "scale", x: 2, y: height + 12 });
  scale.textContent = t("status.plot_scale", { n: Math.round(top) });
  svg.append(base, scale);
  return svg;
}

function summary(status) {
  const tp = status.load.throughput;
  const hoursToday = status.today?.audio_hours;
  return h(
    "dl",
    { class: "facts", id: "s-summary" },
    h("dt", { i18n: "status.today" }),
    figure("dd", "audio_hours", hoursToday, hoursToday === undefined || hoursToday === null ? "–" : t("unit.hours", { n: num(hoursToday, 3) })),
    h("dt", { i18n: "status.last15" }),
    figure("dd", "throughput_total", tp?.total_audio_s, tp ? t("unit.s", { n: Math.round(tp.total_audio_s) }) : "–"),
  );
}

const COLUMNS = [
  ["replicas", "status.col.replicas"],
  ["busy_share", "status.col.busy"],
  ["queued_audio_s", "status.col.queued"],
  ["cpu_per_audio_s", "status.col.cpu"],
  ["cpu_cores", "status.col.cores"],
];

function stageRow(s) {
  const states = Object.entries(s.replicas).map(([state, n]) => `${state} ${n}`).join(", ") || "–";
  const cells = {
    replicas: figure("td", "replicas", s.running ?? "", states),
    busy_share: figure("td", "busy_share", s.busy_share, pct(s.busy_share)),
    queued_audio_s: figure("td", "queued_audio_s", s.queued_audio_s, num(s.queued_audio_s, 1)),
    cpu_per_audio_s: figure("td", "cpu_per_audio_s", s.cpu_per_audio_s, num(s.cpu_per_audio_s, 3)),
    cpu_cores: figure("td", "cpu_cores", s.cpu_cores, num(s.cpu_cores, 2)),
  };
  return h("tr", { dataset: { stage: s.stage } }, h("th", { scope: "row" }, s.stage), COLUMNS.map(([k]) => cells[k]));
}

function stages(load) {
  const windows = load.stages.map((s) => s.window_s).filter((w) => w !== null && w !== undefined);
  return h(
    "section",
    {},
    h("h3", { i18n: "status.stages" }),
    windows.length ? h("p", { class: "hint" }, t("status.window", { s: Math.round(Math.min(...windows)) })) : null,
    h(
      "table",
      { id: "s-stages" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col", i18n: "status.col.stage" }), COLUMNS.map(([, key]) => h("th", { scope: "col", i18n: key })))),
      h("tbody", {}, load.stages.map(stageRow)),
    ),
  );
}

function draw(status) {
  const { load, ...rest } = status;
  const parts = [];
  if (load) {
    parts.push(findings(load), summary(status));
    if (load.throughput) parts.push(h("figure", { class: "throughput" }, plot(load.throughput), h("figcaption", { i18n: "status.plot" })));
    parts.push(stages(load));
  }
  // Open when there is no load part (a server from before it): then these are all there is.
  parts.push(h("details", { class: "all-fields", open: !load }, h("summary", { i18n: "status.all" }), render(rest)));
  $("#s-body").replaceChildren(...parts);
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
      last = null;
      body.replaceChildren(render({ ready, models: models?.data?.map((m) => m.id) }));
    } else if (!res.ok) {
      const err = await res.json().catch(() => ({}));
      throw new Error(err?.error?.message || `${res.status}`);
    } else {
      say(message, "");
      last = await res.json();
      draw(last);
      body.dataset.time = last.time;
    }
    body.dataset.loaded = "true";
    $("#s-updated").textContent = t("status.updated", { time: new Date().toLocaleTimeString() });
  } catch (err) {
    say(message, err.message, "error");
  }
}
