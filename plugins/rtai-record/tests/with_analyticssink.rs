//! The wiring the demo uses, with the real marker source: one pipeline where analyticssink
//! scores an object appearing (scripted detection ROI metas on the raw video) and posts
//! `rtai-clip-marker` on the bus, and cliprecorder (`marker-source=analytics`) on the encoded
//! branch of the same video records the clip around it, with nothing in the application
//! between them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;

const MS: u64 = 1_000_000;
const GOP: u64 = 500 * MS;
const FRAME: u64 = 33_333_334;

#[test]
fn analyticssink_marker_records_a_clip() {
    gst::init().unwrap();
    gstrtairecord::plugin_register_static().unwrap();
    gstrtaianalytics::plugin_register_static().unwrap();
    let dir: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cliprecorder-analytics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let pipeline = gst::parse::launch(&format!(
        "analyticssink name=analytics clip-threshold=0.5 clip-padding=500 \
         videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=30/1 ! tee name=t \
         t. ! queue ! identity name=detector ! analytics.sink_0 \
         t. ! queue ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bframes=0 \
            ! h264parse config-interval=-1 \
            ! cliprecorder marker-source=analytics location={} pre-roll=3000 post-roll=500 \
            ! fakesink sync=false",
        dir.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let analytics = pipeline.by_name("analytics").unwrap();
    analytics.set_property("listen", "");

    // The "detector": from 2 s of running time on, every frame shows a person.
    let seen = Arc::new(AtomicBool::new(false));
    let s = seen.clone();
    pipeline
        .by_name("detector")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut()
                && buffer.pts().is_some_and(|p| p.nseconds() >= 2000 * MS)
            {
                s.store(true, Ordering::Relaxed);
                let b = buffer.make_mut();
                let mut roi =
                    gst_video::VideoRegionOfInterestMeta::add(b, "person", (10, 10, 40, 80));
                roi.add_param(
                    gst::Structure::builder("detection")
                        .field("confidence", 0.95f64)
                        .field("label_id", 0i32)
                        .field("label", "person")
                        .field("model_name", "scripted")
                        .build(),
                );
            }
            gst::PadProbeReturn::Ok
        });
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut marker: Option<(u64, u64, String)> = None;
    let recorded = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no clip recorded; marker: {marker:?}");
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else {
            continue;
        };
        if let gst::MessageView::Error(e) = msg.view() {
            panic!("{} {:?}", e.error(), e.debug());
        }
        let Some(s) = msg.structure() else { continue };
        match s.name().as_str() {
            "rtai-clip-marker" if marker.is_none() => {
                marker = Some((
                    s.get("start").unwrap(),
                    s.get("end").unwrap(),
                    s.get("source").unwrap(),
                ))
            }
            "rtai-clip-recorded" => break s.to_owned(),
            _ => {}
        }
    };
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(seen.load(Ordering::Relaxed));
    let (start, end, source) = marker.expect("analyticssink posted a marker first");
    assert_eq!(recorded.get::<&str>("reason").unwrap(), "object_appear");
    assert_eq!(recorded.get::<&str>("sources").unwrap(), source);
    let clip_start = recorded.get::<u64>("start").unwrap();
    let clip_end = recorded.get::<u64>("end").unwrap();
    assert!(
        clip_start <= start && start - clip_start < GOP + FRAME,
        "{clip_start} vs {start}"
    );
    assert!(clip_end + FRAME >= end + 500 * MS, "{clip_end} vs {end}");
    let path = recorded.get::<&str>("location").unwrap();
    assert!(std::fs::metadata(path).unwrap().len() > 0);
}
