// pystream's web page: search (text or image), watch a hit, every source's state.
// Plain JavaScript against the HTTP API (/search, /search/image, /play, /status, /recordings);
// no build step. Deep links: /?q=...&source=...&since=...&until=...&level=...&k=...&play=ID
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k === "style") e.style.cssText = v; // CSSOM: allowed by the page's CSP
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
};

// ------------------------------------------------------------------ formatting
const DATED = 1e8; // smaller times are seconds into a file (undated recording)
const pad = (n) => String(n).padStart(2, "0");
function clock(s) {
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
}
function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}
function localTime(t, withDate = true) {
  const d = new Date(t * 1000);
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (!withDate || sameDay(d, new Date())) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}
function timeRange(start, end) {
  if (start < DATED) return `${clock(start)} – ${clock(end)}`;
  return `${localTime(start)} – ${localTime(end, !sameDay(new Date(start * 1000), new Date(end * 1000)))}`;
}
function ago(t) {
  if (!t) return "–";
  const s = Date.now() / 1000 - t;
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());
function bytes(n) {
  if (!n) return "0 B";
  const u = ["B", "kB", "MB", "GB", "TB"];
  const i = Math.min(u.length - 1, Math.floor(Math.log10(n) / 3));
  return `${(n / 10 ** (3 * i)).toFixed(i ? 1 : 0)} ${u[i]}`;
}
function toLocalInput(t) { // epoch seconds -> value of <input type=datetime-local>
  const d = new Date(t * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function parseTime(v) { // epoch seconds, or an ISO / datetime-local string in the browser's time
  if (v === null || v === undefined || v === "") return null;
  if (/^-?\d+(\.\d+)?$/.test(v)) return Number(v);
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : t / 1000;
}

async function api(url, opts = {}) {
  const r = await fetch(url, Object.assign({ headers: { Accept: "application/json" }, credentials: "same-origin" }, opts));
  if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); throw new Error("not signed in"); }
  let body = null;
  try { body = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) {
    const d = body && body.detail;
    const msg = typeof d === "string" ? d : Array.isArray(d) ? d.map((x) => `${(x.loc || []).slice(-1)[0]}: ${x.msg}`).join("; ") : r.statusText;
    const err = new Error(msg || `HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return body;
}

// ------------------------------------------------------------------ search view
const state = { image: null, imageUrl: null, sources: [], selected: new Set(), lastResults: null, playing: null, known: {} };

function readForm() {
  const p = new URLSearchParams();
  const q = $("#q").value.trim();
  if (q) p.set("q", q);
  for (const s of state.selected) p.append("source", s);
  const preset = $("#range-preset").value;
  if (preset && preset !== "custom") p.set("range", preset);
  if (preset === "custom") {
    const since = parseTime($("#since").value), until = parseTime($("#until").value);
    if (since !== null) p.set("since", String(Math.floor(since)));
    if (until !== null) p.set("until", String(Math.ceil(until)));
  }
  if ($("#level").value !== "0") p.set("level", $("#level").value);
  p.set("k", $("#k").value);
  if (!$("#collapse").checked) p.set("collapse", "0");
  return p;
}

function presetRange(preset) {
  const now = Date.now() / 1000;
  if (preset === "1h") return [now - 3600, null];
  if (preset === "24h") return [now - 86400, null];
  if (preset === "7d") return [now - 7 * 86400, null];
  if (preset === "today") { const d = new Date(); d.setHours(0, 0, 0, 0); return [d.getTime() / 1000, null]; }
  return [null, null];
}

function applyParams(p) { // URL -> form
  $("#q").value = p.get("q") || "";
  state.selected = new Set(p.getAll("source"));
  renderSourceChips();
  const since = parseTime(p.get("since")), until = parseTime(p.get("until"));
  if (p.get("range")) { $("#range-preset").value = p.get("range"); }
  else if (since !== null || until !== null) {
    $("#range-preset").value = "custom";
    $("#since").value = since !== null ? toLocalInput(since) : "";
    $("#until").value = until !== null ? toLocalInput(until) : "";
  } else $("#range-preset").value = "";
  $("#custom-range").hidden = $("#range-preset").value !== "custom";
  if (p.get("level")) $("#level").value = p.get("level");
  if (p.get("k")) {
    const k = p.get("k");
    if (![...$("#k").options].some((o) => o.value === k)) $("#k").append(el("option", { text: k }));
    $("#k").value = k;
  }
  $("#collapse").checked = p.get("collapse") !== "0";
}

function apiParams(p) { // form params -> /search params
  const a = new URLSearchParams();
  for (const s of p.getAll("source")) a.append("source", s);
  let since = parseTime(p.get("since")), until = parseTime(p.get("until"));
  if (p.get("range")) [since, until] = presetRange(p.get("range"));
  if (since !== null) a.set("since", String(Math.floor(since)));
  if (until !== null) a.set("until", String(Math.ceil(until)));
  a.set("level", p.get("level") || "0");
  a.set("k", p.get("k") || "24");
  a.set("collapse", p.get("collapse") === "0" ? "false" : "true");
  return a;
}

async function runSearch(push = true) {
  const p = readForm();
  if (!p.get("q") && !state.image) {
    $("#summary").replaceChildren(el("span", { class: "muted", text: "Type a query or choose an image." }));
    return;
  }
  if (push && !state.image) history.pushState(null, "", "/?" + p.toString());
  const a = apiParams(p);
  document.body.dataset.state = "searching";
  $("#summary").replaceChildren(el("span", { class: "spinner" }), el("span", { class: "muted", text: " Searching…" }));
  const t0 = performance.now();
  try {
    let body;
    if (state.image) {
      body = await api("/search/image?" + a.toString(), { method: "POST", body: state.image, headers: { Accept: "application/json", "Content-Type": state.image.type || "application/octet-stream" } });
    } else {
      a.set("q", p.get("q"));
      body = await api("/search?" + a.toString());
    }
    state.lastResults = body;
    renderResults(body, performance.now() - t0, a.get("collapse") === "true");
    document.body.dataset.state = "results";
  } catch (e) {
    document.body.dataset.state = "error";
    $("#results").replaceChildren();
    $("#summary").replaceChildren(el("span", { class: "error", text: `Search failed: ${e.message}` }));
  }
}

function label(h) {
  if (h.file) return h.offset !== null && h.offset !== undefined ? `${h.file} · +${clock(h.offset)}` : h.file;
  if (h.uri && h.start >= DATED) return h.uri;
  return h.uri || "";
}

function renderResults(body, ms, collapsed) {
  const items = collapsed && body.spans ? body.spans : body.hits;
  const grid = $("#results");
  grid.replaceChildren();
  const what = body.query === "image" ? "the image" : `“${body.query}”`;
  if (!items.length) {
    $("#summary").replaceChildren(el("span", { text: `No results for ${what}. ` }), el("span", { class: "muted", text: "Try other words, fewer filters, or a wider time range." }));
    return;
  }
  const top = items[0].score;
  const windows = body.hits.length;
  $("#summary").replaceChildren(
    el("strong", { text: `${items.length} ${collapsed ? "moments" : "clips"}` }),
    el("span", { class: "muted", text: ` for ${what}` + (collapsed && items.length !== windows ? ` (${windows} windows merged)` : "") + ` · ${Math.round(ms)} ms` }));
  for (const h of items) {
    const span = h.end - h.start;
    const card = el("article", { class: "card", tabindex: "0", "data-id": h.id, "data-start": h.start, title: "Play this moment" },
      el("div", { class: "thumb" },
        el("img", { src: h.thumbnail_url, alt: `${h.source} ${timeRange(h.start, h.end)}`, loading: "lazy" }),
        el("span", { class: "score", text: h.score.toFixed(3) }),
        el("span", { class: "dur", text: clock(span) }),
        h.hits > 1 ? el("span", { class: "count", text: `${h.hits} windows` }) : null,
        el("span", { class: "play" })),
      el("div", { class: "bar" }, el("i", { style: `width:${Math.max(4, Math.min(100, (h.score / (top || 1)) * 100)).toFixed(0)}%` })),
      el("div", { class: "meta" },
        el("div", { class: "row1" }, el("span", { class: "src", text: h.source }), el("span", { class: "time", text: timeRange(h.start, h.end) })),
        el("div", { class: "row2", text: label(h) || "\u00a0", title: h.uri || "" })));
    card.addEventListener("click", () => play(h.id, h));
    card.addEventListener("keydown", (e) => { if (e.key === "Enter") play(h.id, h); });
    grid.append(card);
  }
  const want = new URLSearchParams(location.search).get("play");
  if (want && !state.playing) play(want, items.find((h) => h.id === want) || null);
}

async function play(id, hit) {
  state.playing = id;
  for (const c of document.querySelectorAll(".card")) c.classList.toggle("active", c.dataset.id === id);
  const player = $("#player"), video = $("#video");
  player.hidden = false;
  document.body.classList.add("playing");
  $("#player-note").hidden = true;
  $("#player-still").hidden = true;
  video.hidden = false;
  $("#player-title").textContent = hit ? hit.source : "…";
  $("#player-sub").textContent = hit ? timeRange(hit.start, hit.end) : "";
  $("#player-meta").replaceChildren();
  const link = new URLSearchParams(location.search);
  link.set("play", id);
  $("#player-link").href = "/?" + link.toString();
  let info;
  try {
    info = await api("/play/" + encodeURIComponent(id));
  } catch (e) {
    showNote(`Cannot play this clip: ${e.message}`, id);
    return;
  }
  if (state.playing !== id) return;
  $("#player-title").textContent = info.source + (info.file ? ` · ${info.file}` : "");
  $("#player-sub").textContent = timeRange(info.start, info.end);
  const meta = [["Source", info.source], ["Time", timeRange(info.start, info.end)]];
  if (info.file) meta.push(["File", info.file]);
  if (info.file_offset !== null && info.file_offset !== undefined) meta.push(["Offset in file", "+" + clock(info.file_offset)]);
  if (hit) meta.push(["Score", hit.score.toFixed(4)]);
  if (hit && hit.hits > 1) meta.push(["Windows merged", String(hit.hits)]);
  if (info.mode) meta.push(["Playback", { direct: "the file, as it is", remux: "this span, remuxed to MP4", transcode: "this span, re-encoded to H.264", recording: "the stream's recording" }[info.mode] || info.mode]);
  $("#player-meta").replaceChildren(...meta.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  if (!info.url) {
    showNote(info.reason || "This clip cannot be played.", id);
    $("#player-open").hidden = true;
    return;
  }
  $("#player-open").hidden = false;
  $("#player-open").href = info.url;
  video.dataset.offset = info.offset;
  video.dataset.mode = info.mode;
  const seek = () => {
    video.currentTime = info.offset;
    const p = video.play();
    if (p) p.catch(() => { /* autoplay refused: the controls are there */ });
  };
  video.onerror = () => showNote("The browser could not play this video" + (video.error ? ` (${video.error.message || "code " + video.error.code})` : "") + ".", id);
  if (video.getAttribute("src") === info.url && video.readyState >= 1) seek();
  else {
    video.onloadedmetadata = seek;
    video.src = info.url;
  }
}

function showNote(text, id) {
  const video = $("#video");
  video.pause();
  video.removeAttribute("src");
  video.load();
  video.hidden = true;
  const still = $("#player-still");
  still.src = "/thumb/" + encodeURIComponent(id);
  still.hidden = false;
  const note = $("#player-note");
  note.textContent = text;
  note.hidden = false;
}

function closePlayer() {
  const video = $("#video");
  video.pause();
  $("#player").hidden = true;
  document.body.classList.remove("playing");
  state.playing = null;
  for (const c of document.querySelectorAll(".card.active")) c.classList.remove("active");
}

function setImage(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) { $("#summary").replaceChildren(el("span", { class: "error", text: "That is not an image." })); return; }
  state.image = file;
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = URL.createObjectURL(file);
  $("#image-preview").src = state.imageUrl;
  $("#image-chip").hidden = false;
  $("#q").value = "";
  $("#q").placeholder = "Searching by the image (clear it to search by text)";
  runSearch(false);
}

function clearImage() {
  state.image = null;
  $("#image-chip").hidden = true;
  $("#image-file").value = "";
  $("#q").placeholder = "Describe a moment: \"a red circle moves to the left\"";
}

function renderSourceChips() {
  const box = $("#sources-filter");
  const names = [...new Set([...state.sources, ...state.selected])].sort();
  if (!names.length) { box.replaceChildren(el("span", { class: "muted", text: "all" })); return; }
  box.replaceChildren(...names.map((n) => {
    const on = state.selected.has(n);
    const info = state.known[n] || {};
    return el("button", { type: "button", class: "chip" + (on ? " on" : ""), "aria-pressed": on ? "true" : "false", "data-source": n, title: info.type ? `${info.type} source` : "",
      onclick: () => { if (state.selected.has(n)) state.selected.delete(n); else state.selected.add(n); renderSourceChips(); } },
    el("i", { class: "dot " + (info.state || "") }), n);
  }));
}

async function loadSources() {
  const names = new Set();
  try {
    const r = await api("/recordings");
    for (const [n, v] of Object.entries(r.sources)) { names.add(n); state.known[n] = Object.assign(state.known[n] || {}, { type: v.type }); }
  } catch (e) { /* older server */ }
  try {
    const s = await api("/status");
    for (const [n, v] of Object.entries(s.sources || {})) { names.add(n); state.known[n] = Object.assign(state.known[n] || {}, { state: stateClass(v.state) }); }
    updateConn(s);
  } catch (e) { updateConn(null); }
  state.sources = [...names];
  renderSourceChips();
}

function initSearch() {
  $("#view-search").hidden = false;
  applyParams(new URLSearchParams(location.search));
  loadSources();
  $("#search-form").addEventListener("submit", (e) => { e.preventDefault(); if (state.image && $("#q").value.trim()) clearImage(); runSearch(); });
  $("#range-preset").addEventListener("change", () => {
    const custom = $("#range-preset").value === "custom";
    $("#custom-range").hidden = !custom;
    if (custom && !$("#since").value) $("#since").value = toLocalInput(Date.now() / 1000 - 3600);
  });
  $("#image-file").addEventListener("change", (e) => setImage(e.target.files[0]));
  $("#image-clear").addEventListener("click", () => { clearImage(); $("#results").replaceChildren(); $("#summary").replaceChildren(); });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData || {}).items || []].find((i) => i.type.startsWith("image/"));
    if (item) { e.preventDefault(); setImage(item.getAsFile()); }
  });
  const main = $("#view-search");
  main.addEventListener("dragover", (e) => { e.preventDefault(); main.classList.add("drop"); });
  main.addEventListener("dragleave", () => main.classList.remove("drop"));
  main.addEventListener("drop", (e) => { e.preventDefault(); main.classList.remove("drop"); setImage(e.dataTransfer.files[0]); });
  $("#player-close").addEventListener("click", closePlayer);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closePlayer(); });
  window.addEventListener("popstate", () => { applyParams(new URLSearchParams(location.search)); if ($("#q").value) runSearch(false); });
  const p = new URLSearchParams(location.search);
  if (p.get("q")) runSearch(false);
  else $("#q").focus();
  setInterval(async () => { try { updateConn(await api("/status")); } catch (e) { updateConn(null); } }, 10000);
}

// ------------------------------------------------------------------ sources view
function stateClass(s) {
  if (!s) return "unknown";
  if (s === "running") return "ok";
  if (s === "connecting" || s === "reconnecting" || s === "restarting" || s === "starting" || s.startsWith("waiting")) return "warn";
  if (s === "down" || s === "error") return "bad";
  return "idle";
}
function stateLabel(s) {
  if (s === "connecting") return "reconnecting";
  return s || "unknown";
}

function updateConn(s) {
  const c = $("#conn");
  const down = s ? Object.values(s.sources || {}).filter((v) => stateClass(v.state) === "bad").length : 0;
  if (!s) { c.className = "conn bad"; c.lastChild.textContent = "indexer not reporting"; }
  else if (s.stale || s.running === false) { c.className = "conn bad"; c.lastChild.textContent = "indexer stopped"; }
  else { c.className = "conn " + (down ? "warn" : "ok"); c.lastChild.textContent = down ? `${down} source${down > 1 ? "s" : ""} down` : "indexing"; }
  const alert = $("#nav-alert");
  alert.hidden = !down;
  alert.textContent = down ? String(down) : "";
}

let recordings = {};
async function refreshStatus() {
  let s;
  try {
    s = await api("/status");
  } catch (e) {
    updateConn(null);
    $("#status-updated").textContent = `no status: ${e.message}`;
    $("#status-updated").className = "error";
    document.body.dataset.state = "error";
    return;
  }
  updateConn(s);
  const sources = Object.values(s.sources || {}).sort((a, b) => a.name.localeCompare(b.name));
  const now = Date.now() / 1000;
  $("#status-updated").className = "muted";
  $("#status-updated").textContent = `updated ${localTime(s.updated || now, false)}` + (s.stale ? " (stale: the indexer is not running)" : "");
  const count = (cls) => sources.filter((v) => stateClass(v.state) === cls).length;
  const rows = sources.reduce((a, v) => a + (v.rows || 0), 0);
  const enc = s.encoder || {};
  $("#status-cards").replaceChildren(
    card("Sources", String(sources.length), `${count("ok")} running`),
    card("Down", String(count("bad")), `${count("warn")} reconnecting or waiting`, count("bad") ? "bad" : count("warn") ? "warn" : "ok"),
    card("Rows indexed", num(rows), s.model ? `model ${s.model}` : ""),
    card("Encoder", `${num(enc.queued_chunks)} queued`, enc.last_batch_s !== undefined ? `last batch ${(enc.last_batch_s * 1000).toFixed(0)} ms · ${enc.precision || ""}` : ""),
    card("Writer", `${num((s.writer || {}).pending)} pending`, s.started ? `up since ${localTime(s.started)}` : ""));
  const span = Number($("#timeline-span").value);
  $("#timeline-label").textContent = `(last ${$("#timeline-span").selectedOptions[0].textContent})`;
  const body = $("#sources-table tbody");
  body.replaceChildren(...sources.map((v) => sourceRow(v, now, span)));
  $("#status-empty").hidden = sources.length > 0;
  $("#status-empty").textContent = "No sources configured.";
  document.body.dataset.state = "results";
}

function card(title, value, sub, cls = "") {
  return el("div", { class: "stat " + cls }, el("div", { class: "stat-title", text: title }), el("div", { class: "stat-value", text: value }), el("div", { class: "stat-sub", text: sub || "" }));
}

function sourceRow(v, now, span) {
  const cls = stateClass(v.state);
  const rec = recordings[v.name];
  const recCell = !rec ? el("span", { class: "muted", text: "–" })
    : rec.type !== "stream" ? el("span", { class: "muted", text: rec.type === "folder" ? "files" : "file" })
      : !rec.recorded ? el("span", { class: "muted", text: "off" })
        : el("span", { text: `${bytes(rec.bytes)} · ${rec.segments} seg`, title: rec.oldest ? `since ${localTime(rec.oldest)}` : "" });
  return el("tr", { "data-source": v.name, "data-state": v.state, class: cls },
    el("td", {}, el("div", { class: "src-name", text: v.name }), el("div", { class: "muted small", text: v.kind ? `${v.kind}${v.uri ? " · " + v.uri : ""}` : (v.uri || "") })),
    el("td", {}, el("span", { class: "pill " + cls, text: stateLabel(v.state) }),
      v.last_frame_t ? el("div", { class: "muted small", text: `last frame ${ago(v.last_frame_t)}` }) : null),
    el("td", { class: "num", text: v.lag_s === null || v.lag_s === undefined ? "–" : duration(v.lag_s) }),
    el("td", { class: "num", text: (v.fps || 0).toFixed(2) }),
    el("td", { class: "num", text: num(v.frames) }),
    el("td", { class: "num", text: num(v.rows) }),
    el("td", { class: "num" + (v.errors ? " error" : ""), text: num(v.errors) }),
    el("td", {}, recCell),
    el("td", { class: "timeline-col" }, timeline(v, now, span)),
    el("td", { class: "last-error" }, v.last_error ? el("div", { text: v.last_error, title: v.last_error }) : el("span", { class: "muted", text: "–" }),
      v.last_error_time ? el("div", { class: "muted small", text: ago(v.last_error_time) }) : null));
}

function timeline(v, now, span) {
  const t0 = now - span;
  const bar = el("div", { class: "timeline", title: "gaps (red) in the last " + duration(span) });
  const pos = (t) => Math.max(0, Math.min(100, ((t - t0) / span) * 100));
  let any = false;
  for (const g of v.gaps || []) {
    const a = g.start !== undefined && g.start !== null ? g.start : g.time, b = g.end !== undefined && g.end !== null ? g.end : g.time;
    if (b < t0) continue;
    any = true;
    bar.append(el("i", { class: "gap", style: `left:${pos(a)}%;width:${Math.max(0.6, pos(b) - pos(a))}%`, title: `${localTime(a)} – ${localTime(b)}: ${g.message || "gap"}` }));
  }
  const cls = stateClass(v.state);
  if ((cls === "bad" || cls === "warn") && v.last_frame_t && v.last_frame_t > t0 - span) {
    any = true;
    bar.append(el("i", { class: "gap open", style: `left:${pos(v.last_frame_t)}%;width:${Math.max(0.6, 100 - pos(v.last_frame_t))}%`, title: `no frames since ${localTime(v.last_frame_t)}` }));
  }
  bar.dataset.gaps = String(bar.children.length);
  if (!any) bar.classList.add("clean");
  return bar;
}

async function refreshRecordings() {
  try { recordings = (await api("/recordings")).sources; } catch (e) { recordings = {}; }
}

function initSources() {
  $("#view-sources").hidden = false;
  document.title = "pystream · sources";
  refreshRecordings().then(refreshStatus);
  setInterval(refreshStatus, 2000);
  setInterval(refreshRecordings, 15000);
  $("#timeline-span").addEventListener("change", refreshStatus);
}

// ------------------------------------------------------------------ start
document.addEventListener("DOMContentLoaded", () => {
  const view = document.body.dataset.view;
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("current", a.dataset.nav === view);
  if (document.body.dataset.auth === "1") $("#logout").hidden = false;
  if (view === "sources") initSources();
  else initSearch();
});
