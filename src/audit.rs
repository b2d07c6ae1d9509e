//! The audit trail: every lifecycle and admin action, with who asked, what, when, and the
//! token's state before and after (issue 13, "Audit"). An entry is written in the same change
//! set as the change it records, so neither is durable without the other. RADIUS decisions
//! are not here (one store write per request would be); they are in the decision log, and the
//! token keeps its last authentication and failure count.
//!
//! Entries are kept in the store's records under `audit/`, then the time (8 octets, big
//! endian), then the store's sequence number (8 octets): a range of keys is a range of time,
//! in the order the entries were written.

use serde::{Deserialize, Serialize};

use crate::store::{ChangeSet, Store, StoreError};
use crate::token::{Actor, TokenState};

const PREFIX: &[u8] = b"audit/";

/// Who asks for an action: the kind of actor, for the state machine's rules, and a name for
/// the audit (an admin token's name, `cli`, the user's name, `sweeper`, `radius`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub actor: Actor,
    pub name: String,
}

impl Who {
    pub fn admin(name: &str) -> Who {
        Who {
            actor: Actor::Admin,
            name: name.to_string(),
        }
    }

    pub fn user(name: &str) -> Who {
        Who {
            actor: Actor::User,
            name: name.to_string(),
        }
    }

    /// The time rules.
    pub fn system() -> Who {
        Who {
            actor: Actor::System,
            name: "sweeper".into(),
        }
    }

    /// The RADIUS login path.
    pub fn login() -> Who {
        Who {
            actor: Actor::Login,
            name: "radius".into(),
        }
    }
}

/// One recorded action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Unix seconds.
    pub at: u64,
    pub actor: Actor,
    pub by: String,
    /// What was done, e.g. `token.revoke`.
    pub action: String,
    pub serial: Option<String>,
    pub username: Option<String>,
    pub from: Option<TokenState>,
    pub to: Option<TokenState>,
    pub reason: String,
}

impl Entry {
    /// Adds this entry to `changes` as a new record.
    pub fn add_to(&self, changes: ChangeSet) -> Result<ChangeSet, StoreError> {
        let value = crate::store::encode(self)?;
        Ok(changes.append(time_key(self.at), value))
    }
}

/// The start of the keys of entries at `at`: the store appends its sequence number.
fn time_key(at: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(PREFIX.len() + 16);
    key.extend_from_slice(PREFIX);
    key.extend_from_slice(&at.to_be_bytes());
    key
}

/// Which entries a query wants: all of those given must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub username: Option<String>,
    pub serial: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<u64>,
    /// Unix seconds, inclusive.
    pub until: Option<u64>,
}

/// Entries matching `filter`, oldest first, at most `limit`.
pub fn query(store: &dyn Store, filter: &Filter, limit: usize) -> Result<Vec<Entry>, StoreError> {
    let from = time_key(filter.since.unwrap_or(0));
    let to = match filter.until.and_then(|t| t.checked_add(1)) {
        Some(end) => time_key(end),
        None => {
            let mut end = PREFIX.to_vec();
            end.extend_from_slice(&[0xFF; 17]);
            end
        }
    };
    let mut found = Vec::new();
    crate::store::scan(store, &from, &to, |key, value| {
        let entry: Entry =
            crate::store::decode(|| String::from_utf8_lossy(key).into_owned(), value)?;
        let wanted = filter
            .username
            .as_ref()
            .is_none_or(|u| entry.username.as_ref() == Some(u))
            && filter
                .serial
                .as_ref()
                .is_none_or(|s| entry.serial.as_ref() == Some(s));
        if wanted {
            found.push(entry);
        }
        Ok(found.len() < limit)
    })?;
    Ok(found)
}
