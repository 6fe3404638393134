//! rtav1enc: ffmpeg (a real peer) decodes its output in IVF, Matroska, MP4
//! and raw OBU files; every input format gives its profile; force-key-unit,
//! reported latency, bitrate control and property changes while playing;
//! each property's effect (tiles and error resilience read back by ffmpeg's
//! header parser, quantizer, speed preset, threads, scene detection, tune,
//! max-quantizer); new caps mid-stream.

mod common;

use common::*;
use gst::glib;
use gst::prelude::*;
use gst_check::Harness;

/// Mean luma PSNR the default settings (quantizer 100) must reach on the test clip.
const MIN_MEAN_PSNR: f64 = 38.0;
/// No single frame may fall below this.
const MIN_FRAME_PSNR: f64 = 32.0;

#[test]
fn ffmpeg_decodes_ivf_matroska_mp4_and_obu() {
    let clip = clip(320, 240, 45, "I420", "ball");
    let dir = scratch("ffmpeg-peer");
    let (caps, units) = encode(&clip, "rtav1enc");
    assert_eq!(units.len(), clip.frames.len());
    let s = caps.structure(0).unwrap();
    assert_eq!(s.get::<&str>("profile").unwrap(), "main");
    assert_eq!(s.get::<&str>("level").unwrap(), "2.0");

    // Matroska and MP4 through the stock parser and muxers.
    for (mux, file) in [("matroskamux", "out.mkv"), ("mp4mux", "out.mp4")] {
        let path = dir.join(file);
        run_to_appsink(
            &format!(
                "appsrc name=src ! av1parse ! {mux} ! filesink location={}",
                path.display()
            ),
            &[("src", caps.clone(), units.clone())],
        );
        for decoder in ["libdav1d", "libaom-av1"] {
            let frames = ffmpeg_decode(&path, decoder, clip.width(), clip.height());
            let (mean, min) = psnr_stats(&frames, &clip.frames, clip.width(), clip.height());
            eprintln!("{file} via {decoder}: mean {mean:.1} dB, min {min:.1} dB");
            assert!(
                mean >= MIN_MEAN_PSNR && min >= MIN_FRAME_PSNR,
                "{file} via {decoder}: mean {mean:.1} min {min:.1}"
            );
        }
    }
    // IVF (GStreamer 1.22 has no AV1 IVF muxer: the file is written here) and
    // the raw low-overhead OBU stream as rtav1enc produced it.
    let ivf = dir.join("out.ivf");
    write_ivf(&ivf, clip.width(), clip.height(), &units);
    let obu = dir.join("out.obu");
    let mut raw = Vec::new();
    for u in &units {
        raw.extend_from_slice(&u.map_readable().unwrap());
    }
    std::fs::write(&obu, raw).unwrap();
    for path in [ivf, obu] {
        let frames = ffmpeg_decode(&path, "libdav1d", clip.width(), clip.height());
        let (mean, min) = psnr_stats(&frames, &clip.frames, clip.width(), clip.height());
        eprintln!(
            "{} via libdav1d: mean {mean:.1} dB, min {min:.1} dB",
            path.display()
        );
        assert!(
            mean >= MIN_MEAN_PSNR && min >= MIN_FRAME_PSNR,
            "{}: mean {mean:.1} min {min:.1}",
            path.display()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_input_format_encodes_with_its_profile() {
    for (format, profile) in [
        ("I420", "main"),
        ("I420_10LE", "main"),
        ("Y444", "high"),
        ("Y444_10LE", "high"),
        ("Y42B", "professional"),
        ("I422_10LE", "professional"),
    ] {
        let clip = clip(128, 96, 6, format, "ball");
        let (caps, units) = encode(&clip, "rtav1enc");
        let s = caps.structure(0).unwrap();
        assert_eq!(s.get::<&str>("profile").unwrap(), profile, "{format}");
        assert_eq!(units.len(), 6, "{format}");
        let (info, frames) = decode(&caps, &units, "rtav1dec");
        assert_eq!(info.format().to_str(), format, "decoded format");
        assert_eq!(frames.len(), 6);
        let psnr = if format.contains("10LE") {
            psnr_y10(&frames[3], &clip.frames[3], 128, 96)
        } else {
            psnr_y(&frames[3], &clip.frames[3], 128, 96)
        };
        assert!(psnr > 35.0, "{format}: PSNR {psnr:.1}");
    }
    // ffmpeg decodes the 10-bit stream too.
    let clip10 = clip(128, 96, 4, "I420_10LE", "ball");
    let (_, units) = encode(&clip10, "rtav1enc");
    let dir = scratch("ten-bit");
    let ivf = dir.join("ten.ivf");
    write_ivf(&ivf, 128, 96, &units);
    let raw = ffmpeg(&[
        "-i",
        ivf.to_str().unwrap(),
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p10le",
        "-",
    ]);
    assert_eq!(raw.len(), 4 * 128 * 96 * 3 / 2 * 2);
    let psnr = psnr_y10(&raw[..128 * 96 * 3], &clip10.frames[0], 128, 96);
    assert!(psnr > 35.0, "ffmpeg 10-bit PSNR {psnr:.1}");
    let _ = std::fs::remove_dir_all(dir);
}

fn harness(props: &str, clip: &Clip) -> Harness {
    init();
    let mut h = Harness::new_parse(&format!("rtav1enc {props}"));
    h.set_src_caps(clip.caps());
    h.play();
    h
}

#[test]
fn force_key_unit_event_gives_a_key_frame() {
    let clip = clip(160, 120, 30, "I420", "ball");
    let mut h = harness("max-key-frame-interval=1000", &clip);
    for (i, b) in buffers(&clip).into_iter().enumerate() {
        if i == 17 {
            let event = gst_video::DownstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            assert!(h.push_event(event));
        }
        h.push(b).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let mut keys = Vec::new();
    while let Some(b) = h.try_pull() {
        if !b.flags().contains(gst::BufferFlags::DELTA_UNIT) {
            keys.push((b.pts().unwrap().nseconds() * 30).div_ceil(1_000_000_000) as usize);
        }
    }
    assert_eq!(
        keys,
        vec![0, 17],
        "key frames at the first and the forced frame"
    );
}

/// Frames pushed before the first output, with the latency the element reports.
fn measured_delay(props: &str) -> (usize, gst::ClockTime) {
    let clip = clip(160, 120, 40, "I420", "ball");
    let mut h = harness(props, &clip);
    let mut pushed = 0;
    for b in buffers(&clip) {
        h.push(b).unwrap();
        pushed += 1;
        if h.buffers_in_queue() > 0 {
            break;
        }
    }
    let mut q = gst::query::Latency::new();
    assert!(
        h.element()
            .unwrap()
            .static_pad("src")
            .unwrap()
            .query(&mut q)
    );
    let (_, min, _) = q.result();
    (pushed, min)
}

#[test]
fn reported_latency_is_the_encoders_real_delay() {
    let frame = gst::ClockTime::from_nseconds(1_000_000_000 / 30);
    for props in [
        "",
        "rdo-lookahead-frames=0",
        "rdo-lookahead-frames=5",
        "rdo-lookahead-frames=-1",
        "low-latency=false rdo-lookahead-frames=1",
        "low-latency=false rdo-lookahead-frames=5",
        "low-latency=false rdo-lookahead-frames=8",
        "low-latency=false rdo-lookahead-frames=9",
        "rdo-lookahead-frames=30",
    ] {
        let (pushed, latency) = measured_delay(props);
        // The first packet comes out when frame `pushed` goes in: `pushed - 1` frames of delay.
        let delay = (pushed - 1) as u64;
        eprintln!(
            "rtav1enc {props}: first output after {pushed} frames, reported latency {latency}"
        );
        let expected = frame * delay;
        let diff = latency.nseconds().abs_diff(expected.nseconds());
        assert!(
            diff < 1_000_000,
            "{props}: reported {latency} but measured {delay} frames ({expected})"
        );
    }
}

fn total_bytes(units: &[gst::Buffer]) -> usize {
    units.iter().map(|b| b.size()).sum()
}

#[test]
fn bitrate_controls_the_size() {
    let clip = clip(320, 240, 60, "I420", "ball");
    let (_, low) = encode(&clip, "rtav1enc bitrate=60");
    let (_, high) = encode(&clip, "rtav1enc bitrate=600");
    // 2 s of video: the target sizes are 15 kB and 150 kB.
    let (low, high) = (total_bytes(&low), total_bytes(&high));
    eprintln!("60 kbit/s: {low} bytes, 600 kbit/s: {high} bytes");
    assert!(
        high > 3 * low,
        "600 kbit/s ({high} B) is not well above 60 kbit/s ({low} B)"
    );
    assert!(low < 40_000, "60 kbit/s for 2 s gave {low} bytes");
}

#[test]
fn changing_the_bitrate_while_playing_restarts_at_a_key_frame() {
    let clip = clip(160, 120, 40, "I420", "ball");
    // bitrate-change-interval=0: the change applies at the next frame (not coalesced).
    let mut h = harness(
        "bitrate=100 max-key-frame-interval=1000 bitrate-change-interval=0",
        &clip,
    );
    let buffers = buffers(&clip);
    for b in &buffers[..20] {
        h.push(b.clone()).unwrap();
    }
    // The harness's element is the parsed bin; the encoder is its only child.
    let bin = h.element().unwrap().downcast::<gst::Bin>().unwrap();
    let encoder = bin
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "rtav1enc"))
        .unwrap();
    encoder.set_property("bitrate", 400u32);
    for b in &buffers[20..] {
        h.push(b.clone()).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let mut out = Vec::new();
    while let Some(b) = h.try_pull() {
        out.push(b);
    }
    assert_eq!(out.len(), 40, "every frame is encoded once");
    let keys: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.flags().contains(gst::BufferFlags::DELTA_UNIT))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        keys,
        vec![0, 20],
        "the new encoder starts with a key frame at the change"
    );
    let pts: Vec<u64> = out.iter().map(|b| b.pts().unwrap().nseconds()).collect();
    assert!(
        pts.windows(2).all(|w| w[0] < w[1]),
        "timestamps stay in order"
    );
}

#[test]
fn unsupported_input_is_refused_without_panic() {
    init();
    let mut h = Harness::new("rtav1enc");
    h.set_src_caps_str("video/x-raw,format=NV12,width=64,height=64,framerate=30/1");
    h.play();
    let b = gst::Buffer::with_size(64 * 64 * 3 / 2).unwrap();
    assert_eq!(h.push(b), Err(gst::FlowError::NotNegotiated));
}

/// Frame headers as ffmpeg's trace_headers bitstream filter (a real AV1 parser)
/// reads them: one map of syntax element → value per frame header.
fn frame_headers(units: &[gst::Buffer]) -> Vec<std::collections::HashMap<String, i64>> {
    let dir = scratch("trace");
    let path = dir.join("stream.obu");
    let mut raw = Vec::new();
    for u in units {
        raw.extend_from_slice(&u.map_readable().unwrap());
    }
    std::fs::write(&path, raw).unwrap();
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-i",
            path.to_str().unwrap(),
            "-c",
            "copy",
            "-bsf:v",
            "trace_headers",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg trace_headers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
    let mut frames: Vec<std::collections::HashMap<String, i64>> = Vec::new();
    for line in String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("[trace_headers"))
    {
        // "[trace_headers @ 0x…] <bit position> <name> <bits> = <value>"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(value)) = (
            fields.get(4),
            fields.last().and_then(|v| v.parse::<i64>().ok()),
        ) else {
            continue;
        };
        if *name == "frame_type" {
            frames.push(Default::default());
        }
        if let Some(f) = frames.last_mut() {
            f.entry(name.to_string()).or_insert(value);
        }
    }
    frames
}

fn key_frames(units: &[gst::Buffer]) -> Vec<usize> {
    units
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.flags().contains(gst::BufferFlags::DELTA_UNIT))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn tiles_and_tile_columns_rows_reach_the_frame_header() {
    let clip = clip(640, 360, 3, "I420", "ball");
    for (props, cols_log2, rows_log2) in [
        ("tiles=1", 0, 0),
        ("tiles=4", 1, 1),
        ("tile-cols=2 tile-rows=0", 2, 0),
        ("tile-cols=0 tile-rows=1", 0, 1),
        // Automatic: one tile per thread from 640x360 up.
        ("threads=2", 1, 0),
    ] {
        let (_, units) = encode(&clip, &format!("rtav1enc {props}"));
        let headers = frame_headers(&units);
        assert_eq!(headers.len(), 3, "{props}");
        for h in &headers {
            assert_eq!(
                (h["tile_cols_log2"], h["tile_rows_log2"]),
                (cols_log2, rows_log2),
                "{props}: {h:?}"
            );
        }
    }
}

#[test]
fn error_resilient_sets_the_frame_header_bit() {
    let clip = clip(160, 120, 6, "I420", "ball");
    for (props, expected) in [("", 0), ("error-resilient=true", 1)] {
        let (_, units) = encode(&clip, &format!("rtav1enc {props}"));
        let headers = frame_headers(&units);
        // Key frames are always error resilient (no field); inter frames carry the bit.
        let inter: Vec<i64> = headers
            .iter()
            .filter(|h| h["frame_type"] != 0)
            .map(|h| h["error_resilient_mode"])
            .collect();
        assert_eq!(inter, vec![expected; 5], "{props}");
    }
}

#[test]
fn quantizer_trades_size_for_quality() {
    let clip = clip(320, 240, 10, "I420", "smpte horizontal-speed=3");
    let mut results = Vec::new();
    for q in [40u32, 120, 220] {
        let (caps, units) = encode(&clip, &format!("rtav1enc quantizer={q}"));
        let (_, frames) = decode(&caps, &units, "rtav1dec");
        let (mean, _) = psnr_stats(&frames, &clip.frames, 320, 240);
        eprintln!("quantizer {q}: {} bytes, {mean:.1} dB", total_bytes(&units));
        results.push((total_bytes(&units), mean));
    }
    for w in results.windows(2) {
        assert!(
            w[0].0 > w[1].0 && w[0].1 > w[1].1,
            "a higher quantizer must be smaller and worse: {results:?}"
        );
    }
}

#[test]
fn speed_presets_and_threads_encode() {
    let clip = clip(320, 240, 8, "I420", "ball");
    let (_, reference) = encode(&clip, "rtav1enc");
    for props in [
        "speed-preset=6",
        "speed-preset=8",
        "speed-preset=9 threads=1",
        "threads=1",
        "threads=3",
    ] {
        let (caps, units) = encode(&clip, &format!("rtav1enc {props}"));
        assert_eq!(units.len(), 8, "{props}");
        let (_, frames) = decode(&caps, &units, "rtav1dec");
        let (mean, _) = psnr_stats(&frames, &clip.frames, 320, 240);
        assert!(mean >= MIN_MEAN_PSNR, "{props}: {mean:.1} dB");
        let same = units
            .iter()
            .zip(&reference)
            .all(|(a, b)| *a.map_readable().unwrap() == *b.map_readable().unwrap());
        if props.starts_with("threads") {
            // Below 640x360 the tiling does not follow the threads: the same bits, faster or slower.
            assert!(same, "{props}: threads changed the stream");
        } else {
            // Another preset makes other decisions.
            assert!(!same, "{props}: the same stream as speed 10");
        }
    }
}

/// `n` frames of `first` then `n` of `second`: a hard scene cut at frame `n`.
fn scene_cut_clip(n: usize) -> Clip {
    let mut a = clip(320, 240, n, "I420", "ball");
    let b = clip(320, 240, n, "I420", "smpte");
    a.frames.extend(b.frames);
    a
}

#[test]
fn scene_detection_places_key_frames_at_cuts_only_when_asked() {
    let clip = scene_cut_clip(20);
    let (_, units) = encode(&clip, "rtav1enc max-key-frame-interval=1000");
    assert_eq!(
        key_frames(&units),
        vec![0],
        "default (none): key frames only from the interval"
    );
    for mode in ["fast", "standard"] {
        let (_, units) = encode(
            &clip,
            &format!("rtav1enc max-key-frame-interval=1000 scene-detection={mode}"),
        );
        assert_eq!(
            key_frames(&units),
            vec![0, 20],
            "scene-detection={mode}: a key frame at the cut"
        );
    }
}

#[test]
fn tune_changes_the_decisions_and_psnr_tune_wins_on_psnr() {
    let clip = clip(320, 240, 20, "I420", "smpte horizontal-speed=3");
    let mut psnr = Vec::new();
    for tune in ["psnr", "psychovisual"] {
        let (caps, units) = encode(&clip, &format!("rtav1enc bitrate=300 tune={tune}"));
        let (_, frames) = decode(&caps, &units, "rtav1dec");
        let (mean, _) = psnr_stats(&frames, &clip.frames, 320, 240);
        eprintln!("tune={tune}: {} bytes, {mean:.2} dB", total_bytes(&units));
        psnr.push(mean);
    }
    assert!(
        psnr[0] > psnr[1],
        "tune=psnr must give the higher PSNR at the same bitrate: {psnr:?}"
    );
}

#[test]
fn a_low_bitrate_target_is_met() {
    // rav1e takes the quantizer as the worst one the rate control may use in
    // bitrate mode; with the default max-quantizer (255) a low target is reachable.
    let clip = clip(320, 240, 60, "I420", "zone-plate kx2=20 ky2=20 kt=4");
    let (_, capped) = encode(&clip, "rtav1enc bitrate=150 max-quantizer=100");
    let (_, free) = encode(&clip, "rtav1enc bitrate=150");
    let target = 150_000 / 8 * 2; // 2 s at 150 kbit/s
    let (capped, free) = (total_bytes(&capped), total_bytes(&free));
    eprintln!(
        "150 kbit/s for 2 s ({target} B): max-quantizer 100 gives {capped} B, 255 gives {free} B"
    );
    assert!(
        free < target * 3 / 2,
        "the target is met within 50 %: {free} B for {target} B"
    );
    assert!(
        capped > free * 3 / 2,
        "max-quantizer bounds the rate control: {capped} B against {free} B"
    );
}

/// `rtav1enc` itself in a harness (pushes are synchronous: a property set
/// between two pushes falls between those two frames).
fn encoder_harness(props: &[(&str, glib::Value)], caps: &gst::Caps) -> Harness {
    init();
    let mut h = Harness::new("rtav1enc");
    let encoder = h.element().unwrap();
    for (name, value) in props {
        encoder.set_property_from_value(name, value);
    }
    h.set_src_caps(caps.clone());
    h.play();
    h
}

fn pull_all(h: &mut Harness) -> Vec<gst::Buffer> {
    h.push_event(gst::event::Eos::new());
    std::iter::from_fn(|| h.try_pull()).collect()
}

fn latency_frames(h: &Harness) -> f64 {
    let mut q = gst::query::Latency::new();
    assert!(
        h.element()
            .unwrap()
            .static_pad("src")
            .unwrap()
            .query(&mut q)
    );
    q.result().1.nseconds() as f64 * 30.0 / 1e9
}

#[test]
fn ready_only_properties_wait_for_the_next_start() {
    let clip = clip(160, 120, 20, "I420", "ball");
    let buffers = buffers(&clip);
    let mut h = encoder_harness(
        &[("max-key-frame-interval", 1000u64.to_value())],
        &clip.caps(),
    );
    let encoder = h.element().unwrap();
    for b in &buffers[..10] {
        h.push(b.clone()).unwrap();
    }
    // READY-only: stored, but the running encoder keeps going (no restart, no key frame).
    encoder.set_property("low-latency", false);
    encoder.set_property("rdo-lookahead-frames", 5i32);
    encoder.set_property("speed-preset", 9u32);
    for b in &buffers[10..] {
        h.push(b.clone()).unwrap();
    }
    let out = pull_all(&mut h);
    assert_eq!(out.len(), 20);
    assert_eq!(
        key_frames(&out),
        vec![0],
        "a READY-only change restarted the encoder"
    );
    assert!(
        (latency_frames(&h) - 4.0).abs() < 0.05,
        "still 4 frames: {}",
        latency_frames(&h)
    );
    // The next start reads them: without low latency and with 5 lookahead frames rav1e holds 14.
    encoder.set_state(gst::State::Ready).unwrap();
    h.play();
    h.push_event(gst::event::StreamStart::new("restarted"));
    h.push_event(gst::event::Caps::new(&clip.caps()));
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    for b in &buffers {
        h.push(b.clone()).unwrap();
    }
    let out = pull_all(&mut h);
    assert_eq!(out.len(), 20);
    assert!(
        (latency_frames(&h) - 14.0).abs() < 0.05,
        "14 frames after the restart: {}",
        latency_frames(&h)
    );
}

#[test]
fn live_and_ready_only_changes_together_restart_with_the_live_ones_only() {
    let clip = clip(160, 120, 30, "I420", "ball");
    let buffers = buffers(&clip);
    let mut h = encoder_harness(
        &[
            ("bitrate", 100u32.to_value()),
            ("max-key-frame-interval", 1000u64.to_value()),
            ("bitrate-change-interval", 0u32.to_value()),
        ],
        &clip.caps(),
    );
    let encoder = h.element().unwrap();
    for b in &buffers[..10] {
        h.push(b.clone()).unwrap();
    }
    encoder.set_property("low-latency", false);
    for b in &buffers[10..20] {
        h.push(b.clone()).unwrap();
    }
    encoder.set_property("bitrate", 300u32);
    encoder.set_property("max-key-frame-interval", 500u64);
    for b in &buffers[20..] {
        h.push(b.clone()).unwrap();
    }
    let out = pull_all(&mut h);
    assert_eq!(out.len(), 30, "every frame once");
    assert_eq!(
        key_frames(&out),
        vec![0, 20],
        "the live change restarts at its frame"
    );
    // The restarted context kept low latency: still 4 frames.
    assert!(
        (latency_frames(&h) - 4.0).abs() < 0.05,
        "{}",
        latency_frames(&h)
    );
}

#[test]
fn new_caps_mid_stream_drain_the_old_format_first() {
    let small = clip(160, 120, 10, "I420", "ball");
    let large = clip(320, 240, 10, "I420", "smpte");
    let mut h = harness("max-key-frame-interval=1000", &small);
    for b in buffers(&small) {
        h.push(b).unwrap();
    }
    h.set_src_caps(large.caps());
    for (i, mut b) in buffers(&large).into_iter().enumerate() {
        b.make_mut().set_pts(gst::ClockTime::from_nseconds(
            (10 + i as u64) * 1_000_000_000 / 30,
        ));
        h.push(b).unwrap();
    }
    h.push_event(gst::event::Eos::new());
    let mut out = Vec::new();
    while let Some(b) = h.try_pull() {
        out.push(b);
    }
    assert_eq!(out.len(), 20, "every frame of both formats");
    assert_eq!(
        key_frames(&out),
        vec![0, 10],
        "the new format starts with a key frame"
    );
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    assert_eq!(
        caps.structure(0).unwrap().get::<i32>("width").unwrap(),
        320,
        "{caps}"
    );
}

#[test]
fn a_failed_drain_before_new_caps_refuses_them_clearly() {
    let small = clip(160, 120, 10, "I420", "ball");
    let large = clip(320, 240, 2, "I420", "smpte");
    init();
    let mut h = Harness::new("rtav1enc");
    let encoder = h.element().unwrap();
    let bus = gst::Bus::new();
    encoder.set_bus(Some(&bus));
    h.set_src_caps(small.caps());
    h.play();
    for b in buffers(&small) {
        h.push(b).unwrap();
    }
    // Downstream fails from now on: the 4 frames rav1e holds cannot go out.
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = failing.clone();
    encoder
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if f.load(std::sync::atomic::Ordering::SeqCst) {
                info.flow_res = Err(gst::FlowError::Error);
                gst::PadProbeReturn::Handled
            } else {
                gst::PadProbeReturn::Ok
            }
        });
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    // (A refused sticky event still reads as pushed: the error message is what tells.)
    h.push_event(gst::event::Caps::new(&large.caps()));
    let error = rtai_core::testing::next_error(&bus, std::time::Duration::from_secs(5));
    assert!(error.to_string().contains("previous format"), "{error}");
}

/// The levels of the caps events the harness's sink saw, in order.
fn caps_levels(h: &mut Harness) -> Vec<String> {
    let mut levels = Vec::new();
    while let Some(e) = h.try_pull_event() {
        if let gst::EventView::Caps(c) = e.view() {
            levels.push(
                c.caps()
                    .structure(0)
                    .and_then(|s| s.get::<String>("level").ok())
                    .unwrap_or_default(),
            );
        }
    }
    levels
}

/// A congestion controller changing the bitrate every 100 ms for 3 s, across
/// a level boundary (320x240 at 30 fps: level 2.0 up to 1.5 Mbit/s, 2.1 above).
fn bitrate_storm(props: &str) -> (Vec<usize>, Vec<String>) {
    let clip = clip(320, 240, 90, "I420", "ball");
    let buffers = buffers(&clip);
    // Parsed with the element, so READY-only properties (max-bitrate) are set before it starts.
    let mut h = harness(
        &format!("bitrate=1000 max-key-frame-interval=1000 {props}"),
        &clip,
    );
    let encoder = h
        .element()
        .unwrap()
        .downcast::<gst::Bin>()
        .unwrap()
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "rtav1enc"))
        .unwrap();
    for (i, b) in buffers.iter().enumerate() {
        if i > 0 && i % 3 == 0 {
            encoder.set_property("bitrate", if (i / 3) % 2 == 0 { 1000u32 } else { 2000u32 });
        }
        h.push(b.clone()).unwrap();
    }
    let out = pull_all(&mut h);
    assert_eq!(out.len(), 90, "every frame once");
    (key_frames(&out), caps_levels(&mut h))
}

#[test]
fn bitrate_changes_are_coalesced_and_keep_the_level() {
    let (keys, levels) = bitrate_storm("");
    eprintln!("key frames {keys:?}, caps levels {levels:?}");
    // At most one restart (a key frame) per bitrate-change-interval (1 s = 30 frames).
    assert!(
        keys.windows(2).all(|w| w[1] - w[0] >= 30),
        "key frames closer than the 1 s interval: {keys:?}"
    );
    assert!(keys.len() <= 4, "{keys:?}");
    assert!(!levels.is_empty());
    assert!(
        levels.iter().all(|l| *l == levels[0]),
        "the level changed mid-session: {levels:?}"
    );
}

#[test]
fn max_bitrate_sets_the_level_and_the_interval_is_configurable() {
    let (keys, levels) = bitrate_storm("max-bitrate=2000 bitrate-change-interval=500");
    eprintln!("key frames {keys:?}, caps levels {levels:?}");
    assert!(
        keys.windows(2).all(|w| w[1] - w[0] >= 15),
        "key frames closer than the 500 ms interval: {keys:?}"
    );
    assert!(keys.len() >= 3, "changes still apply: {keys:?}");
    // 2 Mbit/s at 320x240 needs level 2.1 from the start.
    assert!(levels.iter().all(|l| l == "2.1"), "{levels:?}");
}
