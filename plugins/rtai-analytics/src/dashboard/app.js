// rtai analytics dashboard: no dependencies, works offline.
"use strict";
const params = new URLSearchParams(location.search);
const token = params.get("access_token");
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token) : url;
const api = (url) => fetch(withToken(url)).then((r) => { if (!r.ok) throw new Error(url + ": " + r.status); return r.json(); });
const COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7"];
const MAX_ROWS = 200;
let totalEvents = 0;
let totalClips = 0;

function fmtTime(ns) {
  const s = ns / 1e9;
  return s.toFixed(2) + " s";
}

function describe(ev) {
  if (ev.type === "clip") return "clip " + fmtTime(ev.start_ns) + " – " + fmtTime(ev.end_ns) + " (" + (ev.data && ev.data.reason) + ")";
  if (ev.text) return ev.text;
  let what = ev.label || "";
  if (ev.track_id !== null && ev.track_id !== undefined) what += " #" + ev.track_id;
  return what;
}

function addEvent(ev, prepend) {
  const tbody = document.querySelector("#events tbody");
  const tr = document.createElement("tr");
  tr.className = ev.type === "clip" ? "clip" : "";
  tr.dataset.type = ev.type;
  const cells = [fmtTime(ev.start_ns), ev.type, ev.stream, describe(ev),
    ev.confidence === null || ev.confidence === undefined ? "" : ev.confidence.toFixed(2),
    (ev.clip_worthy_score || 0).toFixed(2)];
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = c;
    tr.appendChild(td);
  }
  tr.lastChild.className = "score";
  if (prepend) tbody.prepend(tr); else tbody.appendChild(tr);
  while (tbody.children.length > MAX_ROWS) tbody.removeChild(tbody.lastChild);
  totalEvents += 1;
  document.getElementById("total-events").textContent = totalEvents;
  if (ev.type === "clip") addClip(ev);
}

function addClip(ev) {
  totalClips += 1;
  document.getElementById("total-clips").textContent = totalClips;
  renderClip(ev);
}

// One card per clip marker, newest first: a thumbnail (the clip's first frame, once
// cliprecorder stored it: data.play_url) that plays in place, its score and reason.
const clipCards = new Map();
function renderClip(ev) {
  const ol = document.getElementById("clips");
  let li = clipCards.get(ev.event_id);
  if (!li) {
    li = document.createElement("li");
    li.className = "clip-card";
    const thumb = document.createElement("div");
    thumb.className = "thumb pending";
    thumb.textContent = "recording…";
    const info = document.createElement("div");
    info.className = "clip-info";
    const score = document.createElement("b");
    score.className = "clip-score";
    score.textContent = (ev.clip_worthy_score || 0).toFixed(2);
    const reason = document.createElement("span");
    reason.className = "clip-reason";
    reason.textContent = (ev.data && ev.data.reason) || "";
    const when = document.createElement("span");
    when.className = "clip-time";
    when.textContent = ev.stream + " " + fmtTime(ev.start_ns) + " – " + fmtTime(ev.end_ns);
    info.append(score, " ", reason, document.createElement("br"), when);
    li.append(thumb, info);
    clipCards.set(ev.event_id, li);
    ol.prepend(li);
    while (ol.children.length > 20) {
      const last = ol.lastChild;
      for (const [k, v] of clipCards) if (v === last) clipCards.delete(k);
      ol.removeChild(last);
    }
  }
  const playUrl = ev.data && ev.data.play_url;
  const thumb = li.querySelector(".thumb");
  if (playUrl && thumb.classList.contains("pending")) {
    const video = document.createElement("video");
    video.className = "thumb";
    video.preload = "metadata";
    video.muted = true;
    video.playsInline = true;
    video.controls = true;
    video.title = ev.data.url || playUrl;
    // #t=0.1: the browser shows that frame as the thumbnail before playing.
    video.src = (/^https?:/.test(playUrl) ? playUrl : withToken(playUrl)) + "#t=0.1";
    li.replaceChild(video, thumb);
    li.dataset.url = ev.data.url || playUrl;
  }
}

function drawBars(canvas, groups, seriesNames, unit) {
  // groups: [{label, values: [..]}]
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  // What the canvas shows once this returns, for tests and tools (a canvas has no DOM to read).
  canvas.dataset.drawn = JSON.stringify(groups.map((g) => g.label));
  if (!groups.length) return false;
  const left = 50, bottom = 40, top = 20;
  const max = Math.max(1e-9, ...groups.flatMap((g) => g.values));
  ctx.strokeStyle = "#999";
  ctx.beginPath(); ctx.moveTo(left, top); ctx.lineTo(left, h - bottom); ctx.lineTo(w - 10, h - bottom); ctx.stroke();
  ctx.fillStyle = "#333"; ctx.font = "11px sans-serif";
  ctx.fillText(max.toPrecision(3) + (unit ? " " + unit : ""), 2, top + 4);
  const gw = (w - left - 20) / groups.length;
  const bw = Math.max(2, (gw - 10) / seriesNames.length);
  groups.forEach((g, i) => {
    g.values.forEach((v, j) => {
      const bh = Math.max(1, (h - bottom - top) * v / max);
      ctx.fillStyle = COLORS[j % COLORS.length];
      ctx.fillRect(left + 5 + i * gw + j * bw, h - bottom - bh, bw - 1, bh);
    });
    ctx.fillStyle = "#333";
    ctx.save();
    ctx.translate(left + 5 + i * gw, h - bottom + 12);
    ctx.fillText(g.label.slice(0, Math.max(6, Math.floor(gw / 6))), 0, 0);
    ctx.restore();
  });
  if (seriesNames.length > 1) {
    seriesNames.forEach((n, j) => {
      ctx.fillStyle = COLORS[j % COLORS.length];
      ctx.fillRect(w - 60 * (seriesNames.length - j), 4, 10, 10);
      ctx.fillStyle = "#333";
      ctx.fillText(n, w - 60 * (seriesNames.length - j) + 14, 13);
    });
  }
  return true;
}

async function refreshCharts() {
  try {
    const lat = await api("/api/latency");
    const groups = lat.pads.map((p) => ({ label: p.element + "." + p.pad, values: [p.p50 * 1e3, p.p95 * 1e3, p.p99 * 1e3] }));
    const drawn = drawBars(document.getElementById("latency-chart"), groups, ["P50", "P95", "P99"], "ms");
    document.getElementById("latency-empty").classList.toggle("hidden", drawn);
    const sum = await api("/api/summary");
    document.getElementById("element").textContent = sum.element;
    const classes = Object.entries(sum.summary.detections_per_class).map(([k, v]) => ({ label: k, values: [v] }));
    drawBars(document.getElementById("class-chart"), classes, ["objects"], "");
    for (const clip of sum.summary.clip_markers) renderClip(clip);
  } catch (e) {
    setStatus("error: " + e.message, false);
  }
}

function setStatus(text, live) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.classList.toggle("live", live);
}

async function start() {
  try {
    const page = await api("/api/events?order=desc&limit=50");
    page.events.reverse().forEach((ev) => addEvent(ev, true));
    totalEvents = page.total;
    document.getElementById("total-events").textContent = totalEvents;
  } catch (e) {
    setStatus("error: " + e.message, false);
  }
  const source = new EventSource(withToken("/api/events/stream"));
  source.onopen = () => setStatus("live", true);
  source.onerror = () => setStatus("reconnecting…", false);
  for (const t of ["object_appear", "object_leave", "speech", "scene", "clip"]) {
    source.addEventListener(t, (m) => addEvent(JSON.parse(m.data), true));
  }
  refreshCharts();
  setInterval(refreshCharts, 1000);
}

start();
