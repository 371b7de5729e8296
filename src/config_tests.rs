//! Tests of `config`.

use super::*;

const MINIMAL: &str = r#"
[tls]
self_signed = true
[[listener]]
address = "127.0.0.1:1143"
mode = "starttls"
[[pool]]
name = "default"
[[pool.backend]]
name = "b1"
address = "127.0.0.1:10143"
"#;

fn err(text: &str) -> String {
    Config::parse(text, Path::new("t.toml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn minimal_is_valid() {
    let c = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
    assert_eq!(c.default_pool_name(), "default");
    assert_eq!(c.timeouts.idle, Duration::from_secs(1800));
    assert!(c.routing.lowercase_users);
}

#[test]
fn unknown_key_is_named() {
    let e = err(&MINIMAL.replace("mode = \"starttls\"", "mode = \"starttls\"\nadress = \"x\""));
    assert!(e.contains("adress"), "{e}");
}

#[test]
fn bad_values_name_the_key() {
    let e = err(&MINIMAL.replace("127.0.0.1:1143", "nonsense"));
    assert!(e.contains("listener[0].address"), "{e}");
    let e = err(&MINIMAL.replace("self_signed = true", ""));
    assert!(e.contains("tls.cert_file"), "{e}");
    let e = err(&format!("{MINIMAL}\n[routing.users]\nalice = \"nope\"\n"));
    assert!(e.contains("routing.users.alice"), "{e}");
    let c = Config::parse(
        &format!("{MINIMAL}\n[timeouts]\nidle = \"5m\"\n"),
        Path::new("t"),
    )
    .unwrap();
    assert!(c.warnings().iter().any(|w| w.contains("timeouts.idle")));
    let e = err(&format!("{MINIMAL}\n[timeouts]\nidle = \"0s\"\n"));
    assert!(e.contains("timeouts.idle"), "{e}");
    let e = err(&format!("{MINIMAL}\n[timeouts]\nidle = \"forever\"\n"));
    assert!(e.contains("idle") && e.contains("duration"), "{e}");
    let e = err(&MINIMAL.replace(
        "address = \"127.0.0.1:10143\"",
        "address = \"127.0.0.1:10143\"\nweight = 0",
    ));
    assert!(e.contains("pool[0].backend[0].weight"), "{e}");
    let e = err(&MINIMAL.replace("mode = \"starttls\"", "mode = \"tls\""));
    assert!(e.contains("mode"), "{e}");
}

#[test]
fn push_secret_keys() {
    let with = |admin: &str| format!("{MINIMAL}\n[admin]\n{admin}\n");
    let ok = |admin: &str| Config::parse(&with(admin), Path::new("t")).unwrap();
    let c = ok("address = \"127.0.0.1:9143\"");
    assert!(!c.admin.push_enabled());
    assert!(c.admin.load_push_secret().unwrap().is_none());
    let c = ok("address = \"127.0.0.1:9143\"\npush_secret = \"s3cret\"");
    assert!(c.admin.push_enabled());
    assert!(c.admin.load_push_secret().unwrap().is_some());
    assert!(!format!("{c:?}").contains("s3cret"));
    let e = err(&with(
        "address = \"127.0.0.1:9143\"\npush_secret = \"a\"\npush_secret_file = \"/x\"",
    ));
    assert!(
        e.contains("admin.push_secret") && e.contains("exactly one"),
        "{e}"
    );
    let e = err(&with("address = \"127.0.0.1:9143\"\npush_secret = \"\""));
    assert!(
        e.contains("admin.push_secret") && e.contains("empty"),
        "{e}"
    );
    let e = err(&with("push_secret = \"s3cret\""));
    assert!(
        e.contains("admin.push_secret") && e.contains("admin.address"),
        "{e}"
    );
    let e = err(&with("push_secret_file = \"/x\""));
    assert!(e.contains("admin.push_secret_file"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("secret");
    std::fs::write(&f, "from-file\nignored\n").unwrap();
    let file_cfg = |p: &Path| {
        ok(&format!(
            "address = \"127.0.0.1:9143\"\npush_secret_file = \"{}\"",
            p.display()
        ))
    };
    let secret = file_cfg(&f).admin.load_push_secret().unwrap().unwrap();
    assert!(secret.authorizes(Some(b"Bearer from-file")));
    assert!(!secret.authorizes(Some(b"Bearer ignored")));
    std::fs::write(&f, "\n").unwrap();
    let e = file_cfg(&f)
        .admin
        .load_push_secret()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("admin.push_secret_file") && e.contains("empty"),
        "{e}"
    );
    let e = file_cfg(&dir.path().join("missing"))
        .admin
        .load_push_secret()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("admin.push_secret_file") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn push_peer_keys() {
    let with = |admin: &str| format!("{MINIMAL}\n[admin]\naddress = \"127.0.0.1:9143\"\n{admin}\n");
    let ok = |admin: &str| Config::parse(&with(admin), Path::new("t")).unwrap();
    let secret = "push_secret = \"s3cret\"\n";

    let c = ok(secret);
    assert!(!c.admin.fanout_enabled());
    assert_eq!(c.admin.push_peers_refresh, Duration::from_secs(15));
    let c = ok(&format!(
        "{secret}push_peers = [\"127.0.0.1:9144\", \"[::1]:9145\", \"peer3.example:9143\"]\n\
         push_peers_dns = \"imapmux-peers.mail.svc:9143\"\npush_peers_refresh = \"30s\""
    ));
    assert!(c.admin.fanout_enabled());
    assert_eq!(c.admin.push_peers_refresh, Duration::from_secs(30));
    let t = c.admin.peer_targets();
    assert_eq!(t.len(), 4);
    assert_eq!(t[1].literal, Some("[::1]:9145".parse().unwrap()));
    assert_eq!(t[3].name, "imapmux-peers.mail.svc");
    let (_, auth) = c.admin.load_secrets().unwrap().unwrap();
    assert!(!format!("{c:?} {auth:?}").contains("s3cret"));

    // Each error names its key and the fix.
    let e = err(&with("push_peers = [\"127.0.0.1:9144\"]"));
    assert!(
        e.contains("admin.push_peers") && e.contains("push_secret"),
        "{e}"
    );
    let e = err(&with("push_peers_dns = \"peers.svc:9143\""));
    assert!(
        e.contains("admin.push_peers_dns") && e.contains("push_secret"),
        "{e}"
    );
    let e = err(&with(&format!(
        "{secret}push_peers = [\"127.0.0.1:9144\", \"nonsense\"]"
    )));
    assert!(
        e.contains("admin.push_peers[1]") && e.contains("HOST:PORT"),
        "{e}"
    );
    let e = err(&with(&format!("{secret}push_peers = [\"127.0.0.1:9143\"]")));
    assert!(
        e.contains("admin.push_peers[0]") && e.contains("own admin.address"),
        "{e}"
    );
    let e = err(&with(&format!("{secret}push_peers_dns = \"peers.svc\"")));
    assert!(e.contains("admin.push_peers_dns"), "{e}");
    let e = err(&with(&format!(
        "{secret}push_peers_dns = \"10.0.0.1:9143\""
    )));
    assert!(
        e.contains("admin.push_peers_dns") && e.contains("not a DNS name"),
        "{e}"
    );
    let e = err(&with(&format!(
        "{secret}push_peers_dns = \"p.svc:1\"\npush_peers_refresh = \"100ms\""
    )));
    assert!(e.contains("admin.push_peers_refresh"), "{e}");
    let e = err(&with(&format!("{secret}push_peers_refresh = \"soon\"")));
    assert!(
        e.contains("push_peers_refresh") && e.contains("duration"),
        "{e}"
    );
    let many: Vec<String> = (0..65).map(|i| format!("\"10.0.1.{i}:9143\"")).collect();
    let e = err(&with(&format!("{secret}push_peers = [{}]", many.join(","))));
    assert!(
        e.contains("admin.push_peers") && e.contains("at most"),
        "{e}"
    );
}

#[test]
fn host_port() {
    assert_eq!(
        split_host_port("mail.example:143"),
        Some(("mail.example".into(), 143))
    );
    assert_eq!(split_host_port("[::1]:993"), Some(("::1".into(), 993)));
    assert_eq!(split_host_port("nope"), None);
    assert_eq!(split_host_port("h:0"), None);
}

#[test]
fn connection_limit_keys() {
    let c = Config::parse(MINIMAL, Path::new("t")).unwrap();
    assert_eq!(c.server.max_preauth_per_ip, 20);
    assert_eq!(c.server.max_sessions_per_user_ip, 10);
    assert_eq!(c.timeouts.preauth_under_pressure, Duration::from_secs(10));
    let c = Config::parse(
        &format!(
            "[server]\nmax_preauth_per_ip = 0\nmax_sessions_per_user_ip = 3\n\
             [timeouts]\npreauth = \"20s\"\npreauth_under_pressure = \"20s\"\n{MINIMAL}"
        ),
        Path::new("t"),
    )
    .unwrap();
    assert_eq!(c.server.max_preauth_per_ip, 0);
    assert_eq!(c.server.max_sessions_per_user_ip, 3);
    let e = err(&format!(
        "[timeouts]\npreauth_under_pressure = \"0s\"\n{MINIMAL}"
    ));
    assert!(e.contains("timeouts.preauth_under_pressure"), "{e}");
    // A short preauth alone stays valid (the shorter timeout applies).
    Config::parse(
        &format!("[timeouts]\npreauth = \"1s\"\n{MINIMAL}"),
        Path::new("t"),
    )
    .unwrap();
    let e = err(&format!("[server]\nmax_preauth_per_ip = -1\n{MINIMAL}"));
    assert!(e.contains("max_preauth_per_ip"), "{e}");
}

#[test]
fn plaintext_auth_per_listener() {
    let two = |global: bool, plain: &str, starttls: &str| {
        Config::parse(
            &format!(
                "[server]\nallow_plaintext_auth = {global}\n{}\n\
                 [[listener]]\naddress = \"127.0.0.1:1144\"\nmode = \"plaintext\"\n{plain}\n",
                MINIMAL.replace(
                    "mode = \"starttls\"",
                    &format!("mode = \"starttls\"\n{starttls}")
                )
            ),
            Path::new("t"),
        )
        .unwrap()
    };
    let allowed = |c: &Config| {
        c.listeners
            .iter()
            .map(|l| c.plaintext_auth_allowed(l))
            .collect::<Vec<_>>()
    };
    // Only the plaintext listener allows it; nothing to warn about.
    let c = two(false, "allow_plaintext_auth = true", "");
    assert_eq!(allowed(&c), [false, true]);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    // The global key is the default of listeners without their own; each
    // listener that inherits true is warned about, naming it.
    let c = two(true, "", "allow_plaintext_auth = false");
    assert_eq!(allowed(&c), [false, true]);
    let w = c.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("listener[1]") && w[0].contains("deprecated"),
        "{w:?}"
    );
    let c = two(true, "", "");
    assert_eq!(allowed(&c), [true, true]);
    let w = c.warnings();
    assert!(
        w.iter()
            .any(|w| w.contains("listener[0]") && w.contains("starttls")),
        "{w:?}"
    );
    // An explicit true on a STARTTLS listener is legal but warned about.
    let c = two(false, "", "allow_plaintext_auth = true");
    assert_eq!(allowed(&c), [true, false]);
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.contains("listener[0]") && w.contains("before STARTTLS")),
        "{:?}",
        c.warnings()
    );
    // Meaningless on implicit TLS: an error naming the key.
    let e = err(&format!(
        "{MINIMAL}\n[[listener]]\naddress = \"127.0.0.1:1993\"\nmode = \"implicit\"\nallow_plaintext_auth = false\n"
    ));
    assert!(e.contains("listener[1].allow_plaintext_auth"), "{e}");
}

#[test]
fn protocol_listeners_and_backend_addresses() {
    use crate::front::Protocol;
    let c = Config::parse(MINIMAL, Path::new("t.toml")).unwrap();
    assert_eq!(c.listeners[0].protocol, Protocol::Imap);
    let pop3 = MINIMAL.replace(
        "mode = \"starttls\"",
        "mode = \"starttls\"\nprotocol = \"pop3\"",
    );
    let e = err(&pop3);
    assert!(
        e.contains("pool[0].backend[0].pop3_address") && e.contains("fix: set pop3_address"),
        "{e}"
    );
    let ok = pop3.replace(
        "address = \"127.0.0.1:10143\"",
        "address = \"127.0.0.1:10143\"\npop3_address = \"127.0.0.1:10110\"",
    );
    let c = Config::parse(&ok, Path::new("t.toml")).unwrap();
    assert_eq!(c.listeners[0].protocol, Protocol::Pop3);
    let e = err(&ok.replace("127.0.0.1:10110", "nohost"));
    assert!(e.contains("pop3_address"), "{e}");
    // "managesieve" is accepted for "sieve"; ManageSieve has no implicit TLS
    let sieve = MINIMAL
        .replace("mode = \"starttls\"", "mode = \"starttls\"\nprotocol = \"managesieve\"")
        .replace(
            "address = \"127.0.0.1:10143\"",
            "address = \"127.0.0.1:10143\"\nsieve_address = \"127.0.0.1:4190\"\nsieve_tls = \"implicit\"",
        );
    let e = err(&sieve);
    assert!(e.contains("sieve_tls") && e.contains("starttls"), "{e}");
    let c = Config::parse(
        &sieve.replace("sieve_tls = \"implicit\"", ""),
        Path::new("t.toml"),
    )
    .unwrap();
    assert_eq!(c.listeners[0].protocol, Protocol::Sieve);
    let e = err(&MINIMAL.replace(
        "mode = \"starttls\"",
        "mode = \"starttls\"\nprotocol = \"smtp\"",
    ));
    assert!(e.contains("smtp") || e.contains("protocol"), "{e}");
}

#[test]
fn operations_keys_name_the_key_and_the_fix() {
    let e = err(&format!("{MINIMAL}[admin]\ntoken_file = \"/x\"\n"));
    assert!(
        e.contains("admin.token_file") && e.contains("admin.address"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}[admin]\naddress = \"127.0.0.1:9\"\nreadonly_token_file = \"\"\n"
    ));
    assert!(
        e.contains("admin.readonly_token_file") && e.contains("path is empty"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}[routing]\nstate_file = \"/nonexistent/dir/s.json\"\n"
    ));
    assert!(e.contains("routing.state_file"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let ok = format!(
        "{MINIMAL}[routing]\nstate_file = {:?}\n[admin]\naddress = \"127.0.0.1:9\"\ntoken_file = \"/x\"\n",
        dir.path().join("s.json")
    );
    let c = Config::parse(&ok, Path::new("t.toml")).unwrap();
    assert_eq!(c.admin.token_file.as_deref(), Some(Path::new("/x")));
    // The token file is read (and checked) when the API is built.
    let e = c.admin.load_tokens().unwrap_err().to_string();
    assert!(
        e.contains("admin.token_file") && e.contains("cannot read"),
        "{e}"
    );
}
