//! A change set: the one way anything in the store changes (a login's token update, a user's
//! password change, a revocation that touches a token, a user, an audit record and a
//! notification at once). Every write in it carries what its writer read; [`super::Store::apply`]
//! applies all of them atomically, or none if anything changed since it was read, and logs the
//! result in the token log as one record, so it is durable at the next
//! [`super::Store::sync`] with the logins' records, without a checkpoint.
//!
//! Besides users and tokens, the store keeps other records (lifecycle details, audit entries,
//! the notification outbox, license keys, indexes by due date) as plain key/value pairs: their
//! keys and encodings are their owners' business.

use serde::{Deserialize, Serialize};

use super::{StoreError, Token, User};

/// What a record write expects to find before it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No record under the key (a new record).
    Absent,
    /// Exactly this encoded value.
    Value(Vec<u8>),
    /// Whatever is there (an index entry, a record replaced whatever it held).
    Anything,
    /// A new record whose key is the given key followed by a sequence number the store picks
    /// (8 octets, big endian): unique, and increasing in the order records are appended (the
    /// audit trail).
    Appended,
}

impl Expect {
    /// The expectation matching what a reader found.
    pub fn found(value: Option<Vec<u8>>) -> Expect {
        value.map_or(Expect::Absent, Expect::Value)
    }

    pub fn holds(&self, stored: Option<&[u8]>) -> bool {
        match self {
            Expect::Absent => stored.is_none(),
            Expect::Value(value) => stored == Some(value.as_slice()),
            Expect::Anything => true,
            Expect::Appended => stored.is_none(),
        }
    }
}

/// A token write: `new` replaces `expected` (`None`: a token not yet in the store). The owner
/// may change; the record then moves to the new owner's account.
#[derive(Debug, Clone)]
pub struct TokenWrite {
    pub expected: Option<Token>,
    pub new: Token,
}

/// A user write: `new` replaces `expected` (`None`: a user not yet in the store).
#[derive(Debug, Clone)]
pub struct UserWrite {
    pub expected: Option<User>,
    pub new: User,
}

/// A write of another record: `new` (`None`: removed) under `key`, if `expected` holds.
#[derive(Debug, Clone)]
pub struct RecordWrite {
    pub key: Vec<u8>,
    pub expected: Expect,
    pub new: Option<Vec<u8>>,
}

/// Writes applied together or not at all.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    pub tokens: Vec<TokenWrite>,
    pub users: Vec<UserWrite>,
    pub records: Vec<RecordWrite>,
}

impl ChangeSet {
    pub fn new() -> ChangeSet {
        ChangeSet::default()
    }

    /// Replaces the token `expected` (as read) by `new`, or creates `new` if `expected` is
    /// `None`.
    pub fn token(mut self, expected: Option<Token>, new: Token) -> ChangeSet {
        self.tokens.push(TokenWrite { expected, new });
        self
    }

    /// Replaces the user `expected` (as read) by `new`, or creates `new` if `expected` is
    /// `None`.
    pub fn user(mut self, expected: Option<User>, new: User) -> ChangeSet {
        self.users.push(UserWrite { expected, new });
        self
    }

    /// Appends a new record under `prefix` + a sequence number the store picks (see
    /// [`Expect::Appended`]).
    pub fn append(self, prefix: Vec<u8>, value: Vec<u8>) -> ChangeSet {
        self.record(prefix, Expect::Appended, Some(value))
    }

    /// Writes `new` under `key` if `expected` holds.
    pub fn record(mut self, key: Vec<u8>, expected: Expect, new: Option<Vec<u8>>) -> ChangeSet {
        self.records.push(RecordWrite { key, expected, new });
        self
    }

    /// This set with every write of `other` added after its own.
    pub fn merge(mut self, other: ChangeSet) -> ChangeSet {
        self.tokens.extend(other.tokens);
        self.users.extend(other.users);
        self.records.extend(other.records);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.users.is_empty() && self.records.is_empty()
    }

    /// The one token write of a set that holds nothing else and keeps the token's owner: a
    /// login's change, which takes the fast path (one compare-and-swap, no transaction).
    pub fn lone_token_in_place(&self) -> Option<(&Token, &Token)> {
        match (
            &self.tokens[..],
            self.users.is_empty(),
            self.records.is_empty(),
        ) {
            (
                [TokenWrite {
                    expected: Some(expected),
                    new,
                }],
                true,
                true,
            ) if expected.owner == new.owner => Some((expected, new)),
            _ => None,
        }
    }

    /// The one user write of a set that holds nothing else and changes an existing user (a
    /// password rehash): also a single compare-and-swap.
    pub fn lone_user_change(&self) -> Option<(&User, &User)> {
        match (
            &self.users[..],
            self.tokens.is_empty(),
            self.records.is_empty(),
        ) {
            (
                [UserWrite {
                    expected: Some(expected),
                    new,
                }],
                true,
                true,
            ) if expected.username == new.username => Some((expected, new)),
            _ => None,
        }
    }
}

/// A change set as the token log keeps it: the state it left, to be put back in place at
/// replay (in log order, so replaying it over a store that is already further along ends in
/// the same state).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Logged {
    pub tokens: Vec<LoggedToken>,
    /// Encoded user records.
    pub users: Vec<Vec<u8>>,
    /// Key and new value (`None`: removed).
    pub records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// A token as a change set left it, and the owner it had before (whose account gave it up if
/// the owner changed).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct LoggedToken {
    pub previous_owner: Option<String>,
    /// The encoded token record.
    pub record: Vec<u8>,
}

impl Logged {
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        postcard::to_stdvec(self)
            .map_err(|e| StoreError::Io(format!("encoding a change set for the log: {e}")))
    }
}
