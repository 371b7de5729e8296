//! One IMAP client connection: connect (TCP, TLS or STARTTLS), greeting,
//! commands with unique tags, streaming response reading with literals,
//! APPEND with synchronizing or non-synchronizing literals, IDLE.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use imapmux::imap::framing::{Frame, Framer};
use imapmux::imap::response::{has_capability, parse_capability_data, Kind, Status, StatusLine};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::resp::{is_tagged, Response, Seg};
use crate::stats::{BenchError, ErrKind, Live, Rec, Res};
use crate::stream::Stream;
use crate::util::{imap_quote, Account};

/// How to reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plain,
    Tls,
    StartTls,
}

/// How to send APPEND literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LiteralMode {
    /// `{n+}` when the server announces LITERAL+ (or LITERAL-), else `{n}`.
    Auto,
    /// Always `{n}` and wait for the continuation.
    Sync,
    /// Always `{n+}`.
    Plus,
}

/// Settings shared by all connections.
pub struct ConnCfg {
    pub target: String,
    pub security: Security,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub server_name: Option<ServerName<'static>>,
    pub timeout: Duration,
    pub max_literal: u64,
    pub max_line: usize,
    pub literal: LiteralMode,
    /// COMPRESS=DEFLATE after LOGIN.
    pub compress: bool,
    pub live: Arc<Live>,
}

/// Run `fut` with the command timeout.
pub async fn timed<T>(limit: Duration, what: &str, fut: impl Future<Output = Res<T>>) -> Res<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(BenchError::new(
            ErrKind::Timeout,
            format!("{what}: no answer within {limit:?}"),
        )),
    }
}

fn io_err(kind: ErrKind, what: &str, e: io::Error) -> BenchError {
    use io::ErrorKind as K;
    let kind = match e.kind() {
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
            if kind == ErrKind::Io =>
        {
            ErrKind::Closed
        }
        _ => kind,
    };
    BenchError::new(kind, format!("{what}: {e}"))
}

/// An open IMAP connection.
pub struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    framer: Framer,
    next_tag: u64,
    cfg: Arc<ConnCfg>,
    pub caps: Vec<String>,
    /// Text of an untagged BYE, if one was received.
    bye: Option<String>,
}

/// Decrements the open-connection gauge when the connection is dropped.
impl Drop for Conn {
    fn drop(&mut self) {
        self.cfg
            .live
            .conns_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Conn {
    /// Connect, do TLS or STARTTLS as configured and read the greeting.
    /// Records `CONNECT`, `TLS` and `GREETING` latencies.
    pub async fn open(cfg: &Arc<ConnCfg>, rec: &Rec) -> Res<Conn> {
        let t0 = Instant::now();
        let tcp = timed(cfg.timeout, "connect", async {
            TcpStream::connect(&cfg.target)
                .await
                .map_err(|e| io_err(ErrKind::Connect, "connect", e))
        })
        .await
        .map_err(|mut e| {
            if e.kind == ErrKind::Timeout {
                e.kind = ErrKind::Connect;
            }
            e
        })?;
        let _ = tcp.set_nodelay(true);
        rec.lat("CONNECT", t0.elapsed());
        cfg.live
            .conns_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut conn = Conn {
            stream: Stream::Plain(tcp),
            rbuf: BytesMut::with_capacity(16 * 1024),
            framer: Framer::new(cfg.max_line),
            next_tag: 1,
            cfg: cfg.clone(),
            caps: Vec::new(),
            bye: None,
        };
        if cfg.security == Security::Tls {
            conn.handshake(rec).await?;
        }
        let t1 = Instant::now();
        let greeting = timed(cfg.timeout, "greeting", conn.read_response()).await?;
        match greeting.status() {
            Some(st) if st.kind == Kind::Untagged && st.status == Status::Ok => {
                if let Some(c) = st.capabilities() {
                    conn.caps = c;
                }
            }
            _ => {
                return Err(BenchError::new(
                    ErrKind::Greeting,
                    format!("unexpected greeting: {}", greeting.summary()),
                ))
            }
        }
        rec.lat("GREETING", t1.elapsed());
        if cfg.security == Security::StartTls {
            let t2 = Instant::now();
            let st = conn.command("STARTTLS", |_| Ok(())).await?;
            if st.status != Status::Ok {
                return Err(BenchError::new(
                    ErrKind::Tls,
                    format!("STARTTLS refused: {}", st.text),
                ));
            }
            if !conn.rbuf.is_empty() {
                return Err(BenchError::new(
                    ErrKind::Tls,
                    "data after STARTTLS OK (possible injection)",
                ));
            }
            rec.lat("STARTTLS", t2.elapsed());
            conn.handshake(rec).await?;
            conn.caps.clear();
        }
        Ok(conn)
    }

    async fn handshake(&mut self, rec: &Rec) -> Res<()> {
        let t = Instant::now();
        let (Some(tls), Some(name)) = (self.cfg.tls.clone(), self.cfg.server_name.clone()) else {
            return Err(BenchError::new(ErrKind::Tls, "TLS not configured"));
        };
        let tcp = match std::mem::replace(&mut self.stream, Stream::Gone) {
            Stream::Plain(s) => s,
            _ => return Err(BenchError::new(ErrKind::Tls, "not a plain TCP stream")),
        };
        let connector = TlsConnector::from(tls);
        let s = timed(self.cfg.timeout, "TLS handshake", async {
            connector
                .connect(name, tcp)
                .await
                .map_err(|e| io_err(ErrKind::Tls, "TLS handshake", e))
        })
        .await
        .map_err(|mut e| {
            e.kind = ErrKind::Tls;
            e
        })?;
        self.stream = Stream::Tls(Box::new(s));
        rec.lat("TLS", t.elapsed());
        Ok(())
    }

    fn tag(&mut self) -> String {
        let t = format!("A{}", self.next_tag);
        self.next_tag += 1;
        t
    }

    async fn write(&mut self, parts: &[&[u8]]) -> Res<()> {
        for p in parts {
            self.stream
                .write_all(p)
                .await
                .map_err(|e| io_err(ErrKind::Io, "write", e))?;
            self.cfg.live.add_written(p.len());
        }
        self.stream
            .flush()
            .await
            .map_err(|e| io_err(ErrKind::Io, "flush", e))
    }

    /// Read one complete server message.
    pub async fn read_response(&mut self) -> Res<Response> {
        let mut segs = Vec::new();
        let mut long_line = BytesMut::new();
        let mut lit: Option<BytesMut> = None;
        // Bounds for one message: its line parts together, its literals
        // together.
        let max_lines = self.cfg.max_line * 16;
        let mut line_bytes = 0usize;
        let mut lit_bytes = 0u64;
        loop {
            while let Some(frame) = self.framer.next_frame(&mut self.rbuf) {
                match frame {
                    Frame::LineChunk { bytes, .. } => {
                        line_bytes += bytes.len();
                        if line_bytes > max_lines {
                            return Err(BenchError::new(
                                ErrKind::BadResponse,
                                "response line too long",
                            ));
                        }
                        long_line.extend_from_slice(&bytes);
                    }
                    Frame::Line { bytes, literal, .. } => {
                        line_bytes += bytes.len();
                        if line_bytes > max_lines {
                            return Err(BenchError::new(
                                ErrKind::BadResponse,
                                "response lines too long",
                            ));
                        }
                        let line = if long_line.is_empty() {
                            bytes
                        } else {
                            long_line.extend_from_slice(&bytes);
                            long_line.split().freeze()
                        };
                        if segs.is_empty() && line.starts_with(b"* BYE") {
                            self.bye = Some(String::from_utf8_lossy(&line).trim_end().into());
                        }
                        segs.push(Seg::Line(line));
                        match literal {
                            None => return Ok(Response { segs }),
                            Some(spec) if lit_bytes + spec.len > self.cfg.max_literal => {
                                return Err(BenchError::new(
                                    ErrKind::BadResponse,
                                    format!(
                                        "literals of {} bytes exceed --max-literal",
                                        lit_bytes + spec.len
                                    ),
                                ))
                            }
                            Some(spec) if spec.len == 0 => segs.push(Seg::Lit(Bytes::new())),
                            Some(spec) => {
                                lit_bytes += spec.len;
                                lit = Some(BytesMut::with_capacity(spec.len as usize));
                            }
                        }
                    }
                    Frame::Literal { bytes, remaining } => {
                        let buf = lit.get_or_insert_with(BytesMut::new);
                        buf.extend_from_slice(&bytes);
                        if remaining == 0 {
                            let data = lit.take().unwrap_or_default().freeze();
                            segs.push(Seg::Lit(data));
                        }
                    }
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < 8192 {
                self.rbuf.reserve(64 * 1024);
            }
            let n = self
                .stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| io_err(ErrKind::Io, "read", e))?;
            if n == 0 {
                let msg = match &self.bye {
                    Some(b) => format!("connection closed by server ({b})"),
                    None => "connection closed by server".to_string(),
                };
                return Err(BenchError::new(ErrKind::Closed, msg));
            }
            self.cfg.live.add_read(n);
        }
    }

    /// Read responses until the tagged one for `tag`, passing untagged
    /// ones to `on_untagged`.
    async fn until_tagged(
        &mut self,
        tag: &str,
        on_untagged: &mut (dyn FnMut(&Response) -> Res<()> + Send),
    ) -> Res<StatusLine> {
        loop {
            let r = self.read_response().await?;
            match r.kind() {
                Some(Kind::Untagged) => on_untagged(&r)?,
                Some(Kind::Tagged(_)) => match r.status() {
                    Some(st) if is_tagged(&st, tag) => return Ok(st),
                    _ => {
                        return Err(BenchError::new(
                            ErrKind::BadResponse,
                            format!("unexpected tagged response: {}", r.summary()),
                        ))
                    }
                },
                _ => {
                    return Err(BenchError::new(
                        ErrKind::BadResponse,
                        format!("unexpected response: {}", r.summary()),
                    ))
                }
            }
        }
    }

    /// Send `command` (without tag and CRLF) and read until its tagged
    /// response, with the command timeout. Returns the status line
    /// whatever its status.
    pub async fn command(
        &mut self,
        command: &str,
        mut on_untagged: impl FnMut(&Response) -> Res<()> + Send,
    ) -> Res<StatusLine> {
        let tag = self.tag();
        let limit = self.cfg.timeout;
        let what = command.split(' ').next().unwrap_or("command").to_string();
        timed(limit, &what, async {
            let line = format!("{tag} {command}\r\n");
            self.write(&[line.as_bytes()]).await?;
            self.until_tagged(&tag, &mut on_untagged).await
        })
        .await
    }

    /// Like [`Conn::command`] but an error unless the answer is OK; the
    /// latency is recorded under `name`.
    pub async fn ok(
        &mut self,
        rec: &Rec,
        name: &str,
        command: &str,
        on_untagged: impl FnMut(&Response) -> Res<()> + Send,
    ) -> Res<StatusLine> {
        let t = Instant::now();
        let st = self.command(command, on_untagged).await?;
        check_ok(name, &st)?;
        rec.lat(name, t.elapsed());
        Ok(st)
    }

    /// LOGIN; remembers the capabilities from the tagged OK if present.
    pub async fn login(&mut self, rec: &Rec, acct: &Account) -> Res<()> {
        let (Some(u), Some(p)) = (imap_quote(&acct.user), imap_quote(&acct.password)) else {
            return Err(BenchError::new(
                ErrKind::Bad,
                "user or password not quotable",
            ));
        };
        let t = Instant::now();
        let mut caps = None;
        let st = self
            .command(&format!("LOGIN {u} {p}"), |r| {
                if let Some(c) = parse_capability_data(r.first_line()) {
                    caps = Some(c);
                }
                Ok(())
            })
            .await?;
        match st.status {
            Status::Ok => {}
            Status::No => {
                return Err(BenchError::new(
                    ErrKind::LoginNo,
                    format!("LOGIN {}: {}", acct.user, st.text),
                ))
            }
            _ => check_ok("LOGIN", &st)?,
        }
        rec.lat("LOGIN", t.elapsed());
        self.caps = st.capabilities().or(caps).unwrap_or_default();
        if self.cfg.compress {
            self.compress(rec).await?;
        }
        Ok(())
    }

    /// COMPRESS DEFLATE: from its OK on, the stream is compressed.
    async fn compress(&mut self, rec: &Rec) -> Res<()> {
        if !self
            .caps
            .iter()
            .any(|c| c.eq_ignore_ascii_case("COMPRESS=DEFLATE"))
        {
            return Err(BenchError::new(
                ErrKind::Bad,
                "--compress: the server does not offer COMPRESS=DEFLATE",
            ));
        }
        self.ok(rec, "COMPRESS", "COMPRESS DEFLATE", |_| Ok(()))
            .await?;
        let inner = std::mem::replace(&mut self.stream, Stream::Gone);
        // Whatever was read past the OK is compressed already.
        let pending = self.rbuf.split();
        let counted = crate::stream::Counted {
            inner,
            live: self.cfg.live.clone(),
        };
        self.stream = Stream::Deflate(Box::new(imapmux::compress::Deflated::new(
            counted, pending, 6,
        )));
        Ok(())
    }

    /// SELECT (or EXAMINE); returns EXISTS.
    pub async fn select(&mut self, rec: &Rec, mailbox: &str, examine: bool) -> Res<u32> {
        let mbox = imap_quote(mailbox)
            .ok_or_else(|| BenchError::new(ErrKind::Bad, "mailbox name not quotable"))?;
        let verb = if examine { "EXAMINE" } else { "SELECT" };
        let mut exists = None;
        self.ok(rec, "SELECT", &format!("{verb} {mbox}"), |r| {
            if let Some(n) = r.exists() {
                exists = Some(n);
            }
            Ok(())
        })
        .await?;
        exists.ok_or_else(|| BenchError::new(ErrKind::BadResponse, "SELECT without EXISTS"))
    }

    /// LOGOUT, then close the connection politely.
    pub async fn logout(self, rec: &Rec) -> Res<()> {
        self.logout_as(rec, "LOGOUT").await
    }

    /// LOGOUT with its latency recorded under `name`.
    pub async fn logout_as(mut self, rec: &Rec, name: &str) -> Res<()> {
        self.ok(rec, name, "LOGOUT", |_| Ok(())).await?;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
        Ok(())
    }

    async fn ensure_caps(&mut self) -> Res<()> {
        if self.caps.is_empty() {
            let mut caps = Vec::new();
            let st = self
                .command("CAPABILITY", |r| {
                    if let Some(c) = parse_capability_data(r.first_line()) {
                        caps = c;
                    }
                    Ok(())
                })
                .await?;
            check_ok("CAPABILITY", &st)?;
            self.caps = caps;
        }
        Ok(())
    }

    pub fn has_cap(&self, name: &str) -> bool {
        has_capability(&self.caps, name)
    }

    /// APPEND `msg` to `mailbox`; returns the tagged status (OK or not).
    pub async fn append(&mut self, mailbox: &str, flags: &str, msg: &[u8]) -> Res<StatusLine> {
        let mbox = imap_quote(mailbox)
            .ok_or_else(|| BenchError::new(ErrKind::Bad, "mailbox name not quotable"))?;
        let plus = match self.cfg.literal {
            LiteralMode::Sync => false,
            LiteralMode::Plus => true,
            LiteralMode::Auto => {
                self.ensure_caps().await?;
                self.has_cap("LITERAL+") || (self.has_cap("LITERAL-") && msg.len() <= 4096)
            }
        };
        let tag = self.tag();
        let limit = self.cfg.timeout;
        let line = format!(
            "{tag} APPEND {mbox} ({flags}) {{{}{}}}\r\n",
            msg.len(),
            if plus { "+" } else { "" }
        );
        timed(limit, "APPEND", async {
            if plus {
                self.write(&[line.as_bytes(), msg, b"\r\n"]).await?;
            } else {
                self.write(&[line.as_bytes()]).await?;
                loop {
                    let r = self.read_response().await?;
                    match r.kind() {
                        Some(Kind::Continuation) => break,
                        Some(Kind::Untagged) => continue,
                        _ => match r.status() {
                            // The server refused the literal.
                            Some(st) if is_tagged(&st, &tag) => return Ok(st),
                            _ => {
                                return Err(BenchError::new(
                                    ErrKind::BadResponse,
                                    format!("APPEND: unexpected {}", r.summary()),
                                ))
                            }
                        },
                    }
                }
                self.write(&[msg, b"\r\n"]).await?;
            }
            self.until_tagged(&tag, &mut |_| Ok(())).await
        })
        .await
    }

    /// Start IDLE and wait for the continuation.
    pub async fn idle_start(&mut self) -> Res<String> {
        self.idle_start_with(|_| ()).await
    }

    /// Start IDLE and wait for the continuation, passing untagged
    /// responses received before it to `on_untagged`.
    pub async fn idle_start_with(
        &mut self,
        mut on_untagged: impl FnMut(&Response) + Send,
    ) -> Res<String> {
        let tag = self.tag();
        let limit = self.cfg.timeout;
        timed(limit, "IDLE", async {
            self.write(&[format!("{tag} IDLE\r\n").as_bytes()]).await?;
            loop {
                let r = self.read_response().await?;
                match r.kind() {
                    Some(Kind::Continuation) => return Ok(tag.clone()),
                    Some(Kind::Untagged) => on_untagged(&r),
                    _ => {
                        return Err(BenchError::new(
                            ErrKind::BadResponse,
                            format!("IDLE refused: {}", r.summary()),
                        ))
                    }
                }
            }
        })
        .await
    }

    /// While idling: read untagged responses until `until` (calling
    /// `on_exists` for each `EXISTS`). Errors if the server closes the
    /// connection or sends a tagged reply.
    pub async fn idle_hold(
        &mut self,
        until: tokio::sync::watch::Receiver<bool>,
        mut on_exists: impl FnMut(),
    ) -> Res<()> {
        let mut until = until;
        loop {
            if *until.borrow() {
                return Ok(());
            }
            tokio::select! {
                r = self.read_response() => {
                    let r = r?;
                    if !matches!(r.kind(), Some(Kind::Untagged)) {
                        return Err(BenchError::new(
                            ErrKind::BadResponse,
                            format!("during IDLE: {}", r.summary()),
                        ));
                    }
                    if r.summary().contains(" EXISTS") {
                        on_exists();
                    }
                }
                changed = until.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// End IDLE (`DONE`) and wait for the tagged OK.
    pub async fn idle_done(&mut self, rec: &Rec, tag: &str) -> Res<()> {
        self.idle_done_with(rec, "DONE", tag, |_| ()).await
    }

    /// End IDLE (`DONE`) and wait for the tagged OK, passing untagged
    /// responses to `on_untagged`; the latency is recorded under `name`.
    pub async fn idle_done_with(
        &mut self,
        rec: &Rec,
        name: &str,
        tag: &str,
        mut on_untagged: impl FnMut(&Response) + Send,
    ) -> Res<()> {
        let t = Instant::now();
        let limit = self.cfg.timeout;
        let st = timed(limit, "DONE", async {
            self.write(&[b"DONE\r\n"]).await?;
            self.until_tagged(tag, &mut |r| {
                on_untagged(r);
                Ok(())
            })
            .await
        })
        .await?;
        check_ok("IDLE", &st)?;
        rec.lat(name, t.elapsed());
        Ok(())
    }
}

/// Error unless `st` is OK: NO → `no`, BAD → `bad`.
pub fn check_ok(name: &str, st: &StatusLine) -> Res<()> {
    match st.status {
        Status::Ok => Ok(()),
        Status::No => Err(BenchError::new(
            ErrKind::No,
            format!("{name}: NO {}", st.text),
        )),
        Status::Bad => Err(BenchError::new(
            ErrKind::Bad,
            format!("{name}: BAD {}", st.text),
        )),
        _ => Err(BenchError::new(
            ErrKind::BadResponse,
            format!("{name}: unexpected status {:?}", st.status),
        )),
    }
}
