// Opens analyticssink's dashboard in Debian's chromium (headless, through
// playwright-core), prints "ready" once the live feed is connected, then waits
// until a row for the label given as argv[3] appears and both charts have
// drawn what is expected (the class chart that label, the latency chart a bar
// group for argv[5]), saves a full-page PNG screenshot to argv[4] and prints
// what the page shows as one JSON line, with the charts' boxes in the
// screenshot's pixels. Exits non-zero on a timeout.
import { chromium } from "playwright-core";

const [url, label, screenshot, latencyGroup] = process.argv.slice(2);
const origin = new URL(url).origin;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
  const requests = [];
  const errors = [];
  page.on("request", (r) => requests.push(r.url()));
  // A 401 for a script or style would leave the page half working without a page error.
  page.on("response", (r) => { if (r.status() >= 400) errors.push(r.status() + " " + r.url().replace(/access_token=[^&]*/, "access_token=…")); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("status").textContent === "live", null, { timeout: 15000 });
  const rowsBefore = await page.locator("#events tbody tr").count();
  console.log("ready");
  await page.waitForFunction(
    (l) => [...document.querySelectorAll("#events tbody tr")].some((tr) => tr.textContent.includes(l)),
    label, { timeout: 15000 });
  // The charts refresh every second: wait until they show the new class and the latency.
  await page.waitForFunction(([l, g]) => {
    const drawn = (id) => JSON.parse(document.getElementById(id).dataset.drawn || "[]");
    return drawn("class-chart").includes(l) && (!g || drawn("latency-chart").includes(g));
  }, [label, latencyGroup || ""], { timeout: 10000 });
  await page.screenshot({ path: screenshot, fullPage: true });
  const shown = await page.evaluate(() => {
    const drawn = (id) => JSON.parse(document.getElementById(id).dataset.drawn || "[]");
    const box = (id) => {
      const r = document.getElementById(id).getBoundingClientRect();
      const s = window.devicePixelRatio;
      // Document coordinates: the screenshot is of the full page.
      return { x: Math.round((r.left + window.scrollX) * s), y: Math.round((r.top + window.scrollY) * s), width: Math.round(r.width * s), height: Math.round(r.height * s) };
    };
    return {
      rows: [...document.querySelectorAll("#events tbody tr")].map((tr) => [...tr.children].map((td) => td.textContent)),
      totalEvents: Number(document.getElementById("total-events").textContent),
      totalClips: Number(document.getElementById("total-clips").textContent),
      clips: [...document.querySelectorAll("#clips li")].map((li) => li.textContent),
      element: document.getElementById("element").textContent,
      status: document.getElementById("status").textContent,
      latencyHintHidden: document.getElementById("latency-empty").classList.contains("hidden"),
      charts: {
        latency: { box: box("latency-chart"), groups: drawn("latency-chart") },
        classes: { box: box("class-chart"), groups: drawn("class-chart") },
      },
    };
  });
  shown.rowsBefore = rowsBefore;
  shown.foreignRequests = requests.filter((r) => !r.startsWith(origin));
  shown.errors = errors;
  console.log(JSON.stringify(shown));
} finally {
  await browser.close();
}
