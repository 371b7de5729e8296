//! imapmux: an IMAP front proxy and connection multiplexer.
//!
//! Data flows one way: [`listener`] → [`session`] → [`auth`] → [`route`] →
//! [`backend`], with [`relay`] carrying the authenticated session.
//! [`metrics`] counts what happens; [`admin`] serves it over HTTP.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod backend;
pub mod cache;
pub mod config;
pub mod imap;
pub mod listener;
pub mod metrics;
pub mod push;
pub mod relay;
pub mod reload;
pub mod route;
pub mod server;
pub mod session;
pub mod tls;
