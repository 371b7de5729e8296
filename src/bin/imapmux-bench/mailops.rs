//! Scenarios on one long session per client: `seed`, `append`,
//! `fetch-latency`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;

use crate::conn::{check_ok, Conn};
use crate::msg;
use crate::resp::appenduid;
use crate::runner::ERROR_BACKOFF;
use crate::sessions::{check_body, fetch_bodies, fetch_of, quoted_mailbox};
use crate::stats::{BenchError, ErrKind, Rec, Res};
use crate::util::{size_label, Account};
use crate::Ctx;

/// CREATE the mailbox unless it is INBOX (an existing one is fine).
async fn ensure_mailbox(conn: &mut Conn, rec: &Rec, mailbox: &str) -> Res<()> {
    if mailbox.eq_ignore_ascii_case("INBOX") {
        return Ok(());
    }
    let t = Instant::now();
    let st = conn
        .command(&format!("CREATE {}", quoted_mailbox(mailbox)?), |_| Ok(()))
        .await?;
    let exists = st.code_name().as_deref() == Some("ALREADYEXISTS");
    if !exists {
        check_ok("CREATE", &st)?;
    }
    rec.lat("CREATE", t.elapsed());
    Ok(())
}

/// Delete everything in the selected mailbox.
async fn empty_mailbox(conn: &mut Conn, rec: &Rec, mailbox: &str) -> Res<()> {
    let exists = conn.select(rec, mailbox, false).await?;
    if exists > 0 {
        conn.ok(rec, "STORE", "STORE 1:* +FLAGS.SILENT (\\Deleted)", |_| {
            Ok(())
        })
        .await?;
        conn.ok(rec, "EXPUNGE", "EXPUNGE", |_| Ok(())).await?;
    }
    conn.ok(rec, "CLOSE", "CLOSE", |_| Ok(())).await?;
    Ok(())
}

async fn seed_account(ctx: &Ctx, rec: &Rec, acct: &Account) -> Res<()> {
    let mut conn = Conn::open(&ctx.conn, rec).await?;
    conn.login(rec, acct).await?;
    ensure_mailbox(&mut conn, rec, &ctx.cli.mailbox).await?;
    if ctx.cli.reset {
        empty_mailbox(&mut conn, rec, &ctx.cli.mailbox).await?;
    }
    for i in 0..ctx.cli.messages {
        if ctx.live.stop.load(Ordering::Relaxed) {
            break;
        }
        ctx.limiter.wait().await;
        let size = ctx.sizes[i % ctx.sizes.len()];
        let m = msg::generate(&acct.user, i as u64, size);
        let t = Instant::now();
        let st = conn.append(&ctx.cli.mailbox, "", &m).await?;
        check_ok("APPEND", &st)?;
        rec.lat("APPEND", t.elapsed());
        rec.op(t.elapsed());
        rec.count("message_bytes", m.len() as u64);
    }
    conn.logout(rec).await
}

/// Each worker takes the next account until all are seeded.
pub async fn seed(ctx: &Ctx, _id: usize, rec: &Rec) {
    loop {
        let i = ctx.next_account.fetch_add(1, Ordering::Relaxed);
        if i >= ctx.accounts.len() || ctx.live.stop.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = seed_account(ctx, rec, &ctx.accounts[i]).await {
            rec.error(&BenchError::new(
                e.kind,
                format!("{}: {}", ctx.accounts[i].user, e.msg),
            ));
        }
    }
}

/// Open a session for a long-running worker: LOGIN, SELECT.
async fn session(ctx: &Ctx, rec: &Rec, acct: &Account) -> Res<(Conn, u32)> {
    let mut conn = Conn::open(&ctx.conn, rec).await?;
    conn.login(rec, acct).await?;
    ensure_mailbox(&mut conn, rec, &ctx.cli.mailbox).await?;
    let exists = conn.select(rec, &ctx.cli.mailbox, false).await?;
    Ok((conn, exists))
}

async fn append_one(ctx: &Ctx, rec: &Rec, conn: &mut Conn, m: &Bytes) -> Res<()> {
    let t = Instant::now();
    let st = conn.append(&ctx.cli.mailbox, "\\Seen", m).await?;
    check_ok("APPEND", &st)?;
    rec.lat("APPEND", t.elapsed());
    let uid = appenduid(&st).ok_or_else(|| {
        BenchError::new(
            ErrKind::BadResponse,
            format!("APPEND OK without APPENDUID: {}", st.text),
        )
    })?;
    let mut got = 0;
    fetch_bodies(conn, rec, "FETCH_BODY", &uid.to_string(), |u, body, size| {
        if u != uid {
            return Ok(());
        }
        got += 1;
        if body != m {
            let at = body.iter().zip(m.iter()).position(|(a, b)| a != b);
            return Err(BenchError::new(
                ErrKind::VerifyMismatch,
                format!(
                    "UID {uid}: fetched {} bytes differ from the {} appended (first difference at {:?})",
                    body.len(),
                    m.len(),
                    at
                ),
            ));
        }
        check_body(ctx, uid, body, size)
    })
    .await?;
    if got != 1 {
        return Err(BenchError::new(
            ErrKind::BadResponse,
            format!("UID FETCH {uid}: {got} bodies"),
        ));
    }
    rec.count("message_bytes", m.len() as u64);
    if !ctx.cli.keep {
        conn.ok(
            rec,
            "STORE",
            &format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"),
            |_| Ok(()),
        )
        .await?;
        let cmd = if conn.has_cap("UIDPLUS") {
            format!("UID EXPUNGE {uid}")
        } else {
            "EXPUNGE".to_string()
        };
        conn.ok(rec, "EXPUNGE", &cmd, |_| Ok(())).await?;
    }
    Ok(())
}

/// APPEND, fetch back byte-exact, delete; one session per worker
/// (reopened after an error).
pub async fn append(ctx: &Ctx, id: usize, rec: &Rec) {
    let owner = format!("append{id}");
    let msgs: Vec<Bytes> = ctx
        .sizes
        .iter()
        .enumerate()
        .map(|(i, s)| Bytes::from(msg::generate(&owner, i as u64, *s)))
        .collect();
    let mut k = 0usize;
    let mut sessions = 0usize;
    while ctx.running() {
        let acct = ctx.account(id, sessions);
        sessions += 1;
        let mut conn = match session(ctx, rec, acct).await {
            Ok((c, _)) => c,
            Err(e) => {
                rec.error(&e);
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        let mut failed = false;
        while ctx.running() {
            ctx.limiter.wait().await;
            if !ctx.running() {
                break;
            }
            let m = &msgs[k % msgs.len()];
            k = k.wrapping_add(1);
            let t = Instant::now();
            match append_one(ctx, rec, &mut conn, m).await {
                Ok(()) => rec.op(t.elapsed()),
                Err(e) => {
                    rec.error(&e);
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            tokio::time::sleep(ERROR_BACKOFF).await;
        } else if let Err(e) = conn.logout(rec).await {
            rec.error(&e);
        }
    }
}

/// The UIDs to fetch with their labels: `--uid`, or per size in `--sizes`
/// the first message of exactly that size (else the nearest size).
async fn latency_targets(ctx: &Ctx, rec: &Rec, conn: &mut Conn) -> Res<Vec<(String, u32)>> {
    if let Some(uid) = ctx.cli.uid {
        return Ok(vec![("FETCH_BODY".into(), uid)]);
    }
    let mut all: Vec<(u32, u64)> = Vec::new();
    conn.ok(rec, "FETCH_META", "UID FETCH 1:* (UID RFC822.SIZE)", |r| {
        if let Some(f) = fetch_of(r)? {
            if let (Some(u), Some(s)) = (f.uid, f.size) {
                all.push((u, s));
            }
        }
        Ok(())
    })
    .await?;
    if all.is_empty() {
        return Err(BenchError::new(
            ErrKind::BadResponse,
            format!("{}: mailbox is empty (run seed first)", ctx.cli.mailbox),
        ));
    }
    all.sort_unstable();
    let mut out = Vec::new();
    for &want in &ctx.sizes {
        let exact = all.iter().find(|(_, s)| *s == want);
        let (uid, size) = match exact {
            Some(x) => *x,
            None => *all
                .iter()
                .min_by_key(|(_, s)| s.abs_diff(want))
                .unwrap_or(&all[0]),
        };
        let label = if size == want {
            format!("FETCH_{}", size_label(want))
        } else {
            format!("FETCH_{}~{}", size_label(want), size)
        };
        if !out.iter().any(|(_, u)| *u == uid) {
            out.push((label, uid));
        }
    }
    Ok(out)
}

/// Repeated `UID FETCH <uid> (BODY.PEEK[])` on one session.
pub async fn fetch_latency(ctx: &Ctx, id: usize, rec: &Rec) {
    let mut k = 0usize;
    let mut sessions = 0usize;
    while ctx.running() {
        let acct = ctx.account(id, sessions);
        sessions += 1;
        let setup = async {
            let (mut conn, _) = session(ctx, rec, acct).await?;
            let targets = latency_targets(ctx, rec, &mut conn).await?;
            Ok::<_, BenchError>((conn, targets))
        };
        let (mut conn, targets) = match setup.await {
            Ok(x) => x,
            Err(e) => {
                rec.error(&e);
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        let mut failed = false;
        while ctx.running() {
            ctx.limiter.wait().await;
            if !ctx.running() {
                break;
            }
            let (label, uid) = &targets[k % targets.len()];
            k = k.wrapping_add(1);
            let t = Instant::now();
            let mut got = None;
            let r = conn
                .ok(rec, label, &format!("UID FETCH {uid} (BODY.PEEK[])"), |r| {
                    if let Some(f) = fetch_of(r)? {
                        if f.uid == Some(*uid) && f.body.is_some() {
                            got = f.body;
                        }
                    }
                    Ok(())
                })
                .await;
            let elapsed = t.elapsed();
            let r = r.and_then(|_| match &got {
                Some(b) => check_body(ctx, *uid, b, None),
                None => Err(BenchError::new(
                    ErrKind::BadResponse,
                    format!("UID FETCH {uid}: no BODY[] (message gone?)"),
                )),
            });
            match r {
                Ok(()) => {
                    rec.op(elapsed);
                    rec.count("message_bytes", got.map_or(0, |b| b.len() as u64));
                }
                Err(e) => {
                    rec.error(&e);
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            tokio::time::sleep(ERROR_BACKOFF).await;
        } else if let Err(e) = conn.logout(rec).await {
            rec.error(&e);
        }
    }
}
