//! Operations: see and steer live sessions (issue #13).
//!
//! - [`registry`]: every client session of this process (user, client,
//!   TLS, backend, state, mailbox, bytes), and the way to ask one to end
//!   at a safe point (`* BYE` between commands, never inside an APPEND);
//! - [`routes`]: the operator's runtime routing changes (drained backends,
//!   weights, per-user overrides), kept across reloads and persisted to
//!   `routing.state_file`;
//! - [`tokens`]: the admin API's bearer tokens (write and read-only);
//! - [`api`]: the JSON endpoints under `/api/v1/` on the admin listener;
//! - [`ctl`]: `imapmux ctl`, the command line that calls them, on one
//!   replica or on all of them.

pub mod api;
pub mod ctl;
mod ctl_show;
pub mod hook;
pub mod registry;
pub mod routes;
pub mod tokens;

use std::sync::Arc;

/// The operations state shared by the sessions and the admin API.
#[derive(Debug, Default)]
pub struct Ops {
    pub registry: Arc<registry::Registry>,
    pub routes: Arc<routes::RouteState>,
}

impl Ops {
    pub fn new(routes: Arc<routes::RouteState>) -> Ops {
        Ops {
            registry: Default::default(),
            routes,
        }
    }
}
