//! One stream's packaged media: per rendition the CMAF init segment, a sliding
//! window of segments (and, with low latency, their parts), and the playlists
//! rendered from them: HLS media playlists, the multivariant (master) playlist
//! and the DASH MPD. The same segments serve HLS and DASH.
//!
//! Filled from appsink callbacks (streaming threads, memory work only) and read
//! by the HTTP server (tokio); `changed` wakes blocking playlist reloads.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;

/// Segments kept after they left the playlist window (players that loaded an
/// older playlist may still ask for them).
const KEEP_AFTER_WINDOW: usize = 3;
/// Parts are listed for this many most recent segments (LL-HLS: about 3 target durations).
const PART_SEGMENTS: usize = 3;

#[derive(Debug, Clone)]
pub struct Config {
    pub segment_duration: Duration,
    pub part_duration: Duration,
    pub low_latency: bool,
    pub dash: bool,
    pub playlist_length: usize,
    pub location: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Video {
        width: u32,
        height: u32,
        kbps: u32,
        framerate: (i32, i32),
    },
    Audio {
        kbps: u32,
        rate: u32,
        channels: u32,
    },
}

#[derive(Debug, Clone)]
pub struct Part {
    pub duration: Duration,
    pub independent: bool,
    pub data: Bytes,
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub seq: u64,
    /// Base media decode time (tfdt) in the rendition's timescale.
    pub tfdt: u64,
    pub duration: Duration,
    pub bytes: u64,
    /// In memory; `None` when written to `location`.
    pub data: Option<Bytes>,
    pub parts: Vec<Part>,
}

/// A segment still receiving its parts (low latency only).
#[derive(Debug, Clone)]
struct Open {
    seq: u64,
    tfdt: u64,
    parts: Vec<Part>,
}

#[derive(Debug)]
pub struct Rendition {
    pub name: String,
    pub kind: Kind,
    pub codecs: Option<String>,
    pub init: Option<Bytes>,
    pub timescale: u32,
    pub segments: VecDeque<Segment>,
    open: Option<Open>,
    next_seq: u64,
    peak_bps: u64,
    total_bytes: u64,
    total_duration: Duration,
}

impl Rendition {
    pub fn new(name: &str, kind: Kind) -> Self {
        Rendition {
            name: name.to_string(),
            kind,
            codecs: None,
            init: None,
            timescale: 1000,
            segments: VecDeque::new(),
            open: None,
            next_seq: 0,
            peak_bps: 0,
            total_bytes: 0,
            total_duration: Duration::ZERO,
        }
    }

    fn nominal_bps(&self) -> u64 {
        match self.kind {
            Kind::Video { kbps, .. } | Kind::Audio { kbps, .. } => kbps as u64 * 1000,
        }
    }

    /// Peak bits per second over the segments written (at least the nominal bitrate).
    pub fn bandwidth(&self) -> u64 {
        self.peak_bps.max(self.nominal_bps())
    }

    pub fn average_bandwidth(&self) -> u64 {
        if self.total_duration.is_zero() {
            self.nominal_bps()
        } else {
            (self.total_bytes as f64 * 8.0 / self.total_duration.as_secs_f64()) as u64
        }
    }

    fn is_video(&self) -> bool {
        matches!(self.kind, Kind::Video { .. })
    }

    /// Segment numbers listed in the playlist (the last `playlist_length`).
    fn window<'a>(&'a self, cfg: &Config) -> impl Iterator<Item = &'a Segment> {
        let skip = self.segments.len().saturating_sub(cfg.playlist_length);
        self.segments.iter().skip(skip)
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.segments.back().map(|s| s.seq)
    }

    /// Whether part `part` of segment `msn` (or the whole segment when `part` is None) exists.
    pub fn has(&self, msn: u64, part: Option<usize>) -> bool {
        if self.segments.back().is_some_and(|s| s.seq >= msn) {
            return true;
        }
        match (part, &self.open) {
            (Some(p), Some(o)) => o.seq == msn && o.parts.len() > p,
            _ => false,
        }
    }

    /// The next segment number (the one being or about to be written).
    pub fn next_msn(&self) -> u64 {
        self.open.as_ref().map(|o| o.seq).unwrap_or(self.next_seq)
    }

    pub fn part(&self, seq: u64, idx: usize) -> Option<Bytes> {
        if let Some(o) = self.open.as_ref().filter(|o| o.seq == seq) {
            return o.parts.get(idx).map(|p| p.data.clone());
        }
        self.segments
            .iter()
            .find(|s| s.seq == seq)
            .and_then(|s| s.parts.get(idx))
            .map(|p| p.data.clone())
    }
}

#[derive(Debug)]
pub struct Inner {
    pub renditions: Vec<Rendition>,
    pub ended: bool,
    /// Wall-clock time of running time `base_rt` (the first video frame).
    pub epoch: Option<(SystemTime, u64)>,
    generation: u64,
}

pub struct StreamMedia {
    pub name: String,
    pub cfg: Config,
    pub inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

/// What a fragment from cmafmux adds, as seen by [`StreamMedia::push`].
#[derive(Debug)]
pub enum Added {
    Nothing,
    /// A whole segment (duration, bytes) was completed.
    Segment(Duration, u64),
}

impl StreamMedia {
    pub fn new(name: &str, cfg: Config, renditions: Vec<Rendition>) -> Self {
        let (changed, _) = watch::channel(0);
        if let Some(dir) = &cfg.location {
            for r in &renditions {
                let _ = std::fs::create_dir_all(dir.join(&r.name));
            }
        }
        StreamMedia {
            name: name.to_string(),
            cfg,
            inner: Mutex::new(Inner {
                renditions,
                ended: false,
                epoch: None,
                generation: 0,
            }),
            changed,
        }
    }

    /// Adds a rendition (video rungs are known once the input's caps are); its index.
    pub fn add_rendition(&self, r: Rendition) -> usize {
        if let Some(dir) = &self.cfg.location {
            let _ = std::fs::create_dir_all(dir.join(&r.name));
        }
        let mut inner = self.inner.lock().unwrap();
        inner.renditions.push(r);
        inner.renditions.len() - 1
    }

    /// Removes the rendition called `name` (audio that never came); whether it was there.
    pub fn remove_rendition(&self, name: &str) -> bool {
        let mut inner = self.inner.lock().unwrap();
        let before = inner.renditions.len();
        inner.renditions.retain(|r| r.name != name);
        let removed = inner.renditions.len() != before;
        if removed {
            self.notify(&mut inner);
        }
        removed
    }

    /// Index of the rendition called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        let inner = self.inner.lock().unwrap();
        inner.renditions.iter().position(|r| r.name == name)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self, inner: &mut Inner) {
        inner.generation += 1;
        let g = inner.generation;
        self.changed.send_replace(g);
    }

    pub fn set_epoch(&self, base_rt: u64) {
        let mut inner = self.inner.lock().unwrap();
        if inner.epoch.is_none() {
            inner.epoch = Some((SystemTime::now(), base_rt));
        }
    }

    pub fn set_codecs(&self, rendition: usize, codecs: String) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(r) = inner.renditions.get_mut(rendition) {
            r.codecs = Some(codecs);
        }
    }

    pub fn set_init(&self, rendition: usize, init: Bytes) {
        let mut inner = self.inner.lock().unwrap();
        let Some(r) = inner.renditions.get_mut(rendition) else {
            return;
        };
        if let Some(ts) = super::mp4::timescale(&init) {
            r.timescale = ts;
        }
        if let Some(dir) = &self.cfg.location {
            let _ = std::fs::write(dir.join(&r.name).join("init.mp4"), &init);
        }
        r.init = Some(init);
        self.notify(&mut inner);
    }

    /// A fragment (no low latency: a whole segment) or chunk (low latency: a part;
    /// `starts_segment` on the first part of a segment) from cmafmux.
    pub fn push(
        &self,
        rendition: usize,
        data: Bytes,
        duration: Duration,
        starts_segment: bool,
    ) -> Added {
        let mut inner = self.inner.lock().unwrap();
        let Some(r) = inner.renditions.get_mut(rendition) else {
            return Added::Nothing;
        };
        let tfdt = super::mp4::base_decode_time(&data);
        let mut added = Added::Nothing;
        if !self.cfg.low_latency {
            let seq = r.next_seq;
            r.next_seq += 1;
            added = self.complete(
                r,
                Open {
                    seq,
                    tfdt: tfdt.unwrap_or(0),
                    parts: vec![Part {
                        duration,
                        independent: true,
                        data,
                    }],
                },
            );
        } else {
            if starts_segment && let Some(open) = r.open.take() {
                added = self.complete(r, open);
            }
            if r.open.is_none() {
                let seq = r.next_seq;
                r.next_seq += 1;
                r.open = Some(Open {
                    seq,
                    tfdt: tfdt.unwrap_or(0),
                    parts: Vec::new(),
                });
            }
            let open = r.open.as_mut().expect("opened above");
            let independent = open.parts.is_empty() || !r_is_video(&r.kind);
            open.parts.push(Part {
                duration,
                independent,
                data,
            });
        }
        self.notify(&mut inner);
        added
    }

    fn complete(&self, r: &mut Rendition, open: Open) -> Added {
        let duration: Duration = open.parts.iter().map(|p| p.duration).sum();
        let bytes: u64 = open.parts.iter().map(|p| p.data.len() as u64).sum();
        let data = if open.parts.len() == 1 {
            open.parts[0].data.clone()
        } else {
            let mut v = Vec::with_capacity(bytes as usize);
            for p in &open.parts {
                v.extend_from_slice(&p.data);
            }
            Bytes::from(v)
        };
        let data = match &self.cfg.location {
            Some(dir) => {
                let path = dir.join(&r.name).join(format!("seg{}.m4s", open.seq));
                if std::fs::write(&path, &data).is_ok() {
                    None
                } else {
                    Some(data)
                }
            }
            None => Some(data),
        };
        if !duration.is_zero() {
            let bps = (bytes as f64 * 8.0 / duration.as_secs_f64()) as u64;
            r.peak_bps = r.peak_bps.max(bps);
        }
        r.total_bytes += bytes;
        r.total_duration += duration;
        let parts = if self.cfg.low_latency {
            open.parts
        } else {
            Vec::new()
        };
        r.segments.push_back(Segment {
            seq: open.seq,
            tfdt: open.tfdt,
            duration,
            bytes,
            data,
            parts,
        });
        // Parts only for the most recent segments; segments only for the window and a few more.
        let n = r.segments.len();
        for s in r.segments.iter_mut().take(n.saturating_sub(PART_SEGMENTS)) {
            s.parts = Vec::new();
        }
        while r.segments.len() > self.cfg.playlist_length + KEEP_AFTER_WINDOW {
            if let Some(old) = r.segments.pop_front()
                && let Some(dir) = &self.cfg.location
            {
                let _ = std::fs::remove_file(dir.join(&r.name).join(format!("seg{}.m4s", old.seq)));
            }
        }
        Added::Segment(duration, bytes)
    }

    /// A new publisher after the stream ended: the old segments go, numbering
    /// continues (no URL is reused), init segments and codecs stay (same encoders),
    /// the DASH epoch restarts at `base_rt`.
    pub fn restart(&self, base_rt: u64) {
        let mut inner = self.inner.lock().unwrap();
        for r in inner.renditions.iter_mut() {
            if let Some(dir) = &self.cfg.location {
                for s in &r.segments {
                    let _ =
                        std::fs::remove_file(dir.join(&r.name).join(format!("seg{}.m4s", s.seq)));
                }
            }
            r.segments.clear();
            if let Some(open) = r.open.take() {
                r.next_seq = r.next_seq.max(open.seq + 1);
            }
            r.peak_bps = 0;
            r.total_bytes = 0;
            r.total_duration = Duration::ZERO;
        }
        inner.ended = false;
        inner.epoch = Some((SystemTime::now(), base_rt));
        self.notify(&mut inner);
    }

    /// The same renditions (init segments, codecs, encoders) for a new
    /// publisher served under another name: no segments yet, numbering
    /// continued (files in `location` never clash), DASH epoch at `base_rt`.
    /// This media keeps what it has (ended) for players still on its URLs.
    pub fn successor(&self, name: &str, base_rt: u64) -> StreamMedia {
        let inner = self.inner.lock().unwrap();
        let renditions = inner
            .renditions
            .iter()
            .map(|r| Rendition {
                name: r.name.clone(),
                kind: r.kind.clone(),
                codecs: r.codecs.clone(),
                init: r.init.clone(),
                timescale: r.timescale,
                segments: VecDeque::new(),
                open: None,
                next_seq: r.next_msn(),
                peak_bps: 0,
                total_bytes: 0,
                total_duration: Duration::ZERO,
            })
            .collect();
        let next = StreamMedia::new(name, self.cfg.clone(), renditions);
        next.inner.lock().unwrap().epoch = Some((SystemTime::now(), base_rt));
        next
    }

    /// End of input: the open segments are completed, playlists get ENDLIST, the MPD turns static.
    pub fn end(&self) -> Vec<(String, Duration, u64)> {
        let mut inner = self.inner.lock().unwrap();
        let mut done = Vec::new();
        let renditions = std::mem::take(&mut inner.renditions);
        let mut renditions = renditions;
        for r in renditions.iter_mut() {
            if let Some(open) = r.open.take()
                && !open.parts.is_empty()
                && let Added::Segment(d, b) = self.complete(r, open)
            {
                done.push((r.name.clone(), d, b));
            }
        }
        inner.renditions = renditions;
        inner.ended = true;
        self.notify(&mut inner);
        self.write_playlists(&inner);
        done
    }

    /// Segment data (memory or `location`).
    pub fn segment(&self, rendition: &str, seq: u64) -> Option<Bytes> {
        let inner = self.inner.lock().unwrap();
        let r = inner.renditions.iter().find(|r| r.name == rendition)?;
        let s = r.segments.iter().find(|s| s.seq == seq)?;
        match &s.data {
            Some(d) => Some(d.clone()),
            None => {
                let dir = self.cfg.location.as_ref()?;
                std::fs::read(dir.join(&r.name).join(format!("seg{seq}.m4s")))
                    .ok()
                    .map(Bytes::from)
            }
        }
    }

    /// Rewrites the playlists in `location` (when set).
    pub fn write_playlists(&self, inner: &Inner) {
        let Some(dir) = &self.cfg.location else {
            return;
        };
        for r in &inner.renditions {
            let _ = std::fs::write(
                dir.join(&r.name).join("index.m3u8"),
                media_playlist(r, &self.cfg, inner.ended, None),
            );
        }
        if let Some(m) = master_playlist(inner, None) {
            let _ = std::fs::write(dir.join("master.m3u8"), m);
        }
        if self.cfg.dash
            && let Some(m) = mpd(inner, &self.cfg, SystemTime::now(), None)
        {
            let _ = std::fs::write(dir.join("manifest.mpd"), m);
        }
    }
}

fn r_is_video(k: &Kind) -> bool {
    matches!(k, Kind::Video { .. })
}

fn secs(d: Duration) -> String {
    format!("{:.5}", d.as_secs_f64())
}

/// `&` as `&amp;` (session ids are hex, names `[A-Za-z0-9_-]`: nothing else to escape).
fn xml_attr(s: &str) -> String {
    s.replace('&', "&amp;")
}

fn with_session(uri: &str, session: Option<&str>) -> String {
    match session {
        Some(s) if !s.is_empty() => format!("{uri}?session={s}"),
        _ => uri.to_string(),
    }
}

/// A rendition's HLS media playlist (fMP4, sliding window; parts, preload hint
/// and server control with low latency; ENDLIST once ended).
pub fn media_playlist(r: &Rendition, cfg: &Config, ended: bool, session: Option<&str>) -> String {
    let mut out = String::with_capacity(1024);
    let window: Vec<&Segment> = r.window(cfg).collect();
    let longest = window
        .iter()
        .map(|s| s.duration)
        .max()
        .unwrap_or(cfg.segment_duration)
        .max(cfg.segment_duration);
    let target = longest.as_secs_f64().round().max(1.0) as u64;
    let ll = cfg.low_latency;
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:{}", if ll { 9 } else { 7 });
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let first = window.first().map(|s| s.seq).unwrap_or(r.next_msn());
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
    let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
    if ll {
        let part_target = cfg.part_duration.as_secs_f64();
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
            (part_target * 3.0).max(longest.as_secs_f64().min(part_target * 5.0))
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
    }
    let _ = writeln!(
        out,
        "#EXT-X-MAP:URI=\"{}\"",
        with_session("init.mp4", session)
    );
    for s in &window {
        if ll {
            for (i, p) in s.parts.iter().enumerate() {
                write_part(&mut out, s.seq, i, p, session);
            }
        }
        let _ = writeln!(out, "#EXTINF:{},", secs(s.duration));
        let _ = writeln!(
            out,
            "{}",
            with_session(&format!("seg{}.m4s", s.seq), session)
        );
    }
    if ll && !ended {
        let (seq, next) = match &r.open {
            Some(o) => {
                for (i, p) in o.parts.iter().enumerate() {
                    write_part(&mut out, o.seq, i, p, session);
                }
                (o.seq, o.parts.len())
            }
            None => (r.next_seq, 0),
        };
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            with_session(&format!("part{seq}.{next}.m4s"), session)
        );
    }
    if ended {
        let _ = writeln!(out, "#EXT-X-ENDLIST");
    }
    out
}

fn write_part(out: &mut String, seq: u64, i: usize, p: &Part, session: Option<&str>) {
    let _ = writeln!(
        out,
        "#EXT-X-PART:DURATION={:.5},URI=\"{}\"{}",
        p.duration.as_secs_f64(),
        with_session(&format!("part{seq}.{i}.m4s"), session),
        if p.independent {
            ",INDEPENDENT=YES"
        } else {
            ""
        }
    );
}

/// The multivariant playlist, once every rendition has a segment and its codec is known.
pub fn master_playlist(inner: &Inner, session: Option<&str>) -> Option<String> {
    if !inner.renditions.iter().any(|r| r.is_video())
        || inner
            .renditions
            .iter()
            .any(|r| r.segments.is_empty() || r.codecs.is_none())
    {
        return None;
    }
    let audio = inner.renditions.iter().find(|r| !r.is_video());
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    if let Some(a) = audio {
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"{}\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"{}\",URI=\"{}\"",
            a.name,
            match a.kind {
                Kind::Audio { channels, .. } => channels,
                _ => 2,
            },
            with_session(&format!("{}/index.m3u8", a.name), session)
        );
    }
    for r in inner.renditions.iter().filter(|r| r.is_video()) {
        let Kind::Video {
            width,
            height,
            framerate,
            ..
        } = r.kind
        else {
            continue;
        };
        let mut codecs = r.codecs.clone().unwrap_or_default();
        let (mut bw, mut avg) = (r.bandwidth(), r.average_bandwidth());
        if let Some(a) = audio {
            codecs = format!("{codecs},{}", a.codecs.clone().unwrap_or_default());
            bw += a.bandwidth();
            avg += a.average_bandwidth();
        }
        let fps = if framerate.1 > 0 {
            framerate.0 as f64 / framerate.1 as f64
        } else {
            30.0
        };
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={bw},AVERAGE-BANDWIDTH={avg},RESOLUTION={width}x{height},CODECS=\"{codecs}\",FRAME-RATE={fps:.3}"
        );
        if audio.is_some() {
            out.push_str(",AUDIO=\"aac\"");
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "{}",
            with_session(&format!("{}/index.m3u8", r.name), session)
        );
    }
    Some(out)
}

fn iso_duration(d: Duration) -> String {
    format!("PT{:.3}S", d.as_secs_f64())
}

fn iso_time(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The DASH MPD over the same CMAF segments: dynamic while live (SegmentTimeline
/// of the window), static once ended. With a `session`, the segment templates
/// carry `?session=ID` (as the HLS media playlists do) and a `Location` with
/// it makes the player's refreshes of the MPD carry it too.
pub fn mpd(inner: &Inner, cfg: &Config, now: SystemTime, session: Option<&str>) -> Option<String> {
    if !inner.renditions.iter().any(|r| r.is_video())
        || inner
            .renditions
            .iter()
            .any(|r| r.segments.is_empty() || r.codecs.is_none())
    {
        return None;
    }
    let (epoch_wall, base_rt) = inner.epoch.unwrap_or((now, 0));
    let seg = cfg.segment_duration;
    let window = seg * cfg.playlist_length as u32;
    let longest = inner
        .renditions
        .iter()
        .flat_map(|r| r.segments.iter().map(|s| s.duration))
        .max()
        .unwrap_or(seg);
    let mut out = String::with_capacity(4096);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let profiles = "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019";
    if inner.ended {
        let total = inner
            .renditions
            .iter()
            .map(|r| r.window(cfg).map(|s| s.duration).sum::<Duration>())
            .max()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"{profiles}\" type=\"static\" mediaPresentationDuration=\"{}\" minBufferTime=\"{}\" maxSegmentDuration=\"{}\">",
            iso_duration(total),
            iso_duration(seg * 2),
            iso_duration(longest)
        );
    } else {
        let _ = writeln!(
            out,
            "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"{profiles}\" type=\"dynamic\" availabilityStartTime=\"{}\" publishTime=\"{}\" minimumUpdatePeriod=\"{}\" minBufferTime=\"{}\" timeShiftBufferDepth=\"{}\" suggestedPresentationDelay=\"{}\" maxSegmentDuration=\"{}\">",
            iso_time(epoch_wall),
            iso_time(now),
            iso_duration(seg),
            iso_duration(seg * 2),
            iso_duration(window),
            iso_duration(seg * 3),
            iso_duration(longest)
        );
    }
    if let Some(s) = session.filter(|s| !s.is_empty()) {
        // Relative: resolved against the MPD's URL (dash.js, ISO/IEC 23009-1 5.3.1.2).
        let _ = writeln!(out, "  <Location>manifest.mpd?session={s}</Location>");
    }
    out.push_str("  <Period id=\"0\" start=\"PT0S\">\n");
    let groups: [(&str, bool); 2] = [("video", true), ("audio", false)];
    for (id, (content, video)) in groups.iter().enumerate() {
        let reps: Vec<&Rendition> = inner
            .renditions
            .iter()
            .filter(|r| r.is_video() == *video)
            .collect();
        if reps.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "    <AdaptationSet id=\"{id}\" contentType=\"{content}\" mimeType=\"{content}/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\">"
        );
        for r in reps {
            let ts = r.timescale.max(1) as u64;
            let pto = (base_rt as u128 * ts as u128 / 1_000_000_000) as u64;
            let codecs = r.codecs.clone().unwrap_or_default();
            match r.kind {
                Kind::Video {
                    width,
                    height,
                    framerate,
                    ..
                } => {
                    let _ = writeln!(
                        out,
                        "      <Representation id=\"{}\" bandwidth=\"{}\" codecs=\"{codecs}\" width=\"{width}\" height=\"{height}\" frameRate=\"{}/{}\" sar=\"1:1\">",
                        r.name,
                        r.bandwidth(),
                        framerate.0,
                        framerate.1.max(1)
                    );
                }
                Kind::Audio { rate, channels, .. } => {
                    let _ = writeln!(
                        out,
                        "      <Representation id=\"{}\" bandwidth=\"{}\" codecs=\"{codecs}\" audioSamplingRate=\"{rate}\">\n        <AudioChannelConfiguration schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"{channels}\"/>",
                        r.name,
                        r.bandwidth()
                    );
                }
            }
            let window: Vec<&Segment> = r.window(cfg).collect();
            let start = window.first().map(|s| s.seq).unwrap_or(0);
            let _ = writeln!(
                out,
                "        <SegmentTemplate timescale=\"{ts}\" presentationTimeOffset=\"{pto}\" startNumber=\"{start}\" initialization=\"{}\" media=\"{}\">\n          <SegmentTimeline>",
                xml_attr(&with_session(&format!("{}/init.mp4", r.name), session)),
                xml_attr(&with_session(
                    &format!("{}/seg$Number$.m4s", r.name),
                    session
                )),
            );
            for (i, s) in window.iter().enumerate() {
                let d = (s.duration.as_nanos() * ts as u128 / 1_000_000_000) as u64;
                if i == 0 {
                    let _ = writeln!(out, "            <S t=\"{}\" d=\"{d}\"/>", s.tfdt);
                } else {
                    let _ = writeln!(out, "            <S d=\"{d}\"/>");
                }
            }
            out.push_str("          </SegmentTimeline>\n        </SegmentTemplate>\n      </Representation>\n");
        }
        out.push_str("    </AdaptationSet>\n");
    }
    out.push_str("  </Period>\n");
    if !inner.ended {
        // After the Period (schema order): the server's clock, so players need no time server (dash.js asks
        // time.akamai.com without one).
        let _ = writeln!(
            out,
            "  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:direct:2014\" value=\"{}\"/>",
            iso_time(now)
        );
    }
    out.push_str("</MPD>\n");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ll: bool) -> Config {
        Config {
            segment_duration: Duration::from_secs(1),
            part_duration: Duration::from_millis(200),
            low_latency: ll,
            dash: true,
            playlist_length: 3,
            location: None,
        }
    }

    fn media(ll: bool) -> StreamMedia {
        let v = Rendition::new(
            "720p",
            Kind::Video {
                width: 1280,
                height: 720,
                kbps: 2800,
                framerate: (30, 1),
            },
        );
        let a = Rendition::new(
            "audio",
            Kind::Audio {
                kbps: 128,
                rate: 48000,
                channels: 2,
            },
        );
        let m = StreamMedia::new("live", cfg(ll), vec![v, a]);
        m.set_codecs(0, "avc1.64001f".into());
        m.set_codecs(1, "mp4a.40.2".into());
        m
    }

    #[test]
    fn sliding_window_and_endlist() {
        let m = media(false);
        for _ in 0..6 {
            m.push(
                0,
                Bytes::from(vec![0u8; 350_000]),
                Duration::from_secs(1),
                true,
            );
            m.push(
                1,
                Bytes::from(vec![0u8; 16_000]),
                Duration::from_secs(1),
                true,
            );
        }
        let inner = m.inner.lock().unwrap();
        let p = media_playlist(&inner.renditions[0], &m.cfg, false, Some("abc"));
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:3\n"), "{p}");
        assert!(p.contains("seg5.m4s?session=abc"), "{p}");
        assert!(!p.contains("seg2.m4s"), "{p}");
        assert!(!p.contains("ENDLIST"));
        let master = master_playlist(&inner, Some("abc")).unwrap();
        // DASH hands out the session as HLS does: segment templates and Location.
        let dash = mpd(&inner, &m.cfg, SystemTime::now(), Some("abc")).unwrap();
        let doc = roxmltree::Document::parse(&dash).unwrap();
        let location = doc.descendants().find(|n| n.has_tag_name("Location"));
        assert_eq!(
            location.and_then(|n| n.text()),
            Some("manifest.mpd?session=abc"),
            "{dash}"
        );
        let templates: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("SegmentTemplate"))
            .collect();
        assert!(!templates.is_empty());
        for t in templates {
            assert!(
                t.attribute("media")
                    .unwrap()
                    .ends_with("/seg$Number$.m4s?session=abc")
            );
            assert!(
                t.attribute("initialization")
                    .unwrap()
                    .ends_with("/init.mp4?session=abc")
            );
        }
        let plain = mpd(&inner, &m.cfg, SystemTime::now(), None).unwrap();
        assert!(
            !plain.contains("session") && !plain.contains("<Location"),
            "{plain}"
        );
        assert!(master.contains("BANDWIDTH=2928000,AVERAGE-BANDWIDTH=2928000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\",FRAME-RATE=30.000,AUDIO=\"aac\""), "{master}");
        drop(inner);
        m.end();
        let inner = m.inner.lock().unwrap();
        assert!(
            media_playlist(&inner.renditions[0], &m.cfg, inner.ended, None)
                .ends_with("#EXT-X-ENDLIST\n")
        );
        let mpd = mpd(&inner, &m.cfg, SystemTime::now(), None).unwrap();
        assert!(mpd.contains("type=\"static\""), "{mpd}");
    }

    #[test]
    fn low_latency_parts_and_hint() {
        let m = media(true);
        for seg in 0..2 {
            for part in 0..5 {
                m.push(
                    0,
                    Bytes::from(vec![1u8; 1000]),
                    Duration::from_millis(200),
                    part == 0,
                );
                let _ = seg;
            }
        }
        let inner = m.inner.lock().unwrap();
        let r = &inner.renditions[0];
        let p = media_playlist(r, &m.cfg, false, None);
        assert!(
            p.contains("#EXT-X-PART:DURATION=0.20000,URI=\"part0.0.m4s\",INDEPENDENT=YES"),
            "{p}"
        );
        assert!(p.contains("#EXTINF:1.00000,\nseg0.m4s"), "{p}");
        assert!(
            p.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part1.5.m4s\""),
            "{p}"
        );
        assert!(r.has(1, Some(4)) && !r.has(1, Some(5)) && r.has(0, None) && !r.has(1, None));
        assert_eq!(r.part(1, 2).map(|b| b.len()), Some(1000));
    }

    #[test]
    fn iso_time_is_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_676_800_123);
        assert_eq!(iso_time(t), "2025-12-02T12:00:00.123Z");
    }
}
