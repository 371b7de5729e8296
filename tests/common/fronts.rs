//! Helpers of the POP3 and ManageSieve front tests (tests/front_*.rs).

use std::process::{Command, Output, Stdio};

use super::{require_tool, run_python, show_bytes, BackendCfg, Dovecot};

/// Run `python3 -c code args…`.
pub fn python(code: &str, args: &[&str]) -> Output {
    Command::new(require_tool("python3"))
        .arg("-c")
        .arg(code)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run python3")
}

/// [`python`], which must succeed; its stdout.
pub fn python_ok(code: &str, args: &[&str]) -> String {
    let out = python(code, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The raw bytes of `cmds`' responses after a USER/PASS login
/// (tests/py/pop3_raw.py; `mode`: plain, implicit, stls).
pub fn pop3_raw(addr: &str, mode: &str, user: &str, pw: &str, cmds: &[&str]) -> Vec<u8> {
    let mut args = vec![addr, mode, user, pw];
    args.extend_from_slice(cmds);
    let out = run_python("pop3_raw.py", &args);
    assert!(
        out.status.success(),
        "pop3_raw.py {args:?}: {}\n{}",
        show_bytes(&out.stdout, 400),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `dc` as a backend with its POP3 service.
pub fn pop3_backend(dc: &Dovecot) -> BackendCfg {
    BackendCfg::new("dovecot", &dc.addr()).pop3(&dc.pop3_addr())
}
