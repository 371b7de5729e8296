//! Push fan-out across replicas (issue 16, item 5), with real parts: a
//! private Dovecot, three imapmux processes behind HAProxy (round robin,
//! PROXY protocol v2), each listing the other two as `admin.push_peers`,
//! polling off (`poll_interval = "0s"`: push only). One push sent to one
//! replica must reach the parked IDLE clients on all three; a forwarded
//! push is never forwarded again; a peer with the wrong secret is refused;
//! an unreachable peer does not hold up local wake-ups.

mod common;

use std::time::Duration;

use common::*;

const SECRET: &str = "fanoutS3cretForTests";
/// Generous: these tests must pass on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

fn metric(admin: &str, series: &str) -> f64 {
    admin_metric(admin, series)
}

fn labelled(name: &str, result: &str) -> String {
    format!("{name}{{result=\"{result}\"}}")
}

/// `imapmux_push_forward_requests_total{result}`.
fn forward_requests(admin: &str, result: &str) -> f64 {
    metric(
        admin,
        &labelled("imapmux_push_forward_requests_total", result),
    )
}

/// `imapmux_push_forward_events_total{result}`.
fn forward_events(admin: &str, result: &str) -> f64 {
    metric(
        admin,
        &labelled("imapmux_push_forward_events_total", result),
    )
}

/// Every forwarded request, whatever its result.
fn all_forward_requests(admin: &str) -> f64 {
    ["ok", "refused", "error", "self"]
        .iter()
        .map(|r| forward_requests(admin, r))
        .sum()
}

fn push_events(admin: &str, result: &str) -> f64 {
    metric(admin, &labelled("imapmux_push_events_total", result))
}

/// Wait until `f` holds, or panic with `what` and the processes' logs.
fn wait_for(what: &str, logs: &[&Imapmux], mut f: impl FnMut() -> bool) {
    if wait_until(WAIT, || f().then_some(())).is_none() {
        let logs: Vec<String> = logs.iter().map(|p| p.log()).collect();
        panic!(
            "{what} did not happen within {WAIT:?}; logs:\n{}",
            logs.join("\n----\n")
        );
    }
}

/// One imapmux in front of `d`: listener `listen` (PROXY protocol from
/// 127.0.0.0/8 when `proxied`, else plaintext), admin `admin` with `secret`
/// and `peers`, IDLE parked after 1 s, no polling.
fn replica(
    d: &Dovecot,
    listen: &str,
    admin: &str,
    secret: &str,
    peers: &[&str],
    proxied: bool,
) -> Imapmux {
    let peers: Vec<String> = peers.iter().map(|p| toml_str(p)).collect();
    let keys = format!("push_peers = [{}]", peers.join(", "));
    replica_with(d, listen, admin, secret, &keys, proxied)
}

/// [`replica`] with `peer_keys` (raw TOML under `[admin]`) for the peers.
fn replica_with(
    d: &Dovecot,
    listen: &str,
    admin: &str,
    secret: &str,
    peer_keys: &str,
    proxied: bool,
) -> Imapmux {
    let listener = if proxied {
        format!(
            "[[listener]]\naddress = {}\nmode = \"implicit\"\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
            toml_str(listen)
        )
    } else {
        format!(
            "[[listener]]\naddress = {}\nmode = \"plaintext\"\nallow_plaintext_auth = true\n",
            toml_str(listen)
        )
    };
    let cfg = ProxyConfig::new()
        .backend(BackendCfg::new("b1", &d.addr()))
        .no_address_limits()
        .extra(&format!(
            "{listener}\n[admin]\naddress = {}\npush_secret = {}\n{peer_keys}\n\n\
             [multiplex]\nidle_offload_after = \"1s\"\npoll_interval = \"0s\"\n",
            toml_str(admin),
            toml_str(secret),
        ))
        .to_toml();
    let p = Imapmux::start(&cfg, listen);
    assert!(wait_for_port(admin, WAIT), "{}", p.log());
    p
}

/// `curl -X POST` of `body` to `admin`'s /push with `headers`; the status.
fn post_push(admin: &str, headers: &[&str], body: &str) -> u16 {
    let url = format!("http://{admin}/push");
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"];
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    args.extend_from_slice(&["--data-binary", body, &url]);
    let out = run_curl(&args);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl: {out:?}"))
}

fn bearer(secret: &str) -> String {
    format!("Authorization: Bearer {secret}")
}

fn new_mail_body(users: &[&str]) -> String {
    let ev: Vec<String> = users
        .iter()
        .map(|u| format!(r#"{{"user":"{u}","mailbox":"INBOX","event":"MessageNew"}}"#))
        .collect();
    format!("[{}]", ev.join(","))
}

fn message(n: u32) -> Vec<u8> {
    format!("From: a@example.org\r\nSubject: fan-out {n}\r\n\r\nnew mail {n}\r\n").into_bytes()
}

/// A client of `user` logged in (through `addr`, TLS when `tls`), INBOX
/// selected, idling; with its IDLE tag.
async fn idle_client(addr: &str, tls: bool, user: u32) -> (ImapClient, String) {
    let mut c = if tls {
        ImapClient::connect_tls(addr, &TlsClient::insecure())
            .await
            .unwrap()
    } else {
        ImapClient::connect_plain(addr).await.unwrap()
    };
    c.login(&format!("user{user}"), &format!("pass{user}"))
        .await
        .unwrap()
        .ok()
        .unwrap();
    c.select("INBOX").await.unwrap().ok().unwrap();
    let tag = c.idle_start().await.unwrap();
    (c, tag)
}

#[tokio::test]
async fn one_push_reaches_parked_clients_on_every_replica() {
    let d = Dovecot::builder().messages(5).start();
    let listens: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let admins: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let replicas: Vec<Imapmux> = (0..3)
        .map(|i| {
            let peers: Vec<&str> = (0..3)
                .filter(|j| *j != i)
                .map(|j| admins[j].as_str())
                .collect();
            replica(&d, &listens[i], &admins[i], SECRET, &peers, true)
        })
        .collect();
    let logs: Vec<&Imapmux> = replicas.iter().collect();
    // Each replica greets its two peers (an empty batch) once they answer.
    for a in &admins {
        assert_eq!(metric(a, "imapmux_push_peers"), 2.0);
    }
    wait_for("every replica greeted by its peers", &logs, || {
        admins.iter().all(|a| forward_requests(a, "ok") == 2.0)
    });
    let before: Vec<f64> = admins.iter().map(|a| all_forward_requests(a)).collect();
    let servers: Vec<&str> = listens.iter().map(String::as_str).collect();
    let lb = Haproxy::start(&servers);

    // Six clients of two users through the balancer: round robin puts two
    // on each replica, both users on each.
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(idle_client(lb.addr(), true, i % 2 + 1).await);
    }
    let parked = |a: &String| metric(a, "imapmux_client_sessions_parked");
    wait_for("six parked clients", &logs, || {
        admins.iter().map(parked).sum::<f64>() == 6.0
    });
    for a in &admins {
        assert!(
            parked(a) >= 1.0,
            "no parked client on {a}; haproxy log:\n{}",
            lb.log()
        );
    }

    // New mail for both users, then ONE push to ONE replica. No polling:
    // only the push (and its forwards) can wake anyone.
    d.deliver_to("user1", "INBOX", &message(1));
    d.deliver_to("user2", "INBOX", &message(2));
    let body = new_mail_body(&["user1", "user2"]);
    assert_eq!(post_push(&admins[1], &[&bearer(SECRET)], &body), 204);
    for (i, (c, _)) in clients.iter_mut().enumerate() {
        let l = c.idle_wait_for("EXISTS", WAIT).await.unwrap_or_else(|e| {
            panic!(
                "client {i}: no EXISTS ({e}); logs:\n{}",
                replicas
                    .iter()
                    .map(|p| p.log())
                    .collect::<Vec<_>>()
                    .join("\n----\n")
            )
        });
        assert_eq!(l.text(), "* 6 EXISTS", "client {i}");
    }

    // The pushed replica forwarded one batch of both events to each peer.
    wait_for("two forwarded requests answered", &logs, || {
        forward_requests(&admins[1], "ok") == 4.0
    });
    assert_eq!(forward_events(&admins[1], "delivered"), 4.0);
    assert_eq!(all_forward_requests(&admins[1]), before[1] + 2.0);
    assert_eq!(metric(&admins[1], "imapmux_push_forward_pending"), 0.0);
    assert_eq!(metric(&admins[1], "imapmux_push_peer_events_total"), 0.0);
    // The peers woke their clients and forwarded nothing: they enqueue
    // (synchronously, before answering) only direct pushes, and their
    // answers were in before the counters above moved.
    for i in [0, 2] {
        let a = &admins[i];
        assert_eq!(push_events(a, "accepted"), 2.0, "replica {i}");
        assert_eq!(
            metric(a, "imapmux_push_peer_events_total"),
            2.0,
            "replica {i}"
        );
        assert!(metric(a, "imapmux_push_woken_total") >= 1.0, "replica {i}");
        assert_eq!(all_forward_requests(a), before[i], "replica {i}");
        assert_eq!(forward_events(a, "delivered"), 0.0, "replica {i}");
        assert_eq!(
            metric(a, "imapmux_push_forward_pending"),
            0.0,
            "replica {i}"
        );
    }

    // A request that says it was forwarded is not forwarded again, even
    // when it comes straight from outside.
    let fwd = "X-Imapmux-Forwarded: 0123456789abcdef";
    d.deliver_to("user1", "INBOX", &message(3));
    assert_eq!(
        post_push(
            &admins[0],
            &[&bearer(SECRET), fwd],
            &new_mail_body(&["user1"])
        ),
        204
    );
    assert_eq!(metric(&admins[0], "imapmux_push_peer_events_total"), 3.0);
    assert_eq!(metric(&admins[0], "imapmux_push_forward_pending"), 0.0);
    assert_eq!(all_forward_requests(&admins[0]), before[0]);
    assert_eq!(forward_events(&admins[0], "delivered"), 0.0);
    // …and a wrong secret stays a wrong secret with that header.
    assert_eq!(post_push(&admins[0], &[&bearer("nope"), fwd], &body), 401);

    for p in &replicas {
        assert!(!p.log().contains(SECRET), "secret in a log:\n{}", p.log());
    }
}

#[tokio::test]
async fn peer_with_the_wrong_secret_is_refused() {
    let d = Dovecot::builder().messages(5).start();
    let (listen, admin) = (free_addr(), free_addr());
    let a = replica(&d, &listen, &admin, SECRET, &[], false);
    // A replica configured with another secret, forwarding to `a`.
    let (rogue_listen, rogue_admin) = (free_addr(), free_addr());
    let rogue = replica(
        &d,
        &rogue_listen,
        &rogue_admin,
        "not-the-secret",
        &[&admin],
        false,
    );
    let logs = [&a, &rogue];
    // Its greeting is refused at once, before any push.
    wait_for("the greeting refused", &logs, || {
        forward_requests(&rogue_admin, "refused") == 1.0
    });
    assert!(
        rogue.wait_for_log("refuses forwarded pushes", WAIT),
        "{}",
        rogue.log()
    );

    let (_c, _tag) = idle_client(&listen, false, 1).await;
    wait_admin_metric(&admin, "imapmux_client_sessions_parked", 1.0, WAIT);
    d.deliver_to("user1", "INBOX", &message(1));
    let body = new_mail_body(&["user1"]);
    assert_eq!(
        post_push(&rogue_admin, &[&bearer("not-the-secret")], &body),
        204
    );

    wait_for("the forward refused", &logs, || {
        forward_requests(&rogue_admin, "refused") == 2.0
    });
    assert_eq!(forward_events(&rogue_admin, "refused"), 1.0);
    assert_eq!(forward_events(&rogue_admin, "delivered"), 0.0);
    assert_eq!(push_events(&admin, "unauthorized"), 2.0);
    assert_eq!(push_events(&admin, "accepted"), 0.0);
    assert_eq!(metric(&admin, "imapmux_push_woken_total"), 0.0);
    assert!(
        rogue.wait_for_log("refuses forwarded pushes", WAIT),
        "{}",
        rogue.log()
    );
    assert!(!rogue.log().contains("not-the-secret"), "{}", rogue.log());
}

#[tokio::test]
async fn unreachable_peers_do_not_hold_up_local_wake_ups() {
    let d = Dovecot::builder().messages(5).start();
    // One peer refuses connections, one accepts them (the kernel's
    // backlog) and never answers: each request to it runs into the
    // forwarding timeout.
    let closed = free_addr();
    let black_hole = std::net::TcpListener::bind(free_addr()).unwrap();
    let hole = black_hole.local_addr().unwrap().to_string();
    let (listen, admin) = (free_addr(), free_addr());
    let a = replica(&d, &listen, &admin, SECRET, &[&closed, &hole], false);
    let logs = [&a];

    let (mut c, _tag) = idle_client(&listen, false, 1).await;
    wait_admin_metric(&admin, "imapmux_client_sessions_parked", 1.0, WAIT);
    let body = new_mail_body(&["user1"]);
    for (n, want) in [(1, "* 6 EXISTS"), (2, "* 7 EXISTS")] {
        d.deliver_to("user1", "INBOX", &message(n));
        assert_eq!(post_push(&admin, &[&bearer(SECRET)], &body), 204);
        let l = c.idle_wait_for("EXISTS", WAIT).await.unwrap();
        assert_eq!(l.text(), want);
        // Both peers failed (the silent one after the forwarding
        // timeout) while the client was woken regardless.
        wait_for("both peers failing", &logs, || {
            let log = a.log();
            let failing = |peer: &str| {
                log.lines()
                    .any(|l| l.contains("peer unreachable") && l.contains(peer))
            };
            failing(&closed) && failing(&hole)
        });
    }
    assert!(forward_requests(&admin, "error") >= 2.0);
    assert_eq!(forward_requests(&admin, "ok"), 0.0);
    assert_eq!(forward_events(&admin, "delivered"), 0.0);
    // Kept for retries, bounded: the same mailbox is merged, so at most
    // one event queued and one in flight per peer.
    let pending = metric(&admin, "imapmux_push_forward_pending");
    assert!((1.0..=4.0).contains(&pending), "pending {pending}");
    drop(black_hole);
}

/// Peers from a DNS name (`admin.push_peers_dns`, as the chart sets it to
/// its headless Service): every address the name resolves to is a peer.
#[tokio::test]
async fn peers_from_a_dns_name() {
    let d = Dovecot::builder().messages(5).start();
    let (listen_b, admin_b) = (free_addr(), free_addr());
    let b = replica(&d, &listen_b, &admin_b, SECRET, &[], false);
    let port_b = admin_b.rsplit_once(':').unwrap().1;
    let (listen_a, admin_a) = (free_addr(), free_addr());
    let keys = format!("push_peers_dns = \"localhost:{port_b}\"\npush_peers_refresh = \"1s\"");
    let a = replica_with(&d, &listen_a, &admin_a, SECRET, &keys, false);
    let logs = [&a, &b];
    // localhost: 127.0.0.1 (and ::1 where /etc/hosts lists it).
    wait_for("the name resolved", &logs, || {
        metric(&admin_a, "imapmux_push_peers") >= 1.0
    });

    let (mut c, _tag) = idle_client(&listen_b, false, 1).await;
    wait_admin_metric(&admin_b, "imapmux_client_sessions_parked", 1.0, WAIT);
    d.deliver_to("user1", "INBOX", &message(1));
    assert_eq!(
        post_push(&admin_a, &[&bearer(SECRET)], &new_mail_body(&["user1"])),
        204
    );
    let l = c.idle_wait_for("EXISTS", WAIT).await.unwrap();
    assert_eq!(l.text(), "* 6 EXISTS");
    assert_eq!(metric(&admin_b, "imapmux_push_peer_events_total"), 1.0);
    wait_for("the forward counted", &logs, || {
        forward_events(&admin_a, "delivered") == 1.0
    });
}

/// In Kubernetes a pod finds its own address among the headless
/// Service's: its greeting comes back to itself, is recognised by the
/// instance id, and that address is skipped from then on. (A forward of
/// real events coming back is not handled twice: admin's unit tests.)
#[tokio::test]
async fn a_replica_among_its_own_peers_skips_itself() {
    let d = Dovecot::builder().start();
    let port = free_port();
    let (listen, admin) = (free_addr(), format!("0.0.0.0:{port}"));
    let me = format!("127.0.0.1:{port}");
    let a = replica(&d, &listen, &admin, SECRET, &[&me], false);
    wait_for("itself recognised", &[&a], || {
        forward_requests(&me, "self") == 1.0
    });
    assert_eq!(metric(&me, "imapmux_push_peers"), 0.0);
    assert_eq!(push_events(&me, "accepted"), 0.0);
    // A push is handled here, once, and goes nowhere.
    let body = new_mail_body(&["user1"]);
    assert_eq!(post_push(&me, &[&bearer(SECRET)], &body), 204);
    assert_eq!(push_events(&me, "accepted"), 1.0);
    assert_eq!(metric(&me, "imapmux_push_peer_events_total"), 0.0);
    assert_eq!(metric(&me, "imapmux_push_forward_pending"), 0.0);
    assert_eq!(all_forward_requests(&me), 1.0);
    assert!(
        a.wait_for_log("this address is this process", WAIT),
        "{}",
        a.log()
    );
}

#[test]
fn check_config_names_the_push_peer_keys() {
    let dir = tempfile::tempdir().unwrap();
    let check = |admin: &str| {
        let path = dir.path().join("c.toml");
        let cfg = ProxyConfig::new()
            .listener("127.0.0.1:1143", "starttls")
            .backend(BackendCfg::new("b1", "127.0.0.1:10143"))
            .extra(&format!("[admin]\naddress = \"127.0.0.1:9143\"\n{admin}\n"))
            .to_toml();
        std::fs::write(&path, cfg).unwrap();
        let out = imapmux_command()
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check("push_peers = [\"127.0.0.1:9144\"]");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("admin.push_peers") && err.contains("fix: set admin.push_secret"),
        "{err}"
    );
    let (code, err) = check("push_secret = \"s\"\npush_peers_dns = \"10.1.1.1:9143\"");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("admin.push_peers_dns") && err.contains("fix:"),
        "{err}"
    );
    let (code, err) = check(
        "push_secret = \"s\"\npush_peers = [\"10.0.0.2:9143\"]\npush_peers_dns = \"imapmux-peers.mail.svc:9143\"",
    );
    assert_eq!(code, Some(0), "{err}");
}
