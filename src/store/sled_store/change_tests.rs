//! Change sets on the sled store: all or nothing, and durable through the token log alone.

use std::sync::atomic::Ordering;

use super::tests::{reopen, token, user};
use super::*;
use crate::store::Expect;

/// A token owned by `owner`.
fn owned(i: usize, owner: Option<&str>) -> Token {
    Token {
        owner: owner.map(str::to_string),
        ..token(i)
    }
}

#[test]
fn a_change_set_with_one_stale_record_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(&dir.path().join("db")).expect("open");
    store.create_users(&[user(1)]).expect("user");
    store.create_tokens(&[owned(1, None)]).expect("token");
    let renamed = User {
        email: Some("u1@example.org".into()),
        ..user(1)
    };
    let register = || {
        ChangeSet::new()
            .token(Some(owned(1, None)), owned(1, Some("u1")))
            .user(Some(user(1)), renamed.clone())
            .record(b"k/1".to_vec(), Expect::Absent, Some(b"one".to_vec()))
    };
    // The record is there already: the token and the user stay as they were.
    assert!(store
        .apply(ChangeSet::new().record(b"k/1".to_vec(), Expect::Absent, Some(b"x".to_vec())))
        .expect("record"));
    assert!(!store.apply(register()).expect("stale"));
    assert_eq!(store.token("T1").expect("read"), Some(owned(1, None)));
    assert_eq!(store.token_of_user("u1").expect("read"), None);
    assert_eq!(store.user("u1").expect("read"), Some(user(1)));
    assert_eq!(store.record(b"k/1").expect("read"), Some(b"x".to_vec()));
    // Once the record is as expected, all of it lands.
    assert!(store
        .apply(ChangeSet::new().record(b"k/1".to_vec(), Expect::Value(b"x".to_vec()), None))
        .expect("remove"));
    assert!(store.apply(register()).expect("applied"));
    assert_eq!(
        store.token_of_user("u1").expect("read"),
        Some(owned(1, Some("u1")))
    );
    assert_eq!(store.user("u1").expect("read"), Some(renamed));
    assert_eq!(store.record(b"k/1").expect("read"), Some(b"one".to_vec()));
}

#[test]
fn a_change_set_refuses_a_taken_serial_owner_or_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(&dir.path().join("db")).expect("open");
    store.create_users(&[user(1)]).expect("user");
    store
        .create_tokens(&[owned(1, Some("u1")), owned(2, None)])
        .expect("tokens");
    let new_record = || (b"k/2".to_vec(), Expect::Absent, Some(b"2".to_vec()));
    let with_record = |set: ChangeSet| {
        let (key, expected, new) = new_record();
        set.record(key, expected, new)
    };
    assert!(matches!(
        store.apply(with_record(ChangeSet::new().token(None, owned(1, None)))),
        Err(StoreError::TokenExists(serial)) if serial == "T1"
    ));
    assert!(matches!(
        store.apply(with_record(
            ChangeSet::new().token(Some(owned(2, None)), owned(2, Some("u1")))
        )),
        Err(StoreError::OwnerTaken { user, serial }) if user == "u1" && serial == "T1"
    ));
    assert!(matches!(
        store.apply(with_record(ChangeSet::new().user(None, user(1)))),
        Err(StoreError::UserExists(name)) if name == "u1"
    ));
    assert_eq!(store.record(b"k/2").expect("read"), None, "nothing written");
    assert_eq!(store.token("T2").expect("read"), Some(owned(2, None)));
}

/// A revocation and a new registration (the former owner's token leaves the account, another
/// comes in), a user created, records written and removed: all in the token log, no
/// checkpoint asked for; after a crash that lost everything sled held since the last
/// checkpoint, replay puts all of it back.
#[test]
fn change_sets_are_logged_and_replayed_without_a_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let crashed = dir.path().join("crashed");
    {
        let store = SledStore::open(&path).expect("open");
        store.create_users(&[user(1)]).expect("user");
        store
            .create_tokens(&[owned(1, Some("u1")), owned(2, None)])
            .expect("tokens");
        assert!(store
            .apply(ChangeSet::new().record(b"k/old".to_vec(), Expect::Absent, Some(b"o".to_vec())))
            .expect("record"));
        store.checkpoint().expect("checkpoint");
    }
    // What sled holds at the last checkpoint, as a crash would leave it.
    copy_dir(&path, &crashed);
    let store = SledStore::open(&path).expect("open");
    let revoked = Token {
        state: crate::token::TokenState::Revoked,
        ..owned(1, None)
    };
    let changes = [
        ChangeSet::new()
            .token(Some(owned(1, Some("u1"))), revoked.clone())
            .record(b"k/old".to_vec(), Expect::Anything, None),
        ChangeSet::new()
            .token(Some(owned(2, None)), owned(2, Some("u1")))
            .user(None, user(2))
            .record(b"k/new".to_vec(), Expect::Absent, Some(b"n".to_vec())),
    ];
    for set in changes {
        assert!(store.apply(set).expect("apply"));
        assert!(
            !store.needs_checkpoint.load(Ordering::Acquire),
            "a change set asked for a checkpoint"
        );
    }
    store.sync().expect("sync");
    std::fs::copy(path.join(WAL_FILE), crashed.join(WAL_FILE)).expect("copy the log");
    drop(store);
    let store = reopen(&crashed);
    assert_eq!(store.token("T1").expect("read"), Some(revoked));
    assert_eq!(
        store.token_of_user("u1").expect("read"),
        Some(owned(2, Some("u1")))
    );
    assert_eq!(store.user("u1").expect("read"), Some(user(1)));
    assert_eq!(store.user("u2").expect("read"), Some(user(2)));
    assert_eq!(store.record(b"k/old").expect("read"), None);
    assert_eq!(store.record(b"k/new").expect("read"), Some(b"n".to_vec()));
    // A scan of the records sees the one left.
    assert_eq!(
        store.records(b"k/", b"k0", 10).expect("scan"),
        vec![(b"k/new".to_vec(), b"n".to_vec())]
    );
}

/// A record made by a change set too large for a log record is made durable by a checkpoint
/// instead (replay would stop at it).
#[test]
fn a_change_set_too_large_to_log_waits_for_a_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(&dir.path().join("db")).expect("open");
    store.sync().expect("sync");
    let huge = vec![7u8; wal::MAX_PAYLOAD];
    assert!(store
        .apply(ChangeSet::new().record(b"k/huge".to_vec(), Expect::Absent, Some(huge)))
        .expect("apply"));
    assert!(
        lock(&store.pending).is_empty(),
        "an unreadable record was logged"
    );
    assert!(store.needs_checkpoint.load(Ordering::Acquire));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}
