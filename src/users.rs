//! User provisioning: adding one user with a fresh argon2id hash, and importing users with the
//! hashes admins migrate from FreeRADIUS `users` files and LDAP. Imports are all or nothing.
//!
//! What a login needs is in the [`User`] record; the rest of a user's profile (middle name,
//! organization) is a record of its own beside it, under `user/` + the name, written in the
//! same change set.

use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::audit::{Entry, Who};
use crate::auth::password::{Argon2Params, PasswordHash};
use crate::store::{ChangeSet, Expect, Store, StoreError, User};

const PROFILE_PREFIX: &[u8] = b"user/";
/// Longest name, organization or e-mail address accepted.
pub const MAX_FIELD: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user name `{0}` is not valid: use 1-128 characters from A-Z a-z 0-9 . _ @ -")]
    BadUserName(String),
    #[error("the password is empty")]
    EmptyPassword,
    #[error("the password is longer than 128 octets (RFC 2865 5.2 leaves no room for the OTP)")]
    PasswordTooLong,
    #[error("assurance level must be 2 or 3, got {0}")]
    BadLevel(u8),
    #[error("line {line}: {problem}")]
    Line { line: u64, problem: String },
    #[error("hashing the password failed: {0}")]
    Hash(String),
    #[error("{field} {problem}")]
    BadField {
        field: &'static str,
        problem: String,
    },
    #[error("user `{0}` already exists")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    FreeRadius(#[from] crate::freeradius::FreeRadiusError),
    #[error("tokens: {0}")]
    Tokens(String),
}

/// Identity data of a new user.
#[derive(Debug, Default, Clone)]
pub struct Profile {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub organization: Option<String>,
}

/// The part of a user's profile a login does not need, stored beside the user record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extra {
    pub middle_name: Option<String>,
    pub organization: Option<String>,
}

/// The store key of `username`'s [`Extra`].
fn profile_key(username: &str) -> Vec<u8> {
    let mut key = PROFILE_PREFIX.to_vec();
    key.extend_from_slice(username.as_bytes());
    key
}

/// The profile fields of `username` beyond the user record (default if none were given).
pub fn extra(store: &dyn Store, username: &str) -> Result<Extra, StoreError> {
    let key = profile_key(username);
    match store.record(&key)? {
        Some(bytes) => crate::store::decode(|| String::from_utf8_lossy(&key).into_owned(), &bytes),
        None => Ok(Extra::default()),
    }
}

/// A text field: trimmed, empty as none, at most [`MAX_FIELD`] characters, no control
/// characters.
fn text_field(field: &'static str, value: Option<String>) -> Result<Option<String>, UserError> {
    let Some(value) = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    if value.chars().count() > MAX_FIELD {
        return Err(UserError::BadField {
            field,
            problem: format!("is longer than {MAX_FIELD} characters"),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(UserError::BadField {
            field,
            problem: "contains control characters".into(),
        });
    }
    Ok(Some(value))
}

impl Profile {
    /// The profile with every field checked (see [`text_field`]); an e-mail address must look
    /// like one (something@domain).
    pub fn validated(self) -> Result<Profile, UserError> {
        let email = text_field("email", self.email)?;
        if let Some(address) = &email {
            let well_formed = address.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !address.contains(char::is_whitespace)
            });
            if !well_formed {
                return Err(UserError::BadField {
                    field: "email",
                    problem: format!("`{address}` is not an e-mail address"),
                });
            }
        }
        Ok(Profile {
            email,
            first_name: text_field("first_name", self.first_name)?,
            middle_name: text_field("middle_name", self.middle_name)?,
            last_name: text_field("last_name", self.last_name)?,
            organization: text_field("organization", self.organization)?,
        })
    }
}

/// User names: what RADIUS User-Name carries and what logs show, so a conservative alphabet.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

/// Adds one user with an argon2id hash of `password`, the profile beside it and an audit entry,
/// in one change set (durable at the next sync).
#[allow(clippy::too_many_arguments)]
pub fn add_user(
    store: &dyn Store,
    username: &str,
    password: &[u8],
    profile: Profile,
    level: u8,
    params: &Argon2Params,
    who: &Who,
    now: u64,
) -> Result<User, UserError> {
    if !valid_username(username) {
        return Err(UserError::BadUserName(username.to_string()));
    }
    if password.is_empty() {
        return Err(UserError::EmptyPassword);
    }
    // Leave room for an 8-digit OTP within the 128 octets of User-Password.
    if password.len() > 120 {
        return Err(UserError::PasswordTooLong);
    }
    if level != 2 && level != 3 {
        return Err(UserError::BadLevel(level));
    }
    let profile = profile.validated()?;
    if store.user(username)?.is_some() {
        return Err(UserError::Exists(username.to_string()));
    }
    let hash =
        PasswordHash::new_argon2id(password, params).map_err(|e| UserError::Hash(e.to_string()))?;
    let user = User {
        username: username.to_string(),
        password_hash: hash.as_stored().to_string(),
        email: profile.email,
        first_name: profile.first_name,
        last_name: profile.last_name,
        assurance_level: level,
        created_at: now,
    };
    let extra = Extra {
        middle_name: profile.middle_name,
        organization: profile.organization,
    };
    let value = crate::store::encode(&extra)?;
    let entry = Entry {
        at: now,
        actor: who.actor,
        by: who.name.clone(),
        action: "user.create".into(),
        serial: None,
        username: Some(username.to_string()),
        from: None,
        to: None,
        reason: String::new(),
    };
    let changes = ChangeSet::new().user(None, user.clone()).record(
        profile_key(username),
        Expect::Anything,
        Some(value),
    );
    match store.apply(entry.add_to(changes)?) {
        Ok(true) => Ok(user),
        Ok(false) | Err(StoreError::UserExists(_)) => Err(UserError::Exists(username.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Sets `username`'s password (argon2id), replacing a temporary one set at a revocation; one
/// change set with an audit entry, retried if the user changed meanwhile (a login's re-hash).
pub fn set_password(
    store: &dyn Store,
    username: &str,
    password: &[u8],
    params: &Argon2Params,
    who: &Who,
    now: u64,
) -> Result<User, UserError> {
    if password.is_empty() {
        return Err(UserError::EmptyPassword);
    }
    if password.len() > 120 {
        return Err(UserError::PasswordTooLong);
    }
    let hash =
        PasswordHash::new_argon2id(password, params).map_err(|e| UserError::Hash(e.to_string()))?;
    for _ in 0..16 {
        let Some(user) = store.user(username)? else {
            return Err(UserError::Store(StoreError::NoSuchUser(
                username.to_string(),
            )));
        };
        let was_temporary = PasswordHash::parse(&user.password_hash)
            .map(|h| h.is_temporary())
            .unwrap_or(false);
        let changed = User {
            password_hash: hash.as_stored().to_string(),
            ..user.clone()
        };
        let entry = Entry {
            at: now,
            actor: who.actor,
            by: who.name.clone(),
            action: "user.password_change".into(),
            serial: None,
            username: Some(username.to_string()),
            from: None,
            to: None,
            reason: if was_temporary {
                "replaces the temporary password".into()
            } else {
                String::new()
            },
        };
        let changes = ChangeSet::new().user(Some(user), changed.clone());
        if store.apply(entry.add_to(changes)?)? {
            return Ok(changed);
        }
    }
    Err(UserError::Store(StoreError::Io(format!(
        "user `{username}` keeps changing; try again"
    ))))
}

const LINK_PREFIX: &[u8] = b"link/";

fn link_key(child: &str) -> Vec<u8> {
    let mut key = LINK_PREFIX.to_vec();
    key.extend_from_slice(child.as_bytes());
    key
}

/// Why two accounts cannot be connected.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("user `{0}` does not exist")]
    NoSuchUser(String),
    #[error("an account cannot be connected to itself")]
    Itself,
    #[error(
        "the accounts' {0} differ: a connected account needs exactly the same first, middle \
         and last name and e-mail address as its parent"
    )]
    Mismatch(&'static str),
    #[error("`{0}` has a token of its own: a connected account has no credential of its own")]
    HasToken(String),
    #[error("`{0}` is itself a connected account")]
    Chained(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which identity field of `child` and `parent` differs, if any (guide "Connected Accounts":
/// first, middle and last name and e-mail address must match exactly, and be given).
pub fn identity_mismatch(
    store: &dyn Store,
    child: &User,
    parent: &User,
) -> Result<Option<&'static str>, StoreError> {
    let same = |a: &Option<String>, b: &Option<String>| a.is_some() && a == b;
    if !same(&child.first_name, &parent.first_name) {
        return Ok(Some("first names"));
    }
    if !same(&child.last_name, &parent.last_name) {
        return Ok(Some("last names"));
    }
    if !same(&child.email, &parent.email) {
        return Ok(Some("e-mail addresses"));
    }
    let middle = |name: &str| extra(store, name).map(|e| e.middle_name);
    if middle(&child.username)? != middle(&parent.username)? {
        return Ok(Some("middle names"));
    }
    Ok(None)
}

/// Connects `child` to `parent`: the child logs in with the parent's token (guide "Connected
/// Accounts"). Both must exist with the same identity; the child has no token of its own.
pub fn connect(
    store: &dyn Store,
    child: &str,
    parent: &str,
    who: &Who,
    now: u64,
) -> Result<(), ConnectError> {
    if child == parent {
        return Err(ConnectError::Itself);
    }
    let (child_user, child_token) = store.user_and_token(child)?;
    let child_user = child_user.ok_or_else(|| ConnectError::NoSuchUser(child.to_string()))?;
    let parent_user = store
        .user(parent)?
        .ok_or_else(|| ConnectError::NoSuchUser(parent.to_string()))?;
    if child_token.is_some() {
        return Err(ConnectError::HasToken(child.to_string()));
    }
    if connected_parent(store, parent)?.is_some() {
        return Err(ConnectError::Chained(parent.to_string()));
    }
    if let Some(field) = identity_mismatch(store, &child_user, &parent_user)? {
        return Err(ConnectError::Mismatch(field));
    }
    let entry = Entry {
        at: now,
        actor: who.actor,
        by: who.name.clone(),
        action: "user.connect".into(),
        serial: None,
        username: Some(child.to_string()),
        from: None,
        to: None,
        reason: format!("logs in with the token of `{parent}`"),
    };
    let changes = ChangeSet::new().record(
        link_key(child),
        Expect::Anything,
        Some(parent.as_bytes().to_vec()),
    );
    store.apply(entry.add_to(changes)?)?;
    Ok(())
}

/// The account `child` is connected to, if any.
pub fn connected_parent(store: &dyn Store, child: &str) -> Result<Option<String>, StoreError> {
    Ok(store
        .record(&link_key(child))?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

const TERMS_PREFIX: &[u8] = b"terms/";

fn terms_key(username: &str, application: &str) -> Vec<u8> {
    let mut key = TERMS_PREFIX.to_vec();
    key.extend_from_slice(username.as_bytes());
    key.push(b'/');
    key.extend_from_slice(application.as_bytes());
    key
}

/// Records that `username` accepted the terms of `application` (guide "Sponsored Tokens":
/// a sponsored registration needs the terms of the applications the organization subscribes
/// to accepted).
pub fn accept_terms(
    store: &dyn Store,
    username: &str,
    application: &str,
    who: &Who,
    now: u64,
) -> Result<(), UserError> {
    if store.user(username)?.is_none() {
        return Err(UserError::Store(StoreError::NoSuchUser(
            username.to_string(),
        )));
    }
    let entry = Entry {
        at: now,
        actor: who.actor,
        by: who.name.clone(),
        action: "user.accept_terms".into(),
        serial: None,
        username: Some(username.to_string()),
        from: None,
        to: None,
        reason: application.to_string(),
    };
    let changes = ChangeSet::new().record(
        terms_key(username, application),
        Expect::Anything,
        Some(now.to_be_bytes().to_vec()),
    );
    store.apply(entry.add_to(changes)?)?;
    Ok(())
}

/// Whether `username` accepted the terms of `application`.
pub fn accepted_terms(
    store: &dyn Store,
    username: &str,
    application: &str,
) -> Result<bool, StoreError> {
    Ok(store.record(&terms_key(username, application))?.is_some())
}

/// Reads users from CSV `username,password_hash,email,first,last` (a header line with those
/// names is optional); every hash must be in a recognised format. Nothing is stored unless
/// every line is good.
pub fn import_users<R: Read>(store: &dyn Store, reader: R, now: u64) -> Result<usize, UserError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let mut users = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (index, record) in csv.records().enumerate() {
        let line = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map(|p| p.line())
            .unwrap_or(index as u64 + 1);
        let record = record.map_err(|e| UserError::Line {
            line,
            problem: e.to_string(),
        })?;
        let field = |i: usize| record.get(i).unwrap_or("").to_string();
        if index == 0 && field(0).eq_ignore_ascii_case("username") {
            continue;
        }
        if record.iter().all(str::is_empty) {
            continue;
        }
        let fail = |problem: String| UserError::Line { line, problem };
        if record.len() < 2 || record.len() > 5 {
            return Err(fail(format!(
                "expected username,password_hash[,email,first,last], found {} fields",
                record.len()
            )));
        }
        let username = field(0);
        if !valid_username(&username) {
            return Err(fail(UserError::BadUserName(username).to_string()));
        }
        if let Some(first) = seen.insert(username.clone(), line) {
            return Err(fail(format!(
                "user `{username}` appears twice (first on line {first})"
            )));
        }
        let stored = field(1);
        let hash = PasswordHash::parse(&stored)
            .map_err(|e| fail(format!("user `{username}`: password_hash: {e}")))?;
        let optional = |i: usize| Some(field(i)).filter(|s| !s.is_empty());
        users.push(User {
            username,
            password_hash: hash.as_stored().to_string(),
            email: optional(2),
            first_name: optional(3),
            last_name: optional(4),
            assurance_level: 2,
            created_at: now,
        });
    }
    let count = users.len();
    store.create_users(&users)?;
    Ok(count)
}

/// What a FreeRADIUS import did (issue 12): users and their TOTP tokens written, and what was
/// not taken.
pub struct FreeRadiusImport {
    pub users: usize,
    pub tokens: usize,
    /// Whole entries not imported (DEFAULT, no password...), and why.
    pub skipped_entries: Vec<crate::freeradius::Skipped>,
    /// Per imported user, the attributes otpgate does not use (check and reply items).
    pub skipped_attributes: Vec<(String, Vec<String>)>,
}

/// The TOTP parameters of the tokens a FreeRADIUS import makes: rlm_totp's `otp_length` and
/// `time_step` (6 and 30 by default, as rlm_totp has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParameters {
    pub digits: u8,
    pub step: u64,
}

impl Default for TotpParameters {
    fn default() -> Self {
        TotpParameters {
            digits: 6,
            step: 30,
        }
    }
}

impl TotpParameters {
    /// Checked: 6 or 8 digits, a step of 30 or 60 seconds (what the appliance takes).
    pub fn new(digits: u8, step: u64) -> Result<TotpParameters, UserError> {
        if !crate::otp::valid_digits(digits) {
            return Err(UserError::BadField {
                field: "totp digits",
                problem: format!("must be 6 or 8, got {digits}"),
            });
        }
        if !matches!(step, 30 | 60) {
            return Err(UserError::BadField {
                field: "totp step",
                problem: format!("must be 30 or 60 seconds, got {step}"),
            });
        }
        Ok(TotpParameters { digits, step })
    }
}

/// The serial of the TOTP token made of a FreeRADIUS user's `TOTP-Secret`: `totp-` and the
/// user name, `@` written `_at_` (serials take A-Z a-z 0-9 . _ -).
pub fn freeradius_totp_serial(username: &str) -> String {
    format!("totp-{}", username.replace('@', "_at_"))
}

/// Imports a FreeRADIUS `users`/`authorize` file (see [`crate::freeradius`]): each user with
/// its password (a stored hash as it is; a `Cleartext-Password` hashed to argon2id with
/// `argon2`, never stored as given) and, with a `TOTP-Secret`, a TOTP token it owns, active,
/// HMAC-SHA1 with `totp`'s digits and step (rlm_totp's), serial
/// [`freeradius_totp_serial`]. All or nothing: everything is checked (names, existing users
/// and serials) before anything is written; an error names the file and line.
pub fn import_freeradius(
    tokens: &crate::token::TokenService,
    file: &str,
    text: &str,
    argon2: &Argon2Params,
    totp: TotpParameters,
    now: u64,
) -> Result<FreeRadiusImport, UserError> {
    use crate::freeradius::{parse, Password};
    use crate::otp::import::ImportedToken;
    use crate::otp::{Algorithm, TokenKind};
    let parsed = parse(file, text)?;
    let store = tokens.store().as_ref();
    let at = |line: usize, problem: String| UserError::Line {
        line: line as u64,
        problem: format!("{file}: {problem}"),
    };
    let mut users = Vec::with_capacity(parsed.users.len());
    let mut seeds = Vec::new();
    let mut serials = std::collections::HashMap::new();
    let mut skipped_attributes = Vec::new();
    for entry in parsed.users {
        let name = &entry.username;
        if !valid_username(name) {
            return Err(at(
                entry.line,
                UserError::BadUserName(name.clone()).to_string(),
            ));
        }
        if store.user(name)?.is_some() {
            return Err(at(entry.line, UserError::Exists(name.clone()).to_string()));
        }
        let password_hash = match &entry.password {
            Password::Hash(stored) => PasswordHash::parse(stored)
                .map_err(|e| at(entry.line, format!("user `{name}`: {e}")))?
                .as_stored()
                .to_string(),
            Password::Cleartext(clear) => PasswordHash::new_argon2id(clear.as_bytes(), argon2)
                .map_err(|e| at(entry.line, format!("user `{name}`: hashing: {e}")))?
                .as_stored()
                .to_string(),
        };
        if let Some(secret) = entry.totp_secret {
            let serial = freeradius_totp_serial(name);
            if let Some(first) = serials.insert(serial.clone(), entry.line) {
                return Err(at(
                    entry.line,
                    format!("token serial `{serial}` is also the one of line {first}'s user"),
                ));
            }
            if store.token(&serial)?.is_some() {
                return Err(at(
                    entry.line,
                    format!("token serial `{serial}` exists already"),
                ));
            }
            seeds.push(ImportedToken {
                serial,
                secret,
                algorithm: Algorithm::Sha1,
                digits: totp.digits,
                kind: TokenKind::Totp { period: totp.step },
                counter: 0,
                owner: Some(name.clone()),
            });
        }
        if !entry.skipped.is_empty() {
            skipped_attributes.push((name.clone(), entry.skipped));
        }
        users.push(User {
            username: entry.username,
            password_hash,
            email: None,
            first_name: None,
            last_name: None,
            assurance_level: 2,
            created_at: now,
        });
    }
    store.create_users(&users)?;
    let token_count = tokens
        .import(seeds, now)
        .map_err(|e| UserError::Tokens(e.to_string()))?;
    Ok(FreeRadiusImport {
        users: users.len(),
        tokens: token_count,
        skipped_entries: parsed.skipped,
        skipped_attributes,
    })
}
