//! The ManageSieve front against a real Dovecot (Pigeonhole) with real
//! clients: sieve-connect uploads, lists and downloads a script through
//! imapmux (STARTTLS), a raw client uploads one as a literal after each
//! form of AUTHENTICATE "PLAIN" and compares GETSCRIPT byte for byte with
//! Dovecot reached directly, AUTHENTICATE before STARTTLS is refused,
//! wrong passwords are counted, a user's scripts land on the backend that
//! serves the user's IMAP, and metrics by protocol.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// A valid Sieve script with CRLF lines, 8-bit bytes, literal-like
/// braces, quotes and a dot-stuffed multi-line string.
fn script() -> Vec<u8> {
    let text = "require [\"fileinto\", \"vacation\"];\n\
                # a comment with {5} and {10+} and é\n\
                if header :contains \"subject\" \"{3}\\\"quoted\\\"\" {\n  fileinto \"INBOX\";\n}\n\
                vacation :days 1 text:\nI'm away.\n..\nback soon\n.\n;\n";
    text.replace('\n', "\r\n").into_bytes()
}

fn sieve_backend(dc: &Dovecot) -> BackendCfg {
    BackendCfg::new("dovecot", &dc.addr()).sieve(&dc.sieve_addr())
}

/// Run sieve-connect against `addr` as `user` (password on stdin).
fn sieve_connect(addr: &str, user: &str, pw: &str, args: &[&str]) -> Output {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut child = Command::new(require_tool("sieve-connect"))
        .args([
            "--server",
            host,
            "--port",
            port,
            "--user",
            user,
            "--passwordfd",
            "0",
        ])
        .args(["--notlsverify", "--authmech", "PLAIN"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sieve-connect");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{pw}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(o: &Output, what: &str) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{what} failed: {out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// tests/py/sieve_raw.py: upload `file` as `name`, the raw GETSCRIPT and
/// LISTSCRIPTS responses (exit 2 and the refusal when a step is refused).
fn raw(addr: &str, tls: &str, user: &str, pw: &str, form: &str, file: &Path, name: &str) -> Output {
    run_python(
        "sieve_raw.py",
        &[addr, tls, user, pw, form, file.to_str().unwrap(), name],
    )
}

#[test]
fn sieve_connect_uploads_lists_and_downloads_byte_exact() {
    let dc = Dovecot::builder().managesieve().start();
    let (sieve, admin) = (free_addr(), free_addr());
    let cfg = ProxyConfig::new()
        .listener_for("sieve", &sieve, "starttls")
        .admin(&admin)
        .backend(sieve_backend(&dc))
        .to_toml();
    let _p = Imapmux::start(&cfg, &sieve);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("filter.sieve");
    std::fs::write(&local, script()).unwrap();
    let l = local.to_str().unwrap();
    ok(
        &sieve_connect(
            &sieve,
            "user1",
            "pass1",
            &["--upload", "--localsieve", l, "--remotesieve", "filter"],
        ),
        "upload",
    );
    let stored = std::fs::read(dc.home("user1").join("sieve/filter.sieve")).unwrap();
    assert!(stored == script(), "stored:\n{}", show_bytes(&stored, 600));
    let list = ok(
        &sieve_connect(&sieve, "user1", "pass1", &["--list"]),
        "list",
    );
    assert!(list.contains("filter"), "{list}");
    let back = dir.path().join("back.sieve");
    ok(
        &sieve_connect(
            &sieve,
            "user1",
            "pass1",
            &[
                "--download",
                "--remotesieve",
                "filter",
                "--localsieve",
                back.to_str().unwrap(),
            ],
        ),
        "download",
    );
    let got = std::fs::read(&back).unwrap();
    let direct = dir.path().join("direct.sieve");
    ok(
        &sieve_connect(
            &dc.sieve_addr(),
            "user1",
            "pass1",
            &[
                "--download",
                "--remotesieve",
                "filter",
                "--localsieve",
                direct.to_str().unwrap(),
            ],
        ),
        "direct download",
    );
    assert!(
        got == std::fs::read(&direct).unwrap(),
        "download differs from direct"
    );
    assert_eq!(
        admin_metric(
            &admin,
            "imapmux_protocol_logins_total{protocol=\"sieve\",result=\"ok\"}"
        ),
        3.0
    );
    assert_eq!(
        admin_metric(
            &admin,
            "imapmux_backend_protocol_up{backend=\"dovecot\",protocol=\"sieve\"}"
        ),
        1.0
    );
}

#[test]
fn every_authenticate_form_and_getscript_byte_exact_with_direct() {
    let dc = Dovecot::builder().managesieve().start();
    let sieve = free_addr();
    let cfg = ProxyConfig::new()
        .listener_for("sieve", &sieve, "starttls")
        .backend(sieve_backend(&dc))
        .to_toml();
    let p = Imapmux::start(&cfg, &sieve);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.sieve");
    std::fs::write(&file, script()).unwrap();
    let direct = raw(
        &dc.sieve_addr(),
        "none",
        "user2",
        "pass2",
        "ir-quoted",
        &file,
        "s",
    );
    assert!(
        direct.status.success(),
        "direct: {}",
        show_bytes(&direct.stdout, 400)
    );
    assert!(direct
        .stdout
        .starts_with(format!("{{{}}}\r\n", script().len()).as_bytes()));
    for form in ["ir-quoted", "ir-literal", "challenge"] {
        let via = raw(&sieve, "starttls", "user2", "pass2", form, &file, "s");
        assert!(
            via.status.success(),
            "{form}: {}\n{}",
            show_bytes(&via.stdout, 400),
            String::from_utf8_lossy(&via.stderr)
        );
        assert!(
            via.stdout == direct.stdout,
            "{form}:\n{}\n--- direct:\n{}",
            show_bytes(&via.stdout, 900),
            show_bytes(&direct.stdout, 900)
        );
    }
    // Before STARTTLS: no mechanism offered, AUTHENTICATE refused.
    let before = raw(&sieve, "none", "user2", "pass2", "ir-quoted", &file, "s");
    assert_eq!(before.status.code(), Some(2));
    let line = String::from_utf8_lossy(&before.stdout);
    assert!(line.starts_with("NO (ENCRYPT-NEEDED)"), "{line}");
    // A wrong password: the backend's verdict, counted.
    let wrong = raw(&sieve, "starttls", "user2", "nope", "ir-quoted", &file, "s");
    assert_eq!(wrong.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&wrong.stdout).trim(),
        "NO \"Authentication failed.\""
    );
    let log = p.log();
    let failed = log
        .lines()
        .find(|l| l.contains("login failed"))
        .unwrap_or_else(|| panic!("no failed login logged:\n{log}"));
    assert!(
        failed.contains("sieve") && failed.contains("rip="),
        "{failed}"
    );
}

const IMAP_COUNT: &str = r#"
import imaplib, sys
h, p = sys.argv[1].rsplit(":", 1)
for u in sys.argv[2:]:
    i = imaplib.IMAP4(h, int(p)); i.login(u, "pass" + u[4:])
    print(u, int(i.select("INBOX")[1][0])); i.logout()
"#;

#[test]
fn scripts_land_on_the_backend_that_serves_the_users_imap() {
    let a = Dovecot::builder().messages(1).managesieve().start();
    let b = Dovecot::builder().messages(2).managesieve().start();
    let (imap, sieve) = (free_addr(), free_addr());
    let cfg = ProxyConfig::new()
        .listener(&imap, "plaintext")
        .listener_for("sieve", &sieve, "plaintext")
        .allow_plaintext_auth(true)
        .pool(
            PoolCfg::new(
                "default",
                vec![
                    BackendCfg::new("a", &a.addr()).sieve(&a.sieve_addr()),
                    BackendCfg::new("b", &b.addr()).sieve(&b.sieve_addr()),
                ],
            )
            .failover(false),
        )
        .route("user1", "b")
        .route("user2", "a")
        .to_toml();
    let _p = Imapmux::start(&cfg, &sieve);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.sieve");
    std::fs::write(&file, script()).unwrap();
    let users = ["user1", "user2", "user3", "user4", "user5"];
    let mut args = vec![imap.as_str()];
    args.extend(users);
    let out = Command::new(require_tool("python3"))
        .arg("-c")
        .arg(IMAP_COUNT)
        .args(&args)
        .output()
        .unwrap();
    let counts = ok(&out, "imaplib");
    let mut on_b = 0;
    for u in users {
        let pw = format!("pass{}", &u[4..]);
        let up = raw(&sieve, "none", u, &pw, "challenge", &file, "s");
        assert!(up.status.success(), "{u}: {}", show_bytes(&up.stdout, 300));
        let imap_on_b = counts.contains(&format!("{u} 2"));
        let (here, there) = if imap_on_b { (&b, &a) } else { (&a, &b) };
        assert!(
            here.home(u).join("sieve/s.sieve").exists(),
            "{u}: not on its IMAP backend ({counts})"
        );
        assert!(
            !there.home(u).join("sieve/s.sieve").exists(),
            "{u}: on the other backend"
        );
        on_b += usize::from(imap_on_b);
    }
    assert!(
        counts.contains("user1 2") && counts.contains("user2 1"),
        "{counts}"
    );
    assert!((1..5).contains(&on_b), "{counts}");
}

/// imapmux verifies the user (passwd-file) and logs in to Dovecot's POP3
/// and ManageSieve as the pool's master user on the user's behalf (SASL
/// PLAIN authorization identity); the user's Dovecot password is another.
#[test]
fn master_user_logins_over_pop3_and_managesieve() {
    let dir = tempfile::tempdir().unwrap();
    let master_file = dir.path().join("master-users");
    std::fs::write(&master_file, "proxy:{PLAIN}m4ster-pw\n").unwrap();
    let users = dir.path().join("imapmux-users");
    std::fs::write(&users, "user1:{PLAIN}front-pw\n").unwrap();
    make_world_readable_dir(dir.path());
    let dc = Dovecot::builder()
        .messages(2)
        .pop3()
        .managesieve()
        .extra_config(&format!(
            "passdb {{\n  driver = passwd-file\n  master = yes\n  args = {}\n}}\n",
            master_file.display()
        ))
        .start();
    let (pop3, sieve) = (free_addr(), free_addr());
    let cfg = ProxyConfig::new()
        .listener_for("pop3", &pop3, "plaintext")
        .listener_for("sieve", &sieve, "plaintext")
        .allow_plaintext_auth(true)
        .backend(
            BackendCfg::new("dovecot", &dc.addr())
                .pop3(&dc.pop3_addr())
                .sieve(&dc.sieve_addr()),
        )
        .extra(&format!(
            "[pool.login]\nmode = \"master\"\nmaster_user = \"proxy\"\nmaster_password = \"m4ster-pw\"\n\
             [auth]\nsource = \"passwd-file\"\n[auth.passwd_file]\npath = {}\nallow_plain = true\n",
            toml_str(&users.display().to_string())
        ))
        .to_toml();
    let _p = Imapmux::start(&cfg, &pop3);
    let out = run_python(
        "pop3_raw.py",
        &[&pop3, "plain", "user1", "front-pw", "STAT"],
    );
    let stat = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stat.starts_with("+OK 2 "), "{stat}");
    let file = dir.path().join("s.sieve");
    std::fs::write(&file, script()).unwrap();
    let up = raw(
        &sieve,
        "none",
        "user1",
        "front-pw",
        "ir-literal",
        &file,
        "m",
    );
    assert!(up.status.success(), "{}", show_bytes(&up.stdout, 300));
    assert_eq!(
        std::fs::read(dc.home("user1").join("sieve/m.sieve")).unwrap(),
        script()
    );
    // the user's own Dovecot password is not what imapmux checks
    let out = run_python("pop3_raw.py", &[&pop3, "plain", "user1", "pass1", "STAT"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-ERR [AUTH]"));
    let log = dc.log();
    assert!(
        log.lines()
            .any(|l| l.contains("pop3-login") && l.contains("user=<user1>") && l.contains("Login")),
        "{log}"
    );
}

const INJECTED: &str = r#"
import socket, ssl, sys
h, p = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((h, int(p)), timeout=30)
f = s.makefile("rb")
def until_status(f):
    while True:
        l = f.readline().decode().strip()
        if l.startswith(("OK", "NO", "BYE")):
            return l
until_status(f)
# An attacker appends a login to STARTTLS in plaintext: it must not run.
s.sendall(b'STARTTLS\r\nAUTHENTICATE "PLAIN" "AHVzZXIxAHBhc3Mx"\r\n')
print(until_status(f))
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s)
g = t.makefile("rb")
print(until_status(g))
t.sendall(b"LISTSCRIPTS\r\n")
print(until_status(g))
"#;

#[test]
fn a_login_injected_before_starttls_is_not_run() {
    let dc = Dovecot::builder().managesieve().start();
    let sieve = free_addr();
    let cfg = ProxyConfig::new()
        .listener_for("sieve", &sieve, "starttls")
        .backend(sieve_backend(&dc))
        .to_toml();
    let _p = Imapmux::start(&cfg, &sieve);
    let out = Command::new(require_tool("python3"))
        .arg("-c")
        .arg(INJECTED)
        .arg(&sieve)
        .output()
        .unwrap();
    let out = ok(&out, "python");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "OK \"Begin TLS negotiation now.\"",
            "OK \"TLS negotiation successful.\"",
            "NO \"Authenticate first.\""
        ],
        "{out}"
    );
}
