// The live proof of issues 17 and 26 in Debian's chromium (playwright-core),
// driven by tests/watch_viewers.rs over stdin/stdout (one JSON line a stage).
//   argv: watchUrl (http://host:port/watch/<stream>) n close opsClose shot ffmpegPid token
//   (token: the server's auth token for /ops, /api and /ws; the players need none)
// 1. Opens n abrsink player pages (hls.js), waits until every one renders a
//    frame and the three views of the count agree on n (the JSON API,
//    Prometheus /metrics and the WebSocket's per-second stats, read by one more
//    page that fetches no playlist), closes `close` of them as a user closes a
//    tab (runBeforeUnload: their pagehide beacon runs) and measures until all
//    three count the rest.                                   -> {"stage":"viewers"}
// 2. Opens /ops?stream=<stream>: time until its row and its detail show the
//    n - close viewers (page open → live data); a screenshot with the charts
//    drawn (their series colours counted in each chart's box); closes opsClose
//    more viewers: time until /ops (and the three views) show the rest.
//                                                            -> {"stage":"ops"}
// 3. Kills the publisher (SIGKILL to ffmpegPid): time until the stream's row
//    on /ops says `ended`; then closes the remaining viewers. -> {"stage":"ended"}
// 4. Waits for a "restarted" line (the test restarted the server on the same
//    store), opens /ops?stream=<stream> again: the stored last hour is drawn.
//                                                            -> {"stage":"history"}
// On a failure or timeout: {"error"} and a non-zero exit.
import { createInterface } from "node:readline";
import { AUTOPLAY, colouredPixels, until, withChromium } from "./browser.mjs";

const [url, nArg, closeArg, opsCloseArg, shot, ffmpegPid, token] = process.argv.slice(2);
const n = Number(nArg), close = Number(closeArg), opsClose = Number(opsCloseArg);
const u = new URL(url);
const stream = u.pathname.split("/").pop();
const auth = "access_token=" + encodeURIComponent(token);
const api = u.origin + "/api/streams/" + stream;
const metricsUrl = u.origin + "/metrics";
const wsUrl = u.origin.replace(/^http/, "ws") + "/ws/streams/" + stream + "?" + auth;
const opsUrl = u.origin + "/ops?stream=" + stream + "&" + auth;
const stdin = createInterface({ input: process.stdin });
const nextLine = () => new Promise((res) => stdin.once("line", res));
const say = (v) => console.log(JSON.stringify(v));

const fromApi = async () => (await (await fetch(api + "?" + auth)).json()).viewers;
const fromMetrics = async () => {
  const text = await (await fetch(metricsUrl)).text();
  const line = text.split("\n").find((l) => l.startsWith("rtai_delivery_viewers{") && l.includes(`stream="${stream}"`));
  return line === undefined ? undefined : Number(line.trim().split(/\s+/).pop());
};
let observer;
const fromWs = async () => observer.evaluate(() => window.wsViewers);
// The count, once the API, /metrics and the WebSocket all say `want`;
// `reached` keeps when each view first said it (ms since `since`).
let reached = {}, since = Date.now();
const restart = () => { reached = {}; since = Date.now(); return since; };
const viewersAre = (want) => async () => {
  const seen = { api: await fromApi(), metrics: await fromMetrics(), ws: await fromWs() };
  for (const [view, v] of Object.entries(seen)) {
    if (v === want && reached[view] === undefined) reached[view] = Date.now() - since;
  }
  return Object.values(seen).every((v) => v === want) ? want : undefined;
};
// The /ops page shows `want` viewers for the stream: its row and its detail.
const opsShows = (want) => {
  const row = document.querySelector(`#streams tr[data-stream="${window.rtaiStream}"] .viewers`);
  return row !== null && row.textContent === String(want) && window.rtaiOps.viewers === want;
};
const openOps = async (browser, errors) => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("response", (r) => { if (r.status() >= 400) errors.push(r.status() + " " + r.url()); });
  await page.addInitScript((s) => { window.rtaiStream = s; }, stream);
  const t0 = Date.now();
  await page.goto(opsUrl);
  return { page, t0 };
};
// Every open page in `list` played `seconds` more.
const settle = async (list, seconds) => {
  const open = list.filter((p) => !p.isClosed());
  const played = await Promise.all(open.map((p) => p.evaluate(() => document.getElementById("video").currentTime)));
  await Promise.all(open.map((p, i) => p.waitForFunction((t) => document.getElementById("video").currentTime >= t,
    played[i] + seconds, { timeout: 15000 })));
};
// app.js's first three series colours (COLORS): blue, orange, green.
const PALETTE = [[0x1a, 0x73, 0xe8], [0xe8, 0x71, 0x0a], [0x18, 0x80, 0x38]];
const CHARTS = ["chart-viewers", "chart-bitrate", "chart-renditions"];

// The viewer pages, for the error report: each one's playback state.
let pages = [];
const pageStates = async () => ({
  pages: await Promise.all(pages.map((p) => p.isClosed() ? "closed" : p.evaluate(() => {
    const v = document.getElementById("video"), b = v.buffered;
    return { t: v.currentTime, end: b.length ? b.end(b.length - 1) : null, session: window.abr.session,
      firstFrame: window.abr.firstFrame, errors: window.abr.errors };
  }).catch((e) => String(e)))),
  wsLeft: observer && await observer.evaluate(() => window.wsLeft).catch(() => null),
});

await withChromium([AUTOPLAY], async (browser) => {
  const errors = [];
  observer = await browser.newPage();
  await observer.goto(api + "?" + auth);
  await observer.evaluate((ws) => {
    window.wsViewers = undefined;
    // When each session left and why (Date.now()), as the feed says it.
    window.wsLeft = {};
    const socket = new WebSocket(ws);
    socket.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "stats") window.wsViewers = msg.viewers;
      if (msg.type === "session" && msg.event === "left") window.wsLeft[msg.session] = { at: Date.now(), reason: msg.reason };
    };
  }, wsUrl);
  // Per closed page: ms from the close to the feed's `left` (the beacon's
  // arrival), and its reason (`closed`: the beacon; `timeout`: the 3x rule).
  const leftAfter = async (ids, t0) => {
    const left = await observer.evaluate(() => window.wsLeft);
    return ids.map((id) => (left[id] ? { ms: left[id].at - t0, reason: left[id].reason } : null));
  };
  // Small windows: ten pages composite little on 2 cores.
  pages = await Promise.all(Array.from({ length: n }, async () => {
    const page = await browser.newPage({ viewport: { width: 320, height: 240 } });
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("response", (r) => { if (r.status() >= 400) errors.push(r.status() + " " + r.url()); });
    await page.goto(url);
    return page;
  }));
  for (const page of pages) {
    await page.waitForFunction(() => window.abr && window.abr.firstFrame !== null && window.abr.session, null, { timeout: 30000 });
  }
  const sessions = await Promise.all(pages.map((p) => p.evaluate(() => window.abr.session)));
  const firstFrameMs = await Promise.all(pages.map((p) => p.evaluate(() => Math.round(window.abr.firstFrame))));
  const counted = await until("all viewers counted by the API, /metrics and the WebSocket", 5000, viewersAre(n));
  // Steady playback before closing: every page played 2 s more (the startup of
  // ten players at once is over). A renderer too busy to run its pagehide
  // handler when its tab closes loses the beacon (chromium does not wait long).
  await settle(pages, 2);
  let t0 = restart();
  await Promise.all(pages.slice(0, close).map((p) => p.close({ runBeforeUnload: true })));
  const after = await until("closed viewers gone from the API, /metrics and the WebSocket", 10000, viewersAre(n - close));
  const closeToCountMs = Date.now() - t0;
  const left = await leftAfter(sessions.slice(0, close), t0);
  const remaining = (await (await fetch(api + "/viewers?" + auth)).json()).sessions.map((s) => s.id);
  say({ stage: "viewers", open: n, closed: close, counted, after, closeToCountMs, reached, left, sessions, remaining, firstFrameMs, errors });

  // 2. The operator page with n - close viewers, then opsClose of them closed.
  const opsErrors = [];
  const ops = await openOps(browser, opsErrors);
  await ops.page.waitForFunction(opsShows, n - close, { timeout: 10000, polling: 20 });
  const loadedMs = Date.now() - ops.t0;
  // The charts (two points at least) in a screenshot, then the page's work
  // settles before the next closes.
  await ops.page.waitForFunction(() => window.rtaiOps.points >= 2, null, { timeout: 10000 });
  const chartPixels = await colouredPixels(ops.page, CHARTS, PALETTE, shot);
  const drawn = await ops.page.evaluate(() => window.rtaiOps.drawn);
  await settle(pages, 1);
  t0 = restart();
  await Promise.all(pages.slice(close, close + opsClose).map((p) => p.close({ runBeforeUnload: true })));
  await ops.page.waitForFunction(opsShows, n - close - opsClose, { timeout: 10000, polling: 20 });
  const shownMs = Date.now() - t0;
  const views = await until("the API, /metrics and the WebSocket agree", 10000, viewersAre(n - close - opsClose));
  const viewsReached = { ...reached };
  const opsLeft = await leftAfter(sessions.slice(close, close + opsClose), t0);
  // A viewer's quality switch: the last page's hls.js is told to play the other
  // rendition; time until /ops lists that switch (session → rendition).
  const viewer = pages[n - 1];
  const to = await viewer.evaluate(() => {
    const level = window.hls.currentLevel === 0 ? 1 : 0;
    return { level, name: window.hls.levels[level].height + "p" };
  });
  const prefix = sessions[n - 1].slice(0, 8);
  const switchesTo = (a) => [...document.querySelectorAll("#switches li")]
    .filter((li) => li.textContent.includes(" " + a.prefix + ": ") && li.textContent.endsWith("→ " + a.name)).length;
  const arg = JSON.stringify({ prefix, name: to.name });
  const before = await ops.page.evaluate(`(${switchesTo})(${arg})`);
  t0 = Date.now();
  await viewer.evaluate((level) => { window.hls.currentLevel = level; }, to.level);
  await ops.page.waitForFunction(`(${switchesTo})(${arg}) > ${before}`, null, { timeout: 10000, polling: 20 });
  const switchShownMs = Date.now() - t0;
  say({ stage: "ops", loadedMs, shownMs, views, viewsReached, left: opsLeft, switchTo: to.name, switchShownMs,
    chartPixels, drawn, errors, opsErrors });

  // 3. The publisher killed mid-stream (while its row says `active`).
  const statusBefore = await ops.page.evaluate((s) =>
    document.querySelector(`#streams tr[data-stream="${s}"] .status`).textContent, stream);
  t0 = Date.now();
  process.kill(Number(ffmpegPid), "SIGKILL");
  await ops.page.waitForFunction((s) => {
    const c = document.querySelector(`#streams tr[data-stream="${s}"] .status`);
    return c !== null && c.textContent === "ended";
  }, stream, { timeout: 10000, polling: 20 });
  const endedMs = Date.now() - t0;
  await Promise.all(pages.slice(close + opsClose).map((p) => p.close({ runBeforeUnload: true })));
  say({ stage: "ended", statusBefore, endedMs, opsErrors });

  // 4. After the server's restart on the same store: the last hour from it.
  await nextLine();
  const again = await openOps(browser, []);
  await again.page.waitForFunction(() => window.rtaiOps.points >= 2 && /stored points/.test(document.getElementById("history-note").textContent),
    null, { timeout: 10000, polling: 20 });
  const historyMs = Date.now() - again.t0;
  const history = await again.page.evaluate(() => ({
    note: document.getElementById("history-note").textContent,
    points: window.rtaiOps.points,
    drawn: window.rtaiOps.drawn,
  }));
  const historyPixels = await colouredPixels(again.page, ["chart-viewers"], PALETTE);
  say({ stage: "history", historyMs, ...history, historyPixels });
  stdin.close();
}, pageStates);
