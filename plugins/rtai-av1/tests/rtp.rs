//! rtav1pay / rtav1depay: packets respect the MTU and the payload format's
//! marker and N bits; pay → depay → decode is bit-exact; over real UDP with a
//! lost packet the receiver drops the damaged frames and recovers at the next
//! key frame.

mod common;

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};

use common::*;
use gst::prelude::*;

const MTU: u32 = 200;

#[test]
fn packets_fit_the_mtu_and_carry_marker_and_n_bits() {
    let clip = clip(320, 240, 20, "I420", "ball");
    let (caps, units) = encode(&clip, "rtav1enc max-key-frame-interval=10 min-key-frame-interval=10");
    let (rtp_caps, packets) =
        run_to_appsink(&format!("appsrc name=src ! rtav1pay mtu={MTU} ! appsink name=sink sync=false"), &[("src", caps, units.clone())]);
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
        frames.last_mut().unwrap().push((rtp.is_marker(), rtp.payload().unwrap()[0]));
    }
    assert_eq!(frames.len(), units.len(), "one RTP timestamp per temporal unit");
    for (i, packets) in frames.iter().enumerate() {
        let markers: Vec<bool> = packets.iter().map(|(m, _)| *m).collect();
        assert_eq!(markers.iter().filter(|m| **m).count(), 1, "frame {i}: one marker");
        assert!(markers.last().unwrap(), "frame {i}: the marker is on the last packet");
        // N (0x08) on the first packet of a coded video sequence: every key frame here.
        let n = packets[0].1 & 0x08 != 0;
        assert_eq!(n, i % 10 == 0, "frame {i}: N bit");
        // Z on every packet but the first of a unit that spans packets; Y on every but the last.
        for (j, (_, header)) in packets.iter().enumerate() {
            assert_eq!(header & 0x80 != 0, j > 0, "frame {i} packet {j}: Z");
            assert_eq!(header & 0x40 != 0, j + 1 < packets.len(), "frame {i} packet {j}: Y");
        }
    }
    let sizes: Vec<usize> = frames.iter().map(|f| f.len()).collect();
    assert!(sizes.iter().any(|&n| n > 2), "the key frames span several packets at this MTU: {sizes:?}");
}

#[test]
fn pay_depay_decode_is_bit_exact() {
    let clip = clip(320, 240, 30, "I420", "ball");
    let (caps, units) = encode(&clip, "rtav1enc");
    let (_, direct) = decode(&caps, &units, "rtav1dec");
    let (_, through_rtp) = decode(&caps, &units, &format!("rtav1pay mtu={MTU} ! rtav1depay ! rtav1dec"));
    assert_eq!(through_rtp.len(), direct.len());
    assert!(through_rtp == direct, "RTP round trip changed the pictures");
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn udp_loss_recovers_at_the_next_key_frame() {
    const LOST_FRAME: usize = 13;
    const KEY_INTERVAL: usize = 20;
    // A moving pattern: delta frames of about 3 kB, several packets each.
    let clip = clip(320, 240, 60, "I420", "smpte horizontal-speed=5");
    let port = free_udp_port();
    let receiver = gst::parse::launch(&format!(
        "udpsrc address=127.0.0.1 port={port} caps=\"application/x-rtp,media=video,clock-rate=90000,encoding-name=AV1,payload=96\" \
         ! rtav1depay name=depay ! rtav1dec ! appsink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    receiver.set_state(gst::State::Playing).unwrap();
    let sender = gst::parse::launch(&format!(
        "appsrc name=src format=time ! rtav1enc max-key-frame-interval={KEY_INTERVAL} min-key-frame-interval={KEY_INTERVAL} \
         ! rtav1pay name=pay mtu=600 ! udpsink host=127.0.0.1 port={port} sync=true"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    // Paced at 30 fps (sync=true) so loopback UDP loses nothing else.
    // Drop the second packet of frame LOST_FRAME (a delta frame), the way a network would.
    let dropped = Arc::new(Mutex::new((0usize, (), (), false)));
    let d = dropped.clone();
    // rtav1pay pushes each temporal unit as a buffer list.
    sender.by_name("pay").unwrap().static_pad("src").unwrap().add_probe(gst::PadProbeType::BUFFER_LIST, move |_, info| {
        let Some(gst::PadProbeData::BufferList(list)) = info.data.as_mut() else { return gst::PadProbeReturn::Ok };
        let mut d = d.lock().unwrap();
        let (frame, _, _, done) = &mut *d;
        if *frame == LOST_FRAME && list.len() > 1 {
            list.make_mut().remove(1..2);
            *done = true;
        }
        *frame += 1;
        gst::PadProbeReturn::Ok
    });
    let src = sender.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    src.set_caps(Some(&clip.caps()));
    sender.set_state(gst::State::Playing).unwrap();
    for b in buffers(&clip) {
        src.push_buffer(b).unwrap();
    }
    src.end_of_stream().unwrap();
    let bus = sender.bus().unwrap();
    let msg = bus.timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos, gst::MessageType::Error]).unwrap();
    assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
    assert!(dropped.lock().unwrap().3, "a packet of frame {LOST_FRAME} was dropped (it spans several packets)");

    // UDP carries no EOS: collect until the receiver has had nothing for 3 s.
    let sink = receiver.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    let mut decoded = Vec::new();
    let mut info = None;
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(3)) {
        let i = info.get_or_insert_with(|| gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap()).clone();
        decoded.push(pack(&gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &i).unwrap()));
    }
    let stats = receiver.by_name("depay").unwrap().property::<gst::Structure>("av1-stats");
    receiver.set_state(gst::State::Null).unwrap();
    sender.set_state(gst::State::Null).unwrap();
    eprintln!("received {} frames; depayloader {stats}", decoded.len());

    // Frames 0..LOST_FRAME, then nothing until the key frame at KEY_INTERVAL, then the rest.
    let expected: Vec<usize> = (0..LOST_FRAME).chain(KEY_INTERVAL..clip.frames.len()).collect();
    assert_eq!(decoded.len(), expected.len(), "{stats}");
    for (out, &source) in decoded.iter().zip(&expected) {
        let psnr = psnr_y(out, &clip.frames[source], 320, 240);
        assert!(psnr >= 30.0, "output for frame {source}: {psnr:.1} dB");
    }
    assert_eq!(stats.get::<u64>("dropped-units").unwrap(), 1, "{stats}");
    assert_eq!(stats.get::<u64>("skipped-until-keyframe").unwrap(), (KEY_INTERVAL - LOST_FRAME - 1) as u64, "{stats}");
    assert!(stats.get::<u64>("keyframe-requests").unwrap() >= 1, "{stats}");
}
