// Transcribe: dropped or chosen files, one after another, through
// POST /v1/audio/transcriptions (verbose_json, segment timestamps). Each file gets a card with
// its progress, then its transcript; a segment plays the dropped file from its start.
import { send } from "./api.js";
import { $, clock, duration, h, saveBlob, say } from "./dom.js";
import { EXPORTS, exportBlob, exportName } from "./formats.js";
import { t, tr } from "./i18n.js";

let getOptions = () => ({});
const queue = [];
let running = false;

export function init({ options }) {
  getOptions = options;
  const input = $("#t-files");
  const drop = $("#t-drop");
  input.addEventListener("change", () => {
    add([...input.files]);
    input.value = "";
  });
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    add([...(e.dataTransfer?.files || [])]);
  });
}

function add(files) {
  for (const file of files) {
    const card = makeCard(file);
    $("#t-results").prepend(card.node);
    queue.push({ file, card });
  }
  if (!running) drain();
}

async function drain() {
  running = true;
  while (queue.length) {
    const { file, card } = queue.shift();
    await transcribe(file, card);
  }
  running = false;
}

function makeCard(file) {
  const audio = h("audio", { controls: true, preload: "metadata", src: URL.createObjectURL(file) });
  const progress = h("progress", { max: 1, value: 0, "aria-label": file.name });
  const status = h("p", { class: "status", role: "status", i18n: "transcribe.queued" });
  const body = h("div", { class: "body" });
  const node = h(
    "li",
    { class: "card", dataset: { state: "queued" } },
    h("h3", { class: "name" }, file.name),
    progress,
    status,
    audio,
    body,
  );
  return { node, audio, progress, status, body };
}

function fields(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("response_format", "verbose_json");
  form.append("timestamp_granularities[]", "segment");
  for (const [k, v] of Object.entries(getOptions())) form.append(k, String(v));
  return form;
}

async function transcribe(file, card) {
  card.node.dataset.state = "uploading";
  try {
    const res = await send("POST", "v1/audio/transcriptions", fields(file), {
      onProgress(loaded, total, finished) {
        if (finished) {
          card.progress.removeAttribute("value"); // indeterminate: the server is working
          card.node.dataset.state = "transcribing";
          say(card.status, tr("transcribe.working"));
        } else if (total) {
          card.progress.value = loaded / total;
          say(card.status, tr("transcribe.uploading", { pct: Math.round((100 * loaded) / total) }));
        }
      },
    });
    card.progress.value = 1;
    card.node.dataset.state = "done";
    say(card.status, tr("transcribe.done", { duration: duration(res.body.duration) }));
    render(card, file.name, res.body);
  } catch (err) {
    card.progress.value = 0;
    card.node.dataset.state = "failed";
    say(card.status, tr("transcribe.failed", { message: err.message }), "error");
  }
}

/** The transcript: segments as buttons that play from their start, and the exports. */
export function render(card, filename, verbose) {
  const segments = (verbose.segments || []).filter((s) => String(s.text || "").trim());
  const list = h("ol", { class: "segments", "aria-label": t("transcribe.segments") });
  for (const s of segments) {
    const button = h(
      "button",
      {
        type: "button",
        class: "segment",
        dataset: { start: s.start, end: s.end },
        title: t("transcribe.play_from", { time: clock(s.start) }),
        on: {
          click() {
            if (!card.audio) return;
            card.audio.currentTime = Number(s.start);
            card.audio.play().catch(() => {});
          },
        },
      },
      h("span", { class: "time" }, clock(s.start)),
      h("span", { class: "text" }, s.text.trim()),
    );
    list.append(h("li", {}, button));
  }
  if (card.audio) follow(card.audio, list);
  const exports = h(
    "div",
    { class: "exports", role: "group", "aria-label": t("transcribe.export") },
    h("span", { class: "label", i18n: "transcribe.export" }),
    Object.keys(EXPORTS).map((ext) =>
      h(
        "button",
        {
          type: "button",
          class: "export",
          dataset: { format: ext },
          on: { click: () => saveBlob(exportBlob(verbose, ext), exportName(filename, ext)) },
        },
        ext.toUpperCase(),
      ),
    ),
  );
  card.body.replaceChildren(
    h("p", { class: "transcript" }, verbose.text || t("transcribe.empty")),
    segments.length ? list : "",
    exports,
  );
}

/** Mark the segment being played. */
function follow(audio, list) {
  audio.addEventListener("timeupdate", () => {
    const now = audio.currentTime;
    for (const b of list.querySelectorAll("button.segment")) {
      const playing = now >= Number(b.dataset.start) && now < Number(b.dataset.end);
      if (playing) b.setAttribute("aria-current", "true");
      else b.removeAttribute("aria-current");
    }
  });
}
