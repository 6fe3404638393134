//! webrtcserve glass-to-glass latency read back in a browser page (issue 18's
//! "running clock burned into the picture", goal P95 < 150 ms).
//!
//! Raw 640x360@30 (`videotestsrc`) gets the capture wall-clock time burned into
//! its top-left corner before webrtcserve encodes it (rtencodebin inside):
//! milliseconds since the epoch modulo 2^24 as 24 black/white 32x32 blocks
//! (12 a row, LSB first) and below them the same blocks inverted, so a misread
//! frame is rejected rather than counted. Two viewers watch at once:
//! - headless chromium (playwright-core, Debian's /usr/bin/chromium) on the
//!   player page: in every `requestVideoFrameCallback` the presented frame is
//!   drawn to a canvas, the blocks read back and compared with `Date.now()`
//!   (plugins/rtai-webrtc/tests/browser/glass.mjs);
//! - the baseline, an in-process receive-only webrtcbin over WHEP that decodes
//!   (avdec_h264, appsink sync=false) and reads the same blocks: capture →
//!   encode → RTP over loopback → decode, without a jitter buffer's playout
//!   delay or rendering.
//!
//! Both compare with the same host clock over the same window (the page says
//! when it starts measuring). `GLASS_SECONDS` (default 20) is its length.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use gst::prelude::*;
use gst_video::prelude::*;
use gstrtaiwebrtc::testing::{WhepViewer, h264_offer_caps, link_h264_receiver};
use rtai_benches::{figure, ratio};

const W: usize = 640;
const H: usize = 360;
const FPS: u32 = 30;
const SQ: usize = 32;
const COLS: usize = 12;
const BITS: usize = 24;
const ROWS: usize = BITS.div_ceil(COLS);
const T: std::time::Duration = std::time::Duration::from_secs(20);

/// Wall-clock milliseconds modulo 2^BITS (what Date.now() % 2^24 gives in the page).
fn now_code() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    ms % (1 << BITS)
}

/// Milliseconds from `code` to `now` modulo 2^BITS.
fn elapsed(code: u64, now: u64) -> f64 {
    ((now + (1 << BITS) - code) % (1 << BITS)) as f64
}

/// The top-left pixel of block `bit` (data rows first, then the inverted rows).
fn block(bit: usize, inverted: bool) -> (usize, usize) {
    (
        (bit / COLS + if inverted { ROWS } else { 0 }) * SQ,
        (bit % COLS) * SQ,
    )
}

/// Burns the capture time into each I420 frame (Y blocks, neutral chroma under them).
fn burn_clock(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::BUFFER, |_, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let code = now_code();
        let buf = buffer.make_mut();
        let mut map = buf.map_writable().unwrap();
        let data = map.as_mut_slice();
        let (y, chroma) = data.split_at_mut(W * H);
        for bit in 0..BITS {
            let one = code >> bit & 1 == 1;
            for inverted in [false, true] {
                let v = if one != inverted { 235 } else { 16 };
                let (top, left) = block(bit, inverted);
                for row in top..top + SQ {
                    y[row * W + left..row * W + left + SQ].fill(v);
                }
                // U then V planes, W/2 x H/2 each.
                for plane in 0..2 {
                    let base = plane * (W / 2) * (H / 2);
                    for row in top / 2..(top + SQ) / 2 {
                        let start = base + row * W / 2 + left / 2;
                        chroma[start..start + SQ / 2].fill(128);
                    }
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Reads the time back from a decoded I420 frame; None when the inverted blocks disagree.
fn read_clock(frame: &gst_video::VideoFrameRef<&gst::BufferRef>) -> Option<u64> {
    let stride = frame.plane_stride()[0] as usize;
    let y = frame.plane_data(0).ok()?;
    let at = |bit, inverted| {
        let (top, left) = block(bit, inverted);
        y[(top + SQ / 2) * stride + left + SQ / 2] > 128
    };
    let mut code = 0;
    for bit in 0..BITS {
        let one = at(bit, false);
        if at(bit, true) == one {
            return None;
        }
        code |= u64::from(one) << bit;
    }
    Some(code)
}

#[derive(Default)]
struct Baseline {
    latencies: Mutex<Vec<f64>>,
    misreads: std::sync::atomic::AtomicU64,
    measuring: AtomicBool,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Prints P50/P95/P99 of `v` (sorted in place); returns P50 and P95.
fn report(name: &str, v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    for (p, label) in [(0.5, "P50"), (0.95, "P95"), (0.99, "P99")] {
        figure(&format!("{name} {label}"), percentile(v, p), "ms");
    }
    figure(&format!("{name} samples"), v.len() as f64, "frames");
    (percentile(v, 0.5), percentile(v, 0.95))
}

fn main() {
    gst::init().unwrap();
    gstrtaiwebrtc::plugin_register_static().unwrap();
    gstrtaiencode::plugin_register_static().unwrap();
    let secs: f64 = std::env::var("GLASS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    let browser_dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/rtai-webrtc/tests/browser"
    );
    assert!(
        std::path::Path::new(browser_dir)
            .join("node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: scripts/setup.sh runs `npm ci` in {browser_dir}"
    );

    let pipeline = gst::parse::launch(&format!(
        "videotestsrc is-live=true horizontal-speed=4 \
         ! video/x-raw,format=I420,width={W},height={H},framerate={FPS}/1 ! identity name=burn \
         ! webrtcserve name=serve listen=127.0.0.1:0 bitrate=1500 key-frame-interval=60"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    burn_clock(&pipeline.by_name("burn").unwrap().static_pad("src").unwrap());
    let serve = pipeline.by_name("serve").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let addr = gstrtaiwebrtc::testing::listening_address(&serve, T);

    // The baseline viewer: in-process webrtcbin, decode, read the blocks.
    let base = Arc::new(Baseline::default());
    let b = base.clone();
    let viewer = WhepViewer::new(&h264_offer_caps(96, true), move |pipeline, pad| {
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .caps(
                &gst::Caps::builder("video/x-raw")
                    .field("format", "I420")
                    .build(),
            )
            .build();
        let b = b.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let now = now_code();
                    if !b.measuring.load(Ordering::Relaxed) {
                        return Ok(gst::FlowSuccess::Ok);
                    }
                    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap())
                        .map_err(|_| gst::FlowError::Error)?;
                    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(
                        sample.buffer().unwrap(),
                        &info,
                    )
                    .map_err(|_| gst::FlowError::Error)?;
                    match read_clock(&frame) {
                        Some(code) => b.latencies.lock().unwrap().push(elapsed(code, now)),
                        None => {
                            b.misreads.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        link_h264_receiver(pipeline, pad, true, sink.upcast());
    });
    viewer.whep_join(&addr);

    println!(
        "webrtcserve glass-to-glass: raw {W}x{H}@{FPS} → rtencodebin (x264 1500 kbit/s) → chromium \
         player page and an in-process webrtcbin at once, {secs} s"
    );
    let layout = format!(r#"{{"sq":{SQ},"cols":{COLS},"bits":{BITS}}}"#);
    let mut node = std::process::Command::new("node")
        .arg(format!("{browser_dir}/glass.mjs"))
        .arg(format!("http://{addr}/"))
        .arg(secs.to_string())
        .arg(&layout)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    // The baseline measures the page's window: from its "measuring" line to its result.
    let mut line = String::new();
    for l in std::io::BufRead::lines(std::io::BufReader::new(node.stdout.take().unwrap())) {
        line = l.unwrap();
        if line.contains(r#""step":"measuring""#) {
            base.measuring.store(true, Ordering::Relaxed);
        }
    }
    base.measuring.store(false, Ordering::Relaxed);
    let status = node.wait().unwrap();
    let page: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|_| panic!("glass.mjs did not end with its result: {line:?}"));
    assert!(status.success() && page.get("error").is_none(), "{page}");
    let samples = |k: &str| -> Vec<f64> {
        page[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let mut callback = samples("callback");
    let mut display = samples("display");
    let mut baseline = std::mem::take(&mut *base.latencies.lock().unwrap());
    let (p50, p95) = report(
        "chromium glass-to-glass (requestVideoFrameCallback, Date.now())",
        &mut callback,
    );
    report(
        "chromium glass-to-glass (expectedDisplayTime)",
        &mut display,
    );
    figure(
        "chromium frames read / misread",
        page["frames"].as_f64().unwrap(),
        &format!("frames, {} misread", page["misreads"]),
    );
    let (base_p50, base_p95) = report("baseline in-process capture-to-decoded", &mut baseline);
    figure(
        "baseline misread",
        base.misreads.load(Ordering::Relaxed) as f64,
        "frames",
    );
    // The in-process receiver stalls now and then on a loaded machine: P50 is the steady ratio.
    ratio(
        "P50 chromium glass-to-glass vs in-process decoded",
        p50,
        base_p50,
        "ms",
    );
    ratio(
        "P95 chromium glass-to-glass vs in-process decoded",
        p95,
        base_p95,
        "ms",
    );
    figure(
        "goal: chromium P95 < 150 ms",
        f64::from(p95 < 150.0),
        "(1 = met)",
    );
    drop(viewer);
    pipeline.set_state(gst::State::Null).unwrap();
}
