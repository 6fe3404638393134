// Glass-to-glass latency in chromium (benches/webrtcserve_glass.rs, not CI):
// opens webrtcserve's player page (argv[2]) headless and, in every
// requestVideoFrameCallback, draws the presented frame to a canvas, reads the
// capture wall-clock time burned into its top-left blocks and compares it with
// Date.now() (same host clock as the sender). Layout (argv[4], JSON):
// {sq, cols, bits}: `bits` data blocks of sq×sq pixels, `cols` per row, LSB
// first, white = 1, then the same number of blocks holding the complement (a
// frame whose complement does not match is a misread, not a sample). The time
// is milliseconds since the epoch modulo 2^bits. Measures for argv[3] seconds
// after 30 presented frames (printing {"step":"measuring"} as it starts, so a
// baseline can measure the same window); then prints the result as a JSON line.
import { chromium } from "playwright-core";

const [url, secs = "20", layout = '{"sq":32,"cols":12,"bits":24}'] = process.argv.slice(2);
const spec = JSON.parse(layout);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
});
try {
  const context = await browser.newContext({ viewport: { width: 720, height: 480 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.rtai.frames >= 30, null, { timeout: 15000 });
  await page.evaluate((spec) => {
    const video = document.getElementById("video");
    const canvas = document.createElement("canvas");
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const mod = 2 ** spec.bits;
    const rows = Math.ceil(spec.bits / spec.cols);
    window.glass = { callback: [], display: [], misreads: 0, frames: 0 };
    const read = (data, width, bit, offsetRows) => {
      const row = Math.floor(bit / spec.cols) + offsetRows;
      const col = bit % spec.cols;
      const x = col * spec.sq + spec.sq / 2;
      const y = row * spec.sq + spec.sq / 2;
      return data[4 * (y * width + x)] > 128 ? 1 : 0;
    };
    const onFrame = (_now, meta) => {
      const t = Date.now();
      const display = performance.timeOrigin + meta.expectedDisplayTime;
      const w = spec.cols * spec.sq;
      const h = 2 * rows * spec.sq;
      if (video.videoWidth >= w && video.videoHeight >= h) {
        if (canvas.width !== video.videoWidth) {
          canvas.width = video.videoWidth;
          canvas.height = video.videoHeight;
        }
        ctx.drawImage(video, 0, 0);
        const data = ctx.getImageData(0, 0, w, h).data;
        let code = 0;
        let ok = true;
        for (let bit = 0; bit < spec.bits; bit++) {
          const v = read(data, w, bit, 0);
          if (read(data, w, bit, rows) === v) ok = false;
          code += v * 2 ** bit;
        }
        window.glass.frames += 1;
        if (ok) {
          window.glass.callback.push((((t % mod) - code) % mod + mod) % mod);
          window.glass.display.push(((((display % mod) - code) % mod) + mod) % mod);
        } else {
          window.glass.misreads += 1;
        }
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }, spec);
  console.log(JSON.stringify({ step: "measuring" }));
  await new Promise((r) => setTimeout(r, parseFloat(secs) * 1000));
  const glass = await page.evaluate(() => window.glass);
  const size = await page.evaluate(() => [document.getElementById("video").videoWidth, document.getElementById("video").videoHeight]);
  console.log(JSON.stringify({ ...glass, size, errors }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
