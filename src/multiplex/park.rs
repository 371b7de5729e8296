//! IDLE offload, the I/O around [`super::parked::ParkedSession`]: a
//! client that idled long enough is parked (its backend connection
//! released), watched through its user's shared watcher, caught up on
//! every change while parked, answered without the backend where it can
//! be (DONE, IDLE, NOOP, CHECK, LOGOUT, re-SELECT of the unchanged
//! mailbox), and re-attached to a backend
//! connection only for a command that needs one. The client sees exactly
//! the responses it would have seen had it stayed attached.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::parked::{ParkedFinish, ParkedSession};
use crate::backend::command::run;
use crate::backend::{self, LoggedIn, LoginOutcome};
use crate::config::Config;
use crate::identity::{ClientInfo, Credentials};
use crate::imap::command::quote;
use crate::imap::enabled::Enabled;
use crate::imap::select::SelectReply;
use crate::lifecycle::EndReason;
use crate::metrics::Metrics;
use crate::multiplex::pool::CredKey;
use crate::multiplex::view::{catch_up, number_after, strip_modseq, MailboxNow, ParkedView};
use crate::multiplex::watch::uid_search_all;
use crate::relay::{Counters, Parked, SelectedMailbox};
use crate::route::Backend;
use crate::stream::ClientStream;

/// How a parked session continued.
pub enum Outcome {
    /// The client ended its IDLE: relay on with this backend connection.
    Resumed {
        client: ClientStream,
        pipelined: BytesMut,
        backend: LoggedIn,
        /// The mailbox the client has selected, as the new backend
        /// connection sees it.
        selected: Box<SelectedMailbox>,
        /// What the client had enabled (enabled again on `backend`).
        enabled: Enabled,
        /// The backend it re-attached to (another one of its pool when
        /// the operator drained the old one).
        on: Arc<Backend>,
    },
    /// The session is over.
    Ended(EndReason),
}

/// What parking one session needs.
pub struct Parking<'a> {
    pub mux: &'a super::Multiplex,
    pub config: &'a Config,
    pub metrics: &'a Metrics,
    /// Flips to true when sessions must end (end of the drain time).
    pub close_now: tokio::sync::watch::Receiver<bool>,
    pub client_info: &'a ClientInfo,
    pub backend: Arc<Backend>,
    /// The credentials that log in to the backend (retained while parked).
    pub creds: Credentials,
    pub reuse: Option<(String, CredKey)>,
    pub user: String,
    pub counters: &'a Counters,
    /// Where the session may re-attach (the operator's drains and moves).
    pub router: &'a crate::route::Router,
    /// The operator's request to end the session, when one can come.
    pub stop: Option<&'a crate::lifecycle::StopSignal>,
}

/// Untagged lines the backend sent while imapmux asked its own questions:
/// the client, still in IDLE, must see them. MODSEQ is removed for a
/// client that did not enable CONDSTORE (imapmux's STATUS HIGHESTMODSEQ
/// enabled it on the connection); VANISHED and HIGHESTMODSEQ reach only a
/// QRESYNC client (the only one the backend sends them to anyway).
fn relayable(line: &[u8], enabled: Enabled) -> Option<Vec<u8>> {
    let text = line.get(2..)?;
    if text.starts_with(b"OK [HIGHESTMODSEQ ") {
        return enabled.qresync.then(|| line.to_vec());
    }
    let mut words = text.split(|b| *b == b' ');
    let first = words.next().unwrap_or_default().to_ascii_uppercase();
    if first == b"VANISHED" {
        return enabled.qresync.then(|| line.to_vec());
    }
    let word = words.next().unwrap_or_default().to_ascii_uppercase();
    match word.as_slice() {
        b"EXISTS" | b"EXPUNGE" | b"RECENT" => Some(line.to_vec()),
        b"FETCH" if enabled.modseq() => Some(line.to_vec()),
        b"FETCH" => Some(strip_modseq(line)).filter(|l| !l.is_empty()),
        _ => None,
    }
}

fn quoted(mailbox: &str) -> Option<String> {
    quote(mailbox.as_bytes()).and_then(|q| String::from_utf8(q).ok())
}

impl Parking<'_> {
    fn timeout(&self) -> Duration {
        self.config.timeouts.backend_response
    }

    async fn send(&self, client: &mut ClientStream, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let ok = client.write_all(bytes).await.is_ok() && client.flush().await.is_ok();
        self.counters
            .backend_to_client
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        ok
    }

    /// The client's view, asked on its own (IDLE-ended) connection: modseq
    /// (with CONDSTORE) first, then the UID list, relaying what arrives
    /// meanwhile. Without CONDSTORE the view is every message's UID and
    /// flags (compared on every wake).
    async fn view(
        &self,
        old: &mut LoggedIn,
        mailbox: &str,
        read_only: bool,
        enabled: Enabled,
        to_client: &mut Vec<u8>,
    ) -> Option<ParkedView> {
        let name = quoted(mailbox)?;
        let condstore = crate::imap::response::has_capability(&old.capabilities, "CONDSTORE");
        let items = if condstore {
            "HIGHESTMODSEQ UIDVALIDITY"
        } else {
            "UIDVALIDITY"
        };
        let t = self.timeout();
        let (mut modseq, mut uidvalidity) = (None, None);
        let ok = run(
            &mut old.stream,
            &mut old.buf,
            "imapmux.s1",
            &format!("STATUS {name} ({items})"),
            t,
            |l| {
                if l.starts_with(b"* STATUS") {
                    modseq = number_after(l, b"HIGHESTMODSEQ ");
                    uidvalidity = number_after(l, b"UIDVALIDITY ");
                } else if let Some(r) = relayable(l, enabled) {
                    to_client.extend_from_slice(&r);
                }
            },
        )
        .await
        .ok()?
        .is_ok();
        if !ok {
            return None;
        }
        let mut view = ParkedView {
            mailbox: mailbox.to_string(),
            read_only,
            uidvalidity: uidvalidity? as u32,
            modseq: if condstore { modseq? } else { 0 },
            uids: Default::default(),
            flags: None,
            enabled,
        };
        if !condstore {
            let mut pairs = Vec::new();
            let ok = run(
                &mut old.stream,
                &mut old.buf,
                "imapmux.s2",
                "UID FETCH 1:* (UID FLAGS)",
                t,
                |l| match crate::multiplex::view::fetch_uid_flags(l) {
                    Some(p) => pairs.push(p),
                    None => {
                        if let Some(r) = relayable(l, enabled) {
                            to_client.extend_from_slice(&r);
                        }
                    }
                },
            )
            .await
            .ok()?
            .is_ok();
            let flags = crate::multiplex::view::FlagSnapshot::from_pairs(&pairs);
            view.uids = flags.uids();
            view.flags = Some(flags);
            return ok.then_some(view);
        }
        // A change reported after the search result would make the list
        // stale: ask again (it settles at once in practice).
        for attempt in 0..3 {
            let mut seen_result = false;
            let mut late = false;
            let uids = uid_search_all(old, "imapmux.s2", t, |l| {
                if let Some(r) = relayable(l, enabled) {
                    late |= seen_result && !r.windows(5).any(|w| w == b"FETCH");
                    to_client.extend_from_slice(&r);
                }
                seen_result |= l.starts_with(b"* ESEARCH") || l.starts_with(b"* SEARCH");
            })
            .await
            .ok()??;
            if !late || attempt == 2 {
                view.uids = uids;
                return Some(view);
            }
        }
        None
    }

    /// A logged-in backend connection for this user: a pooled one, or a
    /// new login with the retained credentials.
    async fn attach(&self, target: &Arc<Backend>) -> Option<LoggedIn> {
        let t = &self.config.timeouts;
        if let Some(li) = self
            .mux
            .take_pooled(
                self.metrics,
                t.backend_response,
                &target.name,
                self.reuse.as_ref(),
            )
            .await
        {
            return Some(li);
        }
        let m = self.metrics;
        let name = &target.name;
        let t0 = Instant::now();
        let c = match backend::connect(target, t.backend_connect, t.backend_response).await {
            Ok(c) => c,
            Err(e) => {
                m.backend_error(name, "connect", e.kind());
                return None;
            }
        };
        m.backend_connected(name, t0.elapsed().as_secs_f64());
        let info = target.cfg.trusted.then_some(self.client_info);
        let t0 = Instant::now();
        match c.login(&self.creds, info).await {
            Ok(LoginOutcome::Ok(li)) => {
                m.backend_logged_in(name, t0.elapsed().as_secs_f64());
                Some(li)
            }
            Ok(LoginOutcome::Rejected { .. }) => None,
            Err(e) => {
                m.backend_error(name, "login", e.kind());
                None
            }
        }
    }

    /// Re-select the mailbox on `li` (answers kept from the client) and
    /// learn its UIDVALIDITY and UID list as that session sees it.
    async fn reselect(
        &self,
        li: &mut LoggedIn,
        view: &ParkedView,
    ) -> Option<(u32, crate::multiplex::view::UidList)> {
        let name = quoted(&view.mailbox)?;
        let t = self.timeout();
        // The new connection answers the client in the shape it enabled.
        if let Some(enable) = view.enabled.enable_command() {
            let ok = run(
                &mut li.stream,
                &mut li.buf,
                "imapmux.r0",
                &enable,
                t,
                |_| {},
            )
            .await
            .ok()?
            .is_ok();
            if !ok {
                return None;
            }
        }
        let verb = if view.read_only { "EXAMINE" } else { "SELECT" };
        let mut uidvalidity = None;
        let ok = run(
            &mut li.stream,
            &mut li.buf,
            "imapmux.r1",
            &format!("{verb} {name}"),
            t,
            |l| {
                if let Some(v) = number_after(l, b"[UIDVALIDITY ") {
                    uidvalidity = Some(v as u32);
                }
            },
        )
        .await
        .ok()?
        .is_ok();
        if !ok {
            return None;
        }
        let uids = uid_search_all(li, "imapmux.r2", t, |_| {}).await.ok()??;
        li.buf.is_empty().then_some((uidvalidity?, uids))
    }

    /// Park the client until it ends its IDLE (or the session ends).
    pub async fn park(
        self,
        (mut client, mut cbuf): (ClientStream, BytesMut),
        mut old: LoggedIn,
        Parked {
            mailbox,
            read_only,
            idle_tag,
            enabled,
            mut select_reply,
        }: Parked,
    ) -> Outcome {
        let m = &self.metrics.park;
        let Some(registry) = self.mux.watch.clone() else {
            return Outcome::Ended(EndReason::ProtocolError);
        };
        let mut to_client = Vec::new();
        let view =
            Box::pin(self.view(&mut old, &mailbox, read_only, enabled, &mut to_client)).await;
        // The old connection has CONDSTORE on now: never reused.
        tokio::spawn(super::pool::logout(old, self.timeout()));
        if !self.send(&mut client, &to_client).await {
            return Outcome::Ended(EndReason::ClientError);
        }
        if !to_client.is_empty() {
            // The mailbox changed since its SELECT.
            select_reply = None;
        }
        let Some(view) = view else {
            tracing::warn!(session = %self.client_info.session_id, "could not park: the backend did not describe the mailbox");
            let _ = self
                .send(&mut client, b"* BYE [UNAVAILABLE] Please reconnect.\r\n")
                .await;
            return Outcome::Ended(EndReason::BackendError);
        };
        let watcher = registry.join(&self.backend, &self.user, &self.creds);
        let changes = watcher.subscribe(&mailbox, view.modseq);
        // Memory per parked client: no relay buffer capacity kept around,
        // no compressor (COMPRESS=DEFLATE).
        if cbuf.is_empty() {
            cbuf = BytesMut::new();
        }
        client.shrink();
        m.parks.inc();
        let guard = m.parked_session();
        tracing::debug!(session = %self.client_info.session_id, mailbox = %mailbox, uids = view.uids.len(), "parked");
        let idle = self.config.timeouts.idle;
        // Boxed: the session's future keeps a pointer, not copies of it.
        let s = Box::new(ParkedSession::new(
            view,
            Some(idle_tag),
            cbuf,
            idle,
            Instant::now(),
            select_reply,
        ));
        let (mut client, mut s) = match self.run_parked(client, s, &watcher, changes).await {
            Ok(done) => done,
            Err(end) => return Outcome::Ended(end),
        };
        drop(guard);
        match s.finished().cloned() {
            Some(ParkedFinish::Reattach { idle_tag }) => {
                m.reattach();
                let pipelined = s.take_input();
                let view = s.view().clone();
                let reply = s.select_reply().cloned();
                let _turn = registry.resume_turn().await;
                Box::pin(self.resume(client, pipelined, (view, reply), idle_tag, &watcher)).await
            }
            Some(ParkedFinish::End(end)) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await;
                Outcome::Ended(end)
            }
            None => Outcome::Ended(EndReason::ClientError),
        }
    }

    /// Where to re-attach: the backend the session parked from, unless the
    /// operator drained it and its pool has failover on (then the user's
    /// best backend now), or moved the user elsewhere.
    fn target(&self) -> Arc<Backend> {
        let router = self.router;
        if let Some(b) = router.override_for(&self.user) {
            if !router.is_drained(&b.name) {
                return b;
            }
        }
        if router.is_drained(&self.backend.name) && router.failover_of(&self.backend.name) {
            if let Some(b) = router
                .candidates(&self.user)
                .ok()
                .and_then(|c| c.into_iter().next())
            {
                return b;
            }
        }
        self.backend.clone()
    }

    /// Drive a parked session until it finishes: client input, watcher
    /// changes and snapshots, time, shutdown. What it queued for the client
    /// is written before it returns.
    async fn run_parked(
        &self,
        mut client: ClientStream,
        mut s: Box<ParkedSession>,
        watcher: &super::watch::Watcher,
        mut changes: tokio::sync::watch::Receiver<u64>,
    ) -> Result<(ClientStream, Box<ParkedSession>), EndReason> {
        let mut close_now = self.close_now.clone();
        let mut stopping = false;
        // Made once: the wait stays registered across turns.
        let stop = crate::lifecycle::StopSignal::of(self.stop);
        tokio::pin!(stop);
        let mut buf = BytesMut::new();
        let mut watching = true;
        let mut idling = s.idling();
        loop {
            if idling && !s.idling() {
                // The client ended its IDLE (answered here).
                self.metrics.park.wake("done");
            }
            idling = s.idling();
            if let Some(out) = s.transmit() {
                let n = out.len();
                if !self.send(&mut client, out).await {
                    return Err(EndReason::ClientError);
                }
                s.sent(n);
                // A compressed stream drops its compressor between wakes.
                client.shrink();
            }
            if s.finished().is_some() {
                return Ok((client, s));
            }
            if s.wants_snapshot() {
                let mailbox = s.view().mailbox.clone();
                match Box::pin(watcher.snapshot(&mailbox, s.view().modseq)).await {
                    Ok(now) => s.on_snapshot(&now),
                    Err(e) => {
                        tracing::warn!(session = %self.client_info.session_id, error = %e, "resync of a parked session failed");
                        s.on_snapshot_failed();
                    }
                }
                continue;
            }
            let deadline = s.poll_timeout().unwrap_or_else(Instant::now);
            let read = s.wants_client_read();
            tokio::select! {
                r = client.read_buf(&mut buf), if read => match r {
                    Ok(0) | Err(_) => return Err(EndReason::ClientClosed),
                    Ok(n) => {
                        self.counters.client_to_backend.fetch_add(n as u64, Ordering::Relaxed);
                        s.client_read(&mut buf, Instant::now());
                        if buf.capacity() > 4096 {
                            buf = BytesMut::new();
                        }
                    }
                },
                changed = changes.changed(), if watching => {
                    if changed.is_err() {
                        // The watcher is gone: the next command re-attaches
                        // and synchronizes with the backend.
                        watching = false;
                    }
                    s.on_change();
                }
                _ = tokio::time::sleep_until(deadline.into()) => s.handle_timeout(Instant::now()),
                _ = close_now.changed() => s.shutdown(),
                st = &mut stop, if !stopping => {
                    stopping = true;
                    s.end_with(st.bye(), st.reason);
                }
            }
        }
    }

    /// The client sent a command that needs the backend: a backend
    /// connection, the mailbox re-selected, the client caught up (and its
    /// IDLE answered, when that is still owed), then the command relayed.
    async fn resume(
        &self,
        mut client: ClientStream,
        cbuf: BytesMut,
        (view, reply): (ParkedView, Option<Arc<SelectReply>>),
        idle_tag: Option<String>,
        watcher: &super::watch::Watcher,
    ) -> Outcome {
        let fail = |why: &'static str| {
            tracing::warn!(session = %self.client_info.session_id, stage = why, "could not resume a parked session");
        };
        let target = self.target();
        if !Arc::ptr_eq(&target, &self.backend) {
            tracing::info!(session = %self.client_info.session_id, from = %self.backend.name, to = %target.name, "parked session re-attaches to another backend");
        }
        let Some(mut li) = self.attach(&target).await else {
            fail("login");
            let _ = self
                .send(
                    &mut client,
                    b"* BYE [UNAVAILABLE] Mail server temporarily unavailable.\r\n",
                )
                .await;
            return Outcome::Ended(EndReason::BackendError);
        };
        let Some((uidvalidity, uids)) = self.reselect(&mut li, &view).await else {
            fail("select");
            let _ = self
                .send(&mut client, b"* BYE [UNAVAILABLE] Please reconnect.\r\n")
                .await;
            return Outcome::Ended(EndReason::BackendError);
        };
        // Flags changed while parked come from the watcher (CONDSTORE).
        let (changed, modseq) = match watcher.snapshot(&view.mailbox, view.modseq).await {
            Ok(now) => (now.changed, now.modseq),
            Err(e) => {
                tracing::warn!(session = %self.client_info.session_id, error = %e, "flag changes while parked are not known");
                (Vec::new(), view.modseq)
            }
        };
        let now = MailboxNow {
            uidvalidity,
            modseq,
            uids,
            changed,
        };
        let Some(caught) = catch_up(&view, &now) else {
            let _ = self
                .send(
                    &mut client,
                    b"* BYE [UNAVAILABLE] Mailbox was recreated; please reconnect.\r\n",
                )
                .await;
            return Outcome::Ended(EndReason::UidvalidityChanged);
        };
        // The SELECT answer stays valid while the mailbox is as it was.
        let unchanged = caught.bytes.is_empty()
            && caught.highest.is_none()
            && caught.next.uids == view.uids
            && caught.next.modseq == view.modseq;
        let select_reply = reply.filter(|_| unchanged);
        let (mut bytes, next) = (caught.bytes, caught.next);
        if let Some(m) = caught.highest {
            bytes.extend_from_slice(format!("* OK [HIGHESTMODSEQ {m}] Highest\r\n").as_bytes());
        }
        if let Some(tag) = idle_tag {
            bytes.extend_from_slice(format!("{tag} OK Idle completed.\r\n").as_bytes());
        }
        if !self.send(&mut client, &bytes).await {
            return Outcome::Ended(EndReason::ClientError);
        }
        // The command that needed the backend, and what followed, go to
        // the new connection; the relay knows the mailbox is selected (so
        // the session parks again when it idles again).
        Outcome::Resumed {
            client,
            pipelined: cbuf,
            backend: li,
            selected: Box::new(SelectedMailbox {
                name: next.mailbox,
                read_only: next.read_only,
                uidvalidity: next.uidvalidity,
                uids: next.uids.iter().collect(),
                select_reply,
            }),
            enabled: next.enabled,
            on: target,
        }
    }
}
