//! Dovecot fixture: logs, rawlog and mail helpers.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::super::require_tool;
use super::{log_field, Dovecot};

impl Dovecot {
    // ----- logs -----

    /// Whole Dovecot log (master, login, imap, auth).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Wait until a log line contains `needle`; returns that line.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        super::super::wait_until(timeout, || {
            self.log()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string)
        })
    }

    /// `imap-login: Login: user=<user>, …` lines, oldest first.
    pub fn login_lines(&self, user: &str) -> Vec<String> {
        let needle = format!("Login: user=<{user}>");
        self.log()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// The `rip=` (remote IP as Dovecot saw it) of each login of `user`.
    pub fn login_rips(&self, user: &str) -> Vec<String> {
        self.login_lines(user)
            .iter()
            .filter_map(|l| log_field(l, "rip"))
            .collect()
    }

    /// Wait until `user` has logged in at least `count` times; returns all
    /// of `user`'s `Login:` lines so far (oldest first; take fields with
    /// [`log_field`](super::log_field), e.g. `rip`, `session`). Panics with
    /// the log on timeout.
    pub fn wait_for_logins(&self, user: &str, count: usize, timeout: Duration) -> Vec<String> {
        super::super::wait_until(timeout, || {
            let lines = self.login_lines(user);
            (lines.len() >= count).then_some(lines)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {count} logins of {user} within {timeout:?}; log:\n{}",
                self.log()
            )
        })
    }

    // ----- rawlog -----

    /// Directory with `<date>-<pid>.<n>.in/.out` files of `user`'s sessions.
    pub fn rawlog_dir(&self, user: &str) -> PathBuf {
        assert!(self.rawlog, "Dovecot built without .rawlog()");
        self.dir.path().join("rawlog").join(user)
    }
    fn rawlog_cat(&self, user: &str, ext: &str) -> String {
        let mut files: Vec<PathBuf> = fs::read_dir(self.rawlog_dir(user))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == ext));
        files.sort();
        let mut out = Vec::new();
        for f in files {
            out.extend(fs::read(f).unwrap_or_default());
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    /// Everything `user`'s IMAP sessions received after login (all sessions,
    /// oldest first). Dovecot prefixes each line with a `<unix time> ` stamp.
    pub fn rawlog_in(&self, user: &str) -> String {
        self.rawlog_cat(user, "in")
    }
    /// Everything `user`'s IMAP sessions sent after login.
    pub fn rawlog_out(&self, user: &str) -> String {
        self.rawlog_cat(user, "out")
    }
    /// Number of post-login sessions recorded for `user`.
    pub fn rawlog_sessions(&self, user: &str) -> usize {
        fs::read_dir(self.rawlog_dir(user))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "in"))
                    .count()
            })
            .unwrap_or(0)
    }

    // ----- mail -----

    /// Run `doveadm -c <conf> <args…>`.
    pub fn doveadm(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(require_tool("doveadm"))
            .arg("-c")
            .arg(&self.conf_path)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn doveadm");
        if let Some(data) = stdin {
            let mut si = child.stdin.take().unwrap();
            si.write_all(data).expect("write doveadm stdin");
        }
        child.wait_with_output().expect("doveadm output")
    }

    /// Store `msg` in `user`'s INBOX (like a delivery; IDLE sessions see it).
    pub fn deliver(&self, user: &str, msg: &[u8]) {
        self.deliver_to(user, "INBOX", msg)
    }

    /// Store `msg` in `user`'s `mailbox`.
    pub fn deliver_to(&self, user: &str, mailbox: &str, msg: &[u8]) {
        let out = self.doveadm(&["save", "-u", user, "-m", mailbox], Some(msg));
        assert!(
            out.status.success(),
            "doveadm save -u {user} -m {mailbox} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Number of messages in `user`'s `mailbox` (doveadm mailbox status).
    pub fn message_count(&self, user: &str, mailbox: &str) -> u32 {
        let out = self.doveadm(
            &[
                "-f", "flow", "mailbox", "status", "-u", user, "messages", mailbox,
            ],
            None,
        );
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "doveadm mailbox status failed: {s}");
        log_field(s.trim(), "messages")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse doveadm output {s:?}"))
    }
}
