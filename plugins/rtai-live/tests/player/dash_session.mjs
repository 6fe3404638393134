// dash.js on abrsink's player page (argv[2], a /watch/STREAM?dash=1 URL; or
// hls.js with a /watch/STREAM URL) in
// Debian's chromium (playwright-core): waits for the first rendered frame and
// argv[4] seconds of playback (MPD refreshes included), reads the viewers of
// argv[3] (/api/streams/STREAM/viewers) while the page is open, closes the page
// as a user closes a tab (its pagehide beacon ends the session) and waits until
// the session is gone from that API. Prints one JSON line: session (the id the
// page took from the MPD or master playlist), firstFrameMs, requests (path and
// query of every /dash/ and /hls/ request), errors, viewersOpen, leftMs (close → session gone, null when
// it was not gone within 5 s).
import { chromium } from "playwright-core";

const [url, apiUrl, playArg] = process.argv.slice(2);
const play = Number(playArg || "3");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
});
let code = 0;
const requests = [];
const errors = [];
let page = null;
try {
  page = await browser.newPage();
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith("/dash/") || u.pathname.startsWith("/hls/")) requests.push(u.pathname + u.search);
  });
  page.on("response", (r) => { if (r.status() >= 400) errors.push(r.status() + " " + r.url()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.abr && window.abr.firstFrame !== null, null, { timeout: 20000 });
  const firstFrameMs = await page.evaluate(() => window.abr.firstFrame);
  const session = await page.evaluate(() => window.abr.session);
  const t0 = await page.evaluate(() => document.getElementById("video").currentTime);
  await page.waitForFunction((t) => document.getElementById("video").currentTime >= t, t0 + play, { timeout: 20000 });
  errors.push(...(await page.evaluate(() => window.abr.errors)));
  const viewersOpen = await (await fetch(apiUrl)).json();
  const closed = performance.now();
  await page.close({ runBeforeUnload: true });
  let leftMs = null;
  while (performance.now() - closed < 5000) {
    const v = await (await fetch(apiUrl)).json();
    if (!v.sessions.some((s) => s.id === session)) {
      leftMs = performance.now() - closed;
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  console.log(JSON.stringify({ session, firstFrameMs, requests, errors, viewersOpen, leftMs }));
} catch (e) {
  const abr = page ? await page.evaluate(() => window.abr).catch(() => null) : null;
  console.error(String(e), JSON.stringify({ abr, requests: requests.slice(0, 40), errors }));
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
