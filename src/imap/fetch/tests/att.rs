//! FetchAtt: parsing, keys, names, PEEK, cacheability.

use super::*;

fn att(s: &str) -> FetchAtt {
    FetchAtt::parse(s.as_bytes()).unwrap_or_else(|| panic!("parse {s:?}"))
}

#[test]
fn simple_atts() {
    let cases = [
        ("uid", FetchAtt::Uid),
        ("FLAGS", FetchAtt::Flags),
        ("ModSeq", FetchAtt::ModSeq),
        ("INTERNALDATE", FetchAtt::InternalDate),
        ("rfc822.size", FetchAtt::Rfc822Size),
        ("ENVELOPE", FetchAtt::Envelope),
        ("BODYSTRUCTURE", FetchAtt::BodyStructure),
        ("BODY", FetchAtt::Body),
        ("RFC822", FetchAtt::Rfc822),
        ("RFC822.HEADER", FetchAtt::Rfc822Header),
        ("RFC822.TEXT", FetchAtt::Rfc822Text),
        ("EMAILID", FetchAtt::EmailId),
        ("threadid", FetchAtt::ThreadId),
        ("SAVEDATE", FetchAtt::SaveDate),
        ("preview", FetchAtt::Preview("PREVIEW".into())),
        ("SNIPPET", FetchAtt::Preview("SNIPPET".into())),
        ("X-GM-MSGID", FetchAtt::Other("X-GM-MSGID".into())),
        ("x-gm-labels", FetchAtt::Other("x-gm-labels".into())),
        ("X-FOO[1]<2>", FetchAtt::Other("X-FOO[1]<2>".into())),
    ];
    for (s, want) in cases {
        assert_eq!(att(s), want, "{s}");
    }
}

#[test]
fn sections() {
    let a = att("body.peek[1.2.header.fields.not (from  \"To\" x-a)]<5.10>");
    let FetchAtt::BodySection {
        peek,
        section,
        partial,
    } = &a
    else {
        panic!("{a:?}")
    };
    assert!(*peek);
    assert_eq!(section.part, [1, 2]);
    assert_eq!(
        section.text,
        Some(SectionText::HeaderFields {
            not: true,
            fields: vec![
                HeaderField {
                    name: "FROM".into(),
                    quoted: false
                },
                HeaderField {
                    name: "TO".into(),
                    quoted: true
                },
                HeaderField {
                    name: "X-A".into(),
                    quoted: false
                },
            ]
        })
    );
    assert_eq!(
        *partial,
        Some(Partial {
            origin: 5,
            length: Some(10)
        })
    );
    for (s, key) in [
        ("BODY[]", "BODY[]"),
        ("BODY[HEADER]", "BODY[HEADER]"),
        ("body[text]", "BODY[TEXT]"),
        ("BODY[1]", "BODY[1]"),
        ("BODY[1.2.3]", "BODY[1.2.3]"),
        ("BODY[1.MIME]", "BODY[1.MIME]"),
        ("BODY[1.2.HEADER]", "BODY[1.2.HEADER]"),
        ("BODY[2.TEXT]", "BODY[2.TEXT]"),
        ("BODY[]<0>", "BODY[]<0>"),
        ("BODY[]<00.0100>", "BODY[]<0.100>"),
        ("BINARY[]", "BINARY[]"),
        ("binary.peek[1.2]<3.4>", "BINARY[1.2]<3.4>"),
        ("BINARY.SIZE[1]", "BINARY.SIZE[1]"),
        ("BINARY.SIZE[]", "BINARY.SIZE[]"),
        (
            "BODY[HEADER.FIELDS (\"A\\\"B\" c)]",
            "BODY[HEADER.FIELDS (\"A\\\"B\" C)]",
        ),
        (
            "BODY[HEADER.FIELDS (\"a]b\")]",
            "BODY[HEADER.FIELDS (\"A]B\")]",
        ),
        ("BODY[HEADER.FIELDS ( from )]", "BODY[HEADER.FIELDS (FROM)]"),
    ] {
        assert_eq!(att(s).cache_key(), key, "{s}");
    }
}

#[test]
fn invalid_atts() {
    for s in [
        "",
        "BODY.PEEK",
        "BODY[",
        "BODY[]]",
        "BODY[MIME]",
        "BODY[0]",
        "BODY[01]",
        "BODY[1.]",
        "BODY[.1]",
        "BODY[1..2]",
        "BODY[1.TEXT.HEADER]",
        "BODY[HEADERX]",
        "BODY[HEADER.FIELDS]",
        "BODY[HEADER.FIELDS ()]",
        "BODY[HEADER.FIELDS(FROM)]",
        "BODY[HEADER.FIELDS (FROM]",
        "BODY[HEADER.FIELDS (FROM) ]",
        "BODY[HEADER.FIELDS (\"FR\u{e9}\")]",
        "BODY[HEADER.FIELDS (\"FROM)]",
        "BODY[HEADER.FIELDS (\"A\\x\")]",
        "BODY[HEADER.FIELDS (A\"B\")]",
        "BODY[HEADER.FIELDS (A{3})]",
        "BODY[]<>",
        "BODY[]<1.>",
        "BODY[]<.1>",
        "BODY[]<1.2.3>",
        "BODY[]<99999999999999999999999>",
        "BODY[]x",
        "BODY<0.1>",
        "BINARY",
        "BINARY[TEXT]",
        "BINARY[1.MIME]",
        "BINARY.SIZE[1]<0.1>",
        "BINARY.SIZE",
        "FLAGS[1]",
        "UID<1.2>",
        "RFC822.SIZE[]",
        "ALL",
        "FAST[]",
        "FLAGS UID",
        "(FLAGS)",
        "BODY[4294967296]",
    ] {
        assert_eq!(FetchAtt::parse(s.as_bytes()), None, "{s:?}");
    }
}

#[test]
fn cache_keys_ignore_peek_case_and_spaces() {
    let a = att("body.peek[header.fields (from  To)]");
    let b = att("BODY[HEADER.FIELDS (FROM TO)]");
    assert_eq!(a.cache_key(), "BODY[HEADER.FIELDS (FROM TO)]");
    assert_eq!(a.cache_key(), b.cache_key());
    // field order and quoting are part of the key (Dovecot echoes both)
    assert_ne!(
        att("BODY[HEADER.FIELDS (TO FROM)]").cache_key(),
        b.cache_key()
    );
    assert_eq!(
        att("BODY[HEADER.FIELDS (\"From\" To)]").cache_key(),
        "BODY[HEADER.FIELDS (\"FROM\" TO)]"
    );
    assert_eq!(att("BODY.PEEK[]<0.100>").cache_key(), "BODY[]<0.100>");
    assert_eq!(att("RFC822.HEADER").cache_key(), "RFC822.HEADER");
    assert_ne!(
        att("RFC822.HEADER").cache_key(),
        att("BODY[HEADER]").cache_key()
    );
    assert_eq!(
        att("binary.peek[1]").cache_key(),
        att("BINARY[1]").cache_key()
    );
    assert_ne!(att("BINARY[1]").cache_key(), att("BODY[1]").cache_key());
}

#[test]
fn response_names() {
    for (s, name) in [
        ("BODY.PEEK[HEADER]", "BODY[HEADER]"),
        ("BODY[]<10.100>", "BODY[]<10>"),
        ("body.peek[]<5>", "BODY[]<5>"),
        ("BINARY.PEEK[1]", "BINARY[1]"),
        ("binary.peek[1]<2.5>", "BINARY[1]<2>"),
        ("BINARY.SIZE[2]", "BINARY.SIZE[2]"),
        ("RFC822.HEADER", "RFC822.HEADER"),
        ("rfc822", "RFC822"),
        ("uid", "UID"),
        (
            "body.peek[header.fields (from  subject)]",
            "BODY[HEADER.FIELDS (FROM SUBJECT)]",
        ),
        (
            "BODY.PEEK[HEADER.FIELDS (\"From\" subject)]",
            "BODY[HEADER.FIELDS (\"FROM\" SUBJECT)]",
        ),
        (
            "BODY.PEEK[HEADER.FIELDS (From)]<0.10>",
            "BODY[HEADER.FIELDS (FROM)]<0>",
        ),
        ("body.peek[1.mime]", "BODY[1.MIME]"),
        ("PREVIEW", "PREVIEW"),
        ("x-gm-msgid", "X-GM-MSGID"),
    ] {
        assert_eq!(att(s).response_name(), name, "{s}");
    }
}

#[test]
fn matching_response_items() {
    let a = att("body.peek[header.fields (from  \"Subject\")]");
    for name in [
        "BODY[HEADER.FIELDS (FROM \"SUBJECT\")]",
        "BODY[HEADER.FIELDS (FROM SUBJECT)]",
        "body[header.fields (\"from\"   subject)]",
        "BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]",
    ] {
        assert!(a.matches_response_item(name.as_bytes()), "{name}");
    }
    for name in [
        "BODY[HEADER.FIELDS (SUBJECT FROM)]",
        "BODY[HEADER.FIELDS.NOT (FROM SUBJECT)]",
        "BODY[HEADER]",
        "BODY[HEADER.FIELDS (FROM SUBJECT)]<0>",
        "RFC822.HEADER",
        "garbage[",
        "",
    ] {
        assert!(!a.matches_response_item(name.as_bytes()), "{name}");
    }
    let p = att("BODY.PEEK[]<10.100>");
    assert!(p.matches_response_item(b"BODY[]<10>"));
    assert!(!p.matches_response_item(b"BODY[]<0>"));
    assert!(!p.matches_response_item(b"BODY[]"));
    assert!(att("BODY[]").matches_response_item(b"BODY[]"));
    assert!(!att("BODY[]").matches_response_item(b"BODY[]<0>"));
    assert!(att("BINARY.PEEK[1]<2.5>").matches_response_item(b"BINARY[1]<2>"));
    assert!(att("BINARY.SIZE[1]").matches_response_item(b"BINARY.SIZE[1]"));
    assert!(!att("BINARY.SIZE[1]").matches_response_item(b"BINARY[1]"));
    assert!(att("rfc822.size").matches_response_item(b"RFC822.SIZE"));
    assert!(att("ENVELOPE").matches_response_item(b"envelope"));
    assert!(!att("BODY").matches_response_item(b"BODYSTRUCTURE"));
    assert!(att("RFC822.HEADER").matches_response_item(b"RFC822.HEADER"));
    assert!(!att("RFC822.HEADER").matches_response_item(b"BODY[HEADER]"));
    let p = FetchAtt::Preview("PREVIEW (LAZY)".into());
    assert!(p.matches_response_item(b"PREVIEW"));
}

#[test]
fn normalized_response_names_equal_request_keys() {
    for (req, resp) in [
        (
            "BODY.PEEK[HEADER.FIELDS (From Subject)]",
            "BODY[HEADER.FIELDS (FROM SUBJECT)]",
        ),
        (
            "BODY.PEEK[HEADER.FIELDS (\"From\" subject)]",
            "BODY[HEADER.FIELDS (\"FROM\" SUBJECT)]",
        ),
        ("body.peek[1.mime]", "BODY[1.MIME]"),
        ("BINARY.PEEK[1]", "BINARY[1]"),
        ("BINARY.SIZE[1]", "BINARY.SIZE[1]"),
        ("RFC822.HEADER", "RFC822.HEADER"),
        ("RFC822.SIZE", "RFC822.SIZE"),
        ("BODYSTRUCTURE", "BODYSTRUCTURE"),
        ("ENVELOPE", "ENVELOPE"),
        ("INTERNALDATE", "INTERNALDATE"),
    ] {
        assert_eq!(
            normalize_response_item_name(resp.as_bytes()),
            Some(att(req).cache_key()),
            "{req}"
        );
    }
    // partials: the response has the origin only
    assert_eq!(
        normalize_response_item_name(b"BODY[]<0>").as_deref(),
        Some("BODY[]<0>")
    );
    assert_eq!(normalize_response_item_name(b"BODY[MIME]"), None);
    assert_eq!(normalize_response_item_name(b"BINARY[1.MIME]"), None);
}

#[test]
fn command_bytes_and_peek() {
    for (s, cmd) in [
        (
            "body.peek[header.fields (from  To)]",
            "BODY.PEEK[HEADER.FIELDS (FROM TO)]",
        ),
        ("BODY[]<0.100>", "BODY[]<0.100>"),
        ("body.peek[]<7>", "BODY.PEEK[]<7>"),
        ("binary.peek[1]", "BINARY.PEEK[1]"),
        ("BINARY.SIZE[1]", "BINARY.SIZE[1]"),
        ("rfc822.text", "RFC822.TEXT"),
        ("x-gm-labels", "x-gm-labels"),
    ] {
        assert_eq!(att(s).to_command_bytes(), cmd.as_bytes(), "{s}");
    }
    assert_eq!(att("BODY[1]").as_peek(), Some(att("BODY.PEEK[1]")));
    assert_eq!(att("BODY.PEEK[1]").as_peek(), Some(att("BODY.PEEK[1]")));
    assert_eq!(
        att("BINARY[1]<0.5>").as_peek(),
        Some(att("BINARY.PEEK[1]<0.5>"))
    );
    assert_eq!(att("RFC822").as_peek(), None);
    assert_eq!(att("RFC822.TEXT").as_peek(), None);
    assert_eq!(att("X-GM-LABELS").as_peek(), None);
    assert_eq!(att("RFC822.HEADER").as_peek(), Some(FetchAtt::Rfc822Header));
    assert_eq!(att("FLAGS").as_peek(), Some(FetchAtt::Flags));
    for s in ["BODY[]", "BINARY[1]", "BODY[HEADER.FIELDS (A)]<1.2>"] {
        let p = att(s).as_peek().unwrap();
        assert!(!p.sets_seen());
        assert_eq!(p.cache_key(), att(s).cache_key());
        assert_eq!(p.response_name(), att(s).response_name());
    }
}

#[test]
fn cacheable_and_seen() {
    let yes = [
        "BODY[]",
        "BODY.PEEK[HEADER]",
        "BODY[1]<0.5>",
        "BINARY[1]",
        "BINARY.PEEK[1]",
        "BINARY.SIZE[1]",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
        "RFC822.SIZE",
        "BODYSTRUCTURE",
        "BODY",
        "ENVELOPE",
        "INTERNALDATE",
        "EMAILID",
        "THREADID",
    ];
    let no = [
        "FLAGS",
        "MODSEQ",
        "UID",
        "SAVEDATE",
        "PREVIEW",
        "SNIPPET",
        "X-GM-MSGID",
        "X-GUID",
    ];
    for s in yes {
        assert!(att(s).cacheable(), "{s}");
    }
    for s in no {
        assert!(!att(s).cacheable(), "{s}");
    }
    let seen = [
        "BODY[]",
        "body[header]",
        "BINARY[1]",
        "RFC822",
        "RFC822.TEXT",
    ];
    for s in seen {
        assert!(att(s).sets_seen(), "{s}");
    }
    for s in [
        "BODY.PEEK[]",
        "BINARY.PEEK[1]",
        "BINARY.SIZE[1]",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "BODY",
        "ENVELOPE",
        "FLAGS",
    ] {
        assert!(!att(s).sets_seen(), "{s}");
    }
}
