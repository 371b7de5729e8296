//! The POP3 front: the AUTHORIZATION state as a sans-I/O state machine
//! ([`preauth`]), the backend's POP3 login ([`backend`]), run by the line
//! protocols' driver ([`crate::front::driver`]) with the same TLS, PROXY
//! protocol, limits, auth, brute-force limits and routing as IMAP. After
//! login the session is relayed byte for byte.

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
use preauth::{Pop3Config, Pop3PreAuth};

/// Serve one POP3 client connection to its end.
pub async fn serve(
    ctx: Arc<Context>,
    tcp: TcpStream,
    client: ClientInfo,
    mode: ListenerMode,
    admission: Admission,
) {
    drive(ctx, tcp, client, mode, admission, Protocol::Pop3, machine).await
}

fn machine(ctx: &Context, s: Start) -> Pop3PreAuth {
    let cfg = &ctx.config;
    Pop3PreAuth::new(Pop3Config {
        tls_active: s.tls_active,
        starttls_available: s.starttls_available,
        allow_plaintext_auth: s.allow_plaintext_auth,
        greeting: cfg.server.greeting.clone(),
        max_line: cfg.server.max_line_length,
        max_auth_failures: cfg.server.max_auth_failures,
        max_bad_commands: 10,
        deadline: s.deadline,
    })
}
