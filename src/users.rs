//! User provisioning: adding one user with a fresh argon2id hash, and importing users with the
//! hashes admins migrate from FreeRADIUS `users` files and LDAP. Imports are all or nothing.

use std::io::Read;

use crate::auth::password::{Argon2Params, PasswordHash};
use crate::store::{Store, StoreError, User};

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Identity data of a new user.
#[derive(Debug, Default, Clone)]
pub struct Profile {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// User names: what RADIUS User-Name carries and what logs show, so a conservative alphabet.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

/// Adds one user with an argon2id hash of `password`.
pub fn add_user(
    store: &dyn Store,
    username: &str,
    password: &[u8],
    profile: Profile,
    level: u8,
    params: &Argon2Params,
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
    store.create_users(std::slice::from_ref(&user))?;
    Ok(user)
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
