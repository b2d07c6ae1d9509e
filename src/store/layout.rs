//! Where the sled back end keeps what (store schema 3), and the migrations to it.
//!
//! - `users`: `name` -> user record, and `name` + 0xFF -> the record of the token `name` owns.
//! - `serials`: `serial` -> where that token's record is: [`TAG_OWNED`] + owner name (the
//!   record is in `users`, beside its owner), or [`TAG_RECORD`] + the record itself (a token
//!   nobody owns: stock, or unassigned).
//! - `meta`: schema version, import journal.
//!
//! A login reads the user and the user's token; with both records side by side in one sled
//! leaf, that is one node to page in, not two or three. With a million users most logins
//! miss sled's cache and each miss costs several microseconds, so this layout is what keeps a
//! storm of unrelated users cheap. 0xFF never occurs in UTF-8: no user name can collide with
//! a token key.
//!
//! Schema 1 kept every record in a tree `tokens` (serial -> record) with an index `owners`
//! (name -> serial); schema 2 moved that index into `users`. [`migrate_to_schema_3`] rebuilds
//! the layout from the records of `tokens`, whose `owner` fields are authoritative.

use sled::transaction::TransactionError;
use sled::Tree;

use super::{StoreError, Token};

/// Schema written by this build.
pub const SCHEMA_VERSION: u32 = 3;
/// Written while a migration to [`SCHEMA_VERSION`] is under way: older builds refuse the store
/// (its old index may be half gone), this one resumes the migration.
pub const MIGRATING: u32 = 0x8000_0000 | SCHEMA_VERSION;
pub const SCHEMA_KEY: &[u8] = b"schema_version";

/// `serials` value: the owner's name follows; the record is at [`owner_key`] in `users`.
const TAG_OWNED: u8 = 1;
/// `serials` value: the record follows.
const TAG_RECORD: u8 = 0;

/// Trees of schemas 1 and 2, dropped once migrated.
const OLD_TREES: [&[u8]; 2] = [b"tokens", b"owners"];
/// Rows per sled batch while migrating.
const MIGRATION_CHUNK: usize = 10_000;

/// Key of the token record owned by `username` in `users`: the name and 0xFF, which sorts it
/// right after the user's record.
pub fn owner_key(username: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(username.len() + 1);
    key.extend_from_slice(username.as_bytes());
    key.push(0xFF);
    key
}

/// The error for `owner` already holding the token whose record is `held` (or, if that record
/// does not decode, the corruption).
pub fn owner_taken(owner: &str, held: &[u8]) -> StoreError {
    match decode::<Token>(|| format!("users/{owner}/token"), held) {
        Ok(token) => StoreError::OwnerTaken {
            user: owner.to_string(),
            serial: token.serial,
        },
        Err(corrupt) => corrupt,
    }
}

/// Where a token's record is, as `serials` says.
pub enum Location<'a> {
    /// Beside its owner, at [`owner_key`] in `users`.
    Owned(&'a str),
    /// Here: the encoded record.
    Here(&'a [u8]),
}

/// The `serials` value for `token` (encoded as `record`).
pub fn serial_value(token: &Token, record: &[u8]) -> Vec<u8> {
    match &token.owner {
        Some(owner) => tagged(TAG_OWNED, owner.as_bytes()),
        None => tagged(TAG_RECORD, record),
    }
}

/// The `serials` value of a token nobody owns, encoded as `record`.
pub fn unowned_value(record: &[u8]) -> Vec<u8> {
    tagged(TAG_RECORD, record)
}

fn tagged(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(rest.len() + 1);
    value.push(tag);
    value.extend_from_slice(rest);
    value
}

/// Reads a `serials` value.
pub fn location<'a>(serial: &str, value: &'a [u8]) -> Result<Location<'a>, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: format!("serials/{serial}"),
        reason: reason.into(),
    };
    match value.split_first() {
        Some((&TAG_RECORD, record)) => Ok(Location::Here(record)),
        Some((&TAG_OWNED, owner)) => std::str::from_utf8(owner)
            .map(Location::Owned)
            .map_err(|_| corrupt("owner is not UTF-8")),
        _ => Err(corrupt("unknown location tag")),
    }
}

/// Puts a record replayed from the write-ahead log where it belongs. For the replay at open,
/// which runs alone. Returns false when sled already holds a newer state and the record was
/// skipped.
///
/// The log never carries an owner change (those are checkpointed at once), so a record whose
/// owner disagrees with where sled keeps the token predates a checkpointed owner change: sled
/// is newer and the record is left out. Otherwise the record goes where sled keeps the token,
/// never over another token's record.
pub fn place(
    users: &Tree,
    serials: &Tree,
    token: &Token,
    record: &[u8],
) -> Result<bool, StoreError> {
    let serial = token.serial.as_bytes();
    let current = serials.get(serial).map_err(io)?;
    let agrees = match current
        .as_deref()
        .map(|v| location(&token.serial, v))
        .transpose()?
    {
        None => true,
        Some(Location::Here(_)) => token.owner.is_none(),
        Some(Location::Owned(owner)) => token.owner.as_deref() == Some(owner),
    };
    if !agrees {
        return Ok(false);
    }
    if let Some(owner) = &token.owner {
        let key = owner_key(owner);
        if let Some(held) = users.get(&key).map_err(io)? {
            let held: Token = decode(|| format!("users/{owner}/token"), &held)?;
            if held.serial != token.serial {
                return Ok(false);
            }
        }
        users.insert(key, record).map_err(io)?;
    }
    serials
        .insert(serial, serial_value(token, record))
        .map_err(io)?;
    Ok(true)
}

/// Schema 1 or 2 -> 3: rebuilds `serials` and the token records in `users` from the records
/// of the old `tokens` tree, then drops the old trees. Before it changes anything it marks
/// the store [`MIGRATING`] (durably), which older builds refuse and this one resumes: it
/// starts by clearing what an earlier attempt wrote, and writes [`SCHEMA_VERSION`] only once
/// the new layout is durable (`flush`).
pub fn migrate_to_schema_3(
    db: &sled::Db,
    users: &Tree,
    serials: &Tree,
    meta: &Tree,
    flush: impl Fn() -> Result<(), StoreError>,
) -> Result<usize, StoreError> {
    meta.insert(SCHEMA_KEY, &MIGRATING.to_be_bytes())
        .map_err(io)?;
    flush()?;
    serials.clear().map_err(io)?;
    let mut stale = sled::Batch::default();
    let mut staled = 0usize;
    for key in users.iter().keys() {
        let key = key.map_err(io)?;
        if key.last() == Some(&0xFF) {
            stale.remove(key);
            staled += 1;
            if staled % MIGRATION_CHUNK == 0 {
                apply(users, &std::mem::take(&mut stale))?;
            }
        }
    }
    apply(users, &stale)?;
    let old = db.open_tree(OLD_TREES[0]).map_err(io)?;
    // Writers always refused a second token for an owner; a store that has one anyway is
    // not guessed at.
    let mut owners = std::collections::HashMap::new();
    let mut moved = 0usize;
    let mut user_batch = sled::Batch::default();
    let mut serial_batch = sled::Batch::default();
    for entry in old.iter() {
        let (serial, record) = entry.map_err(io)?;
        let token: Token = decode(
            || format!("tokens/{}", String::from_utf8_lossy(&serial)),
            &record,
        )?;
        if let Some(owner) = &token.owner {
            if let Some(first) = owners.insert(owner.clone(), token.serial.clone()) {
                return Err(StoreError::OwnerTwice {
                    user: owner.clone(),
                    first,
                    second: token.serial,
                });
            }
            user_batch.insert(owner_key(owner), record.as_ref());
        }
        serial_batch.insert(serial, serial_value(&token, &record));
        moved += 1;
        if moved % MIGRATION_CHUNK == 0 {
            apply(users, &std::mem::take(&mut user_batch))?;
            apply(serials, &std::mem::take(&mut serial_batch))?;
        }
    }
    apply(users, &user_batch)?;
    apply(serials, &serial_batch)?;
    flush()?;
    meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
        .map_err(io)?;
    flush()?;
    drop_old_trees(db)?;
    Ok(moved)
}

/// Drops the trees of schemas 1 and 2 if they are still there (a migration interrupted after
/// writing the version leaves them behind).
pub fn drop_old_trees(db: &sled::Db) -> Result<(), StoreError> {
    let names = db.tree_names();
    for old in OLD_TREES {
        if names.iter().any(|n| n.as_ref() == old) {
            db.drop_tree(old).map_err(io)?;
        }
    }
    Ok(())
}

/// Applies `batch` to `tree` atomically. Through a transaction rather than sled's
/// `Tree::apply_batch`, which holds far more memory per batch: importing 1 M users in batches
/// of 10,000 peaked at 3.9 GB resident that way, 0.74 GB this way, in the same time.
pub fn apply(tree: &Tree, batch: &sled::Batch) -> Result<(), StoreError> {
    tx_result(tree.transaction(|t| {
        t.apply_batch(batch)?;
        Ok(())
    }))
}

/// Failure inside a sled transaction: either ours (abort) or sled's.
pub fn tx_result<T>(r: Result<T, TransactionError<StoreError>>) -> Result<T, StoreError> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(io(e)),
    }
}

pub fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

/// Decodes a postcard record; `key` names it in the error, built only if there is one.
pub fn decode<T: serde::de::DeserializeOwned>(
    key: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        key: key(),
        reason: e.to_string(),
    })
}
