//! Shared test harness for imapmux integration tests.
//!
//! Use from any integration test with `mod common;`. Real parts only:
//! a private Dovecot per test ([`Dovecot`]), a tokio IMAP client
//! ([`ImapClient`]), the imapmux binary itself ([`Imapmux`]), a test CA
//! ([`TestCa`]), a private OpenLDAP ([`Slapd`]), a private HAProxy
//! ([`Haproxy`]), plus helpers to run
//! `tests/py/imap_client.py` and curl.
//!
//! Nothing here ever skips a test: a missing tool is a panic that says to run
//! `scripts/test`, which installs everything.
#![allow(dead_code, unused_imports)]

pub mod auth_http;
pub mod client;
pub mod client_tls;
pub mod client_types;
pub mod dovecot;
pub mod fronts;
pub mod haproxy;
pub mod messages;
pub mod park;
pub mod proxy;
pub mod slapd;
pub mod tls;

pub use client::{
    astring, literal_len, quoted, tcp_connect_from, ImapClient, Line, LineRead, Response,
    TlsClient, DEFAULT_TIMEOUT,
};
pub use dovecot::{log_field, Dovecot, DovecotBuilder};
pub use haproxy::Haproxy;
pub use messages::{seed_message, sized_message};
pub use park::{
    direct, flag_expunge_append, idling, normalized, setup, setup_full, setup_with, Setup,
};
pub use proxy::{
    hash_password, imapmux_bin, imapmux_command, proxy_config, toml_str, BackendCfg, Imapmux,
    ListenerCfg, PoolCfg, ProxyConfig,
};
pub use slapd::{LdapUser, Slapd, SlapdBuilder};
pub use tls::{CertFiles, TestCa};

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Root of the repository (the crate's manifest dir).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of a script in `tests/py/`.
pub fn py_script(name: &str) -> PathBuf {
    repo_root().join("tests").join("py").join(name)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Ports come from 20000..32000, below Linux's ephemeral range (32768+), so
/// they never collide with the source ports of the many outgoing connections
/// tests make; a port is never handed out twice by one test process.
pub fn free_port() -> u16 {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LO: u32 = 20000;
    const SPAN: u32 = 12000;
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let _ = NEXT.compare_exchange(0, (seed % SPAN) + 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(97, Ordering::SeqCst);
        let port = (LO + n % SPAN) as u16;
        let mut used = USED.lock().unwrap();
        let used = used.get_or_insert_with(HashSet::new);
        if used.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            used.insert(port);
            return port;
        }
    }
    panic!("no free TCP port found on 127.0.0.1");
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Wait until `addr` accepts a TCP connection. Returns false on timeout.
pub fn wait_for_port(addr: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let sa = match addr.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(sa) => sa,
        None => panic!("bad socket address {addr:?}"),
    };
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&sa, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Wait until nothing accepts on `addr` any more. Returns false on timeout.
pub fn wait_for_port_closed(addr: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Poll `f` every 25 ms until it returns Some or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Find an executable in PATH or the sbin directories (which a non-root PATH
/// may lack).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Like [`find_tool`] but panics with an install hint.
pub fn require_tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "required tool `{name}` is not installed. Run `scripts/test` (it installs \
             dovecot-imapd, dovecot-core, curl, python3, haproxy… via apt-get) and retry."
        )
    })
}

/// Give `dir` mode 0755 so unprivileged Dovecot processes can traverse it.
pub fn make_world_readable_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod 755 {}: {e}", dir.display()));
}

/// True when the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Send `sig` (e.g. `libc::SIGTERM`) to process `pid`. Returns false if the
/// process does not exist.
pub fn send_signal_to(pid: u32, sig: i32) -> bool {
    // SAFETY: plain kill(2) on a pid we spawned.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// Run `python3 tests/py/<script> <args…>` and return its output
/// (never panics on a non-zero exit; assert on `status`/stdout yourself).
pub fn run_python(script: &str, args: &[&str]) -> Output {
    let python = require_tool("python3");
    Command::new(python)
        .arg(py_script(script))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running python3 {script}: {e}"))
}

/// Run `tests/py/imap_client.py` with `args`; panic (with its stdout and
/// stderr) unless it exits 0. Returns stdout.
pub fn py_client_ok(args: &[&str]) -> String {
    let out = run_python("imap_client.py", args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "imap_client.py {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// Run `curl -sS --max-time 30 <args…>` and return its output.
pub fn run_curl(args: &[&str]) -> Output {
    let curl = require_tool("curl");
    Command::new(curl)
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running curl: {e}"))
}

/// Show bytes for an assertion message: lossy UTF-8, CR/LF made visible,
/// truncated to `max` characters.
pub fn show_bytes(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(b)
        .replace('\r', "\\r")
        .replace('\n', "\\n\n");
    if s.chars().count() > max {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}… ({} bytes total)", b.len())
    } else {
        s
    }
}

/// One sample of an imapmux admin server's /metrics: the value of the
/// series written exactly as `name{labels}` (or `name`). Panics with the
/// scrape when it is missing.
pub fn admin_metric(admin: &str, series: &str) -> f64 {
    let out = run_curl(&[&format!("http://{admin}/metrics")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
}

/// Wait until [`admin_metric`] reads `want`.
pub fn wait_admin_metric(admin: &str, series: &str, want: f64, timeout: Duration) {
    let ok = wait_until(timeout, || {
        (admin_metric(admin, series) == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "{series} never became {want} (is {})",
        admin_metric(admin, series)
    );
}
