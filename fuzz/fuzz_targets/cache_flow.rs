//! The relay core (`relay::RelaySession`) with the FETCH cache hook
//! (`cache::flow::Flow`), as a session runs them: client bytes, backend
//! bytes and time. It exercises the command ledger, the mailbox view
//! (`imap::mailbox::Tracker`), IDLE and parking, literals, and the
//! cache's planning, prefetch, response splitting and rebuilding, all from
//! network input.
//!
//! Input: byte 0 picks `cache.max_item_size` (bit 0), LOGOUT release (bit 1)
//! and COMPRESS offered (bit 2); then a transcript: `C: `
//! lines are client input, a `T` line lets 61 s pass (idle timeout is 600 s,
//! parking after 60 s), the rest is backend output.
//!
//! `FUZZ_DEBUG=1` prints what the cache made of each client command.
//!
//! Invariants: no panic and no time-out; a rewritten command keeps the
//! client's tag and is one CRLF line; a prefetch command has imapmux's own
//! tag; an answer from the cache is whole IMAP messages ending with the
//! client's tagged OK; the queues toward both sides stay bounded.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use imapmux::cache::flow::{Flow, Templates, PREFETCH_TAG_PREFIX};
use imapmux::cache::{CacheConfig, FetchCache};
use imapmux::imap::command::tag_of;
use imapmux::imap::framing::{Frame, Framer};
use imapmux::imap::mailbox::{Change, Tracker};
use imapmux::relay::{
    Command, Disposition, Hook, RelayConfig, RelaySession, Upstream, INJECT_MAX, OUT_MAX,
};
use libfuzzer_sys::fuzz_target;

/// Check what the flow wants sent for the client command `line`; returns
/// true while our prefetch runs (the client side then waits).
fn check_upstream(line: &[u8], up: &Upstream) -> bool {
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let what = match up {
            Upstream::Forward => "Forward".to_string(),
            Upstream::Replace(l) => format!("Replace {:?}", show(l)),
            Upstream::Answer(b) => format!("Answer {:?}", show(b)),
            Upstream::Prefetch(l) => format!("Prefetch {:?}", show(l)),
        };
        eprintln!("{:?} -> {what}", show(line));
    }
    let tag = tag_of(line).map(str::as_bytes);
    match up {
        Upstream::Forward => false,
        Upstream::Replace(l) => {
            assert!(l.ends_with(b"\n"), "rewritten command without its line end");
            assert!(
                !l[..l.len() - 1].contains(&b'\n'),
                "rewritten command of several lines"
            );
            if let Some(tag) = tag {
                assert!(
                    l.starts_with(tag) && l.get(tag.len()) == Some(&b' '),
                    "tag changed"
                );
            }
            false
        }
        Upstream::Prefetch(l) => {
            assert!(l.starts_with(PREFETCH_TAG_PREFIX) && l.ends_with(b"\r\n"));
            true
        }
        Upstream::Answer(bytes) => {
            // Whole messages, the last one the client's tagged OK.
            let mut framer = Framer::new(1 << 20);
            let mut buf = BytesMut::from(&bytes[..]);
            let mut last = None;
            while let Some(f) = framer.next_frame(&mut buf) {
                if let Frame::Line {
                    bytes, first: true, ..
                } = &f
                {
                    last = Some(bytes.clone());
                }
            }
            assert!(
                buf.is_empty() && framer.at_boundary(),
                "answer ends inside a message"
            );
            let last = last.expect("empty answer");
            if let Some(tag) = tag {
                assert!(
                    last.starts_with(tag),
                    "answer not closed with the client's tag"
                );
            }
            false
        }
    }
}

/// The cache hook, with every decision checked.
struct Checked {
    flow: Flow,
    /// The client command held for a prefetch.
    waiting: Option<Vec<u8>>,
}

impl Hook for Checked {
    fn command(&mut self, cmd: &Command, line: &[u8], view: &Tracker) -> Upstream {
        let up = self.flow.command(cmd, line, view);
        if check_upstream(line, &up) {
            self.waiting = Some(line.to_vec());
        }
        up
    }

    fn answered_by_proxy(&mut self, tag: &str) {
        Hook::answered_by_proxy(&mut self.flow, tag);
    }

    fn after_prefetch(&mut self, view: &Tracker) -> Option<Upstream> {
        let up = Hook::after_prefetch(&mut self.flow, view)?;
        if let Some(line) = self.waiting.take() {
            check_upstream(&line, &up);
        }
        Some(up)
    }

    fn backend_frame(
        &mut self,
        bytes: &[u8],
        first: bool,
        end: bool,
        view: &mut Tracker,
        changes: &[Change],
    ) -> Disposition {
        self.flow.backend_frame(bytes, first, end, view, changes)
    }

    fn take_output(&mut self) -> Option<Bytes> {
        Hook::take_output(&mut self.flow)
    }
}

fn drain(s: &mut RelaySession, now: Instant) {
    while let Some(d) = s.backend_transmit() {
        let n = d.len();
        s.backend_sent(n, now);
    }
    while let Some(d) = s.client_transmit() {
        let n = d.len();
        s.client_sent(n, now);
    }
    // COMPRESS's OK is out: the driver turns compression on (what the
    // client sent after the command is the compressed stream's).
    if s.deflate_due().is_some() {
        let _ = s.deflate_started(now);
        assert!(s.compressed());
    }
}

fuzz_target!(|data: &[u8]| {
    imapmux_fuzz::report_stack_overflows();
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let item = [64u64, 4096][usize::from(mode & 1)];
    let cfg = CacheConfig {
        enabled: true,
        max_bytes: bytesize::ByteSize::kib(256),
        max_item_size: bytesize::ByteSize::b(item),
        ttl: Duration::from_secs(3600),
        idle_ttl: Duration::from_secs(3600),
    };
    let cache = Arc::new(FetchCache::new(&cfg));
    let flow = Flow::new(cache, Arc::new(Templates::default()), "b1", "alice");
    let hooks: Vec<Box<dyn Hook>> = vec![Box::new(Checked {
        flow,
        waiting: None,
    })];
    let relay = RelayConfig {
        max_line: 65_536,
        idle_timeout: Duration::from_secs(600),
        bye_grace: Duration::from_secs(5),
        prefetch_timeout: Duration::from_secs(30),
        release_on_logout: mode & 2 != 0,
        park_after: Some(Duration::from_secs(60)),
        track_uids: true,
        selected: None,
        enabled: Default::default(),
        // COMPRESS=DEFLATE offered (its answer and the switch are the
        // core's; the stream is the driver's).
        compress: (mode & 4 != 0).then_some(1),
        compressed: false,
    };
    let mut now = Instant::now();
    let mut s = RelaySession::new(relay, BytesMut::new(), BytesMut::new(), hooks, now);
    for piece in data.split_inclusive(|b| *b == b'\n') {
        if s.finished().is_some() {
            return;
        }
        if let Some(line) = piece.strip_prefix(b"C: ") {
            s.client_input(line, now);
        } else if piece == b"T\n" {
            now += Duration::from_secs(61);
            s.handle_timeout(now);
        } else {
            s.backend_input(piece, now);
        }
        // Bounded whatever the input (one cache answer may pass a bound).
        let queued_c = s.client_transmit().map_or(0, <[u8]>::len);
        assert!(queued_c <= OUT_MAX + INJECT_MAX + 2 * item as usize + 65_536 * 2);
        drain(&mut s, now);
    }
});
