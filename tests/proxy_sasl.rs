//! SASL through imapmux into a real Dovecot: AUTHENTICATE LOGIN (with and
//! without SASL-IR), and OAUTHBEARER / XOAUTH2 passed through to a Dovecot
//! whose `oauth2` passdb asks a token introspection endpoint (a tiny HTTP
//! server in this test). The token never appears in imapmux's log.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::dovecot::log_field;
use common::*;

const GOOD_TOKEN: &str = "mF_9.B5f-4.1JqM-good-token";
const BAD_TOKEN: &str = "mF_9.B5f-4.1JqM-bad-token";
const LOGIN_PASSWORD: &str = "p ä\"\\ss {3}";

/// An RFC 7662 token introspection endpoint: `POST /introspect` with
/// `token=…`; GOOD_TOKEN is active for user1, everything else is not.
struct Introspection {
    url: String,
    /// Tokens asked about, in order.
    seen: Arc<Mutex<Vec<String>>>,
}

impl Introspection {
    fn start() -> Introspection {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/introspect", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                if let Some(token) = answer(conn) {
                    log.lock().unwrap().push(token);
                }
            }
        });
        Introspection { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serve one request on `conn` and close it; returns the token asked about.
fn answer(conn: std::net::TcpStream) -> Option<String> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut request_line = String::new();
    r.read_line(&mut request_line).ok()?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let token = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(|t| {
            t.replace("%2E", ".")
                .replace("%2D", "-")
                .replace("%5F", "_")
        })
        .unwrap_or_default();
    let json = if request_line.starts_with("POST /introspect ") && token == GOOD_TOKEN {
        r#"{"active": true, "username": "user1", "scope": "mail"}"#
    } else {
        r#"{"active": false}"#
    };
    let mut w = conn;
    let _ = write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    Some(token)
}

fn xoauth2(user: &str, token: &str) -> Vec<u8> {
    format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes()
}

fn oauthbearer(user: &str, token: &str) -> Vec<u8> {
    format!("n,a={user},\x01host=127.0.0.1\x01port=993\x01auth=Bearer {token}\x01\x01").into_bytes()
}

/// The `method=` of each of `user`'s logins in Dovecot's log.
fn dovecot_methods(dovecot: &Dovecot, user: &str) -> Vec<String> {
    dovecot
        .login_lines(user)
        .iter()
        .filter_map(|l| log_field(l, "method"))
        .collect()
}

fn proxy_for(dovecot: &Dovecot, sasl_oauth: bool) -> (Imapmux, String) {
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .sasl_oauth(sasl_oauth)
        .backend(BackendCfg::new("b1", &dovecot.addr()))
        .to_toml();
    (Imapmux::start(&cfg, &addr), addr)
}

#[tokio::test]
async fn authenticate_login_with_and_without_sasl_ir() {
    let dovecot = Dovecot::builder()
        .messages(1)
        .user("odd user", LOGIN_PASSWORD)
        .start();
    let (proxy, addr) = proxy_for(&dovecot, false);
    let tls = TlsClient::insecure();

    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    assert!(
        c.greeting().contains("AUTH=PLAIN AUTH=LOGIN")
            && !c.greeting().contains("XOAUTH2")
            && !c.greeting().contains("OAUTHBEARER"),
        "{}",
        c.greeting()
    );
    let (r, challenges) = c
        .authenticate("LOGIN", &[b"odd user", LOGIN_PASSWORD.as_bytes()], false)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r}");
    assert_eq!(challenges, ["+ VXNlcm5hbWU6", "+ UGFzc3dvcmQ6"]);
    assert!(c.select("INBOX").await.unwrap().is_ok());

    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let (r, challenges) = c
        .authenticate("LOGIN", &[b"user1", b"pass1"], true)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r}");
    assert_eq!(challenges, ["+ UGFzc3dvcmQ6"]);

    // wrong password: the backend's verdict; the session goes on
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let (r, _) = c
        .authenticate("LOGIN", &[b"user2", b"wrong-pw"], true)
        .await
        .unwrap();
    assert!(r.is_no() && r.code("AUTHENTICATIONFAILED").is_some(), "{r}");
    // cancel at the password prompt
    c.write_raw(b"x AUTHENTICATE LOGIN dXNlcjI=\r\n")
        .await
        .unwrap();
    let l = c.read_line(Duration::from_secs(5)).await.unwrap();
    assert_eq!(l.text().as_deref(), Some("+ UGFzc3dvcmQ6"), "{l:?}");
    c.write_raw(b"*\r\n").await.unwrap();
    assert!(c.read_tagged("x").await.unwrap().is_bad());
    // an OAuth mechanism is not offered without server.sasl_oauth
    let (r, _) = c
        .authenticate("XOAUTH2", &[&xoauth2("user2", GOOD_TOKEN)], true)
        .await
        .unwrap();
    assert!(r.is_no() && r.code("CANNOT").is_some(), "{r}");
    let (r, _) = c
        .authenticate("LOGIN", &[b"user2", b"pass2"], false)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r}");

    // imapmux logs in to Dovecot with PLAIN, as for every password
    dovecot.wait_for_logins("user2", 1, Duration::from_secs(5));
    assert_eq!(dovecot_methods(&dovecot, "user1"), ["PLAIN"]);
    assert_eq!(dovecot_methods(&dovecot, "user2"), ["PLAIN"]);
    let log = proxy.log();
    for secret in ["pass1", "pass2", "wrong-pw", LOGIN_PASSWORD] {
        assert!(!log.contains(secret), "password {secret:?} in log:\n{log}");
    }
    assert!(log.contains("method=\"LOGIN\""), "{log}");
}

#[tokio::test]
async fn oauth_tokens_pass_through_to_dovecot() {
    let idp = Introspection::start();
    let dovecot = Dovecot::builder()
        .messages(1)
        .oauth2_introspection(&idp.url)
        .start();
    let (proxy, addr) = proxy_for(&dovecot, true);
    let tls = TlsClient::insecure();

    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    assert!(
        c.greeting()
            .contains("AUTH=PLAIN AUTH=LOGIN AUTH=OAUTHBEARER AUTH=XOAUTH2"),
        "{}",
        c.greeting()
    );
    // XOAUTH2 with SASL-IR
    let (r, _) = c
        .authenticate("XOAUTH2", &[&xoauth2("user1", GOOD_TOKEN)], true)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r}");
    assert!(r.capabilities().iter().any(|c| c == "IDLE"), "{r}");
    assert!(c.select("INBOX").await.unwrap().is_ok());
    assert_eq!(c.fetch_body(1).await.unwrap(), dovecot.message("user1", 1));

    // OAUTHBEARER after the "+" challenge
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let (r, challenges) = c
        .authenticate("OAUTHBEARER", &[&oauthbearer("user1", GOOD_TOKEN)], false)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r}");
    assert_eq!(challenges, ["+"]);

    // Dovecot saw the OAuth mechanisms, not PLAIN
    dovecot.wait_for_logins("user1", 2, Duration::from_secs(5));
    assert_eq!(
        dovecot_methods(&dovecot, "user1"),
        ["XOAUTH2", "OAUTHBEARER"]
    );

    // A bad token: Dovecot's error challenge is answered by imapmux, the
    // client gets the tagged NO; then a good token on the same connection.
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    for (mech, msg) in [
        ("XOAUTH2", xoauth2("user1", BAD_TOKEN)),
        ("OAUTHBEARER", oauthbearer("user1", BAD_TOKEN)),
    ] {
        let (r, challenges) = c.authenticate(mech, &[&msg], true).await.unwrap();
        assert!(
            r.is_no() && r.code("AUTHENTICATIONFAILED").is_some(),
            "{mech}: {r}"
        );
        assert!(challenges.is_empty(), "{challenges:?}");
    }
    // the good token of user1 is no good for user2
    let (r, _) = c
        .authenticate("XOAUTH2", &[&xoauth2("user2", GOOD_TOKEN)], true)
        .await
        .unwrap();
    assert!(r.is_no(), "{r}");
    // (three failures close the connection: a new one)
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let (r, _) = c
        .authenticate("OAUTHBEARER", &[&oauthbearer("user1", GOOD_TOKEN)], true)
        .await
        .unwrap();
    assert!(r.is_ok(), "{r}");

    // Dovecot asked the introspection endpoint about every token it got
    let seen = idp.seen();
    assert_eq!(
        seen.iter().filter(|t| *t == BAD_TOKEN).count(),
        2,
        "{seen:?}"
    );
    assert!(
        seen.iter().filter(|t| *t == GOOD_TOKEN).count() >= 3,
        "{seen:?}"
    );
    let dlog = dovecot.log();
    assert!(
        dlog.contains("method=XOAUTH2") && dlog.contains("method=OAUTHBEARER"),
        "{dlog}"
    );

    // imapmux's log names the mechanism but never a token
    let log = proxy.log();
    assert!(log.contains("method=\"XOAUTH2\""), "{log}");
    assert!(log.contains("method=\"OAUTHBEARER\""), "{log}");
    for secret in [GOOD_TOKEN, BAD_TOKEN, "JqM"] {
        assert!(!log.contains(secret), "token {secret:?} in log:\n{log}");
    }
}

#[tokio::test]
async fn oauth_needs_the_mechanism_on_the_backend() {
    // Dovecot without OAuth: imapmux must not try PLAIN with the token.
    let dovecot = Dovecot::start();
    let (proxy, addr) = proxy_for(&dovecot, true);
    let tls = TlsClient::insecure();
    let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
    let (r, _) = c
        .authenticate("XOAUTH2", &[&xoauth2("user1", GOOD_TOKEN)], true)
        .await
        .unwrap();
    assert!(r.is_no() && r.code("UNAVAILABLE").is_some(), "{r}");
    assert!(
        proxy.wait_for_log("does not offer AUTH=XOAUTH2", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    // passwords still work on that connection
    assert!(c.login("user1", "pass1").await.unwrap().is_ok());
    dovecot.wait_for_logins("user1", 1, Duration::from_secs(5));
    let dlog = dovecot.log();
    assert!(!dlog.contains("auth failed"), "{dlog}");
    assert!(!proxy.log().contains(GOOD_TOKEN), "{}", proxy.log());
}

#[tokio::test]
async fn curl_oauth2_bearer_through_imapmux() {
    // A third-party client: curl's --oauth2-bearer (OAUTHBEARER, with
    // host= and port= fields; curl 7.88 picks it over XOAUTH2 whenever
    // both are offered, even with --login-options AUTH=XOAUTH2).
    let idp = Introspection::start();
    let dovecot = Dovecot::builder().oauth2_introspection(&idp.url).start();
    let (proxy, addr) = proxy_for(&dovecot, true);
    let url = format!("imaps://{addr}/");
    for (token, good) in [(GOOD_TOKEN, true), (BAD_TOKEN, false)] {
        let out = run_curl(&["-k", "-u", "user1:", "--oauth2-bearer", token, &url]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), good, "{token}: {stderr}");
        if good {
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("INBOX"),
                "{stderr}"
            );
        }
    }
    dovecot.wait_for_logins("user1", 1, Duration::from_secs(5));
    assert_eq!(dovecot_methods(&dovecot, "user1"), ["OAUTHBEARER"]);
    assert_eq!(idp.seen(), [GOOD_TOKEN, BAD_TOKEN]);
    let log = proxy.log();
    assert!(
        !log.contains(GOOD_TOKEN) && !log.contains(BAD_TOKEN),
        "{log}"
    );
}
