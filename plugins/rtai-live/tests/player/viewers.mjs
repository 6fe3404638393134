// Opens argv[3] (N) abrsink player pages (argv[2], hls.js) in Debian's
// chromium through playwright-core, waits until every one renders a frame and
// the three views of the count agree on N (the JSON API, Prometheus /metrics
// and the WebSocket's per-second stats, read by one more page), then closes
// argv[4] of them (their pagehide beacon ends their sessions) and measures how
// long until all three count the rest. They close as a tab a user closes (runBeforeUnload: the
// unload handlers run; a bare target close would skip them). Prints one JSON
// line: open, closed, counted (viewers with all open), after (viewers after
// closing), closeToCountMs, sessions (the ids the pages got), remaining (the
// ids the API lists after), errors. Exits non-zero on a timeout.
import { chromium } from "playwright-core";

const [url, nArg, closeArg] = process.argv.slice(2);
const n = Number(nArg), close = Number(closeArg);
const u = new URL(url);
const stream = u.pathname.split("/").pop();
const api = u.origin + "/api/streams/" + stream;
const metricsUrl = u.origin + "/metrics";
const wsUrl = u.origin.replace(/^http/, "ws") + "/ws/streams/" + stream;
const fromApi = async () => (await (await fetch(api)).json()).viewers;
const fromMetrics = async () => {
  const text = await (await fetch(metricsUrl)).text();
  const line = text.split("\n").find((l) => l.startsWith("rtai_delivery_viewers{") && l.includes(`stream="${stream}"`));
  return line === undefined ? undefined : Number(line.trim().split(/\s+/).pop());
};
let observer;
const fromWs = async () => observer.evaluate(() => window.wsViewers);
// The count, once the API, /metrics and the WebSocket all say `want`; `reached`
// keeps when each view first said it (ms since `since`).
const reached = {};
let since = Date.now();
const viewersAre = (want) => async () => {
  const seen = { api: await fromApi(), metrics: await fromMetrics(), ws: await fromWs() };
  for (const [view, v] of Object.entries(seen)) {
    if (v === want && reached[view] === undefined) reached[view] = Date.now() - since;
  }
  return Object.values(seen).every((v) => v === want) ? want : undefined;
};
const until = async (what, ms, f) => {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(what + " not within " + ms + " ms");
    await new Promise((r) => setTimeout(r, 25));
  }
};
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
});
let code = 0;
try {
  const errors = [];
  // The WebSocket observer: a page on the server's origin (the JSON API) that
  // keeps the latest `stats` message's viewer count. It fetches no playlist, so
  // it is no viewer itself.
  observer = await browser.newPage();
  await observer.goto(api);
  await observer.evaluate((ws) => {
    window.wsViewers = undefined;
    const socket = new WebSocket(ws);
    socket.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "stats") window.wsViewers = msg.viewers;
    };
  }, wsUrl);
  const pages = await Promise.all(Array.from({ length: n }, async () => {
    const page = await browser.newPage();
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("response", (r) => { if (r.status() >= 400) errors.push(r.status() + " " + r.url()); });
    await page.goto(url);
    return page;
  }));
  for (const page of pages) {
    await page.waitForFunction(() => window.abr && window.abr.firstFrame !== null && window.abr.session, null, { timeout: 20000 });
  }
  const sessions = await Promise.all(pages.map((p) => p.evaluate(() => window.abr.session)));
  const counted = await until("all viewers counted by the API, /metrics and the WebSocket", 5000, viewersAre(n));
  const t0 = Date.now();
  since = t0;
  for (const view of Object.keys(reached)) delete reached[view];
  await Promise.all(pages.slice(0, close).map((p) => p.close({ runBeforeUnload: true })));
  const after = await until("closed viewers gone from the API, /metrics and the WebSocket", 10000, viewersAre(n - close));
  const closeToCountMs = Date.now() - t0;
  const remaining = (await (await fetch(api + "/viewers")).json()).sessions.map((s) => s.id);
  console.log(JSON.stringify({ open: n, closed: close, counted, after, closeToCountMs, reached, sessions, remaining, errors }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e) }));
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
