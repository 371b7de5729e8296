//! Metrics whose values are read from elsewhere when Prometheus scrapes:
//! the FETCH cache's own counters and sizes, and the bytes relayed by
//! sessions still open (so long sessions show up in byte rates before
//! they end).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc, Describer};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, Opts};

use crate::cache::FetchCache;
use crate::relay::Counters;

/// Counter or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

type Reader = Box<dyn Fn() -> Vec<u64> + Send + Sync>;

/// Unlabelled counters and gauges read by one closure at scrape time
/// (values in the order of `specs`).
pub(crate) struct Sampled {
    specs: Vec<(Kind, Opts)>,
    descs: Vec<Desc>,
    read: Reader,
}

impl Sampled {
    pub(crate) fn new(
        specs: &[(Kind, &str, &str)],
        read: Reader,
    ) -> Result<Sampled, prometheus::Error> {
        let mut out = Sampled {
            specs: Vec::new(),
            descs: Vec::new(),
            read,
        };
        for (kind, name, help) in specs {
            let opts = Opts::new(*name, *help);
            out.descs.push(opts.describe()?);
            out.specs.push((*kind, opts));
        }
        Ok(out)
    }
}

impl Collector for Sampled {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let values = (self.read)();
        let mut out = Vec::with_capacity(self.specs.len());
        for ((kind, opts), v) in self.specs.iter().zip(values) {
            // The names were validated by `describe` at registration.
            match kind {
                Kind::Counter => {
                    if let Ok(c) = IntCounter::with_opts(opts.clone()) {
                        c.inc_by(v);
                        out.extend(c.collect());
                    }
                }
                Kind::Gauge => {
                    if let Ok(g) = IntGauge::with_opts(opts.clone()) {
                        g.set(i64::try_from(v).unwrap_or(i64::MAX));
                        out.extend(g.collect());
                    }
                }
            }
        }
        out
    }
}

/// The cache metrics, read from [`FetchCache`].
pub(crate) fn cache_collector(
    cache: Arc<FetchCache>,
    max_bytes: u64,
) -> Result<Sampled, prometheus::Error> {
    use Kind::*;
    Sampled::new(
        &[
            (Counter, "imapmux_cache_hits_total", "FETCH items answered from the cache (as counted by the cache)."),
            (Counter, "imapmux_cache_misses_total", "FETCH commands the cache could not answer (as counted by the cache)."),
            (Counter, "imapmux_cache_served_bytes_total", "Bytes of FETCH data answered from the cache instead of the backend."),
            (Counter, "imapmux_cache_evictions_total", "Cache entries dropped for size or age."),
            (Counter, "imapmux_cache_fills_total", "Items stored in the cache."),
            (Counter, "imapmux_cache_invalidations_total", "Cache invalidations (expunged messages, deleted or renamed mailboxes, UIDVALIDITY changes)."),
            (Gauge, "imapmux_cache_entries", "Messages with cached items (approximate)."),
            (Gauge, "imapmux_cache_bytes", "Bytes of data held by the cache (weighted size)."),
            (Gauge, "imapmux_cache_max_bytes", "Configured cache capacity in bytes (cache.max_bytes)."),
        ],
        Box::new(move || {
            let c = &cache.counters;
            vec![
                c.hits.load(Ordering::Relaxed),
                c.misses.load(Ordering::Relaxed),
                c.bytes_served.load(Ordering::Relaxed),
                c.evictions.load(Ordering::Relaxed),
                c.fills.load(Ordering::Relaxed),
                c.invalidations.load(Ordering::Relaxed),
                cache.entries(),
                cache.bytes(),
                max_bytes,
            ]
        }),
    )
}

/// Client bytes each way: finished sessions plus the live counters of the
/// open ones. A session's bytes move from live to finished under one lock,
/// so the sums never go backwards.
#[derive(Debug, Default)]
pub(crate) struct LiveBytes {
    inner: Mutex<LiveInner>,
}

#[derive(Debug, Default)]
struct LiveInner {
    next_id: u64,
    live: HashMap<u64, Arc<Counters>>,
    /// (from clients, to clients) of finished sessions.
    done: (u64, u64),
}

impl LiveBytes {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn add(self: &Arc<Self>, counters: Arc<Counters>) -> SessionBytes {
        let mut g = self.lock();
        let id = g.next_id;
        g.next_id = g.next_id.wrapping_add(1);
        g.live.insert(id, counters);
        SessionBytes {
            live: self.clone(),
            id,
        }
    }

    /// (bytes received from clients, bytes sent to clients) so far.
    pub(crate) fn totals(&self) -> (u64, u64) {
        let g = self.lock();
        g.live.values().fold(g.done, |(i, o), c| {
            (
                i.wrapping_add(c.client_to_backend.load(Ordering::Relaxed)),
                o.wrapping_add(c.backend_to_client.load(Ordering::Relaxed)),
            )
        })
    }

    pub(crate) fn collector(self: &Arc<Self>) -> Result<Sampled, prometheus::Error> {
        let me = self.clone();
        Sampled::new(
            &[
                (
                    Kind::Counter,
                    "imapmux_client_received_bytes_total",
                    "Bytes received from clients (commands and literals, before and after login).",
                ),
                (
                    Kind::Counter,
                    "imapmux_client_sent_bytes_total",
                    "Bytes sent to clients (responses, from the backend, the cache or imapmux itself).",
                ),
            ],
            Box::new(move || {
                let (i, o) = me.totals();
                vec![i, o]
            }),
        )
    }
}

/// Keeps one session's byte counters in the totals; on drop its final
/// counts move to the finished sessions' sums.
#[derive(Debug)]
pub struct SessionBytes {
    live: Arc<LiveBytes>,
    id: u64,
}

impl Drop for SessionBytes {
    fn drop(&mut self) {
        let mut g = self.live.lock();
        if let Some(c) = g.live.remove(&self.id) {
            g.done.0 = g
                .done
                .0
                .wrapping_add(c.client_to_backend.load(Ordering::Relaxed));
            g.done.1 = g
                .done
                .1
                .wrapping_add(c.backend_to_client.load(Ordering::Relaxed));
        }
    }
}

/// COMPRESS=DEFLATE toward clients: bytes inside and on the socket of every
/// compressed stream (process-wide totals).
pub(crate) fn compress_collector() -> Result<Sampled, prometheus::Error> {
    use Kind::*;
    Sampled::new(
        &[
            (
                Counter,
                "imapmux_compress_plain_sent_bytes_total",
                "Bytes sent to COMPRESS=DEFLATE clients, before compression.",
            ),
            (
                Counter,
                "imapmux_compress_wire_sent_bytes_total",
                "Bytes sent to COMPRESS=DEFLATE clients on the socket (compressed).",
            ),
            (
                Counter,
                "imapmux_compress_wire_received_bytes_total",
                "Bytes received from COMPRESS=DEFLATE clients on the socket (compressed).",
            ),
            (
                Counter,
                "imapmux_compress_plain_received_bytes_total",
                "Bytes received from COMPRESS=DEFLATE clients, after decompression.",
            ),
        ],
        Box::new(|| {
            let t = &crate::compress::TOTALS;
            vec![
                t.plain_sent.load(Ordering::Relaxed),
                t.wire_sent.load(Ordering::Relaxed),
                t.wire_received.load(Ordering::Relaxed),
                t.plain_received.load(Ordering::Relaxed),
            ]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_bytes_are_monotonic_across_session_end() {
        let live = Arc::new(LiveBytes::default());
        let a = Arc::new(Counters::default());
        let b = Arc::new(Counters::default());
        let ga = live.add(a.clone());
        let gb = live.add(b.clone());
        a.client_to_backend.fetch_add(10, Ordering::Relaxed);
        b.backend_to_client.fetch_add(7, Ordering::Relaxed);
        assert_eq!(live.totals(), (10, 7));
        drop(ga);
        assert_eq!(live.totals(), (10, 7));
        b.backend_to_client.fetch_add(3, Ordering::Relaxed);
        drop(gb);
        assert_eq!(live.totals(), (10, 10));
    }

    #[test]
    fn sampled_collects_counters_and_gauges() {
        let s = Sampled::new(
            &[
                (Kind::Counter, "x_total", "x"),
                (Kind::Gauge, "y_bytes", "y"),
            ],
            Box::new(|| vec![3, u64::MAX]),
        )
        .unwrap();
        let fams = s.collect();
        assert_eq!(fams.len(), 2);
        assert_eq!(s.desc().len(), 2);
        assert!(Sampled::new(&[(Kind::Gauge, "bad name", "y")], Box::new(Vec::new)).is_err());
    }
}
