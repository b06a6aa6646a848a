// The console's strings, English and Chinese. Static text carries data-i18n (text),
// data-i18n-placeholder or data-i18n-aria-label; code calls t(key, vars) for the rest.
// To add a language: a new block here and an <option> in index.html's #ui-lang.

export const STRINGS = {
  en: {
    skip: "Skip to content",
    "nav.label": "Console",
    "nav.transcribe": "Transcribe",
    "nav.batch": "Batch",
    "nav.live": "Live",
    "nav.history": "History",
    "nav.status": "Status",
    "lang.label": "Language",
    "options.title": "Options",
    "options.model": "Model",
    "options.language": "Language",
    "options.language_auto": "auto",
    "options.hotwords": "Hotwords",
    "options.hotwords_hint": "e.g. Ray Serve, FunASR",
    "options.punctuation": "Punctuation",
    "options.itn": "Number formatting (ITN)",
    "options.default": "Server default",
    "options.on": "On",
    "options.off": "Off",
    "transcribe.title": "Transcribe files",
    "transcribe.drop": "Drop audio or video files here, or choose them",
    "transcribe.queued": "Waiting…",
    "transcribe.uploading": "Uploading… {pct}%",
    "transcribe.working": "Transcribing…",
    "transcribe.done": "Done: {duration} of audio",
    "transcribe.failed": "Failed: {message}",
    "transcribe.empty": "No speech found.",
    "transcribe.segments": "Segments (select one to play from there)",
    "transcribe.export": "Export",
    "transcribe.play_from": "Play from {time}",
    "batch.title": "Batch job",
    "batch.hint": "A folder or many files become one job: the server transcribes them in the background; you may close this page and find the job in History.",
    "batch.drop": "Drop files here, or choose",
    "batch.folder": "A folder",
    "batch.files": "Files",
    "batch.start": "Start job",
    "batch.selection": "{n} audio files, {size}",
    "batch.skipped": "({n} other files left out)",
    "batch.none": "No audio files in the selection.",
    "batch.hashing": "Hashing {i} of {n}…",
    "batch.uploading": "Uploading {i} of {n}: {name} {pct}%",
    "batch.creating": "Creating the job…",
    "batch.multipart": "Uploading {n} files… {pct}%",
    "batch.created": "Job {id} created.",
    "batch.job": "Job {id}",
    "batch.state": "State",
    "batch.files_done": "Files",
    "batch.files_count": "{done} done, {failed} failed, {running} running, {pending} waiting of {total}",
    "batch.audio": "Audio",
    "batch.audio_count": "{done} of {total}",
    "batch.eta": "Time left",
    "batch.cancel": "Cancel job",
    "batch.export_zip": "Export zip",
    "batch.export_csv": "Export CSV (files)",
    "batch.export_segments": "Export CSV (segments)",
    "batch.file": "File",
    "batch.file_state": "State",
    "batch.file_duration": "Duration",
    "batch.file_error": "Error",
    "batch.follow_failed": "Progress stream lost; polling instead.",
    "state.queued": "queued",
    "state.running": "running",
    "state.completed": "completed",
    "state.failed": "failed",
    "state.cancelled": "cancelled",
    "state.pending": "waiting",
    "state.done": "done",
    "live.title": "Live microphone",
    "live.insecure": "The browser allows the microphone only on https or on localhost: serve this console with a certificate (see the README) to use it from another machine.",
    "live.start": "Start",
    "live.stop": "Stop",
    "live.level": "Input level",
    "live.transcript": "Live transcript",
    "live.connecting": "Connecting…",
    "live.listening": "Listening: speak now.",
    "live.stopping": "Finishing the last sentence…",
    "live.stopped": "Stopped.",
    "live.no_mic": "No microphone: {message}",
    "live.closed": "The server closed the stream: {reason}",
    "history.title": "History",
    "history.search": "Search transcripts",
    "history.search_button": "Search",
    "history.export_csv": "Export CSV",
    "history.transcriptions": "Transcriptions",
    "history.jobs": "Jobs",
    "history.more": "More",
    "history.empty": "Nothing yet.",
    "history.delete": "Delete",
    "history.open": "Open",
    "history.confirm_delete": "Delete this for good?",
    "history.off": "History is not kept on this server.",
    "status.title": "Server status",
    "status.refresh": "Refresh",
    "status.updated": "Updated {time}",
    "status.missing": "This server has no /v1/status; showing readiness and models instead.",
    "key.button": "API key",
    "key.title": "API key",
    "key.needed": "This server needs an API key.",
    "key.rejected": "The server refused this key: enter another.",
    "key.label": "Key",
    "key.storage": "Kept in this tab only (sessionStorage), sent as a Bearer token.",
    "key.use": "Use key",
    "key.cancel": "Cancel",
    "error.network": "Network error: {detail}",
    "error.aborted": "Aborted.",
    "unit.s": "{n} s",
    "unit.min_s": "{m} min {s} s",
    "unit.h_min": "{h} h {m} min",
    "unit.hours": "{n} h",
  },
  zh: {
    skip: "跳到内容",
    "nav.label": "控制台",
    "nav.transcribe": "转写",
    "nav.batch": "批量",
    "nav.live": "实时",
    "nav.history": "历史",
    "nav.status": "状态",
    "lang.label": "界面语言",
    "options.title": "选项",
    "options.model": "模型",
    "options.language": "语言",
    "options.language_auto": "自动",
    "options.hotwords": "热词",
    "options.hotwords_hint": "例如：Ray Serve, FunASR",
    "options.punctuation": "标点",
    "options.itn": "数字规整（ITN）",
    "options.default": "服务器默认",
    "options.on": "开",
    "options.off": "关",
    "transcribe.title": "转写文件",
    "transcribe.drop": "把音频或视频文件拖到这里，或点击选择",
    "transcribe.queued": "等待中…",
    "transcribe.uploading": "上传中… {pct}%",
    "transcribe.working": "转写中…",
    "transcribe.done": "完成：{duration} 音频",
    "transcribe.failed": "失败：{message}",
    "transcribe.empty": "没有检测到语音。",
    "transcribe.segments": "分段（点击从该处播放）",
    "transcribe.export": "导出",
    "transcribe.play_from": "从 {time} 播放",
    "batch.title": "批量任务",
    "batch.hint": "一个文件夹或多个文件组成一个任务，由服务器在后台转写；可以关闭本页，稍后在“历史”中查看。",
    "batch.drop": "把文件拖到这里，或选择",
    "batch.folder": "文件夹",
    "batch.files": "文件",
    "batch.start": "开始任务",
    "batch.selection": "{n} 个音频文件，{size}",
    "batch.skipped": "（另有 {n} 个文件未包含）",
    "batch.none": "所选内容中没有音频文件。",
    "batch.hashing": "计算校验和 {i}/{n}…",
    "batch.uploading": "上传 {i}/{n}：{name} {pct}%",
    "batch.creating": "创建任务…",
    "batch.multipart": "上传 {n} 个文件… {pct}%",
    "batch.created": "任务 {id} 已创建。",
    "batch.job": "任务 {id}",
    "batch.state": "状态",
    "batch.files_done": "文件",
    "batch.files_count": "共 {total} 个：完成 {done}，失败 {failed}，进行中 {running}，等待 {pending}",
    "batch.audio": "音频",
    "batch.audio_count": "{done} / {total}",
    "batch.eta": "剩余时间",
    "batch.cancel": "取消任务",
    "batch.export_zip": "导出 zip",
    "batch.export_csv": "导出 CSV（按文件）",
    "batch.export_segments": "导出 CSV（按分段）",
    "batch.file": "文件",
    "batch.file_state": "状态",
    "batch.file_duration": "时长",
    "batch.file_error": "错误",
    "batch.follow_failed": "进度流中断，改为轮询。",
    "state.queued": "排队中",
    "state.running": "进行中",
    "state.completed": "已完成",
    "state.failed": "失败",
    "state.cancelled": "已取消",
    "state.pending": "等待",
    "state.done": "完成",
    "live.title": "实时麦克风",
    "live.insecure": "浏览器只在 https 或 localhost 下允许使用麦克风：要在其他机器上使用，请为控制台配置证书（见 README）。",
    "live.start": "开始",
    "live.stop": "停止",
    "live.level": "输入音量",
    "live.transcript": "实时转写",
    "live.connecting": "连接中…",
    "live.listening": "正在聆听，请说话。",
    "live.stopping": "正在完成最后一句…",
    "live.stopped": "已停止。",
    "live.no_mic": "无法使用麦克风：{message}",
    "live.closed": "服务器关闭了连接：{reason}",
    "history.title": "历史",
    "history.search": "搜索转写内容",
    "history.search_button": "搜索",
    "history.export_csv": "导出 CSV",
    "history.transcriptions": "转写记录",
    "history.jobs": "任务",
    "history.more": "更多",
    "history.empty": "暂无记录。",
    "history.delete": "删除",
    "history.open": "打开",
    "history.confirm_delete": "确定永久删除？",
    "history.off": "此服务器不保存历史。",
    "status.title": "服务器状态",
    "status.refresh": "刷新",
    "status.updated": "更新于 {time}",
    "status.missing": "此服务器没有 /v1/status，改为显示就绪状态和模型。",
    "key.button": "API 密钥",
    "key.title": "API 密钥",
    "key.needed": "此服务器需要 API 密钥。",
    "key.rejected": "服务器拒绝了该密钥，请重新输入。",
    "key.label": "密钥",
    "key.storage": "仅保存在本标签页（sessionStorage），以 Bearer 令牌发送。",
    "key.use": "使用密钥",
    "key.cancel": "取消",
    "error.network": "网络错误：{detail}",
    "error.aborted": "已中止。",
    "unit.s": "{n} 秒",
    "unit.min_s": "{m} 分 {s} 秒",
    "unit.h_min": "{h} 小时 {m} 分",
    "unit.hours": "{n} 小时",
  },
};

const STORE = "funasr-serve.ui-language";
let current = pick();

function pick() {
  const saved = localStorage.getItem(STORE);
  if (saved && STRINGS[saved]) return saved;
  const wanted = navigator.languages?.length ? navigator.languages : [navigator.language || "en"];
  for (const tag of wanted) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (STRINGS[base]) return base;
  }
  return "en";
}

export function language() {
  return current;
}

/** The string for `key` in the current language (English, then the key itself, if missing),
 * with {name} placeholders filled from `vars`. */
export function t(key, vars = {}) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

/** A message to show with dom.say(): it follows the language switch (its values do not). */
export function tr(key, vars = {}) {
  return { key, vars };
}

/** Translate every marked node under `root`. */
export function translate(root = document) {
  document.documentElement.lang = current === "zh" ? "zh-CN" : current;
  for (const node of root.querySelectorAll("[data-i18n]")) {
    node.textContent = t(node.dataset.i18n, node.dataset.i18nVars ? JSON.parse(node.dataset.i18nVars) : {});
  }
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
  for (const node of root.querySelectorAll("[data-i18n-aria-label]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nAriaLabel));
  }
}

export function setLanguage(code) {
  if (!STRINGS[code]) return;
  current = code;
  localStorage.setItem(STORE, code);
  translate();
  document.dispatchEvent(new CustomEvent("languagechange", { detail: code }));
}
