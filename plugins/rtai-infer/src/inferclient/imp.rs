//! inferclient: the sink pad's streaming thread prepares a request (tensor,
//! JPEG or WAV) and hands it to the shared tokio runtime; every buffer and
//! serialized event goes into one queue that the src pad's own task drains
//! in stream order, waiting for a buffer's result at most `latency-budget`.
//! The upstream thread never waits on the network. With `segment-events=immediate`
//! segment start/commit/end events skip the queue: the sink pad's thread pushes them
//! at once, ahead of the results still pending (a barge-in is not held behind the
//! previous utterance's transcript).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use rtai_core::stats::LatencyHistogram;
use rtai_core::tensor::{TensorData, TensorMeta};
use rtai_core::{CancelAck, InferenceResult, SegmentEvent, SegmentIdMeta};

use super::audio::{AudioCollector, Collected};
use super::queue::{Item, Job, Outcome, Shared, Stats, queue_limit};
use super::replies::to_outcome;
use super::requests::{images_request, jpeg_tensor_request, tensor_request};
use super::rois::{self, Target, Tracks};
use super::settings::*;
use super::{InferInputDatatype, InferOutput, InferProtocol, InferSegmentEvents};
use crate::client::{self, Admission, Breaker, CallError, Endpoint, JobId, Protocol, Request};
use crate::postprocess::{Class, Decoder, Letterbox};
use crate::preprocess;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "inferclient",
        gst::DebugColorFlags::empty(),
        Some("Remote inference client"),
    )
});

/// Streaming state: created on start, dropped on stop.
struct State {
    endpoint: Endpoint,
    client: reqwest::Client,
    breaker: Arc<Mutex<Breaker>>,
    frame: u64,
    last_sent: Option<Instant>,
    video: Option<gst_video::VideoInfo>,
    /// image/jpeg in: decoded for tensors, sent as it is to image endpoints.
    jpeg: bool,
    audio: Option<gst_audio::AudioInfo>,
    /// Sampled frames kept for `context-frames`.
    context: VecDeque<Vec<u8>>,
    previous_answer: Arc<Mutex<Option<String>>>,
    /// Audio of the current chunk or segment.
    audio_collected: AudioCollector,
    /// How to read the model's outputs (labels included).
    decoder: Arc<Decoder>,
    /// Per-object inference: when each tracked object was last sent, and its answer.
    tracks: Tracks,
    /// Requests on the runtime: a cancel aborts its segment's, a stop all of them.
    tasks: Mutex<Vec<(Arc<Job>, tokio::task::JoinHandle<()>)>>,
    /// Segments cancelled lately: their later buffers are never sent.
    cancelled: VecDeque<u64>,
    /// Set by the first request the endpoint answered: a refusal after it is one
    /// request's (counted), before it the configuration's (an error).
    contacted: Arc<AtomicBool>,
}

pub struct InferClient {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    shared: Arc<Shared>,
    inflight: Arc<AtomicUsize>,
    /// One bus warning per run for unusable replies (they are counted, not repeated).
    warned_bad_reply: Arc<std::sync::atomic::AtomicBool>,
    /// One bus warning per run for requests the endpoint refused (400, 413, 422).
    warned_rejected: Arc<AtomicBool>,
    /// One bus warning per run for input frames that cannot be read (corrupt JPEG).
    warned_bad_input: std::sync::atomic::AtomicBool,
    stats: Arc<Mutex<Stats>>,
    round_trips: Arc<Mutex<LatencyHistogram>>,
    /// The input as resolved at start (set while started).
    resolved_input: Mutex<Option<ResolvedInput>>,
}

fn protocol_of(p: InferProtocol) -> Protocol {
    match p {
        InferProtocol::KserveRest => Protocol::KserveRest,
        InferProtocol::KserveGrpc => Protocol::KserveGrpc,
        InferProtocol::Runpod => Protocol::Runpod,
        InferProtocol::OpenaiChat => Protocol::OpenaiChat,
        InferProtocol::OpenaiTranscriptions => Protocol::OpenaiTranscriptions,
    }
}

impl InferClient {
    /// The settings with the input resolved at start (model metadata, fallbacks).
    fn settings(&self) -> Settings {
        let mut s = self.settings.lock().unwrap().clone();
        if let Some(input) = self.resolved_input.lock().unwrap().as_ref() {
            input.apply(&mut s);
        }
        s
    }

    /// Reads the model's metadata when the input is (partly) unset on a KServe endpoint:
    /// at start, bounded by `request-timeout`; its outputs name the unset `*-output`s when
    /// they can. Failing that, the fallbacks: never an error.
    fn resolve_input(
        &self,
        s: &Settings,
        endpoint: &Endpoint,
        client: &reqwest::Client,
    ) -> Settings {
        let kserve = matches!(
            s.protocol,
            InferProtocol::KserveRest | InferProtocol::KserveGrpc
        );
        let metadata =
            if kserve && s.input_unset() && tokio::runtime::Handle::try_current().is_err() {
                let fetch = client::model_metadata(client, endpoint);
                match rtai_core::runtime::runtime()
                    .block_on(async { tokio::time::timeout(endpoint.timeout, fetch).await })
                {
                    Ok(Ok(m)) => Some(m),
                    Ok(Err(e)) => {
                        gst::warning!(CAT, imp = self, "cannot read the model's metadata: {e}");
                        None
                    }
                    Err(_) => {
                        gst::warning!(CAT, imp = self, "the model's metadata did not come in time");
                        None
                    }
                }
            } else {
                None
            };
        let (resolved, chosen) = s.resolve_input(metadata.as_ref());
        if s.input_unset() {
            gst::info!(CAT, imp = self, "{chosen}");
        }
        let (resolved, outputs) = resolved.resolve_outputs(metadata.as_ref());
        if let Some(outputs) = outputs {
            gst::info!(CAT, imp = self, "{outputs}");
        }
        resolved
    }

    fn stats_structure(&self) -> gst::Structure {
        let s = self.stats.lock().unwrap().clone();
        let (queued, limit) = {
            let q = self.shared.queue.lock().unwrap();
            (q.items.len(), q.limit)
        };
        let breaker = self
            .state
            .lock()
            .unwrap()
            .as_ref()
            .map(|st| st.breaker.lock().unwrap().state(Instant::now()).as_str())
            .unwrap_or("closed");
        let builder = gst::Structure::builder("inferclient-stats")
            .field("sent", s.sent)
            .field("ok", s.ok)
            .field("failed", s.failed)
            .field("retried", s.retried)
            .field("dropped-by-budget", s.dropped_by_budget)
            .field("skipped-busy", s.skipped_busy)
            .field("skipped-breaker", s.skipped_breaker)
            .field("aborted", s.aborted)
            .field("rejected", s.rejected)
            .field("inflight", self.inflight.load(Ordering::SeqCst) as u64)
            .field("queued", queued as u64)
            .field("queue-limit", limit as u64)
            .field("breaker-state", breaker);
        self.round_trips
            .lock()
            .unwrap()
            .add_to_structure(builder, "round-trip")
            .build()
    }

    /// Queues `item` for the src task, waiting while the queue is full. Call without
    /// holding `state` (the src task takes it): a flush, a stop or the src task's own
    /// stop wakes the wait.
    fn enqueue(&self, item: Item) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut q = self.shared.queue.lock().unwrap();
        loop {
            if q.flushing {
                return Err(gst::FlowError::Flushing);
            }
            if let Some(err) = q.stopped {
                return Err(err);
            }
            if q.items.len() < q.limit {
                break;
            }
            q = self.shared.changed.wait(q).unwrap();
        }
        q.items.push_back(item);
        self.shared.changed.notify_all();
        Ok(gst::FlowSuccess::Ok)
    }

    /// Whether a request may go now: under `max_inflight`, and as the breaker says
    /// (each refusal counted).
    fn admit(&self, state: &State, max_inflight: u32, now: Instant) -> Option<Admission> {
        if self.inflight.load(Ordering::SeqCst) >= max_inflight as usize {
            self.stats.lock().unwrap().skipped_busy += 1;
            return None;
        }
        let admission = state.breaker.lock().unwrap().admit(now);
        if admission.is_none() {
            self.stats.lock().unwrap().skipped_breaker += 1;
        }
        admission
    }

    /// Starts `request` on the runtime; the returned job fills in when it is done.
    fn spawn(
        &self,
        state: &State,
        admission: Admission,
        request: Request,
        letterbox: Option<Letterbox>,
        segment: Option<u64>,
    ) -> Arc<Job> {
        self.spawn_batch(
            state,
            admission,
            request,
            letterbox,
            segment,
            (1, Vec::new()),
        )
    }

    /// Starts a request for `batch` frames or ROI crops (a tensor [batch, ...]; `rois`: the
    /// ROIs its rows are for, empty for frames); results split per row.
    /// `admission`: how the breaker let it go; its end is reported back to the breaker.
    fn spawn_batch(
        &self,
        state: &State,
        admission: Admission,
        request: Request,
        letterbox: Option<Letterbox>,
        segment: Option<u64>,
        (batch, rois): (usize, Vec<Target>),
    ) -> Arc<Job> {
        let settings = self.settings();
        let job = Arc::new(Job {
            segment,
            rois,
            ..Default::default()
        });
        let (endpoint, client, breaker) = (
            state.endpoint.clone(),
            state.client.clone(),
            state.breaker.clone(),
        );
        let (stats, round_trips, inflight) = (
            self.stats.clone(),
            self.round_trips.clone(),
            self.inflight.clone(),
        );
        let previous_answer = state.previous_answer.clone();
        let element = self.obj().downgrade();
        let decoder = state.decoder.clone();
        let warned_bad_reply = self.warned_bad_reply.clone();
        let job_for_task = job.clone();
        let contacted = state.contacted.clone();
        let warned_rejected = self.warned_rejected.clone();
        inflight.fetch_add(1, Ordering::SeqCst);
        // Dropped when the task ends or is aborted (a stop): the count never stays up.
        let inflight = InflightGuard(inflight);
        stats.lock().unwrap().sent += 1;
        let handle = rtai_core::runtime::runtime().spawn(async move {
            let job = job_for_task;
            let started = Instant::now();
            let runpod_job: JobId = Arc::default();
            let outcome = tokio::select! {
                r = client::call(&client, &endpoint, &request, &runpod_job) => Some(r),
                _ = job.abort.notified() => None,
            };
            if outcome.is_none() {
                // Aborted: no verdict on the endpoint, but a probe must not stay in flight
                // forever (the breaker would refuse every request). Before `inflight` drops,
                // so that no request is seen idle with its probe still held.
                breaker.lock().unwrap().abandon(admission);
            }
            drop(inflight);
            let Some((result, retries)) = outcome else {
                let id = runpod_job.lock().unwrap().clone();
                if let Some(id) = id {
                    let _ = client::cancel_runpod(&client, &endpoint, &id).await;
                }
                job.finish(Err("cancelled".into()));
                return;
            };
            let rtt = started.elapsed();
            stats.lock().unwrap().retried += retries as u64;
            let parsed = result.and_then(|reply| {
                to_outcome(reply, &settings, &decoder, letterbox, batch).map_err(CallError::BadReply)
            });
            match parsed {
                Ok(mut outcome) => {
                    contacted.store(true, Ordering::SeqCst);
                    breaker.lock().unwrap().success();
                    stats.lock().unwrap().ok += 1;
                    round_trips.lock().unwrap().record(rtt.as_nanos() as u64);
                    outcome.round_trip = rtt.as_nanos() as u64;
                    if let Some(text) = &outcome.text {
                        *previous_answer.lock().unwrap() = Some(text.clone());
                    }
                    job.finish(Ok(outcome));
                }
                Err(err) => {
                    breaker.lock().unwrap().failure(Instant::now());
                    stats.lock().unwrap().failed += 1;
                    match (&err, element.upgrade()) {
                        // A bad key, an unknown model or route before any answer: the
                        // configuration is wrong, say so and stop.
                        (CallError::Fatal(message), Some(element))
                            if err.is_configuration() && !contacted.load(Ordering::SeqCst) =>
                        {
                            gst::element_error!(
                                element,
                                gst::ResourceError::Failed,
                                ("The inference endpoint refused the request: {}", message),
                                ["protocol {:?}, model '{}'", endpoint.protocol, endpoint.model]
                            )
                        }
                        // One request refused (too long, too large, content policy) or a refusal
                        // mid-stream: this result is lost, counted; the stream goes on.
                        (CallError::Fatal(message), Some(element)) => {
                            stats.lock().unwrap().rejected += 1;
                            if !warned_rejected.swap(true, Ordering::SeqCst) {
                                gst::element_warning!(
                                    element,
                                    gst::ResourceError::Failed,
                                    ("The inference endpoint refused a request: {}", message),
                                    ["protocol {:?}, model '{}' (warned once; counted in stats as rejected)", endpoint.protocol, endpoint.model]
                                );
                            }
                            gst::debug!(CAT, obj = element, "request refused: {message}");
                        }
                        // An unusable reply loses this result; the stream goes on (the breaker counts it).
                        (CallError::BadReply(message), Some(element)) => {
                            if !warned_bad_reply.swap(true, Ordering::SeqCst) {
                                gst::element_warning!(
                                    element,
                                    gst::StreamError::Decode,
                                    ("Unusable reply from the inference endpoint: {}", message),
                                    ["protocol {:?}, model '{}' (warned once; counted in stats as failed)", endpoint.protocol, endpoint.model]
                                );
                            }
                            gst::debug!(CAT, obj = element, "unusable reply: {message}");
                        }
                        (_, Some(element)) => gst::warning!(CAT, obj = element, "inference request failed after {retries} retries: {err}"),
                        _ => {}
                    }
                    job.finish(Err(err.to_string()));
                }
            }
        });
        let mut tasks = state.tasks.lock().unwrap();
        tasks.retain(|(_, h)| !h.is_finished());
        tasks.push((job.clone(), handle));
        job
    }

    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings();
        let mut state_guard = self.state.lock().unwrap();
        let Some(state) = state_guard.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        if state.audio.is_some() {
            return self.audio_chain(state_guard, &settings, buffer);
        }
        let per_object = !settings.roi_classes.is_empty()
            && matches!(
                settings.protocol,
                InferProtocol::KserveRest | InferProtocol::KserveGrpc
            )
            && (state.video.is_some() || state.jpeg);
        if per_object {
            return self.roi_chain(state_guard, &settings, buffer);
        }
        if state.video.is_none() && !state.jpeg && settings.output == InferOutput::Text {
            // text/x-raw in: text out unchanged (a text model would go here).
            drop(state_guard);
            return self.enqueue(Item::Buffer {
                buffer,
                job: None,
                deadline: None,
                index: None,
            });
        }
        state.frame += 1;
        let now = Instant::now();
        let cancelled = SegmentIdMeta::get(&buffer).is_some_and(|id| state.cancelled.contains(&id));
        let due = !cancelled
            && (state.frame - 1) % settings.interval.max(1) as u64 == 0
            && state.last_sent.is_none_or(|t| {
                now.duration_since(t) >= Duration::from_millis(settings.min_interval_ms as u64)
            });
        let mut job = None;
        if due
            && (state.video.is_some() || state.jpeg)
            && let Some(admission) = self.admit(state, settings.max_inflight, now)
        {
            let (video, jpeg) = (state.video.clone(), state.jpeg);
            state.last_sent = Some(now);
            drop(state_guard);
            let prepared = prepare_frame(&settings, video.as_ref(), jpeg, &buffer);
            state_guard = self.state.lock().unwrap();
            let Some(state) = state_guard.as_mut() else {
                return Err(gst::FlowError::Flushing);
            };
            match prepared.map(|p| p.into_request(state, &settings)) {
                Ok((request, letterbox)) => {
                    job = Some(self.spawn(
                        state,
                        admission,
                        request,
                        Some(letterbox),
                        SegmentIdMeta::get(&buffer),
                    ));
                }
                // A JPEG that does not decode is data, not a bug: the frame passes without inference.
                Err(err) if jpeg => {
                    state.breaker.lock().unwrap().abandon(admission);
                    if !self.warned_bad_input.swap(true, Ordering::SeqCst) {
                        gst::element_imp_warning!(
                            self,
                            gst::StreamError::Decode,
                            ("Cannot read a JPEG frame: {}", err),
                            ["frames that do not decode pass without inference (warned once)"]
                        );
                    }
                    gst::debug!(
                        CAT,
                        imp = self,
                        "JPEG frame passes without inference: {err}"
                    );
                }
                Err(err) => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        ("Cannot prepare the frame for inference"),
                        ["{err}"]
                    );
                    return Err(gst::FlowError::Error);
                }
            }
        }
        drop(state_guard);
        if settings.output == InferOutput::Text {
            let (pts, duration) = (buffer.pts(), buffer.duration());
            return match job {
                Some(job) => self.enqueue(Item::Text {
                    job,
                    pts,
                    duration,
                    deadline: None,
                }),
                None => Ok(gst::FlowSuccess::Ok),
            };
        }
        let deadline = job
            .as_ref()
            .map(|_| now + Duration::from_millis(settings.latency_budget_ms as u64));
        self.enqueue(Item::Buffer {
            buffer,
            job,
            deadline,
            index: None,
        })
    }

    /// Per-object inference (`roi-classes`): the frame's matching ROIs are cropped and sent
    /// in one batched request; tracked ones at most once per `reclassify-interval` frames.
    fn roi_chain<'a>(
        &'a self,
        mut state_guard: std::sync::MutexGuard<'a, Option<State>>,
        settings: &Settings,
        mut buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let state = state_guard.as_mut().ok_or(gst::FlowError::Flushing)?;
        state.frame += 1;
        let frame = state.frame;
        let now = Instant::now();
        let cancelled = SegmentIdMeta::get(&buffer).is_some_and(|id| state.cancelled.contains(&id));
        let due = !cancelled
            && (frame - 1) % settings.interval.max(1) as u64 == 0
            && state.last_sent.is_none_or(|t| {
                now.duration_since(t) >= Duration::from_millis(settings.min_interval_ms as u64)
            });
        let size = match (&state.video, state.jpeg) {
            (Some(info), _) => Some((info.width(), info.height())),
            (None, true) => buffer
                .map_readable()
                .ok()
                .and_then(|m| preprocess::jpeg_size(&m).ok()),
            _ => None,
        };
        let Some(size) = size else {
            drop(state_guard);
            return self.enqueue(Item::Buffer {
                buffer,
                job: None,
                deadline: None,
                index: None,
            });
        };
        let rules = rois::Rules {
            classes: rois::parse_classes(&settings.roi_classes),
            min_size: settings.roi_min_size,
            interval: settings.reclassify_interval,
        };
        let plan = rois::plan(
            &rois::candidates(&buffer),
            &rules,
            size,
            &state.tracks,
            frame,
            due,
        );
        if !plan.cached.is_empty() {
            let b = buffer.make_mut();
            let mut metas: Vec<_> = b
                .iter_meta_mut::<gst_video::VideoRegionOfInterestMeta>()
                .collect();
            for (index, classes) in &plan.cached {
                if let (Some(roi), Some(_)) = (metas.get_mut(*index), classes.first()) {
                    let mut param = classification_param(classes, &settings.model);
                    param.set("cached", true);
                    roi.add_param(param);
                }
            }
        }
        let mut job = None;
        let admission = if plan.send.is_empty() {
            None
        } else {
            self.admit(state, settings.max_inflight, now)
        };
        if let Some(admission) = admission {
            state.last_sent = Some(now);
            for t in &plan.send {
                if let Some(track) = t.track {
                    state.tracks.requested(track, frame);
                }
            }
            let video = state.video.clone();
            drop(state_guard);
            // Crops and their tensors without the lock.
            let prepared = (|| -> Result<(Request, Letterbox), String> {
                let rgb = match &video {
                    Some(info) => {
                        let f = gst_video::VideoFrameRef::from_buffer_ref_readable(&buffer, info)
                            .map_err(|_| "cannot map the frame".to_string())?;
                        preprocess::to_rgb(&f)
                            .ok_or_else(|| format!("unsupported format {:?}", info.format()))?
                    }
                    None => {
                        let map = buffer
                            .map_readable()
                            .map_err(|_| "cannot map the frame".to_string())?;
                        preprocess::decode_jpeg(&map)?
                    }
                };
                let mut data = Vec::new();
                let mut first = None;
                for t in &plan.send {
                    let (request, lb) = tensor_request(settings, &rois::crop(&rgb, t.rect));
                    let Request::Tensor {
                        name,
                        mut shape,
                        datatype,
                        data: d,
                    } = request
                    else {
                        unreachable!("a tensor request")
                    };
                    data.extend(d);
                    shape[0] = plan.send.len();
                    first.get_or_insert((name, shape, datatype, lb));
                }
                let (name, shape, datatype, lb) = first.ok_or("no ROI to send")?;
                Ok((
                    Request::Tensor {
                        name,
                        shape,
                        datatype,
                        data,
                    },
                    lb,
                ))
            })();
            state_guard = self.state.lock().unwrap();
            let state = state_guard.as_mut().ok_or(gst::FlowError::Flushing)?;
            match prepared {
                Ok((request, letterbox)) => {
                    let n = plan.send.len();
                    job = Some(self.spawn_batch(
                        state,
                        admission,
                        request,
                        Some(letterbox),
                        SegmentIdMeta::get(&buffer),
                        (n, plan.send),
                    ));
                }
                Err(err) => {
                    state.breaker.lock().unwrap().abandon(admission);
                    gst::debug!(
                        CAT,
                        imp = self,
                        "frame passes without per-object inference: {err}"
                    );
                }
            }
        }
        drop(state_guard);
        let deadline = job
            .as_ref()
            .map(|_| now + Duration::from_millis(settings.latency_budget_ms as u64));
        self.enqueue(Item::Buffer {
            buffer,
            job,
            deadline,
            index: None,
        })
    }

    /// Per-object results: each ROI sent gets its classes as a `classification` param, and
    /// its track remembers them for `reclassify-interval`.
    fn attach_rois(&self, buffer: &mut gst::BufferRef, targets: &[Target], results: &[Vec<Class>]) {
        let model = self.settings.lock().unwrap().model.clone();
        let mut metas: Vec<_> = buffer
            .iter_meta_mut::<gst_video::VideoRegionOfInterestMeta>()
            .collect();
        let mut state = self.state.lock().unwrap();
        for (t, classes) in targets.iter().zip(results) {
            if let (Some(track), Some(state)) = (t.track, state.as_mut()) {
                state.tracks.answered(track, classes.clone());
            }
            if let (Some(roi), Some(_)) = (metas.get_mut(t.index), classes.first()) {
                let mut param = classification_param(classes, &model);
                param.set("cached", false);
                roi.add_param(param);
            }
        }
    }

    /// A buffer list (from `batcher`, keep-separate) to a KServe detector: one batched
    /// request [N, 3, H, W]; each frame gets its own results. Anything else: frame by frame.
    fn sink_chain_list(
        &self,
        pad: &gst::Pad,
        list: gst::BufferList,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings();
        let batchable = list.len() > 1
            && settings.output == InferOutput::Meta
            && settings.input_datatype != InferInputDatatype::Jpeg
            && matches!(
                settings.protocol,
                InferProtocol::KserveRest | InferProtocol::KserveGrpc
            )
            && self
                .state
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|s| s.video.is_some());
        if !batchable {
            for buffer in list.iter_owned() {
                self.sink_chain(pad, buffer)?;
            }
            return Ok(gst::FlowSuccess::Ok);
        }
        let now = Instant::now();
        let mut state_guard = self.state.lock().unwrap();
        let state = state_guard.as_mut().ok_or(gst::FlowError::Flushing)?;
        state.frame += list.len() as u64;
        let mut job = None;
        let admission = self.admit(state, settings.max_inflight, now);
        if let Some(admission) = admission {
            let mut data = Vec::new();
            let mut shape = Vec::new();
            let mut letterbox = None;
            let mut datatype = client::InputDatatype::Fp32;
            let video = state.video.clone();
            state.last_sent = Some(now);
            drop(state_guard);
            for buffer in list.iter() {
                match prepare_frame(&settings, video.as_ref(), false, buffer) {
                    Ok(Prepared::Ready(
                        Request::Tensor {
                            data: d,
                            shape: s,
                            datatype: dt,
                            ..
                        },
                        lb,
                    )) => {
                        datatype = dt;
                        data.extend(d);
                        shape = s;
                        letterbox = Some(lb);
                    }
                    Ok(_) => unreachable!("KServe requests are tensors"),
                    Err(err) => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Format,
                            ("Cannot prepare the frame for inference"),
                            ["{err}"]
                        );
                        return Err(gst::FlowError::Error);
                    }
                }
            }
            shape[0] = list.len();
            state_guard = self.state.lock().unwrap();
            let state = state_guard.as_mut().ok_or(gst::FlowError::Flushing)?;
            let request = Request::Tensor {
                name: settings.input_name.clone(),
                shape,
                datatype,
                data,
            };
            job = Some(self.spawn_batch(
                state,
                admission,
                request,
                letterbox,
                None,
                (list.len(), Vec::new()),
            ));
        }
        drop(state_guard);
        let deadline = job
            .as_ref()
            .map(|_| now + Duration::from_millis(settings.latency_budget_ms as u64));
        for (i, buffer) in list.iter_owned().enumerate() {
            self.enqueue(Item::Buffer {
                buffer,
                job: job.clone(),
                deadline,
                index: job.as_ref().map(|_| i),
            })?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Audio: collect the chunk (or the speech segment) and send it when it is complete.
    fn audio_chain(
        &self,
        mut state_guard: std::sync::MutexGuard<'_, Option<State>>,
        settings: &Settings,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let state = state_guard.as_mut().unwrap();
        let segment = SegmentIdMeta::get(&buffer);
        let cancelled = segment.is_some_and(|id| state.cancelled.contains(&id));
        let ready = match buffer.map_readable() {
            // A cancelled segment's audio still arriving: never sent.
            _ if cancelled => Vec::new(),
            Ok(map) => state.audio_collected.push(
                segment,
                buffer.pts(),
                buffer.duration(),
                &map,
                gst::ClockTime::from_mseconds(settings.chunk_duration_ms as u64),
            ),
            Err(_) => Vec::new(),
        };
        let transcripts: Vec<Item> = ready
            .into_iter()
            .filter_map(|audio| self.send_audio(state, settings, audio))
            .collect();
        drop(state_guard);
        for item in transcripts {
            self.enqueue(item)?;
        }
        if settings.output == InferOutput::Meta {
            return self.enqueue(Item::Buffer {
                buffer,
                job: None,
                deadline: None,
                index: None,
            });
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Sends the collected audio; returns the item to queue (after `state` is released).
    fn send_audio(&self, state: &mut State, settings: &Settings, audio: Collected) -> Option<Item> {
        let info = state.audio.clone()?;
        let Collected {
            samples,
            pts,
            end,
            segment,
        } = audio;
        let now = Instant::now();
        let Some(admission) = state.breaker.lock().unwrap().admit(now) else {
            self.stats.lock().unwrap().skipped_breaker += 1;
            return None;
        };
        let wav = preprocess::wav(&samples, info.rate(), info.channels() as u16);
        // The image instruction is no transcription hint: audio gets the prompt only when set.
        let prompt = if settings.prompt == DEFAULT_PROMPT {
            String::new()
        } else {
            settings.prompt.clone()
        };
        let job = self.spawn(
            state,
            admission,
            Request::Audio { wav, prompt },
            None,
            segment,
        );
        let duration = pts.zip(end).map(|(p, e)| e.saturating_sub(p));
        if settings.output == InferOutput::Meta {
            // The transcript goes only to the bus, whenever it comes: the audio never waits for it.
            let element = self.obj().downgrade();
            job.on_late_result(Box::new(move |outcome| {
                if let Some(element) = element.upgrade() {
                    element.imp().post_result(outcome, pts, segment);
                }
            }));
            return None;
        }
        Some(Item::Text {
            job,
            pts,
            duration,
            deadline: None,
        })
    }

    /// A cancel (OOB): abort the segment's requests and drop its pending audio.
    fn cancel_segment(&self, id: u64) {
        let received = Instant::now();
        let mut aborted = 0;
        {
            let mut state = self.state.lock().unwrap();
            if let Some(state) = state.as_mut() {
                state.audio_collected.cancel(id);
                if !state.cancelled.contains(&id) {
                    state.cancelled.push_back(id);
                    if state.cancelled.len() > MAX_CANCELLED {
                        state.cancelled.pop_front();
                    }
                }
                // Requests past the queue (their frames left it on the budget) too.
                for (job, _) in state.tasks.lock().unwrap().iter() {
                    if job.segment == Some(id) {
                        aborted += job.abort_if_pending(&self.stats, "cancelled") as u64;
                    }
                }
            }
        }
        {
            let mut q = self.shared.queue.lock().unwrap();
            let jobs: Vec<Arc<Job>> = q
                .items
                .iter()
                .filter_map(|i| match i {
                    Item::Text { job, .. } | Item::Buffer { job: Some(job), .. }
                        if job.segment == Some(id) =>
                    {
                        Some(job.clone())
                    }
                    _ => None,
                })
                .chain(q.current.clone().filter(|j| j.segment == Some(id)))
                .collect();
            for job in jobs {
                aborted += job.abort_if_pending(&self.stats, "cancelled") as u64;
            }
            q.items
                .retain(|i| !matches!(i, Item::Text { job, .. } if job.segment == Some(id)));
            self.shared.changed.notify_all();
        }
        let ack = CancelAck {
            element: self.obj().name().to_string(),
            id,
            buffers_dropped: 0,
            requests_aborted: aborted,
            latency: gst::ClockTime::from_nseconds(received.elapsed().as_nanos() as u64),
        };
        let _ = self.obj().post_message(ack.to_message(&*self.obj()));
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        let segment = SegmentEvent::parse(&event);
        if let Some(SegmentEvent::Cancel { id, .. }) = segment {
            self.cancel_segment(id);
            return self.srcpad.push_event(event);
        }
        match event.view() {
            gst::EventView::FlushStart(_) => {
                self.set_flushing(true);
                let ret = self.srcpad.push_event(event);
                let _ = self.srcpad.pause_task();
                return ret;
            }
            gst::EventView::FlushStop(_) => {
                self.set_flushing(false);
                let ret = self.srcpad.push_event(event);
                let _ = self.start_task();
                return ret;
            }
            gst::EventView::Caps(c) => {
                if let Err(err) = self.set_caps(c.caps()) {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Negotiation,
                        ("Unsupported input: {}", err)
                    );
                    return false;
                }
                let settings = self.settings();
                if settings.output == InferOutput::Text {
                    let caps = gst::Caps::builder("text/x-raw")
                        .field("format", "utf8")
                        .build();
                    return self
                        .enqueue(Item::Event(gst::event::Caps::new(&caps)))
                        .is_ok();
                }
            }
            _ => {}
        }
        // A segment's end or EOS sends the audio collected so far.
        if matches!(segment, Some(SegmentEvent::End { .. })) || event.type_() == gst::EventType::Eos
        {
            let settings = self.settings();
            let transcript = self
                .state
                .lock()
                .unwrap()
                .as_mut()
                .filter(|s| s.audio.is_some())
                .and_then(|state| {
                    let audio = state.audio_collected.take()?;
                    self.send_audio(state, &settings, audio)
                });
            if let Some(item) = transcript
                && self.enqueue(item).is_err()
            {
                return false;
            }
        }
        if event.is_serialized() {
            if matches!(
                segment,
                Some(SegmentEvent::Start { .. } | SegmentEvent::Commit { .. } | SegmentEvent::End { .. })
            ) && self.settings.lock().unwrap().segment_events == InferSegmentEvents::Immediate
                // Not before the stream's own start and segment went out (they are in the queue).
                && self
                    .srcpad
                    .sticky_event::<gst::event::Segment>(0)
                    .is_some()
            {
                return self.push_now(event);
            }
            return self.enqueue(Item::Event(event)).is_ok();
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }

    /// `segment-events=immediate`: pushes `event` from the sink pad's thread, ahead of the
    /// queue. The queue lock is not held while pushing (the src task pushes without it too;
    /// the peer's stream lock orders the two); a flush or a stop refuses it, as the src pad
    /// does once deactivated.
    fn push_now(&self, event: gst::Event) -> bool {
        {
            let q = self.shared.queue.lock().unwrap();
            if q.flushing || q.stopped.is_some() {
                return false;
            }
        }
        gst::log!(CAT, imp = self, "segment event pushed at once: {event:?}");
        self.srcpad.push_event(event)
    }

    fn set_caps(&self, caps: &gst::CapsRef) -> Result<(), String> {
        let s = caps.structure(0).ok_or("empty caps")?;
        let settings = self.settings();
        let mut state = self.state.lock().unwrap();
        let state = state.as_mut().ok_or("not started")?;
        state.video = None;
        state.jpeg = false;
        state.audio = None;
        // Buffers a second, for the queue's bound.
        let mut rate = None;
        match s.name().as_str() {
            "video/x-raw" => {
                let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
                if !preprocess::FORMATS.contains(&info.format()) {
                    return Err(format!(
                        "video format {:?} (supported: RGB, RGBA, BGR, NV12, I420)",
                        info.format()
                    ));
                }
                if settings.protocol == InferProtocol::OpenaiTranscriptions {
                    return Err("openai-transcriptions needs audio/x-raw".into());
                }
                let fps = info.fps();
                rate = Some(if fps.numer() > 0 {
                    fps.numer() as f64 / fps.denom() as f64
                } else {
                    60.0
                });
                state.video = Some(info);
            }
            "image/jpeg" => {
                if settings.protocol == InferProtocol::OpenaiTranscriptions {
                    return Err("openai-transcriptions needs audio/x-raw".into());
                }
                let fps = s
                    .get::<gst::Fraction>("framerate")
                    .ok()
                    .filter(|f| f.numer() > 0 && f.denom() > 0);
                rate = Some(fps.map_or(60.0, |f| f.numer() as f64 / f.denom() as f64));
                state.jpeg = true;
            }
            "audio/x-raw" => {
                let info = gst_audio::AudioInfo::from_caps(caps).map_err(|e| e.to_string())?;
                if info.format() != gst_audio::AudioFormat::S16le {
                    return Err(format!(
                        "audio format {:?} (supported: S16LE; add audioconvert)",
                        info.format()
                    ));
                }
                if !matches!(
                    settings.protocol,
                    InferProtocol::OpenaiTranscriptions | InferProtocol::Runpod
                ) {
                    return Err(format!(
                        "{:?} cannot carry audio (use openai-transcriptions or runpod)",
                        settings.protocol
                    ));
                }
                state.audio = Some(info);
            }
            "text/x-raw" => {}
            other => return Err(format!("caps {other}")),
        }
        let mut q = self.shared.queue.lock().unwrap();
        q.limit = queue_limit(settings.max_inflight, settings.latency_budget_ms, rate);
        // A larger limit lets a waiting upstream go on.
        self.shared.changed.notify_all();
        Ok(())
    }

    fn set_flushing(&self, flushing: bool) {
        let mut q = self.shared.queue.lock().unwrap();
        q.flushing = flushing;
        if !flushing {
            // A new start (or the end of a flush): the src task runs again.
            q.stopped = None;
        }
        if flushing {
            for item in q.items.drain(..) {
                if let Item::Buffer { job: Some(job), .. } | Item::Text { job, .. } = item {
                    job.abort_if_pending(&self.stats, "flushing");
                }
            }
            if let Some(job) = &q.current {
                job.abort_if_pending(&self.stats, "flushing");
            }
        }
        self.shared.changed.notify_all();
    }

    fn start_task(&self) -> Result<(), glib::BoolError> {
        let this = self.downgrade();
        self.srcpad.start_task(move || {
            if let Some(this) = this.upgrade() {
                this.src_loop();
            }
        })
    }

    /// The src pad's task: one item per iteration, in stream order.
    fn src_loop(&self) {
        let item = {
            let mut q = self.shared.queue.lock().unwrap();
            while q.items.is_empty() && !q.flushing {
                q = self.shared.changed.wait(q).unwrap();
            }
            if q.flushing {
                drop(q);
                let _ = self.srcpad.pause_task();
                return;
            }
            let item = q.items.pop_front().unwrap();
            q.current = match &item {
                Item::Buffer { job: Some(job), .. } | Item::Text { job, .. } => Some(job.clone()),
                _ => None,
            };
            self.shared.changed.notify_all();
            item
        };
        let flow = match item {
            Item::Event(event) => {
                let eos = event.type_() == gst::EventType::Eos;
                self.srcpad.push_event(event);
                if eos {
                    let _ = self.srcpad.pause_task();
                }
                Ok(gst::FlowSuccess::Ok)
            }
            Item::Buffer {
                mut buffer,
                job,
                deadline,
                index,
            } => {
                if let Some(job) = job {
                    match job.wait(deadline) {
                        Some(Ok(mut outcome)) => {
                            if let Some(i) = index {
                                outcome.detections =
                                    outcome.batches.get(i).cloned().unwrap_or_default();
                            }
                            let b = buffer.make_mut();
                            self.attach(b, &outcome, job.segment);
                            if job.rois.is_empty() {
                                // Zero detections included: "inferred, nothing found" differs from "not inferred".
                                crate::InferredMeta {
                                    model: self.settings.lock().unwrap().model.clone(),
                                    detections: outcome.detections.len() as u32,
                                }
                                .attach(b);
                            } else {
                                // Per-object: the frame's own detections are not this model's.
                                self.attach_rois(b, &job.rois, &outcome.roi_classes);
                            }
                            self.post_result(&outcome, buffer.pts(), job.segment);
                        }
                        Some(Err(_)) => {}
                        None => {
                            self.stats.lock().unwrap().dropped_by_budget += 1;
                            gst::debug!(
                                CAT,
                                imp = self,
                                "result not back within the latency budget: frame passes without it"
                            );
                        }
                    }
                }
                self.srcpad.push(buffer)
            }
            Item::Text {
                job,
                pts,
                duration,
                deadline,
            } => match job.wait(deadline) {
                Some(Ok(outcome)) => {
                    self.post_result(&outcome, pts, job.segment);
                    let output = self.settings.lock().unwrap().output;
                    match (&outcome.text, output) {
                        (Some(text), InferOutput::Text) => {
                            let mut b = gst::Buffer::from_mut_slice(text.clone().into_bytes());
                            {
                                let b = b.get_mut().unwrap();
                                b.set_pts(pts);
                                b.set_duration(duration);
                                if let Some(id) = job.segment {
                                    SegmentIdMeta::set(b, id);
                                }
                                self.attach(b, &outcome, job.segment);
                            }
                            self.srcpad.push(b)
                        }
                        _ => Ok(gst::FlowSuccess::Ok),
                    }
                }
                Some(Err(_)) => Ok(gst::FlowSuccess::Ok),
                None => {
                    // Meta mode, the budget is over: later audio goes on, the transcript
                    // goes to the bus whenever it comes.
                    self.stats.lock().unwrap().dropped_by_budget += 1;
                    let element = self.obj().downgrade();
                    let segment = job.segment;
                    job.on_late_result(Box::new(move |outcome| {
                        if let Some(element) = element.upgrade() {
                            element.imp().post_result(outcome, pts, segment);
                        }
                    }));
                    Ok(gst::FlowSuccess::Ok)
                }
            },
        };
        self.shared.queue.lock().unwrap().current = None;
        if let Err(err) = flow {
            gst::debug!(CAT, imp = self, "src task pausing: {err:?}");
            {
                let mut q = self.shared.queue.lock().unwrap();
                q.flushing = err == gst::FlowError::Flushing || q.flushing;
                if err != gst::FlowError::Flushing {
                    // Upstream learns it from its next push instead of filling the queue.
                    q.stopped = Some(err);
                }
                self.shared.changed.notify_all();
            }
            let _ = self.srcpad.pause_task();
            // Not-linked and errors end the stream with an error, as GStreamer sources do.
            if matches!(
                err,
                gst::FlowError::Eos
                    | gst::FlowError::NotLinked
                    | gst::FlowError::Error
                    | gst::FlowError::NotNegotiated
            ) {
                if err != gst::FlowError::Eos {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Failed,
                        ("Streaming stopped: {:?}", err)
                    );
                }
                self.srcpad.push_event(gst::event::Eos::new());
            }
        }
    }

    fn attach(&self, buffer: &mut gst::BufferRef, outcome: &Outcome, segment: Option<u64>) {
        let model = self.settings.lock().unwrap().model.clone();
        for d in &outcome.detections {
            let (x, y) = (d.x1.round() as u32, d.y1.round() as u32);
            let (w, h) = (
                (d.x2 - d.x1).round().max(1.0) as u32,
                (d.y2 - d.y1).round().max(1.0) as u32,
            );
            let mut roi = gst_video::VideoRegionOfInterestMeta::add(buffer, &d.label, (x, y, w, h));
            roi.add_param(
                gst::Structure::builder(rtai_core::inference::DETECTION_PARAM)
                    .field("confidence", d.confidence)
                    .field("label_id", d.class_id)
                    .field("label", d.label.as_str())
                    .field("model_name", model.as_str())
                    .build(),
            );
        }
        if let Some(best) = outcome.classes.first() {
            // The frame's classes: one ROI over the whole frame with a `classification` param.
            let (w, h) = self
                .state
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|s| s.video.as_ref().map(|v| (v.width(), v.height())))
                .unwrap_or((0, 0));
            let mut roi =
                gst_video::VideoRegionOfInterestMeta::add(buffer, &best.label, (0, 0, w, h));
            roi.add_param(classification_param(&outcome.classes, &model));
        }
        if !outcome.tensors.is_empty() {
            let tensors: Vec<TensorData> = outcome
                .tensors
                .iter()
                .map(|t| TensorData {
                    name: t.name.clone(),
                    dims: t.shape.iter().map(|&d| d as u64).collect(),
                    datatype: t.datatype.clone(),
                    data: t.raw_bytes(),
                })
                .collect();
            TensorMeta::attach(buffer, &tensors);
        }
        if outcome.text.is_some() || outcome.raw.is_some() {
            let kind = match self.settings.lock().unwrap().protocol {
                InferProtocol::OpenaiTranscriptions => "transcript",
                InferProtocol::OpenaiChat => "caption",
                _ if outcome.text.is_some()
                    && self
                        .state
                        .lock()
                        .unwrap()
                        .as_ref()
                        .is_some_and(|s| s.audio.is_some()) =>
                {
                    "transcript"
                }
                _ if outcome.text.is_some() => "caption",
                _ => "json",
            };
            InferenceResult {
                kind: kind.into(),
                text: outcome
                    .text
                    .clone()
                    .or_else(|| outcome.raw.clone())
                    .unwrap_or_default(),
                model: Some(model),
                confidence: None,
                round_trip: Some(outcome.round_trip),
                segment_id: segment,
            }
            .attach(buffer);
        }
    }

    fn post_result(&self, outcome: &Outcome, pts: Option<gst::ClockTime>, segment: Option<u64>) {
        let boxes = gst::Array::new(outcome.detections.iter().map(|d| {
            gst::Structure::builder("box")
                .field("x1", d.x1)
                .field("y1", d.y1)
                .field("x2", d.x2)
                .field("y2", d.y2)
                .field("confidence", d.confidence)
                .field("label_id", d.class_id)
                .field("label", d.label.as_str())
                .build()
        }));
        let mut s = gst::Structure::builder("inference-result")
            .field("detections", outcome.detections.len() as u32)
            .field("boxes", boxes)
            .field("round-trip", outcome.round_trip)
            .field("pts", pts.map(|p| p.nseconds()).unwrap_or(u64::MAX));
        if !outcome.classes.is_empty() {
            s = s.field("classification", classification_param(&outcome.classes, ""));
        }
        if let Some(text) = &outcome.text {
            s = s.field("text", text.as_str());
        }
        if let Some(raw) = &outcome.raw {
            s = s.field("json", raw.as_str());
        }
        if let Some(id) = segment {
            s = s.field("segment-id", id);
        }
        let _ = self.obj().post_message(
            gst::message::Element::builder(s.build())
                .src(&*self.obj())
                .build(),
        );
    }
}

/// A frame made ready for its request without the state lock: a tensor, or a JPEG for
/// image endpoints (which still needs the context frames kept in the state).
enum Prepared {
    Ready(Request, Letterbox),
    Jpeg {
        jpeg: Vec<u8>,
        width: u32,
        height: u32,
    },
}

impl Prepared {
    fn into_request(self, state: &mut State, settings: &Settings) -> (Request, Letterbox) {
        match self {
            Prepared::Ready(request, letterbox) => (request, letterbox),
            Prepared::Jpeg {
                jpeg,
                width,
                height,
            } => images_request(
                &mut state.context,
                &state.previous_answer,
                settings,
                jpeg,
                width,
                height,
            ),
        }
    }
}

/// The request for a frame: raw video (`video`), or JPEG (`jpeg`; decoded only when a
/// tensor is needed). Decoding, colour conversion, letterbox and JPEG encoding happen
/// here, on the streaming thread, without the state lock.
fn prepare_frame(
    settings: &Settings,
    video: Option<&gst_video::VideoInfo>,
    jpeg: bool,
    buffer: &gst::BufferRef,
) -> Result<Prepared, String> {
    let tensor = match settings.protocol {
        InferProtocol::KserveRest | InferProtocol::KserveGrpc => true,
        InferProtocol::Runpod | InferProtocol::OpenaiChat => false,
        InferProtocol::OpenaiTranscriptions => {
            return Err("openai-transcriptions takes audio, not video".into());
        }
    };
    let bytes_tensor = tensor && settings.input_datatype == InferInputDatatype::Jpeg;
    if jpeg {
        let map = buffer
            .map_readable()
            .map_err(|_| "cannot map the frame".to_string())?;
        if bytes_tensor {
            // A BYTES tensor of the JPEG as it came: no decode, no second encode.
            let (width, height) = preprocess::jpeg_size(&map)?;
            let (request, letterbox) = jpeg_tensor_request(settings, map.to_vec(), width, height);
            return Ok(Prepared::Ready(request, letterbox));
        }
        if tensor {
            let (request, letterbox) = tensor_request(settings, &preprocess::decode_jpeg(&map)?);
            return Ok(Prepared::Ready(request, letterbox));
        }
        // Image endpoints take JPEG: sent as it came, no decode, no second encode.
        let (width, height) = preprocess::jpeg_size(&map)?;
        return Ok(Prepared::Jpeg {
            jpeg: map.to_vec(),
            width,
            height,
        });
    }
    let info = video.ok_or("no video caps")?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info)
        .map_err(|_| "cannot map the frame".to_string())?;
    let rgb = preprocess::to_rgb(&frame)
        .ok_or_else(|| format!("unsupported format {:?}", info.format()))?;
    if bytes_tensor {
        let jpeg = preprocess::jpeg(&rgb, settings.jpeg_quality as u8)?;
        let (request, letterbox) = jpeg_tensor_request(settings, jpeg, rgb.width, rgb.height);
        return Ok(Prepared::Ready(request, letterbox));
    }
    if tensor {
        let (request, letterbox) = tensor_request(settings, &rgb);
        return Ok(Prepared::Ready(request, letterbox));
    }
    Ok(Prepared::Jpeg {
        jpeg: preprocess::jpeg(&rgb, settings.jpeg_quality as u8)?,
        width: rgb.width,
        height: rgb.height,
    })
}

/// Waits for every task (aborted ones end with a cancelled result).
async fn join_tasks(handles: Vec<tokio::task::JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.await;
    }
}

/// Cancelled segment ids remembered (ids only grow: old ones do not come back).
const MAX_CANCELLED: usize = 256;

/// Decrements the in-flight count when dropped (a request ends or is aborted).
struct InflightGuard(Arc<AtomicUsize>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The longest a request can take, retries and their backoff included (RunPod: the
/// `/runsync` wait and the polling too).
fn longest_request(s: &Settings) -> Duration {
    let timeout = Duration::from_millis(s.request_timeout_ms as u64);
    let backoffs: Duration = (1..=s.max_retries).map(|a| client::backoff(a, 1.0)).sum();
    match s.protocol {
        InferProtocol::Runpod => {
            let wait = timeout.clamp(Duration::from_secs(1), Duration::from_secs(300));
            wait + timeout + timeout * 6 + backoffs
        }
        _ => timeout * (s.max_retries + 1) + backoffs,
    }
}

/// A classification as a `classification` structure: the best class as `label`,
/// `label_id` and `confidence`, and the top-k in `labels`, `label_ids` and `scores`.
fn classification_param(classes: &[Class], model: &str) -> gst::Structure {
    let best = &classes[0];
    gst::Structure::builder(CLASSIFICATION_PARAM)
        .field("label", best.label.as_str())
        .field("label_id", best.class_id)
        .field("confidence", best.score)
        .field("model_name", model)
        .field(
            "labels",
            gst::Array::new(classes.iter().map(|c| c.label.clone())),
        )
        .field(
            "label_ids",
            gst::Array::new(classes.iter().map(|c| c.class_id)),
        )
        .field("scores", gst::Array::new(classes.iter().map(|c| c.score)))
        .build()
}

/// Name of the ROI param (and bus field) with a classifier's answer.
const CLASSIFICATION_PARAM: &str = "classification";

#[glib::object_subclass]
impl ObjectSubclass for InferClient {
    const NAME: &'static str = "GstRtaiInferClient";
    type Type = super::InferClient;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad = gst::Pad::builder_from_template(&klass.pad_template("sink").unwrap())
            .chain_function(|pad, parent, buffer| {
                InferClient::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |this| this.sink_chain(pad, buffer),
                )
            })
            .chain_list_function(|pad, parent, list| {
                InferClient::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |this| this.sink_chain_list(pad, list),
                )
            })
            .event_function(|pad, parent, event| {
                InferClient::catch_panic_pad_function(
                    parent,
                    || false,
                    |this| this.sink_event(pad, event),
                )
            })
            .query_function(|pad, parent, query| {
                InferClient::catch_panic_pad_function(
                    parent,
                    || false,
                    |this| {
                        let text_out = this.settings.lock().unwrap().output == InferOutput::Text;
                        match query.view_mut() {
                            // What this element reads, narrowed by downstream when media passes through.
                            gst::QueryViewMut::Caps(q) => {
                                let template = pad.pad_template_caps();
                                let mut caps = if text_out {
                                    template
                                } else {
                                    this.srcpad
                                        .peer_query_caps(q.filter_owned().as_ref())
                                        .intersect_with_mode(
                                            &template,
                                            gst::CapsIntersectMode::First,
                                        )
                                };
                                if let Some(filter) = q.filter() {
                                    caps = filter
                                        .intersect_with_mode(&caps, gst::CapsIntersectMode::First);
                                }
                                q.set_result(&caps);
                                true
                            }
                            gst::QueryViewMut::AcceptCaps(q) => {
                                let ok = q.caps().is_subset(&pad.pad_template_caps())
                                    && (text_out
                                        || this.srcpad.peer_query_accept_caps(&q.caps_owned()));
                                q.set_result(ok);
                                true
                            }
                            _ => {
                                this.srcpad.peer_query(query)
                                    || gst::Pad::query_default(pad, Some(&*this.obj()), query)
                            }
                        }
                    },
                )
            })
            .build();
        let srcpad = gst::Pad::builder_from_template(&klass.pad_template("src").unwrap())
            .query_function(|pad, parent, query| {
                InferClient::catch_panic_pad_function(
                    parent,
                    || false,
                    |this| {
                        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
                            let mut upstream = gst::query::Latency::new();
                            if !this.sinkpad.peer_query(&mut upstream) {
                                return false;
                            }
                            let (live, min, max) = upstream.result();
                            let s = this.settings();
                            // Media waits for its result at most the budget; text waits for the
                            // request, its retries included.
                            let added = if s.output == InferOutput::Meta {
                                gst::ClockTime::from_mseconds(s.latency_budget_ms as u64)
                            } else {
                                gst::ClockTime::from_nseconds(longest_request(&s).as_nanos() as u64)
                            };
                            q.set(live, min + added, max.map(|m| m + added));
                            return true;
                        }
                        gst::Pad::query_default(pad, Some(&*this.obj()), query)
                    },
                )
            })
            .event_function(|pad, parent, event| {
                InferClient::catch_panic_pad_function(
                    parent,
                    || false,
                    |this| gst::Pad::event_default(pad, Some(&*this.obj()), event),
                )
            })
            .build();
        Self {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(None),
            shared: Arc::default(),
            inflight: Arc::default(),
            warned_bad_reply: Arc::default(),
            warned_rejected: Arc::default(),
            warned_bad_input: Default::default(),
            stats: Arc::default(),
            round_trips: Arc::new(Mutex::new(LatencyHistogram::new())),
            resolved_input: Mutex::default(),
        }
    }
}

impl ObjectImpl for InferClient {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("protocol", DEFAULT_PROTOCOL)
                    .nick("Protocol")
                    .blurb("How to talk to the endpoint")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("url")
                    .nick("URL")
                    .blurb("Endpoint base URL: http(s)://host:port for KServe REST/gRPC and OpenAI, https://api.runpod.ai/v2/ENDPOINT_ID for RunPod")
                    .default_value(Some(DEFAULT_URL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb("Model name (KServe model, OpenAI model; passed to RunPod handlers as input.model)")
                    .default_value(Some(DEFAULT_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("api-key")
                    .nick("API key")
                    .blurb("Sent as 'Authorization: Bearer KEY'; write-only, never logged")
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("request-timeout")
                    .nick("Request timeout")
                    .blurb("Milliseconds one HTTP request may take")
                    .minimum(1)
                    .maximum(600_000)
                    .default_value(DEFAULT_REQUEST_TIMEOUT_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-inflight")
                    .nick("Max in flight")
                    .blurb("Requests pipelined at once; frames due while all are busy pass without inference (counted)")
                    .minimum(1)
                    .maximum(64)
                    .default_value(DEFAULT_MAX_INFLIGHT)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("interval")
                    .nick("Interval")
                    .blurb("Infer every Nth frame (1 = every frame)")
                    .minimum(1)
                    .maximum(10_000)
                    .default_value(DEFAULT_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("min-interval-ms")
                    .nick("Minimum interval")
                    .blurb("Wall-clock milliseconds between two requests at least")
                    .maximum(3_600_000)
                    .default_value(DEFAULT_MIN_INTERVAL_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("latency-budget")
                    .nick("Latency budget")
                    .blurb("Milliseconds a frame waits for its result; later it passes without (counted as dropped-by-budget)")
                    .maximum(600_000)
                    .default_value(DEFAULT_LATENCY_BUDGET_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-retries")
                    .nick("Max retries")
                    .blurb("Retries for 429, 5xx, timeouts and connection failures (exponential backoff with jitter)")
                    .maximum(20)
                    .default_value(DEFAULT_MAX_RETRIES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("breaker-threshold")
                    .nick("Breaker threshold")
                    .blurb("Consecutive failed requests that open the circuit breaker (0 = never)")
                    .maximum(1000)
                    .default_value(DEFAULT_BREAKER_THRESHOLD)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("breaker-cooldown")
                    .nick("Breaker cooldown")
                    .blurb("Milliseconds the open breaker lets frames pass without requests before one probe")
                    .minimum(1)
                    .maximum(3_600_000)
                    .default_value(DEFAULT_BREAKER_COOLDOWN_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("input-width")
                    .nick("Input width")
                    .blurb("Model input width: frames are letterboxed into input-width x input-height (KServe); 0: from the model's metadata, else 640")
                    .minimum(0)
                    .maximum(8192)
                    .default_value(DEFAULT_INPUT_WIDTH)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("input-height")
                    .nick("Input height")
                    .blurb("Model input height (KServe); 0: from the model's metadata, else 640")
                    .minimum(0)
                    .maximum(8192)
                    .default_value(DEFAULT_INPUT_HEIGHT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("input-name")
                    .nick("Input name")
                    .blurb("Name of the model's input tensor (KServe); empty: from the model's metadata, else images")
                    .default_value(Some(DEFAULT_INPUT_NAME))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("input-datatype", DEFAULT_INPUT_DATATYPE)
                    .nick("Input datatype")
                    .blurb("How the input tensor travels: FP32, FP16, UINT8 (0..255), or the frame as JPEG in a BYTES tensor; auto: from the model's metadata, else FP32")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("nchw")
                    .nick("NCHW")
                    .blurb("Tensor layout [1, 3, H, W] (true) or [1, H, W, 3] (false)")
                    .default_value(DEFAULT_NCHW)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("normalize")
                    .nick("Normalize")
                    .blurb("Scale pixel values to 0..1 (true) or keep 0..255")
                    .default_value(DEFAULT_NORMALIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("box-format", DEFAULT_BOX_FORMAT)
                    .nick("Box format")
                    .blurb("How the model's outputs are laid out (YOLO families, SSD, EfficientNMS, named tensors, a classifier); auto decides from names and shapes and posts an error when it cannot tell")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("confidence-threshold")
                    .nick("Confidence threshold")
                    .blurb("Detections below this score are dropped")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_CONFIDENCE_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("nms-iou")
                    .nick("NMS IoU")
                    .blurb("Overlap above which a weaker box of the same class is suppressed (YOLO outputs)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_NMS_IOU)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("labels")
                    .nick("Labels")
                    .blurb("Comma-separated class names by class id (e.g. person,bicycle,car); unknown ids are classN")
                    .default_value(Some(DEFAULT_LABELS))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("resize", DEFAULT_RESIZE)
                    .nick("Resize")
                    .blurb("How a frame is fitted into input-width x input-height (bilinear): letterbox, stretch or center-crop")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("channel-order", DEFAULT_CHANNEL_ORDER)
                    .nick("Channel order")
                    .blurb("Order of the tensor's colour channels")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("mean")
                    .nick("Mean")
                    .blurb("Per-channel mean subtracted (after normalize), 1 or 3 comma-separated numbers in the tensor's channel order")
                    .default_value(Some(DEFAULT_MEAN))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("std")
                    .nick("Std")
                    .blurb("Per-channel standard deviation divided by (after mean), 1 or 3 comma-separated numbers")
                    .default_value(Some(DEFAULT_STD))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("labels-file")
                    .nick("Labels file")
                    .blurb("File with one class name per line (line N: class N); replaces labels when set")
                    .default_value(Some(DEFAULT_LABELS_FILE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("box-coordinates", DEFAULT_BOX_COORDINATES)
                    .nick("Box coordinates")
                    .blurb("How the model gives a box: order (xyxy, xywh, cxcywh, yxyx) and pixels of the input or normalized 0..1; auto: the box-format's own")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("boxes-output")
                    .nick("Boxes output")
                    .blurb("Name of the output with the boxes (named, ssd, nms) or the one output a YOLO/decoded layout reads; empty: the layout's usual names")
                    .default_value(Some(DEFAULT_OUTPUT_NAME))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("scores-output")
                    .nick("Scores output")
                    .blurb("Name of the output with the scores (named, ssd, nms) or the class scores (classification); empty: the usual names")
                    .default_value(Some(DEFAULT_OUTPUT_NAME))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("classes-output")
                    .nick("Classes output")
                    .blurb("Name of the output with class ids or BYTES labels (named, ssd, nms); empty: the usual names")
                    .default_value(Some(DEFAULT_OUTPUT_NAME))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("count-output")
                    .nick("Count output")
                    .blurb("Name of the output with the number of valid boxes (ssd num_detections, nms num_dets); empty: the usual names")
                    .default_value(Some(DEFAULT_OUTPUT_NAME))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("top-k")
                    .nick("Top k")
                    .blurb("Classes kept from a classification (at or above confidence-threshold)")
                    .minimum(1)
                    .maximum(100)
                    .default_value(DEFAULT_TOP_K)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("softmax")
                    .nick("Softmax")
                    .blurb("Apply softmax to class scores (for models that answer logits)")
                    .default_value(DEFAULT_SOFTMAX)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("attach-tensors")
                    .nick("Attach tensors")
                    .blurb("Attach every output tensor (name, dims, datatype, data) as an RtaiTensorMeta for decoding downstream")
                    .default_value(DEFAULT_ATTACH_TENSORS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("output", DEFAULT_OUTPUT)
                    .nick("Output")
                    .blurb("meta: media passes through with results attached; text: results as text/x-raw")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("segment-events", DEFAULT_SEGMENT_EVENTS)
                    .nick("Segment events")
                    .blurb("in-order: segment start/commit/end events leave in stream order, behind the results still pending; immediate: they are pushed at once from the sink pad's thread (barge-in), buffers and other events keep stream order")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("prompt")
                    .nick("Prompt")
                    .blurb("Instruction sent with images (openai-chat, runpod); with audio, when set, the transcription prompt (openai) or input.prompt (runpod, e.g. a grammar)")
                    .default_value(Some(DEFAULT_PROMPT))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("context-frames")
                    .nick("Context frames")
                    .blurb("The last N sampled frames sent together (openai-chat), so a vision-language model sees motion")
                    .minimum(1)
                    .maximum(16)
                    .default_value(DEFAULT_CONTEXT_FRAMES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("feed-back-answer")
                    .nick("Feed back answer")
                    .blurb("Send the previous answer as context with the next request (openai-chat)")
                    .default_value(DEFAULT_FEED_BACK_ANSWER)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("chunk-duration")
                    .nick("Chunk duration")
                    .blurb("Milliseconds of audio per request when the audio carries no speech segments")
                    .minimum(100)
                    .maximum(600_000)
                    .default_value(DEFAULT_CHUNK_DURATION_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("jpeg-quality")
                    .nick("JPEG quality")
                    .blurb("Quality of frames sent as JPEG (runpod, openai-chat)")
                    .minimum(1)
                    .maximum(100)
                    .default_value(DEFAULT_JPEG_QUALITY)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("binary-data")
                    .nick("Binary data")
                    .blurb("kserve-rest: send the tensor and ask for outputs as raw bytes after the JSON (Triton's binary tensor extension; MLServer does not support it)")
                    .default_value(DEFAULT_BINARY_DATA)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("roi-classes")
                    .nick("ROI classes")
                    .blurb("Per-object inference (KServe): comma-separated ROI labels (e.g. car,person) whose crops are sent, batched, instead of the frame; each ROI gets a classification param. Empty: the whole frame")
                    .default_value(Some(DEFAULT_ROI_CLASSES))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("roi-min-size")
                    .nick("ROI minimum size")
                    .blurb("Per-object inference: ROIs narrower or lower than this (pixels, inside the frame) are not sent")
                    .minimum(1)
                    .maximum(8192)
                    .default_value(DEFAULT_ROI_MIN_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("reclassify-interval")
                    .nick("Reclassify interval")
                    .blurb("Per-object inference: a tracked ROI (objtracker's object_id) is sent at most once per N frames; in between it gets its last answer again (cached=true)")
                    .minimum(1)
                    .maximum(1_000_000)
                    .default_value(DEFAULT_RECLASSIFY_INTERVAL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("sent, ok, failed, retried, dropped-by-budget, skipped-busy, skipped-breaker, aborted, rejected (400/413/422 refusals), inflight, queued, queue-limit, breaker-state, round-trip P50/P95/P99 (ns)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        let string = |v: &glib::Value| {
            v.get::<Option<String>>()
                .expect("type checked upstream")
                .unwrap_or_default()
        };
        match pspec.name() {
            "protocol" => s.protocol = value.get().expect("type checked upstream"),
            "url" => s.url = string(value),
            "model" => s.model = string(value),
            "api-key" => s.api_key = Some(string(value)).filter(|k| !k.is_empty()),
            "request-timeout" => s.request_timeout_ms = value.get().expect("type checked upstream"),
            "max-inflight" => s.max_inflight = value.get().expect("type checked upstream"),
            "interval" => s.interval = value.get().expect("type checked upstream"),
            "min-interval-ms" => s.min_interval_ms = value.get().expect("type checked upstream"),
            "latency-budget" => s.latency_budget_ms = value.get().expect("type checked upstream"),
            "max-retries" => s.max_retries = value.get().expect("type checked upstream"),
            "breaker-threshold" => {
                s.breaker_threshold = value.get().expect("type checked upstream")
            }
            "breaker-cooldown" => {
                s.breaker_cooldown_ms = value.get().expect("type checked upstream")
            }
            "input-width" => s.input_width = value.get().expect("type checked upstream"),
            "input-height" => s.input_height = value.get().expect("type checked upstream"),
            "input-name" => s.input_name = string(value),
            "input-datatype" => s.input_datatype = value.get().expect("type checked upstream"),
            "nchw" => s.nchw = value.get().expect("type checked upstream"),
            "normalize" => s.normalize = value.get().expect("type checked upstream"),
            "box-format" => s.box_format = value.get().expect("type checked upstream"),
            "confidence-threshold" => {
                s.confidence_threshold = value.get().expect("type checked upstream")
            }
            "nms-iou" => s.nms_iou = value.get().expect("type checked upstream"),
            "labels" => s.labels = string(value),
            "labels-file" => s.labels_file = string(value),
            "resize" => s.resize = value.get().expect("type checked upstream"),
            "channel-order" => s.channel_order = value.get().expect("type checked upstream"),
            "mean" => s.mean = string(value),
            "std" => s.std = string(value),
            "box-coordinates" => s.box_coordinates = value.get().expect("type checked upstream"),
            "boxes-output" => s.boxes_output = string(value),
            "scores-output" => s.scores_output = string(value),
            "classes-output" => s.classes_output = string(value),
            "count-output" => s.count_output = string(value),
            "top-k" => s.top_k = value.get().expect("type checked upstream"),
            "softmax" => s.softmax = value.get().expect("type checked upstream"),
            "attach-tensors" => s.attach_tensors = value.get().expect("type checked upstream"),
            "output" => s.output = value.get().expect("type checked upstream"),
            "segment-events" => s.segment_events = value.get().expect("type checked upstream"),
            "prompt" => s.prompt = string(value),
            "context-frames" => s.context_frames = value.get().expect("type checked upstream"),
            "feed-back-answer" => s.feed_back_answer = value.get().expect("type checked upstream"),
            "chunk-duration" => s.chunk_duration_ms = value.get().expect("type checked upstream"),
            "jpeg-quality" => s.jpeg_quality = value.get().expect("type checked upstream"),
            "binary-data" => s.binary_data = value.get().expect("type checked upstream"),
            "roi-classes" => s.roi_classes = string(value),
            "roi-min-size" => s.roi_min_size = value.get().expect("type checked upstream"),
            "reclassify-interval" => {
                s.reclassify_interval = value.get().expect("type checked upstream")
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self.stats_structure().to_value();
        }
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "protocol" => s.protocol.to_value(),
            "url" => rtai_core::secrets::redact(&s.url).to_value(),
            "model" => s.model.to_value(),
            "request-timeout" => s.request_timeout_ms.to_value(),
            "max-inflight" => s.max_inflight.to_value(),
            "interval" => s.interval.to_value(),
            "min-interval-ms" => s.min_interval_ms.to_value(),
            "latency-budget" => s.latency_budget_ms.to_value(),
            "max-retries" => s.max_retries.to_value(),
            "breaker-threshold" => s.breaker_threshold.to_value(),
            "breaker-cooldown" => s.breaker_cooldown_ms.to_value(),
            "input-width" => s.input_width.to_value(),
            "input-height" => s.input_height.to_value(),
            "input-name" => s.input_name.to_value(),
            "input-datatype" => s.input_datatype.to_value(),
            "nchw" => s.nchw.to_value(),
            "normalize" => s.normalize.to_value(),
            "box-format" => s.box_format.to_value(),
            "confidence-threshold" => s.confidence_threshold.to_value(),
            "nms-iou" => s.nms_iou.to_value(),
            "labels" => s.labels.to_value(),
            "labels-file" => s.labels_file.to_value(),
            "resize" => s.resize.to_value(),
            "channel-order" => s.channel_order.to_value(),
            "mean" => s.mean.to_value(),
            "std" => s.std.to_value(),
            "box-coordinates" => s.box_coordinates.to_value(),
            "boxes-output" => s.boxes_output.to_value(),
            "scores-output" => s.scores_output.to_value(),
            "classes-output" => s.classes_output.to_value(),
            "count-output" => s.count_output.to_value(),
            "top-k" => s.top_k.to_value(),
            "softmax" => s.softmax.to_value(),
            "attach-tensors" => s.attach_tensors.to_value(),
            "output" => s.output.to_value(),
            "segment-events" => s.segment_events.to_value(),
            "prompt" => s.prompt.to_value(),
            "context-frames" => s.context_frames.to_value(),
            "feed-back-answer" => s.feed_back_answer.to_value(),
            "chunk-duration" => s.chunk_duration_ms.to_value(),
            "jpeg-quality" => s.jpeg_quality.to_value(),
            "binary-data" => s.binary_data.to_value(),
            "roi-classes" => s.roi_classes.to_value(),
            "roi-min-size" => s.roi_min_size.to_value(),
            "reclassify-interval" => s.reclassify_interval.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for InferClient {}

impl ElementImpl for InferClient {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Remote inference client",
                "Filter/Analyzer/Video/Audio",
                "Sends frames and audio to remote inference endpoints (KServe v2/Triton REST, RunPod serverless, OpenAI-compatible chat and transcriptions) without blocking the stream, and attaches the results as ROI metas and inference metas",
                "rtai contributors",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let mut caps = gst::Caps::new_empty();
            {
                let caps = caps.get_mut().unwrap();
                caps.append(
                    gst_video::VideoCapsBuilder::new()
                        .format_list(preprocess::FORMATS)
                        .build(),
                );
                caps.append(gst::Caps::builder("image/jpeg").build());
                caps.append(
                    gst_audio::AudioCapsBuilder::new_interleaved()
                        .format(gst_audio::AudioFormat::S16le)
                        .build(),
                );
                caps.append(
                    gst::Caps::builder("text/x-raw")
                        .field("format", "utf8")
                        .build(),
                );
            }
            let sink = gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &caps,
            )
            .unwrap();
            let mut src_caps = caps.clone();
            src_caps.merge(
                gst::Caps::builder("text/x-raw")
                    .field("format", "utf8")
                    .build(),
            );
            let src = gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &src_caps,
            )
            .unwrap();
            vec![sink, src]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        match transition {
            gst::StateChange::ReadyToPaused => {
                let s = self.settings.lock().unwrap().clone();
                if let Err(e) = s.tensor_spec() {
                    gst::element_imp_error!(self, gst::ResourceError::Settings, ("{}", e));
                    return Err(gst::StateChangeError);
                }
                let labels = s.read_labels().map_err(|e| {
                    gst::element_imp_error!(self, gst::ResourceError::OpenRead, ("{}", e));
                    gst::StateChangeError
                })?;
                let endpoint = Endpoint {
                    protocol: protocol_of(s.protocol),
                    url: s.url.clone(),
                    model: s.model.clone(),
                    api_key: s.api_key.clone(),
                    timeout: Duration::from_millis(s.request_timeout_ms as u64),
                    max_retries: s.max_retries,
                    poll_limit: Duration::from_millis(s.request_timeout_ms as u64 * 6),
                    grpc: None,
                    binary_data: s.binary_data,
                    runsync_missing: Arc::default(),
                };
                let mut endpoint = endpoint;
                // Before any TLS use (gRPC's TLS config takes the process default).
                rtai_core::runtime::ensure_tls_provider();
                if s.protocol == InferProtocol::KserveGrpc {
                    let _guard = rtai_core::runtime::runtime().enter();
                    endpoint.grpc =
                        Some(client::grpc_channel(&s.url, endpoint.timeout).map_err(|e| {
                            gst::element_imp_error!(
                                self,
                                gst::ResourceError::Settings,
                                ("Cannot use the gRPC endpoint: {}", e)
                            );
                            gst::StateChangeError
                        })?);
                }
                let client = reqwest::Client::builder().build().map_err(|e| {
                    gst::element_imp_error!(
                        self,
                        gst::LibraryError::Init,
                        ("Cannot create the HTTP client"),
                        ["{e}"]
                    );
                    gst::StateChangeError
                })?;
                // Unset input values from the model's metadata (before the decoder, which
                // scales normalized boxes by the input size).
                let s = self.resolve_input(&s, &endpoint, &client);
                *self.resolved_input.lock().unwrap() = Some(ResolvedInput::of(&s));
                *self.state.lock().unwrap() = Some(State {
                    endpoint,
                    client,
                    breaker: Arc::new(Mutex::new(Breaker::new(
                        s.breaker_threshold,
                        Duration::from_millis(s.breaker_cooldown_ms as u64),
                    ))),
                    frame: 0,
                    last_sent: None,
                    video: None,
                    jpeg: false,
                    audio: None,
                    context: VecDeque::new(),
                    previous_answer: Arc::default(),
                    audio_collected: AudioCollector::default(),
                    decoder: Arc::new(s.decoder(labels)),
                    tasks: Mutex::default(),
                    tracks: Tracks::default(),
                    cancelled: VecDeque::new(),
                    contacted: Arc::default(),
                });
                *self.stats.lock().unwrap() = Stats::default();
                self.warned_bad_reply.store(false, Ordering::SeqCst);
                self.warned_rejected.store(false, Ordering::SeqCst);
                self.warned_bad_input.store(false, Ordering::SeqCst);
                self.round_trips.lock().unwrap().reset();
                self.set_flushing(false);
                self.start_task().map_err(|_| gst::StateChangeError)?;
            }
            gst::StateChange::PausedToReady => {
                self.set_flushing(true);
                let _ = self.srcpad.stop_task();
                // Nothing outlives the stop: every request still running is aborted, and
                // waited for (briefly: an aborted task ends at its next await).
                let tasks: Vec<_> = self
                    .state
                    .lock()
                    .unwrap()
                    .as_ref()
                    .map(|state| state.tasks.lock().unwrap().drain(..).collect())
                    .unwrap_or_default();
                let mut handles = Vec::new();
                for (job, handle) in tasks {
                    job.abort_if_pending(&self.stats, "stopped");
                    handle.abort();
                    handles.push(handle);
                }
                if tokio::runtime::Handle::try_current().is_err() {
                    rtai_core::runtime::runtime().block_on(async {
                        let all = join_tasks(handles);
                        let _ = tokio::time::timeout(Duration::from_secs(1), all).await;
                    });
                }
            }
            _ => {}
        }
        let ret = self.parent_change_state(transition)?;
        if transition == gst::StateChange::PausedToReady {
            *self.state.lock().unwrap() = None;
            *self.resolved_input.lock().unwrap() = None;
        }
        Ok(ret)
    }
}
