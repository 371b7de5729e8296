//! Operations (issue 13), with real parts: two private Dovecots as the two
//! backends of one failover pool, the imapmux binary in front of them with
//! IDLE offload, reuse after logout and the FETCH cache on, and the
//! operations API driven through `imapmux ctl` (and curl for the refusals).
//!
//! - `sessions` lists a known set of attached, parked and pooled sessions;
//! - `kick` ends exactly that user's sessions, others are untouched byte
//!   for byte;
//! - `backend drain` during a 50 MB APPEND loses nothing (byte-exact in
//!   Dovecot) and moves new logins to the other backend;
//! - `move` + reconnect lands on the new backend, the old cache is not
//!   served, and the override survives a reload and a restart;
//! - a wrong or missing token gets 401 and changes nothing;
//! - one CLI call drives three replicas.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Generous: these tests must pass on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);
const ADMIN_TOKEN: &str = "opsAdminToken-0123456789abcdef";
const READ_TOKEN: &str = "opsReadOnlyToken-0123456789abcdef";

/// Two Dovecots and one imapmux in front of both (pool "default",
/// failover on: b1 = d1, b2 = d2), users routed by the static map.
struct Ops {
    d1: Dovecot,
    d2: Dovecot,
    proxy: Imapmux,
    addr: String,
    admin: String,
    files: tempfile::TempDir,
    toml: String,
}

impl Ops {
    fn admin_token(&self) -> PathBuf {
        self.files.path().join("admin.token")
    }

    fn read_token(&self) -> PathBuf {
        self.files.path().join("readonly.token")
    }

    fn state_file(&self) -> PathBuf {
        self.files.path().join("routing-state.json")
    }

    /// `imapmux ctl --server <admin> --token-file <admin token> --json ARGS`.
    fn ctl(&self, args: &[&str]) -> (bool, Value) {
        ctl(&[&self.admin], &self.admin_token(), args)
    }

    fn metric(&self, series: &str) -> f64 {
        admin_metric(&self.admin, series)
    }

    /// Wait until `f` holds, or panic with `what` and the proxy's log.
    fn wait_for(&self, what: &str, mut f: impl FnMut() -> bool) {
        if wait_until(WAIT, || f().then_some(())).is_none() {
            panic!(
                "{what} did not happen within {WAIT:?}; log:\n{}",
                self.proxy.log()
            );
        }
    }
}

fn write_tokens(dir: &Path) {
    std::fs::write(dir.join("admin.token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    std::fs::write(dir.join("readonly.token"), format!("{READ_TOKEN}\n")).unwrap();
    std::fs::write(dir.join("wrong.token"), "notTheTokenAtAll-0123456789\n").unwrap();
}

/// The imapmux configuration of [`Ops`]: `routes` as the static map.
fn config(
    d1: &Dovecot,
    d2: &Dovecot,
    addr: &str,
    admin: &str,
    files: &Path,
    routes: &[(&str, &str)],
) -> String {
    let mut cfg = ProxyConfig::new()
        .listener(addr, "plaintext")
        .allow_plaintext_auth(true)
        .pool(
            PoolCfg::new(
                "default",
                vec![
                    BackendCfg::new("b1", &d1.addr()),
                    BackendCfg::new("b2", &d2.addr()),
                ],
            )
            .failover(true),
        )
        .admin(admin)
        .admin_key(
            "token_file",
            &toml_str(&files.join("admin.token").to_string_lossy()),
        )
        .admin_key(
            "readonly_token_file",
            &toml_str(&files.join("readonly.token").to_string_lossy()),
        )
        .routing_key(
            "state_file",
            &toml_str(&files.join("routing-state.json").to_string_lossy()),
        )
        .no_address_limits()
        .extra(
            "[multiplex]\nidle_offload_after = \"1s\"\npoll_interval = \"300ms\"\n\
             reuse_after_logout = true\nreuse_idle = \"120s\"\n\n\
             [cache]\nenabled = true\n",
        );
    for (u, b) in routes {
        cfg = cfg.route(u, b);
    }
    cfg.to_toml()
}

fn setup_with(d1: Dovecot, d2: Dovecot, routes: &[(&str, &str)]) -> Ops {
    let files = tempfile::tempdir().unwrap();
    write_tokens(files.path());
    let addr = free_addr();
    let admin = free_addr();
    let toml = config(&d1, &d2, &addr, &admin, files.path(), routes);
    let proxy = Imapmux::start(&toml, &addr);
    assert!(wait_for_port(&admin, WAIT), "{}", proxy.log());
    Ops {
        d1,
        d2,
        proxy,
        addr,
        admin,
        files,
        toml,
    }
}

/// user1, user2, user3 on b1; user4, user5 on b2.
const ROUTES: &[(&str, &str)] = &[
    ("user1", "b1"),
    ("user2", "b1"),
    ("user3", "b1"),
    ("user4", "b2"),
    ("user5", "b2"),
];

fn setup() -> Ops {
    let d1 = Dovecot::builder().messages(3).start();
    let d2 = Dovecot::builder().messages(3).start();
    setup_with(d1, d2, ROUTES)
}

/// Run `imapmux ctl` against `servers` with `token`; (success, JSON).
fn ctl(servers: &[&str], token: &Path, args: &[&str]) -> (bool, Value) {
    let out = imapmux_command()
        .arg("ctl")
        .arg("--server")
        .arg(servers.join(","))
        .arg("--token-file")
        .arg(token)
        .arg("--json")
        .args(args)
        .output()
        .expect("run imapmux ctl");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "imapmux ctl {args:?}: not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

/// `imapmux ctl` without `--json`: (success, stdout).
fn ctl_human(servers: &[&str], token: &Path, args: &[&str]) -> (bool, String) {
    let out = imapmux_command()
        .arg("ctl")
        .arg("--server")
        .arg(servers.join(","))
        .arg("--token-file")
        .arg(token)
        .args(args)
        .output()
        .expect("run imapmux ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The sessions rows of every replica's answer.
fn rows(v: &Value) -> Vec<Value> {
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| {
            r["response"]["sessions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// (user, state, backend, mailbox) of every row, sorted.
fn summary(v: &Value) -> Vec<(String, String, String, String)> {
    let s = |x: &Value| x.as_str().unwrap_or("-").to_string();
    let mut out: Vec<_> = rows(v)
        .iter()
        .map(|r| {
            (
                s(&r["user"]),
                s(&r["state"]),
                s(&r["backend"]),
                s(&r["mailbox"]),
            )
        })
        .collect();
    out.sort();
    out
}

fn sessions_of(o: &Ops, user: &str) -> Vec<(String, String, String, String)> {
    let (ok, v) = o.ctl(&["sessions", "--user", user]);
    assert!(ok, "{v}");
    summary(&v)
}

async fn login(addr: &str, user: &str) -> ImapClient {
    let mut c = ImapClient::connect_plain(addr).await.unwrap();
    c.login(user, &format!("pass{}", &user[4..]))
        .await
        .unwrap()
        .ok()
        .unwrap();
    c
}

fn s(a: &str, b: &str, c: &str, d: &str) -> (String, String, String, String) {
    (a.into(), b.into(), c.into(), d.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_lists_attached_parked_and_pooled() {
    let o = setup();
    // user1 attached, INBOX selected; user4 parked (IDLE) on b2; user3 logged out (pooled).
    let mut attached = login(&o.addr, "user1").await;
    attached.select("INBOX").await.unwrap();
    attached.cmd_ok("NOOP").await.unwrap();
    let (_parked, _tag) = idling(
        ImapClient::connect_plain(&o.addr).await.unwrap(),
        "user4",
        "pass4",
    )
    .await;
    let mut leaving = login(&o.addr, "user3").await;
    leaving.logout().await.unwrap();
    o.wait_for("one parked, one pooled", || {
        o.metric("imapmux_client_sessions_parked") == 1.0
            && o.metric("imapmux_backend_connections_pooled") == 1.0
    });
    let (ok, v) = o.ctl(&["sessions"]);
    assert!(ok, "{v}");
    assert_eq!(
        summary(&v),
        vec![
            s("user1", "attached", "b1", "INBOX"),
            s("user3", "pooled", "b1", "-"),
            s("user4", "parked", "b2", "INBOX"),
        ],
        "{v}"
    );
    let r = rows(&v);
    let u1 = r.iter().find(|r| r["user"] == "user1").unwrap();
    assert!(
        u1["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{u1}"
    );
    assert_eq!(u1["tls"], Value::Null, "plaintext listener: {u1}");
    assert!(u1["bytes_out"].as_u64().unwrap() > 0, "{u1}");
    // Filters.
    assert_eq!(
        sessions_of(&o, "USER4"),
        vec![s("user4", "parked", "b2", "INBOX")]
    );
    let (_, v) = o.ctl(&["sessions", "--backend", "b1"]);
    assert_eq!(summary(&v).len(), 2, "{v}");
    // The read-only token lists (human table) but may not act.
    let (ok, table) = ctl_human(&[&o.admin], &o.read_token(), &["sessions"]);
    assert!(ok, "{table}");
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("REPLICA") && header.contains("MAILBOX"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("user4") && l.contains("parked")),
        "{table}"
    );
    let (ok, v) = ctl(&[&o.admin], &o.read_token(), &["kick", "--user", "user1"]);
    assert!(!ok);
    assert_eq!(v[0]["status"], 403, "{v}");
    // From the configuration alone (as in a pod): admin.address and
    // admin.token_file; `--all` without a name needs admin.push_peers_dns.
    let out = imapmux_command()
        .args(["ctl", "--json", "--config"])
        .arg(o.proxy.config_path())
        .arg("sessions")
        .env_remove("IMAPMUX_TOKEN_FILE")
        .env_remove("IMAPMUX_ADMIN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["replica"], o.admin.as_str(), "{v}");
    assert_eq!(summary(&v).len(), 3, "{v}");
    let out = imapmux_command()
        .args(["ctl", "--all", "--config"])
        .arg(o.proxy.config_path())
        .arg("sessions")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin.push_peers_dns"),
        "{out:?}"
    );
    attached.cmd_ok("NOOP").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_ends_exactly_that_users_sessions() {
    let o = setup();
    // user1: one attached, one parked, one pooled; user2 attached, user4 parked.
    let mut a1 = login(&o.addr, "user1").await;
    a1.select("INBOX").await.unwrap();
    let (mut p1, _) = idling(
        ImapClient::connect_plain(&o.addr).await.unwrap(),
        "user1",
        "pass1",
    )
    .await;
    let mut l1 = login(&o.addr, "user1").await;
    l1.logout().await.unwrap();
    let mut a2 = login(&o.addr, "user2").await;
    a2.select("INBOX").await.unwrap();
    let (mut p4, tag4) = idling(
        ImapClient::connect_plain(&o.addr).await.unwrap(),
        "user4",
        "pass4",
    )
    .await;
    o.wait_for("two parked, one pooled", || {
        o.metric("imapmux_client_sessions_parked") == 2.0
            && o.metric("imapmux_backend_connections_pooled") == 1.0
    });
    let (ok, v) = o.ctl(&["kick", "--user", "user1", "--reason", "compromised"]);
    assert!(ok, "{v}");
    assert_eq!(v[0]["response"]["sessions"], 2, "{v}");
    assert_eq!(v[0]["response"]["pooled"], 1, "{v}");
    for c in [&mut a1, &mut p1] {
        let rest = c.expect_closed(WAIT).await.unwrap();
        let text = String::from_utf8_lossy(&rest);
        assert!(
            text.contains("* BYE [UNAVAILABLE] Session ended by the administrator."),
            "{text}"
        );
    }
    o.wait_for("kicked sessions counted", || {
        o.metric("imapmux_sessions_ended_total{reason=\"kicked\"}") == 2.0
    });
    assert_eq!(o.metric("imapmux_backend_connections_pooled"), 0.0);
    assert_eq!(
        o.metric("imapmux_ops_actions_total{action=\"kick\",result=\"ok\"}"),
        1.0
    );
    o.wait_for("user1's sessions gone from the list", || {
        sessions_of(&o, "user1").is_empty()
    });
    // The others go on, byte for byte as Dovecot answers them directly.
    for uid in 1..=3 {
        let through = a2.fetch_body(uid).await.unwrap();
        let mut d = direct(&o.d1, "user2").await;
        assert_eq!(through, d.fetch_body(uid).await.unwrap(), "uid {uid}");
    }
    let done = p4.idle_done(&tag4).await.unwrap();
    assert!(done.is_ok(), "{done}");
    let through = p4.fetch_body(2).await.unwrap();
    let mut d = direct(&o.d2, "user4").await;
    assert_eq!(through, d.fetch_body(2).await.unwrap());
    // user1 may log in again.
    let mut again = login(&o.addr, "user1").await;
    again.select("INBOX").await.unwrap();
    assert!(
        o.proxy.log().contains("action=\"kick\""),
        "{}",
        o.proxy.log()
    );
}

/// `UID FETCH <uid> BODY.PEEK[]` straight from Dovecot, for `user` (INBOX).
async fn stored(d: &Dovecot, user: &str, uid: u32) -> Vec<u8> {
    let mut c = direct(d, user).await;
    c.fetch_body(uid).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_during_a_50_mb_append_loses_nothing_and_moves_new_logins() {
    let o = setup();
    let msg = sized_message("drain", 50 * 1024 * 1024);
    let mut c = login(&o.addr, "user1").await;
    c.select("INBOX").await.unwrap();
    c.set_timeout(WAIT);
    let (mut parked, _) = idling(
        ImapClient::connect_plain(&o.addr).await.unwrap(),
        "user2",
        "pass2",
    )
    .await;
    o.wait_for("user2 parked", || {
        o.metric("imapmux_client_sessions_parked") == 1.0
    });
    // The APPEND starts: its head, the `+`, the first 10 MB.
    let tag = c.next_tag();
    c.write_raw(format!("{tag} APPEND INBOX {{{}}}\r\n", msg.len()).as_bytes())
        .await
        .unwrap();
    let plus = c.read_line(WAIT).await.unwrap();
    assert!(plus.text().unwrap_or_default().starts_with('+'), "{plus:?}");
    let cut = 10 * 1024 * 1024;
    c.write_raw(&msg[..cut]).await.unwrap();
    // Drain b1 in the middle of the literal.
    let (ok, v) = o.ctl(&["backend", "drain", "b1", "--deadline", "300"]);
    assert!(ok, "{v}");
    assert_eq!(v[0]["response"]["drained"], true, "{v}");
    assert_eq!(
        v[0]["response"]["sessions"], 1,
        "the attached user1 session: {v}"
    );
    // A new login of a b1 user lands on b2 (failover pool).
    let mut fresh = login(&o.addr, "user3").await;
    fresh.select("INBOX").await.unwrap();
    assert_eq!(
        sessions_of(&o, "user3"),
        vec![s("user3", "attached", "b2", "INBOX")]
    );
    // The rest of the message: the APPEND completes, then the BYE.
    c.write_raw(&msg[cut..]).await.unwrap();
    c.write_raw(b"\r\n").await.unwrap();
    let resp = c.read_tagged(&tag).await.unwrap();
    assert!(resp.is_ok(), "{resp}");
    let uid = resp.appended_uid().expect("APPENDUID");
    let rest = c.expect_closed(WAIT).await.unwrap();
    assert!(
        String::from_utf8_lossy(&rest).contains("* BYE [UNAVAILABLE] Server maintenance"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(
        stored(&o.d1, "user1", uid).await,
        msg,
        "byte-exact in Dovecot"
    );
    o.wait_for("drained session counted", || {
        o.metric("imapmux_sessions_ended_total{reason=\"drained\"}") == 1.0
    });
    assert_eq!(o.metric("imapmux_ops_backends_drained"), 1.0);
    // The parked user2 (failover pool) stays parked; its next command
    // re-attaches on b2. (These two Dovecots do not share storage, as a
    // real failover pool would: the client may be told to reconnect.)
    assert_eq!(
        sessions_of(&o, "user2"),
        vec![s("user2", "parked", "b1", "INBOX")]
    );
    parked.write_raw(b"DONE\r\n").await.unwrap();
    let _ = parked.cmd("NOOP").await;
    let _ = parked.cmd("FETCH 1 (UID)").await;
    assert!(
        o.proxy
            .wait_for_log("parked session re-attaches to another backend", WAIT),
        "{}",
        o.proxy.log()
    );
    assert!(o.proxy.log().contains("to=b2"), "{}", o.proxy.log());
    // A reload keeps the drain; undrain takes logins again.
    o.proxy.send_signal(libc::SIGHUP);
    assert!(o.proxy.wait_for_log("configuration reloaded", WAIT));
    let (_, v) = o.ctl(&["backend", "list"]);
    let b1 = v[0]["response"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "b1")
        .cloned()
        .unwrap();
    assert_eq!(b1["drained"], true, "{v}");
    let (ok, v) = o.ctl(&["backend", "undrain", "b1"]);
    assert!(ok, "{v}");
    let mut back = login(&o.addr, "user1").await;
    back.select("INBOX").await.unwrap();
    assert_eq!(sessions_of(&o, "user1")[0].2, "b1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_lands_on_the_new_backend_and_the_old_cache_is_not_served() {
    // b2 holds other messages for user1 than b1.
    let d1 = Dovecot::builder().messages(3).start();
    let d2 = Dovecot::builder().start();
    let mut seed = direct_login(&d2, "user1").await;
    let other = sized_message("on-b2", 4000);
    seed.append("INBOX", None, &other)
        .await
        .unwrap()
        .ok()
        .unwrap();
    let o = setup_with(d1, d2, ROUTES);
    let mut c = login(&o.addr, "user1").await;
    c.select("INBOX").await.unwrap();
    let first = c.fetch_body(1).await.unwrap();
    assert_eq!(first, o.d1.message("user1", 1));
    // Read again: served from the cache.
    let hits = o.metric("imapmux_cache_hits_total");
    assert_eq!(c.fetch_body(1).await.unwrap(), first);
    assert!(o.metric("imapmux_cache_hits_total") > hits);
    let (ok, v) = o.ctl(&["move", "--user", "user1", "--to", "b2"]);
    assert!(ok, "{v}");
    assert_eq!(v[0]["response"]["to"], "b2", "{v}");
    assert_eq!(v[0]["response"]["sessions"], 1, "{v}");
    let rest = c.expect_closed(WAIT).await.unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("* BYE"), "{rest:?}");
    let state = std::fs::read_to_string(o.state_file()).unwrap();
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["users"]["user1"], "b2", "{state}");
    // Reconnect: b2, and UID 1 is b2's message, not the cached b1 one.
    let mut c = login(&o.addr, "user1").await;
    c.select("INBOX").await.unwrap();
    assert_eq!(
        sessions_of(&o, "user1"),
        vec![s("user1", "attached", "b2", "INBOX")]
    );
    assert_eq!(c.fetch_body(1).await.unwrap(), other);
    // cache stats / purge: the purge drops what the user had cached.
    let (ok, v) = o.ctl(&["cache", "stats"]);
    assert!(ok, "{v}");
    assert_eq!(v[0]["response"]["enabled"], true, "{v}");
    assert!(v[0]["response"]["fills"].as_u64().unwrap() >= 2, "{v}");
    let (ok, v) = o.ctl(&["cache", "purge", "--user", "user1"]);
    assert!(ok, "{v}");
    assert_eq!(v[0]["response"]["purged"], true, "{v}");
    let hits = o.metric("imapmux_cache_hits_total");
    assert_eq!(c.fetch_body(1).await.unwrap(), other);
    assert_eq!(
        o.metric("imapmux_cache_hits_total"),
        hits,
        "purged: not served from the cache"
    );
    c.logout().await.unwrap();
    // A restart (same state file) agrees.
    let Ops {
        d1,
        d2,
        mut proxy,
        addr,
        admin,
        files,
        toml,
    } = o;
    proxy.kill();
    drop(proxy);
    let proxy = Imapmux::start(&toml, &addr);
    assert!(wait_for_port(&admin, WAIT), "{}", proxy.log());
    let o = Ops {
        d1,
        d2,
        proxy,
        addr,
        admin,
        files,
        toml,
    };
    let mut c = login(&o.addr, "user1").await;
    c.select("INBOX").await.unwrap();
    assert_eq!(sessions_of(&o, "user1")[0].2, "b2");
    assert_eq!(c.fetch_body(1).await.unwrap(), other);
    assert_eq!(o.metric("imapmux_ops_user_overrides"), 1.0);
}

async fn direct_login(d: &Dovecot, user: &str) -> ImapClient {
    let mut c = ImapClient::connect_plain(&d.addr()).await.unwrap();
    c.login(user, &format!("pass{}", &user[4..]))
        .await
        .unwrap()
        .ok()
        .unwrap();
    c
}

/// curl `method` `path` on `admin` with `headers`: (status, body).
fn curl(admin: &str, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    let url = format!("http://{admin}{path}");
    let mut args = vec!["-w", "\n%{http_code}", "-X", method];
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    if !body.is_empty() {
        args.extend_from_slice(&["--data-binary", body]);
    }
    args.push(&url);
    let out = run_curl(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_gets_401_and_changes_nothing() {
    let o = setup();
    let mut c = login(&o.addr, "user1").await;
    c.select("INBOX").await.unwrap();
    let drain = r#"{"backend":"b1"}"#;
    let kick = r#"{"user":"user1"}"#;
    let wrong = "Authorization: Bearer notTheTokenAtAll-0123456789";
    let ro = format!("Authorization: Bearer {READ_TOKEN}");
    for (headers, want) in [
        (vec![], 401),
        (vec![wrong], 401),
        (vec!["Authorization: Basic dXNlcjpwYXNz"], 401),
        (vec![ro.as_str()], 403),
    ] {
        let (code, body) = curl(&o.admin, "POST", "/api/v1/backends/drain", &headers, drain);
        assert_eq!(code, want, "{headers:?}: {body}");
        let (code, body) = curl(&o.admin, "POST", "/api/v1/kick", &headers, kick);
        assert_eq!(code, want, "{headers:?}: {body}");
    }
    let (code, _) = curl(&o.admin, "GET", "/api/v1/sessions", &[], "");
    assert_eq!(code, 401);
    // The CLI with a wrong token: exit status 1, the replica's 401.
    let (ok, v) = ctl(
        &[&o.admin],
        &o.files.path().join("wrong.token"),
        &["backend", "drain", "b1"],
    );
    assert!(!ok);
    assert_eq!(v[0]["status"], 401, "{v}");
    // Nothing changed: b1 takes logins, user1's session goes on.
    let (_, v) = o.ctl(&["backend", "list"]);
    assert!(
        v[0]["response"]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["drained"] == false),
        "{v}"
    );
    c.cmd_ok("NOOP").await.unwrap();
    assert_eq!(
        sessions_of(&o, "user1"),
        vec![s("user1", "attached", "b1", "INBOX")]
    );
    assert!(!o.state_file().exists(), "no state written");
    assert_eq!(
        o.metric("imapmux_ops_actions_total{action=\"drain\",result=\"unauthorized\"}"),
        4.0
    );
    assert_eq!(
        o.metric("imapmux_ops_actions_total{action=\"kick\",result=\"forbidden\"}"),
        1.0
    );
    // Bad requests are refused with 400 and change nothing either.
    let admin_h = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let (code, _) = curl(
        &o.admin,
        "POST",
        "/api/v1/backends/drain",
        &[&admin_h],
        r#"{"backend":"nope"}"#,
    );
    assert_eq!(code, 400);
    let (code, _) = curl(&o.admin, "POST", "/api/v1/kick", &[&admin_h], "{not json");
    assert_eq!(code, 400);
    let (code, _) = curl(&o.admin, "GET", "/api/v1/kick", &[&admin_h], "");
    assert_eq!(code, 405);
    let huge = format!(r#"{{"user":"{}"}}"#, "u".repeat(20_000));
    let (code, _) = curl(&o.admin, "POST", "/api/v1/kick", &[&admin_h], &huge);
    assert_eq!(code, 413);
    let (code, _) = curl(
        &o.admin,
        "POST",
        "/api/v1/kick",
        &[&admin_h],
        r#"{"user":"a\r\nb"}"#,
    );
    assert_eq!(code, 400);
    c.cmd_ok("NOOP").await.unwrap();
}

#[test]
fn without_a_token_the_api_does_not_exist() {
    let d = Dovecot::start();
    let addr = free_addr();
    let admin = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "plaintext")
        .allow_plaintext_auth(true)
        .backend(BackendCfg::new("b1", &d.addr()))
        .admin(&admin)
        .to_toml();
    let p = Imapmux::start(&cfg, &addr);
    assert!(wait_for_port(&admin, WAIT), "{}", p.log());
    let h = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let (code, _) = curl(&admin, "GET", "/api/v1/sessions", &[&h], "");
    assert_eq!(code, 404);
    let (code, _) = curl(
        &admin,
        "POST",
        "/api/v1/backends/drain",
        &[&h],
        r#"{"backend":"b1"}"#,
    );
    assert_eq!(code, 404);
}

#[test]
fn check_config_names_the_operations_keys() {
    let dir = tempfile::tempdir().unwrap();
    let check = |admin: &str, routing: &str| -> (bool, String) {
        let cfg = format!(
            "[[listener]]\naddress = \"127.0.0.1:1143\"\nmode = \"plaintext\"\n\
             [routing]\n{routing}\n[admin]\n{admin}\n\
             [[pool]]\nname = \"p\"\n[[pool.backend]]\nname = \"b1\"\naddress = \"127.0.0.1:1\"\n"
        );
        let f = dir.path().join("c.toml");
        std::fs::write(&f, cfg).unwrap();
        let out = imapmux_command()
            .arg("check-config")
            .arg("--config")
            .arg(&f)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let short = dir.path().join("short.token");
    std::fs::write(&short, "abc\n").unwrap();
    let good = dir.path().join("good.token");
    std::fs::write(&good, format!("{ADMIN_TOKEN}\n")).unwrap();
    let q = |p: &Path| toml_str(&p.to_string_lossy());
    let (ok, err) = check(&format!("token_file = {}", q(&good)), "");
    assert!(
        !ok && err.contains("admin.token_file") && err.contains("admin.address"),
        "{err}"
    );
    let (ok, err) = check(
        &format!("address = \"127.0.0.1:9\"\ntoken_file = {}", q(&short)),
        "",
    );
    assert!(
        !ok && err.contains("admin.token_file") && err.contains("16"),
        "{err}"
    );
    let (ok, err) = check(
        &format!(
            "address = \"127.0.0.1:9\"\ntoken_file = {0}\nreadonly_token_file = {0}",
            q(&good)
        ),
        "",
    );
    assert!(!ok && err.contains("admin.readonly_token_file"), "{err}");
    let (ok, err) = check("", "state_file = \"/nonexistent/dir/state.json\"");
    assert!(!ok && err.contains("routing.state_file"), "{err}");
    let bad_state = dir.path().join("bad.json");
    std::fs::write(&bad_state, "{\"drained\": 3}").unwrap();
    let (ok, err) = check("", &format!("state_file = {}", q(&bad_state)));
    assert!(!ok && err.contains("routing.state_file"), "{err}");
    let (ok, err) = check(
        &format!("address = \"127.0.0.1:9\"\ntoken_file = {}", q(&good)),
        "",
    );
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cli_call_drives_three_replicas() {
    let d1 = Dovecot::builder().messages(1).start();
    let d2 = Dovecot::builder().messages(1).start();
    let files = tempfile::tempdir().unwrap();
    write_tokens(files.path());
    let mut replicas = Vec::new();
    for i in 0..3 {
        // Each replica its own state file (own volume, as in a pod).
        let dir = files.path().join(format!("r{i}"));
        std::fs::create_dir(&dir).unwrap();
        write_tokens(&dir);
        let (addr, admin) = (free_addr(), free_addr());
        let toml = config(&d1, &d2, &addr, &admin, &dir, ROUTES);
        let p = Imapmux::start(&toml, &addr);
        assert!(wait_for_port(&admin, WAIT), "{}", p.log());
        replicas.push((p, addr, admin));
    }
    let admins: Vec<&str> = replicas.iter().map(|r| r.2.as_str()).collect();
    let token = files.path().join("admin.token");
    // A client of user1 on each replica.
    let mut clients = Vec::new();
    for (_, addr, _) in &replicas {
        let mut c = login(addr, "user1").await;
        c.select("INBOX").await.unwrap();
        clients.push(c);
    }
    let (ok, v) = ctl(&admins, &token, &["sessions"]);
    assert!(ok, "{v}");
    let per: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["replica"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(per, admins);
    assert_eq!(
        summary(&v),
        vec![s("user1", "attached", "b1", "INBOX"); 3],
        "{v}"
    );
    // One drain call: every replica drains, its session ends.
    let (ok, v) = ctl(
        &admins,
        &token,
        &["backend", "drain", "b1", "--deadline", "30"],
    );
    assert!(ok, "{v}");
    for r in v.as_array().unwrap() {
        assert_eq!(r["status"], 200, "{v}");
        assert_eq!(r["response"]["sessions"], 1, "{v}");
    }
    for c in &mut clients {
        let rest = c.expect_closed(WAIT).await.unwrap();
        assert!(String::from_utf8_lossy(&rest).contains("* BYE"), "{rest:?}");
    }
    // Every replica now sends user1 to b2.
    let mut again = Vec::new();
    for (_, addr, _) in &replicas {
        let mut c = login(addr, "user1").await;
        c.select("INBOX").await.unwrap();
        again.push(c);
    }
    let (_, v) = ctl(&admins, &token, &["sessions", "--user", "user1"]);
    assert_eq!(
        summary(&v),
        vec![s("user1", "attached", "b2", "INBOX"); 3],
        "{v}"
    );
    let (_, v) = ctl(&admins, &token, &["backend", "list"]);
    for r in v.as_array().unwrap() {
        let b1 = r["response"]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == "b1")
            .cloned()
            .unwrap();
        assert_eq!(b1["drained"], true, "{v}");
    }
    let (ok, table) = ctl_human(&admins, &token, &["backend", "list"]);
    assert!(ok, "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains(" b1 ")).count(),
        3,
        "{table}"
    );
    // --all: every address of a DNS name (here localhost: one replica).
    let port = admins[0].rsplit_once(':').unwrap().1;
    let out = imapmux_command()
        .args([
            "ctl",
            "--all",
            &format!("localhost:{port}"),
            "--json",
            "--token-file",
        ])
        .arg(&token)
        .arg("sessions")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["replica"], admins[0], "{v}");
    assert_eq!(
        summary(&v),
        vec![s("user1", "attached", "b2", "INBOX")],
        "{v}"
    );
    // A replica that is down is reported, the others still act.
    let (mut dead, _, dead_admin) = replicas.pop().unwrap();
    dead.kill();
    let admins: Vec<&str> = replicas
        .iter()
        .map(|r| r.2.as_str())
        .chain([dead_admin.as_str()])
        .collect();
    let (ok, v) = ctl(&admins, &token, &["backend", "undrain", "b1"]);
    assert!(!ok, "{v}");
    assert_eq!(v[0]["status"], 200);
    assert_eq!(v[1]["status"], 200);
    assert!(v[2]["error"].is_string(), "{v}");
}
