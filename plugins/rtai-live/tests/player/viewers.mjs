// Opens argv[3] (N) abrsink player pages (argv[2], hls.js) in Debian's
// chromium through playwright-core, waits until every one renders a frame and
// /api/streams/{stream} counts N viewers, then closes argv[4] of them (their
// pagehide beacon ends their sessions) and measures how long until the API
// counts the rest. They close as a tab a user closes (runBeforeUnload: the
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
const viewers = async () => (await (await fetch(api)).json()).viewers;
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
  const counted = await until("all viewers counted", 5000, async () => { const v = await viewers(); return v === n ? v : undefined; });
  const t0 = Date.now();
  await Promise.all(pages.slice(0, close).map((p) => p.close({ runBeforeUnload: true })));
  const after = await until("closed viewers gone", 10000, async () => { const v = await viewers(); return v === n - close ? v : undefined; });
  const closeToCountMs = Date.now() - t0;
  const remaining = (await (await fetch(api + "/viewers")).json()).sessions.map((s) => s.id);
  console.log(JSON.stringify({ open: n, closed: close, counted, after, closeToCountMs, sessions, remaining, errors }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e) }));
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
