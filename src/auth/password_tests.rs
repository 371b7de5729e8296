//! Tests of `password`.

use super::*;

// Made with `doveadm pw -s SHA512-CRYPT -p x` (Dovecot 2.3.19).
const DOVE_SHA512: &str = "{SHA512-CRYPT}$6$htYu9OGEcnnU5hui$XdgYGHygSdckorUP2VSFiso6jQBX.g0yX0PkB3VJnMavIGgoQWOEFSpihcc7Cyb2ovTm3hwaxAQdozHK5AybA1";

#[test]
fn scheme_names_round_trip_any_case() {
    for s in SCHEMES {
        assert_eq!(Scheme::from_name(s.name()), Some(s));
        assert_eq!(Scheme::from_name(&s.name().to_lowercase()), Some(s));
        assert_eq!(s.name().parse::<Scheme>(), Ok(s));
    }
    assert_eq!(Scheme::from_name("cleartext"), Some(Scheme::Plain));
    assert_eq!(Scheme::from_name("CRYPT"), None);
    assert_eq!(Scheme::from_name("MD5-CRYPT"), None);
    let e = "SSHA".parse::<Scheme>().unwrap_err().to_string();
    assert!(e.contains("{SSHA}") && e.contains("ARGON2ID"), "{e}");
}

#[test]
fn detect_by_prefix() {
    assert_eq!(Scheme::detect("$argon2id$v=19$"), Some(Scheme::Argon2id));
    assert_eq!(Scheme::detect("$argon2i$v=19$"), Some(Scheme::Argon2i));
    for p in ["$2y$05$", "$2b$05$", "$2a$05$"] {
        assert_eq!(Scheme::detect(p), Some(Scheme::BlfCrypt));
    }
    assert_eq!(Scheme::detect("$6$x$y"), Some(Scheme::Sha512Crypt));
    assert_eq!(Scheme::detect("$5$x$y"), Some(Scheme::Sha256Crypt));
    assert_eq!(Scheme::detect("$1$md5$x"), None);
    assert_eq!(Scheme::detect("$2x$05$"), None);
    assert_eq!(Scheme::detect("secret"), None);
}

#[test]
fn plain_refused_unless_allowed() {
    for f in ["{PLAIN}secret", "{plain}secret", "{CLEARTEXT}secret"] {
        let e = StoredPassword::parse(f, false).unwrap_err();
        assert_eq!(e, PasswordError::PlainRefused);
        assert!(e.to_string().contains("allow_plain = true"));
        let p = StoredPassword::parse(f, true).unwrap();
        assert_eq!(p.scheme(), Scheme::Plain);
        assert!(p.verify(b"secret"));
        assert!(!p.verify(b"secreT"));
        assert!(!p.verify(b"secret "));
        assert!(!p.verify(b""));
    }
    assert!(matches!(
        StoredPassword::parse("{PLAIN}", true),
        Err(PasswordError::Malformed { .. })
    ));
}

#[test]
fn bare_crypt_and_crypt_prefix_are_detected() {
    let bare = DOVE_SHA512.strip_prefix("{SHA512-CRYPT}").unwrap();
    for f in [
        DOVE_SHA512.to_string(),
        bare.into(),
        format!("{{CRYPT}}{bare}"),
    ] {
        let p = StoredPassword::parse(&f, false).unwrap();
        assert_eq!(p.scheme(), Scheme::Sha512Crypt);
        assert!(p.verify(b"x"), "doveadm pw -s SHA512-CRYPT -p x");
        assert!(!p.verify(b"y"));
    }
}

#[test]
fn bad_fields_are_refused_with_a_reason() {
    type Check = fn(&PasswordError) -> bool;
    let cases: &[(&str, Check)] = &[
        ("", |e| *e == PasswordError::Empty),
        ("secret", |e| *e == PasswordError::NoScheme),
        ("{SSHA}abc", |e| {
            matches!(e, PasswordError::UnknownScheme(_))
        }),
        ("{PLAIN", |e| *e == PasswordError::UnclosedScheme),
        ("{CRYPT}ab01FAX.bQRSU", |e| {
            *e == PasswordError::UnsupportedCrypt
        }),
        ("{CRYPT}$1$salt$hash", |e| {
            *e == PasswordError::UnsupportedCrypt
        }),
        ("{ARGON2ID}$6$abc$def", |e| {
            matches!(e, PasswordError::SchemeMismatch { .. })
        }),
        (
            "{ARGON2ID}$argon2i$v=19$m=32768,t=4,p=1$c2FsdHNhbHQ$aGFzaA",
            |e| matches!(e, PasswordError::SchemeMismatch { .. }),
        ),
        ("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$", |e| {
            matches!(e, PasswordError::Malformed { .. })
        }),
        (
            "{ARGON2ID}$argon2id$v=19$m=1,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo",
            |e| matches!(e, PasswordError::Malformed { .. }),
        ),
        ("{BLF-CRYPT}$2y$05$zzqq", |e| {
            matches!(e, PasswordError::Malformed { .. })
        }),
        (
            "{BLF-CRYPT}$2y$99$1tVdaM0BZInClmRWRpiOteumL0GJ8qV74VAfXr0qPqbiX/mcOMheK",
            |e| matches!(e, PasswordError::Malformed { .. }),
        ),
        ("{SHA512-CRYPT}$6$salt$qqtoo", |e| {
            matches!(e, PasswordError::Malformed { .. })
        }),
        (
            "{SHA256-CRYPT}$5$rounds=10$salt$QopDOHPARAAKdfLLYcQWlbQ/au6T7n1Dug6l2mIMH49",
            |e| matches!(e, PasswordError::Malformed { .. }),
        ),
        (
            "{SHA256-CRYPT}$5$aaaaaaaaaaaaaaaaaaaa$QopDOHPARAAKdfLLYcQWlbQ/au6T7n1Dug6l2mIMH49",
            |e| matches!(e, PasswordError::Malformed { .. }),
        ),
    ];
    for (field, ok) in cases {
        let e = StoredPassword::parse(field, true).unwrap_err();
        assert!(ok(&e), "{field:?} gave {e:?}");
        // The message says how to fix it and never quotes the field.
        let msg = e.to_string();
        assert!(msg.contains(';'), "{field:?}: {msg}");
        for secret in ["secret", "zzqq", "qqtoo", "c2FsdHNhbHQ", "QopDOHPARAAK"] {
            assert!(!msg.contains(secret), "{field:?}: {msg}");
        }
    }
}

#[test]
fn unknown_scheme_name_is_shown_only_if_it_looks_like_one() {
    let e = StoredPassword::parse("{SSHA512}abc", false).unwrap_err();
    assert!(e.to_string().contains("{SSHA512}"), "{e}");
    let e = StoredPassword::parse("{my secret pw}", false).unwrap_err();
    assert!(!e.to_string().contains("my secret"), "{e}");
}

#[test]
fn debug_shows_no_secret() {
    let p = StoredPassword::parse("{PLAIN}hunter2", true).unwrap();
    let d = format!("{p:?}");
    assert!(d.contains("Plain") && !d.contains("hunter2"), "{d}");
    let p = StoredPassword::parse(DOVE_SHA512, false).unwrap();
    assert!(!format!("{p:?}").contains("htYu9OGE"));
}

#[test]
fn hash_then_verify_every_scheme() {
    for s in SCHEMES {
        let pw = "pässwörd with spaces".as_bytes();
        let h = hash(s, pw).unwrap();
        assert!(h.starts_with(&format!("{{{}}}", s.name())), "{h}");
        let p = StoredPassword::parse(&h, true).unwrap();
        assert_eq!(p.scheme(), s);
        assert!(p.verify(pw), "{s}");
        assert!(!p.verify(b"p\xc3\xa4sswOrd with spaces"), "{s}");
        // A fresh salt each time.
        if s != Scheme::Plain {
            assert_ne!(h, hash(s, pw).unwrap());
        }
    }
}

#[test]
fn hash_shapes_match_dovecot() {
    let h = hash(Scheme::Argon2id, b"x").unwrap();
    assert!(
        h.starts_with("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$"),
        "{h}"
    );
    let h = hash(Scheme::Argon2i, b"x").unwrap();
    assert!(
        h.starts_with("{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$"),
        "{h}"
    );
    let h = hash(Scheme::BlfCrypt, b"x").unwrap();
    assert!(h.starts_with("{BLF-CRYPT}$2y$12$"), "{h}");
    for (s, prefix) in [
        (Scheme::Sha512Crypt, "{SHA512-CRYPT}$6$"),
        (Scheme::Sha256Crypt, "{SHA256-CRYPT}$5$"),
    ] {
        let h = hash(s, b"x").unwrap();
        let rest = h.strip_prefix(prefix).unwrap();
        let rest = rest.strip_prefix("rounds=5000$").unwrap_or(rest);
        let salt = rest.split('$').next().unwrap();
        assert_eq!(salt.len(), 16, "{h}");
    }
}

#[test]
fn hash_refuses_what_it_cannot_store() {
    for s in SCHEMES {
        assert_eq!(hash(s, b""), Err(PasswordError::EmptyPassword));
    }
    assert_eq!(
        hash(Scheme::BlfCrypt, &[b'a'; 73]),
        Err(PasswordError::TooLongForBcrypt)
    );
    assert!(hash(Scheme::BlfCrypt, &[b'a'; 72]).is_ok());
    for bad in [&b"a:b"[..], b"a\nb", b"\xff"] {
        assert_eq!(
            hash(Scheme::Plain, bad),
            Err(PasswordError::Unrepresentable)
        );
    }
}

#[test]
fn dummy_like_keeps_the_cost_class_and_matches_nothing() {
    let stored = [
        format!(
            "{{ARGON2ID}}{}",
            argon2_hash(argon2::Algorithm::Argon2id, (1024, 2, 1), b"pw").unwrap()
        ),
        format!(
            "{{ARGON2I}}{}",
            argon2_hash(argon2::Algorithm::Argon2i, (2048, 1, 1), b"pw").unwrap()
        ),
        format!(
            "{{BLF-CRYPT}}{}",
            bcrypt::hash_with_result("pw", 5)
                .unwrap()
                .format_for_version(bcrypt::Version::TwoY)
        ),
        DOVE_SHA512.to_string(),
        // SHA256-CRYPT with explicit rounds, from `doveadm pw -s SHA256-CRYPT -r 1500`
        // shape (made here).
        format!(
            "{{SHA256-CRYPT}}{}",
            ShaCrypt::new(
                sha_crypt::Algorithm::Sha256Crypt,
                sha_crypt::Params::new(1500).unwrap()
            )
            .hash_password_with_salt(b"pw", b"0123456789ab")
            .unwrap()
        ),
        "{PLAIN}pw-plain".to_string(),
    ];
    let mut classes = Vec::new();
    for s in &stored {
        let p = StoredPassword::parse(s, true).unwrap();
        let d = p.dummy_like().unwrap();
        assert_eq!(d.scheme(), p.scheme(), "{s}");
        assert_eq!(d.cost_class(), p.cost_class(), "{s}");
        // The dummy is itself a valid stored password of that scheme…
        let shown = format!("{{{}}}{}", d.scheme(), d.secret);
        assert!(StoredPassword::parse(&shown, true).is_ok(), "{shown}");
        // …of another (random) password.
        assert_ne!(d.secret, p.secret);
        assert!(!d.verify(b"pw") && !d.verify(b"pw-plain") && !d.verify(b""));
        classes.push(p.cost_class());
    }
    assert_eq!(
        classes,
        [
            "ARGON2ID v=19 m=1024,t=2,p=1 len=32",
            "ARGON2I v=19 m=2048,t=1,p=1 len=32",
            "BLF-CRYPT cost=05",
            "SHA512-CRYPT rounds=5000",
            "SHA256-CRYPT rounds=1500",
            "PLAIN",
        ]
    );
}
