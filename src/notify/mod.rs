//! Notifications to users (guide: the e-mails of "Revoke", "Renew", "Expired Tokens",
//! "Suspended Tokens"): written to a durable outbox in the store, in the same change set as
//! the change they tell of, and delivered from there.
//!
//! An outbox entry is a record under `outbox/` + its id (the enqueue time, 8 octets big
//! endian, then 8 random octets), so a scan of the prefix is oldest first.

pub mod deliver;

use serde::{Deserialize, Serialize};

use crate::store::{ChangeSet, Expect, StoreError};

/// The key prefix of outbox entries in the store's records.
pub const OUTBOX_PREFIX: &[u8] = b"outbox/";

/// A message to one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// What it is about, e.g. `token.revoked`, `token.expiry_notice` (for logs and tests).
    pub kind: String,
    /// The user it is for.
    pub username: String,
    /// E-mail address.
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// An outbox entry: the notification and its delivery so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub notification: Notification,
    /// Unix seconds it was enqueued.
    pub created_at: u64,
    /// Delivery attempts that failed so far.
    pub attempts: u32,
    /// Unix seconds before which no attempt is made (back-off).
    pub next_attempt_at: u64,
}

/// The outbox key of an entry enqueued at `now`, made unique by `unique`.
pub fn outbox_key(now: u64, unique: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(OUTBOX_PREFIX.len() + 16);
    key.extend_from_slice(OUTBOX_PREFIX);
    key.extend_from_slice(&now.to_be_bytes());
    key.extend_from_slice(&unique.to_be_bytes());
    key
}

/// Adds `notification` to the outbox as part of `changes`: durable with the change it tells
/// of, or not at all.
pub fn enqueue(
    changes: ChangeSet,
    notification: Notification,
    now: u64,
) -> Result<ChangeSet, StoreError> {
    let entry = Pending {
        notification,
        created_at: now,
        attempts: 0,
        next_attempt_at: now,
    };
    let value = crate::store::encode(&entry)?;
    Ok(changes.record(outbox_key(now, rand::random()), Expect::Absent, Some(value)))
}
