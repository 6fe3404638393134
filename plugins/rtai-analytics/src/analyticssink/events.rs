//! Turns what arrives on the sink's pads (detections per frame, speech segment
//! events, audio levels, transcripts, vision-language captions) into events
//! with a clip-worthiness score, and high scores into clip markers.
//! No GStreamer here: times are running times in ns, so it is tested as is.
//!
//! Scoring (docs/analyticssink.md, "clip_worthy_score"): each event type has
//! signals in 0..1, combined as a noisy-OR `1 − Π(1 − wᵢ·sᵢ)`:
//!
//! | event | signal | weight |
//! | --- | --- | --- |
//! | object_appear | `new_class`: class not seen on the stream within `novelty-window` | 0.7 |
//! | object_appear | `count_spike`: objects in the frame above their moving average, (n − avg)/max(avg, 1) | 0.5 |
//! | object_appear | × (0.5 + 0.5·confidence) | |
//! | speech | `keyword`: a `keywords` entry in the transcript | 0.8 |
//! | speech | `energy`: segment level above the speaker's running average, dB/10 | 0.4 |
//! | speech | `rate`: with prosody, syllables/s above the speaker's running average, (r/avg − 1)/0.5; without, (words/s − 2.5)/2 | 0.4 |
//! | speech | `pitch`: F0 mean above the speaker's running average, semitones/4 | 0.4 |
//! | scene | `keyword` in the caption | 0.8 |
//! | scene | `novelty`: 1 − word overlap (Jaccard) with the previous caption | 0.5 |
//! | object_leave | none (0) | |

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rtai_core::prosody::Prosody;

pub use crate::event::{Event, EventKind, TimeSource};
use crate::event::{SCHEMA_VERSION, new_event_id, now_ms, rfc3339_ms};

/// One detection read from a ROI meta.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub label: String,
    pub class_id: Option<i32>,
    pub confidence: f64,
    pub track_id: Option<i64>,
    pub model: Option<String>,
    pub rect: (u32, u32, u32, u32),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub element: String,
    /// Name of the pipeline the element runs in.
    pub pipeline: String,
    pub leave_timeout: u64,
    pub novelty_window: u64,
    pub keywords: Vec<String>,
    pub clip_threshold: f64,
    pub clip_padding: u64,
    pub transcript_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            element: "analyticssink0".into(),
            pipeline: "pipeline0".into(),
            leave_timeout: 1_000_000_000,
            novelty_window: 60_000_000_000,
            keywords: Vec::new(),
            clip_threshold: 0.7,
            clip_padding: 2_000_000_000,
            transcript_wait: Duration::from_secs(2),
        }
    }
}

/// Parses the `keywords` property: comma separated, case-insensitive, blanks ignored.
pub fn parse_keywords(s: &str) -> Vec<String> {
    s.split(',')
        .map(|k| k.trim().to_lowercase())
        .filter(|k| !k.is_empty())
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TrackKey {
    Track(i64),
    /// Untracked detections: one pseudo-track per class.
    Class(String),
}

#[derive(Debug)]
struct Track {
    label: String,
    first_seen: u64,
    last_seen: u64,
    frames: u64,
    max_confidence: f64,
    model: Option<String>,
}

#[derive(Debug)]
struct Speech {
    start: u64,
    end: Option<u64>,
    ended_at: Option<Instant>,
    committed: bool,
    level_sum_db: f64,
    level_frames: u64,
    transcript: Option<(String, Option<f64>, Option<String>)>,
    /// What prosodymeter measured (its `rtai-prosody` event).
    prosody: Option<Prosody>,
}

#[derive(Debug, Default)]
struct StreamAgg {
    tracks: HashMap<TrackKey, Track>,
    class_last_seen: HashMap<String, u64>,
    count_avg: Option<f64>,
    speech: HashMap<u64, Speech>,
    /// Running average of committed segments' levels (dBFS).
    speech_db_avg: Option<f64>,
    /// Running averages of the speaker's F0 mean (Hz) and syllable rate (1/s).
    pitch_avg: Option<f64>,
    syllable_rate_avg: Option<f64>,
    last_caption: Option<String>,
    last_clip_end: Option<u64>,
    /// Set by [`Aggregator::set_source_id`]; `<pipeline>/<stream>` until then.
    source_id: Option<String>,
    /// UTC ns = running time + offset, and where the offset comes from.
    time_base: Option<(i128, TimeSource)>,
}

pub struct Aggregator {
    pub cfg: Config,
    streams: HashMap<String, StreamAgg>,
}

fn noisy_or(signals: &[(f64, f64)]) -> f64 {
    1.0 - signals
        .iter()
        .map(|(w, s)| 1.0 - w * s.clamp(0.0, 1.0))
        .product::<f64>()
}

fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

impl Aggregator {
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            streams: HashMap::new(),
        }
    }

    /// The id events of `stream` carry as `source_id`.
    pub fn set_source_id(&mut self, stream: &str, source_id: String) {
        self.streams
            .entry(stream.to_string())
            .or_default()
            .source_id = Some(source_id);
    }

    /// How `stream`'s running time maps to UTC: `utc_ns = running_time + offset_ns`.
    /// A reference timestamp wins over the clock once a stream had one.
    pub fn set_time_base(&mut self, stream: &str, offset_ns: i128, source: TimeSource) {
        let agg = self.streams.entry(stream.to_string()).or_default();
        if source == TimeSource::Clock
            && agg
                .time_base
                .is_some_and(|(_, s)| s == TimeSource::Reference)
        {
            return;
        }
        agg.time_base = Some((offset_ns, source));
    }

    #[allow(clippy::too_many_arguments)]
    fn make(
        &mut self,
        stream: &str,
        kind: EventKind,
        start: u64,
        end: Option<u64>,
        confidence: Option<f64>,
        score: f64,
        label: Option<String>,
        track_id: Option<i64>,
        text: Option<String>,
        data: serde_json::Value,
    ) -> Event {
        let created_ms = now_ms();
        let agg = self.streams.entry(stream.to_string()).or_default();
        let source_id = agg
            .source_id
            .clone()
            .unwrap_or_else(|| format!("{}/{stream}", self.cfg.pipeline));
        let (event_time_ms, time_source) = match agg.time_base {
            Some((offset, source)) => (
                ((start as i128 + offset).div_euclid(1_000_000)) as i64,
                source,
            ),
            None => (created_ms, TimeSource::Wall),
        };
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: new_event_id(),
            kind,
            source_id,
            pipeline: self.cfg.pipeline.clone(),
            element: self.cfg.element.clone(),
            stream: stream.to_string(),
            event_time: rfc3339_ms(event_time_ms),
            event_time_ms,
            time_source,
            start_ns: start,
            end_ns: end,
            created_ms,
            confidence,
            clip_worthy_score: (score * 1000.0).round() / 1000.0,
            label,
            track_id,
            text,
            data,
        }
    }

    /// Appends a clip marker after `event` when its score reaches the threshold
    /// and it is not already inside the stream's previous clip.
    fn with_clip(&mut self, event: Event, out: &mut Vec<Event>) {
        let score = event.clip_worthy_score;
        let worthy = score >= self.cfg.clip_threshold && event.kind != EventKind::Clip;
        let stream = event.stream.clone();
        let (start, end) = (event.start_ns, event.end_ns.unwrap_or(event.start_ns));
        let source = event.event_id.clone();
        let reason = event.kind.as_str();
        out.push(event);
        if !worthy {
            return;
        }
        let clip_start = start.saturating_sub(self.cfg.clip_padding);
        let clip_end = end + self.cfg.clip_padding;
        let agg = self.streams.entry(stream.clone()).or_default();
        if agg.last_clip_end.is_some_and(|e| e >= clip_end) {
            return;
        }
        agg.last_clip_end = Some(clip_end);
        let clip = self.make(
            &stream,
            EventKind::Clip,
            clip_start,
            Some(clip_end),
            None,
            score,
            None,
            None,
            None,
            serde_json::json!({ "reason": reason, "source": source }),
        );
        out.push(clip);
    }

    /// Detections of one frame at running time `rt`.
    pub fn frame(&mut self, stream: &str, rt: u64, detections: &[Detection]) -> Vec<Event> {
        let mut out = Vec::new();
        let novelty_window = self.cfg.novelty_window;
        let agg = self.streams.entry(stream.to_string()).or_default();
        let n = detections.len() as f64;
        let avg = agg.count_avg.unwrap_or(n);
        let count_spike = ((n - avg) / avg.max(1.0)).clamp(0.0, 1.0);
        agg.count_avg = Some(match agg.count_avg {
            Some(a) => 0.9 * a + 0.1 * n,
            None => n,
        });
        let mut appeared = Vec::new();
        let mut seen_classes = HashSet::new();
        for d in detections {
            let key = d
                .track_id
                .map(TrackKey::Track)
                .unwrap_or_else(|| TrackKey::Class(d.label.clone()));
            match agg.tracks.get_mut(&key) {
                Some(t) => {
                    t.last_seen = t.last_seen.max(rt);
                    t.frames += 1;
                    t.max_confidence = t.max_confidence.max(d.confidence);
                }
                None => {
                    let new_class = agg
                        .class_last_seen
                        .get(&d.label)
                        .is_none_or(|&last| rt.saturating_sub(last) > novelty_window);
                    agg.tracks.insert(
                        key,
                        Track {
                            label: d.label.clone(),
                            first_seen: rt,
                            last_seen: rt,
                            frames: 1,
                            max_confidence: d.confidence,
                            model: d.model.clone(),
                        },
                    );
                    appeared.push((d.clone(), new_class));
                }
            }
            seen_classes.insert(d.label.clone());
        }
        for class in seen_classes {
            agg.class_last_seen.insert(class, rt);
        }
        // Tracks not seen for leave-timeout have left.
        let timeout = self.cfg.leave_timeout;
        let gone: Vec<TrackKey> = agg
            .tracks
            .iter()
            .filter(|(_, t)| rt.saturating_sub(t.last_seen) > timeout)
            .map(|(k, _)| k.clone())
            .collect();
        let left: Vec<(TrackKey, Track)> = gone
            .into_iter()
            .filter_map(|k| agg.tracks.remove(&k).map(|t| (k, t)))
            .collect();
        for (d, new_class) in appeared {
            let signals = [(0.7, if new_class { 1.0 } else { 0.0 }), (0.5, count_spike)];
            let score = noisy_or(&signals) * (0.5 + 0.5 * d.confidence.clamp(0.0, 1.0));
            let ev = self.make(
                stream,
                EventKind::ObjectAppear,
                rt,
                None,
                Some(d.confidence),
                score,
                Some(d.label.clone()),
                d.track_id,
                None,
                serde_json::json!({
                    "signals": { "new_class": new_class, "count_spike": count_spike },
                    "class_id": d.class_id, "model": d.model, "objects_in_frame": detections.len(),
                    "rect": [d.rect.0, d.rect.1, d.rect.2, d.rect.3],
                }),
            );
            self.with_clip(ev, &mut out);
        }
        for (key, t) in left {
            out.push(self.leave_event(stream, key, t));
        }
        out
    }

    fn leave_event(&mut self, stream: &str, key: TrackKey, t: Track) -> Event {
        let track_id = match key {
            TrackKey::Track(id) => Some(id),
            TrackKey::Class(_) => None,
        };
        self.make(
            stream,
            EventKind::ObjectLeave,
            t.first_seen,
            Some(t.last_seen),
            Some(t.max_confidence),
            0.0,
            Some(t.label),
            track_id,
            None,
            serde_json::json!({ "frames": t.frames, "model": t.model }),
        )
    }

    pub fn segment_start(&mut self, stream: &str, id: u64, rt: u64) {
        let agg = self.streams.entry(stream.to_string()).or_default();
        agg.speech.insert(
            id,
            Speech {
                start: rt,
                end: None,
                ended_at: None,
                committed: false,
                level_sum_db: 0.0,
                level_frames: 0,
                transcript: None,
                prosody: None,
            },
        );
    }

    pub fn segment_commit(&mut self, stream: &str, id: u64) {
        if let Some(s) = self
            .streams
            .get_mut(stream)
            .and_then(|a| a.speech.get_mut(&id))
        {
            s.committed = true;
        }
    }

    pub fn segment_cancel(&mut self, stream: &str, id: u64) {
        if let Some(a) = self.streams.get_mut(stream) {
            a.speech.remove(&id);
        }
    }

    /// The segment ended at `rt`; its event is made once its transcript is
    /// there or `transcript-wait` has passed.
    pub fn segment_end(&mut self, stream: &str, id: u64, rt: u64) -> Vec<Event> {
        if let Some(s) = self
            .streams
            .get_mut(stream)
            .and_then(|a| a.speech.get_mut(&id))
        {
            s.end = Some(rt);
            s.ended_at = Some(Instant::now());
            s.committed = true;
            if s.transcript.is_some() {
                return self.finish_speech(stream, id);
            }
        }
        Vec::new()
    }

    /// The audio level (dBFS) of one buffer of the open segments of `stream`.
    pub fn audio_level(&mut self, stream: &str, segment: Option<u64>, db: f64) {
        if !db.is_finite() {
            return;
        }
        if let Some(a) = self.streams.get_mut(stream) {
            for (id, s) in a.speech.iter_mut() {
                if s.end.is_none() && segment.is_none_or(|seg| seg == *id) {
                    s.level_sum_db += db;
                    s.level_frames += 1;
                }
            }
        }
    }

    /// The prosody of a segment (prosodymeter's `rtai-prosody` event), on this
    /// stream or, for a segment that started on another pad, on that one.
    pub fn prosody(&mut self, stream: &str, p: Prosody) {
        let owner = if self
            .streams
            .get(stream)
            .is_some_and(|a| a.speech.contains_key(&p.segment_id))
        {
            Some(stream.to_string())
        } else {
            self.streams
                .iter()
                .find(|(_, a)| a.speech.contains_key(&p.segment_id))
                .map(|(k, _)| k.clone())
        };
        if let Some(s) = owner
            .and_then(|o| self.streams.get_mut(&o))
            .and_then(|a| a.speech.get_mut(&p.segment_id))
        {
            s.prosody = Some(p);
        }
    }

    /// A transcript; with a segment id it completes that segment's speech event,
    /// without one (or for an unknown segment) it is a speech event of its own.
    // The fields of an inference result, each optional in its own way.
    #[allow(clippy::too_many_arguments)]
    pub fn transcript(
        &mut self,
        stream: &str,
        segment: Option<u64>,
        text: &str,
        rt: u64,
        duration: Option<u64>,
        confidence: Option<f64>,
        model: Option<String>,
    ) -> Vec<Event> {
        let text = text.trim();
        if text.is_empty() {
            return Vec::new();
        }
        // The segment may have started on another pad (audio) than the text's.
        let owner = segment.and_then(|id| {
            if self
                .streams
                .get(stream)
                .is_some_and(|a| a.speech.contains_key(&id))
            {
                Some(stream.to_string())
            } else {
                self.streams
                    .iter()
                    .find(|(_, a)| a.speech.contains_key(&id))
                    .map(|(k, _)| k.clone())
            }
        });
        if let (Some(id), Some(owner)) = (segment, owner) {
            let s = self
                .streams
                .get_mut(&owner)
                .and_then(|a| a.speech.get_mut(&id))
                .expect("found above");
            match &mut s.transcript {
                Some((t, _, _)) => {
                    t.push(' ');
                    t.push_str(text);
                }
                None => s.transcript = Some((text.to_string(), confidence, model)),
            }
            if s.end.is_some() {
                return self.finish_speech(&owner, id);
            }
            return Vec::new();
        }
        let agg = self.streams.entry(stream.to_string()).or_default();
        let id = u64::MAX - agg.speech.len() as u64;
        agg.speech.insert(
            id,
            Speech {
                start: rt,
                end: Some(rt + duration.unwrap_or(0)),
                ended_at: Some(Instant::now()),
                committed: true,
                level_sum_db: 0.0,
                level_frames: 0,
                transcript: Some((text.to_string(), confidence, model)),
                prosody: None,
            },
        );
        let mut out = self.finish_speech(stream, id);
        if let Some(e) = out.first_mut() {
            e.data["segment_id"] = serde_json::Value::Null;
        }
        out
    }

    fn finish_speech(&mut self, stream: &str, id: u64) -> Vec<Event> {
        let Some(agg) = self.streams.get_mut(stream) else {
            return Vec::new();
        };
        let Some(s) = agg.speech.remove(&id) else {
            return Vec::new();
        };
        let end = s.end.unwrap_or(s.start);
        let seconds = (end.saturating_sub(s.start) as f64 / 1e9).max(0.0);
        let (text, confidence, model) = match s.transcript {
            Some((t, c, m)) => (Some(t), c, m),
            None => (None, None, None),
        };
        let prosody = s.prosody.clone();
        let level = match &prosody {
            Some(p) => Some(p.level_db),
            None => (s.level_frames > 0).then(|| s.level_sum_db / s.level_frames as f64),
        };
        let energy = match (level, agg.speech_db_avg) {
            (Some(l), Some(avg)) => ((l - avg) / 10.0).clamp(0.0, 1.0),
            _ => 0.0,
        };
        if let Some(l) = level {
            agg.speech_db_avg = Some(match agg.speech_db_avg {
                Some(a) => 0.8 * a + 0.2 * l,
                None => l,
            });
        }
        let word_set = text.as_deref().map(words).unwrap_or_default();
        let word_count = text
            .as_deref()
            .map(|t| t.split_whitespace().count())
            .unwrap_or(0);
        let rate_wps = if seconds > 0.0 {
            word_count as f64 / seconds
        } else {
            0.0
        };
        // Against the speaker's own running baselines (prosody), each updated after scoring.
        let mut pitch = 0.0;
        let mut prosody_rate = None;
        if let Some(p) = &prosody {
            if p.f0_mean > 0.0 {
                if let Some(avg) = agg.pitch_avg {
                    pitch = (12.0 * (p.f0_mean / avg).log2() / 4.0).clamp(0.0, 1.0);
                }
                agg.pitch_avg = Some(match agg.pitch_avg {
                    Some(a) => 0.8 * a + 0.2 * p.f0_mean,
                    None => p.f0_mean,
                });
            }
            if p.syllables > 0 && p.rate > 0.0 {
                prosody_rate = Some(match agg.syllable_rate_avg {
                    Some(avg) => ((p.rate / avg - 1.0) / 0.5).clamp(0.0, 1.0),
                    None => 0.0,
                });
                agg.syllable_rate_avg = Some(match agg.syllable_rate_avg {
                    Some(a) => 0.8 * a + 0.2 * p.rate,
                    None => p.rate,
                });
            }
        }
        let rate = match prosody_rate {
            Some(r) => r,
            None if seconds > 0.0 => ((rate_wps - 2.5) / 2.0).clamp(0.0, 1.0),
            None => 0.0,
        };
        let hits: Vec<&String> = self
            .cfg
            .keywords
            .iter()
            .filter(|k| {
                word_set.contains(*k)
                    || text
                        .as_deref()
                        .is_some_and(|t| k.contains(' ') && t.to_lowercase().contains(k.as_str()))
            })
            .collect();
        let keyword = if hits.is_empty() { 0.0 } else { 1.0 };
        let score = noisy_or(&[(0.8, keyword), (0.4, energy), (0.4, rate), (0.4, pitch)]);
        let mut data = serde_json::json!({
            "segment_id": id,
            "signals": { "keyword": hits, "energy": energy, "rate": rate, "pitch": pitch },
            "level_dbfs": level, "words_per_second": rate_wps, "model": model,
        });
        if let Some(p) = &prosody {
            data["prosody"] = serde_json::json!({
                "f0_mean_hz": p.f0_mean, "f0_min_hz": p.f0_min, "f0_max_hz": p.f0_max,
                "f0_range_semitones": p.f0_range_semitones(), "level_dbfs": p.level_db,
                "syllables": p.syllables, "syllables_per_second": p.rate,
                "voiced_ratio": p.voiced_ratio,
            });
        }
        let ev = self.make(
            stream,
            EventKind::Speech,
            s.start,
            Some(end),
            confidence,
            score,
            None,
            None,
            text,
            data,
        );
        let mut out = Vec::new();
        self.with_clip(ev, &mut out);
        out
    }

    /// A vision-language model's description of the scene.
    pub fn caption(
        &mut self,
        stream: &str,
        text: &str,
        rt: u64,
        confidence: Option<f64>,
        model: Option<String>,
    ) -> Vec<Event> {
        let text = text.trim();
        if text.is_empty() {
            return Vec::new();
        }
        let agg = self.streams.entry(stream.to_string()).or_default();
        if agg.last_caption.as_deref() == Some(text) {
            return Vec::new();
        }
        let now = words(text);
        let novelty = match &agg.last_caption {
            Some(prev) => {
                let prev = words(prev);
                let union = now.union(&prev).count().max(1) as f64;
                1.0 - now.intersection(&prev).count() as f64 / union
            }
            None => 1.0,
        };
        agg.last_caption = Some(text.to_string());
        let hits: Vec<&String> = self
            .cfg
            .keywords
            .iter()
            .filter(|k| now.contains(*k))
            .collect();
        let keyword = if hits.is_empty() { 0.0 } else { 1.0 };
        let score = noisy_or(&[(0.8, keyword), (0.5, novelty)]);
        let data = serde_json::json!({ "signals": { "keyword": hits, "novelty": novelty }, "model": model });
        let ev = self.make(
            stream,
            EventKind::Scene,
            rt,
            None,
            confidence,
            score,
            None,
            None,
            Some(text.to_string()),
            data,
        );
        let mut out = Vec::new();
        self.with_clip(ev, &mut out);
        out
    }

    /// Speech segments whose transcript did not come within `transcript-wait`.
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let wait = self.cfg.transcript_wait;
        let mut due: Vec<(u64, String, u64)> = self
            .streams
            .iter()
            .flat_map(|(name, a)| {
                a.speech
                    .iter()
                    .filter(|(_, s)| s.ended_at.is_some_and(|t| now.duration_since(t) >= wait))
                    .map(move |(id, s)| (s.start, name.clone(), *id))
            })
            .collect();
        // In stream order: each segment's energy is scored against the ones before it.
        due.sort();
        due.into_iter()
            .flat_map(|(_, stream, id)| self.finish_speech(&stream, id))
            .collect()
    }

    /// End of stream on `stream` (or every stream): open tracks leave, ended
    /// segments are emitted, open uncommitted ones are dropped.
    pub fn finish(&mut self, stream: Option<&str>) -> Vec<Event> {
        let names: Vec<String> = match stream {
            Some(s) => vec![s.to_string()],
            None => self.streams.keys().cloned().collect(),
        };
        let mut out = Vec::new();
        for name in names {
            let Some(agg) = self.streams.get_mut(&name) else {
                continue;
            };
            let tracks: Vec<(TrackKey, Track)> = agg.tracks.drain().collect();
            let mut segments: Vec<(u64, u64, bool)> = agg
                .speech
                .iter()
                .map(|(id, s)| (s.start, *id, s.committed))
                .collect();
            segments.sort();
            let mut tracks = tracks;
            tracks.sort_by_key(|(_, t)| t.first_seen);
            for (key, t) in tracks {
                out.push(self.leave_event(&name, key, t));
            }
            for (_, id, committed) in segments {
                if committed {
                    if let Some(s) = self
                        .streams
                        .get_mut(&name)
                        .and_then(|a| a.speech.get_mut(&id))
                        && s.end.is_none()
                    {
                        s.end = Some(s.start);
                    }
                    out.extend(self.finish_speech(&name, id));
                } else if let Some(a) = self.streams.get_mut(&name) {
                    a.speech.remove(&id);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn det(label: &str, track: Option<i64>, conf: f64) -> Detection {
        Detection {
            label: label.into(),
            class_id: Some(0),
            confidence: conf,
            track_id: track,
            model: Some("m".into()),
            rect: (0, 0, 10, 10),
        }
    }

    fn agg() -> Aggregator {
        Aggregator::new(Config {
            keywords: parse_keywords("fire, help ,,Goal"),
            ..Config::default()
        })
    }

    #[test]
    fn keywords_are_parsed_lowercase_without_blanks() {
        assert_eq!(
            parse_keywords("fire, help ,,Goal"),
            vec!["fire", "help", "goal"]
        );
        assert!(parse_keywords(" , ").is_empty());
    }

    #[test]
    fn tracks_appear_once_and_leave_after_the_timeout() {
        let mut a = agg();
        let e = a.frame("v", 0, &[det("car", Some(1), 0.9)]);
        assert_eq!(
            e.iter()
                .filter(|e| e.kind == EventKind::ObjectAppear)
                .count(),
            1
        );
        assert!(a.frame("v", S / 2, &[det("car", Some(1), 0.95)]).is_empty());
        // Not seen for more than leave-timeout (1 s) at 2 s.
        let e = a.frame("v", 2 * S, &[]);
        assert_eq!(e.len(), 1);
        let leave = &e[0];
        assert_eq!(
            (leave.kind, leave.track_id, leave.start_ns, leave.end_ns),
            (EventKind::ObjectLeave, Some(1), 0, Some(S / 2))
        );
        assert_eq!(leave.confidence, Some(0.95));
        assert_eq!(leave.data["frames"], 2);
    }

    #[test]
    fn a_new_class_scores_higher_than_a_known_one() {
        let mut a = agg();
        let first = a.frame("v", 0, &[det("car", Some(1), 0.8)]);
        let second = a.frame(
            "v",
            S / 10,
            &[det("car", Some(1), 0.8), det("car", Some(2), 0.8)],
        );
        let new_score = first[0].clip_worthy_score;
        let known = second.iter().find(|e| e.track_id == Some(2)).unwrap();
        assert_eq!(known.data["signals"]["new_class"], false);
        assert!(
            new_score > known.clip_worthy_score,
            "{new_score} vs {}",
            known.clip_worthy_score
        );
        // new_class only: (1 - (1-0.7)) * (0.5 + 0.4) = 0.63
        assert!((new_score - 0.63).abs() < 1e-9, "{new_score}");
    }

    #[test]
    fn an_object_count_spike_raises_the_score_and_makes_a_clip() {
        let mut a = agg();
        for i in 0..20 {
            a.frame("v", i * S / 10, &[det("person", Some(1), 0.9)]);
        }
        // Four new people at once: spike (5 - 1)/1 → 1.
        let dets: Vec<Detection> = (1..=5).map(|i| det("person", Some(i), 0.9)).collect();
        let e = a.frame("v", 2 * S, &dets);
        let appear: Vec<&Event> = e
            .iter()
            .filter(|e| e.kind == EventKind::ObjectAppear)
            .collect();
        assert_eq!(appear.len(), 4);
        // (1 - (1 - 0.5)) * 0.95 = 0.475: below the default threshold.
        assert!((appear[0].clip_worthy_score - 0.475).abs() < 1e-9);
        assert!(!e.iter().any(|e| e.kind == EventKind::Clip));
        a.cfg.clip_threshold = 0.4;
        let dets: Vec<Detection> = (1..=12).map(|i| det("person", Some(i), 0.9)).collect();
        let e = a.frame("v", 2 * S + S / 10, &dets);
        let clips: Vec<&Event> = e.iter().filter(|e| e.kind == EventKind::Clip).collect();
        assert_eq!(clips.len(), 1, "overlapping clips on one stream are merged");
        assert_eq!(
            (clips[0].start_ns, clips[0].end_ns),
            (S / 10, Some(4 * S + S / 10))
        );
    }

    #[test]
    fn untracked_detections_appear_and_leave_per_class() {
        let mut a = agg();
        let e = a.frame("v", 0, &[det("dog", None, 0.7), det("dog", None, 0.6)]);
        assert_eq!(
            e.iter()
                .filter(|e| e.kind == EventKind::ObjectAppear)
                .count(),
            1
        );
        let e = a.finish(None);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].kind, e[0].label.as_deref(), e[0].track_id),
            (EventKind::ObjectLeave, Some("dog"), None)
        );
    }

    #[test]
    fn speech_with_a_keyword_and_fast_rate_is_clip_worthy() {
        let mut a = agg();
        a.segment_start("a", 1, S);
        a.segment_commit("a", 1);
        a.audio_level("a", Some(1), -20.0);
        assert!(
            a.segment_end("a", 1, 3 * S).is_empty(),
            "waits for the transcript"
        );
        let e = a.transcript(
            "t",
            Some(1),
            "Help! There is a fire in the kitchen right now, call someone",
            3 * S,
            None,
            Some(0.9),
            None,
        );
        assert_eq!(e.len(), 2, "{e:?}");
        let speech = &e[0];
        assert_eq!(
            (
                speech.kind,
                speech.stream.as_str(),
                speech.start_ns,
                speech.end_ns
            ),
            (EventKind::Speech, "a", S, Some(3 * S))
        );
        // 11 words in 2 s: 5.5 w/s → rate 1; keyword 1 → 1 - 0.2 * 0.6 = 0.88
        assert!(
            (speech.clip_worthy_score - 0.88).abs() < 1e-9,
            "{}",
            speech.clip_worthy_score
        );
        assert_eq!(
            speech.data["signals"]["keyword"],
            serde_json::json!(["fire", "help"])
        );
        assert_eq!(e[1].kind, EventKind::Clip);
        assert_eq!(e[1].data["source"], speech.event_id.as_str());
    }

    #[test]
    fn louder_speech_than_usual_scores_energy() {
        let mut a = agg();
        for (id, db) in [(1, -30.0), (2, -10.0)] {
            a.segment_start("a", id, id * 10 * S);
            a.audio_level("a", Some(id), db);
            a.segment_end("a", id, id * 10 * S + S);
        }
        let e = a.tick(Instant::now() + Duration::from_secs(5));
        assert_eq!(e.len(), 2);
        let by_id = |id: u64| e.iter().find(|e| e.data["segment_id"] == id).unwrap();
        assert_eq!(by_id(1).data["signals"]["energy"], 0.0);
        assert_eq!(by_id(2).data["signals"]["energy"], 1.0);
        assert!((by_id(2).clip_worthy_score - 0.4).abs() < 1e-9);
    }

    fn prosody(id: u64, f0: f64, db: f64, rate: f64) -> Prosody {
        Prosody {
            segment_id: id,
            duration: 2 * S,
            f0_mean: f0,
            f0_min: f0 * 0.8,
            f0_max: f0 * 1.2,
            level_db: db,
            syllables: (rate * 2.0) as u32,
            rate,
            voiced_ratio: 0.5,
        }
    }

    /// Speech loud, fast or high against the speaker's running baseline (the
    /// segments before it on the stream) scores; the same speech as the
    /// baseline does not. A prosody event for the audio pad's segment may come
    /// on another pad.
    #[test]
    fn loud_fast_high_pitched_speech_against_the_baseline_is_clip_worthy() {
        let mut a = agg();
        let speak = |a: &mut Aggregator, id: u64, p: Prosody| -> Vec<Event> {
            a.segment_start("a", id, id * 10 * S);
            a.segment_commit("a", id);
            a.prosody("t", p);
            a.segment_end("a", id, id * 10 * S + 2 * S);
            a.transcript("t", Some(id), "it is a calm day", 0, None, None, None)
        };
        // Baseline: 120 Hz, -30 dBFS, 3 syllables/s.
        let first = speak(&mut a, 1, prosody(1, 120.0, -30.0, 3.0));
        assert_eq!(first[0].clip_worthy_score, 0.0, "no baseline yet");
        let calm = speak(&mut a, 2, prosody(2, 120.0, -30.0, 3.0));
        assert_eq!(calm[0].clip_worthy_score, 0.0);
        assert_eq!(calm[0].data["prosody"]["f0_mean_hz"], 120.0);
        // One octave up (12 st → 1), 10 dB louder (1), twice as fast (1).
        let excited = speak(&mut a, 3, prosody(3, 240.0, -20.0, 6.0));
        let sig = &excited[0].data["signals"];
        assert_eq!(
            (
                sig["pitch"].as_f64(),
                sig["energy"].as_f64(),
                sig["rate"].as_f64()
            ),
            (Some(1.0), Some(1.0), Some(1.0))
        );
        // 1 − 0.6³
        assert!(
            (excited[0].clip_worthy_score - 0.784).abs() < 1e-9,
            "{}",
            excited[0].clip_worthy_score
        );
        assert_eq!(excited.last().unwrap().kind, EventKind::Clip);
        assert_eq!(excited[0].data["level_dbfs"], -20.0);
        // Pitch alone, two semitones up from the running average: 0.5 · 0.4.
        let mut b = agg();
        speak(&mut b, 1, prosody(1, 200.0, -30.0, 3.0));
        let up = speak(
            &mut b,
            2,
            prosody(2, 200.0 * 2f64.powf(2.0 / 12.0), -30.0, 3.0),
        );
        assert!(
            (up[0].clip_worthy_score - 0.2).abs() < 1e-6,
            "{}",
            up[0].clip_worthy_score
        );
        // Lower, quieter, slower: nothing.
        let down = speak(&mut b, 3, prosody(3, 150.0, -40.0, 2.0));
        assert_eq!(down[0].clip_worthy_score, 0.0);
    }

    #[test]
    fn cancelled_segments_make_no_event() {
        let mut a = agg();
        a.segment_start("a", 7, 0);
        a.segment_cancel("a", 7);
        assert!(a.segment_end("a", 7, S).is_empty());
        assert!(
            a.transcript("a", Some(7), "", 0, None, None, None)
                .is_empty()
        );
        assert!(a.tick(Instant::now() + Duration::from_secs(60)).is_empty());
        assert!(a.finish(None).is_empty());
    }

    #[test]
    fn captions_score_novelty_and_skip_repeats() {
        let mut a = agg();
        let first = a.caption("v", "a man walks a dog in the park", 0, None, None);
        assert_eq!(first.len(), 1);
        assert!(
            a.caption("v", "a man walks a dog in the park", S, None, None)
                .is_empty()
        );
        let similar = a.caption(
            "v",
            "a man walks a dog in the park at noon",
            2 * S,
            None,
            None,
        );
        let novel = a.caption("v", "smoke rises from a burning car", 3 * S, None, None);
        assert!(novel[0].clip_worthy_score > similar[0].clip_worthy_score);
        let fire = a.caption("v", "a big fire", 4 * S, None, None);
        assert_eq!(
            fire[0].data["signals"]["keyword"],
            serde_json::json!(["fire"])
        );
        assert!(fire.iter().any(|e| e.kind == EventKind::Clip));
    }

    #[test]
    fn event_keys_are_unique() {
        let mut a = agg();
        let mut keys = HashSet::new();
        for i in 0..50 {
            for e in a.frame("v", i * 2 * S, &[det("x", Some(i as i64), 0.5)]) {
                assert!(keys.insert(e.event_id.clone()));
            }
        }
    }

    #[test]
    fn event_time_follows_the_time_base_and_a_reference_wins() {
        let mut a = agg();
        let before = now_ms();
        let e = a.frame("v", 0, &[det("car", Some(1), 0.9)]);
        assert_eq!(e[0].time_source, TimeSource::Wall);
        assert!(e[0].event_time_ms >= before && e[0].event_time_ms == e[0].created_ms);
        assert_eq!(e[0].source_id, "pipeline0/v");
        assert_eq!(e[0].schema_version, SCHEMA_VERSION);
        // Running time 0 is 2026-12-02T06:50:00.000Z.
        let zero: i128 = 1_796_194_200_000 * 1_000_000;
        a.set_time_base("v", zero, TimeSource::Clock);
        a.set_source_id("v", "cams/front".into());
        let e = a.frame("v", S + S / 4, &[det("bus", Some(2), 0.9)]);
        assert_eq!(
            (
                e[0].event_time.as_str(),
                e[0].time_source,
                e[0].source_id.as_str()
            ),
            ("2026-12-02T06:50:01.250Z", TimeSource::Clock, "cams/front")
        );
        // A reference timestamp (capture time) replaces the clock, and the clock
        // does not replace it back.
        a.set_time_base("v", zero + 3_600 * S as i128, TimeSource::Reference);
        a.set_time_base("v", zero, TimeSource::Clock);
        let e = a.frame("v", S + S / 2, &[det("cat", Some(3), 0.9)]);
        assert_eq!(e[0].event_time, "2026-12-02T07:50:01.500Z");
        assert_eq!(e[0].time_source, TimeSource::Reference);
        let json = serde_json::to_value(&e[0]).unwrap();
        assert_eq!(json["type"], "object_appear");
        assert_eq!(json["time_source"], "reference");
        for key in json.as_object().unwrap().keys() {
            assert!(
                key.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{key}"
            );
        }
    }
}
