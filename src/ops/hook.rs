//! [`MailboxHook`]: keeps a session's registry entry told which mailbox
//! the client has selected (the `sessions` listing shows it).

use std::sync::Arc;

use crate::imap::mailbox::{Change, Tracker};
use crate::relay::{Disposition, Hook};

use super::registry::SessionEntry;

pub struct MailboxHook {
    entry: Arc<SessionEntry>,
    /// What the entry was last told.
    last: Option<String>,
}

impl MailboxHook {
    pub fn new(entry: Arc<SessionEntry>) -> MailboxHook {
        MailboxHook { entry, last: None }
    }

    fn sync(&mut self, view: &Tracker) {
        let now = view.selected.as_ref().map(|m| m.name.as_str());
        if now != self.last.as_deref() {
            self.last = now.map(String::from);
            self.entry.set_mailbox(now);
        }
    }
}

impl Hook for MailboxHook {
    fn backend_frame(
        &mut self,
        _bytes: &[u8],
        _first: bool,
        end: bool,
        view: &mut Tracker,
        _changes: &[Change],
    ) -> Disposition {
        if end {
            self.sync(view);
        }
        Disposition::Pass
    }
}
