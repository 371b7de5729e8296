//! The LDAP auth source (`[auth] source = "ldap"`, `[auth.ldap]`).
//!
//! Two ways to find the user's entry:
//!
//! - **direct bind**: `bind_dn` is a DN template; `%u` becomes the login
//!   name, escaped as an RDN attribute value (RFC 4514). The user's password
//!   is checked by binding as that DN; the backend attributes are then read
//!   from the entry itself (a base-scope search, as the user).
//! - **search then bind**: bind as the service account (`search_bind_dn`)
//!   or anonymously, search `search_base` with `search_filter` (`%u` escaped
//!   as a filter value, RFC 4515), expect exactly one entry, then bind as that
//!   entry's DN with the user's password. The attributes come from the search.
//!
//! `invalidCredentials` (49) is a [`Verdict::Reject`]; a directory that is
//! down, slow (the `timeout` key bounds a whole check, including the wait
//! for a pooled connection) or answering oddly is a [`SourceError`], which
//! the client sees as `NO [UNAVAILABLE]`.
//!
//! **Timing.** A wrong password and an unknown user cost the directory
//! the same round trips, so the answer time does not tell which user names
//! exist:
//!
//! - search then bind: when the search finds no entry (or an ambiguous
//!   one), imapmux still binds once more, with the user's password, as a
//!   DN that does not exist (`cn=imapmux-no-such-user-<random>,<search_base>`,
//!   random per process); its answer is ignored. A failed bind to a
//!   missing DN does not touch any real entry (no password-policy failure
//!   count, no lockout of a real user).
//! - direct bind: an unknown user is a bind to a DN that does not exist,
//!   a wrong password a bind to one that does; one round trip either way.
//!
//! What imapmux cannot equalize is the directory's own work inside a bind:
//! a server that checks a password hash only when the DN exists (OpenLDAP
//! answers `invalidCredentials` for a missing DN at once) answers a wrong
//! password later than an unknown DN by the cost of one hash check. With
//! the usual `{SSHA}` that is microseconds; a slow hash scheme in the
//! directory (`{ARGON2}`, `{CRYPT}` SHA-512) makes it measurable, and only
//! the directory can hide it.
//!
//! An empty password is refused without asking the directory: an LDAP
//! simple bind with an empty password is an *anonymous* bind and succeeds.
//! So are login names with control characters or leading/trailing spaces
//! (directories ignore those spaces when matching: `" alice"` would be
//! `alice`). Otherwise the directory's matching rules decide: with the
//! usual `uid` (case-insensitive), `ALICE` logs in as `alice`; set
//! `backend_user_attribute` to get the directory's spelling for the backend.
//!
//! Connections are pooled (`pool_size` at most, which also caps the checks
//! running at once) and re-bound for every check; a connection is dropped
//! after any error. TLS (`ldaps://` or StartTLS) uses rustls with ring.
//! Passwords are never logged.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ldap3::{
    Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions,
    SearchResult,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio::sync::Semaphore;
use url::Url;

use super::config::LdapConfig;
use super::{Grant, Request, Source, SourceError, Verdict};

/// LDAP result codes this source acts on (RFC 4511, appendix A).
mod rc {
    pub const SUCCESS: u32 = 0;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INVALID_DN_SYNTAX: u32 = 34;
    pub const INVALID_CREDENTIALS: u32 = 49;
}

/// Placeholder for the login name in `bind_dn` and `search_filter`.
const USER_PLACEHOLDER: &str = "%u";

/// Verifies logins against an LDAP directory. See the module documentation.
pub struct LdapSource {
    url: Url,
    settings: LdapConnSettings,
    mode: Mode,
    /// Attributes to read (backend, backend user), in that order when set.
    backend_attribute: Option<String>,
    backend_user_attribute: Option<String>,
    timeout: Duration,
    pool: Pool,
    /// Search mode: the DN bound to when no entry was found (see the
    /// module documentation, "Timing").
    dummy_dn: String,
    dummy_binds: AtomicU64,
}

enum Mode {
    Direct {
        dn_template: String,
    },
    Search {
        base: String,
        filter_template: String,
        /// None: anonymous search.
        service: Option<ServiceAccount>,
    },
}

struct ServiceAccount {
    dn: String,
    password: String,
}

impl fmt::Debug for LdapSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.mode {
            Mode::Direct { dn_template } => format!("direct bind {dn_template:?}"),
            Mode::Search {
                base,
                filter_template,
                service,
            } => format!(
                "search {base:?} {filter_template:?} as {}",
                service.as_ref().map_or("anonymous", |s| s.dn.as_str())
            ),
        };
        f.debug_struct("LdapSource")
            .field("url", &self.url.as_str())
            .field("mode", &mode)
            .field("backend_attribute", &self.backend_attribute)
            .field("backend_user_attribute", &self.backend_user_attribute)
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool.size)
            .finish_non_exhaustive()
    }
}

/// Idle connections plus a cap on the connections in use.
struct Pool {
    idle: Mutex<Vec<Ldap>>,
    permits: Semaphore,
    size: usize,
    opened: AtomicU64,
}

/// A connection checked out of the pool for one check.
struct Conn {
    ldap: Ldap,
    /// Taken from the idle list (it may have died since it was used).
    reused: bool,
}

/// Why a check could not be completed.
enum Fail {
    /// The LDAP library reported an error during `during`.
    Ldap {
        during: &'static str,
        err: LdapError,
    },
    Source(SourceError),
}

impl Fail {
    fn ldap(during: &'static str) -> impl FnOnce(LdapError) -> Fail {
        move |err| Fail::Ldap { during, err }
    }

    /// The connection itself broke (worth one retry on a fresh connection
    /// when it came from the idle list).
    fn is_transport(&self) -> bool {
        matches!(
            self,
            Fail::Ldap {
                err: LdapError::Io { .. }
                    | LdapError::OpSend { .. }
                    | LdapError::ResultRecv { .. }
                    | LdapError::IdScrubSend { .. }
                    | LdapError::EndOfStream,
                ..
            }
        )
    }

    fn into_source_error(self, timeout: Duration) -> SourceError {
        match self {
            Fail::Source(e) => e,
            Fail::Ldap {
                err: LdapError::Timeout { .. },
                ..
            } => SourceError::Timeout(timeout),
            Fail::Ldap {
                during,
                err: err @ LdapError::LdapResult { .. },
            } => SourceError::Protocol(format!("{during}: {err}")),
            Fail::Ldap { during, err } => SourceError::Unreachable(format!("{during}: {err}")),
        }
    }
}

fn reject() -> Verdict {
    Verdict::Reject {
        text: None,
        wait: None,
        code: None,
    }
}

/// Directories ignore leading and trailing spaces when they match a name
/// (in a DN and in a filter), so `" alice"` would log in as `alice`; control
/// characters have no business in a login name either. Such names are
/// refused before the directory is asked.
fn plausible_login_name(user: &str) -> bool {
    !user.is_empty() && user.trim() == user && !user.chars().any(char::is_control)
}

/// `template` with `%u` replaced by `user` escaped as an RDN attribute value
/// (RFC 4514: `,+"\<>;=` and NUL always, a leading space or `#`, a trailing
/// space).
fn render_dn(template: &str, user: &str) -> String {
    template.replace(USER_PLACEHOLDER, &ldap3::dn_escape(user))
}

/// `template` with `%u` replaced by `user` escaped as a filter assertion
/// value (RFC 4515: `*()\` and NUL).
fn render_filter(template: &str, user: &str) -> String {
    template.replace(USER_PLACEHOLDER, &ldap3::ldap_escape(user))
}

/// First non-empty value of `attr` (attribute names are case-insensitive).
fn first_value(entry: &SearchEntry, attr: &str) -> Option<String> {
    let (_, values) = entry
        .attrs
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(attr))?;
    if values.len() > 1 {
        tracing::debug!(
            dn = %entry.dn,
            attribute = attr,
            values = values.len(),
            "ldap: attribute has several values; using the first"
        );
    }
    values.first().filter(|v| !v.is_empty()).cloned()
}

fn config_err(msg: impl Into<String>) -> SourceError {
    SourceError::Config(format!("auth.ldap: {}", msg.into()))
}

/// The first line of `path`, without its line ending.
fn read_password_file(path: &Path) -> Result<String, SourceError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| config_err(format!("search_bind_password_file {}: {e}", path.display())))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(config_err(format!(
            "search_bind_password_file {}: the first line is empty",
            path.display()
        )));
    }
    Ok(line)
}

/// rustls client config (ring) trusting `ca_file`, or the system roots.
fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, SourceError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let err = |e: String| config_err(format!("ca_file {}: {e}", path.display()));
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))?;
            for cert in certs {
                let cert = cert.map_err(|e| err(e.to_string()))?;
                roots.add(cert).map_err(|e| err(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(err("no CA certificate in file".into()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(config_err("no system CA roots found; set ca_file"));
            }
        }
    }
    let config = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl LdapSource {
    /// Check the configuration and read the files it names (service
    /// password, CA). Connects to nothing: the first check does.
    pub fn new(cfg: &LdapConfig) -> Result<LdapSource, SourceError> {
        let url =
            Url::parse(&cfg.url).map_err(|e| config_err(format!("url {:?}: {e}", cfg.url)))?;
        let tls = match url.scheme() {
            "ldap" => cfg.starttls,
            "ldaps" if cfg.starttls => {
                return Err(config_err(
                    "starttls = true needs an ldap:// url (ldaps:// is TLS already)",
                ))
            }
            "ldaps" => true,
            other => {
                return Err(config_err(format!(
                    "url {:?}: scheme must be ldap or ldaps, not {other:?}",
                    cfg.url
                )))
            }
        };
        if url.host_str().is_none() {
            return Err(config_err(format!("url {:?}: no host", cfg.url)));
        }
        if cfg.pool_size == 0 {
            return Err(config_err("pool_size must be at least 1"));
        }
        if cfg.timeout.is_zero() {
            return Err(config_err("timeout must be more than 0s"));
        }
        if !tls && cfg.ca_file.is_some() {
            tracing::warn!("auth.ldap: ca_file is unused without ldaps:// or starttls = true");
        }

        let mode =
            match (&cfg.bind_dn, &cfg.search_base) {
                (Some(_), Some(_)) => return Err(config_err(
                    "set either bind_dn (direct bind) or search_base (search then bind), not both",
                )),
                (None, None) => {
                    return Err(config_err(
                        "set bind_dn (direct bind) or search_base (search then bind)",
                    ))
                }
                (Some(dn_template), None) => {
                    if !dn_template.contains(USER_PLACEHOLDER) {
                        return Err(config_err(format!(
                            "bind_dn {dn_template:?} has no %u (the login name)"
                        )));
                    }
                    if cfg.search_bind_dn.is_some()
                        || cfg.search_bind_password.is_some()
                        || cfg.search_bind_password_file.is_some()
                    {
                        tracing::warn!(
                            "auth.ldap: search_bind_* keys are unused with bind_dn (direct bind)"
                        );
                    }
                    Mode::Direct {
                        dn_template: dn_template.clone(),
                    }
                }
                (None, Some(base)) => {
                    let filter_template = cfg.search_filter.clone();
                    if !filter_template.contains(USER_PLACEHOLDER) {
                        return Err(config_err(format!(
                            "search_filter {filter_template:?} has no %u (the login name)"
                        )));
                    }
                    if ldap3::parse_filter(render_filter(&filter_template, "user")).is_err() {
                        return Err(config_err(format!(
                            "search_filter {filter_template:?} is not a valid LDAP filter"
                        )));
                    }
                    let password =
                        match (&cfg.search_bind_password, &cfg.search_bind_password_file) {
                            (Some(_), Some(_)) => return Err(config_err(
                                "set search_bind_password or search_bind_password_file, not both",
                            )),
                            (Some(p), None) => Some(p.clone()),
                            (None, Some(path)) => Some(read_password_file(path)?),
                            (None, None) => None,
                        };
                    let service = match (&cfg.search_bind_dn, password) {
                    (Some(dn), Some(password)) if !password.is_empty() => Some(ServiceAccount {
                        dn: dn.clone(),
                        password,
                    }),
                    (Some(_), _) => return Err(config_err(
                        "search_bind_dn needs search_bind_password or search_bind_password_file",
                    )),
                    (None, Some(_)) => {
                        return Err(config_err("search_bind_password without search_bind_dn"))
                    }
                    (None, None) => None,
                };
                    Mode::Search {
                        base: base.clone(),
                        filter_template,
                        service,
                    }
                }
            };

        let mut settings = LdapConnSettings::new().set_conn_timeout(cfg.timeout);
        if tls {
            settings = settings
                .set_config(tls_config(cfg.ca_file.as_deref())?)
                .set_starttls(cfg.starttls);
        }
        let non_empty = |a: &Option<String>| a.clone().filter(|s| !s.is_empty());
        let nonce = super::cache::random_salt()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let dummy_dn = match &mode {
            Mode::Search { base, .. } if !base.is_empty() => {
                format!("cn=imapmux-no-such-user-{nonce},{base}")
            }
            _ => format!("cn=imapmux-no-such-user-{nonce}"),
        };
        Ok(LdapSource {
            url,
            settings,
            mode,
            backend_attribute: non_empty(&cfg.backend_attribute),
            backend_user_attribute: non_empty(&cfg.backend_user_attribute),
            timeout: cfg.timeout,
            pool: Pool {
                idle: Mutex::new(Vec::with_capacity(cfg.pool_size)),
                permits: Semaphore::new(cfg.pool_size),
                size: cfg.pool_size,
                opened: AtomicU64::new(0),
            },
            dummy_dn,
            dummy_binds: AtomicU64::new(0),
        })
    }

    /// Binds to the dummy DN so far (searches that found no single entry).
    pub fn dummy_binds(&self) -> u64 {
        self.dummy_binds.load(Ordering::Relaxed)
    }

    /// The bind a found entry would have cost, as a DN that does not
    /// exist: the same round trip for an unknown user as for a wrong
    /// password. Its answer is ignored (the login is refused either way);
    /// a broken connection is still an error, as in a real bind.
    async fn dummy_bind(&self, ldap: &mut Ldap, password: &str) -> Result<Verdict, Fail> {
        self.dummy_binds.fetch_add(1, Ordering::Relaxed);
        ldap.simple_bind(&self.dummy_dn, password)
            .await
            .map_err(Fail::ldap("user bind"))?;
        Ok(reject())
    }

    /// Connections opened to the directory since start (a pooled
    /// connection that is reused does not count again).
    pub fn connections_opened(&self) -> u64 {
        self.pool.opened.load(Ordering::Relaxed)
    }

    /// Connections currently idle in the pool.
    pub fn idle_connections(&self) -> usize {
        self.idle().len()
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Ldap>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.pool.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attributes to request: the configured ones, or none at all ("1.1").
    fn wanted_attributes(&self) -> Vec<&str> {
        let attrs: Vec<&str> = [&self.backend_attribute, &self.backend_user_attribute]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if attrs.is_empty() {
            vec!["1.1"]
        } else {
            attrs
        }
    }

    fn grant_from(&self, entry: &SearchEntry) -> Grant {
        Grant {
            backend: self
                .backend_attribute
                .as_deref()
                .and_then(|a| first_value(entry, a)),
            backend_user: self
                .backend_user_attribute
                .as_deref()
                .and_then(|a| first_value(entry, a)),
            backend_password: None,
        }
    }

    async fn connect(&self) -> Result<Ldap, Fail> {
        let (conn, ldap) = LdapConnAsync::from_url_with_settings(self.settings.clone(), &self.url)
            .await
            .map_err(Fail::ldap("connecting"))?;
        self.pool.opened.fetch_add(1, Ordering::Relaxed);
        // Ends when the server closes the connection or every `Ldap` handle
        // is dropped.
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "ldap: connection ended");
            }
        });
        Ok(ldap)
    }

    async fn checkout(&self) -> Result<Conn, Fail> {
        loop {
            let Some(mut ldap) = self.idle().pop() else {
                break;
            };
            if !ldap.is_closed() {
                return Ok(Conn { ldap, reused: true });
            }
        }
        Ok(Conn {
            ldap: self.connect().await?,
            reused: false,
        })
    }

    fn checkin(&self, ldap: Ldap) {
        let mut idle = self.idle();
        if idle.len() < self.pool.size {
            idle.push(ldap);
        }
    }

    /// One check on a pooled connection; a broken pooled connection is
    /// replaced once by a fresh one.
    async fn verify(&self, user: &str, password: &str) -> Result<Verdict, Fail> {
        let _permit = self
            .pool
            .permits
            .acquire()
            .await
            .map_err(|_| Fail::Source(SourceError::Unreachable("ldap pool closed".into())))?;
        let mut conn = self.checkout().await?;
        let verdict = match self.run(&mut conn.ldap, user, password).await {
            Err(fail) if conn.reused && fail.is_transport() => {
                if let Fail::Ldap { during, err } = &fail {
                    tracing::debug!(
                        during,
                        error = %err,
                        "ldap: pooled connection failed; retrying on a new connection"
                    );
                }
                drop(conn);
                conn = Conn {
                    ldap: self.connect().await?,
                    reused: false,
                };
                self.run(&mut conn.ldap, user, password).await?
            }
            other => other?,
        };
        self.checkin(conn.ldap);
        Ok(verdict)
    }

    async fn run(&self, ldap: &mut Ldap, user: &str, password: &str) -> Result<Verdict, Fail> {
        match &self.mode {
            Mode::Direct { dn_template } => {
                let dn = render_dn(dn_template, user);
                if !user_bind(ldap, &dn, password).await? {
                    tracing::debug!(user, "ldap: bind refused");
                    return Ok(reject());
                }
                if self.backend_attribute.is_none() && self.backend_user_attribute.is_none() {
                    return Ok(Verdict::Accept(Grant::default()));
                }
                let SearchResult(mut entries, result) = ldap
                    .search(
                        &dn,
                        Scope::Base,
                        "(objectClass=*)",
                        self.wanted_attributes(),
                    )
                    .await
                    .map_err(Fail::ldap("reading the user's entry"))?;
                if result.rc != rc::SUCCESS || entries.len() != 1 {
                    return Err(Fail::Source(SourceError::Protocol(format!(
                        "reading {dn:?} after a successful bind: {} ({} entries); \
                         may users read their own entry?",
                        result,
                        entries.len()
                    ))));
                }
                let entry = entries.pop().map(SearchEntry::construct);
                Ok(Verdict::Accept(
                    entry.map(|e| self.grant_from(&e)).unwrap_or_default(),
                ))
            }
            Mode::Search {
                base,
                filter_template,
                service,
            } => {
                let (dn, pw) = service
                    .as_ref()
                    .map_or(("", ""), |s| (s.dn.as_str(), s.password.as_str()));
                let bound = ldap
                    .simple_bind(dn, pw)
                    .await
                    .map_err(Fail::ldap("service bind"))?;
                if bound.rc != rc::SUCCESS {
                    let what = if dn.is_empty() {
                        "anonymous bind".to_string()
                    } else {
                        format!("service bind as {dn:?}")
                    };
                    let msg = format!("{what} refused: {bound}");
                    return Err(Fail::Source(if bound.rc == rc::INVALID_CREDENTIALS {
                        config_err(msg)
                    } else {
                        SourceError::Protocol(msg)
                    }));
                }
                let filter = render_filter(filter_template, user);
                // Two are enough to know the answer is ambiguous.
                let SearchResult(mut entries, result) = ldap
                    .with_search_options(SearchOptions::new().sizelimit(2))
                    .search(base, Scope::Subtree, &filter, self.wanted_attributes())
                    .await
                    .map_err(Fail::ldap("searching the user"))?;
                if result.rc != rc::SUCCESS && result.rc != rc::SIZE_LIMIT_EXCEEDED {
                    return Err(Fail::Source(SourceError::Protocol(format!(
                        "searching {base:?} for {filter:?}: {result}"
                    ))));
                }
                let entry = match entries.len() {
                    0 => {
                        tracing::debug!(user, "ldap: no entry found");
                        return self.dummy_bind(ldap, password).await;
                    }
                    1 => match entries.pop() {
                        Some(e) => SearchEntry::construct(e),
                        None => return self.dummy_bind(ldap, password).await,
                    },
                    _ => {
                        tracing::warn!(
                            user,
                            base = %base,
                            filter = %filter,
                            "ldap: the search found more than one entry; login refused \
                             (make search_filter match one entry per user)"
                        );
                        return self.dummy_bind(ldap, password).await;
                    }
                };
                if entry.dn.is_empty() {
                    return self.dummy_bind(ldap, password).await;
                }
                if !user_bind(ldap, &entry.dn, password).await? {
                    tracing::debug!(user, dn = %entry.dn, "ldap: bind refused");
                    return Ok(reject());
                }
                Ok(Verdict::Accept(self.grant_from(&entry)))
            }
        }
    }
}

/// Bind as `dn` with the user's password: Ok(true) when accepted, Ok(false)
/// when the credentials (or the DN made from the login name) are wrong.
async fn user_bind(ldap: &mut Ldap, dn: &str, password: &str) -> Result<bool, Fail> {
    let res = ldap
        .simple_bind(dn, password)
        .await
        .map_err(Fail::ldap("user bind"))?;
    match res.rc {
        rc::SUCCESS => Ok(true),
        rc::INVALID_CREDENTIALS | rc::INVALID_DN_SYNTAX | rc::NO_SUCH_OBJECT => Ok(false),
        _ => Err(Fail::Source(SourceError::Protocol(format!(
            "user bind as {dn:?}: {res}"
        )))),
    }
}

#[async_trait]
impl Source for LdapSource {
    fn name(&self) -> &'static str {
        "ldap"
    }

    async fn check(&self, req: Request<'_>) -> Result<Verdict, SourceError> {
        let creds = req.credentials;
        let user = creds.user.as_str();
        if user.is_empty() || creds.password.is_empty() {
            // An empty simple-bind password is an anonymous bind: it would
            // "succeed" for any DN.
            return Ok(reject());
        }
        if !plausible_login_name(user) {
            tracing::debug!(
                user = ?user,
                "ldap: login name with control characters or outer spaces; refused"
            );
            return Ok(reject());
        }
        if creds
            .authzid
            .as_deref()
            .is_some_and(|z| !z.is_empty() && z != user)
        {
            tracing::debug!(
                user,
                "ldap: refusing a login that asks to act as another user"
            );
            return Ok(reject());
        }
        let Ok(password) = std::str::from_utf8(&creds.password) else {
            // ldap3's simple bind takes UTF-8 text.
            tracing::debug!(user, "ldap: password is not UTF-8; refused");
            return Ok(reject());
        };
        match tokio::time::timeout(self.timeout, self.verify(user, password)).await {
            Ok(result) => result.map_err(|f| f.into_source_error(self.timeout)),
            Err(_) => Err(SourceError::Timeout(self.timeout)),
        }
    }
}

#[cfg(test)]
#[path = "ldap_tests.rs"]
mod tests;
