//! Sampling during a mobile run: backend processes and logins once a
//! second, imapmux metrics scrapes, proxy memory.

use super::*;

/// One sample a second: backend processes and cumulative backend logins.
#[derive(Default)]
pub(super) struct Samples {
    /// (seconds since start, backend processes)
    pub(super) conns: Vec<(f64, u64)>,
    /// (seconds since start, logins so far)
    pub(super) logins: Vec<(f64, u64)>,
}

pub(super) struct LogTail {
    pub(super) path: PathBuf,
    pub(super) offset: u64,
    pub(super) partial: Vec<u8>,
    pub(super) logins: u64,
}

impl LogTail {
    pub(super) fn new(path: PathBuf) -> LogTail {
        // Only what is logged from now on.
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        LogTail {
            path,
            offset,
            partial: Vec::new(),
            logins: 0,
        }
    }

    pub(super) fn poll(&mut self) -> u64 {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return self.logins;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return self.logins;
        }
        let mut buf = Vec::new();
        if let Ok(n) = f.read_to_end(&mut buf) {
            self.offset += n as u64;
        }
        self.partial.extend_from_slice(&buf);
        if let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') {
            self.logins += count_logins(&self.partial[..end]);
            self.partial.drain(..=end);
        }
        self.logins
    }
}

pub(super) fn spawn_sampler(
    ctx: &Arc<Ctx>,
    start: Instant,
    samples: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let name = ctx.cli.backend_name.clone();
    let pgid = ctx.cli.proc_pgid;
    let log = ctx.cli.backend_log.clone();
    tokio::spawn(async move {
        let mut tail = log.map(LogTail::new);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let name = name.clone();
            let t = tail.take();
            let r = tokio::task::spawn_blocking(move || {
                let n = name.map(|n| mem::pids_by_comm_in(&n, pgid).len() as u64);
                let mut t = t;
                let l = t.as_mut().map(LogTail::poll);
                (n, l, t)
            })
            .await;
            let Ok((n, l, t)) = r else { continue };
            tail = t;
            let at = start.elapsed().as_secs_f64();
            let mut s = lock(&samples);
            if let Some(n) = n {
                s.conns.push((at, n));
            }
            if let Some(l) = l {
                s.logins.push((at, l));
            }
        }
    })
}

/// GET a metrics URL and parse it.
pub(super) async fn scrape(url: &str, timeout: Duration) -> Result<BTreeMap<String, f64>, String> {
    let (host, path) = split_url(url)?;
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&host)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let mut body = Vec::new();
        s.read_to_end(&mut body)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let text = String::from_utf8_lossy(&body).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{url}: no HTTP header end"))?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(format!("{url}: {}", head.lines().next().unwrap_or("")));
        }
        Ok(parse_metrics(body))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("{url}: no answer within {timeout:?}"))?
}

/// Sum of all `--metrics-url`s; None without any, or when one fails.
pub(super) async fn scrape_all(ctx: &Ctx, rec: &Rec) -> Option<BTreeMap<String, f64>> {
    if ctx.cli.metrics_url.is_empty() {
        return None;
    }
    let mut total = BTreeMap::new();
    for url in &ctx.cli.metrics_url {
        match scrape(url, ctx.cli.timeout).await {
            Ok(m) => {
                for (k, v) in m {
                    *total.entry(k).or_insert(0.0) += v;
                }
            }
            Err(e) => {
                rec.error(&BenchError::new(ErrKind::Io, format!("metrics: {e}")));
                return None;
            }
        }
    }
    Some(total)
}

/// The metrics worth keeping in the report.
pub(super) const KEEP_METRICS: &[&str] = &[
    "imapmux_client_connections_open",
    "imapmux_client_sessions_parked",
    "imapmux_client_sessions_idle_attached",
    "imapmux_backend_connections_open",
    "imapmux_backend_connections_pooled",
    "imapmux_backend_watchers",
    "imapmux_backend_watcher_connections",
    "imapmux_resync_duration_seconds_count",
    "imapmux_parks_total",
    "imapmux_reattaches_total",
    "imapmux_wakes_total",
    "imapmux_push_events_total",
    "imapmux_push_woken_total",
    "imapmux_backend_reuses_total",
    "imapmux_backend_login_duration_seconds_count",
    "imapmux_backend_connect_duration_seconds_count",
    "imapmux_logins_total",
];

pub(super) fn kept(m: Option<BTreeMap<String, f64>>) -> Option<BTreeMap<String, f64>> {
    m.map(|m| {
        m.into_iter()
            .filter(|(k, _)| {
                KEEP_METRICS.contains(&k.as_str())
                    || k.starts_with("imapmux_push")
                    || k.starts_with("imapmux_doveadm_poll")
                    || k.starts_with("imapmux_client_sessions")
            })
            .collect()
    })
}

/// Which processes hold the proxy's state (memory per client).
pub(super) fn proxy_pids(ctx: &Ctx) -> Option<(String, Vec<u32>)> {
    if !ctx.cli.proxy_pid.is_empty() {
        return Some((
            format!("proxy pid {:?}", ctx.cli.proxy_pid),
            ctx.cli.proxy_pid.clone(),
        ));
    }
    let name = ctx.cli.proxy_name.as_ref()?;
    Some((
        format!("proxy {name}"),
        mem::pids_by_comm_in(name, ctx.cli.proc_pgid),
    ))
}

pub(super) fn proxy_sample(ctx: &Ctx) -> Option<(String, Vec<u32>, MemSample)> {
    let (what, pids) = proxy_pids(ctx)?;
    let s = mem::sample(&pids);
    Some((what, pids, s))
}
