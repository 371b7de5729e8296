//! Password hashes as Dovecot stores them: `{SCHEME}hash`, or a bare crypt
//! string (`$argon2id$…`, `$2y$…`, `$6$…`) whose scheme its prefix tells.
//!
//! Parsing checks a hash's shape (so a damaged passwd-file is refused when it
//! is loaded, not at the first login); [`StoredPassword::verify`] runs the
//! real algorithm from the RustCrypto `argon2` / `sha-crypt` crates and the
//! `bcrypt` crate. [`hash`] makes strings that Dovecot (`doveadm pw -t`)
//! accepts.
//!
//! Verifying is slow on purpose (ARGON2ID at Dovecot's defaults takes 64 MiB
//! and tens of milliseconds): callers on an async runtime should run it in
//! `spawn_blocking`, behind a semaphore.
//!
//! Nothing here prints a hash or a password: the `Debug` impls show the
//! scheme only, and no error message quotes the stored value.

use std::fmt;
use std::str::FromStr;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use sha_crypt::ShaCrypt;
use subtle::ConstantTimeEq;
use thiserror::Error;

/// The schemes imapmux can verify and make, named as Dovecot names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `{ARGON2ID}$argon2id$v=19$m=…,t=…,p=…$salt$hash`
    Argon2id,
    /// `{ARGON2I}$argon2i$…`
    Argon2i,
    /// `{BLF-CRYPT}$2y$cost$…` (bcrypt; `$2b$` and `$2a$` too)
    BlfCrypt,
    /// `{SHA512-CRYPT}$6$[rounds=N$]salt$hash`
    Sha512Crypt,
    /// `{SHA256-CRYPT}$5$[rounds=N$]salt$hash`
    Sha256Crypt,
    /// `{PLAIN}password` (alias `{CLEARTEXT}`): refused unless allowed.
    Plain,
}

/// Every scheme, in the order error messages list them.
pub const SCHEMES: [Scheme; 6] = [
    Scheme::Argon2id,
    Scheme::Argon2i,
    Scheme::BlfCrypt,
    Scheme::Sha512Crypt,
    Scheme::Sha256Crypt,
    Scheme::Plain,
];

const SUPPORTED: &str = "ARGON2ID, ARGON2I, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT, \
     PLAIN (alias CLEARTEXT), or CRYPT holding one of those hashes";

/// ARGON2ID cost as `doveadm pw -s ARGON2ID` makes it (Dovecot 2.3, libsodium
/// "moderate"): 64 MiB, 3 passes, 1 lane.
const ARGON2ID_PARAMS: (u32, u32, u32) = (65536, 3, 1);
/// ARGON2I cost as `doveadm pw -s ARGON2I` makes it: 32 MiB, 4 passes, 1 lane.
const ARGON2I_PARAMS: (u32, u32, u32) = (32768, 4, 1);
/// bcrypt cost for new hashes (the bcrypt crate's default; Dovecot's is 5,
/// which is too cheap nowadays).
const BCRYPT_COST: u32 = 12;
/// bcrypt only uses this many bytes of a password.
const BCRYPT_MAX_PASSWORD: usize = 72;
/// SHA-crypt salt length in characters (glibc uses at most 16; 12 random
/// bytes encode to exactly 16).
const SHA_CRYPT_SALT_BYTES: usize = 12;

impl Scheme {
    /// The scheme for a Dovecot scheme name (`ARGON2ID`, `BLF-CRYPT`,
    /// `CLEARTEXT`…), any case. `CRYPT` is not a scheme of its own here: it
    /// names whatever its hash's prefix says (see [`Scheme::detect`]), so it
    /// gives `None`, as do names imapmux does not support.
    pub fn from_name(name: &str) -> Option<Scheme> {
        let n = name.to_ascii_uppercase();
        Some(match n.as_str() {
            "ARGON2ID" => Scheme::Argon2id,
            "ARGON2I" => Scheme::Argon2i,
            "BLF-CRYPT" => Scheme::BlfCrypt,
            "SHA512-CRYPT" => Scheme::Sha512Crypt,
            "SHA256-CRYPT" => Scheme::Sha256Crypt,
            "PLAIN" | "CLEARTEXT" => Scheme::Plain,
            _ => return None,
        })
    }

    /// The scheme of a bare crypt string, from its prefix: `$argon2id$`,
    /// `$argon2i$`, `$2y$`/`$2b$`/`$2a$`, `$6$`, `$5$`.
    pub fn detect(hash: &str) -> Option<Scheme> {
        const PREFIXES: [(&str, Scheme); 7] = [
            ("$argon2id$", Scheme::Argon2id),
            ("$argon2i$", Scheme::Argon2i),
            ("$2y$", Scheme::BlfCrypt),
            ("$2b$", Scheme::BlfCrypt),
            ("$2a$", Scheme::BlfCrypt),
            ("$6$", Scheme::Sha512Crypt),
            ("$5$", Scheme::Sha256Crypt),
        ];
        PREFIXES
            .iter()
            .find(|(p, _)| hash.starts_with(p))
            .map(|&(_, s)| s)
    }

    /// Dovecot's name for the scheme (`{NAME}` in a passwd-file).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Argon2i => "ARGON2I",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::Plain => "PLAIN",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = PasswordError;

    fn from_str(s: &str) -> Result<Scheme, PasswordError> {
        Scheme::from_name(s).ok_or_else(|| PasswordError::UnknownScheme(shown_name(s)))
    }
}

/// What is wrong with a stored password or a hashing request. No message
/// contains a hash or a password.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PasswordError {
    #[error(
        "empty password field; put {{SCHEME}}hash there (make one with `imapmux hash-password`)"
    )]
    Empty,
    #[error("unknown password scheme {0}; use one of {SUPPORTED}")]
    UnknownScheme(String),
    #[error("'{{' without a closing '}}' in the password field; write {{SCHEME}}hash")]
    UnclosedScheme,
    #[error(
        "the password field has no {{SCHEME}} prefix and is not a crypt hash \
         ($argon2id$, $argon2i$, $2y$, $2b$, $2a$, $6$, $5$); hash the password with \
         `imapmux hash-password`, or write {{PLAIN}}password and set \
         auth.passwd_file.allow_plain = true"
    )]
    NoScheme,
    #[error(
        "{{CRYPT}} hash in a format imapmux does not support (DES, MD5-crypt…); \
         supported: $argon2id$, $argon2i$, $2y$, $2b$, $2a$, $6$, $5$; rehash it with \
         `imapmux hash-password`"
    )]
    UnsupportedCrypt,
    #[error(
        "PLAIN passwords are refused; set auth.passwd_file.allow_plain = true or hash it \
         with `imapmux hash-password`"
    )]
    PlainRefused,
    #[error(
        "{{{scheme}}} entry does not hold a {scheme} hash (it should start with {expected}); \
         fix the {{SCHEME}} prefix or regenerate the hash"
    )]
    SchemeMismatch {
        scheme: Scheme,
        expected: &'static str,
    },
    #[error(
        "malformed {scheme} hash: {reason}; regenerate it with \
         `imapmux hash-password --scheme {scheme}` or `doveadm pw -s {scheme}`"
    )]
    Malformed { scheme: Scheme, reason: String },
    #[error("refusing to hash an empty password")]
    EmptyPassword,
    #[error(
        "BLF-CRYPT uses only the first {BCRYPT_MAX_PASSWORD} bytes of a password; \
         use ARGON2ID for longer ones"
    )]
    TooLongForBcrypt,
    #[error(
        "this password cannot be stored as PLAIN in a passwd-file (it is not UTF-8 or \
         holds ':', CR or LF); use a hashing scheme such as ARGON2ID"
    )]
    Unrepresentable,
    #[error("hashing failed: {0}")]
    Hashing(String),
}

/// A scheme name fit to show in an error: a stray `{` in a plain password
/// must not put the password in the log.
fn shown_name(name: &str) -> String {
    let plausible = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if plausible {
        format!("{{{name}}}")
    } else {
        "(name not shown: it does not look like a scheme name)".into()
    }
}

/// A password as stored in a passwd-file, parsed and shape-checked.
#[derive(Clone)]
pub struct StoredPassword {
    scheme: Scheme,
    /// The hash as a crypt / PHC string (no `{SCHEME}` prefix), or the
    /// plaintext for PLAIN.
    secret: String,
}

impl fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredPassword")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl StoredPassword {
    /// Parse a passwd-file password field: `{SCHEME}hash`, `{CRYPT}hash`
    /// or a bare crypt hash. PLAIN / CLEARTEXT entries are refused unless
    /// `allow_plain`.
    pub fn parse(s: &str, allow_plain: bool) -> Result<StoredPassword, PasswordError> {
        if s.is_empty() {
            return Err(PasswordError::Empty);
        }
        let (scheme, body) = match s.strip_prefix('{') {
            Some(rest) => {
                let end = rest.find('}').ok_or(PasswordError::UnclosedScheme)?;
                let (name, body) = (&rest[..end], &rest[end + 1..]);
                if name.eq_ignore_ascii_case("CRYPT") {
                    (
                        Scheme::detect(body).ok_or(PasswordError::UnsupportedCrypt)?,
                        body,
                    )
                } else {
                    (name.parse::<Scheme>()?, body)
                }
            }
            None => (Scheme::detect(s).ok_or(PasswordError::NoScheme)?, s),
        };
        check_shape(scheme, body, allow_plain)?;
        Ok(StoredPassword {
            scheme,
            secret: body.to_owned(),
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// True when `password` matches. Slow for every scheme but PLAIN (by
    /// design); PLAIN compares in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self.scheme {
            Scheme::Plain => self.secret.as_bytes().ct_eq(password).into(),
            Scheme::Argon2id | Scheme::Argon2i => Argon2::default()
                .verify_password(password, self.secret.as_str())
                .is_ok(),
            Scheme::BlfCrypt => bcrypt::verify(password, &self.secret).unwrap_or(false),
            Scheme::Sha512Crypt | Scheme::Sha256Crypt => ShaCrypt::default()
                .verify_password(password, self.secret.as_str())
                .is_ok(),
        }
    }
}

/// A random password for dummy hashes (never given to anyone).
fn random_password() -> Result<String, PasswordError> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(32);
    for b in random_salt()? {
        let _ = write!(out, "{b:02x}");
    }
    Ok(out)
}

impl StoredPassword {
    /// What a verification against this hash costs: the scheme and its
    /// parameters (argon2 algorithm, version, m/t/p and output length;
    /// bcrypt cost; SHA-crypt rounds), without salt or hash. Equal classes
    /// take the same time to verify.
    pub fn cost_class(&self) -> String {
        let s = self.secret.as_str();
        match self.scheme {
            Scheme::Argon2id | Scheme::Argon2i => match PasswordHash::new(s) {
                Ok(phc) => format!(
                    "{} v={} {} len={}",
                    self.scheme,
                    phc.version.unwrap_or(0x13),
                    phc.params,
                    phc.hash.map_or(0, |h| h.len())
                ),
                Err(_) => self.scheme.name().to_string(),
            },
            Scheme::BlfCrypt => format!("{} cost={}", self.scheme, s.get(4..6).unwrap_or("")),
            Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
                format!("{} rounds={}", self.scheme, sha_crypt_rounds(s))
            }
            Scheme::Plain => self.scheme.name().to_string(),
        }
    }

    /// A hash of a random password in the same cost class as this one: a
    /// verification against it takes as long as one against this hash,
    /// and no password matches it. Slow (one hashing): call it off the
    /// async runtime.
    pub fn dummy_like(&self) -> Result<StoredPassword, PasswordError> {
        let pw = random_password()?;
        let failed = |e: &dyn fmt::Display| PasswordError::Hashing(e.to_string());
        let secret = match self.scheme {
            Scheme::Argon2id | Scheme::Argon2i => {
                let phc = PasswordHash::new(&self.secret).map_err(|e| failed(&e))?;
                let alg =
                    argon2::Algorithm::try_from(phc.algorithm.as_str()).map_err(|e| failed(&e))?;
                let version = argon2::Version::try_from(phc.version.unwrap_or(0x13))
                    .map_err(|e| failed(&e))?;
                let params = argon2::Params::try_from(&phc).map_err(|e| failed(&e))?;
                Argon2::new(alg, version, params)
                    .hash_password_with_salt(pw.as_bytes(), &random_salt()?)
                    .map_err(|e| failed(&e))?
                    .to_string()
            }
            Scheme::BlfCrypt => {
                let cost = self
                    .secret
                    .get(4..6)
                    .and_then(|c| c.parse::<u32>().ok())
                    .ok_or_else(|| failed(&"no bcrypt cost"))?;
                bcrypt::hash_with_result(pw.as_bytes(), cost)
                    .map_err(|e| failed(&e))?
                    .format_for_version(bcrypt::Version::TwoY)
            }
            Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
                let alg = if self.scheme == Scheme::Sha512Crypt {
                    sha_crypt::Algorithm::Sha512Crypt
                } else {
                    sha_crypt::Algorithm::Sha256Crypt
                };
                let params = sha_crypt::Params::new(sha_crypt_rounds(&self.secret))
                    .map_err(|e| failed(&e))?;
                ShaCrypt::new(alg, params)
                    .hash_password_with_salt(pw.as_bytes(), &random_salt()?[..SHA_CRYPT_SALT_BYTES])
                    .map_err(|e| failed(&e))?
                    .to_string()
            }
            // Same length as the stored one (comparing costs nothing
            // anyway, and runs in constant time for equal lengths).
            Scheme::Plain => {
                let mut p = pw;
                while p.len() < self.secret.len() {
                    p.push_str(&random_password()?);
                }
                p.truncate(self.secret.len().max(1));
                p
            }
        };
        Ok(StoredPassword {
            scheme: self.scheme,
            secret,
        })
    }
}

/// The rounds of a SHA-crypt string (`$6$rounds=N$…`), 5000 when absent.
fn sha_crypt_rounds(hash: &str) -> u32 {
    hash.get(3..)
        .and_then(|r| r.strip_prefix("rounds="))
        .and_then(|r| r.split('$').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(sha_crypt::Params::RECOMMENDED_ROUNDS)
}

/// The prefix a scheme's hash starts with, for messages.
fn expected_prefix(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Argon2id => "$argon2id$",
        Scheme::Argon2i => "$argon2i$",
        Scheme::BlfCrypt => "$2y$, $2b$ or $2a$",
        Scheme::Sha512Crypt => "$6$",
        Scheme::Sha256Crypt => "$5$",
        Scheme::Plain => "anything",
    }
}

fn check_shape(scheme: Scheme, body: &str, allow_plain: bool) -> Result<(), PasswordError> {
    let malformed = |reason: &str| PasswordError::Malformed {
        scheme,
        reason: reason.to_owned(),
    };
    if scheme == Scheme::Plain {
        if !allow_plain {
            return Err(PasswordError::PlainRefused);
        }
        if body.is_empty() {
            return Err(malformed("the password is empty"));
        }
        return Ok(());
    }
    if Scheme::detect(body) != Some(scheme) {
        return Err(PasswordError::SchemeMismatch {
            scheme,
            expected: expected_prefix(scheme),
        });
    }
    match scheme {
        Scheme::Argon2id | Scheme::Argon2i => {
            let phc = PasswordHash::new(body).map_err(|e| malformed(&e.to_string()))?;
            if phc.salt.is_none() {
                return Err(malformed("no salt"));
            }
            if phc.hash.is_none() {
                return Err(malformed("no hash output"));
            }
            argon2::Params::try_from(&phc).map_err(|e| malformed(&e.to_string()))?;
            Ok(())
        }
        Scheme::BlfCrypt => check_bcrypt(body).map_err(malformed),
        Scheme::Sha512Crypt => check_sha_crypt(&body[3..], 86).map_err(malformed),
        Scheme::Sha256Crypt => check_sha_crypt(&body[3..], 43).map_err(malformed),
        Scheme::Plain => Ok(()),
    }
}

/// The crypt(3) base64 alphabet.
fn is_crypt64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

/// `$2y$NN$` + 22 salt + 31 hash characters.
fn check_bcrypt(body: &str) -> Result<(), &'static str> {
    let b = body.as_bytes();
    if b.len() != 60 {
        return Err("a bcrypt hash is 60 characters long");
    }
    if b[6] != b'$' {
        return Err("expected $2y$NN$ (NN = cost)");
    }
    let cost = body
        .get(4..6)
        .and_then(|c| c.parse::<u32>().ok())
        .ok_or("the cost is not a number")?;
    if !(4..=31).contains(&cost) {
        return Err("the cost must be between 04 and 31");
    }
    if !b[7..].iter().all(|&c| is_crypt64(c)) {
        return Err("salt and hash hold characters outside [./A-Za-z0-9]");
    }
    Ok(())
}

/// After `$6$` / `$5$`: `[rounds=N$]salt$hash`.
fn check_sha_crypt(rest: &str, hash_len: usize) -> Result<(), &'static str> {
    let mut fields: Vec<&str> = rest.split('$').collect();
    if let Some(r) = fields.first().and_then(|f| f.strip_prefix("rounds=")) {
        let rounds: u32 = r.parse().map_err(|_| "rounds= is not a number")?;
        sha_crypt::Params::new(rounds).map_err(|_| "rounds= must be 1000..=999999999")?;
        fields.remove(0);
    }
    let [salt, hash] = fields[..] else {
        return Err("expected [rounds=N$]salt$hash");
    };
    if salt.len() > 16 {
        return Err("the salt is longer than 16 characters (crypt(3) would cut it)");
    }
    if hash.len() != hash_len || !hash.bytes().all(is_crypt64) {
        return Err("the hash part has the wrong length or characters");
    }
    Ok(())
}

fn random_salt() -> Result<[u8; 16], PasswordError> {
    argon2::password_hash::try_generate_salt()
        .map_err(|e| PasswordError::Hashing(format!("no randomness for the salt: {e}")))
}

fn argon2_hash(
    alg: argon2::Algorithm,
    (m, t, p): (u32, u32, u32),
    password: &[u8],
) -> Result<String, PasswordError> {
    let params = argon2::Params::new(m, t, p, Some(32))
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    let hasher = Argon2::new(alg, argon2::Version::V0x13, params);
    let salt = random_salt()?;
    let phc = hasher
        .hash_password_with_salt(password, &salt)
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    Ok(phc.to_string())
}

/// Hash `password` with `scheme`, as a Dovecot `{SCHEME}…` string (what
/// `doveadm pw -s SCHEME` prints, and what a passwd-file holds).
pub fn hash(scheme: Scheme, password: &[u8]) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::EmptyPassword);
    }
    let body = match scheme {
        Scheme::Argon2id => argon2_hash(argon2::Algorithm::Argon2id, ARGON2ID_PARAMS, password)?,
        Scheme::Argon2i => argon2_hash(argon2::Algorithm::Argon2i, ARGON2I_PARAMS, password)?,
        Scheme::BlfCrypt => {
            if password.len() > BCRYPT_MAX_PASSWORD {
                return Err(PasswordError::TooLongForBcrypt);
            }
            bcrypt::hash_with_result(password, BCRYPT_COST)
                .map_err(|e| PasswordError::Hashing(e.to_string()))?
                .format_for_version(bcrypt::Version::TwoY)
        }
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            let hasher = if scheme == Scheme::Sha512Crypt {
                ShaCrypt::SHA512
            } else {
                ShaCrypt::SHA256
            };
            let salt = random_salt()?;
            hasher
                .hash_password_with_salt(password, &salt[..SHA_CRYPT_SALT_BYTES])
                .map_err(|e| PasswordError::Hashing(e.to_string()))?
                .to_string()
        }
        Scheme::Plain => {
            let s = std::str::from_utf8(password).map_err(|_| PasswordError::Unrepresentable)?;
            if s.contains([':', '\r', '\n']) {
                return Err(PasswordError::Unrepresentable);
            }
            s.to_owned()
        }
    };
    Ok(format!("{{{}}}{body}", scheme.name()))
}

#[cfg(test)]
#[path = "password_tests.rs"]
mod tests;
