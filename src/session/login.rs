//! The login flow of a client session: penalty gate → auth → route →
//! backend login, trying up to three candidate backends while nothing was
//! sent to them. Failed logins feed the brute-force defence. The session
//! driver ([`super::conn`]) calls [`login`] and acts on its outcome.

use std::sync::Arc;
use std::time::Instant;

use super::conn::{Context, LOG_TARGET};
use super::{ClientInfo, Credentials};
use crate::auth::penalty::Gate;
use crate::auth::{AuthDecision, Request};
use crate::backend::{self, LoggedIn, LoginOutcome};
use crate::front::Protocol;
use crate::metrics::LoginResult;
use crate::multiplex::pool::CredKey;
use crate::route::Backend;

/// A failed login: what the client is told, and for the log and metrics.
pub(crate) struct LoginFail {
    pub(crate) status: &'static str,
    pub(crate) code: Option<String>,
    pub(crate) text: String,
    pub(crate) backend: Option<String>,
    pub(crate) result: LoginResult,
}

fn unavailable(backend: Option<String>) -> LoginFail {
    unavailable_with(
        backend,
        "Mail server temporarily unavailable; try again later.",
    )
}

fn unavailable_with(backend: Option<String>, text: &str) -> LoginFail {
    LoginFail {
        status: "NO",
        code: Some("UNAVAILABLE".into()),
        text: text.into(),
        backend,
        result: LoginResult::Unavailable,
    }
}

/// Penalty gate → auth → route → backend login. Failed logins feed the
/// brute-force defence; one log line per failure names the client address
/// (`rip=`) for fail2ban.
pub(crate) async fn login(
    ctx: &Context,
    creds: &Credentials,
    client: &ClientInfo,
    attempt_no: u32,
    tls: bool,
    protocol: Protocol,
) -> Result<LoginOk, LoginFail> {
    let ip = client.peer.ip();
    if client.proxy_ttl <= 1 {
        // Proxies in front of each other without end: a routing mistake.
        tracing::error!(target: LOG_TARGET, session = %client.session_id, rip = %ip, user = creds.user.as_str(), ttl = client.proxy_ttl, "login refused: proxying loops (x-proxy-ttl exhausted); check the routing between proxies");
        return Err(unavailable_with(
            None,
            "Proxying loops - check the routing of this user.",
        ));
    }
    // The attempt counts as in flight until its outcome is known (or it is
    // dropped: no verdict), so parallel guesses cannot pass the gate at once.
    let attempt = match ctx.penalty.check(ip, &creds.user, Instant::now()) {
        Gate::Refuse => {
            ctx.metrics.auth.penalty("refused");
            tracing::warn!(target: LOG_TARGET, session = %client.session_id, rip = %ip, user = creds.user.as_str(), "login refused: too many failed logins");
            return Err(LoginFail {
                status: "NO",
                code: Some("UNAVAILABLE".into()),
                text: "Too many failed logins; try again later.".into(),
                backend: None,
                result: LoginResult::Failed,
            });
        }
        Gate::Proceed { delay, attempt } => {
            if !delay.is_zero() {
                ctx.metrics.auth.penalty("delayed");
                tokio::time::sleep(delay).await;
            }
            attempt
        }
    };
    let result = login_unguarded(ctx, creds, client, attempt_no, tls, protocol).await;
    match &result {
        Ok(_) => attempt.succeeded(),
        Err(f) if f.result == LoginResult::Failed => attempt.failed(Instant::now()),
        Err(_) => drop(attempt),
    }
    result
}

fn rejected(code: &str, text: String, backend: Option<String>) -> LoginFail {
    LoginFail {
        status: "NO",
        code: Some(code.to_string()),
        text,
        backend,
        result: LoginResult::Failed,
    }
}

/// A successful login: the logged-in backend connection and who it is.
pub(crate) struct LoginOk {
    pub(crate) conn: LoggedIn,
    pub(crate) backend: Arc<Backend>,
    /// Identity in the reuse pool: mailbox owner and credential key.
    pub(crate) reuse: Option<(String, CredKey)>,
    /// The credentials that logged in to the backend (kept to log in again
    /// when a parked client resumes).
    pub(crate) backend_creds: Credentials,
    /// The mailbox owner the backend logged in: see [`mailbox_owner`].
    pub(crate) owner: String,
}

/// The mailbox owner a backend login acts for, the key of everything kept
/// per user (FETCH cache, reuse pool, watchers and parked state, routing).
///
/// The authorization identity when the client gave one (SASL PLAIN or
/// OAUTHBEARER `a=`): RFC 4616 §2 says the server acts as that identity or
/// refuses the login, so after a successful login it is whose mailbox the
/// session sees (a master user acting for alice sees alice's mail, never
/// the master's). Otherwise the login name, after the auth source's
/// rewrite (`backend_user`). A login name the backend maps further (Dovecot
/// `user*master`, case folding) stays as typed: such sessions share nothing
/// with the plain name's, which costs sharing but never mixes users.
pub(crate) fn mailbox_owner(creds: &Credentials) -> &str {
    creds.authzid.as_deref().unwrap_or(&creds.user)
}

async fn login_unguarded(
    ctx: &Context,
    creds: &Credentials,
    client: &ClientInfo,
    attempt: u32,
    tls: bool,
    protocol: Protocol,
) -> Result<LoginOk, LoginFail> {
    let req = Request {
        credentials: creds,
        client,
        attempt,
        tls,
        protocol,
    };
    let (user_creds, hint, verified) = match ctx.auth.authenticate(req).await {
        AuthDecision::Login {
            credentials,
            backend,
            verified,
        } => (credentials, backend, verified),
        AuthDecision::Reject { code, text, wait } => {
            if let Some(w) = wait {
                tokio::time::sleep(w.min(ctx.config.auth.max_wait())).await;
            }
            return Err(rejected(&code, text, None));
        }
        AuthDecision::Unavailable => return Err(unavailable(None)),
    };
    // Route, cache and pool by whose mailbox it is, not by who typed it.
    let owner = mailbox_owner(&user_creds).to_string();
    // The operator's per-user override (`imapmux ctl move`) wins over
    // the directory's answer; a drained backend the directory names is
    // replaced by routing (which refuses it when failover is off).
    let hint = hint.filter(|_| ctx.router.override_for(&owner).is_none());
    let candidates = match &hint {
        Some(spec) => match ctx.router.backend_for(spec) {
            Some(b) if ctx.router.is_drained(&b.name) => {
                ctx.router.candidates(&owner).unwrap_or_else(|e| {
                    tracing::warn!(target: LOG_TARGET, session = %client.session_id, error = %e, "no backend for login");
                    Vec::new()
                })
            }
            Some(b) if b.is_up() => vec![b],
            Some(b) => {
                tracing::warn!(target: LOG_TARGET, session = %client.session_id, backend = %b.name, "the directory's backend for this user is down");
                Vec::new()
            }
            None => {
                tracing::error!(target: LOG_TARGET, session = %client.session_id, backend = %spec, "the directory named a backend that is not configured; add it to a [[pool.backend]] (name or address)");
                Vec::new()
            }
        },
        None => ctx.router.candidates(&owner).unwrap_or_else(|e| {
            tracing::warn!(target: LOG_TARGET, session = %client.session_id, error = %e, "no backend for login");
            Vec::new()
        }),
    };
    let mut last = None;
    for b in candidates.iter().take(3) {
        last = Some(b.name.clone());
        let who = Who {
            client,
            creds,
            user_creds: &user_creds,
            verified,
            owner: &owner,
            protocol,
        };
        if let Some(done) = login_at(ctx, &who, b).await {
            return done;
        }
    }
    Err(unavailable(last))
}

/// Who is logging in: the client, what it presented, what the auth source
/// made of it, and whose mailbox it is.
struct Who<'a> {
    client: &'a ClientInfo,
    /// The credentials the client presented.
    creds: &'a Credentials,
    /// The credentials after the auth source (rewrites, tokens).
    user_creds: &'a Credentials,
    /// imapmux verified the password itself.
    verified: bool,
    owner: &'a str,
    /// The protocol the client logs in with (the backend service used).
    protocol: Protocol,
}

/// Log in on one candidate backend: `None` when it failed before any
/// credentials were sent ([`backend::BackendError::retry`]), so the next
/// candidate may be tried; else the login's result.
async fn login_at(
    ctx: &Context,
    who: &Who<'_>,
    b: &Arc<Backend>,
) -> Option<Result<LoginOk, LoginFail>> {
    let session = &who.client.session_id;
    // Master login only for logins imapmux verified itself.
    let via_master = b.master.is_some() && who.verified;
    let backend_creds = match (&b.master, who.verified) {
        (Some(m), true) => m.credentials_for(&who.user_creds.user),
        _ => who.user_creds.clone(),
    };
    let m = &ctx.metrics;
    if who.protocol != Protocol::Imap {
        return login_line_protocol(ctx, who, b, backend_creds, via_master).await;
    }
    let reuse_id = ctx
        .mux
        .pool
        .as_ref()
        .map(|p| (who.owner.to_string(), p.key(who.creds, &backend_creds)));
    let ok = |conn, reuse, backend_creds| LoginOk {
        conn,
        backend: b.clone(),
        reuse,
        backend_creds,
        owner: who.owner.to_string(),
    };
    if let Some(li) = ctx
        .mux
        .take_pooled(
            &ctx.metrics,
            ctx.config.timeouts.backend_response,
            &b.name,
            reuse_id.as_ref(),
        )
        .await
    {
        tracing::debug!(target: LOG_TARGET, session = %session, backend = %b.name, "reusing a pooled backend connection");
        return Some(Ok(ok(li, reuse_id, backend_creds)));
    }
    let t = &ctx.config.timeouts;
    let t0 = Instant::now();
    let answer = match backend::connect(b, t.backend_connect, t.backend_response).await {
        Ok(conn) => {
            m.backend_connected(&b.name, t0.elapsed().as_secs_f64());
            let info = b.cfg.trusted.then_some(who.client);
            let t0 = Instant::now();
            let answer = conn.login(&backend_creds, info).await;
            if answer.is_ok() {
                m.backend_logged_in(&b.name, t0.elapsed().as_secs_f64());
            }
            answer.map_err(|e| ("login", e))
        }
        Err(e) => Err(("connect", e)),
    };
    match answer {
        Ok(LoginOutcome::Ok(li)) => Some(Ok(ok(li, reuse_id, backend_creds))),
        Ok(LoginOutcome::Rejected { status, code, text }) => {
            let refusal = Refusal { status, code, text };
            Some(Err(backend_refused(who, &b.name, via_master, refusal)))
        }
        Err((stage, e)) => {
            m.backend_error(&b.name, stage, e.kind());
            tracing::warn!(target: LOG_TARGET, session = %session, backend = %b.name, error = %e, retry = e.retry(), "backend {stage} failed");
            // Nothing was sent yet: the next candidate may serve.
            (!e.retry()).then(|| Err(unavailable(Some(b.name.clone()))))
        }
    }
}

/// [`login_at`] for POP3 and ManageSieve: the backend's service for the
/// protocol (no reuse pool; these sessions end with the client's).
async fn login_line_protocol(
    ctx: &Context,
    who: &Who<'_>,
    b: &Arc<Backend>,
    backend_creds: Credentials,
    via_master: bool,
) -> Option<Result<LoginOk, LoginFail>> {
    let session = &who.client.session_id;
    let m = &ctx.metrics;
    let Some(endpoint) = crate::front::backend::endpoint(b, who.protocol) else {
        tracing::error!(target: LOG_TARGET, session = %session, backend = %b.name, protocol = who.protocol.as_str(), "the backend has no address for this protocol; set its {}_address", who.protocol.as_str());
        return None;
    };
    if !b.is_up_for(who.protocol) {
        tracing::warn!(target: LOG_TARGET, session = %session, backend = %b.name, protocol = who.protocol.as_str(), "the backend's service for this protocol is down");
        return None;
    }
    let t = &ctx.config.timeouts;
    let info = b.cfg.trusted.then_some(who.client);
    let timeouts = (t.backend_connect, t.backend_response);
    let t0 = Instant::now();
    let answer = match who.protocol {
        Protocol::Pop3 => {
            crate::pop3::backend::login(b, endpoint, &backend_creds, info, timeouts).await
        }
        _ => crate::sieve::backend::login(b, endpoint, &backend_creds, info, timeouts).await,
    };
    let ok = |conn, backend_creds| LoginOk {
        conn,
        backend: b.clone(),
        reuse: None,
        backend_creds,
        owner: who.owner.to_string(),
    };
    match answer {
        Ok(LoginOutcome::Ok(li)) => {
            m.backend_logged_in(&b.name, t0.elapsed().as_secs_f64());
            Some(Ok(ok(li, backend_creds)))
        }
        Ok(LoginOutcome::Rejected { status, code, text }) => {
            let refusal = Refusal { status, code, text };
            Some(Err(backend_refused(who, &b.name, via_master, refusal)))
        }
        Err(e) => {
            let stage = if e.retry() { "connect" } else { "login" };
            m.backend_error(&b.name, stage, e.kind());
            tracing::warn!(target: LOG_TARGET, session = %session, backend = %b.name, protocol = who.protocol.as_str(), error = %e, retry = e.retry(), "backend {stage} failed");
            (!e.retry()).then(|| Err(unavailable(Some(b.name.clone()))))
        }
    }
}

/// The backend's tagged NO/BAD to the login.
struct Refusal {
    status: &'static str,
    code: Option<String>,
    text: String,
}

/// What the client is told when the backend refused the login, and
/// whether it counts as a failed login (brute-force limits, metrics).
///
/// - The backend is unable (`[UNAVAILABLE]`, `[SERVERBUG]`, or BAD to the
///   login imapmux built): `NO [UNAVAILABLE]`, not the user's failure.
/// - The backend got a password the client did not type (master user, or
///   one the auth source rewrote) and refused it: a configuration problem
///   the user cannot fix, `NO [UNAVAILABLE]` and an error in the log.
/// - Otherwise the backend judged the client's own password: its verdict
///   is the login's, a failed login. After an auth source that said OK
///   (nginx-style services that only route and leave the password to the
///   backend) a plain NO or `[AUTHENTICATIONFAILED]` becomes
///   `NO [AUTHENTICATIONFAILED] Authentication failed.`, so mail clients ask
///   for the password again instead of retrying; any other code
///   (`[EXPIRED]`, `[AUTHORIZATIONFAILED]`…) is relayed as the backend said.
fn backend_refused(who: &Who<'_>, backend: &str, via_master: bool, r: Refusal) -> LoginFail {
    let session = &who.client.session_id;
    let code = r.code.as_deref().map(str::to_ascii_uppercase);
    let code = code.as_deref();
    if r.status != "NO" || matches!(code, Some("UNAVAILABLE" | "SERVERBUG")) {
        tracing::warn!(target: LOG_TARGET, session = %session, backend = %backend, status = r.status, code = code.unwrap_or(""), "backend could not log the user in");
        return unavailable(Some(backend.to_string()));
    }
    let own_password = !via_master && who.user_creds.password == who.creds.password;
    if who.verified && !own_password {
        tracing::error!(target: LOG_TARGET, session = %session, backend = %backend, code = code.unwrap_or(""), "backend refused a login the auth source verified (master user or backend password wrong?)");
        return unavailable(Some(backend.to_string()));
    }
    if who.verified && matches!(code, None | Some("AUTHENTICATIONFAILED")) {
        tracing::debug!(target: LOG_TARGET, session = %session, backend = %backend, "the backend refused the password the auth source let through");
        return rejected(
            "AUTHENTICATIONFAILED",
            "Authentication failed.".into(),
            Some(backend.to_string()),
        );
    }
    LoginFail {
        status: r.status,
        code: r.code,
        text: r.text,
        backend: Some(backend.to_string()),
        result: LoginResult::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Mechanism;

    fn creds(password: &str) -> Credentials {
        Credentials {
            user: "alice".into(),
            password: password.as_bytes().to_vec(),
            authzid: None,
            mechanism: Mechanism::Login,
        }
    }

    /// (status, code) of the backend → what the client gets and whether
    /// the brute-force limits count it, for each way the login went.
    #[test]
    fn backend_refusals_become_the_right_answer() {
        let client = ClientInfo::new(
            "192.0.2.1:1000".parse().unwrap(),
            "127.0.0.1:993".parse().unwrap(),
            "s".into(),
        );
        let typed = creds("typed");
        let rewritten = creds("rewritten");
        let who = |user_creds, verified| Who {
            client: &client,
            creds: &typed,
            user_creds,
            verified,
            owner: "alice",
            protocol: Protocol::Imap,
        };
        let refusal = |status, code: Option<&str>| Refusal {
            status,
            code: code.map(str::to_string),
            text: "backend says".into(),
        };
        let answer = |f: LoginFail| (f.status, f.code, f.text, f.result);
        let auth_failed = (
            "NO",
            Some("AUTHENTICATIONFAILED".to_string()),
            "Authentication failed.".to_string(),
            LoginResult::Failed,
        );
        let unavailable_answer = answer(unavailable(None));
        let relayed = |code: Option<&str>| {
            (
                "NO",
                code.map(str::to_string),
                "backend says".to_string(),
                LoginResult::Failed,
            )
        };
        // The auth source said OK (it may only route): the backend's
        // refusal of the typed password is the verdict.
        for code in [
            None,
            Some("AUTHENTICATIONFAILED"),
            Some("authenticationfailed"),
        ] {
            let f = backend_refused(&who(&typed, true), "b1", false, refusal("NO", code));
            assert_eq!(answer(f), auth_failed.clone(), "{code:?}");
        }
        let f = backend_refused(
            &who(&typed, true),
            "b1",
            false,
            refusal("NO", Some("EXPIRED")),
        );
        assert_eq!(answer(f), relayed(Some("EXPIRED")));
        // The backend unable: UNAVAILABLE, not counted.
        for (status, code) in [
            ("NO", Some("UNAVAILABLE")),
            ("NO", Some("SERVERBUG")),
            ("BAD", None),
        ] {
            for verified in [true, false] {
                let f = backend_refused(&who(&typed, verified), "b1", false, refusal(status, code));
                let (s, c, _, r) = answer(f);
                assert_eq!(
                    (s, c, r),
                    ("NO", Some("UNAVAILABLE".into()), LoginResult::Unavailable)
                );
            }
        }
        // A password the client did not type (master user, rewritten):
        // the user cannot fix it, UNAVAILABLE, not counted.
        let f = backend_refused(&who(&typed, true), "b1", true, refusal("NO", None));
        assert_eq!(answer(f).3, unavailable_answer.3);
        let f = backend_refused(&who(&rewritten, true), "b1", false, refusal("NO", None));
        assert_eq!(answer(f).3, LoginResult::Unavailable);
        // Passthrough: the backend's answer as it said it.
        for code in [None, Some("AUTHENTICATIONFAILED"), Some("EXPIRED")] {
            let f = backend_refused(&who(&typed, false), "b1", false, refusal("NO", code));
            assert_eq!(answer(f), relayed(code));
        }
    }
}
