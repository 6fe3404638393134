//! rtav1enc: ffmpeg (a real peer) decodes its output in IVF, Matroska, MP4
//! and raw OBU files; every input format gives its profile; force-key-unit,
//! reported latency, bitrate control and property changes while playing.

mod common;

use common::*;
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
            &format!("appsrc name=src ! av1parse ! {mux} ! filesink location={}", path.display()),
            &[("src", caps.clone(), units.clone())],
        );
        for decoder in ["libdav1d", "libaom-av1"] {
            let frames = ffmpeg_decode(&path, decoder, clip.width(), clip.height());
            let (mean, min) = psnr_stats(&frames, &clip.frames, clip.width(), clip.height());
            eprintln!("{file} via {decoder}: mean {mean:.1} dB, min {min:.1} dB");
            assert!(mean >= MIN_MEAN_PSNR && min >= MIN_FRAME_PSNR, "{file} via {decoder}: mean {mean:.1} min {min:.1}");
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
        eprintln!("{} via libdav1d: mean {mean:.1} dB, min {min:.1} dB", path.display());
        assert!(mean >= MIN_MEAN_PSNR && min >= MIN_FRAME_PSNR, "{}: mean {mean:.1} min {min:.1}", path.display());
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
    let raw = ffmpeg(&["-i", ivf.to_str().unwrap(), "-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-"]);
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
            let event = gst_video::DownstreamForceKeyUnitEvent::builder().all_headers(true).build();
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
    assert_eq!(keys, vec![0, 17], "key frames at the first and the forced frame");
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
    assert!(h.element().unwrap().static_pad("src").unwrap().query(&mut q));
    let (_, min, _) = q.result();
    (pushed, min)
}

#[test]
fn reported_latency_is_the_encoders_real_delay() {
    let frame = gst::ClockTime::from_nseconds(1_000_000_000 / 30);
    for props in ["", "rdo-lookahead-frames=5", "rdo-lookahead-frames=-1", "low-latency=false rdo-lookahead-frames=1", "low-latency=false rdo-lookahead-frames=5", "low-latency=false rdo-lookahead-frames=8", "low-latency=false rdo-lookahead-frames=9", "rdo-lookahead-frames=30"] {
        let (pushed, latency) = measured_delay(props);
        // The first packet comes out when frame `pushed` goes in: `pushed - 1` frames of delay.
        let delay = (pushed - 1) as u64;
        eprintln!("rtav1enc {props}: first output after {pushed} frames, reported latency {latency}");
        let expected = frame * delay;
        let diff = latency.nseconds().abs_diff(expected.nseconds());
        assert!(diff < 1_000_000, "{props}: reported {latency} but measured {delay} frames ({expected})");
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
    assert!(high > 3 * low, "600 kbit/s ({high} B) is not well above 60 kbit/s ({low} B)");
    assert!(low < 40_000, "60 kbit/s for 2 s gave {low} bytes");
}

#[test]
fn changing_the_bitrate_while_playing_restarts_at_a_key_frame() {
    let clip = clip(160, 120, 40, "I420", "ball");
    let mut h = harness("bitrate=100 max-key-frame-interval=1000", &clip);
    let buffers = buffers(&clip);
    for b in &buffers[..20] {
        h.push(b.clone()).unwrap();
    }
    // The harness's element is the parsed bin; the encoder is its only child.
    let bin = h.element().unwrap().downcast::<gst::Bin>().unwrap();
    let encoder = bin.iterate_elements().into_iter().flatten().find(|e| e.factory().is_some_and(|f| f.name() == "rtav1enc")).unwrap();
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
    let keys: Vec<usize> =
        out.iter().enumerate().filter(|(_, b)| !b.flags().contains(gst::BufferFlags::DELTA_UNIT)).map(|(i, _)| i).collect();
    assert_eq!(keys, vec![0, 20], "the new encoder starts with a key frame at the change");
    let pts: Vec<u64> = out.iter().map(|b| b.pts().unwrap().nseconds()).collect();
    assert!(pts.windows(2).all(|w| w[0] < w[1]), "timestamps stay in order");
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
