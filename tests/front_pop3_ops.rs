//! The POP3 front in operation, against a real Dovecot: wrong passwords
//! counted by the brute-force limits (shared with IMAP, matched by the
//! fail2ban filter), the client's address forwarded (PROXY protocol in,
//! XCLIENT out), the same backend as IMAP in a two-backend setup, drain and
//! reload, an auth_http service routing POP3 logins, and a POP3 service
//! found down by the health checks.

mod common;

use std::process::Command;
use std::time::Duration;

use common::fronts::{pop3_backend, pop3_raw as raw, python_ok};
use common::*;

const T: Duration = Duration::from_secs(30);

const WRONG: &str = r#"
import poplib, sys
h, p = sys.argv[1].rsplit(":", 1)
for pw in sys.argv[2:]:
    c = poplib.POP3(h, int(p), timeout=30)
    try:
        c.user("user3")
        c.pass_(pw)
        print("ok")
        c.quit()
    except poplib.error_proto as e:
        print(e.args[0].decode())
"#;

#[test]
fn wrong_passwords_count_in_the_brute_force_limits_shared_with_imap() {
    let dc = Dovecot::builder().pop3().start();
    let (pop3, imap, admin) = (free_addr(), free_addr(), free_addr());
    let cfg = ProxyConfig::new()
        .listener_for("pop3", &pop3, "plaintext")
        .listener(&imap, "plaintext")
        .allow_plaintext_auth(true)
        .admin(&admin)
        .backend(pop3_backend(&dc))
        .extra("[auth.penalty]\nbase_delay = \"10ms\"\nmax_delay = \"20ms\"\nmax_failures_per_user = 2\n")
        .to_toml();
    let p = Imapmux::start(&cfg, &pop3);
    let out = python_ok(WRONG, &[&pop3, "bad1", "bad2", "pass3"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "-ERR [AUTH] Authentication failed.", "{out}");
    assert_eq!(lines[1], "-ERR [AUTH] Authentication failed.", "{out}");
    // the right password no longer gets in, over POP3 or IMAP
    assert_eq!(
        lines[2], "-ERR [SYS/TEMP] Too many failed logins; try again later.",
        "{out}"
    );
    let o = run_curl(&[
        &format!("imap://{imap}/INBOX"),
        "-u",
        "user3:pass3",
        "-X",
        "NOOP",
    ]);
    assert!(!o.status.success(), "IMAP login got in");
    assert_eq!(
        admin_metric(
            &admin,
            "imapmux_protocol_logins_total{protocol=\"pop3\",result=\"failed\"}"
        ),
        3.0
    );
    // fail2ban's filter blames the address for both POP3 failures, the
    // POP3 refusal and the IMAP one.
    let filter = repo_root().join("config/fail2ban/filter.d/imapmux.conf");
    let out = Command::new(require_tool("fail2ban-regex"))
        .args(["-o", "ip"])
        .arg(p.log_path())
        .arg(&filter)
        .output()
        .expect("run fail2ban-regex");
    let hosts = String::from_utf8_lossy(&out.stdout);
    let hosts: Vec<&str> = hosts
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(hosts, vec!["127.0.0.1"; 4], "{}", p.log());
    // another user is not affected
    let out = python_ok(&WRONG.replace("user3", "user4"), &[&pop3, "pass4"]);
    assert_eq!(out.trim(), "ok");
}

const PROXIED: &str = r#"
import socket, sys
h, p = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((h, int(p)), timeout=30)
s.sendall(b"PROXY TCP4 192.0.2.55 127.0.0.1 5555 110\r\n")
f = s.makefile("rb")
f.readline()
for cmd in [b"USER user1\r\n", b"PASS pass1\r\n", b"QUIT\r\n"]:
    s.sendall(cmd)
    print(f.readline().decode().strip())
"#;

#[test]
fn client_address_reaches_dovecot_through_proxy_protocol_and_xclient() {
    let dc = Dovecot::builder().pop3().start();
    let pop3 = free_addr();
    let cfg = ProxyConfig::new()
        .backend(pop3_backend(&dc))
        .extra(&format!(
            "[[listener]]\naddress = \"{pop3}\"\nmode = \"plaintext\"\nprotocol = \"pop3\"\n\
             allow_plaintext_auth = true\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.0/8\"]\n"
        ))
        .to_toml();
    let p = Imapmux::start(&cfg, &pop3);
    let out = python_ok(PROXIED, &[&pop3]);
    assert!(out.contains("+OK Logged in."), "{out}");
    let line = wait_until(T, || {
        dc.log()
            .lines()
            .find(|l| l.contains("pop3-login: Info: Login: user=<user1>"))
            .map(String::from)
    })
    .unwrap_or_else(|| panic!("no login in the Dovecot log:\n{}", dc.log()));
    assert_eq!(
        log_field(&line, "rip").as_deref(),
        Some("192.0.2.55"),
        "{line}"
    );
    // Dovecot's session id is imapmux's
    let session = log_field(&line, "session").unwrap_or_default();
    let session = session.trim_start_matches('<').trim_end_matches('>');
    assert!(
        !session.is_empty() && p.log().contains(session),
        "{line}\n{}",
        p.log()
    );
}

const STAT_BOTH: &str = r#"
import imaplib, poplib, sys
imap, pop3 = sys.argv[1], sys.argv[2]
for u in sys.argv[3:]:
    h, p = imap.rsplit(":", 1)
    i = imaplib.IMAP4(h, int(p)); i.login(u, "pass" + u[4:])
    n_imap = int(i.select("INBOX")[1][0]); i.logout()
    h, p = pop3.rsplit(":", 1)
    c = poplib.POP3(h, int(p), timeout=30); c.user(u); c.pass_("pass" + u[4:])
    n_pop3 = c.stat()[0]; c.quit()
    print(u, n_imap, n_pop3)
"#;

#[test]
fn a_user_lands_on_the_same_backend_as_for_imap() {
    // Backend a has 1 message per user, backend b 2: the count tells where
    // a session went.
    let a = Dovecot::builder().messages(1).pop3().start();
    let b = Dovecot::builder().messages(2).pop3().start();
    let (imap, pop3) = (free_addr(), free_addr());
    let cfg = ProxyConfig::new()
        .listener(&imap, "plaintext")
        .listener_for("pop3", &pop3, "plaintext")
        .allow_plaintext_auth(true)
        .pool(
            PoolCfg::new(
                "default",
                vec![
                    BackendCfg::new("a", &a.addr()).pop3(&a.pop3_addr()),
                    BackendCfg::new("b", &b.addr()).pop3(&b.pop3_addr()),
                ],
            )
            .failover(false),
        )
        .route("user1", "b")
        .route("user2", "a")
        .to_toml();
    let _p = Imapmux::start(&cfg, &pop3);
    let out = python_ok(
        STAT_BOTH,
        &[&imap, &pop3, "user1", "user2", "user3", "user4", "user5"],
    );
    let mut seen = std::collections::HashSet::new();
    for l in out.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f[1], f[2], "IMAP and POP3 disagree: {l}");
        seen.insert(f[1].to_string());
    }
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(
        out.contains("user1 2 2") && out.contains("user2 1 1"),
        "{out}"
    );
    assert_eq!(seen.len(), 2, "{out}");
}

/// Read one CRLF line from a blocking stream (byte by byte: no buffering
/// past it).
fn read_line(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(1) => line.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
fn drain_keeps_logged_in_sessions_until_its_end_and_a_reload_keeps_serving() {
    use std::io::{Read, Write};
    let dc = Dovecot::builder().messages(1).pop3().start();
    let pop3 = free_addr();
    let cfg = ProxyConfig::new()
        .listener_for("pop3", &pop3, "plaintext")
        .allow_plaintext_auth(true)
        .timeout("drain", "3s")
        .backend(pop3_backend(&dc));
    let mut p = Imapmux::start(&cfg.to_toml(), &pop3);
    // A reload (new greeting) applies to new POP3 connections.
    p.rewrite_config(
        &cfg.clone()
            .server_key("greeting", "\"reloaded pop3\"")
            .to_toml(),
    );
    p.send_signal(libc::SIGHUP);
    let greeting = wait_until(T, || {
        let mut s = std::net::TcpStream::connect(&pop3).ok()?;
        s.set_read_timeout(Some(T)).unwrap();
        let g = read_line(&mut s);
        g.contains("reloaded pop3").then_some(g)
    });
    assert_eq!(greeting.as_deref(), Some("+OK reloaded pop3\r\n"));
    let mut s = std::net::TcpStream::connect(&pop3).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    read_line(&mut s);
    s.write_all(b"USER user1\r\nPASS pass1\r\n").unwrap();
    assert_eq!(read_line(&mut s), "+OK\r\n");
    assert_eq!(read_line(&mut s), "+OK Logged in.\r\n");
    p.sigterm();
    assert!(
        wait_for_port_closed(&pop3, T),
        "still accepting while draining"
    );
    // the logged-in session is still served…
    s.write_all(b"STAT\r\n").unwrap();
    assert!(read_line(&mut s).starts_with("+OK 1 "));
    // …until the drain time is over: then it is closed and imapmux exits.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(p.wait_exit(T).is_some(), "imapmux did not exit");
    assert!(
        p.log().contains("end=\"shutdown\"") || p.log().contains("end=shutdown"),
        "{}",
        p.log()
    );
}

#[test]
fn an_auth_http_service_sees_pop3_and_routes_with_the_pop3_address() {
    let a = Dovecot::builder().messages(1).pop3().start();
    let b = Dovecot::builder().messages(2).pop3().start();
    // nginx-style: the service answers with the POP3 service's address.
    let b_pop3_port: u16 = b.pop3_addr().rsplit_once(':').unwrap().1.parse().unwrap();
    let auth = common::auth_http::AuthHttp::start(serde_json::json!({
        "user1": {"password": "pass1", "server": "127.0.0.1", "port": b_pop3_port},
    }));
    let pop3 = free_addr();
    let cfg = ProxyConfig::new()
        .listener_for("pop3", &pop3, "implicit")
        .backend(BackendCfg::new("a", &a.addr()).pop3(&a.pop3_addr()))
        .backend(BackendCfg::new("b", &b.addr()).pop3(&b.pop3_addr()))
        .extra(&format!(
            "[auth]\nsource = \"http\"\n[auth.http]\nurl = {}\ntimeout = \"2s\"\n",
            toml_str(&auth.url())
        ))
        .to_toml();
    let _p = Imapmux::start(&cfg, &pop3);
    let stat = raw(&pop3, "implicit", "user1", "pass1", &["STAT"]);
    assert!(stat.starts_with(b"+OK 2 "), "{}", show_bytes(&stat, 200));
    let reqs = auth.requests();
    let proto = reqs[0]["headers"]
        .as_object()
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("Auth-Protocol"))
        })
        .and_then(|(_, v)| v.as_str().map(String::from));
    assert_eq!(proto.as_deref(), Some("pop3"), "{reqs:?}");
    let out = run_python(
        "pop3_raw.py",
        &[&pop3, "implicit", "user1", "wrong", "STAT"],
    );
    // the service's refusal, in POP3's words
    let refused = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(refused.starts_with("-ERR [AUTH] "), "{refused}");
}

#[test]
fn a_backend_whose_pop3_service_is_down_answers_sys_temp_and_imap_still_works() {
    let dc = Dovecot::builder().messages(1).pop3().start();
    let (pop3, imap, admin, dead) = (free_addr(), free_addr(), free_addr(), free_addr());
    let cfg = ProxyConfig::new()
        .listener_for("pop3", &pop3, "plaintext")
        .listener(&imap, "plaintext")
        .allow_plaintext_auth(true)
        .admin(&admin)
        .health("200ms", "1s", 1, 1)
        .backend(BackendCfg::new("dovecot", &dc.addr()).pop3(&dead))
        .to_toml();
    let p = Imapmux::start(&cfg, &pop3);
    let up = "imapmux_backend_protocol_up{backend=\"dovecot\",protocol=\"pop3\"}";
    wait_admin_metric(&admin, up, 0.0, T);
    assert_eq!(
        admin_metric(
            &admin,
            "imapmux_backend_protocol_up{backend=\"dovecot\",protocol=\"imap\"}"
        ),
        1.0
    );
    let out = run_python("pop3_raw.py", &[&pop3, "plain", "user1", "pass1", "STAT"]);
    let refused = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(refused.starts_with("-ERR [SYS/TEMP] "), "{refused}");
    assert_eq!(
        admin_metric(
            &admin,
            "imapmux_protocol_logins_total{protocol=\"pop3\",result=\"unavailable\"}"
        ),
        1.0
    );
    let o = run_curl(&[&format!("imap://{imap}/INBOX;UID=1"), "-u", "user1:pass1"]);
    assert!(
        o.status.success(),
        "IMAP: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(p.log().contains("backend is down"), "{}", p.log());
}
