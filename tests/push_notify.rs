//! Dovecot push notifications into imapmux's admin `/push`, with a real
//! Dovecot: the OX driver (a delivery through dovecot-lda to INBOX of a user
//! with the http-notify METADATA) and the Lua driver running
//! `config/dovecot/imapmux-push.lua` (appends, flag changes, expunges in
//! any mailbox). Checked through imapmux's metrics and log: events are
//! accepted, a wrong secret is refused and counted, and message content
//! never reaches imapmux's log.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

const SECRET: &str = "pushS3cretForTests";

fn metric(admin: &str, series: &str) -> f64 {
    admin_metric(admin, series)
}

fn push_events(admin: &str, result: &str) -> f64 {
    metric(
        admin,
        &format!("imapmux_push_events_total{{result=\"{result}\"}}"),
    )
}

/// Wait until `imapmux_push_events_total{result}` reaches `n`.
fn wait_push_events(admin: &str, result: &str, n: f64, p: &Imapmux, d: &Dovecot) {
    let ok = wait_until(Duration::from_secs(15), || {
        (push_events(admin, result) >= n).then_some(())
    });
    assert!(
        ok.is_some(),
        "push_events_total{{result={result}}} stayed at {} (want {n});\nimapmux log:\n{}\ndovecot log:\n{}",
        push_events(admin, result),
        p.log(),
        d.log()
    );
}

/// A subject (and body) no log may ever contain.
fn secret_words() -> (String, String) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (
        format!("Subject-Never-Logged-{t}"),
        format!("Snippet-Never-Logged-{t}"),
    )
}

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Sender Name <sender@example.org>\r\nTo: user1@example.org\r\n\
         Subject: {subject}\r\nMessage-ID: <{subject}@example.org>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Deliver like an MTA (dovecot-lda): this is what raises MessageNew, the
/// only event the OX driver sends (doveadm save and IMAP APPEND raise
/// MessageAppend).
fn lda_deliver(d: &Dovecot, user: &str, msg: &[u8]) {
    let lda = [
        "/usr/lib/dovecot/dovecot-lda",
        "/usr/libexec/dovecot/dovecot-lda",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .unwrap_or_else(|| {
        panic!("dovecot-lda is not installed (package dovecot-core); run `scripts/test`")
    });
    let mut child = Command::new(lda)
        .arg("-c")
        .arg(d.conf_path())
        .args(["-d", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dovecot-lda");
    child.stdin.take().unwrap().write_all(msg).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dovecot-lda -d {user} failed ({}): {}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

/// imapmux with /push on `admin`, in front of `d`.
fn start_imapmux(d: &Dovecot, admin: &str) -> (Imapmux, String) {
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", &d.addr()))
        .extra(&format!(
            "[admin]\naddress = {}\npush_secret = {}\n",
            toml_str(admin),
            toml_str(SECRET)
        ))
        .to_toml();
    let p = Imapmux::start(&cfg, &addr);
    assert!(wait_for_port(admin, Duration::from_secs(10)), "{}", p.log());
    (p, addr)
}

/// `curl -X PUT` to /push; returns the HTTP status.
fn curl_push(admin: &str, auth: &[&str], body: &str) -> u16 {
    let url = format!("http://{admin}/push");
    let mut args = vec![
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json; charset=utf-8",
        "--data-binary",
        body,
    ];
    args.extend_from_slice(auth);
    args.push(&url);
    let out = run_curl(&args);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl: {out:?}"))
}

fn push_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("push event")).collect()
}

/// Wait until imapmux logged a push event of `user1` for `mailbox`.
fn wait_push_line(p: &Imapmux, d: &Dovecot, mailbox: &str, event: &str) {
    let found = wait_until(Duration::from_secs(15), || {
        let log = p.log();
        push_lines(&log)
            .iter()
            .any(|l| {
                l.contains("user=\"user1\"")
                    && l.contains(&format!("mailbox=\"{mailbox}\""))
                    && l.contains(&format!("event=\"{event}\""))
            })
            .then_some(())
    });
    assert!(
        found.is_some(),
        "no push event {event} for {mailbox};\nimapmux log:\n{}\ndovecot log:\n{}",
        p.log(),
        d.log()
    );
}

#[test]
fn ox_driver_delivery_wakes_and_content_stays_out_of_the_log() {
    let admin = free_addr();
    let d = Dovecot::builder()
        .extra_config(&format!(
            "mail_plugins = $mail_plugins notify push_notification\n\
             mail_attribute_dict = file:%h/dovecot-attributes\n\
             protocol imap {{\n  imap_metadata = yes\n}}\n\
             plugin {{\n  push_notification_driver = ox:url=http://dovecot:{SECRET}@{admin}/push\n}}\n"
        ))
        .start();
    let (p, _addr) = start_imapmux(&d, &admin);
    assert_eq!(push_events(&admin, "accepted"), 0.0);

    // The OX driver pushes only for users with this METADATA (its value
    // names the user for the OX side; imapmux uses Dovecot's user name).
    let out = d.doveadm(
        &[
            "mailbox",
            "metadata",
            "set",
            "-u",
            "user1",
            "-s",
            "",
            "/private/vendor/vendor.dovecot/http-notify",
            "user=user1",
        ],
        None,
    );
    assert!(out.status.success(), "doveadm metadata set: {out:?}");

    let (subject, snippet) = secret_words();
    // user2 has no METADATA: Dovecot sends nothing for it.
    lda_deliver(&d, "user2", &message(&subject, &snippet));
    lda_deliver(&d, "user1", &message(&subject, &snippet));
    wait_push_events(&admin, "accepted", 1.0, &p, &d);
    assert!(d.message_count("user1", "INBOX") == 1);

    // Wrong secrets, both ways, with an OX-shaped body.
    let body = format!(
        r#"{{"user":"user1","event":"messageNew","folder":"INBOX","imap-uidvalidity":1,"imap-uid":9,"subject":"{subject}","snippet":"{snippet}"}}"#
    );
    assert_eq!(curl_push(&admin, &["-u", "dovecot:wrong"], &body), 401);
    assert_eq!(
        curl_push(&admin, &["-H", "Authorization: Bearer wrong"], &body),
        401
    );
    assert_eq!(curl_push(&admin, &[], &body), 401);
    assert_eq!(push_events(&admin, "unauthorized"), 3.0);
    // The right one (any user name), and a body that is no push event.
    let right = format!("anyone:{SECRET}");
    assert_eq!(curl_push(&admin, &["-u", &right], &body), 204);
    assert_eq!(curl_push(&admin, &["-u", &right], "{\"nope\":1}"), 400);
    assert_eq!(push_events(&admin, "bad_request"), 1.0);
    assert_eq!(push_events(&admin, "accepted"), 2.0);

    let log = p.log();
    let lines = push_lines(&log);
    assert_eq!(lines.len(), 2, "{log}");
    for l in &lines {
        assert!(
            l.contains("user1") && l.contains("INBOX") && l.contains("messageNew"),
            "{l}"
        );
    }
    assert!(!log.contains("user2"), "{log}");
    assert!(!log.contains(&subject), "subject in imapmux's log:\n{log}");
    assert!(!log.contains(&snippet), "snippet in imapmux's log:\n{log}");
    assert!(!log.contains("sender@example.org"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
}

#[test]
fn lua_driver_script_reports_every_change() {
    let admin = free_addr();
    let d = Dovecot::builder()
        .lua_push(&format!("http://{admin}/push"), SECRET)
        .start();
    let (p, addr) = start_imapmux(&d, &admin);

    let (subject, snippet) = secret_words();
    // An MTA delivery (MessageNew) and an append to another mailbox.
    lda_deliver(&d, "user1", &message(&subject, &snippet));
    wait_push_line(&p, &d, "INBOX", "MessageNew");
    let out = d.doveadm(&["mailbox", "create", "-u", "user1", "Archive"], None);
    assert!(out.status.success(), "{out:?}");
    d.deliver_to("user1", "Archive", &message(&subject, &snippet));
    wait_push_line(&p, &d, "Archive", "MessageAppend");

    // A client through imapmux: a flag change and an expunge.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = ImapClient::connect_tls(&addr, &TlsClient::insecure())
            .await
            .unwrap();
        assert!(c.login("user1", "pass1").await.unwrap().is_ok());
        assert!(c.select("INBOX").await.unwrap().is_ok());
        c.cmd_ok("STORE 1 +FLAGS (\\Flagged)").await.unwrap();
        wait_push_line(&p, &d, "INBOX", "FlagsSet");
        c.cmd_ok("STORE 1 +FLAGS (\\Deleted)").await.unwrap();
        c.cmd_ok("EXPUNGE").await.unwrap();
        wait_push_line(&p, &d, "INBOX", "MessageExpunge");
        c.logout().await.unwrap();
    });

    let log = p.log();
    assert!(push_events(&admin, "accepted") >= 4.0, "{log}");
    assert_eq!(push_events(&admin, "unauthorized"), 0.0);
    assert_eq!(push_events(&admin, "bad_request"), 0.0);
    assert!(!log.contains(&subject), "subject in imapmux's log:\n{log}");
    assert!(!log.contains(&snippet), "snippet in imapmux's log:\n{log}");
    assert!(
        !d.log().contains("imapmux-push:"),
        "the Lua script reported an error:\n{}",
        d.log()
    );
}
