//! The FETCH command parsers of `imap::fetch` (what the cache reads from
//! client command lines): `parse_tagged_fetch`, `parse_fetch_command`,
//! `FetchAtt::parse`, `SequenceSet::parse`, `normalize_response_item_name`.
//! Mirrors the property tests of src/imap/fetch/tests/fuzz.rs.
//!
//! Input: one client command line, with or without its tag.
//!
//! Invariants: no panic; every parsed attribute renders to command bytes
//! that parse back to itself and answers to its own response name (if
//! cacheable); a command rebuilt with `build_fetch_command` parses back to
//! the same command; a sequence set prints and parses back to itself, and
//! its expansion is bounded.
#![no_main]

use imapmux::imap::fetch::{
    build_fetch_command, normalize_response_item_name, parse_fetch_command, parse_tagged_fetch,
    FetchAtt, FetchCommand, SequenceSet,
};
use libfuzzer_sys::fuzz_target;

fn check_att(a: &FetchAtt) {
    let _ = (a.cache_key(), a.as_peek(), a.sets_seen());
    // PREVIEW and unknown items with an argument list aside: one token
    // does not hold the list.
    let has_args = matches!(a, FetchAtt::Preview(s) | FetchAtt::Other(s) if s.contains(' '));
    if !has_args {
        assert_eq!(
            FetchAtt::parse(&a.to_command_bytes()).as_ref(),
            Some(a),
            "attribute does not round-trip through its command bytes"
        );
    }
    assert!(
        a.matches_response_item(a.response_name().as_bytes()) || !a.cacheable(),
        "cacheable attribute does not match its own response name"
    );
    if let Some(p) = a.as_peek() {
        assert!(!p.sets_seen(), "PEEK form sets \\Seen");
        assert_eq!(p.cache_key(), a.cache_key(), "PEEK changes the cache key");
    }
}

fn check_set(set: &SequenceSet) {
    let text = set.to_string();
    assert_eq!(
        SequenceSet::parse(text.as_bytes()).as_ref(),
        Some(set),
        "sequence set does not round-trip"
    );
    let count = set.count_resolved(u32::MAX);
    assert!(count <= u64::from(u32::MAX));
    if let Some(it) = set.iter_resolved(1000, 10_000) {
        assert!(it.count() <= 1000);
    }
    assert!(set.iter_resolved(u32::MAX, 10_000).is_none() || count <= 10_000);
}

fn check_command(cmd: &FetchCommand) {
    cmd.items.iter().for_each(check_att);
    check_set(&cmd.set);
    let _ = cmd.sets_seen();
    let rebuilt = build_fetch_command(cmd.uid, &cmd.set.to_string(), &cmd.items);
    let back = parse_fetch_command(&rebuilt).unwrap_or_else(|| {
        panic!(
            "rebuilt command does not parse: {:?}",
            String::from_utf8_lossy(&rebuilt)
        )
    });
    assert_eq!(back.uid, cmd.uid);
    assert_eq!(back.set, cmd.set);
    assert_eq!(back.items, cmd.items, "rebuilt command has other items");
}

fuzz_target!(|data: &[u8]| {
    imapmux_fuzz::report_stack_overflows();
    if let Some((tag, cmd)) = parse_tagged_fetch(data) {
        assert!(!tag.is_empty());
        check_command(&cmd);
    }
    if let Some(cmd) = parse_fetch_command(data) {
        check_command(&cmd);
    }
    if let Some(set) = SequenceSet::parse(data) {
        check_set(&set);
    }
    if let Some(a) = FetchAtt::parse(data) {
        check_att(&a);
    }
    let _ = normalize_response_item_name(data);
});
