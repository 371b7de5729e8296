//! Front-door hardening with the real binary and a real Dovecot: idle or
//! slowloris connections to the admin port cannot starve /healthz and
//! /readyz.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------
// Admin port: probes answer while idle connections pile up
// ---------------------------------------------------------------------------

/// `GET path` with `Connection: close`, everything within `limit`:
/// (status, body, time taken). Status 0 when nothing came back in time.
fn probe(addr: &str, path: &str, limit: Duration) -> (u16, String, Duration) {
    let t0 = Instant::now();
    let sa = addr.parse().unwrap();
    let Ok(mut s) = TcpStream::connect_timeout(&sa, limit) else {
        return (0, "connect failed".into(), t0.elapsed());
    };
    s.set_read_timeout(Some(limit)).unwrap();
    s.set_write_timeout(Some(limit)).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, "write failed".into(), t0.elapsed());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string(), t0.elapsed())
}

/// TCP connections the process `pid` holds on local port `port` (not
/// counting its listening socket): its socket file descriptors matched
/// against /proc/net/tcp and tcp6.
fn process_connections(pid: u32, port: u16) -> usize {
    let mut inodes = HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(t) = std::fs::read_link(e.path()) {
            let t = t.to_string_lossy().into_owned();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(n.to_string());
            }
        }
    }
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for row in text.lines().skip(1) {
            let f: Vec<&str> = row.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let listening = f[3] == "0A";
            if local_port == Some(port) && !listening && inodes.contains(f[9]) {
                n += 1;
            }
        }
    }
    n
}

/// Has the server closed this client socket (EOF or reset)?
fn closed_by_server(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    let r = match (&mut &*s).read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    s.set_nonblocking(false).unwrap();
    r
}

#[test]
fn admin_probes_answer_while_idle_connections_pile_up() {
    // imapmux::admin::MAX_CONNECTIONS.
    const ADMIN_MAX: usize = 64;
    let dovecot = Dovecot::start();
    let (addr, admin) = (free_addr(), free_addr());
    let admin_port: u16 = admin.rsplit(':').next().unwrap().parse().unwrap();
    let cfg = ProxyConfig::new()
        .listener(&addr, "starttls")
        .admin(&admin)
        .backend(BackendCfg::new("b1", &dovecot.addr()));
    let p = Imapmux::start(&cfg.to_toml(), &addr);
    let pid = p.pid().unwrap();
    let ready = wait_until(Duration::from_secs(10), || {
        (probe(&admin, "/readyz", Duration::from_secs(2)).0 == 200).then_some(())
    });
    assert!(ready.is_some(), "never ready; log:\n{}", p.log());

    // 200 idle connections and 20 that send part of a request head and
    // stall, all kept open by this test.
    let sa = admin.parse().unwrap();
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect_timeout(&sa, Duration::from_secs(5)).unwrap())
        .collect();
    for _ in 0..20 {
        let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(5)).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        idle.push(s);
    }
    let mut worst = Duration::ZERO;
    let mut most_open = 0;
    for round in 0..10 {
        for (path, body) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
            let (status, got, took) = probe(&admin, path, Duration::from_secs(1));
            assert_eq!(
                (status, got.as_str()),
                (200, body),
                "round {round} {path} after {took:?}"
            );
            assert!(
                took < Duration::from_secs(1),
                "round {round} {path}: {took:?}"
            );
            worst = worst.max(took);
        }
        // Bounded at every moment: ADMIN_MAX, plus connections whose
        // eviction (or the probe's close) a busy machine has not run yet —
        // at most the 10 opened since the last round and the probe.
        let open = process_connections(pid, admin_port);
        most_open = most_open.max(open);
        assert!(
            open <= ADMIN_MAX + 11,
            "round {round}: {open} admin connections open"
        );
        // ...and settling at ADMIN_MAX, however many more arrive.
        let settled = wait_until(Duration::from_secs(10), || {
            let n = process_connections(pid, admin_port);
            (n <= ADMIN_MAX).then_some(n)
        });
        assert!(
            settled.is_some(),
            "round {round}: {} admin connections open",
            process_connections(pid, admin_port)
        );
        // More idle connections keep arriving.
        for _ in 0..10 {
            idle.push(TcpStream::connect_timeout(&sa, Duration::from_secs(5)).unwrap());
        }
    }
    // The server made room by closing the connections idle longest: all
    // but at most ADMIN_MAX of ours are closed (the newest ones).
    let total = idle.len();
    let closed = wait_until(Duration::from_secs(5), || {
        let n = idle.iter().filter(|s| closed_by_server(s)).count();
        (n >= total - ADMIN_MAX).then_some(n)
    });
    assert!(
        closed.is_some(),
        "only {} of {total} idle connections closed",
        idle.iter().filter(|s| closed_by_server(s)).count()
    );
    eprintln!(
        "admin: {total} idle/slow connections, slowest probe {worst:?}, at most {most_open} open in the process right after a probe, {} closed",
        closed.unwrap()
    );
}
