//! Routing changes made at runtime by the operator: drained backends,
//! weights, and per-user overrides (`move`). They live beside the
//! configuration, so a reload keeps them, and are written to
//! `routing.state_file` when one is set (read at start and on every
//! reload), so that a restart, and every replica reading the same file,
//! agree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most per-user overrides kept (each is a line in the state file).
pub const MAX_OVERRIDES: usize = 100_000;
/// Largest weight an operator may set.
pub const MAX_WEIGHT: u32 = 10_000;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("routing.state_file {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("routing.state_file {path}: not a valid state file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("routing.state_file {path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("more than {MAX_OVERRIDES} per-user overrides")]
    TooMany,
}

/// What the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Overrides {
    /// Backends that take no new logins.
    pub drained: BTreeSet<String>,
    /// Backend → weight, replacing the configured one.
    pub weights: BTreeMap<String, u32>,
    /// User (lowercased when `routing.lowercase_users`) → backend name.
    pub users: BTreeMap<String, String>,
}

/// The runtime routing state, shared by every router built from the
/// configuration (reloads included).
#[derive(Debug, Default)]
pub struct RouteState {
    current: RwLock<Overrides>,
    file: RwLock<Option<PathBuf>>,
}

impl RouteState {
    /// A state persisted to `file` (read now when it exists).
    pub fn open(file: Option<&Path>) -> Result<RouteState, StateError> {
        let s = RouteState::default();
        s.set_file(file)?;
        Ok(s)
    }

    /// Use `file` from now on (after a reload): re-read it when it
    /// exists; else keep the state in memory and write it there on the
    /// next change.
    pub fn set_file(&self, file: Option<&Path>) -> Result<(), StateError> {
        if let Some(f) = file {
            if let Some(o) = read(f)? {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = o;
            }
        }
        *self.file.write().unwrap_or_else(|p| p.into_inner()) = file.map(Path::to_path_buf);
        Ok(())
    }

    pub fn snapshot(&self) -> Overrides {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn is_drained(&self, backend: &str) -> bool {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .drained
            .contains(backend)
    }

    pub fn weight(&self, backend: &str) -> Option<u32> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .weights
            .get(backend)
            .copied()
    }

    pub fn user(&self, user: &str) -> Option<String> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .users
            .get(user)
            .cloned()
    }

    /// Apply `change` and persist the result; on a write error the
    /// change is undone. Returns whether anything changed.
    pub fn update(&self, change: impl FnOnce(&mut Overrides)) -> Result<bool, StateError> {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        let mut next = cur.clone();
        change(&mut next);
        if next.users.len() > MAX_OVERRIDES {
            return Err(StateError::TooMany);
        }
        if next == *cur {
            return Ok(false);
        }
        if let Some(f) = &*self.file.read().unwrap_or_else(|p| p.into_inner()) {
            write(f, &next)?;
        }
        *cur = next;
        Ok(true)
    }
}

fn read(path: &Path) -> Result<Option<Overrides>, StateError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.into(),
                source,
            })
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| StateError::Parse {
            path: path.into(),
            source,
        })
}

/// Write atomically: a temporary file beside it, then rename.
fn write(path: &Path, o: &Overrides) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.into(),
        source,
    };
    let mut body = serde_json::to_vec_pretty(o).map_err(|e| err(std::io::Error::other(e)))?;
    body.push(b'\n');
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, &body).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_persist_and_a_new_state_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("state.json");
        let s = RouteState::open(Some(&f)).unwrap();
        assert!(s
            .update(|o| {
                o.drained.insert("b1".into());
                o.users.insert("alice".into(), "b2".into());
                o.weights.insert("b2".into(), 3);
            })
            .unwrap());
        assert!(!s
            .update(|o| {
                o.drained.insert("b1".into());
            })
            .unwrap());
        let again = RouteState::open(Some(&f)).unwrap();
        assert!(again.is_drained("b1"));
        assert_eq!(again.user("alice").as_deref(), Some("b2"));
        assert_eq!(again.weight("b2"), Some(3));
        // A bad file is refused and the running state stays.
        std::fs::write(&f, b"{\"drained\": 1}").unwrap();
        assert!(again.set_file(Some(&f)).is_err());
        assert!(again.is_drained("b1"));
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let s = RouteState::open(Some(Path::new("/nonexistent/dir/state.json"))).unwrap();
        assert!(s
            .update(|o| {
                o.drained.insert("b1".into());
            })
            .is_err());
        assert!(!s.is_drained("b1"));
    }
}
