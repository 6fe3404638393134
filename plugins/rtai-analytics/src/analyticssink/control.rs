//! analyticssink's control messages over SSE (issue 19): the element's
//! `listen` server mounts `rtai_core::control_http`'s routes. Control events
//! reaching a sink pad (segment start/commit/end/cancel, `rtai-control`) go to
//! the SSE clients; their acks post `control-ack` (transport `sse`), missing
//! acks end in a `control-undelivered` warning; a message a client POSTs goes
//! into the pipeline as an upstream `rtai-control` / segment event on the sink
//! pad its `stream` names (every sink pad when it names none) and is posted as
//! `control-received`.

use std::sync::Arc;
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use rtai_core::control::ControlMessage;
use rtai_core::control_http::{ControlHandler, ControlHub, HubConfig};

use super::CAT;

struct SinkControl {
    element: glib::WeakRef<gst::Element>,
}

impl ControlHandler for SinkControl {
    fn received(&self, msg: ControlMessage) {
        let Some(el) = self.element.upgrade() else {
            return;
        };
        let _ = el.post_message(msg.received_message(&el, "sse"));
        let pads = el.sink_pads();
        let named: Vec<&gst::Pad> = pads
            .iter()
            .filter(|p| msg.stream.as_deref() == Some(p.name().as_str()))
            .collect();
        let targets: Vec<&gst::Pad> = if named.is_empty() {
            pads.iter().collect()
        } else {
            named
        };
        let event = msg.to_upstream_event();
        for pad in targets {
            if !pad.push_event(event.clone()) {
                gst::debug!(CAT, obj = pad, "nobody upstream handled control {}", msg.id);
            }
        }
    }

    fn acked(&self, msg: &ControlMessage, round_trip: Duration, retries: u32) {
        if let Some(el) = self.element.upgrade() {
            let _ = el.post_message(msg.ack_message(&el, "sse", round_trip, retries));
        }
    }

    fn undelivered(&self, msg: &ControlMessage, attempts: u32) {
        if let Some(el) = self.element.upgrade() {
            msg.post_undelivered(&el, "sse", attempts);
        }
    }
}

/// The hub of one running element.
pub(super) fn hub(element: &gst::Element) -> Arc<ControlHub> {
    ControlHub::new(
        Arc::new(SinkControl {
            element: element.downgrade(),
        }),
        HubConfig::default(),
    )
}

/// Publishes `event` to the SSE clients if it is a control event.
pub(super) fn publish(hub: &ControlHub, event: &gst::EventRef, stream: &str) {
    if let Some(msg) = ControlMessage::from_event(event, Some(stream)) {
        hub.publish(msg);
    }
}
