//! rtav1dec: decodes AV1 from stock av1enc and from ffmpeg's libaom-av1,
//! librav1e and libsvtav1 (real peers) bit-exactly as ffmpeg's libdav1d does;
//! 10-bit; renegotiates on a resolution change; corrupt and truncated units
//! follow the max-errors policy; 8-bit then 10-bit mid-stream renegotiates;
//! the reported latency is the measured output delay.

mod common;

use common::*;
use gst::prelude::*;
use gst_check::Harness;
use gst_video::prelude::*;
use rtai_core::testing::{element, launch};

/// Luma PSNR every decoded frame must reach against the source on the test clip.
const MIN_FRAME_PSNR: f64 = 30.0;

fn y_plane(frame: &[u8], width: u32, height: u32) -> &[u8] {
    &frame[..(width * height) as usize]
}

#[test]
fn decodes_stock_av1enc_like_ffmpeg_libdav1d() {
    let clip = clip(320, 240, 30, "I420", "ball");
    let (caps, units) = encode(&clip, "av1enc usage-profile=realtime cpu-used=8 ! av1parse");
    let (info, frames) = decode(&caps, &units, "rtav1dec");
    assert_eq!(
        (info.width(), info.height(), info.format()),
        (320, 240, gst_video::VideoFormat::I420)
    );
    let (mean, min) = psnr_stats(&frames, &clip.frames, 320, 240);
    eprintln!("av1enc → rtav1dec: mean {mean:.1} dB, min {min:.1} dB");
    assert!(min >= MIN_FRAME_PSNR, "min {min:.1} dB");
    // dav1d is bit-exact: the same stream through ffmpeg's libdav1d gives the same pictures.
    let dir = scratch("dec-av1enc");
    let ivf = dir.join("av1enc.ivf");
    write_ivf(&ivf, 320, 240, &units);
    let reference = ffmpeg_decode(&ivf, "libdav1d", 320, 240);
    assert_eq!(reference.len(), frames.len());
    for (i, (ours, theirs)) in frames.iter().zip(&reference).enumerate() {
        assert!(ours == theirs, "frame {i} differs from ffmpeg's libdav1d");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn decodes_ffmpeg_libaom_librav1e_and_libsvtav1() {
    let clip = clip(320, 240, 30, "I420", "ball");
    let dir = scratch("dec-ffmpeg");
    let y4m = dir.join("clip.y4m");
    write_y4m(&y4m, &clip);
    for (encoder, options) in [
        (
            "libaom-av1",
            &[
                "-usage",
                "realtime",
                "-cpu-used",
                "8",
                "-crf",
                "20",
                "-b:v",
                "0",
            ][..],
        ),
        ("librav1e", &["-speed", "10", "-qp", "60"][..]),
        ("libsvtav1", &["-preset", "12", "-crf", "25"][..]),
    ] {
        let ivf = dir.join(format!("{encoder}.ivf"));
        let mut args = vec!["-y", "-i", y4m.to_str().unwrap(), "-c:v", encoder];
        args.extend_from_slice(options);
        args.push(ivf.to_str().unwrap());
        ffmpeg(&args);
        let (caps, out) = run_to_appsink(
            &format!(
                "filesrc location={} ! ivfparse ! av1parse ! rtav1dec ! appsink name=sink sync=false",
                ivf.display()
            ),
            &[],
        );
        let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
        let frames: Vec<Vec<u8>> = out
            .iter()
            .map(|b| {
                pack(
                    &gst_video::VideoFrameRef::from_buffer_ref_readable(b.as_ref(), &info).unwrap(),
                )
            })
            .collect();
        let (mean, min) = psnr_stats(&frames, &clip.frames, 320, 240);
        eprintln!("ffmpeg {encoder} → rtav1dec: mean {mean:.1} dB, min {min:.1} dB");
        assert!(min >= MIN_FRAME_PSNR, "{encoder}: min {min:.1} dB");
        let reference = ffmpeg_decode(&ivf, "libdav1d", 320, 240);
        for (i, (ours, theirs)) in frames.iter().zip(&reference).enumerate() {
            assert!(
                y_plane(ours, 320, 240) == y_plane(theirs, 320, 240),
                "{encoder}: frame {i} differs from ffmpeg's libdav1d"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn decodes_ten_bit() {
    let clip = clip(160, 120, 10, "I420_10LE", "ball");
    let (caps, units) = encode(&clip, "rtav1enc");
    let (info, frames) = decode(&caps, &units, "rtav1dec");
    assert_eq!(info.format(), gst_video::VideoFormat::I42010le);
    for (i, (d, s)) in frames.iter().zip(&clip.frames).enumerate() {
        let psnr = psnr_y10(d, s, 160, 120);
        assert!(psnr >= 35.0, "frame {i}: {psnr:.1} dB");
    }
}

/// Pushes `units` (with their caps) through `appsrc ! rtav1dec <props> ! appsink`
/// and returns each output frame's caps, the decoder's stats and the error, if any.
fn run_decoder(
    props: &str,
    caps: &gst::Caps,
    units: &[gst::Buffer],
) -> (Vec<gst::Caps>, gst::Structure, Option<String>) {
    init();
    let pipeline = launch(&format!(
        "appsrc name=src format=time ! rtav1dec name=dec {props} ! appsink name=sink sync=false"
    ));
    let src = element::<gst_app::AppSrc>(&pipeline, "src");
    let sink = element::<gst_app::AppSink>(&pipeline, "sink");
    src.set_caps(Some(caps));
    pipeline.set_state(gst::State::Playing).unwrap();
    for u in units {
        if src.push_buffer(u.clone()).is_err() {
            break;
        }
    }
    let _ = src.end_of_stream();
    let mut out = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        out.push(sample.caps_owned().unwrap());
    }
    let bus = pipeline.bus().unwrap();
    let error = bus
        .pop_filtered(&[gst::MessageType::Error])
        .map(|m| match m.view() {
            gst::MessageView::Error(e) => e.error().to_string(),
            _ => unreachable!(),
        });
    let stats = pipeline
        .by_name("dec")
        .unwrap()
        .property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    (out, stats, error)
}

fn restamped(units: Vec<gst::Buffer>, first: usize) -> Vec<gst::Buffer> {
    units
        .into_iter()
        .enumerate()
        .map(|(i, mut u)| {
            let u_mut = u.make_mut();
            u_mut.set_pts(gst::ClockTime::from_nseconds(
                (first + i) as u64 * 1_000_000_000 / 30,
            ));
            u_mut.set_dts(gst::ClockTime::NONE);
            u
        })
        .collect()
}

#[test]
fn resolution_change_renegotiates() {
    let small = clip(160, 120, 10, "I420", "ball");
    let large = clip(320, 240, 10, "I420", "smpte");
    let (_, mut units) = encode(&small, "rtav1enc");
    let (_, more) = encode(&large, "rtav1enc");
    units.extend(restamped(more, 10));
    // Caps without a size, as from a live source whose sender changes resolution.
    let caps = gst::Caps::builder("video/x-av1")
        .field("stream-format", "obu-stream")
        .field("alignment", "tu")
        .build();
    let (out, stats, error) = run_decoder("", &caps, &units);
    assert_eq!(error, None);
    assert_eq!(out.len(), 20);
    let size = |c: &gst::Caps| {
        let s = c.structure(0).unwrap();
        (
            s.get::<i32>("width").unwrap(),
            s.get::<i32>("height").unwrap(),
        )
    };
    assert!(out[..10].iter().all(|c| size(c) == (160, 120)));
    assert!(out[10..].iter().all(|c| size(c) == (320, 240)));
    assert_eq!(stats.get::<u64>("renegotiations").unwrap(), 2, "{stats}");
}

/// 30 frames with key frames every 10; unit 12 is garbage, unit 15 is cut in half.
fn damaged_stream() -> (gst::Caps, Vec<gst::Buffer>) {
    let clip = clip(160, 120, 30, "I420", "ball");
    let (caps, mut units) = encode(
        &clip,
        "rtav1enc max-key-frame-interval=10 min-key-frame-interval=10",
    );
    let garbage: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut g = gst::Buffer::from_slice(garbage);
    g.make_mut().set_pts(units[12].pts());
    units[12] = g;
    let half = {
        let map = units[15].map_readable().unwrap();
        map[..map.len() / 2].to_vec()
    };
    let mut t = gst::Buffer::from_slice(half);
    t.make_mut().set_pts(units[15].pts());
    t.make_mut().set_flags(gst::BufferFlags::DELTA_UNIT);
    units[15] = t;
    (caps, units)
}

#[test]
fn corrupt_units_are_counted_and_decoding_goes_on() {
    let (caps, units) = damaged_stream();
    let (out, stats, error) = run_decoder("max-errors=10", &caps, &units);
    eprintln!("damaged stream: {} frames out, {stats}", out.len());
    assert_eq!(error, None, "within max-errors the stream goes on");
    let errors = stats.get::<u64>("decode-errors").unwrap();
    assert!(errors >= 1, "{stats}");
    // Everything from the key frame at 20 on decodes again.
    assert!(out.len() >= 22, "{} frames", out.len());
}

#[test]
fn corrupt_units_beyond_max_errors_are_a_clear_error() {
    let (caps, units) = damaged_stream();
    let (_, stats, error) = run_decoder("max-errors=0", &caps, &units);
    let error = error.expect("max-errors=0 makes the first corrupt unit an error");
    assert!(error.contains("Corrupt or unsupported AV1 data"), "{error}");
    assert!(stats.get::<u64>("decode-errors").unwrap() >= 1);
}

#[test]
fn bit_depth_change_renegotiates() {
    let eight = clip(160, 120, 10, "I420", "ball");
    let ten = clip(160, 120, 10, "I420_10LE", "ball");
    let (_, mut units) = encode(&eight, "rtav1enc");
    let (_, more) = encode(&ten, "rtav1enc");
    units.extend(restamped(more, 10));
    let caps = gst::Caps::builder("video/x-av1")
        .field("stream-format", "obu-stream")
        .field("alignment", "tu")
        .build();
    let (out, stats, error) = run_decoder("", &caps, &units);
    assert_eq!(error, None);
    assert_eq!(out.len(), 20);
    let format = |c: &gst::Caps| c.structure(0).unwrap().get::<String>("format").unwrap();
    assert!(
        out[..10].iter().all(|c| format(c) == "I420"),
        "{:?}",
        out.iter().map(format).collect::<Vec<_>>()
    );
    assert!(
        out[10..].iter().all(|c| format(c) == "I420_10LE"),
        "{:?}",
        out.iter().map(format).collect::<Vec<_>>()
    );
    assert_eq!(stats.get::<u64>("renegotiations").unwrap(), 2, "{stats}");
    // And the pictures on both sides of the switch are right, not just labelled so.
    let pipeline = launch("appsrc name=src format=time ! rtav1dec ! appsink name=sink sync=false");
    let src = element::<gst_app::AppSrc>(&pipeline, "src");
    let sink = element::<gst_app::AppSink>(&pipeline, "sink");
    src.set_caps(Some(&caps));
    pipeline.set_state(gst::State::Playing).unwrap();
    for u in &units {
        src.push_buffer(u.clone()).unwrap();
    }
    src.end_of_stream().unwrap();
    let mut psnr = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let frame = pack(
            &gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &info)
                .unwrap(),
        );
        let i = psnr.len();
        psnr.push(if i < 10 {
            psnr_y(&frame, &eight.frames[i], 160, 120)
        } else {
            psnr_y10(&frame, &ten.frames[i - 10], 160, 120)
        });
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(psnr.len(), 20);
    assert!(psnr.iter().all(|&p| p >= 35.0), "{psnr:.1?}");
}

/// Pushes units one by one into `rtav1dec <props>` behind a live upstream (the
/// harness) and returns the most frames any picture waited for behind it (its
/// real output delay) and the latency the element reports.
fn measured_output_delay(props: &str) -> (u64, gst::ClockTime) {
    let clip = clip(160, 120, 24, "I420", "ball");
    let (caps, units) = encode(&clip, "rtav1enc");
    init();
    let mut h = Harness::new_parse(&format!("rtav1dec {props}"));
    h.set_src_caps(caps);
    h.play();
    let mut out = 0u64;
    let mut worst = 0u64;
    for (pushed, u) in units.into_iter().enumerate() {
        h.push(u).unwrap();
        // push() returns once the decoder handled the unit: whatever it let out is queued.
        while h.try_pull().is_some() {
            worst = worst.max(pushed as u64 - out);
            out += 1;
        }
    }
    assert!(out > 0, "{props}: nothing decoded");
    let mut q = gst::query::Latency::new();
    assert!(
        h.element()
            .unwrap()
            .static_pad("src")
            .unwrap()
            .query(&mut q)
    );
    (worst, q.result().1)
}

#[test]
fn reported_latency_is_the_real_output_delay() {
    let frame = gst::ClockTime::from_nseconds(1_000_000_000 / 30);
    // Live upstream: max-frame-delay auto means one frame context, then explicit ones.
    for props in [
        "n-threads=4",
        "n-threads=4 max-frame-delay=1",
        "n-threads=4 max-frame-delay=2",
        "n-threads=4 max-frame-delay=3",
        "n-threads=2 max-frame-delay=4",
    ] {
        let (worst, latency) = measured_output_delay(props);
        eprintln!("rtav1dec {props}: pictures wait up to {worst} frames, reported {latency}");
        let expected = frame * worst;
        assert!(
            latency.nseconds().abs_diff(expected.nseconds()) < 1_000_000,
            "{props}: reported {latency}, measured {worst} frames ({expected})"
        );
    }
}

/// Frames the base class holds for rtav1dec (GstVideoDecoder's pending list).
fn pending_frames(h: &Harness) -> usize {
    h.element()
        .unwrap()
        .downcast::<gst_video::VideoDecoder>()
        .unwrap()
        .frames()
        .len()
}

#[test]
fn frames_without_a_picture_are_released() {
    let (caps, units) = damaged_stream();
    init();
    let mut h = Harness::new("rtav1dec");
    let dec = h.element().unwrap();
    dec.set_property("max-frame-delay", 1u32);
    dec.set_property("max-errors", -1i32);
    h.set_src_caps(caps);
    h.play();
    for u in &units {
        let _ = h.push(u.clone());
    }
    let out = std::iter::from_fn(|| h.try_pull()).count();
    let stats = dec.property::<gst::Structure>("stats");
    eprintln!("{out} frames out, {stats}");
    assert!(stats.get::<u64>("decode-errors").unwrap() >= 1, "{stats}");
    // One frame of delay: dav1d holds at most one; every other frame came out or was let go.
    let pending = pending_frames(&h);
    assert!(
        pending <= 1,
        "{pending} frames still pending after {} units",
        units.len()
    );
    h.push_event(gst::event::Eos::new());
    while h.try_pull().is_some() {}
    assert_eq!(pending_frames(&h), 0, "nothing pending after the drain");
}

#[test]
fn a_frame_larger_than_frame_size_limit_is_a_clear_error() {
    let clip = clip(320, 240, 5, "I420", "ball");
    let (caps, units) = encode(&clip, "rtav1enc");
    // 320x240 = 76800 pixels: a limit of 200x200 refuses it before dav1d allocates.
    let (out, _, error) = run_decoder("frame-size-limit=40000", &caps, &units);
    let error = error.expect("a frame over frame-size-limit is an error");
    assert!(error.contains("frame-size-limit"), "{error}");
    assert!(out.is_empty(), "{} frames out", out.len());
    let (out, _, error) = run_decoder("frame-size-limit=76800", &caps, &units);
    assert_eq!(
        (out.len(), error),
        (5, None),
        "a frame at the limit decodes"
    );
}
