//! Tests of `admin`.

use super::*;
use crate::config::Config;

fn state() -> AdminState {
    let cfg = Config::parse(
        "[[listener]]\naddress = \"127.0.0.1:1143\"\nmode = \"plaintext\"\n\
         [[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b1\"\naddress = \"127.0.0.1:1\"\n",
        std::path::Path::new("t"),
    )
    .unwrap();
    let router = Arc::new(Router::from_config(&cfg).unwrap());
    let metrics = Arc::new(Metrics::new().unwrap());
    metrics.attach_router(router.clone()).unwrap();
    AdminState {
        metrics,
        readiness: Arc::new(Readiness::new(router)),
        push_secret: None,
        wake: Arc::new(crate::multiplex::wake::NoWake),
        instance: crate::multiplex::fanout::InstanceId::fixed("0123456789abcdef"),
        fanout: None,
        api: None,
    }
}

fn get(state: &AdminState, method: Method, path: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .unwrap();
    let r = handle(state, &req);
    let status = r.status();
    let body = futures_body(r);
    (status, body)
}

fn futures_body(r: Response<Full<Bytes>>) -> String {
    use http_body_util::BodyExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bytes = rt.block_on(r.into_body().collect()).unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn routes() {
    let s = state();
    assert_eq!(
        get(&s, Method::GET, "/healthz"),
        (StatusCode::OK, "ok\n".into())
    );
    assert_eq!(
        get(&s, Method::GET, "/readyz"),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "listeners not bound yet\n".into()
        )
    );
    s.readiness.set_listeners_bound();
    assert_eq!(get(&s, Method::GET, "/readyz?x=1").0, StatusCode::OK);
    for b in s.readiness.router.load().backends() {
        b.set_up(false);
    }
    assert_eq!(
        get(&s, Method::GET, "/readyz"),
        (StatusCode::SERVICE_UNAVAILABLE, "no backend is up\n".into())
    );
    let (st, body) = get(&s, Method::GET, "/metrics");
    assert_eq!(st, StatusCode::OK);
    assert!(
        body.contains("imapmux_backend_up{backend=\"b1\"} 0"),
        "{body}"
    );
    for b in s.readiness.router.load().backends() {
        b.set_up(true);
    }
    s.readiness.set_draining();
    assert_eq!(
        get(&s, Method::GET, "/readyz"),
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
    );
    assert_eq!(
        get(&s, Method::POST, "/metrics").0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(get(&s, Method::GET, "/nope").0, StatusCode::NOT_FOUND);
    assert_eq!(get(&s, Method::HEAD, "/healthz").0, StatusCode::OK);
}

/// Records every wake-up; says two watchers woke for each.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(String, String)>>);

impl WakeSink for Recorder {
    fn wake(&self, user: &str, mailbox: &str) -> usize {
        self.0.lock().unwrap().push((user.into(), mailbox.into()));
        2
    }
}

fn push_state(secret: &str) -> (AdminState, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let mut s = state();
    s.push_secret = PushSecret::new(secret.as_bytes());
    s.wake = rec.clone();
    (s, rec)
}

fn push(
    state: &AdminState,
    method: Method,
    auth: Option<&str>,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri("/push");
    if let Some(a) = auth {
        b = b.header(AUTHORIZATION, a);
    }
    let req = b.body(Full::new(body.into())).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(respond(state, req))
}

fn push_count(state: &AdminState, result: &str) -> u64 {
    let t = state.metrics.encode().unwrap();
    let series = format!("imapmux_push_events_total{{result=\"{result}\"}} ");
    t.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in\n{t}"))
}

const OX_BODY: &str = r#"{"user":"u1","event":"messageNew","folder":"INBOX","imap-uidvalidity":7,"imap-uid":4,"from":"a@b","subject":"TOPSECRET","snippet":"hello","unseen":1}"#;

#[test]
fn push_off_is_not_found() {
    let s = state();
    let r = push(&s, Method::PUT, Some("Bearer x"), OX_BODY);
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(push_count(&s, "unauthorized"), 0);
    assert_eq!(push_count(&s, "accepted"), 0);
}

#[test]
fn push_accepted_wakes() {
    use base64::Engine;
    let (s, rec) = push_state("s3cret");
    // The OX driver: PUT, Basic with the URL's user:password.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("dovecot:s3cret")
    );
    let r = push(&s, Method::PUT, Some(&basic), OX_BODY);
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // imapmux's format, POST with Bearer, two events.
    let body = r#"[{"user":"u1","mailbox":"Sent","event":"MessageAppend"},{"user":"u2","mailbox":"INBOX","event":"FlagsSet"},{"user":"u2","mailbox":"INBOX","event":"FlagsClear"}]"#;
    let r = push(&s, Method::POST, Some("Bearer s3cret"), body);
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        *rec.0.lock().unwrap(),
        vec![
            ("u1".into(), "INBOX".into()),
            ("u1".into(), "Sent".into()),
            ("u2".into(), "INBOX".into())
        ]
    );
    // Every event counted; (u2, INBOX) woken once.
    assert_eq!(push_count(&s, "accepted"), 4);
    let t = s.metrics.encode().unwrap();
    assert!(t.contains("imapmux_push_woken_total 6"), "{t}");
    assert!(!t.contains("u1") && !t.contains("Sent"), "{t}");
}

fn metric_line(state: &AdminState, series: &str) -> u64 {
    let t = state.metrics.encode().unwrap();
    let prefix = format!("{series} ");
    t.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in\n{t}"))
}

/// A direct push is woken here and queued for the peers; a forwarded one
/// is woken and never queued again; our own forward coming back does
/// nothing. Every accepted answer names this process.
#[test]
fn push_origin_decides_forwarding() {
    use crate::multiplex::fanout::{self, ForwardAuth, InstanceId};
    let (mut s, rec) = push_state("s3cret");
    let cfg = fanout::FanoutConfig {
        targets: vec![fanout::peers::Target::parse("10.9.9.9:9143").unwrap()],
        refresh: std::time::Duration::from_secs(15),
        auth: ForwardAuth::new(b"s3cret"),
        own: None,
        limits: Default::default(),
    };
    let (f, _) = fanout::Fanout::new(&cfg, s.instance.clone(), s.metrics.clone());
    s.fanout = Some(f);
    assert_eq!(metric_line(&s, "imapmux_push_peers"), 1);
    let body = r#"[{"user":"u1","mailbox":"INBOX","event":"MessageNew"},{"user":"u1","mailbox":"Sent","event":"MessageAppend"}]"#;
    let send = |forwarded: Option<&str>| {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri("/push")
            .header(AUTHORIZATION, "Bearer s3cret");
        if let Some(id) = forwarded {
            b = b.header(fanout::FORWARDED_HEADER, id);
        }
        let req = b.body(Full::new(Bytes::from(body))).unwrap();
        let r = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(respond(&s, req));
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let id = r.headers().get(fanout::INSTANCE_HEADER).unwrap();
        assert_eq!(id.as_bytes(), s.instance.as_str().as_bytes());
    };
    send(None);
    assert_eq!(rec.0.lock().unwrap().len(), 2);
    assert_eq!(metric_line(&s, "imapmux_push_forward_pending"), 2);
    assert_eq!(metric_line(&s, "imapmux_push_peer_events_total"), 0);
    // From a peer: woken, counted, not queued.
    send(Some(InstanceId::fixed("feedfacefeedface").as_str()));
    assert_eq!(rec.0.lock().unwrap().len(), 4);
    assert_eq!(metric_line(&s, "imapmux_push_forward_pending"), 2);
    assert_eq!(metric_line(&s, "imapmux_push_peer_events_total"), 2);
    // A malformed forwarded header still stops forwarding.
    send(Some("?"));
    assert_eq!(metric_line(&s, "imapmux_push_forward_pending"), 2);
    // Our own forward: nothing at all.
    send(Some(s.instance.as_str()));
    assert_eq!(rec.0.lock().unwrap().len(), 6);
    assert_eq!(push_count(&s, "accepted"), 6);
    assert_eq!(metric_line(&s, "imapmux_push_forward_pending"), 2);
}

#[test]
fn push_unauthorized() {
    use base64::Engine;
    let (s, rec) = push_state("s3cret");
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("dovecot:nope")
    );
    for auth in [
        None,
        Some("Bearer nope"),
        Some(wrong.as_str()),
        Some("s3cret"),
    ] {
        let r = push(&s, Method::PUT, auth, OX_BODY);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let challenges: Vec<_> = r.headers().get_all(WWW_AUTHENTICATE).iter().collect();
        assert_eq!(challenges.len(), 2, "{auth:?}");
    }
    // Unauthenticated requests learn nothing about method or body.
    let r = push(&s, Method::GET, None, "");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(rec.0.lock().unwrap().is_empty());
    assert_eq!(push_count(&s, "unauthorized"), 5);
    assert_eq!(push_count(&s, "accepted"), 0);
}

#[test]
fn push_bad_requests() {
    let (s, rec) = push_state("s3cret");
    let auth = Some("Bearer s3cret");
    let r = push(&s, Method::GET, auth, "");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()[ALLOW], "POST, PUT");
    let r = push(&s, Method::POST, auth, "{not json");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = push(
        &s,
        Method::POST,
        auth,
        r#"{"user":"u1","event":"messageNew"}"#,
    );
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(futures_body(r).contains("mailbox"));
    // Over 64 KiB: refused by Content-Length (Full announces it) ...
    let big = format!(
        r#"{{"user":"u1","mailbox":"INBOX","event":"e","snippet":"{}"}}"#,
        "x".repeat(MAX_BODY)
    );
    let r = push(&s, Method::POST, auth, big.clone());
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // ... and while reading when the length is not announced.
    let (parts, _) = Request::builder()
        .method(Method::POST)
        .uri("/push")
        .header(AUTHORIZATION, "Bearer s3cret")
        .body(())
        .unwrap()
        .into_parts();
    let chunks = futures_stream(big.into_bytes());
    let req = Request::from_parts(parts, chunks);
    let r = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(respond(&s, req));
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly 64 KiB is fine.
    let pad = MAX_BODY - r#"{"user":"u1","mailbox":"INBOX","event":"e","snippet":""}"#.len();
    let max = format!(
        r#"{{"user":"u1","mailbox":"INBOX","event":"e","snippet":"{}"}}"#,
        "x".repeat(pad)
    );
    assert_eq!(max.len(), MAX_BODY);
    let r = push(&s, Method::POST, auth, max);
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(rec.0.lock().unwrap().len(), 1);
    assert_eq!(push_count(&s, "bad_request"), 5);
    assert_eq!(push_count(&s, "unauthorized"), 0);
}

/// A body of unknown length, in 1 KiB frames.
struct Chunks(std::collections::VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

fn futures_stream(data: Vec<u8>) -> Chunks {
    Chunks(data.chunks(1024).map(Bytes::copy_from_slice).collect())
}

#[test]
fn full_admin_server_closes_the_connection_idle_longest() {
    let conns = Arc::new(Mutex::new(Conns::default()));
    let t = Instant::now();
    let at = |s| t + Duration::from_secs(s);
    let (a, mut a_closed) = Conns::admit(&conns, 3, at(0)).unwrap();
    let (b, mut b_closed) = Conns::admit(&conns, 3, at(1)).unwrap();
    let (c, mut c_closed) = Conns::admit(&conns, 3, at(2)).unwrap();
    // The oldest is answering a request: the next oldest idle one goes.
    a.set_busy(true);
    let (d, _d_closed) = Conns::admit(&conns, 3, at(3)).unwrap();
    assert!(b_closed.try_recv().is_ok(), "b idle longest: closed");
    assert!(a_closed.try_recv().is_err() && c_closed.try_recv().is_err());
    assert_eq!(lock(&conns).open.len(), 3);
    drop(b); // its task ends: nothing left to remove
    assert_eq!(lock(&conns).open.len(), 3);
    // Every connection busy: the new one is not admitted.
    c.set_busy(true);
    d.set_busy(true);
    assert!(Conns::admit(&conns, 3, at(4)).is_none());
    // An answered request makes its connection idle again (since now).
    a.set_busy(false);
    assert!(Conns::admit(&conns, 3, at(5)).is_some());
    assert!(a_closed.try_recv().is_ok());
    drop((a, c, d));
    assert!(lock(&conns).open.is_empty());
}
