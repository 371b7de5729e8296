//! Fuzz-style robustness: random mutations of the transcripts and random
//! bytes through every entry point must never panic, and whatever the
//! response parser accepts completely must rebuild byte for byte.

use super::*;

/// Iterations scale: `FETCH_FUZZ_SCALE=100 cargo test --lib imap::fetch::tests::fuzz`
/// runs a hundred times longer (and `FETCH_FUZZ_SEED` changes the seed).
fn scale() -> usize {
    std::env::var("FETCH_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn seed(default: u64) -> u64 {
    std::env::var("FETCH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
        | 1
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const ALPHABET: &[u8] = b" ()[]<>{}~+\"\\.0123456789*:,$\r\nBODYPEEKHEADERFIELDSNOTXMIUNLFAGS";

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let pos = rng.below(v.len() + 1);
        let byte = if rng.below(4) == 0 {
            rng.next() as u8
        } else {
            ALPHABET[rng.below(ALPHABET.len())]
        };
        match rng.below(4) {
            0 if pos < v.len() => v[pos] = byte,
            1 => v.insert(pos, byte),
            2 if pos < v.len() => {
                v.remove(pos);
            }
            _ => v.truncate(pos),
        }
    }
    v
}

/// Feed arbitrary bytes through the framer and the parser; check the
/// rebuild property for every response accepted completely.
fn check_responses(rng: &mut Rng, input: &[u8], max_item: usize) -> usize {
    let mut complete_count = 0;
    let mut framer = Framer::new(256);
    let mut buf = BytesMut::new();
    let mut p = FetchResponseParser::new(max_item);
    let mut events = Vec::new();
    let mut message = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        let n = 1 + rng.below(40);
        let end = (pos + n).min(input.len());
        buf.extend_from_slice(&input[pos..end]);
        pos = end;
        while let Some(f) = framer.next_frame(&mut buf) {
            message.extend_from_slice(f.bytes());
            p.feed_into(&f, &mut events);
            assert!(p.retained_bytes() <= 2 * max_item + 2 * MAX_ITEM_NAME + 64);
            if f.ends_message() {
                let complete = events.last() == Some(&FetchEvent::End)
                    && !events.iter().any(|e| {
                        matches!(e, FetchEvent::Error(_) | FetchEvent::ItemTooLarge { .. })
                    });
                if complete {
                    assert_eq!(rebuild(&events), message);
                    complete_count += 1;
                }
                if p.is_done() {
                    assert!(is_fetch_start(&message));
                }
                events.clear();
                message.clear();
                p.reset();
            }
        }
    }
    complete_count
}

#[test]
fn mutated_transcripts_never_panic() {
    let mut rng = Rng(seed(0x9e37_79b9_7f4a_7c15));
    let mut complete = 0;
    for _ in 0..300 * scale() {
        for (_, command, _, bytes) in transcripts::TRANSCRIPTS {
            let m = mutate(&mut rng, bytes);
            let max_item = [8, 64, 1 << 20][rng.below(3)];
            complete += check_responses(&mut rng, &m, max_item);
            let c = mutate(&mut rng, command.as_bytes());
            if let Some(cmd) = parse_fetch_command(&c) {
                for a in &cmd.items {
                    let _ = (a.cache_key(), a.response_name(), a.as_peek(), a.sets_seen());
                    // our own renderings parse back to the same attribute
                    // (PREVIEW/unknown items with an argument list aside: one
                    // token does not hold the list)
                    let has_args =
                        matches!(a, FetchAtt::Preview(s) | FetchAtt::Other(s) if s.contains(' '));
                    if !has_args {
                        assert_eq!(FetchAtt::parse(&a.to_command_bytes()).as_ref(), Some(a));
                    }
                    assert!(
                        a.matches_response_item(a.response_name().as_bytes()) || !a.cacheable()
                    );
                }
                let _ = cmd.set.iter_resolved(1000, 10_000).map(|i| i.count());
            }
            let _ = parse_tagged_fetch(&c);
            let _ = normalize_response_item_name(&c);
        }
    }
    // mutations that keep the syntax valid (or cut after a whole response)
    // exercise the rebuild property
    assert!(complete > 500, "{complete}");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(seed(42));
    for _ in 0..20_000 * scale() {
        let len = rng.below(120);
        let v: Vec<u8> = (0..len)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect();
        let mut resp = b"* 1 FETCH (".to_vec();
        resp.extend_from_slice(&v);
        resp.extend_from_slice(b"\r\n");
        check_responses(&mut rng, &resp, 16);
        let _ = SequenceSet::parse(&v);
        let _ = FetchAtt::parse(&v);
        let _ = normalize_response_item_name(&v);
        let mut c = b"FETCH 1 (".to_vec();
        c.extend_from_slice(&v);
        let _ = parse_fetch_command(&c);
        let _ = parse_fetch_command(&v);
        let _ = is_fetch_start(&v);
    }
}
