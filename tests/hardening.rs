//! Attacks a hostile client can make, against the real imapmux binary in
//! front of a real Dovecot: the process survives, other clients are served
//! on time, memory stays bounded, and no user's data reaches another.
//!
//! The tests that measure latency or memory run one at a time (a lock), so
//! they do not measure each other.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;

/// One process-level attack test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

fn plain_proxy(d: &Dovecot, extra: &str) -> (Imapmux, String) {
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "plaintext")
        .allow_plaintext_auth(true)
        .backend(BackendCfg::new("b1", &d.addr()))
        .extra(extra)
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    (proxy, addr)
}

async fn logged_in(addr: &str, user: &str, pw: &str) -> ImapClient {
    let mut c = ImapClient::connect_plain(addr).await.unwrap();
    c.login(user, pw).await.unwrap().ok().unwrap();
    c
}

#[tokio::test]
async fn deeply_nested_lists_get_bad_and_the_process_lives() {
    let _serial = SERIAL.lock().await;
    let d = Dovecot::builder().messages(1).start();
    let (mut proxy, addr) = plain_proxy(&d, "");
    // The review's crash: one unauthenticated ID line of 20,000 `(`.
    let mut c = ImapClient::connect_plain(&addr).await.unwrap();
    let r = c.cmd(&format!("ID {}", "(".repeat(20_000))).await.unwrap();
    assert!(r.is_bad(), "{r}");
    // The same connection still works, and so does the process.
    assert!(c.cmd("NOOP").await.unwrap().is_ok());
    // After login the relay tracks SELECT with the same parser.
    let mut c = logged_in(&addr, "user1", "pass1").await;
    let r = c
        .cmd(&format!("SELECT {}", "(".repeat(20_000)))
        .await
        .unwrap();
    assert!(!r.is_ok(), "{r}");
    c.select("INBOX").await.unwrap().ok().unwrap();
    assert!(proxy.is_running());
    assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
}

/// NOOP round trips of a logged-in client while `attack` runs.
async fn noop_latencies(c: &mut ImapClient, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        c.cmd_ok("NOOP").await.unwrap();
        out.push(t0.elapsed());
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_heavy_lines_do_not_delay_other_clients() {
    let _serial = SERIAL.lock().await;
    let d = Dovecot::builder().messages(1).start();
    let (mut proxy, addr) = plain_proxy(&d, "");
    let mut victim = logged_in(&addr, "user1", "pass1").await;
    let baseline = noop_latencies(&mut victim, 20).await;
    // Lines of spaces then digits ending in `}`, just under the 64 KiB line
    // bound: a quadratic parser spent ~0.6 s of CPU on each.
    let mut line = b"a LOGIN".to_vec();
    line.extend(std::iter::repeat_n(b' ', 32_000));
    line.extend(std::iter::repeat_n(b'1', 32_000));
    line.extend_from_slice(b"}\r\n");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let (addr, line, stop, sent) = (addr.clone(), line.clone(), stop.clone(), sent.clone());
        attackers.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                    continue;
                };
                // Until the proxy closes it (too many bad commands).
                for _ in 0..20 {
                    if s.write_all(&line).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Let the attack get going, then measure.
    let t0 = Instant::now();
    while sent.load(std::sync::atomic::Ordering::Relaxed) < 64 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "attack lines not sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let under_attack = noop_latencies(&mut victim, 50).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        let _ = a.await;
    }
    let lines = sent.load(std::sync::atomic::Ordering::Relaxed);
    let p50 = under_attack[under_attack.len() / 2];
    let p90 = under_attack[under_attack.len() * 9 / 10];
    eprintln!(
        "NOOP baseline p50 {:?}; under attack ({lines} lines of 64 KiB) p50 {p50:?} p90 {p90:?} max {:?}",
        baseline[baseline.len() / 2],
        under_attack.last().unwrap()
    );
    // The goal (under 100 ms) is for the release binary: scripts/test runs
    // this file again with IMAPMUX_TEST_BIN=target/release/imapmux. The
    // unoptimized test build gets 2 s (the quadratic parser took 6-8 s
    // in release, minutes unoptimized).
    let bound = if std::env::var_os("IMAPMUX_TEST_BIN").is_some() {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(2)
    };
    assert!(p90 < bound, "{under_attack:?}");
    assert!(proxy.is_running());
}

#[tokio::test]
async fn a_client_that_never_reads_cannot_grow_the_process() {
    let _serial = SERIAL.lock().await;
    let d = Dovecot::builder().messages(1).start();
    let (mut proxy, addr) = plain_proxy(
        &d,
        "[cache]\nenabled = true\nmax_bytes = \"64MiB\"\nmax_item_size = \"2MiB\"\n",
    );
    let pid = proxy.pid().unwrap();
    // A 1 MiB message, cached by one read.
    let mut c = logged_in(&addr, "user1", "pass1").await;
    let big = sized_message("big", 1024 * 1024);
    c.append("INBOX", None, &big).await.unwrap().ok().unwrap();
    c.select("INBOX").await.unwrap().ok().unwrap();
    let r = c.cmd_ok("UID FETCH 2 BODY.PEEK[]").await.unwrap();
    assert_eq!(r.literals().first().copied(), Some(&big[..]));
    let before = rss_kib(pid);
    // 2,000 pipelined cache hits (2 GiB of answers) and never a read.
    let mut batch = Vec::new();
    for i in 0..2_000 {
        batch.extend_from_slice(format!("p{i} UID FETCH 2 BODY.PEEK[]\r\n").as_bytes());
    }
    // The proxy stops reading: the write may not complete, which is the point.
    let _ = tokio::time::timeout(Duration::from_secs(5), c.write_raw(&batch)).await;
    // Wait until the proxy has stopped growing (three equal samples).
    let mut last = 0;
    let mut peak = 0;
    wait_until(Duration::from_secs(20), || {
        let now = rss_kib(pid);
        peak = peak.max(now);
        let settled = now.abs_diff(last) < 512;
        last = now;
        settled.then_some(())
    });
    let grown = peak.saturating_sub(before);
    eprintln!(
        "RSS before {before} KiB, peak while the client does not read {peak} KiB (+{grown} KiB)"
    );
    assert!(grown < 64 * 1024, "grew by {grown} KiB");
    // An unrelated client is served meanwhile.
    let mut other = logged_in(&addr, "user2", "pass2").await;
    other.cmd_ok("NOOP").await.unwrap();
    assert!(proxy.is_running());
}

/// Dovecot with a master user `proxy` (SASL PLAIN authorization identity)
/// and the two users' INBOXes sharing one UIDVALIDITY, as mailboxes
/// created in the same second do.
fn master_dovecot() -> (Dovecot, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let master_file = dir.path().join("master-users");
    std::fs::write(&master_file, "proxy:{PLAIN}m4ster-pw\n").unwrap();
    common::make_world_readable_dir(dir.path());
    let d = Dovecot::builder()
        .messages(3)
        .extra_config(&format!(
            "passdb {{\n  driver = passwd-file\n  master = yes\n  args = {}\n}}\n",
            master_file.display()
        ))
        .start();
    for user in ["user1", "user2"] {
        let out = std::process::Command::new(require_tool("doveadm"))
            .args(["-c"])
            .arg(d.conf_path())
            .args([
                "mailbox",
                "update",
                "--uid-validity",
                "1700000000",
                "-u",
                user,
                "INBOX",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    (d, dir)
}

async fn as_user(addr: &str, user: &str) -> ImapClient {
    let mut c = ImapClient::connect_plain(addr).await.unwrap();
    let msg = format!("{user}\0proxy\0m4ster-pw");
    let (r, _) = c
        .authenticate("PLAIN", &[msg.as_bytes()], true)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r}");
    c
}

#[tokio::test]
async fn a_master_user_acting_for_two_users_never_mixes_them() {
    let (d, _dir) = master_dovecot();
    let admin = free_addr();
    let (proxy, addr) = plain_proxy(
        &d,
        &format!(
            "[admin]\naddress = \"{admin}\"\n[cache]\nenabled = true\n[multiplex]\nidle_offload_after = \"1s\"\npoll_interval = \"300ms\"\n"
        ),
    );
    // FETCH cache: alice (user1) fills it, bob (user2) reads the same
    // mailbox name, UIDVALIDITY and UID.
    let mut alice = as_user(&addr, "user1").await;
    let sel = alice.select("INBOX").await.unwrap().ok().unwrap();
    assert!(sel.contains("UIDVALIDITY 1700000000"), "{sel}");
    let a = alice.cmd_ok("UID FETCH 1 BODY.PEEK[]").await.unwrap();
    assert_eq!(a.literals()[0], &d.message("user1", 1)[..]);
    let mut bob = as_user(&addr, "user2").await;
    let sel = bob.select("INBOX").await.unwrap().ok().unwrap();
    assert!(sel.contains("UIDVALIDITY 1700000000"), "{sel}");
    for _ in 0..2 {
        let b = bob.cmd_ok("UID FETCH 1 BODY.PEEK[]").await.unwrap();
        assert_eq!(
            b.literals()[0],
            &d.message("user2", 1)[..],
            "bob got someone else's message"
        );
    }
    // Parked IDLE: each is watched as its own mailbox owner.
    let at = alice.idle_start().await.unwrap();
    let bt = bob.idle_start().await.unwrap();
    wait_admin_metric(
        &admin,
        "imapmux_client_sessions_parked",
        2.0,
        Duration::from_secs(10),
    );
    // Two new messages for alice, one for bob.
    let mut direct1 = ImapClient::connect_plain(&d.addr()).await.unwrap();
    direct1.login("user1", "pass1").await.unwrap().ok().unwrap();
    for uid in [10, 11] {
        direct1
            .append("INBOX", None, &seed_message("user1", uid))
            .await
            .unwrap()
            .ok()
            .unwrap();
    }
    let mut direct2 = ImapClient::connect_plain(&d.addr()).await.unwrap();
    direct2.login("user2", "pass2").await.unwrap().ok().unwrap();
    direct2
        .append("INBOX", None, &seed_message("user2", 10))
        .await
        .unwrap()
        .ok()
        .unwrap();
    alice
        .idle_wait_for("* 5 EXISTS", Duration::from_secs(10))
        .await
        .unwrap();
    let seen = bob
        .idle_wait_for("EXISTS", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(seen.text().trim_end(), "* 4 EXISTS");
    alice.idle_done(&at).await.unwrap().ok().unwrap();
    let r = bob.idle_done(&bt).await.unwrap().ok().unwrap();
    assert!(!r.contains("* 5 EXISTS"), "{r}");
    assert_eq!(bob.cmd_ok("NOOP").await.unwrap().exists(), None);
    let b = bob.cmd_ok("UID FETCH 1:* (UID)").await.unwrap();
    assert_eq!(b.untagged().count(), 4, "{b}");
    assert!(!proxy.log().contains("panicked"));
}
