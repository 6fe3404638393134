//! Shared helpers: an ingest pipeline (rtmpserversrc ! flvdemux ! h264parse !
//! avdec_h264 ! appsink) that records decoded frames and bus messages, and
//! real ffmpeg publishers.

#![allow(dead_code)]

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

pub fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtailive::plugin_register_static().unwrap();
    });
}

#[derive(Default)]
pub struct Seen {
    pub pts: Vec<gst::ClockTime>,
    pub widths: Vec<i32>,
    pub messages: Vec<gst::Structure>,
    /// EOS events that reached the video appsink.
    pub eos: usize,
}

pub struct Ingest {
    pub pipeline: gst::Pipeline,
    pub src: gst::Element,
    pub seen: Arc<Mutex<Seen>>,
}

impl Ingest {
    /// `props` are set on rtmpserversrc before the pipeline starts (not through
    /// parse-launch, which logs property values).
    pub fn start(props: &[(&str, &dyn ToValue)]) -> Ingest {
        init();
        let pipeline = gst::parse::launch(
            "rtmpserversrc name=src listen=127.0.0.1:0 ! flvdemux name=d \
             d.video ! queue name=vq ! h264parse ! avdec_h264 ! appsink name=v sync=false async=false \
             d.audio ! queue ! fakesink sync=false async=false",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let src = pipeline.by_name("src").unwrap();
        for (name, value) in props {
            src.set_property_from_value(name, &value.to_value());
        }
        Self::with_pipeline(pipeline, src)
    }

    pub fn with_pipeline(pipeline: gst::Pipeline, src: gst::Element) -> Ingest {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let appsink = pipeline
            .by_name("v")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let s = seen.clone();
        let e = seen.clone();
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .eos(move |_| e.lock().unwrap().eos += 1)
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let mut seen = s.lock().unwrap();
                    if let Some(pts) = sample.buffer().and_then(|b| b.pts()) {
                        seen.pts.push(pts);
                    }
                    if let Some(w) = sample
                        .caps()
                        .and_then(|c| c.structure(0))
                        .and_then(|st| st.get::<i32>("width").ok())
                    {
                        seen.widths.push(w);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let bus = pipeline.bus().unwrap();
        let s = seen.clone();
        bus.set_sync_handler(move |_, msg| {
            match msg.view() {
                gst::MessageView::Element(e) => {
                    if let Some(st) = e.structure()
                        && st.name().starts_with("rtmp-")
                    {
                        s.lock().unwrap().messages.push(st.to_owned());
                    }
                }
                gst::MessageView::Error(e) => {
                    eprintln!("pipeline error: {} ({:?})", e.error(), e.debug());
                }
                _ => {}
            }
            gst::BusSyncReply::Drop
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        Ingest {
            pipeline,
            src,
            seen,
        }
    }

    pub fn port(&self) -> u16 {
        self.src.property::<u32>("bound-port") as u16
    }

    pub fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.port())
    }

    pub fn frames(&self) -> usize {
        self.seen.lock().unwrap().pts.len()
    }

    /// Waits until `f` holds, up to `timeout`; true if it did.
    pub fn wait(&self, timeout: Duration, f: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f(&self.seen.lock().unwrap()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        f(&self.seen.lock().unwrap())
    }

    pub fn messages(&self, name: &str) -> Vec<gst::Structure> {
        self.seen
            .lock()
            .unwrap()
            .messages
            .iter()
            .filter(|m| m.name() == name)
            .cloned()
            .collect()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

pub fn assert_monotonic(pts: &[gst::ClockTime]) {
    for w in pts.windows(2) {
        assert!(
            w[1] > w[0],
            "timestamps not monotonic: {} then {}",
            w[0],
            w[1]
        );
    }
}

/// ffmpeg encoding `seconds` of 30 fps test video (+ a sine) with libx264/aac and
/// publishing it in real time to `url`.
pub fn ffmpeg_publish(url: &str, seconds: f64, size: &str) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=30"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "30",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg runs (Debian package ffmpeg)")
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ffmpeg did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}
