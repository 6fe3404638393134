// Soak viewers (scripts/soak-webrtcserve.sh, not CI): opens argv[3] (default 2)
// headless chromium pages on webrtcserve's player page and, every second,
// prints one JSON line per tick: per viewer the frames presented
// (requestVideoFrameCallback, window.rtai.frames) and decoded (getStats
// framesDecoded), plus the page errors so far. Runs until argv[4] seconds
// (default 960) have passed or it is killed.
import { chromium } from "playwright-core";

const [url, total = "2", secs = "960"] = process.argv.slice(2);
const N = parseInt(total, 10);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
});
const stop = async () => { await browser.close().catch(() => {}); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
const errors = [];
const pages = [];
for (let i = 0; i < N; i++) {
  // One context (window) per viewer: a page behind another would not render.
  const context = await browser.newContext({ viewport: { width: 480, height: 400 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  pages.push(page);
}
const sample = (p) => p.evaluate(async () => {
  let decoded = 0;
  const pc = window.rtaiPc();
  if (pc) (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") decoded = r.framesDecoded || 0;
  });
  return { frames: window.rtai.frames, decoded, state: window.rtai.state, errors: window.rtai.errors.length };
});
const t0 = Date.now();
while (Date.now() - t0 < parseInt(secs, 10) * 1000) {
  try {
    const s = await Promise.all(pages.map(sample));
    console.log(JSON.stringify({ t: Math.round((Date.now() - t0) / 1000), frames: s.map((x) => x.frames),
      decoded: s.map((x) => x.decoded), states: s.map((x) => x.state),
      pageErrors: s.map((x) => x.errors), errors: errors.length }));
  } catch (e) {
    console.log(JSON.stringify({ error: String(e) }));
  }
  await new Promise((r) => setTimeout(r, 1000));
}
await stop();
