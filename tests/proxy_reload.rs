//! Reload without restart: certificates and config on SIGHUP and on file
//! change; a bad config is refused and the running one keeps serving; open
//! sessions are not dropped.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

fn config(addr: &str, dovecot: &Dovecot, dir: &Path, interval: &str) -> String {
    format!(
        r#"[server]
reload_check_interval = "{interval}"
[tls]
cert_file = "{cert}"
key_file = "{key}"
[[listener]]
address = "{addr}"
mode = "implicit"
[[pool]]
name = "default"
[[pool.backend]]
name = "b1"
address = "{backend}"
trusted = true
"#,
        cert = dir.join("cert.pem").display(),
        key = dir.join("key.pem").display(),
        backend = dovecot.addr(),
    )
}

fn install_cert(dir: &Path, cert: &CertFiles) {
    // Write to temp names and rename, as a careful operator (or Kubernetes'
    // symlink swap) does: a reload never sees half a file.
    std::fs::copy(&cert.chain, dir.join("cert.pem.new")).unwrap();
    std::fs::copy(&cert.key, dir.join("key.pem.new")).unwrap();
    std::fs::rename(dir.join("cert.pem.new"), dir.join("cert.pem")).unwrap();
    std::fs::rename(dir.join("key.pem.new"), dir.join("key.pem")).unwrap();
}

async fn works_with(addr: &str, ca: &TestCa) -> bool {
    match ImapClient::connect_tls(addr, &TlsClient::with_ca(ca.ca_pem_path())).await {
        Ok(mut c) => c
            .login("user1", "pass1")
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false),
        Err(_) => false,
    }
}

#[tokio::test]
async fn sighup_reloads_certificates_and_keeps_sessions() {
    let dovecot = Dovecot::builder().messages(1).start();
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (TestCa::new("first CA"), TestCa::new("second CA"));
    install_cert(dir.path(), &ca1.issue_localhost());
    let addr = free_addr();
    let proxy = Imapmux::start(&config(&addr, &dovecot, dir.path(), "0s"), &addr);

    // A session opened with the first certificate...
    let mut open = ImapClient::connect_tls(&addr, &TlsClient::with_ca(ca1.ca_pem_path()))
        .await
        .unwrap();
    assert!(open.login("user1", "pass1").await.unwrap().is_ok());
    open.select("INBOX").await.unwrap();

    install_cert(dir.path(), &ca2.issue_localhost());
    // No reload without the signal (file checks are off here).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(works_with(&addr, &ca1).await);
    proxy.send_signal(libc::SIGHUP);
    assert!(
        proxy.wait_for_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    assert!(
        works_with(&addr, &ca2).await,
        "new connections must get the new certificate"
    );
    assert!(
        !works_with(&addr, &ca1).await,
        "the old certificate is still served"
    );
    // ...keeps working.
    assert_eq!(
        open.fetch_body(1).await.unwrap(),
        dovecot.message("user1", 1)
    );

    // A broken config is refused; the running one keeps serving.
    proxy.rewrite_config("[[listener]\naddress = broken");
    proxy.send_signal(libc::SIGHUP);
    assert!(
        proxy.wait_for_log("reload rejected", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    assert!(works_with(&addr, &ca2).await);
    // So is a config whose certificate cannot be read.
    proxy.rewrite_config(&config(&addr, &dovecot, Path::new("/nonexistent"), "0s"));
    proxy.send_signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || (proxy
            .log()
            .matches("reload rejected")
            .count()
            >= 2)
            .then_some(()))
        .is_some(),
        "{}",
        proxy.log()
    );
    assert!(works_with(&addr, &ca2).await);
    assert_eq!(
        open.fetch_body(1).await.unwrap(),
        dovecot.message("user1", 1)
    );
}

#[tokio::test]
async fn changed_files_are_picked_up_without_a_signal() {
    let dovecot = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (TestCa::new("first CA"), TestCa::new("second CA"));
    install_cert(dir.path(), &ca1.issue_localhost());
    let addr = free_addr();
    let proxy = Imapmux::start(&config(&addr, &dovecot, dir.path(), "200ms"), &addr);
    assert!(works_with(&addr, &ca1).await);
    install_cert(dir.path(), &ca2.issue_localhost());
    assert!(
        proxy.wait_for_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    assert!(works_with(&addr, &ca2).await);
    assert!(proxy.log().contains("file change"), "{}", proxy.log());
}

#[tokio::test]
async fn kubernetes_style_symlink_swap_is_picked_up() {
    // Kubernetes mounts a Secret as cert.pem -> ..data/cert.pem and swaps the
    // ..data symlink to a new timestamped directory atomically.
    use std::os::unix::fs::symlink;
    let dovecot = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca1, ca2) = (TestCa::new("first CA"), TestCa::new("second CA"));
    for (name, ca) in [("v1", &ca1), ("v2", &ca2)] {
        std::fs::create_dir(d.join(name)).unwrap();
        let c = ca.issue_localhost();
        std::fs::copy(&c.chain, d.join(name).join("cert.pem")).unwrap();
        std::fs::copy(&c.key, d.join(name).join("key.pem")).unwrap();
    }
    symlink("v1", d.join("..data")).unwrap();
    symlink("..data/cert.pem", d.join("cert.pem")).unwrap();
    symlink("..data/key.pem", d.join("key.pem")).unwrap();
    let addr = free_addr();
    let proxy = Imapmux::start(&config(&addr, &dovecot, d, "200ms"), &addr);
    assert!(works_with(&addr, &ca1).await);
    symlink("v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    assert!(
        proxy.wait_for_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    assert!(works_with(&addr, &ca2).await);
}
