//! send-recv audio: each viewer's microphone (Opus) is depayloaded and
//! decoded in its own small bin (`talk-<viewer>`) and mixed into one live
//! stream on the `audio_src` pad:
//!
//! ```text
//! audiotestsrc is-live wave=silence ─┐
//! talk-ws-1: rtpopusdepay ! opusdec ! audioconvert ! audioresample ! caps ! queue ─┤ audiomixer ! caps → audio_src
//! talk-whep-2: ... ─────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The live silence source keeps the output continuous (proper timestamps
//! before anyone talks and after everyone left); `audiomixer` (a live
//! aggregator) never waits for a talker longer than its latency, so a viewer
//! that stops sending or leaves cannot stall the output. `min-upstream-latency`
//! is set up front to the talkers' jitter-buffer latency plus a margin: talkers
//! join after the mixer started and their buffers must not come late.

use gst::prelude::*;

/// Output format of `audio_src` (and of every talker before the mixer).
pub fn caps() -> gst::Caps {
    gst::Caps::builder("audio/x-raw")
        .field("format", "S16LE")
        .field("layout", "interleaved")
        .field("rate", 48_000i32)
        .field("channels", 1i32)
        .build()
}

/// What the mixer allows on top of the jitter buffer (decode, resample, queue).
const MARGIN: gst::ClockTime = gst::ClockTime::from_mseconds(40);

fn make(factory: &str, name: Option<&str>) -> Result<gst::Element, String> {
    let mut b = gst::ElementFactory::make(factory);
    if let Some(n) = name {
        b = b.name(n);
    }
    b.build()
        .map_err(|_| format!("the `{factory}` element is missing"))
}

/// The silence source and the mixer inside webrtcserve.
pub struct Mixer {
    pub elements: Vec<gst::Element>,
    pub mixer: gst::Element,
    /// The output (target of the `audio_src` ghost pad).
    pub src: gst::Pad,
}

impl Mixer {
    /// Adds the mixer chain to `bin`; `jitter` is the talkers' jitter-buffer latency.
    pub fn build(bin: &gst::Bin, jitter: gst::ClockTime) -> Result<Self, String> {
        let silence = make("audiotestsrc", Some("talk-silence"))?;
        silence.set_property("is-live", true);
        silence.set_property_from_str("wave", "silence");
        // 10 ms buffers: the mixer's output granularity follows.
        silence.set_property("samplesperbuffer", 480i32);
        let silence_caps = make("capsfilter", Some("talk-silence-caps"))?;
        silence_caps.set_property("caps", caps());
        let mixer = make("audiomixer", Some("talk-mixer"))?;
        mixer.set_property_from_str("start-time-selection", "first");
        mixer.set_property("min-upstream-latency", (jitter + MARGIN).nseconds());
        let out_caps = make("capsfilter", Some("talk-caps"))?;
        out_caps.set_property("caps", caps());
        let elements = vec![silence, silence_caps, mixer.clone(), out_caps.clone()];
        bin.add_many(&elements)
            .map_err(|e| format!("cannot add the audio mixer: {e}"))?;
        gst::Element::link_many(&elements)
            .map_err(|e| format!("cannot link the audio mixer: {e}"))?;
        for e in &elements {
            e.sync_state_with_parent().map_err(|e| e.to_string())?;
        }
        Ok(Self {
            elements,
            mixer,
            src: out_caps
                .static_pad("src")
                .expect("capsfilter has a src pad"),
        })
    }

    pub fn remove(&self, bin: &gst::Bin) {
        for e in &self.elements {
            let _ = e.set_state(gst::State::Null);
        }
        let _ = bin.remove_many(&self.elements);
    }
}

/// One viewer's decoding branch.
pub struct Talker {
    pub bin: gst::Bin,
    mixer_pad: Option<gst::Pad>,
    /// The probe that swallows the audio while there is no mixer.
    dropping: Option<gst::PadProbeId>,
}

impl Talker {
    /// Decodes the Opus of `rtp_pad` (a webrtcbin src pad) into the mixer; with
    /// no mixer (`audio_src` not requested) the decoded audio is dropped.
    pub fn add(
        parent: &gst::Bin,
        id: &str,
        rtp_pad: &gst::Pad,
        mixer: Option<&gst::Element>,
    ) -> Result<Self, String> {
        let bin = gst::Bin::builder().name(format!("talk-{id}")).build();
        let depay = make("rtpopusdepay", None)?;
        let dec = make("opusdec", None)?;
        // Packet loss concealment: a lost packet becomes a guess, not a gap.
        dec.set_property("plc", true);
        let convert = make("audioconvert", None)?;
        let resample = make("audioresample", None)?;
        let filter = make("capsfilter", None)?;
        filter.set_property("caps", caps());
        let queue = make("queue", None)?;
        queue.set_property("max-size-time", 200_000_000u64);
        queue.set_property("max-size-buffers", 0u32);
        queue.set_property("max-size-bytes", 0u32);
        queue.set_property_from_str("leaky", "downstream");
        let chain = [&depay, &dec, &convert, &resample, &filter, &queue];
        bin.add_many(chain).map_err(|e| e.to_string())?;
        gst::Element::link_many(chain).map_err(|e| format!("cannot link the decoder: {e}"))?;
        let sink = gst::GhostPad::with_target(&depay.static_pad("sink").unwrap())
            .map_err(|e| e.to_string())?;
        let src = gst::GhostPad::with_target(&queue.static_pad("src").unwrap())
            .map_err(|e| e.to_string())?;
        bin.add_pad(&sink).map_err(|e| e.to_string())?;
        bin.add_pad(&src).map_err(|e| e.to_string())?;
        parent.add(&bin).map_err(|e| e.to_string())?;
        let mut talker = Self {
            bin: bin.clone(),
            mixer_pad: None,
            dropping: Some(drop_everything(src.upcast_ref())),
        };
        if let Some(m) = mixer {
            talker.attach(m)?;
        }
        bin.sync_state_with_parent().map_err(|e| e.to_string())?;
        rtp_pad
            .link(&sink)
            .map_err(|e| format!("cannot link webrtcbin's audio: {e}"))?;
        Ok(talker)
    }

    /// Feeds the mixer (`audio_src` requested now or at the start).
    pub fn attach(&mut self, mixer: &gst::Element) -> Result<(), String> {
        if self.mixer_pad.is_some() {
            return Ok(());
        }
        let src = self
            .bin
            .static_pad("src")
            .ok_or("the talker has no src pad")?;
        let pad = mixer
            .request_pad_simple("sink_%u")
            .ok_or("the audio mixer gave no pad")?;
        src.link(&pad)
            .map_err(|e| format!("cannot link the talker to the mixer: {e}"))?;
        if let Some(id) = self.dropping.take() {
            src.remove_probe(id);
        }
        self.mixer_pad = Some(pad);
        Ok(())
    }

    /// Unlinks and removes the branch; the mixer goes on with the others.
    pub fn remove(&self, parent: &gst::Bin, mixer: Option<&gst::Element>) {
        let _ = self.bin.set_state(gst::State::Null);
        if let Some(pad) = &self.mixer_pad {
            if let Some(src) = self.bin.static_pad("src") {
                let _ = src.unlink(pad);
            }
            if let Some(m) = mixer {
                m.release_request_pad(pad);
            }
        }
        let _ = parent.remove(&self.bin);
    }

    /// The mixer goes away (`audio_src` released): drop what this talker decodes.
    pub fn detach(&mut self, mixer: &gst::Element) {
        if let (Some(pad), Some(src)) = (self.mixer_pad.take(), self.bin.static_pad("src")) {
            self.dropping = Some(drop_everything(&src));
            let _ = src.unlink(&pad);
            mixer.release_request_pad(&pad);
        }
    }
}

/// A probe that makes an unlinked pad swallow its data (pushes return OK).
fn drop_everything(pad: &gst::Pad) -> gst::PadProbeId {
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        |_, _| gst::PadProbeReturn::Drop,
    )
    .expect("a probe on a pad")
}
