//! The result of a run: a table for people, JSON for machines.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use crate::conn::Security;
use crate::mem::MemReport;
use crate::stats::Recorder;
use crate::Ctx;

/// Latency summary of one command kind, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Lat {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// idle-hold results.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub clients: u64,
    pub established: u64,
    pub failed: u64,
    /// Time until all connections were idling (or had failed).
    pub setup_s: f64,
    pub held_s: f64,
    pub proxy: Option<MemReport>,
    pub backend: Option<MemReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub security: String,
    pub clients: usize,
    pub threads: usize,
    pub users: usize,
    pub rate_limit: f64,
    pub warmup_s: f64,
    /// Length of the measured window.
    pub duration_s: f64,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub bytes_read: u64,
    pub bytes_read_per_sec: f64,
    pub bytes_written: u64,
    pub bytes_written_per_sec: f64,
    pub latency_us: BTreeMap<String, Lat>,
    pub counters: BTreeMap<String, u64>,
    /// All errors of the run, warmup included.
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub error_samples: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile: Option<crate::mobile::MobileReport>,
}

/// Order of the command kinds in the table: connection setup first, then
/// the session's commands, then the rest alphabetically, `OP` last.
fn rank(name: &str) -> (usize, &str) {
    const ORDER: &[&str] = &[
        "CONNECT",
        "TLS",
        "GREETING",
        "STARTTLS",
        "LOGIN",
        "CREATE",
        "SELECT",
        "FETCH_PAGE",
        "FETCH_META",
        "FETCH_BODY",
        "FETCH_BATCH",
        "STORE",
        "APPEND",
        "EXPUNGE",
        "CLOSE",
        "IDLE",
        "DONE",
        "DONE_SETUP",
        "NOOP",
        "NEWMAIL",
        "DONE_MAIL",
        "FETCH_NEW",
        "NEWMAIL_CYCLE",
        "BURST_DONE",
        "BURST_LOGOUT",
        "LOGOUT",
    ];
    match ORDER.iter().position(|n| *n == name) {
        Some(p) => (p, name),
        None if name == "OP" => (usize::MAX, name),
        None => (ORDER.len(), name),
    }
}

impl Report {
    pub fn build(
        ctx: &Ctx,
        total: &Recorder,
        measured: Duration,
        bytes_read: u64,
        bytes_written: u64,
        idle: Option<IdleReport>,
    ) -> Report {
        let secs = measured.as_secs_f64();
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let latency_us = total
            .hists
            .iter()
            .map(|(k, h)| {
                (
                    k.clone(),
                    Lat {
                        count: h.len(),
                        min: h.min(),
                        mean: (h.mean() * 10.0).round() / 10.0,
                        p50: h.value_at_quantile(0.50),
                        p90: h.value_at_quantile(0.90),
                        p99: h.value_at_quantile(0.99),
                        p999: h.value_at_quantile(0.999),
                        max: h.max(),
                    },
                )
            })
            .collect();
        Report {
            scenario: ctx.scenario.name().to_string(),
            target: ctx.cli.target.clone(),
            security: match ctx.conn.security {
                Security::Plain => "plain",
                Security::Tls => "tls",
                Security::StartTls => "starttls",
            }
            .to_string(),
            clients: ctx.cli.clients,
            threads: ctx.threads,
            users: ctx.accounts.len(),
            rate_limit: ctx.cli.rate,
            warmup_s: ctx.cli.warmup.as_secs_f64(),
            duration_s: (secs * 1000.0).round() / 1000.0,
            ops: total.ops,
            ops_per_sec: (per_sec(total.ops) * 10.0).round() / 10.0,
            bytes_read,
            bytes_read_per_sec: per_sec(bytes_read).round(),
            bytes_written,
            bytes_written_per_sec: per_sec(bytes_written).round(),
            latency_us,
            counters: total.counters.clone(),
            errors: total.error_count(),
            errors_by_kind: total
                .errors
                .iter()
                .map(|(k, n)| (k.name().to_string(), *n))
                .collect(),
            error_samples: total.samples.clone(),
            idle,
            mobile: None,
        }
    }

    /// Human-readable summary.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let mb = |b: f64| b / 1e6;
        let _ = writeln!(
            o,
            "scenario {}  target {} ({})  clients {}  threads {}  users {}",
            self.scenario, self.target, self.security, self.clients, self.threads, self.users
        );
        let _ = writeln!(
            o,
            "measured {:.2}s (warmup {:.1}s){}",
            self.duration_s,
            self.warmup_s,
            if self.rate_limit > 0.0 {
                format!("  rate limit {}/s", self.rate_limit)
            } else {
                String::new()
            }
        );
        let _ = writeln!(o, "ops: {}  ops/s: {:.1}", self.ops, self.ops_per_sec);
        let _ = writeln!(
            o,
            "read: {:.1} MB ({:.2} MB/s)  written: {:.1} MB ({:.2} MB/s)",
            mb(self.bytes_read as f64),
            mb(self.bytes_read_per_sec),
            mb(self.bytes_written as f64),
            mb(self.bytes_written_per_sec)
        );
        for (k, v) in &self.counters {
            let _ = writeln!(o, "{k}: {v}");
        }
        let _ = writeln!(
            o,
            "\n{:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "mean", "p50", "p90", "p99", "max"
        );
        let ms = |us: u64| us as f64 / 1000.0;
        let mut names: Vec<&String> = self.latency_us.keys().collect();
        names.sort_by_key(|n| rank(n));
        for name in names {
            let l = &self.latency_us[name];
            let _ = writeln!(
                o,
                "{:<14} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                name,
                l.count,
                l.mean / 1000.0,
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.max)
            );
        }
        if let Some(idle) = &self.idle {
            let _ = writeln!(
                o,
                "\nidle: {} of {} connections established ({} failed) in {:.2}s, held {:.1}s",
                idle.established, idle.clients, idle.failed, idle.setup_s, idle.held_s
            );
            for m in [&idle.proxy, &idle.backend].into_iter().flatten() {
                let _ = writeln!(
                    o,
                    "{}: processes {} -> {}  RSS {} -> {} KiB  PSS {} -> {} KiB  per client: RSS {:.1} KiB, PSS {:.1} KiB",
                    m.what,
                    m.before.processes,
                    m.during.processes,
                    m.before.rss_kb,
                    m.during.rss_kb,
                    m.before.pss_kb,
                    m.during.pss_kb,
                    m.per_client_rss_kb,
                    m.per_client_pss_kb
                );
            }
        }
        if let Some(m) = &self.mobile {
            o.push('\n');
            o.push_str(&m.table());
        }
        let _ = writeln!(o, "\nerrors: {}", self.errors);
        for (k, n) in &self.errors_by_kind {
            let _ = writeln!(o, "  {k}: {n}");
        }
        for s in self.error_samples.iter().take(10) {
            let _ = writeln!(o, "  e.g. {s}");
        }
        o
    }
}
