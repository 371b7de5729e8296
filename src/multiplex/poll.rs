//! The batch poller: watching parked clients' mailboxes without a backend
//! connection per user. Every poll interval it asks each backend that has
//! a doveadm HTTP API (`[[pool.backend]] doveadm_url`) for the
//! HIGHESTMODSEQ of every watched (user, mailbox), in requests of at most
//! [`MAX_BATCH`] commands, [`PARALLEL`] at a time per backend. A changed
//! value wakes that watcher as a push would ([`Watcher::observe`]); the
//! watcher then logs in, resyncs its parked clients and logs out again.
//! A mailbox doveadm cannot report (user unknown under that name, no such
//! mailbox, a name it cannot ask for exactly) is checked over IMAP by its
//! watcher instead ([`Watcher::check_over_imap`]).
//!
//! A failed request (doveadm down, timeout, 401, an answer that is not
//! doveadm's) is counted and logged, and its mailboxes are asked again at
//! the next interval: falling back to IMAP for all of them would turn a
//! doveadm outage into a login storm on the same backend.
//!
//! The request body and the reading of the answer are sans-I/O in
//! [`super::doveadm`]; here the HTTP exchange (hyper's client, bounded
//! answer, timeout) and the loop.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use thiserror::Error;

pub use super::doveadm::MAX_BATCH;
use super::doveadm::{self, Query, ResponseError, Status};
use super::watch::{Registry, Watcher};
use crate::config::{invalid, BackendConfig, ConfigError};
use crate::metrics::Metrics;
use crate::multiplex::pool::MultiplexConfig;
use crate::route::Backend;

/// Requests in flight at once to one backend's doveadm.
pub const PARALLEL: usize = 4;

/// Where and how to reach one backend's doveadm HTTP API.
pub struct Endpoint {
    uri: hyper::Uri,
    /// `X-Dovecot-API <base64 key>`, marked sensitive.
    authorization: HeaderValue,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

/// `doveadm_url` as a URI: `http://HOST:PORT/PATH` (path default
/// `/doveadm/v1`), no credentials in it.
fn parse_url(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{url:?} is not an http:// URL (imapmux speaks plain HTTP to doveadm: keep it on a trusted network)"
        ));
    }
    let Some(auth) = uri.authority() else {
        return Err(format!("{url:?} has no host"));
    };
    if auth.as_str().contains('@') {
        return Err(format!(
            "{url:?} carries credentials; put the API key in doveadm_api_key_file"
        ));
    }
    if matches!(uri.path(), "" | "/") {
        return format!("http://{auth}/doveadm/v1")
            .parse()
            .map_err(|_| format!("{url:?} is not a URL"));
    }
    Ok(uri)
}

impl Endpoint {
    pub fn new(url: &str, api_key: &[u8]) -> Result<Endpoint, String> {
        use base64::Engine;
        let uri = parse_url(url)?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(api_key);
        let mut authorization = HeaderValue::from_str(&format!("X-Dovecot-API {b64}"))
            .map_err(|_| "the API key cannot be sent in a header".to_string())?;
        authorization.set_sensitive(true);
        Ok(Endpoint { uri, authorization })
    }

    /// The endpoint of a configured backend (reading the key file), `None`
    /// without `doveadm_url`. Errors: (key, problem and fix).
    pub fn from_config(b: &BackendConfig, key: &str) -> Result<Option<Endpoint>, (String, String)> {
        let Some(url) = &b.doveadm_url else {
            return Ok(None);
        };
        let file_key = format!("{key}.doveadm_api_key_file");
        let Some(path) = &b.doveadm_api_key_file else {
            return Err((file_key, "doveadm_url is set but no API key; fix: set doveadm_api_key_file to a file holding Dovecot's doveadm_api_key".into()));
        };
        let api_key = read_key(path).map_err(|p| (file_key, p))?;
        Endpoint::new(url, api_key.as_bytes())
            .map(Some)
            .map_err(|p| (format!("{key}.doveadm_url"), p))
    }
}

/// The first line of `path`, not empty.
fn read_key(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read {}: {e}; fix: point it at a readable file holding Dovecot's doveadm_api_key",
            path.display()
        )
    })?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if line.is_empty() {
        return Err(format!(
            "{} is empty; fix: write Dovecot's doveadm_api_key on its first line",
            path.display()
        ));
    }
    Ok(line)
}

/// `check-config`'s checks of a backend's doveadm keys (`key`: the
/// backend's key prefix, e.g. `pool[0].backend[1]`).
pub fn validate_backend(b: &BackendConfig, key: &str) -> Result<(), ConfigError> {
    match (&b.doveadm_url, &b.doveadm_api_key_file) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(invalid(
            format!("{key}.doveadm_api_key_file"),
            "an API key without doveadm_url",
            "set doveadm_url (e.g. \"http://10.0.0.5:8080/doveadm/v1\"), or remove the key",
        )),
        (Some(_), None) => Err(invalid(
            format!("{key}.doveadm_api_key_file"),
            "doveadm_url is set but no API key",
            "set doveadm_api_key_file to a file holding Dovecot's doveadm_api_key",
        )),
        (Some(url), Some(_)) => parse_url(url).map(|_| ()).map_err(|p| {
            invalid(
                format!("{key}.doveadm_url"),
                p,
                "write e.g. \"http://10.0.0.5:8080/doveadm/v1\" (Dovecot's service doveadm { inet_listener http })",
            )
        }),
    }
}

/// A doveadm setting that has no effect.
pub fn warning(b: &BackendConfig, m: &MultiplexConfig) -> Option<String> {
    b.doveadm_url.as_ref()?;
    (m.idle_offload_after.is_zero() || m.poll_interval.is_zero()).then(|| {
        format!(
            "backend {:?}: doveadm_url is not used: it needs multiplex.idle_offload_after and multiplex.poll_interval above \"0s\"",
            b.name
        )
    })
}

/// Why a batch request failed (the `result` label says which).
#[derive(Debug, Error)]
pub enum PollError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connection: {0}")]
    Connect(String),
    #[error("HTTP {0}: check doveadm_api_key_file")]
    Unauthorized(u16),
    #[error("HTTP {0}")]
    Http(u16),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("answer: {0}")]
    Response(#[from] ResponseError),
}

impl PollError {
    pub fn result(&self) -> &'static str {
        match self {
            PollError::Timeout(_) => "timeout",
            PollError::Connect(_) => "connect",
            PollError::Unauthorized(_) => "unauthorized",
            PollError::Http(_) => "http_error",
            PollError::TooLarge(_) | PollError::Response(_) => "bad_response",
        }
    }
}

/// The HTTP side: one client (keep-alive pool) for every backend.
#[derive(Clone)]
pub struct BatchPoller {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl BatchPoller {
    /// `timeout`: connect plus the whole answer, per request.
    pub fn new(timeout: Duration, metrics: Option<Arc<Metrics>>) -> BatchPoller {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(PARALLEL)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        BatchPoller {
            client,
            timeout,
            metrics,
        }
    }

    /// Ask `ep` for the status of `queries` (at most [`MAX_BATCH`]).
    pub async fn status(&self, ep: &Endpoint, queries: &[Query]) -> Result<Vec<Status>, PollError> {
        let limit = doveadm::max_response(queries.len());
        let req = hyper::Request::post(ep.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, ep.authorization.clone())
            .body(Full::new(Bytes::from(doveadm::request_body(queries))))
            .map_err(|e| PollError::Connect(e.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| PollError::Connect(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), limit).collect().await;
            match status {
                200 => {}
                401 | 403 => return Err(PollError::Unauthorized(status)),
                s => return Err(PollError::Http(s)),
            }
            match body {
                Ok(b) => Ok(b.to_bytes()),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    Err(PollError::TooLarge(limit))
                }
                Err(e) => Err(PollError::Connect(e.to_string())),
            }
        };
        let body = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| PollError::Timeout(self.timeout))??;
        Ok(doveadm::parse_response(&body, queries)?)
    }

    /// Poll every `interval` until the registry is gone.
    pub async fn run(self, registry: Weak<Registry>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = HashSet::new();
        loop {
            tick.tick().await;
            let Some(r) = registry.upgrade() else { return };
            let targets = targets(&r);
            drop(r);
            let mut rounds = tokio::task::JoinSet::new();
            for (name, (ep, targets)) in by_backend(targets) {
                if let (Some(m), true) = (&self.metrics, seen.insert(name.clone())) {
                    m.doveadm.backend(&name);
                }
                rounds.spawn(self.clone().backend_round(name, ep, targets));
            }
            while rounds.join_next().await.is_some() {}
        }
    }

    /// One backend's round: its targets in chunks, [`PARALLEL`] at once.
    async fn backend_round(self, backend: String, ep: Arc<Endpoint>, targets: Vec<Target>) {
        let gate = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
        let mut chunks = tokio::task::JoinSet::new();
        let mut unknown = 0usize;
        let mut batchable = Vec::new();
        for t in targets {
            match doveadm::vname(&t.mailbox) {
                Some(v) => batchable.push((
                    Query {
                        user: t.user.clone(),
                        mailbox: v,
                    },
                    t,
                )),
                None => self.apply(&backend, &t, Status::Failed, &mut unknown),
            }
        }
        let mut batchable = batchable.into_iter().peekable();
        while batchable.peek().is_some() {
            let chunk: Vec<(Query, Target)> = batchable.by_ref().take(MAX_BATCH).collect();
            let (me, ep, gate, backend) = (self.clone(), ep.clone(), gate.clone(), backend.clone());
            chunks.spawn(async move {
                let _turn = gate.acquire_owned().await;
                me.chunk(&backend, &ep, chunk).await
            });
        }
        while let Some(r) = chunks.join_next().await {
            unknown += r.unwrap_or(0);
        }
        if unknown > 0 {
            tracing::warn!(backend = %backend, users = unknown, "doveadm does not know some watched users under their login name; their watchers check over IMAP (a login per poll)");
        }
    }

    /// One request; returns how many users doveadm did not know.
    async fn chunk(&self, backend: &str, ep: &Endpoint, chunk: Vec<(Query, Target)>) -> usize {
        let queries: Vec<Query> = chunk.iter().map(|(q, _)| q.clone()).collect();
        let t0 = Instant::now();
        let answer = self.status(ep, &queries).await;
        let secs = t0.elapsed().as_secs_f64();
        let result = answer.as_ref().map_or_else(PollError::result, |_| "ok");
        if let Some(m) = &self.metrics {
            m.doveadm.request(backend, result, queries.len(), secs);
        }
        let mut unknown = 0;
        match answer {
            Ok(statuses) => {
                for ((_, t), s) in chunk.iter().zip(statuses) {
                    self.apply(backend, t, s, &mut unknown);
                }
            }
            Err(e) => {
                tracing::warn!(backend = %backend, mailboxes = queries.len(), error = %e, "doveadm batch poll failed; asking again at the next interval")
            }
        }
        unknown
    }

    /// Hand one mailbox's status to its watcher.
    fn apply(&self, backend: &str, t: &Target, s: Status, unknown: &mut usize) {
        let Some(w) = t.watcher.upgrade() else { return };
        match s {
            Status::Modseq(m) => {
                if m != t.value && w.observe(&t.mailbox, m) {
                    if let Some(mx) = &self.metrics {
                        mx.park.wake("poll");
                    }
                }
            }
            other => {
                *unknown += usize::from(other == Status::NoUser);
                if let (Some(mx), Some(label)) = (&self.metrics, other.error_label()) {
                    mx.doveadm.command_error(backend, label);
                }
                w.check_over_imap(&t.mailbox);
            }
        }
    }
}

/// One watched mailbox, as the batch poller asks for it.
struct Target {
    backend: Arc<Backend>,
    /// The mailbox owner the backend logged in.
    user: String,
    /// As the client named it (modified UTF-7).
    mailbox: String,
    /// The watcher's latest value (the modseq its subscribers know).
    value: u64,
    watcher: Weak<Watcher>,
}

/// Every mailbox someone watches on a backend with a doveadm API.
fn targets(r: &Registry) -> Vec<Target> {
    let mut out = Vec::new();
    for w in r.batch_polled() {
        for (mailbox, value) in w.watched() {
            out.push(Target {
                backend: w.backend().clone(),
                user: w.owner().to_string(),
                mailbox,
                value,
                watcher: Arc::downgrade(&w),
            });
        }
    }
    out
}

/// Targets grouped by backend name, with that backend's endpoint.
fn by_backend(targets: Vec<Target>) -> HashMap<String, (Arc<Endpoint>, Vec<Target>)> {
    let mut out: HashMap<String, (Arc<Endpoint>, Vec<Target>)> = HashMap::new();
    for t in targets {
        let Some(ep) = t.backend.doveadm.clone() else {
            continue;
        };
        out.entry(t.backend.name.clone())
            .or_insert_with(|| (ep, Vec::new()))
            .1
            .push(t);
    }
    out
}

/// Start the batch poller of `registry` (nothing to do without a poll
/// interval: then only push wakes watchers).
pub fn start(
    registry: &Arc<Registry>,
    router: &crate::route::Router,
    timeout: Duration,
    metrics: Option<Arc<Metrics>>,
) {
    let interval = registry.poll_interval();
    if interval.is_zero() {
        return;
    }
    if let Some(m) = &metrics {
        let backends = router.pools.iter().flat_map(|p| &p.backends);
        for b in backends.filter(|b| b.doveadm.is_some()) {
            m.doveadm.backend(&b.name);
        }
    }
    let poller = BatchPoller::new(timeout, metrics);
    tokio::spawn(poller.run(Arc::downgrade(registry), interval));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://10.0.0.5:8080/doveadm/v1")
                .unwrap()
                .to_string(),
            "http://10.0.0.5:8080/doveadm/v1"
        );
        assert_eq!(
            parse_url("http://dovecot:8080").unwrap().to_string(),
            "http://dovecot:8080/doveadm/v1"
        );
        assert_eq!(
            parse_url("http://[::1]:8080/").unwrap().to_string(),
            "http://[::1]:8080/doveadm/v1"
        );
        for bad in [
            "https://d:8080/doveadm/v1",
            "d:8080",
            "/doveadm/v1",
            "http://u:p@d:8080/doveadm/v1",
            "not a url",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_key_is_sent_base64_and_never_shown() {
        let ep = Endpoint::new("http://d:8080/doveadm/v1", b"s3cret").unwrap();
        assert_eq!(ep.authorization.to_str().unwrap(), "X-Dovecot-API czNjcmV0");
        assert!(ep.authorization.is_sensitive());
        let dbg = format!("{ep:?}");
        assert!(
            !dbg.contains("czNjcmV0") && !dbg.contains("s3cret"),
            "{dbg}"
        );
    }

    fn backend(url: Option<&str>, key: Option<&Path>) -> BackendConfig {
        let mut t = String::from("name = \"b\"\naddress = \"127.0.0.1:143\"\n");
        if let Some(u) = url {
            t.push_str(&format!("doveadm_url = {u:?}\n"));
        }
        if let Some(k) = key {
            t.push_str(&format!(
                "doveadm_api_key_file = {:?}\n",
                k.display().to_string()
            ));
        }
        toml::from_str(&t).unwrap()
    }

    #[test]
    fn config_checks_name_the_key_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "s3cret\nignored\n").unwrap();
        let url = "http://127.0.0.1:8080/doveadm/v1";
        assert!(validate_backend(&backend(None, None), "k").is_ok());
        let ok = backend(Some(url), Some(&key));
        assert!(validate_backend(&ok, "k").is_ok());
        let ep = Endpoint::from_config(&ok, "k").unwrap().unwrap();
        assert_eq!(ep.authorization.to_str().unwrap(), "X-Dovecot-API czNjcmV0");
        let e = validate_backend(&backend(Some(url), None), "k")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("k.doveadm_api_key_file") && e.contains("fix"),
            "{e}"
        );
        let e = validate_backend(&backend(None, Some(&key)), "k")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("k.doveadm_api_key_file") && e.contains("doveadm_url"),
            "{e}"
        );
        let e = validate_backend(&backend(Some("https://x:1/"), Some(&key)), "k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("k.doveadm_url") && e.contains("http://"), "{e}");
        // A missing or empty key file is found when the router is built
        // (check-config builds it too).
        let missing = dir.path().join("nope");
        let (k, p) = Endpoint::from_config(&backend(Some(url), Some(&missing)), "k").unwrap_err();
        assert_eq!(k, "k.doveadm_api_key_file");
        assert!(p.contains("fix"), "{p}");
        std::fs::write(&key, "\n").unwrap();
        let (_, p) = Endpoint::from_config(&ok, "k").unwrap_err();
        assert!(p.contains("empty"), "{p}");
    }

    #[test]
    fn unused_settings_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(Some("http://d:1/"), Some(&dir.path().join("k")));
        let mut m = MultiplexConfig::default();
        assert!(warning(&b, &m).is_none());
        m.poll_interval = Duration::ZERO;
        assert!(warning(&b, &m).unwrap().contains("doveadm_url is not used"));
        assert!(warning(&backend(None, None), &m).is_none());
    }

    /// A one-shot HTTP server answering `response` (raw bytes) after
    /// reading the request head; returns its URL.
    async fn server(response: Vec<u8>, delay: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/doveadm/v1", l.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            tokio::time::sleep(delay).await;
            let _ = s.write_all(&response).await;
            let _ = s.shutdown().await;
        });
        url
    }

    fn http(status: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    #[tokio::test]
    async fn hostile_answers_are_bounded_and_classified() {
        let p = BatchPoller::new(Duration::from_millis(500), None);
        let qs = [Query {
            user: "u1".into(),
            mailbox: "INBOX".into(),
        }];
        let ask = |url: String| {
            let p = p.clone();
            let qs = qs.clone();
            async move {
                let ep = Endpoint::new(&url, b"k").unwrap();
                p.status(&ep, &qs).await
            }
        };
        let ok = br#"[["doveadmResponse",[{"mailbox":"INBOX","highestmodseq":"9"}],"0"]]"#;
        let url = server(http("200 OK", ok), Duration::ZERO).await;
        assert_eq!(ask(url).await.unwrap(), vec![Status::Modseq(9)]);
        let url = server(http("401 Authentication required", b""), Duration::ZERO).await;
        assert_eq!(ask(url).await.unwrap_err().result(), "unauthorized");
        let url = server(http("500 Internal Server Error", b"x"), Duration::ZERO).await;
        assert_eq!(ask(url).await.unwrap_err().result(), "http_error");
        let url = server(http("200 OK", b"<html>"), Duration::ZERO).await;
        assert_eq!(ask(url).await.unwrap_err().result(), "bad_response");
        // Larger than the bound for one command: refused, never buffered
        // whole (announced length or not).
        let big = vec![b' '; doveadm::max_response(1) + 1];
        let url = server(http("200 OK", &big), Duration::ZERO).await;
        assert!(matches!(ask(url).await, Err(PollError::TooLarge(_))));
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..10 {
            chunked.extend_from_slice(format!("{:x}\r\n", 4096).as_bytes());
            chunked.extend_from_slice(&[b' '; 4096]);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let url = server(chunked, Duration::ZERO).await;
        assert!(matches!(ask(url).await, Err(PollError::TooLarge(_))));
        // Too slow: the whole exchange has a deadline.
        let url = server(http("200 OK", ok), Duration::from_secs(3)).await;
        let t0 = Instant::now();
        assert_eq!(ask(url).await.unwrap_err().result(), "timeout");
        assert!(t0.elapsed() < Duration::from_secs(2));
        // Nobody listening.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        drop(l);
        assert_eq!(ask(url).await.unwrap_err().result(), "connect");
    }
}
