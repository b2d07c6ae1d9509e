//! Settings: the TOML file (or the embedded defaults) plus `OTPGATE__SECTION__KEY` environment
//! overrides, read with the `config` crate into a raw, unknown-key-refusing form, then checked
//! and built into [`Settings`], the only form the rest of the appliance sees.
//!
//! `otpgate check-config` runs exactly [`Settings::load`]; every problem it reports names the
//! file, the key and what is wrong with it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::auth::password::Argon2Params;
use crate::radius::dictionary::{AttributeValue, Dictionary};

const ENV_PREFIX: &str = "OTPGATE__";
const CLIENTS_ENV_PREFIX: &str = "OTPGATE__RADIUS__CLIENTS__";
const APPLICATIONS_ENV_PREFIX: &str = "OTPGATE__APPLICATIONS__";

/// The conventional localhost secret (FreeRADIUS ships the same); for trying out only.
pub const DEFAULT_CLIENT_SECRET: &str = "testing123";
/// Shortest shared secret accepted (RFC 2865 section 3 asks for at least 16 octets; shorter
/// ones are allowed for lab use with a warning, below this they are refused).
const MIN_SECRET_LEN: usize = 8;
/// The shared secret of RADIUS over TLS (RFC 6614 section 2.3).
pub const RADSEC_SECRET: &str = "radsec";
const RECOMMENDED_SECRET_LEN: usize = 16;

/// Why settings could not be loaded. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {file}: {reason}")]
    Unreadable { file: PathBuf, reason: String },
    #[error("{source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: key `{key}`: {problem}")]
    Invalid {
        source_name: String,
        key: String,
        problem: String,
    },
}

/// Checked settings of one otpgate instance.
#[derive(Debug, Clone)]
pub struct Settings {
    pub storage: StorageSettings,
    pub radius: RadiusSettings,
    pub radsec: RadsecSettings,
    pub applications: Vec<std::sync::Arc<Application>>,
    pub otp: OtpSettings,
    pub lifecycle: LifecycleSettings,
    pub admin: AdminSettings,
    pub password: PasswordSettings,
    pub throttle: ThrottleSettings,
    pub log: LogSettings,
    pub notify: NotifySettings,
    pub proofing: crate::proofing::ProofingSettings,
    /// `[[upstreams]]`: the site's RADIUS servers and directories an application may have check
    /// passwords (its `first_factor`).
    pub upstreams: Vec<UpstreamSettings>,
    /// Where these settings came from: the file path, or "embedded defaults".
    pub source_name: String,
}

#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Directory of the sled database.
    pub path: PathBuf,
    /// AES-256 key that seals token seeds; created with mode 0600 on first start.
    pub key_file: PathBuf,
    /// Memory for cached records, in MiB.
    pub cache_mb: u64,
}

#[derive(Debug, Clone)]
pub struct RadiusSettings {
    pub listen: Vec<SocketAddr>,
    /// Accounting (RFC 2866) addresses, port 1813 by convention; none: no accounting.
    pub accounting_listen: Vec<SocketAddr>,
    pub require_message_authenticator: bool,
    pub clients: Vec<ClientSettings>,
    /// Requests evaluated at once; past this, new requests are dropped and counted.
    pub max_in_flight: usize,
    /// How long a reply stays in the RFC 5080 duplicate cache.
    pub dedup_window: Duration,
    /// Sockets (and threads) per listen address, sharing the port with `SO_REUSEPORT`.
    pub workers: usize,
    /// How long after its request arrived an Access-Reject leaves at the earliest (FreeRADIUS
    /// `reject_delay`): reply time then tells nothing about which check failed. Zero: off.
    pub reject_delay: Duration,
    /// How long the State of an Access-Challenge may be answered (`otp_mode` challenge, auto).
    pub challenge_timeout: Duration,
    /// A folder of FreeRADIUS-format dictionaries (its `dictionary` file) read on top of the
    /// shipped ones; none: the shipped ones only.
    pub dictionaries: Option<PathBuf>,
}

/// RADIUS over TLS (RFC 6614), `[radsec]`: off without `listen`.
#[derive(Debug, Clone, Default)]
pub struct RadsecSettings {
    /// TCP addresses, port 2083 by convention.
    pub listen: Vec<SocketAddr>,
    /// PEM: otpgate's certificate chain and key, and the CA(s) clients' certificates must
    /// chain to.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub client_ca: PathBuf,
}

/// One NAS allowed to send requests (RFC 2865 section 3: identified by source address).
#[derive(Clone)]
pub struct ClientSettings {
    pub name: String,
    pub address: IpNet,
    pub secret: String,
    pub application: String,
    /// A client that connects over RadSec (RFC 6614): the name its certificate carries (DNS
    /// subject alternative name). Such a client is not a UDP client; its secret is `radsec`.
    pub certificate_name: Option<String>,
}

impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSettings")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("secret", &"<redacted>")
            .field("application", &self.application)
            .field("certificate_name", &self.certificate_name)
            .finish()
    }
}

/// Identity assurance level a token's owner was proofed to (guide, "Proofing Upgrade").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AssuranceLevel {
    Two = 2,
    Three = 3,
}

impl AssuranceLevel {
    pub fn from_number(n: u8) -> Option<AssuranceLevel> {
        match n {
            2 => Some(AssuranceLevel::Two),
            3 => Some(AssuranceLevel::Three),
            _ => None,
        }
    }
}

/// How the OTP reaches otpgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpMode {
    /// User-Password carries the password immediately followed by the OTP.
    Append,
    /// User-Password carries the password; the code is asked for with an Access-Challenge and
    /// comes in a second Access-Request with the challenge's State (RFC 2865 section 4.4).
    Challenge,
    /// Append when User-Password ends in a code after a right password, else a challenge when
    /// it is the password alone.
    Auto,
}

/// Who checks the password of an application's users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstFactor {
    /// The password hash in otpgate's store.
    Local,
    /// The `[[upstreams]]` entry of this name.
    Upstream(String),
}

/// One `[[upstreams]]` entry.
#[derive(Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub kind: UpstreamKind,
    /// Per attempt.
    pub timeout: Duration,
    /// Further attempts per server after the first.
    pub retries: u32,
    /// Checks waiting on it at once; more are refused at once.
    pub max_in_flight: usize,
}

#[derive(Clone)]
pub enum UpstreamKind {
    /// RADIUS servers (PAP), tried in order.
    Radius {
        servers: Vec<SocketAddr>,
        secret: String,
        /// Refuse replies without Message-Authenticator (Blast-RADIUS).
        require_message_authenticator: bool,
    },
    /// LDAP servers (ldap:// or ldaps:// URLs), a simple bind as the user.
    Ldap {
        servers: Vec<String>,
        bind_dn_template: String,
    },
}

impl std::fmt::Debug for UpstreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, servers) = match &self.kind {
            UpstreamKind::Radius { servers, .. } => (
                "radius",
                servers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ),
            UpstreamKind::Ldap { servers, .. } => ("ldap", servers.clone()),
        };
        f.debug_struct("UpstreamSettings")
            .field("name", &self.name)
            .field("kind", &kind)
            .field("servers", &servers)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

/// The prompt of an Access-Challenge unless the application sets `challenge_prompt`.
pub const DEFAULT_CHALLENGE_PROMPT: &str = "Enter the code shown on your OTP hardware token.";

/// A protected application: what its clients' users must present.
#[derive(Debug, Clone)]
pub struct Application {
    pub name: String,
    pub required_level: AssuranceLevel,
    pub otp_mode: OtpMode,
    /// Reply-Message of its Access-Challenges.
    pub challenge_prompt: std::sync::Arc<str>,
    /// Who checks its users' passwords.
    pub first_factor: FirstFactor,
    /// `reply_attributes`, encoded (RFC 2865 section 5) for its Access-Accepts; none: none.
    pub reply_attributes: Option<std::sync::Arc<[u8]>>,
    /// `reply_attributes_by_organization`: for a user of one of these organizations (the
    /// `organization` of their profile), the attributes sent instead of `reply_attributes`
    /// (those, with the organization's replacing any of the same name), encoded.
    pub reply_attributes_by_organization: HashMap<String, Option<std::sync::Arc<[u8]>>>,
    /// `token_kinds`: the kinds of token its users may log in with.
    pub token_kinds: TokenKinds,
}

impl Application {
    /// Whether an Accept's attributes depend on the user's organization.
    pub fn attributes_by_organization(&self) -> bool {
        !self.reply_attributes_by_organization.is_empty()
    }
}

/// Which kinds of OATH token an application takes (`token_kinds = ["totp", "hotp"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenKinds {
    pub totp: bool,
    pub hotp: bool,
}

impl TokenKinds {
    pub const ALL: TokenKinds = TokenKinds {
        totp: true,
        hotp: true,
    };

    pub fn allows(self, kind: crate::otp::TokenKind) -> bool {
        match kind {
            crate::otp::TokenKind::Totp { .. } => self.totp,
            crate::otp::TokenKind::Hotp => self.hotp,
        }
    }
}

#[derive(Debug, Clone)]
pub struct OtpSettings {
    /// Consecutive OTP failures (after a right password) that lock the token.
    pub max_failures: u32,
    /// TOTP steps accepted either side of the expected step (RFC 6238 section 5.2).
    pub totp_window: u64,
    /// HOTP counters tried past the expected one (RFC 4226 section 7.4).
    pub hotp_look_ahead: u64,
    /// How far registration/resync searches for two consecutive codes (counters or steps).
    pub resync_window: u64,
}

/// The token lifecycle's rules (guide "Error Conditions", "Renew OTP Hardware Token").
#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    /// Failed registrations (wrong codes) of a token before it is blocked for registration
    /// until an administrator resets it.
    pub registration_attempts: u32,
    /// Failed resyncs of a token before resync is blocked until an administrator resets it.
    pub resync_attempts: u32,
    /// How far a renewal moves the expiry date, from the date it had (not from today).
    pub renewal_years: u32,
    /// Days before the expiry date the owner is told (guide "Renew": 30).
    pub expiry_notice_days: u32,
    /// Days after its expiry date an expired token is revoked (guide "Expired Tokens": a year).
    pub expired_revoke_days: u32,
    /// Days after its suspension a suspended token is revoked (guide "Suspended Tokens": 60).
    pub suspended_revoke_days: u32,
    /// Days before an automatic revocation the owner is reminded (guide: 30, 15 and 3).
    pub revoke_reminder_days: Vec<u32>,
    /// How often the sweeper applies the time rules (it also runs at start).
    pub sweep_interval: Duration,
    /// `[[organizations]]`: the applications each organization subscribes to, whose terms a
    /// sponsored registration needs the user to have accepted (guide "Sponsored Tokens").
    pub subscriptions: BTreeMap<String, Vec<String>>,
}

/// The admin HTTP API (issue 13, "Part 3").
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// Where the API listens; none: only the control socket in the data directory.
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain and private key: HTTPS. Without them, plain HTTP, allowed only on
    /// a loopback address.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct PasswordSettings {
    pub argon2: Argon2Params,
    /// Re-hash imported (non-argon2id) hashes to argon2id after a successful login.
    pub rehash_on_login: bool,
    /// Password hashes computed at once; more requests wait (memory is this × argon2 memory).
    pub max_concurrent_hashes: usize,
}

/// Wrong-password throttling that never touches the token (mass-lockout defence).
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// Attempts without a right password for one user from one source (Calling-Station-Id)
    /// within `window` before that pair must show a valid code first (`auth::throttle`).
    pub user_failures: u32,
    /// Failures from one source across user names (spraying) before it is code first, strict;
    /// the same count through one NAS is logged as a warning (the NAS is never refused).
    pub client_failures: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How notifications leave the outbox (issue 13, "Part 4").
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// The SMTP relay; none: notifications are written to the log instead (without body).
    pub relay: Option<SmtpRelay>,
    /// The sender address.
    pub from: String,
    /// First wait after a failed delivery; it doubles with each failure up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How often the outbox is looked at when nothing woke it.
    pub poll: Duration,
}

#[derive(Debug, Clone)]
pub struct SmtpRelay {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// User name and password, if the relay wants them.
    pub credentials: Option<(String, String)>,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP: a loopback relay only.
    None,
    /// STARTTLS, required (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive, e.g. "info" or "otpgate=debug".
    pub level: String,
}

impl Settings {
    /// Reads `file` (or the embedded defaults when `None`), applies `OTPGATE__SECTION__KEY`
    /// environment overrides and checks the result.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with_env(file, None)
    }

    /// As [`Settings::load`], with the environment given as a map instead of read from the
    /// process (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = env.unwrap_or_else(|| {
            std::env::vars()
                .filter(|(k, _)| k.starts_with(ENV_PREFIX))
                .collect()
        });
        let base_name = match file {
            Some(path) => path.display().to_string(),
            None => "embedded defaults".to_string(),
        };
        let source_name = if env.keys().any(|k| k.starts_with(ENV_PREFIX)) {
            format!("{base_name} (with {ENV_PREFIX}* environment overrides)")
        } else {
            base_name
        };
        // Entries of the [[radius.clients]] and [[applications]] arrays are addressed by index
        // (OTPGATE__RADIUS__CLIENTS__0__SECRET), which the `config` crate cannot merge into an
        // array of tables; they are applied after the file is read.
        let (indexed, plain): (HashMap<String, String>, HashMap<String, String>) =
            env.into_iter().partition(|(k, _)| {
                k.starts_with(CLIENTS_ENV_PREFIX) || k.starts_with(APPLICATIONS_ENV_PREFIX)
            });
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
                file: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        let environment = config::Environment::with_prefix("OTPGATE")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("radius.listen")
            .with_list_parse_key("radius.accounting_listen")
            .try_parsing(true)
            .source(Some(plain));
        builder = builder.add_source(environment);
        let mut raw: RawSettings =
            builder
                .build()
                .and_then(|c| c.try_deserialize())
                .map_err(|e| ConfigError::Parse {
                    source_name: source_name.clone(),
                    message: e.to_string(),
                })?;
        raw.apply_indexed_env(indexed)?;
        raw.check(source_name)
    }

    /// The application a client belongs to (checked at load time to exist).
    pub fn application(&self, name: &str) -> Option<&Application> {
        self.applications
            .iter()
            .find(|a| a.name == name)
            .map(|a| &**a)
    }

    /// Clients whose secret is weak or an example placeholder, with why (for start-up warnings
    /// and `check-config`).
    pub fn weak_secrets(&self) -> Vec<(String, &'static str)> {
        self.radius
            .clients
            .iter()
            .filter_map(|c| {
                let why = if c.secret == DEFAULT_CLIENT_SECRET {
                    "is the default `testing123`: for trying out only; configure \
                     [[radius.clients]] with a strong secret before production"
                } else if c.secret.to_ascii_lowercase().contains("change-me") {
                    "is still the example placeholder"
                } else if c.secret.len() < RECOMMENDED_SECRET_LEN {
                    "is shorter than the recommended 16 characters"
                } else {
                    return None;
                };
                Some((c.name.clone(), why))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Raw form: exactly what the file says, unknown keys refused.

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSettings {
    storage: RawStorage,
    radius: RawRadius,
    radsec: RawRadsec,
    applications: Option<Vec<RawApplication>>,
    organizations: Vec<RawOrganization>,
    otp: RawOtp,
    lifecycle: RawLifecycle,
    admin: RawAdmin,
    password: RawPassword,
    throttle: RawThrottle,
    log: RawLog,
    notify: RawNotify,
    proofing: RawProofing,
    upstreams: Vec<RawUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    path: String,
    key_file: Option<String>,
    cache_mb: u64,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            path: "./otpgate-data".into(),
            key_file: None,
            cache_mb: crate::store::sled_store::DEFAULT_CACHE_BYTES / (1024 * 1024),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRadius {
    listen: Vec<String>,
    accounting_listen: Vec<String>,
    require_message_authenticator: bool,
    clients: Option<Vec<RawClient>>,
    max_in_flight: usize,
    dedup_window_secs: u64,
    workers: Option<usize>,
    reject_delay_ms: u64,
    challenge_timeout_secs: u64,
    dictionaries: Option<String>,
}

impl Default for RawRadius {
    fn default() -> Self {
        RawRadius {
            listen: vec!["127.0.0.1:1812".into()],
            accounting_listen: Vec::new(),
            require_message_authenticator: true,
            clients: None,
            max_in_flight: 1024,
            dedup_window_secs: 30,
            workers: None,
            reject_delay_ms: 1000,
            challenge_timeout_secs: 60,
            dictionaries: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: String,
    address: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    certificate_name: Option<String>,
    #[serde(default = "default_application_name")]
    application: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApplication {
    name: String,
    #[serde(default = "default_required_level")]
    required_level: u8,
    #[serde(default = "default_otp_mode")]
    otp_mode: String,
    #[serde(default)]
    challenge_prompt: Option<String>,
    #[serde(default)]
    first_factor: Option<String>,
    /// Attribute name (any dictionary name) to a value, or to a list of values.
    #[serde(default)]
    reply_attributes: BTreeMap<String, RawAttributeValues>,
    #[serde(default)]
    token_kinds: Option<Vec<String>>,
    /// Organization name to attributes, as `reply_attributes`.
    #[serde(default)]
    reply_attributes_by_organization: BTreeMap<String, BTreeMap<String, RawAttributeValues>>,
}

/// A `reply_attributes` value as TOML writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawAttributeValues {
    Integer(i64),
    Text(String),
    List(Vec<RawAttributeValue>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawAttributeValue {
    Integer(i64),
    Text(String),
}

impl From<RawAttributeValue> for AttributeValue {
    fn from(raw: RawAttributeValue) -> AttributeValue {
        match raw {
            RawAttributeValue::Integer(n) => AttributeValue::Integer(n),
            RawAttributeValue::Text(t) => AttributeValue::Text(t),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    kind: String,
    servers: Vec<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default = "default_upstream_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_upstream_retries")]
    retries: u32,
    #[serde(default)]
    bind_dn_template: Option<String>,
    #[serde(default)]
    require_message_authenticator: Option<bool>,
    #[serde(default = "default_upstream_max_in_flight")]
    max_in_flight: usize,
}

fn default_upstream_max_in_flight() -> usize {
    64
}

fn default_upstream_timeout_ms() -> u64 {
    1000
}

fn default_upstream_retries() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrganization {
    name: String,
    #[serde(default)]
    applications: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOtp {
    max_failures: u32,
    totp_window: u64,
    hotp_look_ahead: u64,
    resync_window: u64,
}

impl Default for RawOtp {
    fn default() -> Self {
        RawOtp {
            max_failures: 5,
            totp_window: 1,
            hotp_look_ahead: 10,
            resync_window: 100,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLifecycle {
    registration_attempts: u32,
    resync_attempts: u32,
    renewal_years: u32,
    expiry_notice_days: u32,
    expired_revoke_days: u32,
    suspended_revoke_days: u32,
    revoke_reminder_days: Vec<u32>,
    sweep_interval_secs: u64,
}

impl Default for RawLifecycle {
    fn default() -> Self {
        RawLifecycle {
            registration_attempts: 3,
            resync_attempts: 3,
            renewal_years: 1,
            expiry_notice_days: 30,
            expired_revoke_days: 365,
            suspended_revoke_days: 60,
            revoke_reminder_days: vec![30, 15, 3],
            sweep_interval_secs: 3600,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawRadsec {
    listen: Vec<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    client_ca: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    listen: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPassword {
    argon2_memory_kib: u32,
    argon2_iterations: u32,
    argon2_parallelism: u32,
    rehash_on_login: bool,
    max_concurrent_hashes: Option<usize>,
}

impl Default for RawPassword {
    fn default() -> Self {
        let argon2 = Argon2Params::default();
        RawPassword {
            argon2_memory_kib: argon2.memory_kib,
            argon2_iterations: argon2.iterations,
            argon2_parallelism: argon2.parallelism,
            rehash_on_login: true,
            max_concurrent_hashes: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawThrottle {
    user_failures: u32,
    client_failures: u32,
    window_secs: u64,
}

impl Default for RawThrottle {
    fn default() -> Self {
        RawThrottle {
            user_failures: 10,
            client_failures: 1000,
            window_secs: 300,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: String,
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawNotify {
    smtp_relay: Option<String>,
    smtp_tls: String,
    smtp_username: Option<String>,
    smtp_password: Option<String>,
    from: String,
    retry_initial_secs: u64,
    retry_max_secs: u64,
    poll_secs: u64,
}

impl Default for RawNotify {
    fn default() -> Self {
        RawNotify {
            smtp_relay: None,
            smtp_tls: "starttls".into(),
            smtp_username: None,
            smtp_password: None,
            from: "otpgate@localhost".into(),
            retry_initial_secs: 30,
            retry_max_secs: 3600,
            poll_secs: 5,
        }
    }
}

impl RawNotify {
    fn validate(
        self,
        invalid: &impl Fn(&str, String) -> ConfigError,
    ) -> Result<NotifySettings, ConfigError> {
        let tls = match self.smtp_tls.as_str() {
            "none" => SmtpTls::None,
            "starttls" => SmtpTls::StartTls,
            "tls" => SmtpTls::Tls,
            other => {
                return Err(invalid(
                    "notify.smtp_tls",
                    format!("unknown `{other}`; expected `none`, `starttls` or `tls`"),
                ))
            }
        };
        let credentials = match (self.smtp_username, self.smtp_password) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "notify.smtp_username",
                    "smtp_username and smtp_password go together".into(),
                ))
            }
        };
        let relay = match self.smtp_relay {
            None => None,
            Some(text) => {
                let bad = || {
                    invalid(
                        "notify.smtp_relay",
                        format!("`{text}` is not host:port (e.g. smtp.example.org:587)"),
                    )
                };
                let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let port: u16 = port.parse().map_err(|_| bad())?;
                if host.is_empty() || port == 0 {
                    return Err(bad());
                }
                let loopback = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if tls == SmtpTls::None && !loopback {
                    return Err(invalid(
                        "notify.smtp_tls",
                        format!(
                            "`none` sends notifications (temporary passwords among them) in \
                             clear: allowed for a loopback relay only, not `{host}`"
                        ),
                    ));
                }
                Some(SmtpRelay {
                    host,
                    port,
                    tls,
                    credentials,
                })
            }
        };
        let from = self.from.trim().to_string();
        if from.parse::<lettre::Address>().is_err() {
            return Err(invalid(
                "notify.from",
                format!("`{from}` is not an e-mail address"),
            ));
        }
        let secs = |key: &str, value: u64, range: std::ops::RangeInclusive<u64>| {
            in_range(invalid, key, value, range).map(Duration::from_secs)
        };
        let retry_initial = secs(
            "notify.retry_initial_secs",
            self.retry_initial_secs,
            1..=86_400,
        )?;
        let retry_max = secs("notify.retry_max_secs", self.retry_max_secs, 1..=7 * 86_400)?;
        if retry_max < retry_initial {
            return Err(invalid(
                "notify.retry_max_secs",
                "must not be less than notify.retry_initial_secs".into(),
            ));
        }
        Ok(NotifySettings {
            relay,
            from,
            retry_initial,
            retry_max,
            poll: secs("notify.poll_secs", self.poll_secs, 1..=3600)?,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawProofing {
    code_valid_days: u64,
    code_tries: u32,
    callback_secret: Option<String>,
}

impl Default for RawProofing {
    fn default() -> Self {
        RawProofing {
            code_valid_days: 30,
            code_tries: 5,
            callback_secret: None,
        }
    }
}

fn default_clients() -> Vec<RawClient> {
    vec![RawClient {
        name: "localhost".into(),
        address: "127.0.0.1/32".into(),
        secret: DEFAULT_CLIENT_SECRET.into(),
        certificate_name: None,
        application: default_application_name(),
    }]
}

fn default_applications() -> Vec<RawApplication> {
    vec![RawApplication {
        name: default_application_name(),
        required_level: default_required_level(),
        otp_mode: default_otp_mode(),
        challenge_prompt: None,
        first_factor: None,
        reply_attributes: BTreeMap::new(),
        token_kinds: None,
        reply_attributes_by_organization: BTreeMap::new(),
    }]
}

fn default_application_name() -> String {
    "default".into()
}

fn default_required_level() -> u8 {
    2
}

fn default_otp_mode() -> String {
    "append".into()
}

impl RawSettings {
    /// Applies `OTPGATE__RADIUS__CLIENTS__<i>__<FIELD>` and `OTPGATE__APPLICATIONS__<i>__<FIELD>`.
    /// An index may name an existing entry, or the next one to add a new entry (which then needs
    /// every field without a default).
    fn apply_indexed_env(&mut self, indexed: HashMap<String, String>) -> Result<(), ConfigError> {
        let mut clients: BTreeMap<usize, Vec<(String, String, String)>> = BTreeMap::new();
        let mut apps: BTreeMap<usize, Vec<(String, String, String)>> = BTreeMap::new();
        for (var, value) in indexed {
            let (prefix, target) = if var.starts_with(CLIENTS_ENV_PREFIX) {
                (CLIENTS_ENV_PREFIX, &mut clients)
            } else {
                (APPLICATIONS_ENV_PREFIX, &mut apps)
            };
            let rest = var.get(prefix.len()..).unwrap_or_default();
            let parsed = rest.split_once("__").and_then(|(i, field)| {
                Some((i.parse::<usize>().ok()?, field.to_ascii_lowercase()))
            });
            let Some((index, field)) = parsed else {
                return Err(env_error(
                    &var,
                    format!("expected {prefix}<index>__<FIELD>, e.g. {prefix}0__NAME"),
                ));
            };
            target.entry(index).or_default().push((var, field, value));
        }
        if !clients.is_empty() {
            let list = self.radius.clients.get_or_insert_with(default_clients);
            let blank = RawClient {
                name: String::new(),
                address: String::new(),
                secret: String::new(),
                certificate_name: None,
                application: default_application_name(),
            };
            apply_entries(list, clients, blank, "client", |entry, field, value| {
                match field {
                    "name" => entry.name = value,
                    "address" => entry.address = value,
                    "secret" => entry.secret = value,
                    "application" => entry.application = value,
                    "certificate_name" => entry.certificate_name = Some(value),
                    other => {
                        return Err(format!(
                            "unknown client field `{other}`; expected NAME, ADDRESS, SECRET, \
                             APPLICATION or CERTIFICATE_NAME"
                        ))
                    }
                }
                Ok(())
            })?;
        }
        if !apps.is_empty() {
            let list = self.applications.get_or_insert_with(default_applications);
            let blank = RawApplication {
                name: String::new(),
                required_level: default_required_level(),
                otp_mode: default_otp_mode(),
                challenge_prompt: None,
                first_factor: None,
                reply_attributes: BTreeMap::new(),
                token_kinds: None,
                reply_attributes_by_organization: BTreeMap::new(),
            };
            apply_entries(list, apps, blank, "application", |entry, field, value| {
                match field {
                    "name" => entry.name = value,
                    "required_level" => {
                        entry.required_level = value
                            .trim()
                            .parse()
                            .map_err(|_| format!("`{value}` is not a number"))?
                    }
                    "otp_mode" => entry.otp_mode = value,
                    "challenge_prompt" => entry.challenge_prompt = Some(value),
                    "first_factor" => entry.first_factor = Some(value),
                    other => {
                        return Err(format!(
                            "unknown application field `{other}`; expected NAME, \
                             REQUIRED_LEVEL, OTP_MODE, CHALLENGE_PROMPT or FIRST_FACTOR"
                        ))
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn check(self, source_name: String) -> Result<Settings, ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            source_name: source_name.clone(),
            key: key.to_string(),
            problem,
        };

        // [storage]
        if self.storage.path.trim().is_empty() {
            return Err(invalid("storage.path", "must not be empty".into()));
        }
        let path = PathBuf::from(&self.storage.path);
        let key_file = match self.storage.key_file {
            Some(k) if k.trim().is_empty() => {
                return Err(invalid("storage.key_file", "must not be empty".into()))
            }
            Some(k) => PathBuf::from(k),
            None => path.join("seed.key"),
        };

        let cache_mb = in_range(
            &invalid,
            "storage.cache_mb",
            self.storage.cache_mb,
            16..=65_536,
        )?;

        // [[upstreams]], before the applications that name them.
        let upstreams = check_upstreams(&self.upstreams, &invalid)?;

        // [radius] dictionaries, before the applications' reply attributes.
        let dictionaries = match self.radius.dictionaries.as_deref().map(str::trim) {
            None => None,
            Some("") => return Err(invalid("radius.dictionaries", "must not be empty".into())),
            Some(folder) => Some(PathBuf::from(folder)),
        };
        let dictionary = Dictionary::load(dictionaries.as_deref())
            .map_err(|e| invalid("radius.dictionaries", e.to_string()))?;

        // [[applications]]
        let raw_apps = self.applications.unwrap_or_else(default_applications);
        let mut applications = Vec::with_capacity(raw_apps.len());
        let mut app_names = HashSet::new();
        for (i, app) in raw_apps.into_iter().enumerate() {
            let key = |field: &str| format!("applications[{i}].{field}");
            if app.name.trim().is_empty() {
                return Err(invalid(&key("name"), "must not be empty".into()));
            }
            if !app_names.insert(app.name.clone()) {
                return Err(invalid(
                    &key("name"),
                    format!("duplicate application `{}`", app.name),
                ));
            }
            let required_level =
                AssuranceLevel::from_number(app.required_level).ok_or_else(|| {
                    invalid(
                        &key("required_level"),
                        format!("must be 2 or 3, got {}", app.required_level),
                    )
                })?;
            let otp_mode = match app.otp_mode.as_str() {
                "append" => OtpMode::Append,
                "challenge" => OtpMode::Challenge,
                "auto" => OtpMode::Auto,
                other => {
                    return Err(invalid(
                        &key("otp_mode"),
                        format!("unknown mode `{other}`; expected `append`, `challenge` or `auto`"),
                    ))
                }
            };
            let challenge_prompt = app
                .challenge_prompt
                .unwrap_or_else(|| DEFAULT_CHALLENGE_PROMPT.to_owned());
            let max = crate::radius::packet::MAX_REPLY_MESSAGE;
            if challenge_prompt.trim().is_empty() || challenge_prompt.len() > max {
                return Err(invalid(
                    &key("challenge_prompt"),
                    format!("must be 1 to {max} octets, got {}", challenge_prompt.len()),
                ));
            }
            let first_factor = match app.first_factor.as_deref().map(str::trim) {
                None | Some("local") => FirstFactor::Local,
                Some(name) if upstreams.iter().any(|u| u.name == name) => {
                    FirstFactor::Upstream(name.to_owned())
                }
                Some(name) => {
                    return Err(invalid(
                        &key("first_factor"),
                        format!(
                            "`{name}` is neither `local` nor the name of an [[upstreams]] entry"
                        ),
                    ))
                }
            };
            let mut reply_attributes_by_organization = HashMap::new();
            for (organization, over) in &app.reply_attributes_by_organization {
                if organization.trim().is_empty() {
                    return Err(invalid(
                        &key("reply_attributes_by_organization"),
                        "an organization name must not be empty".into(),
                    ));
                }
                let merged = overlay(&dictionary, &app.reply_attributes, over);
                let table = format!("reply_attributes_by_organization.{organization}");
                let encoded = encode_reply_attributes(&dictionary, merged, &key, &table)
                    .map_err(|(key, problem)| invalid(&key, problem))?;
                reply_attributes_by_organization.insert(organization.clone(), encoded);
            }
            let reply_attributes = encode_reply_attributes(
                &dictionary,
                app.reply_attributes,
                &key,
                "reply_attributes",
            )
            .map_err(|(key, problem)| invalid(&key, problem))?;
            let token_kinds = match &app.token_kinds {
                None => TokenKinds::ALL,
                Some(kinds) => {
                    let mut allowed = TokenKinds {
                        totp: false,
                        hotp: false,
                    };
                    for kind in kinds {
                        match kind.trim() {
                            "totp" => allowed.totp = true,
                            "hotp" => allowed.hotp = true,
                            other => {
                                return Err(invalid(
                                    &key("token_kinds"),
                                    format!("unknown kind `{other}`; expected `totp` or `hotp`"),
                                ))
                            }
                        }
                    }
                    if !allowed.totp && !allowed.hotp {
                        return Err(invalid(
                            &key("token_kinds"),
                            "lists no kind: no one could log in".into(),
                        ));
                    }
                    allowed
                }
            };
            applications.push(std::sync::Arc::new(Application {
                name: app.name,
                required_level,
                otp_mode,
                challenge_prompt: challenge_prompt.into(),
                first_factor,
                reply_attributes,
                reply_attributes_by_organization,
                token_kinds,
            }));
        }

        // [radius]
        if self.radius.listen.is_empty() {
            return Err(invalid(
                "radius.listen",
                "needs at least one address".into(),
            ));
        }
        let mut listen = Vec::with_capacity(self.radius.listen.len());
        for (i, addr) in self.radius.listen.iter().enumerate() {
            let parsed: SocketAddr = addr.trim().parse().map_err(|_| {
                invalid(
                    &format!("radius.listen[{i}]"),
                    format!("`{addr}` is not an address:port (e.g. 127.0.0.1:1812 or [::1]:1812)"),
                )
            })?;
            if listen.contains(&parsed) {
                return Err(invalid(
                    &format!("radius.listen[{i}]"),
                    format!("`{addr}` is listed twice"),
                ));
            }
            listen.push(parsed);
        }
        let mut accounting_listen = Vec::with_capacity(self.radius.accounting_listen.len());
        for (i, addr) in self.radius.accounting_listen.iter().enumerate() {
            let key = format!("radius.accounting_listen[{i}]");
            let parsed: SocketAddr = addr.trim().parse().map_err(|_| {
                invalid(
                    &key,
                    format!("`{addr}` is not an address:port (e.g. 127.0.0.1:1813)"),
                )
            })?;
            // Port 0: the kernel picks a free port for each socket, so they never collide.
            if parsed.port() != 0
                && (listen.contains(&parsed) || accounting_listen.contains(&parsed))
            {
                return Err(invalid(&key, format!("`{addr}` is already in use here")));
            }
            accounting_listen.push(parsed);
        }
        let max_in_flight = in_range(
            &invalid,
            "radius.max_in_flight",
            self.radius.max_in_flight,
            1..=65_536,
        )?;
        let dedup_window_secs = in_range(
            &invalid,
            "radius.dedup_window_secs",
            self.radius.dedup_window_secs,
            1..=300,
        )?;
        let workers = match self.radius.workers {
            Some(n) => in_range(&invalid, "radius.workers", n, 1..=64)?,
            None => cores(),
        };
        // 0 turns the delay off; more than 10 s outlasts a NAS's whole retry budget (and would
        // hold a stop as long).
        let reject_delay_ms = in_range(
            &invalid,
            "radius.reject_delay_ms",
            self.radius.reject_delay_ms,
            0..=10_000,
        )?;
        let challenge_timeout_secs = in_range(
            &invalid,
            "radius.challenge_timeout_secs",
            self.radius.challenge_timeout_secs,
            5..=600,
        )?;
        let raw_clients = self.radius.clients.unwrap_or_else(default_clients);
        let mut clients: Vec<ClientSettings> = Vec::with_capacity(raw_clients.len());
        for (i, client) in raw_clients.into_iter().enumerate() {
            let key = |field: &str| format!("radius.clients[{i}].{field}");
            if client.name.trim().is_empty() {
                return Err(invalid(&key("name"), "must not be empty".into()));
            }
            let address =
                parse_cidr(&client.address).map_err(|problem| invalid(&key("address"), problem))?;
            let certificate_name = match client.certificate_name.as_deref().map(str::trim) {
                None => None,
                Some("") => {
                    return Err(invalid(
                        &key("certificate_name"),
                        "must not be empty".into(),
                    ))
                }
                Some(name) => Some(name.to_owned()),
            };
            let secret = match (&certificate_name, client.secret.as_str()) {
                // RFC 6614 section 2.3: over TLS the secret is the fixed `radsec`.
                (Some(_), "" | RADSEC_SECRET) => RADSEC_SECRET.to_owned(),
                (Some(_), _) => {
                    return Err(invalid(
                        &key("secret"),
                        "a client with certificate_name connects over RadSec, whose secret is \
                         `radsec` (RFC 6614); leave it out"
                            .into(),
                    ))
                }
                (None, secret) => secret.to_owned(),
            };
            if certificate_name.is_none() && secret.len() < MIN_SECRET_LEN {
                return Err(invalid(
                    &key("secret"),
                    format!(
                        "is too short ({} characters); use at least {MIN_SECRET_LEN}, \
                         {RECOMMENDED_SECRET_LEN} or more recommended",
                        client.secret.len()
                    ),
                ));
            }
            if !app_names.contains(&client.application) {
                return Err(invalid(
                    &key("application"),
                    format!("names no [[applications]] entry `{}`", client.application),
                ));
            }
            if let Some(other) = clients.iter().find(|c| c.name == client.name) {
                return Err(invalid(
                    &key("name"),
                    format!("duplicate client name `{}`", other.name),
                ));
            }
            if let Some(other) = clients.iter().find(|c| {
                c.address == address && c.certificate_name.is_none() && certificate_name.is_none()
            }) {
                return Err(invalid(
                    &key("address"),
                    format!(
                        "duplicate client: {address} is already client `{}`",
                        other.name
                    ),
                ));
            }
            clients.push(ClientSettings {
                name: client.name,
                address,
                secret,
                application: client.application,
                certificate_name,
            });
        }

        crate::radius::radsec::RadsecClients::new(&clients, &applications)
            .map_err(|problem| invalid("radius.clients", problem))?;

        // [radsec]
        let radsec = check_radsec(self.radsec, &invalid)?;
        if radsec.listen.is_empty() {
            if let Some(i) = clients.iter().position(|c| c.certificate_name.is_some()) {
                return Err(invalid(
                    &format!("radius.clients[{i}].certificate_name"),
                    "a RadSec client needs [radsec] listen".into(),
                ));
            }
        }

        // [otp]
        let otp = OtpSettings {
            max_failures: in_range(&invalid, "otp.max_failures", self.otp.max_failures, 1..=100)?,
            totp_window: in_range(&invalid, "otp.totp_window", self.otp.totp_window, 0..=10)?,
            hotp_look_ahead: in_range(
                &invalid,
                "otp.hotp_look_ahead",
                self.otp.hotp_look_ahead,
                1..=1000,
            )?,
            resync_window: in_range(
                &invalid,
                "otp.resync_window",
                self.otp.resync_window,
                1..=10_000,
            )?,
        };

        // [lifecycle]
        let lifecycle = LifecycleSettings {
            registration_attempts: in_range(
                &invalid,
                "lifecycle.registration_attempts",
                self.lifecycle.registration_attempts,
                1..=100,
            )?,
            resync_attempts: in_range(
                &invalid,
                "lifecycle.resync_attempts",
                self.lifecycle.resync_attempts,
                1..=100,
            )?,
            renewal_years: in_range(
                &invalid,
                "lifecycle.renewal_years",
                self.lifecycle.renewal_years,
                1..=10,
            )?,
            expiry_notice_days: in_range(
                &invalid,
                "lifecycle.expiry_notice_days",
                self.lifecycle.expiry_notice_days,
                1..=365,
            )?,
            expired_revoke_days: in_range(
                &invalid,
                "lifecycle.expired_revoke_days",
                self.lifecycle.expired_revoke_days,
                1..=3650,
            )?,
            suspended_revoke_days: in_range(
                &invalid,
                "lifecycle.suspended_revoke_days",
                self.lifecycle.suspended_revoke_days,
                1..=3650,
            )?,
            revoke_reminder_days: {
                let mut days = self.lifecycle.revoke_reminder_days.clone();
                for day in &days {
                    in_range(&invalid, "lifecycle.revoke_reminder_days", *day, 1..=365)?;
                }
                days.sort_unstable_by(|a, b| b.cmp(a));
                days.dedup();
                days
            },
            sweep_interval: Duration::from_secs(in_range(
                &invalid,
                "lifecycle.sweep_interval_secs",
                self.lifecycle.sweep_interval_secs,
                10..=86_400,
            )?),
            subscriptions: {
                let mut subscriptions = BTreeMap::new();
                for (i, org) in self.organizations.iter().enumerate() {
                    let key = |field: &str| format!("organizations[{i}].{field}");
                    let name = org.name.trim();
                    if name.is_empty() {
                        return Err(invalid(&key("name"), "must not be empty".into()));
                    }
                    for app in &org.applications {
                        if !app_names.contains(app) {
                            return Err(invalid(
                                &key("applications"),
                                format!("names no [[applications]] entry `{app}`"),
                            ));
                        }
                    }
                    if subscriptions
                        .insert(name.to_string(), org.applications.clone())
                        .is_some()
                    {
                        return Err(invalid(
                            &key("name"),
                            format!("duplicate organization `{name}`"),
                        ));
                    }
                }
                subscriptions
            },
        };

        // [admin]
        let admin = {
            let listen = self
                .admin
                .listen
                .as_deref()
                .map(|text| {
                    text.parse::<SocketAddr>().map_err(|_| {
                        invalid(
                            "admin.listen",
                            format!("`{text}` is not an address:port (e.g. 127.0.0.1:8443)"),
                        )
                    })
                })
                .transpose()?;
            let path = |key: &str, value: Option<String>| match value {
                Some(p) if p.trim().is_empty() => Err(invalid(key, "must not be empty".into())),
                other => Ok(other.map(PathBuf::from)),
            };
            let tls_cert = path("admin.tls_cert", self.admin.tls_cert)?;
            let tls_key = path("admin.tls_key", self.admin.tls_key)?;
            match (&tls_cert, &tls_key, listen) {
                (Some(_), None, _) => {
                    return Err(invalid(
                        "admin.tls_key",
                        "is required with admin.tls_cert".into(),
                    ))
                }
                (None, Some(_), _) => {
                    return Err(invalid(
                        "admin.tls_cert",
                        "is required with admin.tls_key".into(),
                    ))
                }
                (None, None, Some(address)) if !address.ip().is_loopback() => {
                    return Err(invalid(
                        "admin.listen",
                        format!(
                            "{address} is not a loopback address: plain HTTP is allowed on \
                             loopback only; set admin.tls_cert and admin.tls_key for HTTPS"
                        ),
                    ))
                }
                _ => {}
            }
            AdminSettings {
                listen,
                tls_cert,
                tls_key,
            }
        };

        // [password]
        let argon2 = Argon2Params {
            memory_kib: self.password.argon2_memory_kib,
            iterations: self.password.argon2_iterations,
            parallelism: self.password.argon2_parallelism,
        };
        argon2
            .validate()
            .map_err(|problem| invalid("password.argon2_*", problem))?;
        let max_concurrent_hashes = match self.password.max_concurrent_hashes {
            Some(n) => in_range(&invalid, "password.max_concurrent_hashes", n, 1..=256)?,
            // One per core: hashing is CPU-bound, more at once only adds memory.
            None => cores(),
        };

        // [throttle]
        let throttle = ThrottleSettings {
            user_failures: in_range(
                &invalid,
                "throttle.user_failures",
                self.throttle.user_failures,
                1..=u32::MAX,
            )?,
            client_failures: in_range(
                &invalid,
                "throttle.client_failures",
                self.throttle.client_failures,
                1..=u32::MAX,
            )?,
            window: Duration::from_secs(in_range(
                &invalid,
                "throttle.window_secs",
                self.throttle.window_secs,
                1..=u64::MAX,
            )?),
        };

        // [notify]
        let notify = self.notify.validate(&invalid)?;

        // [proofing]
        let proofing = crate::proofing::ProofingSettings {
            valid_secs: in_range(
                &invalid,
                "proofing.code_valid_days",
                self.proofing.code_valid_days,
                1..=365,
            )? * 86_400,
            tries: in_range(
                &invalid,
                "proofing.code_tries",
                self.proofing.code_tries,
                1..=20,
            )?,
            callback_secret: match self.proofing.callback_secret {
                Some(secret) if secret.len() < 32 => {
                    return Err(invalid(
                        "proofing.callback_secret",
                        format!(
                            "is too short ({} characters); use at least 32",
                            secret.len()
                        ),
                    ))
                }
                other => other,
            },
        };

        // [log]
        let format = match self.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("unknown format `{other}`; expected `text` or `json`"),
                ))
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!(
                    "`{}` is not a level or filter (e.g. info, debug, otpgate=debug)",
                    self.log.level
                ),
            ));
        }

        Ok(Settings {
            storage: StorageSettings {
                path,
                key_file,
                cache_mb,
            },
            radius: RadiusSettings {
                listen,
                accounting_listen,
                require_message_authenticator: self.radius.require_message_authenticator,
                clients,
                max_in_flight,
                dedup_window: Duration::from_secs(dedup_window_secs),
                workers,
                reject_delay: Duration::from_millis(reject_delay_ms),
                challenge_timeout: Duration::from_secs(challenge_timeout_secs),
                dictionaries,
            },
            radsec,
            applications,
            otp,
            lifecycle,
            admin,
            password: PasswordSettings {
                argon2,
                rehash_on_login: self.password.rehash_on_login,
                max_concurrent_hashes,
            },
            throttle,
            log: LogSettings {
                format,
                level: self.log.level,
            },
            notify,
            proofing,
            upstreams,
            source_name,
        })
    }
}

/// Checks the `[[upstreams]]` entries: unique names (not `local`), a known kind with the keys
/// it needs and none of the other kind's, servers that parse, bounded timeouts and retries.
fn check_upstreams(
    raw: &[RawUpstream],
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<UpstreamSettings>, ConfigError> {
    let mut upstreams: Vec<UpstreamSettings> = Vec::with_capacity(raw.len());
    for (i, up) in raw.iter().enumerate() {
        let key = |field: &str| format!("upstreams[{i}].{field}");
        let name = up.name.trim();
        if name.is_empty() || name == "local" {
            return Err(invalid(
                &key("name"),
                "must not be empty or `local` (the store's own passwords)".into(),
            ));
        }
        if upstreams.iter().any(|u| u.name == name) {
            return Err(invalid(
                &key("name"),
                format!("duplicate upstream `{name}`"),
            ));
        }
        if up.servers.is_empty() {
            return Err(invalid(&key("servers"), "needs at least one server".into()));
        }
        let timeout_ms = in_range(invalid, &key("timeout_ms"), up.timeout_ms, 50..=60_000)?;
        let retries = in_range(invalid, &key("retries"), up.retries, 0..=10)?;
        let max_in_flight = in_range(invalid, &key("max_in_flight"), up.max_in_flight, 1..=4096)?;
        let refuse = |field: &str, kind: &str| {
            invalid(&key(field), format!("does not apply to kind = \"{kind}\""))
        };
        let kind = match up.kind.as_str() {
            "radius" => {
                if up.bind_dn_template.is_some() {
                    return Err(refuse("bind_dn_template", "radius"));
                }
                let mut servers = Vec::with_capacity(up.servers.len());
                for (j, server) in up.servers.iter().enumerate() {
                    servers.push(parse_radius_server(server).map_err(|problem| {
                        invalid(&format!("upstreams[{i}].servers[{j}]"), problem)
                    })?);
                }
                let secret = up.secret.clone().unwrap_or_default();
                if secret.len() < MIN_SECRET_LEN {
                    return Err(invalid(
                        &key("secret"),
                        format!(
                            "the shared secret with the upstream is required, at least \
                             {MIN_SECRET_LEN} characters"
                        ),
                    ));
                }
                UpstreamKind::Radius {
                    servers,
                    secret,
                    require_message_authenticator: up.require_message_authenticator.unwrap_or(true),
                }
            }
            "ldap" => {
                if up.secret.is_some() {
                    return Err(refuse("secret", "ldap"));
                }
                if up.require_message_authenticator.is_some() {
                    return Err(refuse("require_message_authenticator", "ldap"));
                }
                let template = up.bind_dn_template.clone().unwrap_or_default();
                crate::upstream::ldap::LdapFirstFactor::new(
                    up.servers.clone(),
                    template.clone(),
                    Duration::from_millis(timeout_ms),
                    retries,
                )
                .map_err(|problem| invalid(&key("servers` / `bind_dn_template"), problem))?;
                UpstreamKind::Ldap {
                    servers: up.servers.clone(),
                    bind_dn_template: template,
                }
            }
            other => {
                return Err(invalid(
                    &key("kind"),
                    format!("unknown kind `{other}`; expected `radius` or `ldap`"),
                ))
            }
        };
        upstreams.push(UpstreamSettings {
            name: name.to_owned(),
            kind,
            timeout: Duration::from_millis(timeout_ms),
            retries,
            max_in_flight,
        });
    }
    Ok(upstreams)
}

/// Checks `[radsec]`: addresses that parse; with any, the three PEM files, which must make a
/// TLS configuration (read now, so that `check-config` reports a bad file).
fn check_radsec(
    raw: RawRadsec,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<RadsecSettings, ConfigError> {
    let mut listen = Vec::with_capacity(raw.listen.len());
    for (i, addr) in raw.listen.iter().enumerate() {
        let parsed: SocketAddr = addr.trim().parse().map_err(|_| {
            invalid(
                &format!("radsec.listen[{i}]"),
                format!("`{addr}` is not an address:port (e.g. 0.0.0.0:2083 or [::]:2083)"),
            )
        })?;
        listen.push(parsed);
    }
    if listen.is_empty() {
        return Ok(RadsecSettings::default());
    }
    let file = |key: &str, value: Option<String>| -> Result<PathBuf, ConfigError> {
        match value.as_deref().map(str::trim) {
            None | Some("") => Err(invalid(
                key,
                "is required with [radsec] listen (a PEM file)".into(),
            )),
            Some(path) => Ok(PathBuf::from(path)),
        }
    };
    let settings = RadsecSettings {
        listen,
        tls_cert: file("radsec.tls_cert", raw.tls_cert)?,
        tls_key: file("radsec.tls_key", raw.tls_key)?,
        client_ca: file("radsec.client_ca", raw.client_ca)?,
    };
    crate::radius::radsec::tls_config(&settings).map_err(|(key, problem)| invalid(key, problem))?;
    Ok(settings)
}

/// `base` with `over`'s attributes replacing those of the same name (names compared as the
/// dictionary spells them, so `filter-id` replaces `Filter-Id`).
fn overlay(
    dictionary: &Dictionary,
    base: &BTreeMap<String, RawAttributeValues>,
    over: &BTreeMap<String, RawAttributeValues>,
) -> BTreeMap<String, RawAttributeValues> {
    let canonical = |name: &String| {
        dictionary
            .attribute(name)
            .map_or_else(|| name.clone(), |a| a.name.clone())
    };
    let mut merged: BTreeMap<String, RawAttributeValues> = base
        .iter()
        .map(|(name, values)| (canonical(name), values.clone()))
        .collect();
    for (name, values) in over {
        merged.insert(canonical(name), values.clone());
    }
    merged
}

/// Encodes an application's `reply_attributes` by dictionary name, at most
/// [`MAX_REPLY_ATTRIBUTES`](crate::radius::packet::MAX_REPLY_ATTRIBUTES) octets in all. An
/// error is the key (`applications[i].reply_attributes.NAME`) and the problem.
fn encode_reply_attributes(
    dictionary: &Dictionary,
    raw: BTreeMap<String, RawAttributeValues>,
    key: &dyn Fn(&str) -> String,
    table: &str,
) -> Result<Option<std::sync::Arc<[u8]>>, (String, String)> {
    /// What otpgate writes itself: configured, they would be sent twice or contradict it.
    const RESERVED: [&str; 5] = [
        "Message-Authenticator",
        "Proxy-State",
        "State",
        "Reply-Message",
        "EAP-Message",
    ];
    let mut encoded = Vec::new();
    for (name, values) in raw {
        let key = key(&format!("{table}.{name}"));
        if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&name)) {
            return Err((key, format!("`{name}` is written by otpgate itself")));
        }
        let values: Vec<AttributeValue> = match values {
            RawAttributeValues::Integer(n) => vec![AttributeValue::Integer(n)],
            RawAttributeValues::Text(t) => vec![AttributeValue::Text(t)],
            RawAttributeValues::List(list) => list.into_iter().map(Into::into).collect(),
        };
        if values.is_empty() {
            return Err((
                key,
                "an empty list; give a value or leave the attribute out".into(),
            ));
        }
        for value in &values {
            let bytes = dictionary
                .encode(&name, value)
                .map_err(|e| (key.clone(), e))?;
            encoded.extend_from_slice(&bytes);
        }
    }
    let max = crate::radius::packet::MAX_REPLY_ATTRIBUTES;
    if encoded.len() > max {
        return Err((
            key(table),
            format!(
                "{} octets encoded, at most {max} fit in a reply",
                encoded.len()
            ),
        ));
    }
    Ok((!encoded.is_empty()).then(|| encoded.into()))
}

/// An upstream RADIUS server: `address:port`, or a bare address for port 1812.
fn parse_radius_server(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 1812))
        .map_err(|_| {
            format!("`{text}` is not an address[:port] (e.g. 192.0.2.5:1812 or [2001:db8::5]:1812)")
        })
}

/// Sets fields of array entries from `OTPGATE__..__<i>__<FIELD>` variables grouped by index:
/// an index names an existing entry, or the next one (a new entry starting from `blank`).
fn apply_entries<T: Clone>(
    list: &mut Vec<T>,
    by_index: BTreeMap<usize, Vec<(String, String, String)>>,
    blank: T,
    kind: &str,
    set: impl Fn(&mut T, &str, String) -> Result<(), String>,
) -> Result<(), ConfigError> {
    for (index, fields) in by_index {
        if index > list.len() {
            let var = fields.first().map_or("", |f| f.0.as_str());
            return Err(env_error(
                var,
                format!(
                    "index {index} skips entries: {} {kind}(s) so far",
                    list.len()
                ),
            ));
        }
        let mut entry = list.get(index).cloned().unwrap_or_else(|| blank.clone());
        for (var, field, value) in fields {
            set(&mut entry, &field, value).map_err(|problem| env_error(&var, problem))?;
        }
        match list.get_mut(index) {
            Some(slot) => *slot = entry,
            None => list.push(entry),
        }
    }
    Ok(())
}

fn env_error(var: &str, problem: String) -> ConfigError {
    ConfigError::Invalid {
        source_name: "environment".into(),
        key: var.to_string(),
        problem,
    }
}

/// Every numeric bound is checked the same way and says the same thing.
fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    invalid: &dyn Fn(&str, String) -> ConfigError,
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            key,
            format!(
                "must be between {} and {}, got {value}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// Number of cores, the default for per-core pools.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Accepts `a.b.c.d/len`, `v6/len`, or a bare address (taken as a single host).
fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        // A client entry with host bits set is almost always a typo; refuse it.
        if net.trunc() != net {
            return Err(format!(
                "`{text}` has host bits set; did you mean `{}` (the network) or `{}/{}` (the host)?",
                net.trunc(),
                net.addr(),
                net.max_prefix_len()
            ));
        }
        return Ok(net);
    }
    text.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{text}` is not a CIDR (e.g. 192.0.2.10/32, 10.0.0.0/8, ::1/128)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load_text(text: &str) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError::Unreadable {
            file: PathBuf::new(),
            reason: e.to_string(),
        })?;
        let file = dir.path().join("otpgate.toml");
        std::fs::write(&file, text).map_err(|e| ConfigError::Unreadable {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        Settings::load_with_env(Some(&file), Some(HashMap::new()))
    }

    fn problem(text: &str) -> String {
        match load_text(text) {
            Ok(_) => String::from("<loaded>"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn embedded_defaults_serve_localhost_with_testing_secret() {
        let s = Settings::load_with_env(None, Some(HashMap::new())).expect("defaults load");
        assert_eq!(
            s.radius.listen,
            vec!["127.0.0.1:1812".parse().expect("addr")]
        );
        assert_eq!(s.radius.clients.len(), 1);
        assert_eq!(s.weak_secrets().len(), 1, "testing123 is warned about");
        assert!(s.radius.require_message_authenticator);
        assert_eq!(s.otp.max_failures, 5);
        assert_eq!(s.storage.key_file, PathBuf::from("./otpgate-data/seed.key"));
    }

    #[test]
    fn every_shipped_example_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("conf/ exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Settings::load_with_env(Some(&path), Some(HashMap::new()))
                    .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen > 0, "no example in conf/");
    }

    #[test]
    fn notify_admin_lifecycle_and_organizations_problems_are_named() {
        for (text, key, says) in [
            (
                "[notify]\nsmtp_relay = \"mail.example.org:25\"\nsmtp_tls = \"none\"\n",
                "notify.smtp_tls",
                "loopback",
            ),
            (
                "[notify]\nsmtp_relay = \"mail.example.org\"\n",
                "notify.smtp_relay",
                "host:port",
            ),
            (
                "[notify]\nsmtp_username = \"u\"\n",
                "notify.smtp_username",
                "together",
            ),
            ("[notify]\nfrom = \"nobody\"\n", "notify.from", "e-mail"),
            (
                "[notify]\nretry_initial_secs = 60\nretry_max_secs = 30\n",
                "notify.retry_max_secs",
                "less",
            ),
            (
                "[admin]\nlisten = \"0.0.0.0:8443\"\n",
                "admin.listen",
                "loopback",
            ),
            (
                "[admin]\ntls_cert = \"/c.pem\"\n",
                "admin.tls_key",
                "required",
            ),
            (
                "[lifecycle]\nrevoke_reminder_days = [30, 0]\n",
                "lifecycle.revoke_reminder_days",
                "",
            ),
            (
                "[[organizations]]\nname = \"Acme\"\napplications = [\"nope\"]\n",
                "organizations[0].applications",
                "nope",
            ),
        ] {
            let p = problem(text);
            assert!(p.contains(key) && p.contains(says), "{text}: {p}");
        }
        let relay = Settings::load_with_env(None, Some(HashMap::new())).expect("defaults");
        assert!(
            relay.notify.relay.is_none(),
            "no relay: notifications go to the log"
        );
        assert!(
            relay.admin.listen.is_none(),
            "no listener: the control socket only"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let p = problem("[radius]\nlisten_on = [\"127.0.0.1:1812\"]\n");
        assert!(p.contains("listen_on"), "{p}");
    }

    #[test]
    fn bad_cidr_is_named() {
        let p = problem(
            "[[radius.clients]]\nname = \"vpn\"\naddress = \"10.0.0.300/32\"\n\
             secret = \"a-long-secret-value\"\n",
        );
        assert!(p.contains("radius.clients[0].address"), "{p}");
    }

    #[test]
    fn host_bits_in_cidr_refused() {
        let p = problem(
            "[[radius.clients]]\nname = \"vpn\"\naddress = \"10.0.0.1/8\"\n\
             secret = \"a-long-secret-value\"\n",
        );
        assert!(p.contains("address") && p.contains("host bits"), "{p}");
    }

    #[test]
    fn short_secret_refused() {
        let p = problem(
            "[[radius.clients]]\nname = \"vpn\"\naddress = \"10.0.0.1/32\"\nsecret = \"short\"\n",
        );
        assert!(
            p.contains("radius.clients[0].secret") && p.contains("too short"),
            "{p}"
        );
    }

    #[test]
    fn duplicate_client_refused() {
        let p = problem(
            "[[radius.clients]]\nname = \"a\"\naddress = \"10.0.0.1\"\nsecret = \"secret-one-1\"\n\
             [[radius.clients]]\nname = \"b\"\naddress = \"10.0.0.1/32\"\nsecret = \"secret-two-2\"\n",
        );
        assert!(p.contains("duplicate client"), "{p}");
    }

    #[test]
    fn client_application_must_exist() {
        let p = problem(
            "[[radius.clients]]\nname = \"a\"\naddress = \"10.0.0.1\"\nsecret = \"secret-one-1\"\n\
             application = \"payroll\"\n",
        );
        assert!(p.contains("payroll"), "{p}");
    }

    #[test]
    fn required_level_checked() {
        let p = problem("[[applications]]\nname = \"default\"\nrequired_level = 4\n");
        assert!(p.contains("required_level"), "{p}");
    }

    #[test]
    fn bad_listen_named() {
        let p = problem("[radius]\nlisten = [\"localhost\"]\n");
        assert!(p.contains("radius.listen[0]"), "{p}");
    }

    #[test]
    fn unreadable_file_named() {
        let e = Settings::load_with_env(Some(Path::new("/nonexistent/otpgate.toml")), None)
            .expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/otpgate.toml"));
    }

    #[test]
    fn environment_overrides_client_entries_by_index() {
        let mut env = HashMap::new();
        env.insert(
            "OTPGATE__RADIUS__CLIENTS__0__SECRET".to_string(),
            "from-the-environment".to_string(),
        );
        env.insert(
            "OTPGATE__RADIUS__CLIENTS__1__NAME".to_string(),
            "vpn".to_string(),
        );
        env.insert(
            "OTPGATE__RADIUS__CLIENTS__1__ADDRESS".to_string(),
            "192.0.2.0/24".to_string(),
        );
        env.insert(
            "OTPGATE__RADIUS__CLIENTS__1__SECRET".to_string(),
            "another-long-secret".to_string(),
        );
        env.insert(
            "OTPGATE__APPLICATIONS__0__REQUIRED_LEVEL".to_string(),
            "3".to_string(),
        );
        let s = Settings::load_with_env(None, Some(env)).expect("loads");
        assert_eq!(s.radius.clients.len(), 2);
        assert_eq!(s.radius.clients[0].secret, "from-the-environment");
        assert_eq!(s.radius.clients[1].name, "vpn");
        assert_eq!(s.applications[0].required_level, AssuranceLevel::Three);

        let mut bad = HashMap::new();
        bad.insert(
            "OTPGATE__RADIUS__CLIENTS__0__SECRT".to_string(),
            "x".to_string(),
        );
        let e = Settings::load_with_env(None, Some(bad)).expect_err("unknown field");
        assert!(
            e.to_string().contains("OTPGATE__RADIUS__CLIENTS__0__SECRT"),
            "{e}"
        );
        let mut gap = HashMap::new();
        gap.insert(
            "OTPGATE__RADIUS__CLIENTS__5__NAME".to_string(),
            "x".to_string(),
        );
        assert!(Settings::load_with_env(None, Some(gap)).is_err());
    }

    #[test]
    fn environment_errors_say_so() {
        let mut env = HashMap::new();
        env.insert("OTPGATE__OTP__MAXFAIL".to_string(), "3".to_string());
        let e = Settings::load_with_env(None, Some(env)).expect_err("unknown key");
        assert!(e.to_string().contains("environment"), "{e}");
    }

    #[test]
    fn environment_overrides_keys() {
        let mut env = HashMap::new();
        env.insert("OTPGATE__OTP__MAX_FAILURES".to_string(), "3".to_string());
        env.insert(
            "OTPGATE__RADIUS__LISTEN".to_string(),
            "127.0.0.1:11812,[::1]:11812".to_string(),
        );
        let s = Settings::load_with_env(None, Some(env)).expect("loads");
        assert_eq!(s.otp.max_failures, 3);
        assert_eq!(s.radius.listen.len(), 2);
    }

    #[test]
    fn reject_delay_defaults_checks_its_bound_and_follows_the_environment() {
        let s = Settings::load_with_env(None, Some(HashMap::new())).expect("defaults");
        assert_eq!(s.radius.reject_delay, Duration::from_millis(1000));
        assert_eq!(
            load_text("[radius]\nreject_delay_ms = 0\n")
                .expect("0 turns it off")
                .radius
                .reject_delay,
            Duration::ZERO
        );
        let p = problem("[radius]\nreject_delay_ms = 10001\n");
        assert!(
            p.contains("radius.reject_delay_ms") && p.contains("between 0 and 10000"),
            "{p}"
        );
        let p = problem("[radius]\nreject_delay_ms = -1\n");
        assert!(p.contains("reject_delay_ms"), "{p}");
        let env = |value: &str| {
            let mut env = HashMap::new();
            env.insert(
                "OTPGATE__RADIUS__REJECT_DELAY_MS".to_string(),
                value.to_string(),
            );
            Settings::load_with_env(None, Some(env))
        };
        assert_eq!(
            env("250").expect("loads").radius.reject_delay,
            Duration::from_millis(250)
        );
        let e = env("20000").expect_err("out of range").to_string();
        assert!(e.contains("radius.reject_delay_ms"), "{e}");
    }

    #[test]
    fn upstreams_and_first_factor() {
        let radius = "[[upstreams]]\nname = \"site\"\nkind = \"radius\"\n\
                      servers = [\"192.0.2.5\", \"[2001:db8::5]:1645\"]\nsecret = \"long-enough\"\n";
        let app = "[[applications]]\nname = \"default\"\nfirst_factor = \"site\"\n";
        let s = load_text(&format!("{radius}{app}")).expect("loads");
        assert_eq!(
            s.applications[0].first_factor,
            FirstFactor::Upstream("site".into())
        );
        match &s.upstreams[0].kind {
            UpstreamKind::Radius { servers, .. } => assert_eq!(
                servers,
                &vec![
                    "192.0.2.5:1812".parse::<SocketAddr>().expect("addr"),
                    "[2001:db8::5]:1645".parse().expect("addr")
                ]
            ),
            UpstreamKind::Ldap { .. } => panic!("radius expected"),
        }
        assert_eq!(s.upstreams[0].timeout, Duration::from_millis(1000));
        assert_eq!(s.upstreams[0].retries, 1);
        for (text, key, words) in [
            (
                "[[applications]]\nname = \"default\"\nfirst_factor = \"nope\"\n".to_string(),
                "applications[0].first_factor",
                "neither `local`",
            ),
            (
                radius.replace("secret = \"long-enough\"\n", ""),
                "upstreams[0].secret",
                "required",
            ),
            (
                radius.replace("\"192.0.2.5\"", "\"host.example\""),
                "upstreams[0].servers[0]",
                "not an address",
            ),
            (
                radius.replace("radius", "kerberos"),
                "upstreams[0].kind",
                "expected `radius` or `ldap`",
            ),
            (
                format!("{radius}bind_dn_template = \"uid={{user}}\"\n"),
                "upstreams[0].bind_dn_template",
                "does not apply",
            ),
            (
                "[[upstreams]]\nname = \"dir\"\nkind = \"ldap\"\nservers = [\"ldap://127.0.0.1\"]\n\
                 bind_dn_template = \"uid=x,dc=org\"\n"
                    .to_string(),
                "upstreams[0].servers` / `bind_dn_template",
                "{user}",
            ),
            (
                format!("{radius}timeout_ms = 10\n"),
                "upstreams[0].timeout_ms",
                "between 50 and 60000",
            ),
        ] {
            let p = problem(&text);
            assert!(p.contains(key) && p.contains(words), "{key}: {p}");
        }
    }

    #[test]
    fn reply_attributes_by_dictionary_name() {
        let s = load_text(
            "[[applications]]\nname = \"default\"\n\
             reply_attributes = { Class = \"partner\", Session-Timeout = 3600, \
             Cisco-AVPair = [\"shell:priv-lvl=15\", \"ip:inacl#1=permit ip any any\"] }\n",
        )
        .expect("loads");
        let encoded = s.applications[0]
            .reply_attributes
            .clone()
            .expect("attributes");
        let dictionary = Dictionary::builtin().expect("builtin");
        let shown = dictionary.describe(&encoded);
        for part in [
            // Class is octets (RFC 2865 section 5.25): shown in hex.
            "Class=0x706172746e6572",
            "Session-Timeout=3600",
            "shell:priv-lvl=15",
            "permit ip any any",
        ] {
            assert!(shown.contains(part), "{part} in {shown}");
        }
        for (text, key, words) in [
            (
                "reply_attributes = { No-Such-Attribute = 1 }",
                "applications[0].reply_attributes.No-Such-Attribute",
                "No-Such-Attribute",
            ),
            (
                "reply_attributes = { Session-Timeout = \"soon\" }",
                "applications[0].reply_attributes.Session-Timeout",
                "Session-Timeout",
            ),
            (
                "reply_attributes = { State = \"x\" }",
                "applications[0].reply_attributes.State",
                "otpgate itself",
            ),
        ] {
            let p = problem(&format!("[[applications]]\nname = \"default\"\n{text}\n"));
            assert!(p.contains(key) && p.contains(words), "{key}: {p}");
        }
        let p = problem("[radius]\ndictionaries = \"/no/such/folder\"\n");
        assert!(
            p.contains("radius.dictionaries") && p.contains("/no/such/folder"),
            "{p}"
        );
    }
}
