//! The imapmux command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use imapmux::auth::password::{self, Scheme};
use imapmux::config::Config;

#[derive(Parser)]
#[command(
    name = "imapmux",
    version,
    about = "IMAP front proxy: TLS termination, routing, caching, multiplexing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Configuration file (the container image sets IMAPMUX_CONFIG to
        /// /etc/imapmux/imapmux.toml, where the Helm chart mounts it).
        #[arg(
            long,
            short,
            env = "IMAPMUX_CONFIG",
            default_value = "config/imapmux.toml"
        )]
        config: PathBuf,
    },
    /// Check a configuration file and exit (0 if valid, 1 with the bad key otherwise).
    CheckConfig {
        #[arg(
            long,
            short,
            env = "IMAPMUX_CONFIG",
            default_value = "config/imapmux.toml"
        )]
        config: PathBuf,
    },
    /// Operations: list and steer live sessions and backends through the
    /// admin API (`[admin] token_file`), on one replica or all of them.
    Ctl(imapmux::ops::ctl::CtlArgs),
    /// Hash a password for a passwd-file: reads it from stdin (one line;
    /// asks twice, without echo, on a terminal) and prints `{SCHEME}hash`.
    HashPassword {
        /// ARGON2ID, ARGON2I, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT or PLAIN.
        #[arg(long, short, default_value = "ARGON2ID")]
        scheme: Scheme,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMAPMUX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Ctl(args) => match imapmux::ops::ctl::run(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::HashPassword { scheme } => {
            let hashed = read_password().and_then(|pw| Ok(password::hash(scheme, &pw)?));
            match hashed {
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => match check(&config) {
            Ok(()) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            init_logging();
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(imapmux::server::run(cfg, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Validate beyond syntax: build the TLS configs and backend pools too, so
/// an unreadable certificate, CA or push secret file is reported here.
fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    for w in cfg.warnings() {
        eprintln!("warning: {w}");
    }
    let routes = imapmux::ops::routes::RouteState::open(cfg.routing.state_file.as_deref())?;
    imapmux::server::build_parts(&cfg, &std::sync::Arc::new(routes))?;
    cfg.admin.load_tokens()?;
    cfg.admin.load_push_secret()?;
    imapmux::auth::build(&cfg.auth, None).map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    Ok(())
}

/// The password to hash: from the terminal without echo (typed twice), or
/// the first line of stdin without its line end. Never printed.
fn read_password() -> anyhow::Result<Vec<u8>> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Retype password: ")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        return Ok(first.into_bytes());
    }
    let mut line = Vec::new();
    std::io::stdin().lock().read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(line)
}
