//! webrtcserve: CPU of one shared encode (raw 1280x720@30 → rtencodebin → tee →
//! per-viewer webrtcbin, viewers joined over WHEP) against one
//! `x264enc tune=zerolatency ! rtph264pay ! webrtcbin` per viewer (the webrtcsink
//! model), for N in-process receive-only webrtcbin viewers, and glass-to-glass
//! latency on loopback for both.
//!
//! A 12-bit frame counter is burned into the luma of the picture's top row
//! (12 black/white 32x32 squares) before the encode, with the send wall time
//! per counter; the first viewer decodes and reads the squares back. The
//! other viewers depayload only (the same receive cost in both cases).
//! CPU is the process's utime+stime (/proc/self/stat) over each case.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_video::prelude::*;
use gstrtaiwebrtc::testing::{self, WhepViewer, h264_offer_caps, link_h264_receiver};
use rtai_benches::{figure, ratio};

const W: u32 = 1280;
const H: u32 = 720;
const FPS: u32 = 30;
const BITS: usize = 12;
const SQ: usize = 32;
const CASE: Duration = Duration::from_secs(8);
const WARMUP: Duration = Duration::from_secs(2);
const T: Duration = Duration::from_secs(15);

/// Process CPU seconds (user + system) so far, clock ticks of 1/100 s as on Linux.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name's closing parenthesis: utime and stime are the 14th and 15th overall.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// Send wall times per counter value (indexed by counter mod 2^BITS).
type Sent = Arc<Mutex<Vec<Option<Instant>>>>;

/// Burns a counter into each raw frame's luma (top-left row of squares) and records the send time.
fn burn_counter(pad: &gst::Pad, sent: Sent) {
    let counter = AtomicU64::new(0);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let n = (counter.fetch_add(1, Ordering::Relaxed) as usize) % (1 << BITS);
        let buf = buffer.make_mut();
        let mut map = buf.map_writable().unwrap();
        // I420: the Y plane comes first with stride W (640 is 4-aligned).
        let y = map.as_mut_slice();
        for bit in 0..BITS {
            let v = if n >> bit & 1 == 1 { 235 } else { 16 };
            for row in 0..SQ {
                let start = row * W as usize + bit * SQ;
                y[start..start + SQ].fill(v);
            }
        }
        drop(map);
        sent.lock().unwrap()[n] = Some(Instant::now());
        gst::PadProbeReturn::Ok
    });
}

/// Reads the counter back from a decoded I420 frame (the square centres).
fn read_counter(frame: &gst_video::VideoFrameRef<&gst::BufferRef>) -> usize {
    let stride = frame.plane_stride()[0] as usize;
    let y = frame.plane_data(0).unwrap();
    (0..BITS)
        .map(|bit| {
            let v = y[(SQ / 2) * stride + bit * SQ + SQ / 2];
            usize::from(v > 128) << bit
        })
        .sum()
}

/// Latencies (ms) measured by the decoding viewer, and frames per viewer.
#[derive(Default)]
struct Received {
    latencies: Mutex<Vec<f64>>,
    frames: Vec<AtomicU64>,
    measuring: std::sync::atomic::AtomicBool,
}

/// A receive-only webrtcbin viewer (gstrtaiwebrtc::testing): viewer 0 decodes and
/// reads the counter, the others depayload only. What it offers: the baseline's
/// offer leaves the profile-level-id to its payloader (webrtcserve rewrites its
/// stream's to 42e01f).
fn viewer(index: usize, recv: Arc<Received>, sent: Sent, profile_level_id: bool) -> WhepViewer {
    WhepViewer::new(
        &h264_offer_caps(96, profile_level_id),
        move |pipeline, pad| {
            let sink = gst_app::AppSink::builder().sync(false).build();
            let recv = recv.clone();
            let sent = sent.clone();
            if index == 0 {
                sink.set_caps(Some(
                    &gst::Caps::builder("video/x-raw")
                        .field("format", "I420")
                        .build(),
                ));
            }
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        recv.frames[index].fetch_add(1, Ordering::Relaxed);
                        if index == 0 {
                            let now = Instant::now();
                            let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap())
                                .map_err(|_| gst::FlowError::Error)?;
                            let buffer = sample.buffer().unwrap();
                            let frame =
                                gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
                                    .map_err(|_| gst::FlowError::Error)?;
                            let n = read_counter(&frame);
                            if let Some(t) = sent.lock().unwrap()[n]
                                && recv.measuring.load(Ordering::Relaxed)
                            {
                                let ms = now.duration_since(t).as_secs_f64() * 1e3;
                                // A misread counter gives nonsense: keep plausible values only.
                                if ms < 5000.0 {
                                    recv.latencies.lock().unwrap().push(ms);
                                }
                            }
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
            link_h264_receiver(pipeline, pad, index == 0, sink.upcast());
        },
    )
}

fn wait_until(what: &str, done: impl FnMut() -> bool) {
    testing::wait_until(T, what, done);
}

fn source(pipeline: &gst::Pipeline, sent: Sent) -> gst::Element {
    let src = gst::parse::bin_from_description(
        &format!(
            "videotestsrc is-live=true horizontal-speed=4 \
             ! video/x-raw,format=I420,width={W},height={H},framerate={FPS}/1 ! identity name=burn"
        ),
        true,
    )
    .unwrap();
    pipeline.add(&src).unwrap();
    let burn = src.by_name("burn").unwrap();
    burn_counter(&burn.static_pad("src").unwrap(), sent);
    src.upcast()
}

struct Case {
    cpu: f64,
    frames: Vec<u64>,
    latencies: Vec<f64>,
}

/// Runs the case for CASE after WARMUP: CPU s/s, frames per viewer per second, latencies.
fn measure(recv: &Received, viewers: usize) -> Case {
    wait_until("frames at every viewer", || {
        recv.frames[..viewers]
            .iter()
            .all(|f| f.load(Ordering::Relaxed) > 0)
    });
    std::thread::sleep(WARMUP);
    let f0: Vec<u64> = recv.frames[..viewers]
        .iter()
        .map(|f| f.load(Ordering::Relaxed))
        .collect();
    let c0 = cpu_seconds();
    recv.measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(CASE);
    recv.measuring.store(false, Ordering::Relaxed);
    let cpu = (cpu_seconds() - c0) / CASE.as_secs_f64();
    let frames = recv.frames[..viewers]
        .iter()
        .zip(f0)
        .map(|(f, s)| f.load(Ordering::Relaxed) - s)
        .collect();
    let latencies = std::mem::take(&mut *recv.latencies.lock().unwrap());
    Case {
        cpu,
        frames,
        latencies,
    }
}

fn new_state(viewers: usize) -> (Sent, Arc<Received>) {
    let sent: Sent = Arc::new(Mutex::new(vec![None; 1 << BITS]));
    let recv = Arc::new(Received {
        frames: (0..viewers).map(|_| AtomicU64::new(0)).collect(),
        ..Default::default()
    });
    (sent, recv)
}

/// Shared: raw → webrtcserve (rtencodebin inside), N viewers over WHEP.
fn shared(viewers: usize) -> Case {
    let (sent, recv) = new_state(viewers);
    let pipeline = gst::Pipeline::new();
    let src = source(&pipeline, sent.clone());
    let serve = gst::ElementFactory::make("webrtcserve")
        .property_from_str("listen", "127.0.0.1:0")
        .property("bitrate", 2000u32)
        .property("key-frame-interval", 60u32)
        .property("max-viewers", 64u32)
        .build()
        .unwrap();
    pipeline.add(&serve).unwrap();
    src.link(&serve).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    wait_until("the serve address", || {
        serve
            .property::<gst::Structure>("stats")
            .get::<String>("address")
            .map(|a| !a.ends_with(":0"))
            .unwrap_or(false)
    });
    let addr = serve
        .property::<gst::Structure>("stats")
        .get::<String>("address")
        .unwrap();
    let peers: Vec<WhepViewer> = (0..viewers)
        .map(|i| {
            let v = viewer(i, recv.clone(), sent.clone(), true);
            v.whep_join(&addr);
            v
        })
        .collect();
    let case = measure(&recv, viewers);
    drop(peers);
    pipeline.set_state(gst::State::Null).unwrap();
    case
}

/// Baseline: raw → tee → per viewer `queue ! x264enc ! rtph264pay ! webrtcbin`, offer/answer in-process.
fn baseline(viewers: usize) -> Case {
    let (sent, recv) = new_state(viewers);
    let pipeline = gst::Pipeline::new();
    let src = source(&pipeline, sent.clone());
    let tee = gst::ElementFactory::make("tee").build().unwrap();
    pipeline.add(&tee).unwrap();
    src.link(&tee).unwrap();
    let mut senders = Vec::new();
    for _ in 0..viewers {
        let branch = gst::parse::bin_from_description(
            "queue leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0 \
             ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=2000 key-int-max=60 bframes=0 \
             ! video/x-h264,profile=constrained-baseline ! h264parse config-interval=-1 \
             ! rtph264pay config-interval=-1 aggregate-mode=zero-latency \
             ! application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000 \
             ! webrtcbin name=send bundle-policy=max-bundle",
            true,
        )
        .unwrap();
        pipeline.add(&branch).unwrap();
        tee.link(&branch).unwrap();
        let send = branch.by_name("send").unwrap();
        // A send-only transceiver with the offered codec, known before any caps flow.
        let transceiver = send
            .static_pad("sink_0")
            .unwrap()
            .property::<gst_webrtc::WebRTCRTPTransceiver>("transceiver");
        transceiver.set_property(
            "direction",
            gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
        );
        transceiver.set_property("codec-preferences", h264_offer_caps(96, false));
        senders.push(send);
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    let peers: Vec<WhepViewer> = senders
        .iter()
        .enumerate()
        .map(|(i, send)| {
            let v = viewer(i, recv.clone(), sent.clone(), false);
            // As over WHEP: full ICE gathering on both sides, candidates inside the SDP.
            testing::set_remote(send, gst_webrtc::WebRTCSDPType::Offer, &v.gathered_offer());
            testing::create_local(send, "create-answer", "answer");
            let answer = testing::gathered_local(send);
            v.set_remote(gst_webrtc::WebRTCSDPType::Answer, &answer);
            v
        })
        .collect();
    for v in &peers {
        wait_until("connected peers", || {
            let c = |e: &gst::Element| {
                e.property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state")
            };
            c(&v.webrtc) == gst_webrtc::WebRTCPeerConnectionState::Connected
        });
    }
    let case = measure(&recv, viewers);
    drop(peers);
    pipeline.set_state(gst::State::Null).unwrap();
    case
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, case: &mut Case) {
    figure(&format!("{name} CPU"), case.cpu, "s/s");
    let fps: Vec<f64> = case
        .frames
        .iter()
        .map(|&f| f as f64 / CASE.as_secs_f64())
        .collect();
    let min = fps.iter().cloned().fold(f64::INFINITY, f64::min);
    figure(&format!("{name} slowest viewer"), min, "fps");
    case.latencies.sort_by(|a, b| a.total_cmp(b));
    figure(
        &format!("{name} capture-to-decoded P50"),
        percentile(&case.latencies, 0.5),
        "ms",
    );
    figure(
        &format!("{name} capture-to-decoded P95"),
        percentile(&case.latencies, 0.95),
        "ms",
    );
    figure(
        &format!("{name} latency samples"),
        case.latencies.len() as f64,
        "frames",
    );
}

fn main() {
    gst::init().unwrap();
    gstrtaiwebrtc::plugin_register_static().unwrap();
    gstrtaiencode::plugin_register_static().unwrap();
    let counts: Vec<usize> = std::env::var("WEBRTCSERVE_VIEWERS")
        .unwrap_or_else(|_| "1,4,8".into())
        .split(',')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    println!(
        "webrtcserve: raw {W}x{H}@{FPS}, x264 ultrafast/zerolatency 2000 kbit/s, {} s per case",
        CASE.as_secs()
    );
    for n in counts {
        let mut s = shared(n);
        report(&format!("shared encode, {n} viewers"), &mut s);
        let mut b = baseline(n);
        report(&format!("encoder per viewer, {n} viewers"), &mut b);
        ratio(
            &format!("CPU shared vs per-viewer, {n} viewers"),
            s.cpu,
            b.cpu,
            "s/s",
        );
    }
}
