// Opens abrsink's player page (argv[2], hls.js or with ?dash=1 dash.js) in
// Debian's chromium through playwright-core, waits for the first rendered
// frame (requestVideoFrameCallback, measured by the page from its opening) and
// for playback to advance by argv[3] seconds (default 1.5), then prints one
// JSON line: firstFrameMs, levels, advanced, latency (s behind live), errors,
// foreignRequests.
// Exits non-zero on a timeout.
import { AUTOPLAY, withChromium } from "./browser.mjs";

const [url, advanceArg] = process.argv.slice(2);
const advance = Number(advanceArg || "1.5");
const origin = new URL(url).origin;
await withChromium([AUTOPLAY], async (browser) => {
  const page = await browser.newPage();
  const foreign = [];
  const errors = [];
  page.on("request", (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith("blob:") && !r.url().startsWith("data:")) foreign.push(r.url()); });
  page.on("response", (r) => { if (r.status() >= 400) errors.push(r.status() + " " + r.url()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.abr && window.abr.firstFrame !== null, null, { timeout: 20000 });
  const firstFrameMs = await page.evaluate(() => window.abr.firstFrame);
  const t0 = await page.evaluate(() => document.getElementById("video").currentTime);
  await page.waitForFunction((t) => document.getElementById("video").currentTime >= t, t0 + advance, { timeout: 15000 });
  const shown = await page.evaluate(() => ({ levels: window.abr.levels, errors: window.abr.errors, player: window.abr.player,
    // Distance from the live edge (s): hls.js's estimate, dash.js's live latency.
    latency: window.hls ? window.hls.latency : (window.dashPlayer ? window.dashPlayer.getCurrentLiveLatency() : null) }));
  console.log(JSON.stringify({ firstFrameMs, levels: shown.levels, player: shown.player, advanced: true, latency: shown.latency,
    errors: errors.concat(shown.errors), foreignRequests: foreign }));
});
