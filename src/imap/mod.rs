//! IMAP wire format: framing ([`framing`]), the commands the proxy parses
//! ([`command`]) and the responses it reads and writes ([`response`]).

// The wire format is parsed from untrusted input on every connection:
// no panics (bad input is `None` or an error, so the caller can relay the
// bytes unchanged), no clock (time is passed in), nothing `pub` that the
// crate does not export. Test modules allow the panicking lints.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::disallowed_methods
)]
#![warn(unreachable_pub)]

pub mod command;
pub mod enabled;
pub mod fetch;
pub mod framing;
pub mod mailbox;
pub mod response;
pub mod select;
