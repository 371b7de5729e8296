//! `idle-hold`: open --clients connections, LOGIN, SELECT, IDLE; hold them
//! for --duration; measure proxy and backend memory before and while all
//! are idle; then DONE and LOGOUT.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify, Semaphore};

use crate::conn::Conn;
use crate::mem::{self, MemReport, MemSample};
use crate::report::{IdleReport, Report};
use crate::runner::join_all;
use crate::stats::{BenchError, ErrKind, Rec, Recorder, Res};
use crate::Ctx;

const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// When the last new message for each user was appended (NEWMAIL latency).
type Appended = std::sync::Mutex<std::collections::HashMap<String, Instant>>;

#[derive(Default)]
struct Progress {
    established: AtomicU64,
    failed: AtomicU64,
    changed: Notify,
}

impl Progress {
    fn settled(&self) -> u64 {
        self.established.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

/// Which processes to measure.
struct Targets {
    proxy: Option<(String, Vec<u32>)>,
    backend: Option<String>,
}

fn targets(ctx: &Ctx) -> Targets {
    let pids = &ctx.cli.proxy_pid;
    let proxy = match (pids.is_empty(), &ctx.cli.proxy_name) {
        (false, _) => Some((format!("proxy pid {pids:?}"), pids.clone())),
        (true, Some(name)) => {
            let pids = mem::pids_by_comm(name);
            if pids.is_empty() {
                eprintln!("imapmux-bench: no process named {name:?} found");
            }
            Some((format!("proxy {name}"), pids))
        }
        _ => None,
    };
    Targets {
        proxy,
        backend: ctx.cli.backend_name.clone(),
    }
}

fn sample(t: &Targets) -> (Option<MemSample>, Option<(Vec<u32>, MemSample)>) {
    let p = t.proxy.as_ref().map(|(_, pids)| mem::sample(pids));
    let b = t.backend.as_ref().map(|name| {
        let pids = mem::pids_by_comm(name);
        let s = mem::sample(&pids);
        (pids, s)
    });
    (p, b)
}

async fn establish(ctx: &Ctx, id: usize, rec: &Rec) -> Res<(Conn, String)> {
    let t = Instant::now();
    let mut conn = Conn::open(&ctx.conn, rec).await?;
    conn.login(rec, ctx.account(id, 0)).await?;
    conn.select(rec, &ctx.cli.mailbox, false).await?;
    let t1 = Instant::now();
    let tag = conn.idle_start().await?;
    rec.lat("IDLE", t1.elapsed());
    rec.op(t.elapsed());
    Ok((conn, tag))
}

async fn client(
    ctx: Arc<Ctx>,
    id: usize,
    rec: Rec,
    gate: Arc<Semaphore>,
    progress: Arc<Progress>,
    release: watch::Receiver<bool>,
    appended: Arc<Appended>,
) {
    let user = ctx.account(id, 0).user.clone();
    let permit = gate.acquire_owned().await;
    let r = establish(&ctx, id, &rec).await;
    drop(permit);
    let (mut conn, tag) = match r {
        Ok(x) => {
            progress.established.fetch_add(1, Ordering::Relaxed);
            progress.changed.notify_one();
            x
        }
        Err(e) => {
            rec.error(&e);
            progress.failed.fetch_add(1, Ordering::Relaxed);
            progress.changed.notify_one();
            return;
        }
    };
    let r = async {
        conn.idle_hold(release, || {
            let at = appended.lock().ok().and_then(|m| m.get(&user).copied());
            if let Some(t) = at {
                rec.lat("NEWMAIL", t.elapsed());
            }
        })
        .await?;
        conn.idle_done(&rec, &tag).await?;
        conn.logout(&rec).await
    };
    if let Err(e) = r.await {
        rec.error(&e);
    }
}

/// APPEND --new-mail messages, users in turn, each after the previous one
/// reached its clients (or 5 s passed); clients time the EXISTS.
async fn new_mail(ctx: &Ctx, rec: &Rec, appended: &Appended) -> Res<()> {
    let users = ctx.cli.clients.min(ctx.accounts.len()).max(1);
    for i in 0..ctx.cli.new_mail {
        let acc = ctx.account(i % users, 0);
        let mut conn = Conn::open(&ctx.conn, rec).await?;
        conn.login(rec, acc).await?;
        let msg =
            format!("From: bench@example.org\r\nSubject: new mail {i}\r\n\r\nnew mail {i}\r\n");
        let t = Instant::now();
        if let Ok(mut m) = appended.lock() {
            m.insert(acc.user.clone(), t);
        }
        let st = conn.append(&ctx.cli.mailbox, "", msg.as_bytes()).await?;
        rec.lat("APPEND", t.elapsed());
        crate::conn::check_ok("APPEND", &st)?;
        conn.logout(rec).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the last ones arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

pub async fn run(ctx: Arc<Ctx>) -> Report {
    let t = targets(&ctx);
    let (proxy_before, backend_before) = sample(&t);
    let start = Instant::now();
    let clients = ctx.cli.clients;
    let gate = Arc::new(Semaphore::new(ctx.cli.connect_parallel));
    let progress = Arc::new(Progress::default());
    let (release_tx, release_rx) = watch::channel(false);
    let appended: Arc<Appended> = Arc::default();
    let mut handles = Vec::new();
    let mut recs = Vec::new();
    for id in 0..clients {
        let rec = Rec::new(Recorder::new(ctx.live.clone(), start, start + FOREVER));
        recs.push(rec.clone());
        let h = tokio::spawn(client(
            ctx.clone(),
            id,
            rec.clone(),
            gate.clone(),
            progress.clone(),
            release_rx.clone(),
            appended.clone(),
        ));
        handles.push((h, rec));
    }
    // Wait until every client is idling or has failed (each step of each
    // client is bounded by --timeout).
    while progress.settled() < clients as u64 && !ctx.live.stop.load(Ordering::Relaxed) {
        let _ = tokio::time::timeout(Duration::from_millis(200), progress.changed.notified()).await;
    }
    let setup = start.elapsed();
    let hold_start = Instant::now();
    let hold_end = hold_start + ctx.cli.duration;
    // Let the servers settle, then measure while all are idle.
    let settle = ctx
        .cli
        .settle
        .unwrap_or((ctx.cli.duration / 2).min(Duration::from_secs(2)));
    let wait_until = |until: Instant| {
        let ctx = ctx.clone();
        async move {
            while Instant::now() < until && !ctx.live.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_until(hold_start + settle).await;
    let (proxy_during, backend_during) = sample(&t);
    let writer_rec = Rec::new(Recorder::new(ctx.live.clone(), start, start + FOREVER));
    if ctx.cli.new_mail > 0 {
        if let Err(e) = new_mail(&ctx, &writer_rec, &appended).await {
            writer_rec.error(&e);
        }
    }
    recs.push(writer_rec);
    wait_until(hold_end).await;
    let held = hold_start.elapsed();
    let _ = release_tx.send(true);
    join_all(handles, ctx.cli.timeout * 3 + Duration::from_secs(2)).await;

    let mut total = Recorder::new(ctx.live.clone(), start, start + FOREVER);
    for r in &recs {
        r.merge_into(&mut total);
    }
    let established = progress.established.load(Ordering::Relaxed);
    let failed = progress.failed.load(Ordering::Relaxed);
    if established + failed < clients as u64 {
        total.error(&BenchError::new(
            ErrKind::Timeout,
            format!(
                "{} connections never settled",
                clients as u64 - established - failed
            ),
        ));
    }
    let proxy = match (&t.proxy, proxy_before, proxy_during) {
        (Some((what, pids)), Some(b), Some(d)) => Some(MemReport::new(
            what.clone(),
            pids.clone(),
            b,
            d,
            established,
        )),
        _ => None,
    };
    let backend = match (&t.backend, backend_before, backend_during) {
        (Some(name), Some((_, b)), Some((pids, d))) => Some(MemReport::new(
            format!("backend {name}"),
            pids,
            b,
            d,
            established,
        )),
        _ => None,
    };
    let idle = IdleReport {
        clients: clients as u64,
        established,
        failed,
        setup_s: setup.as_secs_f64(),
        held_s: held.as_secs_f64(),
        proxy,
        backend,
    };
    Report::build(
        &ctx,
        &total,
        start.elapsed(),
        ctx.live.bytes_read.load(Ordering::Relaxed),
        ctx.live.bytes_written.load(Ordering::Relaxed),
        Some(idle),
    )
}
