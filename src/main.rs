//! The `otpgate` command: parses arguments, loads settings, sets up logging and calls the
//! library. Every subcommand accepts `-c/--config FILE`, before or after its name.

use std::io::{BufRead, IsTerminal, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use axum::http::Method;
use clap::{Args, Parser, Subcommand};

use zeroize::Zeroizing;

mod cli;

use otpgate::appliance::{self, open_services};
use otpgate::clock::{Clock, SystemClock};
use otpgate::config::{LogFormat, Settings};
use otpgate::otp::import::{import_file, ImportReport, PskcKeys};
use otpgate::users;

/// mimalloc: the hot path allocates many small, short-lived buffers (packets, records, sled's
/// node copies), which glibc's allocator serves markedly slower (see README "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns to the OS the memory freed but still held by the allocator: opening a large store
/// (sled's recovery) frees tens of MiB from threads that then end, which mimalloc would keep
/// until the next allocations of those size classes.
fn return_free_memory() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// mimalloc v3's `mi_option_purge_delay` (libmimalloc-sys 0.1.49 names the options in v2's
/// numbering, where 15 was `reset_delay`; the test below checks the number still holds).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory mimalloc no longer needs goes back to the OS at once rather than after a second (the
/// vendored v3's default): under a steady login storm something is always just freed, so the
/// delay kept about 20 MiB resident for nothing (1 M users, README "Performance").
fn purge_freed_memory_at_once() {
    // SAFETY: mi_option_set takes integers only and may be called at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

/// Turns transparent huge pages off for this process. mimalloc asks for them, and a 2 MiB page
/// is resident as soon as one byte of it is touched: with a million users that cost ~40 MiB of
/// RSS for ~10% CPU in the worst case (README "Performance"). Best effort.
fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[derive(Parser)]
#[command(
    name = "otpgate",
    version,
    about = "RADIUS two-factor authentication for hardware OATH tokens"
)]
struct Cli {
    /// Configuration file (TOML). Without it, embedded defaults that serve 127.0.0.1:1812.
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the RADIUS server until SIGTERM/SIGINT.
    Serve,
    /// Validate the configuration and exit (non-zero on any problem).
    CheckConfig,
    /// Provision and inspect users.
    #[command(subcommand)]
    User(UserCommand),
    /// Import, register, inspect and manage the lifecycle of hardware tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Admin API bearer tokens.
    #[command(subcommand)]
    AdminToken(AdminTokenCommand),
    /// Show the audit trail of lifecycle and admin actions, oldest first.
    Audit {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        serial: Option<String>,
        /// Most entries shown.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from the first line of standard input.
    Add {
        username: String,
        /// Read the password from standard input (required: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        first: Option<String>,
        #[arg(long)]
        last: Option<String>,
        /// The user's organization (sponsorships, `reply_attributes_by_organization`).
        #[arg(long)]
        organization: Option<String>,
        /// Identity assurance level the user was proofed to (2 or 3).
        #[arg(long, default_value_t = 2)]
        level: u8,
    },
    /// Set a user's password (read from the first line of standard input), replacing a
    /// temporary one set when the user's token was revoked.
    Password {
        username: String,
        /// Read the password from standard input (required: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Connect an account to its parent: it logs in with the parent's token (names and e-mail
    /// address must match exactly; it has no token of its own).
    Connect {
        username: String,
        #[arg(long = "to", value_name = "PARENT")]
        parent: String,
    },
    /// Record that a user accepted an application's terms (needed for a sponsored
    /// registration).
    Terms {
        username: String,
        #[arg(long)]
        application: String,
    },
    /// Import users: CSV `username,password_hash,email,first,last`, or a FreeRADIUS
    /// `users`/`authorize` file (passwords, and `TOTP-Secret` as TOTP tokens).
    Import {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = UserFormat::Csv)]
        format: UserFormat,
        /// With --format freeradius: the digits of the TOTP tokens (rlm_totp's otp_length).
        #[arg(long, default_value_t = 6)]
        totp_digits: u8,
        /// With --format freeradius: their time step in seconds (rlm_totp's time_step).
        #[arg(long, default_value_t = 30)]
        totp_step: u64,
    },
    /// Show a user, their token and its state (never a secret).
    Show {
        username: String,
        #[command(flatten)]
        output: Output,
    },
}

/// The formats `user import` reads.
#[derive(Clone, Copy, clap::ValueEnum)]
enum UserFormat {
    Csv,
    Freeradius,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Import seeds: CSV `serial,secret,kind,digits,step[,owner]` or PSKC (RFC 6030) XML.
    Import {
        file: PathBuf,
        #[command(flatten)]
        key: PskcKey,
    },
    /// Bind a token to a user with two consecutive codes (guide: "Register Your Token").
    Register {
        serial: String,
        username: String,
        #[arg(long)]
        otp1: String,
        #[arg(long)]
        otp2: String,
        /// The license key that pays for the token (without one: the user's open sponsorship,
        /// or none as an administrator's registration).
        #[arg(long)]
        license_key: Option<String>,
    },
    /// Re-synchronise (and unlock) a token with two consecutive codes (guide: "Reactivate").
    Resync {
        serial: String,
        #[arg(long)]
        otp1: String,
        #[arg(long)]
        otp2: String,
    },
    /// Show a token's state, owner, last authentication and failure count (never the seed).
    Show {
        serial: String,
        #[command(flatten)]
        output: Output,
    },
    /// List tokens, optionally by state, owner or expiry.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        /// RFC 3339 time or YYYY-MM-DD.
        #[arg(long)]
        expiring_before: Option<String>,
        /// Continue after this serial.
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        output: Output,
    },
    /// Suspend a token: it cannot log in until reinstated (guide: "Suspended Tokens").
    Suspend {
        serial: String,
        /// Who suspends: an administrator (only an administrator may reinstate) or the user.
        #[arg(long, value_enum, default_value_t = ActingAs::Admin)]
        by: ActingAs,
        #[arg(long)]
        reason: String,
    },
    /// Lift a suspension (a user may lift only one they made).
    Reinstate {
        serial: String,
        #[arg(long, value_enum, default_value_t = ActingAs::Admin)]
        by: ActingAs,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Revoke a token for good (guide: "Revoke OTP Hardware Token"); its owner may then
    /// register another, and its serial can never be registered again.
    Revoke {
        serial: String,
        #[arg(long, value_enum, default_value_t = ActingAs::Admin)]
        by: ActingAs,
        #[arg(long)]
        reason: String,
        /// The token was lost: a level-3 owner must repeat identity proofing.
        #[arg(long)]
        lost: bool,
    },
    /// Renew a token: its expiry date moves `lifecycle.renewal_years` after the date it had.
    Renew {
        serial: String,
        #[command(flatten)]
        output: Output,
    },
    /// Lift the blocks on registration and resync after too many failed attempts.
    Reset {
        serial: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand)]
enum AdminTokenCommand {
    /// Create a bearer token for the admin API; it is printed once, as the last word of the
    /// last line, and stored hashed.
    Create {
        name: String,
        /// `admin` (everything), `org-admin` (users and tokens of its organization) or
        /// `helpdesk` (read, resync, suspend, reinstate, reset).
        #[arg(long)]
        role: String,
        /// The organization of an `org-admin`.
        #[arg(long)]
        organization: Option<String>,
    },
}

/// On whose behalf a lifecycle command acts (the state machine's rules differ).
#[derive(Clone, Copy, clap::ValueEnum)]
enum ActingAs {
    Admin,
    User,
}

/// Where `token import` reads the pre-shared key (hex) of PSKC files whose secrets are
/// encrypted: at most one of the three.
#[derive(Args)]
#[group(multiple = false)]
struct PskcKey {
    /// Pre-shared key (hex) for PSKC files whose secrets are encrypted. Visible to other local
    /// users (process list) and kept in shell history: prefer --pskc-key-file or
    /// --pskc-key-stdin.
    #[arg(long, value_name = "HEX")]
    pskc_key: Option<String>,
    /// Read the pre-shared key (hex) from a file only its owner can access (mode 0600 or
    /// stricter).
    #[arg(long, value_name = "PATH")]
    pskc_key_file: Option<PathBuf>,
    /// Read the pre-shared key (hex) from the first line of standard input.
    #[arg(long)]
    pskc_key_stdin: bool,
    /// For a PSKC file encrypted with a password (PBKDF2, RFC 6030 section 6.2): read the
    /// password from the first line of a file only its owner can access (mode 0600).
    #[arg(long, value_name = "PATH")]
    pskc_password_file: Option<PathBuf>,
}

#[derive(Args)]
struct Output {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    purge_freed_memory_at_once();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otpgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(settings, cli.config),
        Command::CheckConfig => {
            println!(
                "{}: OK ({} listen address(es), {} client(s), {} application(s))",
                settings.source_name,
                settings.radius.listen.len(),
                settings.radius.clients.len(),
                settings.applications.len()
            );
            for (client, why) in settings.weak_secrets() {
                println!("warning: the secret of client `{client}` {why}");
            }
            Ok(())
        }
        Command::User(command) => {
            init_cli_logging();
            user_command(&settings, command)
        }
        Command::Token(command) => {
            init_cli_logging();
            token_command(&settings, command)
        }
        Command::Audit {
            user,
            serial,
            limit,
            output,
        } => {
            init_cli_logging();
            let query = serde_urlencoded::to_string([
                ("user", user.unwrap_or_default()),
                ("serial", serial.unwrap_or_default()),
                ("limit", limit.to_string()),
            ])?;
            let answer = cli::ask(
                &settings,
                Method::GET,
                &format!("/api/v1/audit?{query}"),
                None,
            )?;
            print(&answer, output.json, cli::render::audit)
        }
        Command::AdminToken(AdminTokenCommand::Create {
            name,
            role,
            organization,
        }) => {
            init_cli_logging();
            let body =
                serde_json::json!({"name": name, "role": role, "organization": organization});
            let answer = cli::ask(&settings, Method::POST, "/api/v1/admin-tokens", Some(body))?;
            let token = answer["token"].as_str().unwrap_or_default();
            println!("admin token `{name}` ({role}) created; it is shown only once:");
            println!("{token}");
            Ok(())
        }
    }
}

/// Prints an API answer: as JSON, or rendered as text.
fn print(
    answer: &serde_json::Value,
    json: bool,
    text: fn(&serde_json::Value) -> String,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(answer)?);
    } else {
        println!("{}", text(answer));
    }
    Ok(())
}

fn serve(settings: Settings, config: Option<PathBuf>) -> Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(&settings.log.level).context("log.level")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    tracing::info!(config = %settings.source_name, version = env!("CARGO_PKG_VERSION"), "starting");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        // Before anything starts: a stop requested during start-up waits for it.
        let shutdown = appliance::termination_signal();
        appliance::serve(
            settings,
            move || Settings::load(config.as_deref()),
            return_free_memory,
            shutdown,
        )
        .await
    })?;
    Ok(())
}

fn init_cli_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn user_command(settings: &Settings, command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Add {
            username,
            password_stdin: _,
            email,
            first,
            last,
            organization,
            level,
        } => {
            let password = read_stdin_line("the password")?;
            let body = serde_json::json!({
                "username": username,
                "password": password.as_str(),
                "email": email,
                "first_name": first,
                "last_name": last,
                "assurance_level": level,
                "organization": organization,
            });
            cli::ask(settings, Method::POST, "/api/v1/users", Some(body))?;
            println!("user {username} added");
        }
        UserCommand::Password {
            username,
            password_stdin: _,
        } => {
            let password = read_stdin_line("the password")?;
            let path = format!("/api/v1/users/{}/password", cli::segment(&username));
            let body = serde_json::json!({"password": password.as_str()});
            cli::ask(settings, Method::POST, &path, Some(body))?;
            println!("password of {username} set");
        }
        UserCommand::Connect { username, parent } => {
            let path = format!("/api/v1/users/{}/connect", cli::segment(&username));
            cli::ask(
                settings,
                Method::POST,
                &path,
                Some(serde_json::json!({"parent": parent})),
            )?;
            println!("{username} now logs in with the token of {parent}");
        }
        UserCommand::Terms {
            username,
            application,
        } => {
            let path = format!("/api/v1/users/{}/terms", cli::segment(&username));
            let body = serde_json::json!({"application": application});
            cli::ask(settings, Method::POST, &path, Some(body))?;
            println!("{username} accepted the terms of {application}");
        }
        UserCommand::Import {
            file,
            format: UserFormat::Csv,
            ..
        } => {
            let services = open_services(settings)?;
            let reader = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let count = users::import_users(services.store.as_ref(), reader, SystemClock.now())
                .with_context(|| format!("{}: nothing imported", file.display()))?;
            services.store.sync()?;
            println!("{count} user(s) imported from {}", file.display());
        }
        UserCommand::Import {
            file,
            format: UserFormat::Freeradius,
            totp_digits,
            totp_step,
        } => {
            let totp = users::TotpParameters::new(totp_digits, totp_step)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let services = open_services(settings)?;
            let done = users::import_freeradius(
                &services.tokens,
                &file.display().to_string(),
                &text,
                &settings.password.argon2,
                totp,
                SystemClock.now(),
            )
            .with_context(|| format!("{}: nothing imported", file.display()))?;
            services.store.sync()?;
            println!(
                "{} user(s) and {} TOTP token(s) imported from {}",
                done.users,
                done.tokens,
                file.display()
            );
            for skipped in &done.skipped_entries {
                println!(
                    "skipped line {}: {}: {}",
                    skipped.line, skipped.what, skipped.why
                );
            }
            for (user, attributes) in &done.skipped_attributes {
                println!("{user}: not used: {}", attributes.join(", "));
            }
        }
        UserCommand::Show { username, output } => {
            let path = format!("/api/v1/users/{}", cli::segment(&username));
            let answer = cli::ask(settings, Method::GET, &path, None)?;
            print(&answer, output.json, cli::render::user)?;
        }
    }
    Ok(())
}

fn token_command(settings: &Settings, command: TokenCommand) -> Result<()> {
    let token_path =
        |serial: &str, action: &str| format!("/api/v1/tokens/{}{action}", cli::segment(serial));
    let act = |serial: &str, action: &str, body: serde_json::Value| -> Result<()> {
        let answer = cli::ask(
            settings,
            Method::POST,
            &token_path(serial, action),
            Some(body),
        )?;
        println!("{}", cli::render::action(&answer));
        Ok(())
    };
    match command {
        TokenCommand::Import { file, key } => {
            // Before the store is opened (seconds for a large one): a refused key fails at once.
            let pskc_key = key.read()?;
            let password = key.password()?;
            let services = open_services(settings)?;
            let content =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let keys = PskcKeys {
                pre_shared_key: pskc_key.as_deref().map(Vec::as_slice),
                password: password.as_deref().map(Vec::as_slice),
            };
            let ImportReport {
                tokens,
                skipped,
                warnings,
            } = import_file(&content, &keys)
                .with_context(|| format!("{}: nothing imported", file.display()))?;
            let hotp = tokens
                .iter()
                .filter(|t| matches!(t.kind, otpgate::otp::TokenKind::Hotp))
                .count();
            let totp = tokens.len() - hotp;
            let count = services
                .tokens
                .import(tokens, SystemClock.now())
                .with_context(|| format!("{}: nothing imported", file.display()))?;
            services.store.sync()?;
            println!(
                "{count} token(s) imported from {} ({hotp} HOTP, {totp} TOTP)",
                file.display()
            );
            for key in &skipped {
                println!("skipped: {key}");
            }
            for warning in &warnings {
                println!("warning: {warning}");
            }
        }
        TokenCommand::Register {
            serial,
            username,
            otp1,
            otp2,
            license_key,
        } => {
            let body = serde_json::json!({
                "username": username,
                "otp1": otp1,
                "otp2": otp2,
                "license_key": license_key,
            });
            let answer = cli::ask(
                settings,
                Method::POST,
                &token_path(&serial, "/register"),
                Some(body),
            )?;
            println!(
                "token {serial} registered to {username}: {}",
                answer["to"].as_str().unwrap_or("-")
            );
        }
        TokenCommand::Resync { serial, otp1, otp2 } => {
            let body = serde_json::json!({"otp1": otp1, "otp2": otp2});
            let answer = cli::ask(
                settings,
                Method::POST,
                &token_path(&serial, "/resync"),
                Some(body),
            )?;
            println!(
                "token {serial} resynchronised: {}",
                answer["to"].as_str().unwrap_or("-")
            );
        }
        TokenCommand::Suspend { serial, by, reason } => {
            act(
                &serial,
                "/suspend",
                serde_json::json!({"by": by.name(), "reason": reason}),
            )?;
        }
        TokenCommand::Reinstate { serial, by, reason } => {
            act(
                &serial,
                "/reinstate",
                serde_json::json!({"by": by.name(), "reason": reason}),
            )?;
        }
        TokenCommand::Revoke {
            serial,
            by,
            reason,
            lost,
        } => {
            act(
                &serial,
                "/revoke",
                serde_json::json!({"by": by.name(), "reason": reason, "lost": lost}),
            )?;
        }
        TokenCommand::Renew { serial, output } => {
            let answer = cli::ask(settings, Method::POST, &token_path(&serial, "/renew"), None)?;
            if output.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("{}", cli::render::action(&answer));
                println!(
                    "expires: {}",
                    answer["token"]["expires_at"].as_str().unwrap_or("-")
                );
            }
        }
        TokenCommand::Reset { serial, reason } => {
            act(&serial, "/reset", serde_json::json!({"reason": reason}))?;
        }
        TokenCommand::Show { serial, output } => {
            let answer = cli::ask(settings, Method::GET, &token_path(&serial, ""), None)?;
            print(&answer, output.json, cli::render::token)?;
        }
        TokenCommand::List {
            state,
            owner,
            expiring_before,
            after,
            limit,
            output,
        } => {
            let query = serde_urlencoded::to_string(
                [
                    ("state", state),
                    ("owner", owner),
                    ("expiring_before", expiring_before),
                    ("after", after),
                    ("limit", Some(limit.to_string())),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect::<Vec<_>>(),
            )?;
            let answer = cli::ask(
                settings,
                Method::GET,
                &format!("/api/v1/tokens?{query}"),
                None,
            )?;
            print(&answer, output.json, cli::render::token_list)?;
        }
    }
    Ok(())
}

impl ActingAs {
    fn name(self) -> &'static str {
        match self {
            ActingAs::Admin => "admin",
            ActingAs::User => "user",
        }
    }
}

/// The first line of standard input (at most 4 KiB), without its line ending; `what` names
/// the secret in the error.
fn read_stdin_line(what: &str) -> Result<Zeroizing<String>> {
    // Sized for the limit, so the line never grows (and leaves a copy behind).
    let mut line = Zeroizing::new(String::with_capacity(4096));
    std::io::stdin()
        .lock()
        .take(4096)
        .read_line(&mut line)
        .with_context(|| format!("reading {what} from standard input"))?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_string());
    Ok(trimmed)
}

/// The longest key file accepted (a 256-bit key is 64 hex digits).
const MAX_KEY_FILE: usize = 1024;

impl PskcKey {
    /// The password of `--pskc-password-file`, or None. Never printed or logged.
    fn password(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let Some(path) = &self.pskc_password_file else {
            return Ok(None);
        };
        let text = read_private_file(path, "password file")?;
        let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
        let password = first.strip_suffix(b"\r").unwrap_or(first);
        if password.is_empty() {
            bail!("password file {} is empty", path.display());
        }
        Ok(Some(Zeroizing::new(password.to_vec())))
    }

    /// The key from whichever source was given, or None. Never printed or logged.
    fn read(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let key = if let Some(hex) = &self.pskc_key {
            decode_key(hex.as_bytes(), "--pskc-key")?
        } else if let Some(path) = &self.pskc_key_file {
            read_key_file(path)?
        } else if self.pskc_key_stdin {
            let line = read_stdin_line("the PSKC key")?;
            decode_key(line.as_bytes(), "the PSKC key on standard input")?
        } else {
            return Ok(None);
        };
        Ok(Some(key))
    }
}

/// Reads a hex key from `path`, refusing the file if its mode gives group or others any
/// access (checked on the opened file): the key decrypts every seed shipped with it.
fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let text = read_private_file(path, "key file")?;
    decode_key(&text, &format!("key file {}", path.display()))
}

/// Reads a small secret file (`what` names it in errors), refusing it if its mode gives group
/// or others any access (checked on the opened file).
fn read_private_file(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let name = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {what} {name}"))?;
    let mode = file
        .metadata()
        .with_context(|| format!("cannot stat {what} {name}"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{what} {name} is accessible to group or others (mode {:04o}); chmod 600 it",
            mode & 0o7777
        );
    }
    // Room for one byte past the limit, so the buffer never grows (and leaves a copy behind).
    let mut text = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE + 2));
    file.take(MAX_KEY_FILE as u64 + 1)
        .read_to_end(&mut text)
        .with_context(|| format!("cannot read {what} {name}"))?;
    if text.len() > MAX_KEY_FILE {
        bail!("{what} {name} is longer than {MAX_KEY_FILE} bytes");
    }
    Ok(text)
}

/// Decodes a hex key (upper or lower case, surrounding whitespace ignored); `source` names
/// where it came from in the error, which never shows the key.
fn decode_key(text: &[u8], source: &str) -> Result<Zeroizing<Vec<u8>>> {
    let hex = text.trim_ascii();
    if hex.is_empty() {
        bail!("{source} is empty: expected the pre-shared key in hex");
    }
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex)
        .map(Zeroizing::new)
        .map_err(|e| anyhow!("{source} is not a hex key ({e})"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn purge_delay_is_the_option_it_is_said_to_be() {
        // Its default in the vendored mimalloc v3 (src/options.c) is 1000 (ms); the options
        // numbered around it default to 1 and 0. The environment can override it.
        if ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
            .iter()
            .any(|name| std::env::var_os(name).is_some())
        {
            return;
        }
        // SAFETY: mi_option_get takes an integer only.
        let value = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(value, 1000);
    }
}
