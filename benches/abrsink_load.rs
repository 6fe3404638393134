//! 1000 simulated HLS clients on loopback against a live abrsink, with a
//! baseline in the same run: the same load against a plain static file server
//! (axum on the same shared runtime) serving a snapshot of the same bytes.
//!
//! abrsink: `videotestsrc` 640x360p30 live → `ladder=360p:800,240p:300`, 1 s
//! segments (the default), no DASH. Each client, paced to one iteration per
//! second (the segment duration, as a live player reloads), fetches the master
//! playlist (a new viewer session each time on abrsink), its rendition's
//! playlist (client i takes rendition i mod 2) and the newest segment listed
//! there, for `SECONDS`. A semaphore bounds the requests in flight
//! (`IN_FLIGHT`); the generator runs on its own tokio runtime so that the
//! server's CPU is the CPU of the shared `rtai-runtime` threads
//! (/proc/self/task/*/stat deltas), where both servers run.
//!
//! Prints per server: P50/P95 fetch latency per kind (from the permit to the
//! last body byte), requests/s, errors, server CPU s/s, then abrsink vs static
//! ratios.
//!
//! Run: `cargo bench -p rtai-benches --bench abrsink_load`

use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::prelude::*;
use hdrhistogram::Histogram;
use rtai_benches::{figure, ratio};
use tokio::sync::{Mutex, Semaphore};

const CLIENTS: usize = 1000;
const IN_FLIGHT: usize = 256;
const SECONDS: u64 = 20;
const KINDS: [&str; 3] = ["master", "playlist", "segment"];

/// CPU seconds (user + system) of this process's threads named `name`
/// (/proc/self/task/*/stat, 1/100 s ticks).
fn thread_cpu(name: &str) -> f64 {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        ticks += fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    }
    ticks as f64 / 100.0
}

/// User + system CPU seconds of the whole process.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    (fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()) as f64 / 100.0
}

#[derive(Default)]
struct Stats {
    latency: Vec<Histogram<u64>>,
    errors: u64,
}

struct Run {
    p50_ms: [f64; 3],
    p95_ms: [f64; 3],
    requests: u64,
    errors: u64,
    rps: f64,
    server_cpu: f64,
    process_cpu: f64,
}

/// The rendition URIs of a master playlist (with their query, e.g. a session).
fn renditions(master: &str) -> Vec<String> {
    let lines: Vec<&str> = master.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("#EXT-X-STREAM-INF"))
        .filter_map(|(i, _)| lines.get(i + 1).map(|s| s.to_string()))
        .collect()
}

/// The newest (last) segment URI of a media playlist.
fn newest_segment(playlist: &str) -> Option<&str> {
    playlist
        .lines()
        .rev()
        .find(|l| !l.is_empty() && !l.starts_with('#'))
}

/// `uri` relative to the directory of `base` (both paths, maybe with a query).
fn join(base: &str, uri: &str) -> String {
    let base = base.split('?').next().unwrap();
    format!("{}{uri}", &base[..base.rfind('/').unwrap() + 1])
}

async fn fetch(
    client: &reqwest::Client,
    permits: &Semaphore,
    url: &str,
    hist: &mut Histogram<u64>,
    errors: &mut u64,
) -> Option<String> {
    let _permit = permits.acquire().await.unwrap();
    let t = Instant::now();
    let body = match client.get(url).send().await {
        Ok(r) if r.status().is_success() => r.bytes().await.ok(),
        _ => None,
    };
    let us = t.elapsed().as_micros() as u64;
    match body {
        Some(b) => {
            hist.saturating_record(us.max(1));
            // Playlists are text; a segment's body is only counted.
            Some(String::from_utf8(b.to_vec()).unwrap_or_default())
        }
        None => {
            *errors += 1;
            None
        }
    }
}

async fn client(
    id: usize,
    http: reqwest::Client,
    permits: Arc<Semaphore>,
    base: String,
    stream: String,
    until: Instant,
    stats: Arc<Mutex<Stats>>,
) {
    let mut hists: Vec<Histogram<u64>> = (0..3)
        .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3).unwrap())
        .collect();
    let mut errors = 0;
    let master_path = format!("/hls/{stream}/master.m3u8");
    // Spread the clients' iterations over the first second.
    tokio::time::sleep(Duration::from_micros(
        (id as u64 * 1_000_000) / CLIENTS as u64,
    ))
    .await;
    while Instant::now() < until {
        let started = Instant::now();
        let master = fetch(
            &http,
            &permits,
            &format!("{base}{master_path}"),
            &mut hists[0],
            &mut errors,
        )
        .await;
        let rendition = master.and_then(|m| {
            let r = renditions(&m);
            (!r.is_empty()).then(|| join(&master_path, &r[id % r.len()]))
        });
        if let Some(rendition) = rendition {
            let playlist = fetch(
                &http,
                &permits,
                &format!("{base}{rendition}"),
                &mut hists[1],
                &mut errors,
            )
            .await;
            if let Some(seg) = playlist.as_deref().and_then(newest_segment) {
                let url = format!("{base}{}", join(&rendition, seg));
                fetch(&http, &permits, &url, &mut hists[2], &mut errors).await;
            }
        }
        tokio::time::sleep_until((started + Duration::from_secs(1)).into()).await;
    }
    let mut s = stats.lock().await;
    if s.latency.is_empty() {
        s.latency = hists;
    } else {
        for (a, b) in s.latency.iter_mut().zip(&hists) {
            a.add(b).unwrap();
        }
    }
    s.errors += errors;
}

fn load(loadgen: &tokio::runtime::Runtime, port: u16, stream: &str) -> Run {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let stats = Arc::new(Mutex::new(Stats::default()));
    let base = format!("http://127.0.0.1:{port}");
    let (s0, p0, t0) = (thread_cpu("rtai-runtime"), process_cpu(), Instant::now());
    let until = t0 + Duration::from_secs(SECONDS);
    loadgen.block_on(async {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|id| {
                tokio::spawn(client(
                    id,
                    http.clone(),
                    permits.clone(),
                    base.clone(),
                    stream.to_string(),
                    until,
                    stats.clone(),
                ))
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let server_cpu = (thread_cpu("rtai-runtime") - s0) / elapsed;
    let process_cpu = (process_cpu() - p0) / elapsed;
    let s = Arc::try_unwrap(stats).ok().unwrap().into_inner();
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let requests: u64 = s.latency.iter().map(|h| h.len()).sum::<u64>() + s.errors;
    Run {
        p50_ms: [0, 1, 2].map(|k| q(&s.latency[k], 0.50)),
        p95_ms: [0, 1, 2].map(|k| q(&s.latency[k], 0.95)),
        requests,
        errors: s.errors,
        rps: requests as f64 / elapsed,
        server_cpu,
        process_cpu,
    }
}

fn print(name: &str, r: &Run) {
    for (k, kind) in KINDS.iter().enumerate() {
        figure(&format!("{name} {kind} fetch P50"), r.p50_ms[k], "ms");
        figure(&format!("{name} {kind} fetch P95"), r.p95_ms[k], "ms");
    }
    figure(&format!("{name} requests/s"), r.rps, "req/s");
    figure(&format!("{name} requests"), r.requests as f64, "");
    figure(&format!("{name} errors"), r.errors as f64, "");
    figure(
        &format!("{name} server CPU (rtai-runtime)"),
        r.server_cpu,
        "CPU s/s",
    );
    figure(
        &format!("{name} process CPU (all)"),
        r.process_cpu,
        "CPU s/s",
    );
}

/// A raw GET on the shared runtime (the snapshot for the static server).
async fn get(client: &reqwest::Client, url: &str) -> bytes::Bytes {
    let r = client.get(url).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.bytes().await.unwrap()
}

fn main() {
    // Static registration (no plugin files): abrsink and the static server share
    // this binary's one rtai-core runtime, whose threads are the server CPU.
    gst::init().unwrap();
    gstrtailive::plugin_register_static().unwrap();
    gstrtaiencode::plugin_register_static().unwrap();
    let rt = rtai_core::runtime::runtime();
    rtai_core::runtime::ensure_tls_provider();
    let loadgen = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load-gen")
        .enable_all()
        .build()
        .unwrap();

    let pipeline = gst::parse::launch(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=30/1 \
         ! abrsink name=abr ladder=360p:800,240p:300 listen=127.0.0.1:0 stream=load \
           prefer-hardware=false dash=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let port = pipeline
        .by_name("abr")
        .unwrap()
        .property::<u32>("bound-port") as u16;
    let base = format!("http://127.0.0.1:{port}");

    // Wait for 3 segments per rendition, then snapshot the bytes a client gets.
    let http = reqwest::Client::new();
    let snapshot = rt.block_on(async {
        let master = get(&http, &format!("{base}/hls/load/master.m3u8")).await;
        let text = String::from_utf8(master.to_vec()).unwrap();
        let mut files = vec![("/hls/load/master.m3u8".to_string(), master)];
        for r in renditions(&text) {
            let path = join("/hls/load/master.m3u8", &r);
            let deadline = Instant::now() + Duration::from_secs(20);
            let playlist = loop {
                let p = get(&http, &format!("{base}{path}")).await;
                if p.windows(7).filter(|w| w == b"#EXTINF").count() >= 3 {
                    break p;
                }
                assert!(Instant::now() < deadline, "{path}: fewer than 3 segments");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let p = String::from_utf8(playlist.to_vec()).unwrap();
            let seg = join(&path, newest_segment(&p).unwrap());
            let seg_bytes = get(&http, &format!("{base}{seg}")).await;
            files.push((path.split('?').next().unwrap().to_string(), playlist));
            files.push((seg.split('?').next().unwrap().to_string(), seg_bytes));
        }
        files
    });
    let mut sizes = String::new();
    for (path, bytes) in &snapshot {
        sizes += &format!("{path} {} B; ", bytes.len());
    }
    println!("snapshot for the static server: {sizes}");

    // The baseline: the same bytes from a static axum server on the shared runtime.
    let files: Arc<std::collections::HashMap<String, bytes::Bytes>> =
        Arc::new(snapshot.into_iter().collect());
    let static_port = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let files = files.clone();
            async move {
                use axum::response::IntoResponse;
                match files.get(uri.path()) {
                    Some(b) => b.clone().into_response(),
                    None => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    });

    println!(
        "{CLIENTS} clients, {IN_FLIGHT} requests in flight at most, {SECONDS} s each, 1 iteration/s per client"
    );
    let baseline = load(&loadgen, static_port, "load");
    print("static", &baseline);
    let abr = load(&loadgen, port, "load");
    print("abrsink", &abr);
    for (k, kind) in KINDS.iter().enumerate() {
        ratio(
            &format!("{kind} P95 abrsink vs static"),
            abr.p95_ms[k],
            baseline.p95_ms[k],
            "ms",
        );
    }
    ratio(
        "requests/s abrsink vs static",
        abr.rps,
        baseline.rps,
        "req/s",
    );
    ratio(
        "server CPU abrsink vs static (rtai-runtime)",
        abr.server_cpu,
        baseline.server_cpu,
        "CPU s/s",
    );
    pipeline.set_state(gst::State::Null).unwrap();
}
