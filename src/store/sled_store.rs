//! The embedded sled back end; what lives where is in [`super::layout`] (one account per
//! user: the user's record and the user's token record under one key, so a login reads one
//! key and pages in one sled leaf).
//!
//! Durability: token changes through the token log ([`super::wal`], [`SledStore::sync`]); the
//! rest through checkpoints. sled 0.34.7's `flush()` writes its log but does not fsync it on
//! Linux (sled issue 1452), so [`super::checkpoint::Flusher`] follows it with an fdatasync of
//! the log file itself.
//! Opening a store another process holds fails at once (sled takes an exclusive file lock with
//! `try_lock`), and is reported as [`StoreError::Locked`].

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError, Transactional,
    TransactionalTree,
};

use super::change::{ChangeSet, Expect, Logged, LoggedToken};
use super::checkpoint::{Checkpointer, Flusher};
use super::layout::{
    self, account_value, decode, io, location, owner_taken, serial_value, token_key, tx_result,
    unowned_value, Account, Location, ACCOUNTS, LOG_CHANGES, LOG_TOKEN, LOG_USER, MIGRATING_TO_3,
    MIGRATING_TO_4, OLD_USERS, RECORDS, SCHEMA_KEY, SCHEMA_VERSION,
};
use super::wal::{self, Pending, Wal};
use super::{encode, lock, KeyValue, Store, StoreError, Token, User};

/// Imports larger than this are written in chunks of this many rows, under a journal.
const IMPORT_CHUNK: usize = 10_000;
/// Journal keys: `import/u/<n>`, `import/t/<n>`, `import/o/<n>` (users, token serials, owners
/// whose accounts took a token).
const IMPORT_JOURNAL_PREFIX: &str = "import/";
/// Names per journal value: small enough to stay inside sled's log.
const JOURNAL_PIECE: usize = 1_000;

/// The keys an import in progress writes, so an interrupted one can be rolled back.
#[derive(Default)]
struct ImportJournal {
    users: Vec<String>,
    tokens: Vec<String>,
    owners: Vec<String>,
}

impl ImportJournal {
    fn parts(&self) -> [(char, &Vec<String>); 3] {
        [('u', &self.users), ('t', &self.tokens), ('o', &self.owners)]
    }
}

/// How far numbering jumps at each open (far more records than one batch can hold).
const SEQ_EPOCH_GAP: u64 = 1 << 32;

/// Once the log holds this fraction of its capacity, the background checkpointer flushes sled
/// while token writes and their syncs go on (a fuzzy checkpoint, see [`Wal::mark`]); only a
/// log that fills up regardless makes a sync wait for a checkpoint of its own.
const CHECKPOINT_FRACTION: u64 = 8;

/// The token write-ahead log, beside sled's files.
const WAL_FILE: &str = "tokens.wal";
/// Default record cache (sled's own default is 1 GiB). sled's resident memory is a few times
/// this; 16 MiB keeps a 1 M-token appliance under 256 MiB (README "Performance").
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

pub struct SledStore {
    /// One account per name: the user's record and the record of the token the name owns
    /// ([`Account`]).
    accounts: sled::Tree,
    /// Serial -> where the token's record is ([`layout::location`]).
    serials: sled::Tree,
    /// Every other record (lifecycle details, audit, outbox, keys, indexes): key -> value.
    records: sled::Tree,
    /// The database, for its sequence numbers (`generate_id`).
    db: sled::Db,
    meta: sled::Tree,
    /// Makes sled durable; shared with the background checkpointer.
    flusher: Arc<Flusher>,
    /// Records (token and user changes) not yet in the write-ahead log. Held across each
    /// logged write and its append, so the log's order is the order of the writes.
    pending: Mutex<Pending>,
    wal: Arc<Mutex<Wal>>,
    /// A write the log does not cover (an import, a change set too large for a log record)
    /// happened: the next sync flushes sled.
    needs_checkpoint: AtomicBool,
    /// Dropping it stops and joins the thread: once the store is dropped, sled is closed.
    checkpointer: Checkpointer,
}

impl SledStore {
    /// Opens (or creates) the store in directory `path` with the default cache size.
    pub fn open(path: &Path) -> Result<SledStore, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store in directory `path`, keeping at most `cache_bytes` of
    /// records in memory (the rest is read from disk, through the OS page cache, on demand).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        let shown = path.display().to_string();
        let open_err = |reason: String| StoreError::Open {
            path: shown.clone(),
            reason,
        };
        if !path.exists() {
            // Password hashes live here: readable by the service alone.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| open_err(e.to_string()))?;
        }
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    StoreError::Locked {
                        path: shown.clone(),
                    }
                }
                sled::Error::Io(io) if io.to_string().contains("lock") => StoreError::Locked {
                    path: shown.clone(),
                },
                other => open_err(other.to_string()),
            })?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| open_err(e.to_string()));
        let accounts = tree(ACCOUNTS)?;
        let serials = tree("serials")?;
        let records = tree(RECORDS)?;
        let meta = tree("meta")?;
        let log_file = File::open(path.join("db")).map_err(|e| open_err(e.to_string()))?;
        let flusher = Arc::new(Flusher::new(db.clone(), log_file));
        match meta.get(SCHEMA_KEY).map_err(io)? {
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(io)?;
            }
            Some(v) => {
                let mut found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        key: "meta/schema_version".into(),
                        reason: "not a 4-byte number".into(),
                    })?;
                if found == 1 || found == 2 || found == MIGRATING_TO_3 {
                    let users = tree(OLD_USERS)?;
                    let moved = layout::migrate_to_schema_3(&db, &users, &serials, &meta, || {
                        flusher.flush()
                    })?;
                    tracing::info!(
                        tokens = moved,
                        from = found,
                        to = 3,
                        "store migrated: token records now beside their owners"
                    );
                    found = 3;
                }
                if found == 3 || found == MIGRATING_TO_4 {
                    let written =
                        layout::migrate_to_schema_4(&db, &accounts, &meta, || flusher.flush())?;
                    tracing::info!(
                        accounts = written,
                        from = found,
                        to = SCHEMA_VERSION,
                        "store migrated: one record per user, with the user's token"
                    );
                } else if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema {
                        path: shown,
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
        }
        layout::drop_old_trees(&db)?;
        let (wal, replay) = Wal::open(&path.join(WAL_FILE), wal::DEFAULT_CAPACITY)
            .map_err(|e| open_err(format!("{WAL_FILE}: {e}")))?;
        let replayed = replay.len();
        let mut superseded = 0usize;
        for payload in replay {
            // A log of an earlier build holds token records only, untyped.
            let (kind, record) = match (wal.replays_typed(), payload.split_first()) {
                (false, _) => (LOG_TOKEN, &payload[..]),
                (true, Some((kind, record))) => (*kind, record),
                (true, None) => (0, &payload[..]),
            };
            match kind {
                LOG_TOKEN => {
                    let token: Token = decode(|| format!("{WAL_FILE} token record"), record)?;
                    if !layout::place(&accounts, &serials, &token, record)? {
                        superseded += 1;
                    }
                }
                LOG_USER => {
                    let user: User = decode(|| format!("{WAL_FILE} user record"), record)?;
                    if !layout::place_user(&accounts, &user.username, record)? {
                        superseded += 1;
                    }
                }
                LOG_CHANGES => {
                    let changes: Logged = decode(|| format!("{WAL_FILE} change set"), record)?;
                    superseded += layout::place_changes(&accounts, &serials, &records, &changes)?;
                }
                other => {
                    return Err(StoreError::Corrupt {
                        key: WAL_FILE.into(),
                        reason: format!(
                            "a record of kind {other}, unknown to this build (written by a \
                             newer otpgate? run that, or delete the log after its clean stop)"
                        ),
                    })
                }
            }
        }
        if superseded > 0 {
            tracing::info!(
                records = superseded,
                "token log records older than what the store already holds (an owner change, a \
                 user's creation that never became durable) were skipped"
            );
        }
        let wal = Arc::new(Mutex::new(wal));
        let checkpointer = Checkpointer::start(Arc::clone(&flusher), Arc::clone(&wal))
            .map_err(|e| open_err(format!("cannot start the checkpointer thread: {e}")))?;
        let first_seq = lock(&wal).last_seq().saturating_add(SEQ_EPOCH_GAP);
        let store = SledStore {
            accounts,
            serials,
            records,
            db: db.clone(),
            meta,
            flusher,
            // Number new records far past anything a torn batch may have left beyond the
            // last good record, so such a leftover can never pass for a new record.
            pending: Mutex::new(Pending::after(first_seq)),
            wal,
            // Opening checkpoints: the replayed records are then in sled for good.
            needs_checkpoint: AtomicBool::new(true),
            checkpointer,
        };
        if let Some(journal) = store.read_journal()? {
            tracing::warn!(
                users = journal.users.len(),
                tokens = journal.tokens.len(),
                "rolling back an import that was interrupted"
            );
            store.roll_back_import(&journal)?;
        }
        store.sync()?;
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                "token changes recovered from the write-ahead log"
            );
        }
        Ok(store)
    }

    /// Writes an import of `len` rows in chunks (`write(from, to)`), so a million rows need
    /// neither a million-row batch in memory nor give up all-or-nothing: up to
    /// [`IMPORT_CHUNK`] rows are one atomic batch; beyond that a journal naming every key is
    /// made durable first and removed once the rows are, and [`SledStore::open`] rolls back an
    /// import the journal shows was interrupted.
    fn import_in_chunks(
        &self,
        journal: ImportJournal,
        mut write: impl FnMut(usize, usize) -> Result<(), StoreError>,
        len: usize,
    ) -> Result<(), StoreError> {
        if len <= IMPORT_CHUNK {
            write(0, len)?;
        } else {
            self.write_journal(&journal)?;
            let mut from = 0;
            while from < len {
                let to = (from + IMPORT_CHUNK).min(len);
                if let Err(e) = write(from, to) {
                    // Undo what was written, then report the failure.
                    self.roll_back_import(&journal)?;
                    return Err(e);
                }
                from = to;
            }
            self.flush_sled()?;
            self.remove_journal()?;
        }
        // Flagged after the write: a sync that started before it must not clear the flag.
        self.needs_checkpoint.store(true, Ordering::Release);
        Ok(())
    }

    /// The journal is kept as many small values (sled would put one large value in a separate
    /// blob file that its flush does not fsync), then made durable.
    fn write_journal(&self, journal: &ImportJournal) -> Result<(), StoreError> {
        for (kind, keys) in journal.parts() {
            for (n, piece) in keys.chunks(JOURNAL_PIECE).enumerate() {
                let key = format!("{IMPORT_JOURNAL_PREFIX}{kind}/{n:08}");
                self.meta
                    .insert(key.as_bytes(), encode(&piece.to_vec())?)
                    .map_err(io)?;
            }
        }
        self.flush_sled()
    }

    /// Reads back a journal left by an interrupted import, if any.
    fn read_journal(&self) -> Result<Option<ImportJournal>, StoreError> {
        let mut journal = ImportJournal::default();
        let mut found = false;
        for entry in self.meta.scan_prefix(IMPORT_JOURNAL_PREFIX) {
            let (key, value) = entry.map_err(io)?;
            found = true;
            let piece: Vec<String> = decode(|| "meta/import journal".into(), &value)?;
            let kind = key.get(IMPORT_JOURNAL_PREFIX.len()).copied();
            match kind {
                Some(b'u') => journal.users.extend(piece),
                Some(b't') => journal.tokens.extend(piece),
                Some(b'o') => journal.owners.extend(piece),
                _ => {
                    return Err(StoreError::Corrupt {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        reason: "unknown import journal part".into(),
                    })
                }
            }
        }
        Ok(found.then_some(journal))
    }

    fn remove_journal(&self) -> Result<(), StoreError> {
        let keys: Vec<sled::IVec> = self
            .meta
            .scan_prefix(IMPORT_JOURNAL_PREFIX)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(io)?;
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        self.meta.apply_batch(batch).map_err(io)?;
        self.flush_sled()
    }

    /// Undoes everything an interrupted import may have written, and removes its journal: the
    /// user records of its users, its tokens' `serials` keys, and in its owners' accounts the
    /// records of its tokens (a token an owner got otherwise stays).
    fn roll_back_import(&self, journal: &ImportJournal) -> Result<(), StoreError> {
        let serials: std::collections::HashSet<&str> =
            journal.tokens.iter().map(String::as_str).collect();
        for name in &journal.users {
            self.update_account(name, |account| Ok(account.with_user(None)))?;
        }
        for chunk in journal.tokens.chunks(IMPORT_CHUNK) {
            let mut batch = sled::Batch::default();
            for serial in chunk {
                batch.remove(serial.as_bytes());
            }
            layout::apply(&self.serials, &batch)?;
        }
        for owner in &journal.owners {
            self.update_account(owner, |account| {
                let Some(record) = account.token else {
                    return Ok(account);
                };
                let held: Token = decode(|| token_key(owner), record)?;
                Ok(if serials.contains(held.serial.as_str()) {
                    account.with_token(None)
                } else {
                    account
                })
            })?;
        }
        // A checkpoint, not a bare flush: the token log may hold logins on the tokens just
        // removed, and replaying them would bring those tokens back.
        self.checkpoint()?;
        self.remove_journal()
    }

    /// Rewrites the account of `name` as `change` makes it, removing it if it ends up empty;
    /// a name with no account is left alone.
    fn update_account(
        &self,
        name: &str,
        change: impl Fn(Account<'_>) -> Result<Account<'_>, StoreError>,
    ) -> Result<(), StoreError> {
        self.swap_account(name, |account| change(account)?.encode().map(Some), None)
            .map(drop)
    }

    /// The account stored under `name`, if any.
    fn account(&self, name: &str) -> Result<Option<sled::IVec>, StoreError> {
        self.accounts.get(name.as_bytes()).map_err(io)
    }

    /// Compare-and-swap of `name`'s account. `change` sees the stored account (an empty one if
    /// there is none) and answers `None` to leave it (the swap is then `false`), or the value to
    /// store instead (`None` for none: the key is removed). A writer that changes the account
    /// between the read and the swap (a login, a user change) makes it read again, so neither
    /// undoes the other. With `logged` (a record kind and the record), the swap and the append
    /// of that record to the log happen under the pending lock, held for nothing else: the
    /// log's order is the writes'.
    fn swap_account(
        &self,
        name: &str,
        change: impl Fn(Account<'_>) -> Result<Option<Option<Vec<u8>>>, StoreError>,
        logged: Option<(u8, &[u8])>,
    ) -> Result<bool, StoreError> {
        loop {
            let current = self.account(name)?;
            let Some(new) = change(Account::stored(name, current.as_deref())?)? else {
                return Ok(false);
            };
            // A record replay could not read (over the log's payload limit: a user with huge
            // profile fields) is not logged; a checkpoint makes its write durable instead.
            let loggable = logged.filter(|(_, record)| record.len() < wal::MAX_PAYLOAD);
            let mut pending = loggable.map(|_| lock(&self.pending));
            let swapped = self
                .accounts
                .compare_and_swap(name.as_bytes(), current.as_ref(), new)
                .map_err(io)?
                .is_ok();
            if swapped {
                match (pending.as_mut(), loggable) {
                    (Some(pending), Some((kind, record))) => pending.append(&[&[kind], record]),
                    _ if logged.is_some() => self.needs_checkpoint.store(true, Ordering::Release),
                    _ => {}
                }
                return Ok(true);
            }
        }
    }

    /// A change of one existing user alone: a compare-and-swap of the user part of the account, logged as a user record: the next
    /// sync makes it durable with the logins' records, no checkpoint needed.
    fn replace_user(&self, expected: &User, new: &User) -> Result<bool, StoreError> {
        if expected.username != new.username {
            return Err(StoreError::Io(format!(
                "a user record cannot be renamed ({} -> {})",
                expected.username, new.username
            )));
        }
        let name = new.username.as_str();
        let expected = encode(expected)?;
        let new = encode(new)?;
        self.swap_account(
            name,
            |account| match account.user {
                None => Err(StoreError::NoSuchUser(name.to_string())),
                Some(user) if user != expected.as_slice() => Ok(None),
                Some(_) => account.with_user(Some(&new)).encode().map(Some),
            },
            Some((LOG_USER, &new)),
        )
    }

    /// A change of one token alone that keeps its owner (a login's): a single-key
    /// compare-and-swap where the record is, no transaction, logged as a token record.
    fn replace_token_in_place(&self, expected: &Token, new: &Token) -> Result<bool, StoreError> {
        if expected.serial != new.serial {
            return Err(StoreError::SerialChange {
                from: expected.serial.clone(),
                to: new.serial.clone(),
            });
        }
        let expected_bytes = encode(expected)?;
        let new_bytes = encode(new)?;
        match &new.owner {
            Some(owner) => self.swap_account(
                owner,
                |account| {
                    (account.token == Some(&expected_bytes[..]))
                        .then(|| account.with_token(Some(&new_bytes)).encode())
                        .transpose()
                },
                Some((LOG_TOKEN, &new_bytes)),
            ),
            None => {
                // The write and its log record under one lock: the log's order is the writes'.
                let mut pending = lock(&self.pending);
                let swapped = self
                    .serials
                    .compare_and_swap(
                        new.serial.as_bytes(),
                        Some(unowned_value(&expected_bytes)),
                        Some(unowned_value(&new_bytes)),
                    )
                    .map_err(io)?
                    .is_ok();
                if swapped {
                    pending.append(&[&[LOG_TOKEN], &new_bytes]);
                }
                Ok(swapped)
            }
        }
    }

    /// Any other change set: one sled transaction over the trees it touches, and one log
    /// record of kind [`LOG_CHANGES`] with what it left, both under the pending lock (no login
    /// record is logged between them, so the log's order is the writes').
    fn apply_together(&self, changes: &ChangeSet) -> Result<bool, StoreError> {
        let tokens = changes
            .tokens
            .iter()
            .map(|write| {
                if let Some(expected) = &write.expected {
                    if expected.serial != write.new.serial {
                        return Err(StoreError::SerialChange {
                            from: expected.serial.clone(),
                            to: write.new.serial.clone(),
                        });
                    }
                }
                let expected = write.expected.as_ref().map(encode).transpose()?;
                Ok((write, expected, encode(&write.new)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let users = changes
            .users
            .iter()
            .map(|write| {
                let expected = write.expected.as_ref().map(encode).transpose()?;
                Ok((write, expected, encode(&write.new)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Appended records get their sequence numbers now: the log holds their final keys.
        let records = changes
            .records
            .iter()
            .map(|write| {
                let key = match write.expected {
                    Expect::Appended => {
                        let mut key = write.key.clone();
                        key.extend_from_slice(&self.db.generate_id().map_err(io)?.to_be_bytes());
                        key
                    }
                    _ => write.key.clone(),
                };
                Ok((key, write))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let logged = Logged {
            tokens: tokens
                .iter()
                .map(|(write, _, record)| LoggedToken {
                    previous_owner: write.expected.as_ref().and_then(|t| t.owner.clone()),
                    record: record.clone(),
                })
                .collect(),
            users: users.iter().map(|(_, _, record)| record.clone()).collect(),
            records: records
                .iter()
                .map(|(key, write)| (key.clone(), write.new.clone()))
                .collect(),
        }
        .encode()?;
        let mut pending = lock(&self.pending);
        let applied = refused((&self.accounts, &self.serials, &self.records).transaction(
            |(a, s, r)| {
                let stale = || ConflictableTransactionError::Abort(Refused::Stale);
                let abort = |e: StoreError| ConflictableTransactionError::Abort(Refused::Error(e));
                for (write, expected, record) in &users {
                    let name = write.new.username.as_str();
                    let current = a.get(name.as_bytes())?;
                    let account = Account::stored(name, current.as_deref()).map_err(abort)?;
                    match (expected, account.user) {
                        (None, Some(_)) => {
                            return Err(abort(StoreError::UserExists(name.to_string())))
                        }
                        (None, None) => {}
                        (Some(expected), Some(stored)) if stored == expected.as_slice() => {}
                        _ => return Err(stale()),
                    }
                    let value = account_value(Some(record), account.token).map_err(abort)?;
                    a.insert(name.as_bytes(), value)?;
                }
                for (write, expected, record) in &tokens {
                    let expected = write.expected.as_ref().zip(expected.as_deref());
                    move_token(a, s, expected, &write.new, record)?;
                }
                for (key, write) in &records {
                    let stored = r.get(key)?;
                    if !write.expected.holds(stored.as_deref()) {
                        return Err(stale());
                    }
                    match &write.new {
                        Some(value) => r.insert(key.as_slice(), value.as_slice())?,
                        None => r.remove(key.as_slice())?,
                    };
                }
                Ok(())
            },
        ));
        match applied {
            Ok(()) => {}
            Err(Refused::Stale) => return Ok(false),
            Err(Refused::Error(e)) => return Err(e),
        }
        // A record replay could not read (over the log's payload limit) is not logged; a
        // checkpoint makes the change durable instead.
        if logged.len() < wal::MAX_PAYLOAD {
            pending.append(&[&[LOG_CHANGES], &logged]);
        } else {
            self.needs_checkpoint.store(true, Ordering::Release);
        }
        Ok(true)
    }

    fn flush_sled(&self) -> Result<(), StoreError> {
        self.flusher.flush()
    }

    /// Asks the background checkpointer for a checkpoint; false if it is gone.
    fn wake_checkpointer(&self) -> bool {
        self.checkpointer.wake()
    }

    /// Makes sled durable and lets the log forget every record so far, with no record
    /// appended meanwhile (`pending` is held) and no batch still being written.
    fn checkpoint_locked(&self, pending: &mut Pending) -> Result<(), StoreError> {
        // This checkpoint covers every write asked for so far; one made from here on asks again.
        self.needs_checkpoint.store(false, Ordering::Release);
        // No batch can be placed meanwhile (`pending` is held); the sled flush runs without the
        // log's lock, which the background checkpointer takes after a flush of its own.
        let result = self.flush_sled().and_then(|()| {
            lock(&self.wal)
                .checkpoint(pending.last_seq())
                .map_err(|e| StoreError::Io(format!("{WAL_FILE} checkpoint: {e}")))
        });
        match result {
            Ok(()) => {
                pending.clear();
                Ok(())
            }
            Err(e) => {
                // Until a checkpoint succeeds, no sync returns Ok.
                self.needs_checkpoint.store(true, Ordering::Release);
                Err(e)
            }
        }
    }
}

/// In a transaction: puts the token record `record` into `owner`'s account (made if there is
/// none), or aborts with `OwnerTaken` if the account holds a token already.
fn give_token(
    accounts: &TransactionalTree,
    owner: &str,
    record: &[u8],
) -> ConflictableTransactionResult<(), StoreError> {
    let abort = ConflictableTransactionError::Abort;
    let current = accounts.get(owner.as_bytes())?;
    let account = Account::stored(owner, current.as_deref()).map_err(abort)?;
    if let Some(held) = account.token {
        return Err(abort(owner_taken(owner, held)));
    }
    let value = account_value(account.user, Some(record)).map_err(abort)?;
    accounts.insert(owner.as_bytes(), value)?;
    Ok(())
}

/// Why a change set's transaction wrote nothing.
enum Refused {
    /// A record is no longer what the change set's writer read.
    Stale,
    Error(StoreError),
}

fn refused<T>(r: Result<T, TransactionError<Refused>>) -> Result<T, Refused> {
    r.map_err(|e| match e {
        TransactionError::Abort(refusal) => refusal,
        TransactionError::Storage(e) => Refused::Error(io(e)),
    })
}

/// In a change set's transaction: the token `new` (encoded `record`) replaces `expected`
/// (encoded `expected_record`; `None`: a token new to the store) if that is still what is
/// stored, moving from the old owner's account to the new owner's if the owner changes (a
/// registration, a revocation). Aborts with `TokenExists` for a new token whose serial is
/// taken, `OwnerTaken` if the new owner holds another token.
fn move_token(
    a: &TransactionalTree,
    s: &TransactionalTree,
    expected: Option<(&Token, &[u8])>,
    new: &Token,
    record: &[u8],
) -> ConflictableTransactionResult<(), Refused> {
    let stale = || ConflictableTransactionError::Abort(Refused::Stale);
    let abort = |e: StoreError| ConflictableTransactionError::Abort(Refused::Error(e));
    let serial = new.serial.as_bytes();
    let moves = expected.is_none_or(|(expected, _)| expected.owner != new.owner);
    match expected {
        Some((expected, expected_record)) => match &expected.owner {
            Some(owner) => {
                let current = a.get(owner.as_bytes())?;
                let account = Account::stored(owner, current.as_deref()).map_err(abort)?;
                if account.token != Some(expected_record) {
                    return Err(stale());
                }
                if moves {
                    match account.with_token(None).encode().map_err(abort)? {
                        Some(value) => a.insert(owner.as_bytes(), value)?,
                        None => a.remove(owner.as_bytes())?,
                    };
                }
            }
            None => {
                if s.get(serial)?.as_deref() != Some(&unowned_value(expected_record)[..]) {
                    return Err(stale());
                }
            }
        },
        None => {
            if s.get(serial)?.is_some() {
                return Err(abort(StoreError::TokenExists(new.serial.clone())));
            }
        }
    }
    if let Some(owner) = &new.owner {
        let current = a.get(owner.as_bytes())?;
        let account = Account::stored(owner, current.as_deref()).map_err(abort)?;
        if let (true, Some(held)) = (moves, account.token) {
            return Err(abort(owner_taken(owner, held)));
        }
        let value = account_value(account.user, Some(record)).map_err(abort)?;
        a.insert(owner.as_bytes(), value)?;
    }
    s.insert(serial, serial_value(new, record))?;
    Ok(())
}

/// The user record in `name`'s account, decoded.
fn user_in(name: &str, account: Account<'_>) -> Result<Option<User>, StoreError> {
    account
        .user
        .map(|record| decode(|| format!("{ACCOUNTS}/{name} user"), record))
        .transpose()
}

/// The token `name` owns, decoded from `name`'s account. The record has the last word: one a
/// crash left behind under another owner's name never hands someone else's token to this user.
fn token_in(name: &str, account: Account<'_>) -> Result<Option<Token>, StoreError> {
    let Some(record) = account.token else {
        return Ok(None);
    };
    let token: Token = decode(|| token_key(name), record)?;
    Ok((token.owner.as_deref() == Some(name)).then_some(token))
}

impl Store for SledStore {
    fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let value = self.account(username)?;
        user_in(username, Account::stored(username, value.as_deref())?)
    }

    fn create_users(&self, users: &[User]) -> Result<(), StoreError> {
        let mut seen = std::collections::HashSet::new();
        let mut rows = Vec::with_capacity(users.len());
        for user in users {
            if !seen.insert(user.username.as_str()) || self.user(&user.username)?.is_some() {
                return Err(StoreError::UserExists(user.username.clone()));
            }
            rows.push((user.username.as_str(), encode(user)?));
        }
        let journal = ImportJournal {
            users: users.iter().map(|u| u.username.clone()).collect(),
            ..ImportJournal::default()
        };
        self.import_in_chunks(
            journal,
            |from, to| {
                let rows = rows.get(from..to).unwrap_or_default();
                // The checks above are repeated here, against writes made since; a name that
                // owns a token already keeps it.
                tx_result(self.accounts.transaction(|accounts| {
                    let abort = ConflictableTransactionError::Abort;
                    for (name, record) in rows {
                        let current = accounts.get(name.as_bytes())?;
                        let account = Account::stored(name, current.as_deref()).map_err(abort)?;
                        if account.user.is_some() {
                            return Err(abort(StoreError::UserExists(name.to_string())));
                        }
                        let value = account_value(Some(record), account.token).map_err(abort)?;
                        accounts.insert(name.as_bytes(), value)?;
                    }
                    Ok(())
                }))
            },
            rows.len(),
        )
    }

    fn token(&self, serial: &str) -> Result<Option<Token>, StoreError> {
        // Two reads (location, then record): an owner change committed between them is
        // followed by reading again, once.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(value) = self.serials.get(serial.as_bytes()).map_err(io)? else {
                return Ok(None);
            };
            let found: Option<Token> = match location(serial, &value)? {
                Location::Here(record) => Some(decode(|| format!("serials/{serial}"), record)?),
                Location::Owned(owner) => {
                    let value = self.account(owner)?;
                    Account::stored(owner, value.as_deref())?
                        .token
                        .map(|record| decode(|| token_key(owner), record))
                        .transpose()?
                }
            };
            match found {
                Some(token) if token.serial == serial => return Ok(Some(token)),
                _ if attempts < 2 => continue,
                _ => {
                    return Err(StoreError::Corrupt {
                        key: format!("serials/{serial}"),
                        reason: "its owner holds no record of it".into(),
                    })
                }
            }
        }
    }

    fn tokens(&self, after: Option<&str>, limit: usize) -> Result<Vec<Token>, StoreError> {
        let start = match after {
            Some(serial) => std::ops::Bound::Excluded(serial.as_bytes().to_vec()),
            None => std::ops::Bound::Unbounded,
        };
        let mut found = Vec::new();
        for entry in self
            .serials
            .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
        {
            if found.len() >= limit {
                break;
            }
            let (key, _) = entry.map_err(io)?;
            let serial = String::from_utf8_lossy(&key);
            // Read as `token` reads it: an owner change between the two reads is followed.
            if let Some(token) = self.token(&serial)? {
                found.push(token);
            }
        }
        Ok(found)
    }

    fn token_of_user(&self, username: &str) -> Result<Option<Token>, StoreError> {
        let value = self.account(username)?;
        token_in(username, Account::stored(username, value.as_deref())?)
    }

    fn user_and_token(&self, username: &str) -> Result<(Option<User>, Option<Token>), StoreError> {
        let value = self.account(username)?;
        let account = Account::stored(username, value.as_deref())?;
        Ok((user_in(username, account)?, token_in(username, account)?))
    }

    fn create_tokens(&self, tokens: &[Token]) -> Result<(), StoreError> {
        let mut serials = std::collections::HashSet::new();
        let mut owners = std::collections::HashMap::new();
        let mut rows = Vec::with_capacity(tokens.len());
        for token in tokens {
            if !serials.insert(token.serial.as_str())
                || self
                    .serials
                    .contains_key(token.serial.as_bytes())
                    .map_err(io)?
            {
                return Err(StoreError::TokenExists(token.serial.clone()));
            }
            if let Some(owner) = &token.owner {
                if let Some(first) = owners.insert(owner.as_str(), token.serial.as_str()) {
                    return Err(StoreError::OwnerTwice {
                        user: owner.clone(),
                        first: first.to_string(),
                        second: token.serial.clone(),
                    });
                }
                let value = self.account(owner)?;
                if let Some(held) = Account::stored(owner, value.as_deref())?.token {
                    return Err(owner_taken(owner, held));
                }
            }
            rows.push((token, encode(token)?));
        }
        let journal = ImportJournal {
            tokens: tokens.iter().map(|t| t.serial.clone()).collect(),
            owners: tokens.iter().filter_map(|t| t.owner.clone()).collect(),
            ..ImportJournal::default()
        };
        self.import_in_chunks(
            journal,
            |from, to| {
                let rows = rows.get(from..to).unwrap_or_default();
                // Both trees in one transaction: a chunk is all or nothing. The checks above
                // are repeated here, against writes made since.
                tx_result((&self.serials, &self.accounts).transaction(|(s, a)| {
                    let abort = ConflictableTransactionError::Abort;
                    for (token, record) in rows {
                        if s.get(token.serial.as_bytes())?.is_some() {
                            return Err(abort(StoreError::TokenExists(token.serial.clone())));
                        }
                        if let Some(owner) = &token.owner {
                            give_token(a, owner, record)?;
                        }
                        s.insert(token.serial.as_bytes(), serial_value(token, record))?;
                    }
                    Ok(())
                }))
            },
            rows.len(),
        )
    }

    fn apply(&self, changes: ChangeSet) -> Result<bool, StoreError> {
        if let Some((expected, new)) = changes.lone_token_in_place() {
            return self.replace_token_in_place(expected, new);
        }
        if let Some((expected, new)) = changes.lone_user_change() {
            return self.replace_user(expected, new);
        }
        if changes.is_empty() {
            return Ok(true);
        }
        self.apply_together(&changes)
    }

    fn record(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.records.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn records(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        self.records
            .range(from..to)
            .take(limit)
            .map(|entry| entry.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io))
            .collect()
    }

    /// Token changes become durable through the write-ahead log (one write and one fdatasync
    /// of pre-allocated blocks); anything else, or a log with no room left, through a
    /// checkpoint. A log past [`CHECKPOINT_FRACTION`] wakes the background checkpointer.
    ///
    /// The records appended so far are taken and placed in the log under its lock; the write
    /// and flush run outside it, so concurrent callers (the committers) keep more than one
    /// flush in flight. A caller whose records another sync took waits for that one.
    fn sync(&self) -> Result<(), StoreError> {
        let commit = {
            let mut pending = lock(&self.pending);
            let mut wal = lock(&self.wal);
            let used = wal.would_use(pending.len());
            let due = used > wal.capacity() / CHECKPOINT_FRACTION;
            let full = used > wal.capacity() || (due && !self.wake_checkpointer());
            if full || self.needs_checkpoint.swap(false, Ordering::AcqRel) {
                drop(wal);
                return self.checkpoint_locked(&mut pending);
            }
            wal.place(pending.take())
        };
        commit.complete().map_err(|e| {
            // The batch is lost to the log (and after a failed fdatasync the kernel may have
            // dropped its pages): only a checkpoint can cover it now. Until one succeeds, the
            // syncs waiting for it or anything after it fail.
            self.needs_checkpoint.store(true, Ordering::Release);
            StoreError::Io(format!("{WAL_FILE}: {e}"))
        })
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        self.checkpoint_locked(&mut lock(&self.pending))
    }
}

#[cfg(test)]
mod change_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::owner_key;

    pub(super) fn user(i: usize) -> User {
        User {
            username: format!("u{i}"),
            password_hash: "{SSHA256}x".into(),
            email: None,
            first_name: None,
            last_name: None,
            assurance_level: 2,
            created_at: 0,
        }
    }

    /// The stored account of a user who owns no token.
    fn user_account(i: usize) -> Vec<u8> {
        let record = encode(&user(i)).expect("encode");
        account_value(Some(&record), None).expect("account")
    }

    #[test]
    fn a_user_is_replaced_only_over_the_record_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        let read = user(1);
        store
            .create_users(std::slice::from_ref(&read))
            .expect("create");
        let rehashed = User {
            password_hash: "$argon2id$new".into(),
            ..read.clone()
        };
        let raised = User {
            assurance_level: 3,
            ..read.clone()
        };
        assert!(store.replace_user(&read, &raised).expect("swap"));
        // The record changed since `read`: the second writer must not undo the first.
        assert!(!store.replace_user(&read, &rehashed).expect("no swap"));
        assert_eq!(store.user("u1").expect("read"), Some(raised));
        assert!(matches!(
            store.replace_user(&user(2), &user(2)),
            Err(StoreError::NoSuchUser(_))
        ));
    }

    /// A user change goes into the token log like a login's (no checkpoint asked for), and a
    /// user record in the log is replayed into its account at open, the token kept.
    #[test]
    fn user_changes_are_logged_and_replayed_beside_the_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let owned = Token {
            owner: Some("u1".into()),
            ..token(1)
        };
        let rehashed = User {
            password_hash: "$argon2id$new".into(),
            ..user(1)
        };
        {
            let store = SledStore::open(&path).expect("open");
            store.create_users(&[user(1)]).expect("user");
            store
                .create_tokens(std::slice::from_ref(&owned))
                .expect("token");
            store.sync().expect("checkpointed");
            assert!(store.replace_user(&user(1), &rehashed).expect("swap"));
            assert!(
                !store.needs_checkpoint.load(Ordering::Acquire),
                "a user change asked for a checkpoint"
            );
            assert!(!lock(&store.pending).is_empty(), "not in the log");
        }
        // After a checkpoint, a user record in the log (as a crash before the next checkpoint
        // leaves it) is replayed.
        let raised = User {
            assurance_level: 3,
            ..rehashed.clone()
        };
        {
            let (mut wal, _) = Wal::open(&path.join(WAL_FILE), wal::DEFAULT_CAPACITY).expect("wal");
            let mut pending = Pending::after(wal.last_seq());
            pending.append(&[&[LOG_USER], &encode(&raised).expect("encode")]);
            wal.write(&pending.take()).expect("write");
        }
        let store = reopen(&path);
        assert_eq!(store.user("u1").expect("read"), Some(raised));
        assert_eq!(store.token_of_user("u1").expect("read"), Some(owned));
        // A record over the log's payload limit is not logged (replay would stop at it): the
        // change waits for a checkpoint instead.
        let huge = User {
            email: Some("x".repeat(wal::MAX_PAYLOAD)),
            ..store.user("u1").expect("read").expect("u1")
        };
        store.sync().expect("sync");
        let before = store.user("u1").expect("read").expect("u1");
        assert!(store.replace_user(&before, &huge).expect("swap"));
        assert!(
            lock(&store.pending).is_empty(),
            "an unreadable record was logged"
        );
        assert!(store.needs_checkpoint.load(Ordering::Acquire));
    }

    /// A user record for a name whose user never became durable (its creation is
    /// checkpointed, not logged) is skipped at replay, not made into a user.
    #[test]
    fn a_user_record_without_its_user_is_skipped_at_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        drop(SledStore::open(&path).expect("open"));
        {
            let (mut wal, _) = Wal::open(&path.join(WAL_FILE), wal::DEFAULT_CAPACITY).expect("wal");
            let mut pending = Pending::after(wal.last_seq());
            pending.append(&[&[LOG_USER], &encode(&user(7)).expect("encode")]);
            wal.write(&pending.take()).expect("write");
        }
        let store = reopen(&path);
        assert_eq!(store.user("u7").expect("read"), None);
    }

    #[test]
    fn large_import_is_chunked_and_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(&dir.path().join("db")).expect("open");
        let users: Vec<User> = (0..IMPORT_CHUNK * 2 + 7).map(user).collect();
        store.create_users(&users).expect("import");
        assert!(store.user("u0").expect("read").is_some());
        assert!(store
            .user(&format!("u{}", IMPORT_CHUNK * 2 + 6))
            .expect("read")
            .is_some());
        assert!(store.read_journal().expect("journal").is_none());
        // A second import naming an existing user writes nothing.
        let again = vec![user(999_999), user(5)];
        assert!(matches!(
            store.create_users(&again),
            Err(StoreError::UserExists(name)) if name == "u5"
        ));
        assert!(store.user("u999999").expect("read").is_none());
    }

    #[test]
    fn failed_chunk_rolls_the_whole_import_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(&dir.path().join("db")).expect("open");
        let n = IMPORT_CHUNK * 3;
        let journal = ImportJournal {
            users: (0..n).map(|i| format!("u{i}")).collect(),
            ..ImportJournal::default()
        };
        let result = store.import_in_chunks(
            journal,
            |from, to| {
                if from >= IMPORT_CHUNK * 2 {
                    return Err(StoreError::Io("disk full".into()));
                }
                for i in from..to {
                    store
                        .accounts
                        .insert(format!("u{i}").as_bytes(), user_account(i))
                        .map_err(io)?;
                }
                Ok(())
            },
            n,
        );
        assert!(result.is_err());
        assert!(store.user("u0").expect("read").is_none(), "rolled back");
        assert!(store.read_journal().expect("journal").is_none());
    }

    /// Marks a store being built by hand as at `schema`, and makes it durable.
    fn write_schema(db: &sled::Db, schema: u32) {
        db.open_tree("meta")
            .expect("meta")
            .insert(SCHEMA_KEY, &schema.to_be_bytes())
            .expect("schema");
        db.flush().expect("flush");
    }

    /// Reopens `path`, waiting out sled's background flusher still holding the file lock.
    pub(super) fn reopen(path: &Path) -> SledStore {
        let mut reopened = SledStore::open(path);
        for _ in 0..50 {
            if !matches!(reopened, Err(StoreError::Locked { .. })) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            reopened = SledStore::open(path);
        }
        reopened.expect("reopen")
    }

    #[test]
    fn record_numbering_jumps_at_each_open() {
        // A torn batch may leave intact records past the last good one; new records must never
        // reuse their numbers, or a stale one could be replayed after a newer one.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let first = lock(&SledStore::open(&path).expect("open").pending).last_seq();
        let second = lock(&reopen(&path).pending).last_seq();
        assert!(second >= first + SEQ_EPOCH_GAP, "{first} -> {second}");
    }

    #[test]
    fn interrupted_import_is_rolled_back_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        {
            let store = SledStore::open(&path).expect("open");
            let journal = ImportJournal {
                users: (0..2500).map(|i| format!("half{i}")).collect(),
                ..ImportJournal::default()
            };
            store.write_journal(&journal).expect("journal");
            store
                .accounts
                .insert("half7", user_account(1))
                .expect("row");
            store.flush_sled().expect("flush");
        }
        let store = reopen(&path);
        assert!(store.accounts.get("half7").expect("read").is_none());
        assert!(store.read_journal().expect("journal").is_none());
    }

    pub(super) fn token(i: usize) -> Token {
        Token {
            serial: format!("T{i}"),
            kind: crate::otp::TokenKind::Hotp,
            algorithm: crate::otp::Algorithm::Sha1,
            digits: 6,
            sealed_seed: vec![0; 48],
            state: crate::token::TokenState::Active,
            owner: None,
            counter: 0,
            last_step: None,
            drift: 0,
            failures: 0,
            last_auth: None,
            created_at: 0,
            state_changed_at: 0,
            expires_at: None,
        }
    }

    /// Liveness and ordinary durability: writes never wait for or fail during background
    /// checkpoints, and the checkpointer empties the log. (A clean drop flushes sled, so this
    /// cannot show which records a crash would replay: the log's own test of `mark` and
    /// `checkpoint_at` does.)
    #[test]
    fn token_writes_go_on_while_background_checkpoints_run() {
        const TOKENS: usize = 40;
        const ROUNDS: u64 = 150;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let store = Arc::new(SledStore::open(&path).expect("open"));
        // Half owned (records in their owners' accounts), half in stock (records in `serials`).
        let tokens: Vec<Token> = (0..TOKENS)
            .map(|i| Token {
                owner: (i % 2 == 0).then(|| format!("u{i}")),
                ..token(i)
            })
            .collect();
        store.create_tokens(&tokens).expect("create");
        store.sync().expect("sync");
        let writer = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut current = tokens;
                for _ in 0..ROUNDS {
                    for t in &mut current {
                        let next = Token {
                            counter: t.counter + 1,
                            ..t.clone()
                        };
                        assert!(store.replace_token(t, &next).expect("write"), "no CAS race");
                        *t = next;
                    }
                    store.sync().expect("sync");
                }
            })
        };
        while !writer.is_finished() {
            store.wake_checkpointer();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        writer.join().expect("writer");
        // With no writes left, a checkpoint empties the log.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while lock(&store.wal).would_use(0) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "checkpointer never ran"
            );
            store.wake_checkpointer();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(Arc::into_inner(store).expect("only owner"));
        let store = reopen(&path);
        for i in 0..TOKENS {
            let t = store
                .token(&format!("T{i}"))
                .expect("read")
                .expect("exists");
            assert_eq!(t.counter, ROUNDS, "T{i}");
        }
    }

    #[test]
    fn schema_1_and_2_stores_are_migrated_at_open() {
        // MIGRATING: an earlier attempt stopped half-way (here: with schema 2's index).
        for schema in [1u32, 2, MIGRATING_TO_3] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("db");
            {
                // Schemas 1 and 2: every token record in a tree `tokens`; the owner index
                // in a tree `owners` (1) or beside the users (2).
                let db = sled::open(&path).expect("sled");
                let users = db.open_tree("users").expect("users");
                users
                    .insert("u1", encode(&user(1)).expect("encode"))
                    .expect("user");
                // Left by an interrupted earlier attempt, no longer true.
                users.insert(owner_key("u9"), "T1").expect("stale entry");
                let owned = Token {
                    owner: Some("u1".into()),
                    ..token(1)
                };
                let tokens = db.open_tree("tokens").expect("tokens");
                tokens
                    .insert("T1", encode(&owned).expect("encode"))
                    .expect("token");
                tokens
                    .insert("T2", encode(&token(2)).expect("encode"))
                    .expect("stock token");
                if schema == 1 {
                    let owners = db.open_tree("owners").expect("owners");
                    owners.insert("u1", "T1").expect("owner");
                } else {
                    users.insert(owner_key("u1"), "T1").expect("owner");
                }
                write_schema(&db, schema);
            }
            let store = reopen(&path);
            let token = store.token_of_user("u1").expect("read").expect("moved");
            assert_eq!(token.serial, "T1");
            assert_eq!(store.token("T1").expect("read"), Some(token));
            assert_eq!(
                store.token("T2").expect("read").map(|t| t.owner),
                Some(None)
            );
            assert!(store.user("u1").expect("read").is_some());
            assert!(store.token_of_user("u9").expect("read").is_none());
            assert_eq!(
                store.meta.get(SCHEMA_KEY).expect("read").as_deref(),
                Some(&SCHEMA_VERSION.to_be_bytes()[..])
            );
            let trees = store.flusher.db().tree_names();
            assert!(!trees
                .iter()
                .any(|n| [&b"owners"[..], b"tokens", b"users"].contains(&n.as_ref())));
            drop(store);
            // Opening again is a no-op.
            let store = reopen(&path);
            assert_eq!(
                store.token_of_user("u1").expect("read").map(|t| t.serial),
                Some("T1".to_string())
            );
        }
    }

    #[test]
    fn schema_3_stores_are_migrated_to_one_account_per_user() {
        // MIGRATING_TO_4: an earlier attempt stopped half-way, leaving a stray account.
        for schema in [3u32, MIGRATING_TO_4] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("db");
            let owned = |i: usize, owner: &str| Token {
                owner: Some(owner.into()),
                ..token(i)
            };
            {
                let db = sled::open(&path).expect("sled");
                let users = db.open_tree(OLD_USERS).expect("users");
                let serials = db.open_tree("serials").expect("serials");
                for (name, i) in [("u1", 1), ("u2", 2), ("u10", 10)] {
                    users
                        .insert(name, encode(&user(i)).expect("encode"))
                        .expect("user");
                }
                // u1 owns T1; u10 sorts between u1 and u1's token key; T3's owner has no
                // user record; u2 holds a stale copy of T1 a crash left behind.
                for (owner, t) in [("u1", owned(1, "u1")), ("u3", owned(3, "u3"))] {
                    let record = encode(&t).expect("encode");
                    users
                        .insert(owner_key(owner), record.as_slice())
                        .expect("token");
                    serials
                        .insert(t.serial.as_bytes(), serial_value(&t, &record))
                        .expect("serial");
                }
                users
                    .insert(owner_key("u2"), encode(&owned(1, "u1")).expect("encode"))
                    .expect("stale");
                db.open_tree(ACCOUNTS)
                    .expect("accounts")
                    .insert("stray", user_account(9))
                    .expect("stray");
                write_schema(&db, schema);
            }
            let store = reopen(&path);
            assert_eq!(store.user("u1").expect("read"), Some(user(1)));
            assert_eq!(store.user("u10").expect("read"), Some(user(10)));
            assert_eq!(
                store.token_of_user("u1").expect("read"),
                Some(owned(1, "u1"))
            );
            assert_eq!(store.token("T1").expect("read"), Some(owned(1, "u1")));
            assert_eq!(
                store.token_of_user("u3").expect("read"),
                Some(owned(3, "u3"))
            );
            assert!(store.user("u3").expect("read").is_none());
            let u2 = store.accounts.get("u2").expect("read").expect("u2");
            assert_eq!(
                Account::parse("u2", &u2).expect("parse").token,
                None,
                "the stale copy of T1 stays behind"
            );
            assert!(store.token_of_user("u10").expect("read").is_none());
            assert!(store.user("stray").expect("read").is_none(), "cleared");
            assert_eq!(
                store.meta.get(SCHEMA_KEY).expect("read").as_deref(),
                Some(&SCHEMA_VERSION.to_be_bytes()[..])
            );
            let trees = store.flusher.db().tree_names();
            assert!(!trees.iter().any(|n| n.as_ref() == OLD_USERS.as_bytes()));
            drop(store);
            let store = reopen(&path);
            assert_eq!(
                store.token_of_user("u1").expect("read"),
                Some(owned(1, "u1"))
            );
        }
    }

    #[test]
    fn a_user_change_and_a_login_in_one_account_keep_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        let read = user(1);
        store
            .create_users(std::slice::from_ref(&read))
            .expect("user");
        let issued = Token {
            owner: Some("u1".into()),
            ..token(1)
        };
        store
            .create_tokens(std::slice::from_ref(&issued))
            .expect("token");
        let rehashed = User {
            password_hash: "$argon2id$new".into(),
            ..read.clone()
        };
        assert!(store.replace_user(&read, &rehashed).expect("user swap"));
        let used = Token {
            counter: 1,
            ..issued.clone()
        };
        assert!(store.replace_token(&issued, &used).expect("token swap"));
        assert!(!store.replace_token(&issued, &used).expect("stale token"));
        assert!(!store.replace_user(&read, &rehashed).expect("stale user"));
        assert_eq!(
            store.user_and_token("u1").expect("read"),
            (Some(rehashed), Some(used))
        );
        // A name that owns a token gets a user record beside it.
        let lone = Token {
            owner: Some("u2".into()),
            ..token(2)
        };
        store
            .create_tokens(std::slice::from_ref(&lone))
            .expect("token");
        store.create_users(&[user(2)]).expect("user beside a token");
        assert_eq!(store.token_of_user("u2").expect("read"), Some(lone));
        assert_eq!(store.user_and_token("nobody").expect("read"), (None, None));
        assert!(matches!(
            store.create_users(&[user(2)]),
            Err(StoreError::UserExists(name)) if name == "u2"
        ));
    }

    #[test]
    fn a_token_import_rolled_back_keeps_its_owners_and_their_other_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        store.create_users(&[user(1), user(2)]).expect("users");
        let owned = |i: usize, owner: &str| Token {
            owner: Some(owner.into()),
            ..token(i)
        };
        // u2 got T2 outside the import; the import named u2 but never reached it.
        store
            .create_tokens(&[owned(1, "u1"), owned(2, "u2")])
            .expect("tokens");
        let journal = ImportJournal {
            tokens: vec!["T1".into(), "T9".into()],
            owners: vec!["u1".into(), "u2".into()],
            ..ImportJournal::default()
        };
        store.roll_back_import(&journal).expect("roll back");
        assert!(store.token("T1").expect("read").is_none());
        assert!(store.token_of_user("u1").expect("read").is_none());
        assert_eq!(store.user("u1").expect("read"), Some(user(1)));
        assert_eq!(
            store.token_of_user("u2").expect("read"),
            Some(owned(2, "u2"))
        );
    }

    #[test]
    fn a_store_at_schema_4_with_its_old_tree_left_is_not_migrated_again() {
        // As after a crash between writing the version and dropping `users`.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        {
            let db = sled::open(&path).expect("sled");
            db.open_tree(OLD_USERS)
                .expect("users")
                .insert("u1", encode(&user(1)).expect("encode"))
                .expect("old user");
            db.open_tree(ACCOUNTS)
                .expect("accounts")
                .insert("u2", user_account(2))
                .expect("account");
            write_schema(&db, SCHEMA_VERSION);
        }
        let store = reopen(&path);
        assert_eq!(store.user("u2").expect("read"), Some(user(2)));
        assert!(
            store.user("u1").expect("read").is_none(),
            "not migrated again"
        );
        let trees = store.flusher.db().tree_names();
        assert!(!trees.iter().any(|n| n.as_ref() == OLD_USERS.as_bytes()));
    }

    #[test]
    fn logins_and_user_changes_racing_on_one_account_all_succeed() {
        const ROUNDS: u64 = 5_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        store.create_users(&[user(1)]).expect("user");
        let issued = Token {
            owner: Some("u1".into()),
            ..token(1)
        };
        store
            .create_tokens(std::slice::from_ref(&issued))
            .expect("token");
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut current = issued.clone();
                for _ in 0..ROUNDS {
                    let next = Token {
                        counter: current.counter + 1,
                        ..current.clone()
                    };
                    assert!(store.replace_token(&current, &next).expect("token swap"));
                    current = next;
                }
            });
            s.spawn(|| {
                let mut current = user(1);
                for _ in 0..ROUNDS {
                    let next = User {
                        created_at: current.created_at + 1,
                        ..current.clone()
                    };
                    assert!(store.replace_user(&current, &next).expect("user swap"));
                    current = next;
                }
            });
        });
        let (user, token) = store.user_and_token("u1").expect("read");
        assert_eq!(user.map(|u| u.created_at), Some(ROUNDS));
        assert_eq!(token.map(|t| t.counter), Some(ROUNDS));
    }

    #[test]
    fn a_user_import_rolled_back_keeps_the_tokens_of_its_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("open");
        let lone = Token {
            owner: Some("u1".into()),
            ..token(1)
        };
        store
            .create_tokens(std::slice::from_ref(&lone))
            .expect("token");
        store.create_users(&[user(1), user(2)]).expect("users");
        let journal = ImportJournal {
            users: vec!["u1".into(), "u2".into()],
            ..ImportJournal::default()
        };
        store.roll_back_import(&journal).expect("roll back");
        assert_eq!(
            store.user_and_token("u1").expect("read"),
            (None, Some(lone))
        );
        assert!(store.accounts.get("u2").expect("read").is_none());
    }

    #[test]
    fn owner_key_cannot_be_a_user_name() {
        let key = owner_key("alice");
        assert!(std::str::from_utf8(&key).is_err());
        assert!(key.starts_with(b"alice"));
    }

    #[test]
    fn after_a_failed_flush_no_checkpoint_moves_the_log_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(&dir.path().join("db")).expect("open");
        let t = token(1);
        store
            .create_tokens(std::slice::from_ref(&t))
            .expect("create");
        store.sync().expect("sync");
        let next = Token {
            counter: 1,
            ..t.clone()
        };
        assert!(store.replace_token(&t, &next).expect("write"));
        store.sync().expect("a log write needs no flush");
        let held = lock(&store.wal).would_use(0);
        assert!(held > 0);
        // As after a failed fdatasync of sled's log.
        store.flusher.fail();
        assert!(store.checkpoint().is_err());
        store
            .create_users(&[user(1)])
            .expect("written, not yet durable");
        assert!(store.sync().is_err(), "a sync that needs a flush fails");
        assert_eq!(
            lock(&store.wal).would_use(0),
            held,
            "the log keeps its records"
        );
        store.wake_checkpointer();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            lock(&store.wal).would_use(0),
            held,
            "nor does the checkpointer"
        );
    }

    #[test]
    fn a_token_record_left_under_another_name_hands_out_no_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(&dir.path().join("db")).expect("open");
        let owned = Token {
            owner: Some("u1".into()),
            ..token(1)
        };
        store
            .create_tokens(std::slice::from_ref(&owned))
            .expect("create");
        // As a crash between an owner change and its checkpoint may leave behind.
        let record = encode(&owned).expect("encode");
        store
            .accounts
            .insert("u2", account_value(None, Some(&record)).expect("account"))
            .expect("stale record");
        assert!(store.token_of_user("u1").expect("read").is_some());
        assert!(store.token_of_user("u2").expect("read").is_none());
    }

    #[test]
    fn a_token_moves_with_its_owner_and_back_to_stock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let store = SledStore::open(&path).expect("open");
        let stock = token(1);
        store
            .create_tokens(std::slice::from_ref(&stock))
            .expect("create");
        assert_eq!(store.token("T1").expect("read"), Some(stock.clone()));
        let owned = Token {
            owner: Some("u1".into()),
            ..stock.clone()
        };
        assert!(matches!(
            store.replace_token(&stock, &token(2)),
            Err(StoreError::SerialChange { .. })
        ));
        assert!(store.replace_token(&stock, &owned).expect("assign"));
        assert!(!store
            .replace_token(&stock, &owned)
            .expect("stale expectation"));
        assert_eq!(
            store.token_of_user("u1").expect("read"),
            Some(owned.clone())
        );
        assert_eq!(store.token("T1").expect("read"), Some(owned.clone()));
        // Hot path, where the record now is: in its owner's account.
        let used = Token {
            counter: 7,
            ..owned.clone()
        };
        assert!(store.replace_token(&owned, &used).expect("login"));
        // A second token cannot take the same owner.
        let other = Token {
            owner: Some("u1".into()),
            ..token(2)
        };
        assert!(matches!(
            store.create_tokens(&[other]),
            Err(StoreError::OwnerTaken { serial, .. }) if serial == "T1"
        ));
        let back = Token {
            owner: None,
            ..used.clone()
        };
        assert!(store.replace_token(&used, &back).expect("unassign"));
        assert!(store.token_of_user("u1").expect("read").is_none());
        assert!(
            store.accounts.get("u1").expect("read").is_none(),
            "u1 has no user record: the account is gone with the token"
        );
        assert_eq!(store.token("T1").expect("read"), Some(back.clone()));
        store.sync().expect("sync");
        drop(store);
        let store = reopen(&path);
        assert_eq!(store.token("T1").expect("read"), Some(back));
    }

    #[test]
    fn replay_skips_records_older_than_an_owner_change_and_never_overwrites_a_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let owned = |i: usize, owner: Option<&str>, counter: u64| Token {
            owner: owner.map(str::to_string),
            counter,
            ..token(i)
        };
        {
            let store = SledStore::open(&path).expect("open");
            store.create_users(&[user(1)]).expect("user");
            store
                .create_tokens(&[owned(1, Some("u1"), 0), owned(2, None, 0)])
                .expect("create");
            // T1 goes back to stock and T2 to u1, both made durable by a checkpoint.
            assert!(store
                .replace_token(&owned(1, Some("u1"), 0), &owned(1, None, 0))
                .expect("unassign"));
            assert!(store
                .replace_token(&owned(2, None, 0), &owned(2, Some("u1"), 0))
                .expect("assign"));
            store.checkpoint().expect("checkpoint");
        }
        // The log after the checkpoint holds a login on T1 from before the owner changes (as
        // after a crash between a flush and the header write), then one on T2.
        {
            let (mut wal, _) = Wal::open(&path.join(WAL_FILE), wal::DEFAULT_CAPACITY).expect("wal");
            let mut pending = Pending::after(wal.last_seq());
            pending.append(&[
                &[LOG_TOKEN],
                &encode(&owned(1, Some("u1"), 9)).expect("encode"),
            ]);
            pending.append(&[
                &[LOG_TOKEN],
                &encode(&owned(2, Some("u1"), 4)).expect("encode"),
            ]);
            wal.write(&pending.take()).expect("write");
        }
        let store = reopen(&path);
        assert_eq!(
            store.token_of_user("u1").expect("read"),
            Some(owned(2, Some("u1"), 4)),
            "T2's record is intact and its login replayed"
        );
        assert_eq!(
            store.token("T1").expect("read"),
            Some(owned(1, None, 0)),
            "the stale record was skipped"
        );
        assert_eq!(
            store.user("u1").expect("read"),
            Some(user(1)),
            "a replayed token record keeps the user record beside it"
        );
    }

    #[test]
    fn a_migration_refuses_two_tokens_of_one_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        {
            let db = sled::open(&path).expect("sled");
            let tokens = db.open_tree("tokens").expect("tokens");
            for i in [1, 2] {
                let t = Token {
                    owner: Some("u1".into()),
                    ..token(i)
                };
                tokens
                    .insert(t.serial.as_bytes(), encode(&t).expect("encode"))
                    .expect("token");
            }
            write_schema(&db, 2u32);
        }
        let mut opened = SledStore::open(&path);
        for _ in 0..50 {
            if !matches!(opened, Err(StoreError::Locked { .. })) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            opened = SledStore::open(&path);
        }
        assert!(matches!(opened, Err(StoreError::OwnerTwice { .. })));
    }
}
