//! The passwd-file auth source end to end: the real imapmux binary
//! verifies logins against a Dovecot-style passwd-file (hashes made by
//! `imapmux hash-password` and by `doveadm pw`), routes users by the file's
//! extra fields, and picks up changes to the file without a restart.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn doveadm_hash(scheme: &str, pw: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("dovecot.conf");
    std::fs::write(&conf, "\n").unwrap();
    let out = Command::new(require_tool("doveadm"))
        .args(["-c", conf.to_str().unwrap(), "pw", "-s", scheme, "-p", pw])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn passwd_file_verifies_routes_and_reloads() {
    let d1 = Dovecot::builder().start();
    let d2 = Dovecot::builder().start();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    // user1's hash from imapmux, user2's from doveadm; carol is user3 on d2
    // (by address, Dovecot-style host/port/destuser fields).
    let file1 = format!(
        "# imapmux users\nuser1:{}\nuser2:{}\ncarol:{}::::::host=127.0.0.1 port={} destuser=user3\n",
        hash_password("ARGON2ID", "pass1"),
        doveadm_hash("SHA512-CRYPT", "pass2"),
        hash_password("BLF-CRYPT", "pass3"),
        d2.port()
    );
    std::fs::write(&users, &file1).unwrap();
    let addr = free_addr();
    let cfg = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", &d1.addr()))
        .backend(BackendCfg::new("b2", &d2.addr()))
        .route("user1", "b1")
        .route("user2", "b1")
        .extra(&format!(
            "[auth]\nsource = \"passwd-file\"\n[auth.passwd_file]\npath = {}\nreload_check_interval = \"300ms\"\n[auth.penalty]\nenabled = false\n",
            toml_str(users.to_str().unwrap())
        ))
        .to_toml();
    let proxy = Imapmux::start(&cfg, &addr);
    let tls = TlsClient::insecure();
    let login = |u: &'static str, p: &'static str| {
        let (addr, tls) = (addr.clone(), tls.clone());
        async move {
            let mut c = ImapClient::connect_tls(&addr, &tls).await.unwrap();
            c.login(u, p).await.unwrap()
        }
    };

    assert!(login("user1", "pass1").await.is_ok());
    assert!(login("user2", "pass2").await.is_ok());
    let r = login("carol", "pass3").await;
    assert!(r.is_ok(), "{r}");
    // Dovecot writes its log line a moment after the OK: wait for it.
    let d2_log = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(d2.log_path())
            .ok()
            .filter(|l| l.contains("user=<user3>"))
    });
    assert!(
        d2_log.is_some(),
        "{:?}",
        std::fs::read_to_string(d2.log_path())
    );
    // Wrong password and unknown user: refused by imapmux, never sent to Dovecot.
    let before = std::fs::read_to_string(d1.log_path()).unwrap().len();
    let r = login("user1", "pass2").await;
    assert!(
        r.is_no() && r.text.contains("[AUTHENTICATIONFAILED]"),
        "{r}"
    );
    assert!(login("nobody", "pass1").await.is_no());
    let d1_log = std::fs::read_to_string(d1.log_path()).unwrap();
    // (Health checks log "Aborted login … user=<>": they never log in.)
    let reached = d1_log[before..].lines().any(|l| {
        l.contains("auth failed") || (l.contains("Aborted login") && !l.contains("user=<>"))
    });
    assert!(!reached, "{}", &d1_log[before..]);

    // Change the file: user1 gets a new password (Dovecot keeps pass1, so
    // only imapmux's check changes), dave is added. No restart, no signal.
    let file2 = format!(
        "user1:{}\nuser2:{}\ndave:{}::::::backend=b1 backend_user=user4\n",
        hash_password("SHA256-CRYPT", "new-pass"),
        doveadm_hash("SHA512-CRYPT", "pass2"),
        hash_password("ARGON2ID", "pass4"),
    );
    std::fs::write(&users, file2).unwrap();
    assert!(
        proxy.wait_for_log("passwd-file reloaded", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    // The old password no longer logs in, even though it was cached.
    let r = login("user1", "pass1").await;
    assert!(r.is_no(), "stale auth cache entry: {r}");
    assert!(login("dave", "pass4").await.is_ok());
    // carol is gone.
    assert!(login("carol", "pass3").await.is_no());

    // A broken file is refused; the loaded users keep working.
    std::fs::write(&users, "user2:{NOSUCH}abc\n").unwrap();
    assert!(proxy.wait_for_log("passwd-file reload refused", Duration::from_secs(5)));
    assert!(login("user2", "pass2").await.is_ok());
    let log = proxy.log();
    for secret in ["pass1", "pass2", "pass4", "new-pass", "$argon2id$"] {
        assert!(!log.contains(secret), "{secret:?} in the log");
    }
}

#[test]
fn check_config_names_passwd_file_problems() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "a:{PLAIN}secret\n").unwrap();
    let addr = free_addr();
    let base = ProxyConfig::new()
        .listener(&addr, "implicit")
        .backend(BackendCfg::new("b1", "127.0.0.1:1"));
    let check = |extra: &str| {
        let cfg = base.clone().extra(extra).to_toml();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, cfg).unwrap();
        let out = imapmux_command()
            .args(["check-config", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let t = format!(
        "[auth]\nsource = \"passwd-file\"\n[auth.passwd_file]\npath = {}\n",
        toml_str(users.to_str().unwrap())
    );
    let (ok, err) = check(&t);
    assert!(!ok);
    assert!(
        err.contains("auth.passwd_file") && err.contains("allow_plain"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
    let (ok, err) = check(&format!("{t}allow_plain = true\n"));
    assert!(ok, "{err}");
    let (ok, err) = check("[auth]\nsource = \"passwd-file\"\n");
    assert!(!ok && err.contains("auth.passwd_file"), "{err}");
    let (ok, err) = check(
        "[auth]\nsource = \"passthrough\"\n[pool.login]\nmode = \"master\"\nmaster_user = \"m\"\nmaster_password = \"x\"\n",
    );
    assert!(!ok && err.contains("pool[0].login.mode"), "{err}");
}
