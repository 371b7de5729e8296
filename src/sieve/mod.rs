//! The ManageSieve front (RFC 5804): the non-authenticated state as a
//! sans-I/O state machine ([`preauth`]), the backend's ManageSieve login
//! ([`backend`]), run by the line protocols' driver
//! ([`crate::front::driver`]) with the same TLS, PROXY protocol, limits,
//! auth, brute-force limits and routing as IMAP. After login the session
//! (script uploads as literals included) is relayed byte for byte.

pub mod backend;
pub mod preauth;

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::config::ListenerMode;
use crate::front::driver::{serve as drive, Start};
use crate::front::Protocol;
use crate::identity::ClientInfo;
use crate::listener::limits::Admission;
use crate::session::conn::Context;
use preauth::{SieveConfig, SievePreAuth, DEFAULT_SIEVE_CAPABILITIES};

/// Serve one ManageSieve client connection to its end.
pub async fn serve(
    ctx: Arc<Context>,
    tcp: TcpStream,
    client: ClientInfo,
    mode: ListenerMode,
    admission: Admission,
) {
    drive(ctx, tcp, client, mode, admission, Protocol::Sieve, machine).await
}

fn machine(ctx: &Context, s: Start) -> SievePreAuth {
    let cfg = &ctx.config;
    // What the backends' ManageSieve last reported (health checks and
    // logins learn it), else Pigeonhole's defaults.
    let sieve = ctx
        .router
        .backends()
        .find_map(|b| b.sieve_capabilities())
        .map_or_else(|| DEFAULT_SIEVE_CAPABILITIES.to_string(), |c| c.to_string());
    SievePreAuth::new(SieveConfig {
        tls_active: s.tls_active,
        starttls_available: s.starttls_available,
        allow_plaintext_auth: s.allow_plaintext_auth,
        greeting: cfg.server.greeting.clone(),
        sieve_capabilities: sieve,
        max_line: cfg.server.max_line_length,
        max_literal: 8192,
        max_auth_failures: cfg.server.max_auth_failures,
        max_bad_commands: 10,
        deadline: s.deadline,
    })
}
