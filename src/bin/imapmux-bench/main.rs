//! imapmux-bench: an IMAP load generator for imapmux (and any IMAP server).
//!
//! Scenarios: `seed`, `login-storm`, `webmail`, `sync`, `idle-hold`,
//! `append`, `fetch-latency`, `read-heavy`, `mobile`. See USAGE.md beside
//! this file.
//!
//! Exit code: 0 when no error occurred, 1 when any did, 2 for usage errors.
#![forbid(unsafe_code)]

mod conn;
#[cfg(test)]
mod conn_tests;
mod idle;
mod mailops;
mod mem;
mod mobile;
mod msg;
mod report;
mod resp;
mod runner;
mod sessions;
mod stats;
mod stream;
mod tls;
mod util;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::conn::{ConnCfg, LiteralMode, Security};
use crate::stats::Live;
use crate::util::{parse_duration, parse_fraction, parse_size, parse_sizes, Account};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// APPEND --messages test messages per user (verifiable by the readers).
    Seed,
    /// Connect, (TLS,) LOGIN, LOGOUT, repeat.
    LoginStorm,
    /// LOGIN, SELECT, fetch a page of headers, read --reads messages, LOGOUT.
    Webmail,
    /// LOGIN, SELECT, UID FETCH 1:* metadata, download every message, LOGOUT.
    Sync,
    /// Hold --clients IDLE connections for --duration; report memory.
    IdleHold,
    /// APPEND, read back byte-exact, delete (unless --keep).
    Append,
    /// Repeated UID FETCH BODY.PEEK[] of fixed messages on one session.
    FetchLatency,
    /// Long sessions; each operation one FETCH: a page of headers and
    /// BODYSTRUCTURE, or a full body read (the FETCH cache's workload).
    ReadHeavy,
    /// Phones and tablets: 1–3 devices per user idle in INBOX, refresh
    /// their IDLE, get new mail and fetch it; backend connections, logins,
    /// new-mail and DONE latency, and a final DONE + LOGOUT burst.
    Mobile,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Seed => "seed",
            Scenario::LoginStorm => "login-storm",
            Scenario::Webmail => "webmail",
            Scenario::ReadHeavy => "read-heavy",
            Scenario::Sync => "sync",
            Scenario::IdleHold => "idle-hold",
            Scenario::Append => "append",
            Scenario::FetchLatency => "fetch-latency",
            Scenario::Mobile => "mobile",
        }
    }
}

/// IMAP load generator.
#[derive(Debug, Parser)]
#[command(
    name = "imapmux-bench",
    version,
    about = "IMAP load generator: login storms, webmail and sync sessions, IDLE memory, APPEND and FETCH checks",
    long_about = None
)]
pub struct Cli {
    /// What to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Server address, HOST:PORT.
    #[arg(long)]
    pub target: String,
    /// Implicit TLS (IMAPS).
    #[arg(long, conflicts_with = "starttls")]
    pub tls: bool,
    /// Plain connection upgraded with STARTTLS.
    #[arg(long)]
    pub starttls: bool,
    /// Accept any server certificate (testing only).
    #[arg(long, conflicts_with = "ca_file")]
    pub insecure: bool,
    /// Trust the CA certificates in this PEM file (default: system roots).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// TLS server name (default: the host of --target).
    #[arg(long)]
    pub sni: Option<String>,
    /// Disable TLS session resumption (every handshake is a full one).
    #[arg(long)]
    pub no_tls_resume: bool,
    /// User name pattern; %d expands to 1..=--user-count.
    #[arg(long, default_value = "user%d")]
    pub users: String,
    /// Password (pattern; %d expands like in --users).
    #[arg(long, default_value = "pass%d")]
    pub password: String,
    /// Number of users made from the patterns.
    #[arg(long, default_value_t = 1)]
    pub user_count: usize,
    /// File of `user:password` lines, instead of the patterns.
    #[arg(long, value_name = "FILE")]
    pub users_file: Option<PathBuf>,
    /// Concurrent clients (connections).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Measured run time (idle-hold: how long to hold the connections).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time before the measurement starts (excluded from the stats).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Operations per second over all clients; 0 = unlimited.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Runtime worker threads (default: number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Limit for every command (and connect, handshake, greeting).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Mailbox to use.
    #[arg(long, default_value = "INBOX")]
    pub mailbox: String,
    /// seed: messages per user.
    #[arg(long, default_value_t = 50)]
    pub messages: usize,
    /// Message sizes, cycled (seed, append; fetch-latency picks one message per size).
    #[arg(long, default_value = "2k,20k,200k")]
    pub sizes: String,
    /// seed: empty the mailbox first.
    #[arg(long)]
    pub reset: bool,
    /// webmail: messages per page.
    #[arg(long, default_value_t = 50)]
    pub page: usize,
    /// webmail: messages opened per session.
    #[arg(long, default_value_t = 5)]
    pub reads: usize,
    /// webmail: fraction of reads from the hot set (first 10 of the page).
    #[arg(long, default_value = "0.8", value_parser = parse_fraction)]
    pub reread: f64,
    /// sync: messages per UID FETCH BODY.PEEK[] command.
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// append: keep the appended messages (default: delete them).
    #[arg(long)]
    pub keep: bool,
    /// fetch-latency: fetch this UID instead of one message per size.
    #[arg(long)]
    pub uid: Option<u32>,
    /// Skip the digest check of fetched messages (length is still checked).
    #[arg(long)]
    pub no_verify: bool,
    /// APPEND literal style.
    #[arg(long, value_enum, default_value = "auto")]
    pub literal: LiteralMode,
    /// COMPRESS=DEFLATE (RFC 4978) after every LOGIN; a server that does
    /// not offer it fails the login. The report's counters give the bytes
    /// on the socket (`wire_bytes_read`, `wire_bytes_written`).
    #[arg(long)]
    pub compress: bool,
    /// idle-hold, mobile: PID(s) of the proxy to measure (comma-separated:
    /// several replicas are summed).
    #[arg(long, conflicts_with = "proxy_name", value_delimiter = ',')]
    pub proxy_pid: Vec<u32>,
    /// idle-hold, mobile: measure the processes with this name (/proc/PID/comm).
    #[arg(long)]
    pub proxy_name: Option<String>,
    /// idle-hold, mobile: count and measure backend processes with this name (Dovecot: imap).
    #[arg(long)]
    pub backend_name: Option<String>,
    /// mobile: only count --backend-name (and --proxy-name) processes of
    /// this process group (a private Dovecot among others on the machine).
    #[arg(long)]
    pub proc_pgid: Option<u32>,
    /// mobile: mean time between a client's IDLE refreshes (DONE, IDLE
    /// again); each interval is drawn uniformly from 0.5–1.5 × the mean.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub refresh_mean: Duration,
    /// mobile: fraction of refreshes that send NOOP between DONE and IDLE.
    #[arg(long, default_value = "0.2", value_parser = parse_fraction)]
    pub noop_share: f64,
    /// mobile: new messages per second (Poisson arrivals), each to a random
    /// user, during the steady state.
    #[arg(long, default_value_t = 1.0)]
    pub mail_rate: f64,
    /// mobile: size of each new message.
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    pub mail_size: u64,
    /// mobile: where new mail is delivered (APPEND as the recipient over
    /// plaintext IMAP, straight to the backend: the delivery side channel).
    #[arg(long, value_name = "HOST:PORT")]
    pub deliver_target: Option<String>,
    /// mobile: spread the clients' connects over this time.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// mobile: after the last delivery, keep refreshing this long before
    /// the burst (late new mail still counts).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub mail_grace: Duration,
    /// mobile: after --settle, wait at most this long for the backend's
    /// process count (--backend-name) to stop falling (the proxy parking
    /// its idle clients) before the steady state starts.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub settle_max: Duration,
    /// mobile: the backend's log file (Dovecot log_path): its
    /// `imap-login: … Login:` lines are counted once a second (backend
    /// logins).
    #[arg(long, value_name = "FILE")]
    pub backend_log: Option<PathBuf>,
    /// mobile: Prometheus metrics URL(s) of the proxy (http://HOST:PORT/metrics;
    /// comma-separated for replicas, summed), scraped at the start and end
    /// of the steady state and after the burst.
    #[arg(long, value_delimiter = ',')]
    pub metrics_url: Vec<String>,
    /// idle-hold: wait this long after every client idles before measuring
    /// memory (default: half of --duration, at most 2 s). mobile: time
    /// between the last client idling and the steady state (default 10 s;
    /// longer than the proxy's idle_offload_after).
    #[arg(long, value_parser = parse_duration)]
    pub settle: Option<Duration>,
    /// idle-hold: after the memory sample, APPEND this many messages (one
    /// at a time, users in turn, through --target) and time how long each
    /// takes to reach the user's idling clients as EXISTS (NEWMAIL latency).
    #[arg(long, default_value_t = 0)]
    pub new_mail: usize,
    /// idle-hold: connections being set up at once.
    #[arg(long, default_value_t = 32)]
    pub connect_parallel: usize,
    /// Largest literal accepted in a response.
    #[arg(long, default_value = "64m", value_parser = parse_size)]
    pub max_literal: u64,
    /// Random seed (choice of messages to read).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Options after validation, shared by all workers.
pub struct Ctx {
    pub cli: Cli,
    pub scenario: Scenario,
    pub accounts: Vec<Account>,
    pub sizes: Vec<u64>,
    pub conn: Arc<ConnCfg>,
    pub live: Arc<Live>,
    pub limiter: stats::Limiter,
    pub threads: usize,
    /// seed: next account to seed.
    pub next_account: std::sync::atomic::AtomicUsize,
    /// Workers stop starting operations at this instant.
    pub end: std::sync::OnceLock<std::time::Instant>,
}

impl Ctx {
    /// Still starting new operations?
    pub fn running(&self) -> bool {
        if self.live.stop.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        match self.end.get() {
            Some(end) => std::time::Instant::now() < *end,
            None => true,
        }
    }

    /// The account client `id` uses for its `k`-th session.
    pub fn account(&self, id: usize, k: usize) -> &Account {
        let n = self.accounts.len();
        &self.accounts[(id + k.wrapping_mul(self.cli.clients)) % n]
    }
}

fn usage_exit(msg: &str) -> ! {
    eprintln!("imapmux-bench: {msg}");
    std::process::exit(2);
}

fn build_ctx(cli: Cli) -> Result<Ctx, String> {
    if cli.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if !(cli.rate >= 0.0 && cli.rate.is_finite()) {
        return Err("--rate must be >= 0".into());
    }
    if cli.page == 0 || cli.batch == 0 {
        return Err("--page and --batch must be at least 1".into());
    }
    if cli.timeout.is_zero() {
        return Err("--timeout must be > 0".into());
    }
    if cli.connect_parallel == 0 {
        return Err("--connect-parallel must be at least 1".into());
    }
    if cli.threads == Some(0) {
        return Err("--threads must be at least 1".into());
    }
    if cli.scenario == Scenario::Mobile {
        mobile::validate(&cli)?;
    }
    let sizes = parse_sizes(&cli.sizes)?;
    let accounts = match &cli.users_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--users-file {}: {e}", path.display()))?;
            util::accounts_from_file_text(&text)?
        }
        None => util::accounts_from_pattern(&cli.users, &cli.password, cli.user_count)?,
    };
    let security = match (cli.tls, cli.starttls) {
        (true, _) => Security::Tls,
        (_, true) => Security::StartTls,
        _ => Security::Plain,
    };
    let (tls, server_name) = if security == Security::Plain {
        (None, None)
    } else {
        (
            Some(tls::client_config(
                cli.insecure,
                cli.ca_file.as_deref(),
                !cli.no_tls_resume,
            )?),
            Some(tls::server_name(cli.sni.as_deref(), &cli.target)?),
        )
    };
    let live = Arc::new(Live::default());
    let conn = Arc::new(ConnCfg {
        target: cli.target.clone(),
        security,
        tls,
        server_name,
        timeout: cli.timeout,
        max_literal: cli.max_literal,
        max_line: 256 * 1024,
        literal: cli.literal,
        compress: cli.compress,
        live: live.clone(),
    });
    let threads = cli.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    Ok(Ctx {
        scenario: cli.scenario,
        limiter: stats::Limiter::new(cli.rate),
        cli,
        accounts,
        sizes,
        conn,
        live,
        threads,
        next_account: std::sync::atomic::AtomicUsize::new(0),
        end: std::sync::OnceLock::new(),
    })
}

fn main() {
    let cli = Cli::parse();
    let ctx = match build_ctx(cli) {
        Ok(c) => Arc::new(c),
        Err(e) => usage_exit(&e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(ctx.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("imapmux-bench: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let report = rt.block_on(runner::run(ctx.clone()));
    if ctx.cli.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("imapmux-bench: JSON output failed: {e}");
                std::process::exit(1);
            }
        }
    } else {
        print!("{}", report.table());
    }
    // Leftover tasks (none normally) must not delay the exit.
    rt.shutdown_timeout(Duration::from_millis(100));
    std::process::exit(if report.errors == 0 { 0 } else { 1 });
}
