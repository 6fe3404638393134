//! Real publishers into rtmpserversrc ! flvdemux ! h264parse ! avdec_h264:
//! ffmpeg (libx264+aac transcode, -c copy of an mp4), GStreamer's rtmp2sink,
//! two publishers on one port, a SIGKILLed publisher and its reconnect.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;

#[test]
fn ffmpeg_transcode_every_frame_decoded_in_order() {
    let ingest = Ingest::start(&[("stream-keys", &"cam1=k3y-one")]);
    let mut ff = ffmpeg_publish(&ingest.url("cam1?key=k3y-one"), 3.0, "320x240");
    let status = wait_exit(&mut ff, Duration::from_secs(20));
    assert!(status.success(), "ffmpeg failed: {}", stderr_of(&mut ff));
    assert!(
        ingest.wait(Duration::from_secs(5), |s| s.eos > 0),
        "no EOS after the publisher left"
    );
    let seen = ingest.seen.lock().unwrap();
    assert_eq!(seen.pts.len(), 90, "3 s at 30 fps sent, all decoded");
    assert_monotonic(&seen.pts);
    drop(seen);
    let start = ingest.messages("rtmp-publish-start");
    assert_eq!(start.len(), 1);
    assert_eq!(start[0].get::<String>("stream").unwrap(), "cam1");
    assert_eq!(start[0].get::<String>("video-codec").unwrap(), "h264");
    assert_eq!(start[0].get::<String>("audio-codec").unwrap(), "aac");
    assert!(
        start[0]
            .get::<String>("client")
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let stop = ingest.messages("rtmp-publish-stop");
    assert_eq!(stop.len(), 1);
    assert!(stop[0].get::<u64>("bytes").unwrap() > 10_000);
    assert!(stop[0].get::<gst::ClockTime>("duration").unwrap() > gst::ClockTime::from_seconds(2));
    let stats = ingest.src.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("publishes").unwrap(), 1);
    assert!(stats.get::<u64>("bytes").unwrap() > 10_000);
}

#[test]
fn ffmpeg_stream_copy_of_an_mp4_with_b_frames() {
    let dir = std::env::temp_dir().join(format!("rtai-live-copy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let clip = dir.join("clip.mp4");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100"])
        .args([
            "-t", "2", "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "15",
        ])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(made.success());
    let ingest = Ingest::start(&[]);
    let mut ff = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-i",
        ])
        .arg(&clip)
        .args(["-c", "copy", "-f", "flv", &ingest.url("anything")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut ff, Duration::from_secs(20));
    assert!(status.success(), "ffmpeg failed: {}", stderr_of(&mut ff));
    assert!(ingest.wait(Duration::from_secs(5), |s| s.eos > 0));
    let seen = ingest.seen.lock().unwrap();
    assert_eq!(seen.pts.len(), 60);
    assert_monotonic(&seen.pts);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rtmp2sink_publishes() {
    let ingest = Ingest::start(&[("stream-name", &"cam7")]);
    let sender = gst::parse::launch(&format!(
        "videotestsrc num-buffers=45 is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 ! \
         x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h264parse ! \
         flvmux streamable=true ! rtmp2sink location={}",
        ingest.url("cam7")
    ))
    .unwrap();
    sender.set_state(gst::State::Playing).unwrap();
    let bus = sender.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the sender finishes");
    assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
    sender.set_state(gst::State::Null).unwrap();
    assert!(
        ingest.wait(Duration::from_secs(5), |s| s.pts.len() == 45 && s.eos > 0),
        "frames {}",
        ingest.frames()
    );
    assert_monotonic(&ingest.seen.lock().unwrap().pts);
}

#[test]
fn two_publishers_reach_two_elements_on_one_port() {
    let a = Ingest::start(&[("stream-name", &"cam1"), ("stream-keys", &"cam1=alpha-key")]);
    let listen = format!("127.0.0.1:{}", a.port());
    let b = Ingest::start(&[
        ("listen", &listen),
        ("stream-name", &"cam2"),
        ("stream-keys", &"cam2=bravo-key"),
    ]);
    assert_eq!(a.port(), b.port());
    // cam1 with ?key=, cam2 the OBS way: the key is the whole stream name.
    let mut fa = ffmpeg_publish(&a.url("cam1?key=alpha-key"), 2.0, "320x240");
    let mut fb = ffmpeg_publish(&a.url("bravo-key"), 2.0, "160x120");
    assert!(
        wait_exit(&mut fa, Duration::from_secs(20)).success(),
        "{}",
        stderr_of(&mut fa)
    );
    assert!(
        wait_exit(&mut fb, Duration::from_secs(20)).success(),
        "{}",
        stderr_of(&mut fb)
    );
    assert!(a.wait(Duration::from_secs(5), |s| s.eos > 0));
    assert!(b.wait(Duration::from_secs(5), |s| s.eos > 0));
    let (sa, sb) = (a.seen.lock().unwrap(), b.seen.lock().unwrap());
    assert_eq!(sa.pts.len(), 60);
    assert_eq!(sb.pts.len(), 60);
    assert!(sa.widths.iter().all(|&w| w == 320));
    assert!(sb.widths.iter().all(|&w| w == 160));
    drop((sa, sb));
    assert_eq!(
        b.messages("rtmp-publish-start")[0]
            .get::<String>("stream")
            .unwrap(),
        "cam2"
    );
}

#[test]
fn killed_publisher_ends_within_2s_and_a_reconnect_continues() {
    let ingest = Ingest::start(&[("stream-keys", &"cam1=kill-key")]);
    let url = ingest.url("cam1?key=kill-key");
    let mut ff = ffmpeg_publish(&url, 30.0, "320x240");
    assert!(
        ingest.wait(Duration::from_secs(10), |s| s.pts.len() >= 30),
        "frames arrive"
    );
    ff.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    let _ = ff.wait();
    assert!(
        ingest.wait(Duration::from_secs(2), |s| s.eos > 0),
        "no EOS within 2 s of SIGKILL"
    );
    let ended = killed.elapsed();
    let before = ingest.frames();
    let last_pts = *ingest.seen.lock().unwrap().pts.last().unwrap();
    // Posted before the element pushes EOS.
    let stop = ingest.messages("rtmp-publish-stop");
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0].get::<String>("reason").unwrap(), "disconnected");

    // Same key again: the same pipeline continues.
    let mut again = ffmpeg_publish(&url, 2.0, "320x240");
    assert!(
        wait_exit(&mut again, Duration::from_secs(20)).success(),
        "{}",
        stderr_of(&mut again)
    );
    assert!(
        ingest.wait(Duration::from_secs(5), |s| s.pts.len() == before + 60),
        "reconnect frames: {} after {before}",
        ingest.frames()
    );
    let seen = ingest.seen.lock().unwrap();
    assert!(
        seen.pts[before] > last_pts,
        "timestamps continue after the reconnect"
    );
    assert_monotonic(&seen.pts[before..]);
    drop(seen);
    assert_eq!(ingest.messages("rtmp-publish-start").len(), 2);
    eprintln!("stream ended {ended:?} after SIGKILL");
}

#[test]
fn keep_alive_mode_sends_a_stop_event_and_continues_without_eos() {
    let ingest = Ingest::start(&[("eos-on-disconnect", &false)]);
    let stops = std::sync::Arc::new(std::sync::Mutex::new(0));
    let s = stops.clone();
    ingest
        .pipeline
        .by_name("vq")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(ev) = info.event()
                && ev
                    .structure()
                    .is_some_and(|st| st.name() == "rtmp-publish-stop")
            {
                *s.lock().unwrap() += 1;
            }
            gst::PadProbeReturn::Ok
        });
    for round in 1..=2 {
        let mut ff = ffmpeg_publish(&ingest.url("cam"), 1.0, "320x240");
        assert!(wait_exit(&mut ff, Duration::from_secs(20)).success());
        assert!(
            ingest.wait(Duration::from_secs(5), |s| s.pts.len() == 30 * round),
            "round {round}: {} frames",
            ingest.frames()
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while *stops.lock().unwrap() < round && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(*stops.lock().unwrap(), round);
    }
    let seen = ingest.seen.lock().unwrap();
    assert_eq!(seen.eos, 0);
    assert_monotonic(&seen.pts);
}

#[test]
fn silent_publisher_ends_after_idle_timeout() {
    let ingest = Ingest::start(&[("idle-timeout", &500u32)]);
    let mut ff = ffmpeg_publish(&ingest.url("cam"), 30.0, "160x120");
    assert!(ingest.wait(Duration::from_secs(10), |s| s.pts.len() >= 15));
    let pid = ff.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let silent = Instant::now();
    let ended = ingest.wait(Duration::from_millis(2500), |s| s.eos > 0);
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let _ = ff.kill();
    let _ = ff.wait();
    assert!(ended, "no EOS within idle-timeout + 2 s");
    eprintln!("silent publisher ended after {:?}", silent.elapsed());
    let stop = ingest.messages("rtmp-publish-stop");
    assert_eq!(stop[0].get::<String>("reason").unwrap(), "idle-timeout");
}

#[test]
fn reconnect_after_eos_with_async_sinks() {
    init();
    // Default sinks (async=true): the flush before the second publisher makes them
    // re-preroll; the live pipeline must get back to PLAYING and keep decoding.
    let pipeline = gst::parse::launch(
        "rtmpserversrc name=src listen=127.0.0.1:0 ! flvdemux name=d \
         d.video ! queue name=vq ! h264parse ! avdec_h264 ! appsink name=v sync=false \
         d.audio ! queue ! fakesink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline.by_name("src").unwrap();
    let ingest = Ingest::with_pipeline(pipeline, src);
    for round in 1..=2 {
        let mut ff = ffmpeg_publish(&ingest.url("cam"), 1.0, "160x120");
        assert!(wait_exit(&mut ff, Duration::from_secs(20)).success());
        assert!(
            ingest.wait(Duration::from_secs(5), |s| s.pts.len() == 30 * round
                && s.eos == round),
            "round {round}: {} frames, {} EOS",
            ingest.frames(),
            ingest.seen.lock().unwrap().eos
        );
    }
    let (_, state, _) = ingest.pipeline.state(gst::ClockTime::from_seconds(2));
    assert_eq!(state, gst::State::Playing);
}
