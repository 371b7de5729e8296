//! Observability against real Dovecot: sessions through imapmux move the
//! Prometheus counters by exactly the right amounts, the scrape passes
//! `promtool check metrics`, and `/healthz` and `/readyz` follow the
//! backends and the shutdown drain.
//!
//! The scrape and the list of exported metric names are written to
//! `target/observability/` for `scripts/check-observability`, which checks
//! the dashboard and alert rules against them; a second run with a
//! passwd-file auth source (whose metric families exist only with a
//! verifying source) is written to `target/observability/auth-source/`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------
// A tiny HTTP client and a parser for the text exposition format
// ---------------------------------------------------------------------------

/// `GET path` on the admin address → (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect admin {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read admin {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (status, body.to_string())
}

/// One scrape: series (name plus sorted labels) → value.
#[derive(Debug, Clone)]
struct Scrape {
    text: String,
    series: BTreeMap<String, f64>,
}

fn series_key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<_> = labels.to_vec();
    l.sort();
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    if inner.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", inner.join(","))
    }
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut series = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (id, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let key = match id.split_once('{') {
                None => id.to_string(),
                Some((name, rest)) => {
                    let rest = rest.trim_end_matches('}');
                    let labels: Vec<(&str, &str)> = rest
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').expect("label pair");
                            (k, v.trim_matches('"'))
                        })
                        .collect();
                    series_key(name, &labels)
                }
            };
            series.insert(key, value);
        }
        Scrape { text, series }
    }

    /// The value of a series; 0 when it does not exist (yet).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .get(&series_key(name, labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// Sum over every series of a metric name.
    fn sum(&self, name: &str) -> f64 {
        self.series
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }

    /// Metric family names from the `# TYPE` lines.
    fn families(&self) -> Vec<(String, String)> {
        self.text
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("# TYPE ")?.split(' ');
                Some((w.next()?.to_string(), w.next()?.to_string()))
            })
            .collect()
    }
}

fn scrape(admin: &str) -> Scrape {
    let (status, body) = http_get(admin, "/metrics");
    assert_eq!(status, 200, "/metrics: {body}");
    Scrape::parse(body)
}

/// Scrape until `ok` holds (10 s), return that scrape; panic with the last.
fn scrape_until(admin: &str, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let mut last = None;
    let found = wait_until(Duration::from_secs(10), || {
        let s = scrape(admin);
        if ok(&s) {
            return Some(s);
        }
        last = Some(s);
        None
    });
    found.unwrap_or_else(|| {
        panic!(
            "timed out waiting for {what}; last scrape:\n{}",
            last.map(|s| s.text).unwrap_or_default()
        )
    })
}

fn out_dir() -> PathBuf {
    let d = repo_root().join("target").join("observability");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Write the scrape, its metric family names and their types into `dir`
/// (for scripts/check-observability), then lint it with
/// `promtool check metrics`.
fn save_and_lint(dir: &std::path::Path, end: &Scrape) {
    std::fs::create_dir_all(dir).unwrap();
    let scrape_path = dir.join("metrics.txt");
    std::fs::write(&scrape_path, &end.text).unwrap();
    let mut names: Vec<String> = end.families().into_iter().map(|(n, _)| n).collect();
    names.sort();
    names.dedup();
    std::fs::write(dir.join("metric-names.txt"), names.join("\n") + "\n").unwrap();
    let types: Vec<String> = end
        .families()
        .into_iter()
        .map(|(n, t)| format!("{n} {t}"))
        .collect();
    std::fs::write(dir.join("metric-types.txt"), types.join("\n") + "\n").unwrap();
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(end.text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn promtool() -> PathBuf {
    find_tool("promtool").unwrap_or_else(|| {
        panic!(
            "promtool is not installed (Debian package prometheus). Run scripts/install-deps \
             (scripts/test runs it) and retry."
        )
    })
}

// ---------------------------------------------------------------------------
// Raw plaintext session with exact byte accounting
// ---------------------------------------------------------------------------

struct Raw {
    s: tokio::net::TcpStream,
    buf: Vec<u8>,
    sent: usize,
    received: usize,
}

impl Raw {
    async fn connect(addr: &str) -> Raw {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut r = Raw {
            s,
            buf: Vec::new(),
            sent: 0,
            received: 0,
        };
        r.read_until(|b| b.ends_with(b"\r\n")).await;
        r
    }

    async fn read_until(&mut self, done: impl Fn(&[u8]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done(&self.buf) {
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout_at(deadline, self.s.read(&mut chunk))
                .await
                .expect("raw session read timed out")
                .unwrap();
            if n == 0 {
                return;
            }
            self.received += n;
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Send `tag cmd`, read through the tagged answer; returns its status word.
    async fn cmd(&mut self, tag: &str, cmd: &str) -> String {
        let line = format!("{tag} {cmd}\r\n");
        self.s.write_all(line.as_bytes()).await.unwrap();
        self.sent += line.len();
        self.buf.clear();
        let needle = format!("{tag} ");
        let tagged = |b: &[u8]| -> Option<usize> {
            let text = String::from_utf8_lossy(b);
            let start = if text.starts_with(&needle) {
                Some(0)
            } else {
                text.find(&format!("\r\n{needle}")).map(|i| i + 2)
            }?;
            text[start..].contains("\r\n").then_some(start)
        };
        self.read_until(|b| tagged(b).is_some()).await;
        let start = tagged(&self.buf).expect("tagged answer");
        let text = String::from_utf8_lossy(&self.buf[start..]).into_owned();
        text.split(' ').nth(1).unwrap_or_default().to_string()
    }

    /// LOGOUT and read until the proxy closes.
    async fn logout(mut self, tag: &str) -> (usize, usize) {
        assert_eq!(self.cmd(tag, "LOGOUT").await, "OK");
        self.read_until(|_| false).await;
        (self.sent, self.received)
    }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// (metric, labels, expected change).
type Expected = (&'static str, &'static [(&'static str, &'static str)], f64);

const CACHE: &str = "[cache]\nenabled = true\nmax_bytes = \"64MiB\"\n";

async fn tls_login(addr: &str, user: &str, pass: &str) -> (ImapClient, Response) {
    let mut c = ImapClient::connect_tls(addr, &TlsClient::insecure())
        .await
        .unwrap();
    let r = c.login(user, pass).await.unwrap();
    (c, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_the_right_amounts_and_the_scrape_passes_promtool() {
    // doveadm_url on: the doveadm poll series exist from the start.
    let dovecot = Dovecot::builder().messages(3).doveadm_http().start();
    let (tls_addr, stls_addr, plain_addr, admin) =
        (free_addr(), free_addr(), free_addr(), free_addr());
    let cfg = ProxyConfig::new()
        .listener(&tls_addr, "implicit")
        .listener(&stls_addr, "starttls")
        .listener(&plain_addr, "plaintext")
        .allow_plaintext_auth(true)
        .max_connections(500)
        .admin(&admin)
        .backend(
            BackendCfg::new("b1", &dovecot.addr())
                .doveadm(&dovecot.doveadm_url(), dovecot.doveadm_key_file()),
        )
        .extra(CACHE)
        .to_toml();
    let _proxy = Imapmux::start(&cfg, &tls_addr);
    assert!(wait_for_port(&admin, Duration::from_secs(10)));

    let (st, body) = http_get(&admin, "/healthz");
    assert_eq!((st, body.as_str()), (200, "ok\n"));
    let (st, body) = http_get(&admin, "/readyz");
    assert_eq!((st, body.as_str()), (200, "ready\n"));
    assert_eq!(http_get(&admin, "/nothing-here").0, 404);

    let base = scrape(&admin);
    assert_eq!(base.get("imapmux_client_connections_max", &[]), 500.0);
    assert_eq!(base.get("imapmux_backend_up", &[("backend", "b1")]), 1.0);
    assert_eq!(base.get("imapmux_client_connections_open", &[]), 0.0);
    assert_eq!(
        base.get(
            "imapmux_doveadm_poll_requests_total",
            &[("backend", "b1"), ("result", "ok")]
        ),
        0.0
    );
    assert_eq!(
        base.get(
            "imapmux_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let ended = |s: &Scrape| {
        s.sum("imapmux_sessions_ended_total") - base.sum("imapmux_sessions_ended_total")
    };

    // A: implicit TLS, login ok, commands with every result, cached FETCH.
    let (mut a, r) = tls_login(&tls_addr, "user1", "pass1").await;
    assert!(r.is_ok(), "{r}");
    a.select("INBOX").await.unwrap();
    let first = a.fetch_body(1).await.unwrap();
    let again = a.fetch_body(1).await.unwrap();
    assert_eq!(first, again);
    a.cmd_ok("NOOP").await.unwrap();
    assert!(a.cmd("XNOSUCHCOMMAND").await.unwrap().is_bad());
    assert!(a.cmd("SELECT NoSuchFolder").await.unwrap().is_no());
    // While A is logged in: one client and one backend connection open.
    let mid = scrape(&admin);
    assert_eq!(mid.get("imapmux_client_connections_open", &[]), 1.0);
    assert_eq!(
        mid.get("imapmux_backend_connections_open", &[("backend", "b1")]),
        1.0
    );
    a.logout().await.unwrap();

    // B: implicit TLS, two failed logins, LOGOUT before login.
    let (mut b, r) = tls_login(&tls_addr, "user2", "wrong").await;
    assert!(r.is_no(), "{r}");
    assert!(b.login("user2", "wrong again").await.unwrap().is_no());
    b.logout().await.unwrap();

    // C: STARTTLS, login ok, NOOP, then just close.
    let mut c = ImapClient::connect_starttls(&stls_addr, &TlsClient::insecure())
        .await
        .unwrap();
    assert!(c.login("user3", "pass3").await.unwrap().is_ok());
    c.cmd_ok("NOOP").await.unwrap();
    drop(c);

    // A failed TLS handshake: plaintext to the implicit-TLS port.
    {
        let mut s = TcpStream::connect(&tls_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"a1 LOGIN user1 pass1\r\n").unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let after = scrape_until(&admin, "4 ended sessions", |s| ended(s) == 4.0);

    // D: plaintext, exact bytes each way (nothing else runs meanwhile).
    let mut d = Raw::connect(&plain_addr).await;
    assert_eq!(d.cmd("d1", "LOGIN user4 pass4").await, "OK");
    assert_eq!(d.cmd("d2", "SELECT INBOX").await, "OK");
    assert_eq!(d.cmd("d3", "UID FETCH 1 BODY.PEEK[]").await, "OK");
    let (sent, received) = d.logout("d4").await;
    let end = scrape_until(&admin, "5 ended sessions", |s| ended(s) == 5.0);
    let delta =
        |name: &str, labels: &[(&str, &str)]| end.get(name, labels) - base.get(name, labels);
    assert_eq!(
        end.get("imapmux_client_received_bytes_total", &[])
            - after.get("imapmux_client_received_bytes_total", &[]),
        sent as f64,
        "bytes from the client in session D"
    );
    assert_eq!(
        end.get("imapmux_client_sent_bytes_total", &[])
            - after.get("imapmux_client_sent_bytes_total", &[]),
        received as f64,
        "bytes to the client in session D"
    );
    assert!(after.get("imapmux_client_received_bytes_total", &[]) > 0.0);
    assert!(
        after.get("imapmux_client_sent_bytes_total", &[]) > 3.0 * first.len() as f64,
        "the bodies A fetched count in the sent bytes"
    );

    let expect: &[Expected] = &[
        ("imapmux_logins_total", &[("result", "ok")], 3.0),
        ("imapmux_logins_total", &[("result", "failed")], 2.0),
        ("imapmux_logins_total", &[("result", "unavailable")], 0.0),
        (
            "imapmux_auth_duration_seconds_count",
            &[("result", "ok")],
            3.0,
        ),
        (
            "imapmux_auth_duration_seconds_count",
            &[("result", "failed")],
            2.0,
        ),
        (
            "imapmux_client_connections_accepted_total",
            &[("listener", "0"), ("mode", "implicit")],
            3.0,
        ),
        (
            "imapmux_client_connections_accepted_total",
            &[("listener", "1"), ("mode", "starttls")],
            1.0,
        ),
        (
            "imapmux_client_connections_accepted_total",
            &[("listener", "2"), ("mode", "plaintext")],
            1.0,
        ),
        (
            "imapmux_client_connections_rejected_total",
            &[("reason", "max_connections")],
            0.0,
        ),
        (
            "imapmux_tls_handshake_failures_total",
            &[("mode", "implicit"), ("reason", "error")],
            1.0,
        ),
        (
            "imapmux_commands_total",
            &[("command", "select"), ("result", "ok")],
            2.0,
        ),
        (
            "imapmux_commands_total",
            &[("command", "select"), ("result", "no")],
            1.0,
        ),
        (
            "imapmux_commands_total",
            &[("command", "uid_fetch"), ("result", "ok")],
            3.0,
        ),
        (
            "imapmux_commands_total",
            &[("command", "noop"), ("result", "ok")],
            2.0,
        ),
        (
            "imapmux_commands_total",
            &[("command", "other"), ("result", "bad")],
            1.0,
        ),
        (
            "imapmux_commands_total",
            &[("command", "logout"), ("result", "ok")],
            2.0,
        ),
        (
            "imapmux_command_duration_seconds_count",
            &[("command", "uid_fetch")],
            3.0,
        ),
        (
            "imapmux_command_duration_seconds_count",
            &[("command", "select")],
            3.0,
        ),
        ("imapmux_sessions_ended_total", &[("reason", "logout")], 3.0),
        (
            "imapmux_sessions_ended_total",
            &[("reason", "client_closed")],
            1.0,
        ),
        (
            "imapmux_sessions_ended_total",
            &[("reason", "tls_handshake_failed")],
            1.0,
        ),
        ("imapmux_session_duration_seconds_count", &[], 5.0),
        (
            "imapmux_backend_connect_duration_seconds_count",
            &[("backend", "b1")],
            5.0,
        ),
        (
            "imapmux_backend_login_duration_seconds_count",
            &[("backend", "b1")],
            5.0,
        ),
        (
            "imapmux_backend_health_check_failures_total",
            &[("backend", "b1")],
            0.0,
        ),
    ];
    let mut wrong = Vec::new();
    for (name, labels, want) in expect {
        let got = delta(name, labels);
        if got != *want {
            wrong.push(format!(
                "{}: moved by {got}, expected {want}",
                series_key(name, labels)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\nscrape:\n{}",
        wrong.join("\n"),
        end.text
    );
    // 11 relayed commands in all (A: 7, C: 1, D: 3; LOGIN is not relayed).
    assert_eq!(
        end.sum("imapmux_commands_total") - base.sum("imapmux_commands_total"),
        11.0,
        "{}",
        end.text
    );
    assert_eq!(end.get("imapmux_client_connections_open", &[]), 0.0);
    assert_eq!(
        end.get("imapmux_backend_connections_open", &[("backend", "b1")]),
        0.0
    );
    // The cache: A's second FETCH and D's FETCH of the same UID are
    // different users, so only A's repeat can hit.
    assert!(
        delta("imapmux_cache_fills_total", &[]) > 0.0,
        "{}",
        end.text
    );
    assert!(delta("imapmux_cache_hits_total", &[]) > 0.0, "{}", end.text);
    assert!(
        delta("imapmux_cache_served_bytes_total", &[]) > 0.0,
        "{}",
        end.text
    );
    assert!(end.get("imapmux_cache_bytes", &[]) > 0.0, "{}", end.text);
    assert_eq!(
        end.get("imapmux_cache_max_bytes", &[]),
        64.0 * 1024.0 * 1024.0
    );

    // No user data in labels.
    for secret in [
        "user1",
        "user2",
        "user4",
        "pass1",
        "wrong",
        "127.0.0.1",
        "INBOX",
        "NoSuchFolder",
    ] {
        assert!(
            !end.text.contains(secret),
            "{secret:?} appears in the scrape"
        );
    }

    // Save for scripts/check-observability, then lint with promtool.
    save_and_lint(&out_dir(), &end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_backend_health_and_the_drain() {
    let mut dovecot = Dovecot::builder().start();
    let (addr, admin) = (free_addr(), free_addr());
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .admin(&admin)
        .health("300ms", "1s", 1, 1)
        .timeout("drain", "20s")
        .backend(BackendCfg::new("b1", &dovecot.addr()))
        .to_toml();
    let mut proxy = Imapmux::start(&cfg, &addr);
    assert!(wait_for_port(&admin, Duration::from_secs(10)));
    assert_eq!(http_get(&admin, "/readyz").0, 200);

    // The only backend goes down: not ready, backend_up 0, failures counted.
    dovecot.stop();
    let ready = wait_until(Duration::from_secs(10), || {
        let (st, body) = http_get(&admin, "/readyz");
        (st == 503).then_some(body)
    });
    assert_eq!(ready.as_deref(), Some("no backend is up\n"));
    let s = scrape(&admin);
    assert_eq!(s.get("imapmux_backend_up", &[("backend", "b1")]), 0.0);
    assert!(
        s.get(
            "imapmux_backend_health_check_failures_total",
            &[("backend", "b1")]
        ) >= 1.0
    );
    assert_eq!(
        http_get(&admin, "/healthz").0,
        200,
        "alive even when not ready"
    );
    // A login now is "unavailable".
    let (c0, r) = tls_login(&addr, "user1", "pass1").await;
    assert!(r.is_no(), "{r}");
    assert!(r.code("UNAVAILABLE").is_some(), "{r}");
    drop(c0);
    scrape_until(&admin, "an unavailable login, its session closed", |s| {
        s.get("imapmux_logins_total", &[("result", "unavailable")]) == 1.0
            && s.get("imapmux_client_connections_open", &[]) == 0.0
    });

    // Back up: ready again.
    dovecot.restart();
    let ok = wait_until(Duration::from_secs(10), || {
        (http_get(&admin, "/readyz").0 == 200).then_some(())
    });
    assert!(ok.is_some(), "not ready after the backend came back");
    scrape_until(&admin, "backend up", |s| {
        s.get("imapmux_backend_up", &[("backend", "b1")]) == 1.0
    });

    // SIGTERM with a session open: /readyz says draining while it drains,
    // /metrics still answers.
    let (mut c, r) = tls_login(&addr, "user1", "pass1").await;
    assert!(r.is_ok(), "{r}");
    proxy.sigterm();
    let draining = wait_until(Duration::from_secs(10), || {
        let (st, body) = http_get(&admin, "/readyz");
        (st == 503).then_some(body)
    });
    assert_eq!(draining.as_deref(), Some("draining\n"));
    assert_eq!(
        scrape(&admin).get("imapmux_client_connections_open", &[]),
        1.0
    );
    c.logout().await.unwrap();
    assert!(
        proxy.wait_exit(Duration::from_secs(15)).is_some(),
        "imapmux did not exit after the last session; log:\n{}",
        proxy.log()
    );
}

/// The auth source families exist only once a verifying source is built:
/// a passwd-file source answers, the result cache and the brute-force
/// defence step in, and the counters move by exactly that. The scrape is
/// saved to target/observability/auth-source/ for
/// scripts/check-observability, which checks the dashboard and rules
/// against both scrapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_source_counters_move_and_the_scrape_passes_promtool() {
    let dovecot = Dovecot::builder().start();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        format!("user1:{}\n", hash_password("SHA512-CRYPT", "pass1")),
    )
    .unwrap();
    let (addr, admin) = (free_addr(), free_addr());
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .admin(&admin)
        .backend(BackendCfg::new("b1", &dovecot.addr()))
        .extra(&format!(
            "[auth]\nsource = \"passwd-file\"\n[auth.passwd_file]\npath = {}\n\
             [auth.penalty]\nbase_delay = \"100ms\"\nmax_delay = \"200ms\"\nmax_failures_per_user = 2\n",
            toml_str(users.to_str().unwrap())
        ))
        .to_toml();
    let _proxy = Imapmux::start(&cfg, &addr);
    assert!(wait_for_port(&admin, Duration::from_secs(10)));

    let source = ("source", "passwd-file");
    let base = scrape(&admin);
    for result in ["ok", "rejected", "error", "cached_ok", "cached_rejected"] {
        let key = series_key(
            "imapmux_auth_source_requests_total",
            &[source, ("result", result)],
        );
        assert_eq!(
            base.series.get(&key),
            Some(&0.0),
            "{key} at 0\n{}",
            base.text
        );
    }
    for action in ["delayed", "refused"] {
        let key = series_key("imapmux_auth_penalty_total", &[("action", action)]);
        assert_eq!(
            base.series.get(&key),
            Some(&0.0),
            "{key} at 0\n{}",
            base.text
        );
    }

    // Verified by the file, then the same login again from the cache.
    for _ in 0..2 {
        let (mut c, r) = tls_login(&addr, "user1", "pass1").await;
        assert!(r.is_ok(), "{r}");
        c.logout().await.unwrap();
    }
    // user2 is not in the file: rejected; the same again is delayed by the
    // penalty and answered from the cache; the third attempt reaches
    // max_failures_per_user and is refused unverified.
    let (c, r) = tls_login(&addr, "user2", "pass2").await;
    assert!(r.code("AUTHENTICATIONFAILED").is_some(), "{r}");
    drop(c);
    let (c, r) = tls_login(&addr, "user2", "pass2").await;
    assert!(r.code("AUTHENTICATIONFAILED").is_some(), "{r}");
    drop(c);
    let (c, r) = tls_login(&addr, "user2", "pass2").await;
    assert!(r.code("UNAVAILABLE").is_some(), "{r}");
    drop(c);

    let end = scrape_until(&admin, "5 logins", |s| {
        s.sum("imapmux_logins_total") - base.sum("imapmux_logins_total") == 5.0
    });
    let delta =
        |name: &str, labels: &[(&str, &str)]| end.get(name, labels) - base.get(name, labels);
    let expect: &[Expected] = &[
        (
            "imapmux_auth_source_requests_total",
            &[("source", "passwd-file"), ("result", "ok")],
            1.0,
        ),
        (
            "imapmux_auth_source_requests_total",
            &[("source", "passwd-file"), ("result", "cached_ok")],
            1.0,
        ),
        (
            "imapmux_auth_source_requests_total",
            &[("source", "passwd-file"), ("result", "rejected")],
            1.0,
        ),
        (
            "imapmux_auth_source_requests_total",
            &[("source", "passwd-file"), ("result", "cached_rejected")],
            1.0,
        ),
        (
            "imapmux_auth_source_requests_total",
            &[("source", "passwd-file"), ("result", "error")],
            0.0,
        ),
        (
            "imapmux_auth_source_duration_seconds_count",
            &[("source", "passwd-file")],
            2.0,
        ),
        ("imapmux_auth_penalty_total", &[("action", "delayed")], 1.0),
        ("imapmux_auth_penalty_total", &[("action", "refused")], 1.0),
        ("imapmux_logins_total", &[("result", "ok")], 2.0),
        ("imapmux_logins_total", &[("result", "failed")], 3.0),
    ];
    let mut wrong = Vec::new();
    for (name, labels, want) in expect {
        let got = delta(name, labels);
        if got != *want {
            wrong.push(format!(
                "{}: moved by {got}, expected {want}",
                series_key(name, labels)
            ));
        }
    }
    // The two logins of user1: each a new backend login, or (reuse after
    // logout is on by default) the second served by the first one's pooled
    // backend connection, depending on whether its release came first.
    let logins = delta(
        "imapmux_backend_login_duration_seconds_count",
        &[("backend", "b1")],
    );
    let reuses = delta("imapmux_backend_reuses_total", &[]);
    if logins + reuses != 2.0 {
        wrong.push(format!(
            "backend logins ({logins}) + pooled reuses ({reuses}) moved by {}, expected 2",
            logins + reuses
        ));
    }
    assert!(
        wrong.is_empty(),
        "{}\nscrape:\n{}",
        wrong.join("\n"),
        end.text
    );
    for secret in ["user1", "user2", "pass1", "pass2", "127.0.0.1"] {
        assert!(
            !end.text.contains(secret),
            "{secret:?} appears in the scrape"
        );
    }
    save_and_lint(&out_dir().join("auth-source"), &end);
}
