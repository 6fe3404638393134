//! rtav1pay / rtav1depay: packets respect the MTU and the payload format's
//! marker and N bits; pay → depay → decode is bit-exact; over real UDP with a
//! lost packet the receiver drops the damaged frames and recovers at the next
//! key frame.

mod common;

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};

use common::*;
use gst::prelude::*;
use gst_rtp::prelude::*;
use rtai_core::testing::{element, launch};

const MTU: u32 = 200;

#[test]
fn packets_fit_the_mtu_and_carry_marker_and_n_bits() {
    let clip = clip(320, 240, 20, "I420", "ball");
    let (caps, units) = encode(
        &clip,
        "rtav1enc max-key-frame-interval=10 min-key-frame-interval=10",
    );
    let (rtp_caps, packets) = run_to_appsink(
        &format!("appsrc name=src ! rtav1pay mtu={MTU} ! appsink name=sink sync=false"),
        &[("src", caps, units.clone())],
    );
    let s = rtp_caps.structure(0).unwrap();
    assert_eq!(s.get::<&str>("encoding-name").unwrap(), "AV1");
    assert_eq!(s.get::<i32>("clock-rate").unwrap(), 90000);
    let mut frames: Vec<Vec<(bool, u8)>> = Vec::new();
    let mut last_ts = None;
    for p in &packets {
        assert!(p.size() as u32 <= MTU, "packet of {} bytes", p.size());
        let rtp = gst_rtp::RTPBuffer::from_buffer_readable(p).unwrap();
        if last_ts != Some(rtp.timestamp()) {
            frames.push(Vec::new());
            last_ts = Some(rtp.timestamp());
        }
        frames
            .last_mut()
            .unwrap()
            .push((rtp.is_marker(), rtp.payload().unwrap()[0]));
    }
    assert_eq!(
        frames.len(),
        units.len(),
        "one RTP timestamp per temporal unit"
    );
    for (i, packets) in frames.iter().enumerate() {
        let markers: Vec<bool> = packets.iter().map(|(m, _)| *m).collect();
        assert_eq!(
            markers.iter().filter(|m| **m).count(),
            1,
            "frame {i}: one marker"
        );
        assert!(
            markers.last().unwrap(),
            "frame {i}: the marker is on the last packet"
        );
        // N (0x08) on the first packet of a coded video sequence: every key frame here.
        let n = packets[0].1 & 0x08 != 0;
        assert_eq!(n, i % 10 == 0, "frame {i}: N bit");
        // Z on every packet but the first of a unit that spans packets; Y on every but the last.
        for (j, (_, header)) in packets.iter().enumerate() {
            assert_eq!(header & 0x80 != 0, j > 0, "frame {i} packet {j}: Z");
            assert_eq!(
                header & 0x40 != 0,
                j + 1 < packets.len(),
                "frame {i} packet {j}: Y"
            );
        }
    }
    let sizes: Vec<usize> = frames.iter().map(|f| f.len()).collect();
    assert!(
        sizes.iter().any(|&n| n > 2),
        "the key frames span several packets at this MTU: {sizes:?}"
    );
}

#[test]
fn pay_depay_decode_is_bit_exact() {
    let clip = clip(320, 240, 30, "I420", "ball");
    let (caps, units) = encode(&clip, "rtav1enc");
    let (_, direct) = decode(&caps, &units, "rtav1dec");
    let (_, through_rtp) = decode(
        &caps,
        &units,
        &format!("rtav1pay mtu={MTU} ! rtav1depay ! rtav1dec"),
    );
    assert_eq!(through_rtp.len(), direct.len());
    assert!(through_rtp == direct, "RTP round trip changed the pictures");
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Receives AV1 over RTP on loopback `port` with plain `udpsrc` (no jitter buffer):
/// `rtav1depay name=depay ! rtav1dec ! appsink name=sink`.
fn udp_receiver(port: u16) -> gst::Pipeline {
    launch(&format!(
        "udpsrc address=127.0.0.1 port={port} caps=\"application/x-rtp,media=video,clock-rate=90000,encoding-name=AV1,payload=96\" \
         ! rtav1depay name=depay ! rtav1dec ! appsink name=sink sync=false"
    ))
}

#[test]
fn udp_loss_recovers_at_the_next_key_frame() {
    const LOST_FRAME: usize = 13;
    const KEY_INTERVAL: usize = 20;
    // A moving pattern: delta frames of about 3 kB, several packets each.
    let clip = clip(320, 240, 60, "I420", "smpte horizontal-speed=5");
    let port = free_udp_port();
    let receiver = udp_receiver(port);
    receiver.set_state(gst::State::Playing).unwrap();
    let sender = launch(&format!(
        "appsrc name=src format=time ! rtav1enc max-key-frame-interval={KEY_INTERVAL} min-key-frame-interval={KEY_INTERVAL} \
         ! rtav1pay name=pay mtu=600 ! udpsink name=udp host=127.0.0.1 port={port} sync=true"
    ));
    // Paced at 30 fps (sync=true) so loopback UDP loses nothing else.
    // Drop the second packet of frame LOST_FRAME (a delta frame), the way a network would.
    let dropped = Arc::new(Mutex::new((0usize, (), (), false)));
    let d = dropped.clone();
    // rtav1pay pushes each temporal unit as a buffer list.
    sender
        .by_name("pay")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER_LIST, move |_, info| {
            let Some(gst::PadProbeData::BufferList(list)) = info.data.as_mut() else {
                return gst::PadProbeReturn::Ok;
            };
            let mut d = d.lock().unwrap();
            let (frame, _, _, done) = &mut *d;
            if *frame == LOST_FRAME && list.len() > 1 {
                list.make_mut().remove(1..2);
                *done = true;
            }
            *frame += 1;
            gst::PadProbeReturn::Ok
        });
    send_clip(&sender, &clip, "udp");
    assert!(
        dropped.lock().unwrap().3,
        "a packet of frame {LOST_FRAME} was dropped (it spans several packets)"
    );

    // UDP carries no EOS: collect until the receiver has had nothing for 3 s.
    let sink = element::<gst_app::AppSink>(&receiver, "sink");
    let mut decoded = Vec::new();
    let mut info = None;
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(3)) {
        let i = info
            .get_or_insert_with(|| gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap())
            .clone();
        decoded.push(pack(
            &gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &i)
                .unwrap(),
        ));
    }
    let stats = receiver
        .by_name("depay")
        .unwrap()
        .property::<gst::Structure>("av1-stats");
    receiver.set_state(gst::State::Null).unwrap();
    sender.set_state(gst::State::Null).unwrap();
    eprintln!("received {} frames; depayloader {stats}", decoded.len());

    // Frames 0..LOST_FRAME, then nothing until the key frame at KEY_INTERVAL, then the rest.
    let expected: Vec<usize> = (0..LOST_FRAME)
        .chain(KEY_INTERVAL..clip.frames.len())
        .collect();
    assert_eq!(decoded.len(), expected.len(), "{stats}");
    for (out, &source) in decoded.iter().zip(&expected) {
        let psnr = psnr_y(out, &clip.frames[source], 320, 240);
        assert!(psnr >= 30.0, "output for frame {source}: {psnr:.1} dB");
    }
    assert_eq!(stats.get::<u64>("dropped-units").unwrap(), 1, "{stats}");
    assert_eq!(
        stats.get::<u64>("skipped-until-keyframe").unwrap(),
        (KEY_INTERVAL - LOST_FRAME - 1) as u64,
        "{stats}"
    );
    assert!(
        stats.get::<u64>("keyframe-requests").unwrap() >= 1,
        "{stats}"
    );
}

/// Pulls decoded frames from `sink` until none came for `quiet` (UDP carries no EOS).
fn pull_until_quiet(sink: &gst_app::AppSink, quiet: gst::ClockTime) -> Vec<Vec<u8>> {
    let mut decoded = Vec::new();
    let mut info = None;
    while let Some(sample) = sink.try_pull_sample(quiet) {
        let i = info
            .get_or_insert_with(|| gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap())
            .clone();
        decoded.push(pack(
            &gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &i)
                .unwrap(),
        ));
    }
    decoded
}

/// Feeds the clip into the pipeline's appsrc `src` and waits until EOS reaches
/// the sink `last` (it syncs: 30 fps). Not the pipeline's EOS: RTCP keeps rtpbin's
/// other sinks going.
fn send_clip(sender: &gst::Pipeline, clip: &Clip, last: &str) {
    let src = element::<gst_app::AppSrc>(sender, "src");
    src.set_caps(Some(&clip.caps()));
    let (eos_tx, eos_rx) = std::sync::mpsc::channel();
    sender
        .by_name(last)
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data
                && e.type_() == gst::EventType::Eos
            {
                let _ = eos_tx.send(());
            }
            gst::PadProbeReturn::Ok
        });
    sender.set_state(gst::State::Playing).unwrap();
    for b in buffers(clip) {
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let finished = eos_rx.recv_timeout(std::time::Duration::from_secs(60));
    if let Some(msg) = sender
        .bus()
        .unwrap()
        .pop_filtered(&[gst::MessageType::Error])
    {
        panic!("sender: {msg:?}");
    }
    finished.expect("the clip reaches the sender's RTP sink");
}

fn assert_frames_match(decoded: &[Vec<u8>], clip: &Clip) {
    assert_eq!(
        decoded.len(),
        clip.frames.len(),
        "every frame arrives and decodes"
    );
    for (i, (out, source)) in decoded.iter().zip(&clip.frames).enumerate() {
        let psnr = psnr_y(out, source, clip.width(), clip.height());
        assert!(psnr >= 30.0, "frame {i}: {psnr:.1} dB");
    }
}

#[test]
fn rtpbin_send_and_receive_sessions_over_udp() {
    init();
    let clip = clip(320, 240, 45, "I420", "smpte horizontal-speed=4");
    let (rtp, rtcp_to_receiver, rtcp_to_sender) =
        (free_udp_port(), free_udp_port(), free_udp_port());
    // The receiving session: RTP and the sender's RTCP in, its own RTCP (receiver reports) back.
    let receiver = launch(&format!(
        "rtpbin name=rtpbin \
         udpsrc address=127.0.0.1 port={rtp} caps=\"application/x-rtp,media=video,clock-rate=90000,encoding-name=AV1,payload=96\" ! rtpbin.recv_rtp_sink_0 \
         udpsrc address=127.0.0.1 port={rtcp_to_receiver} ! rtpbin.recv_rtcp_sink_0 \
         rtpbin.send_rtcp_src_0 ! udpsink host=127.0.0.1 port={rtcp_to_sender} sync=false async=false \
         rtpbin. ! rtav1depay name=depay ! rtav1dec ! appsink name=sink sync=false"
    ));
    // Remote sources the receiving session learns of (from RTP), and the sender's
    // RTCP BYE that its EOS triggers.
    let (ssrc_tx, ssrc_rx) = std::sync::mpsc::channel::<(&'static str, u32)>();
    let rtpbin = receiver.by_name("rtpbin").unwrap();
    for signal in ["on-new-ssrc", "on-bye-ssrc", "on-ssrc-sdes"] {
        let tx = ssrc_tx.clone();
        rtpbin.connect(signal, false, move |values| {
            let _ = tx.send((signal, values[2].get::<u32>().unwrap()));
            None
        });
    }
    receiver.set_state(gst::State::Playing).unwrap();
    // The sending session: RTP and its sender reports out, receiver reports in.
    let sender = launch(&format!(
        "rtpbin name=rtpbin \
         appsrc name=src format=time ! rtav1enc ! rtav1pay mtu=1200 ! rtpbin.send_rtp_sink_0 \
         rtpbin.send_rtp_src_0 ! udpsink name=rtpsink host=127.0.0.1 port={rtp} sync=true \
         rtpbin.send_rtcp_src_0 ! udpsink host=127.0.0.1 port={rtcp_to_receiver} sync=false async=false \
         udpsrc address=127.0.0.1 port={rtcp_to_sender} ! rtpbin.recv_rtcp_sink_0"
    ));
    send_clip(&sender, &clip, "rtpsink");
    let sink = element::<gst_app::AppSink>(&receiver, "sink");
    let decoded = pull_until_quiet(&sink, gst::ClockTime::from_seconds(3));
    let stats = receiver
        .by_name("depay")
        .unwrap()
        .property::<gst::Structure>("av1-stats");
    // The BYE follows the sender's EOS over RTCP; wait for it (or 10 s).
    let mut events: Vec<(&str, u32)> = Vec::new();
    while let Ok(e) = ssrc_rx.recv_timeout(std::time::Duration::from_secs(10)) {
        events.push(e);
        if e.0 == "on-bye-ssrc" {
            break;
        }
    }
    receiver.set_state(gst::State::Null).unwrap();
    sender.set_state(gst::State::Null).unwrap();
    eprintln!("rtpbin: {} frames; {stats}", decoded.len());
    assert_frames_match(&decoded, &clip);
    assert_eq!(stats.get::<u64>("dropped-units").unwrap(), 0, "{stats}");
    // One remote source (the sender's SSRC), then its SDES (each RTCP report) and BYE over RTCP.
    let ssrc = events.first().map(|e| e.1);
    let names: Vec<&str> = events.iter().map(|e| e.0).collect();
    assert_eq!(names.first(), Some(&"on-new-ssrc"), "{events:?}");
    assert_eq!(names.last(), Some(&"on-bye-ssrc"), "{events:?}");
    assert!(
        names[1..names.len() - 1]
            .iter()
            .all(|n| *n == "on-ssrc-sdes")
            && names.len() >= 3,
        "{events:?}"
    );
    assert!(
        events.iter().all(|e| Some(e.1) == ssrc),
        "one SSRC throughout: {events:?}"
    );
}

/// Connects `from`'s ICE candidates to `to` (both webrtcbins in this process).
fn relay_ice(from: &gst::Element, to: &gst::Element) {
    let to = to.downgrade();
    from.connect("on-ice-candidate", false, move |values| {
        let mline = values[1].get::<u32>().unwrap();
        let candidate = values[2].get::<String>().unwrap();
        if let Some(to) = to.upgrade() {
            to.emit_by_name::<()>("add-ice-candidate", &[&mline, &candidate]);
        }
        None
    });
}

#[test]
fn webrtcbin_to_webrtcbin_carries_rtav1enc_to_rtav1dec() {
    init();
    let clip = clip(320, 240, 60, "I420", "smpte horizontal-speed=4");
    let sender = launch(
        "appsrc name=src format=time is-live=true ! rtav1enc ! rtav1pay mtu=1200 \
         ! application/x-rtp,media=video,encoding-name=AV1,clock-rate=90000,payload=96 ! webrtcbin name=webrtc bundle-policy=max-bundle",
    );
    let receiver = gst::Pipeline::new();
    let recv = gst::ElementFactory::make("webrtcbin")
        .property_from_str("bundle-policy", "max-bundle")
        .build()
        .unwrap();
    receiver.add(&recv).unwrap();
    let send = sender.by_name("webrtc").unwrap();
    relay_ice(&send, &recv);
    relay_ice(&recv, &send);

    // What arrives goes to rtav1depay ! rtav1dec ! appsink.
    let (sink_tx, sink_rx) = std::sync::mpsc::channel::<gst_app::AppSink>();
    let receiver_weak = receiver.downgrade();
    recv.connect_pad_added(move |_, pad| {
        let Some(receiver) = receiver_weak.upgrade() else {
            return;
        };
        if pad.direction() != gst::PadDirection::Src {
            return;
        }
        let bin = gst::parse::bin_from_description(
            "rtav1depay name=depay ! rtav1dec ! appsink name=sink sync=false",
            true,
        )
        .unwrap();
        receiver.add(&bin).unwrap();
        bin.sync_state_with_parent().unwrap();
        pad.link(&bin.static_pad("sink").unwrap()).unwrap();
        let sink = element::<gst_app::AppSink>(&bin, "sink");
        let _ = sink_tx.send(sink);
    });

    // Offer/answer exchanged in-process; the answer completes the sender's negotiation.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (send_weak, recv_weak) = (send.downgrade(), recv.downgrade());
    send.connect("on-negotiation-needed", false, move |_| {
        let (send, recv, done) = (send_weak.clone(), recv_weak.clone(), done_tx.clone());
        let promise = gst::Promise::with_change_func(move |reply| {
            let (Some(send), Some(recv)) = (send.upgrade(), recv.upgrade()) else {
                return;
            };
            let offer = match reply {
                Ok(Some(r)) => r.value("offer").unwrap().clone(),
                other => return drop(done.send(Err(format!("no offer: {other:?}")))),
            };
            send.emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>]);
            let recv2 = recv.clone();
            let answered = gst::Promise::with_change_func(move |_| {
                let recv3 = recv2.clone();
                let answer_promise = gst::Promise::with_change_func(move |reply| {
                    let answer = match reply {
                        Ok(Some(r)) => r.value("answer").unwrap().clone(),
                        other => return drop(done.send(Err(format!("no answer: {other:?}")))),
                    };
                    recv3.emit_by_name::<()>(
                        "set-local-description",
                        &[&answer, &None::<gst::Promise>],
                    );
                    send.emit_by_name::<()>(
                        "set-remote-description",
                        &[&answer, &None::<gst::Promise>],
                    );
                    let _ = done.send(Ok(()));
                });
                recv2.emit_by_name::<()>(
                    "create-answer",
                    &[&None::<gst::Structure>, &answer_promise],
                );
            });
            recv.emit_by_name::<()>("set-remote-description", &[&offer, &answered]);
        });
        if let Some(send) = send_weak.upgrade() {
            send.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
        }
        None
    });
    receiver.set_state(gst::State::Playing).unwrap();
    let src = element::<gst_app::AppSrc>(&sender, "src");
    src.set_caps(Some(&clip.caps()));
    sender.set_state(gst::State::Playing).unwrap();
    done_rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("negotiation finishes")
        .unwrap();

    // The receiving pad appears once media flows: feed the clip at 30 fps, live.
    let feeder = {
        let (src, frames) = (src.clone(), buffers(&clip));
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            for (i, mut b) in frames.into_iter().enumerate() {
                // Live source: timestamps on the running time they are captured at.
                let due = std::time::Duration::from_nanos(i as u64 * 1_000_000_000 / 30);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait); // pacing a live source, not synchronisation
                }
                b.make_mut().set_pts(gst::ClockTime::NONE);
                if src.push_buffer(b).is_err() {
                    break;
                }
            }
            // EOS drains the 4 frames rav1e holds.
            let _ = src.end_of_stream();
        })
    };
    let sink = sink_rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the receiver gets a stream");
    let decoded = pull_until_quiet(&sink, gst::ClockTime::from_seconds(3));
    feeder.join().unwrap();
    let errors: Vec<gst::Message> = [&sender, &receiver]
        .iter()
        .filter_map(|p| p.bus().unwrap().pop_filtered(&[gst::MessageType::Error]))
        .collect();
    sender.set_state(gst::State::Null).unwrap();
    receiver.set_state(gst::State::Null).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    eprintln!(
        "webrtcbin: {} of {} frames decoded",
        decoded.len(),
        clip.frames.len()
    );
    // Until ICE and DTLS are up the first frames have nowhere to go; from the first
    // key frame that gets through (the depayloader asks for one) on, every frame
    // arrives, in order (the bars move: each frame matches one source frame only).
    let (w, h) = (clip.width(), clip.height());
    let first = (0..clip.frames.len())
        .max_by(|&a, &b| {
            psnr_y(&decoded[0], &clip.frames[a], w, h).total_cmp(&psnr_y(
                &decoded[0],
                &clip.frames[b],
                w,
                h,
            ))
        })
        .unwrap();
    eprintln!("the first decoded frame is source frame {first}");
    assert!(
        first < clip.frames.len() / 2,
        "frames start flowing within a second: from {first}"
    );
    assert_eq!(
        decoded.len(),
        clip.frames.len() - first,
        "every frame from {first} on"
    );
    for (i, out) in decoded.iter().enumerate() {
        let psnr = psnr_y(out, &clip.frames[first + i], w, h);
        assert!(
            psnr >= 30.0,
            "decoded frame {i} against source frame {}: {psnr:.1} dB",
            first + i
        );
    }
}

/// Whole temporal units lost (one-packet delta frames at a low bitrate, plain
/// `udpsrc`, no jitter buffer): nothing marks the loss but the RTP sequence
/// gap. The receiver must notice it, show no corrupt picture until the next
/// key frame, and ask upstream for one.
#[test]
fn whole_lost_temporal_units_wait_for_a_key_frame_and_request_one() {
    const LOST: [usize; 2] = [13, 14];
    const KEY_INTERVAL: usize = 30;
    let clip = clip(320, 240, 60, "I420", "ball");
    let port = free_udp_port();
    let receiver = udp_receiver(port);
    // Key-unit requests the depayloader sends upstream (webrtcbin/rtpbin turn them into PLI).
    let requests = Arc::new(Mutex::new(0usize));
    let r = requests.clone();
    receiver
        .by_name("depay")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data
                && gst_video::UpstreamForceKeyUnitEvent::parse(e).is_ok()
            {
                *r.lock().unwrap() += 1;
            }
            gst::PadProbeReturn::Ok
        });
    receiver.set_state(gst::State::Playing).unwrap();
    let sender = launch(&format!(
        "appsrc name=src format=time ! rtav1enc bitrate=150 max-key-frame-interval={KEY_INTERVAL} \
         ! rtav1pay name=pay mtu=1400 ! udpsink name=udp host=127.0.0.1 port={port} sync=true"
    ));
    // Drop every packet of the chosen units, as a network losing whole frames would.
    let dropped = Arc::new(Mutex::new((0usize, Vec::new())));
    let d = dropped.clone();
    sender
        .by_name("pay")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER_LIST, move |_, info| {
            let Some(gst::PadProbeData::BufferList(list)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let mut d = d.lock().unwrap();
            let frame = d.0;
            d.0 += 1;
            if LOST.contains(&frame) {
                d.1.push(list.len());
                return gst::PadProbeReturn::Drop;
            }
            gst::PadProbeReturn::Ok
        });
    send_clip(&sender, &clip, "udp");
    let sink = element::<gst_app::AppSink>(&receiver, "sink");
    let decoded = pull_until_quiet(&sink, gst::ClockTime::from_seconds(3));
    let stats = receiver
        .by_name("depay")
        .unwrap()
        .property::<gst::Structure>("av1-stats");
    receiver.set_state(gst::State::Null).unwrap();
    sender.set_state(gst::State::Null).unwrap();
    let lost_sizes = dropped.lock().unwrap().1.clone();
    eprintln!(
        "received {} frames; lost units of {lost_sizes:?} packets; {stats}",
        decoded.len()
    );
    assert_eq!(
        lost_sizes.len(),
        LOST.len(),
        "every chosen unit was dropped whole"
    );
    assert!(
        lost_sizes.contains(&1),
        "a lost delta unit was a single packet (nothing but the sequence gap shows it): {lost_sizes:?}"
    );
    // Frames before the loss, nothing until the next key frame, then the rest.
    let expected: Vec<usize> = (0..LOST[0])
        .chain(KEY_INTERVAL..clip.frames.len())
        .collect();
    assert_eq!(
        decoded.len(),
        expected.len(),
        "no picture between the loss and the key frame: {stats}"
    );
    for (out, &source) in decoded.iter().zip(&expected) {
        let psnr = psnr_y(out, &clip.frames[source], 320, 240);
        assert!(psnr >= 30.0, "output for frame {source}: {psnr:.1} dB");
    }
    assert!(
        *requests.lock().unwrap() >= 1,
        "a key unit was requested upstream"
    );
    assert!(stats.get::<u64>("dropped-units").unwrap() >= 1, "{stats}");
}

/// How a header extension reaches the payloader.
#[derive(Debug, Clone, Copy)]
enum ExtensionFrom {
    /// The application calls `add-extension`.
    AddExtension,
    /// Downstream caps carry `extmap-1`; the base class creates the extension itself.
    CapsExtmap,
    /// Downstream caps carry `extmap-1`; an application's `request-extension` handler supplies it.
    RequestExtension,
}

const TWCC_URI: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

fn twcc() -> gst_rtp::RTPHeaderExtension {
    gst::ElementFactory::make("rtphdrexttwcc")
        .build()
        .unwrap()
        .downcast::<gst_rtp::RTPHeaderExtension>()
        .unwrap()
}

#[test]
fn packets_with_header_extensions_still_fit_the_mtu() {
    init();
    let clip = clip(320, 240, 10, "I420", "ball");
    let (caps, units) = encode(&clip, "rtav1enc");
    for from in [
        ExtensionFrom::AddExtension,
        ExtensionFrom::CapsExtmap,
        ExtensionFrom::RequestExtension,
    ] {
        let filter = match from {
            ExtensionFrom::AddExtension => String::new(),
            _ => format!("! application/x-rtp,extmap-1=(string){TWCC_URI} "),
        };
        let pipeline = launch(&format!(
            "appsrc name=src format=time ! rtav1pay name=pay mtu={MTU} {filter}! appsink name=sink sync=false"
        ));
        let pay = pipeline.by_name("pay").unwrap();
        // Transport-wide congestion control, as webrtcbin adds: a sequence number in every packet.
        match from {
            ExtensionFrom::AddExtension => {
                let ext = twcc();
                ext.set_id(1);
                pay.emit_by_name::<()>("add-extension", &[&ext]);
            }
            ExtensionFrom::CapsExtmap => {}
            ExtensionFrom::RequestExtension => {
                pay.set_property("auto-header-extension", false);
                pay.connect("request-extension", false, |args| {
                    let (id, uri) = (
                        args[1].get::<u32>().unwrap(),
                        args[2].get::<String>().unwrap(),
                    );
                    assert_eq!(uri, TWCC_URI);
                    let ext = twcc();
                    ext.set_id(id);
                    Some(ext.to_value())
                });
            }
        }
        let src = element::<gst_app::AppSrc>(&pipeline, "src");
        let sink = element::<gst_app::AppSink>(&pipeline, "sink");
        src.set_caps(Some(&caps));
        pipeline.set_state(gst::State::Playing).unwrap();
        for u in &units {
            src.push_buffer(u.clone()).unwrap();
        }
        src.end_of_stream().unwrap();
        let packets: Vec<gst::Buffer> = std::iter::from_fn(|| sink.pull_sample().ok())
            .map(|s| s.buffer_owned().unwrap())
            .collect();
        pipeline.set_state(gst::State::Null).unwrap();
        assert!(packets.len() > 10, "{from:?}");
        let mut with_extension = 0;
        let largest = packets.iter().map(|p| p.size()).max().unwrap();
        for p in &packets {
            let rtp = gst_rtp::RTPBuffer::from_buffer_readable(p).unwrap();
            with_extension += rtp.is_extension() as usize;
        }
        assert_eq!(
            with_extension,
            packets.len(),
            "{from:?}: every packet carries the extension"
        );
        assert!(
            largest as u32 <= MTU,
            "{from:?}: a packet of {largest} bytes, the MTU is {MTU}"
        );
    }
}

/// The units as one buffer per OBU (alignment=obu), each with its unit's timestamps.
fn obu_aligned(units: &[gst::Buffer]) -> Vec<gst::Buffer> {
    let mut out = Vec::new();
    for u in units {
        let map = u.map_readable().unwrap();
        let mut rest: &[u8] = &map;
        while !rest.is_empty() {
            // OBU header (+ extension byte), then its LEB128 size.
            let header = 1 + ((rest[0] >> 2) & 1) as usize;
            let (mut size, mut shift, mut i) = (0usize, 0, header);
            loop {
                let b = rest[i];
                size |= ((b & 0x7f) as usize) << shift;
                shift += 7;
                i += 1;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let (obu, tail) = rest.split_at(i + size);
            let mut b = gst::Buffer::from_slice(obu.to_vec());
            {
                let b = b.get_mut().unwrap();
                b.set_pts(u.pts());
                b.set_duration(u.duration());
                b.set_flags(u.flags() & gst::BufferFlags::DELTA_UNIT);
            }
            out.push(b);
            rest = tail;
        }
    }
    out
}

#[test]
fn frame_and_obu_aligned_input_is_payloaded_like_temporal_units() {
    let clip = clip(320, 240, 20, "I420", "ball");
    let (caps, units) = encode(&clip, "rtav1enc max-key-frame-interval=10");
    let (_, direct) = decode(&caps, &units, "rtav1dec");
    for (alignment, input) in [("frame", units.clone()), ("obu", obu_aligned(&units))] {
        let mut aligned = caps.clone();
        aligned.make_mut().set("alignment", alignment);
        let (_, through_rtp) = decode(
            &aligned,
            &input,
            &format!("rtav1pay mtu={MTU} ! rtav1depay ! rtav1dec"),
        );
        assert_eq!(through_rtp.len(), direct.len(), "alignment={alignment}");
        assert!(
            through_rtp == direct,
            "alignment={alignment}: RTP changed the pictures"
        );
    }
}
