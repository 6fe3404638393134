//! AV1 encode/decode benchmark (issue: AV1 on rav1e and dav1d), one run, on a
//! moving, detailed 720p30 clip (an animated zone plate with moving SMPTE bars
//! composited over it: fine detail and motion everywhere, not a flat pattern).
//!
//! - Throughput: frames pushed as fast as the element takes them; frames/s from
//!   the first push to the last output. rtav1enc against stock `av1enc` (libaom,
//!   realtime usage), rtav1dec against stock `av1dec` (libaom); x264enc, vp8enc
//!   (and avdec_h264, vp8dec) as context.
//! - Every encoder gets the same bitrate target (BITRATE_KBPS) in its own unit;
//!   the run prints the bitrate each really produced and the luma PSNR of its
//!   stream decoded back, so speed is compared at like size and quality. The
//!   clip's timestamps are restamped to exact frame times: the compositor's
//!   rounded ones made av1enc (libaom) see uneven frame durations and produce
//!   3.8 Mbit/s for a 2 Mbit/s target.
//! - rtav1enc with `cdef=false` beside the default: encode time saved against
//!   the PSNR it costs, same run, same target.
//! - Context rows from ffmpeg, when Debian's ffmpeg has them: SVT-AV1
//!   (`libsvtav1`, real-time preset 12) and libaom (`libaom-av1`, realtime,
//!   cpu-used 8), at the same target. Their frames/s include ffmpeg's start and
//!   reading the clip from a Y4M file (a whole process per run), so they are
//!   a little pessimistic.
//! - GStreamer 1.22's `av1dec` (libaom) decodes on one thread (it sets no
//!   thread count), so the decoder ratio is dav1d's threads against one.
//! - Per-frame latency: frames pushed at 30 fps in real time; time from a
//!   frame's push to its output (P50/P95/max). For an encoder this includes the
//!   frames it holds back by design (rav1e: 4 frames, see docs/av1.md), so the
//!   processing time per frame (1 / throughput) is printed beside it.
//!
//! Run: `cargo bench -p rtai-benches --bench av1`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::process::Command;

use gst::prelude::*;
use gst_video::prelude::*;
use rtai_benches::{figure, ratio};
use rtai_core::stats::LatencyHistogram;
use rtai_core::testing::{element, launch};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;
const FRAMES: usize = 90;
const FRAME: Duration = Duration::from_nanos(1_000_000_000 / 30);
/// The bitrate target every encoder gets, in kbit/s.
const BITRATE_KBPS: u32 = 2000;

struct Measured {
    fps: f64,
    latency: LatencyHistogram,
    caps: gst::Caps,
    buffers: Vec<gst::Buffer>,
}

/// Pushes `input` through `appsrc ! desc ! appsink`, paced at 30 fps or as fast
/// as accepted; records each output's delay after its input's push.
fn measure(desc: &str, caps: &gst::Caps, input: &[gst::Buffer], paced: bool) -> Measured {
    // Paced runs are live, as a camera is: decoders then hold no extra frames.
    let pipeline = launch(&format!(
        "appsrc name=src format=time is-live={paced} max-buffers=4 block=true ! {desc} ! appsink name=sink sync=false"
    ));
    let src = element::<gst_app::AppSrc>(&pipeline, "src");
    src.set_caps(Some(caps));
    let sink = element::<gst_app::AppSink>(&pipeline, "sink");
    // Outputs match inputs in order: no stream here reorders frames (x264enc
    // shifts timestamps by its min-pts, so PTS cannot be the key).
    let pushed: Arc<Mutex<Vec<Instant>>> = Arc::default();
    pipeline.set_state(gst::State::Playing).unwrap();
    let start = Instant::now();
    let feeder = {
        let (src, pushed, input) = (src.clone(), pushed.clone(), input.to_vec());
        std::thread::spawn(move || {
            for (i, b) in input.into_iter().enumerate() {
                if paced {
                    let due = start + FRAME * i as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                pushed.lock().unwrap().push(Instant::now());
                if src.push_buffer(b).is_err() {
                    break;
                }
            }
            let _ = src.end_of_stream();
        })
    };
    let mut latency = LatencyHistogram::new();
    let mut buffers = Vec::new();
    let mut caps = gst::Caps::new_empty();
    let mut last = start;
    while let Ok(sample) = sink.pull_sample() {
        last = Instant::now();
        let buffer = sample.buffer_owned().unwrap();
        if let Some(t) = pushed.lock().unwrap().get(buffers.len()).copied() {
            latency.record(last.duration_since(t).as_nanos() as u64);
        }
        caps = sample.caps_owned().unwrap_or(caps);
        buffers.push(buffer);
    }
    feeder.join().unwrap();
    if let Some(msg) = pipeline
        .bus()
        .unwrap()
        .pop_filtered(&[gst::MessageType::Error])
    {
        panic!("{desc}: {msg:?}");
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let fps = buffers.len() as f64 / last.duration_since(start).as_secs_f64();
    Measured {
        fps,
        latency,
        caps,
        buffers,
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Mean luma PSNR (dB) of decoded I420 frames against the source frames.
fn mean_psnr_y(
    caps: &gst::Caps,
    decoded: &[gst::Buffer],
    source_caps: &gst::Caps,
    source: &[gst::Buffer],
) -> f64 {
    let info = gst_video::VideoInfo::from_caps(caps).unwrap();
    let source_info = gst_video::VideoInfo::from_caps(source_caps).unwrap();
    assert_eq!(decoded.len(), source.len(), "every frame decoded");
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let total: f64 = decoded
        .iter()
        .zip(source)
        .map(|(d, s)| {
            let d = gst_video::VideoFrameRef::from_buffer_ref_readable(d.as_ref(), &info).unwrap();
            let s = gst_video::VideoFrameRef::from_buffer_ref_readable(s.as_ref(), &source_info)
                .unwrap();
            let (dd, ds) = (d.plane_data(0).unwrap(), s.plane_data(0).unwrap());
            let (sd, ss) = (d.plane_stride()[0] as usize, s.plane_stride()[0] as usize);
            let mut sse = 0u64;
            for y in 0..h {
                for x in 0..w {
                    let e = dd[y * sd + x] as i64 - ds[y * ss + x] as i64;
                    sse += (e * e) as u64;
                }
            }
            let mse = sse as f64 / (w * h) as f64;
            if mse == 0.0 {
                99.0
            } else {
                10.0 * (255.0 * 255.0 / mse).log10()
            }
        })
        .sum();
    total / decoded.len() as f64
}

fn report(name: &str, throughput: &Measured, paced: &Measured) {
    println!("{name}");
    figure("  throughput", throughput.fps, "frames/s");
    figure(
        "  processing time per frame (1 / throughput)",
        1000.0 / throughput.fps,
        "ms",
    );
    assert_eq!(
        paced.latency.count() as usize,
        paced.buffers.len(),
        "{name}: every output matched its input"
    );
    figure(
        "  latency at 30 fps, P50",
        ms(paced.latency.quantile(0.5)),
        "ms",
    );
    figure(
        "  latency at 30 fps, P95",
        ms(paced.latency.quantile(0.95)),
        "ms",
    );
    figure("  latency at 30 fps, max", ms(paced.latency.max()), "ms");
}

fn main() {
    rtai_benches::init();
    // The clip, rendered once so that generating it is not measured.
    let (raw_caps, raw) = {
        let pipeline = launch(&format!(
            "videotestsrc num-buffers={FRAMES} pattern=zone-plate kx2=20 ky2=20 kt=4 ! video/x-raw,format=AYUV,width={WIDTH},height={HEIGHT},framerate=30/1 ! comp.sink_0 \
             videotestsrc num-buffers={FRAMES} pattern=smpte horizontal-speed=6 ! video/x-raw,format=AYUV,width=640,height=360,framerate=30/1 ! comp.sink_1 \
             compositor name=comp sink_1::xpos=320 sink_1::ypos=180 sink_1::alpha=0.7 ! videoconvert ! video/x-raw,format=I420 ! appsink name=sink sync=false"
        ));
        let sink = element::<gst_app::AppSink>(&pipeline, "sink");
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut caps = None;
        let mut frames = Vec::new();
        while let Ok(s) = sink.pull_sample() {
            caps = s.caps_owned();
            frames.push(s.buffer_owned().unwrap());
        }
        pipeline.set_state(gst::State::Null).unwrap();
        // Exact frame times: the compositor rounds them (33 333 333 ns, then
        // 66 666 666 …), which av1enc turns into uneven durations in its 1/30 s
        // time base and overshoots the target. Rounded up, each maps to its frame.
        let at = |i: usize| gst::ClockTime::SECOND.mul_div_ceil(i as u64, 30).unwrap();
        for (i, f) in frames.iter_mut().enumerate() {
            let f = f.make_mut();
            f.set_pts(at(i));
            f.set_dts(gst::ClockTime::NONE);
            f.set_duration(at(i + 1) - at(i));
        }
        (caps.unwrap(), frames)
    };
    println!(
        "clip: {} frames of {WIDTH}x{HEIGHT} I420 at 30 fps (zone plate + moving bars)",
        raw.len()
    );

    println!("every encoder targets {BITRATE_KBPS} kbit/s");
    // (name, encoder, decoder for the PSNR check)
    let encoders = [
        (
            "rtav1enc (rav1e, speed-preset 10, low-latency)",
            format!("rtav1enc bitrate={BITRATE_KBPS}"),
            "rtav1dec",
        ),
        (
            "rtav1enc cdef=false (no CDEF filter)",
            format!("rtav1enc bitrate={BITRATE_KBPS} cdef=false"),
            "rtav1dec",
        ),
        (
            "av1enc (libaom, realtime, cpu-used 8, lag 0, CBR)",
            // GStreamer 1.22 av1enc defaults max-quantizer to 0 (best quality), which overrides
            // the target bitrate (58 Mbit/s here); its default VBR with a 6 s buffer
            // overshoots a 3 s clip: CBR with a 1 s buffer holds the target.
            format!(
                "av1enc usage-profile=realtime cpu-used=8 lag-in-frames=0 max-quantizer=63 end-usage=cbr buf-sz=1000 buf-initial-sz=500 buf-optimal-sz=600 target-bitrate={BITRATE_KBPS}"
            ),
            "av1parse ! rtav1dec",
        ),
        (
            "x264enc (ultrafast, zerolatency)",
            format!("x264enc speed-preset=ultrafast tune=zerolatency bitrate={BITRATE_KBPS}"),
            "h264parse ! avdec_h264",
        ),
        (
            "vp8enc (realtime, cpu-used 8)",
            format!(
                "vp8enc deadline=1 cpu-used=8 lag-in-frames=0 target-bitrate={}",
                BITRATE_KBPS * 1000
            ),
            "vp8dec",
        ),
    ];
    let mut enc_fps = HashMap::new();
    let mut encoded = HashMap::new();
    for (name, desc, decoder) in &encoders {
        let throughput = measure(desc, &raw_caps, &raw, false);
        let paced = measure(desc, &raw_caps, &raw, true);
        report(&format!("encode: {name}"), &throughput, &paced);
        let bytes: usize = throughput.buffers.iter().map(|b| b.size()).sum();
        figure(
            "  bitrate produced",
            bytes as f64 * 8.0 / 1000.0 / (raw.len() as f64 / 30.0),
            "kbit/s",
        );
        let decoded = measure(
            &format!("{decoder} ! videoconvert ! video/x-raw,format=I420"),
            &throughput.caps,
            &throughput.buffers,
            false,
        );
        let psnr = mean_psnr_y(&decoded.caps, &decoded.buffers, &raw_caps, &raw);
        figure("  luma PSNR of the stream decoded", psnr, "dB");
        let key = if desc.contains("cdef=false") {
            "rtav1enc-nocdef".to_string()
        } else {
            desc.split_whitespace().next().unwrap().to_string()
        };
        enc_fps.insert(key.clone(), (throughput.fps, psnr));
        encoded.insert(key, (throughput.caps, throughput.buffers));
    }
    ratio(
        "rtav1enc vs av1enc encode throughput",
        enc_fps["rtav1enc"].0,
        enc_fps["av1enc"].0,
        "frames/s",
    );
    ratio(
        "rtav1enc cdef=false vs cdef=true encode time per frame",
        1.0 / enc_fps["rtav1enc-nocdef"].0,
        1.0 / enc_fps["rtav1enc"].0,
        "s/frame",
    );
    figure(
        "rtav1enc cdef=false PSNR cost (cdef=true minus cdef=false)",
        enc_fps["rtav1enc"].1 - enc_fps["rtav1enc-nocdef"].1,
        "dB",
    );
    ffmpeg_context_rows(&raw_caps, &raw);

    // Decoders on the same AV1 stream (rtav1enc's), and the context codecs on theirs.
    let (av1_caps, av1) = encoded["rtav1enc"].clone();
    let decoders = [
        ("rtav1dec (dav1d)", "rtav1dec", &av1_caps, &av1),
        ("av1dec (libaom)", "av1dec", &av1_caps, &av1),
        (
            "avdec_h264 (ffmpeg)",
            "h264parse ! avdec_h264",
            &encoded["x264enc"].0,
            &encoded["x264enc"].1,
        ),
        (
            "vp8dec (libvpx)",
            "vp8dec",
            &encoded["vp8enc"].0,
            &encoded["vp8enc"].1,
        ),
    ];
    let mut dec_fps = HashMap::new();
    for (name, desc, caps, units) in decoders {
        let throughput = measure(desc, caps, units, false);
        assert_eq!(
            throughput.buffers.len(),
            raw.len(),
            "{desc} decoded every frame"
        );
        let paced = measure(desc, caps, units, true);
        report(&format!("decode: {name}"), &throughput, &paced);
        dec_fps.insert(desc, throughput.fps);
    }
    ratio(
        "rtav1dec vs av1dec decode throughput",
        dec_fps["rtav1dec"],
        dec_fps["av1dec"],
        "frames/s",
    );
    println!(
        "note: GStreamer 1.22's av1dec decodes on one thread; rtav1dec uses dav1d's (one per CPU, {} here)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}

/// The AV1 encoders Debian's ffmpeg was built with (`ffmpeg -encoders`).
fn ffmpeg_av1_encoders() -> Vec<String> {
    let Ok(out) = Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.to_lowercase().contains("av1"))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// SVT-AV1 and libaom through ffmpeg at the same target, as context: frames/s
/// (whole ffmpeg process), bitrate produced, luma PSNR (decoded by rtav1dec).
fn ffmpeg_context_rows(raw_caps: &gst::Caps, raw: &[gst::Buffer]) {
    let available = ffmpeg_av1_encoders();
    println!("ffmpeg AV1 encoders here: {available:?}");
    let rows: [(&str, &str, Vec<String>); 2] = [
        (
            "ffmpeg libsvtav1 (SVT-AV1, preset 12, low delay)",
            "libsvtav1",
            vec![
                "-preset".into(),
                "12".into(),
                "-svtav1-params".into(),
                format!("pred-struct=1:rc=2:tbr={BITRATE_KBPS}"),
            ],
        ),
        (
            "ffmpeg libaom-av1 (realtime, cpu-used 8, lag 0)",
            "libaom-av1",
            vec![
                "-usage".into(),
                "realtime".into(),
                "-cpu-used".into(),
                "8".into(),
                "-lag-in-frames".into(),
                "0".into(),
                "-b:v".into(),
                format!("{BITRATE_KBPS}k"),
            ],
        ),
    ];
    let dir = std::env::temp_dir().join(format!("rtai-bench-av1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let y4m = dir.join("clip.y4m");
    {
        let info = gst_video::VideoInfo::from_caps(raw_caps).unwrap();
        let mut out = format!("YUV4MPEG2 W{WIDTH} H{HEIGHT} F30:1 Ip A1:1 C420jpeg\n").into_bytes();
        for b in raw {
            let f = gst_video::VideoFrameRef::from_buffer_ref_readable(b.as_ref(), &info).unwrap();
            out.extend_from_slice(b"FRAME\n");
            for p in 0..3u32 {
                let (w, h) = (
                    info.comp_width(p as u8) as usize,
                    info.comp_height(p as u8) as usize,
                );
                let stride = f.plane_stride()[p as usize] as usize;
                let data = f.plane_data(p).unwrap();
                for row in 0..h {
                    out.extend_from_slice(&data[row * stride..row * stride + w]);
                }
            }
        }
        std::fs::write(&y4m, out).unwrap();
    }
    for (name, encoder, args) in rows {
        if !available.iter().any(|e| e == encoder) {
            println!("{name}: not in this ffmpeg (skipped)");
            continue;
        }
        let ivf = dir.join(format!("{encoder}.ivf"));
        let started = Instant::now();
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-v", "error", "-y", "-i"])
            .arg(&y4m)
            .args(["-c:v", encoder])
            .args(&args)
            .arg(&ivf)
            .status();
        let elapsed = started.elapsed();
        if !status.is_ok_and(|s| s.success()) {
            println!("{name}: ffmpeg failed (skipped)");
            continue;
        }
        println!("encode: {name}");
        figure(
            "  throughput (whole ffmpeg process)",
            raw.len() as f64 / elapsed.as_secs_f64(),
            "frames/s",
        );
        let size = std::fs::metadata(&ivf).map(|m| m.len()).unwrap_or(0);
        figure(
            "  bitrate produced (IVF, 32 + 12 bytes a frame of framing)",
            size as f64 * 8.0 / 1000.0 / (raw.len() as f64 / 30.0),
            "kbit/s",
        );
        let decoded = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
            .arg(&ivf)
            .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
            .output();
        let Ok(decoded) = decoded else { continue };
        let frame_size = (WIDTH * HEIGHT * 3 / 2) as usize;
        let info = gst_video::VideoInfo::from_caps(raw_caps).unwrap();
        let frames: Vec<gst::Buffer> = decoded
            .stdout
            .chunks(frame_size)
            .filter(|c| c.len() == frame_size)
            .map(|c| {
                // Tightly packed I420 into a buffer of the clip's layout.
                let mut b = gst::Buffer::with_size(info.size()).unwrap();
                {
                    let bm = b.get_mut().unwrap();
                    let mut vf =
                        gst_video::VideoFrameRef::from_buffer_ref_writable(bm, &info).unwrap();
                    let mut offset = 0;
                    for p in 0..3u32 {
                        let (w, h) = (
                            info.comp_width(p as u8) as usize,
                            info.comp_height(p as u8) as usize,
                        );
                        let stride = vf.plane_stride()[p as usize] as usize;
                        let data = vf.plane_data_mut(p).unwrap();
                        for row in 0..h {
                            data[row * stride..row * stride + w]
                                .copy_from_slice(&c[offset..offset + w]);
                            offset += w;
                        }
                    }
                }
                b
            })
            .collect();
        if frames.len() == raw.len() {
            figure(
                "  luma PSNR of the stream decoded",
                mean_psnr_y(raw_caps, &frames, raw_caps, raw),
                "dB",
            );
        } else {
            println!(
                "  decoded {} of {} frames: no PSNR",
                frames.len(),
                raw.len()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
