//! The ordered queue between the sink pad and the src task: requests in flight
//! (jobs), the items waiting for them in stream order, and its bound.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::client::Tensor;
use crate::postprocess::{Class, Detection};

use super::settings::{DEFAULT_LATENCY_BUDGET_MS, DEFAULT_MAX_INFLIGHT};

/// Called with a result that came after its item left the queue.
pub(super) type LateResult = Box<dyn FnOnce(&Outcome) + Send>;

/// A request's outcome, filled by the runtime, awaited by the src task.
#[derive(Default)]
pub(super) struct Job {
    pub(super) result: Mutex<Option<Result<Outcome, String>>>,
    pub(super) done: Condvar,
    /// Set by a cancel or flush: the task stops and the RunPod job is cancelled.
    pub(super) abort: tokio::sync::Notify,
    pub(super) segment: Option<u64>,
    pub(super) late: Mutex<Option<LateResult>>,
    /// Per-object inference: the ROIs the request's rows are for, in order.
    pub(super) rois: Vec<super::rois::Target>,
}

impl Job {
    /// Aborts the request if it is still running: counted once, here, so the count is
    /// right as soon as the cancel or flush returns.
    pub(super) fn abort_if_pending(&self, stats: &Mutex<Stats>, why: &str) -> bool {
        if self.result.lock().unwrap().is_some() {
            return false;
        }
        stats.lock().unwrap().aborted += 1;
        self.abort.notify_one();
        self.finish(Err(why.into()));
        true
    }

    pub(super) fn finish(&self, r: Result<Outcome, String>) {
        {
            let mut slot = self.result.lock().unwrap();
            if slot.is_none() {
                *slot = Some(r);
            }
            self.done.notify_all();
        }
        self.run_late();
    }

    /// `f` gets the result when it arrives (at once if it is in already; never for a failure).
    pub(super) fn on_late_result(&self, f: LateResult) {
        *self.late.lock().unwrap() = Some(f);
        // The result may have come in since the wait gave up.
        self.run_late();
    }

    pub(super) fn run_late(&self) {
        let Some(Ok(outcome)) = self.result.lock().unwrap().clone() else {
            return;
        };
        // Taken: whichever of finish and on_late_result comes second runs it, once.
        let f = self.late.lock().unwrap().take();
        if let Some(f) = f {
            f(&outcome);
        }
    }

    /// Waits until the result is in or `deadline` (None: no limit) passes.
    pub(super) fn wait(&self, deadline: Option<Instant>) -> Option<Result<Outcome, String>> {
        let mut slot = self.result.lock().unwrap();
        loop {
            // Cloned, not taken: the frames of a batch share one job.
            if let Some(r) = slot.as_ref() {
                return Some(r.clone());
            }
            match deadline {
                None => slot = self.done.wait(slot).unwrap(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    slot = self.done.wait_timeout(slot, d - now).unwrap().0;
                }
            }
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(super) struct Outcome {
    pub(super) detections: Vec<Detection>,
    /// Per frame of a batched request (a buffer list): its own detections.
    pub(super) batches: Vec<Vec<Detection>>,
    /// A classifier's answer for the frame, best first.
    pub(super) classes: Vec<Class>,
    /// Per-object inference: each ROI's classes (the request's rows, in order).
    pub(super) roi_classes: Vec<Vec<Class>>,
    /// The reply's output tensors, when `attach-tensors` asks for them.
    pub(super) tensors: Vec<Tensor>,
    pub(super) text: Option<String>,
    pub(super) raw: Option<String>,
    pub(super) round_trip: u64,
}

pub(super) enum Item {
    /// `index`: the buffer's place in a batched request.
    Buffer {
        buffer: gst::Buffer,
        job: Option<Arc<Job>>,
        deadline: Option<Instant>,
        index: Option<usize>,
    },
    /// output=text: a text buffer with these times once the job is done. Audio with
    /// output=meta: the transcript for the bus, waited for until `deadline` at most.
    Text {
        job: Arc<Job>,
        pts: Option<gst::ClockTime>,
        duration: Option<gst::ClockTime>,
        deadline: Option<Instant>,
    },
    Event(gst::Event),
}

pub(super) struct Queue {
    pub(super) items: VecDeque<Item>,
    pub(super) flushing: bool,
    /// The job the src task is waiting on (a flush or cancel must reach it too).
    pub(super) current: Option<Arc<Job>>,
    /// Items the sink pad may queue before it waits for the src task (see `queue_limit`).
    pub(super) limit: usize,
    /// Why the src task stopped (EOS, not-linked, an error downstream): returned upstream.
    pub(super) stopped: Option<gst::FlowError>,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            flushing: false,
            current: None,
            limit: queue_limit(DEFAULT_MAX_INFLIGHT, DEFAULT_LATENCY_BUDGET_MS, None),
            stopped: None,
        }
    }
}

/// Serialized events and the frames of a buffer list, on top of the buffers.
pub(super) const QUEUE_SLACK: usize = 16;

/// How many items the queue holds before upstream waits: the requests in flight plus the
/// buffers that arrive while the src task waits one budget for a result (`rate` buffers
/// a second; `None`: 100, audio in 10 ms buffers). A slower
/// downstream then holds upstream back, as a queue would, instead of letting the queue
/// grow; a result never waits for upstream, so waiting here cannot deadlock.
pub(super) fn queue_limit(max_inflight: u32, budget_ms: u32, rate: Option<f64>) -> usize {
    let rate = rate
        .filter(|r| r.is_finite() && *r > 0.0)
        .unwrap_or(100.0)
        .min(1000.0);
    let during_budget = (budget_ms as f64 / 1000.0 * rate).ceil() as usize;
    (max_inflight as usize + during_budget + QUEUE_SLACK).min(65_536)
}

#[derive(Default)]
pub(super) struct Shared {
    pub(super) queue: Mutex<Queue>,
    pub(super) changed: Condvar,
}

#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    pub(super) sent: u64,
    pub(super) ok: u64,
    pub(super) failed: u64,
    pub(super) retried: u64,
    pub(super) dropped_by_budget: u64,
    pub(super) skipped_busy: u64,
    pub(super) skipped_breaker: u64,
    pub(super) aborted: u64,
    /// Requests the endpoint refused (400, 413, 422, or any 4xx after it first answered).
    pub(super) rejected: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_limit_covers_inflight_and_a_budget_of_buffers() {
        assert_eq!(queue_limit(4, 1000, Some(30.0)), 4 + 30 + QUEUE_SLACK);
        assert_eq!(queue_limit(1, 100, Some(10.0)), 1 + 1 + QUEUE_SLACK);
        assert_eq!(queue_limit(4, 0, Some(30.0)), 4 + QUEUE_SLACK);
        // Unknown or nonsense rates: 100 a second.
        assert_eq!(queue_limit(4, 1000, None), 4 + 100 + QUEUE_SLACK);
        assert_eq!(queue_limit(4, 1000, Some(f64::NAN)), 4 + 100 + QUEUE_SLACK);
        assert_eq!(queue_limit(64, 600_000, Some(1e9)), 65_536, "capped");
    }

    #[test]
    fn a_job_waits_until_its_result_or_deadline_and_aborts_once() {
        let job = Arc::new(Job::default());
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        assert!(job.wait(Some(soon)).is_none(), "no result by the deadline");
        let filler = job.clone();
        let t = std::thread::spawn(move || {
            filler.finish(Ok(Outcome {
                round_trip: 7,
                ..Default::default()
            }))
        });
        let got = job.wait(None).unwrap().unwrap();
        t.join().unwrap();
        assert_eq!(got.round_trip, 7);
        // A finished job is not aborted (nor counted); a pending one is, once.
        let stats = Mutex::new(Stats::default());
        assert!(!job.abort_if_pending(&stats, "x"));
        let pending = Job::default();
        assert!(pending.abort_if_pending(&stats, "cancelled"));
        assert!(!pending.abort_if_pending(&stats, "cancelled"));
        assert_eq!(stats.lock().unwrap().aborted, 1);
        assert_eq!(pending.wait(None).unwrap().unwrap_err(), "cancelled");
    }

    #[test]
    fn a_late_result_reaches_its_callback_once_whichever_comes_first() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        // Callback first, result later.
        let job = Job::default();
        let s = seen.clone();
        job.on_late_result(Box::new(move |o| s.lock().unwrap().push(o.round_trip)));
        job.finish(Ok(Outcome {
            round_trip: 1,
            ..Default::default()
        }));
        // Result first, callback later.
        let job = Job::default();
        job.finish(Ok(Outcome {
            round_trip: 2,
            ..Default::default()
        }));
        let s = seen.clone();
        job.on_late_result(Box::new(move |o| s.lock().unwrap().push(o.round_trip)));
        job.finish(Err("again".into()));
        // A failure runs nothing.
        let job = Job::default();
        let s = seen.clone();
        job.on_late_result(Box::new(move |o| s.lock().unwrap().push(o.round_trip)));
        job.finish(Err("failed".into()));
        assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
    }
}
