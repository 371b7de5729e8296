//! A private, real OpenLDAP server (slapd) for one test: its own slapd.conf,
//! mdb database, log and port(s) on 127.0.0.1, all in a temp dir. Killed on
//! drop.
//!
//! The directory (suffix `dc=example,dc=org`):
//!
//! - `cn=admin,dc=example,dc=org` — the rootdn ([`Slapd::admin_dn`]), used
//!   by [`Slapd::add_user`] and [`Slapd::modify`];
//! - `cn=imapmux,ou=services,dc=example,dc=org` — a service account that may
//!   read every entry ([`Slapd::service_dn`], [`Slapd::service_password`],
//!   [`Slapd::service_password_file`]);
//! - users `uid=<uid>,ou=people,dc=example,dc=org` (objectClasses
//!   inetOrgPerson + inetLocalMailRecipient), each with an `{SSHA}`
//!   `userPassword` (made with `slappasswd`), an optional [`BACKEND_ATTR`]
//!   (`mailHost`, naming a backend) and an optional [`BACKEND_USER_ATTR`]
//!   (`mailRoutingAddress`, the login name on the backend).
//!
//! Access: `userPassword` is usable for binds only; users read their own
//! entry; the service account reads everything; anonymous clients read
//! nothing unless built with [`SlapdBuilder::anonymous_read`].
//!
//! ```ignore
//! let ldap = Slapd::builder()
//!     .entry(LdapUser::new("alice", "secret").mail_host("backend1").backend_user("user1"))
//!     .start();
//! let keys = ldap.ldap_config_direct();              // keys for [auth.ldap]
//! let toml = ldap.auth_section(&keys);               // [auth] source = "ldap" + [auth.ldap]
//! ```
//!
//! Needs `slapd` and `ldap-utils` (`scripts/install-deps` installs them).

use std::fs;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tls::{CertFiles, TestCa};
use super::{find_tool, free_port, make_world_readable_dir, send_signal_to, wait_until};

/// Base DN of the test directory.
pub const SUFFIX: &str = "dc=example,dc=org";
/// Attribute naming the user's backend (misc.schema).
pub const BACKEND_ATTR: &str = "mailHost";
/// Attribute holding the user's login name on the backend (misc.schema).
pub const BACKEND_USER_ATTR: &str = "mailRoutingAddress";

const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
const ADMIN_PASSWORD: &str = "admin-secret";
const SERVICE_DN: &str = "cn=imapmux,ou=services,dc=example,dc=org";
const SERVICE_PASSWORD: &str = "service-secret";
const SCHEMAS: &[&str] = &["core", "cosine", "nis", "inetorgperson", "misc"];
const SCHEMA_DIR: &str = "/etc/ldap/schema";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One user entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapUser {
    pub uid: String,
    pub password: String,
    /// `mailHost`: the backend (name or address) for this user.
    pub mail_host: Option<String>,
    /// `mailRoutingAddress`: the login name on the backend.
    pub backend_user: Option<String>,
    /// Organizational unit under the suffix (default `people`).
    pub ou: String,
}

impl LdapUser {
    pub fn new(uid: &str, password: &str) -> LdapUser {
        LdapUser {
            uid: uid.to_string(),
            password: password.to_string(),
            mail_host: None,
            backend_user: None,
            ou: "people".into(),
        }
    }
    /// Set `mailHost`.
    pub fn mail_host(mut self, host: &str) -> Self {
        self.mail_host = Some(host.to_string());
        self
    }
    /// Set `mailRoutingAddress` (the backend login name).
    pub fn backend_user(mut self, user: &str) -> Self {
        self.backend_user = Some(user.to_string());
        self
    }
    /// Put the entry under `ou=<ou>` instead of `ou=people` (the OU is
    /// created as needed).
    pub fn ou(mut self, ou: &str) -> Self {
        self.ou = ou.to_string();
        self
    }
    /// `uid=<uid, RFC 4514-escaped>,ou=<ou>,dc=example,dc=org`.
    pub fn dn(&self) -> String {
        format!(
            "uid={},{}",
            ldap3::dn_escape(self.uid.as_str()),
            ou_dn(&self.ou)
        )
    }
}

fn ou_dn(ou: &str) -> String {
    format!("ou={},{SUFFIX}", ldap3::dn_escape(ou))
}

/// Builder for [`Slapd`]. Defaults: users `user1`..`user5` with passwords
/// `pass1`..`pass5` (no mailHost), anonymous clients read nothing, users
/// read their own entry, no TLS.
pub struct SlapdBuilder {
    users: Vec<LdapUser>,
    anonymous_read: bool,
    self_read: bool,
    tls: bool,
}

impl Default for SlapdBuilder {
    fn default() -> Self {
        SlapdBuilder {
            users: (1..=5)
                .map(|i| LdapUser::new(&format!("user{i}"), &format!("pass{i}")))
                .collect(),
            anonymous_read: false,
            self_read: true,
            tls: false,
        }
    }
}

impl SlapdBuilder {
    /// Add a user under `ou=people` (replaces one with the same uid and OU).
    pub fn user(self, uid: &str, password: &str) -> Self {
        self.entry(LdapUser::new(uid, password))
    }

    /// Add a user entry (replaces one with the same uid and OU).
    pub fn entry(mut self, user: LdapUser) -> Self {
        self.users.retain(|u| u.dn() != user.dn());
        self.users.push(user);
        self
    }

    /// Remove all users (including the defaults).
    pub fn clear_users(mut self) -> Self {
        self.users.clear();
        self
    }

    /// Let anonymous clients search and read entries (never `userPassword`).
    pub fn anonymous_read(mut self) -> Self {
        self.anonymous_read = true;
        self
    }

    /// Users may not read their own entry (only bind).
    pub fn no_self_read(mut self) -> Self {
        self.self_read = false;
        self
    }

    /// TLS: StartTLS on the plain port plus an `ldaps://` listener; the
    /// certificate is for `localhost` and `127.0.0.1`, signed by a fresh test
    /// CA ([`Slapd::ca_pem_path`]).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Load the entries with `slapadd`, start slapd and wait until it answers.
    pub fn start(self) -> Slapd {
        Slapd::start_from(self)
    }
}

/// A running private slapd. Dropping it kills slapd.
pub struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
    ldaps_port: Option<u16>,
    users: Vec<LdapUser>,
    conf_path: PathBuf,
    log_path: PathBuf,
    ca: Option<TestCa>,
    cert: Option<CertFiles>,
    child: Option<Child>,
    opts: SlapdBuilder,
}

/// Panic with an install hint unless `name` is installed.
fn require(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "required tool `{name}` is not installed. Run `scripts/install-deps` (it installs \
             slapd and ldap-utils via apt-get) and retry."
        )
    })
}

/// `attr: value`, or `attr:: <base64>` when the value is not a LDIF
/// SAFE-STRING (RFC 2849).
fn ldif_line(attr: &str, value: &str) -> String {
    use base64::Engine;
    let b = value.as_bytes();
    let safe = b
        .iter()
        .all(|&c| (0x01..0x7f).contains(&c) && c != b'\n' && c != b'\r')
        && !matches!(b.first(), Some(b' ' | b':' | b'<'))
        && !b.ends_with(b" ");
    if safe {
        format!("{attr}: {value}\n")
    } else {
        format!(
            "{attr}:: {}\n",
            base64::engine::general_purpose::STANDARD.encode(b)
        )
    }
}

/// `{SSHA}` hash of `password` made by `slappasswd`.
fn ssha(password: &str) -> String {
    let out = Command::new(require("slappasswd"))
        .args(["-h", "{SSHA}", "-s", password])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running slappasswd: {e}"));
    assert!(
        out.status.success(),
        "slappasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ou_ldif(ou: &str) -> String {
    format!(
        "{}objectClass: organizationalUnit\n{}\n",
        ldif_line("dn", &ou_dn(ou)),
        ldif_line("ou", ou)
    )
}

fn user_ldif(u: &LdapUser) -> String {
    let mut s = ldif_line("dn", &u.dn());
    s.push_str("objectClass: inetOrgPerson\nobjectClass: inetLocalMailRecipient\n");
    s.push_str(&ldif_line("uid", &u.uid));
    s.push_str(&ldif_line("cn", &u.uid));
    s.push_str(&ldif_line("sn", &u.uid));
    s.push_str(&ldif_line("userPassword", &ssha(&u.password)));
    if let Some(h) = &u.mail_host {
        s.push_str(&ldif_line(BACKEND_ATTR, h));
    }
    if let Some(b) = &u.backend_user {
        s.push_str(&ldif_line(BACKEND_USER_ATTR, b));
    }
    s.push('\n');
    s
}

impl Slapd {
    /// Start with the defaults (users user1..user5 / pass1..pass5).
    pub fn start() -> Slapd {
        SlapdBuilder::default().start()
    }

    pub fn builder() -> SlapdBuilder {
        SlapdBuilder::default()
    }

    fn start_from(opts: SlapdBuilder) -> Slapd {
        require("slapd");
        require("slapadd");
        require("slappasswd");
        for s in SCHEMAS {
            let p = Path::new(SCHEMA_DIR).join(format!("{s}.schema"));
            assert!(
                p.is_file(),
                "{} is missing; install slapd with `scripts/install-deps`",
                p.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("imapmux-slapd-")
            .tempdir()
            .expect("create slapd temp dir");
        make_world_readable_dir(dir.path());
        fs::create_dir_all(dir.path().join("db")).expect("create db dir");
        let (ca, cert) = if opts.tls {
            let ca = TestCa::new("imapmux test CA (slapd)");
            let cert = ca.issue_localhost();
            (Some(ca), Some(cert))
        } else {
            (None, None)
        };
        fs::write(
            dir.path().join("service.pw"),
            format!("{SERVICE_PASSWORD}\n"),
        )
        .expect("write service.pw");
        // ldapadd -y uses the whole file: no newline.
        fs::write(dir.path().join("admin.pw"), ADMIN_PASSWORD).expect("write admin.pw");
        let mut s = Slapd {
            conf_path: dir.path().join("slapd.conf"),
            log_path: dir.path().join("slapd.log"),
            port: 0,
            ldaps_port: None,
            users: opts.users.clone(),
            ca,
            cert,
            child: None,
            dir,
            opts,
        };
        s.write_config();
        s.load_entries();
        let mut last_err = String::new();
        for _attempt in 0..5 {
            s.port = free_port();
            s.ldaps_port = s.opts.tls.then(free_port);
            match s.spawn() {
                Ok(()) => return s,
                Err(e) => {
                    let retry = e.contains("Address already in use");
                    last_err = e;
                    if !retry {
                        break;
                    }
                }
            }
        }
        panic!("slapd failed to start:\n{last_err}");
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let mut c = String::new();
        for s in SCHEMAS {
            c.push_str(&format!("include {SCHEMA_DIR}/{s}.schema\n"));
        }
        c.push_str(&format!(
            "pidfile {}\nargsfile {}\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\n",
            d.join("slapd.pid").display(),
            d.join("slapd.args").display()
        ));
        if let Some(cert) = &self.cert {
            c.push_str(&format!(
                "TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                self.ca_pem_path().display(),
                cert.cert.display(),
                cert.key.display()
            ));
        }
        let self_read = if self.opts.self_read {
            "by self read "
        } else {
            ""
        };
        let anon = if self.opts.anonymous_read {
            "by anonymous read "
        } else {
            ""
        };
        c.push_str(&format!(
            "database mdb\nmaxsize 10485760\nsuffix \"{SUFFIX}\"\nrootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PASSWORD}\ndirectory {}\nindex objectClass eq\nindex uid eq\n\
             access to attrs=userPassword by anonymous auth by * none\n\
             access to * by dn.exact=\"{SERVICE_DN}\" read {self_read}{anon}by * none\n",
            d.join("db").display()
        ));
        fs::write(&self.conf_path, c).expect("write slapd.conf");
    }

    /// The initial entries, loaded offline with slapadd.
    fn load_entries(&self) {
        let mut l = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n\
             o: example\n\n"
        );
        let mut ous = vec!["services".to_string(), "people".to_string()];
        for u in &self.users {
            if !ous.contains(&u.ou) {
                ous.push(u.ou.clone());
            }
        }
        for ou in &ous {
            l.push_str(&ou_ldif(ou));
        }
        l.push_str(&format!(
            "dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
             cn: imapmux\n{}\n",
            ldif_line("userPassword", &ssha(SERVICE_PASSWORD))
        ));
        for u in &self.users {
            l.push_str(&user_ldif(u));
        }
        let ldif = self.dir.path().join("initial.ldif");
        fs::write(&ldif, l).expect("write initial.ldif");
        let out = Command::new(require("slapadd"))
            .arg("-q")
            .arg("-f")
            .arg(&self.conf_path)
            .arg("-l")
            .arg(&ldif)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running slapadd: {e}"));
        assert!(
            out.status.success(),
            "slapadd failed ({}):\n{}\n--- slapd.conf ---\n{}\n--- ldif ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(&self.conf_path).unwrap_or_default(),
            fs::read_to_string(&ldif).unwrap_or_default()
        );
    }

    fn listen_urls(&self) -> String {
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if let Some(p) = self.ldaps_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
        }
        urls
    }

    /// Spawn slapd in the foreground (`-d 256`: stats log on stderr) and
    /// wait until it serves. Err carries the log.
    fn spawn(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open slapd.log");
        let child = Command::new(require("slapd"))
            .arg("-f")
            .arg(&self.conf_path)
            .arg("-h")
            .arg(self.listen_urls())
            .args(["-d", "256"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn slapd: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(st)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "slapd exited early ({st}).\n{}",
                        self.diagnostics()
                    ));
                }
            }
            let ldaps_up = match self.ldaps_port {
                Some(p) => TcpStream::connect(("127.0.0.1", p)).is_ok(),
                None => true,
            };
            let ports_up = ldaps_up && TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if ports_up && self.whoami() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "slapd not ready after {START_TIMEOUT:?}.\n{}",
                    self.diagnostics()
                ));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// An anonymous `ldapwhoami` succeeds (slapd really serves requests).
    fn whoami(&self) -> bool {
        let Some(tool) = find_tool("ldapwhoami") else {
            return true; // the TCP check has to do
        };
        Command::new(tool)
            .args(["-x", "-o", "nettimeout=5", "-H", &self.url()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- {} ---\n{}\n--- slapd.conf ---\n{}",
            self.log_path.display(),
            self.log(),
            fs::read_to_string(&self.conf_path).unwrap_or_default()
        )
    }

    // ----- accessors -----

    /// `ldap://127.0.0.1:<port>` (StartTLS available with `.tls()`).
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }
    /// `ldaps://127.0.0.1:<port>`; panics unless built with `.tls()`.
    pub fn ldaps_url(&self) -> String {
        format!(
            "ldaps://127.0.0.1:{}",
            self.ldaps_port.expect("slapd built without .tls()")
        )
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// CA certificate that signed slapd's certificate; panics without `.tls()`.
    pub fn ca_pem_path(&self) -> &Path {
        self.ca
            .as_ref()
            .expect("slapd built without .tls()")
            .ca_pem_path()
    }
    /// The suffix, `dc=example,dc=org`.
    pub fn base_dn(&self) -> &'static str {
        SUFFIX
    }
    /// `ou=people,dc=example,dc=org`.
    pub fn people_dn(&self) -> String {
        ou_dn("people")
    }
    /// Direct-bind template: `uid=%u,ou=people,dc=example,dc=org`.
    pub fn bind_dn_template(&self) -> String {
        format!("uid=%u,{}", self.people_dn())
    }
    /// DN of a known user; panics for unknown users.
    pub fn user_dn(&self, uid: &str) -> String {
        self.user(uid).dn()
    }
    /// Password of a known user; panics for unknown users.
    pub fn password(&self, uid: &str) -> &str {
        &self.user(uid).password
    }
    /// A known user (the first with this uid); panics for unknown users.
    pub fn user(&self, uid: &str) -> &LdapUser {
        self.users
            .iter()
            .find(|u| u.uid == uid)
            .unwrap_or_else(|| panic!("unknown LDAP user {uid:?}"))
    }
    pub fn users(&self) -> &[LdapUser] {
        &self.users
    }
    pub fn admin_dn(&self) -> &'static str {
        ADMIN_DN
    }
    pub fn admin_password(&self) -> &'static str {
        ADMIN_PASSWORD
    }
    /// The service account for search-then-bind.
    pub fn service_dn(&self) -> &'static str {
        SERVICE_DN
    }
    pub fn service_password(&self) -> &'static str {
        SERVICE_PASSWORD
    }
    /// A file holding the service password (one line), for
    /// `search_bind_password_file`.
    pub fn service_password_file(&self) -> PathBuf {
        self.dir.path().join("service.pw")
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn conf_path(&self) -> &Path {
        &self.conf_path
    }
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    /// slapd's stats log (`-d 256`) so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle).then_some(())).is_some()
    }
    /// TCP connections slapd accepted so far (`ACCEPT` lines; the readiness
    /// checks at start count too: take a baseline first).
    pub fn accepted_connections(&self) -> usize {
        self.log().matches(" ACCEPT from ").count()
    }
    /// Bind requests for `dn` seen so far.
    pub fn binds_as(&self, dn: &str) -> usize {
        self.log()
            .matches(&format!("BIND dn=\"{dn}\" method=128"))
            .count()
    }
    /// slapd's process id, when running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    // ----- configuration snippets -----

    /// Keys for `[auth.ldap]`: direct bind, `mailHost` and
    /// `mailRoutingAddress` read into the grant, 2 s timeout.
    pub fn ldap_config_direct(&self) -> String {
        format!(
            "url = {:?}\nbind_dn = {:?}\nbackend_attribute = {BACKEND_ATTR:?}\n\
             backend_user_attribute = {BACKEND_USER_ATTR:?}\ntimeout = \"2s\"\n",
            self.url(),
            self.bind_dn_template()
        )
    }

    /// Keys for `[auth.ldap]`: search `ou=people` for `(uid=%u)` as the
    /// service account (password from [`service_password_file`](Self::service_password_file)),
    /// then bind; attributes as in [`ldap_config_direct`](Self::ldap_config_direct).
    pub fn ldap_config_search(&self) -> String {
        format!(
            "url = {:?}\nsearch_base = {:?}\nsearch_filter = \"(uid=%u)\"\n\
             search_bind_dn = {SERVICE_DN:?}\nsearch_bind_password_file = {:?}\n\
             backend_attribute = {BACKEND_ATTR:?}\nbackend_user_attribute = {BACKEND_USER_ATTR:?}\n\
             timeout = \"2s\"\n",
            self.url(),
            self.people_dn(),
            self.service_password_file().display().to_string()
        )
    }

    /// A whole `[auth]` section selecting the LDAP source with `ldap_keys`
    /// (from [`ldap_config_direct`](Self::ldap_config_direct) or
    /// [`ldap_config_search`](Self::ldap_config_search)), for `ProxyConfig::extra`.
    pub fn auth_section(&self, ldap_keys: &str) -> String {
        format!("\n[auth]\nsource = \"ldap\"\n\n[auth.ldap]\n{ldap_keys}\n")
    }

    // ----- changing the directory while it runs -----

    fn ldap_tool(&self, tool: &str, ldif: &str) {
        let path = self
            .dir
            .path()
            .join(format!("{tool}-{}.ldif", rand_suffix()));
        fs::write(&path, ldif).expect("write ldif");
        let out = Command::new(require(tool))
            .args([
                "-x",
                "-o",
                "nettimeout=10",
                "-H",
                &self.url(),
                "-D",
                ADMIN_DN,
                "-y",
            ])
            .arg(self.dir.path().join("admin.pw"))
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} failed ({}):\n{}{}\n--- ldif ---\n{ldif}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Add a user to the running directory (as the rootdn, with `ldapadd`);
    /// its OU is created when new.
    pub fn add_user(&mut self, user: LdapUser) {
        let mut ldif = String::new();
        if !self.users.iter().any(|u| u.ou == user.ou) && user.ou != "people" {
            ldif.push_str(&ou_ldif(&user.ou));
        }
        ldif.push_str(&user_ldif(&user));
        self.ldap_tool("ldapadd", &ldif);
        self.users.push(user);
    }

    /// Apply an LDIF change record (`dn: …\nchangetype: modify\n…`) as the
    /// rootdn, with `ldapmodify`.
    pub fn modify(&self, ldif: &str) {
        self.ldap_tool("ldapmodify", ldif);
    }

    /// Set (or with None remove) a user's `mailHost`.
    pub fn set_mail_host(&mut self, uid: &str, host: Option<&str>) {
        let dn = self.user_dn(uid);
        let change = match host {
            Some(h) => format!("replace: {BACKEND_ATTR}\n{}", ldif_line(BACKEND_ATTR, h)),
            None => format!("delete: {BACKEND_ATTR}\n"),
        };
        self.modify(&format!(
            "{}changetype: modify\n{change}-\n",
            ldif_line("dn", &dn)
        ));
        for u in self.users.iter_mut().filter(|u| u.uid == uid) {
            u.mail_host = host.map(str::to_string);
        }
    }

    // ----- lifecycle -----

    /// True while slapd runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// Stop slapd (SIGTERM, SIGKILL after 10 s) and wait until the port closes.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        kill_group(pid, libc::SIGCONT); // in case it was frozen
        send_signal_to(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_group(pid, libc::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
        super::wait_for_port_closed(&self.addr(), Duration::from_secs(5));
    }

    /// SIGKILL slapd at once ("the directory crashed"); the port closes.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id(), libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again (same config, port and data) after [`stop`](Self::stop)
    /// or [`kill`](Self::kill).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if e.contains("Address already in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("slapd failed to restart:\n{e}"),
            }
        }
    }

    /// SIGSTOP slapd: the port still accepts TCP (kernel backlog) but nothing
    /// answers — a hung directory. Undo with [`thaw`](Self::thaw).
    /// Returns once every slapd thread is stopped (a signal is delivered
    /// asynchronously: without the wait, a request sent right after could
    /// still be answered).
    pub fn freeze(&self) {
        let Some(pid) = self.pid() else {
            return;
        };
        kill_group(pid, libc::SIGSTOP);
        let stopped = wait_until(Duration::from_secs(5), || {
            all_threads_stopped(pid).then_some(())
        });
        assert!(stopped.is_some(), "slapd (pid {pid}) did not stop");
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            kill_group(pid, libc::SIGCONT);
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill_group(pgid: u32, sig: i32) {
    // SAFETY: kill(2) on the process group we created with process_group(0).
    unsafe {
        libc::kill(-(pgid as libc::pid_t), sig);
    }
}

/// Every thread of `pid` is in state `T` (stopped) per /proc.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        let stat = fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // "<tid> (<comm>) <state> …": the state follows the last ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "T" || state == "t")
    })
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
