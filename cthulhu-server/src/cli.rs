//! The command line: `serve` (the default), `check`, `probe`, `token create`,
//! `admin reset-password` / `admin reset-totp`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::{api, auth, config, db, run};
use clap::{Parser, Subcommand, ValueEnum};

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "cthulhu-server",
    version,
    about = "Cthulhu live-video restreaming proxy"
)]
struct Cli {
    /// TOML configuration file (without it: embedded defaults, data in ./cthulhu-data).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line (`timestamp`, `level`, `fields.message`, ...).
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validates a configuration file without starting anything.
    Check,
    /// Connects to a destination, asks to publish and reports the answer, sending no media.
    Probe {
        /// The destination URL, e.g. rtmp://a.rtmp.youtube.com/live2/KEY.
        url: String,
        /// Seconds allowed for each step.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// For rtmps:// URLs: a PEM file of CA certificates to trust in addition to
        /// the system roots (for a server whose certificate a private CA signed).
        #[arg(long, value_name = "PATH")]
        tls_ca_file: Option<PathBuf>,
    },
    /// API tokens for automation (`Authorization: Bearer TOKEN`).
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Console account recovery. Works while the server runs (same data directory
    /// as `token create`).
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Sets a new generated password (marked to be changed), prints it once and ends
    /// the user's sessions.
    ResetPassword {
        /// The user.
        #[arg(long, default_value = "admin")]
        username: String,
    },
    /// Removes the user's TOTP (enrolment again at the next login) and ends the
    /// user's sessions.
    ResetTotp {
        /// The user.
        #[arg(long, default_value = "admin")]
        username: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Creates a token and prints it once. Works while the server runs (same data
    /// directory: the one of --config, or ./cthulhu-data).
    Create {
        /// A unique name, shown in the audit log as token:NAME.
        #[arg(long)]
        name: String,
    },
}

/// Parses the command line and runs what it asks for.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check) => check(cli.config),
        Some(Command::Probe {
            url,
            timeout,
            tls_ca_file,
        }) => probe(&url, timeout, tls_ca_file),
        Some(Command::Token {
            action: TokenCommand::Create { name },
        }) => token_create(cli.config, name),
        Some(Command::Admin { action }) => admin(cli.config, action),
        None => serve(cli.config, cli.log_format),
    }
}

/// The data directory of the config file at `path`, or the default one.
fn data_dir_of(path: Option<&PathBuf>) -> Result<PathBuf, ExitCode> {
    match path {
        Some(p) => match config::Config::load(p) {
            Ok(c) => Ok(c.server.data_dir),
            Err(e) => {
                eprintln!("{e}");
                Err(ExitCode::from(2))
            }
        },
        None => Ok(PathBuf::from(config::DEFAULT_DATA_DIR)),
    }
}

/// Runs `f` on the store of the config at `path` (or of the default data directory)
/// on a runtime of its own; Err is the exit code after saying why there is none.
fn with_store<T, F>(
    path: Option<&PathBuf>,
    f: impl FnOnce(db::Db) -> F,
) -> Result<anyhow::Result<T>, ExitCode>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let data_dir = data_dir_of(path)?;
    let rt = runtime()?;
    Ok(rt.block_on(async {
        let db = run::open_db(&data_dir)?;
        f(db).await
    }))
}

fn admin(path: Option<PathBuf>, action: AdminCommand) -> ExitCode {
    // What goes to stdout (the password, once), and the note for stderr.
    let done = with_store(path.as_ref(), |db| async move {
        anyhow::Ok(match action {
            AdminCommand::ResetPassword { username } => {
                let password = admin_reset_password(&db, &username).await?;
                (
                    Some(password),
                    format!(
                        "New password of {username} set; it is shown only this once \
                         (marked to be changed)."
                    ),
                )
            }
            AdminCommand::ResetTotp { username } => {
                admin_reset_totp(&db, &username).await?;
                (
                    None,
                    format!("TOTP of {username} removed: enrolment again at the next login."),
                )
            }
        })
    });
    let done = match done {
        Ok(done) => done,
        Err(code) => return code,
    };
    match done {
        Ok((out, note)) => {
            if let Some(out) = out {
                println!("{out}");
            }
            eprintln!("{note}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The user named `username`, or an error saying there is none.
async fn admin_user(db: &db::Db, username: &str) -> anyhow::Result<db::User> {
    let name = username.to_owned();
    db.run(move |db| db.user_by_name(&name))
        .await?
        .with_context(|| format!("no user named {username:?}"))
}

/// Sets a generated password (marked to be changed), ends the sessions;
/// returns the password.
async fn admin_reset_password(db: &db::Db, username: &str) -> anyhow::Result<String> {
    let user = admin_user(db, username).await?;
    let password = auth::password::generate_password();
    let p = password.clone();
    let hash = tokio::task::spawn_blocking(move || auth::password::hash_password(&p))
        .await
        .context("hashing the password")??;
    let id = user.id;
    let now = db::unix_now();
    let changed = db
        .run(move |db| {
            let changed = db.set_password(id, &hash, true, now)?;
            db.revoke_user_sessions(id)?;
            audit_cli(
                db,
                "user.password_reset",
                &format!("user:{}", user.username),
                now,
            );
            Ok(changed)
        })
        .await?;
    anyhow::ensure!(changed, "no user named {username:?}");
    Ok(password)
}

/// Removes the TOTP of `username` and ends the sessions.
async fn admin_reset_totp(db: &db::Db, username: &str) -> anyhow::Result<()> {
    let user = admin_user(db, username).await?;
    let id = user.id;
    let now = db::unix_now();
    let changed = db
        .run(move |db| {
            let changed = db.reset_totp(id, now)?;
            db.revoke_user_sessions(id)?;
            audit_cli(
                db,
                "user.totp_reset",
                &format!("user:{}", user.username),
                now,
            );
            Ok(changed)
        })
        .await?;
    anyhow::ensure!(changed, "no user named {username:?}");
    Ok(())
}

/// An audit entry by the command line (`actor` = `cli`); a failure is only reported.
fn audit_cli(db: &db::Db, action: &'static str, target: &str, now: i64) {
    let written = db.audit(&db::NewAudit {
        at: now,
        actor: "cli",
        action,
        target: Some(target),
        ..db::NewAudit::default()
    });
    if let Err(e) = written {
        eprintln!("audit entry not written: {e}");
    }
}

fn token_create(path: Option<PathBuf>, name: String) -> ExitCode {
    let made = with_store(path.as_ref(), |db| {
        let name = name.clone();
        async move { anyhow::Ok(api::issue_token(&db, name).await?) }
    });
    let made = match made {
        Ok(made) => made,
        Err(code) => return code,
    };
    match made {
        Ok((_, token)) => {
            println!("{token}");
            eprintln!("Token {name} created; it is shown only this once.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot create the token: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: Option<PathBuf>) -> ExitCode {
    let Some(path) = path else {
        eprintln!("check needs --config FILE");
        return ExitCode::from(2);
    };
    match config::Config::load(&path) {
        Ok(cfg) => {
            // CA files are read when a destination connects; check them now too.
            let mut bad_ca = false;
            for (i, s) in cfg.streams.iter().enumerate() {
                for (j, p) in s.push.iter().enumerate() {
                    let Some(ca) = &p.tls_ca_file else { continue };
                    if let Err(e) = cthulhu_rtmp::tls::check_ca_file(ca) {
                        eprintln!(
                            "{}: streams[{i}].push[{j}].tls_ca_file: {e}",
                            path.display()
                        );
                        bad_ca = true;
                    }
                }
            }
            if bad_ca {
                return ExitCode::FAILURE;
            }
            let dests: usize = cfg.streams.iter().map(|s| s.push.len()).sum();
            println!(
                "{}: OK ({} stream(s), {} destination(s))",
                path.display(),
                cfg.streams.len(),
                dests
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-threaded runtime, or the exit code after saying why there is none.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

fn probe(url: &str, timeout: u64, tls_ca_file: Option<PathBuf>) -> ExitCode {
    let parsed = match cthulhu_rtmp::RtmpUrl::parse(url) {
        Ok(u) => u,
        Err(e) => {
            let shown = cthulhu_core::supervisor::redact_url(url);
            eprintln!("invalid url: {shown}: {e}");
            return ExitCode::from(2);
        }
    };
    if tls_ca_file.is_some() && !parsed.tls {
        eprintln!("--tls-ca-file only applies to rtmps:// URLs");
        return ExitCode::from(2);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let cfg = cthulhu_rtmp::ClientConfig {
        connect_timeout: Duration::from_secs(timeout),
        response_timeout: Duration::from_secs(timeout),
        tls_ca_file,
        ..cthulhu_rtmp::ClientConfig::default()
    };
    println!("Probing {} ...", parsed.redacted());
    match rt.block_on(cthulhu_rtmp::probe(&parsed, &cfg)) {
        Ok(info) => {
            println!(
                "OK: publish accepted (tcp {} ms, handshake {} ms, connect {} ms, publish {} ms{})",
                info.tcp_ms,
                info.handshake_ms,
                info.connect_ms,
                info.publish_ms,
                info.server_version
                    .map(|v| format!(", server {v}"))
                    .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(cthulhu_rtmp::RtmpError::Refused(why)) => {
            println!("REFUSED: {why}");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: Option<PathBuf>, log_format: LogFormat) -> ExitCode {
    let cfg = match &path {
        Some(p) => match config::Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => config::Config::default_embedded(config::DEFAULT_DATA_DIR),
    };
    run::init_tracing(cfg.server.log.as_deref(), log_format == LogFormat::Json);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(run::serve_until_signal(cfg, path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "Server failed");
            ExitCode::FAILURE
        }
    }
}
