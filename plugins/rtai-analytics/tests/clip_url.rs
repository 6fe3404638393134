//! A recorded clip's URL reaches the stored clip events: cliprecorder's
//! `rtai-clip-recorded` message (as it posts it, docs/cliprecorder.md) after
//! analyticssink's clip markers updates the clip rows' `data` in SQLite and in
//! a real PostgreSQL server, and `/api/events` shows it.

mod common;

use std::time::Duration;

use common::*;
use gst::prelude::*;

/// The two clip markers of [`scripted_video`] as (source, event-id), the first
/// recorded by its `sources`, the second by its `event-ids`; `clip_rows` reads
/// the stored clip events' `data` in id order.
fn clip_urls_are_stored(database: &str, clip_rows: impl Fn() -> Vec<serde_json::Value>) {
    let rig = Rig::new(
        &[
            ("database", database.to_value()),
            ("listen", "127.0.0.1:0".to_value()),
            ("clip-threshold", 0.6f64.to_value()),
            ("clip-padding", 500u32.to_value()),
        ],
        &[VIDEO],
    );
    scripted_video(&rig, 0);
    rig.eos();
    let markers = messages(&rig.bus, "rtai-clip-marker");
    assert_eq!(markers.len(), 2, "{markers:?}");
    let field = |i: usize, f: &str| markers[i].get::<String>(f).unwrap();
    let (source0, id1) = (field(0, "source"), field(1, "event-id"));
    assert!(!source0.is_empty() && !id1.is_empty());
    wait_until("both clip rows stored", Duration::from_secs(10), || {
        clip_rows().len() == 2
    });

    // What cliprecorder posts when a clip is in storage, from an element in the pipeline.
    let rec = gst::ElementFactory::make("identity")
        .name("rec")
        .build()
        .unwrap();
    rig.pipeline.add(&rec).unwrap();
    let recorded = |url: &str, storage: &str, sources: &str, event_ids: &str| {
        let s = gst::Structure::builder("rtai-clip-recorded")
            .field("url", url)
            .field("http-url", "")
            .field("location", url.trim_start_matches("file://"))
            .field("storage", storage)
            .field("start", 0u64)
            .field("end", 2_000 * MS)
            .field("duration", 2_000 * MS)
            .field("requested-start", 0u64)
            .field("requested-end", 2_000 * MS)
            .field("truncated", false)
            .field("reason", "object_appear")
            .field("sources", sources)
            .field("event-ids", event_ids)
            .field("markers", 1u32)
            .field("frames", 20u32)
            .field("bytes", 12_345u64)
            .build();
        rec.post_message(gst::message::Element::builder(s).src(&rec).build())
            .unwrap();
    };
    recorded("file:///clips/a.mp4", "local", &source0, "");
    recorded("s3://bucket/clips/b.mp4", "s3", "", &id1);

    wait_until("the urls stored", Duration::from_secs(10), || {
        clip_rows().iter().all(|d| d.get("url").is_some())
    });
    let rows = clip_rows();
    assert_eq!(rows[0]["source"], source0.as_str());
    assert_eq!(rows[0]["url"], "file:///clips/a.mp4");
    assert_eq!(rows[0]["play_url"], "clips/a.mp4");
    assert_eq!(rows[0]["recorded"]["bytes"], 12_345);
    assert_eq!(rows[0]["recorded"]["storage"], "local");
    assert_eq!(rows[0]["recorded"]["duration_ns"], 2_000 * MS);
    assert_eq!(rows[1]["url"], "s3://bucket/clips/b.mp4");
    assert_eq!(rows[1]["recorded"]["storage"], "s3");
    assert!(
        rows[1].get("play_url").is_none(),
        "no play url for S3 without an endpoint: {}",
        rows[1]
    );
    // The marker's own fields are kept.
    assert!(rows.iter().all(|d| d["reason"].is_string()), "{rows:?}");

    let (status, _, body) = http_get(&rig.addr(), "/api/events?type=clip", &[]);
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let urls: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["url"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(urls, ["file:///clips/a.mp4", "s3://bucket/clips/b.mp4"]);
    // Valid against docs/event-schema.json, with the clip events' `url`, `play_url` and `recorded`.
    assert_eq!(validate_events(&["api"], Some(&body))["count"], 2);
    let (_, _, all) = http_get(&rig.addr(), "/api/events?limit=1000", &[]);
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    let with_url = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"].get("url").is_some())
        .count();
    assert_eq!(with_url, 2, "only the clip events get the url");
    rig.stop();
}

#[test]
fn sqlite_clip_events_get_the_recorded_url() {
    let dir = temp_dir("clip-url");
    let db = dir.join("events.sqlite");
    let path = db.clone();
    clip_urls_are_stored(db.to_str().unwrap(), move || {
        let Ok(conn) = rusqlite::Connection::open(&path) else {
            return Vec::new();
        };
        let Ok(mut stmt) =
            conn.prepare("SELECT data FROM rtai_events WHERE type = 'clip' ORDER BY id")
        else {
            return Vec::new();
        };
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|d| serde_json::from_str(&d.unwrap()).unwrap())
            .collect()
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn postgresql_clip_events_get_the_recorded_url() {
    init();
    let pg = Postgres::start();
    let url = pg.create_database("rtai_clip_url");
    clip_urls_are_stored(&url, || {
        pg.psql(
            &url,
            "SELECT data::text FROM rtai_events WHERE type = 'clip' ORDER BY id",
        )
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
    });
}
