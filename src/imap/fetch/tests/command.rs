//! FETCH command parsing.

use super::*;

fn cmd(s: &str) -> FetchCommand {
    parse_fetch_command(s.as_bytes()).unwrap_or_else(|| panic!("parse {s:?}"))
}

fn att(s: &str) -> FetchAtt {
    FetchAtt::parse(s.as_bytes()).unwrap()
}

#[test]
fn basic_forms() {
    let c = cmd("FETCH 1:4 (BODY.PEEK[HEADER.FIELDS (From Subject)])\r\n");
    assert!(!c.uid);
    assert_eq!(c.set.to_string(), "1:4");
    assert_eq!(c.items, [att("BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]")]);
    assert!(!c.has_modifiers);
    assert!(!c.sets_seen());

    let c = cmd("uid fetch 1,3:5,7:*,* (uid flags body[]<0.100>)");
    assert!(c.uid);
    assert!(c.set.has_star());
    assert_eq!(
        c.items,
        [FetchAtt::Uid, FetchAtt::Flags, att("BODY[]<0.100>")]
    );
    assert!(c.sets_seen());

    let c = cmd("FETCH 2 BODY.PEEK[HEADER.FIELDS (A B)]<0.10>");
    assert_eq!(c.items, [att("BODY.PEEK[HEADER.FIELDS (A B)]<0.10>")]);
    let c = cmd("FETCH 2 rfc822.size\n");
    assert_eq!(c.items, [FetchAtt::Rfc822Size]);
}

#[test]
fn macros() {
    let fast = vec![
        FetchAtt::Flags,
        FetchAtt::InternalDate,
        FetchAtt::Rfc822Size,
    ];
    let mut all = fast.clone();
    all.push(FetchAtt::Envelope);
    let mut full = all.clone();
    full.push(FetchAtt::Body);
    assert_eq!(cmd("FETCH 1 FAST").items, fast);
    assert_eq!(cmd("FETCH 1 all").items, all);
    assert_eq!(cmd("UID FETCH 1:* Full").items, full);
    // macros are not allowed in a list (Dovecot: BAD Unknown parameter: ALL)
    assert_eq!(parse_fetch_command(b"FETCH 1 (ALL)"), None);
    assert_eq!(parse_fetch_command(b"FETCH 1 (FLAGS FAST)"), None);
}

#[test]
fn modifiers() {
    let c = cmd("UID FETCH 1:4 (FLAGS) (CHANGEDSINCE 1)");
    assert!(c.has_modifiers);
    assert_eq!(c.items, [FetchAtt::Flags]);
    let c = cmd("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n");
    assert!(c.has_modifiers);
    let c = cmd("FETCH 1 FLAGS (CHANGEDSINCE 1)");
    assert!(c.has_modifiers);
    assert_eq!(
        parse_fetch_command(b"FETCH 1 (FLAGS) (CHANGEDSINCE 1"),
        None
    );
    assert_eq!(parse_fetch_command(b"FETCH 1 (FLAGS) (A) (B)"), None);
    assert_eq!(parse_fetch_command(b"FETCH 1 (FLAGS) X"), None);
}

#[test]
fn preview_and_unknown_with_arguments() {
    let c = cmd("FETCH 1 (PREVIEW (LAZY) UID X-FOO (a \"b)\") SNIPPET)");
    assert_eq!(
        c.items,
        [
            FetchAtt::Preview("PREVIEW (LAZY)".into()),
            FetchAtt::Uid,
            FetchAtt::Other("X-FOO (a \"b)\")".into()),
            FetchAtt::Preview("SNIPPET".into()),
        ]
    );
    assert!(c.items.iter().all(|a| !a.cacheable()));
    // only PREVIEW and unknown items take arguments
    assert_eq!(parse_fetch_command(b"FETCH 1 (FLAGS (X))"), None);
    let c = cmd("FETCH 1 (X-GM-MSGID X-GM-LABELS)");
    assert_eq!(c.items.len(), 2);
}

#[test]
fn whitespace_like_dovecot() {
    // Dovecot accepts all of these (checked against 2.3.19).
    for s in [
        "FETCH 1  (FLAGS)",
        "FETCH 1 (FLAGS  UID)",
        "FETCH 1 ( FLAGS )",
        "FETCH 1 (FLAGS) ",
        "fetch 1 (flags)",
        "FETCH 1 BODY.PEEK[]<0.5> ",
        "FETCH 1 (BODY.PEEK[header.fields ( from )])",
    ] {
        assert!(parse_fetch_command(s.as_bytes()).is_some(), "{s}");
    }
    let c = cmd("FETCH 1 ( FLAGS   UID )");
    assert_eq!(c.items, [FetchAtt::Flags, FetchAtt::Uid]);
}

#[test]
fn rejected() {
    for s in [
        "",
        "FETCH",
        "FETCH 1",
        "FETCH 1 ",
        "FETCH $ (FLAGS)",
        "FETCH 0 (FLAGS)",
        "FETCH 1:x (FLAGS)",
        "UID STORE 1 FLAGS",
        "UIDFETCH 1 (FLAGS)",
        "NOOP",
        "FETCH 1 ()",
        "FETCH 1 (FLAGS",
        "FETCH 1 FLAGS)",
        "FETCH 1 (FLAGS))",
        "FETCH 1 ((FLAGS))",
        "FETCH 1 (BODY.PEEK[HEADER.FIELDS {4}\r\n",
        "FETCH 1 (BODY[HEADER.FIELDS {4}",
        "FETCH 1 BODY[MIME]",
        "FETCH 1 (BODY[0])",
        "FETCH 1 (BODY.PEEK[ HEADER])",
        "FETCH 1 (BODY.PEEK[HEADER.FIELDS(From)])",
        "FETCH 1 (BODY.PEEK[HEADER.FIELDS ()])",
        "FETCH 1 (FLAGS)\r\nFETCH 2 (FLAGS)",
        "FETCH 1 (\"FLAGS\")",
        "FETCH 1 (FL\u{e9}GS)",
        "FETCH 1 (FLAGS\tUID)",
        "FETCH 1 (BODY[]<0.1)",
        "FETCH 1 (UID) {5}\r\n",
        "FETCH 1 (UID) {5+}\r\n",
    ] {
        assert_eq!(parse_fetch_command(s.as_bytes()), None, "{s:?}");
    }
}

#[test]
fn tagged_lines() {
    let (tag, c) = parse_tagged_fetch(b"a12 UID FETCH 5 (BODY.PEEK[])\r\n").unwrap();
    assert_eq!(tag, "a12");
    assert!(c.uid);
    assert_eq!(c.items, [att("BODY.PEEK[]")]);
    assert!(parse_tagged_fetch(b"a12 NOOP\r\n").is_none());
    assert!(parse_tagged_fetch(b"* FETCH 1 (UID)\r\n").is_none());
    assert!(parse_tagged_fetch(b"a1").is_none());
}

#[test]
fn build_command() {
    let items = [
        att("body[header.fields (from)]").as_peek().unwrap(),
        FetchAtt::Uid,
        att("BINARY.SIZE[1]"),
    ];
    assert_eq!(
        build_fetch_command(true, "1:3,7", &items),
        b"UID FETCH 1:3,7 (BODY.PEEK[HEADER.FIELDS (FROM)] UID BINARY.SIZE[1])"
    );
    assert_eq!(
        build_fetch_command(false, "4", &[FetchAtt::Flags]),
        b"FETCH 4 (FLAGS)"
    );
    // what we build, we parse back to the same items
    let line = build_fetch_command(true, "1:*", &items);
    assert_eq!(cmd(std::str::from_utf8(&line).unwrap()).items, items);
}

#[test]
fn transcript_commands_parse() {
    for (name, command, _, _) in transcripts::TRANSCRIPTS {
        let c = parse_fetch_command(command.as_bytes());
        assert!(c.is_some(), "{name}: {command}");
    }
}
