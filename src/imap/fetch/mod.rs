//! FETCH for the cache (sans-I/O): sequence sets ([`SequenceSet`]), FETCH
//! command parsing ([`parse_fetch_command`], [`FetchAtt`]), streaming FETCH
//! response parsing ([`FetchResponseParser`]) and response building
//! ([`build_fetch_response`]).
//!
//! Every function here is total: bad input gives `None` or an error event,
//! never a panic, so the caller can fall back to relaying bytes unchanged.
//!
//! What Dovecot 2.3 does (recorded transcripts in the tests):
//! - Item names: the section spec is echoed upper-cased with single spaces
//!   (`body.peek[header.fields (from  subject)]` → `BODY[HEADER.FIELDS (FROM
//!   SUBJECT)]`), quoted field names stay quoted (`("From")` → `("FROM")`),
//!   field order is kept, and `<origin.length>` comes back as `<origin>`.
//! - Order of items: "buffered" items first (UID, FLAGS, INTERNALDATE,
//!   RFC822.SIZE, MODSEQ, SAVEDATE, PREVIEW, SNIPPET, X-GUID), in the order
//!   requested, then all others (BODY[…], BINARY[…], BINARY.SIZE, RFC822*,
//!   ENVELOPE, BODYSTRUCTURE, BODY) in the order requested. For UID FETCH,
//!   UID comes first. Duplicate simple items are sent once; duplicate body
//!   sections twice.
//! - A \Seen-setting fetch of an unseen message adds `FLAGS (\Seen)` after
//!   the requested buffered items (not sent if already \Seen); with
//!   CONDSTORE enabled, a separate `* n FETCH (MODSEQ (m))` follows.
//!   `(CHANGEDSINCE m)` adds `MODSEQ (m)` after the requested buffered items.
//! - Strings with 8-bit characters, `"` or `\` (ENVELOPE subjects, PREVIEW)
//!   are sent as `{n}` literals, never escaped; decoded `BINARY[part]` data is
//!   sent as a `~{n}` literal.
//! - A message expunged by another session still gets a FETCH response with
//!   placeholders (`BODY[] NIL`, `RFC822.SIZE 0`, `BINARY.SIZE[1] 0`) and the
//!   tagged OK carries `[EXPUNGEISSUED]`: never cache from such a command.

// No panics here: the deny list is in `crate::imap` (src/imap/mod.rs).

mod att;
mod command;
mod response;
mod scan;
mod section;
mod seqset;

#[cfg(test)]
mod tests;

pub use att::{normalize_response_item_name, FetchAtt, HeaderField, Partial, Section, SectionText};
pub use command::{build_fetch_command, parse_fetch_command, parse_tagged_fetch, FetchCommand};
pub use response::{
    build_fetch_response, fetch_seq, is_fetch_start, FetchError, FetchEvent, FetchResponseParser,
    ItemValue, ValueKind, MAX_ITEM_NAME,
};
pub use seqset::{SeqNum, SequenceSet};
