// Transcript exports made in the browser from a verbose_json response: the same text, SRT and
// WebVTT as the server renders (serve_app/formats.py), plus the JSON itself and a CSV of segments.

function stamp(seconds, sep) {
  let ms = Math.max(0, Math.round(Number(seconds) * 1000));
  const h = Math.floor(ms / 3_600_000);
  ms -= h * 3_600_000;
  const m = Math.floor(ms / 60_000);
  ms -= m * 60_000;
  const s = Math.floor(ms / 1000);
  ms -= s * 1000;
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(h)}:${p(m)}:${p(s)}${sep}${p(ms, 3)}`;
}

const spoken = (verbose) => (verbose.segments || []).filter((s) => String(s.text || "").trim());

export function toText(verbose) {
  return verbose.text ? `${verbose.text}\n` : "";
}

export function toSrt(verbose) {
  return spoken(verbose)
    .map((s, i) => `${i + 1}\n${stamp(s.start, ",")} --> ${stamp(s.end, ",")}\n${s.text.trim()}\n`)
    .join("\n");
}

export function toVtt(verbose) {
  const cues = spoken(verbose).map((s) => `${stamp(s.start, ".")} --> ${stamp(s.end, ".")}\n${s.text.trim()}\n`);
  return `WEBVTT\n\n${cues.join("\n")}`;
}

export function toJson(verbose) {
  return `${JSON.stringify(verbose, null, 2)}\n`;
}

function csvCell(value) {
  const text = String(value ?? "");
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

// A text cell that a spreadsheet would run as a formula gets a leading ' (serve_app/exports.py).
const csvText = (text) => (/^[=+\-@\t\r]/.test(text) ? `'${text}` : text);

export function toCsv(verbose) {
  const rows = [["start_s", "end_s", "text"]];
  for (const s of spoken(verbose)) {
    rows.push([Number(s.start).toFixed(3), Number(s.end).toFixed(3), csvText(s.text.trim())]);
  }
  return `${rows.map((r) => r.map(csvCell).join(",")).join("\r\n")}\r\n`;
}

export const EXPORTS = {
  txt: { render: toText, type: "text/plain;charset=utf-8" },
  srt: { render: toSrt, type: "application/x-subrip;charset=utf-8" },
  vtt: { render: toVtt, type: "text/vtt;charset=utf-8" },
  json: { render: toJson, type: "application/json" },
  csv: { render: toCsv, type: "text/csv;charset=utf-8" },
};

/** A Blob of `verbose` in `ext` (txt, srt, vtt, json, csv). */
export function exportBlob(verbose, ext) {
  const { render, type } = EXPORTS[ext];
  return new Blob([render(verbose)], { type });
}

/** "talk.mp3" + "srt" → "talk.srt" */
export function exportName(filename, ext) {
  const base = String(filename || "transcript").replace(/^.*[\\/]/, "").replace(/\.[^.]+$/, "");
  return `${base || "transcript"}.${ext}`;
}
