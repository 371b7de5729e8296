//! Process memory from /proc (Linux): RSS from `/proc/PID/status`
//! (`VmRSS`), PSS from `/proc/PID/smaps_rollup` (`Pss`).

use serde::Serialize;

/// Summed memory of a set of processes, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemSample {
    pub processes: u64,
    pub rss_kb: u64,
    pub pss_kb: u64,
}

/// Value in kB of the line starting with `key` (e.g. `VmRSS:`).
pub fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// RSS and PSS of one process; `None` if it is gone or unreadable.
pub fn process(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = kb_field(&status, "VmRSS:").unwrap_or(0);
    let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| kb_field(&t, "Pss:"))
        .unwrap_or(0);
    Some((rss, pss))
}

/// Every `kB` field of `/proc/PID/smaps_rollup` (Rss, Pss, Pss_Anon,
/// Pss_File, Anonymous, …), summed over `pids`: where a process's memory is.
pub fn smaps_rollup(pids: &[u32]) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for pid in pids {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(key), Some(n), Some("kB")) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if let (Some(key), Ok(n)) = (key.strip_suffix(':'), n.parse::<u64>()) {
                *out.entry(key.to_string()).or_insert(0) += n;
            }
        }
    }
    out
}

/// Pids whose `/proc/PID/comm` is exactly `name` (comm is at most 15
/// bytes, so `name` is compared after truncation to 15 bytes).
pub fn pids_by_comm(name: &str) -> Vec<u32> {
    let want = &name.as_bytes()[..name.len().min(15)];
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(comm) = std::fs::read(format!("/proc/{pid}/comm")) {
            let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
            if comm == want {
                out.push(pid);
            }
        }
    }
    out.sort_unstable();
    out
}

/// `comm` and process group of a `/proc/PID/stat` text.
pub fn parse_stat(text: &str) -> Option<(&str, u32)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?;
    // After ") ": state, ppid, pgrp, …
    let mut fields = text.get(close + 2..)?.split_ascii_whitespace();
    let pgrp = fields.nth(2)?.parse().ok()?;
    Some((comm, pgrp))
}

/// Pids named `name` (as [`pids_by_comm`]) and, with `pgid`, only those of
/// that process group (one private server instance among others on the
/// machine: its master was started in a new session, its children stay in
/// its group).
pub fn pids_by_comm_in(name: &str, pgid: Option<u32>) -> Vec<u32> {
    let Some(pgid) = pgid else {
        return pids_by_comm(name);
    };
    let want = &name[..name.len().min(15)];
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if parse_stat(&stat) == Some((want, pgid)) {
                out.push(pid);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Sum over `pids` (processes that vanished are skipped).
pub fn sample(pids: &[u32]) -> MemSample {
    let mut s = MemSample::default();
    for &pid in pids {
        if let Some((rss, pss)) = process(pid) {
            s.processes += 1;
            s.rss_kb += rss;
            s.pss_kb += pss;
        }
    }
    s
}

/// Before/during measurement of one process group.
#[derive(Debug, Clone, Serialize)]
pub struct MemReport {
    pub what: String,
    pub pids: Vec<u32>,
    pub before: MemSample,
    pub during: MemSample,
    pub delta_rss_kb: i64,
    pub delta_pss_kb: i64,
    pub per_client_rss_kb: f64,
    pub per_client_pss_kb: f64,
}

impl MemReport {
    pub fn new(
        what: String,
        pids: Vec<u32>,
        before: MemSample,
        during: MemSample,
        clients: u64,
    ) -> Self {
        let delta_rss_kb = during.rss_kb as i64 - before.rss_kb as i64;
        let delta_pss_kb = during.pss_kb as i64 - before.pss_kb as i64;
        let c = clients.max(1) as f64;
        MemReport {
            what,
            pids,
            before,
            during,
            delta_rss_kb,
            delta_pss_kb,
            per_client_rss_kb: delta_rss_kb as f64 / c,
            per_client_pss_kb: delta_pss_kb as f64 / c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let status = "Name:\tx\nVmPeak:\t 100 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(kb_field(status, "VmRSS:"), Some(2048));
        assert_eq!(kb_field(status, "VmSwap:"), None);
        let rollup = "00400000-7fff [rollup]\nRss:   10 kB\nPss:   7 kB\nPss_Anon: 5 kB\n";
        assert_eq!(kb_field(rollup, "Pss:"), Some(7));
    }

    #[test]
    fn stat_fields() {
        let stat = "4242 (imap-login) S 4000 3999 3999 0 -1 4194560 100 0 0 0";
        assert_eq!(parse_stat(stat), Some(("imap-login", 3999)));
        // A comm with spaces and parentheses: the last ')' ends it.
        let odd = "7 (a) b (c)) R 1 77 77 0";
        assert_eq!(parse_stat(odd), Some(("a) b (c)", 77)));
        assert_eq!(parse_stat("garbage"), None);
        let me = std::process::id();
        let text = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let (comm, pgrp) = parse_stat(&text).unwrap();
        assert!(pids_by_comm_in(comm, Some(pgrp)).contains(&me));
        assert!(!pids_by_comm_in(comm, Some(u32::MAX)).contains(&me));
    }

    #[test]
    fn own_process() {
        let me = std::process::id();
        let (rss, _pss) = process(me).unwrap();
        assert!(rss > 0);
        let s = sample(&[me, u32::MAX]);
        assert_eq!(s.processes, 1);
        let r = MemReport::new("x".into(), vec![me], MemSample::default(), s, 4);
        assert_eq!(r.delta_rss_kb, s.rss_kb as i64);
        assert!((r.per_client_rss_kb - s.rss_kb as f64 / 4.0).abs() < 1e-9);
    }
}
