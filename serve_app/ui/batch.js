// Batch: a folder or many files become one job. Each file is hashed in the browser
// (crypto.subtle), uploaded by content only when the server lacks it
// (HEAD / PUT /v1/uploads/{sha256}), and the job is created from the hashes
// (POST /v1/jobs {"files": [{sha256, name}]}). Without crypto.subtle (plain http away from
// localhost) the files go in one multipart POST /v1/jobs instead. Progress comes from the job's
// server-sent events; per-file state from /v1/jobs/{id}/files.
import { api, download, events, getJson, send, url } from "./api.js";
import { $, bytes, duration, h, hours, say } from "./dom.js";
import { t, tr } from "./i18n.js";

const AUDIO = /\.(wav|mp3|m4a|aac|flac|ogg|oga|opus|webm|mp4|mkv|mov|wma|amr|aiff?|caf|3gp)$/i;
let getOptions = () => ({});
let selected = [];
let following = null; // AbortController of the job being followed

export function init({ options }) {
  getOptions = options;
  for (const id of ["#b-folder", "#b-files"]) {
    const input = $(id);
    input.addEventListener("change", () => {
      choose([...input.files]);
      input.value = "";
    });
  }
  const drop = $("#b-drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    choose([...(e.dataTransfer?.files || [])]);
  });
  $("#b-start").addEventListener("click", start);
}

const nameOf = (file) => file.webkitRelativePath || file.name;

function choose(files) {
  selected = files.filter((f) => f.type.startsWith("audio/") || f.type.startsWith("video/") || AUDIO.test(f.name));
  const skipped = files.length - selected.length;
  const total = selected.reduce((n, f) => n + f.size, 0);
  const text = selected.length
    ? t("batch.selection", { n: selected.length, size: bytes(total) })
    : t("batch.none");
  $("#b-selection").textContent = skipped ? `${text} ${t("batch.skipped", { n: skipped })}` : text;
  $("#b-start").disabled = !selected.length;
}

async function sha256(file) {
  const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function start() {
  const files = selected;
  const status = $("#b-status");
  $("#b-start").disabled = true;
  try {
    const job = window.crypto?.subtle ? await byContent(files, status) : await multipart(files, status);
    say(status, tr("batch.created", { id: job.id }));
    selected = [];
    $("#b-selection").textContent = "";
    follow(job.id);
  } catch (err) {
    say(status, err.message, "error");
    $("#b-start").disabled = !selected.length;
  }
}

async function byContent(files, status) {
  const refs = [];
  for (const [i, file] of files.entries()) {
    say(status, tr("batch.hashing", { i: i + 1, n: files.length }));
    const sha = await sha256(file);
    const name = nameOf(file);
    refs.push({ sha256: sha, name });
    const held = await api(`v1/uploads/${sha}`, { method: "HEAD", raw: true });
    if (held.ok) continue;
    await send("PUT", `v1/uploads/${sha}`, file, {
      headers: { "Content-Type": "application/octet-stream" },
      onProgress(loaded, total) {
        const pct = total ? Math.round((100 * loaded) / total) : 100;
        say(status, tr("batch.uploading", { i: i + 1, n: files.length, name, pct }));
      },
    });
  }
  say(status, tr("batch.creating"));
  const body = JSON.stringify({ files: refs, options: getOptions() });
  // The same files and options again (a double click, a retry) give back the same job.
  const key = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(body));
  const idem = [...new Uint8Array(key)].map((b) => b.toString(16).padStart(2, "0")).join("");
  const res = await api("v1/jobs", {
    method: "POST",
    body,
    headers: { "Content-Type": "application/json", "Idempotency-Key": `console-${idem}` },
  });
  return res.json();
}

async function multipart(files, status) {
  const form = new FormData();
  for (const file of files) form.append("files", file, nameOf(file));
  for (const [k, v] of Object.entries(getOptions())) form.append(k, String(v));
  const res = await send("POST", "v1/jobs", form, {
    onProgress(loaded, total) {
      const pct = total ? Math.round((100 * loaded) / total) : 100;
      say(status, tr("batch.multipart", { n: files.length, pct }));
    },
  });
  return res.body;
}

/** Show job `id` in the Batch panel and follow it until it ends. */
export function follow(id) {
  following?.abort();
  const abort = new AbortController();
  following = abort;
  const view = makeView(id);
  $("#b-job").replaceChildren(view.node);
  let filesDue = 0;
  let asked = 0;
  const refreshFiles = async () => {
    const now = Date.now();
    if (now < filesDue) return;
    filesDue = now + 1000;
    const mine = ++asked;
    try {
      const list = await allFiles(id);
      if (mine === asked) view.setFiles(list); // a slower, older answer never overwrites a newer one
    } catch (err) {
      console.warn("job files:", err.message);
    }
  };
  const update = async (job) => {
    view.setJob(job);
    await refreshFiles();
  };
  (async () => {
    try {
      await update(await getJson(`v1/jobs/${id}`, { signal: abort.signal }));
      let ended = false;
      try {
        await events(
          `v1/jobs/${id}/events`,
          (name, data) => {
            const job = JSON.parse(data);
            if (name === "end") ended = true;
            update(job);
          },
          abort.signal,
        );
      } catch (err) {
        if (abort.signal.aborted) return;
        console.warn("job events:", err.message);
      }
      // The stream ended (or broke): poll until the job has ended.
      while (!abort.signal.aborted) {
        const job = await getJson(`v1/jobs/${id}`, { signal: abort.signal });
        filesDue = 0;
        await update(job);
        if (ended || ["completed", "failed", "cancelled"].includes(job.state)) break;
        await new Promise((r) => setTimeout(r, 2000));
      }
    } catch (err) {
      if (!abort.signal.aborted) say(view.message, err.message, "error");
    }
  })();
}

async function allFiles(id) {
  const out = [];
  let cursor = null;
  do {
    const q = new URLSearchParams({ limit: "500" });
    if (cursor) q.set("cursor", cursor);
    const page = await getJson(`v1/jobs/${id}/files?${q}`);
    out.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && out.length < 5000);
  return out;
}

function makeView(id) {
  const state = h("dd", { class: "state" }, "…");
  const files = h("dd", { class: "files" }, "…");
  const audio = h("dd", { class: "audio" }, "…");
  const eta = h("dd", { class: "eta" }, "…");
  const progress = h("progress", { max: 1, value: 0, "aria-label": t("batch.job", { id }) });
  const message = h("p", { role: "status", hidden: true });
  const cancel = h("button", { type: "button", class: "danger", i18n: "batch.cancel" });
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      view.setJob(await getJson(`v1/jobs/${id}/cancel`, { method: "POST" }));
    } catch (err) {
      say(message, err.message, "error");
      cancel.disabled = false;
    }
  });
  const link = (key, path, filename) =>
    h("a", {
      class: "button",
      href: url(path).href,
      download: filename,
      i18n: key,
      on: {
        click(e) {
          e.preventDefault(); // fetched with the API key, which a plain link cannot carry
          download(path, filename).catch((err) => say(message, err.message, "error"));
        },
      },
    });
  const tbody = h("tbody");
  const node = h(
    "article",
    { class: "job", dataset: { job: id } },
    h("h3", {}, t("batch.job", { id })),
    progress,
    h(
      "dl",
      { class: "facts" },
      h("dt", { i18n: "batch.state" }),
      state,
      h("dt", { i18n: "batch.files_done" }),
      files,
      h("dt", { i18n: "batch.audio" }),
      audio,
      h("dt", { i18n: "batch.eta" }),
      eta,
    ),
    h(
      "p",
      { class: "buttons" },
      cancel,
      link("batch.export_zip", `v1/jobs/${id}/export?format=zip`, `job-${id}.zip`),
      link("batch.export_csv", `v1/jobs/${id}/export?format=csv&rows=files`, `job-${id}-files.csv`),
      link("batch.export_segments", `v1/jobs/${id}/export?format=csv&rows=segments`, `job-${id}-segments.csv`),
    ),
    message,
    h(
      "table",
      { class: "files-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["batch.file", "batch.file_state", "batch.file_duration", "batch.file_error"].map((k) =>
            h("th", { scope: "col", i18n: k }),
          ),
        ),
      ),
      tbody,
    ),
  );
  const view = {
    node,
    message,
    setJob(job) {
      node.dataset.state = job.state;
      state.textContent = t(`state.${job.state}`);
      const f = job.files || {};
      files.textContent = t("batch.files_count", {
        done: f.done ?? 0,
        failed: f.failed ?? 0,
        running: f.running ?? 0,
        pending: f.pending ?? 0,
        total: f.total ?? 0,
      });
      files.dataset.done = f.done ?? 0;
      files.dataset.total = f.total ?? 0;
      const a = job.audio_seconds || {};
      audio.textContent = t("batch.audio_count", { done: hours(a.done), total: hours(a.total) });
      const ended = ["completed", "failed", "cancelled"].includes(job.state);
      eta.textContent = ended ? "–" : duration(job.eta_s);
      const endedFiles = (f.done ?? 0) + (f.failed ?? 0) + (f.cancelled ?? 0);
      progress.value = a.total_known && a.total ? a.done / a.total : f.total ? endedFiles / f.total : 0;
      if (ended) progress.value = 1;
      cancel.disabled = ended;
    },
    setFiles(list) {
      tbody.replaceChildren(
        ...list.map((f) =>
          h(
            "tr",
            { dataset: { state: f.state } },
            h("td", {}, f.name),
            h("td", {}, t(`state.${f.state}`)),
            h("td", {}, f.duration_s == null ? "–" : duration(f.duration_s)),
            h("td", {}, f.error || ""),
          ),
        ),
      );
    },
  };
  return view;
}
