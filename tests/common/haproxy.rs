//! A private HAProxy (Debian package `haproxy`, installed by
//! `scripts/install-deps`) as a TCP balancer: one frontend on 127.0.0.1,
//! round robin over the given servers, each sent a PROXY protocol v2
//! header. Runs in the foreground (`-db`) and is killed on drop.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_addr, require_tool, wait_for_port};

pub struct Haproxy {
    dir: tempfile::TempDir,
    addr: String,
    child: Child,
}

impl Haproxy {
    /// Balance `servers` (`HOST:PORT`) round robin behind a new address.
    pub fn start(servers: &[&str]) -> Haproxy {
        let bin = require_tool("haproxy");
        let dir = tempfile::Builder::new()
            .prefix("imapmux-haproxy-")
            .tempdir()
            .expect("create haproxy temp dir");
        let addr = free_addr();
        let mut cfg = format!(
            "global\n    maxconn 4096\n\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\n\
             frontend imap\n    bind {addr}\n    default_backend replicas\n\n\
             backend replicas\n    balance roundrobin\n"
        );
        for (i, s) in servers.iter().enumerate() {
            cfg.push_str(&format!("    server r{i} {s} send-proxy-v2\n"));
        }
        let path = dir.path().join("haproxy.cfg");
        fs::write(&path, &cfg).expect("write haproxy.cfg");
        let check = Command::new(&bin)
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy -c refused:\n{cfg}\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = fs::File::create(dir.path().join("haproxy.log")).expect("create log");
        let child = Command::new(&bin)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let h = Haproxy { dir, addr, child };
        assert!(
            wait_for_port(&h.addr, Duration::from_secs(10)),
            "haproxy not accepting on {}; log:\n{}",
            h.addr,
            h.log()
        );
        h
    }

    /// The balanced address clients connect to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
