//! grpcsink → grpcsrc over loopback in real pipelines: what is sent arrives
//! byte-exact with timestamps, metas and events in order; OOB cancel overtakes
//! queued buffers; upstream events travel upstream; reconnects neither
//! duplicate nor hide loss; bad peers are refused while the server serves on.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use gst::prelude::*;
use gst_video::VideoRegionOfInterestMeta;
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
    let pipeline = gst::parse::launch(&format!(
        "grpcsrc name=src listen=127.0.0.1:0 {props} ! fakesink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
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
    let pipeline = gst::parse::launch(&format!(
        "{desc} ! grpcsink name=sink uri=http://127.0.0.1:{port} {sink_props}"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
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
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=audio/x-raw,format=S16LE,layout=interleaved,rate=16000,channels=1 \
         ! grpcsink name=sink uri=http://127.0.0.1:{port}"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sent = record(
        &pipeline
            .by_name("sink")
            .unwrap()
            .static_pad("sink")
            .unwrap(),
        true,
    );
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
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
    let pipeline = gst::parse::launch(&format!("appsrc name=src format=time caps=text/x-raw,format=utf8 ! grpcsink uri=http://127.0.0.1:{port}"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
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
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=audio/x-raw,format=S16LE,layout=interleaved,rate=16000,channels=1 ! grpcsink name=sink uri=http://127.0.0.1:{port}"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let appsrc = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
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
        let _ = socket.read_to_end(&mut reply); // the server answers (GOAWAY) or closes; it must not hang
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

#[test]
fn receiver_restart_mid_stream_reconnects_without_duplicates_and_reports_the_gap() {
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
    let sender = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=text/x-raw,format=utf8 ! grpcsink name=sink uri=http://127.0.0.1:{port} max-inflight-bytes=1024"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let appsrc = sender
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
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
    let b = gst::parse::launch(&format!(
        "grpcsrc name=src listen=127.0.0.1:{port} ! fakesink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
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
    let pipeline = gst::parse::launch(
        "videotestsrc num-buffers=12 ! video/x-raw,format=GRAY8,width=16,height=8,framerate=10/1 ! grpcsink name=sink mode=server listen=127.0.0.1:0",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
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
    let sender = gst::parse::launch(
        "videotestsrc num-buffers=20 ! video/x-raw,width=64,height=48 ! grpcsink name=sink mode=server listen=127.0.0.1:0",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sent = record(
        &sender.by_name("sink").unwrap().static_pad("sink").unwrap(),
        true,
    );
    sender.set_state(gst::State::Playing).unwrap();
    let port = sender
        .by_name("sink")
        .unwrap()
        .property::<u32>("bound-port");
    let rx = gst::parse::launch(&format!(
        "grpcsrc mode=client uri=http://127.0.0.1:{port} ! fakesink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
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

#[test]
fn compressed_streams_arrive_intact() {
    for compression in ["gzip", "zstd"] {
        let rx = receiver("compression=gzip");
        assert_carried(
            &rx,
            "videotestsrc num-buffers=10 pattern=ball ! video/x-raw,width=64,height=48",
            &format!("compression={compression}"),
        );
    }
}
