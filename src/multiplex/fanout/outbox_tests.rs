use super::*;
use crate::multiplex::push::{parse, MAX_NAME};

fn ev(user: &str, mailbox: &str) -> PushEvent {
    PushEvent {
        user: user.into(),
        mailbox: mailbox.into(),
        event: "MessageNew".into(),
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

fn set(ports: &[u16]) -> BTreeSet<SocketAddr> {
    ports.iter().map(|p| addr(*p)).collect()
}

fn limits(queue: usize) -> Limits {
    Limits {
        queue,
        ..Limits::default()
    }
}

fn outbox(queue: usize, peers: &[u16]) -> Outbox {
    let mut o = Outbox::new(limits(queue), []);
    o.set_peers(&set(peers));
    o
}

/// The events of a batch, parsed back by the receiving side's parser.
fn sent(b: &Batch) -> Vec<PushEvent> {
    parse(&b.body).unwrap()
}

#[test]
fn every_peer_gets_every_event_in_one_batch() {
    let t0 = Instant::now();
    let mut o = outbox(100, &[1, 2]);
    let t = o.enqueue(&[ev("u1", "INBOX"), ev("u2", "Sent")]);
    assert_eq!(t.queued, 4);
    assert_eq!(o.pending(), 4);
    let (batches, t) = o.take_batches(t0);
    assert_eq!(t, Tally::default());
    assert_eq!(batches.len(), 2);
    for b in &batches {
        assert_eq!(sent(b), vec![ev("u1", "INBOX"), ev("u2", "Sent")]);
    }
    assert_eq!(
        batches.iter().map(|b| b.peer).collect::<Vec<_>>(),
        vec![addr(1), addr(2)]
    );
    // In flight: still pending, nothing more to send.
    assert_eq!(o.pending(), 4);
    assert!(o.take_batches(t0).0.is_empty());
    for b in batches {
        let (t, h) = o.done(b, Outcome::Delivered, t0);
        assert_eq!((t.delivered, h), (2, Health::Same));
    }
    assert_eq!(o.pending(), 0);
}

#[test]
fn no_peers_nothing_queued() {
    let mut o = Outbox::new(Limits::default(), []);
    assert_eq!(o.enqueue(&[ev("u", "m")]), Tally::default());
    assert!(o.take_batches(Instant::now()).0.is_empty());
    assert_eq!(o.next_retry(), None);
}

#[test]
fn same_mailbox_is_merged_while_waiting() {
    let t0 = Instant::now();
    let mut o = outbox(100, &[1]);
    let mut flags = ev("u1", "INBOX");
    flags.event = "FlagsSet".into();
    let t = o.enqueue(&[ev("u1", "INBOX"), flags.clone(), ev("u1", "Trash")]);
    assert_eq!((t.queued, t.merged), (2, 1));
    let (b, _) = o.take_batches(t0);
    assert_eq!(sent(&b[0]), vec![ev("u1", "INBOX"), ev("u1", "Trash")]);
    // While that batch is out, the same mailbox queues again (a new change
    // after the one in flight must still be told).
    let t = o.enqueue(&[flags.clone()]);
    assert_eq!(t.queued, 1);
    let [b] = <[Batch; 1]>::try_from(b).unwrap();
    o.done(b, Outcome::Delivered, t0);
    let (b, _) = o.take_batches(t0);
    assert_eq!(sent(&b[0]), vec![flags]);
}

#[test]
fn full_queue_drops_the_oldest() {
    let t0 = Instant::now();
    let mut o = outbox(3, &[1]);
    let evs: Vec<PushEvent> = (0..5).map(|i| ev(&format!("u{i}"), "INBOX")).collect();
    let t = o.enqueue(&evs);
    assert_eq!((t.queued, t.queue_full), (5, 2));
    assert_eq!(o.pending(), 3);
    let (b, _) = o.take_batches(t0);
    assert_eq!(sent(&b[0]), evs[2..].to_vec());
    // A dropped event's mailbox may queue again (its key is gone too).
    assert_eq!(o.enqueue(&evs[..1]).queued, 1);
    drop(b);
}

#[test]
fn failure_requeues_at_the_head_with_backoff() {
    let t0 = Instant::now();
    let l = limits(4);
    let mut o = Outbox::new(l, []);
    o.set_peers(&set(&[1]));
    o.enqueue(&[ev("a", "m"), ev("b", "m")]);
    let (mut b, _) = o.take_batches(t0);
    // Newer events arrive while the request is out, one for a mailbox in it.
    o.enqueue(&[ev("c", "m"), ev("a", "m"), ev("d", "m")]);
    let (t, h) = o.done(b.remove(0), Outcome::Failed, t0);
    assert_eq!(h, Health::Failing);
    // a is already queued again (newer): the failed a merges into it; b
    // goes back to the head; the queue holds 4, so nothing is dropped.
    assert_eq!(t.queue_full, 0);
    assert_eq!(o.pending(), 4);
    // Held back until the backoff ends.
    assert!(o.take_batches(t0).0.is_empty());
    assert_eq!(o.next_retry(), Some(t0 + l.backoff_min));
    let t1 = t0 + l.backoff_min;
    let (mut b, _) = o.take_batches(t1);
    assert_eq!(
        sent(&b[0]),
        vec![ev("b", "m"), ev("c", "m"), ev("a", "m"), ev("d", "m")]
    );
    // The backoff doubles up to its maximum, and resets on success.
    let mut now = t1;
    let mut waits = Vec::new();
    for _ in 0..8 {
        let (_, _) = o.done(b.remove(0), Outcome::Failed, now);
        let at = o.next_retry().unwrap();
        waits.push(at - now);
        now = at;
        b = o.take_batches(now).0;
    }
    assert_eq!(waits[0], l.backoff_min * 2);
    assert_eq!(*waits.last().unwrap(), l.backoff_max);
    let (t, h) = o.done(b.remove(0), Outcome::Delivered, now);
    assert_eq!((t.delivered, h), (4, Health::Recovered));
    o.enqueue(&[ev("e", "m")]);
    assert_eq!(o.take_batches(now).0.len(), 1);
}

#[test]
fn failure_with_a_full_queue_drops_the_failed_events_first() {
    let t0 = Instant::now();
    let mut o = outbox(2, &[1]);
    o.enqueue(&[ev("a", "m"), ev("b", "m")]);
    let (mut b, _) = o.take_batches(t0);
    o.enqueue(&[ev("c", "m"), ev("d", "m")]);
    let (t, _) = o.done(b.remove(0), Outcome::Failed, t0);
    assert_eq!(t.queue_full, 2);
    let (b, _) = o.take_batches(t0 + Duration::from_secs(10));
    assert_eq!(sent(&b[0]), vec![ev("c", "m"), ev("d", "m")]);
}

#[test]
fn refused_is_dropped_without_backoff() {
    let t0 = Instant::now();
    let mut o = outbox(10, &[1]);
    o.enqueue(&[ev("a", "m")]);
    let (mut b, _) = o.take_batches(t0);
    let (t, h) = o.done(b.remove(0), Outcome::Refused, t0);
    assert_eq!((t.refused, h), (1, Health::Failing));
    assert_eq!(o.pending(), 0);
    o.enqueue(&[ev("b", "m")]);
    let (mut b, _) = o.take_batches(t0);
    // Still refusing: no new log-worthy change.
    let (_, h) = o.done(b.remove(0), Outcome::Refused, t0);
    assert_eq!(h, Health::Same);
}

#[test]
fn myself_is_dropped_for_good() {
    let t0 = Instant::now();
    let mut o = Outbox::new(limits(10), [addr(9)]);
    // The known own address never becomes a peer.
    let c = o.set_peers(&set(&[1, 2, 9]));
    assert_eq!(c.added, vec![addr(1), addr(2)]);
    o.enqueue(&[ev("a", "m")]);
    let (b, _) = o.take_batches(t0);
    o.enqueue(&[ev("b", "m")]);
    let mut b = b.into_iter();
    let first = b.next().unwrap();
    assert_eq!(first.peer, addr(1));
    let (t, h) = o.done(first, Outcome::Myself, t0);
    assert_eq!((t.myself, h), (2, Health::Myself));
    assert_eq!(o.peers().copied().collect::<Vec<_>>(), vec![addr(2)]);
    // The next refresh lists it again: still skipped.
    let c = o.set_peers(&set(&[1, 2]));
    assert_eq!(c, PeerChange::default());
    assert_eq!(o.peer_count(), 1);
}

#[test]
fn peer_set_changes() {
    let t0 = Instant::now();
    let mut o = outbox(10, &[1, 2]);
    o.enqueue(&[ev("a", "m"), ev("b", "m")]);
    let (mut b, _) = o.take_batches(t0);
    o.enqueue(&[ev("c", "m")]);
    let c = o.set_peers(&set(&[2, 3]));
    assert_eq!(c.added, vec![addr(3)]);
    assert_eq!(c.removed, vec![addr(1)]);
    assert_eq!(c.tally.peer_gone, 1);
    // The batch in flight to the removed peer ends as peer_gone.
    let (t, _) = o.done(b.remove(0), Outcome::Delivered, t0);
    assert_eq!(t.peer_gone, 2);
    // The new peer gets only events queued after it joined.
    o.enqueue(&[ev("d", "m")]);
    let (b, _) = o.take_batches(t0);
    let to3 = b.iter().find(|b| b.peer == addr(3)).unwrap();
    assert_eq!(sent(to3), vec![ev("d", "m")]);
}

#[test]
fn too_many_peers_are_cut() {
    let mut o = Outbox::new(
        Limits {
            max_peers: 2,
            ..Limits::default()
        },
        [],
    );
    let c = o.set_peers(&set(&[5, 1, 3]));
    assert_eq!(c.added, vec![addr(1), addr(3)]);
    assert_eq!(c.ignored, 1);
}

#[test]
fn batches_respect_event_and_byte_limits() {
    let t0 = Instant::now();
    let mut o = Outbox::new(
        Limits {
            batch_events: 3,
            ..limits(100)
        },
        [],
    );
    o.set_peers(&set(&[1]));
    let evs: Vec<PushEvent> = (0..7).map(|i| ev(&format!("u{i}"), "m")).collect();
    o.enqueue(&evs);
    let mut got = Vec::new();
    loop {
        let (mut b, _) = o.take_batches(t0);
        let Some(b) = b.pop() else { break };
        assert!(b.len() <= 3);
        got.extend(sent(&b));
        o.done(b, Outcome::Delivered, t0);
    }
    assert_eq!(got, evs);

    // The worst events the push parser lets in: names of MAX_NAME bytes
    // that each escape to six (\u0001). Each still fits a body alone, and
    // no body exceeds MAX_BODY.
    let mut o = outbox(100, &[1]);
    let fat = "\u{1}".repeat(MAX_NAME);
    let evs: Vec<PushEvent> = (0..6)
        .map(|i| PushEvent {
            user: format!("{i}{}", &fat[1..]),
            mailbox: fat.clone(),
            event: fat.clone(),
        })
        .collect();
    o.enqueue(&evs);
    let mut got = Vec::new();
    loop {
        let (mut b, t) = o.take_batches(t0);
        assert_eq!(t.refused, 0);
        let Some(b) = b.pop() else { break };
        assert!(b.body.len() <= MAX_BODY, "{}", b.body.len());
        assert!(!b.is_empty());
        got.extend(sent(&b));
        o.done(b, Outcome::Delivered, t0);
    }
    assert_eq!(got, evs);
}

#[test]
fn an_event_larger_than_a_body_is_dropped() {
    let t0 = Instant::now();
    let mut o = Outbox::new(
        Limits {
            batch_bytes: 64,
            ..limits(10)
        },
        [],
    );
    o.set_peers(&set(&[1]));
    o.enqueue(&[ev(&"x".repeat(100), "m"), ev("ok", "m")]);
    let (b, t) = o.take_batches(t0);
    assert_eq!(t.refused, 1);
    assert_eq!(sent(&b[0]), vec![ev("ok", "m")]);
}

#[test]
fn new_peers_get_a_hello_until_they_answer() {
    let t0 = Instant::now();
    let l = limits(10);
    let mut o = Outbox::new(l, []);
    o.set_peers(&set(&[1, 2, 3]));
    let (b, _) = o.take_batches(t0);
    assert_eq!(b.len(), 3);
    for x in &b {
        assert!(x.is_empty());
        assert_eq!(&x.body[..], b"[]");
    }
    assert_eq!(o.pending(), 0);
    let mut b = b.into_iter();
    // Answered: no more hellos. Refused: none either (the next events
    // will tell). No answer: again after the backoff.
    o.done(b.next().unwrap(), Outcome::Delivered, t0);
    let (t, h) = o.done(b.next().unwrap(), Outcome::Refused, t0);
    assert_eq!((t, h), (Tally::default(), Health::Failing));
    o.done(b.next().unwrap(), Outcome::Failed, t0);
    assert!(o.take_batches(t0).0.is_empty());
    assert_eq!(o.next_retry(), Some(t0 + l.backoff_min));
    let (b, _) = o.take_batches(t0 + l.backoff_min);
    assert_eq!(b.iter().map(|b| b.peer).collect::<Vec<_>>(), vec![addr(3)]);
    // Events queued meanwhile ride along with a hello.
    let mut b = b.into_iter();
    o.done(b.next().unwrap(), Outcome::Failed, t0 + l.backoff_min);
    o.enqueue(&[ev("u", "m")]);
    let (b, _) = o.take_batches(t0 + Duration::from_secs(10));
    let to3 = b.iter().find(|b| b.peer == addr(3)).unwrap();
    assert_eq!(sent(to3), vec![ev("u", "m")]);
}
