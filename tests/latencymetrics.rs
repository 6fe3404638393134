//! The `latencymetrics` tracer, loaded the way users load it: `GST_TRACERS` set
//! before GStreamer initialises, the plugin found through `GST_PLUGIN_PATH`.
//! One process, one tracer: both checks run in one test, in order.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use gst::prelude::*;

const FRAMES: u64 = 60;
/// identity sleeps this long per buffer, so its latency has a known floor.
const SLEEP_US: u64 = 4000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("chunked"),
        "expected a plain body: {head}"
    );
    body.to_string()
}

/// The value of the first sample of `family` whose labels contain all of `labels`.
fn sample(metrics: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (name_labels, value) = line.rsplit_once(' ')?;
            let (name, rest) = name_labels.split_once('{').unwrap_or((name_labels, ""));
            (name == family
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse().ok())?
        })
}

fn run_to_eos(description: &str) -> gst::Pipeline {
    let pipeline = gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the pipeline ends within 60 s");
    assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
    pipeline
}

#[test]
fn tracer_measures_each_element_and_shares_the_analytics_registry() {
    let tracer_addr = format!("127.0.0.1:{}", free_port());
    // SAFETY: set before GStreamer (or any other thread) reads the environment.
    unsafe {
        std::env::set_var(
            "GST_TRACERS",
            format!("latencymetrics(listen={tracer_addr})"),
        )
    };
    rtai_integration_tests::init();
    assert!(
        gst::Registry::get()
            .lookup_feature("latencymetrics")
            .is_some(),
        "the tracer is registered"
    );

    // 1. The tracer's own endpoint (no analyticssink in the process's pipelines).
    let pipeline = run_to_eos(&format!(
        "videotestsrc num-buffers={FRAMES} ! video/x-raw,format=I420,width=320,height=240 ! videoconvert name=convert \
         ! identity name=slow sleep-time={SLEEP_US} ! queue name=q ! fakesink sync=false"
    ));
    let metrics = get(&tracer_addr, "/metrics");
    let p50 = |element: &str| {
        sample(
            &metrics,
            "rtai_element_latency_quantile_seconds",
            &[("element", element), ("pad", "src"), ("quantile", "0.5")],
        )
        .unwrap_or_else(|| panic!("no P50 for {element} in:\n{metrics}"))
    };
    let slow = p50("slow");
    assert!(
        slow >= SLEEP_US as f64 / 1e6,
        "identity sleeps {SLEEP_US} µs per buffer, P50 {slow} s"
    );
    assert!(slow < 0.5, "P50 {slow} s");
    assert!(
        p50("convert") < slow,
        "videoconvert passthrough is faster than a sleeping identity"
    );
    let count = sample(
        &metrics,
        "rtai_element_latency_seconds_count",
        &[("element", "slow")],
    )
    .unwrap();
    assert_eq!(count, FRAMES as f64, "every buffer measured once");
    let p99 = sample(
        &metrics,
        "rtai_element_latency_quantile_seconds",
        &[("element", "slow"), ("quantile", "0.99")],
    )
    .unwrap();
    assert!(p99 >= slow);
    assert!(
        sample(&metrics, "rtai_queue_level_buffers", &[("element", "q")]).is_some(),
        "queue level of q:\n{metrics}"
    );
    // Every tracer series names the element's pipeline.
    let pipeline_name = pipeline.name();
    for family in [
        "rtai_element_latency_seconds_count",
        "rtai_pad_buffers_total",
        "rtai_element_buffers_in_flight",
    ] {
        assert!(
            sample(
                &metrics,
                family,
                &[("pipeline", pipeline_name.as_str()), ("element", "slow")]
            )
            .is_some(),
            "{family} of slow labelled pipeline={pipeline_name}:\n{metrics}"
        );
    }
    assert!(
        sample(
            &metrics,
            "rtai_queue_level_buffers",
            &[("pipeline", pipeline_name.as_str()), ("element", "q")]
        )
        .is_some(),
        "queue level of q labelled pipeline={pipeline_name}:\n{metrics}"
    );
    // Per-pad counts and rates: 60 frames of 320x240 I420 (115,200 bytes)
    // out of `slow`, which sleeps 4 ms per frame.
    let pad = |family: &str| {
        sample(&metrics, family, &[("element", "slow"), ("pad", "src")])
            .unwrap_or_else(|| panic!("no {family} for slow:src in:\n{metrics}"))
    };
    assert_eq!(pad("rtai_pad_buffers_total"), FRAMES as f64);
    assert_eq!(pad("rtai_pad_bytes_total"), (FRAMES * 115_200) as f64);
    let fps = pad("rtai_pad_fps");
    assert!(
        fps > 1.0 && fps <= 1e6 / SLEEP_US as f64 * 1.05,
        "at most one frame per {SLEEP_US} µs: {fps} fps"
    );
    let bitrate = pad("rtai_pad_bitrate_bits_per_second");
    assert!(
        (bitrate / (fps * 115_200.0 * 8.0) - 1.0).abs() < 0.01,
        "{bitrate} bit/s at {fps} fps"
    );
    pipeline.set_state(gst::State::Null).unwrap();

    // 2. With an analyticssink in the process, its /metrics carries the tracer's series too.
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers={FRAMES} ! video/x-raw,width=160,height=120 ! identity name=slow2 sleep-time={SLEEP_US} \
         ! analyticssink name=sink listen=127.0.0.1:0"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the pipeline ends within 60 s");
    assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
    let sink = pipeline.by_name("sink").unwrap();
    let addr = sink
        .property::<Option<String>>("bound-address")
        .expect("analyticssink serves HTTP");
    let metrics = get(&addr, "/metrics");
    let slow2 = sample(
        &metrics,
        "rtai_element_latency_quantile_seconds",
        &[("element", "slow2"), ("quantile", "0.5")],
    )
    .unwrap_or_else(|| panic!("analyticssink's /metrics lacks the tracer's series:\n{metrics}"));
    assert!(slow2 >= SLEEP_US as f64 / 1e6, "P50 {slow2} s");
    let latency: serde_json::Value = serde_json::from_str(&get(&addr, "/api/latency")).unwrap();
    let pads = latency["pads"].as_array().expect("pads");
    assert!(
        pads.iter()
            .any(|p| p["element"] == "slow2" && p["p99"].as_f64().unwrap() >= slow2),
        "{latency}"
    );
    pipeline.set_state(gst::State::Null).unwrap();

    // 3. Elements that come and go are forgotten when destroyed: 10,000
    // identities, each fed one buffer, leave the tracer's state bounded, and
    // an element at a reused address reports under its own name.
    let tracked = |metrics: &str, kind: &str| {
        sample(
            metrics,
            "rtai_latencymetrics_tracked_objects",
            &[("kind", kind)],
        )
        .unwrap_or_else(|| panic!("no tracked {kind}s in:\n{metrics}"))
    };
    let feed = |name: &str| {
        let identity = gst::ElementFactory::make("identity")
            .name(name)
            .build()
            .unwrap();
        let src = gst::Pad::builder(gst::PadDirection::Src)
            .name("feeder")
            .build();
        src.link(&identity.static_pad("sink").unwrap()).unwrap();
        identity.set_state(gst::State::Playing).unwrap();
        src.set_active(true).unwrap();
        assert!(src.push_event(gst::event::StreamStart::new(name)));
        assert!(
            src.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                gst::ClockTime,
            >::new()))
        );
        // identity's src pad is not linked: the push out of it is measured all the same.
        let _ = src.push(gst::Buffer::with_size(16).unwrap());
        identity.set_state(gst::State::Null).unwrap();
        src.set_active(false).unwrap();
    };
    let before = get(&tracer_addr, "/metrics");
    let (elements0, pads0) = (tracked(&before, "element"), tracked(&before, "pad"));
    for i in 0..10_000 {
        feed(&format!("gone-{i}"));
    }
    feed("fresh");
    let after = get(&tracer_addr, "/metrics");
    let (elements1, pads1) = (tracked(&after, "element"), tracked(&after, "pad"));
    assert!(
        elements1 <= elements0 + 1.0 && pads1 <= pads0 + 1.0,
        "tracked before: {elements0} elements, {pads0} pads; after 10,000 gone: {elements1}, {pads1}"
    );
    assert!(
        !after.contains("element=\"gone-"),
        "destroyed elements are not reported:\n{after}"
    );
    assert_eq!(
        sample(
            &after,
            "rtai_pad_buffers_total",
            &[("element", "fresh"), ("pad", "src")]
        ),
        None,
        "fresh is destroyed too"
    );
    // One that stays: counted under its own name.
    let identity = gst::ElementFactory::make("identity")
        .name("kept")
        .build()
        .unwrap();
    let src = gst::Pad::builder(gst::PadDirection::Src).build();
    src.link(&identity.static_pad("sink").unwrap()).unwrap();
    identity.set_state(gst::State::Playing).unwrap();
    src.set_active(true).unwrap();
    assert!(src.push_event(gst::event::StreamStart::new("kept")));
    assert!(
        src.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
            gst::ClockTime,
        >::new()))
    );
    let _ = src.push(gst::Buffer::with_size(16).unwrap());
    let kept = get(&tracer_addr, "/metrics");
    assert_eq!(
        sample(
            &kept,
            "rtai_pad_buffers_total",
            &[("element", "kept"), ("pad", "src")]
        ),
        Some(1.0),
        "{kept}"
    );
    assert!(!kept.contains("element=\"gone-"), "{kept}");
    identity.set_state(gst::State::Null).unwrap();
}
