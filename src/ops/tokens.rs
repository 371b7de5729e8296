//! The admin API's bearer tokens: one with the write scope
//! (`admin.token_file`: every endpoint) and one read-only
//! (`admin.readonly_token_file`: listings and statistics). Kept as
//! SHA-256 digests, compared in constant time
//! ([`crate::multiplex::push::PushSecret`]). Without a token configured
//! the API does not exist (404).

use std::path::Path;

use crate::multiplex::push::PushSecret;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    ReadOnly,
    Write,
}

impl Scope {
    /// Who did it, for the log: the token's scope.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadOnly => "readonly-token",
            Scope::Write => "admin-token",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Tokens {
    write: Option<PushSecret>,
    read: Option<PushSecret>,
}

/// The first line of a token file (trailing blanks removed).
pub fn read_token_file(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

impl Tokens {
    /// From the tokens themselves (`None`: that scope has no token).
    pub fn new(write: Option<&[u8]>, read: Option<&[u8]>) -> Tokens {
        Tokens {
            write: write.and_then(PushSecret::new),
            read: read.and_then(PushSecret::new),
        }
    }

    /// Is the API on (some token configured)?
    pub fn enabled(&self) -> bool {
        self.write.is_some() || self.read.is_some()
    }

    /// The scope an `Authorization` header grants, if any. Both digests
    /// are always compared (no early exit on the first).
    pub fn scope(&self, authorization: Option<&[u8]>) -> Option<Scope> {
        let w = self
            .write
            .as_ref()
            .is_some_and(|t| t.authorizes(authorization));
        let r = self
            .read
            .as_ref()
            .is_some_and(|t| t.authorizes(authorization));
        if w {
            Some(Scope::Write)
        } else if r {
            Some(Scope::ReadOnly)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let t = Tokens::new(Some(b"w-secret"), Some(b"r-secret"));
        assert_eq!(t.scope(Some(b"Bearer w-secret")), Some(Scope::Write));
        assert_eq!(t.scope(Some(b"Bearer r-secret")), Some(Scope::ReadOnly));
        assert_eq!(t.scope(Some(b"Bearer w-secreT")), None);
        assert_eq!(t.scope(Some(b"Bearer ")), None);
        assert_eq!(t.scope(None), None);
        assert!(!Tokens::new(None, None).enabled());
        assert!(!Tokens::new(Some(b""), None).enabled());
        let ro = Tokens::new(None, Some(b"r"));
        assert!(ro.enabled());
        assert_eq!(ro.scope(Some(b"Bearer r")), Some(Scope::ReadOnly));
    }
}
