//! grpcsink → grpcsrc over loopback in real pipelines: what is sent arrives
//! byte-exact with timestamps, metas and events in order; OOB cancel overtakes
//! queued buffers; upstream events travel upstream; reconnects neither
//! duplicate nor hide loss; bad peers are refused while the server serves on.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use gst::prelude::*;
use gst_video::VideoRegionOfInterestMeta;
use rtai_core::testing::{element, launch};
use rtai_core::{SegmentEvent, SegmentIdMeta};

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstrtaigrpc::plugin_register_static().unwrap();
    });
}

/// What passed a pad, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Buffer {
        data: Vec<u8>,
        pts: Option<gst::ClockTime>,
        dts: Option<gst::ClockTime>,
        duration: Option<gst::ClockTime>,
        flags: gst::BufferFlags,
        segment_id: Option<u64>,
        rois: Vec<String>,
    },
    Custom(String),
    Caps(String),
    Eos,
}

fn record(pad: &gst::Pad, serialized_only: bool) -> Arc<Mutex<Vec<Seen>>> {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let out = seen.clone();
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let mut out = out.lock().unwrap();
            match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => out.push(Seen::Buffer {
                    data: b.map_readable().unwrap().to_vec(),
                    pts: b.pts(),
                    dts: b.dts(),
                    duration: b.duration(),
                    // DISCONT is the receiver's to set (first buffer, gaps); compare the rest.
                    flags: b.flags() - gst::BufferFlags::DISCONT,
                    segment_id: SegmentIdMeta::get(b),
                    rois: b
                        .iter_meta::<VideoRegionOfInterestMeta>()
                        .map(|r| {
                            format!(
                                "{}:{:?}:{}",
                                r.roi_type(),
                                r.rect(),
                                r.params()
                                    .map(|p| p.to_string())
                                    .collect::<Vec<_>>()
                                    .join("|")
                            )
                        })
                        .collect(),
                }),
                Some(gst::PadProbeData::Event(e)) => match e.view() {
                    gst::EventView::Eos(_) => out.push(Seen::Eos),
                    gst::EventView::Caps(c) => out.push(Seen::Caps(c.caps().to_string())),
                    gst::EventView::CustomDownstream(_) => {
                        out.push(Seen::Custom(e.structure().unwrap().name().to_string()))
                    }
                    gst::EventView::CustomDownstreamOob(_) if !serialized_only => {
                        out.push(Seen::Custom(e.structure().unwrap().name().to_string()))
                    }
                    _ => {}
                },
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
    seen
}

struct Receiver {
    pipeline: gst::Pipeline,
    src: gst::Element,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn receiver(props: &str) -> Receiver {
    init();
    let pipeline = launch(&format!(
        "grpcsrc name=src listen=127.0.0.1:0 {props} ! fakesink name=sink sync=false"
    ));
    let src = pipeline.by_name("src").unwrap();
    let seen = record(
        &pipeline
            .by_name("sink")
            .unwrap()
            .static_pad("sink")
            .unwrap(),
        false,
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    Receiver {
        pipeline,
        src,
        seen,
    }
}

impl Receiver {
    fn port(&self) -> u32 {
        self.src.property::<u32>("bound-port")
    }

    fn wait_eos(&self) {
        let msg = self
            .pipeline
            .bus()
            .unwrap()
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("EOS reaches the receiver");
        if let gst::MessageView::Error(e) = msg.view() {
            panic!("receiver error: {} {:?}", e.error(), e.debug());
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Runs `desc ! grpcsink` to EOS and returns what entered grpcsink.
fn send(desc: &str, port: u32, sink_props: &str) -> Vec<Seen> {
    let pipeline = launch(&format!(
        "{desc} ! grpcsink name=sink uri=http://127.0.0.1:{port} {sink_props}"
    ));
    let seen = record(
        &pipeline
            .by_name("sink")
            .unwrap()
            .static_pad("sink")
            .unwrap(),
        true,
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the sender reaches EOS");
    pipeline.set_state(gst::State::Null).unwrap();
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("sender error: {} {:?}", e.error(), e.debug());
    }
    seen.lock().unwrap().clone()
}

/// Sends `desc` through grpcsink to `rx` and checks everything arrived as sent.
fn assert_carried(rx: &Receiver, desc: &str, sink_props: &str) {
    let sent = send(desc, rx.port(), sink_props);
    rx.wait_eos();
    assert_eq!(
        only_data(&rx.seen.lock().unwrap()),
        only_data(&sent),
        "{desc} {sink_props}"
    );
}

/// A read that ended because the peer closed the connection (FIN, or RST when our
/// unread bytes were still in its socket), not because the read timed out.
fn closed(read: &std::io::Result<usize>) -> bool {
    match read {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Whether `bytes` parse as a run of HTTP/2 frames (9-byte headers, known types).
fn is_http2_frames(mut bytes: &[u8]) -> bool {
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        if bytes[3] > 9 || bytes.len() < 9 + len {
            return false;
        }
        bytes = &bytes[9 + len..];
    }
    bytes.is_empty()
}

/// Reads a call's replies until it ends; the status it ended with.
async fn ending_status(
    mut incoming: tonic::codec::Streaming<gstrtaigrpc::wire::proto::Upstream>,
) -> Option<tonic::Status> {
    loop {
        match incoming.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => return None,
            Err(s) => return Some(s),
        }
    }
}

/// The numbers of the buffers seen (PTS in 10 ms steps).
fn buffer_numbers(seen: &[Seen]) -> Vec<u64> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Buffer { pts, .. } => pts.map(|p| p.mseconds() / 10),
            _ => None,
        })
        .collect()
}

fn only_data(seen: &[Seen]) -> Vec<Seen> {
    seen.iter()
        .filter(|s| !matches!(s, Seen::Caps(_)))
        .cloned()
        .collect()
}

#[test]
fn raw_video_arrives_byte_exact_with_timestamps() {
    let rx = receiver("");
    let sent = send(
        "videotestsrc num-buffers=30 pattern=ball ! video/x-raw,format=I420,width=320,height=240,framerate=30/1",
        rx.port(),
        "",
    );
    rx.wait_eos();
    let got = rx.seen.lock().unwrap().clone();
    assert_eq!(only_data(&got), only_data(&sent));
    assert_eq!(
        sent.iter()
            .filter(|s| matches!(s, Seen::Buffer { .. }))
            .count(),
        30
    );
    assert!(
        got.iter().any(
            |s| matches!(s, Seen::Caps(c) if c.contains("I420") && c.contains("width=(int)320"))
        )
    );
}

#[test]
fn h264_arrives_byte_exact_with_dts_and_flags() {
    let rx = receiver("");
    let sent = send(
        "videotestsrc num-buffers=30 ! video/x-raw,width=320,height=240 ! x264enc tune=zerolatency key-int-max=10 ! h264parse",
        rx.port(),
        "",
    );
    rx.wait_eos();
    let got = rx.seen.lock().unwrap().clone();
    assert_eq!(only_data(&got), only_data(&sent));
    assert!(
        got.iter()
            .any(|s| matches!(s, Seen::Caps(c) if c.contains("video/x-h264")))
    );
}

#[test]
fn audio_with_segment_metas_rois_and_events_in_order() {
    init();
    let rx = receiver("");
    let port = rx.port();
    let pipeline = launch(&format!(
        "appsrc name=src format=time caps=audio/x-raw,format=S16LE,layout=interleaved,rate=16000,channels=1 \
         ! grpcsink name=sink uri=http://127.0.0.1:{port}"
    ));
    let sent = record(
        &pipeline
            .by_name("sink")
            .unwrap()
            .static_pad("sink")
            .unwrap(),
        true,
    );
    let src = element::<gst_app::AppSrc>(&pipeline, "src");
    pipeline.set_state(gst::State::Playing).unwrap();
    for i in 0..20u64 {
        if i == 5 {
            let start = SegmentEvent::Start {
                id: 7,
                running_time: gst::ClockTime::from_mseconds(50),
                lookback: gst::ClockTime::ZERO,
            };
            assert!(src.send_event(start.to_event()));
        }
        if i == 15 {
            assert!(src.send_event(SegmentEvent::Commit { id: 7 }.to_event()));
        }
        let mut buffer = gst::Buffer::from_slice(
            (0..320)
                .map(|b| (b as u64 * 7 + i) as u8)
                .collect::<Vec<_>>(),
        );
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(10 * i));
            b.set_duration(gst::ClockTime::from_mseconds(10));
            if (5..15).contains(&i) {
                SegmentIdMeta::set(b, 7);
                let mut roi = VideoRegionOfInterestMeta::add(b, "speaker", (i as u32, 2, 3, 4));
                roi.add_param(
                    gst::Structure::builder("detection")
                        .field("confidence", 0.5f64 + i as f64 / 100.0)
                        .build(),
                );
            }
        }
        src.push_buffer(buffer).unwrap();
    }
    src.end_of_stream().unwrap();
    pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Eos])
        .expect("sender EOS");
    pipeline.set_state(gst::State::Null).unwrap();
    rx.wait_eos();
    let sent = only_data(&sent.lock().unwrap());
    let got = only_data(&rx.seen.lock().unwrap());
    assert_eq!(got, sent);
    let names: Vec<&Seen> = got
        .iter()
        .filter(|s| matches!(s, Seen::Custom(_) | Seen::Eos))
        .collect();
    assert_eq!(
        names,
        vec![
            &Seen::Custom("rtai-segment-start".into()),
            &Seen::Custom("rtai-segment-commit".into()),
            &Seen::Eos
        ]
    );
    assert!(
        got.iter().any(
            |s| matches!(s, Seen::Buffer { segment_id: Some(7), rois, .. } if !rois.is_empty())
        )
    );
}

#[test]
fn text_arrives() {
    init();
    let rx = receiver("");
    let port = rx.port();
    let pipeline = launch(&format!(
        "appsrc name=src format=time caps=text/x-raw,format=utf8 ! grpcsink uri=http://127.0.0.1:{port}"
    ));
    let src = element::<gst_app::AppSrc>(&pipeline, "src");
    pipeline.set_state(gst::State::Playing).unwrap();
    for (i, text) in ["turn the lights on", "ünïcödé ✓", ""].iter().enumerate() {
        let mut b = gst::Buffer::from_slice(text.as_bytes().to_vec());
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_seconds(i as u64));
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    rx.wait_eos();
    pipeline.set_state(gst::State::Null).unwrap();
    let texts: Vec<String> = rx
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Seen::Buffer { data, .. } => Some(String::from_utf8(data.clone()).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["turn the lights on", "ünïcödé ✓", ""]);
}

#[test]
fn oob_cancel_overtakes_queued_buffers_and_upstream_events_go_upstream() {
    init();
    let rx = receiver("");
    // Hold the receiver's buffers so they queue up behind a blocked pad.
    let src_pad = rx.src.static_pad("src").unwrap();
    let (blocked_tx, blocked_rx) = mpsc::channel();
    let hold = src_pad
        .add_probe(
            gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER,
            move |_, _| {
                let _ = blocked_tx.send(());
                gst::PadProbeReturn::Ok
            },
        )
        .unwrap();
    let port = rx.port();
    let pipeline = launch(&format!(
        "appsrc name=src format=time caps=audio/x-raw,format=S16LE,layout=interleaved,rate=16000,channels=1 ! grpcsink name=sink uri=http://127.0.0.1:{port}"
    ));
    let appsrc = element::<gst_app::AppSrc>(&pipeline, "src");
    let (upstream_tx, upstream_rx) = mpsc::channel();
    appsrc.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::EVENT_UPSTREAM,
        move |_, info| {
            if let Some(ev) = info.event()
                && ev.type_() == gst::EventType::CustomUpstream
            {
                let _ = upstream_tx.send(ev.structure().unwrap().name().to_string());
            }
            gst::PadProbeReturn::Ok
        },
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    for i in 0..10u64 {
        let mut b = gst::Buffer::from_slice(vec![i as u8; 320]);
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(10 * i));
        SegmentIdMeta::set(b.get_mut().unwrap(), 3);
        appsrc.push_buffer(b).unwrap();
    }
    blocked_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the first buffer reaches the receiver's pad");
    assert!(
        appsrc.send_event(
            SegmentEvent::Cancel {
                id: 3,
                reason: "false start".into()
            }
            .to_event()
        )
    );
    // The cancel reaches the receiver's downstream while its buffers are still held.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !rx
        .seen
        .lock()
        .unwrap()
        .contains(&Seen::Custom("rtai-segment-cancel".into()))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the cancel did not overtake the queued buffers"
        );
        std::thread::yield_now();
    }
    assert!(
        !rx.seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| matches!(s, Seen::Buffer { .. })),
        "no buffer got ahead of the cancel"
    );
    src_pad.remove_probe(hold);

    // An upstream custom event from the receiver's side reaches the sender's source.
    let sink_pad = rx
        .pipeline
        .by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap();
    assert!(
        sink_pad.push_event(gst::event::CustomUpstream::new(gst::Structure::new_empty(
            "please-send-keyframe"
        )))
    );
    assert_eq!(
        upstream_rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        "please-send-keyframe"
    );

    appsrc.end_of_stream().unwrap();
    rx.wait_eos();
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(
        rx.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| matches!(s, Seen::Buffer { .. }))
            .count(),
        10,
        "cancel does not drop: that is downstream's job"
    );
}

fn sender_error(desc: &str, port: u32, props: &str) -> String {
    let pipeline = gst::parse::launch(&format!(
        "{desc} ! grpcsink uri=http://127.0.0.1:{port} {props}"
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the sender ends");
    pipeline.set_state(gst::State::Null).unwrap();
    match msg.view() {
        gst::MessageView::Error(e) => format!("{} {:?}", e.error(), e.debug()),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn wrong_token_is_refused_without_revealing_tokens_and_the_server_serves_on() {
    let rx = receiver("auth-token=s3cret-receiver");
    let text = sender_error(
        "videotestsrc num-buffers=5",
        rx.port(),
        "auth-token=guess-sender reconnect=false",
    );
    assert!(text.contains("Unauthenticated"), "{text}");
    assert!(text.contains("wrong auth token"), "{text}");
    assert!(
        !text.contains("s3cret") && !text.contains("guess-sender"),
        "a token leaked: {text}"
    );
    // The right token still works afterwards.
    assert_carried(
        &rx,
        "videotestsrc num-buffers=5",
        "auth-token=s3cret-receiver",
    );
}

#[test]
fn garbage_wrong_version_and_oversized_messages_are_refused_and_the_server_serves_on() {
    use gstrtaigrpc::wire::{PROTOCOL_VERSION, proto};
    let rx = receiver("max-message-size=65536");
    let port = rx.port();
    // 1. Random bytes on the socket.
    {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let _ = socket.write_all(&garbage);
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reply = Vec::new();
        // The server closes the connection (after its SETTINGS and a GOAWAY, if any): an
        // end of stream within the timeout, not a timeout and not a hang.
        let read = socket.read_to_end(&mut reply);
        assert!(
            closed(&read),
            "the server closes a garbage connection: {read:?}"
        );
        assert!(
            reply.is_empty() || is_http2_frames(&reply),
            "only HTTP/2 frames come back: {:?}",
            &reply[..reply.len().min(64)]
        );
        // HTTP/1.1 (what a browser, and so a DNS-rebinding page, speaks) is not served at all.
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let body = [0u8, 0, 0, 0, 0];
        let request = format!(
            "POST /rtai.stream.v1.StreamBridge/Push HTTP/1.1\r\nHost: attacker.example:{port}\r\n\
             Content-Type: application/grpc\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        // The server may close as soon as it sees no HTTP/2 preface, so a write can meet a
        // reset socket under load: that is the behaviour under test, not a failure.
        let _ = socket.write_all(request.as_bytes());
        let _ = socket.write_all(&body);
        let mut reply = Vec::new();
        let read = socket.read_to_end(&mut reply);
        assert!(closed(&read), "closed, not hanging: {read:?}");
        assert!(
            !String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 2"),
            "an HTTP/1.1 request is not served: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let hello = |version| proto::Downstream {
            seq: 0,
            body: Some(proto::downstream::Body::Hello(proto::Hello {
                protocol_version: version,
                stream_id: "t".into(),
                last_seq: 0,
                acked_seq: 0,
                control_acks: false,
            })),
        };
        // 2. A wrong protocol version.
        let mut client = proto::stream_bridge_client::StreamBridgeClient::connect(format!(
            "http://127.0.0.1:{port}"
        ))
        .await
        .unwrap();
        let status = client
            .push(tokio_stream::iter(vec![hello(99)]))
            .await
            .expect_err("version 99 is refused");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            status.message().contains("protocol version 99"),
            "{}",
            status.message()
        );
        // 3. A message larger than max-message-size.
        let big = proto::Downstream {
            seq: 1,
            body: Some(proto::downstream::Body::Buffer(proto::Buffer {
                data: vec![0; 200_000],
                pts: u64::MAX,
                dts: u64::MAX,
                duration: u64::MAX,
                ..Default::default()
            })),
        };
        let response = client
            .push(tokio_stream::iter(vec![hello(PROTOCOL_VERSION), big]))
            .await;
        let status = match response {
            Err(s) => s,
            Ok(r) => ending_status(r.into_inner())
                .await
                .expect("an oversized message is refused"),
        };
        assert!(
            matches!(
                status.code(),
                tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::Internal
            ),
            "{status:?}"
        );
        // 4. Not starting with Hello.
        let caps = proto::Downstream {
            seq: 0,
            body: Some(proto::downstream::Body::Caps("video/x-raw".into())),
        };
        let status = client
            .push(tokio_stream::iter(vec![caps]))
            .await
            .expect_err("no Hello");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    });
    // Still serving: a real sender gets through.
    assert_carried(
        &rx,
        "videotestsrc num-buffers=5 ! video/x-raw,width=32,height=24",
        "",
    );
}

#[test]
fn malformed_caps_from_a_client_end_its_call_with_invalid_argument() {
    use gstrtaigrpc::wire::{PROTOCOL_VERSION, proto};
    let rx = receiver("");
    let port = rx.port();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = proto::stream_bridge_client::StreamBridgeClient::connect(format!(
            "http://127.0.0.1:{port}"
        ))
        .await
        .unwrap();
        let msgs = vec![
            proto::Downstream {
                seq: 0,
                body: Some(proto::downstream::Body::Hello(proto::Hello {
                    protocol_version: PROTOCOL_VERSION,
                    stream_id: "bad".into(),
                    last_seq: 0,
                    acked_seq: 0,
                    control_acks: false,
                })),
            },
            proto::Downstream {
                seq: 0,
                body: Some(proto::downstream::Body::Caps(
                    "video/x-raw,width=[1,5]".into(),
                )),
            },
        ];
        let incoming = client
            .push(tokio_stream::iter(msgs))
            .await
            .unwrap()
            .into_inner();
        let status = ending_status(incoming)
            .await
            .expect("malformed caps are refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("not fixed"),
            "{}",
            status.message()
        );
    });
    let warning = rx
        .pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Warning],
        )
        .expect("a warning on the receiver's bus");
    let gst::MessageView::Warning(w) = warning.view() else {
        unreachable!()
    };
    assert!(w.debug().unwrap_or_default().contains("not fixed"));
}

/// A receiver restart: grpcsink resends what no receiver confirmed, so there is
/// no sequence gap here; B reports where it joined (warning, DISCONT). The GAP
/// event path (a real jump in seq) is `a_sequence_gap_after_a_reconnect_...`.
#[test]
fn receiver_restart_mid_stream_reconnects_without_duplicates_and_reports_where_it_joined() {
    init();
    // Receiver A holds its buffers (downstream blocked) so some are received but never pushed.
    let a = receiver("");
    let port = a.port();
    let a_pad = a.src.static_pad("src").unwrap();
    let (blocked_tx, blocked_rx) = mpsc::channel();
    a_pad.add_probe(
        gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER,
        move |_, info| {
            let pts = info
                .buffer()
                .and_then(|b| b.pts())
                .map(|p| p.mseconds())
                .unwrap_or(0);
            if pts >= 50 {
                let _ = blocked_tx.send(());
                return gst::PadProbeReturn::Ok;
            }
            gst::PadProbeReturn::Pass
        },
    );
    let sender = launch(&format!(
        "appsrc name=src format=time caps=text/x-raw,format=utf8 ! grpcsink name=sink uri=http://127.0.0.1:{port} max-inflight-bytes=1024"
    ));
    let appsrc = element::<gst_app::AppSrc>(&sender, "src");
    sender.set_state(gst::State::Playing).unwrap();
    let push = |i: u64| {
        let mut b = gst::Buffer::from_slice(format!("{i:04}").into_bytes());
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(10 * i));
        b.get_mut()
            .unwrap()
            .set_duration(gst::ClockTime::from_mseconds(10));
        appsrc.push_buffer(b).unwrap();
    };
    for i in 0..8 {
        push(i);
    }
    blocked_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("receiver A holds buffer 5");
    // Kill A while it holds buffers 5.. that it never pushed.
    let a_got = buffer_numbers(&a.seen.lock().unwrap());
    let a_seen = a.seen.clone();
    drop(a_pad);
    let a_src = a.src.clone();
    drop(a);
    drop(a_src);
    // Receiver B on the same port.
    init();
    let b = launch(&format!(
        "grpcsrc name=src listen=127.0.0.1:{port} ! fakesink name=sink sync=false"
    ));
    let b_seen = record(
        &b.by_name("sink").unwrap().static_pad("sink").unwrap(),
        false,
    );
    let discont: Arc<Mutex<Vec<u64>>> = Arc::default();
    let d = discont.clone();
    b.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buf) = info.buffer()
                && buf.flags().contains(gst::BufferFlags::DISCONT)
            {
                d.lock().unwrap().push(buf.pts().unwrap().mseconds() / 10);
            }
            gst::PadProbeReturn::Ok
        });
    b.set_state(gst::State::Playing).unwrap();
    for i in 8..20 {
        push(i);
    }
    appsrc.end_of_stream().unwrap();
    let bus = b.bus().unwrap();
    let mut warned = false;
    loop {
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(60),
                &[
                    gst::MessageType::Eos,
                    gst::MessageType::Error,
                    gst::MessageType::Warning,
                ],
            )
            .expect("receiver B reaches EOS");
        match msg.view() {
            gst::MessageView::Warning(w) => {
                warned |= w.error().to_string().contains("previous receiver")
            }
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => break,
        }
    }
    sender.set_state(gst::State::Null).unwrap();
    b.set_state(gst::State::Null).unwrap();
    let b_got = buffer_numbers(&b_seen.lock().unwrap());
    drop(a_seen);
    assert!(
        a_got.iter().all(|i| !b_got.contains(i)),
        "duplicates: A {a_got:?} B {b_got:?}"
    );
    assert!(
        b_got.windows(2).all(|w| w[0] < w[1]),
        "B in order without repeats: {b_got:?}"
    );
    assert_eq!(
        b_got.last(),
        Some(&19),
        "the stream continued to the end: {b_got:?}"
    );
    let mut all: Vec<u64> = a_got.iter().chain(&b_got).copied().collect();
    all.sort();
    assert_eq!(
        all,
        (0..20).collect::<Vec<_>>(),
        "what A had not pushed was resent to B: nothing lost, nothing twice"
    );
    assert!(warned, "the gap was reported on B's bus");
    assert_eq!(
        discont.lock().unwrap().first(),
        b_got.first(),
        "B's first buffer after the gap is DISCONT"
    );
}

/// The venv Python that scripts/setup.sh prepares (grpcio, grpcio-tools).
fn python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("RTAI_PYTHON") {
        return p.into();
    }
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|d| d.join(".venv/bin/python"))
        .find(|p| p.is_file())
        .expect("no .venv/bin/python: run scripts/setup.sh (installs grpcio and grpcio-tools)")
}

fn python_peer(args: &[&str]) -> std::process::Child {
    std::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/grpc_peer.py"
        ))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python runs")
}

fn python_summary(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the Python peer failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn python_grpcio_client_pulls_a_stream_from_grpcsink() {
    init();
    let pipeline = launch(
        "videotestsrc num-buffers=12 ! video/x-raw,format=GRAY8,width=16,height=8,framerate=10/1 ! grpcsink name=sink mode=server listen=127.0.0.1:0",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let port = pipeline
        .by_name("sink")
        .unwrap()
        .property::<u32>("bound-port");
    let summary = python_summary(python_peer(&["pull", &format!("127.0.0.1:{port}")]));
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    assert!(summary.contains("\"buffers\": 12"), "{summary}");
    assert!(summary.contains("\"bytes\": 1536"), "{summary}");
    assert!(summary.contains("GRAY8"), "{summary}");
    assert!(
        summary.contains("\"pts\": [0, 100000000, 200000000"),
        "{summary}"
    );
    assert!(summary.contains("\"eos\": true"), "{summary}");
}

#[test]
fn python_grpcio_client_pushes_a_stream_to_grpcsrc() {
    let rx = receiver("");
    let summary = python_summary(python_peer(&[
        "push",
        &format!("127.0.0.1:{}", rx.port()),
        "5",
    ]));
    rx.wait_eos();
    assert!(summary.contains("\"acked_seq\": 6"), "{summary}");
    let texts: Vec<(String, Option<gst::ClockTime>)> = rx
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Seen::Buffer { data, pts, .. } => {
                Some((String::from_utf8(data.clone()).unwrap(), *pts))
            }
            _ => None,
        })
        .collect();
    assert_eq!(texts.len(), 5);
    assert_eq!(
        texts[3],
        (
            "from python 3".to_string(),
            Some(gst::ClockTime::from_seconds(3))
        )
    );
}

#[test]
fn receiver_can_dial_a_sender_in_server_mode() {
    init();
    let sender = launch(
        "videotestsrc num-buffers=20 ! video/x-raw,width=64,height=48 ! grpcsink name=sink mode=server listen=127.0.0.1:0",
    );
    let sent = record(
        &sender.by_name("sink").unwrap().static_pad("sink").unwrap(),
        true,
    );
    sender.set_state(gst::State::Playing).unwrap();
    let port = sender
        .by_name("sink")
        .unwrap()
        .property::<u32>("bound-port");
    let rx = launch(&format!(
        "grpcsrc mode=client uri=http://127.0.0.1:{port} ! fakesink name=sink sync=false"
    ));
    let got = record(
        &rx.by_name("sink").unwrap().static_pad("sink").unwrap(),
        false,
    );
    rx.set_state(gst::State::Playing).unwrap();
    let msg = rx
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    sender
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Eos])
        .expect("sender EOS");
    rx.set_state(gst::State::Null).unwrap();
    sender.set_state(gst::State::Null).unwrap();
    assert_eq!(
        only_data(&got.lock().unwrap()),
        only_data(&sent.lock().unwrap())
    );
}

#[test]
fn tls_carries_the_stream_and_a_plain_client_is_refused() {
    init();
    let dir = std::env::temp_dir().join(format!("rtai-grpc-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    let rx = receiver(&format!(
        "tls-certificate={} tls-key={}",
        cert_path.display(),
        key_path.display()
    ));
    // Plain HTTP/2 to a TLS server: refused with a clear error.
    let text = sender_error("videotestsrc num-buffers=3", rx.port(), "reconnect=false");
    assert!(
        text.contains("127.0.0.1") && text.contains("TLS"),
        "the error names the peer and the likely cause: {text}"
    );
    // TLS, verified against the self-signed certificate.
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=10 ! video/x-raw,width=32,height=24 ! grpcsink name=sink uri=https://127.0.0.1:{} tls-ca={}",
        rx.port(),
        cert_path.display()
    ))
    .unwrap();
    let sent = record(
        &pipeline
            .downcast_ref::<gst::Bin>()
            .unwrap()
            .by_name("sink")
            .unwrap()
            .static_pad("sink")
            .unwrap(),
        true,
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    rx.wait_eos();
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(
        only_data(&rx.seen.lock().unwrap()),
        only_data(&sent.lock().unwrap())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn live_receiver_reports_network_plus_sender_latency() {
    let rx = receiver("is-live=true latency=20");
    let (first_tx, first_rx) = mpsc::channel();
    rx.pipeline
        .by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let _ = first_tx.send(());
            gst::PadProbeReturn::Ok
        });
    let sender = gst::parse::launch(&format!(
        "audiotestsrc is-live=true samplesperbuffer=800 num-buffers=50 ! audio/x-raw,rate=16000,channels=1 ! grpcsink uri=http://127.0.0.1:{}",
        rx.port()
    ))
    .unwrap();
    sender.set_state(gst::State::Playing).unwrap();
    first_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a buffer arrives");
    let mut q = gst::query::Latency::new();
    assert!(rx.src.static_pad("src").unwrap().query(&mut q));
    let (live, min, _) = q.result();
    sender.set_state(gst::State::Null).unwrap();
    assert!(live);
    // 20 ms for the network plus the sender's 50 ms (800 samples at 16 kHz).
    assert!(
        min >= gst::ClockTime::from_mseconds(70),
        "min latency {min}"
    );
}

/// Compression really happens: the bytes on the wire (counted by a relay between
/// sender and receiver) shrink, and the stream arrives intact.
#[test]
fn compressed_streams_arrive_intact_and_smaller_on_the_wire() {
    let mut wire = Vec::new();
    for compression in ["none", "gzip", "zstd"] {
        let rx = receiver("");
        let (proxy, count) = counting_proxy(rx.port());
        let desc = "videotestsrc num-buffers=10 pattern=ball ! video/x-raw,width=160,height=120";
        let sent = send(desc, proxy as u32, &format!("compression={compression}"));
        rx.wait_eos();
        assert_eq!(
            only_data(&rx.seen.lock().unwrap()),
            only_data(&sent),
            "{compression}"
        );
        wire.push(count.load(std::sync::atomic::Ordering::SeqCst));
    }
    let payload = 10 * 160 * 120 * 3 / 2;
    assert!(
        wire[0] >= payload,
        "uncompressed carries the payload: {wire:?}"
    );
    assert!(
        wire[1] * 3 < wire[0] && wire[2] * 3 < wire[0],
        "gzip and zstd shrink a mostly black picture to under a third: {wire:?}"
    );
}

use gstrtaigrpc::wire::{NONE, PROTOCOL_VERSION, proto};

/// A hand-driven gRPC call to a grpcsrc (Push) or a grpcsink (Pull), for peers that
/// do what grpcsink/grpcsrc never would (ignore credit, skip numbers, race a replacement).
struct RawCall<Out> {
    tx: tokio::sync::mpsc::UnboundedSender<Out>,
    incoming: mpsc::Receiver<Result<IncomingMsg, tonic::Status>>,
    _runtime: tokio::runtime::Runtime,
}

enum IncomingMsg {
    Up(proto::Upstream),
    Down(proto::Downstream),
}

fn raw_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn hello(stream_id: &str, last_seq: u64, acked_seq: u64) -> proto::Hello {
    proto::Hello {
        protocol_version: PROTOCOL_VERSION,
        stream_id: stream_id.into(),
        last_seq,
        acked_seq,
        control_acks: false,
    }
}

/// Opens a Push call to a grpcsrc on `port`; Hello goes first.
fn raw_push(port: u32, hello: proto::Hello) -> RawCall<proto::Downstream> {
    let runtime = raw_runtime();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(proto::Downstream {
        seq: 0,
        body: Some(proto::downstream::Body::Hello(hello)),
    })
    .unwrap();
    let (in_tx, incoming) = mpsc::channel();
    runtime.spawn(async move {
        let mut client = match proto::stream_bridge_client::StreamBridgeClient::connect(format!(
            "http://127.0.0.1:{port}"
        ))
        .await
        {
            Ok(c) => c,
            Err(e) => return drop(in_tx.send(Err(tonic::Status::unavailable(e.to_string())))),
        };
        let mut stream = match client
            .push(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return drop(in_tx.send(Err(s))),
        };
        loop {
            match stream.message().await {
                Ok(Some(m)) => {
                    if in_tx.send(Ok(IncomingMsg::Up(m))).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(s) => return drop(in_tx.send(Err(s))),
            }
        }
    });
    RawCall {
        tx,
        incoming,
        _runtime: runtime,
    }
}

/// Opens a Pull call to a grpcsink in server mode on `port` (with a bearer token if given).
fn raw_pull(port: u32, token: Option<&str>) -> RawCall<proto::Upstream> {
    let runtime = raw_runtime();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(proto::Upstream {
        body: Some(proto::upstream::Body::Hello(hello("raw", 0, 0))),
    })
    .unwrap();
    let (in_tx, incoming) = mpsc::channel();
    let token = token.map(|t| format!("Bearer {t}"));
    runtime.spawn(async move {
        let mut client = match proto::stream_bridge_client::StreamBridgeClient::connect(format!(
            "http://127.0.0.1:{port}"
        ))
        .await
        {
            Ok(c) => c,
            Err(e) => return drop(in_tx.send(Err(tonic::Status::unavailable(e.to_string())))),
        };
        let mut request =
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", t.parse().unwrap());
        }
        let mut stream = match client.pull(request).await {
            Ok(r) => r.into_inner(),
            Err(s) => return drop(in_tx.send(Err(s))),
        };
        loop {
            match stream.message().await {
                Ok(Some(m)) => {
                    if in_tx.send(Ok(IncomingMsg::Down(m))).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(s) => return drop(in_tx.send(Err(s))),
            }
        }
    });
    RawCall {
        tx,
        incoming,
        _runtime: runtime,
    }
}

impl<Out> RawCall<Out> {
    /// The status the call ended with (None: ended cleanly or still open at the deadline).
    fn ending_status(&self, within: Duration) -> Option<tonic::Status> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            match self.incoming.recv_timeout(left) {
                Ok(Ok(_)) => continue,
                Ok(Err(s)) => return Some(s),
                Err(_) => return None,
            }
        }
    }
}

impl RawCall<proto::Downstream> {
    fn send(&self, seq: u64, body: proto::downstream::Body) {
        let _ = self.tx.send(proto::Downstream {
            seq,
            body: Some(body),
        });
    }

    fn start_text_stream(&self) {
        self.send(
            0,
            proto::downstream::Body::Caps("text/x-raw, format=(string)utf8".into()),
        );
        let segment = gst::FormattedSegment::<gst::ClockTime>::new();
        self.send(
            0,
            proto::downstream::Body::Segment(gstrtaigrpc::wire::segment_to_wire(
                segment.upcast_ref(),
            )),
        );
    }

    fn text(&self, seq: u64, text: &str, pts_ms: u64) {
        self.send(
            seq,
            proto::downstream::Body::Buffer(proto::Buffer {
                data: text.as_bytes().to_vec(),
                pts: pts_ms * 1_000_000,
                dts: NONE,
                duration: 10_000_000,
                offset: NONE,
                offset_end: NONE,
                ..Default::default()
            }),
        );
    }

    fn eos(&self, seq: u64) {
        self.send(
            seq,
            proto::downstream::Body::Event(proto::Event {
                kind: proto::event::Kind::Eos as i32,
                timestamp: NONE,
                duration: NONE,
                ..Default::default()
            }),
        );
    }

    /// Waits for an Upstream message matching `pick`.
    fn upstream<T>(
        &self,
        within: Duration,
        mut pick: impl FnMut(&proto::Upstream) -> Option<T>,
    ) -> Option<T> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            match self.incoming.recv_timeout(left) {
                Ok(Ok(IncomingMsg::Up(m))) => {
                    if let Some(t) = pick(&m) {
                        return Some(t);
                    }
                }
                Ok(Ok(IncomingMsg::Down(_))) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}

fn texts(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Buffer { data, .. } => Some(String::from_utf8_lossy(data).into_owned()),
            _ => None,
        })
        .collect()
}

/// Waits until `cond` holds, polling the element state, or panics with `what` at the deadline.
fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stats_u64(element: &gst::Element, field: &str) -> u64 {
    element
        .property::<gst::Structure>("stats")
        .get::<u64>(field)
        .unwrap_or_else(|e| panic!("stats field {field}: {e}"))
}

/// The sender's latency arrives: a live grpcsrc posts a Latency message, the pipeline's
/// latency (network + sender) goes back to the sender as Upstream.latency, and a
/// "none" (u64::MAX) or huge min latency from the wire never panics the LATENCY query.
#[test]
fn live_receiver_posts_latency_sends_it_upstream_and_survives_none_and_huge_values() {
    let rx = receiver("is-live=true latency=20");
    // A sink that syncs asks for the pipeline latency (the one sent upstream).
    rx.pipeline
        .by_name("sink")
        .unwrap()
        .set_property("sync", true);
    let call = raw_push(rx.port(), hello("lat", 0, 0));
    call.start_text_stream();
    let latency = |min: u64| {
        proto::downstream::Body::Latency(proto::Latency {
            live: true,
            min,
            max: NONE,
        })
    };
    call.send(0, latency(50_000_000));
    call.text(1, "one", 0);
    let bus = rx.pipeline.bus().unwrap();
    // (fakesink posts one too, when sync changes; only grpcsrc's counts here.)
    loop {
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(10),
                &[gst::MessageType::Latency],
            )
            .expect("grpcsrc posts a Latency message when the sender's latency arrives");
        if msg.src() == Some(rx.src.upcast_ref::<gst::Object>()) {
            break;
        }
    }
    let told = call
        .upstream(Duration::from_secs(10), |m| match &m.body {
            Some(proto::upstream::Body::Latency(l)) => Some(*l),
            _ => None,
        })
        .expect("the receiver's latency goes upstream");
    assert!(told.live);
    let deadline = rx
        .pipeline
        .by_name("sink")
        .unwrap()
        .property::<u64>("processing-deadline");
    assert_eq!(
        told.min,
        70_000_000 + deadline,
        "20 ms network + 50 ms sender + the sink's processing deadline"
    );
    let query = || {
        let mut q = gst::query::Latency::new();
        assert!(
            rx.src.static_pad("src").unwrap().query(&mut q),
            "the LATENCY query is answered"
        );
        q.result().1
    };
    // "none" is no latency; a huge value saturates instead of overflowing.
    call.send(0, latency(NONE));
    call.text(2, "two", 10);
    wait_until("buffer two", Duration::from_secs(10), || {
        texts(&rx.seen.lock().unwrap()).len() == 2
    });
    assert_eq!(query(), gst::ClockTime::from_mseconds(20));
    call.send(0, latency(NONE - 1));
    call.text(3, "three", 20);
    wait_until("buffer three", Duration::from_secs(10), || {
        texts(&rx.seen.lock().unwrap()).len() == 3
    });
    assert!(query() >= gst::ClockTime::from_mseconds(20));
    // The element did not panic: it still carries data.
    call.text(4, "four", 30);
    call.eos(5);
    rx.wait_eos();
    assert_eq!(
        texts(&rx.seen.lock().unwrap()),
        ["one", "two", "three", "four"]
    );
}

#[test]
fn a_second_sender_after_eos_is_refused_with_a_clear_status() {
    let rx = receiver("");
    assert_carried(
        &rx,
        "videotestsrc num-buffers=5 ! video/x-raw,width=32,height=24",
        "",
    );
    let started = std::time::Instant::now();
    let text = sender_error(
        "videotestsrc num-buffers=3 ! video/x-raw,width=32,height=24",
        rx.port(),
        "reconnect=false",
    );
    assert!(
        text.contains("FailedPrecondition") && text.contains("EOS"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once, not after a timeout: {:?}",
        started.elapsed()
    );
}

/// A sender that ignores credit cannot grow the receiver's queue past
/// max-queue-bytes (events count too): the receiver stops reading (HTTP/2 flow
/// control pushes back) and nothing is dropped once downstream moves again.
#[test]
fn the_receiver_queue_is_bounded_against_a_sender_that_ignores_credit() {
    const BOUND: u64 = 1024 * 1024;
    let rx = receiver(&format!("max-queue-bytes={BOUND}"));
    let pad = rx.src.static_pad("src").unwrap();
    let hold = pad
        .add_probe(gst::PadProbeType::BLOCK_DOWNSTREAM, |_, _| {
            gst::PadProbeReturn::Ok
        })
        .unwrap();
    let call = raw_push(rx.port(), hello("flood", 0, 0));
    call.start_text_stream();
    let mut seq = 0;
    // 4,000 small events, then 200 buffers of 64 KiB: 12.5 MiB, none of it credited.
    for i in 0..4000 {
        seq += 1;
        call.send(
            seq,
            proto::downstream::Body::Event(proto::Event {
                kind: proto::event::Kind::CustomDownstream as i32,
                structure: format!("flood, i=(int){i}"),
                timestamp: NONE,
                duration: NONE,
                ..Default::default()
            }),
        );
    }
    for i in 0..200u64 {
        seq += 1;
        call.send(
            seq,
            proto::downstream::Body::Buffer(proto::Buffer {
                data: vec![i as u8; 64 * 1024],
                pts: i * 10_000_000,
                dts: NONE,
                duration: 10_000_000,
                offset: NONE,
                offset_end: NONE,
                ..Default::default()
            }),
        );
    }
    call.eos(seq + 1);
    wait_until("the queue fills", Duration::from_secs(10), || {
        stats_u64_or_items(&rx.src) >= 100
    });
    // Watch the queue for a second while downstream is blocked: it must stay bounded.
    let mut most = (0u64, 0u32);
    let watch_until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < watch_until {
        let s = rx.src.property::<gst::Structure>("stats");
        most.0 = most.0.max(s.get::<u64>("queued-bytes").unwrap_or(u64::MAX));
        most.1 = most.1.max(s.get::<u32>("queued").unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
    pad.remove_probe(hold);
    rx.wait_eos();
    let got = rx.seen.lock().unwrap();
    assert_eq!(
        got.iter()
            .filter(|s| matches!(s, Seen::Buffer { .. }))
            .count(),
        200,
        "nothing dropped"
    );
    assert_eq!(
        got.iter()
            .filter(|s| matches!(s, Seen::Custom(n) if n == "flood"))
            .count(),
        4000,
        "no event dropped"
    );
    assert!(
        most.0 <= BOUND + 64 * 1024 + 1024,
        "queued bytes bounded: {most:?}"
    );
    assert!(
        (most.1 as u64) <= BOUND / 256 + 1,
        "events count against the bound: {most:?}"
    );
}

fn stats_u64_or_items(src: &gst::Element) -> u64 {
    src.property::<gst::Structure>("stats")
        .get::<u32>("queued")
        .unwrap() as u64
}

/// A second call with the same stream id replaces the first; the first call's
/// messages are refused from then on, on every path.
#[test]
fn a_replaced_call_cannot_enqueue_anything() {
    let rx = receiver("");
    let a = raw_push(rx.port(), hello("same", 0, 0));
    a.start_text_stream();
    a.text(1, "A1", 0);
    wait_until("A1 arrives", Duration::from_secs(10), || {
        texts(&rx.seen.lock().unwrap()) == ["A1"]
    });
    let b = raw_push(rx.port(), hello("same", 1, 0));
    b.upstream(Duration::from_secs(10), |m| {
        matches!(m.body, Some(proto::upstream::Body::Hello(_))).then_some(())
    })
    .expect("B is attached");
    a.text(2, "A2", 10);
    let status = a
        .ending_status(Duration::from_secs(10))
        .expect("the replaced call is ended when it sends");
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    b.text(2, "B2", 10);
    b.text(3, "B3", 20);
    b.eos(4);
    rx.wait_eos();
    assert_eq!(texts(&rx.seen.lock().unwrap()), ["A1", "B2", "B3"]);
}

#[test]
fn grpcsink_server_needs_the_token_for_pull_and_warns_when_a_receiver_takes_over() {
    init();
    let pipeline = launch(
        "appsrc name=src format=time caps=text/x-raw,format=utf8 \
         ! grpcsink name=sink mode=server listen=127.0.0.1:0 auth-token=s3cret",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let port = pipeline
        .by_name("sink")
        .unwrap()
        .property::<u32>("bound-port");
    let thief = raw_pull(port, None);
    let status = thief
        .ending_status(Duration::from_secs(10))
        .expect("a Pull without the token is refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let wrong = raw_pull(port, Some("guess"));
    assert_eq!(
        wrong.ending_status(Duration::from_secs(10)).unwrap().code(),
        tonic::Code::Unauthenticated
    );
    let hello_of = |call: &RawCall<proto::Upstream>| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline
                .checked_duration_since(std::time::Instant::now())
                .expect("Hello from grpcsink");
            if let Ok(Ok(IncomingMsg::Down(m))) = call.incoming.recv_timeout(left)
                && matches!(m.body, Some(proto::downstream::Body::Hello(_)))
            {
                return;
            }
        }
    };
    let first = raw_pull(port, Some("s3cret"));
    hello_of(&first);
    assert!(
        pipeline
            .bus()
            .unwrap()
            .pop_filtered(&[gst::MessageType::Warning])
            .is_none(),
        "the first receiver replaces nobody"
    );
    let second = raw_pull(port, Some("s3cret"));
    hello_of(&second);
    let warning = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Warning],
        )
        .expect("the takeover is logged on the bus");
    let gst::MessageView::Warning(w) = warning.view() else {
        unreachable!()
    };
    assert!(w.error().to_string().contains("took over"), "{}", w.error());
    pipeline.set_state(gst::State::Null).unwrap();
}

/// A sender that comes back after losing messages (a real jump in seq): the
/// receiver warns, pushes a GAP event over the missing time, marks the next
/// buffer DISCONT and counts the loss.
#[test]
fn a_sequence_gap_after_a_reconnect_becomes_a_gap_event_and_a_discont() {
    let rx = receiver("");
    // (what, timestamp, duration)
    type Timed = (String, Option<gst::ClockTime>, Option<gst::ClockTime>);
    let events: Arc<Mutex<Vec<Timed>>> = Arc::default();
    let e = events.clone();
    rx.pipeline
        .by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => e.lock().unwrap().push((
                        format!(
                            "buffer{}",
                            if b.flags().contains(gst::BufferFlags::DISCONT) {
                                " DISCONT"
                            } else {
                                ""
                            }
                        ),
                        b.pts(),
                        b.duration(),
                    )),
                    Some(gst::PadProbeData::Event(ev)) => {
                        if let gst::EventView::Gap(g) = ev.view() {
                            let (ts, dur) = g.get();
                            e.lock().unwrap().push(("gap".into(), Some(ts), dur));
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    let first = raw_push(rx.port(), hello("lossy", 0, 0));
    first.start_text_stream();
    first.text(1, "1", 0);
    first.text(2, "2", 10);
    wait_until("two buffers", Duration::from_secs(10), || {
        texts(&rx.seen.lock().unwrap()).len() == 2
    });
    drop(first);
    // The sender comes back having lost messages 3 and 4.
    let second = raw_push(rx.port(), hello("lossy", 4, 2));
    second.start_text_stream();
    second.text(5, "5", 40);
    second.eos(6);
    let bus = rx.pipeline.bus().unwrap();
    let mut warned = None;
    loop {
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(30),
                &[
                    gst::MessageType::Eos,
                    gst::MessageType::Error,
                    gst::MessageType::Warning,
                ],
            )
            .expect("EOS");
        match msg.view() {
            gst::MessageView::Warning(w) => warned = Some(w.error().to_string()),
            gst::MessageView::Error(e) => panic!("{}", e.error()),
            _ => break,
        }
    }
    let ms = |v: u64| Some(gst::ClockTime::from_mseconds(v));
    let mut events = events.lock().unwrap().clone();
    // The very first buffer may be DISCONT (the start of a stream); not the subject here.
    events[0].0 = events[0].0.replace(" DISCONT", "");
    assert_eq!(
        events,
        vec![
            ("buffer".to_string(), ms(0), ms(10)),
            ("buffer".to_string(), ms(10), ms(10)),
            ("gap".to_string(), ms(20), ms(20)),
            ("buffer DISCONT".to_string(), ms(40), ms(10)),
        ]
    );
    assert!(
        warned
            .as_deref()
            .is_some_and(|w| w.contains("2 stream messages were lost")),
        "{warned:?}"
    );
    assert_eq!(stats_u64(&rx.src, "gaps"), 1);
    assert_eq!(stats_u64(&rx.src, "lost-messages"), 2);
}

/// A TCP relay that counts the bytes going from the client to `target`.
fn counting_proxy(target: u32) -> (u16, Arc<std::sync::atomic::AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target as u16)) else {
                return;
            };
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_read, mut c_write) = (server, client);
            let counted = counted.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 16384];
                while let Ok(n) = c_read.read(&mut buf) {
                    if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    counted.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
                }
                let _ = s_write.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_read, &mut c_write);
                let _ = c_write.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, count)
}
