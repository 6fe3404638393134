// rtai live operator page: stream list, per-stream live charts (WebSocket),
// the last hour from the store, viewer sessions, switches and an hls.js preview.
// Plain JS, no dependencies; hls.js is loaded from this server when a preview starts.
"use strict";
(function () {
  const cfg = window.RTAI_OPS || {};
  const params = new URLSearchParams(location.search);
  const token = params.get("access_token");
  const $ = (id) => document.getElementById(id);
  const withToken = (path) =>
    token ? path + (path.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token) : path;
  const api = (path) =>
    fetch(withToken(path), { cache: "no-store" }).then((r) => (r.ok ? r.json() : Promise.reject(r.status)));
  const WINDOW_MS = 3600 * 1000;
  const COLORS = ["#1a73e8", "#e8710a", "#188038", "#9334e6", "#d01884", "#007b83", "#5f6368"];

  // What a test (or a curious operator) can read.
  const ops = (window.rtaiOps = { selected: null, streams: [], viewers: null, points: 0, drawn: {} });

  let selected = params.get("stream");
  let socket = null;
  let series = []; // {t, viewers, ingress_bps, egress_bps, renditions}
  let hls = null;

  function fmtBits(b) {
    if (b >= 1e6) return (b / 1e6).toFixed(2) + " Mbit/s";
    if (b >= 1e3) return (b / 1e3).toFixed(0) + " kbit/s";
    return Math.round(b) + " bit/s";
  }
  function fmtDur(s) {
    s = Math.floor(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + (s % 60) + "s";
  }
  function td(text, cls) {
    const c = document.createElement("td");
    c.textContent = text == null ? "" : String(text);
    if (cls) c.className = cls;
    return c;
  }
  function healthClass(h) {
    return h >= 80 ? "health-good" : h >= 50 ? "health-warn" : "health-bad";
  }

  function renderStreams(list) {
    ops.streams = list;
    const body = $("streams").tBodies[0];
    body.replaceChildren();
    for (const s of list) {
      const tr = document.createElement("tr");
      tr.dataset.stream = s.stream;
      if (s.stream === selected) tr.className = "sel";
      tr.append(
        td(s.stream),
        td(s.status + (s.error ? ": " + s.error : ""), "status status-" + s.status),
        td(s.publisher || "-"),
        td(fmtDur(s.uptime_s)),
        td(fmtBits(s.ingress_bps)),
        td(fmtBits(s.egress_bps)),
        td(s.viewers, "viewers"),
        td(s.health, "health " + healthClass(s.health)),
      );
      tr.addEventListener("click", () => select(s.stream));
      body.append(tr);
    }
    // The stream asked for (?stream=), live or not (its last hour is in the
    // store, e.g. after a restart of the server), or the first one; once.
    if (!socket && (selected || list.length)) select(selected || list[0].stream);
  }

  function refreshStreams() {
    return api("/api/streams")
      .then((r) => {
        $("conn").textContent = "updated " + new Date().toLocaleTimeString();
        renderStreams(r.streams);
      })
      .catch((e) => ($("conn").textContent = "API error " + e));
  }

  function setRowStatus(stream, status, viewers) {
    const row = document.querySelector('#streams tr[data-stream="' + CSS.escape(stream) + '"]');
    if (!row) return;
    if (status) {
      const c = row.querySelector(".status");
      c.textContent = status;
      c.className = "status status-" + status;
    }
    if (viewers != null) row.querySelector(".viewers").textContent = viewers;
  }

  // A line chart of `lines` ({label, color, values: [[t, v]...]}) over the last hour.
  function chart(canvas, lines, fmt) {
    const ctx = canvas.getContext("2d");
    const W = canvas.width, H = canvas.height, L = 60, B = 18;
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, W, H);
    // The x axis spans the data (10 s at least, the last hour at most).
    const now = Date.now();
    let first = now;
    let max = 1;
    for (const l of lines)
      for (const [t, v] of l.values) {
        max = Math.max(max, v);
        first = Math.min(first, t);
      }
    const span = Math.min(WINDOW_MS, Math.max(10000, now - first));
    const t0 = now - span;
    max *= 1.1;
    ctx.strokeStyle = "#dadce0";
    ctx.fillStyle = "#5f6368";
    ctx.font = "11px sans-serif";
    for (let i = 0; i <= 4; i++) {
      const y = H - B - ((H - B - 4) * i) / 4;
      ctx.beginPath();
      ctx.moveTo(L, y);
      ctx.lineTo(W, y);
      ctx.stroke();
      ctx.fillText(fmt((max * i) / 4), 2, y + 4);
    }
    ctx.fillText("-" + fmtDur(span / 1000), L, H - 4);
    ctx.fillText("now", W - 24, H - 4);
    let drawn = 0;
    lines.forEach((l, i) => {
      ctx.strokeStyle = l.color || COLORS[i % COLORS.length];
      ctx.lineWidth = 2;
      ctx.beginPath();
      let started = false;
      for (const [t, v] of l.values) {
        if (t < t0) continue;
        const x = L + ((W - L) * (t - t0)) / span;
        const y = H - B - ((H - B - 4) * v) / max;
        if (started) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        started = true;
        drawn++;
      }
      ctx.stroke();
      ctx.fillStyle = ctx.strokeStyle;
      ctx.fillText(l.label, L + 6 + i * 90, 12);
    });
    ops.drawn[canvas.id] = drawn;
  }

  function draw() {
    ops.points = series.length;
    chart($("chart-viewers"), [{ label: "viewers", values: series.map((p) => [p.t, p.viewers]) }], (v) =>
      v.toFixed(0),
    );
    chart(
      $("chart-bitrate"),
      [
        { label: "ingress", values: series.map((p) => [p.t, p.ingress_bps]) },
        { label: "egress", values: series.map((p) => [p.t, p.egress_bps]) },
      ],
      fmtBits,
    );
    const names = new Set();
    for (const p of series) for (const k of Object.keys(p.renditions || {})) names.add(k);
    chart(
      $("chart-renditions"),
      [...names].sort().map((n) => ({ label: n, values: series.map((p) => [p.t, (p.renditions || {})[n] || 0]) })),
      (v) => v.toFixed(0),
    );
  }

  function renderSessions(v) {
    ops.viewers = v.viewers;
    // A session joined or left (its feed event brought us here): the row too, now.
    setRowStatus(v.stream, null, v.viewers);
    const body = $("sessions").tBodies[0];
    body.replaceChildren();
    for (const s of v.sessions) {
      const tr = document.createElement("tr");
      tr.append(
        td(s.id.slice(0, 8)),
        td(s.remote || "-"),
        td(new Date(s.joined_ms).toLocaleTimeString()),
        td(s.rendition || "-"),
        td(s.switches),
        td(s.stalls),
        td(s.bytes),
      );
      body.append(tr);
    }
  }

  function addSwitch(sw) {
    const li = document.createElement("li");
    li.textContent =
      new Date(sw.t).toLocaleTimeString() + " " + String(sw.session).slice(0, 8) + ": " + (sw.from || "-") + " → " + sw.to;
    $("switches").prepend(li);
    while ($("switches").children.length > 50) $("switches").lastChild.remove();
  }

  function refreshSessions() {
    if (!selected) return Promise.resolve();
    return api("/api/streams/" + encodeURIComponent(selected) + "/viewers")
      .then(renderSessions)
      .catch(() => {});
  }

  function startPreview(stream) {
    const video = $("preview");
    stopPreview();
    $("preview-toggle").textContent = "Stop preview";
    const url = (cfg.master || "/hls/{stream}/master.m3u8").replace("{stream}", encodeURIComponent(stream));
    const attach = () => {
      if (window.Hls && window.Hls.isSupported()) {
        hls = new window.Hls({ lowLatencyMode: true });
        hls.loadSource(url);
        hls.attachMedia(video);
      } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
        video.src = url;
      }
      video.play().catch(() => {});
    };
    if (window.Hls || !cfg.hls_js) return attach();
    const s = document.createElement("script");
    s.src = cfg.hls_js;
    s.onload = attach;
    s.onerror = () => ($("history-note").textContent += " (preview: hls.js not available)");
    document.head.append(s);
  }

  function select(stream) {
    if (stream === selected && socket) return;
    selected = stream;
    ops.selected = stream;
    series = [];
    $("detail").hidden = false;
    $("detail-title").textContent = stream;
    $("switches").replaceChildren();
    for (const tr of $("streams").tBodies[0].rows) tr.className = tr.dataset.stream === stream ? "sel" : "";
    if (socket) socket.close();
    const enc = encodeURIComponent(stream);
    // The last hour from the store, then the live feed on top.
    api("/api/streams/" + enc + "/metrics?since=-3600")
      .then((h) => {
        if (selected !== stream) return;
        const live = series;
        series = h.points.concat(live.filter((p) => !h.points.length || p.t > h.points[h.points.length - 1].t));
        $("history-note").textContent =
          h.points.length + " stored points, " + h.totals.sessions + " sessions, " + h.totals.stalls + " stalls in the last hour";
        h.switches.slice().reverse().forEach(addSwitch);
        draw();
      })
      .catch((e) => ($("history-note").textContent = "history unavailable (" + e + ")"));
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(withToken(proto + "//" + location.host + "/ws/streams/" + enc));
    socket.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      if (m.stream !== selected) return;
      if (m.type === "stats") {
        series.push(m);
        while (series.length && series[0].t < Date.now() - WINDOW_MS) series.shift();
        setRowStatus(m.stream, m.status, m.viewers);
        ops.viewers = m.viewers;
        draw();
      } else if (m.type === "status") {
        setRowStatus(m.stream, m.status, null);
      } else if (m.type === "switch") {
        addSwitch(m);
        refreshSessions();
      } else if (m.type === "session") {
        refreshSessions();
      }
    };
    refreshSessions();
    // The preview is a viewer of its own: it plays only when asked, so that
    // opening this page does not change the counts it shows.
    stopPreview();
  }

  function stopPreview() {
    if (hls) {
      hls.destroy();
      hls = null;
    }
    const video = $("preview");
    video.removeAttribute("src");
    video.load();
    $("preview-toggle").textContent = "Play preview";
  }

  $("preview-toggle").addEventListener("click", () => {
    if (hls || $("preview").currentSrc) stopPreview();
    else if (selected) startPreview(selected);
  });
  refreshStreams();
  setInterval(refreshStreams, 2000);
  setInterval(refreshSessions, 2000);
})();
