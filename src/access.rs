//! Who may use the admin API: bearer tokens with a role (issue 13, "Part 3"). A token is 32
//! random octets, shown once at its creation; the store keeps its SHA-256 only (a random
//! 256-bit secret needs no slow hash), under `admin-token/` + the hash in hex, and its name
//! under `admin-name/` + the name so names stay unique.

use data_encoding::{BASE32_NOPAD, HEXLOWER};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{Entry, Who};
use crate::store::{ChangeSet, Expect, Store, StoreError};

const TOKEN_PREFIX: &[u8] = b"admin-token/";
const NAME_PREFIX: &[u8] = b"admin-name/";
/// What every bearer token starts with, so a leaked one is recognisable in a scan.
const TOKEN_MARK: &str = "ogt_";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Everything.
    Admin,
    /// Users and tokens of its organization only.
    OrgAdmin,
    /// Read, resync, suspend, reinstate, reset; no revoke, no keys.
    Helpdesk,
    /// A proofing agent: reads proofing status, records verifications and issues activation
    /// codes; nothing else.
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::OrgAdmin => "org-admin",
            Role::Helpdesk => "helpdesk",
            Role::Agent => "agent",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "org-admin" => Some(Role::OrgAdmin),
            "helpdesk" => Some(Role::Helpdesk),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

/// A bearer token as stored (the secret is not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    pub name: String,
    pub role: Role,
    /// The organization of an `org-admin`.
    pub organization: Option<String>,
    pub created_at: u64,
}

impl AdminToken {
    /// How the audit names actions taken with this token.
    pub fn who(&self) -> Who {
        Who::admin(&format!("token:{}", self.name))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("name must be 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    BadName,
    #[error("an org-admin token needs --organization, and only an org-admin token has one")]
    Organization,
    #[error("an admin token named `{0}` exists already")]
    NameTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn key(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(rest);
    key
}

fn token_key(secret: &str) -> Vec<u8> {
    key(
        TOKEN_PREFIX,
        HEXLOWER
            .encode(&Sha256::digest(secret.as_bytes()))
            .as_bytes(),
    )
}

/// Creates a token named `name` with `role`; returns the secret, which is not stored and
/// cannot be shown again.
pub fn create(
    store: &dyn Store,
    name: &str,
    role: Role,
    organization: Option<&str>,
    who: &Who,
    now: u64,
) -> Result<String, AccessError> {
    if !valid_name(name) {
        return Err(AccessError::BadName);
    }
    let organization = organization.map(str::trim).filter(|o| !o.is_empty());
    if (role == Role::OrgAdmin) != organization.is_some() {
        return Err(AccessError::Organization);
    }
    let mut random = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let secret = format!(
        "{TOKEN_MARK}{}",
        BASE32_NOPAD.encode(&random).to_lowercase()
    );
    let record = AdminToken {
        name: name.to_string(),
        role,
        organization: organization.map(str::to_string),
        created_at: now,
    };
    let encoded = crate::store::encode(&record)?;
    let hashed = token_key(&secret);
    let entry = Entry {
        at: now,
        actor: who.actor,
        by: who.name.clone(),
        action: "admin_token.create".into(),
        serial: None,
        username: None,
        from: None,
        to: None,
        reason: format!(
            "{name}: {}{}",
            role.as_str(),
            organization.map(|o| format!(" of {o}")).unwrap_or_default()
        ),
    };
    let changes = ChangeSet::new()
        .record(
            key(NAME_PREFIX, name.as_bytes()),
            Expect::Absent,
            Some(hashed.clone()),
        )
        .record(hashed, Expect::Absent, Some(encoded));
    if !store.apply(entry.add_to(changes)?)? {
        return Err(AccessError::NameTaken(name.to_string()));
    }
    Ok(secret)
}

/// The token whose secret is `secret`, if there is one.
pub fn authenticate(store: &dyn Store, secret: &str) -> Result<Option<AdminToken>, StoreError> {
    if !secret.starts_with(TOKEN_MARK) || secret.len() > 128 {
        return Ok(None);
    }
    let key = token_key(secret);
    let Some(bytes) = store.record(&key)? else {
        return Ok(None);
    };
    crate::store::decode(|| "records/admin-token/...".into(), &bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_authenticates_by_its_secret_only_and_names_are_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            crate::store::sled_store::SledStore::open(&dir.path().join("db")).expect("open");
        let who = Who::admin("cli");
        let secret = create(&store, "desk", Role::Helpdesk, None, &who, 5).expect("create");
        let found = authenticate(&store, &secret).expect("read").expect("found");
        assert_eq!((found.name.as_str(), found.role), ("desk", Role::Helpdesk));
        let mut other = secret.clone();
        let last = other.pop().expect("not empty");
        other.push(if last == 'a' { 'b' } else { 'a' });
        assert!(authenticate(&store, &other).expect("read").is_none());
        assert!(authenticate(&store, "desk").expect("read").is_none());
        assert!(matches!(
            create(&store, "desk", Role::Admin, None, &who, 6),
            Err(AccessError::NameTaken(_))
        ));
        assert!(matches!(
            create(&store, "acme", Role::OrgAdmin, None, &who, 6),
            Err(AccessError::Organization)
        ));
        assert!(matches!(
            create(&store, "x y", Role::Admin, None, &who, 6),
            Err(AccessError::BadName)
        ));
        let stored = store
            .records(b"admin-token/", b"admin-token0", 10)
            .expect("scan");
        assert!(stored.iter().all(|(k, v)| !k
            .windows(8)
            .any(|w| secret.as_bytes().windows(8).any(|s| s == w))
            && !v
                .windows(8)
                .any(|w| secret.as_bytes().windows(8).any(|s| s == w))));
    }
}
