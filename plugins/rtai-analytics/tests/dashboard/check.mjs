// Opens analyticssink's dashboard in Debian's chromium (headless, through
// playwright-core), prints "ready" once the live feed is connected, then waits
// until a row for the label given as argv[3] appears and prints what the page
// shows as one JSON line. Exits non-zero on a timeout.
import { chromium } from "playwright-core";

const [url, label] = process.argv.slice(2);
const origin = new URL(url).origin;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage();
  const requests = [];
  const errors = [];
  page.on("request", (r) => requests.push(r.url()));
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("status").textContent === "live", null, { timeout: 15000 });
  const rowsBefore = await page.locator("#events tbody tr").count();
  console.log("ready");
  await page.waitForFunction(
    (l) => [...document.querySelectorAll("#events tbody tr")].some((tr) => tr.textContent.includes(l)),
    label, { timeout: 15000 });
  // Let the 1 s chart refresh draw the new class.
  await page.waitForFunction(() => document.getElementById("element").textContent !== "", null, { timeout: 5000 });
  const shown = await page.evaluate(() => {
    const inked = (id) => {
      const c = document.getElementById(id);
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) n++;
      return n;
    };
    return {
      rows: [...document.querySelectorAll("#events tbody tr")].map((tr) => [...tr.children].map((td) => td.textContent)),
      totalEvents: Number(document.getElementById("total-events").textContent),
      totalClips: Number(document.getElementById("total-clips").textContent),
      clips: [...document.querySelectorAll("#clips li")].map((li) => li.textContent),
      element: document.getElementById("element").textContent,
      classChartInk: inked("class-chart"),
    };
  });
  shown.rowsBefore = rowsBefore;
  shown.foreignRequests = requests.filter((r) => !r.startsWith(origin));
  shown.errors = errors;
  console.log(JSON.stringify(shown));
} finally {
  await browser.close();
}
