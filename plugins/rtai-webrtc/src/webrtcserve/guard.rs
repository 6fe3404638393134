//! A private pass-through element between a viewer's queue and its
//! `webrtcbin`: it keeps a fatal flow return of that viewer (`not-negotiated`,
//! `error`, `not-linked`, …) from travelling back through the queue and the
//! shared `tee` to the source, where it would stop every viewer. The first
//! such return is reported once through the callback (webrtcserve then drops
//! the viewer) and the guard swallows the viewer's buffers from then on.
//! Events and queries pass through unchanged (the pads proxy caps, allocation
//! and scheduling), so upstream key-unit requests still reach the encoder.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "webrtcserve-guard",
        gst::DebugColorFlags::empty(),
        Some("webrtcserve's per-viewer flow guard"),
    )
});

type OnFatal = Box<dyn Fn(gst::FlowError) + Send + Sync>;

glib::wrapper! {
    pub struct FlowGuard(ObjectSubclass<imp::FlowGuard>) @extends gst::Element, gst::Object;
}

impl FlowGuard {
    pub fn new(name: &str) -> Self {
        glib::Object::builder().property("name", name).build()
    }

    /// Called once, from the viewer's streaming thread, on the first fatal flow return.
    pub fn set_on_fatal(&self, f: impl Fn(gst::FlowError) + Send + Sync + 'static) {
        *self.imp().on_fatal.lock().unwrap() = Some(Box::new(f));
    }

    /// True once the viewer's branch returned a fatal flow.
    pub fn failed(&self) -> bool {
        self.imp().failed.load(Ordering::SeqCst)
    }
}

/// GStreamer's name of a flow return (`not-negotiated`, …).
pub fn flow_name(e: gst::FlowError) -> &'static str {
    match e {
        gst::FlowError::NotLinked => "not-linked",
        gst::FlowError::Flushing => "flushing",
        gst::FlowError::Eos => "eos",
        gst::FlowError::NotNegotiated => "not-negotiated",
        gst::FlowError::Error => "error",
        gst::FlowError::NotSupported => "not-supported",
        _ => "custom-error",
    }
}

mod imp {
    use super::*;

    pub struct FlowGuard {
        sinkpad: gst::Pad,
        srcpad: gst::Pad,
        pub(super) failed: AtomicBool,
        pub(super) on_fatal: Mutex<Option<OnFatal>>,
    }

    impl FlowGuard {
        fn chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
            if self.failed.load(Ordering::SeqCst) {
                return Ok(gst::FlowSuccess::Ok);
            }
            match self.srcpad.push(buffer) {
                Ok(s) => Ok(s),
                // Shutting down (the branch is being removed or the pipeline stops).
                Err(gst::FlowError::Flushing) => Err(gst::FlowError::Flushing),
                Err(gst::FlowError::Eos) => Ok(gst::FlowSuccess::Ok),
                Err(e) => {
                    if !self.failed.swap(true, Ordering::SeqCst) {
                        gst::warning!(
                            CAT,
                            imp = self,
                            "viewer branch returned {}: isolated from the shared stream",
                            flow_name(e)
                        );
                        if let Some(f) = self.on_fatal.lock().unwrap().as_ref() {
                            f(e);
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                }
            }
        }
    }

    #[glib::object_subclass]
    impl ObjectSubclass for FlowGuard {
        const NAME: &'static str = "GstRtaiWebRtcFlowGuard";
        type Type = super::FlowGuard;
        type ParentType = gst::Element;

        fn with_class(klass: &Self::Class) -> Self {
            let sinkpad = gst::Pad::builder_from_template(&klass.pad_template("sink").unwrap())
                .chain_function(|_pad, parent, buffer| {
                    FlowGuard::catch_panic_pad_function(
                        parent,
                        || Err(gst::FlowError::Error),
                        |guard| guard.chain(buffer),
                    )
                })
                .flags(
                    gst::PadFlags::PROXY_CAPS
                        | gst::PadFlags::PROXY_ALLOCATION
                        | gst::PadFlags::PROXY_SCHEDULING,
                )
                .build();
            let srcpad = gst::Pad::builder_from_template(&klass.pad_template("src").unwrap())
                .flags(
                    gst::PadFlags::PROXY_CAPS
                        | gst::PadFlags::PROXY_ALLOCATION
                        | gst::PadFlags::PROXY_SCHEDULING,
                )
                .build();
            Self {
                sinkpad,
                srcpad,
                failed: AtomicBool::new(false),
                on_fatal: Mutex::new(None),
            }
        }
    }

    impl ObjectImpl for FlowGuard {
        fn constructed(&self) {
            self.parent_constructed();
            let obj = self.obj();
            obj.add_pad(&self.sinkpad).unwrap();
            obj.add_pad(&self.srcpad).unwrap();
        }
    }

    impl GstObjectImpl for FlowGuard {}

    impl ElementImpl for FlowGuard {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "webrtcserve flow guard",
                    "Generic",
                    "Keeps one viewer's fatal flow return away from the shared stream",
                    "rtai contributors",
                )
            });
            Some(&*META)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
                let caps = gst::Caps::new_any();
                vec![
                    gst::PadTemplate::new(
                        "sink",
                        gst::PadDirection::Sink,
                        gst::PadPresence::Always,
                        &caps,
                    )
                    .unwrap(),
                    gst::PadTemplate::new(
                        "src",
                        gst::PadDirection::Src,
                        gst::PadPresence::Always,
                        &caps,
                    )
                    .unwrap(),
                ]
            });
            TEMPLATES.as_ref()
        }
    }
}
