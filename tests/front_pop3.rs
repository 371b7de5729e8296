//! The POP3 front against a real Dovecot with real clients: curl
//! (pop3s:// RETR of every message, a 50 MB one included, byte-compared
//! with Dovecot reached directly), a raw client comparing RETR/TOP/LIST/UIDL
//! byte for byte, Python poplib (STLS, TOP, DELE + QUIT committed), logins
//! refused before STLS, commands injected before STLS not run, wrong
//! passwords counted by the brute-force limits (shared with IMAP), the
//! client's address forwarded (PROXY protocol in, XCLIENT out), the same
//! backend as IMAP in a two-backend setup, and metrics by protocol.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

fn python(code: &str, args: &[&str]) -> Output {
    Command::new(require_tool("python3"))
        .arg("-c")
        .arg(code)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run python3")
}

fn python_ok(code: &str, args: &[&str]) -> String {
    let out = python(code, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The raw bytes of `cmds`' responses after logging in (tests/py/pop3_raw.py).
fn raw(addr: &str, mode: &str, user: &str, pw: &str, cmds: &[&str]) -> Vec<u8> {
    let mut args = vec![addr, mode, user, pw];
    args.extend_from_slice(cmds);
    let out = run_python("pop3_raw.py", &args);
    assert!(
        out.status.success(),
        "pop3_raw.py {args:?}: {}\n{}",
        show_bytes(&out.stdout, 400),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A message whose lines start with dots (dot-stuffed on the wire) and
/// carry 8-bit bytes.
fn dotty_message() -> Vec<u8> {
    let mut m = b"From: a@example.org\r\nSubject: dots\r\n\r\n".to_vec();
    for i in 0..50 {
        m.extend_from_slice(format!(".line {i} é\r\n..two\r\n.\r\n").as_bytes());
    }
    m.extend_from_slice(b"end\r\n");
    m
}

fn pop3_backend(dc: &Dovecot) -> BackendCfg {
    BackendCfg::new("dovecot", &dc.addr()).pop3(&dc.pop3_addr())
}

#[test]
fn retr_top_byte_exact_with_curl_and_a_raw_client_50mb_included() {
    let dc = Dovecot::builder().messages(2).pop3().start();
    dc.deliver("user1", &dotty_message());
    dc.deliver("user1", &sized_message("big", 50 * 1024 * 1024));
    let (pop3s, stls, admin) = (free_addr(), free_addr(), free_addr());
    let cfg = ProxyConfig::new()
        .listener_for("pop3", &pop3s, "implicit")
        .listener_for("pop3", &stls, "starttls")
        .admin(&admin)
        .backend(pop3_backend(&dc))
        .to_toml();
    let _p = Imapmux::start(&cfg, &pop3s);
    let dir = tempfile::tempdir().unwrap();
    for n in 1..=4 {
        let via = dir.path().join(format!("via{n}"));
        let direct = dir.path().join(format!("direct{n}"));
        let url = format!("pop3s://{pop3s}/{n}");
        let o = run_curl(&[
            "--max-time",
            "300",
            "-k",
            &url,
            "-u",
            "user1:pass1",
            "-o",
            via.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let url = format!("pop3://{}/{n}", dc.pop3_addr());
        let o = run_curl(&[
            "--max-time",
            "300",
            &url,
            "-u",
            "user1:pass1",
            "-o",
            direct.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (a, b) = (
            std::fs::read(&via).unwrap(),
            std::fs::read(&direct).unwrap(),
        );
        assert!(
            a == b,
            "message {n}: {} bytes through imapmux, {} direct",
            a.len(),
            b.len()
        );
        if n == 4 {
            assert!(
                a.len() >= 50 * 1024 * 1024,
                "the big message is {} bytes",
                a.len()
            );
        }
    }
    // The raw responses (dot-stuffing, CRLF, status lines) byte for byte,
    // over STLS too.
    let cmds = [
        "STAT", "LIST", "UIDL", "TOP 3 4", "RETR 3", "RETR 1", "LIST 2", "NOOP",
    ];
    let direct = raw(&dc.pop3_addr(), "plain", "user1", "pass1", &cmds);
    assert!(
        direct.windows(5).any(|w| w == b"\r\n..l"),
        "no dot-stuffed line: {}",
        show_bytes(&direct, 300)
    );
    for (addr, mode) in [(&pop3s, "implicit"), (&stls, "stls")] {
        let via = raw(addr, mode, "user1", "pass1", &cmds);
        assert!(
            via == direct,
            "{mode}:\n{}\n---- direct:\n{}",
            show_bytes(&via, 2000),
            show_bytes(&direct, 2000)
        );
    }
    // Metrics by protocol: 4 curl and 2 raw logins, once every session
    // ended (bytes are counted at the end).
    wait_admin_metric(
        &admin,
        "imapmux_protocol_sessions_open{protocol=\"pop3\"}",
        0.0,
        T,
    );
    let ok = admin_metric(
        &admin,
        "imapmux_protocol_logins_total{protocol=\"pop3\",result=\"ok\"}",
    );
    assert_eq!(ok, 6.0);
    assert_eq!(
        admin_metric(
            &admin,
            "imapmux_protocol_logins_total{protocol=\"imap\",result=\"ok\"}"
        ),
        0.0
    );
    let out = admin_metric(
        &admin,
        "imapmux_protocol_client_bytes_total{direction=\"out\",protocol=\"pop3\"}",
    );
    assert!(out > 50.0 * 1024.0 * 1024.0, "pop3 bytes out: {out}");
    assert_eq!(
        admin_metric(
            &admin,
            "imapmux_backend_protocol_up{backend=\"dovecot\",protocol=\"pop3\"}"
        ),
        1.0
    );
}

const POPLIB: &str = r#"
import poplib, ssl, sys
addr, direct = sys.argv[1], sys.argv[2]
def connect(a, stls):
    h, p = a.rsplit(":", 1)
    c = poplib.POP3(h, int(p), timeout=30)
    if stls:
        assert "STLS" in c.capa(), c.capa()
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
        c.stls(ctx)
        assert "USER" in c.capa()
    c.user("user2"); c.pass_("pass2")
    return c
p, d = connect(addr, True), connect(direct, False)
assert p.top(1, 3) == d.top(1, 3), (p.top(1, 3), d.top(1, 3))
assert p.uidl() [1:] == d.uidl()[1:]
d.quit()
count = p.stat()[0]
p.dele(1)
p.quit()
print(count)
"#;

#[test]
fn poplib_stls_top_and_dele_committed_on_quit() {
    let dc = Dovecot::builder().messages(3).pop3().start();
    let stls = free_addr();
    let cfg = ProxyConfig::new()
        .listener_for("pop3", &stls, "starttls")
        .backend(pop3_backend(&dc))
        .to_toml();
    let _p = Imapmux::start(&cfg, &stls);
    let count = python_ok(POPLIB, &[&stls, &dc.pop3_addr()]);
    assert_eq!(count.trim(), "3");
    assert_eq!(
        dc.message_count("user2", "INBOX"),
        2,
        "DELE + QUIT was not committed"
    );
}

const BEFORE_TLS: &str = r#"
import socket, ssl, sys
h, p = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((h, int(p)), timeout=30)
f = s.makefile("rb")
print(f.readline().decode().strip())
for cmd in [b"USER user1\r\n", b"AUTH PLAIN AHVzZXIxAHBhc3Mx\r\n", b"CAPA\r\n"]:
    s.sendall(cmd)
    line = f.readline().decode().strip()
    print(line)
    if cmd.startswith(b"CAPA"):
        while line != ".":
            line = f.readline().decode().strip()
            print(line)
# An attacker appends commands to STLS in plaintext: they must not run.
s.sendall(b"STLS\r\nUSER user1\r\nPASS pass1\r\n")
print(f.readline().decode().strip())
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s)
g = t.makefile("rb")
t.sendall(b"STAT\r\n")
print("after TLS: " + g.readline().decode().strip())
t.sendall(b"USER user1\r\n")
print(g.readline().decode().strip())
t.sendall(b"PASS pass1\r\n")
print(g.readline().decode().strip())
t.sendall(b"STAT\r\n")
print(g.readline().decode().strip())
"#;

#[test]
fn logins_refused_before_stls_and_injected_commands_dropped() {
    let dc = Dovecot::builder().messages(1).pop3().start();
    let stls = free_addr();
    let cfg = ProxyConfig::new()
        .listener_for("pop3", &stls, "starttls")
        .backend(pop3_backend(&dc))
        .to_toml();
    let _p = Imapmux::start(&cfg, &stls);
    let out = python_ok(BEFORE_TLS, &[&stls]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("+OK"), "{out}");
    assert!(
        lines[1].starts_with("-ERR [AUTH] Plaintext authentication disallowed"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("-ERR [AUTH] Plaintext authentication disallowed"),
        "{out}"
    );
    assert!(lines.contains(&"STLS") && !lines.contains(&"USER"), "{out}");
    assert!(!lines.iter().any(|l| l.starts_with("SASL")), "{out}");
    let after: Vec<&str> = lines
        .iter()
        .skip_while(|l| !l.starts_with("+OK Begin TLS"))
        .copied()
        .collect();
    assert_eq!(
        after.get(1),
        Some(&"after TLS: -ERR Not logged in."),
        "{out}"
    );
    assert_eq!(after.get(2), Some(&"+OK"), "{out}");
    assert_eq!(after.get(3), Some(&"+OK Logged in."), "{out}");
    assert!(
        after.get(4).is_some_and(|l| l.starts_with("+OK 1 ")),
        "{out}"
    );
}

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

#[test]
fn check_config_wants_a_pop3_address_for_a_pop3_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let cfg = ProxyConfig::new()
        .listener_for("pop3", "127.0.0.1:1110", "plaintext")
        .backend(BackendCfg::new("b1", "127.0.0.1:143"))
        .to_toml();
    std::fs::write(&path, cfg).unwrap();
    let out = imapmux_command()
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pool[0].backend[0].pop3_address"), "{err}");
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
