// Live: the microphone over FunASR's WebSocket protocol in 2pass mode
// (/v1/realtime/funasr, the same protocol as "/"). An AudioWorklet (pcm-worklet.js) turns the
// browser's audio into 16 kHz 16-bit PCM frames; partials ("2pass-online", new text appended)
// show as they come, and each corrected sentence ("2pass-offline") replaces them.
import { getJson, wsUrl } from "./api.js";
import { $, h, say } from "./dom.js";
import { t, tr } from "./i18n.js";

let session = null;

export function init() {
  if (!window.isSecureContext) $("#l-insecure").hidden = false;
  $("#l-start").addEventListener("click", () => start().catch((err) => fail(err.message)));
  $("#l-stop").addEventListener("click", () => stop());
}

function setRunning(running) {
  $("#l-start").disabled = running;
  $("#l-stop").disabled = !running;
  $("#live").dataset.running = String(running);
}

function fail(message) {
  say($("#l-status"), message, "error");
  teardown();
  setRunning(false);
}

function level(rms) {
  // -60 dBFS .. 0 dBFS onto 0 .. 1
  const db = 20 * Math.log10(Math.max(rms, 1e-6));
  return Math.max(0, Math.min(1, (db + 60) / 60));
}

async function start() {
  if (session) return;
  setRunning(true);
  const status = $("#l-status");
  say(status, tr("live.connecting"));
  // A WebSocket cannot show a 401: make sure we hold a key the server takes first.
  await getJson("v1/models");
  if (!navigator.mediaDevices?.getUserMedia) throw new Error(t("live.no_mic", { message: "getUserMedia" }));
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
  } catch (err) {
    throw new Error(t("live.no_mic", { message: err.message || err.name }));
  }
  const ctx = new AudioContext();
  const s = { stream, ctx, ws: null, source: null, node: null, stopping: false, ended: null };
  session = s;
  await ctx.audioWorklet.addModule(new URL("./pcm-worklet.js", import.meta.url));
  await ctx.resume();
  const node = new AudioWorkletNode(ctx, "pcm-16k", { processorOptions: { targetRate: 16000, frameMs: 60 } });
  s.node = node;
  s.source = ctx.createMediaStreamSource(stream);
  s.source.connect(node);
  node.connect(ctx.destination); // it writes no output (silence); connected, it is always pulled

  const ws = new WebSocket(wsUrl("v1/realtime/funasr"));
  ws.binaryType = "arraybuffer";
  s.ws = ws;
  s.ended = new Promise((resolve) => {
    s.endedResolve = resolve;
  });
  await new Promise((resolve, reject) => {
    ws.addEventListener("open", resolve, { once: true });
    ws.addEventListener("error", () => reject(new Error(t("live.closed", { reason: "connect" }))), { once: true });
  });
  ws.send(
    JSON.stringify({
      mode: "2pass",
      chunk_size: [5, 10, 5],
      chunk_interval: 10,
      encoder_chunk_look_back: 4,
      decoder_chunk_look_back: 0,
      audio_fs: 16000,
      wav_name: "microphone",
      wav_format: "pcm",
      is_speaking: true,
      hotwords: "",
      itn: true,
    }),
  );
  ws.addEventListener("message", (e) => {
    if (typeof e.data === "string") onMessage(s, JSON.parse(e.data));
  });
  ws.addEventListener("close", (e) => {
    s.endedResolve();
    if (!s.stopping && session === s) fail(t("live.closed", { reason: e.reason || e.code }));
  });
  node.port.onmessage = ({ data }) => {
    $("#l-level").value = level(data.level);
    if (!s.stopping && ws.readyState === WebSocket.OPEN) ws.send(data.pcm);
  };
  say(status, tr("live.listening"));
}

function onMessage(s, msg) {
  const partial = $("#l-partial");
  const mode = String(msg.mode || "");
  if (msg.error) say($("#l-status"), tr("live.closed", { reason: msg.error }), "error");
  if (mode.endsWith("online")) {
    if (msg.text) partial.textContent += msg.text;
  } else if (mode === "2pass-offline" || mode === "offline") {
    if (msg.text) {
      // The corrected sentence takes the partial's place (kept in data-replaced for tests).
      partial.before(h("span", { class: "final", dataset: { replaced: partial.textContent } }, msg.text));
    }
    partial.textContent = "";
  }
  if (msg.is_end) s.endedResolve();
}

function teardown() {
  const s = session;
  if (!s) return;
  session = null;
  if (s.node) s.node.port.onmessage = null;
  for (const track of s.stream?.getTracks() || []) track.stop();
  s.ctx?.close().catch(() => {});
  $("#l-level").value = 0;
  return s;
}

async function stop() {
  const s = session;
  if (!s) return;
  s.stopping = true;
  $("#l-stop").disabled = true;
  say($("#l-status"), tr("live.stopping"));
  teardown();
  const ws = s.ws;
  if (ws?.readyState === WebSocket.OPEN) {
    // FunASR's newer clients end so; the server acknowledges with is_end after the last sentence.
    ws.send(JSON.stringify({ is_speaking: false, is_end: true }));
    await Promise.race([s.ended, new Promise((r) => setTimeout(r, 15000))]);
    ws.close(1000);
  }
  say($("#l-status"), tr("live.stopped"));
  setRunning(false);
}

