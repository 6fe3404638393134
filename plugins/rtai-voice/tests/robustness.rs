//! Small defects that must not come back: timestamps near the end of the
//! clock (ClockTime sums saturate; in release builds the old sums wrapped
//! silently, so this test guards the debug-build panic and errors only), a
//! failed ONNX Runtime load remembered for the whole process, and a FLUSH that
//! reloaded the model (and skipped the reset when that failed).

mod corpus;

use gst::prelude::*;
use gst_check::Harness;

const CAPS: &str = "audio/x-raw,format=S16LE,layout=interleaved,rate=16000,channels=1";

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtaivoice::plugin_register_static().unwrap();
    });
}

fn gate(props: &[(&str, String)]) -> (Harness, gst::Bus) {
    init();
    let mut builder = gst::ElementFactory::make("specvadgate");
    for (k, v) in props {
        builder = builder.property_from_str(k, v);
    }
    let element = builder.build().unwrap();
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let h = Harness::with_element(&element, Some("sink"), Some("src"));
    (h, bus)
}

fn speech_messages(bus: &gst::Bus) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    while let Some(msg) = bus.pop() {
        match msg.view() {
            gst::MessageView::Error(e) => panic!("{} {:?}", e.error(), e.debug()),
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name().starts_with("speech-") {
                    out.push((s.name().to_string(), s.get::<u64>("running-time").unwrap()));
                }
            }
            _ => {}
        }
    }
    out
}

fn push_audio(h: &mut Harness, samples: &[i16], start: gst::ClockTime) {
    for (i, chunk) in samples.chunks(320).enumerate() {
        let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut b = gst::Buffer::from_mut_slice(bytes);
        let r = b.get_mut().unwrap();
        r.set_pts(start.saturating_add(gst::ClockTime::from_mseconds(20 * i as u64)));
        r.set_duration(gst::ClockTime::from_mseconds(20));
        assert_eq!(h.push(b), Ok(gst::FlowSuccess::Ok));
    }
}

#[test]
fn timestamps_near_the_end_of_the_clock_do_not_panic() {
    let (mut h, bus) = gate(&[]);
    h.set_src_caps_str(CAPS);
    let ms = gst::ClockTime::from_mseconds;
    let mut seed = 1u32;
    let noise: Vec<i16> = (0..8000)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((seed >> 16) as i16) / 4
        })
        .collect();
    // A tone in the last 160 ms: the 200 ms tone hold reaches past the clock's end.
    let tone: Vec<i16> = (0..2560)
        .map(|i| ((i as f64 * 0.06).sin() * 8000.0) as i16)
        .collect();
    let end = gst::ClockTime::MAX;
    push_audio(&mut h, &vec![0i16; 3200], end - ms(1500));
    push_audio(&mut h, &noise, end - ms(1300));
    push_audio(&mut h, &vec![0i16; 2240], end - ms(300));
    push_audio(&mut h, &tone, end - ms(160));
    assert!(h.push_event(gst::event::Eos::new()));
    let msgs = speech_messages(&bus);
    assert!(msgs.iter().any(|(n, _)| n == "speech-start"), "{msgs:?}");
    assert!(
        bus.pop_filtered(&[gst::MessageType::Error]).is_none(),
        "no error near the clock's end"
    );
}

/// A failed ONNX Runtime load is not remembered: a later gate with the right
/// library starts. And a FLUSH resets the Silero state without reading the
/// model file again (here deleted after the start).
#[test]
fn silero_recovers_from_a_bad_library_and_flush_resets_without_the_file() {
    init();
    let c = corpus::build(2).expect("espeak-ng and sox generate the corpus");
    let mut props = corpus::silero_properties();
    // First a library that does not exist: the caps are refused with an error.
    let bad: Vec<(&str, String)> = props
        .iter()
        .map(|(k, v)| {
            if *k == "onnxruntime-library" {
                (*k, "/nonexistent/libonnxruntime.so.1".to_string())
            } else {
                (*k, v.clone())
            }
        })
        .collect();
    let (mut h, bus) = gate(&bad);
    h.set_src_caps_str(CAPS);
    assert!(
        bus.pop_filtered(&[gst::MessageType::Error]).is_some(),
        "the bad library fails"
    );
    drop(h);

    // Then the right library, and a model file that disappears once loaded.
    let dir = std::env::temp_dir().join(format!("rtai-silero-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("silero_vad.onnx");
    let model = props
        .iter()
        .find(|(k, _)| *k == "model-path")
        .unwrap()
        .1
        .clone();
    std::fs::copy(&model, &copy).unwrap();
    for p in props.iter_mut() {
        if p.0 == "model-path" {
            p.1 = copy.to_string_lossy().into_owned();
        }
    }
    let (mut h, bus) = gate(&props);
    h.set_src_caps_str(CAPS);
    assert!(
        bus.pop_filtered(&[gst::MessageType::Error]).is_none(),
        "the right library loads"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // Speech, cut off mid-utterance by a flush.
    let utterance = &c.labels[0];
    push_audio(
        &mut h,
        &c.samples[..utterance.start + (utterance.end - utterance.start) / 2],
        gst::ClockTime::ZERO,
    );
    let before = speech_messages(&bus);
    assert_eq!(
        before.first().map(|m| m.0.as_str()),
        Some("speech-start"),
        "{before:?}"
    );
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
    assert!(bus.pop_filtered(&[gst::MessageType::Error]).is_none());
    // After the flush the machine and the model's state start afresh: the same
    // audio gives the same decisions as the first time.
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    push_audio(
        &mut h,
        &c.samples[..utterance.start + (utterance.end - utterance.start) / 2],
        gst::ClockTime::ZERO,
    );
    assert_eq!(
        speech_messages(&bus),
        before,
        "a reset engine decides as a new one"
    );
}
