//! Two specvadgates' segments through one inferclient (output=text, RunPod
//! local API started on loopback): each gate numbers its segments from 1, so
//! the ids differ only in the per-gate tag from
//! `rtai_core::protocol::new_segment_id_base`. A cancel from one gate must not
//! abort or drop the other gate's segment, and audio of the two segments is
//! never mixed into one request (A may arrive in pieces, see the test).

mod common;

use common::{Peer, audio};
use gst::prelude::*;
use rtai_core::testing::{element, launch};
use rtai_core::{SegmentEvent, SegmentIdMeta};

#[test]
fn two_gates_into_one_inferclient_keep_their_segments_apart() {
    gst::init().unwrap();
    gstrtaiinfer::plugin_register_static().unwrap();
    let server = Peer::runpod();
    let (a, b) = (
        rtai_core::protocol::new_segment_id_base() | 1,
        rtai_core::protocol::new_segment_id_base() | 1,
    );
    assert_ne!(a, b);
    let pipeline = launch(&format!(
        "appsrc name=src format=time caps=audio/x-raw,format=S16LE,rate=16000,channels=1,layout=interleaved \
         ! inferclient name=infer protocol=runpod url={} output=text \
         ! appsink name=sink sync=false",
        server.url()
    ));
    let src = element::<gst_app::AppSrc>(&pipeline, "src");
    let sink = element::<gst_app::AppSink>(&pipeline, "sink");
    pipeline.set_state(gst::State::Playing).unwrap();
    // Funnelled: gate A's segment (20 buffers) with gate B's false start (8 buffers)
    // interleaved; B cancels its segment while A's is still open.
    for i in 0..20u64 {
        src.push_buffer(audio(i * 10, a)).unwrap();
        if (5..13).contains(&i) {
            src.push_buffer(audio(i * 10, b)).unwrap();
        }
    }
    assert!(
        src.static_pad("src").unwrap().push_event(
            SegmentEvent::Cancel {
                id: b,
                reason: "false start".into()
            }
            .to_event()
        )
    );
    src.send_event(SegmentEvent::End { id: a }.to_event());
    src.end_of_stream().unwrap();
    let mut texts = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let buf = sample.buffer().unwrap();
        texts.push((
            SegmentIdMeta::get(buf),
            String::from_utf8(buf.map_readable().unwrap().to_vec()).unwrap(),
        ));
    }
    let stats = pipeline
        .by_name("infer")
        .unwrap()
        .property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    // A's 20 buffers of 320 bytes, none of B's, and A never aborted. Whether A goes
    // in one request depends on when B's out-of-band cancel overtakes B's queued
    // buffers: before them, B's buffers are dropped and A is one run; after them, each
    // change of id closes A's run so far (two segments are never mixed in one request),
    // and A arrives in pieces. Both are right; what must hold is the sum and the ids.
    let bytes = |text: &str| -> u64 {
        text.strip_suffix(" bytes of audio")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected transcript {text:?}"))
    };
    assert!(!texts.is_empty(), "A's segment was transcribed: {stats}");
    assert!(
        texts.iter().all(|(id, _)| *id == Some(a)),
        "only gate A's segment: {texts:?} {stats}"
    );
    assert_eq!(
        texts.iter().map(|(_, t)| bytes(t)).sum::<u64>(),
        6400,
        "all of A's 20 buffers and nothing of B's: {texts:?} {stats}"
    );
}
