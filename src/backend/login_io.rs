//! Logging in to a backend, the I/O around the commands built in
//! [`super::login`]: forward the client's address (ID, trusted backends
//! only), send the login, answer the `+` challenges, read the tagged
//! status and the post-login capabilities.

use tokio::io::AsyncWriteExt;

use super::{login, BackendError, Connected, LoggedIn, LoginOutcome, LoginStep, LOG_TARGET};
use crate::identity::{ClientInfo, Credentials};
use crate::imap::response::{parse_capability_data, parse_status, Kind, Status, StatusLine};

/// What [`Connected::login`] sends: the first write (ID, then the login
/// command), the answers to the backend's expected `+` challenges, and the
/// answer to an unexpected one.
struct LoginPlan {
    first: Vec<u8>,
    /// Answers to `+` challenges, last one first.
    pending: Vec<Vec<u8>>,
    error_answer: Vec<u8>,
    id_sent: bool,
}

impl LoginPlan {
    fn new(
        creds: &Credentials,
        client: Option<&ClientInfo>,
        caps: &[String],
    ) -> Result<LoginPlan, BackendError> {
        let mut first = Vec::new();
        if let Some(client) = client {
            first.extend_from_slice(&login::id_command("I1", client));
        }
        let steps = login::login_steps("L1", creds, caps).map_err(BackendError::Refused)?;
        let mut pending = Vec::new();
        // Unexpected challenges are cancelled, unless the mechanism says otherwise.
        let mut error_answer = b"*\r\n".to_vec();
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                LoginStep::Send(b) if i == 0 => first.extend_from_slice(&b),
                LoginStep::Send(b) | LoginStep::AfterContinuation(b) => pending.push(b),
                LoginStep::OnErrorChallenge(b) => error_answer = b,
            }
        }
        pending.reverse();
        Ok(LoginPlan {
            first,
            pending,
            error_answer,
            id_sent: client.is_some(),
        })
    }
}

impl Connected {
    /// Forward the client's address (trusted backends only), then log in.
    /// An error once the first byte of the login is written is a
    /// [`BackendError::Login`] (not [`retry`](BackendError::retry)able);
    /// before that (the backend lacks the mechanism) it is not.
    pub async fn login(
        mut self,
        creds: &Credentials,
        client: Option<&ClientInfo>,
    ) -> Result<LoginOutcome, BackendError> {
        let plan = LoginPlan::new(creds, client, &self.capabilities)?;
        let wrap = |e| BackendError::Login(Box::new(e));
        let (st, caps_from_data) = self.exchange(plan).await.map_err(wrap)?;
        match st.status {
            Status::Ok => {
                let caps = match st.capabilities().or(caps_from_data) {
                    Some(c) => c,
                    None => self
                        .reader
                        .capability(&mut self.stream)
                        .await
                        .map_err(wrap)?,
                };
                Ok(LoginOutcome::Ok(LoggedIn {
                    stream: self.stream,
                    buf: self.reader.buf,
                    capabilities: caps,
                    logged_in_at: std::time::Instant::now(),
                }))
            }
            Status::No | Status::Bad => Ok(LoginOutcome::Rejected {
                status: if st.status == Status::No { "NO" } else { "BAD" },
                code: st.code,
                text: st.text,
            }),
            _ => Err(wrap(BackendError::Protocol(
                "unexpected login response".into(),
            ))),
        }
    }

    /// Send the plan and answer the challenges, up to the login's tagged
    /// status; also the capabilities of a `* CAPABILITY` seen meanwhile.
    async fn exchange(
        &mut self,
        mut plan: LoginPlan,
    ) -> Result<(StatusLine, Option<Vec<String>>), BackendError> {
        self.stream.write_all(&plan.first).await?;
        self.stream.flush().await?;
        let mut id_done = !plan.id_sent;
        let mut caps_from_data: Option<Vec<String>> = None;
        loop {
            let line = self.reader.read_line(&mut self.stream, "login").await?;
            if line.starts_with(b"+") {
                let answer = match plan.pending.pop() {
                    Some(next) => next,
                    None => {
                        // A SASL error challenge (OAuth: base64 JSON with
                        // the reason) or an unexpected one: answer it so
                        // that the backend finishes with its tagged status.
                        tracing::debug!(
                            target: LOG_TARGET,
                            challenge = %login::describe_challenge(&line),
                            "backend sent a SASL error challenge"
                        );
                        std::mem::replace(&mut plan.error_answer, b"*\r\n".to_vec())
                    }
                };
                self.stream.write_all(&answer).await?;
                self.stream.flush().await?;
                continue;
            }
            if let Some(c) = parse_capability_data(&line) {
                caps_from_data = Some(c);
                continue;
            }
            let Some(st) = parse_status(&line) else {
                continue;
            };
            match &st.kind {
                Kind::Tagged(t) if t == "I1" => id_done = true,
                Kind::Tagged(t) if t == "L1" => {
                    if !id_done {
                        return Err(BackendError::Protocol("login answered before ID".into()));
                    }
                    return Ok((st, caps_from_data));
                }
                Kind::Untagged if st.status == Status::Bye => {
                    return Err(BackendError::Refused(st.text))
                }
                _ => {}
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Reader;
    use crate::identity::Mechanism;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    fn connected(stream: tokio::io::DuplexStream, caps: &str) -> Connected {
        Connected {
            stream: Box::new(stream),
            reader: Reader::new(Duration::from_secs(5)),
            capabilities: caps.split(' ').map(String::from).collect(),
        }
    }

    fn oauth(mechanism: Mechanism) -> Credentials {
        Credentials {
            user: "u".into(),
            password: b"tok".to_vec(),
            authzid: None,
            mechanism,
        }
    }

    /// A backend that refuses the token the way Dovecot does: an error
    /// challenge, then (once answered) a tagged NO. Returns what it got.
    async fn refusing_backend(io: tokio::io::DuplexStream) -> Vec<String> {
        let (r, mut w) = tokio::io::split(io);
        let mut r = BufReader::new(r);
        let mut got = Vec::new();
        for reply in [
            &b"+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=\r\n"[..],
            b"L1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
        ] {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            got.push(line);
            w.write_all(reply).await.unwrap();
        }
        got
    }

    #[tokio::test]
    async fn oauth_error_challenge_is_answered_and_the_no_relayed() {
        for (mech, answer) in [
            (Mechanism::OAuthBearer, "AQ==\r\n"),
            (Mechanism::XOAuth2, "\r\n"),
        ] {
            let (ours, theirs) = tokio::io::duplex(4096);
            let backend = tokio::spawn(refusing_backend(theirs));
            let caps = format!("IMAP4rev1 SASL-IR AUTH=PLAIN AUTH={}", mech.as_str());
            let outcome = connected(ours, &caps)
                .login(&oauth(mech), None)
                .await
                .unwrap();
            let LoginOutcome::Rejected { status, code, .. } = outcome else {
                panic!("login accepted");
            };
            assert_eq!(
                (status, code.as_deref()),
                ("NO", Some("AUTHENTICATIONFAILED"))
            );
            let got = backend.await.unwrap();
            assert!(
                got[0].starts_with(&format!("L1 AUTHENTICATE {} ", mech.as_str())),
                "{got:?}"
            );
            assert_eq!(got[1], answer);
        }
    }

    #[tokio::test]
    async fn oauth_without_backend_mechanism_sends_nothing() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let err = connected(ours, "IMAP4rev1 SASL-IR AUTH=PLAIN")
            .login(&oauth(Mechanism::XOAuth2), None)
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(&err, BackendError::Refused(m) if m.contains("AUTH=XOAUTH2")),
            "{err}"
        );
        // Nothing was sent: another backend may be tried.
        assert!(err.retry());
        // the connection was dropped without a byte written
        let mut buf = Vec::new();
        theirs.read_to_end(&mut buf).await.unwrap();
        assert!(buf.is_empty(), "{buf:?}");
    }

    /// A backend that reads the login and answers `reply` (then closes).
    async fn login_with(reply: &'static [u8]) -> BackendError {
        let (ours, theirs) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(theirs);
            let mut line = String::new();
            BufReader::new(r).read_line(&mut line).await.unwrap();
            w.write_all(reply).await.unwrap();
            if reply.is_empty() {
                return; // closes at once
            }
            std::future::pending::<()>().await;
        });
        let creds = Credentials {
            user: "u".into(),
            password: b"pw".to_vec(),
            authzid: None,
            mechanism: Mechanism::Login,
        };
        let mut c = connected(ours, "IMAP4rev1 AUTH=PLAIN");
        c.reader = Reader::new(Duration::from_millis(300));
        c.login(&creds, None).await.err().expect("login failed")
    }

    #[tokio::test]
    async fn errors_once_the_login_is_sent_are_not_retried() {
        for (reply, kind) in [
            (&b""[..], "closed"),
            (b"* BYE going away\r\n", "refused"),
            (b"* OK still thinking\r\n", "timeout"),
            (b"L1 PREAUTH what\r\n", "protocol"),
            // OK without capabilities: the CAPABILITY asked after it fails.
            (b"L1 OK done\r\n* BYE\r\n", "refused"),
        ] {
            let e = login_with(reply).await;
            assert!(matches!(e, BackendError::Login(_)), "{e:?}");
            assert_eq!(e.kind(), kind, "{e}");
            assert!(!e.retry(), "{e}");
        }
    }
}
