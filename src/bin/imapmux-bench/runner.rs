//! Runs a scenario: spawns the workers, enforces warmup/duration/stop,
//! prints progress, and builds the report.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::report::Report;
use crate::stats::{BenchError, ErrKind, Rec, Recorder};
use crate::{idle, mailops, mobile, sessions, Ctx, Scenario};

/// Far enough in the future to mean "no end" for the measurement window.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Pause after a failed operation before the worker tries again, so a dead
/// server does not turn into a hot loop.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Run the scenario of `ctx` to completion and return the report.
pub async fn run(ctx: Arc<Ctx>) -> Report {
    // Ctrl-C ends the run early; the report is still printed.
    {
        let live = ctx.live.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                live.stop.store(true, Ordering::Relaxed);
            }
        });
    }
    let progress = spawn_progress(ctx.clone());
    let report = match ctx.scenario {
        Scenario::Seed => run_finite(ctx.clone()).await,
        Scenario::IdleHold => idle::run(ctx.clone()).await,
        Scenario::Mobile => mobile::run(ctx.clone()).await,
        _ => run_timed(ctx.clone()).await,
    };
    progress.abort();
    if !ctx.cli.quiet && std::io::stderr().is_terminal() {
        eprintln!();
    }
    report
}

fn spawn_worker(ctx: &Arc<Ctx>, id: usize, rec: Rec) -> JoinHandle<()> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        match ctx.scenario {
            Scenario::Seed => mailops::seed(&ctx, id, &rec).await,
            Scenario::LoginStorm => sessions::login_storm(&ctx, id, &rec).await,
            Scenario::Webmail => sessions::webmail(&ctx, id, &rec).await,
            Scenario::Sync => sessions::sync(&ctx, id, &rec).await,
            Scenario::ReadHeavy => sessions::read_heavy(&ctx, id, &rec).await,
            Scenario::Append => mailops::append(&ctx, id, &rec).await,
            Scenario::FetchLatency => mailops::fetch_latency(&ctx, id, &rec).await,
            Scenario::IdleHold | Scenario::Mobile => {}
        }
    })
}

/// Wait for the workers; abort those still running after `grace`
/// (counting a timeout error for each).
pub async fn join_all(handles: Vec<(JoinHandle<()>, Rec)>, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    for (h, rec) in handles {
        let abort = h.abort_handle();
        match tokio::time::timeout_at(deadline, h).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => rec.error(&BenchError::new(ErrKind::Io, format!("worker failed: {e}"))),
            Err(_) => {
                abort.abort();
                rec.error(&BenchError::new(
                    ErrKind::Timeout,
                    "worker did not finish after the end of the run",
                ));
            }
        }
    }
}

fn merged(ctx: &Ctx, recs: &[Rec], from: Instant, until: Instant) -> Recorder {
    let mut total = Recorder::new(ctx.live.clone(), from, until);
    for r in recs {
        r.merge_into(&mut total);
    }
    total
}

/// Duration-bound scenarios: warmup, then the measured window.
async fn run_timed(ctx: Arc<Ctx>) -> Report {
    let start = Instant::now();
    let measure_from = start + ctx.cli.warmup;
    let end = measure_from + ctx.cli.duration;
    let _ = ctx.end.set(end);
    let mut handles = Vec::new();
    let mut recs = Vec::new();
    for id in 0..ctx.cli.clients {
        let rec = Rec::new(Recorder::new(ctx.live.clone(), measure_from, end));
        recs.push(rec.clone());
        handles.push((spawn_worker(&ctx, id, rec.clone()), rec));
    }
    let stopped = |ctx: &Ctx| ctx.live.stop.load(Ordering::Relaxed);
    while Instant::now() < measure_from && !stopped(&ctx) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let read0 = ctx.live.bytes_read.load(Ordering::Relaxed);
    let written0 = ctx.live.bytes_written.load(Ordering::Relaxed);
    let wire0 = wire(&ctx);
    // The window starts at measure_from (or now, when stopped in warmup).
    let t0 = measure_from.min(Instant::now());
    while Instant::now() < end && !stopped(&ctx) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let read1 = ctx.live.bytes_read.load(Ordering::Relaxed);
    let written1 = ctx.live.bytes_written.load(Ordering::Relaxed);
    let wire1 = wire(&ctx);
    let measured = Instant::now().min(end).saturating_duration_since(t0);
    ctx.live.stop.store(true, Ordering::Relaxed);
    join_all(handles, ctx.cli.timeout * 2 + Duration::from_secs(2)).await;
    let total = merged(&ctx, &recs, measure_from, end);
    let mut report = Report::build(
        &ctx,
        &total,
        measured,
        read1.saturating_sub(read0),
        written1.saturating_sub(written0),
        None,
    );
    if ctx.cli.compress {
        let (r, w) = wire1;
        report
            .counters
            .insert("wire_bytes_read".into(), r.saturating_sub(wire0.0));
        report
            .counters
            .insert("wire_bytes_written".into(), w.saturating_sub(wire0.1));
    }
    report
}

/// Bytes on the sockets of compressed connections so far.
fn wire(ctx: &Ctx) -> (u64, u64) {
    (
        ctx.live.wire_read.load(Ordering::Relaxed),
        ctx.live.wire_written.load(Ordering::Relaxed),
    )
}

/// Work-bound scenarios (seed): run until the work is done; all of it is
/// measured.
async fn run_finite(ctx: Arc<Ctx>) -> Report {
    let start = Instant::now();
    let mut handles = Vec::new();
    let mut recs = Vec::new();
    for id in 0..ctx.cli.clients.min(ctx.accounts.len()) {
        let rec = Rec::new(Recorder::new(ctx.live.clone(), start, start + FOREVER));
        recs.push(rec.clone());
        handles.push((spawn_worker(&ctx, id, rec.clone()), rec));
    }
    // Each worker is bounded by its command timeouts; no extra limit.
    join_all(handles, FOREVER).await;
    let measured = start.elapsed();
    let total = merged(&ctx, &recs, start, start + FOREVER);
    Report::build(
        &ctx,
        &total,
        measured,
        ctx.live.bytes_read.load(Ordering::Relaxed),
        ctx.live.bytes_written.load(Ordering::Relaxed),
        None,
    )
}

fn spawn_progress(ctx: Arc<Ctx>) -> JoinHandle<()> {
    tokio::spawn(async move {
        if ctx.cli.quiet {
            return;
        }
        let tty = std::io::stderr().is_terminal();
        let start = Instant::now();
        let warmup = ctx.cli.warmup;
        let mut last_ops = 0u64;
        let mut last_read = 0u64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let el = start.elapsed();
            let ops = ctx.live.ops.load(Ordering::Relaxed);
            let read = ctx.live.bytes_read.load(Ordering::Relaxed);
            let errs = ctx.live.errors.load(Ordering::Relaxed);
            let conns = ctx.live.conns_open.load(Ordering::Relaxed);
            let phase = if matches!(
                ctx.scenario,
                Scenario::Seed | Scenario::IdleHold | Scenario::Mobile
            ) {
                ""
            } else if el < warmup {
                " warmup"
            } else {
                " run"
            };
            let line = format!(
                "[{:>5.0}s{phase}] ops {ops} ({}/s)  errors {errs}  read {:.1} MB/s  conns {conns}",
                el.as_secs_f64(),
                ops - last_ops,
                (read - last_read) as f64 / 1e6,
            );
            last_ops = ops;
            last_read = read;
            if tty {
                eprint!("\r{line:<78}");
            } else {
                eprintln!("{line}");
            }
        }
    })
}
