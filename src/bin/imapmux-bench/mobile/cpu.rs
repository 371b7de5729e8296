//! CPU use over the steady state, from `/proc/stat` (per CPU) and
//! `/proc/PID/stat` (per process): is a CPU saturated, and by whom (the
//! proxy, the backend's process group, this client, or the rest of the
//! machine). Percentages are of one CPU.

use serde::Serialize;

/// Busy and total ticks of each CPU, and the ticks of the watched processes.
#[derive(Debug, Clone, Default)]
pub struct CpuSnap {
    cpus: Vec<(u64, u64)>,
    proxy: u64,
    backend: u64,
    client: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// Busy share of each CPU (everything on the machine), %.
    pub cpu_busy_pct: Vec<f64>,
    /// Of one CPU, %: the proxy's processes, the backend's process group
    /// (reaped children included), this client.
    pub proxy_pct: f64,
    pub backend_pct: f64,
    pub client_pct: f64,
}

/// `cpuN` lines of `/proc/stat` → (busy, total) ticks per CPU (idle and
/// iowait are not busy).
pub fn parse_proc_stat(text: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let Some(name) = it.next() else { continue };
        if !name.starts_with("cpu") || name == "cpu" {
            continue;
        }
        let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        out.push((total.saturating_sub(idle), total));
    }
    out
}

/// (pgrp, utime + stime, cutime + cstime) of a `/proc/PID/stat` text.
pub fn parse_ticks(text: &str) -> Option<(u32, u64, u64)> {
    let close = text.rfind(')')?;
    let f: Vec<&str> = text.get(close + 2..)?.split_ascii_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok());
    let pgrp = f.get(2)?.parse().ok()?;
    Some((pgrp, n(11)? + n(12)?, n(13)? + n(14)?))
}

fn ticks(pid: u32) -> Option<(u32, u64, u64)> {
    parse_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Ticks of a process group: its members', plus the reaped children's of
/// its leader.
fn group_ticks(pgid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut sum = 0;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((g, own, children)) = ticks(pid) {
            if g == pgid {
                sum += own + if pid == pgid { children } else { 0 };
            }
        }
    }
    sum
}

pub fn snap(proxy: &[u32], backend_pgid: Option<u32>) -> CpuSnap {
    CpuSnap {
        cpus: std::fs::read_to_string("/proc/stat")
            .map(|t| parse_proc_stat(&t))
            .unwrap_or_default(),
        proxy: proxy.iter().filter_map(|&p| ticks(p)).map(|t| t.1).sum(),
        backend: backend_pgid.map(group_ticks).unwrap_or(0),
        client: ticks(std::process::id()).map(|t| t.1).unwrap_or(0),
    }
}

/// Between two snapshots; `None` without CPU lines.
pub fn report(a: &CpuSnap, b: &CpuSnap) -> Option<CpuReport> {
    let per: Vec<(u64, u64)> = a
        .cpus
        .iter()
        .zip(&b.cpus)
        .map(|(x, y)| (y.0.saturating_sub(x.0), y.1.saturating_sub(x.1)))
        .collect();
    let tick = per.iter().map(|p| p.1).max().filter(|&t| t > 0)? as f64;
    let pct = |x: u64, y: u64| (1000.0 * y.saturating_sub(x) as f64 / tick).round() / 10.0;
    Some(CpuReport {
        cpu_busy_pct: per
            .iter()
            .map(|&(busy, total)| (1000.0 * busy as f64 / total.max(1) as f64).round() / 10.0)
            .collect(),
        proxy_pct: pct(a.proxy, b.proxy),
        backend_pct: pct(a.backend, b.backend),
        client_pct: pct(a.client, b.client),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_lines_per_cpu() {
        let t = "cpu  10 0 10 100 5 0 0 0 0 0\ncpu0 4 1 5 50 2 0 0 0 0 0\ncpu1 6 0 5 50 3 0 0 0 0 0\nintr 1\n";
        assert_eq!(parse_proc_stat(t), vec![(10, 62), (11, 64)]);
    }

    #[test]
    fn stat_ticks_after_the_comm() {
        // comm with a space and a parenthesis.
        let t = "42 (imap (x) y) S 1 40 40 0 -1 4194560 100 0 0 0 7 3 20 5 20 0 1 0";
        assert_eq!(parse_ticks(t), Some((40, 10, 25)));
        assert_eq!(parse_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn report_shares() {
        let a = CpuSnap {
            cpus: vec![(0, 0), (0, 0)],
            proxy: 0,
            backend: 0,
            client: 0,
        };
        let b = CpuSnap {
            cpus: vec![(90, 100), (30, 100)],
            proxy: 40,
            backend: 45,
            client: 25,
        };
        let r = report(&a, &b).unwrap();
        assert_eq!(r.cpu_busy_pct, vec![90.0, 30.0]);
        assert_eq!(
            (r.proxy_pct, r.backend_pct, r.client_pct),
            (40.0, 45.0, 25.0)
        );
    }
}
