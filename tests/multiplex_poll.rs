//! Watching parked clients without a backend connection per user: with
//! Dovecot's doveadm HTTP API configured (`doveadm_url`), one batch request
//! per poll interval learns every watched mailbox's HIGHESTMODSEQ, and a
//! watcher logs in only to resync after a change. Against a real Dovecot
//! with its doveadm HTTP listener on.
//!
//! `measure_direct_vs_doveadm_vs_imap_polling` (ignored; run it by name)
//! prints the numbers in docs/multiplexing.md.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Clients straight to Dovecot.
    Direct,
    /// Through imapmux, watchers polled through doveadm.
    Doveadm,
    /// Through imapmux, every watcher polling over its own connection.
    ImapPoll,
}

struct Env {
    d: Dovecot,
    proxy: Option<Imapmux>,
    /// Where clients connect.
    addr: String,
    admin: String,
    users: u32,
    poll: Duration,
}

impl Env {
    fn start(mode: Mode, users: u32, clients: u32, poll: Duration, key_ok: bool) -> Env {
        let mut b = Dovecot::builder()
            .clear_users()
            .messages(1)
            .max_clients(clients + 50)
            .doveadm_http();
        for i in 1..=users {
            b = b.user(&format!("u{i}"), &format!("p{i}"));
        }
        let d = b.start();
        let admin = free_addr();
        if mode == Mode::Direct {
            return Env {
                addr: d.addr(),
                d,
                proxy: None,
                admin,
                users,
                poll,
            };
        }
        let addr = free_addr();
        let mut backend = BackendCfg::new("b1", &d.addr());
        if mode == Mode::Doveadm {
            let key = if key_ok {
                d.doveadm_key_file()
            } else {
                let wrong = d.dir().join("wrong-key");
                std::fs::write(&wrong, "not-the-key\n").unwrap();
                wrong
            };
            backend = backend.doveadm(&d.doveadm_url(), key);
        }
        let cfg = ProxyConfig::new()
            .listener(&addr, "plaintext")
            .allow_plaintext_auth(true)
            .backend(backend)
            .admin(&admin)
            .no_address_limits()
            .extra(&format!(
                "[multiplex]\nidle_offload_after = \"1s\"\npoll_interval = \"{}ms\"\n",
                poll.as_millis()
            ))
            .to_toml();
        let proxy = Imapmux::start(&cfg, &addr);
        Env {
            d,
            proxy: Some(proxy),
            addr,
            admin,
            users,
            poll,
        }
    }

    fn metric(&self, series: &str) -> f64 {
        admin_metric(&self.admin, series)
    }

    /// Several series from one scrape (consistent with each other).
    fn metrics<const N: usize>(&self, series: [&str; N]) -> [f64; N] {
        let out = run_curl(&[&format!("http://{}/metrics", self.admin)]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        series.map(|s| {
            text.lines()
                .find_map(|l| l.strip_prefix(s)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{s} not in:\n{text}"))
        })
    }

    /// Dovecot's IMAP sessions now (`doveadm who`): backend connections.
    fn backend_sessions(&self) -> usize {
        let out = std::process::Command::new(require_tool("doveadm"))
            .args(["-c", self.d.conf_path().to_str().unwrap(), "who", "-1"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("imap"))
            .count()
    }
}

/// One idling client: its user number and the tag of its IDLE.
struct Device {
    user: u32,
    c: ImapClient,
    tag: String,
}

/// `devices(u)` clients for each user `u` in 1..=users, logged in, INBOX
/// selected, idling.
async fn idle_devices(env: &Env, devices: impl Fn(u32) -> u32) -> Vec<Device> {
    let mut out = Vec::new();
    for u in 1..=env.users {
        for _ in 0..devices(u) {
            let c = ImapClient::connect_plain(&env.addr).await.unwrap();
            let (c, tag) = idling(c, &format!("u{u}"), &format!("p{u}")).await;
            out.push(Device { user: u, c, tag });
        }
    }
    out
}

/// The most backend sessions seen while waiting `rounds` poll intervals
/// (sampled every 100 ms).
fn max_sessions_over(env: &Env, rounds: u32) -> usize {
    let until = Instant::now() + env.poll * rounds;
    let mut max = 0;
    while Instant::now() < until {
        max = max.max(env.backend_sessions());
        std::thread::sleep(Duration::from_millis(100));
    }
    max
}

struct Mail {
    /// New-mail latency of every device of the users that got mail.
    latencies: Vec<Duration>,
    /// Most backend sessions seen right after a delivery was noticed.
    peak_sessions: usize,
}

/// Deliver one message to each of `users` in turn and time until every
/// device of that user has its `* 2 EXISTS`.
async fn deliver_and_time(env: &Env, devs: &mut [Device], users: &[u32], within: Duration) -> Mail {
    let mut latencies = Vec::new();
    let mut peak_sessions = 0;
    for (k, &u) in users.iter().enumerate() {
        // Deliveries at varied phases of the poll interval (each would
        // otherwise follow the previous wake-up, right after a poll).
        let phase = env.poll.mul_f64((k as f64 * 0.618).fract());
        tokio::time::sleep(phase).await;
        let t0 = Instant::now();
        env.d
            .deliver(&format!("u{u}"), b"Subject: new\r\n\r\nhello\r\n");
        for dev in devs.iter_mut().filter(|d| d.user == u) {
            let l = dev.c.idle_wait_for("EXISTS", within).await.unwrap();
            assert_eq!(l.text(), "* 2 EXISTS");
            latencies.push(t0.elapsed());
        }
        peak_sessions = peak_sessions.max(env.backend_sessions());
    }
    latencies.sort();
    Mail {
        latencies,
        peak_sessions,
    }
}

fn pct(v: &[Duration], p: usize) -> Duration {
    v[(v.len() * p / 100).min(v.len() - 1)]
}

#[tokio::test]
async fn doveadm_polling_watches_many_users_on_a_constant_few_connections() {
    let users = 50;
    let poll = Duration::from_millis(500);
    let env = Env::start(Mode::Doveadm, users, 100, poll, true);
    // 1–2 devices per user: 75 clients.
    let mut devs = idle_devices(&env, |u| 1 + u % 2).await;
    let n = devs.len() as f64;
    wait_admin_metric(
        &env.admin,
        "imapmux_client_sessions_parked",
        n,
        Duration::from_secs(60),
    );
    // The parked sessions' old connections are logged out; then Dovecot
    // has (about) no IMAP session left, and keeps it so poll after poll.
    let settled = wait_until(Duration::from_secs(20), || {
        (env.backend_sessions() <= 1).then_some(())
    });
    assert!(settled.is_some(), "{} sessions", env.backend_sessions());
    // Every watcher has let its connection go (a slow machine may still
    // hold one for its linger), so every round batches all of them.
    wait_admin_metric(
        &env.admin,
        "imapmux_backend_watcher_connections",
        0.0,
        Duration::from_secs(20),
    );
    let ok = "imapmux_doveadm_poll_requests_total{backend=\"b1\",result=\"ok\"}";
    let count = "imapmux_doveadm_poll_batch_size_count{backend=\"b1\"}";
    let sum = "imapmux_doveadm_poll_batch_size_sum{backend=\"b1\"}";
    let before = env.metrics([ok, count, sum]);
    let mut idle_max = max_sessions_over(&env, 4);
    // The request counter and the batch histogram are two series: a scrape
    // may fall between their updates, so take one where they agree; and on
    // a loaded machine polls come late: watch on until three came.
    let after = wait_until(Duration::from_secs(30), || {
        let a = env.metrics([ok, count, sum]);
        if a[0] - before[0] >= 3.0 && a[0] - before[0] == a[1] - before[1] {
            return Some(a);
        }
        idle_max = idle_max.max(max_sessions_over(&env, 1));
        None
    })
    .expect("three doveadm polls with agreeing counts never came");
    let rounds = after[0] - before[0];
    eprintln!("{n} parked clients of {users} users: at most {idle_max} backend sessions over {rounds} doveadm polls");
    assert!(idle_max <= 1, "{idle_max}");
    assert!(rounds >= 3.0, "{rounds} polls");
    assert_eq!(env.metric("imapmux_backend_watchers"), users as f64);
    assert_eq!(env.metric("imapmux_backend_watcher_connections"), 0.0);
    // One request per round, asking for all 50 mailboxes.
    let per_request = (after[2] - before[2]) / (after[1] - before[1]);
    assert_eq!(after[1] - before[1], rounds);
    // Every watched mailbox in the batch (one may sit a round out while
    // its watcher checks over IMAP: 49.6 of 50 seen on a loaded machine).
    assert!(
        per_request > users as f64 - 1.0 && per_request <= users as f64,
        "{per_request} mailboxes per request"
    );

    // Mail for users 1..=6 (9 devices): each device's EXISTS within a
    // couple of poll intervals (plus the resync), nobody else's.
    let lucky: Vec<u32> = (1..=6).collect();
    // (The bound is loose: this test checks who is woken, the latency is
    // only printed; benchmarks measure it.)
    let mail = deliver_and_time(&env, &mut devs, &lucky, Duration::from_secs(20)).await;
    eprintln!(
        "new-mail latency via doveadm polling ({:?} interval): p50 {:?}, max {:?}; peak backend sessions {}",
        poll,
        pct(&mail.latencies, 50),
        pct(&mail.latencies, 100),
        mail.peak_sessions
    );
    assert_eq!(mail.latencies.len(), 9);
    // Only the watchers of users who just got mail hold a connection (for
    // their resync, then LINGER): never one per parked user.
    assert!(mail.peak_sessions <= lucky.len(), "{}", mail.peak_sessions);
    assert!(env.metric("imapmux_wakes_total{cause=\"poll\"}") >= lucky.len() as f64);
    for dev in devs.iter_mut().filter(|d| !lucky.contains(&d.user)) {
        let lines = dev
            .c
            .read_responses_for(Duration::from_millis(20))
            .await
            .unwrap();
        assert!(lines.is_empty(), "u{}: {lines:?}", dev.user);
    }
    // The woken watchers log out again: back to no backend connection.
    wait_admin_metric(
        &env.admin,
        "imapmux_backend_watcher_connections",
        0.0,
        Duration::from_secs(30),
    );
    assert!(
        wait_until(Duration::from_secs(30), || (env.backend_sessions() == 0)
            .then_some(()))
        .is_some()
    );
    for r in [
        "unauthorized",
        "http_error",
        "timeout",
        "connect",
        "bad_response",
    ] {
        let s = format!("imapmux_doveadm_poll_requests_total{{backend=\"b1\",result=\"{r}\"}}");
        assert_eq!(env.metric(&s), 0.0, "{s}");
    }
    // DONE is still answered from the parked view, with the news.
    let dev = devs.iter_mut().find(|d| d.user == 1).unwrap();
    assert!(dev.c.idle_done(&dev.tag).await.unwrap().is_ok());
    let _ = &env.proxy;
}

#[tokio::test]
async fn a_wrong_api_key_is_counted_and_nothing_breaks() {
    let env = Env::start(Mode::Doveadm, 2, 10, Duration::from_millis(300), false);
    let mut devs = idle_devices(&env, |_| 1).await;
    wait_admin_metric(
        &env.admin,
        "imapmux_client_sessions_parked",
        2.0,
        Duration::from_secs(20),
    );
    let unauthorized =
        "imapmux_doveadm_poll_requests_total{backend=\"b1\",result=\"unauthorized\"}";
    assert!(
        wait_until(Duration::from_secs(10), || (env.metric(unauthorized)
            >= 2.0)
            .then_some(()))
        .is_some()
    );
    assert!(env
        .proxy
        .as_ref()
        .unwrap()
        .wait_for_log("check doveadm_api_key_file", Duration::from_secs(5)));
    // The key is never logged.
    assert!(!env.proxy.as_ref().unwrap().log().contains("not-the-key"));
    // The parked clients are still served: DONE answered, and a command
    // that needs the backend sees the mail delivered meanwhile.
    env.d.deliver("u1", b"Subject: x\r\n\r\ny\r\n");
    let dev = &mut devs[0];
    assert!(dev.c.idle_done(&dev.tag).await.unwrap().is_ok());
    let r = dev.c.cmd_ok("UID FETCH 1:* (UID)").await.unwrap();
    assert!(r.untagged().any(|l| l.text().contains("UID 2")), "{r}");
}

/// The numbers of docs/multiplexing.md: `MEASURE_USERS` users (100) with
/// `MEASURE_DEVICES` devices each (2), poll interval `MEASURE_POLL_MS`
/// (1000); direct Dovecot, imapmux polling through doveadm, imapmux with
/// a polling connection per user.
#[tokio::test]
#[ignore]
async fn measure_direct_vs_doveadm_vs_imap_polling() {
    let env_u32 = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let users = env_u32("MEASURE_USERS", 100);
    let devices = env_u32("MEASURE_DEVICES", 2);
    let poll = Duration::from_millis(env_u32("MEASURE_POLL_MS", 1000).into());
    let lucky: Vec<u32> = (1..=users).step_by((users as usize / 20).max(1)).collect();
    let mut rows = Vec::new();
    for mode in [Mode::Direct, Mode::Doveadm, Mode::ImapPoll] {
        let env = Env::start(mode, users, users * devices, poll, true);
        let mut devs = idle_devices(&env, |_| devices).await;
        if mode != Mode::Direct {
            wait_admin_metric(
                &env.admin,
                "imapmux_client_sessions_parked",
                devs.len() as f64,
                Duration::from_secs(120),
            );
        }
        // Let the parked sessions' old connections go, then sample.
        std::thread::sleep(Duration::from_secs(3));
        let idle = max_sessions_over(&env, 5);
        let mail =
            deliver_and_time(&env, &mut devs, &lucky, poll * 3 + Duration::from_secs(10)).await;
        let row = format!(
            "| {mode:?} | {} | {idle} | {} | {} / {} / {} ms |",
            devs.len(),
            mail.peak_sessions,
            pct(&mail.latencies, 50).as_millis(),
            pct(&mail.latencies, 99).as_millis(),
            pct(&mail.latencies, 100).as_millis(),
        );
        eprintln!("{row}");
        rows.push(row);
    }
    eprintln!(
        "\n{users} users x {devices} devices, poll interval {poll:?}, mail for {} users\n\
         | mode | clients | backend sessions while parked (max) | right after mail (max) | new-mail latency p50 / p99 / max |\n\
         | --- | ---: | ---: | ---: | ---: |\n{}",
        lucky.len(),
        rows.join("\n")
    );
}
