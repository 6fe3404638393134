//! Two gates feed one consumer: their segment ids must not collide, or a
//! cancel from one gate drops the other gate's committed speech.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gst::prelude::*;
use rtai_core::{SegmentEvent, SegmentIdMeta};

mod synth;
use synth::*;

/// The voice plugin, and the batcher both gates feed.
fn init() {
    synth::init();
    static BATCH: std::sync::Once = std::sync::Once::new();
    BATCH.call_once(|| gstrtaibatch::plugin_register_static().unwrap());
}

fn script(parts: &[(Sound, usize)]) -> Vec<Sound> {
    parts
        .iter()
        .flat_map(|(s, n)| std::iter::repeat_n(*s, *n))
        .collect()
}

/// Per segment id: buffers seen, and whether it was committed / cancelled.
#[derive(Default, Debug)]
struct Seen {
    buffers: HashMap<u64, usize>,
    committed: Vec<u64>,
    cancelled: Vec<u64>,
}

fn watch(pad: &gst::Pad) -> Arc<Mutex<Seen>> {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = seen.clone();
    pad.add_probe(
        gst::PadProbeType::BUFFER
            | gst::PadProbeType::BUFFER_LIST
            | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let mut s = s.lock().unwrap();
            let mut count = |b: &gst::BufferRef| {
                if let Some(id) = SegmentIdMeta::get(b) {
                    *s.buffers.entry(id).or_default() += 1;
                }
            };
            match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => count(b),
                Some(gst::PadProbeData::BufferList(l)) => l.iter().for_each(count),
                Some(gst::PadProbeData::Event(e)) => match SegmentEvent::parse(e) {
                    Some(SegmentEvent::Commit { id }) => s.committed.push(id),
                    Some(SegmentEvent::Cancel { id, .. }) => s.cancelled.push(id),
                    _ => {}
                },
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
    seen
}

/// Pushes the two gates' scripts into appsrcs `a` and `b_src`, frame by frame in
/// turn, then ends both: gate A speech then a click, gate B a click then speech.
fn feed_both_gates(pipeline: &gst::Pipeline) {
    let a = script(&[
        (Sound::Quiet, 50),
        (Sound::Voiced, 100),
        (Sound::Quiet, 100),
        (Sound::Click, 3),
        (Sound::Quiet, 60),
    ]);
    let b = script(&[
        (Sound::Quiet, 20),
        (Sound::Click, 3),
        (Sound::Quiet, 80),
        (Sound::Voiced, 100),
        (Sound::Quiet, 110),
    ]);
    let src = |n: &str| {
        pipeline
            .by_name(n)
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap()
    };
    let (src_a, src_b) = (src("a"), src("b_src"));
    let (mut seed_a, mut seed_b) = (1, 2);
    for n in 0..a.len().max(b.len()) {
        if let Some(s) = a.get(n) {
            src_a.push_buffer(frame(*s, n as u64, &mut seed_a)).unwrap();
        }
        if let Some(s) = b.get(n) {
            src_b.push_buffer(frame(*s, n as u64, &mut seed_b)).unwrap();
        }
    }
    src_a.end_of_stream().unwrap();
    src_b.end_of_stream().unwrap();
}

#[test]
fn two_gates_into_one_batcher_keep_their_segments_apart() {
    init();
    let caps = CAPS;
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=a format=time caps={caps} ! specvadgate name=ga ! funnel name=f \
         ! batcher name=b max-batch-size=1 timeout=0 max-queue=1000 ! fakesink sync=false \
         appsrc name=b_src format=time caps={caps} ! specvadgate name=gb ! f."
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let by = |n: &str| pipeline.by_name(n).unwrap();
    let gate_a = watch(&by("ga").static_pad("src").unwrap());
    let gate_b = watch(&by("gb").static_pad("src").unwrap());
    let out = watch(&by("b").static_pad("src").unwrap());
    pipeline.set_state(gst::State::Playing).unwrap();
    feed_both_gates(&pipeline);
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    pipeline.set_state(gst::State::Null).unwrap();

    let (a, b, out) = (
        gate_a.lock().unwrap(),
        gate_b.lock().unwrap(),
        out.lock().unwrap(),
    );
    assert_eq!((a.committed.len(), a.cancelled.len()), (1, 1), "{a:?}");
    assert_eq!((b.committed.len(), b.cancelled.len()), (1, 1), "{b:?}");
    let ids: Vec<u64> = [&a.committed, &a.cancelled, &b.committed, &b.cancelled]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "ids collide across gates: {ids:?}");
    for (gate, seen) in [("a", &a), ("b", &b)] {
        let id = seen.committed[0];
        assert_eq!(
            out.buffers.get(&id),
            seen.buffers.get(&id),
            "gate {gate}: every buffer of its committed segment {id} passes the batcher"
        );
        assert!(seen.buffers[&id] >= 100, "{seen:?}");
    }
}

/// The same two gates across the gRPC bridge (grpcsink → grpcsrc over
/// loopback, the rtaigrpc plugin loaded from target/release or
/// $RTAI_PLUGIN_DIR) into one batcher: the ids travel as they are and still
/// keep the segments apart.
#[test]
fn two_gates_across_grpcsink_and_grpcsrc_keep_their_segments_apart() {
    init();
    let dir = std::env::var_os("RTAI_PLUGIN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release")
        });
    let so = dir.join("libgstrtaigrpc.so");
    gst::Plugin::load_file(&so).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build it: cargo build --release -p gst-plugin-rtai-grpc)",
            so.display()
        )
    });
    let caps = CAPS;
    let rx = gst::parse::launch(
        "grpcsrc name=src listen=127.0.0.1:0 ! batcher name=b max-batch-size=1 timeout=0 \
         max-queue=1000 ! fakesink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let out = watch(&rx.by_name("b").unwrap().static_pad("src").unwrap());
    rx.set_state(gst::State::Playing).unwrap();
    let grpcsrc = rx.by_name("src").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let port = loop {
        let port = grpcsrc.property::<u32>("bound-port");
        if port != 0 {
            break port;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "grpcsrc never listened"
        );
        std::thread::yield_now();
    };
    let tx = gst::parse::launch(&format!(
        "appsrc name=a format=time caps={caps} ! specvadgate name=ga ! funnel name=f \
         ! grpcsink uri=http://127.0.0.1:{port} \
         appsrc name=b_src format=time caps={caps} ! specvadgate name=gb ! f."
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let by = |n: &str| tx.by_name(n).unwrap();
    let gate_a = watch(&by("ga").static_pad("src").unwrap());
    let gate_b = watch(&by("gb").static_pad("src").unwrap());
    tx.set_state(gst::State::Playing).unwrap();
    feed_both_gates(&tx);
    for (name, p) in [("sender", &tx), ("receiver", &rx)] {
        let msg = p
            .bus()
            .unwrap()
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .unwrap_or_else(|| panic!("{name}: no EOS"));
        assert!(
            matches!(msg.view(), gst::MessageView::Eos(_)),
            "{name}: {msg:?}"
        );
    }
    tx.set_state(gst::State::Null).unwrap();
    rx.set_state(gst::State::Null).unwrap();
    let (a, b, out) = (
        gate_a.lock().unwrap(),
        gate_b.lock().unwrap(),
        out.lock().unwrap(),
    );
    for (gate, seen) in [("a", &a), ("b", &b)] {
        assert_eq!(seen.committed.len(), 1, "{seen:?}");
        let id = seen.committed[0];
        assert_eq!(
            out.buffers.get(&id),
            seen.buffers.get(&id),
            "gate {gate}: every buffer of its committed segment {id} crosses the bridge and the batcher"
        );
    }
}
