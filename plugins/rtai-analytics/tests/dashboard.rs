//! The dashboard in a real browser (Debian's chromium through playwright-core),
//! in its own test binary: the process runs the `latencymetrics` tracer the way
//! users do (`GST_TRACERS` before GStreamer initialises), so the latency chart
//! has something to draw.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;

const TOKEN: &str = "s3cret token";
/// The stage's per-buffer sleep (µs): a latency that dwarfs scheduling jitter,
/// so P50, P95 and P99 are all tall bars.
const STAGE_SLEEP_US: u32 = 10_000;
/// The dashboard's bar colours (COLORS in app.js): P50, P95, P99; one-series charts use the first.
const SERIES: [[u8; 3]; 3] = [[0x4e, 0x79, 0xa7], [0xf2, 0x8e, 0x2b], [0xe1, 0x57, 0x59]];
/// Pixels of one series' colour that make a drawn bar: a legend swatch is
/// about 180 (10×10 canvas pixels, scaled), a bar here tens of thousands.
const MIN_BAR_PIXELS: usize = 1000;

struct Screenshot {
    width: usize,
    height: usize,
    channels: usize,
    data: Vec<u8>,
}

impl Screenshot {
    fn load(path: &Path) -> Self {
        let mut decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("a colour screenshot, not {other:?}"),
        };
        buf.truncate(info.buffer_size());
        Self {
            width: info.width as usize,
            height: info.height as usize,
            channels,
            data: buf,
        }
    }

    /// The pixels of `region` (the JSON box check.mjs reports), clipped to the image.
    fn pixels(
        &self,
        region: &serde_json::Value,
    ) -> impl Iterator<Item = (usize, usize, [u8; 3])> + '_ {
        let at = |k: &str| region[k].as_u64().unwrap() as usize;
        let (x0, y0) = (at("x").min(self.width), at("y").min(self.height));
        let (x1, y1) = (
            (x0 + at("width")).min(self.width),
            (y0 + at("height")).min(self.height),
        );
        (y0..y1).flat_map(move |y| {
            (x0..x1).map(move |x| {
                let i = (y * self.width + x) * self.channels;
                (x, y, [self.data[i], self.data[i + 1], self.data[i + 2]])
            })
        })
    }

    fn count(&self, region: &serde_json::Value, color: [u8; 3]) -> usize {
        self.pixels(region)
            .filter(|(_, _, p)| near(*p, color))
            .count()
    }

    /// Non-white pixels: the panels are white, so anything drawn.
    fn ink(&self, region: &serde_json::Value) -> usize {
        self.pixels(region)
            .filter(|(_, _, p)| p.iter().any(|c| *c < 0xf0))
            .count()
    }

    /// Runs of `color` along the pixel row `y`: the bars a horizontal line crosses.
    fn runs(&self, region: &serde_json::Value, y: usize, color: [u8; 3]) -> usize {
        let mut row: Vec<(usize, bool)> = self
            .pixels(region)
            .filter(|(_, py, _)| *py == y)
            .map(|(x, _, p)| (x, near(p, color)))
            .collect();
        row.sort();
        row.windows(2).filter(|w| w[1].1 && !w[0].1).count()
            + usize::from(row.first().is_some_and(|p| p.1))
    }
}

/// Equal up to the rounding of a scaled canvas.
fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 12)
}

/// The dashboard lists stored events on load, receives a live one over SSE,
/// draws both charts (checked in a PNG screenshot taken while the pipeline
/// runs) and fetches nothing from outside the element's server; with
/// `auth-token` set, as every request the page makes must carry it.
#[test]
fn dashboard_shows_stored_and_live_events_in_chromium() {
    init_from_file_with_tracer();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard");
    assert!(
        Path::new(dir).join("node_modules/playwright-core").exists(),
        "playwright-core is missing: scripts/setup.sh runs `npm ci` in {dir}"
    );
    let rig = Rig::build(
        &[
            ("listen", "127.0.0.1:0".to_value()),
            ("auth-token", TOKEN.to_value()),
        ],
        &[VIDEO],
        Some(&format!("identity sleep-time={STAGE_SLEEP_US}")),
    );
    scripted_video(&rig, 0);
    let stored = rig.events().len();
    assert!(stored >= 5, "{stored}");
    // The writer is asynchronous: the page must find every event stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.stats().get::<u64>("rows-written").unwrap() < stored as u64 {
        assert!(Instant::now() < deadline, "events not stored within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let url = format!(
        "http://{}/?access_token={}",
        rig.addr(),
        TOKEN.replace(' ', "%20")
    );
    let mut node = std::process::Command::new("node")
        .arg(format!("{dir}/check.mjs"))
        .arg(&url)
        .arg("giraffe")
        .arg(&screenshot)
        .arg("stage0.src")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut out = std::io::BufReader::new(node.stdout.take().unwrap());
    let mut line = String::new();
    use std::io::BufRead;
    out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "ready",
        "the page did not connect its live feed"
    );
    // A new class after the page loaded: only the live feed can bring it.
    for n in 40..45u64 {
        rig.push(
            0,
            video_frame(n * 100 * MS, &[Det("giraffe", Some(9), 0.95)]),
        );
    }
    line.clear();
    out.read_line(&mut line).unwrap();
    let status = node.wait().unwrap();
    // The screenshot was taken with the pipeline still PLAYING.
    assert_eq!(rig.pipeline.current_state(), gst::State::Playing);
    assert!(status.success(), "the dashboard check failed: {line}");
    let shown: serde_json::Value = serde_json::from_str(&line).unwrap();
    let element = rig.sink.name().to_string();
    rig.eos();
    rig.stop();
    println!("dashboard screenshot: {}", screenshot.display());
    assert_eq!(
        shown["errors"],
        serde_json::json!([]),
        "no failed request, no script error: {shown}"
    );
    assert_eq!(
        shown["foreignRequests"],
        serde_json::json!([]),
        "the page must work offline: {shown}"
    );
    assert_eq!(shown["status"], "live");
    assert_eq!(
        shown["rowsBefore"].as_u64().unwrap() as usize,
        stored,
        "stored events listed on load"
    );
    let rows = shown["rows"].as_array().unwrap();
    let giraffe = rows
        .iter()
        .find(|r| r[3].as_str().unwrap().contains("giraffe"))
        .expect("live row");
    assert_eq!(giraffe[1], "object_appear");
    assert_eq!(giraffe[4], "0.95");
    assert!(
        rows.iter().any(|r| r[1] == "clip"),
        "the count spike's clip is listed: {shown}"
    );
    assert!(shown["totalClips"].as_u64().unwrap() >= 1);
    assert_eq!(shown["element"], element.as_str());

    // What the charts show, per the page and in the screenshot's pixels.
    let charts = &shown["charts"];
    assert_eq!(
        charts["classes"]["groups"],
        serde_json::json!(["car", "giraffe", "person"]),
        "{charts}"
    );
    assert_eq!(
        charts["latency"]["groups"],
        serde_json::json!(["stage0.src"]),
        "the tracer measured the stage: {charts}"
    );
    assert_eq!(
        shown["latencyHintHidden"], true,
        "no 'run with GST_TRACERS' hint once there is latency"
    );
    let image = Screenshot::load(&screenshot);
    let classes = &charts["classes"]["box"];
    let latency = &charts["latency"]["box"];
    for (name, region) in [("classes", classes), ("latency", latency)] {
        let area = region["width"].as_u64().unwrap() * region["height"].as_u64().unwrap();
        assert!(area >= 100 * 100, "{name} chart box {region}");
        let ink = image.ink(region);
        assert!(
            ink as u64 >= area / 50,
            "{name} chart: {ink} drawn pixels of {area} in {region}"
        );
    }
    let class_bars = image.count(classes, SERIES[0]);
    assert!(
        class_bars >= 3 * MIN_BAR_PIXELS,
        "detections-per-class bars: {class_bars} pixels"
    );
    // car 1, giraffe 1, person 4: the shortest bar is a quarter of the plot (200 canvas
    // pixels tall, its base 40 above the canvas' bottom); a row just above the base crosses all three.
    let scale = classes["height"].as_f64().unwrap() / 260.0;
    let base = classes["y"].as_u64().unwrap() as usize + ((260.0 - 45.0) * scale) as usize;
    assert_eq!(
        image.runs(classes, base, SERIES[0]),
        3,
        "one bar per class at y={base}"
    );
    for (series, color) in ["P50", "P95", "P99"].iter().zip(SERIES) {
        let n = image.count(latency, color);
        assert!(
            n >= MIN_BAR_PIXELS,
            "{series} bar of stage0.src: {n} pixels"
        );
    }
}
