//! Wake-ups for parked IDLE clients: something (a push notification from
//! the backend, a poll) says a user's mailbox changed.

/// Receives "this mailbox of this user changed" events.
pub trait WakeSink: Send + Sync + 'static {
    /// Wake the parked clients watching `mailbox` of `user` (on every
    /// backend); returns how many watchers were woken.
    fn wake(&self, user: &str, mailbox: &str) -> usize;
}

/// A sink that wakes nothing (multiplexing off).
#[derive(Debug, Default)]
pub struct NoWake;

impl WakeSink for NoWake {
    fn wake(&self, _user: &str, _mailbox: &str) -> usize {
        0
    }
}
