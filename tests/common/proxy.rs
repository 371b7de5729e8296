//! The imapmux binary as a fixture, and writers for its TOML config.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{send_signal_to, wait_for_port};

/// Path of the imapmux binary built by cargo for these tests, or the one
/// `IMAPMUX_TEST_BIN` names (e.g. `target/release/imapmux`, to measure the
/// release binary with the same tests).
pub fn imapmux_bin() -> PathBuf {
    match std::env::var_os("IMAPMUX_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_imapmux")),
    }
}

/// A `Command` for the imapmux binary (for one-shot subcommands).
pub fn imapmux_command() -> Command {
    Command::new(imapmux_bin())
}

/// A running `imapmux run --config <file>`; killed on drop.
pub struct Imapmux {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    status: Option<ExitStatus>,
}

pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

impl Imapmux {
    /// Write `config_toml`, spawn the proxy and wait until `wait_addr`
    /// accepts TCP (10 s). Panics with the proxy's log otherwise.
    pub fn start(config_toml: &str, wait_addr: &str) -> Imapmux {
        let mut p = Self::spawn(config_toml);
        p.wait_ready(wait_addr, READY_TIMEOUT);
        p
    }

    /// Spawn without waiting (e.g. to test a config error).
    pub fn spawn(config_toml: &str) -> Imapmux {
        Self::spawn_with(config_toml, &[], &[])
    }

    /// Spawn with extra arguments after `run --config <path>` and extra
    /// environment. `IMAPMUX_LOG` (the binary's log filter) defaults to
    /// `info,imapmux=debug` unless set in the test's environment or in `envs`.
    pub fn spawn_with(config_toml: &str, extra_args: &[&str], envs: &[(&str, &str)]) -> Imapmux {
        let dir = tempfile::Builder::new()
            .prefix("imapmux-proxy-")
            .tempdir()
            .expect("create proxy temp dir");
        let config_path = dir.path().join("imapmux.toml");
        fs::write(&config_path, config_toml).expect("write config");
        let log_path = dir.path().join("imapmux.log");
        let log = fs::File::create(&log_path).expect("create log");
        let mut cmd = Command::new(imapmux_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .env("RUST_BACKTRACE", "1");
        if std::env::var_os("IMAPMUX_LOG").is_none() {
            cmd.env("IMAPMUX_LOG", "info,imapmux=debug");
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", imapmux_bin().display()));
        Imapmux {
            dir,
            config_path,
            log_path,
            child: Some(child),
            status: None,
        }
    }

    /// Wait until `addr` accepts; panics with the log on timeout or exit.
    pub fn wait_ready(&mut self, addr: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.try_status() {
                panic!(
                    "imapmux exited ({st}) before {addr} accepted; log:\n{}",
                    self.log()
                );
            }
            if wait_for_port(addr, Duration::from_millis(100)) {
                return;
            }
        }
        panic!(
            "imapmux not accepting on {addr} after {timeout:?}; log:\n{}",
            self.log()
        );
    }

    /// Everything the process wrote to stdout and stderr.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        super::wait_until(timeout, || self.log().contains(needle).then_some(())).is_some()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
    /// Temp dir of this instance (config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Rewrite the config file (e.g. before sending SIGHUP, if supported).
    pub fn rewrite_config(&self, config_toml: &str) {
        fs::write(&self.config_path, config_toml).expect("rewrite config");
    }

    /// Send a signal (`libc::SIGTERM`, `libc::SIGINT`, `libc::SIGHUP`, …).
    pub fn send_signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            send_signal_to(pid, sig);
        }
    }

    pub fn sigterm(&self) {
        self.send_signal(libc::SIGTERM);
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.status = c.try_wait().ok().flatten();
            }
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_status().is_none()
    }

    /// Wait for the process to exit; None if it is still running after
    /// `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if self.status.is_none() {
                let _ = c.kill();
                self.status = c.wait().ok();
            }
        }
    }
}

impl Drop for Imapmux {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() && std::env::var_os("IMAPMUX_TEST_SHOW_LOG").is_some() {
            eprintln!("---- imapmux log ----\n{}", self.log());
        }
    }
}

// ---------------------------------------------------------------------------
// Config writer
// ---------------------------------------------------------------------------

/// TOML basic string with escapes.
pub fn toml_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn path_str(p: &Path) -> String {
    toml_str(&p.display().to_string())
}

#[derive(Debug, Clone)]
pub struct ListenerCfg {
    pub address: String,
    /// "starttls" | "implicit" | "plaintext"
    pub mode: String,
    /// "imap" (not written) | "pop3" | "sieve"
    pub protocol: String,
}

impl ListenerCfg {
    pub fn new(address: &str, mode: &str) -> ListenerCfg {
        ListenerCfg {
            address: address.into(),
            mode: mode.into(),
            protocol: "imap".into(),
        }
    }
}

/// One `[[pool.backend]]`.
#[derive(Debug, Clone)]
pub struct BackendCfg {
    pub name: String,
    pub address: String,
    /// "none" | "starttls" | "implicit"
    pub tls: String,
    pub weight: u32,
    pub trusted: bool,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    pub server_name: Option<String>,
    /// `doveadm_url` and `doveadm_api_key_file`.
    pub doveadm: Option<(String, PathBuf)>,
    /// `pop3_address`
    pub pop3: Option<String>,
    /// `sieve_address`
    pub sieve: Option<String>,
}

impl BackendCfg {
    /// Plaintext, weight 1, trusted, no CA.
    pub fn new(name: &str, address: &str) -> BackendCfg {
        BackendCfg {
            name: name.into(),
            address: address.into(),
            tls: "none".into(),
            weight: 1,
            trusted: true,
            ca_file: None,
            insecure: false,
            server_name: None,
            doveadm: None,
            pop3: None,
            sieve: None,
        }
    }
    /// The backend's POP3 service (`pop3_address`).
    pub fn pop3(mut self, address: &str) -> Self {
        self.pop3 = Some(address.into());
        self
    }
    /// The backend's ManageSieve service (`sieve_address`).
    pub fn sieve(mut self, address: &str) -> Self {
        self.sieve = Some(address.into());
        self
    }
    /// Poll parked clients' mailboxes through Dovecot's doveadm HTTP API
    /// (see [`crate::common::DovecotBuilder::doveadm_http`]).
    pub fn doveadm(mut self, url: &str, key_file: impl AsRef<Path>) -> Self {
        self.doveadm = Some((url.into(), key_file.as_ref().to_path_buf()));
        self
    }
    /// "none" | "starttls" | "implicit"
    pub fn tls(mut self, mode: &str) -> Self {
        self.tls = mode.into();
        self
    }
    pub fn ca_file(mut self, p: impl AsRef<Path>) -> Self {
        self.ca_file = Some(p.as_ref().to_path_buf());
        self
    }
    pub fn weight(mut self, w: u32) -> Self {
        self.weight = w;
        self
    }
    pub fn trusted(mut self, t: bool) -> Self {
        self.trusted = t;
        self
    }
    pub fn insecure(mut self) -> Self {
        self.insecure = true;
        self
    }
    pub fn server_name(mut self, n: &str) -> Self {
        self.server_name = Some(n.into());
        self
    }
}

/// One `[[pool]]`.
#[derive(Debug, Clone)]
pub struct PoolCfg {
    pub name: String,
    pub failover: bool,
    pub backends: Vec<BackendCfg>,
}

impl PoolCfg {
    pub fn new(name: &str, backends: Vec<BackendCfg>) -> PoolCfg {
        PoolCfg {
            name: name.into(),
            failover: true,
            backends,
        }
    }
    pub fn failover(mut self, f: bool) -> Self {
        self.failover = f;
        self
    }
}

/// The whole imapmux config; [`to_toml`](Self::to_toml) renders it.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub allow_plaintext_auth: bool,
    /// `[server] sasl_oauth` (written only when true).
    pub sasl_oauth: bool,
    pub max_connections: u32,
    /// Further (key, raw TOML value) lines under `[server]`, in order.
    pub server_keys: Vec<(String, String)>,
    /// (key, humantime value) under `[timeouts]`, in order.
    pub timeouts: Vec<(String, String)>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub self_signed: bool,
    pub listeners: Vec<ListenerCfg>,
    pub admin: Option<String>,
    /// Further (key, raw TOML value) lines under `[admin]` (with `admin`).
    pub admin_keys: Vec<(String, String)>,
    /// Further (key, raw TOML value) lines under `[routing]`.
    pub routing_keys: Vec<(String, String)>,
    /// interval, timeout, fall, rise
    pub health: Option<(String, String, u32, u32)>,
    pub default_pool: String,
    pub user_routes: Vec<(String, String)>,
    pub pools: Vec<PoolCfg>,
    /// Raw TOML appended at the end.
    pub extra: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            allow_plaintext_auth: false,
            sasl_oauth: false,
            max_connections: 10000,
            server_keys: Vec::new(),
            timeouts: [
                ("preauth", "60s"),
                ("idle", "30m"),
                ("backend_connect", "5s"),
                ("backend_response", "15s"),
                ("drain", "30s"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            cert_file: None,
            key_file: None,
            self_signed: true,
            listeners: Vec::new(),
            admin: None,
            admin_keys: Vec::new(),
            routing_keys: Vec::new(),
            health: Some(("1s".into(), "2s".into(), 1, 1)),
            default_pool: "default".into(),
            user_routes: Vec::new(),
            pools: Vec::new(),
            extra: String::new(),
        }
    }
}

impl ProxyConfig {
    /// Defaults: self-signed TLS, no listeners, no pools, health every 1 s.
    pub fn new() -> ProxyConfig {
        ProxyConfig::default()
    }
    pub fn listener(mut self, address: &str, mode: &str) -> Self {
        self.listeners.push(ListenerCfg::new(address, mode));
        self
    }
    /// A listener for `protocol` ("pop3", "sieve").
    pub fn listener_for(mut self, protocol: &str, address: &str, mode: &str) -> Self {
        let mut l = ListenerCfg::new(address, mode);
        l.protocol = protocol.into();
        self.listeners.push(l);
        self
    }
    /// Use a certificate chain + key instead of the self-signed demo cert.
    pub fn tls_files(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.cert_file = Some(cert.as_ref().into());
        self.key_file = Some(key.as_ref().into());
        self.self_signed = false;
        self
    }
    pub fn self_signed(mut self, on: bool) -> Self {
        self.self_signed = on;
        self
    }
    pub fn allow_plaintext_auth(mut self, on: bool) -> Self {
        self.allow_plaintext_auth = on;
        self
    }
    /// Offer AUTHENTICATE OAUTHBEARER and XOAUTH2.
    pub fn sasl_oauth(mut self, on: bool) -> Self {
        self.sasl_oauth = on;
        self
    }
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }
    /// Add `[server] key = value` (`value` is raw TOML, e.g.
    /// `server_key("max_preauth_per_ip", "5")`).
    pub fn server_key(mut self, key: &str, value: &str) -> Self {
        self.server_keys.push((key.into(), value.into()));
        self
    }
    /// Many clients from one address: no per-address or per-(user,
    /// address) limit (`max_preauth_per_ip = 0`,
    /// `max_sessions_per_user_ip = 0`).
    pub fn no_address_limits(self) -> Self {
        self.server_key("max_preauth_per_ip", "0")
            .server_key("max_sessions_per_user_ip", "0")
    }
    /// Set `[timeouts] key = "value"` (e.g. `timeout("preauth", "2s")`).
    pub fn timeout(mut self, key: &str, value: &str) -> Self {
        match self.timeouts.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value.into(),
            None => self.timeouts.push((key.into(), value.into())),
        }
        self
    }
    /// A `key = value` line (raw TOML value) under `[admin]`.
    pub fn admin_key(mut self, key: &str, value: &str) -> Self {
        self.admin_keys.push((key.into(), value.into()));
        self
    }
    /// A `key = value` line (raw TOML value) under `[routing]`.
    pub fn routing_key(mut self, key: &str, value: &str) -> Self {
        self.routing_keys.push((key.into(), value.into()));
        self
    }
    pub fn admin(mut self, address: &str) -> Self {
        self.admin = Some(address.into());
        self
    }
    pub fn health(mut self, interval: &str, timeout: &str, fall: u32, rise: u32) -> Self {
        self.health = Some((interval.into(), timeout.into(), fall, rise));
        self
    }
    pub fn no_health(mut self) -> Self {
        self.health = None;
        self
    }
    /// Add a backend to the pool named `default_pool` (created if needed).
    pub fn backend(mut self, b: BackendCfg) -> Self {
        let name = self.default_pool.clone();
        match self.pools.iter_mut().find(|p| p.name == name) {
            Some(p) => p.backends.push(b),
            None => self.pools.push(PoolCfg::new(&name, vec![b])),
        }
        self
    }
    pub fn pool(mut self, p: PoolCfg) -> Self {
        self.pools.push(p);
        self
    }
    pub fn default_pool(mut self, name: &str) -> Self {
        self.default_pool = name.into();
        self
    }
    /// Static `[routing.users] user = backend`.
    pub fn route(mut self, user: &str, backend: &str) -> Self {
        self.user_routes.push((user.into(), backend.into()));
        self
    }
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    pub fn to_toml(&self) -> String {
        let mut o = String::new();
        let w = &mut o;
        let _ = writeln!(w, "[server]");
        let _ = writeln!(w, "allow_plaintext_auth = {}", self.allow_plaintext_auth);
        if self.sasl_oauth {
            let _ = writeln!(w, "sasl_oauth = true");
        }
        let _ = writeln!(w, "max_connections = {}", self.max_connections);
        for (k, v) in &self.server_keys {
            let _ = writeln!(w, "{k} = {v}");
        }
        let _ = writeln!(w);
        let _ = writeln!(w, "[timeouts]");
        for (k, v) in &self.timeouts {
            let _ = writeln!(w, "{k} = {}", toml_str(v));
        }
        let _ = writeln!(w, "\n[tls]");
        if let Some(c) = &self.cert_file {
            let _ = writeln!(w, "cert_file = {}", path_str(c));
        }
        if let Some(k) = &self.key_file {
            let _ = writeln!(w, "key_file = {}", path_str(k));
        }
        let _ = writeln!(w, "self_signed = {}", self.self_signed);
        for l in &self.listeners {
            let _ = writeln!(w, "\n[[listener]]");
            let _ = writeln!(w, "address = {}", toml_str(&l.address));
            let _ = writeln!(w, "mode = {}", toml_str(&l.mode));
            if l.protocol != "imap" {
                let _ = writeln!(w, "protocol = {}", toml_str(&l.protocol));
            }
        }
        if let Some(a) = &self.admin {
            let _ = writeln!(w, "\n[admin]\naddress = {}", toml_str(a));
            for (k, v) in &self.admin_keys {
                let _ = writeln!(w, "{k} = {v}");
            }
        }
        if let Some((interval, timeout, fall, rise)) = &self.health {
            let _ = writeln!(
                w,
                "\n[health]\ninterval = {}\ntimeout = {}\nfall = {fall}\nrise = {rise}",
                toml_str(interval),
                toml_str(timeout)
            );
        }
        let _ = writeln!(w, "\n[routing]");
        let _ = writeln!(w, "default_pool = {}", toml_str(&self.default_pool));
        for (k, v) in &self.routing_keys {
            let _ = writeln!(w, "{k} = {v}");
        }
        if !self.user_routes.is_empty() {
            let _ = writeln!(w, "\n[routing.users]");
            for (u, b) in &self.user_routes {
                let _ = writeln!(w, "{} = {}", toml_str(u), toml_str(b));
            }
        }
        for p in &self.pools {
            let _ = writeln!(w, "\n[[pool]]");
            let _ = writeln!(w, "name = {}", toml_str(&p.name));
            let _ = writeln!(w, "failover = {}", p.failover);
            for b in &p.backends {
                let _ = writeln!(w, "\n[[pool.backend]]");
                let _ = writeln!(w, "name = {}", toml_str(&b.name));
                let _ = writeln!(w, "address = {}", toml_str(&b.address));
                let _ = writeln!(w, "tls = {}", toml_str(&b.tls));
                let _ = writeln!(w, "weight = {}", b.weight);
                let _ = writeln!(w, "trusted = {}", b.trusted);
                if let Some(ca) = &b.ca_file {
                    let _ = writeln!(w, "ca_file = {}", path_str(ca));
                }
                let _ = writeln!(w, "insecure = {}", b.insecure);
                if let Some(sn) = &b.server_name {
                    let _ = writeln!(w, "server_name = {}", toml_str(sn));
                }
                if let Some(a) = &b.pop3 {
                    let _ = writeln!(w, "pop3_address = {}", toml_str(a));
                }
                if let Some(a) = &b.sieve {
                    let _ = writeln!(w, "sieve_address = {}", toml_str(a));
                }
                if let Some((url, key)) = &b.doveadm {
                    let _ = writeln!(w, "doveadm_url = {}", toml_str(url));
                    let _ = writeln!(w, "doveadm_api_key_file = {}", path_str(key));
                }
            }
        }
        if !self.extra.is_empty() {
            let _ = writeln!(w, "\n{}", self.extra);
        }
        o
    }
}

/// Quick config: the given `(address, mode)` listeners, all `backends` in
/// pool "default", self-signed TLS, plaintext auth allowed only when every
/// listener is plaintext.
pub fn proxy_config(listeners: &[(&str, &str)], backends: &[BackendCfg]) -> String {
    let mut c = ProxyConfig::new();
    for (a, m) in listeners {
        c = c.listener(a, m);
    }
    for b in backends {
        c = c.backend(b.clone());
    }
    c.allow_plaintext_auth =
        !listeners.is_empty() && listeners.iter().all(|(_, m)| *m == "plaintext");
    c.to_toml()
}

/// `imapmux hash-password --scheme SCHEME` of `password` (the real binary).
pub fn hash_password(scheme: &str, password: &str) -> String {
    use std::io::Write;
    let mut child = imapmux_command()
        .args(["hash-password", "--scheme", scheme])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run imapmux hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("imapmux hash-password");
    assert!(out.status.success(), "imapmux hash-password failed");
    String::from_utf8(out.stdout)
        .expect("UTF-8 hash")
        .trim()
        .to_string()
}
