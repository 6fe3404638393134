// The voice agent's page (/voice) in Debian's chromium (headless, through
// playwright-core) with a fake microphone playing a WAV once:
//   node voice.mjs URL WAV DURATION_S TRANSCRIPTS
// Opens URL, waits for the page's WebRTC connection (window.rtai.connected),
// then until DURATION_S seconds after the microphone started and at least
// TRANSCRIPTS x-transcript messages came (or 15 s more), and prints one JSON
// line: {micStartedAt, messages, pageErrors, heard, errors, waitedMs};
// window.rtai.messages is what the page received on the data channel
// `control` ({type, id, segment_id, payload, receivedAt}), receivedAt and
// micStartedAt in Unix ms (the page's performance.timeOrigin + now()); heard:
// {gumCalledAt, gumResolvedAt, onsets} (below), Unix ms. Exits non-zero (with a JSON error line) on a timeout
// or a page error. Run by plugins/rtai-webrtc/tests/voice_agent.rs.
import { chromium } from "playwright-core";

const [url, wav, durationS = "15", transcripts = "1"] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    // %noloop: the file plays once, so its offsets are times since the capture started.
    `--use-file-for-fake-audio-capture=${wav}%noloop`,
  ],
});
const errors = [];
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  // Failed requests by URL (the console's "Failed to load resource" names none); the
  // browser's own /favicon.ico request is not the page's.
  page.on("response", (r) => {
    if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) errors.push(`HTTP ${r.status()} ${r.url()}`);
  });
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(`console: ${m.text()}`);
  });
  // The microphone as the page itself hears it: getUserMedia is wrapped to note when it
  // was called and resolved, and the captured track is analysed (10 ms RMS): each onset
  // (above -26 dBFS after 300 ms below) with its time (Unix ms). Chromium starts the fake
  // device's file when it opens the device, before the page's promise resolves, so the
  // onsets tell where the file really is on the page's clock.
  await page.addInitScript(() => {
    const heard = { gumCalledAt: null, gumResolvedAt: null, onsets: [] };
    window.rtaiHeard = heard;
    const md = navigator.mediaDevices;
    const gum = md.getUserMedia.bind(md);
    md.getUserMedia = async (c) => {
      heard.gumCalledAt = performance.timeOrigin + performance.now();
      const stream = await gum(c);
      heard.gumResolvedAt = performance.timeOrigin + performance.now();
      const ctx = new AudioContext();
      const src = ctx.createMediaStreamSource(new MediaStream([stream.getAudioTracks()[0].clone()]));
      const proc = ctx.createScriptProcessor(512, 1, 1);
      const frame = Math.round(ctx.sampleRate / 100);
      let quiet = 1000, acc = 0, n = 0;
      proc.onaudioprocess = (e) => {
        const d = e.inputBuffer.getChannelData(0);
        // The chunk's first sample was captured about its length before this callback.
        const t0 = performance.timeOrigin + performance.now() - (1000 * d.length) / ctx.sampleRate;
        for (let i = 0; i < d.length; i++) {
          acc += d[i] * d[i];
          if (++n === frame) {
            const rms = Math.sqrt(acc / n);
            if (rms > 0.05) {
              if (quiet >= 30) heard.onsets.push(t0 + (1000 * (i + 1 - frame)) / ctx.sampleRate);
              quiet = 0;
            } else quiet++;
            acc = 0; n = 0;
          }
        }
      };
      src.connect(proc);
      proc.connect(ctx.destination);
      return stream;
    };
  });
  const t0 = Date.now();
  await page.goto(url);
  await page.waitForFunction(() => window.rtai && window.rtai.connected && window.rtai.micStartedAt != null,
    null, { timeout: 15000 });
  // Until the WAV has played (page clock), then until the transcripts came.
  await page.waitForFunction(
    (d) => Date.now() >= window.rtai.micStartedAt + d * 1000,
    parseFloat(durationS), { timeout: (parseFloat(durationS) + 15) * 1000, polling: 100 });
  const want = parseInt(transcripts, 10);
  await page.waitForFunction(
    (k) => window.rtai.messages.filter((m) => m.type === "x-transcript").length >= k,
    want, { timeout: 15000, polling: 100 }).catch(() => {});
  const state = await page.evaluate(() => ({
    micStartedAt: window.rtai.micStartedAt,
    connected: window.rtai.connected,
    messages: window.rtai.messages,
    pageErrors: window.rtai.errors,
    heard: window.rtaiHeard,
  }));
  console.log(JSON.stringify({ ...state, errors, waitedMs: Date.now() - t0 }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e), errors }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
