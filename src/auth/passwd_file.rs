//! Dovecot's passwd-file format, parsed from text (no I/O here: the caller
//! reads the file and re-parses it when it changes).
//!
//! ```text
//! # comment
//! user:{SCHEME}hash[:uid:gid:gecos:home:shell:extra fields]
//! alice:{ARGON2ID}$argon2id$v=19$…::::::host=10.0.0.5 port=143 destuser=alice@example
//! ```
//!
//! Extra fields are space-separated `key=value` pairs, as in Dovecot. imapmux
//! reads the backend from `backend=` (a backend name or address) or Dovecot's
//! proxy fields `host=` with `port=`, and the login name on the backend from
//! `backend_user=` or Dovecot's `destuser=`; imapmux's own keys win when both
//! are present. Other fields (`nopassword`, `userdb_…`, `mail=`…) are
//! ignored. User names are matched exactly (case-sensitive).

use std::collections::HashMap;
use std::fmt;

use thiserror::Error;

use super::password::{PasswordError, StoredPassword};

/// One user's line.
#[derive(Debug, Clone)]
pub struct Entry {
    password: StoredPassword,
    backend: Option<String>,
    backend_user: Option<String>,
}

impl Entry {
    pub fn password(&self) -> &StoredPassword {
        &self.password
    }

    /// The backend assigned to the user: `backend=`, or `host=` (with
    /// `:port` when `port=` is given).
    pub fn backend(&self) -> Option<&str> {
        self.backend.as_deref()
    }

    /// The login name on the backend: `backend_user=` or `destuser=`.
    pub fn backend_user(&self) -> Option<&str> {
        self.backend_user.as_deref()
    }
}

/// A parsed passwd-file.
#[derive(Clone, Default)]
pub struct PasswdFile {
    users: HashMap<String, Entry>,
}

impl fmt::Debug for PasswdFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswdFile")
            .field("users", &self.users.len())
            .finish()
    }
}

/// What is wrong with a passwd-file, and on which line (1-based). Never
/// quotes a password field.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PasswdFileError {
    #[error("line {line}: {source}")]
    Password {
        line: usize,
        #[source]
        source: PasswordError,
    },
    #[error(
        "line {line}: no ':' after the user name; expected \
         user:{{SCHEME}}hash[:uid:gid:gecos:home:shell:extra fields]"
    )]
    NoPassword { line: usize },
    #[error("line {line}: empty user name; a line starts with the user name, then ':'")]
    EmptyUser { line: usize },
    #[error(
        "line {line}: user {user:?} is already defined on line {first}; keep one of the two lines"
    )]
    DuplicateUser {
        user: String,
        first: usize,
        line: usize,
    },
    #[error("line {line}: {field}= is empty; give it a value or remove it")]
    EmptyField { line: usize, field: &'static str },
    #[error("line {line}: port= must be a number from 1 to 65535")]
    BadPort { line: usize },
    #[error("line {line}: port= without host=; add host= (or backend=host:port)")]
    PortWithoutHost { line: usize },
}

impl PasswdFile {
    /// Parse the text of a passwd-file. `#` comments and blank lines are
    /// skipped; CRLF line ends are accepted. PLAIN / CLEARTEXT passwords
    /// are refused unless `allow_plain`.
    pub fn parse(text: &str, allow_plain: bool) -> Result<PasswdFile, PasswdFileError> {
        let mut users: HashMap<String, (Entry, usize)> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.strip_suffix('\r').unwrap_or(raw);
            let trimmed = l.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (user, entry) = parse_line(l, line, allow_plain)?;
            if let Some((_, first)) = users.get(user) {
                return Err(PasswdFileError::DuplicateUser {
                    user: user.to_owned(),
                    first: *first,
                    line,
                });
            }
            users.insert(user.to_owned(), (entry, line));
        }
        Ok(PasswdFile {
            users: users.into_iter().map(|(u, (e, _))| (u, e)).collect(),
        })
    }

    pub fn get(&self, user: &str) -> Option<&Entry> {
        self.users.get(user)
    }

    /// The stored password most entries' verification costs the same as
    /// (the most common [`StoredPassword::cost_class`]; ties go to the
    /// smallest class name, so the choice does not depend on map order).
    /// None for an empty file.
    pub fn typical_password(&self) -> Option<&StoredPassword> {
        let mut classes: HashMap<String, (usize, &StoredPassword)> = HashMap::new();
        for e in self.users.values() {
            classes
                .entry(e.password.cost_class())
                .or_insert((0, &e.password))
                .0 += 1;
        }
        classes
            .into_iter()
            .max_by(|(ca, (na, _)), (cb, (nb, _))| na.cmp(nb).then_with(|| cb.cmp(ca)))
            .map(|(_, (_, p))| p)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

fn parse_line(l: &str, line: usize, allow_plain: bool) -> Result<(&str, Entry), PasswdFileError> {
    // user:password:uid:gid:gecos:home:shell:extra — the extra fields keep
    // their ':' (Dovecot joins the rest back), e.g. host=::1.
    let mut fields = l.splitn(8, ':');
    let user = fields.next().unwrap_or_default();
    if user.is_empty() {
        return Err(PasswdFileError::EmptyUser { line });
    }
    let password = fields.next().ok_or(PasswdFileError::NoPassword { line })?;
    let password = StoredPassword::parse(password, allow_plain)
        .map_err(|source| PasswdFileError::Password { line, source })?;
    let extra = fields.nth(5).unwrap_or_default();

    let mut backend = None;
    let mut host = None;
    let mut port = None;
    let mut backend_user = None;
    let mut destuser = None;
    for kv in extra.split(' ').filter(|s| !s.is_empty()) {
        let Some((key, value)) = kv.split_once('=') else {
            continue; // flags such as `nopassword`, `nodelay`
        };
        let (slot, field) = match key {
            "backend" => (&mut backend, "backend"),
            "host" => (&mut host, "host"),
            "port" => (&mut port, "port"),
            "backend_user" => (&mut backend_user, "backend_user"),
            "destuser" => (&mut destuser, "destuser"),
            _ => continue,
        };
        if value.is_empty() {
            return Err(PasswdFileError::EmptyField { line, field });
        }
        *slot = Some(value);
    }

    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(PasswdFileError::BadPort { line }),
        },
        None => None,
    };
    let backend = match (backend, host, port) {
        (Some(b), _, _) => Some(b.to_owned()),
        (None, Some(h), Some(p)) if h.contains(':') && !h.starts_with('[') => {
            Some(format!("[{h}]:{p}"))
        }
        (None, Some(h), Some(p)) => Some(format!("{h}:{p}")),
        (None, Some(h), None) => Some(h.to_owned()),
        (None, None, Some(_)) => return Err(PasswdFileError::PortWithoutHost { line }),
        (None, None, None) => None,
    };
    let backend_user = backend_user.or(destuser).map(str::to_owned);
    Ok((
        user,
        Entry {
            password,
            backend,
            backend_user,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::Scheme;

    const SHA512_X: &str = "{SHA512-CRYPT}$6$htYu9OGEcnnU5hui$XdgYGHygSdckorUP2VSFiso6jQBX.g0yX0PkB3VJnMavIGgoQWOEFSpihcc7Cyb2ovTm3hwaxAQdozHK5AybA1";

    #[test]
    fn parses_users_comments_and_blank_lines() {
        let text = format!(
            "# users\n\n   \nalice:{SHA512_X}\r\n  # indented comment\nbob:{{PLAIN}}pw b:1000:1000::/home/bob::\n"
        );
        let f = PasswdFile::parse(&text, true).unwrap();
        assert_eq!(f.len(), 2);
        assert!(!f.is_empty());
        let a = f.get("alice").unwrap();
        assert_eq!(a.password().scheme(), Scheme::Sha512Crypt);
        assert!(a.password().verify(b"x"));
        assert_eq!(a.backend(), None);
        assert_eq!(a.backend_user(), None);
        let b = f.get("bob").unwrap();
        assert!(b.password().verify(b"pw b"));
        assert!(f.get("Alice").is_none());
        assert!(f.get("carol").is_none());
    }

    #[test]
    fn empty_file_is_empty() {
        let f = PasswdFile::parse("# nobody yet\n", false).unwrap();
        assert_eq!(f.len(), 0);
        assert!(f.is_empty());
    }

    #[test]
    fn backend_from_extra_fields() {
        let text = "\
a:{PLAIN}p:::::: backend=store1 backend_user=a@store1
b:{PLAIN}p::::::host=10.0.0.5 port=993 destuser=b@x proxy nopassword mail=maildir:~/M
c:{PLAIN}p::::::host=10.0.0.6
d:{PLAIN}p::::::host=::1 port=143
e:{PLAIN}p::::::backend=store2 host=10.0.0.5 port=143 backend_user=e1 destuser=e2
f:{PLAIN}p:1:1:gecos:/home/f:/bin/sh:userdb_quota_rule=*:storage=1G
g:{PLAIN}p::::::host=[::1] port=143
";
        let f = PasswdFile::parse(text, true).unwrap();
        let get = |u: &str| {
            let e = f.get(u).unwrap();
            (e.backend(), e.backend_user())
        };
        assert_eq!(get("a"), (Some("store1"), Some("a@store1")));
        assert_eq!(get("b"), (Some("10.0.0.5:993"), Some("b@x")));
        assert_eq!(get("c"), (Some("10.0.0.6"), None));
        assert_eq!(get("d"), (Some("[::1]:143"), None));
        assert_eq!(get("e"), (Some("store2"), Some("e1")));
        assert_eq!(get("f"), (None, None));
        assert_eq!(get("g"), (Some("[::1]:143"), None));
    }

    #[test]
    fn duplicate_user_names_both_lines() {
        let e = PasswdFile::parse("a:{PLAIN}1\n# x\nb:{PLAIN}2\na:{PLAIN}3\n", true).unwrap_err();
        assert_eq!(
            e,
            PasswdFileError::DuplicateUser {
                user: "a".into(),
                first: 1,
                line: 4
            }
        );
        let m = e.to_string();
        assert!(m.contains("line 4") && m.contains("line 1"), "{m}");
    }

    #[test]
    fn errors_name_the_line_and_not_the_hash() {
        let bad_sha = "{SHA512-CRYPT}$6$htYu9OGEcnnU5hui$XdgYGHygSdckorUP2VSF";
        let cases: Vec<(String, usize, &str)> = vec![
            (
                format!("# c\nalice:{SHA512_X}\nbob:{bad_sha}\n"),
                3,
                "malformed",
            ),
            ("\n\nbob\n".into(), 3, "no ':'"),
            (":{PLAIN}x\n".into(), 1, "empty user"),
            ("a:{PLAIN}secretpw\n".into(), 1, "allow_plain"),
            ("a:secretpw\n".into(), 1, "hash-password"),
            ("a:\n".into(), 1, "empty password"),
            ("a:{MD5}abc\n".into(), 1, "unknown password scheme {MD5}"),
            (format!("a:{SHA512_X}::::::port=143\n"), 1, "without host"),
            (format!("a:{SHA512_X}::::::host=h port=0\n"), 1, "port="),
            (format!("a:{SHA512_X}::::::host=h port=x\n"), 1, "port="),
            (format!("a:{SHA512_X}::::::host=\n"), 1, "host= is empty"),
            (
                format!("x:{SHA512_X}\ny:{SHA512_X}::::::backend_user=\n"),
                2,
                "backend_user= is empty",
            ),
        ];
        for (text, line, what) in cases {
            let e = PasswdFile::parse(&text, false).unwrap_err();
            let m = e.to_string();
            assert!(m.starts_with(&format!("line {line}: ")), "{text:?}: {m}");
            assert!(m.contains(what), "{text:?}: {m}");
            for secret in ["htYu9OGE", "XdgYGHyg", "secretpw"] {
                assert!(!m.contains(secret), "{text:?}: {m}");
            }
        }
    }

    #[test]
    fn debug_shows_no_hash() {
        let f = PasswdFile::parse(&format!("alice:{SHA512_X}::::::host=h\n"), false).unwrap();
        let d = format!("{f:?} {:?}", f.get("alice").unwrap());
        assert!(!d.contains("htYu9OGE"), "{d}");
    }
}
