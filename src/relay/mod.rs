//! The authenticated phase of a client session: [`RelaySession`] (the
//! sans-I/O core: ledger, mailbox view, IDLE and parking, literals, bounded
//! queues, one deadline), the [`Hook`]s features plug into, and the thin
//! tokio driver ([`relay`]) that moves bytes between sockets and the core.

mod core;
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
