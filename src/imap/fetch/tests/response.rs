//! FETCH response parsing and building.

use bytes::Bytes;

use super::*;
use crate::imap::framing::LiteralSpec;

fn one(input: &[u8], max_item: usize) -> Vec<FetchEvent> {
    let mut all = parse_all(input, input.len(), max_item);
    assert_eq!(all.len(), 1);
    all.remove(0)
}

fn items(events: &[FetchEvent]) -> Vec<(String, ItemValue)> {
    events
        .iter()
        .filter_map(|e| match e {
            FetchEvent::Item { name, value } => {
                Some((String::from_utf8_lossy(name).into_owned(), value.clone()))
            }
            _ => None,
        })
        .collect()
}

fn errors(events: &[FetchEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, FetchEvent::Error(_)))
        .count()
}

#[test]
fn fetch_start_lines() {
    assert!(is_fetch_start(b"* 1 FETCH (UID 1)\r\n"));
    assert!(is_fetch_start(b"* 4294967295 FETCH (BODY[] {3}\r\n"));
    for l in [
        &b"* 1 EXISTS\r\n"[..],
        b"* 1 FETCH",
        b"* FETCH (UID 1)",
        b"* 01 FETCH (UID 1)",
        b"* 1 fetch (UID 1)",
        b"* 12345678901 FETCH (UID 1)",
        b"a1 FETCH (UID 1)",
        b"",
    ] {
        assert!(!is_fetch_start(l), "{l:?}");
    }
}

#[test]
fn build_response_format() {
    assert_eq!(
        build_fetch_response(3, &[(b"UID", b"7"), (b"BODY[]<0>", b"{3}\r\nabc")]),
        b"* 3 FETCH (UID 7 BODY[]<0> {3}\r\nabc)\r\n"
    );
    assert_eq!(build_fetch_response(1, &[]), b"* 1 FETCH ()\r\n");
}

/// Every transcript: recorded length, every split into chunks, byte-exact
/// rebuild of every response, the same events whatever the split.
#[test]
fn transcripts_round_trip_with_every_split() {
    for (name, _, len, bytes) in transcripts::TRANSCRIPTS {
        assert_eq!(bytes.len(), *len, "{name}: transcript length");
        let reference = parse_all(bytes, bytes.len(), 1 << 20);
        let mut rebuilt = Vec::new();
        for events in &reference {
            assert_eq!(errors(events), 0, "{name}: {events:?}");
            assert!(matches!(events.first(), Some(FetchEvent::Start { .. })));
            assert_eq!(events.last(), Some(&FetchEvent::End), "{name}");
            rebuilt.extend(rebuild(events));
        }
        assert_eq!(rebuilt, *bytes, "{name}: rebuild differs");
        let sizes = (1..=64).chain((65..bytes.len()).step_by(37));
        for chunk in sizes {
            assert_eq!(
                parse_all(bytes, chunk, 1 << 20),
                reference,
                "{name}: chunk {chunk}"
            );
        }
    }
}

#[test]
fn transcript_items_answer_their_request() {
    for (name, command, _, bytes) in transcripts::TRANSCRIPTS {
        let cmd = parse_fetch_command(command.as_bytes()).unwrap();
        for events in parse_all(bytes, 7, 1 << 20) {
            for (item, _) in items(&events) {
                let matched = cmd
                    .items
                    .iter()
                    .any(|a| a.matches_response_item(item.as_bytes()));
                // extra items Dovecot adds: UID for UID FETCH, FLAGS when \Seen
                // is set implicitly, MODSEQ for CHANGEDSINCE
                let implicit = matches!(item.as_str(), "UID" | "FLAGS" | "MODSEQ");
                assert!(matched || implicit, "{name}: {item}");
                if let Some(a) = cmd
                    .items
                    .iter()
                    .find(|a| a.matches_response_item(item.as_bytes()))
                {
                    assert_eq!(a.response_name(), item, "{name}: predicted name");
                    if !matches!(
                        a,
                        FetchAtt::BodySection {
                            partial: Some(_),
                            ..
                        } | FetchAtt::Binary {
                            partial: Some(_),
                            ..
                        }
                    ) {
                        assert_eq!(
                            normalize_response_item_name(item.as_bytes()),
                            Some(a.cache_key()),
                            "{name}: {item}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn values_and_accessors() {
    let t = |n: &str| {
        transcripts::TRANSCRIPTS
            .iter()
            .find(|t| t.0 == n)
            .unwrap()
            .3
    };
    let all = parse_all(t("many_items"), 5, 1 << 20);
    assert_eq!(all.len(), 4);
    let its = items(&all[1]);
    let names: Vec<&str> = its.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "UID",
            "FLAGS",
            "INTERNALDATE",
            "RFC822.SIZE",
            "ENVELOPE",
            "BODYSTRUCTURE",
            "BODY[HEADER.FIELDS (\"FROM\" SUBJECT)]",
            "BODY[TEXT]<0>"
        ]
    );
    assert_eq!(its[0].1.kind, ValueKind::Number(2));
    assert_eq!(its[1].1.kind, ValueKind::List);
    assert_eq!(&its[1].1.raw[..], b"()");
    assert_eq!(its[2].1.kind, ValueKind::Quoted);
    assert_eq!(its[3].1.kind, ValueKind::Number(571));
    assert_eq!(its[4].1.kind, ValueKind::List);
    assert!(its[4]
        .1
        .raw
        .starts_with(b"(\"Tue, 4 Mar 2025 11:30:00 +0000\" {21}\r\nReport"));
    assert_eq!(
        its[6].1.kind,
        ValueKind::Literal {
            len: 82,
            binary: false
        }
    );
    assert_eq!(its[6].1.literal_data().unwrap().len(), 82);
    assert_eq!(
        its[7].1.literal_data(),
        Some(&b"Preamble\r\n--XYZ\r\nCon"[..])
    );
    assert_eq!(its[4].1.literal_data(), None);

    // accessors of the parser, fed frame by frame
    let first = t("many_items");
    let end = first.windows(3).position(|w| w == b")\r\n").unwrap() + 3;
    let mut p = FetchResponseParser::new(1 << 20);
    for f in frames_of(&first[..end]) {
        p.feed(&f);
    }
    assert!(p.is_done() && !p.is_failed());
    assert_eq!((p.seq(), p.uid()), (Some(1), Some(1)));
    assert_eq!(p.flags().map(|f| &f[..]), Some(&b"(\\Seen)"[..]));

    let ev = one(t("binary_peek"), 1 << 20);
    let its = items(&ev);
    assert_eq!(
        its[1].1.kind,
        ValueKind::Literal {
            len: 20,
            binary: true
        }
    );
    assert_eq!(its[1].1.literal_data().unwrap()[..3], [0, 1, 2]);

    let ev = one(t("expunged_placeholders"), 1 << 20);
    let its = items(&ev);
    let body = its.iter().find(|(n, _)| n == "BODY[]").unwrap();
    assert!(body.1.is_nil());
    assert_eq!(
        its.iter().find(|(n, _)| n == "RFC822.SIZE").unwrap().1.kind,
        ValueKind::Number(0)
    );

    let ev = one(t("empty_literals"), 1 << 20);
    let its = items(&ev);
    assert_eq!(&its[0].1.raw[..], b"{0}\r\n");
    assert_eq!(its[0].1.literal_data(), Some(&b""[..]));
    assert_eq!(its[2].1.kind, ValueKind::Number(227));

    let ev = one(t("preview_snippet_modseq"), 1 << 20);
    let its = items(&ev);
    assert_eq!(&its[1].1.raw[..], "(FUZZY {10}\r\nDéjà vu.)".as_bytes());
}

#[test]
fn item_too_large() {
    let t = transcripts::TRANSCRIPTS
        .iter()
        .find(|t| t.0 == "many_items")
        .unwrap()
        .3;
    for chunk in [1, 3, 64, t.len()] {
        for events in parse_all(t, chunk, 64) {
            assert_eq!(events.last(), Some(&FetchEvent::End));
            for e in &events {
                match e {
                    FetchEvent::Item { value, .. } => assert!(value.raw.len() <= 64),
                    FetchEvent::ItemTooLarge { name } => assert!(
                        [
                            &b"ENVELOPE"[..],
                            b"BODYSTRUCTURE",
                            b"BODY[HEADER.FIELDS (\"FROM\" SUBJECT)]"
                        ]
                        .contains(&&name[..]),
                        "{name:?}"
                    ),
                    _ => {}
                }
            }
            let big = events
                .iter()
                .filter(|e| matches!(e, FetchEvent::ItemTooLarge { .. }))
                .count();
            assert_eq!(big, 3);
        }
    }
    // the boundary: a literal value of exactly max_item bytes is kept
    let resp = b"* 1 FETCH (BODY[] {5}\r\nabcde)\r\n";
    // "{5}\r\nabcde" is 10 bytes
    assert!(matches!(&one(resp, 10)[1], FetchEvent::Item { .. }));
    assert!(matches!(&one(resp, 9)[1], FetchEvent::ItemTooLarge { .. }));
    assert!(matches!(&one(resp, 3)[1], FetchEvent::ItemTooLarge { .. }));
}

#[test]
fn too_large_reported_at_announcement_and_streamed() {
    let mut p = FetchResponseParser::new(1000);
    let header = Frame::Line {
        bytes: Bytes::from_static(b"* 9 FETCH (UID 4 BODY[] {50000000}\r\n"),
        first: true,
        literal: Some(LiteralSpec {
            len: 50_000_000,
            sync: true,
            binary: false,
        }),
        oversized: false,
    };
    let ev = p.feed(&header);
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[0], FetchEvent::Start { seq: 9 });
    assert!(matches!(&ev[2], FetchEvent::ItemTooLarge { name } if &name[..] == b"BODY[]"));
    assert_eq!(p.uid(), Some(4));
    let chunk = Bytes::from(vec![b'x'; 65536]);
    let mut left: u64 = 50_000_000;
    while left > 0 {
        let n = left.min(65536);
        left -= n;
        let f = Frame::Literal {
            bytes: chunk.slice(..n as usize),
            remaining: left,
        };
        assert!(p.feed(&f).is_empty());
        assert!(p.retained_bytes() <= 2 * 1000 + 2 * MAX_ITEM_NAME);
    }
    let tail = Frame::Line {
        bytes: Bytes::from_static(b" FLAGS (\\Seen))\r\n"),
        first: false,
        literal: None,
        oversized: false,
    };
    let ev = p.feed(&tail);
    assert!(matches!(&ev[0], FetchEvent::Item { name, .. } if &name[..] == b"FLAGS"));
    assert_eq!(ev[1], FetchEvent::End);
    assert!(p.is_done());
}

#[test]
fn oversized_line_in_chunks() {
    // a BODYSTRUCTURE-like list longer than the framer's line bound
    let mut list = b"(".to_vec();
    for i in 0..3000 {
        list.extend_from_slice(format!("(\"text\" \"plain\" {i}) ").as_bytes());
    }
    list.extend_from_slice(b"\"mixed\")");
    let resp = build_fetch_response(2, &[(b"UID", b"8"), (b"BODYSTRUCTURE", &list)]);
    for max_item in [list.len(), list.len() - 1] {
        let mut framer = Framer::new(1024);
        let mut buf = BytesMut::new();
        let mut p = FetchResponseParser::new(max_item);
        let mut events = Vec::new();
        let mut chunks = 0;
        for piece in resp.chunks(100) {
            buf.extend_from_slice(piece);
            while let Some(f) = framer.next_frame(&mut buf) {
                chunks += usize::from(matches!(f, Frame::LineChunk { .. }));
                p.feed_into(&f, &mut events);
            }
        }
        assert!(chunks > 10);
        assert_eq!(events.last(), Some(&FetchEvent::End));
        if max_item == list.len() {
            assert_eq!(rebuild(&events), resp);
        } else {
            assert!(matches!(&events[2], FetchEvent::ItemTooLarge { .. }));
        }
    }
}

#[test]
fn malformed_responses_give_one_error() {
    for bad in [
        &b"* 1 FETCH (UID)\r\n"[..],
        b"* 1 FETCH (UID 1\r\n",
        b"* 1 FETCH (UID 1))\r\n",
        b"* 1 FETCH (UID 1) \r\n",
        b"* 1 FETCH (UID 1)\n",
        b"* 1 FETCH  (UID 1)\r\n",
        b"* 1 FETCH (UID  1)\r\n",
        b"* 1 FETCH (UID 1  FLAGS ())\r\n",
        b"* 1 FETCH ( UID 1)\r\n",
        b"* 0 FETCH (UID 1)\r\n",
        b"* 01 FETCH (UID 1)\r\n",
        b"* 4294967296 FETCH (UID 1)\r\n",
        b"* 1 fetch (UID 1)\r\n",
        b"* 1 EXISTS\r\n",
        b"*  1 FETCH (UID 1)\r\n",
        b"a1 OK done\r\n",
        b"* 1 FETCH (X \"unterminated)\r\n",
        b"* 1 FETCH (X (a (b))\r\n",
        b"* 1 FETCH (X {x}\r\n",
        b"* 1 FETCH (X a\"b\")\r\n",
        b"* 1 FETCH (X a(b))\r\n",
        b"* 1 FETCH (X ~x)\r\n",
        b"* 1 FETCH (X {3+x}\r\n",
        b"* 1 FETCH (BODY[ 1)\r\n",
        b"* 1 FETCH (BODY[]x 1)\r\n",
        b"* 1 FETCH (BODY[]<1a> 1)\r\n",
        b"* 1 FETCH (BODY[]<1>[] 1)\r\n",
        b"* 1 FETCH (BO(DY 1)\r\n",
        b"* 1 FETCH (UID 1 )\r\n",
        b"* 1 FETCH (UID 1\"\r\n",
        b"* 1 FETCH ()\r\n",
        b"* 1 FETCH (BODY[]<1><2> 1)\r\n",
        b"* 1 FETCH ([] 1)\r\n",
        b"* 1 FETCH (BODY[\"]\r\n",
    ] {
        let frames = frames_of(bad);
        let mut p = FetchResponseParser::new(1000);
        let mut events = Vec::new();
        for f in &frames {
            p.feed_into(f, &mut events);
        }
        assert_eq!(
            errors(&events),
            1,
            "{:?}: {events:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(!events.contains(&FetchEvent::End));
        assert!(p.is_failed());
        // nothing more once failed
        for f in &frames {
            assert!(p.feed(f).is_empty());
        }
    }
    // deep nesting is refused, not recursed into
    let mut deep = b"* 1 FETCH (X ".to_vec();
    deep.extend(std::iter::repeat(b'(').take(10_000));
    deep.extend_from_slice(b"\r\n");
    let mut p = FetchResponseParser::new(1 << 20);
    let ev: Vec<_> = frames_of(&deep).iter().flat_map(|f| p.feed(f)).collect();
    assert_eq!(errors(&ev), 1);
}

#[test]
fn frames_that_do_not_fit() {
    let line = |s: &'static [u8], first: bool, lit: Option<u64>| Frame::Line {
        bytes: Bytes::from_static(s),
        first,
        literal: lit.map(|len| LiteralSpec {
            len,
            sync: true,
            binary: false,
        }),
        oversized: false,
    };
    let literal = |s: &'static [u8], remaining: u64| Frame::Literal {
        bytes: Bytes::from_static(s),
        remaining,
    };
    let cases: Vec<Vec<Frame>> = vec![
        // a continuation line first
        vec![line(b"* 1 FETCH (UID 1)\r\n", false, None)],
        // literal data when none is expected
        vec![literal(b"abc", 0)],
        // a first line in the middle
        vec![
            line(b"* 1 FETCH (BODY[] {3}\r\n", true, Some(3)),
            literal(b"abc", 0),
            line(b")\r\n", true, None),
        ],
        // line data where literal data is expected
        vec![
            line(b"* 1 FETCH (BODY[] {3}\r\n", true, Some(3)),
            line(b"abc)\r\n", false, None),
        ],
        // the framer's literal length disagrees
        vec![line(b"* 1 FETCH (BODY[] {3}\r\n", true, Some(4))],
        vec![line(b"* 1 FETCH (BODY[] {3}\r\n", true, None)],
        vec![
            line(b"* 1 FETCH (BODY[] {3}\r\n", true, Some(3)),
            literal(b"abcd", 0),
        ],
        vec![
            line(b"* 1 FETCH (BODY[] {3}\r\n", true, Some(3)),
            literal(b"ab", 0),
        ],
        // data after the end
        vec![
            line(b"* 1 FETCH (UID 1)\r\n", true, None),
            line(b"* 2 FETCH (UID 2)\r\n", true, None),
        ],
    ];
    for frames in cases {
        let mut p = FetchResponseParser::new(1000);
        let ev: Vec<_> = frames.iter().flat_map(|f| p.feed(f)).collect();
        assert_eq!(errors(&ev), 1, "{frames:?}: {ev:?}");
        assert!(p.is_failed());
    }
}

#[test]
fn reset_reuses_the_parser() {
    let mut p = FetchResponseParser::new(100);
    for (seq, resp) in [
        (1u32, &b"* 1 FETCH (UID 5)\r\n"[..]),
        (2, b"* 2 FETCH (FLAGS ())\r\n"),
    ] {
        p.reset();
        let ev: Vec<_> = frames_of(resp).iter().flat_map(|f| p.feed(f)).collect();
        assert_eq!(ev[0], FetchEvent::Start { seq });
        assert_eq!(ev.last(), Some(&FetchEvent::End));
    }
    assert_eq!(p.uid(), None);
    assert!(p.flags().is_some());
}
