// Opens webrtcserve's player page in Debian's chromium (headless, through
// playwright-core) as several viewers and measures, step by step; after each
// step it prints one JSON line and waits for a line on stdin (the Rust test
// checks the server side meanwhile):
//   two      2 pages: first decoded frame (requestVideoFrameCallback) in ms
//            since each page's navigation started;
//   more     up to argv[3] pages, all decoding;
//   rejoin   page 0 leaves and joins again (window.rtaiRejoin), decodes again;
//   freezing the last page runs in a chromium of its own: its renderer processes
//            (found in that browser's process tree) get SIGSTOP, a truly
//            stalled viewer (CPU throttling did not slow chromium's WebRTC
//            decoding); printed as soon as they are stopped;
//   frozen   the others' frame rates before and during the freeze, over
//            argv[4] ms windows (the frozen page cannot be asked);
//   thawed   SIGCONT; everyone's frame rates after.
// Exits non-zero (with a JSON error line) on a timeout or a page error.
import { chromium } from "playwright-core";
import fs from "node:fs";
import readline from "node:readline";

const [url, total = "8", windowMs = "1500"] = process.argv.slice(2);
const N = Math.max(2, parseInt(total, 10));
const WINDOW = parseInt(windowMs, 10);
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const step = async (obj) => { console.log(JSON.stringify(obj)); await lines.next(); };

// Processes on this machine: pid, parent pid, command line.
const procs = () => fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d)).flatMap((pid) => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const ppid = parseInt(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1], 10);
    return [{ pid: parseInt(pid, 10), ppid, cmd: fs.readFileSync(`/proc/${pid}/cmdline`, "utf8") }];
  } catch {
    return [];
  }
});
const descendants = (root) => {
  const all = procs();
  const out = [];
  for (let frontier = [root]; frontier.length;) {
    const kids = all.filter((p) => frontier.includes(p.ppid));
    out.push(...kids);
    frontier = kids.map((k) => k.pid);
  }
  return out;
};
const launch = () => chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
});
const browser = await launch();
// The viewer to freeze (the last one) gets a browser of its own, launched after
// the first two pages measured their first frame: its main process is the new
// child of this node process, its renderers are in that process's tree.
const children = () => procs().filter((p) => p.ppid === process.pid).map((p) => p.pid);
let slowBrowser = null;
let slowMain = null;
const errors = [];
try {
  // One context (window) per viewer: a page behind another one would not
  // render, and requestVideoFrameCallback counts rendered frames.
  const open = async (b = browser) => {
    const context = await b.newContext({ viewport: { width: 480, height: 400 } });
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
  // firstFrameMs: from the WebSocket join to the first decoded frame (what issue 18 bounds);
  // sinceLoadMs: from the page's navigation start (page load and script included).
  const firstFrameMs = await Promise.all(pages.map((p) => p.evaluate(() => Math.round(window.rtai.firstFrameMs))));
  const sinceLoadMs = await Promise.all(pages.map((p) => p.evaluate(() => Math.round(window.rtai.firstFrameSinceLoadMs))));
  const resolution = await pages[0].evaluate(() => [document.getElementById("video").videoWidth, document.getElementById("video").videoHeight]);
  await step({ step: "two", firstFrameMs, sinceLoadMs, resolution });

  const known = new Set(children());
  slowBrowser = await launch();
  slowMain = children().find((pid) => !known.has(pid));
  pages.push(...(await Promise.all(Array.from({ length: N - 2 }, (_, i) => open(i === N - 3 ? slowBrowser : browser)))));
  const F = N - 1;
  await Promise.all(pages.map(async (p) => waitFrames(p, (await frames(p)) + 10)));
  const moreFirstFrameMs = await Promise.all(pages.map((p) => p.evaluate(() => Math.round(window.rtai.firstFrameSinceLoadMs))));
  await step({ step: "more", viewers: pages.length, firstFrameMs: moreFirstFrameMs, fps: await fps(pages) });

  const before = await frames(pages[0]);
  await pages[0].evaluate(() => window.rtaiRejoin());
  await pages[0].waitForFunction((b) => window.rtai.firstFrameMs !== null && window.rtai.frames >= b + 10, before, { timeout: 15000 });
  const rejoinFirstFrameMs = await pages[0].evaluate(() => Math.round(window.rtai.firstFrameMs));
  await step({ step: "rejoin", rejoinFirstFrameMs, state: await pages[0].evaluate(() => window.rtai.state) });

  const baseline = await fps(pages);
  const renderers = descendants(slowMain).filter((p) => p.cmd.includes("--type=renderer")).map((p) => p.pid);
  if (!slowMain || renderers.length === 0) throw new Error(`no renderer under the second browser (${slowMain})`);
  const others = pages.filter((_, i) => i !== F);
  for (const pid of renderers) process.kill(pid, "SIGSTOP");
  let during;
  try {
    await step({ step: "freezing", frozen: F, renderers });
    const d = await fps(others);
    during = pages.map((_, i) => (i === F ? null : d[i]));
    await step({ step: "frozen", frozen: F, baseline, during });
  } finally {
    for (const pid of renderers) process.kill(pid, "SIGCONT");
  }
  await pages[F].waitForFunction((k) => window.rtai.frames >= k, (await frames(pages[F])) + 10, { timeout: 15000 });
  const after = await fps(pages);
  const pageErrors = await Promise.all(pages.map((p) => p.evaluate(() => window.rtai.errors)));
  await step({ step: "thawed", frozen: F, baseline, during, after, errors, pageErrors });
} catch (e) {
  console.log(JSON.stringify({ step: "error", error: String(e), errors }));
  process.exitCode = 1;
} finally {
  await Promise.all([browser.close(), slowBrowser?.close()]);
}
