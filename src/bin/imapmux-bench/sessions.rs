//! Session-shaped scenarios: one operation is one whole session.
//! `login-storm`, `webmail`, `sync`.

use std::time::Instant;

use bytes::Bytes;

use crate::conn::Conn;
use crate::msg;
use crate::resp::{parse_fetch, Fetch, Response};
use crate::runner::ERROR_BACKOFF;
use crate::stats::{BenchError, ErrKind, Rec, Res};
use crate::util::{imap_quote, Rng};
use crate::Ctx;

/// Turn a FETCH parse result into a scenario error.
pub fn fetch_of(r: &Response) -> Res<Option<Fetch>> {
    match parse_fetch(r) {
        None => Ok(None),
        Some(Ok(f)) => Ok(Some(f)),
        Some(Err(e)) => Err(BenchError::new(
            ErrKind::BadResponse,
            format!("FETCH: {e}: {}", r.summary()),
        )),
    }
}

/// Check a fetched message: its length against the expected size (if
/// known) and, unless disabled, its own digest.
pub fn check_body(ctx: &Ctx, uid: u32, body: &Bytes, size: Option<u64>) -> Res<()> {
    if let Some(size) = size {
        if body.len() as u64 != size {
            return Err(BenchError::new(
                ErrKind::VerifyMismatch,
                format!(
                    "UID {uid}: BODY[] has {} bytes, RFC822.SIZE {size}",
                    body.len()
                ),
            ));
        }
    }
    if !ctx.cli.no_verify {
        msg::verify(body)
            .map_err(|e| BenchError::new(ErrKind::VerifyMismatch, format!("UID {uid}: {e}")))?;
    }
    Ok(())
}

/// `UID FETCH uids (UID RFC822.SIZE BODY.PEEK[])`; calls `each` for every
/// message body received. Returns the number of bodies.
pub async fn fetch_bodies(
    conn: &mut Conn,
    rec: &Rec,
    name: &str,
    uids: &str,
    mut each: impl FnMut(u32, &Bytes, Option<u64>) -> Res<()> + Send,
) -> Res<usize> {
    let mut n = 0;
    conn.ok(
        rec,
        name,
        &format!("UID FETCH {uids} (UID RFC822.SIZE BODY.PEEK[])"),
        |r| {
            if let Some(f) = fetch_of(r)? {
                if let (Some(uid), Some(body)) = (f.uid, f.body.as_ref()) {
                    n += 1;
                    each(uid, body, f.size)?;
                }
            }
            Ok(())
        },
    )
    .await?;
    Ok(n)
}

/// Run `op` repeatedly until the end of the run; each success is one
/// operation, each failure one error (after which the worker pauses).
async fn repeat<F, Fut>(ctx: &Ctx, rec: &Rec, mut op: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Res<()>>,
{
    let mut k = 0usize;
    while ctx.running() {
        ctx.limiter.wait().await;
        if !ctx.running() {
            break;
        }
        let t = Instant::now();
        match op(k).await {
            Ok(()) => rec.op(t.elapsed()),
            Err(e) => {
                rec.error(&e);
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
        k = k.wrapping_add(1);
    }
}

/// Connect, (TLS,) LOGIN, LOGOUT.
pub async fn login_storm(ctx: &Ctx, id: usize, rec: &Rec) {
    repeat(ctx, rec, |k| async move {
        let mut conn = Conn::open(&ctx.conn, rec).await?;
        conn.login(rec, ctx.account(id, k)).await?;
        conn.logout(rec).await
    })
    .await
}

/// LOGIN, SELECT, a page of headers, read some messages, mark them seen,
/// LOGOUT.
pub async fn webmail(ctx: &Ctx, id: usize, rec: &Rec) {
    let rng = std::sync::Mutex::new(Rng::new(ctx.cli.seed ^ (id as u64) << 32));
    let rng = &rng;
    repeat(ctx, rec, |k| async move {
        let mut conn = Conn::open(&ctx.conn, rec).await?;
        conn.login(rec, ctx.account(id, k)).await?;
        let exists = conn.select(rec, &ctx.cli.mailbox, false).await?;
        if exists == 0 {
            return Err(BenchError::new(
                ErrKind::BadResponse,
                format!("{}: mailbox is empty (run seed first)", ctx.cli.mailbox),
            ));
        }
        let page_len = u32::try_from(ctx.cli.page).unwrap_or(u32::MAX);
        let lo = exists.saturating_sub(page_len - 1).max(1);
        let mut page: Vec<Fetch> = Vec::new();
        conn.ok(
            rec,
            "FETCH_PAGE",
            &format!(
                "FETCH {lo}:{exists} (UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE \
                 BODY.PEEK[HEADER.FIELDS (From To Subject Date)])"
            ),
            |r| {
                if let Some(f) = fetch_of(r)? {
                    if f.envelope {
                        page.push(f);
                    }
                }
                Ok(())
            },
        )
        .await?;
        let want = (exists - lo + 1) as usize;
        if page.len() != want {
            return Err(BenchError::new(
                ErrKind::BadResponse,
                format!("page: {} of {want} messages returned", page.len()),
            ));
        }
        for f in &page {
            if f.uid.is_none() || f.size.is_none() || !f.bodystructure || f.section.is_none() {
                return Err(BenchError::new(
                    ErrKind::BadResponse,
                    format!("page: incomplete FETCH for message {}", f.seq),
                ));
            }
        }
        let hot = page.len().min(10);
        for _ in 0..ctx.cli.reads {
            let pick = {
                let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
                if rng.unit() < ctx.cli.reread {
                    rng.below(hot)
                } else {
                    rng.below(page.len())
                }
            };
            let (uid, size) = (page[pick].uid.unwrap_or(0), page[pick].size);
            read_body(ctx, &mut conn, rec, uid, size).await?;
            conn.ok(
                rec,
                "STORE",
                &format!("UID STORE {uid} +FLAGS.SILENT (\\Seen)"),
                |_| Ok(()),
            )
            .await?;
        }
        conn.logout(rec).await
    })
    .await
}

/// `UID FETCH uid BODY.PEEK[]`: exactly one body, the expected size, a
/// valid digest.
async fn read_body(ctx: &Ctx, conn: &mut Conn, rec: &Rec, uid: u32, size: Option<u64>) -> Res<()> {
    let mut got = 0;
    let n = fetch_bodies(conn, rec, "FETCH_BODY", &uid.to_string(), |u, b, s| {
        if u == uid {
            got += 1;
            if s.is_some() && s != size {
                return Err(BenchError::new(
                    ErrKind::VerifyMismatch,
                    format!("UID {uid}: RFC822.SIZE changed {size:?} -> {s:?}"),
                ));
            }
            check_body(ctx, uid, b, size)?;
            rec.count("messages_verified", 1);
        }
        Ok(())
    })
    .await?;
    if got != 1 || n != 1 {
        return Err(BenchError::new(
            ErrKind::BadResponse,
            format!("UID FETCH {uid}: {got} bodies for it, {n} in total"),
        ));
    }
    Ok(())
}

/// One long session per client (LOGIN and SELECT once), then operations of
/// one command each, as a webmail backend's read path does: half of them
/// a header/BODYSTRUCTURE list of a random page, half a full body read of
/// a random message (verified). The FETCH cache's target workload.
pub async fn read_heavy(ctx: &Ctx, id: usize, rec: &Rec) {
    let mut rng = Rng::new(ctx.cli.seed ^ (id as u64) << 32);
    'session: while ctx.running() {
        let setup = async {
            let mut conn = Conn::open(&ctx.conn, rec).await?;
            conn.login(rec, ctx.account(id, 0)).await?;
            let exists = conn.select(rec, &ctx.cli.mailbox, true).await?;
            let mut uids: Vec<(u32, Option<u64>)> = Vec::new();
            conn.ok(rec, "FETCH_UIDS", "FETCH 1:* (UID RFC822.SIZE)", |r| {
                if let Some(f) = fetch_of(r)? {
                    if let Some(u) = f.uid {
                        uids.push((u, f.size));
                    }
                }
                Ok(())
            })
            .await?;
            if exists == 0 || uids.len() != exists as usize {
                return Err(BenchError::new(
                    ErrKind::BadResponse,
                    format!(
                        "{}: {} UIDs for {exists} messages (run seed first)",
                        ctx.cli.mailbox,
                        uids.len()
                    ),
                ));
            }
            Ok((conn, exists, uids))
        };
        let (mut conn, exists, uids) = match setup.await {
            Ok(x) => x,
            Err(e) => {
                rec.error(&e);
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue 'session;
            }
        };
        let page_len = u32::try_from(ctx.cli.page)
            .unwrap_or(u32::MAX)
            .clamp(1, exists);
        while ctx.running() {
            ctx.limiter.wait().await;
            if !ctx.running() {
                break;
            }
            let t = Instant::now();
            let result = if rng.unit() < 0.5 {
                let lo = 1 + rng.below((exists - page_len + 1) as usize) as u32;
                let hi = lo + page_len - 1;
                let mut n = 0u32;
                let r = conn
                    .ok(
                        rec,
                        "FETCH_PAGE",
                        &format!(
                            "FETCH {lo}:{hi} (UID RFC822.SIZE ENVELOPE BODYSTRUCTURE \
                             BODY.PEEK[HEADER.FIELDS (From To Subject Date)])"
                        ),
                        |r| {
                            if let Some(f) = fetch_of(r)? {
                                if f.uid.is_some()
                                    && f.envelope
                                    && f.bodystructure
                                    && f.section.is_some()
                                {
                                    n += 1;
                                }
                            }
                            Ok(())
                        },
                    )
                    .await;
                r.and_then(|_| {
                    if n == page_len {
                        Ok(())
                    } else {
                        Err(BenchError::new(
                            ErrKind::BadResponse,
                            format!("page {lo}:{hi}: {n} complete FETCH responses"),
                        ))
                    }
                })
            } else {
                let (uid, size) = uids[rng.below(uids.len())];
                read_body(ctx, &mut conn, rec, uid, size).await
            };
            match result {
                Ok(()) => rec.op(t.elapsed()),
                Err(e) => {
                    rec.error(&e);
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue 'session;
                }
            }
        }
        let _ = conn.logout(rec).await;
    }
}

/// LOGIN, SELECT, all metadata, then every message in batches, LOGOUT.
pub async fn sync(ctx: &Ctx, id: usize, rec: &Rec) {
    repeat(ctx, rec, |k| async move {
        let mut conn = Conn::open(&ctx.conn, rec).await?;
        conn.login(rec, ctx.account(id, k)).await?;
        let exists = conn.select(rec, &ctx.cli.mailbox, true).await?;
        let mut meta: Vec<(u32, u64)> = Vec::new();
        if exists > 0 {
            conn.ok(
                rec,
                "FETCH_META",
                "UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)",
                |r| {
                    if let Some(f) = fetch_of(r)? {
                        match (f.uid, f.size, &f.flags, &f.internaldate) {
                            (Some(u), Some(s), Some(_), Some(_)) => meta.push((u, s)),
                            _ => {
                                return Err(BenchError::new(
                                    ErrKind::BadResponse,
                                    format!("incomplete FETCH: {}", r.summary()),
                                ))
                            }
                        }
                    }
                    Ok(())
                },
            )
            .await?;
        }
        if meta.len() != exists as usize {
            return Err(BenchError::new(
                ErrKind::BadResponse,
                format!("UID FETCH 1:*: {} of {exists} messages", meta.len()),
            ));
        }
        meta.sort_unstable();
        let mut bytes = 0u64;
        for chunk in meta.chunks(ctx.cli.batch) {
            let set: Vec<String> = chunk.iter().map(|(u, _)| u.to_string()).collect();
            let mut seen = vec![false; chunk.len()];
            fetch_bodies(&mut conn, rec, "FETCH_BATCH", &set.join(","), |u, b, s| {
                let Ok(i) = chunk.binary_search_by_key(&u, |(uid, _)| *uid) else {
                    return Err(BenchError::new(
                        ErrKind::BadResponse,
                        format!("unrequested UID {u} in FETCH"),
                    ));
                };
                let size = chunk[i].1;
                if s.is_some_and(|s| s != size) {
                    return Err(BenchError::new(
                        ErrKind::VerifyMismatch,
                        format!("UID {u}: RFC822.SIZE changed {size} -> {s:?}"),
                    ));
                }
                check_body(ctx, u, b, Some(size))?;
                seen[i] = true;
                bytes += b.len() as u64;
                Ok(())
            })
            .await?;
            if let Some(i) = seen.iter().position(|s| !s) {
                return Err(BenchError::new(
                    ErrKind::BadResponse,
                    format!("UID {}: no BODY[] returned", chunk[i].0),
                ));
            }
        }
        rec.count("messages_verified", meta.len() as u64);
        rec.count("message_bytes", bytes);
        conn.logout(rec).await
    })
    .await
}

/// Quoted mailbox name or a usage-type error.
pub fn quoted_mailbox(name: &str) -> Res<String> {
    imap_quote(name).ok_or_else(|| BenchError::new(ErrKind::Bad, "mailbox name not quotable"))
}
