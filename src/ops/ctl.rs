//! `imapmux ctl`: the command line of the operations API. It calls one
//! replica (`--server`, default `127.0.0.1:9143`), a list of them, or
//! every address a DNS name has (`--all`, e.g. the chart's headless
//! `<release>-peers` Service, the one push fan-out uses), at once, and
//! reports per replica: `sessions` and `backends` merged into one table
//! (a REPLICA column), writes one line per replica. `--json` prints every
//! replica's answer as it came. Exit status 1 when a replica failed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// Largest answer read from one replica.
const MAX_ANSWER: usize = 64 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Admin address (HOST:PORT) of a replica; repeat, or separate with
    /// commas, for several. Default: the configuration's admin.address
    /// (an unspecified host as loopback), else 127.0.0.1:9143.
    #[arg(
        long = "server",
        short = 's',
        env = "IMAPMUX_ADMIN",
        value_delimiter = ','
    )]
    pub servers: Vec<String>,
    /// Every replica: a DNS name (HOST:PORT) whose addresses are the
    /// replicas' admin listeners, e.g. the chart's headless Service
    /// `<release>-peers.<namespace>.svc:9143`. Replaces --server. Without
    /// a value: the configuration's admin.push_peers_dns (the same
    /// discovery as push fan-out).
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = "")]
    pub all: Option<String>,
    /// File whose first line is the admin API token. Default: the
    /// configuration's admin.token_file.
    #[arg(long, env = "IMAPMUX_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The configuration file that gives the defaults above (read only
    /// when one of them is needed).
    #[arg(
        long,
        short,
        env = "IMAPMUX_CONFIG",
        default_value = "/etc/imapmux/imapmux.toml"
    )]
    pub config: PathBuf,
    /// Print every replica's JSON answer instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Every client session: user, client, TLS, backend, state, mailbox,
    /// since, bytes (and pooled backend connections).
    Sessions {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        backend: Option<String>,
    },
    /// End a user's sessions (`* BYE` at a safe point, attached and
    /// parked), drop their pooled connections and cached credentials.
    Kick {
        #[arg(long)]
        user: String,
        /// Logged with the action.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Backends: list, drain, undrain, weight.
    Backend {
        #[command(subcommand)]
        command: BackendCommand,
    },
    /// Route a user to a backend (persisted override), end their sessions
    /// so they reconnect there, drop their FETCH cache.
    Move {
        #[arg(long)]
        user: String,
        #[arg(long)]
        to: String,
    },
    /// The FETCH cache: stats, purge.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackendCommand {
    /// Every backend: up, drained, weight, sessions.
    List,
    /// No new logins; attached sessions end at a safe point (at the
    /// latest after --deadline seconds); parked ones re-attach elsewhere
    /// when the pool has failover on (else they end too).
    Drain {
        backend: String,
        #[arg(long, value_name = "SECONDS")]
        deadline: Option<u64>,
    },
    /// Take logins again.
    Undrain { backend: String },
    /// Set the backend's rendezvous weight (0 to 10000).
    Weight { backend: String, weight: u32 },
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    Stats,
    Purge {
        #[arg(long)]
        user: String,
    },
}

/// One replica's answer.
#[derive(Debug)]
pub struct Answer {
    pub replica: String,
    pub result: Result<(u16, Value), String>,
}

impl Answer {
    fn ok(&self) -> bool {
        matches!(&self.result, Ok((200, _)))
    }
}

/// The request a command makes: method, path (with query), body.
fn request_of(cmd: &CtlCommand) -> (Method, String, Option<Value>) {
    let q = |pairs: &[(&str, &Option<String>)]| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            if let Some(v) = v {
                s.append_pair(k, v);
            }
        }
        let s = s.finish();
        if s.is_empty() {
            s
        } else {
            format!("?{s}")
        }
    };
    let p = super::api::PREFIX;
    match cmd {
        CtlCommand::Sessions { user, backend } => (
            Method::GET,
            format!("{p}sessions{}", q(&[("user", user), ("backend", backend)])),
            None,
        ),
        CtlCommand::Kick { user, reason } => (
            Method::POST,
            format!("{p}kick"),
            Some(json!({"user": user, "reason": reason})),
        ),
        CtlCommand::Move { user, to } => (
            Method::POST,
            format!("{p}move"),
            Some(json!({"user": user, "to": to})),
        ),
        CtlCommand::Backend { command } => match command {
            BackendCommand::List => (Method::GET, format!("{p}backends"), None),
            BackendCommand::Drain { backend, deadline } => (
                Method::POST,
                format!("{p}backends/drain"),
                Some(json!({"backend": backend, "deadline_secs": deadline})),
            ),
            BackendCommand::Undrain { backend } => (
                Method::POST,
                format!("{p}backends/undrain"),
                Some(json!({"backend": backend})),
            ),
            BackendCommand::Weight { backend, weight } => (
                Method::POST,
                format!("{p}backends/weight"),
                Some(json!({"backend": backend, "weight": weight})),
            ),
        },
        CtlCommand::Cache { command } => match command {
            CacheCommand::Stats => (Method::GET, format!("{p}cache"), None),
            CacheCommand::Purge { user } => (
                Method::POST,
                format!("{p}cache/purge"),
                Some(json!({"user": user})),
            ),
        },
    }
}

/// What `ctl` takes from the configuration file when the command line
/// does not say: the token file, the replicas.
struct Defaults {
    token_file: PathBuf,
    /// `--all` name, or the `--server` list.
    all: Option<String>,
    servers: Vec<String>,
}

/// The admin address as a client reaches it: an unspecified host
/// (`0.0.0.0`, `[::]`) is the loopback address of its family.
fn reachable(address: &str) -> String {
    match address.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let ip: std::net::IpAddr = if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            SocketAddr::new(ip, a.port()).to_string()
        }
        _ => address.to_string(),
    }
}

fn defaults(args: &CtlArgs) -> anyhow::Result<Defaults> {
    let need_config = args.token_file.is_none()
        || args.all.as_deref() == Some("")
        || (args.all.is_none() && args.servers.is_empty());
    let cfg = if need_config {
        match crate::config::Config::load(&args.config) {
            Ok(c) => Some(c),
            Err(e) if args.token_file.is_none() || args.all.as_deref() == Some("") => {
                anyhow::bail!(
                    "--config {}: {e} (give --token-file and --server or --all NAME:PORT instead)",
                    args.config.display()
                )
            }
            Err(_) => None,
        }
    } else {
        None
    };
    let admin = cfg.as_ref().map(|c| &c.admin);
    let token_file = match (
        args.token_file.clone(),
        admin.and_then(|a| a.token_file.clone()),
    ) {
        (Some(f), _) | (None, Some(f)) => f,
        (None, None) => anyhow::bail!(
            "no token: give --token-file, or set admin.token_file in {}",
            args.config.display()
        ),
    };
    let all = match args.all.as_deref() {
        Some("") => Some(
            admin
                .and_then(|a| a.push_peers_dns.clone())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                "--all without a name needs admin.push_peers_dns in {}; give --all NAME:PORT",
                args.config.display()
            )
                })?,
        ),
        other => other.map(String::from),
    };
    let servers = if !args.servers.is_empty() {
        args.servers.clone()
    } else if let Some(a) = admin.and_then(|a| a.address.as_deref()) {
        vec![reachable(a)]
    } else {
        vec!["127.0.0.1:9143".to_string()]
    };
    Ok(Defaults {
        token_file,
        all,
        servers,
    })
}

/// The replicas to call: every address of `--all`, else `--server`s.
async fn targets(args: &Defaults) -> anyhow::Result<Vec<String>> {
    if let Some(name) = &args.all {
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(name.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("--all {name}: cannot resolve: {e}"))?
            .collect();
        addrs.sort();
        addrs.dedup();
        anyhow::ensure!(!addrs.is_empty(), "--all {name}: no addresses");
        return Ok(addrs.iter().map(ToString::to_string).collect());
    }
    Ok(args.servers.clone())
}

async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    replica: &str,
    token: &HeaderValue,
    (method, path, body): &(Method, String, Option<Value>),
) -> Result<(u16, Value), String> {
    let uri = format!("http://{replica}{path}");
    let body = body
        .as_ref()
        .map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()))
        .unwrap_or_default();
    let req = Request::builder()
        .method(method.clone())
        .uri(&uri)
        .header(AUTHORIZATION, token.clone())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| format!("bad request {uri}: {e}"))?;
    let resp = tokio::time::timeout(TIMEOUT, client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e}"))?;
    let status = resp.status().as_u16();
    let bytes = tokio::time::timeout(
        TIMEOUT,
        Limited::new(resp.into_body(), MAX_ANSWER).collect(),
    )
    .await
    .map_err(|_| "timed out reading the answer".to_string())?
    .map_err(|e| format!("reading the answer: {e}"))?
    .to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&bytes).trim().to_string()}));
    Ok((status, v))
}

/// Run `imapmux ctl`; the process's exit code.
pub fn run(args: CtlArgs) -> anyhow::Result<bool> {
    let d = defaults(&args)?;
    let token = super::tokens::read_token_file(&d.token_file)
        .map_err(|e| anyhow::anyhow!("token file {}: {e}", d.token_file.display()))?;
    anyhow::ensure!(
        !token.is_empty(),
        "token file {}: the first line is empty",
        d.token_file.display()
    );
    let token = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| anyhow::anyhow!("the token has characters a header cannot carry"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answers = rt.block_on(async {
        let replicas = targets(&d).await?;
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let req = std::sync::Arc::new(request_of(&args.command));
        let mut set = tokio::task::JoinSet::new();
        for (i, r) in replicas.iter().enumerate() {
            let (client, token, req, r) = (client.clone(), token.clone(), req.clone(), r.clone());
            set.spawn(async move {
                let result = call(&client, &r, &token, &req).await;
                (i, Answer { replica: r, result })
            });
        }
        let mut answers = Vec::new();
        while let Some(done) = set.join_next().await {
            if let Ok(a) = done {
                answers.push(a);
            }
        }
        answers.sort_by_key(|(i, _)| *i);
        anyhow::Ok(answers.into_iter().map(|(_, a)| a).collect::<Vec<_>>())
    })?;
    let all_ok = answers.iter().all(Answer::ok);
    let out = if args.json {
        super::ctl_show::json(&answers)
    } else {
        super::ctl_show::human(&args.command, &answers)
    };
    print!("{out}");
    Ok(all_ok)
}
