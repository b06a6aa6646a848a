// History: single transcriptions (GET /v1/history?q=, searchable, cursor-paged) and batch jobs
// (GET /v1/jobs), each with its exports and delete.
import { api, download, getJson } from "./api.js";
import * as batch from "./batch.js";
import { $, duration, h, say, when } from "./dom.js";
import { t, tr } from "./i18n.js";

let entriesCursor = null;
let jobsCursor = null;
let query = "";

export function init() {
  $("#h-search").addEventListener("submit", (e) => {
    e.preventDefault();
    query = $("#h-q").value.trim();
    loadEntries(true);
  });
  $("#h-more").addEventListener("click", () => loadEntries(false));
  $("#h-jobs-more").addEventListener("click", () => loadJobs(false));
  $("#h-export").addEventListener("click", () => {
    const q = new URLSearchParams(query ? { q: query } : {});
    download(`v1/history/export?${q}`, "history.csv").catch((err) => say($("#h-status"), err.message, "error"));
  });
}

export function shown() {
  loadEntries(true);
  loadJobs(true);
}

function exportButtons(prefix, name, formats) {
  return formats.map(([label, format, ext]) =>
    h(
      "button",
      {
        type: "button",
        class: "export",
        dataset: { format: ext },
        on: {
          click: () =>
            download(`${prefix}format=${format}`, `${name}.${ext}`).catch((err) =>
              say($("#h-status"), err.message, "error"),
            ),
        },
      },
      label,
    ),
  );
}

const ENTRY_FORMATS = [
  ["TXT", "text", "txt"],
  ["SRT", "srt", "srt"],
  ["VTT", "vtt", "vtt"],
  ["JSON", "verbose_json", "json"],
];

function stem(name) {
  return String(name || "transcript").replace(/^.*[\\/]/, "").replace(/\.[^.]+$/, "") || "transcript";
}

async function remove(path, item) {
  if (!window.confirm(t("history.confirm_delete"))) return;
  try {
    await api(path, { method: "DELETE" });
    item.remove();
  } catch (err) {
    say($("#h-status"), err.message, "error");
  }
}

async function loadEntries(fresh) {
  const list = $("#h-entries");
  if (fresh) entriesCursor = null;
  const q = new URLSearchParams({ limit: "20" });
  if (query) q.set("q", query);
  if (entriesCursor) q.set("cursor", entriesCursor);
  try {
    const page = await getJson(`v1/history?${q}`);
    if (fresh) list.replaceChildren();
    say($("#h-status"), "");
    for (const e of page.data) {
      const item = h(
        "li",
        { class: "entry", dataset: { id: e.id } },
        h(
          "p",
          { class: "meta" },
          h("strong", {}, e.source_name || e.id),
          ` · ${when(e.created_at)} · ${duration(e.duration_s)} · ${e.model || ""} ${e.language || ""}`,
        ),
        h("p", { class: "text" }, e.text || "–"),
      );
      item.append(
        h(
          "p",
          { class: "buttons" },
          exportButtons(`v1/history/${e.id}?`, stem(e.source_name), ENTRY_FORMATS),
          h("button", {
            type: "button",
            class: "danger",
            i18n: "history.delete",
            on: { click: () => remove(`v1/history/${e.id}`, item) },
          }),
        ),
      );
      list.append(item);
    }
    if (fresh && !page.data.length) list.append(h("li", { class: "empty", i18n: "history.empty" }));
    entriesCursor = page.next_cursor;
    $("#h-more").hidden = !entriesCursor;
  } catch (err) {
    say($("#h-status"), err.status === 404 ? tr("history.off") : err.message, "error");
  }
}

async function loadJobs(fresh) {
  const list = $("#h-jobs");
  if (fresh) jobsCursor = null;
  const q = new URLSearchParams({ limit: "20" });
  if (jobsCursor) q.set("cursor", jobsCursor);
  try {
    const page = await getJson(`v1/jobs?${q}`);
    if (fresh) list.replaceChildren();
    for (const job of page.data) {
      const f = job.files || {};
      const item = h(
        "li",
        { class: "entry", dataset: { id: job.id, state: job.state } },
        h(
          "p",
          { class: "meta" },
          h("strong", {}, job.id),
          ` · ${when(job.created_at)} · ${t(`state.${job.state}`)} · ${f.done ?? 0}/${f.total ?? 0}`,
          ` · ${duration(job.audio_seconds?.total)}`,
        ),
      );
      item.append(
        h(
          "p",
          { class: "buttons" },
          h("button", {
            type: "button",
            i18n: "history.open",
            on: {
              click() {
                window.location.hash = "#batch";
                batch.follow(job.id);
              },
            },
          }),
          exportButtons(`v1/jobs/${job.id}/export?`, `job-${job.id}`, [
            ["ZIP", "zip", "zip"],
            ["CSV", "csv&rows=files", "csv"],
          ]),
          h("button", {
            type: "button",
            class: "danger",
            i18n: "history.delete",
            on: { click: () => remove(`v1/jobs/${job.id}`, item) },
          }),
        ),
      );
      list.append(item);
    }
    if (fresh && !page.data.length) list.append(h("li", { class: "empty", i18n: "history.empty" }));
    jobsCursor = page.next_cursor;
    $("#h-jobs-more").hidden = !jobsCursor;
  } catch (err) {
    if (err.status !== 404) say($("#h-status"), err.message, "error");
  }
}
