//! The LDAP auth source against a real OpenLDAP (slapd, one per test):
//! direct bind and search-then-bind (service account or anonymous), the
//! backend attributes in the grant, LDAP-injection attempts, the connection
//! pool, a dead or hung directory, StartTLS and ldaps.

mod common;

use std::time::{Duration, Instant};

use common::slapd::SUFFIX;
use common::{LdapUser, Slapd};
use imapmux::auth::config::LdapConfig;
use imapmux::auth::ldap::LdapSource;
use imapmux::auth::{Grant, Request, Source, SourceError, Verdict};
use imapmux::session::{ClientInfo, Credentials, Mechanism};

fn config(keys: &str) -> LdapConfig {
    toml::from_str(keys).unwrap_or_else(|e| panic!("bad [auth.ldap] keys: {e}\n{keys}"))
}

fn source(cfg: &LdapConfig) -> LdapSource {
    LdapSource::new(cfg).unwrap_or_else(|e| panic!("LdapSource::new: {e}"))
}

async fn check(s: &LdapSource, user: &str, password: &str) -> Result<Verdict, SourceError> {
    let credentials = Credentials {
        user: user.to_string(),
        password: password.as_bytes().to_vec(),
        authzid: None,
        mechanism: Mechanism::Plain,
    };
    let client = ClientInfo::new(
        "192.0.2.7:40000".parse().unwrap(),
        "127.0.0.1:993".parse().unwrap(),
        "ldaptest".into(),
    );
    s.check(Request {
        credentials: &credentials,
        client: &client,
        attempt: 1,
        tls: false,
        protocol: imapmux::front::Protocol::Imap,
    })
    .await
}

async fn accepted(s: &LdapSource, user: &str, password: &str) -> Grant {
    match check(s, user, password).await {
        Ok(Verdict::Accept(g)) => g,
        other => panic!("{user:?}: expected Accept, got {other:?}"),
    }
}

async fn rejected(s: &LdapSource, user: &str, password: &str) {
    match check(s, user, password).await {
        Ok(Verdict::Reject { .. }) => {}
        other => panic!("{user:?}: expected Reject, got {other:?}"),
    }
}

fn grant(backend: Option<&str>, backend_user: Option<&str>) -> Grant {
    Grant {
        backend: backend.map(str::to_string),
        backend_user: backend_user.map(str::to_string),
        backend_password: None,
    }
}

fn directory() -> Slapd {
    Slapd::builder()
        .entry(
            LdapUser::new("alice", "alice pw")
                .mail_host("backend1")
                .backend_user("user1"),
        )
        .entry(LdapUser::new("bob", "bob-pw").mail_host("10.0.0.2:143"))
        .start()
}

#[tokio::test]
async fn direct_bind() {
    let ldap = directory();
    let s = source(&config(&ldap.ldap_config_direct()));
    assert_eq!(
        accepted(&s, "alice", "alice pw").await,
        grant(Some("backend1"), Some("user1"))
    );
    assert_eq!(
        accepted(&s, "bob", "bob-pw").await,
        grant(Some("10.0.0.2:143"), None)
    );
    // Default users have neither attribute.
    assert_eq!(accepted(&s, "user1", "pass1").await, Grant::default());
    rejected(&s, "alice", "wrong").await;
    rejected(&s, "alice", "alice pw ").await;
    rejected(&s, "Alice pw", "alice pw").await;
    rejected(&s, "nobody", "alice pw").await;
    // The directory's matching rules apply: uid is case-insensitive.
    assert_eq!(
        accepted(&s, "ALICE", "alice pw").await,
        grant(Some("backend1"), Some("user1"))
    );
    // The user bind is what was checked.
    assert!(ldap.binds_as(&ldap.user_dn("alice")) >= 3);
}

#[tokio::test]
async fn empty_password_is_refused_without_asking() {
    let ldap = directory();
    let s = source(&config(&ldap.ldap_config_direct()));
    let before = ldap.accepted_connections();
    rejected(&s, "alice", "").await;
    rejected(&s, "", "").await;
    assert_eq!(s.connections_opened(), 0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(ldap.accepted_connections(), before);
    assert_eq!(ldap.binds_as(&ldap.user_dn("alice")), 0);
}

#[tokio::test]
async fn search_then_bind_with_service_account() {
    let ldap = directory();
    let s = source(&config(&ldap.ldap_config_search()));
    assert_eq!(
        accepted(&s, "alice", "alice pw").await,
        grant(Some("backend1"), Some("user1"))
    );
    assert_eq!(
        accepted(&s, "bob", "bob-pw").await,
        grant(Some("10.0.0.2:143"), None)
    );
    rejected(&s, "alice", "wrong").await;
    rejected(&s, "nobody", "alice pw").await;
    rejected(&s, "alice", "").await;
    // One service bind per check that reached the directory (4), one user
    // bind per check that found an entry.
    assert!(ldap.wait_for_log("conn=", Duration::from_secs(2)));
    assert_eq!(ldap.binds_as(ldap.service_dn()), 4, "{}", ldap.log());
    assert_eq!(ldap.binds_as(&ldap.user_dn("alice")), 2);
}

/// Search then bind: an unknown user costs the directory the same
/// operations as a wrong password (a service bind, a search, a bind with
/// the given password: to a DN that does not exist), so the answer time
/// does not tell which names exist.
#[tokio::test]
async fn unknown_user_costs_the_same_binds_as_a_wrong_password() {
    let ldap = directory();
    let s = source(&config(&ldap.ldap_config_search()));
    let ops = |what: &str| ldap.log().matches(what).count();
    // (binds, searches) a check adds, once slapd has logged them.
    let cost = |user: &'static str, binds0: usize, searches0: usize| {
        assert!(
            common::wait_until(Duration::from_secs(5), || {
                (ops(" method=128") >= binds0 + 2 && ops(" SRCH base=") > searches0).then_some(())
            })
            .is_some(),
            "{user}: {}",
            ldap.log()
        );
        (ops(" method=128") - binds0, ops(" SRCH base=") - searches0)
    };
    let (b, q) = (ops(" method=128"), ops(" SRCH base="));
    rejected(&s, "alice", "wrong").await;
    let wrong = cost("alice", b, q);
    assert_eq!(s.dummy_binds(), 0);
    let (b, q) = (ops(" method=128"), ops(" SRCH base="));
    rejected(&s, "nobody", "alice pw").await;
    let unknown = cost("nobody", b, q);
    assert_eq!(s.dummy_binds(), 1);
    assert_eq!(wrong, (2, 1), "{}", ldap.log());
    assert_eq!(unknown, wrong, "{}", ldap.log());
    // The second bind was to the dummy DN under search_base, and failed.
    let log = ldap.log();
    let dummy = log
        .lines()
        .find(|l| l.contains("BIND dn=\"cn=imapmux-no-such-user-"))
        .unwrap_or_else(|| panic!("no dummy bind: {log}"));
    assert!(dummy.contains(&ldap.people_dn()), "{dummy}");
    // A real user's password through an unknown name still gets nowhere,
    // and a real login still works afterwards on the same connection.
    assert_eq!(
        accepted(&s, "alice", "alice pw").await,
        grant(Some("backend1"), Some("user1"))
    );
}

#[tokio::test]
async fn search_then_bind_wrong_service_password_is_an_error() {
    let ldap = directory();
    let mut cfg = config(&ldap.ldap_config_search());
    cfg.search_bind_password_file = None;
    cfg.search_bind_password = Some("not the password".into());
    let s = source(&cfg);
    match check(&s, "alice", "alice pw").await {
        Err(SourceError::Config(m)) => assert!(m.contains("service bind"), "{m}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

fn anonymous_search(ldap: &Slapd) -> LdapConfig {
    let mut cfg = config(&ldap.ldap_config_search());
    cfg.search_bind_dn = None;
    cfg.search_bind_password_file = None;
    cfg
}

#[tokio::test]
async fn anonymous_search_where_the_acl_allows() {
    let ldap = Slapd::builder()
        .anonymous_read()
        .entry(LdapUser::new("alice", "alice pw").mail_host("backend1"))
        .start();
    let s = source(&anonymous_search(&ldap));
    assert_eq!(
        accepted(&s, "alice", "alice pw").await,
        grant(Some("backend1"), None)
    );
    rejected(&s, "alice", "bad").await;
    rejected(&s, "nobody", "x").await;
    assert_eq!(ldap.binds_as(ldap.service_dn()), 0);
}

#[tokio::test]
async fn anonymous_search_where_the_acl_forbids_is_an_error() {
    // slapd hides the base from anonymous clients (noSuchObject): a
    // misconfiguration, not a wrong password.
    let ldap = directory();
    let s = source(&anonymous_search(&ldap));
    match check(&s, "alice", "alice pw").await {
        Err(SourceError::Protocol(m)) => assert!(m.contains("searching"), "{m}"),
        other => panic!("expected a source error, got {other:?}"),
    }
}

#[tokio::test]
async fn direct_bind_when_users_may_not_read_their_entry() {
    let ldap = Slapd::builder()
        .no_self_read()
        .entry(LdapUser::new("alice", "alice pw").mail_host("backend1"))
        .start();
    let mut cfg = config(&ldap.ldap_config_direct());
    // Reading attributes fails: the admin must hear of it.
    match check(&source(&cfg), "alice", "alice pw").await {
        Err(SourceError::Protocol(m)) => assert!(m.contains("read their own entry"), "{m}"),
        other => panic!("expected a source error, got {other:?}"),
    }
    // Without attributes to read, the bind alone decides.
    cfg.backend_attribute = None;
    cfg.backend_user_attribute = None;
    assert_eq!(
        accepted(&source(&cfg), "alice", "alice pw").await,
        Grant::default()
    );
}

#[tokio::test]
async fn injection_attempts_do_not_log_in() {
    let ldap = Slapd::builder()
        .anonymous_read()
        .entry(LdapUser::new("alice", "alice pw").mail_host("backend1"))
        .start();
    let direct = source(&config(&ldap.ldap_config_direct()));
    let search = source(&config(&ldap.ldap_config_search()));
    let anon = source(&anonymous_search(&ldap));
    let names = [
        "*",
        "a*",
        "alice*",
        "*)(uid=*",
        "a)(uid=*",
        "alice)(uid=*",
        "*)(|(uid=*",
        "alice)(|(objectClass=*",
        "alice\\",
        "alice,ou=people",
        "alice,ou=people,dc=example,dc=org",
        "uid=alice,ou=people,dc=example,dc=org",
        "alice+cn=alice",
        // slapd ignores leading and trailing spaces when matching a uid (in
        // a DN and in a filter): such names are refused before asking it.
        " alice",
        "alice ",
        "alice\t",
        "alice\0",
        "\0alice",
        "alice\r\n",
    ];
    for s in [&direct, &search, &anon] {
        for name in names {
            rejected(s, name, "alice pw").await;
        }
        // The real user still works through the same source.
        accepted(s, "alice", "alice pw").await;
    }
    let log = ldap.log();
    assert!(
        !log.contains("filter=\"(uid=*)\"") && !log.contains("(uid=a*)"),
        "an unescaped filter reached slapd:\n{log}"
    );
    assert!(
        log.contains("(uid=\\2A)") || log.contains("(uid=\\2a)"),
        "{log}"
    );
}

#[tokio::test]
async fn escaped_names_that_exist_log_in() {
    // Names full of DN and filter metacharacters are valid uids.
    let odd = [
        "o'brien, jr.",
        "a+b=c",
        "x)(y*",
        "#lead",
        "jörg",
        "back\\slash",
    ];
    let mut b = Slapd::builder();
    for (i, name) in odd.iter().enumerate() {
        b = b.entry(LdapUser::new(name, &format!("pw{i}")).mail_host(&format!("b{i}")));
    }
    let ldap = b.start();
    let direct = source(&config(&ldap.ldap_config_direct()));
    let search = source(&config(&ldap.ldap_config_search()));
    for (i, name) in odd.iter().enumerate() {
        let want = grant(Some(&format!("b{i}")), None);
        assert_eq!(
            accepted(&direct, name, &format!("pw{i}")).await,
            want,
            "{name}"
        );
        assert_eq!(
            accepted(&search, name, &format!("pw{i}")).await,
            want,
            "{name}"
        );
        rejected(&direct, name, "wrong").await;
        rejected(&search, name, "wrong").await;
    }
}

#[tokio::test]
async fn more_than_one_entry_is_refused() {
    let ldap = Slapd::builder()
        .entry(LdapUser::new("dup", "pw").mail_host("b1"))
        .entry(LdapUser::new("dup", "pw").mail_host("b2").ou("others"))
        .start();
    let mut cfg = config(&ldap.ldap_config_search());
    cfg.search_base = Some(SUFFIX.to_string());
    let s = source(&cfg);
    rejected(&s, "dup", "pw").await;
    // No user bind was attempted for an ambiguous name.
    assert_eq!(ldap.binds_as(&ldap.user_dn("dup")), 0);
    // Other users under the same base are fine.
    accepted(&s, "user1", "pass1").await;
    // Searching only ou=people finds one.
    cfg.search_base = Some(ldap.people_dn());
    assert_eq!(
        accepted(&source(&cfg), "dup", "pw").await,
        grant(Some("b1"), None)
    );
}

#[tokio::test]
async fn pooled_connection_is_reused() {
    let ldap = directory();
    for keys in [ldap.ldap_config_direct(), ldap.ldap_config_search()] {
        let s = source(&config(&keys));
        let before = ldap.accepted_connections();
        accepted(&s, "alice", "alice pw").await;
        rejected(&s, "alice", "wrong").await;
        rejected(&s, "nobody", "x").await;
        accepted(&s, "bob", "bob-pw").await;
        assert_eq!(s.connections_opened(), 1);
        assert_eq!(s.idle_connections(), 1);
        // slapd saw one new connection for the four logins (its log is
        // written late under load: wait for the first, then count).
        common::wait_until(Duration::from_secs(10), || {
            (ldap.accepted_connections() > before).then_some(())
        });
        assert_eq!(ldap.accepted_connections() - before, 1, "{}", ldap.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_size_caps_connections() {
    let ldap = directory();
    let mut cfg = config(&ldap.ldap_config_search());
    cfg.pool_size = 2;
    let s = std::sync::Arc::new(source(&cfg));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let (u, p) = if i % 2 == 0 {
                ("alice", "alice pw")
            } else {
                ("user3", "pass3")
            };
            check(&s, u, p).await
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Ok(Verdict::Accept(_))));
    }
    assert!(s.connections_opened() <= 2, "{}", s.connections_opened());
    assert!(s.idle_connections() <= 2);
}

#[tokio::test]
async fn directory_killed_is_an_error_not_a_hang() {
    let mut ldap = directory();
    let mut cfg = config(&ldap.ldap_config_search());
    cfg.timeout = Duration::from_secs(2);
    let s = source(&cfg);
    accepted(&s, "alice", "alice pw").await; // leaves a pooled connection
    ldap.kill();
    let t = Instant::now();
    let e = check(&s, "alice", "alice pw").await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(matches!(e, SourceError::Unreachable(_)), "{e}");
    // Again, without a pooled connection.
    let e = check(&s, "alice", "alice pw").await.unwrap_err();
    assert!(matches!(e, SourceError::Unreachable(_)), "{e}");
    // Back up: the next login works.
    ldap.restart();
    accepted(&s, "alice", "alice pw").await;
}

#[tokio::test]
async fn directory_restarted_under_a_pooled_connection() {
    let mut ldap = directory();
    let s = source(&config(&ldap.ldap_config_direct()));
    accepted(&s, "alice", "alice pw").await;
    assert_eq!(s.connections_opened(), 1);
    ldap.restart();
    // The pooled connection is dead; the check retries on a new one.
    accepted(&s, "alice", "alice pw").await;
    assert_eq!(s.connections_opened(), 2);
}

#[tokio::test]
async fn directory_hung_times_out() {
    let ldap = directory();
    let mut cfg = config(&ldap.ldap_config_direct());
    cfg.timeout = Duration::from_secs(1);
    let s = source(&cfg);
    accepted(&s, "alice", "alice pw").await;
    ldap.freeze();
    // Pooled connection: the bind is never answered.
    let t = Instant::now();
    let e = check(&s, "alice", "alice pw").await.unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(e, SourceError::Timeout(d) if d == Duration::from_secs(1)),
        "{e}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // New connection: TCP connects (backlog) but nothing answers.
    let t = Instant::now();
    let e = check(&s, "bob", "bob-pw").await.unwrap_err();
    assert!(matches!(e, SourceError::Timeout(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    ldap.thaw();
    accepted(&s, "alice", "alice pw").await;
}

#[tokio::test]
async fn starttls_and_ldaps_with_ca_file() {
    let ldap = Slapd::builder()
        .tls()
        .entry(LdapUser::new("alice", "alice pw").mail_host("backend1"))
        .start();
    let mut starttls = config(&ldap.ldap_config_search());
    starttls.starttls = true;
    starttls.ca_file = Some(ldap.ca_pem_path().to_path_buf());
    let s = source(&starttls);
    assert_eq!(
        accepted(&s, "alice", "alice pw").await,
        grant(Some("backend1"), None)
    );
    rejected(&s, "alice", "wrong").await;
    // StartTLS extended operation.
    assert!(
        ldap.log().contains("oid=1.3.6.1.4.1.1466.20037"),
        "{}",
        ldap.log()
    );

    let mut ldaps = config(&ldap.ldap_config_direct());
    ldaps.url = ldap.ldaps_url();
    ldaps.ca_file = Some(ldap.ca_pem_path().to_path_buf());
    let s = source(&ldaps);
    assert_eq!(
        accepted(&s, "alice", "alice pw").await,
        grant(Some("backend1"), None)
    );
    rejected(&s, "alice", "wrong").await;

    // A CA that did not sign slapd's certificate: no login, an error.
    let other = common::TestCa::new("some other CA");
    for mut cfg in [starttls, ldaps] {
        cfg.ca_file = Some(other.ca_pem_path().to_path_buf());
        let e = check(&source(&cfg), "alice", "alice pw").await.unwrap_err();
        assert!(matches!(e, SourceError::Unreachable(_)), "{e}");
    }
}

#[tokio::test]
async fn directory_changes_are_seen_at_once() {
    // The source caches nothing itself (the [auth.cache] layer does).
    let mut ldap = directory();
    let s = source(&config(&ldap.ldap_config_search()));
    rejected(&s, "carol", "carol pw").await;
    ldap.add_user(
        LdapUser::new("carol", "carol pw")
            .mail_host("backend2")
            .backend_user("c@example.org"),
    );
    assert_eq!(
        accepted(&s, "carol", "carol pw").await,
        grant(Some("backend2"), Some("c@example.org"))
    );
    ldap.set_mail_host("carol", Some("backend3"));
    assert_eq!(
        accepted(&s, "carol", "carol pw").await.backend.as_deref(),
        Some("backend3")
    );
    ldap.set_mail_host("carol", None);
    assert_eq!(accepted(&s, "carol", "carol pw").await.backend, None);
    // A user added under a new OU is outside search_base = ou=people.
    ldap.add_user(LdapUser::new("dave", "dave pw").ou("staff"));
    rejected(&s, "dave", "dave pw").await;
    let direct = source(&config(&ldap.ldap_config_direct()));
    rejected(&direct, "dave", "dave pw").await;
    let mut cfg = config(&ldap.ldap_config_search());
    cfg.search_base = Some(SUFFIX.to_string());
    accepted(&source(&cfg), "dave", "dave pw").await;
}
