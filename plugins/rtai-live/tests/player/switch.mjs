// Quality switching proof (issue 17): hls.js in Debian's chromium plays
// abrsink's master playlist (argv[2], http://host:port/hls/<stream>/master.m3u8)
// from a page of its own origin, starting on the top rendition. Once playing
// there, playwright routing slows that rendition's segments: each response is
// held for size × 8 / argv[3] kbit/s (default 120), so the download bandwidth
// falls below the top rung's BANDWIDTH; the throttle begins once 2.5 s are
// buffered ahead (steady playback). It waits for hls.js to switch down
// (LEVEL_SWITCHED to a lower level, the level now playing) and watches playback
// for argv[4] s more (default 2). Prints one JSON line: levels, top, the
// switch decision and switched times (ms after the throttle began), waiting
// events and BUFFER_STALLED_ERRORs since the throttle, the longest time
// currentTime did not advance while throttled, how far it advanced, and
// failed requests. Exits non-zero on a timeout.
import { AUTOPLAY, withChromium } from "./browser.mjs";

const [master, kbpsArg, watchArg] = process.argv.slice(2);
const kbps = Number(kbpsArg || "120");
const watchS = Number(watchArg || "2");
const origin = new URL(master).origin;
const pageUrl = origin + "/__switch_test__";
const page_html = `<!doctype html><html><body>
<video id="video" muted autoplay playsinline></video>
<script src="/static/hls.min.js"></script>
<script>
  const t = window.t = { top: -1, switching: [], switched: [], waiting: [], stalls: [], errors: [],
    throttleAt: null, samples: [], levels: [] };
  const video = document.getElementById("video");
  video.addEventListener("waiting", () => t.waiting.push(performance.now()));
  // A high first estimate: hls.js starts on the top rendition (loopback is fast).
  const hls = window.hls = new Hls({ abrEwmaDefaultEstimate: 50e6, testBandwidth: false });
  hls.on(Hls.Events.MANIFEST_PARSED, (_, d) => {
    t.levels = d.levels.map((l) => ({ bitrate: l.bitrate, height: l.height, url: Array.isArray(l.url) ? l.url[0] : (l.uri || l.url) }));
    t.top = d.levels.length - 1;
  });
  hls.on(Hls.Events.LEVEL_SWITCHING, (_, d) => t.switching.push({ level: d.level, at: performance.now() }));
  hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => t.switched.push({ level: d.level, at: performance.now() }));
  hls.on(Hls.Events.ERROR, (_, d) => {
    if (d.details === Hls.ErrorDetails.BUFFER_STALLED_ERROR) t.stalls.push(performance.now());
    else if (d.fatal) t.errors.push(d.type + ":" + d.details);
  });
  setInterval(() => t.samples.push([performance.now(), video.currentTime]), 100);
  hls.loadSource(${JSON.stringify(master)});
  hls.attachMedia(video);
  video.play().catch(() => {});
</script></body></html>`;

let page = null;
const throttled = [];
await withChromium([AUTOPLAY], async (browser) => {
  page = await browser.newPage();
  const failed = [];
  page.on("response", (r) => { if (r.status() >= 400) failed.push(r.status() + " " + r.url()); });
  page.on("pageerror", (e) => failed.push(String(e)));
  await page.route(pageUrl, (route) => route.fulfill({ status: 200, contentType: "text/html", body: page_html }));
  // The top rendition's path prefix (e.g. /hls/s/720p/), known once the manifest is parsed.
  let slowPrefix = null;
  await page.route((u) => u.pathname.endsWith(".m4s"), async (route) => {
    const path = new URL(route.request().url()).pathname;
    // Either can fail once the browser closes (a request still in flight): not an error of the test.
    if (slowPrefix === null || !path.startsWith(slowPrefix)) return route.continue().catch(() => {});
    const response = await route.fetch().catch(() => null);
    const body = response && await response.body().catch(() => null);
    if (!body) return;
    const holdMs = (body.length * 8) / kbps;
    throttled.push({ path, bytes: body.length, holdMs: Math.round(holdMs) });
    await new Promise((r) => setTimeout(r, holdMs));
    await route.fulfill({ response, body }).catch(() => {}); // aborted by hls.js
  });
  await page.goto(pageUrl);
  // Playing on the top level, 1 s of media played.
  await page.waitForFunction(() => window.t.top > 0 && window.hls.currentLevel === window.t.top
    && document.getElementById("video").currentTime > 0, null, { timeout: 10000 });
  // Steady playback: 1 s played and at least 2.5 s buffered ahead (hls.js holds 3 segments back).
  const t0 = await page.evaluate(() => document.getElementById("video").currentTime);
  const ahead = () => { const v = document.getElementById("video"), b = v.buffered;
    return b.length ? b.end(b.length - 1) - v.currentTime : 0; };
  await page.waitForFunction(`(${ahead})() >= 2.5 && document.getElementById("video").currentTime >= ${t0 + 1}`,
    null, { timeout: 8000 });
  const bufferedAhead = await page.evaluate(`(${ahead})()`);
  const levels = await page.evaluate(() => window.t.levels);
  const top = levels.length - 1;
  const url = new URL(levels[top].url, master);
  slowPrefix = url.pathname.slice(0, url.pathname.lastIndexOf("/") + 1);
  await page.evaluate(() => { window.t.throttleAt = performance.now(); });
  // hls.js switches down: the level playing is lower than the top.
  await page.waitForFunction(() => window.t.switched.some((s) => s.at > window.t.throttleAt && s.level < window.t.top),
    null, { timeout: 12000 });
  const c1 = await page.evaluate(() => document.getElementById("video").currentTime);
  await page.waitForTimeout(watchS * 1000);
  const r = await page.evaluate(() => {
    const t = window.t, since = (a) => a.filter((x) => (x.at ?? x) > t.throttleAt);
    const decided = since(t.switching).find((s) => s.level < t.top);
    const switched = since(t.switched).find((s) => s.level < t.top);
    // Longest interval with currentTime not advancing while throttled.
    let stuckMs = 0, from = null;
    for (const [at, ct] of t.samples.filter(([at]) => at > t.throttleAt)) {
      if (from === null || ct > from[1]) from = [at, ct];
      else stuckMs = Math.max(stuckMs, at - from[0]);
    }
    return { top: t.top, decidedMs: decided ? decided.at - t.throttleAt : null,
      switchedMs: switched.at - t.throttleAt, switchedTo: switched.level,
      waiting: since(t.waiting).length, waitingAtMs: since(t.waiting).map((x) => Math.round(x - t.throttleAt)), stalls: since(t.stalls).length, stuckMs,
      errors: t.errors, currentTime: document.getElementById("video").currentTime };
  });
  console.log(JSON.stringify({ levels, ...r, bufferedAhead, advancedAfterSwitch: r.currentTime - c1, watchS, kbps,
    throttled: throttled.slice(0, 6), failed }));
}, async () => {
  const state = page && await page.evaluate(() => ({ t: window.t, bw: window.hls && window.hls.bandwidthEstimate,
    level: window.hls && window.hls.currentLevel, ct: document.getElementById("video").currentTime,
    buffered: (() => { const b = document.getElementById("video").buffered; return b.length ? b.end(b.length - 1) : null; })() })).catch(() => null);
  return { state: state && { ...state, t: { ...state.t, samples: undefined } }, throttled };
});
