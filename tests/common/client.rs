//! A small tokio IMAP client for tests: plaintext, implicit TLS, STARTTLS;
//! tagged commands with literal-aware response reading (byte-exact bodies);
//! APPEND with `{n}` and `{n+}`; IDLE; raw byte helpers for edge cases.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

pub use super::client_tls::TlsClient;
use super::client_types::append_head;
pub use super::client_types::{astring, literal_len, quoted, Line, LineRead, Response};

/// Default time a read may take before the client gives up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Closed,
}

impl Conn {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Closed => Ok(0),
        }
    }
    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Conn::Closed => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Tls(s) => s.shutdown().await,
            Conn::Closed => Ok(()),
        }
    }
}

/// An IMAP connection. Every read is bounded by a timeout
/// ([`DEFAULT_TIMEOUT`] unless changed with [`set_timeout`](Self::set_timeout)).
pub struct ImapClient {
    conn: Conn,
    buf: Vec<u8>,
    tag_n: u32,
    greeting: String,
    timeout: Duration,
}

impl ImapClient {
    // ----- connecting -----

    /// TCP connect without reading anything (for raw protocol tests).
    pub async fn connect_raw(addr: &str) -> Result<ImapClient> {
        let tcp = tokio::time::timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connect {addr} timed out"))?
            .with_context(|| format!("connect {addr}"))?;
        Ok(Self::from_tcp_raw(tcp))
    }

    /// Wrap an already connected socket; reads nothing.
    pub fn from_tcp_raw(tcp: TcpStream) -> ImapClient {
        let _ = tcp.set_nodelay(true);
        ImapClient {
            conn: Conn::Plain(tcp),
            buf: Vec::new(),
            tag_n: 0,
            greeting: String::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Wrap a connected socket (e.g. from [`tcp_connect_from`]) and read the
    /// greeting.
    pub async fn from_tcp(tcp: TcpStream) -> Result<ImapClient> {
        let mut c = Self::from_tcp_raw(tcp);
        c.read_greeting().await?;
        Ok(c)
    }

    /// TLS handshake on a connected socket, then read the greeting.
    pub async fn from_tcp_tls(tcp: TcpStream, tls: &TlsClient) -> Result<ImapClient> {
        let mut c = Self::from_tcp_raw(tcp);
        let Conn::Plain(tcp) = std::mem::replace(&mut c.conn, Conn::Closed) else {
            unreachable!()
        };
        c.conn = Conn::Tls(Box::new(tls.handshake(tcp).await?));
        c.read_greeting().await?;
        Ok(c)
    }

    /// Plaintext connection; reads the greeting (which must be untagged).
    pub async fn connect_plain(addr: &str) -> Result<ImapClient> {
        let mut c = Self::connect_raw(addr).await?;
        c.read_greeting().await?;
        Ok(c)
    }

    /// Implicit TLS; reads the greeting.
    pub async fn connect_tls(addr: &str, tls: &TlsClient) -> Result<ImapClient> {
        let c = Self::connect_raw(addr).await?;
        let Conn::Plain(tcp) = c.conn else {
            unreachable!()
        };
        Self::from_tcp_tls(tcp, tls).await
    }

    /// Plaintext connection upgraded with STARTTLS (must succeed).
    pub async fn connect_starttls(addr: &str, tls: &TlsClient) -> Result<ImapClient> {
        let mut c = Self::connect_plain(addr).await?;
        c.starttls(tls).await?.ok()?;
        Ok(c)
    }

    /// Read the greeting line (for clients made with [`connect_raw`](Self::connect_raw)).
    pub async fn read_greeting(&mut self) -> Result<String> {
        let line = self
            .read_response_line()
            .await?
            .ok_or_else(|| anyhow!("connection closed before greeting"))?;
        let text = line.head();
        if !text.starts_with("* ") {
            bail!("bad greeting {text:?}");
        }
        self.greeting = text.clone();
        Ok(text)
    }

    /// The greeting line (without CRLF).
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.conn, Conn::Tls(_))
    }

    /// Server certificate chain (TLS only).
    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        match &self.conn {
            Conn::Tls(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect()),
            _ => None,
        }
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// Bytes received but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    // ----- commands -----

    /// Allocate the next tag (`a1`, `a2`, …).
    pub fn next_tag(&mut self) -> String {
        self.tag_n += 1;
        format!("a{}", self.tag_n)
    }

    /// Send `<tag> <cmd>\r\n` without reading; returns the tag.
    pub async fn send_cmd(&mut self, cmd: &str) -> Result<String> {
        let tag = self.next_tag();
        self.write_raw(format!("{tag} {cmd}\r\n").as_bytes())
            .await?;
        Ok(tag)
    }

    /// Send a command and read up to its tagged response. A `+` continuation
    /// request in between is an error (use the dedicated helpers).
    pub async fn cmd(&mut self, cmd: &str) -> Result<Response> {
        let tag = self.send_cmd(cmd).await?;
        self.read_tagged(&tag)
            .await
            .with_context(|| format!("command {cmd:?}"))
    }

    /// [`cmd`](Self::cmd) that also requires a tagged OK.
    pub async fn cmd_ok(&mut self, cmd: &str) -> Result<Response> {
        self.cmd(cmd).await?.ok()
    }

    /// Read responses until the tagged one for `tag`.
    pub async fn read_tagged(&mut self, tag: &str) -> Result<Response> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_response_line().await?.ok_or_else(|| {
                anyhow!(
                    "connection closed while waiting for {tag}; got:\n{}",
                    Line::join(&lines)
                )
            })?;
            if line.tag() == Some(tag) {
                return Ok(Response::new(tag, lines, line));
            }
            if line.is_continuation() {
                bail!(
                    "unexpected continuation {:?} while waiting for {tag}",
                    line.head()
                );
            }
            lines.push(line);
        }
    }

    /// `STARTTLS` and, on OK, the TLS handshake. Returns the STARTTLS response
    /// (a NO/BAD is returned, not an error, and the connection stays plain).
    pub async fn starttls(&mut self, tls: &TlsClient) -> Result<Response> {
        let resp = self.cmd("STARTTLS").await?;
        if !resp.is_ok() {
            return Ok(resp);
        }
        if !self.buf.is_empty() {
            bail!(
                "plaintext data after STARTTLS OK (injection?): {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
        let Conn::Plain(tcp) = std::mem::replace(&mut self.conn, Conn::Closed) else {
            bail!("STARTTLS on a connection that is not plaintext");
        };
        self.conn = Conn::Tls(Box::new(tls.handshake(tcp).await?));
        Ok(resp)
    }

    /// `LOGIN`: quoted strings when printable ASCII, otherwise synchronizing
    /// literals. Returns the response (check `.is_ok()`).
    pub async fn login(&mut self, user: &str, password: &str) -> Result<Response> {
        let tag = self.next_tag();
        let mut pending = format!("{tag} LOGIN");
        for arg in [user, password] {
            if let Some(q) = quoted(arg) {
                pending.push(' ');
                pending.push_str(&q);
            } else {
                pending.push_str(&format!(" {{{}}}\r\n", arg.len()));
                self.write_raw(pending.as_bytes()).await?;
                if let Some(resp) = self.wait_continuation(&tag).await? {
                    return Ok(resp);
                }
                pending = String::from_utf8(arg.as_bytes().to_vec()).unwrap();
            }
        }
        pending.push_str("\r\n");
        self.write_raw(pending.as_bytes()).await?;
        self.read_tagged(&tag).await
    }

    /// `AUTHENTICATE PLAIN`, with the initial response on the command line
    /// (SASL-IR) or after the `+` continuation.
    pub async fn authenticate_plain(
        &mut self,
        user: &str,
        password: &str,
        sasl_ir: bool,
    ) -> Result<Response> {
        use base64::Engine;
        let ir = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{user}\0{password}").as_bytes());
        let tag = self.next_tag();
        if sasl_ir {
            self.write_raw(format!("{tag} AUTHENTICATE PLAIN {ir}\r\n").as_bytes())
                .await?;
        } else {
            self.write_raw(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes())
                .await?;
            if let Some(resp) = self.wait_continuation(&tag).await? {
                return Ok(resp);
            }
            self.write_raw(format!("{ir}\r\n").as_bytes()).await?;
        }
        self.read_tagged(&tag).await
    }

    /// `AUTHENTICATE <mechanism>` with any mechanism: `messages` (raw; base64
    /// is done here) are sent one per `+` challenge, the first one on the
    /// command line instead when `sasl_ir`. Returns the tagged response
    /// (early when the server answers before all were sent) and the `+`
    /// challenge lines seen (trimmed).
    pub async fn authenticate(
        &mut self,
        mechanism: &str,
        messages: &[&[u8]],
        sasl_ir: bool,
    ) -> Result<(Response, Vec<String>)> {
        use base64::Engine;
        let b64 = |m: &[u8]| {
            let s = base64::engine::general_purpose::STANDARD.encode(m);
            if s.is_empty() {
                "=".to_string()
            } else {
                s
            }
        };
        let tag = self.next_tag();
        let mut messages = messages.iter();
        let mut cmd = format!("{tag} AUTHENTICATE {mechanism}");
        if sasl_ir {
            if let Some(m) = messages.next() {
                cmd.push(' ');
                cmd.push_str(&b64(m));
            }
        }
        cmd.push_str("\r\n");
        self.write_raw(cmd.as_bytes()).await?;
        let mut challenges = Vec::new();
        let mut lines = Vec::new();
        loop {
            let line = self
                .read_response_line()
                .await?
                .ok_or_else(|| anyhow!("connection closed during AUTHENTICATE {mechanism}"))?;
            if line.tag() == Some(tag.as_str()) {
                return Ok((Response::new(&tag, lines, line), challenges));
            }
            if line.is_continuation() {
                challenges.push(line.text().trim_end().to_string());
                let next = messages.next().map(|m| b64(m)).unwrap_or_default();
                self.write_raw(format!("{next}\r\n").as_bytes()).await?;
                continue;
            }
            lines.push(line);
        }
    }

    /// `LOGOUT`; tolerates the server closing right after the tagged OK.
    pub async fn logout(&mut self) -> Result<Response> {
        self.cmd("LOGOUT").await
    }

    pub async fn capability(&mut self) -> Result<Vec<String>> {
        Ok(self.cmd_ok("CAPABILITY").await?.capabilities())
    }

    /// `SELECT <mailbox>` (must succeed).
    pub async fn select(&mut self, mailbox: &str) -> Result<Response> {
        self.cmd_ok(&format!("SELECT {}", astring(mailbox))).await
    }

    /// `UID FETCH <uid> BODY.PEEK[]` → the message bytes, exactly.
    pub async fn fetch_body(&mut self, uid: u32) -> Result<Vec<u8>> {
        let resp = self.cmd_ok(&format!("UID FETCH {uid} BODY.PEEK[]")).await?;
        let body = resp
            .untagged()
            .find(|l| l.head().contains("FETCH") && !l.literals.is_empty())
            .map(|l| l.literals[0].clone());
        body.ok_or_else(|| anyhow!("no body literal for UID {uid}:\n{resp}"))
    }

    /// APPEND with a synchronizing literal `{n}`: waits for `+` before sending
    /// the message. A NO/BAD instead of `+` is returned as the response.
    /// `flags`: `"\\Seen"` or `"(\\Seen)"`, both work.
    pub async fn append(
        &mut self,
        mailbox: &str,
        flags: Option<&str>,
        msg: &[u8],
    ) -> Result<Response> {
        let tag = self.next_tag();
        let head = append_head(&tag, mailbox, flags, msg.len(), false);
        self.write_raw(head.as_bytes()).await?;
        if let Some(resp) = self.wait_continuation(&tag).await? {
            return Ok(resp);
        }
        let mut data = msg.to_vec();
        data.extend_from_slice(b"\r\n");
        self.write_raw(&data).await?;
        self.read_tagged(&tag).await
    }

    /// APPEND with a non-synchronizing literal `{n+}` (LITERAL+), all at once.
    pub async fn append_literal_plus(
        &mut self,
        mailbox: &str,
        flags: Option<&str>,
        msg: &[u8],
    ) -> Result<Response> {
        let tag = self.next_tag();
        let mut data = append_head(&tag, mailbox, flags, msg.len(), true).into_bytes();
        data.extend_from_slice(msg);
        data.extend_from_slice(b"\r\n");
        self.write_raw(&data).await?;
        self.read_tagged(&tag).await
    }

    /// Wait for a `+` continuation for `tag`. Returns Some(response) if the
    /// server answered with the tagged response instead.
    async fn wait_continuation(&mut self, tag: &str) -> Result<Option<Response>> {
        let mut lines = Vec::new();
        loop {
            let line = self
                .read_response_line()
                .await?
                .ok_or_else(|| anyhow!("connection closed while waiting for '+'"))?;
            if line.is_continuation() {
                return Ok(None);
            }
            if line.tag() == Some(tag) {
                return Ok(Some(Response::new(tag, lines, line)));
            }
            lines.push(line);
        }
    }

    // ----- IDLE -----

    /// Send `IDLE` and wait for the `+` continuation; returns the tag.
    pub async fn idle_start(&mut self) -> Result<String> {
        let tag = self.send_cmd("IDLE").await?;
        if let Some(resp) = self.wait_continuation(&tag).await? {
            bail!("IDLE refused:\n{resp}");
        }
        Ok(tag)
    }

    /// While idling: read untagged responses until one contains `needle`
    /// (e.g. "EXISTS"); returns that line, or an error on timeout/EOF.
    pub async fn idle_wait_for(&mut self, needle: &str, timeout: Duration) -> Result<Line> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_response_line_until(deadline).await? {
                LineReadFull::Line(l) if l.text().contains(needle) => return Ok(l),
                LineReadFull::Line(_) => continue,
                LineReadFull::Eof => bail!("connection closed while waiting for {needle:?}"),
                LineReadFull::Timeout => bail!("no {needle:?} within {timeout:?}"),
            }
        }
    }

    /// Collect whatever complete responses arrive within `dur`.
    pub async fn read_responses_for(&mut self, dur: Duration) -> Result<Vec<Line>> {
        let deadline = Instant::now() + dur;
        let mut out = Vec::new();
        loop {
            match self.read_response_line_until(deadline).await? {
                LineReadFull::Line(l) => out.push(l),
                LineReadFull::Eof | LineReadFull::Timeout => return Ok(out),
            }
        }
    }

    /// Send `DONE` and read the IDLE command's tagged response.
    pub async fn idle_done(&mut self, tag: &str) -> Result<Response> {
        self.write_raw(b"DONE\r\n").await?;
        self.read_tagged(tag).await
    }

    // ----- raw I/O -----

    /// Write bytes as they are.
    pub async fn write_raw(&mut self, data: &[u8]) -> Result<()> {
        tokio::time::timeout(self.timeout, self.conn.write_all(data))
            .await
            .context("write timed out")?
            .context("write failed")
    }

    /// Half-close (TCP FIN / TLS close_notify).
    pub async fn shutdown_write(&mut self) -> Result<()> {
        Ok(self.conn.shutdown().await?)
    }

    /// Read one raw line (with its CRLF; no literal handling) within `timeout`.
    pub async fn read_line(&mut self, timeout: Duration) -> Result<LineRead> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(LineRead::Line(line));
            }
            match self.fill(deadline).await? {
                Fill::Data => {}
                Fill::Eof if self.buf.is_empty() => return Ok(LineRead::Eof),
                Fill::Eof => return Ok(LineRead::Line(std::mem::take(&mut self.buf))),
                Fill::Timeout => return Ok(LineRead::Timeout),
            }
        }
    }

    /// Read exactly `n` bytes.
    pub async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        while self.buf.len() < n {
            match self.fill(deadline).await? {
                Fill::Data => {}
                Fill::Eof => bail!("EOF after {} of {n} bytes", self.buf.len()),
                Fill::Timeout => bail!("timeout after {} of {n} bytes", self.buf.len()),
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Everything that arrives within `dur` (stops early at EOF).
    pub async fn read_for(&mut self, dur: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + dur;
        while let Fill::Data = self.fill(deadline).await? {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// Read until the peer closes; returns what arrived meanwhile. Error if
    /// still open after `timeout`. A connection reset counts as closed.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline).await {
                Ok(Fill::Data) => {}
                Ok(Fill::Eof) | Err(_) => return Ok(std::mem::take(&mut self.buf)),
                Ok(Fill::Timeout) => bail!(
                    "connection still open after {timeout:?}; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// One complete response line, reading literals (`{n}`, `{n+}`, `~{n}`)
    /// byte-exact. Ok(None) at EOF; error on timeout.
    pub async fn read_response_line(&mut self) -> Result<Option<Line>> {
        let deadline = Instant::now() + self.timeout;
        match self.read_response_line_until(deadline).await? {
            LineReadFull::Line(l) => Ok(Some(l)),
            LineReadFull::Eof => Ok(None),
            LineReadFull::Timeout => bail!(
                "timed out after {:?}; unconsumed: {:?}",
                self.timeout,
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    async fn read_response_line_until(&mut self, deadline: Instant) -> Result<LineReadFull> {
        // Parse from the buffer without consuming until complete, so that a
        // timeout leaves the buffer intact.
        let mut pos = 0usize;
        let mut literals = Vec::new();
        loop {
            let Some(nl) = self.buf[pos..].iter().position(|&b| b == b'\n') else {
                match self.fill(deadline).await? {
                    Fill::Data => continue,
                    Fill::Eof if self.buf.is_empty() => return Ok(LineReadFull::Eof),
                    Fill::Eof => bail!(
                        "EOF inside a response: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                    Fill::Timeout => return Ok(LineReadFull::Timeout),
                }
            };
            let end = pos + nl + 1;
            match literal_len(&self.buf[pos..end]) {
                Some(n) => {
                    while self.buf.len() < end + n {
                        match self.fill(deadline).await? {
                            Fill::Data => {}
                            Fill::Eof => bail!("EOF inside a {n}-byte literal"),
                            Fill::Timeout => return Ok(LineReadFull::Timeout),
                        }
                    }
                    literals.push(self.buf[end..end + n].to_vec());
                    pos = end + n;
                }
                None => {
                    let raw: Vec<u8> = self.buf.drain(..end).collect();
                    return Ok(LineReadFull::Line(Line { raw, literals }));
                }
            }
        }
    }

    async fn fill(&mut self, deadline: Instant) -> Result<Fill> {
        let mut tmp = [0u8; 16384];
        match tokio::time::timeout_at(deadline, self.conn.read(&mut tmp)).await {
            Err(_) => Ok(Fill::Timeout),
            Ok(Ok(0)) => Ok(Fill::Eof),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(Fill::Data)
            }
            Ok(Err(e)) => Err(anyhow!(e).context("read failed")),
        }
    }
}

/// TCP connection to `addr` from the local address `src_ip` (any of
/// 127.0.0.0/8 works on loopback), e.g. to test client-address forwarding.
pub async fn tcp_connect_from(src_ip: &str, addr: &str) -> Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(format!("{src_ip}:0").parse().context("bad source IP")?)
        .with_context(|| format!("bind {src_ip}"))?;
    let sa = addr.parse().context("bad address")?;
    tokio::time::timeout(DEFAULT_TIMEOUT, sock.connect(sa))
        .await
        .with_context(|| format!("connect {addr} timed out"))?
        .with_context(|| format!("connect {addr} from {src_ip}"))
}

enum Fill {
    Data,
    Eof,
    Timeout,
}

enum LineReadFull {
    Line(Line),
    Eof,
    Timeout,
}
