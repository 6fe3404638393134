// Opens delivery's operator page (argv[2], e.g. http://127.0.0.1:port/ops?stream=live)
// in Debian's chromium through playwright-core. Protocol on stdout/stdin, one line each:
//   -> {"loaded": ms}        the viewer count shows argv[3] (page open → live data)
//   <- "closed"              the test closed some viewers
//   -> {"shown": ms}         the viewer count shows argv[4] (ms after "closed")
//   -> {"drawn": {...}, "chartPixels": {...}, "errors": [...]}  from a screenshot
// Exits non-zero (after a JSON {"error"} line) on a timeout.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [url, before, after, shot] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin });
const next = () => new Promise((res) => lines.once("line", res));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
let code = 0;
const viewersShown = (n) => {
  const row = document.querySelector('#streams tr[data-stream="live"] .viewers');
  return row && row.textContent === String(n) && window.rtaiOps.viewers === n;
};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("response", (r) => { if (r.status() >= 400 && !r.url().includes("hls.min.js")) errors.push(r.status() + " " + r.url()); });
  const t0 = Date.now();
  await page.goto(url);
  await page.waitForFunction(viewersShown, Number(before), { timeout: 10000, polling: 20 });
  console.log(JSON.stringify({ loaded: Date.now() - t0 }));
  await next();
  const t1 = Date.now();
  await page.waitForFunction(viewersShown, Number(after), { timeout: 15000, polling: 20 });
  console.log(JSON.stringify({ shown: Date.now() - t1 }));
  // Charts need two points at least.
  await page.waitForFunction(() => window.rtaiOps.points >= 2, null, { timeout: 10000 });
  const png = await page.screenshot({ path: shot, fullPage: true });
  const boxes = await page.evaluate(() =>
    Object.fromEntries(["chart-viewers", "chart-bitrate", "chart-renditions"].map((id) => {
      const r = document.getElementById(id).getBoundingClientRect();
      return [id, { x: r.x + scrollX, y: r.y + scrollY, w: r.width, h: r.height }];
    })));
  // Count the series colours (COLORS in app.js: blue, orange, green) in each chart's box of the screenshot.
  const chartPixels = await page.evaluate(async ({ b64, boxes }) => {
    const img = new Image();
    img.src = "data:image/png;base64," + b64;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.width; c.height = img.height;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const out = {};
    for (const [id, b] of Object.entries(boxes)) {
      const d = ctx.getImageData(Math.round(b.x), Math.round(b.y), Math.round(b.w), Math.round(b.h)).data;
      let n = 0;
      const palette = [[0x1a, 0x73, 0xe8], [0xe8, 0x71, 0x0a], [0x18, 0x80, 0x38]];
      for (let i = 0; i < d.length; i += 4) {
        if (palette.some(([r, g, b]) => Math.abs(d[i] - r) < 24 && Math.abs(d[i + 1] - g) < 24 && Math.abs(d[i + 2] - b) < 24)) n++;
      }
      out[id] = n;
    }
    return out;
  }, { b64: png.toString("base64"), boxes });
  const drawn = await page.evaluate(() => window.rtaiOps.drawn);
  console.log(JSON.stringify({ drawn, chartPixels, errors }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e) }));
  code = 1;
} finally {
  await browser.close();
  lines.close();
}
process.exit(code);
