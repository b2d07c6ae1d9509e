//! Storage: a trait the rest of otpgate codes against, its sled implementation ([`sled_store`],
//! laid out as [`layout`] says, made durable by [`checkpoint`])
//! with the token write-ahead log that makes a login's state change cheap to make durable
//! ([`wal`]) and the sealing of token seeds at rest ([`seal`]). A call of [`Store::sync`] makes
//! every record appended so far durable in one batch, and concurrent calls flush side by side
//! (see the sled implementation): that is the group commit.
//!
//! The trait keeps the door open for another back end (roadmap: a shared distributed store);
//! outside this module only the wiring in `appliance` (and tests) names sled.

pub mod change;
pub mod checkpoint;
pub mod layout;
pub mod records;
pub mod seal;
pub mod sled_store;
pub mod wal;

pub use change::{ChangeSet, Expect};
pub use layout::decode;

/// Encodes a record (postcard: compact, deterministic serde binary; a compare-and-swap compares
/// encoded bytes, so the same value must always encode to the same bytes).
pub fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Io(format!("encoding a record: {e}")))
}

/// A record's key and value, as [`Store::records`] returns them.
pub type KeyValue = (Vec<u8>, Vec<u8>);
pub use records::{Token, User};

/// What went wrong in the store. Messages never contain a seed or a password hash.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store at {path} is in use by another process (is `otpgate serve` running?); \
         stop it first"
    )]
    Locked { path: String },
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("the store at {path} has schema version {found}, this build understands {expected}")]
    Schema {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error("user `{0}` already exists")]
    UserExists(String),
    #[error("user `{0}` does not exist")]
    NoSuchUser(String),
    #[error("token `{0}` already exists")]
    TokenExists(String),
    #[error("user `{user}` already has token `{serial}`")]
    OwnerTaken { user: String, serial: String },
    #[error("user `{user}` is the owner of two tokens in this import: `{first}` and `{second}`")]
    OwnerTwice {
        user: String,
        first: String,
        second: String,
    },
    #[error("a token's serial cannot change (`{from}` -> `{to}`)")]
    SerialChange { from: String, to: String },
    #[error("stored record `{key}` is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("storage I/O failed: {0}")]
    Io(String),
}

/// The records otpgate keeps and the operations on them. Every change is a [`ChangeSet`],
/// atomic; it is durable only after [`Store::sync`] has returned. Bulk imports
/// ([`Store::create_users`], [`Store::create_tokens`]) are the one exception: they are made
/// durable by a checkpoint at the next sync.
pub trait Store: Send + Sync + 'static {
    fn user(&self, username: &str) -> Result<Option<User>, StoreError>;
    /// Creates all users or none; fails with `UserExists` naming the first one already there.
    fn create_users(&self, users: &[User]) -> Result<(), StoreError>;
    fn token(&self, serial: &str) -> Result<Option<Token>, StoreError>;
    /// Tokens in serial order, starting after `after`, at most `limit` of them.
    fn tokens(&self, after: Option<&str>, limit: usize) -> Result<Vec<Token>, StoreError>;
    /// The token bound to a user, if any.
    fn token_of_user(&self, username: &str) -> Result<Option<Token>, StoreError>;
    /// A login's read: [`Store::user`] and [`Store::token_of_user`] at once (one read where
    /// the back end keeps them together).
    fn user_and_token(&self, username: &str) -> Result<(Option<User>, Option<Token>), StoreError>;
    /// Creates all tokens or none; fails with `TokenExists` or `OwnerTaken` before writing.
    fn create_tokens(&self, tokens: &[Token]) -> Result<(), StoreError>;
    /// Applies every write of `changes` or none: `Ok(false)` (nothing written) when a record
    /// is no longer what its writer read, so the writer reads again and retries. A new token
    /// whose serial exists fails with `TokenExists`, a token given to an owner who holds
    /// another with `OwnerTaken`, a new user whose name exists with `UserExists`.
    fn apply(&self, changes: ChangeSet) -> Result<bool, StoreError>;
    /// [`Store::apply`] of the one write `new` over `expected` (both as read).
    fn replace_token(&self, expected: &Token, new: &Token) -> Result<bool, StoreError> {
        self.apply(ChangeSet::new().token(Some(expected.clone()), new.clone()))
    }
    /// The record stored under `key` (see [`change`]), if any.
    fn record(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// The records whose keys are in `from..to`, in key order, at most `limit` of them.
    fn records(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError>;
    /// Makes every write that returned before this call durable on disk.
    fn sync(&self) -> Result<(), StoreError>;
    /// Makes every write durable in the store proper, leaving nothing to recover at the next
    /// open (clean shutdown).
    fn checkpoint(&self) -> Result<(), StoreError>;
}

/// Records read at a time by [`scan`].
const SCAN_PAGE: usize = 1024;

/// Calls `each` with every record whose key is in `from..to`, in key order, read in pages so
/// memory stays bounded however long the range; `each` answers whether to go on.
pub fn scan(
    store: &dyn Store,
    from: &[u8],
    to: &[u8],
    mut each: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let mut start = from.to_vec();
    loop {
        let page = store.records(&start, to, SCAN_PAGE)?;
        for (key, value) in &page {
            if !each(key, value)? {
                return Ok(());
            }
        }
        match page.last() {
            Some((last, _)) if page.len() == SCAN_PAGE => {
                start = last.clone();
                start.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// Mutexes in the store guard plain data; a panic elsewhere cannot leave it half-updated.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
