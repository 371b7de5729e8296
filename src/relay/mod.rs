//! The authenticated phase of a client session: [`RelaySession`] (the
//! sans-I/O core: ledger, mailbox view, IDLE and parking, literals, bounded
//! queues, one deadline), the [`Hook`]s features plug into, and the thin
//! tokio driver ([`relay`]) that moves bytes between sockets and the core.

// The relay is sans-I/O but for its driver, and fed by peers: no panics on
// input, no clock (time is passed in). See Cargo.toml [lints], clippy.toml.
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

mod core;
// The I/O driver reads the clock (and gives `now` to the core).
#[allow(clippy::disallowed_methods)]
mod driver;
mod hooks;
mod ledger;
mod outq;

pub use self::core::backend::OWN_TAG_PREFIX;
pub use self::core::{
    Finish, Parked, RelayConfig, RelaySession, SelectedMailbox, INJECT_MAX, OUT_MAX,
};
pub use driver::{relay, Counters, RelayOutcome};
pub use hooks::{Disposition, Hook, MetricsHook, Upstream};
pub use ledger::{Command, Completed, Ledger, MAX_IN_FLIGHT};
