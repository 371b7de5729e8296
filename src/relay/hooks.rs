//! Features hook into the relay core at named points of the ledger, the
//! way pingora's proxy phases do: a feature implements [`Hook`] (every
//! method has a do-nothing default) and is added to the session's hook
//! list. The core parses each command once and keeps the mailbox view;
//! hooks get both.
//!
//! Today's hooks: the FETCH cache (`cache::flow::Flow`: plans, rewrites,
//! answers, fills) and metrics ([`MetricsHook`]: per-command latency and
//! result, sessions idling attached).

use std::sync::Arc;

use bytes::Bytes;

use super::ledger::{Command, Completed};
use crate::imap::mailbox::{Change, Tracker};

/// What to do with a client command.
#[derive(Debug, PartialEq, Eq)]
pub enum Upstream {
    /// Send it to the backend as it is.
    Forward,
    /// Send this line instead (e.g. a FETCH the cache partly answers).
    Replace(Vec<u8>),
    /// Do not send anything: these bytes are the whole answer.
    Answer(Vec<u8>),
    /// Send this command of the hook's own first; hold the client's command
    /// (and everything after it) until [`Hook::after_prefetch`] decides.
    Prefetch(Vec<u8>),
}

/// What to do with a backend frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Send to the client unchanged.
    Pass,
    /// Held by the hook; what goes out instead comes from
    /// [`Hook::take_output`].
    Hold,
}

/// A feature of the relay. Called from the core, never concurrently, with
/// time passed in by the core (hooks do not read the clock).
pub trait Hook: Send {
    /// A client command is about to go to the backend (its first line,
    /// CRLF included; `cmd` is the ledger's parse of it; `view` already
    /// knows it). The first hook that returns something else than
    /// [`Upstream::Forward`] decides; later hooks are not asked.
    fn command(&mut self, _cmd: &Command, _line: &[u8], _view: &Tracker) -> Upstream {
        Upstream::Forward
    }

    /// The relay answered the command tagged `tag` itself: no backend
    /// answer will come.
    fn answered_by_proxy(&mut self, _tag: &str) {}

    /// After [`Upstream::Prefetch`]: called after every backend frame until
    /// it returns what to do with the held client command.
    fn after_prefetch(&mut self, _view: &Tracker) -> Option<Upstream> {
        None
    }

    /// A backend frame: the first line part of a response (`first`), a
    /// later line part, or literal data; `end` on the last frame of the
    /// response. `changes` are what the view learned from this frame.
    fn backend_frame(
        &mut self,
        _bytes: &[u8],
        _first: bool,
        _end: bool,
        _view: &mut Tracker,
        _changes: &[Change],
    ) -> Disposition {
        Disposition::Pass
    }

    /// Output replacing held frames, in order.
    fn take_output(&mut self) -> Option<Bytes> {
        None
    }

    /// A command completed (backend answer, or the relay's own).
    fn completed(&mut self, _done: &Completed) {}

    /// The client started (`true`) or stopped idling on the backend.
    fn idling(&mut self, _on: bool) {}
}

/// Metrics as a hook: command latency and result, and the gauge of
/// sessions idling attached.
pub struct MetricsHook {
    metrics: Arc<crate::metrics::Metrics>,
    idling: bool,
}

impl MetricsHook {
    pub fn new(metrics: Arc<crate::metrics::Metrics>) -> Self {
        MetricsHook {
            metrics,
            idling: false,
        }
    }
}

impl Hook for MetricsHook {
    fn completed(&mut self, done: &Completed) {
        self.metrics
            .command_done(done.label, done.result, done.took.as_secs_f64());
    }

    fn idling(&mut self, on: bool) {
        if on != self.idling {
            self.idling = on;
            if on {
                self.metrics.park.idling.inc();
            } else {
                self.metrics.park.idling.dec();
            }
        }
    }
}

impl Drop for MetricsHook {
    fn drop(&mut self) {
        self.idling(false);
    }
}
