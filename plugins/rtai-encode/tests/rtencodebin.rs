//! rtencodebin on this machine (no hardware encoder: it must pick software and
//! say so), with fake "hardware" encoders registered by the test (one that
//! cannot start, one that works, one with request pads only), setting
//! mappings, live bitrate, bad input.

use gst::prelude::*;
use rtai_core::testing::{element, launch};

#[path = "support/fake_encoders.rs"]
mod fake;

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release");
        let registry =
            std::env::temp_dir().join(format!("rtai-encode-registry-{}.bin", std::process::id()));
        // SAFETY: set once before GStreamer initialises and before other threads read it.
        unsafe {
            std::env::set_var(
                "GST_PLUGIN_PATH",
                std::env::var_os("RTAI_PLUGIN_DIR").unwrap_or(target.into_os_string()),
            );
            std::env::set_var("GST_REGISTRY", registry);
        }
        gst::init().unwrap();
        assert!(
            gst::ElementFactory::find("rtencodebin").is_some(),
            "build the plugins first: cargo build --release --workspace"
        );
        fake::register("vaav1enc", fake::RequestPadsEnc::static_type());
        fake::register("vaapih264enc", fake::NoDeviceEnc::static_type());
        fake::register("vah264enc", fake::WorkingEnc::static_type());
    });
}

/// Runs `videotestsrc ! rtencodebin <props> ! <decode> ! appsink`; returns the
/// selection message, the decoded frame count and the bin.
fn run(props: &str, decode: &str, frames: u32) -> (gst::Structure, usize, gst::Element) {
    init();
    let pipeline = launch(&format!(
        "videotestsrc num-buffers={frames} ! video/x-raw,width=320,height=240,framerate=30/1 ! rtencodebin name=enc {props} ! {decode} ! appsink name=sink sync=false"
    ));
    let sink = element::<gst_app::AppSink>(&pipeline, "sink");
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut decoded = 0;
    while sink.pull_sample().is_ok() {
        decoded += 1;
    }
    let messages: Vec<gst::Message> = std::iter::from_fn(|| bus.pop()).collect();
    if let Some(err) = messages
        .iter()
        .find(|m| m.type_() == gst::MessageType::Error)
    {
        panic!("{props}: {err:?}");
    }
    let selected = messages
        .iter()
        .find_map(|m| {
            m.structure()
                .filter(|s| s.name() == "rtencodebin-selected")
                .map(|s| s.to_owned())
        })
        .expect("rtencodebin-selected on the bus");
    let bin = pipeline.by_name("enc").unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    (selected, decoded, bin)
}

fn child(bin: &gst::Element, factory: &str) -> gst::Element {
    bin.downcast_ref::<gst::Bin>()
        .unwrap()
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == factory))
        .unwrap_or_else(|| panic!("no {factory} in the bin"))
}

#[test]
fn software_is_chosen_here_and_decodes() {
    for (codec, decode, expected) in [
        ("h264", "h264parse ! avdec_h264", "x264enc"),
        ("vp8", "vp8dec", "vp8enc"),
        ("av1", "av1parse ! rtav1dec", "rtav1enc"),
    ] {
        // prefer-hardware=false skips the test's fake hardware encoders.
        let (selected, decoded, bin) =
            run(&format!("codec={codec} prefer-hardware=false"), decode, 20);
        assert_eq!(
            selected.get::<&str>("encoder").unwrap(),
            expected,
            "{selected}"
        );
        assert!(!selected.get::<bool>("hardware").unwrap());
        assert_eq!(selected.get::<&str>("codec").unwrap(), codec);
        assert_eq!(decoded, 20, "{codec}: every frame decodes");
        assert_eq!(
            bin.property::<String>("active-encoder"),
            "",
            "released at NULL"
        );
    }
}

#[test]
fn no_real_hardware_here_says_why() {
    // The real hardware factories are not installed on this machine (no VA-API, NVENC or V4L2).
    let (selected, _, _) = run("codec=vp8", "vp8dec", 5);
    assert_eq!(selected.get::<&str>("encoder").unwrap(), "vp8enc");
    let tried = selected.get::<&str>("tried").unwrap();
    for hw in [
        "vaapivp8enc: not installed",
        "vavp8enc: not installed",
        "v4l2vp8enc: not installed",
    ] {
        assert!(tried.contains(hw), "{tried}");
    }
}

#[test]
fn failing_hardware_is_skipped_and_working_hardware_preferred() {
    // The test registers vaapih264enc (cannot start: no device) and vah264enc (works).
    let (selected, decoded, _) = run("codec=h264", "h264parse ! avdec_h264", 10);
    assert_eq!(
        selected.get::<&str>("encoder").unwrap(),
        "vah264enc",
        "{selected}"
    );
    assert!(selected.get::<bool>("hardware").unwrap());
    let tried = selected.get::<&str>("tried").unwrap();
    assert!(tried.contains("vaapih264enc: cannot start"), "{tried}");
    assert_eq!(decoded, 10);
    let (selected, _, _) = run(
        "codec=h264 prefer-hardware=false",
        "h264parse ! avdec_h264",
        3,
    );
    assert_eq!(selected.get::<&str>("encoder").unwrap(), "x264enc");
}

#[test]
fn a_candidate_without_always_pads_is_skipped() {
    // The test registers vaav1enc with request pads only: the bin cannot target them.
    let (selected, decoded, _) = run("codec=av1", "av1parse ! rtav1dec", 5);
    assert_eq!(
        selected.get::<&str>("encoder").unwrap(),
        "rtav1enc",
        "{selected}"
    );
    let tried = selected.get::<&str>("tried").unwrap();
    assert!(
        tried.contains("vaav1enc: has no always sink and src pads"),
        "{tried}"
    );
    assert_eq!(decoded, 5);
}

#[test]
fn every_software_candidates_settings_apply() {
    // A misspelt property or value in candidates.rs would only be a debug line at run time.
    init();
    for codec in [
        gstrtaiencode::candidates::Codec::H264,
        gstrtaiencode::candidates::Codec::Vp8,
        gstrtaiencode::candidates::Codec::Av1,
    ] {
        for c in gstrtaiencode::candidates::candidates(codec)
            .into_iter()
            .filter(|c| !c.hardware)
        {
            let Ok(element) = gst::ElementFactory::make(c.factory).build() else {
                continue;
            };
            let problems = gstrtaiencode::candidates::configure(&element, &c, 1500, 30);
            assert!(problems.is_empty(), "{}: {problems:?}", c.factory);
        }
    }
}

#[test]
fn settings_map_to_each_encoder_and_bitrate_changes_live() {
    init();
    for (codec, factory, bitrate_prop, bitrate, keyint_prop) in [
        ("h264", "x264enc", "bitrate", 700u64, "key-int-max"),
        (
            "vp8",
            "vp8enc",
            "target-bitrate",
            700_000,
            "keyframe-max-dist",
        ),
        ("av1", "rtav1enc", "bitrate", 700, "max-key-frame-interval"),
    ] {
        let pipeline = launch(&format!(
            "videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=30/1 ! rtencodebin name=enc codec={codec} prefer-hardware=false bitrate=700 key-frame-interval=45 ! fakesink"
        ));
        pipeline.set_state(gst::State::Playing).unwrap();
        let bin = pipeline.by_name("enc").unwrap();
        assert_eq!(bin.property::<String>("active-encoder"), factory);
        let enc = child(&bin, factory);
        let number = |e: &gst::Element, p: &str| -> u64 {
            let v = e.property_value(p);
            v.get::<u32>()
                .map(u64::from)
                .or_else(|_| v.get::<i32>().map(|x| x as u64))
                .or_else(|_| v.get::<u64>())
                .or_else(|_| v.get::<i64>().map(|x| x as u64))
                .unwrap()
        };
        assert_eq!(number(&enc, bitrate_prop), bitrate, "{factory}");
        assert_eq!(number(&enc, keyint_prop), 45, "{factory}");
        bin.set_property("bitrate", 1500u32);
        assert_eq!(
            number(&enc, bitrate_prop),
            bitrate / 700 * 1500,
            "{factory}: live change"
        );
        pipeline.set_state(gst::State::Null).unwrap();
    }
    let x264 = gst::ElementFactory::make("rtencodebin").build().unwrap();
    assert_eq!(x264.property::<u32>("bitrate"), 2000);
}

#[test]
fn unsupported_input_is_a_clear_error() {
    init();
    let pipeline = launch(
        "appsrc name=src format=time caps=video/x-bayer,format=bggr,width=64,height=64,framerate=30/1 ! rtencodebin ! fakesink",
    );
    let src = element::<gst_app::AppSrc>(&pipeline, "src");
    pipeline.set_state(gst::State::Playing).unwrap();
    let _ = src.push_buffer(gst::Buffer::with_size(64 * 64).unwrap());
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error])
        .expect("an error, not a hang");
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    assert!(
        format!("{:?}", e.debug()).contains("not-negotiated"),
        "{:?}",
        e.debug()
    );
    pipeline.set_state(gst::State::Null).unwrap();
}

/// (frame index, key frame?) per encoded buffer, and the level of each caps event.
type Seen = (Vec<(u64, bool)>, Vec<String>);

#[test]
fn a_bitrate_storm_while_playing_is_coalesced_without_a_key_frame_storm_or_level_flip() {
    // A congestion controller setting rtencodebin's bitrate 10 times a second for 3 s,
    // across a level boundary (320x240 at 30 fps: AV1 level 2.0 up to 1.5 Mbit/s, 2.1
    // above). rtencodebin hands each change to rtav1enc, whose bitrate-change-interval
    // (1 s) allows one restart (one key frame) per second; the level stays the session's.
    init();
    let pipeline = launch(
        "videotestsrc is-live=true pattern=ball num-buffers=120 \
         ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! rtencodebin name=enc codec=av1 prefer-hardware=false bitrate=1000 key-frame-interval=1000 \
         ! fakesink name=sink sync=false",
    );
    let bin = pipeline.by_name("enc").unwrap();
    let seen: std::sync::Arc<std::sync::Mutex<Seen>> = Default::default();
    let s = seen.clone();
    bin.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let mut s = s.lock().unwrap();
            match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => {
                    let frame = b.pts().map_or(0, |p| p.nseconds() * 30 / 1_000_000_000);
                    s.0.push((frame, !b.flags().contains(gst::BufferFlags::DELTA_UNIT)));
                }
                Some(gst::PadProbeData::Event(e)) => {
                    if let gst::EventView::Caps(c) = e.view() {
                        s.1.push(
                            c.caps()
                                .structure(0)
                                .and_then(|st| st.get::<String>("level").ok())
                                .unwrap_or_default(),
                        );
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut changes = 0u32;
    let started = std::time::Instant::now();
    let mut next_change = started;
    let end = loop {
        // A change every 100 ms of wall clock while the live source plays.
        if std::time::Instant::now() >= next_change && changes < 40 {
            changes += 1;
            bin.set_property(
                "bitrate",
                if changes.is_multiple_of(2) {
                    1000u32
                } else {
                    2000u32
                },
            );
            next_change += std::time::Duration::from_millis(100);
        }
        if let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(10),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) {
            break msg;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no EOS"
        );
    };
    assert!(matches!(end.view(), gst::MessageView::Eos(_)), "{end:?}");
    let encoder = child(&bin, "rtav1enc");
    let final_bitrate = encoder.property::<u32>("bitrate");
    pipeline.set_state(gst::State::Null).unwrap();
    let (buffers, levels) = seen.lock().unwrap().clone();
    let keys: Vec<u64> = buffers.iter().filter(|b| b.1).map(|b| b.0).collect();
    eprintln!(
        "{changes} bitrate changes in {:?}; {} frames; key frames at {keys:?}; caps levels {levels:?}",
        started.elapsed(),
        buffers.len()
    );
    assert!(changes >= 30, "the storm lasted: {changes} changes");
    assert_eq!(
        final_bitrate,
        if changes.is_multiple_of(2) {
            1000
        } else {
            2000
        },
        "every change reached the encoder"
    );
    assert_eq!(buffers.len(), 120, "every frame encoded once");
    assert!(
        keys.windows(2).all(|w| w[1] - w[0] >= 30),
        "key frames closer than the 1 s bitrate-change-interval: {keys:?}"
    );
    // 120 frames = 4 s: the first key frame and at most one restart per second.
    assert!(keys.len() <= 4, "{keys:?}");
    assert!(
        keys.len() >= 2,
        "the changes were applied (a restart is a key frame): {keys:?}"
    );
    assert!(!levels.is_empty());
    assert!(
        levels.iter().all(|l| *l == levels[0]),
        "the level changed mid-session: {levels:?}"
    );
}
