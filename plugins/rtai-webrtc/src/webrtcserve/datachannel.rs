//! The `control` data channel of a send-recv viewer: `rtai_core::control`
//! JSON both ways, one message per data-channel message (the SSE transport's
//! semantics, `rtai_core::control_http`, on another wire).
//!
//! - Outbound: [`ControlChannel::publish`] tracks each message in a
//!   `RetryTracker` (no ack within 50 ms → the same message again, at most 3
//!   times, then `control-undelivered`) and sends it with the channel's
//!   non-blocking `send-string`. Messages published before the channel opened
//!   wait in a bounded backlog and go out when it opens. Retries run on the
//!   shared tokio runtime, never on a streaming thread.
//! - Inbound: bounded parse (size and nesting before serde), per-viewer rate
//!   limit (acks of pending messages are exempt: their rate is ours), dedupe by
//!   id, `{"ack": id}` once the message was handed to the pipeline; a refused
//!   message gets an error reply (`control::error_json`) to this viewer only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use rtai_core::control::{
    self, ControlError, ControlMessage, Deduper, Inbound, RateLimiter, RetryAction, RetryDriven,
    RetryTimer, RetryTracker,
};

/// The `transport` field of this transport's bus messages.
pub const TRANSPORT: &str = "webrtc";
/// The data channel's label.
pub const LABEL: &str = "control";
/// Messages kept for a viewer whose channel is not open yet.
const BACKLOG: usize = 256;

/// What the element does with a channel's events (implemented by webrtcserve).
pub trait ChannelEvents: Send + Sync + 'static {
    /// A viewer sent `msg` (first copy only).
    fn received(&self, viewer: &str, msg: ControlMessage);
    /// A message to `viewer` was acked.
    fn acked(&self, viewer: &str, msg: &ControlMessage, round_trip: Duration, retries: u32);
    /// A message to `viewer` got no ack after `attempts` sends.
    fn undelivered(&self, viewer: &str, msg: &ControlMessage, attempts: u32);
}

struct ChannelState {
    open: bool,
    backlog: Vec<ControlMessage>,
    tracker: RetryTracker<ControlMessage>,
    deduper: Deduper,
    limiter: RateLimiter,
    /// A rate-limited error was sent since the last accepted message: the
    /// excess of a flood is ignored silently (one error per burst).
    limited_reported: bool,
    refused: u64,
}

/// One viewer's `control` channel.
pub struct ControlChannel {
    viewer: String,
    channel: gst_webrtc::WebRTCDataChannel,
    events: Arc<dyn ChannelEvents>,
    state: Mutex<ChannelState>,
    retry: RetryTimer,
    closed: AtomicBool,
}

impl ControlChannel {
    /// Wraps `channel` (created by us, or announced by the viewer) and starts
    /// its retry task on the shared runtime.
    pub fn attach(
        viewer: &str,
        channel: gst_webrtc::WebRTCDataChannel,
        events: Arc<dyn ChannelEvents>,
    ) -> Arc<Self> {
        let open = channel.ready_state() == gst_webrtc::WebRTCDataChannelState::Open;
        let ch = Arc::new(Self {
            viewer: viewer.to_string(),
            channel: channel.clone(),
            events,
            state: Mutex::new(ChannelState {
                open,
                backlog: Vec::new(),
                tracker: RetryTracker::default(),
                deduper: Deduper::default(),
                limiter: RateLimiter::new(
                    control::DEFAULT_RATE,
                    control::DEFAULT_BURST,
                    Instant::now(),
                ),
                limited_reported: false,
                refused: 0,
            }),
            retry: RetryTimer::default(),
            closed: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&ch);
        channel.connect_on_open(move |_| {
            if let Some(ch) = weak.upgrade() {
                ch.opened();
            }
        });
        let weak = Arc::downgrade(&ch);
        channel.connect_on_message_string(move |_, text| {
            if let Some(ch) = weak.upgrade() {
                ch.on_text(text.unwrap_or(""));
            }
        });
        let weak = Arc::downgrade(&ch);
        channel.connect_on_message_data(move |_, data| {
            if let Some(ch) = weak.upgrade() {
                let len = data.map_or(0, |d| d.len());
                ch.refuse(
                    &ControlError::Malformed(format!(
                        "a binary message of {len} bytes: control messages are JSON text"
                    )),
                    None,
                );
            }
        });
        let weak = Arc::downgrade(&ch);
        channel.connect_on_close(move |_| {
            if let Some(ch) = weak.upgrade() {
                ch.close();
            }
        });
        control::spawn_retries(&ch);
        ch
    }

    fn lock(&self) -> MutexGuard<'_, ChannelState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_open(&self) -> bool {
        self.lock().open
    }

    /// Messages sent and not acked yet.
    pub fn pending(&self) -> usize {
        self.lock().tracker.len()
    }

    /// Messages refused so far (bad input, rate).
    pub fn refused(&self) -> u64 {
        self.lock().refused
    }

    /// Non-blocking: webrtcbin queues the text for its SCTP association.
    fn send_text(&self, text: &str) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.channel.send_string_full(Some(text)) {
            gst::debug!(
                super::imp::CAT,
                "viewer {}: control channel send failed: {e}",
                self.viewer
            );
        }
    }

    /// Sends `msg` (or keeps it until the channel opens) and waits for its ack.
    pub fn publish(&self, msg: &ControlMessage) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut st = self.lock();
        if !st.open {
            if st.backlog.len() >= BACKLOG {
                let old = st.backlog.remove(0);
                drop(st);
                self.events.undelivered(&self.viewer, &old, 0);
                st = self.lock();
            }
            st.backlog.push(msg.clone());
            return;
        }
        let evicted = st.tracker.sent(&msg.id, msg.clone(), Instant::now());
        drop(st);
        // Never under our lock (webrtcbin's threads call on_text); the caller
        // serialises publish() so the order on the wire is the order of calls.
        self.send_text(&msg.to_json());
        if let Some(RetryAction::Undelivered { item, attempts, .. }) = evicted {
            self.events.undelivered(&self.viewer, &item, attempts);
        }
        self.retry.notify();
    }

    /// The channel opened: the backlog goes out first, in order (messages
    /// published meanwhile join the backlog until it is empty).
    fn opened(&self) {
        loop {
            let mut st = self.lock();
            let backlog = std::mem::take(&mut st.backlog);
            if backlog.is_empty() {
                st.open = true;
                break;
            }
            let now = Instant::now();
            let mut evicted = Vec::new();
            for msg in &backlog {
                if let Some(RetryAction::Undelivered { item, attempts, .. }) =
                    st.tracker.sent(&msg.id, msg.clone(), now)
                {
                    evicted.push((item, attempts));
                }
            }
            drop(st);
            for msg in &backlog {
                self.send_text(&msg.to_json());
            }
            for (msg, attempts) in evicted {
                self.events.undelivered(&self.viewer, &msg, attempts);
            }
        }
        self.retry.notify();
    }

    /// An error reply to this viewer only.
    fn refuse(&self, err: &ControlError, id: Option<&str>) {
        self.lock().refused += 1;
        gst::debug!(
            super::imp::CAT,
            "viewer {}: control message refused: {err}",
            self.viewer
        );
        self.send_text(&control::error_json(err, id));
    }

    /// One text message from the viewer.
    fn on_text(&self, text: &str) {
        let parsed = control::parse(text.as_bytes());
        let now = Instant::now();
        if let Ok(Inbound::Ack(id)) = &parsed {
            let acked = self.lock().tracker.ack(id, now);
            if let Some(a) = acked {
                self.events
                    .acked(&self.viewer, &a.item, a.round_trip, a.retries);
                return;
            }
        }
        {
            let mut st = self.lock();
            if let Err(e) = st.limiter.check(now) {
                st.refused += 1;
                let first = !st.limited_reported;
                st.limited_reported = true;
                drop(st);
                if first {
                    self.send_text(&control::error_json(&e, None));
                }
                return;
            }
            st.limited_reported = false;
        }
        match parsed {
            Ok(Inbound::Message(msg)) => {
                let first = self.lock().deduper.first_time(&msg.id);
                let ack = control::ack_json(&msg.id);
                if first {
                    self.events.received(&self.viewer, msg);
                }
                self.send_text(&ack);
            }
            // A late copy of an ack, or an id we never sent: ignored.
            Ok(Inbound::Ack(_)) => {}
            Err(e) => {
                let id = id_of(&e, text);
                self.refuse(&e, id.as_deref());
            }
        }
    }

    /// The viewer is going: no more sends, the retry task ends. What was
    /// pending is dropped (the viewer is gone; nothing to report).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.retry.close();
        let mut st = self.lock();
        st.open = false;
        st.tracker.drain();
        st.backlog.clear();
    }
}

impl RetryDriven for ControlChannel {
    fn retry_timer(&self) -> &RetryTimer {
        &self.retry
    }

    /// Resends due messages, reports undelivered ones; the next deadline.
    fn retry_due(&self) -> Option<Instant> {
        let mut st = self.lock();
        let (mut resend, mut undelivered) = (Vec::new(), Vec::new());
        for action in st.tracker.due(Instant::now()) {
            match action {
                RetryAction::Resend { item, .. } => resend.push(item),
                RetryAction::Undelivered { item, attempts, .. } => {
                    undelivered.push((item, attempts))
                }
            }
        }
        let next = st.tracker.next_deadline();
        drop(st);
        for msg in resend {
            self.send_text(&msg.to_json());
        }
        for (msg, attempts) in undelivered {
            self.events.undelivered(&self.viewer, &msg, attempts);
        }
        next
    }
}

/// The id of a refused message, when its JSON is readable (the client can
/// tell which message the error is about).
fn id_of(err: &ControlError, text: &str) -> Option<String> {
    if !matches!(err, ControlError::UnknownType(_) | ControlError::Invalid(_)) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(v.get("id")?.as_str()?.to_string())
}

/// Creates the `control` channel on `webrtcbin` (before its offer).
pub fn create(
    webrtcbin: &gst::Element,
    reliable: bool,
) -> Result<gst_webrtc::WebRTCDataChannel, String> {
    let mut options = gst::Structure::builder("options").field("ordered", reliable);
    if !reliable {
        options = options.field("max-retransmits", 0i32);
    }
    webrtcbin
        .emit_by_name::<Option<gst_webrtc::WebRTCDataChannel>>(
            "create-data-channel",
            &[&LABEL, &options.build()],
        )
        .ok_or_else(|| "webrtcbin made no data channel".to_string())
}

/// Calls `f` with each `control` channel the viewer announces (offer flows).
pub fn on_announced(
    webrtcbin: &gst::Element,
    f: impl Fn(gst_webrtc::WebRTCDataChannel) + Send + Sync + 'static,
) -> glib::SignalHandlerId {
    webrtcbin.connect("on-data-channel", false, move |args| {
        if let Ok(ch) = args[1].get::<gst_webrtc::WebRTCDataChannel>()
            && ch.label().as_deref() == Some(LABEL)
        {
            f(ch);
        }
        None
    })
}
