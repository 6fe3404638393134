//! Hostile input while a valid ffmpeg publisher keeps flowing: random bytes, a
//! truncated handshake, an absurd chunk size, AMF garbage (including the
//! `@setDataFrame` message that makes rml_rtmp 0.8 index out of bounds), random
//! chunk streams after a real handshake, and 500 idle connections. Each bad
//! connection is closed on its own; every frame of the valid publisher decodes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use gst::prelude::*;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::time::RtmpTimestamp;

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// True if the server closes `s` within `within` (reads are drained).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

fn client_handshake(s: &mut TcpStream) {
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().unwrap())
        .unwrap();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        assert!(Instant::now() < deadline, "handshake did not complete");
        let n = match s.read(&mut buf) {
            Ok(0) => panic!("server closed during the handshake"),
            Ok(n) => n,
            Err(_) => continue,
        };
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).unwrap()
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                s.write_all(&response_bytes).unwrap();
                return;
            }
        }
    }
}

fn message(serializer: &mut ChunkSerializer, type_id: u8, data: Vec<u8>) -> Vec<u8> {
    serializer
        .serialize(
            &MessagePayload {
                timestamp: RtmpTimestamp::new(0),
                type_id,
                message_stream_id: 0,
                data: Bytes::from(data),
            },
            true,
            false,
        )
        .unwrap()
        .bytes
}

struct Rng(u64);
impl Rng {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 as u8
            })
            .collect()
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn bad_input_closes_only_that_connection() {
    let ingest = Ingest::start(&[
        ("stream-keys", &"cam1=valid-key"),
        ("handshake-timeout", &1000u32),
        ("max-connections", &64u32),
    ]);
    let port = ingest.port();
    let mut ff = ffmpeg_publish(&ingest.url("cam1?key=valid-key"), 6.0, "320x240");
    assert!(
        ingest.wait(Duration::from_secs(10), |s| !s.pts.is_empty()),
        "the valid publisher flows"
    );
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

    // Random bytes instead of a handshake.
    let mut s = connect(port);
    let _ = s.write_all(&rng.bytes(64 * 1024));
    assert!(
        closed_within(&mut s, Duration::from_secs(1)),
        "random bytes"
    );

    // A truncated handshake: closed by handshake-timeout.
    let mut s = connect(port);
    s.write_all(&[3]).unwrap();
    s.write_all(&rng.bytes(100)).unwrap();
    let t = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "truncated handshake"
    );
    assert!(t.elapsed() >= Duration::from_millis(800));

    // An absurd chunk size, then a message announcing 16 MiB that never comes:
    // max-chunk-size closes the connection at once, long before handshake-timeout.
    let mut s = connect(port);
    let t = Instant::now();
    client_handshake(&mut s);
    let mut ser = ChunkSerializer::new();
    let _ = s.write_all(
        &ser.set_max_chunk_size(0x7FFF_FFFF, RtmpTimestamp::new(0))
            .unwrap()
            .bytes,
    );
    let big = message(&mut ser, 9, vec![0x17; 100_000]);
    let _ = s.write_all(&big[..20_000]);
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "absurd chunk size"
    );
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "an absurd chunk size is refused when announced, not after {:?}",
        t.elapsed()
    );

    // AMF garbage as a command, and the @setDataFrame message rml_rtmp panics on.
    for payload in [
        (20u8, rng.bytes(300)),
        (18u8, [&[0x02, 0x00, 0x0d][..], b"@setDataFrame"].concat()),
        (20u8, vec![0x02, 0xff, 0xff, b'x']),
    ] {
        let mut s = connect(port);
        client_handshake(&mut s);
        let mut ser = ChunkSerializer::new();
        let _ = s.write_all(&message(&mut ser, payload.0, payload.1.clone()));
        assert!(
            closed_within(&mut s, Duration::from_secs(2)),
            "AMF garbage type {}",
            payload.0
        );
    }

    // Random chunk streams after a real handshake.
    let mut streams: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = connect(port);
            client_handshake(&mut s);
            let n = 1 + (rng.bytes(2)[0] as usize) * 16;
            let _ = s.write_all(&rng.bytes(n));
            s
        })
        .collect();
    for s in &mut streams {
        assert!(closed_within(s, Duration::from_secs(3)), "random chunks");
    }

    // 500 idle connections: at most max-connections are held, memory stays bounded.
    let rss_before = rss_kib();
    let idle: Vec<TcpStream> = (0..500)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    let stats = ingest.src.property::<gst::Structure>("stats");
    assert!(stats.get::<u64>("connections").unwrap() <= 64, "{stats}");
    let rss_after = rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS {rss_before} -> {rss_after} KiB"
    );
    drop(idle);

    let status = wait_exit(&mut ff, Duration::from_secs(30));
    assert!(status.success(), "{}", stderr_of(&mut ff));
    assert!(ingest.wait(Duration::from_secs(5), |s| s.eos > 0));
    let seen = ingest.seen.lock().unwrap();
    assert_eq!(seen.pts.len(), 180, "every frame of the valid publisher");
    assert_monotonic(&seen.pts);
    drop(seen);
    let stats = ingest.src.property::<gst::Structure>("stats");
    assert!(
        stats.get::<u64>("connections-rejected").unwrap() > 0,
        "{stats}"
    );
}

/// A publisher (rml_rtmp's client session) that connected and is publishing `name`.
fn rtmp_publisher(port: u16, name: &str) -> (TcpStream, rml_rtmp::sessions::ClientSession) {
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
        PublishRequestType,
    };
    let mut s = connect(port);
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().unwrap())
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut input = loop {
        assert!(Instant::now() < deadline);
        let Ok(n) = s.read(&mut buf) else { continue };
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).unwrap()
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                s.write_all(&response_bytes).unwrap();
                break remaining_bytes;
            }
        }
    };
    let (mut session, _) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let send = |s: &mut TcpStream, r: ClientSessionResult| {
        if let ClientSessionResult::OutboundResponse(p) = r {
            s.write_all(&p.bytes).unwrap();
        }
    };
    send(&mut s, session.request_connection("live".into()).unwrap());
    loop {
        assert!(Instant::now() < deadline, "publish accepted");
        let mut connected = false;
        for r in session.handle_input(&input).unwrap() {
            match r {
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted) => {
                    connected = true
                }
                ClientSessionResult::RaisedEvent(ClientSessionEvent::PublishRequestAccepted) => {
                    return (s, session);
                }
                other => send(&mut s, other),
            }
        }
        if connected {
            send(
                &mut s,
                session
                    .request_publishing(name.into(), PublishRequestType::Live)
                    .unwrap(),
            );
        }
        input.clear();
        if let Ok(n) = s.read(&mut buf) {
            input.extend_from_slice(&buf[..n]);
        }
    }
}

#[test]
fn enhanced_rtmp_is_refused_with_a_reason() {
    let ingest = Ingest::start(&[]);
    let (mut s, mut session) = rtmp_publisher(ingest.port(), "cam");
    // Enhanced RTMP: IsExHeader | key frame, PacketTypeSequenceStart, FourCC hvc1.
    let body = Bytes::from([&[0x90u8][..], b"hvc1", &[1, 2, 3, 4]].concat());
    if let rml_rtmp::sessions::ClientSessionResult::OutboundResponse(p) = session
        .publish_video_data(body, RtmpTimestamp::new(0), false)
        .unwrap()
    {
        s.write_all(&p.bytes).unwrap();
    }
    assert!(
        closed_within(&mut s, Duration::from_secs(2)),
        "the publisher is disconnected"
    );
    assert!(ingest.wait(Duration::from_secs(2), |s| s.eos > 0
        || !s.messages.is_empty()));
    let deadline = Instant::now() + Duration::from_secs(2);
    let stop = loop {
        if let Some(m) = ingest.messages("rtmp-publish-stop").pop() {
            break m;
        }
        assert!(Instant::now() < deadline, "rtmp-publish-stop posted");
        std::thread::sleep(Duration::from_millis(10));
    };
    let reason = stop.get::<String>("reason").unwrap();
    assert!(
        reason.starts_with("unsupported-codec: Enhanced RTMP video (FourCC hvc1)"),
        "{reason}"
    );
    assert_eq!(ingest.frames(), 0);
    assert_eq!(
        ingest.seen.lock().unwrap().eos,
        0,
        "no media, no stream to end"
    );
}
