//! Errors, latency histograms, live counters and the rate limiter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Error classes reported in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrKind {
    /// TCP connect failed.
    Connect,
    /// TLS handshake or STARTTLS failed.
    Tls,
    /// No usable greeting.
    Greeting,
    /// LOGIN answered NO.
    LoginNo,
    /// A command (other than LOGIN) answered NO.
    No,
    /// A command answered BAD.
    Bad,
    /// A response could not be parsed or was not the expected one.
    BadResponse,
    /// A fetched message failed its digest/size check or differs.
    VerifyMismatch,
    /// A command did not complete in time.
    Timeout,
    /// The server closed the connection.
    Closed,
    /// Other I/O error.
    Io,
}

impl ErrKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrKind::Connect => "connect",
            ErrKind::Tls => "tls",
            ErrKind::Greeting => "greeting",
            ErrKind::LoginNo => "login_no",
            ErrKind::No => "no",
            ErrKind::Bad => "bad",
            ErrKind::BadResponse => "bad_response",
            ErrKind::VerifyMismatch => "verify_mismatch",
            ErrKind::Timeout => "timeout",
            ErrKind::Closed => "closed",
            ErrKind::Io => "io",
        }
    }
}

/// An error of one operation.
#[derive(Debug, Clone)]
pub struct BenchError {
    pub kind: ErrKind,
    pub msg: String,
}

impl BenchError {
    pub fn new(kind: ErrKind, msg: impl Into<String>) -> Self {
        BenchError {
            kind,
            msg: msg.into(),
        }
    }
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.msg)
    }
}

pub type Res<T> = Result<T, BenchError>;

/// Counters shared by all workers, read by the progress printer.
#[derive(Debug, Default)]
pub struct Live {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Bytes on the socket of compressed connections (`--compress`), after
    /// COMPRESS took effect.
    pub wire_read: AtomicU64,
    pub wire_written: AtomicU64,
    pub conns_open: AtomicU64,
    pub stop: AtomicBool,
}

impl Live {
    pub fn add_read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn add_written(&self, n: usize) {
        self.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Highest latency a histogram tracks (1 hour, in microseconds).
const MAX_US: u64 = 3_600_000_000;
/// Keep at most this many error messages as samples.
const MAX_SAMPLES: usize = 20;

fn new_hist() -> Histogram<u64> {
    // Bounds are valid constants: this cannot fail.
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// Per-worker statistics. Latencies are recorded only when they end inside
/// the measurement window (after warmup, before the end); errors are
/// always counted.
#[derive(Debug)]
pub struct Recorder {
    pub hists: BTreeMap<String, Histogram<u64>>,
    pub ops: u64,
    pub counters: BTreeMap<String, u64>,
    pub errors: BTreeMap<ErrKind, u64>,
    pub samples: Vec<String>,
    pub measure_from: Instant,
    pub measure_until: Instant,
    live: Arc<Live>,
}

impl Recorder {
    pub fn new(live: Arc<Live>, measure_from: Instant, measure_until: Instant) -> Self {
        Recorder {
            hists: BTreeMap::new(),
            ops: 0,
            counters: BTreeMap::new(),
            errors: BTreeMap::new(),
            samples: Vec::new(),
            measure_from,
            measure_until,
            live,
        }
    }

    pub fn measuring(&self, now: Instant) -> bool {
        now >= self.measure_from && now <= self.measure_until
    }

    /// Record the latency of a command kind.
    pub fn lat(&mut self, name: &str, d: Duration) {
        if !self.measuring(Instant::now()) {
            return;
        }
        let us = (d.as_micros() as u64).clamp(1, MAX_US);
        match self.hists.get_mut(name) {
            Some(h) => h.saturating_record(us),
            None => {
                let mut h = new_hist();
                h.saturating_record(us);
                self.hists.insert(name.to_string(), h);
            }
        }
    }

    /// One operation completed; `d` is recorded under `OP`.
    pub fn op(&mut self, d: Duration) {
        self.live.ops.fetch_add(1, Ordering::Relaxed);
        if self.measuring(Instant::now()) {
            self.ops += 1;
            self.lat("OP", d);
        }
    }

    /// Add to a named counter (inside the measurement window only).
    pub fn count(&mut self, name: &str, n: u64) {
        if self.measuring(Instant::now()) {
            *self.counters.entry(name.to_string()).or_insert(0) += n;
        }
    }

    pub fn error(&mut self, e: &BenchError) {
        self.live.errors.fetch_add(1, Ordering::Relaxed);
        *self.errors.entry(e.kind).or_insert(0) += 1;
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(e.to_string());
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        for (k, h) in &other.hists {
            match self.hists.get_mut(k) {
                Some(mine) => {
                    // Same bounds everywhere: adding cannot fail.
                    let _ = mine.add(h);
                }
                None => {
                    self.hists.insert(k.clone(), h.clone());
                }
            }
        }
        self.ops += other.ops;
        for (k, n) in &other.counters {
            *self.counters.entry(k.clone()).or_insert(0) += n;
        }
        for (k, n) in &other.errors {
            *self.errors.entry(*k).or_insert(0) += n;
        }
        for s in &other.samples {
            if self.samples.len() < MAX_SAMPLES {
                self.samples.push(s.clone());
            }
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A recorder shared between a worker task and the runner (so that the
/// runner still has the numbers of a task it had to abort). Each call
/// locks briefly; the lock is never held across an await.
#[derive(Debug, Clone)]
pub struct Rec(Arc<Mutex<Recorder>>);

impl Rec {
    pub fn new(r: Recorder) -> Self {
        Rec(Arc::new(Mutex::new(r)))
    }

    fn get(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lat(&self, name: &str, d: Duration) {
        self.get().lat(name, d)
    }

    pub fn op(&self, d: Duration) {
        self.get().op(d)
    }

    pub fn count(&self, name: &str, n: u64) {
        self.get().count(name, n)
    }

    pub fn error(&self, e: &BenchError) {
        self.get().error(e)
    }

    pub fn merge_into(&self, total: &mut Recorder) {
        total.merge(&self.get())
    }
}

/// Global operation rate limit (`--rate`): hands out evenly spaced start
/// times; at most one second of backlog is kept so that a stall does not
/// cause a burst afterwards.
#[derive(Debug)]
pub struct Limiter {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl Limiter {
    pub fn new(ops_per_sec: f64) -> Self {
        let interval = if ops_per_sec > 0.0 && ops_per_sec.is_finite() {
            Some(Duration::from_secs_f64(1.0 / ops_per_sec))
        } else {
            None
        };
        Limiter {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    /// The instant at which the caller may start its next operation.
    pub fn slot(&self, now: Instant) -> Option<Instant> {
        let interval = self.interval?;
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        let at = (*next).max(floor);
        *next = at + interval;
        Some(at)
    }

    pub async fn wait(&self) {
        if let Some(at) = self.slot(Instant::now()) {
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_window_and_merge() {
        let live = Arc::new(Live::default());
        let now = Instant::now();
        let mut a = Recorder::new(live.clone(), now, now + Duration::from_secs(60));
        a.lat("LOGIN", Duration::from_millis(2));
        a.lat("LOGIN", Duration::from_millis(4));
        a.op(Duration::from_millis(10));
        a.error(&BenchError::new(ErrKind::Timeout, "x"));
        // A recorder still in warmup records nothing but errors.
        let mut b = Recorder::new(live.clone(), now + Duration::from_secs(60), now);
        b.lat("LOGIN", Duration::from_millis(2));
        b.op(Duration::from_millis(1));
        b.error(&BenchError::new(ErrKind::Timeout, "y"));
        assert!(b.hists.is_empty());
        assert_eq!(b.ops, 0);
        a.merge(&b);
        assert_eq!(a.hists["LOGIN"].len(), 2);
        assert_eq!(a.ops, 1);
        assert_eq!(a.errors[&ErrKind::Timeout], 2);
        assert_eq!(a.error_count(), 2);
        assert_eq!(live.ops.load(Ordering::Relaxed), 2);
        assert_eq!(live.errors.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn limiter_spacing() {
        let l = Limiter::new(100.0);
        let t = Instant::now();
        let a = l.slot(t).unwrap();
        let b = l.slot(t).unwrap();
        let c = l.slot(t).unwrap();
        assert_eq!(b - a, Duration::from_millis(10));
        assert_eq!(c - b, Duration::from_millis(10));
        assert!(Limiter::new(0.0).slot(t).is_none());
    }
}
