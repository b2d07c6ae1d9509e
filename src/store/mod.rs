//! Storage: a trait the rest of otpgate codes against, its sled implementation ([`sled_store`],
//! laid out as [`layout`] says, made durable by [`checkpoint`])
//! with the token write-ahead log that makes a login's state change cheap to make durable
//! ([`wal`]) and the sealing of token seeds at rest ([`seal`]). A call of [`Store::sync`] makes
//! every record appended so far durable in one batch, and concurrent calls flush side by side
//! (see the sled implementation): that is the group commit.
//!
//! The trait keeps the door open for another back end (roadmap: a shared distributed store);
//! outside this module only the wiring in `appliance` (and tests) names sled.

pub mod checkpoint;
pub mod layout;
pub mod records;
pub mod seal;
pub mod sled_store;
pub mod wal;

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

/// The records otpgate keeps and the operations on them. Writes are atomic; they are durable
/// only after [`Store::sync`] has returned.
pub trait Store: Send + Sync + 'static {
    fn user(&self, username: &str) -> Result<Option<User>, StoreError>;
    /// Creates all users or none; fails with `UserExists` naming the first one already there.
    fn create_users(&self, users: &[User]) -> Result<(), StoreError>;
    /// Compare-and-swap: writes `new` only if the stored user still equals `expected`; false
    /// (nothing written) if it changed meanwhile, `NoSuchUser` if it is gone. Durable after the
    /// next [`Store::sync`], like a token change.
    fn replace_user(&self, expected: &User, new: &User) -> Result<bool, StoreError>;
    fn token(&self, serial: &str) -> Result<Option<Token>, StoreError>;
    /// The token bound to a user, if any.
    fn token_of_user(&self, username: &str) -> Result<Option<Token>, StoreError>;
    /// A login's read: [`Store::user`] and [`Store::token_of_user`] at once (one read where
    /// the back end keeps them together).
    fn user_and_token(&self, username: &str) -> Result<(Option<User>, Option<Token>), StoreError>;
    /// Creates all tokens or none; fails with `TokenExists` or `OwnerTaken` before writing.
    fn create_tokens(&self, tokens: &[Token]) -> Result<(), StoreError>;
    /// Compare-and-swap: writes `new` only if the stored token still equals `expected`, keeping
    /// where its owner says it lives. `Ok(false)` means someone else changed it first.
    fn replace_token(&self, expected: &Token, new: &Token) -> Result<bool, StoreError>;
    /// Makes every write that returned before this call durable on disk.
    fn sync(&self) -> Result<(), StoreError>;
    /// Makes every write durable in the store proper, leaving nothing to recover at the next
    /// open (clean shutdown).
    fn checkpoint(&self) -> Result<(), StoreError>;
}

/// Mutexes in the store guard plain data; a panic elsewhere cannot leave it half-updated.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
