//! `mobile`: phones and tablets idling on real mailboxes.
//!
//! `--clients` C clients over `--user-count` U users, 1–3 devices per user
//! (C/U on average). Each client connects (spread over `--ramp`), logs in,
//! selects INBOX and idles. Every R (uniform in 0.5–1.5 × `--refresh-mean`)
//! it ends its IDLE and idles again, sending NOOP in between for
//! `--noop-share` of the refreshes. During the steady state (`--duration`,
//! after `--settle`), new mail arrives at `--mail-rate` messages per second
//! (Poisson) for random users: APPENDed as the recipient over a separate
//! plaintext connection straight to the backend (`--deliver-target`, the
//! delivery side channel). The backend tells the proxy (Dovecot's push
//! notification plugin, configured by the caller), the proxy tells the
//! idling clients; every client that gets `EXISTS` ends its IDLE, fetches
//! the new message(s) and idles again. At the end every client sends DONE
//! and LOGOUT at the same instant (the burst).
//!
//! Measured: new-mail latency (`NEWMAIL`: `EXISTS` at the client minus the
//! APPEND's completion; an `EXISTS` that beats the APPEND's tagged OK
//! counts as 0), deliveries no client of the user saw (`missed`), DONE
//! latency of refreshes (`DONE` in the steady state, `DONE_SETUP` before
//! it), after new mail (`DONE_MAIL`) and in the
//! burst (`BURST_DONE`, `BURST_LOGOUT`), errors by kind and phase; once a
//! second the number of backend processes (`--backend-name` in
//! `--proc-pgid`: Dovecot runs one `imap` process per logged-in
//! connection) and of backend logins (`--backend-log`); the proxy's memory
//! (`--proxy-pid` / `--proxy-name`) before connecting and in the middle of
//! the steady state; the proxy's metrics (`--metrics-url`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use imapmux::imap::response::Kind;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Notify, Semaphore};

use crate::conn::{check_ok, Conn, ConnCfg, Security};
use crate::mem::{self, MemReport, MemSample};
use crate::report::Report;
use crate::resp::Response;
use crate::runner::join_all;
use crate::sessions::{check_body, fetch_of};
use crate::stats::{BenchError, ErrKind, Rec, Recorder, Res};
use crate::util::Rng;
use crate::{Cli, Ctx};

mod cpu;
mod sample;
use sample::*;

const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Recorders shared by the clients (each locked only briefly).
const RECORDERS: usize = 64;
/// Pause before a client whose connection failed connects again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Pure parts: devices, refresh intervals, arrivals, log lines, metrics.

/// Options that only `mobile` checks.
pub fn validate(cli: &Cli) -> Result<(), String> {
    let users = cli.user_count;
    if cli.users_file.is_none() && (cli.clients < users || cli.clients > 3 * users) {
        return Err(format!(
            "mobile: --clients ({}) must be between --user-count ({users}) and 3 × --user-count (1–3 devices per user)",
            cli.clients
        ));
    }
    if !(cli.mail_rate >= 0.0 && cli.mail_rate.is_finite()) {
        return Err("--mail-rate must be >= 0".into());
    }
    if cli.refresh_mean.is_zero() {
        return Err("--refresh-mean must be > 0".into());
    }
    if cli.mail_rate > 0.0 && cli.deliver_target.is_none() {
        return Err("mobile: --deliver-target HOST:PORT (the backend's plaintext IMAP port) is needed for new mail (or --mail-rate 0)".into());
    }
    Ok(())
}

/// Devices per user: each of `users` gets 1–3, `clients` in all (each user
/// has two optional extra devices; `clients - users` of those are drawn
/// at random, so with `clients = 2 × users` a quarter of the users have
/// one device, half two and a quarter three).
pub fn assign_devices(clients: usize, users: usize, rng: &mut Rng) -> Result<Vec<usize>, String> {
    if users == 0 || clients < users || clients > 3 * users {
        return Err(format!(
            "{clients} clients cannot be spread over {users} users with 1–3 devices each"
        ));
    }
    let extra = clients - users;
    let mut slots: Vec<usize> = (0..2 * users).collect();
    for i in 0..extra {
        let j = i + rng.below(slots.len() - i);
        slots.swap(i, j);
    }
    let mut per_user = vec![1usize; users];
    for &s in &slots[..extra] {
        per_user[s / 2] += 1;
    }
    Ok(per_user)
}

/// The user of each client, in connect order: every user's devices,
/// shuffled so one user's devices connect at different times.
pub fn client_users(per_user: &[usize], rng: &mut Rng) -> Vec<usize> {
    let mut v: Vec<usize> = per_user
        .iter()
        .enumerate()
        .flat_map(|(u, &n)| std::iter::repeat(u).take(n))
        .collect();
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
    v
}

/// Time until a client's next IDLE refresh: uniform in [mean/2, 3·mean/2).
pub fn refresh_interval(mean: Duration, rng: &mut Rng) -> Duration {
    mean.mul_f64(0.5 + rng.unit())
}

/// Time to the next arrival of a Poisson process of `rate` per second.
pub fn next_arrival(rate: f64, rng: &mut Rng) -> Duration {
    if rate <= 0.0 {
        return FOREVER;
    }
    let u = rng.unit();
    Duration::from_secs_f64((-(1.0 - u).ln() / rate).min(1e6))
}

/// Backend logins in a chunk of Dovecot's log: its login processes log
/// `imap-login: Info: Login: user=<…>` (or `imap-login: Login: …` with a
/// different log format) for every successful login.
pub fn count_logins(chunk: &[u8]) -> u64 {
    chunk
        .split(|&b| b == b'\n')
        .filter(|line| {
            let Some(at) = memchr::memmem::find(line, b"imap-login: ") else {
                return false;
            };
            memchr::memmem::find(&line[at..], b"Login: user=<").is_some()
        })
        .count() as u64
}

/// Prometheus text format → value per metric name, summed over label sets
/// (histogram buckets are skipped; `_count` and `_sum` are kept).
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if name.ends_with("_bucket") {
            continue;
        }
        let rest = match line[name_end..].rfind('}') {
            Some(close) if line[name_end..].starts_with('{') => &line[name_end + close + 1..],
            _ => &line[name_end..],
        };
        let Some(v) = rest
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        *out.entry(name.to_string()).or_insert(0.0) += v;
    }
    out
}

/// `http://HOST:PORT/PATH` → (`HOST:PORT`, `/PATH`).
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok((host.to_string(), path.to_string()))
}

/// Is a count still falling? `newest_first`: the last few once-a-second
/// samples, newest first; falling = the oldest exceeds the newest by more
/// than `tolerance`, or fewer than 6 samples are known.
pub fn still_falling(newest_first: &[u64], tolerance: u64) -> bool {
    match (newest_first.first(), newest_first.last()) {
        (Some(&new), Some(&old)) if newest_first.len() >= 6 => old > new + tolerance,
        _ => true,
    }
}

/// Peak and mean of `(t, value)` samples with `from <= t <= until`.
pub fn peak_mean(samples: &[(f64, u64)], from: f64, until: f64) -> (u64, f64) {
    let mut peak = 0;
    let mut sum = 0u64;
    let mut n = 0u64;
    for &(t, v) in samples {
        if t >= from && t <= until {
            peak = peak.max(v);
            sum += v;
            n += 1;
        }
    }
    (peak, if n == 0 { 0.0 } else { sum as f64 / n as f64 })
}

// ---------------------------------------------------------------------------
// New mail: who got what, when.

#[derive(Debug, Clone, Copy)]
struct Delivery {
    /// When the APPEND's tagged OK arrived (None while in flight).
    done: Option<Instant>,
    failed: bool,
    /// Clients of the user that saw its EXISTS.
    seen: u32,
}

/// Deliveries per user, in order.
struct Board {
    users: Vec<Mutex<Vec<Delivery>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Board {
    fn new(users: usize) -> Board {
        Board {
            users: (0..users).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    fn len(&self, user: usize) -> usize {
        lock(&self.users[user]).len()
    }

    /// A delivery to `user` starts; returns its index.
    fn sent(&self, user: usize) -> usize {
        let mut v = lock(&self.users[user]);
        v.push(Delivery {
            done: None,
            failed: false,
            seen: 0,
        });
        v.len() - 1
    }

    fn finished(&self, user: usize, idx: usize, at: Option<Instant>) {
        if let Some(d) = lock(&self.users[user]).get_mut(idx) {
            match at {
                Some(t) => d.done = Some(t),
                None => d.failed = true,
            }
        }
    }

    /// A client of `user` that had accounted for the deliveries before
    /// `*next` learned of `k` new messages now: record their latencies.
    fn saw(&self, user: usize, next: &mut usize, k: u32, rec: &Rec) {
        let now = Instant::now();
        let mut v = lock(&self.users[user]);
        let mut left = k;
        while left > 0 {
            let Some(d) = v.get_mut(*next) else {
                rec.count("exists_unexplained", u64::from(left));
                return;
            };
            *next += 1;
            if d.failed {
                continue;
            }
            d.seen += 1;
            left -= 1;
            match d.done {
                Some(t) => rec.lat("NEWMAIL", now.saturating_duration_since(t)),
                None => {
                    rec.lat("NEWMAIL", Duration::ZERO);
                    rec.count("newmail_before_append_ok", 1);
                }
            }
        }
    }

    /// (deliveries, expected sightings, sightings) over all users.
    fn totals(&self, devices: &[usize]) -> (u64, u64, u64) {
        let (mut n, mut expected, mut seen) = (0, 0, 0);
        for (u, m) in self.users.iter().enumerate() {
            for d in lock(m).iter().filter(|d| !d.failed && d.done.is_some()) {
                n += 1;
                expected += devices[u] as u64;
                seen += u64::from(d.seen).min(devices[u] as u64);
            }
        }
        (n, expected, seen)
    }
}

/// What one client knows of its mailbox.
struct Tracker {
    user: usize,
    /// Messages the server has told this client about.
    known: u32,
    /// Messages this client has fetched (or had at SELECT).
    fetched: u32,
    /// Next delivery of the user this client has not accounted for.
    next: usize,
    board: Arc<Board>,
    rec: Rec,
}

impl Tracker {
    fn on(&mut self, r: &Response) {
        if let Some(n) = r.exists() {
            if n > self.known {
                let k = n - self.known;
                self.known = n;
                self.board.saw(self.user, &mut self.next, k, &self.rec);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The run.

#[derive(Default)]
struct Progress {
    established: AtomicU64,
    failed: AtomicU64,
    changed: Notify,
}

struct Shared {
    board: Arc<Board>,
    devices: Vec<usize>,
    gate: Semaphore,
    progress: Progress,
    burst: watch::Receiver<bool>,
    burst_started: AtomicBool,
    /// In the steady state (after settling, before the burst).
    steady: AtomicBool,
    deliver: Option<Arc<ConnCfg>>,
    /// End of the steady state (deliveries stop).
    steady_end: OnceLock<Instant>,
}

async fn establish(
    ctx: &Ctx,
    sh: &Shared,
    id: usize,
    user: usize,
    rec: &Rec,
) -> Res<(Conn, String, Tracker)> {
    let mut conn = Conn::open(&ctx.conn, rec).await?;
    conn.login(rec, &ctx.accounts[user]).await?;
    // Deliveries before the SELECT are in its EXISTS.
    let next = sh.board.len(user);
    let exists = conn.select(rec, &ctx.cli.mailbox, false).await?;
    let mut tr = Tracker {
        user,
        known: exists,
        fetched: exists,
        next,
        board: sh.board.clone(),
        rec: rec.clone(),
    };
    let t = Instant::now();
    let tag = conn.idle_start_with(|r| tr.on(r)).await?;
    rec.lat("IDLE", t.elapsed());
    let _ = id;
    Ok((conn, tag, tr))
}

/// FETCH the messages the client was told of and has not fetched.
async fn fetch_new(ctx: &Ctx, conn: &mut Conn, tr: &mut Tracker, rec: &Rec) -> Res<()> {
    let (lo, hi) = (tr.fetched + 1, tr.known);
    let mut bodies = 0u32;
    let mut failed = None;
    conn.ok(
        rec,
        "FETCH_NEW",
        &format!("FETCH {lo}:{hi} (UID RFC822.SIZE BODY.PEEK[])"),
        |r| {
            tr.on(r);
            if let Some(f) = fetch_of(r)? {
                if let (Some(uid), Some(body)) = (f.uid, f.body.as_ref()) {
                    bodies += 1;
                    if let Err(e) = check_body(ctx, uid, body, f.size) {
                        failed.get_or_insert(e);
                    }
                }
            }
            Ok(())
        },
    )
    .await?;
    if let Some(e) = failed {
        return Err(e);
    }
    let want = hi - lo + 1;
    if bodies < want {
        return Err(BenchError::new(
            ErrKind::BadResponse,
            format!("FETCH {lo}:{hi}: {bodies} of {want} messages"),
        ));
    }
    rec.count("newmail_fetched", u64::from(bodies));
    tr.fetched = hi;
    Ok(())
}

/// The idle life of one connected client, until the burst (Ok) or an error.
async fn idle_loop(
    ctx: &Ctx,
    sh: &Shared,
    conn: Conn,
    mut tag: String,
    tr: &mut Tracker,
    rec: &Rec,
    rng: &mut Rng,
) -> Res<()> {
    let mut conn = conn;
    let mut burst = sh.burst.clone();
    let mean = ctx.cli.refresh_mean;
    // The first refresh somewhere within a first interval, so that
    // clients that connected together do not refresh together.
    let mut next_refresh = Instant::now() + refresh_interval(mean, rng).mul_f64(rng.unit());
    loop {
        // The burst first: a phone put away does not fetch what came last.
        if *burst.borrow() {
            conn.idle_done_with(rec, "BURST_DONE", &tag, |r| tr.on(r))
                .await?;
            return conn.logout_as(rec, "BURST_LOGOUT").await;
        }
        if tr.known > tr.fetched {
            let t = Instant::now();
            conn.idle_done_with(rec, "DONE_MAIL", &tag, |r| tr.on(r))
                .await?;
            fetch_new(ctx, &mut conn, tr, rec).await?;
            let t1 = Instant::now();
            tag = conn.idle_start_with(|r| tr.on(r)).await?;
            rec.lat("IDLE", t1.elapsed());
            rec.lat("NEWMAIL_CYCLE", t.elapsed());
            continue;
        }
        tokio::select! {
            r = conn.read_response() => {
                let r = r?;
                if !matches!(r.kind(), Some(Kind::Untagged)) {
                    return Err(BenchError::new(
                        ErrKind::BadResponse,
                        format!("during IDLE: {}", r.summary()),
                    ));
                }
                tr.on(&r);
            }
            _ = tokio::time::sleep_until(next_refresh.into()) => {
                let t = Instant::now();
                // Refreshes of the steady state (the proxy has parked what
                // it parks) apart from those of setup and settling.
                let name = if sh.steady.load(Ordering::Relaxed) { "DONE" } else { "DONE_SETUP" };
                conn.idle_done_with(rec, name, &tag, |r| tr.on(r)).await?;
                if rng.unit() < ctx.cli.noop_share {
                    conn.ok(rec, "NOOP", "NOOP", |r| {
                        tr.on(r);
                        Ok(())
                    })
                    .await?;
                }
                let t1 = Instant::now();
                tag = conn.idle_start_with(|r| tr.on(r)).await?;
                rec.lat("IDLE", t1.elapsed());
                rec.op(t.elapsed());
                next_refresh = Instant::now() + refresh_interval(mean, rng);
            }
            _ = burst.changed() => {}
        }
    }
}

async fn client(
    ctx: Arc<Ctx>,
    sh: Arc<Shared>,
    id: usize,
    user: usize,
    start_at: Instant,
    rec: Rec,
) {
    let mut rng = Rng::new(ctx.cli.seed ^ 0x6d6f_6269_6c65 ^ ((id as u64) << 24));
    tokio::time::sleep_until(start_at.into()).await;
    let mut settled = false;
    loop {
        if sh.burst_started.load(Ordering::Relaxed) {
            return;
        }
        let permit = sh.gate.acquire().await;
        let r = establish(&ctx, &sh, id, user, &rec).await;
        drop(permit);
        let err = match r {
            Ok((conn, tag, mut tr)) => {
                if settled {
                    rec.count("reconnects", 1);
                } else {
                    settled = true;
                    sh.progress.established.fetch_add(1, Ordering::Relaxed);
                    sh.progress.changed.notify_one();
                }
                match idle_loop(&ctx, &sh, conn, tag, &mut tr, &rec, &mut rng).await {
                    Ok(()) => return,
                    Err(e) => e,
                }
            }
            Err(e) => {
                if !settled {
                    settled = true;
                    sh.progress.failed.fetch_add(1, Ordering::Relaxed);
                    sh.progress.changed.notify_one();
                }
                e
            }
        };
        rec.error(&err);
        if sh.burst_started.load(Ordering::Relaxed) {
            rec.count("burst_errors", 1);
            return;
        }
        rec.count("steady_errors", 1);
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// One new message for `user`: LOGIN as the user on the delivery side
/// channel, APPEND, LOGOUT.
async fn deliver_one(
    ctx: &Ctx,
    sh: &Shared,
    cfg: &Arc<ConnCfg>,
    user: usize,
    k: u64,
    rec: &Rec,
) -> Res<()> {
    let acc = &ctx.accounts[user];
    let mut c = Conn::open(cfg, rec).await?;
    c.login(rec, acc).await?;
    rec.count("delivery_logins", 1);
    let msg = crate::msg::generate(&acc.user, 1_000_000 + k, ctx.cli.mail_size);
    let idx = sh.board.sent(user);
    let t = Instant::now();
    let st = match c.append(&ctx.cli.mailbox, "", &msg).await {
        Ok(st) => st,
        Err(e) => {
            sh.board.finished(user, idx, None);
            return Err(e);
        }
    };
    let done = Instant::now();
    if let Err(e) = check_ok("APPEND", &st) {
        sh.board.finished(user, idx, None);
        return Err(e);
    }
    sh.board.finished(user, idx, Some(done));
    rec.lat("APPEND", done - t);
    rec.count("deliveries", 1);
    c.logout(rec).await
}

/// Poisson arrivals until the end of the steady state.
async fn deliveries(ctx: Arc<Ctx>, sh: Arc<Shared>, rec: Rec) {
    let Some(cfg) = sh.deliver.clone() else {
        return;
    };
    let Some(&end) = sh.steady_end.get() else {
        return;
    };
    let mut rng = Rng::new(ctx.cli.seed ^ 0xde11_7e57);
    let mut at = Instant::now();
    let mut k = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        at += next_arrival(ctx.cli.mail_rate, &mut rng);
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let user = rng.below(ctx.accounts.len());
        let (ctx, sh, cfg, rec) = (ctx.clone(), sh.clone(), cfg.clone(), rec.clone());
        tasks.spawn(async move {
            if let Err(e) = deliver_one(&ctx, &sh, &cfg, user, k, &rec).await {
                rec.error(&e);
                rec.count("delivery_errors", 1);
            }
        });
        k += 1;
    }
    while tasks.join_next().await.is_some() {}
}

/// Backend processes over a phase.
#[derive(Debug, Clone, Serialize)]
pub struct ConnStats {
    pub peak: u64,
    pub mean: f64,
}

/// Backend logins over a phase (from the backend's log).
#[derive(Debug, Clone, Serialize)]
pub struct LoginStats {
    /// All logins the backend logged in the phase.
    pub total: u64,
    /// Of those, the delivery side channel's (not the proxy's or the
    /// clients').
    pub delivery: u64,
    /// (total - delivery) per second of the phase.
    pub per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MobileReport {
    pub clients: u64,
    pub users: u64,
    /// users with 1, 2, 3 devices
    pub devices: [u64; 3],
    pub refresh_mean_s: f64,
    pub noop_share: f64,
    pub mail_rate: f64,
    pub established: u64,
    pub failed: u64,
    /// From the start until every client idled (or failed).
    pub setup_s: f64,
    /// From the start until the backend's process count stopped falling
    /// (after --settle): the proxy has parked what it parks.
    pub settled_s: f64,
    /// Steady state: [start, end] in seconds since the start of the run;
    /// new mail arrives during it; its end includes --mail-grace.
    pub steady_from_s: f64,
    pub steady_until_s: f64,
    pub burst_s: f64,
    pub backend_conns_steady: Option<ConnStats>,
    pub backend_conns_setup_peak: Option<u64>,
    pub backend_conns_after_burst: Option<u64>,
    pub backend_logins_steady: Option<LoginStats>,
    pub backend_logins_burst: Option<u64>,
    pub deliveries: u64,
    /// Sum over deliveries of the user's devices.
    pub newmail_expected: u64,
    pub newmail_seen: u64,
    pub newmail_missed: u64,
    pub steady_errors: u64,
    pub burst_errors: u64,
    pub proxy: Option<MemReport>,
    pub metrics_steady_start: Option<BTreeMap<String, f64>>,
    /// Scraped right after the proxy's memory sample (mid steady state).
    pub metrics_steady_mid: Option<BTreeMap<String, f64>>,
    pub metrics_steady_end: Option<BTreeMap<String, f64>>,
    /// The proxy's `/proc/PID/smaps_rollup` (kB, summed) at the memory sample.
    pub proxy_smaps_mid: Option<BTreeMap<String, u64>>,
    /// The proxy's memory after the burst (every client logged out).
    pub proxy_after_burst: Option<mem::MemSample>,
    /// CPU use over the steady state (machine-wide per CPU; proxy, backend,
    /// this client).
    pub cpu_steady: Option<cpu::CpuReport>,
    pub metrics_after_burst: Option<BTreeMap<String, f64>>,
    /// (seconds since start, backend processes), once a second.
    pub backend_conns_series: Vec<(f64, u64)>,
    /// (seconds since start, backend logins since start), once a second.
    pub backend_logins_series: Vec<(f64, u64)>,
}

impl MobileReport {
    pub fn table(&self) -> String {
        let mut o = String::new();
        let d = self.devices;
        let _ = writeln!(
            o,
            "mobile: {} clients over {} users (1/2/3 devices: {}/{}/{}), refresh mean {:.0}s, NOOP {:.0}%, mail {}/s",
            self.clients, self.users, d[0], d[1], d[2], self.refresh_mean_s, self.noop_share * 100.0, self.mail_rate
        );
        let _ = writeln!(
            o,
            "established {} (failed {}) in {:.1}s; steady state {:.1}s–{:.1}s; burst {:.1}s",
            self.established,
            self.failed,
            self.setup_s,
            self.steady_from_s,
            self.steady_until_s,
            self.burst_s
        );
        if let Some(c) = &self.backend_conns_steady {
            let _ = writeln!(
                o,
                "backend processes, steady state: peak {}, mean {:.1} ({:.2}% of clients); setup peak {}; after burst {}",
                c.peak,
                c.mean,
                100.0 * c.mean / self.clients.max(1) as f64,
                self.backend_conns_setup_peak.unwrap_or(0),
                self.backend_conns_after_burst.unwrap_or(0)
            );
        }
        if let Some(l) = &self.backend_logins_steady {
            let _ = writeln!(
                o,
                "backend logins, steady state: {} ({} delivery) = {:.2}/s without deliveries; burst: {}",
                l.total,
                l.delivery,
                l.per_sec,
                self.backend_logins_burst.unwrap_or(0)
            );
        }
        let _ = writeln!(
            o,
            "new mail: {} deliveries, {} of {} sightings ({} missed)",
            self.deliveries, self.newmail_seen, self.newmail_expected, self.newmail_missed
        );
        if let Some(p) = &self.proxy {
            let _ = writeln!(
                o,
                "{}: PSS {} -> {} KiB, {:.1} KiB per client",
                p.what, p.before.pss_kb, p.during.pss_kb, p.per_client_pss_kb
            );
        }
        let _ = writeln!(
            o,
            "errors: steady {} burst {}",
            self.steady_errors, self.burst_errors
        );
        o
    }
}

pub async fn run(ctx: Arc<Ctx>) -> Report {
    let start = Instant::now();
    let clients = ctx.cli.clients;
    let users = ctx.accounts.len().min(ctx.cli.user_count.max(1));
    let mut rng = Rng::new(ctx.cli.seed);
    // validate() checked the numbers for pattern users; a users file may
    // hold any number of accounts.
    let per_user = match assign_devices(clients, users, &mut rng) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("imapmux-bench: {e}");
            std::process::exit(2);
        }
    };
    let order = client_users(&per_user, &mut rng);
    let mut devices = [0u64; 3];
    for &n in &per_user {
        devices[n - 1] += 1;
    }
    let deliver = ctx.cli.deliver_target.as_ref().map(|t| {
        Arc::new(ConnCfg {
            target: t.clone(),
            security: Security::Plain,
            tls: None,
            server_name: None,
            timeout: ctx.conn.timeout,
            max_literal: ctx.conn.max_literal,
            max_line: ctx.conn.max_line,
            literal: ctx.conn.literal,
            // The delivering connection never compresses.
            compress: false,
            live: ctx.live.clone(),
        })
    });
    let proxy_before = proxy_sample(&ctx);
    let (burst_tx, burst_rx) = watch::channel(false);
    let sh = Arc::new(Shared {
        board: Arc::new(Board::new(users)),
        devices: per_user.clone(),
        gate: Semaphore::new(ctx.cli.connect_parallel),
        progress: Progress::default(),
        burst: burst_rx,
        burst_started: AtomicBool::new(false),
        steady: AtomicBool::new(false),
        deliver,
        steady_end: OnceLock::new(),
    });
    let samples = Arc::new(Mutex::new(Samples::default()));
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = spawn_sampler(&ctx, start, samples.clone(), stop_sampler.clone());

    let mut handles = Vec::new();
    // Clients share recorders: a recorder holds a histogram (≈ 180 KiB)
    // per command kind, and one each for 10,000 clients took 15 GiB.
    let recs: Vec<Rec> = (0..RECORDERS.min(clients))
        .map(|_| Rec::new(Recorder::new(ctx.live.clone(), start, start + FOREVER)))
        .collect();
    for (id, &user) in order.iter().enumerate() {
        let rec = recs[id % recs.len()].clone();
        let at = start + ctx.cli.ramp.mul_f64(id as f64 / clients as f64);
        let h = tokio::spawn(client(ctx.clone(), sh.clone(), id, user, at, rec.clone()));
        handles.push((h, rec));
    }
    let stopped = |ctx: &Ctx| ctx.live.stop.load(Ordering::Relaxed);
    let settled = |sh: &Shared| {
        sh.progress.established.load(Ordering::Relaxed) + sh.progress.failed.load(Ordering::Relaxed)
    };
    while settled(&sh) < clients as u64 && !stopped(&ctx) {
        let _ =
            tokio::time::timeout(Duration::from_millis(200), sh.progress.changed.notified()).await;
    }
    let setup = start.elapsed();
    let sleep_or_stop = |until: Instant| {
        let ctx = ctx.clone();
        async move {
            while Instant::now() < until && !ctx.live.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let settle = ctx.cli.settle.unwrap_or(Duration::from_secs(10));
    sleep_or_stop(Instant::now() + settle).await;
    // A proxy parks its idle clients gradually: the steady state starts
    // once the backend's process count has stopped falling.
    let settle_limit = Instant::now() + ctx.cli.settle_max;
    let tolerance = (clients as u64 / 200).max(3);
    while Instant::now() < settle_limit && !stopped(&ctx) {
        let recent: Vec<u64> = {
            let s = lock(&samples);
            s.conns.iter().rev().take(6).map(|&(_, n)| n).collect()
        };
        if recent.is_empty() || !still_falling(&recent, tolerance) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let settled_after = start.elapsed();

    // Steady state.
    let side = Rec::new(Recorder::new(ctx.live.clone(), start, start + FOREVER));
    let steady_from = Instant::now();
    sh.steady.store(true, Ordering::Relaxed);
    let steady_end = steady_from + ctx.cli.duration;
    let _ = sh.steady_end.set(steady_end);
    let m0 = kept(scrape_all(&ctx, &side).await);
    let proxy_pids_now = proxy_pids(&ctx).map(|(_, p)| p).unwrap_or_default();
    let cpu0 = cpu::snap(&proxy_pids_now, ctx.cli.proc_pgid);
    let delivery = tokio::spawn(deliveries(ctx.clone(), sh.clone(), side.clone()));
    sleep_or_stop(steady_from + ctx.cli.duration / 2).await;
    let proxy_during = proxy_sample(&ctx);
    // What the proxy holds at that moment: memory by kind, sessions by state.
    let proxy_smaps_mid = proxy_during
        .as_ref()
        .map(|(_, pids, _)| mem::smaps_rollup(pids));
    let m_mid = kept(scrape_all(&ctx, &side).await);
    sleep_or_stop(steady_end).await;
    let _ = delivery.await;
    sleep_or_stop(Instant::now() + ctx.cli.mail_grace).await;
    let steady_until = Instant::now();
    let cpu_steady = cpu::report(&cpu0, &cpu::snap(&proxy_pids_now, ctx.cli.proc_pgid));
    let m1 = kept(scrape_all(&ctx, &side).await);
    // Let the sampler take the last steady-state sample.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The burst: every idling client sends DONE and LOGOUT now.
    let burst_from = Instant::now();
    sh.steady.store(false, Ordering::Relaxed);
    sh.burst_started.store(true, Ordering::Relaxed);
    let _ = burst_tx.send(true);
    join_all(handles, ctx.cli.timeout * 3 + Duration::from_secs(5)).await;
    let burst = burst_from.elapsed();
    // Let the backend finish its logouts before the last samples.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m2 = kept(scrape_all(&ctx, &side).await);
    // Every client gone: what the proxy keeps (allocator high-water, caches).
    let proxy_after_burst = proxy_sample(&ctx).map(|(_, _, s)| s);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    stop_sampler.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(5), sampler).await;

    // Numbers.
    let mut total = Recorder::new(ctx.live.clone(), start, start + FOREVER);
    for r in &recs {
        r.merge_into(&mut total);
    }
    // The delivery side channel's commands keep their own names.
    let mut side_total = Recorder::new(ctx.live.clone(), start, start + FOREVER);
    side.merge_into(&mut side_total);
    for (k, h) in side_total.hists {
        let name = if k == "APPEND" {
            k
        } else {
            format!("DELIVERY_{k}")
        };
        match total.hists.get_mut(&name) {
            Some(mine) => {
                let _ = mine.add(&h);
            }
            None => {
                total.hists.insert(name, h);
            }
        }
    }
    for (k, n) in &side_total.counters {
        *total.counters.entry(k.clone()).or_insert(0) += n;
    }
    for (k, n) in &side_total.errors {
        *total.errors.entry(*k).or_insert(0) += n;
    }
    total
        .samples
        .extend(side_total.samples.iter().take(5).cloned());
    let established = sh.progress.established.load(Ordering::Relaxed);
    let failed = sh.progress.failed.load(Ordering::Relaxed);
    let secs = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
    let (s_from, s_until, b_from) = (secs(steady_from), secs(steady_until), secs(burst_from));
    let s = lock(&samples);
    let has_conns = !s.conns.is_empty();
    let backend_conns_steady = has_conns.then(|| {
        let (peak, mean) = peak_mean(&s.conns, s_from, s_until);
        ConnStats {
            peak,
            mean: (mean * 10.0).round() / 10.0,
        }
    });
    let backend_conns_setup_peak = has_conns.then(|| peak_mean(&s.conns, 0.0, s_from).0);
    let backend_conns_after_burst = s.conns.last().map(|&(_, n)| n);
    let logins_at = |t: f64| -> u64 {
        // Cumulative count at the last sample at or before t.
        s.logins
            .iter()
            .take_while(|&&(at, _)| at <= t)
            .last()
            .map(|&(_, n)| n)
            .unwrap_or(0)
    };
    let delivery_logins = side_total
        .counters
        .get("delivery_logins")
        .copied()
        .unwrap_or(0);
    let backend_logins_steady = (!s.logins.is_empty()).then(|| {
        let total = logins_at(s_until + 1.0).saturating_sub(logins_at(s_from));
        let net = total.saturating_sub(delivery_logins);
        LoginStats {
            total,
            delivery: delivery_logins,
            per_sec: ((net as f64 / (s_until - s_from).max(1e-9)) * 1000.0).round() / 1000.0,
        }
    });
    let backend_logins_burst = s
        .logins
        .last()
        .map(|&(_, n)| n.saturating_sub(logins_at(b_from)));
    let (deliveries, expected, seen) = sh.board.totals(&sh.devices);
    let proxy = match (proxy_before, proxy_during) {
        (Some((what, pids, b)), Some((_, _, d))) => {
            Some(MemReport::new(what, pids, b, d, established))
        }
        _ => None,
    };
    let counter = |k: &str| total.counters.get(k).copied().unwrap_or(0);
    let mobile = MobileReport {
        clients: clients as u64,
        users: users as u64,
        devices,
        refresh_mean_s: ctx.cli.refresh_mean.as_secs_f64(),
        noop_share: ctx.cli.noop_share,
        mail_rate: ctx.cli.mail_rate,
        established,
        failed,
        setup_s: setup.as_secs_f64(),
        settled_s: settled_after.as_secs_f64(),
        steady_from_s: (s_from * 10.0).round() / 10.0,
        steady_until_s: (s_until * 10.0).round() / 10.0,
        burst_s: burst.as_secs_f64(),
        backend_conns_steady,
        backend_conns_setup_peak,
        backend_conns_after_burst,
        backend_logins_steady,
        backend_logins_burst,
        deliveries,
        newmail_expected: expected,
        newmail_seen: seen,
        newmail_missed: expected - seen,
        steady_errors: counter("steady_errors") + counter("delivery_errors"),
        burst_errors: counter("burst_errors"),
        proxy,
        metrics_steady_start: m0,
        metrics_steady_mid: m_mid,
        metrics_steady_end: m1,
        proxy_smaps_mid,
        proxy_after_burst,
        cpu_steady,
        metrics_after_burst: m2,
        backend_conns_series: s.conns.clone(),
        backend_logins_series: s.logins.clone(),
    };
    drop(s);
    let mut report = Report::build(
        &ctx,
        &total,
        steady_until.saturating_duration_since(steady_from),
        ctx.live.bytes_read.load(Ordering::Relaxed),
        ctx.live.bytes_written.load(Ordering::Relaxed),
        None,
    );
    report.mobile = Some(mobile);
    report
}

#[cfg(test)]
mod tests;
