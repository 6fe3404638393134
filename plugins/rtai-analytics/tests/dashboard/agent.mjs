// The agent demo's dashboard (scripts/agent/agent.sh) in Debian's chromium through
// playwright-core, for tests/agent_demo.rs: waits (at most argv[4] s) for the server, then
// for a detection row of the class argv[3], a speech row with a transcript and a clip card
// whose recorded clip plays (a <video> with its first frame loaded); saves a screenshot to
// argv[5] and prints one JSON line: what the page shows, and /api/events and the clip as
// fetched from the page.
import { chromium } from "playwright-core";

const [url, label, waitS, screenshot] = process.argv.slice(2);
const deadline = Date.now() + Number(waitS) * 1000;
const left = () => Math.max(1000, deadline - Date.now());
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 }, deviceScaleFactor: 1 });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  for (;;) {
    try {
      await page.goto(url, { timeout: 5000 });
      break;
    } catch (e) {
      if (Date.now() > deadline) throw new Error("no dashboard at " + url + ": " + e);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  await page.waitForFunction(() => document.getElementById("status").textContent === "live", null, { timeout: left() });
  await page.waitForFunction((l) => {
    const rows = [...document.querySelectorAll("#events tbody tr")];
    const has = (type, f) => rows.some((tr) => tr.dataset.type === type && f(tr.children[3].textContent));
    const playable = [...document.querySelectorAll("#clips video")].some((v) => v.readyState >= 2);
    return has("object_appear", (t) => t.includes(l)) && has("speech", (t) => t.trim().length > 0) && playable;
  }, label, { timeout: left(), polling: 500 });
  await page.screenshot({ path: screenshot, fullPage: true });
  const shown = await page.evaluate(async () => {
    const get = async (u) => (await fetch(u)).json();
    const video = document.querySelector("#clips video");
    const clip = await fetch(video.src.split("#")[0]);
    const bytes = (await clip.arrayBuffer()).byteLength;
    return {
      clipCards: [...document.querySelectorAll("#clips li")].map((li) => li.textContent),
      clipVideo: { src: video.getAttribute("src"), readyState: video.readyState, width: video.videoWidth,
                   height: video.videoHeight, duration: video.duration, status: clip.status,
                   contentType: clip.headers.get("content-type"), bytes },
      rows: [...document.querySelectorAll("#events tbody tr")].map((tr) => [tr.dataset.type, tr.children[3].textContent]),
      appear: (await get("/api/events?type=object_appear&limit=500")).events,
      speech: (await get("/api/events?type=speech&limit=500")).events,
      clips: (await get("/api/events?type=clip&limit=500")).events,
      summary: await get("/api/summary"),
    };
  });
  console.log(JSON.stringify({ ...shown, errors }));
} finally {
  await browser.close();
}
