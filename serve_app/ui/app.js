// The console's entry point: language, navigation between panels (#transcribe, #batch, #live,
// #history, #status), the shared transcription options, and each panel's module.
import { askKey, getJson } from "./api.js";
import * as batch from "./batch.js";
import { $, $$, h } from "./dom.js";
import * as history from "./history.js";
import { language, setLanguage, translate } from "./i18n.js";
import * as live from "./live.js";
import * as status from "./status.js";
import * as transcribe from "./transcribe.js";

const PANELS = { transcribe, batch, live, history, status };
const WITH_OPTIONS = new Set(["transcribe", "batch"]);

/** The options form as transcription fields; empty ones are left to the server. */
export function options() {
  const out = {};
  for (const [name, value] of new FormData($("#options"))) {
    const v = String(value).trim();
    if (!v) continue;
    out[name] = name === "punctuation" || name === "itn" ? v === "true" : v;
  }
  return out;
}

function show(name) {
  const panel = PANELS[name] ? name : "transcribe";
  for (const section of $$("main > section.panel")) section.hidden = section.id !== panel;
  $("#options").hidden = !WITH_OPTIONS.has(panel);
  for (const a of $$("header nav a")) {
    if (a.hash === `#${panel}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [key, mod] of Object.entries(PANELS)) {
    if (key === panel) mod.shown?.();
    else mod.hidden?.();
  }
}

async function loadModels() {
  const select = $("#opt-model");
  try {
    const body = await getJson("v1/models");
    select.replaceChildren(...(body.data || []).map((m) => h("option", { value: m.id }, m.id)));
  } catch (err) {
    select.replaceChildren(h("option", { value: "" }, "–"));
    console.warn("models:", err.message);
  }
}

function main() {
  const langSelect = $("#ui-lang");
  langSelect.value = language();
  translate();
  langSelect.addEventListener("change", () => setLanguage(langSelect.value));
  $("#key-button").addEventListener("click", () => askKey(false).then((ok) => ok && loadModels()));
  $("#options").addEventListener("submit", (e) => e.preventDefault());

  for (const [, mod] of Object.entries(PANELS)) mod.init({ options });
  window.addEventListener("hashchange", () => show(window.location.hash.slice(1)));
  show(window.location.hash.slice(1));
  loadModels();
  document.body.dataset.ready = "true"; // for tests and screenshots: the modules are wired
}

main();
