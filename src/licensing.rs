//! How a user acquires a token (guide "Purchase OTP Hardware Token", "Sponsored Tokens"):
//! a license key an administrator issues for an assurance level and a number of years, used
//! once at registration; or a sponsorship by a partner organization, with a date by which the
//! user must register (after it the sponsorship lapses and registration needs a purchase).
//!
//! License keys are stored hashed (SHA-256 of the key: it carries 100 random bits, so no
//! slow hash is needed), under `license/` + the hash in hex; the key itself is shown once.
//! Sponsorships are stored under `sponsor/` + the user name, one per user.

use data_encoding::{BASE32_NOPAD, HEXLOWER};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{Entry, Who};
use crate::store::{ChangeSet, Expect, Store, StoreError};
use crate::token::rules;

const LICENSE_PREFIX: &[u8] = b"license/";
const SPONSOR_PREFIX: &[u8] = b"sponsor/";
/// Years a key or a sponsorship may cover.
pub const MAX_YEARS: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum LicensingError {
    #[error("level must be 2 or 3, got {0}")]
    BadLevel(u8),
    #[error("years must be 1 to {MAX_YEARS}, got {0}")]
    BadYears(u32),
    #[error("user `{0}` does not exist")]
    NoSuchUser(String),
    #[error("register_by is in the past")]
    RegisterByPast,
    #[error("organization must be 1 to 128 characters")]
    BadOrganization,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A license key as stored (the key itself is not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseKey {
    pub level: u8,
    pub years: u32,
    /// Unix seconds; the token's expiry counts from here (the purchase).
    pub issued_at: u64,
    pub issued_by: String,
    /// Set once the key is used.
    pub redeemed: Option<Redeemed>,
}

/// Where a license key or sponsorship went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redeemed {
    pub serial: String,
    pub username: String,
    pub at: u64,
}

/// A partner organization paying for one user's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sponsorship {
    pub username: String,
    pub organization: String,
    pub level: u8,
    /// Unix seconds: the user must register by then.
    pub register_by: u64,
    /// Years the token is good for, from its registration.
    pub years: u32,
    pub created_at: u64,
    pub created_by: String,
    pub redeemed: Option<Redeemed>,
}

impl Sponsorship {
    /// Whether a registration at `now` may use it.
    pub fn usable_at(&self, now: u64) -> bool {
        self.redeemed.is_none() && now <= self.register_by
    }
}

/// A record read for a registration: its store key, its stored bytes (the registration's
/// compare-and-swap expects them) and its value.
#[derive(Debug, Clone)]
pub struct Found<T> {
    pub key: Vec<u8>,
    pub stored: Vec<u8>,
    pub value: T,
}

impl<T: Serialize> Found<T> {
    /// A change set marking this record as `value` now is (redeemed), if it is still as read.
    pub fn rewrite(&self, value: &T) -> Result<ChangeSet, StoreError> {
        Ok(ChangeSet::new().record(
            self.key.clone(),
            Expect::Value(self.stored.clone()),
            Some(crate::store::encode(value)?),
        ))
    }
}

fn check_terms(level: u8, years: u32) -> Result<(), LicensingError> {
    if level != 2 && level != 3 {
        return Err(LicensingError::BadLevel(level));
    }
    if !(1..=MAX_YEARS).contains(&years) {
        return Err(LicensingError::BadYears(years));
    }
    Ok(())
}

/// The store key of a license key: its normalised form (upper case, no dashes or spaces)
/// hashed.
fn license_key(text: &str) -> Vec<u8> {
    let normalised: String = text
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let mut key = LICENSE_PREFIX.to_vec();
    key.extend_from_slice(
        HEXLOWER
            .encode(&Sha256::digest(normalised.as_bytes()))
            .as_bytes(),
    );
    key
}

/// Issues a license key for `level` and `years`; returns the key, which is not stored and
/// cannot be shown again.
pub fn issue_license_key(
    store: &dyn Store,
    level: u8,
    years: u32,
    who: &Who,
    now: u64,
) -> Result<String, LicensingError> {
    check_terms(level, years)?;
    let mut random = [0u8; 15];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let text = BASE32_NOPAD.encode(&random);
    let shown = text
        .as_bytes()
        .chunks(6)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-");
    let record = LicenseKey {
        level,
        years,
        issued_at: now,
        issued_by: who.name.clone(),
        redeemed: None,
    };
    let entry = Entry {
        at: now,
        actor: who.actor,
        by: who.name.clone(),
        action: "license_key.issue".into(),
        serial: None,
        username: None,
        from: None,
        to: None,
        reason: format!("level {level}, {years} year(s)"),
    };
    let changes = ChangeSet::new().record(
        license_key(&text),
        Expect::Absent,
        Some(crate::store::encode(&record)?),
    );
    if !store.apply(entry.add_to(changes)?)? {
        return Err(StoreError::Io("a license key collided; issue again".into()).into());
    }
    Ok(shown)
}

/// The license key `text`, if it was issued.
pub fn license(store: &dyn Store, text: &str) -> Result<Option<Found<LicenseKey>>, StoreError> {
    let key = license_key(text);
    let Some(stored) = store.record(&key)? else {
        return Ok(None);
    };
    let value = crate::store::decode(|| String::from_utf8_lossy(&key).into_owned(), &stored)?;
    Ok(Some(Found { key, stored, value }))
}

fn sponsor_key(username: &str) -> Vec<u8> {
    let mut key = SPONSOR_PREFIX.to_vec();
    key.extend_from_slice(username.as_bytes());
    key
}

/// What a sponsorship asks for.
#[derive(Debug, Clone)]
pub struct SponsorshipRequest {
    pub username: String,
    pub organization: String,
    pub level: u8,
    pub register_by: u64,
    pub years: u32,
}

/// Records that `organization` sponsors `username`'s token (replacing an earlier
/// sponsorship of that user).
pub fn sponsor(
    store: &dyn Store,
    request: SponsorshipRequest,
    who: &Who,
    now: u64,
) -> Result<Sponsorship, LicensingError> {
    check_terms(request.level, request.years)?;
    let organization = request.organization.trim();
    if organization.is_empty() || organization.len() > 128 {
        return Err(LicensingError::BadOrganization);
    }
    if request.register_by < now {
        return Err(LicensingError::RegisterByPast);
    }
    if store.user(&request.username)?.is_none() {
        return Err(LicensingError::NoSuchUser(request.username));
    }
    let record = Sponsorship {
        username: request.username.clone(),
        organization: organization.to_string(),
        level: request.level,
        register_by: request.register_by,
        years: request.years,
        created_at: now,
        created_by: who.name.clone(),
        redeemed: None,
    };
    let entry = Entry {
        at: now,
        actor: who.actor,
        by: who.name.clone(),
        action: "sponsorship.create".into(),
        serial: None,
        username: Some(request.username.clone()),
        from: None,
        to: None,
        reason: format!(
            "{organization}: level {}, {} year(s)",
            request.level, request.years
        ),
    };
    // Filed in the due index for the time rules to lapse it if unused.
    let changes = ChangeSet::new()
        .record(
            sponsor_key(&request.username),
            Expect::Anything,
            Some(crate::store::encode(&record)?),
        )
        .record(
            rules::sponsor_due_key(rules::sponsorship_due(&record), &request.username),
            Expect::Anything,
            Some(Vec::new()),
        );
    store.apply(entry.add_to(changes)?)?;
    Ok(record)
}

/// `username`'s sponsorship, if any.
pub fn sponsorship(
    store: &dyn Store,
    username: &str,
) -> Result<Option<Found<Sponsorship>>, StoreError> {
    let key = sponsor_key(username);
    let Some(stored) = store.record(&key)? else {
        return Ok(None);
    };
    let value = crate::store::decode(|| String::from_utf8_lossy(&key).into_owned(), &stored)?;
    Ok(Some(Found { key, stored, value }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_by_its_text_however_typed_and_stored_hashed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            crate::store::sled_store::SledStore::open(&dir.path().join("db")).expect("open");
        let key = issue_license_key(&store, 3, 2, &Who::admin("a"), 100).expect("issue");
        assert_eq!(key.len(), 24 + 3, "{key}");
        let found = license(&store, &key.to_lowercase().replace('-', " "))
            .expect("read")
            .expect("found");
        assert_eq!((found.value.level, found.value.years), (3, 2));
        assert!(!found
            .key
            .windows(6)
            .any(|w| key.as_bytes().windows(6).any(|k| k == w)));
        assert!(license(&store, "AAAA-BBBB").expect("read").is_none());
        assert!(matches!(
            issue_license_key(&store, 4, 1, &Who::admin("a"), 100),
            Err(LicensingError::BadLevel(4))
        ));
        assert!(matches!(
            issue_license_key(&store, 2, 0, &Who::admin("a"), 100),
            Err(LicensingError::BadYears(0))
        ));
    }
}
