// Opens webrtcserve's player page in Debian's chromium (headless, through
// playwright-core) as several viewers and measures, step by step; after each
// step it prints one JSON line and waits for a line on stdin (the Rust test
// checks the server side meanwhile):
//   two      2 pages: first decoded frame (requestVideoFrameCallback) in ms
//            since each page's navigation started;
//   more     up to argv[3] pages, all decoding;
//   rejoin   page 0 leaves and joins again (window.rtaiRejoin), decodes again;
//   throttle page 1's renderer CPU throttled 20x (DevTools): the others'
//            frame rates before and during, over argv[4] ms windows.
// Exits non-zero (with a JSON error line) on a timeout or a page error.
import { chromium } from "playwright-core";
import readline from "node:readline";

const [url, total = "8", windowMs = "1500"] = process.argv.slice(2);
const N = Math.max(2, parseInt(total, 10));
const WINDOW = parseInt(windowMs, 10);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const step = async (obj) => { console.log(JSON.stringify(obj)); await lines.next(); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
});
const errors = [];
try {
  // One context (window) per viewer: a page behind another one would not
  // render, and requestVideoFrameCallback counts rendered frames.
  const open = async () => {
    const context = await browser.newContext({ viewport: { width: 480, height: 400 } });
    const page = await context.newPage();
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url);
    return page;
  };
  const frames = (p) => p.evaluate(() => window.rtai.frames);
  const waitFrames = (p, k) => p.waitForFunction((k) => window.rtai.frames >= k, k, { timeout: 15000 });
  // Frames decoded (getStats framesDecoded): what each viewer receives and decodes.
  const decoded = (p) => p.evaluate(async () => {
    let n = 0;
    (await window.rtaiPc().getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") n = r.framesDecoded || 0;
    });
    return n;
  });
  const fps = async (pages) => {
    const a = await Promise.all(pages.map(decoded));
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, WINDOW));
    const b = await Promise.all(pages.map(decoded));
    const dt = (Date.now() - t0) / 1000;
    return b.map((x, i) => Math.round((10 * (x - a[i])) / dt) / 10);
  };

  const pages = await Promise.all([open(), open()]);
  await Promise.all(pages.map((p) => waitFrames(p, 10)));
  const firstFrameMs = await Promise.all(pages.map((p) => p.evaluate(() => Math.round(window.rtai.firstFrameSinceLoadMs))));
  const resolution = await pages[0].evaluate(() => [document.getElementById("video").videoWidth, document.getElementById("video").videoHeight]);
  await step({ step: "two", firstFrameMs, resolution });

  pages.push(...(await Promise.all(Array.from({ length: N - 2 }, open))));
  await Promise.all(pages.map(async (p) => waitFrames(p, (await frames(p)) + 10)));
  const moreFirstFrameMs = await Promise.all(pages.map((p) => p.evaluate(() => Math.round(window.rtai.firstFrameSinceLoadMs))));
  await step({ step: "more", viewers: pages.length, firstFrameMs: moreFirstFrameMs, fps: await fps(pages) });

  const before = await frames(pages[0]);
  await pages[0].evaluate(() => window.rtaiRejoin());
  await pages[0].waitForFunction((b) => window.rtai.firstFrameMs !== null && window.rtai.frames >= b + 10, before, { timeout: 15000 });
  const rejoinFirstFrameMs = await pages[0].evaluate(() => Math.round(window.rtai.firstFrameMs));
  await step({ step: "rejoin", rejoinFirstFrameMs, state: await pages[0].evaluate(() => window.rtai.state) });

  const baseline = await fps(pages);
  const cdp = await pages[1].context().newCDPSession(pages[1]);
  await cdp.send("Emulation.setCPUThrottlingRate", { rate: 20 });
  const during = await fps(pages);
  await cdp.send("Emulation.setCPUThrottlingRate", { rate: 1 });
  const pageErrors = await Promise.all(pages.map((p) => p.evaluate(() => window.rtai.errors)));
  await step({ step: "throttle", throttled: 1, baseline, during, errors, pageErrors });
} catch (e) {
  console.log(JSON.stringify({ step: "error", error: String(e), errors }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
