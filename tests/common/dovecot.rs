//! A private, real Dovecot for one test: own config, base_dir, state_dir,
//! maildirs, logs (all in a temp dir) and ports on 127.0.0.1.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod config;
mod logs;

use super::messages::seed_message;
use super::tls::{CertFiles, TestCa};
use super::{find_tool, free_port, make_world_readable_dir, require_tool, send_signal_to};

/// Builder for [`Dovecot`]. Defaults: users `user1`..`user5` with passwords
/// `pass1`..`pass5`, no messages, plaintext listener only.
pub struct DovecotBuilder {
    users: Vec<(String, String)>,
    messages: u32,
    tls: bool,
    rawlog: bool,
    verbose: bool,
    max_clients: Option<u32>,
    oauth2_introspection: Option<String>,
    extra_config: String,
    lua_push: Option<(String, String)>,
    doveadm_http: bool,
    pop3: bool,
    managesieve: bool,
}

impl Default for DovecotBuilder {
    fn default() -> Self {
        DovecotBuilder {
            users: (1..=5)
                .map(|i| (format!("user{i}"), format!("pass{i}")))
                .collect(),
            messages: 0,
            tls: false,
            rawlog: false,
            verbose: false,
            max_clients: None,
            oauth2_introspection: None,
            extra_config: String::new(),
            lua_push: None,
            doveadm_http: false,
            pop3: false,
            managesieve: false,
        }
    }
}

impl DovecotBuilder {
    /// Add a user (any password: spaces, quotes, backslashes and non-ASCII are
    /// fine; it is stored base64-encoded). Replaces an existing user's password.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        assert!(
            !name.contains([':', '/', '\n']) && !name.is_empty(),
            "bad user name {name:?}"
        );
        self.users.retain(|(u, _)| u != name);
        self.users.push((name.to_string(), password.to_string()));
        self
    }

    /// Remove all users (including the defaults).
    pub fn clear_users(mut self) -> Self {
        self.users.clear();
        self
    }

    /// Seed `n` messages per user into INBOX; UIDs are 1..=n and message
    /// `uid` is [`seed_message`]`(user, uid)` (UID 2 is multipart MIME).
    pub fn messages(mut self, n: u32) -> Self {
        self.messages = n;
        self
    }

    /// Enable TLS: `ssl = yes` (STARTTLS on the plaintext port) plus an
    /// implicit-TLS (imaps) listener. The certificate is for `localhost` and
    /// `127.0.0.1`, signed by a fresh test CA ([`Dovecot::ca_pem_path`]).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Record every post-login session (`rawlog_dir`, see [`Dovecot::rawlog_in`]).
    pub fn rawlog(mut self) -> Self {
        self.rawlog = true;
        self
    }

    /// `auth_verbose`, `auth_debug`, `mail_debug`.
    pub fn verbose(mut self) -> Self {
        self.verbose = true;
        self
    }

    /// Raise process/client limits for `n` simultaneous IMAP sessions.
    pub fn max_clients(mut self, n: u32) -> Self {
        self.max_clients = Some(n);
        self
    }

    /// Also offer AUTH=OAUTHBEARER and AUTH=XOAUTH2, checked by Dovecot's
    /// `oauth2` passdb against an RFC 7662 token introspection endpoint
    /// (`introspection_mode = post`): the token is valid when the answer
    /// has `"active": true`, for the user in its `"username"`. Passwords
    /// (PLAIN, LOGIN) still go to the passwd-file.
    pub fn oauth2_introspection(mut self, url: &str) -> Self {
        self.oauth2_introspection = Some(url.to_string());
        self
    }

    /// Raw configuration appended at the end of dovecot.conf.
    /// Report every mailbox change to imapmux's `/push` at `url` with the
    /// shipped Lua script (`config/dovecot/imapmux-push.lua`) and `secret`.
    pub fn lua_push(mut self, url: &str, secret: &str) -> Self {
        self.lua_push = Some((url.to_string(), secret.to_string()));
        self
    }

    /// Serve the doveadm HTTP API on 127.0.0.1 (`doveadm_api_key` set; see
    /// [`Dovecot::doveadm_url`] and [`Dovecot::doveadm_key_file`]).
    pub fn doveadm_http(mut self) -> Self {
        self.doveadm_http = true;
        self
    }

    /// Also serve POP3 (`pop3_port`, and `pop3s_port` with `.tls()`; STLS
    /// on the plain port with `.tls()`). UIDLs are `%08Xu%08Xv`.
    pub fn pop3(mut self) -> Self {
        self.pop3 = true;
        self
    }

    /// Also serve ManageSieve (`sieve_port`; STARTTLS with `.tls()`),
    /// scripts under `~/sieve`.
    pub fn managesieve(mut self) -> Self {
        self.managesieve = true;
        self
    }

    pub fn extra_config(mut self, conf: &str) -> Self {
        self.extra_config.push_str(conf);
        self.extra_config.push('\n');
        self
    }

    /// Start Dovecot; returns once the plaintext port greets with `* OK`
    /// (and the imaps port accepts), with all messages seeded.
    pub fn start(self) -> Dovecot {
        Dovecot::start_from(self)
    }
}

/// Who owns what (root: system users; otherwise: the current user).
pub(super) struct Identity {
    internal_user: String,
    internal_group: String,
    login_user: String,
    mail_uid: u32,
    mail_gid: u32,
    root: bool,
}

fn id_of(args: &[&str]) -> String {
    let out = Command::new("id").args(args).output().expect("run id");
    assert!(
        out.status.success(),
        "`id {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Identity {
    fn detect() -> Identity {
        if super::is_root() {
            for u in ["dovecot", "dovenull"] {
                let ok = Command::new("id")
                    .arg(u)
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false);
                assert!(
                    ok,
                    "system user `{u}` is missing; install Dovecot with `scripts/test`"
                );
            }
            Identity {
                internal_user: "dovecot".into(),
                internal_group: "dovecot".into(),
                login_user: "dovenull".into(),
                mail_uid: id_of(&["-u", "nobody"]).parse().unwrap(),
                mail_gid: id_of(&["-g", "nobody"]).parse().unwrap(),
                root: true,
            }
        } else {
            let me = id_of(&["-un"]);
            Identity {
                internal_user: me.clone(),
                internal_group: id_of(&["-gn"]),
                login_user: me,
                mail_uid: id_of(&["-u"]).parse().unwrap(),
                mail_gid: id_of(&["-g"]).parse().unwrap(),
                root: false,
            }
        }
    }
}

/// A running private Dovecot. Dropping it stops Dovecot and all its children.
pub struct Dovecot {
    dir: tempfile::TempDir,
    port: u16,
    imaps_port: Option<u16>,
    doveadm_port: Option<u16>,
    pop3_port: Option<u16>,
    pop3s_port: Option<u16>,
    sieve_port: Option<u16>,
    users: Vec<(String, String)>,
    conf_path: PathBuf,
    log_path: PathBuf,
    stderr_path: PathBuf,
    rawlog: bool,
    ca: Option<TestCa>,
    cert: Option<CertFiles>,
    ident: Identity,
    child: Option<Child>,
    opts: DovecotBuilder,
}

const START_TIMEOUT: Duration = Duration::from_secs(20);

impl Dovecot {
    /// Start with the defaults (users user1..user5, no messages, no TLS).
    pub fn start() -> Dovecot {
        DovecotBuilder::default().start()
    }

    pub fn builder() -> DovecotBuilder {
        DovecotBuilder::default()
    }

    fn start_from(opts: DovecotBuilder) -> Dovecot {
        require_tool("dovecot");
        require_tool("doveadm");
        let ident = Identity::detect();
        let dir = tempfile::Builder::new()
            .prefix("imapmux-dovecot-")
            .tempdir()
            .expect("create Dovecot temp dir");
        let base = dir.path().to_path_buf();
        make_world_readable_dir(&base);
        for d in ["run", "state", "home", "rawlog"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        let (ca, cert) = if opts.tls {
            let ca = TestCa::new("imapmux test CA (dovecot)");
            let cert = ca.issue_localhost();
            (Some(ca), Some(cert))
        } else {
            (None, None)
        };
        let mut dc = Dovecot {
            conf_path: base.join("dovecot.conf"),
            log_path: base.join("dovecot.log"),
            stderr_path: base.join("dovecot.stderr"),
            port: 0,
            imaps_port: None,
            doveadm_port: None,
            pop3_port: None,
            pop3s_port: None,
            sieve_port: None,
            users: opts.users.clone(),
            rawlog: opts.rawlog,
            ca,
            cert,
            ident,
            child: None,
            dir,
            opts,
        };
        dc.write_users();
        let mut last_err = String::new();
        for _attempt in 0..5 {
            dc.port = free_port();
            dc.imaps_port = dc.opts.tls.then(free_port);
            dc.doveadm_port = dc.opts.doveadm_http.then(free_port);
            dc.pop3_port = dc.opts.pop3.then(free_port);
            dc.pop3s_port = (dc.opts.pop3 && dc.opts.tls).then(free_port);
            dc.sieve_port = dc.opts.managesieve.then(free_port);
            dc.write_config();
            match dc.spawn() {
                Ok(()) => {
                    dc.seed();
                    return dc;
                }
                Err(e) => {
                    let retry = e.contains("Address already in use");
                    last_err = e;
                    if !retry {
                        break;
                    }
                }
            }
        }
        panic!("Dovecot failed to start:\n{last_err}");
    }

    fn chown_mail(&self, p: &Path) {
        if self.ident.root {
            std::os::unix::fs::chown(p, Some(self.ident.mail_uid), Some(self.ident.mail_gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
        }
    }

    fn write_users(&self) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut passwd = String::new();
        for (user, pass) in &self.users {
            let home = self.dir.path().join("home").join(user);
            fs::create_dir_all(&home).unwrap();
            self.chown_mail(&home);
            let raw = self.dir.path().join("rawlog").join(user);
            fs::create_dir_all(&raw).unwrap();
            self.chown_mail(&raw);
            passwd.push_str(&format!(
                "{user}:{{PLAIN.B64}}{}:{}:{}::{}::\n",
                b64.encode(pass.as_bytes()),
                self.ident.mail_uid,
                self.ident.mail_gid,
                home.display()
            ));
        }
        fs::write(self.dir.path().join("passwd"), passwd).unwrap();
    }

    /// Spawn the master and wait for readiness. Err carries logs.
    fn spawn(&mut self) -> Result<(), String> {
        let bin = find_tool("dovecot").expect("dovecot");
        let errf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .unwrap();
        let child = Command::new(bin)
            .arg("-F")
            .arg("-c")
            .arg(&self.conf_path)
            .stdin(Stdio::null())
            .stdout(errf.try_clone().unwrap())
            .stderr(errf)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn dovecot: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "dovecot exited early ({st}).\n{}",
                    self.diagnostics()
                ));
            }
            if self.greets() {
                let imaps_ok = [
                    self.imaps_port,
                    self.doveadm_port,
                    self.pop3_port,
                    self.pop3s_port,
                    self.sieve_port,
                ]
                .into_iter()
                .flatten()
                .all(|p| TcpStream::connect(("127.0.0.1", p)).is_ok());
                if imaps_ok {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill_all();
                return Err(format!(
                    "dovecot not ready after {START_TIMEOUT:?}.\n{}",
                    self.diagnostics()
                ));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn greets(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        while !got.contains(&b'\n') {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let ok = got.starts_with(b"* OK");
        if ok {
            let _ = s.write_all(b"x LOGOUT\r\n");
        }
        ok
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- {} ---\n{}\n--- {} ---\n{}\n--- config ---\n{}",
            self.stderr_path.display(),
            fs::read_to_string(&self.stderr_path).unwrap_or_default(),
            self.log_path.display(),
            self.log(),
            fs::read_to_string(&self.conf_path).unwrap_or_default()
        )
    }

    fn seed(&self) {
        if self.opts.messages == 0 {
            return;
        }
        std::thread::scope(|s| {
            for (user, _) in &self.users {
                s.spawn(move || {
                    for uid in 1..=self.opts.messages {
                        self.deliver(user, &seed_message(user, uid));
                    }
                });
            }
        });
    }

    // ----- accessors -----

    /// Plaintext (and STARTTLS, with `.tls()`) port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// Implicit-TLS port; panics unless built with `.tls()`.
    pub fn imaps_port(&self) -> u16 {
        self.imaps_port.expect("Dovecot built without .tls()")
    }
    /// `127.0.0.1:<imaps port>`.
    pub fn imaps_addr(&self) -> String {
        format!("127.0.0.1:{}", self.imaps_port())
    }
    /// `127.0.0.1:<POP3 port>` (STLS with `.tls()`); panics without `.pop3()`.
    pub fn pop3_addr(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.pop3_port.expect("Dovecot built without .pop3()")
        )
    }
    /// `127.0.0.1:<POP3S port>`; panics without `.pop3().tls()`.
    pub fn pop3s_addr(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.pop3s_port
                .expect("Dovecot built without .pop3().tls()")
        )
    }
    /// `127.0.0.1:<ManageSieve port>`; panics without `.managesieve()`.
    pub fn sieve_addr(&self) -> String {
        format!(
            "127.0.0.1:{}",
            self.sieve_port
                .expect("Dovecot built without .managesieve()")
        )
    }
    /// URL of the doveadm HTTP API; panics without `.doveadm_http()`.
    pub fn doveadm_url(&self) -> String {
        let p = self
            .doveadm_port
            .expect("Dovecot built without .doveadm_http()");
        format!("http://127.0.0.1:{p}/doveadm/v1")
    }
    /// File holding the doveadm API key (its first line).
    pub fn doveadm_key_file(&self) -> PathBuf {
        self.dir.path().join("doveadm-api-key")
    }
    /// CA certificate that signed Dovecot's server cert; panics without `.tls()`.
    pub fn ca_pem_path(&self) -> &Path {
        self.ca
            .as_ref()
            .expect("Dovecot built without .tls()")
            .ca_pem_path()
    }
    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }
    /// (user, password) pairs.
    pub fn users(&self) -> &[(String, String)] {
        &self.users
    }
    /// Password of `user`; panics for unknown users.
    pub fn password(&self, user: &str) -> &str {
        self.users
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("unknown Dovecot user {user:?}"))
    }
    /// Number of messages seeded per user.
    pub fn seeded(&self) -> u32 {
        self.opts.messages
    }
    /// The message seeded as `uid` for `user`.
    pub fn message(&self, user: &str, uid: u32) -> Vec<u8> {
        assert!(
            uid >= 1 && uid <= self.opts.messages,
            "UID {uid} was not seeded"
        );
        seed_message(user, uid)
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
    /// Home directory of `user` (maildir at `<home>/Maildir`).
    pub fn home(&self, user: &str) -> PathBuf {
        self.dir.path().join("home").join(user)
    }
    /// Master process id, when running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    // ----- lifecycle -----

    /// True while the master process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// Stop Dovecot (SIGTERM, then SIGKILL after 10 s); the ports close and
    /// all sessions die — "backend down".
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
        // Whatever is left of the process group (a stuck master or children).
        kill_group(pid, libc::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
        let addr = self.addr();
        super::wait_for_port_closed(&addr, Duration::from_secs(5));
    }

    fn kill_all(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id(), libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again (same config, ports, users and mail) after [`stop`](Self::stop).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if e.contains("Address already in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("Dovecot failed to restart:\n{e}"),
            }
        }
    }

    /// SIGSTOP the whole Dovecot process group: ports still accept TCP (kernel
    /// backlog) but nothing answers — a hung backend. Undo with [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            kill_group(pid, libc::SIGSTOP);
        }
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        if let Some(pid) = self.pid() {
            kill_group(pid, libc::SIGCONT);
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // No need to be graceful: SIGKILL the whole process group at once.
        self.kill_all();
    }
}

fn kill_group(pgid: u32, sig: i32) {
    // SAFETY: kill(2) on the process group we created with process_group(0).
    unsafe {
        libc::kill(-(pgid as libc::pid_t), sig);
    }
}

/// Value of `name=` in a Dovecot log line (up to `,` or whitespace).
pub fn log_field(line: &str, name: &str) -> Option<String> {
    let pat = format!("{name}=");
    let mut rest = line;
    while let Some(i) = rest.find(&pat) {
        let before_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        let v = &rest[i + pat.len()..];
        if before_ok {
            let end = v.find([',', ' ', '\t']).unwrap_or(v.len());
            return Some(v[..end].to_string());
        }
        rest = v;
    }
    None
}
