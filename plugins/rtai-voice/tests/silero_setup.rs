//! `engine=silero` without `model-path`: the model is found through
//! `$RTAI_SILERO_MODEL` or the silero-vad wheel in a `.venv` of the working
//! directory or a parent, and the error names every place it looked. And the
//! `stats` property answers while a long stretch of audio is in inference.
//!
//! One test per binary on purpose: the lookup changes the process's
//! environment and working directory.

mod corpus;
mod synth;

use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_check::Harness;

/// A Silero gate with only the ONNX Runtime library set (the model is looked up);
/// the bus error's debug text if the caps were refused, else the harness.
fn start(library: &str, extra: &[(&str, &str)]) -> Result<(Harness, gst::Element), String> {
    let mut builder = gst::ElementFactory::make("specvadgate")
        .property_from_str("engine", "silero")
        .property("onnxruntime-library", library)
        // A session of its own, so `silero-windows` counts this gate only.
        .property("silero-shared", false);
    for (k, v) in extra {
        builder = builder.property_from_str(k, v);
    }
    let element = builder.build().unwrap();
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps_str(synth::CAPS);
    if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        let gst::MessageView::Error(e) = msg.view() else {
            unreachable!()
        };
        return Err(e.debug().map(|d| d.to_string()).unwrap_or_default());
    }
    Ok((h, element))
}

/// The error of a start that must fail.
fn refused(started: Result<(Harness, gst::Element), String>, why: &str) -> String {
    match started {
        Err(e) => e,
        Ok(_) => panic!("started: {why}"),
    }
}

/// `ms` of 16 kHz S16LE speech-like audio from `samples`, as one buffer at `pts_ms`.
fn buffer(samples: &[i16], pts_ms: u64) -> gst::Buffer {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut b = gst::Buffer::from_mut_slice(bytes);
    let r = b.get_mut().unwrap();
    r.set_pts(gst::ClockTime::from_mseconds(pts_ms));
    r.set_duration(gst::ClockTime::from_nseconds(
        samples.len() as u64 * 1_000_000_000 / 16_000,
    ));
    b
}

fn windows(element: &gst::Element) -> u64 {
    element
        .property::<gst::Structure>("stats")
        .get::<u64>("silero-windows")
        .unwrap()
}

#[test]
fn silero_model_lookup_and_stats_during_inference() {
    synth::init();
    let props = corpus::silero_properties();
    let prop = |k: &str| props.iter().find(|(n, _)| *n == k).unwrap().1.clone();
    let (wheel_model, library) = (prop("model-path"), prop("onnxruntime-library"));
    let workdir = std::env::current_dir().unwrap();
    let elsewhere = std::env::temp_dir().join(format!("rtai-silero-lookup-{}", std::process::id()));
    std::fs::create_dir_all(&elsewhere).unwrap();
    assert!(
        !elsewhere.ancestors().any(|d| d.join(".venv/lib").is_dir()),
        "{} must have no .venv above it",
        elsewhere.display()
    );
    let bogus = elsewhere.join("not-a-model.onnx");
    std::fs::write(&bogus, b"this is not an ONNX model").unwrap();
    let copied = elsewhere.join("silero_vad.onnx");
    std::fs::copy(&wheel_model, &copied).unwrap();
    let set_env = |v: Option<&std::path::Path>| {
        // SAFETY: this binary runs one test; no other thread reads the environment now.
        unsafe {
            match v {
                Some(p) => std::env::set_var("RTAI_SILERO_MODEL", p),
                None => std::env::remove_var("RTAI_SILERO_MODEL"),
            }
        }
    };
    let speech =
        corpus::speak("Turn the lights on in the kitchen.", "en", 160).expect("espeak-ng speaks");
    let runs = |element: &gst::Element, h: &mut Harness| {
        assert_eq!(h.push(buffer(&speech, 0)), Ok(gst::FlowSuccess::Ok));
        assert!(windows(element) > 10, "the model ran");
    };

    // 1. Nothing set, run from the crate's directory: the wheel in the workspace's .venv.
    set_env(None);
    let (mut h, element) = start(&library, &[]).expect("the .venv wheel is found");
    runs(&element, &mut h);
    drop(h);

    // 2. $RTAI_SILERO_MODEL wins over the wheel: a bad file there is the file it loads.
    set_env(Some(&bogus));
    let err = refused(start(&library, &[]), "the bogus model is refused");
    assert!(
        err.contains(&format!("cannot load the Silero model {}", bogus.display())),
        "{err}"
    );

    // 3. $RTAI_SILERO_MODEL outside any .venv works on its own.
    std::env::set_current_dir(&elsewhere).unwrap();
    set_env(Some(&copied));
    let (mut h, element) = start(&library, &[]).expect("$RTAI_SILERO_MODEL is found");
    runs(&element, &mut h);
    drop(h);

    // 4. Neither: the error names the variable and where it looked for a .venv.
    set_env(None);
    let err = refused(start(&library, &[]), "no model anywhere");
    for part in [
        "$RTAI_SILERO_MODEL (unset)".to_string(),
        format!(
            "no .venv/lib/python3*/site-packages in {} or its parents",
            elsewhere.display()
        ),
        "pip install --no-deps silero-vad".to_string(),
    ] {
        assert!(err.contains(&part), "{part:?} missing from: {err}");
    }
    let missing = elsewhere.join("missing.onnx");
    set_env(Some(&missing));
    let err = refused(start(&library, &[]), "no model anywhere");
    assert!(
        err.contains(&format!(
            "$RTAI_SILERO_MODEL={} (not a file)",
            missing.display()
        )),
        "{err}"
    );
    // Back in the workspace, the wheel is found again.
    std::env::set_current_dir(&workdir).unwrap();
    set_env(None);
    let (h, _) = start(&library, &[]).expect("the wheel again");
    drop(h);
    let _ = std::fs::remove_dir_all(&elsewhere);

    // 5. The stats lock is not held during inference: 4 minutes of audio in one buffer
    // keep the chain in Silero for a while; `stats` answers meanwhile, promptly, with
    // the window count still rising.
    let (h, element) = start(&library, &[]).unwrap();
    let long: Vec<i16> = speech.iter().copied().cycle().take(16_000 * 240).collect();
    let total_windows = long.len() as u64 / 512;
    let sinkpad = element.static_pad("sink").unwrap();
    let chain = std::thread::spawn(move || {
        let started = Instant::now();
        let flow = sinkpad.chain(buffer(&long, 10_000));
        (flow, started.elapsed())
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut during = Vec::new();
    let mut slowest = Duration::ZERO;
    loop {
        let asked = Instant::now();
        let w = windows(&element);
        let took = asked.elapsed();
        if w >= total_windows || chain.is_finished() {
            break;
        }
        if w > 0 {
            slowest = slowest.max(took);
            if during.last() != Some(&w) {
                during.push(w);
            }
        }
        assert!(Instant::now() < deadline, "inference never ended");
        std::thread::yield_now();
    }
    let (flow, chain_took) = chain.join().unwrap();
    assert_eq!(flow, Ok(gst::FlowSuccess::Ok));
    eprintln!(
        "chain {chain_took:?} for {total_windows} windows; stats read {} times mid-inference, slowest {slowest:?}",
        during.len()
    );
    assert!(
        during.len() >= 3,
        "stats answered only {} times while {total_windows} windows ran ({chain_took:?}): {during:?}",
        during.len()
    );
    assert!(
        slowest < Duration::from_millis(100) && slowest < chain_took / 4,
        "a stats read took {slowest:?} during a {chain_took:?} inference"
    );
    drop(h);
}
