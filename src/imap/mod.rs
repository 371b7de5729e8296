//! IMAP wire format: framing ([`framing`]), the commands the proxy parses
//! ([`command`]) and the responses it reads and writes ([`response`]).

pub mod command;
pub mod fetch;
pub mod framing;
pub mod response;
