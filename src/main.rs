//! The `otpgate` command: parses arguments, loads settings, sets up logging and calls the
//! library. Every subcommand accepts `-c/--config FILE`, before or after its name.

use std::io::{BufRead, IsTerminal, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use zeroize::Zeroizing;

use otpgate::appliance::{self, open_services, Services};
use otpgate::audit::{self, Who};
use otpgate::clock::{Clock, SystemClock};
use otpgate::config::{LogFormat, Settings};
use otpgate::otp::import::parse_file;
use otpgate::store::{Token, User};
use otpgate::token::{Actor, Changed, TokenError, TokenService, TokenState};
use otpgate::users::{self, Profile};

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
        /// Identity assurance level the user was proofed to (2 or 3).
        #[arg(long, default_value_t = 2)]
        level: u8,
    },
    /// Import users from CSV `username,password_hash,email,first,last`.
    Import { file: PathBuf },
    /// Show a user, their token and its state (never a secret).
    Show {
        username: String,
        #[command(flatten)]
        output: Output,
    },
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
    },
    /// Renew a token: its expiry date moves `lifecycle.renewal_years` after the date it had.
    Renew { serial: String },
    /// Lift the blocks on registration and resync after too many failed attempts.
    Reset {
        serial: String,
        #[arg(long, default_value = "")]
        reason: String,
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
        Command::Serve => serve(settings),
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
            let filter = audit::Filter {
                username: user,
                serial,
                ..audit::Filter::default()
            };
            audit_command(&settings, &filter, limit, output.json)
        }
    }
}

fn serve(settings: Settings) -> Result<()> {
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
    runtime.block_on(appliance::serve(
        settings,
        return_free_memory,
        appliance::termination_signal(),
    ))?;
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
    let services = open_services(settings)?;
    let store = services.store.as_ref();
    match command {
        UserCommand::Add {
            username,
            password_stdin: _,
            email,
            first,
            last,
            level,
        } => {
            let password = read_stdin_line("the password")?;
            let profile = Profile {
                email,
                first_name: first,
                last_name: last,
            };
            users::add_user(
                store,
                &username,
                password.as_bytes(),
                profile,
                level,
                &settings.password.argon2,
                SystemClock.now(),
            )?;
            store.sync()?;
            println!("user {username} added");
        }
        UserCommand::Import { file } => {
            let reader = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let count = users::import_users(store, reader, SystemClock.now())
                .with_context(|| format!("{}: nothing imported", file.display()))?;
            store.sync()?;
            println!("{count} user(s) imported from {}", file.display());
        }
        UserCommand::Show { username, output } => {
            let Some(user) = store.user(&username)? else {
                bail!("user `{username}` does not exist");
            };
            let token = store.token_of_user(&username)?;
            print_user(&user, token.as_ref(), output.json)?;
        }
    }
    Ok(())
}

fn token_command(settings: &Settings, command: TokenCommand) -> Result<()> {
    // Before the store is opened (seconds for a large one): a refused key fails at once.
    let pskc_key = match &command {
        TokenCommand::Import { key, .. } => key.read()?,
        _ => None,
    };
    let services = open_services(settings)?;
    let now = SystemClock.now();
    match command {
        TokenCommand::Import { file, key: _ } => {
            let content =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let tokens = parse_file(&content, pskc_key.as_ref().map(|k| k.as_slice()))
                .with_context(|| format!("{}: nothing imported", file.display()))?;
            let count = services
                .tokens
                .import(tokens, now)
                .with_context(|| format!("{}: nothing imported", file.display()))?;
            services.store.sync()?;
            println!("{count} token(s) imported from {}", file.display());
        }
        TokenCommand::Register {
            serial,
            username,
            otp1,
            otp2,
            license_key,
        } => {
            let codes = (otp1.trim(), otp2.trim());
            let key = license_key.as_deref();
            let done = services
                .tokens
                .register(&serial, &username, codes, key, &cli(), now);
            let changed = durable(&services, done)?;
            println!(
                "token {serial} registered to {username}: {}",
                changed.token.state
            );
        }
        TokenCommand::Resync { serial, otp1, otp2 } => {
            let codes = (otp1.trim(), otp2.trim());
            let done = services.tokens.resync(&serial, codes, &cli(), now);
            let changed = durable(&services, done)?;
            println!("token {serial} resynchronised: {}", changed.token.state);
        }
        TokenCommand::Suspend { serial, by, reason } => {
            let done = services.tokens.suspend(&serial, &by.who(), &reason, now);
            report(durable(&services, done)?);
        }
        TokenCommand::Reinstate { serial, by, reason } => {
            let done = services.tokens.reinstate(&serial, &by.who(), &reason, now);
            report(durable(&services, done)?);
        }
        TokenCommand::Revoke { serial, by, reason } => {
            let done = services.tokens.revoke(&serial, &by.who(), &reason, now);
            report(durable(&services, done)?);
        }
        TokenCommand::Renew { serial } => {
            let done = services.tokens.renew(&serial, &cli(), now);
            let changed = durable(&services, done)?;
            report(changed.clone());
            println!("expires: {}", time_text(changed.token.expires_at));
        }
        TokenCommand::Reset { serial, reason } => {
            let done = services.tokens.reset(&serial, &cli(), &reason, now);
            report(durable(&services, done)?);
        }
        TokenCommand::Show { serial, output } => {
            let Some(token) = services.store.token(&serial)? else {
                bail!("token `{serial}` does not exist");
            };
            print_token(&token, output.json)?;
        }
    }
    Ok(())
}

/// The command line acts as an administrator named `cli` in the audit.
fn cli() -> Who {
    Who::admin("cli")
}

impl ActingAs {
    fn who(self) -> Who {
        match self {
            ActingAs::Admin => cli(),
            ActingAs::User => Who {
                actor: Actor::User,
                name: "cli (for the user)".into(),
            },
        }
    }
}

/// A lifecycle action's result, made durable before it is reported.
fn durable(services: &Services, done: Result<Changed, TokenError>) -> Result<Changed> {
    let changed = done?;
    services.store.sync()?;
    Ok(changed)
}

fn report(changed: Changed) {
    let t = &changed.transition;
    println!(
        "token {}: {} -> {} ({})",
        changed.token.serial, t.from, t.to, t.event
    );
}

fn audit_command(
    settings: &Settings,
    filter: &audit::Filter,
    limit: usize,
    json: bool,
) -> Result<()> {
    let services = open_services(settings)?;
    let entries = audit::query(services.store.as_ref(), filter, limit)?;
    if json {
        let rows: Vec<_> = entries.iter().map(audit_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for e in &entries {
        let state = |s: Option<TokenState>| s.map_or("-", TokenState::as_str);
        println!(
            "{} {} by {} ({}) serial={} user={} {} -> {} {}",
            time_text(Some(e.at)),
            e.action,
            e.by,
            e.actor,
            e.serial.as_deref().unwrap_or("-"),
            e.username.as_deref().unwrap_or("-"),
            state(e.from),
            state(e.to),
            e.reason
        );
    }
    Ok(())
}

fn audit_json(e: &audit::Entry) -> serde_json::Value {
    serde_json::json!({
        "at": time_text(Some(e.at)),
        "actor": e.actor.to_string(),
        "by": e.by,
        "action": e.action,
        "serial": e.serial,
        "username": e.username,
        "from": e.from.map(TokenState::as_str),
        "to": e.to.map(TokenState::as_str),
        "reason": e.reason,
    })
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
    let name = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("cannot open key file {name}"))?;
    let mode = file
        .metadata()
        .with_context(|| format!("cannot stat key file {name}"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "key file {name} is accessible to group or others (mode {:04o}); chmod 600 it",
            mode & 0o7777
        );
    }
    // Room for one byte past the limit, so the buffer never grows (and leaves a copy behind).
    let mut text = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE + 2));
    file.take(MAX_KEY_FILE as u64 + 1)
        .read_to_end(&mut text)
        .with_context(|| format!("cannot read key file {name}"))?;
    if text.len() > MAX_KEY_FILE {
        bail!("key file {name} is longer than {MAX_KEY_FILE} bytes: not a hex key");
    }
    decode_key(&text, &format!("key file {name}"))
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

fn time_text(unix: Option<u64>) -> String {
    match unix {
        Some(secs) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        }
        None => "never".into(),
    }
}

/// The state a login would see now: an Active token past its expiry date shows Expired, as
/// the login path reports it (one rule, `TokenService::effective_state`).
fn shown_state(token: &Token) -> TokenState {
    TokenService::effective_state(token, SystemClock.now())
}

fn token_json(token: &Token) -> serde_json::Value {
    serde_json::json!({
        "serial": token.serial,
        "state": shown_state(token).as_str(),
        "owner": token.owner,
        "kind": match token.kind {
            otpgate::otp::TokenKind::Totp { .. } => "totp",
            otpgate::otp::TokenKind::Hotp => "hotp",
        },
        "period": match token.kind {
            otpgate::otp::TokenKind::Totp { period } => Some(period),
            otpgate::otp::TokenKind::Hotp => None,
        },
        "algorithm": token.algorithm.as_str(),
        "digits": token.digits,
        "next_counter": matches!(token.kind, otpgate::otp::TokenKind::Hotp).then_some(token.counter),
        "last_step": token.last_step,
        "drift_steps": token.drift,
        "failures": token.failures,
        "last_auth": token.last_auth.map(|t| time_text(Some(t))),
        "created_at": time_text(Some(token.created_at)),
        "state_changed_at": time_text(Some(token.state_changed_at)),
        "expires_at": token.expires_at.map(|t| time_text(Some(t))),
    })
}

fn print_token(token: &Token, json: bool) -> Result<()> {
    let value = token_json(token);
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("serial:        {}", token.serial);
    println!("state:         {}", shown_state(token));
    println!("owner:         {}", token.owner.as_deref().unwrap_or("-"));
    println!(
        "type:          {} {} digits, {}",
        value["kind"].as_str().unwrap_or("-"),
        token.digits,
        token.algorithm.as_str()
    );
    match token.kind {
        otpgate::otp::TokenKind::Totp { period } => {
            println!("period:        {period} s");
            let last = token.last_step.map_or("-".into(), |s| s.to_string());
            println!("last step:     {last} (drift {} steps)", token.drift);
        }
        otpgate::otp::TokenKind::Hotp => println!("next counter:  {}", token.counter),
    }
    println!("failures:      {}", token.failures);
    println!("last auth:     {}", time_text(token.last_auth));
    println!("state since:   {}", time_text(Some(token.state_changed_at)));
    println!(
        "expires:       {}",
        token.expires_at.map_or("-".into(), |t| time_text(Some(t)))
    );
    Ok(())
}

fn print_user(user: &User, token: Option<&Token>, json: bool) -> Result<()> {
    let scheme = otpgate::auth::password::PasswordHash::parse(&user.password_hash)
        .map(|h| h.scheme())
        .unwrap_or("unusable");
    if json {
        let value = serde_json::json!({
            "username": user.username,
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "assurance_level": user.assurance_level,
            "password_scheme": scheme,
            "created_at": time_text(Some(user.created_at)),
            "token": token.map(token_json),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("username:      {}", user.username);
    let name = [user.first_name.as_deref(), user.last_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "name:          {}",
        if name.is_empty() { "-" } else { &name }
    );
    println!("email:         {}", user.email.as_deref().unwrap_or("-"));
    println!("level:         {}", user.assurance_level);
    println!("password:      {scheme}");
    match token {
        Some(token) => {
            println!("token:         {} ({})", token.serial, shown_state(token));
            println!("failures:      {}", token.failures);
            println!("last auth:     {}", time_text(token.last_auth));
        }
        None => println!("token:         none"),
    }
    Ok(())
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
