//! Push fan-out: a push that reaches one imapmux reaches every replica.
//!
//! Dovecot sends each push to one replica (behind a Service or a load
//! balancer), while a user's parked clients may be on any of them. The
//! replica that gets a push from Dovecot wakes its own parked clients and
//! forwards the events to its peers (`admin.push_peers`, and the addresses
//! of `admin.push_peers_dns`, resolved every `admin.push_peers_refresh`):
//! `POST /push` on the peer's admin server, with the same shared secret,
//! an array body of up to [`MAX_EVENTS`](super::push::MAX_EVENTS) events,
//! and the header [`FORWARDED_HEADER`] naming the sender's [`InstanceId`].
//! A forwarded request wakes the peer's clients and is never forwarded
//! again, so there are no loops. A peer that turns out to be this very
//! process (its answer carries our own [`INSTANCE_HEADER`]) is skipped from
//! then on: in Kubernetes a pod finds itself among the headless Service's
//! addresses. Each new peer is greeted with an empty batch at once, so
//! that shows before the first push.
//!
//! The parts:
//!
//! - this file: who sent a push ([`Origin`]), what a peer's answer means
//!   ([`outcome`]), the instance id and the forwarding credentials;
//! - [`outbox`] (sans-I/O): one bounded queue per peer, deduplicated by
//!   (user, mailbox), batched into request bodies, retried with backoff;
//!   the peer set and its changes;
//! - [`peers`] (sans-I/O): the configured peer names and what they last
//!   resolved to;
//! - [`driver`]: the I/O: the HTTP client (hyper), the DNS refresh, the
//!   task that sends batches, and the metrics.

pub mod driver;
pub mod outbox;
pub mod peers;

use std::fmt;

use base64::Engine;
use hyper::header::HeaderValue;

pub use driver::{start, Fanout, FanoutConfig};

/// Request header of a forwarded push: the sender's [`InstanceId`]. A
/// request carrying it is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-imapmux-forwarded";
/// Response header of an accepted push: the receiver's [`InstanceId`].
pub const INSTANCE_HEADER: &str = "x-imapmux-instance";
/// User name of the HTTP Basic credentials a forwarded push carries.
const PEER_USER: &str = "imapmux-peer";

/// A random name of this process, told to peers in [`FORWARDED_HEADER`]
/// and [`INSTANCE_HEADER`], so that a request or an answer coming back to
/// its sender is recognised. Not a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct InstanceId(String);

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({})", self.0)
    }
}

impl InstanceId {
    /// 16 random hex digits (`None` if the system has no randomness).
    pub fn random() -> Option<InstanceId> {
        let mut b = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).ok()?;
        Some(InstanceId(b.iter().map(|x| format!("{x:02x}")).collect()))
    }

    /// A fixed id (tests).
    pub fn fixed(id: &str) -> InstanceId {
        InstanceId(id.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Is `value` (a header a peer sent) this id?
    pub fn is(&self, value: &[u8]) -> bool {
        value.trim_ascii() == self.0.as_bytes()
    }

    /// As a header value.
    pub fn header(&self) -> HeaderValue {
        // Hex digits only: always a valid header value.
        HeaderValue::from_str(&self.0).unwrap_or(HeaderValue::from_static("invalid"))
    }
}

/// Who sent a push request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Not forwarded (Dovecot, or anything else with the secret): wake and
    /// forward to the peers.
    Direct,
    /// Forwarded by a peer: wake, never forward again.
    Peer,
    /// Forwarded by this very process (it is among its own peers): the
    /// events were handled before they were forwarded; do nothing.
    Myself,
}

impl Origin {
    /// From the request's [`FORWARDED_HEADER`], if any. Any value, even
    /// one that is not an instance id, marks the request as forwarded: a
    /// malformed header must never make a request travel on.
    pub fn of(forwarded: Option<&[u8]>, me: &InstanceId) -> Origin {
        match forwarded {
            None => Origin::Direct,
            Some(v) if me.is(v) => Origin::Myself,
            Some(_) => Origin::Peer,
        }
    }
}

/// What a peer's answer to a forwarded batch means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx from another process: delivered.
    Delivered,
    /// A 4xx the peer will give again (wrong secret, bad body): dropped.
    Refused,
    /// No answer, a timeout, 5xx, 408 or 429: tried again after a backoff.
    Failed,
    /// The answer carries our own instance id: the peer is this process.
    Myself,
}

/// Classify a peer's answer: its status and its [`INSTANCE_HEADER`].
pub fn outcome(status: u16, instance: Option<&[u8]>, me: &InstanceId) -> Outcome {
    if instance.is_some_and(|v| me.is(v)) {
        return Outcome::Myself;
    }
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 => Outcome::Failed,
        400..=499 => Outcome::Refused,
        _ => Outcome::Failed,
    }
}

/// The `Authorization` value of forwarded pushes: HTTP Basic with the push
/// secret as password. Basic rather than Bearer because the receiving side
/// trims blanks around a Bearer token, while Basic carries every secret
/// `/push` accepts byte for byte. Marked sensitive; never printed.
#[derive(Clone)]
pub struct ForwardAuth(HeaderValue);

impl fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForwardAuth(..)")
    }
}

impl ForwardAuth {
    pub fn new(secret: &[u8]) -> ForwardAuth {
        let mut creds = Vec::with_capacity(PEER_USER.len() + 1 + secret.len());
        creds.extend_from_slice(PEER_USER.as_bytes());
        creds.push(b':');
        creds.extend_from_slice(secret);
        let value = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(creds)
        );
        // Base64 and ASCII: always a valid header value.
        let mut v = HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("invalid"));
        v.set_sensitive(true);
        ForwardAuth(v)
    }

    pub fn header(&self) -> HeaderValue {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multiplex::push::PushSecret;

    #[test]
    fn origin_from_the_forwarded_header() {
        let me = InstanceId::fixed("00112233aabbccdd");
        assert_eq!(Origin::of(None, &me), Origin::Direct);
        assert_eq!(Origin::of(Some(b"00112233aabbccdd"), &me), Origin::Myself);
        assert_eq!(Origin::of(Some(b" 00112233aabbccdd "), &me), Origin::Myself);
        assert_eq!(Origin::of(Some(b"ffff"), &me), Origin::Peer);
        // Malformed or empty: still forwarded, never sent on.
        assert_eq!(Origin::of(Some(b""), &me), Origin::Peer);
        assert_eq!(Origin::of(Some(b"\xff\x00"), &me), Origin::Peer);
    }

    #[test]
    fn outcomes() {
        let me = InstanceId::fixed("abc");
        assert_eq!(outcome(204, None, &me), Outcome::Delivered);
        assert_eq!(outcome(200, Some(b"other"), &me), Outcome::Delivered);
        assert_eq!(outcome(204, Some(b"abc"), &me), Outcome::Myself);
        assert_eq!(outcome(401, Some(b"abc"), &me), Outcome::Myself);
        for s in [400, 401, 404, 405, 413] {
            assert_eq!(outcome(s, None, &me), Outcome::Refused, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 301, 100] {
            assert_eq!(outcome(s, None, &me), Outcome::Failed, "{s}");
        }
    }

    #[test]
    fn instance_ids_are_random_hex() {
        let a = InstanceId::random().unwrap();
        let b = InstanceId::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(a.is(a.header().as_bytes()));
    }

    #[test]
    fn forward_auth_is_accepted_by_the_receiving_side() {
        for secret in [
            &b"s3cret"[..],
            b" blanks around ",
            b"co:lon",
            "Käse".as_bytes(),
        ] {
            let auth = ForwardAuth::new(secret);
            let s = PushSecret::new(secret).unwrap();
            assert!(s.authorizes(Some(auth.header().as_bytes())), "{secret:?}");
            assert!(auth.header().is_sensitive());
            let other = PushSecret::new(b"other").unwrap();
            assert!(!other.authorizes(Some(auth.header().as_bytes())));
        }
        assert_eq!(format!("{:?}", ForwardAuth::new(b"x")), "ForwardAuth(..)");
    }
}
