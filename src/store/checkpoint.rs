//! Making sled durable, and the background checkpointer that lets the token log forget what
//! sled holds (see [`super::wal`]).

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::layout::io;
use super::wal::Wal;
use super::{lock, StoreError};

/// sled's flush followed by the fdatasync it lacks (sled issue 1452), and the memory of a
/// failure: after a failed fdatasync the kernel may have dropped the dirty pages, so a later
/// flush that succeeds proves nothing about them. From the first failure on, every flush
/// fails, no checkpoint moves the log forward, and the records it holds wait for the restart
/// that replays them (as PostgreSQL does after an fsync failure).
pub struct Flusher {
    db: sled::Db,
    /// sled's log file, kept open to fdatasync it after each flush.
    log_file: File,
    /// Whether a flush has failed, and the turn to flush: one flush at a time, because Linux
    /// reports a write-back error to one fdatasync of an open file only, so a flush running
    /// beside a failing one could return Ok; taking turns, the second sees the failure.
    failed: Mutex<bool>,
}

impl Flusher {
    pub fn new(db: sled::Db, log_file: File) -> Flusher {
        Flusher {
            db,
            log_file,
            failed: Mutex::new(false),
        }
    }

    #[cfg(test)]
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        let mut failed = lock(&self.failed);
        if *failed {
            return Err(StoreError::Io(
                "an earlier flush of the database failed; restart otpgate to recover from \
                 the token log"
                    .into(),
            ));
        }
        let result = self.db.flush().map_err(io).and_then(|_| {
            self.log_file
                .sync_data()
                .map_err(|e| StoreError::Io(format!("fdatasync of the log: {e}")))
        });
        if result.is_err() {
            *failed = true;
        }
        result
    }

    /// As after a failed fdatasync.
    #[cfg(test)]
    pub fn fail(&self) {
        *lock(&self.failed) = true;
    }
}

/// The background checkpointer thread; dropping this stops it (after the checkpoint it may be
/// running).
pub struct Checkpointer {
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Said once that the thread is gone (every later sync would say it again).
    gone_reported: AtomicBool,
}

impl Checkpointer {
    pub fn start(flusher: Arc<Flusher>, wal: Arc<Mutex<Wal>>) -> std::io::Result<Checkpointer> {
        let (wake, wake_ups) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("otpgate-checkpoint".into())
            .spawn(move || run(&flusher, &wal, &wake_ups))?;
        Ok(Checkpointer {
            wake: Some(wake),
            thread: Some(thread),
            gone_reported: AtomicBool::new(false),
        })
    }

    /// Asks for a checkpoint (one already asked for is enough). False if the thread is gone
    /// (it panicked): the caller must checkpoint itself.
    pub fn wake(&self) -> bool {
        let Some(wake) = &self.wake else {
            return false;
        };
        match wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => true,
            Err(TrySendError::Disconnected(())) => {
                if !self.gone_reported.swap(true, Ordering::Relaxed) {
                    tracing::error!("the background checkpointer is gone; syncs checkpoint");
                }
                false
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the checkpointer thread ended abnormally");
            }
        }
    }
}

/// On each wake-up: marks the end of the log, flushes sled (token writes and log syncs go on
/// meanwhile), then lets the log forget every record up to the mark. Every record up to the
/// mark was written to sled before it was appended, so the flush holds it; records after the
/// mark stay in the log and are replayed over it.
fn run(flusher: &Flusher, wal: &Mutex<Wal>, wake_ups: &Receiver<()>) {
    let mut failing = false;
    while wake_ups.recv().is_ok() {
        let mark = lock(wal).mark();
        let result = flusher.flush().and_then(|()| {
            lock(wal)
                .checkpoint_at(mark)
                .map_err(|e| StoreError::Io(format!("token log checkpoint: {e}")))
        });
        match result {
            // Nothing is lost: the log still holds every record. If it fills up, a sync
            // checkpoints itself and reports the error to its caller. Said once per run of
            // failures: the wake-ups keep coming.
            Err(e) if !failing => {
                failing = true;
                tracing::error!(error = %e, "background checkpoint failed");
            }
            Err(_) => {}
            Ok(()) => failing = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_checkpointer_is_noticed() {
        let (wake, wake_ups) = sync_channel(1);
        let live = Checkpointer {
            wake: Some(wake),
            thread: None,
            gone_reported: AtomicBool::new(false),
        };
        assert!(live.wake());
        assert!(live.wake(), "a wake-up already pending is enough");
        drop(wake_ups);
        assert!(!live.wake(), "syncs must checkpoint themselves");
    }
}
