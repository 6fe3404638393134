//! inferclient against an endpoint 200 ms away (benches/slow_kserve.py), in one run:
//!
//! 1. Results per second with `max-inflight=1` (one request at a time) against the
//!    default 4 and against 8, frames offered at 30 fps, every frame due.
//! 2. A live 30 fps stream with `latency-budget` 100 ms (below the endpoint's 200 ms: no
//!    result makes it, frames keep 30 fps) and 300 ms (results arrive, 30 fps held).
//!
//! 0. Pre-processing plus request build per 1280x720 frame into a 640x640 FP32 tensor
//!    as KServe REST JSON, the current path (bilinear letterbox, `client::tensor_json`)
//!    against the old one kept below as the baseline (nearest-neighbour letterbox, the
//!    body built as a `serde_json::Value` per sample).
//!
//! 3. Results per second against a real model, PP-OCRv4's text detector (the ONNX model
//!    inside rapidocr-onnxruntime) served by MLServer (the test peer in
//!    plugins/rtai-infer/tests/peers/mlserver), 320x320 input, `max-inflight` 4 against 1.
//!
//! Run: `cargo bench -p rtai-benches --bench inferclient`

use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstrtaiinfer::{client, preprocess};
use rtai_benches::{figure, ratio};
use rtai_core::stats::LatencyHistogram;
use rtai_core::testing::{element, launch};

const DELAY_MS: u32 = 200;
const FRAMES: u64 = 90;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Run {
    output_fps: f64,
    results_per_second: f64,
    added: LatencyHistogram,
}

/// Offers FRAMES frames at 30 fps (wall clock) through inferclient; measures the output.
fn run(url: &str, props: &str) -> Run {
    let pipeline = launch(&format!(
        "appsrc name=src format=time is-live=true caps=video/x-raw,format=RGB,width=64,height=48,framerate=30/1 \
         ! inferclient url={url} model=m input-width=64 input-height=64 {props} ! appsink name=sink sync=false"
    ));
    let src = element::<gst_app::AppSrc>(&pipeline, "src");
    let sink = element::<gst_app::AppSink>(&pipeline, "sink");
    pipeline.set_state(gst::State::Playing).unwrap();
    let pushed: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let start = Instant::now();
    let feeder = {
        let (src, pushed) = (src.clone(), pushed.clone());
        std::thread::spawn(move || {
            for i in 0..FRAMES {
                let due = start + Duration::from_nanos(i * 1_000_000_000 / 30);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let mut b = gst::Buffer::with_size(64 * 48 * 3).unwrap();
                b.get_mut()
                    .unwrap()
                    .set_pts(gst::ClockTime::from_nseconds(i * 1_000_000_000 / 30));
                pushed.lock().unwrap().push(Instant::now());
                src.push_buffer(b).unwrap();
            }
            src.end_of_stream().unwrap();
        })
    };
    let mut added = LatencyHistogram::new();
    let (mut n, mut with_results, mut first, mut last) = (0usize, 0usize, None, start);
    while let Ok(sample) = sink.pull_sample() {
        last = Instant::now();
        first.get_or_insert(last);
        if let Some(t) = pushed.lock().unwrap().get(n) {
            added.record(last.duration_since(*t).as_nanos() as u64);
        }
        // A frame whose result came back carries the inferred marker, zero detections included.
        if gstrtaiinfer::InferredMeta::get(sample.buffer().unwrap()).is_some() {
            with_results += 1;
        }
        n += 1;
    }
    feeder.join().unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    let span = last
        .duration_since(first.unwrap_or(start))
        .as_secs_f64()
        .max(1e-9);
    Run {
        output_fps: (n.saturating_sub(1)) as f64 / span,
        results_per_second: with_results as f64 / last.duration_since(start).as_secs_f64(),
        added,
    }
}

/// The old letterbox (nearest neighbour, before issue 21), kept as the baseline.
fn old_tensor(rgb: &preprocess::Rgb, iw: usize, ih: usize) -> Vec<f32> {
    let scale = (iw as f64 / rgb.width as f64).min(ih as f64 / rgb.height as f64);
    let pad_x = (iw as f64 - rgb.width as f64 * scale) / 2.0;
    let pad_y = (ih as f64 - rgb.height as f64 * scale) / 2.0;
    let mut out = vec![114.0f32 / 255.0; iw * ih * 3];
    for y in 0..ih {
        let fy = (y as f64 + 0.5 - pad_y) / scale;
        if fy < 0.0 || fy >= rgb.height as f64 {
            continue;
        }
        for x in 0..iw {
            let fx = (x as f64 + 0.5 - pad_x) / scale;
            if fx < 0.0 || fx >= rgb.width as f64 {
                continue;
            }
            let s = &rgb.data[(fy as usize * rgb.width as usize + fx as usize) * 3..][..3];
            for (c, &v) in s.iter().enumerate() {
                out[c * iw * ih + y * iw + x] = v as f32 / 255.0;
            }
        }
    }
    out
}

/// Pre-processing plus request body per frame: new against old, in the same run.
fn preprocessing() {
    const N: u32 = 10;
    let (w, h) = (1280u32, 720u32);
    let rgb = preprocess::Rgb {
        width: w,
        height: h,
        data: (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect(),
    };
    let time = |f: &dyn Fn() -> usize| {
        let start = Instant::now();
        let mut bytes = 0;
        for _ in 0..N {
            bytes = f();
        }
        (start.elapsed().as_secs_f64() * 1000.0 / N as f64, bytes)
    };
    let (old_ms, old_bytes) = time(&|| {
        let data = old_tensor(&rgb, 640, 640);
        let body = serde_json::json!({ "inputs": [{ "name": "images", "shape": [1, 3, 640, 640], "datatype": "FP32", "data": data }] });
        serde_json::to_vec(&body).unwrap().len()
    });
    let (new_ms, new_bytes) = time(&|| {
        let (data, _) = preprocess::tensor(&rgb, 640, 640, preprocess::Layout::Nchw, true);
        client::tensor_json(
            "images",
            &[1, 3, 640, 640],
            client::InputDatatype::Fp32,
            &data,
        )
        .len()
    });
    figure(
        "old: nearest letterbox + JSON Value body",
        old_ms,
        "ms/frame",
    );
    figure(
        "new: bilinear letterbox + direct JSON body",
        new_ms,
        "ms/frame",
    );
    figure("old body", old_bytes as f64 / 1e6, "MB");
    figure("new body", new_bytes as f64 / 1e6, "MB");
    ratio(
        "new vs old pre-processing + request build",
        new_ms,
        old_ms,
        "ms",
    );
}

fn main() {
    rtai_benches::init();
    preprocessing();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("slow_kserve.py");
    let _server = Server(
        Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(DELAY_MS.to_string())
            .spawn()
            .expect("python3 runs"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the endpoint did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("endpoint: {DELAY_MS} ms per request; {FRAMES} frames offered at 30 fps");
    let mut rates = Vec::new();
    for inflight in [1, 4, 8] {
        let r = run(
            &url,
            &format!("max-inflight={inflight} latency-budget=10000"),
        );
        println!(
            "max-inflight={inflight}{}",
            if inflight == 4 { " (default)" } else { "" }
        );
        figure("  results per second", r.results_per_second, "results/s");
        figure("  output frames per second", r.output_fps, "frames/s");
        rates.push(r.results_per_second);
    }
    ratio(
        "results/s, default (4) vs max-inflight=1",
        rates[1],
        rates[0],
        "results/s",
    );
    ratio(
        "results/s, max-inflight=8 vs max-inflight=1",
        rates[2],
        rates[0],
        "results/s",
    );
    for budget in [100, 300] {
        let live = run(&url, &format!("max-inflight=8 latency-budget={budget}"));
        println!("live 30 fps, max-inflight=8, latency-budget={budget} ms");
        figure("  output frames per second", live.output_fps, "frames/s");
        figure("  results per second", live.results_per_second, "results/s");
        figure(
            "  added latency P50",
            live.added.quantile(0.5) as f64 / 1e6,
            "ms",
        );
        figure(
            "  added latency P95",
            live.added.quantile(0.95) as f64 / 1e6,
            "ms",
        );
        figure("  added latency max", live.added.max() as f64 / 1e6, "ms");
    }
    pp_ocr();
}

/// Section 3: max-inflight 4 against 1 with the PP-OCR detector behind MLServer.
fn pp_ocr() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mlserver = root.join(".venv-mlserver/bin/mlserver");
    let peers = root.join("plugins/rtai-infer/tests/peers/mlserver");
    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let port = free();
    let _server = Server(
        Command::new(mlserver)
            .arg("start")
            .arg(&peers)
            .env("PYTHONPATH", &peers)
            .env("MLSERVER_HOST", "127.0.0.1")
            .env("MLSERVER_HTTP_PORT", port.to_string())
            .env("MLSERVER_GRPC_PORT", free().to_string())
            .env("MLSERVER_METRICS_PORT", free().to_string())
            .env("MLSERVER_METRICS_ENDPOINT", "")
            .env("MLSERVER_PARALLEL_WORKERS", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("scripts/setup.sh installs MLServer into .venv-mlserver"),
    );
    let ready = || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = write!(
            s,
            "GET /v2/models/text/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200")
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        assert!(Instant::now() < deadline, "MLServer did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let url = format!("http://127.0.0.1:{port}");
    let props = "model=text input-width=320 input-height=320 latency-budget=10000";
    let one = run(&url, &format!("{props} max-inflight=1"));
    let four = run(&url, &format!("{props} max-inflight=4"));
    println!("PP-OCRv4 detector behind MLServer, 320x320, {FRAMES} frames offered at 30 fps");
    ratio(
        "results/s, max-inflight=4 vs 1",
        four.results_per_second,
        one.results_per_second,
        "results/s",
    );
}
