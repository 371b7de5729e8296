//! COMPRESS=DEFLATE (RFC 4978) toward clients, terminated in imapmux
//! (issue 15, item 1), against a real Dovecot with its own COMPRESS
//! (imap_zlib) as the reference: a raw-deflate client (tests/py/
//! imap_compress.py: Python's zlib, wbits -15) sees the same decompressed
//! session through imapmux over TLS as directly, APPEND and FETCH
//! byte-exact, fewer bytes on the wire than inside; and a compressed client
//! parks, is woken by new mail and answered while parked.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const IMAP_ZLIB: &str = "protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n";

fn port(addr: &str) -> String {
    addr.rsplit(':').next().unwrap().to_string()
}

/// The transcript with what differs between two runs on one mailbox
/// taken out: RECENT counts, UIDNEXT and APPENDUID numbers (the first run
/// appended and expunged a message).
fn comparable(out: &str) -> String {
    let mut lines = Vec::new();
    for l in out.lines() {
        if l.starts_with("WIRE ") || (l.starts_with("* ") && l.ends_with(" RECENT")) {
            continue;
        }
        let mut l = l.to_string();
        for key in ["[UIDNEXT ", "[APPENDUID "] {
            if let Some(i) = l.find(key) {
                let end = l[i..].find(']').map_or(l.len(), |e| i + e);
                l.replace_range(i + key.len()..end, "N");
            }
        }
        lines.push(l);
    }
    lines.join("\n")
}

/// (bytes on the socket, bytes inside) received by the client.
fn wire(out: &str) -> (u64, u64) {
    let l = out.lines().find(|l| l.starts_with("WIRE ")).unwrap();
    let num = |k: &str| -> u64 {
        l.split(' ')
            .find_map(|w| w.strip_prefix(k))
            .unwrap()
            .parse()
            .unwrap()
    };
    (num("received="), num("plain_received="))
}

#[test]
fn a_compressing_client_sees_through_imapmux_what_it_sees_direct() {
    let d = Dovecot::builder()
        .messages(20)
        .extra_config(IMAP_ZLIB)
        .start();
    let ca = TestCa::new("imapmux compress CA");
    let cert = ca.issue_localhost();
    let implicit = free_addr();
    let admin = free_addr();
    let cfg = ProxyConfig::new()
        .tls_files(&cert.chain, &cert.key)
        .listener(&implicit, "implicit")
        .backend(BackendCfg::new("b1", &d.addr()))
        .admin(&admin)
        .to_toml();
    let _proxy = Imapmux::start(&cfg, &implicit);
    let ca_file = ca.ca_pem_path().display().to_string();
    let run = |args: &[&str]| {
        let out = run_python("imap_compress.py", args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let user = ["--user", "user1", "--password", "pass1"];
    let direct_port = d.port().to_string();
    let mut direct = vec!["--port", direct_port.as_str()];
    direct.extend(user);
    direct.extend(["--append-size", "300000", "session"]);
    let theirs = run(&direct);
    let proxy_port = port(&implicit);
    let mut via = vec!["--port", &proxy_port, "--tls", "--cafile", &ca_file];
    via.extend(user);
    via.extend(["--append-size", "300000", "session"]);
    let mine = run(&via);
    assert!(mine.contains("APPEND byte-exact 307926"), "{mine}");
    assert!(mine.contains("TAG OK Begin compression."), "{mine}");
    assert_eq!(comparable(&mine), comparable(&theirs));
    // Compressed on the wire, both ways of reaching Dovecot alike.
    let (m_wire, m_plain) = wire(&mine);
    let (t_wire, t_plain) = wire(&theirs);
    eprintln!(
        "received: imapmux {m_wire} bytes on the wire for {m_plain} inside; direct {t_wire} for {t_plain}"
    );
    // (The greetings and LOGIN answers differ: imapmux's capabilities.)
    assert!(m_plain.abs_diff(t_plain) < 1000, "{m_plain} vs {t_plain}");
    assert!(m_wire * 2 < m_plain, "{m_wire} vs {m_plain}");
    // The metrics tell the same: what went out inside vs on the wire.
    let sent = admin_metric(&admin, "imapmux_compress_plain_sent_bytes_total");
    let wire = admin_metric(&admin, "imapmux_compress_wire_sent_bytes_total");
    assert!(sent > 400_000.0 && wire * 2.0 < sent, "{sent} vs {wire}");
    let got = admin_metric(&admin, "imapmux_compress_plain_received_bytes_total");
    assert!(got > 300_000.0, "{got}");
    assert!(admin_metric(&admin, "imapmux_compress_wire_received_bytes_total") < got / 2.0);
}

#[test]
fn a_compressed_client_parks_and_is_woken_compressed() {
    let s = setup_with(
        Dovecot::builder()
            .messages(3)
            .max_clients(60)
            .extra_config(IMAP_ZLIB),
    );
    let mut child = Command::new(require_tool("python3"))
        .arg(py_script("imap_compress.py"))
        .args([
            "--port",
            &port(&s.addr),
            "--user",
            "user3",
            "--password",
            "pass3",
            "idle",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if line.trim() != "IDLING" {
        let _ = child.wait();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
        let _ = std::io::Read::read_to_string(&mut out, &mut line);
        panic!("{line}\n{err}");
    }
    wait_admin_metric(
        &s.admin,
        "imapmux_client_sessions_parked",
        1.0,
        Duration::from_secs(10),
    );
    s.d.deliver("user3", b"Subject: while parked\r\n\r\ncompressed\r\n");
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("* 4 EXISTS"), "{rest}");
    assert!(rest.contains("TAG OK Idle completed."), "{rest}");
    assert!(rest.contains("TAG OK NOOP completed."), "{rest}");
    assert!(rest.contains("* BYE Logging out"), "{rest}");
    // All of it while parked: no backend login for DONE, NOOP, LOGOUT.
    assert_eq!(admin_metric(&s.admin, "imapmux_reattaches_total"), 0.0);
    assert_eq!(admin_metric(&s.admin, "imapmux_parks_total"), 1.0);
}
