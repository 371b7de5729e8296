//! The one runner of imapmux's own commands on a backend connection
//! (STARTTLS and CAPABILITY at login, UNSELECT/NOOP/LOGOUT for the reuse
//! pool, the watchers' and parking's STATUS/EXAMINE/SEARCH/FETCH): send
//! `tag cmd`, read until the tagged answer, hand every untagged line to the
//! caller.
//!
//! Guarantees, whoever calls it:
//! - a `* BYE` is an error ([`BackendError::Refused`]), never an answer;
//! - the untagged lines of one answer total at most [`MAX_ANSWER_BYTES`]
//!   (what callers collect from them is bounded by what is let through),
//!   else [`BackendError::Protocol`];
//! - a line longer than the framer's bound is a [`BackendError::Protocol`];
//! - the whole exchange is bounded by one deadline
//!   ([`BackendError::Timeout`]); EOF is [`BackendError::Closed`];
//! - literal data inside untagged answers is skipped, never held: the
//!   caller sees the first line part of each untagged response only.
//!
//! Framing is the sans-I/O [`Framer`]; deciding what a line means is the
//! pure [`classify`]; this module only adds the socket around them.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::BackendError;
use crate::imap::command::trim_crlf;
use crate::imap::framing::{Frame, Framer};

/// Most bytes of untagged lines one command of imapmux's own may bring
/// (`UID FETCH 1:* (UID FLAGS)` of a million messages is about 40 MiB).
pub const MAX_ANSWER_BYTES: usize = 128 * 1024 * 1024;

/// Longest response line (first line part) [`run`] accepts.
pub const MAX_LINE: usize = 1024 * 1024;

/// Room made in the read buffer before each read (an empty `BytesMut`
/// would be filled 64 bytes at a time).
const READ_CHUNK: usize = 8192;

/// The stage [`run`] names in its [`BackendError::Timeout`].
pub const STAGE: &str = "command";

/// The backend's tagged answer to a command. `No` and `Bad` carry the rest
/// of the line after the status word (response code included), for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ok,
    No(String),
    Bad(String),
}

impl Answer {
    pub fn is_ok(&self) -> bool {
        matches!(self, Answer::Ok)
    }
}

/// What one response line is to a command tagged `tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `* …` (not BYE): for the caller.
    Untagged,
    /// `* BYE …`, with its text: the connection is going away.
    Bye(String),
    /// The tagged answer.
    Tagged(Answer),
    /// This tag with a status word other than OK/NO/BAD.
    BadTagged,
    /// Anything else (`+` continuations, other tags): ignored.
    Other,
}

/// The text of a status line after its status word, lossily decoded.
fn rest_text(after_word: &[u8]) -> String {
    String::from_utf8_lossy(trim_crlf(after_word).trim_ascii_start()).into_owned()
}

/// Split `OK rest` into the upper-cased status word and what follows it.
fn status_word(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Classify one complete first line part (pure: no I/O).
pub fn classify(line: &[u8], tag: &str) -> Line {
    if let Some(rest) = line.strip_prefix(b"* ") {
        let (word, after) = status_word(rest);
        if word.eq_ignore_ascii_case(b"BYE") {
            return Line::Bye(rest_text(after));
        }
        return Line::Untagged;
    }
    let Some(rest) = line
        .strip_prefix(tag.as_bytes())
        .and_then(|r| r.strip_prefix(b" "))
    else {
        return Line::Other;
    };
    let (word, after) = status_word(rest);
    if word.eq_ignore_ascii_case(b"OK") {
        Line::Tagged(Answer::Ok)
    } else if word.eq_ignore_ascii_case(b"NO") {
        Line::Tagged(Answer::No(rest_text(after)))
    } else if word.eq_ignore_ascii_case(b"BAD") {
        Line::Tagged(Answer::Bad(rest_text(after)))
    } else {
        Line::BadTagged
    }
}

/// Read up to the next first line part of a response (continuation line
/// parts and literal data are skipped). Shared with the login exchange.
pub(super) async fn next_line<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    buf: &mut BytesMut,
    framer: &mut Framer,
    deadline: Instant,
    stage: &'static str,
) -> Result<Bytes, BackendError> {
    let too_long = || BackendError::Protocol(format!("{stage}: response line too long"));
    loop {
        while let Some(frame) = framer.next_frame(buf) {
            match frame {
                // Whole in one read, it may exceed the bound all the same.
                Frame::Line {
                    bytes, first: true, ..
                } if bytes.len() > framer.max_line() => return Err(too_long()),
                Frame::Line {
                    bytes, first: true, ..
                } => return Ok(bytes),
                Frame::LineChunk { .. } => return Err(too_long()),
                Frame::Line { .. } | Frame::Literal { .. } => {}
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        let n = tokio::time::timeout_at(deadline, stream.read_buf(buf))
            .await
            .map_err(|_| BackendError::Timeout(stage))??;
        if n == 0 {
            return Err(BackendError::Closed);
        }
    }
}

/// Send `tag cmd` and read until its tagged answer, giving every untagged
/// line (`* …`, CRLF included, literal data skipped) to `untagged`. Bytes
/// after the tagged line stay in `buf`. See the module for the guarantees.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    buf: &mut BytesMut,
    tag: &str,
    cmd: &str,
    timeout: Duration,
    mut untagged: impl FnMut(&[u8]),
) -> Result<Answer, BackendError> {
    let deadline = Instant::now() + timeout;
    let send = async {
        stream
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .await?;
        stream.flush().await
    };
    tokio::time::timeout_at(deadline, send)
        .await
        .map_err(|_| BackendError::Timeout(STAGE))??;
    let mut framer = Framer::new(MAX_LINE);
    let mut seen = 0usize;
    loop {
        let line = next_line(stream, buf, &mut framer, deadline, STAGE).await?;
        match classify(&line, tag) {
            Line::Untagged => {
                seen = seen.saturating_add(line.len());
                if seen > MAX_ANSWER_BYTES {
                    return Err(BackendError::Protocol(format!(
                        "answer to {tag} larger than {MAX_ANSWER_BYTES} bytes"
                    )));
                }
                untagged(&line);
            }
            Line::Bye(text) => return Err(BackendError::Refused(text)),
            Line::Tagged(answer) => return Ok(answer),
            Line::BadTagged => {
                return Err(BackendError::Protocol(format!(
                    "unexpected tagged answer to {tag}"
                )))
            }
            Line::Other => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    const T: Duration = Duration::from_secs(5);

    /// A scripted backend: expects `want` and answers `reply`, then keeps
    /// the connection open until the test is done with it.
    fn backend(mut io: DuplexStream, want: &'static [u8], reply: Vec<u8>) {
        tokio::spawn(async move {
            let mut got = vec![0u8; want.len()];
            io.read_exact(&mut got).await.unwrap();
            assert_eq!(got, want);
            io.write_all(&reply).await.unwrap();
            let mut rest = Vec::new();
            let _ = io.read_to_end(&mut rest).await;
        });
    }

    async fn exchange(
        reply: &[u8],
        timeout: Duration,
    ) -> (Result<Answer, BackendError>, Vec<Vec<u8>>, BytesMut) {
        let (mut ours, theirs) = tokio::io::duplex(1 << 16);
        backend(theirs, b"t1 NOOP\r\n", reply.to_vec());
        let mut buf = BytesMut::new();
        let mut lines = Vec::new();
        let r = run(&mut ours, &mut buf, "t1", "NOOP", timeout, |l| {
            lines.push(l.to_vec())
        })
        .await;
        (r, lines, buf)
    }

    #[tokio::test]
    async fn ok_with_untagged_lines_and_leftover() {
        let (r, lines, buf) = exchange(
            b"* 3 EXISTS\r\nt0 OK other tag\r\n+ go\r\n* 1 RECENT\r\nt1 OK NOOP done\r\n* 4 EXISTS\r\n",
            T,
        )
        .await;
        assert_eq!(r.unwrap(), Answer::Ok);
        assert_eq!(
            lines,
            vec![b"* 3 EXISTS\r\n".to_vec(), b"* 1 RECENT\r\n".to_vec()]
        );
        assert_eq!(&buf[..], b"* 4 EXISTS\r\n");
    }

    #[tokio::test]
    async fn no_and_bad_carry_their_text() {
        let (r, ..) = exchange(b"t1 NO [TRYCREATE] no such mailbox\r\n", T).await;
        assert_eq!(r.unwrap(), Answer::No("[TRYCREATE] no such mailbox".into()));
        let (r, ..) = exchange(b"t1 bad what?\r\n", T).await;
        assert_eq!(r.unwrap(), Answer::Bad("what?".into()));
        let (r, ..) = exchange(b"t1 PREAUTH x\r\n", T).await;
        assert!(matches!(r, Err(BackendError::Protocol(_))), "{r:?}");
    }

    #[tokio::test]
    async fn bye_is_an_error() {
        let (r, lines, _) = exchange(b"* 1 EXISTS\r\n* BYE shutting down\r\nt1 OK\r\n", T).await;
        assert!(
            matches!(&r, Err(BackendError::Refused(t)) if t == "shutting down"),
            "{r:?}"
        );
        assert_eq!(lines.len(), 1);
    }

    #[tokio::test]
    async fn eof_is_closed() {
        let (mut ours, mut theirs) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let mut b = [0u8; 9];
            theirs.read_exact(&mut b).await.unwrap();
            theirs.write_all(b"* 1 EXISTS\r\n").await.unwrap();
        });
        let r = run(&mut ours, &mut BytesMut::new(), "t1", "NOOP", T, |_| {}).await;
        assert!(matches!(r, Err(BackendError::Closed)), "{r:?}");
    }

    #[tokio::test]
    async fn timeout_names_the_stage() {
        let (r, ..) = exchange(b"* 1 EXISTS\r\n", Duration::from_millis(200)).await;
        assert!(matches!(r, Err(BackendError::Timeout("command"))), "{r:?}");
    }

    #[tokio::test]
    async fn literal_inside_an_untagged_answer_is_skipped() {
        let reply =
            b"* 1 FETCH (UID 7 BODY[] {14}\r\nt1 OK fake\r\n\r\n FLAGS (\\Seen))\r\nt1 OK done\r\n";
        let (r, lines, buf) = exchange(reply, T).await;
        assert_eq!(r.unwrap(), Answer::Ok);
        assert_eq!(lines, vec![b"* 1 FETCH (UID 7 BODY[] {14}\r\n".to_vec()]);
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn line_longer_than_the_framer_bound_is_a_protocol_error() {
        let mut reply = b"* SEARCH".to_vec();
        while reply.len() <= MAX_LINE + 64 {
            reply.extend_from_slice(b" 123456");
        }
        reply.extend_from_slice(b"\r\nt1 OK\r\n");
        let (mut ours, theirs) = tokio::io::duplex(1 << 16);
        backend(theirs, b"t1 NOOP\r\n", reply);
        let r = run(&mut ours, &mut BytesMut::new(), "t1", "NOOP", T, |_| {}).await;
        assert!(matches!(r, Err(BackendError::Protocol(_))), "{r:?}");
    }

    #[tokio::test]
    async fn too_large_an_answer_is_an_error() {
        // Many lines, each under the line bound, over MAX_ANSWER_BYTES in all.
        let line = {
            let mut l = b"* 1 FETCH (FLAGS (".to_vec();
            l.resize(64 * 1024 - 4, b'x');
            l.extend_from_slice(b"))\r\n");
            l
        };
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 20);
        let n = MAX_ANSWER_BYTES / line.len() + 2;
        tokio::spawn(async move {
            let mut b = [0u8; 9];
            theirs.read_exact(&mut b).await.unwrap();
            for _ in 0..n {
                if theirs.write_all(&line).await.is_err() {
                    return; // the runner gave up, as it should
                }
            }
            let _ = theirs.write_all(b"t1 OK\r\n").await;
        });
        let mut total = 0usize;
        let r = run(&mut ours, &mut BytesMut::new(), "t1", "NOOP", T * 12, |l| {
            total += l.len()
        })
        .await;
        assert!(
            matches!(&r, Err(BackendError::Protocol(m)) if m.contains("larger")),
            "{r:?}"
        );
        assert!(total <= MAX_ANSWER_BYTES);
    }

    #[test]
    fn classify_lines() {
        assert_eq!(classify(b"* 1 EXISTS\r\n", "a"), Line::Untagged);
        assert_eq!(classify(b"* bye now\r\n", "a"), Line::Bye("now".into()));
        assert_eq!(classify(b"* BYE\r\n", "a"), Line::Bye(String::new()));
        assert_eq!(classify(b"* BYEBYE x\r\n", "a"), Line::Untagged);
        assert_eq!(classify(b"a OK\r\n", "a"), Line::Tagged(Answer::Ok));
        assert_eq!(classify(b"ab OK\r\n", "a"), Line::Other);
        assert_eq!(classify(b"a\r\n", "a"), Line::Other);
        assert_eq!(classify(b"+ go\r\n", "a"), Line::Other);
        assert_eq!(classify(b"a BYE x\r\n", "a"), Line::BadTagged);
        assert_eq!(
            classify(b"a NO \xff\r\n", "a"),
            Line::Tagged(Answer::No("\u{fffd}".into()))
        );
    }
}
