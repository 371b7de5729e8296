//! imapmux: an IMAP front proxy and connection multiplexer.
//!
//! Sans-I/O state machines in thin tokio drivers (docs/architecture.md):
//!
//! ```text
//! listener ─▶ session::conn (driver) ─▶ session::preauth::PreAuth ─login─▶ auth ─▶ route ─▶ backend
//!                    │                                                                 │
//!                    └──────────── relay::RelaySession (authenticated phase) ◀─────────┘
//!                                   ledger · mailbox view · IDLE/parking · literals
//!                                   hooks: cache::flow (FETCH cache), relay::MetricsHook
//!                                   Finish: End(EndReason) | Release (reuse pool) | Park (multiplex::park)
//! ```
//!
//! POP3 ([`pop3`]) and ManageSieve ([`sieve`]) listeners run their own
//! sans-I/O pre-auth state machines in [`front::driver`], log in through the
//! same [`session`] login flow (auth, penalty, routing) and relay bytes
//! ([`front::relay`]) after login.
//!
//! Data flows one way: [`listener`] → [`session`] → [`auth`] → [`route`] →
//! [`backend`]; [`relay`] carries the authenticated session, with [`cache`]
//! and [`metrics`] as hooks beside it; [`multiplex`] (reuse pool, parking,
//! watchers) is called by the session and never calls back into it;
//! [`admin`] serves metrics over HTTP. Types several layers share live below
//! them all: [`identity`], [`lifecycle`] (phases, end reasons), [`stream`]
//! (the client stream), [`imap`] (wire format and the mailbox view).
//! Each command is parsed once ([`relay::Command`]); features hook into
//! that one ledger ([`relay::Hook`]); time is passed in to every core.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod backend;
pub mod cache;
pub mod compress;
pub mod config;
pub mod front;
pub mod identity;
pub mod imap;
pub mod lifecycle;
pub mod listener;
pub mod metrics;
pub mod multiplex;
pub mod ops;
pub mod pop3;
pub mod relay;
pub mod reload;
pub mod route;
pub mod server;
pub mod session;
pub mod sieve;
pub mod stream;
pub mod tls;
