//! The POP3 front against a real Dovecot with real clients: curl
//! (pop3s:// RETR of every message, a 50 MB one included, byte-compared
//! with Dovecot reached directly), a raw client comparing RETR/TOP/LIST/UIDL
//! byte for byte, Python poplib (STLS, TOP, DELE + QUIT committed), logins
//! refused before STLS, commands injected before STLS not run, and
//! check-config. Operations (limits, routing, drain, health) are in
//! tests/front_pop3_ops.rs.

mod common;

use std::time::Duration;

use common::fronts::{pop3_backend, pop3_raw as raw, python_ok};
use common::*;

const T: Duration = Duration::from_secs(30);

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
    // curl over STLS: the LIST is Dovecot's.
    let via = run_curl(&[
        "-k",
        "--ssl-reqd",
        &format!("pop3://{stls}/"),
        "-u",
        "user1:pass1",
    ]);
    let direct = run_curl(&[&format!("pop3://{}/", dc.pop3_addr()), "-u", "user1:pass1"]);
    assert!(
        via.status.success(),
        "{}",
        String::from_utf8_lossy(&via.stderr)
    );
    assert_eq!(via.stdout, direct.stdout);
    assert_eq!(String::from_utf8_lossy(&via.stdout).lines().count(), 4);
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
    // Metrics by protocol: 5 curl and 2 raw logins, once every session
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
    assert_eq!(ok, 7.0);
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
