//! DASH viewer sessions (issue 17): the MPD hands out a session id as the HLS
//! master playlist does (segment templates and `Location` carry
//! `?session=ID`), so a player following the MPD as dash.js does (template
//! URLs resolved against the MPD's URL, refreshes from `Location`) is one
//! session in `/api` and `/metrics`, with its rendition.

use std::time::{Duration, Instant};

mod common;
use common::*;

/// One pipeline at a time in this file: on 2 cores chromium next to a second
/// ladder would be starved.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// `rel` resolved against the directory of `base` (a path; `rel` has no `/` prefix).
fn resolve(base: &str, rel: &str) -> String {
    let dir = &base[..base.rfind('/').unwrap() + 1];
    format!("{dir}{rel}")
}

/// A Prometheus sample's value.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// What one dash.js-like player did: its session id and the bytes it fetched.
struct Followed {
    session: String,
    requests: usize,
}

/// Loads the MPD at `mpd_path`, its `Location`, and for the first
/// Representation of every AdaptationSet the init segment and the newest
/// segment, as URLs built from the SegmentTemplate.
fn follow(port: u16, mpd_path: &str) -> (Followed, String) {
    let r = get(port, mpd_path);
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let location = doc
        .descendants()
        .find(|n| n.has_tag_name("Location"))
        .and_then(|n| n.text())
        .unwrap_or_else(|| panic!("no Location: {text}"))
        .to_string();
    let refresh = resolve(mpd_path, &location);
    let session = location.split("session=").nth(1).unwrap().to_string();
    assert_eq!(session.len(), 32, "{location}");
    let mut requests = 1;
    for set in doc
        .descendants()
        .filter(|n| n.has_tag_name("AdaptationSet"))
    {
        let rep = set
            .children()
            .find(|n| n.has_tag_name("Representation"))
            .unwrap();
        let id = rep.attribute("id").unwrap();
        let tmpl = rep
            .children()
            .find(|n| n.has_tag_name("SegmentTemplate"))
            .unwrap();
        let start: u64 = tmpl.attribute("startNumber").unwrap().parse().unwrap();
        let count = tmpl.descendants().filter(|n| n.has_tag_name("S")).count() as u64;
        let init = tmpl.attribute("initialization").unwrap();
        let media = tmpl
            .attribute("media")
            .unwrap()
            .replace("$Number$", &(start + count - 1).to_string())
            .replace("$RepresentationID$", id);
        for uri in [init.to_string(), media] {
            assert!(uri.ends_with(&format!("?session={session}")), "{uri}");
            let r = get(port, &resolve(mpd_path, &uri));
            assert_eq!(r.status, 200, "{uri}: {}", r.text());
            assert!(!r.body.is_empty());
            requests += 1;
        }
    }
    (Followed { session, requests }, refresh)
}

#[test]
fn dash_players_get_a_session_from_the_mpd_and_are_counted() {
    let _alone = alone();
    let rig = Rig::start(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 \
           ! abrsink name=abr ladder=240p:300,180p:200 listen=127.0.0.1:0 prefer-hardware=false \
         audiotestsrc is-live=true ! abr.audio",
    );
    let port = rig.port();
    let (a, refresh) = follow(port, "/dash/live/manifest.mpd");
    assert_eq!(
        refresh,
        format!("/dash/live/manifest.mpd?session={}", a.session)
    );
    // A refresh from Location keeps the session (no new one is handed out).
    let (again, _) = follow(port, &refresh);
    assert_eq!(again.session, a.session);
    // A second player is a second session.
    let (b, _) = follow(port, "/dash/live/manifest.mpd");
    assert_ne!(b.session, a.session);
    assert!(a.requests >= 5 && b.requests >= 5);

    let v = get(port, "/api/streams/live/viewers").json();
    assert_eq!(v["viewers"], 2, "{v}");
    let mut ids: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![a.session.as_str(), b.session.as_str()];
    expected.sort();
    assert_eq!(ids, expected, "{v}");
    for s in v["sessions"].as_array().unwrap() {
        assert_eq!(s["rendition"], "240p", "{s}");
        assert!(s["bytes"].as_u64().unwrap() > 0, "{s}");
        // Its audio requests are no rendition switch.
        assert_eq!(s["switches"], 0, "{s}");
    }
    assert_eq!(v["viewers_per_rendition"]["240p"], 2, "{v}");
    assert_eq!(get(port, "/api/streams/live").json()["viewers"], 2);
    let metrics = get(port, "/metrics").text();
    assert_eq!(
        sample(&metrics, "rtai_delivery_viewers{stream=\"live\"}"),
        Some(2.0),
        "{metrics}"
    );
    // Refreshes keep a session alive past the 3 x target duration silence rule.
    let until = Instant::now() + Duration::from_secs(4);
    poll("4 s of refreshes", Duration::from_secs(10), || {
        let (f, _) = follow(port, &refresh);
        assert_eq!(f.session, a.session);
        (Instant::now() > until).then_some(())
    });
    let v = get(port, "/api/streams/live/viewers").json();
    assert_eq!(v["viewers"], 1, "only the refreshing player is left: {v}");
    assert_eq!(v["sessions"][0]["id"], a.session.as_str(), "{v}");
}

/// dash.js in Debian's chromium on `/watch/{stream}?dash=1`: the page takes
/// its session id from the MPD; every MPD refresh, init and segment request
/// carries it; the API counts that one session on a video rendition while the
/// page plays; closing the page (its pagehide beacon) ends it.
#[test]
fn dash_js_in_chromium_is_one_counted_session() {
    player_deps();
    let _alone = alone();
    let rig = Rig::start(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 \
           ! abrsink name=abr ladder=240p:300,180p:200 listen=127.0.0.1:0 stream=dj prefer-hardware=false \
         audiotestsrc is-live=true ! abr.audio",
    );
    let port = rig.port();
    assert_eq!(get(port, "/hls/dj/master.m3u8").status, 200);
    let v = player_script(
        "dash_session.mjs",
        &[
            format!("http://127.0.0.1:{port}/watch/dj?dash=1"),
            format!("http://127.0.0.1:{port}/api/streams/dj/viewers"),
            "3".into(),
        ],
    );
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    let session = v["session"].as_str().unwrap();
    assert_eq!(session.len(), 32, "{v}");
    let requests: Vec<&str> = v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    // The first MPD request has no id; everything after it carries the one handed out.
    assert_eq!(requests[0], "/dash/dj/manifest.mpd", "{v}");
    let with_id = format!("session={session}");
    assert!(
        requests[1..].iter().all(|r| r.ends_with(&with_id)),
        "{requests:?}"
    );
    let refreshes = requests[1..]
        .iter()
        .filter(|r| r.starts_with("/dash/dj/manifest.mpd?"))
        .count();
    assert!(
        refreshes >= 2,
        "dash.js refreshed the MPD from Location: {requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.contains("/audio/seg")),
        "{requests:?}"
    );
    let open = &v["viewersOpen"];
    assert_eq!(open["viewers"], 1, "{v}");
    let s = &open["sessions"][0];
    assert_eq!(s["id"], session, "{v}");
    let rendition = s["rendition"].as_str().unwrap_or_default();
    assert!(rendition == "240p" || rendition == "180p", "{s}");
    let left = v["leftMs"]
        .as_f64()
        .unwrap_or_else(|| panic!("not left: {v}"));
    println!(
        "dash.js: first frame {} ms, {} requests ({refreshes} MPD refreshes) in session {session}, \
         closed → left {left:.0} ms",
        v["firstFrameMs"],
        requests.len()
    );
}
