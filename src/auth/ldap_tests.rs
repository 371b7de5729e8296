//! Tests of `ldap`.

use super::*;
use crate::identity::{ClientInfo, Credentials, Mechanism};
use std::collections::HashMap;

fn cfg(toml_text: &str) -> LdapConfig {
    toml::from_str(toml_text).expect("LdapConfig")
}

fn direct() -> LdapConfig {
    cfg(r#"
        url = "ldap://127.0.0.1:1"
        bind_dn = "uid=%u,ou=people,dc=example,dc=org"
    "#)
}

fn config_error(c: &LdapConfig) -> String {
    match LdapSource::new(c) {
        Err(SourceError::Config(m)) => m,
        Err(e) => panic!("expected a config error, got {e}"),
        Ok(s) => panic!("expected a config error, got {s:?}"),
    }
}

#[test]
fn dn_template_escapes_rfc4514() {
    let t = "uid=%u,ou=people,dc=example,dc=org";
    assert_eq!(
        render_dn(t, "alice"),
        "uid=alice,ou=people,dc=example,dc=org"
    );
    assert_eq!(
        render_dn(t, "a,ou=admins"),
        "uid=a\\2cou\\3dadmins,ou=people,dc=example,dc=org"
    );
    assert_eq!(
        render_dn(t, "x+cn=y"),
        "uid=x\\2bcn\\3dy,ou=people,dc=example,dc=org"
    );
    assert_eq!(
        render_dn(t, "\"q\"\\;<>"),
        "uid=\\22q\\22\\5c\\3b\\3c\\3e,ou=people,dc=example,dc=org"
    );
    assert_eq!(
        render_dn(t, " #a "),
        "uid=\\20#a\\20,ou=people,dc=example,dc=org"
    );
    assert_eq!(render_dn(t, "#a"), "uid=\\23a,ou=people,dc=example,dc=org");
    assert_eq!(
        render_dn(t, "nul\0"),
        "uid=nul\\00,ou=people,dc=example,dc=org"
    );
    // Filter metacharacters mean nothing in a DN.
    assert_eq!(render_dn(t, "*"), "uid=*,ou=people,dc=example,dc=org");
    // Non-ASCII passes through as UTF-8.
    assert_eq!(render_dn(t, "jörg"), "uid=jörg,ou=people,dc=example,dc=org");
    // Every %u is replaced; the replacement is not re-scanned.
    assert_eq!(render_dn("uid=%u,cn=%u", "%u"), "uid=%u,cn=%u");
}

#[test]
fn filter_template_escapes_rfc4515() {
    let t = "(&(objectClass=inetOrgPerson)(uid=%u))";
    assert_eq!(
        render_filter(t, "alice"),
        "(&(objectClass=inetOrgPerson)(uid=alice))"
    );
    assert_eq!(
        render_filter(t, "*"),
        "(&(objectClass=inetOrgPerson)(uid=\\2a))"
    );
    assert_eq!(
        render_filter("(uid=%u)", "a)(uid=*"),
        "(uid=a\\29\\28uid=\\2a)"
    );
    assert_eq!(render_filter("(uid=%u)", "b\\s\0"), "(uid=b\\5cs\\00)");
    // DN metacharacters mean nothing in a filter value.
    assert_eq!(render_filter("(uid=%u)", "a,b=c"), "(uid=a,b=c)");
    for user in ["*", "a)(uid=*", "x)(|(uid=*)", "(", "\\", "a*b"] {
        let f = render_filter("(uid=%u)", user);
        assert!(ldap3::parse_filter(&f).is_ok(), "{f:?} does not parse");
        assert!(!f[1..f.len() - 1].contains(['(', ')', '*']), "{f:?}");
    }
}

#[test]
fn config_modes() {
    assert!(matches!(
        LdapSource::new(&direct()).map(|s| s.mode),
        Ok(Mode::Direct { .. })
    ));
    let s = LdapSource::new(&cfg(r#"
        url = "ldaps://ldap.example.org"
        search_base = "ou=people,dc=example,dc=org"
        search_bind_dn = "cn=imapmux,dc=example,dc=org"
        search_bind_password = "secret"
    "#));
    // ldaps with system roots: only fails when the machine has none.
    if let Ok(s) = s {
        match &s.mode {
            Mode::Search {
                filter_template,
                service: Some(svc),
                ..
            } => {
                assert_eq!(filter_template, "(uid=%u)");
                assert_eq!(svc.password, "secret");
            }
            _ => panic!("expected search mode with a service account"),
        }
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
    }
    let anon = LdapSource::new(&cfg(r#"
        url = "ldap://127.0.0.1:1"
        search_base = "dc=example,dc=org"
        search_filter = "(&(objectClass=inetOrgPerson)(mail=%u))"
    "#))
    .expect("anonymous search config");
    assert!(matches!(anon.mode, Mode::Search { service: None, .. }));
}

#[test]
fn config_password_file_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    std::fs::write(&path, "s3cret with spaces\r\nsecond line\n").unwrap();
    let mut c = cfg(r#"
        url = "ldap://127.0.0.1:1"
        search_base = "dc=example,dc=org"
        search_bind_dn = "cn=imapmux,dc=example,dc=org"
    "#);
    c.search_bind_password_file = Some(path.clone());
    let s = LdapSource::new(&c).expect("config with password file");
    match &s.mode {
        Mode::Search {
            service: Some(svc), ..
        } => assert_eq!(svc.password, "s3cret with spaces"),
        _ => panic!("expected a service account"),
    }
    std::fs::write(&path, "\nx\n").unwrap();
    assert!(config_error(&c).contains("first line is empty"));
    c.search_bind_password_file = Some(dir.path().join("missing"));
    assert!(config_error(&c).contains("search_bind_password_file"));
}

#[test]
fn config_errors() {
    let mut c = direct();
    c.search_base = Some("dc=example,dc=org".into());
    assert!(config_error(&c).contains("not both"));

    let mut c = direct();
    c.bind_dn = None;
    assert!(config_error(&c).contains("set bind_dn"));

    let mut c = direct();
    c.bind_dn = Some("uid=fixed,dc=example,dc=org".into());
    assert!(config_error(&c).contains("no %u"));

    let mut c = direct();
    c.bind_dn = None;
    c.search_base = Some("dc=example,dc=org".into());
    c.search_filter = "(uid=alice)".into();
    assert!(config_error(&c).contains("no %u"));
    c.search_filter = "(uid=%u".into();
    assert!(config_error(&c).contains("not a valid LDAP filter"));
    c.search_filter = "(uid=%u)".into();
    c.search_bind_dn = Some("cn=svc".into());
    assert!(config_error(&c).contains("needs search_bind_password"));
    c.search_bind_password = Some("pw".into());
    c.search_bind_password_file = Some("/nonexistent".into());
    assert!(config_error(&c).contains("not both"));
    c.search_bind_dn = None;
    c.search_bind_password_file = None;
    assert!(config_error(&c).contains("without search_bind_dn"));

    for url in ["http://x", "ldap:nohost", "not a url"] {
        let mut c = direct();
        c.url = url.into();
        config_error(&c);
    }
    let mut c = direct();
    c.url = "ldaps://127.0.0.1".into();
    c.starttls = true;
    assert!(config_error(&c).contains("starttls"));

    let mut c = direct();
    c.pool_size = 0;
    assert!(config_error(&c).contains("pool_size"));
    let mut c = direct();
    c.timeout = Duration::ZERO;
    assert!(config_error(&c).contains("timeout"));

    let mut c = direct();
    c.starttls = true;
    c.ca_file = Some("/nonexistent/ca.pem".into());
    assert!(config_error(&c).contains("ca_file"));
}

#[test]
fn config_ca_file_loads() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, ck.cert.pem()).unwrap();
    let mut c = direct();
    c.starttls = true;
    c.ca_file = Some(path.clone());
    LdapSource::new(&c).expect("starttls with ca_file");
    std::fs::write(&path, "no PEM here\n").unwrap();
    assert!(config_error(&c).contains("no CA certificate"));
}

#[test]
fn attributes_are_case_insensitive_first_value() {
    let mut c = direct();
    c.backend_attribute = Some("mailhost".into());
    c.backend_user_attribute = Some("MAILROUTINGADDRESS".into());
    let s = LdapSource::new(&c).unwrap();
    assert_eq!(s.wanted_attributes(), ["mailhost", "MAILROUTINGADDRESS"]);
    let entry = SearchEntry {
        dn: "uid=a,dc=x".into(),
        attrs: HashMap::from([
            (
                "mailHost".to_string(),
                vec!["b1".to_string(), "b2".to_string()],
            ),
            ("mailRoutingAddress".to_string(), vec![String::new()]),
        ]),
        bin_attrs: HashMap::new(),
    };
    assert_eq!(
        s.grant_from(&entry),
        Grant {
            backend: Some("b1".into()),
            backend_user: None,
            backend_password: None,
        }
    );
    let plain = LdapSource::new(&direct()).unwrap();
    assert_eq!(plain.wanted_attributes(), ["1.1"]);
    assert_eq!(plain.grant_from(&entry), Grant::default());
}

fn creds(user: &str, password: &[u8]) -> Credentials {
    Credentials {
        user: user.into(),
        password: password.to_vec(),
        authzid: None,
        mechanism: Mechanism::Login,
    }
}

async fn check(s: &LdapSource, c: &Credentials) -> Result<Verdict, SourceError> {
    let client = ClientInfo::new(
        "127.0.0.1:5000".parse().unwrap(),
        "127.0.0.1:143".parse().unwrap(),
        "test".into(),
    );
    s.check(Request {
        credentials: c,
        client: &client,
        attempt: 1,
        tls: false,
        protocol: crate::front::Protocol::Imap,
    })
    .await
}

#[tokio::test]
async fn refused_without_contacting_the_server() {
    // Port 1 on localhost: any connection attempt would be an error.
    let s = LdapSource::new(&direct()).unwrap();
    for c in [
        creds("alice", b""),
        creds("", b"pw"),
        creds("alice", b"\xff\xfe"),
        creds(" alice", b"pw"),
        creds("alice ", b"pw"),
        creds("al\nice", b"pw"),
        creds("alice\0", b"pw"),
        Credentials {
            authzid: Some("bob".into()),
            ..creds("alice", b"pw")
        },
    ] {
        assert_eq!(check(&s, &c).await.unwrap(), reject(), "{c:?}");
    }
    assert_eq!(s.connections_opened(), 0);
    // A real attempt does reach out (and fails: nothing listens).
    let e = check(&s, &creds("alice", b"pw")).await.unwrap_err();
    assert!(matches!(e, SourceError::Unreachable(_)), "{e}");
}
