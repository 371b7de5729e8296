//! Watchers for parked IDLE clients: one per (backend, user), shared by
//! all of that user's parked clients on all mailboxes (several devices of
//! one user watching INBOX share it). It learns of changes to the watched
//! mailboxes, publishes each mailbox's latest modseq to its subscribers,
//! and answers their resync queries (EXAMINE with CONDSTORE, UID list,
//! flags changed since) on a backend connection of its own.
//!
//! How it learns of changes, and whether it holds a connection meanwhile:
//!
//! - a push notification names the mailbox ([`WakeSink`]): it asks the
//!   backend (STATUS HIGHESTMODSEQ) at once;
//! - the backend has a doveadm HTTP API (`doveadm_url`): the batch poller
//!   ([`super::poll`]) asks for every watched mailbox of every user in a
//!   few requests per poll interval and hands each watcher the new modseq
//!   ([`Watcher::observe`]);
//! - otherwise, with a poll interval, it polls STATUS HIGHESTMODSEQ itself
//!   every interval, which keeps its connection logged in (one backend
//!   connection per parked user).
//!
//! Except in the last case the connection is logged out [`LINGER`] after
//! its last command, so a watcher holds a connection only while it
//! resyncs. The connection has CONDSTORE enabled and is never handed to a
//! client; it is logged out at the latest when the last subscriber leaves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::{watch, Notify};

use super::wake::WakeSink;
use crate::backend::command::run;
use crate::backend::{BackendError, LoggedIn};
use crate::identity::Credentials;
use crate::imap::command::quote;
use crate::multiplex::view::{fetch_uid_flags, number_after, search_uids, MailboxNow, UidList};
use crate::route::Backend;

#[derive(Debug, Error)]
pub enum WatchError {
    #[error("backend: {0}")]
    Backend(#[from] BackendError),
    #[error("the backend refused {0}")]
    Refused(&'static str),
    #[error("mailbox name cannot be quoted")]
    Name,
}

/// Settings shared by all watchers.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// How often watched mailboxes are polled (zero: push only).
    pub poll_interval: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Parked sessions re-attaching (logging in again) at once; the rest
    /// wait their turn instead of stampeding the backend.
    pub max_concurrent_resumes: usize,
}

type Key = (String, String);

/// How long a watcher that does not poll over IMAP keeps its backend
/// connection after its last command: long enough for the resyncs that
/// follow one change (every parked device of the user, one after the
/// other) and for a burst of changes (a delivery, then its flags), short
/// enough that idle watchers hold nothing.
pub const LINGER: Duration = Duration::from_secs(2);

/// A watcher's logged-in backend connection, counted while held.
struct Held {
    li: LoggedIn,
    _counted: Option<crate::metrics::GaugeGuard>,
}

/// All watchers of this process; the push endpoint wakes them.
pub struct Registry {
    cfg: WatchConfig,
    resumes: tokio::sync::Semaphore,
    watchers: Mutex<HashMap<Key, Weak<Watcher>>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    pub fn new(cfg: WatchConfig, metrics: Option<Arc<crate::metrics::Metrics>>) -> Registry {
        Registry {
            resumes: tokio::sync::Semaphore::new(cfg.max_concurrent_resumes.max(1)),
            cfg,
            watchers: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The watcher of `user` on `backend` (started if needed). `creds` log
    /// it in; the caller holds the returned Arc while its client is parked.
    pub fn join(&self, backend: &Arc<Backend>, user: &str, creds: &Credentials) -> Arc<Watcher> {
        let key = (backend.name.clone(), user.to_string());
        let mut map = lock(&self.watchers);
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(w) = map.get(&key).and_then(Weak::upgrade) {
            return w;
        }
        let w = Arc::new(Watcher {
            backend: backend.clone(),
            owner: user.to_string(),
            creds: creds.clone(),
            cfg: self.cfg.clone(),
            conn: tokio::sync::Mutex::new(None),
            mailboxes: Mutex::new(HashMap::new()),
            poke: Arc::new(Notify::new()),
            poked: Mutex::new(Vec::new()),
            next_tag: std::sync::atomic::AtomicU64::new(1),
            last_used: Mutex::new(Instant::now()),
            poked_by_poll: AtomicBool::new(false),
            metrics: self.metrics.clone(),
        });
        map.insert(key, Arc::downgrade(&w));
        if let Some(m) = &self.metrics {
            m.park.watchers.set(map.len() as i64);
        }
        tokio::spawn(Watcher::run(Arc::downgrade(&w)));
        w
    }

    /// A turn to re-attach a parked session (held while it logs in again).
    pub async fn resume_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.resumes.acquire().await.ok()
    }

    pub fn len(&self) -> usize {
        let mut map = lock(&self.watchers);
        map.retain(|_, w| w.strong_count() > 0);
        map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn poll_interval(&self) -> Duration {
        self.cfg.poll_interval
    }

    /// The live watchers of backends with a doveadm API (batch-polled).
    pub(super) fn batch_polled(&self) -> Vec<Arc<Watcher>> {
        lock(&self.watchers)
            .values()
            .filter_map(Weak::upgrade)
            .filter(|w| w.backend.doveadm.is_some())
            .collect()
    }
}

impl WakeSink for Registry {
    fn wake(&self, user: &str, mailbox: &str) -> usize {
        let watchers: Vec<Arc<Watcher>> = lock(&self.watchers)
            .iter()
            .filter(|((_, u), _)| u == user)
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        let mut n = 0;
        for w in watchers {
            if w.poke(mailbox) {
                n += 1;
            }
        }
        n
    }
}

pub struct Watcher {
    backend: Arc<Backend>,
    /// The mailbox owner (the key of the watcher, and doveadm's user).
    owner: String,
    creds: Credentials,
    cfg: WatchConfig,
    conn: tokio::sync::Mutex<Option<Held>>,
    /// mailbox → latest HIGHESTMODSEQ seen (subscribers wait for changes).
    mailboxes: Mutex<HashMap<String, watch::Sender<u64>>>,
    poke: Arc<Notify>,
    poked: Mutex<Vec<String>>,
    next_tag: std::sync::atomic::AtomicU64,
    /// When the connection last answered a command (it is logged out
    /// [`LINGER`] later unless the watcher polls over IMAP).
    last_used: Mutex<Instant>,
    /// The batch poller asked for an IMAP check (its answer had none).
    poked_by_poll: AtomicBool,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

fn same_mailbox(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

impl Watcher {
    /// Be told when `mailbox` changes (its modseq grows).
    pub fn subscribe(&self, mailbox: &str, modseq: u64) -> watch::Receiver<u64> {
        let mut map = lock(&self.mailboxes);
        if let Some(tx) = map
            .iter()
            .find(|(m, _)| same_mailbox(m, mailbox))
            .map(|(_, t)| t)
        {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(modseq);
        map.insert(mailbox.to_string(), tx);
        rx
    }

    pub(super) fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    pub(super) fn owner(&self) -> &str {
        &self.owner
    }

    /// The watched mailboxes (someone subscribed) and their latest values.
    pub(super) fn watched(&self) -> Vec<(String, u64)> {
        lock(&self.mailboxes)
            .iter()
            .filter(|(_, tx)| tx.receiver_count() > 0)
            .map(|(m, tx)| (m.clone(), *tx.borrow()))
            .collect()
    }

    /// The batch poller learned `mailbox`'s modseq: wake the subscribers if
    /// it is not what they know. True if it woke them.
    pub fn observe(&self, mailbox: &str, modseq: u64) -> bool {
        let map = lock(&self.mailboxes);
        let Some(tx) = map
            .iter()
            .find(|(m, _)| same_mailbox(m, mailbox))
            .map(|(_, t)| t)
        else {
            return false;
        };
        tx.send_if_modified(|cur| {
            let changed = *cur != modseq;
            *cur = modseq;
            changed
        })
    }

    /// The batch poller could not learn `mailbox`'s state: check it over
    /// IMAP now, as for a push.
    pub fn check_over_imap(&self, mailbox: &str) -> bool {
        self.poked_by_poll.store(true, Ordering::Relaxed);
        self.poke(mailbox)
    }

    /// Whether this watcher polls over IMAP itself (and so keeps its
    /// connection): a poll interval and no doveadm API to batch through.
    fn polls_over_imap(&self) -> bool {
        !self.cfg.poll_interval.is_zero() && self.backend.doveadm.is_none()
    }

    /// When to log the connection out ([`LINGER`] after its last use);
    /// `None` when none is held or the watcher polls over IMAP.
    fn release_at(&self) -> Option<Instant> {
        if self.polls_over_imap() {
            return None;
        }
        match self.conn.try_lock() {
            Ok(slot) if slot.is_none() => None,
            Ok(_) => Some(*lock(&self.last_used) + LINGER),
            // In use: look again later.
            Err(_) => Some(Instant::now() + LINGER),
        }
    }

    /// Log the connection out if it has not been used for [`LINGER`].
    fn release_if_idle(&self) {
        let Ok(mut slot) = self.conn.try_lock() else {
            return;
        };
        if lock(&self.last_used).elapsed() < LINGER {
            return;
        }
        if let Some(h) = slot.take() {
            let t = self.cfg.response_timeout;
            tokio::spawn(super::pool::logout(h.li, t));
        }
    }

    /// A push named this mailbox: poll it now. False if nobody watches it.
    fn poke(&self, mailbox: &str) -> bool {
        let watched = lock(&self.mailboxes)
            .iter()
            .any(|(m, tx)| same_mailbox(m, mailbox) && tx.receiver_count() > 0);
        if watched {
            // Once per mailbox until the watcher gets to it: a push sender
            // repeating itself does not grow the list.
            let mut poked = lock(&self.poked);
            if !poked.iter().any(|m| m == mailbox) {
                poked.push(mailbox.to_string());
            }
            drop(poked);
            self.poke.notify_one();
        }
        watched
    }

    fn tag(&self) -> String {
        format!(
            "imapmux.w{}",
            self.next_tag
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    }

    async fn connection<'a>(
        &self,
        slot: &'a mut Option<Held>,
    ) -> Result<&'a mut LoggedIn, WatchError> {
        if slot.is_none() {
            let c = crate::backend::connect(
                &self.backend,
                self.cfg.connect_timeout,
                self.cfg.response_timeout,
            )
            .await?;
            match c.login(&self.creds, None).await? {
                crate::backend::LoginOutcome::Ok(li) => {
                    *lock(&self.last_used) = Instant::now();
                    *slot = Some(Held {
                        li,
                        _counted: self.metrics.as_ref().map(|m| m.park.watcher_connection()),
                    });
                    // The watcher task schedules the logout (LINGER).
                    self.poke.notify_one();
                }
                crate::backend::LoginOutcome::Rejected { .. } => {
                    return Err(WatchError::Refused("login"))
                }
            }
        }
        slot.as_mut()
            .map(|h| &mut h.li)
            .ok_or(WatchError::Refused("login"))
    }

    /// Run `cmd`; on any I/O failure the connection is dropped (the next
    /// call logs in again).
    async fn cmd(
        &self,
        slot: &mut Option<Held>,
        cmd: &str,
        untagged: impl FnMut(&[u8]),
    ) -> Result<bool, WatchError> {
        let tag = self.tag();
        let t = self.cfg.response_timeout;
        let conn = self.connection(slot).await?;
        let r = run(&mut conn.stream, &mut conn.buf, &tag, cmd, t, untagged).await;
        *lock(&self.last_used) = Instant::now();
        match r {
            Ok(answer) => Ok(answer.is_ok()),
            Err(e) => {
                *slot = None;
                Err(e.into())
            }
        }
    }

    /// Whether the watcher's backend has CONDSTORE (logs in if needed).
    async fn condstore(&self) -> Result<bool, WatchError> {
        let mut slot = self.conn.lock().await;
        let conn = self.connection(&mut slot).await?;
        Ok(crate::imap::response::has_capability(
            &conn.capabilities,
            "CONDSTORE",
        ))
    }

    /// A number that changes whenever `mailbox` does: its HIGHESTMODSEQ, or
    /// without CONDSTORE a hash of its UIDs and flags.
    pub async fn version(&self, mailbox: &str) -> Result<u64, WatchError> {
        if !self.condstore().await? {
            let now = self.snapshot(mailbox, 0).await?;
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(&now.uidvalidity.to_be_bytes());
            for (uid, flags) in &now.changed {
                h.update(&uid.to_be_bytes());
                h.update(flags.as_bytes());
            }
            return Ok(h.digest().max(1));
        }
        let name = quoted(mailbox)?;
        let mut slot = self.conn.lock().await;
        let mut modseq = None;
        let ok = self
            .cmd(&mut slot, &format!("STATUS {name} (HIGHESTMODSEQ)"), |l| {
                if l.starts_with(b"* STATUS") {
                    modseq = number_after(l, b"HIGHESTMODSEQ ");
                }
            })
            .await?;
        match (ok, modseq) {
            (true, Some(m)) => Ok(m),
            _ => Err(WatchError::Refused("STATUS HIGHESTMODSEQ")),
        }
    }

    /// The mailbox now: UIDVALIDITY, HIGHESTMODSEQ, its UIDs, and the
    /// flags of messages changed since `since` (without CONDSTORE: of all
    /// messages, modseq 0).
    pub async fn snapshot(&self, mailbox: &str, since: u64) -> Result<MailboxNow, WatchError> {
        let condstore = self.condstore().await?;
        let name = quoted(mailbox)?;
        let t0 = std::time::Instant::now();
        let mut slot = self.conn.lock().await;
        let (mut uidvalidity, mut modseq, mut exists) = (None, None, None);
        let examine = if condstore {
            format!("EXAMINE {name} (CONDSTORE)")
        } else {
            format!("EXAMINE {name}")
        };
        let ok = self
            .cmd(&mut slot, &examine, |l| {
                if let Some(v) = number_after(l, b"[UIDVALIDITY ") {
                    uidvalidity = Some(v as u32);
                }
                if let Some(v) = number_after(l, b"[HIGHESTMODSEQ ") {
                    modseq = Some(v);
                }
                if l.ends_with(b" EXISTS\r\n") {
                    exists = number_after(l, b"* ");
                }
            })
            .await?;
        let modseq = if condstore { modseq } else { Some(0) };
        let (Some(uidvalidity), Some(modseq), true) = (uidvalidity, modseq, ok) else {
            return Err(WatchError::Refused("EXAMINE"));
        };
        // With CONDSTORE: the UID list and what changed since `since`.
        // Without: every message's UID and flags (the caller compares).
        let (fetch, uids) = if condstore {
            let uids = search_all(self, &mut slot).await?;
            let fetch = (modseq > since && !uids.is_empty())
                .then(|| format!("UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE {since})"));
            (fetch, Some(uids))
        } else {
            let fetch = (exists.unwrap_or(1) > 0).then(|| "UID FETCH 1:* (UID FLAGS)".to_string());
            (fetch, None)
        };
        let mut changed = Vec::new();
        if let Some(fetch) = fetch {
            let ok = self
                .cmd(&mut slot, &fetch, |l| {
                    if let Some(x) = fetch_uid_flags(l) {
                        changed.push(x);
                    }
                })
                .await?;
            if !ok {
                return Err(WatchError::Refused("UID FETCH FLAGS"));
            }
        }
        // Leave the mailbox (read-only: nothing is expunged): STATUS on a
        // selected mailbox would report this session's view, not news.
        self.cmd(&mut slot, "CLOSE", |_| {}).await?;
        if let Some(m) = &self.metrics {
            m.park.resync_duration.observe(t0.elapsed().as_secs_f64());
        }
        let uids =
            uids.unwrap_or_else(|| UidList::from_uids(changed.iter().map(|(u, _)| *u).collect()));
        Ok(MailboxNow {
            uidvalidity,
            modseq,
            uids,
            changed,
        })
    }

    /// Poll the watched mailboxes (over IMAP, or when poked) until nobody
    /// holds the watcher; log the connection out when it is not needed.
    async fn run(me: Weak<Watcher>) {
        enum Why {
            Poll,
            Poke,
            Release,
        }
        loop {
            let Some(w) = me.upgrade() else { return };
            let interval = if w.polls_over_imap() {
                w.cfg.poll_interval
            } else {
                Duration::from_secs(3600)
            };
            let release_at = w.release_at();
            let poke = w.poke.clone();
            drop(w);
            let release = tokio::time::sleep_until(
                release_at
                    .unwrap_or_else(|| Instant::now() + interval)
                    .into(),
            );
            let why = tokio::select! {
                _ = tokio::time::sleep(interval) => Why::Poll,
                _ = poke.notified() => Why::Poke,
                _ = release, if release_at.is_some() => Why::Release,
            };
            let Some(w) = me.upgrade() else { return };
            let (names, cause): (Vec<String>, _) = match why {
                Why::Release => {
                    w.release_if_idle();
                    continue;
                }
                Why::Poke => {
                    let by_poll = w.poked_by_poll.swap(false, Ordering::Relaxed);
                    let names = std::mem::take(&mut *lock(&w.poked));
                    (names, if by_poll { "poll" } else { "push" })
                }
                Why::Poll => {
                    let mut map = lock(&w.mailboxes);
                    map.retain(|_, tx| tx.receiver_count() > 0);
                    (map.keys().cloned().collect(), "poll")
                }
            };
            for name in names {
                match w.version(&name).await {
                    Ok(m) => {
                        if w.observe(&name, m) {
                            if let Some(mx) = &w.metrics {
                                mx.park.wake(cause);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(backend = %w.backend.name, error = %e, "watcher poll failed")
                    }
                }
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(c) = self.conn.get_mut().take() {
            let t = self.cfg.response_timeout;
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(super::pool::logout(c.li, t));
            }
        }
        if let Some(m) = &self.metrics {
            m.park.watchers.dec();
        }
    }
}

fn quoted(mailbox: &str) -> Result<String, WatchError> {
    quote(mailbox.as_bytes())
        .and_then(|q| String::from_utf8(q).ok())
        .ok_or(WatchError::Name)
}

/// `UID SEARCH` of all messages on `conn` (ESEARCH when offered: one
/// compact line). Every untagged line (the result too) also goes to
/// `other`. `Ok(None)`: refused.
pub async fn uid_search_all(
    conn: &mut LoggedIn,
    tag: &str,
    timeout: Duration,
    mut other: impl FnMut(&[u8]),
) -> Result<Option<UidList>, BackendError> {
    let cmd = if crate::imap::response::has_capability(&conn.capabilities, "ESEARCH") {
        "UID SEARCH RETURN (ALL) ALL"
    } else {
        "UID SEARCH ALL"
    };
    let mut uids = None;
    let answer = run(&mut conn.stream, &mut conn.buf, tag, cmd, timeout, |l| {
        if let Some(u) = search_uids(l) {
            uids = Some(u);
        }
        other(l);
    })
    .await?;
    Ok(answer.is_ok().then(|| uids.unwrap_or_default()))
}

async fn search_all(w: &Watcher, slot: &mut Option<Held>) -> Result<UidList, WatchError> {
    let tag = w.tag();
    let t = w.cfg.response_timeout;
    let conn = w.connection(slot).await?;
    match uid_search_all(conn, &tag, t, |_| {}).await {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(WatchError::Refused("UID SEARCH")),
        Err(e) => {
            *slot = None;
            Err(e.into())
        }
    }
}
