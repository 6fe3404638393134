// Shared by the player scripts: Debian's chromium through playwright-core, a
// main wrapper (one JSON {"error"} line and a non-zero exit on failure), polling
// with a deadline, and counting a chart's series colours in a screenshot.
import { chromium } from "playwright-core";

export const AUTOPLAY = "--autoplay-policy=no-user-gesture-required";

// Runs `body(browser)` in a headless chromium; exits 0, or 1 after printing
// {"error", ...onError()} when it throws or times out.
export async function withChromium(args, body, onError = async () => ({})) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", ...args],
  });
  let code = 0;
  try {
    await body(browser);
  } catch (e) {
    console.log(JSON.stringify({ error: String(e), ...(await onError().catch(() => ({}))) }));
    code = 1;
  } finally {
    await browser.close();
  }
  process.exit(code);
}

// `f()` until it returns something other than undefined, every 25 ms, for at most `ms`.
export async function until(what, ms, f) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(what + " not within " + ms + " ms");
    await new Promise((r) => setTimeout(r, 25));
  }
}

// Pixels of the `palette` colours ([[r, g, b]...], ±24 each) inside the boxes
// of the elements `ids` in a full-page screenshot (saved to `path`).
export async function colouredPixels(page, ids, palette, path) {
  const png = await page.screenshot({ path, fullPage: true });
  const boxes = await page.evaluate((ids) =>
    Object.fromEntries(ids.map((id) => {
      const r = document.getElementById(id).getBoundingClientRect();
      return [id, { x: r.x + scrollX, y: r.y + scrollY, w: r.width, h: r.height }];
    })), ids);
  return page.evaluate(async ({ b64, boxes, palette }) => {
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
      for (let i = 0; i < d.length; i += 4) {
        if (palette.some(([r, g, bl]) => Math.abs(d[i] - r) < 24 && Math.abs(d[i + 1] - g) < 24 && Math.abs(d[i + 2] - bl) < 24)) n++;
      }
      out[id] = n;
    }
    return out;
  }, { b64: png.toString("base64"), boxes, palette });
}
