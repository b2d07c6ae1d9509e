//! Group commit: many concurrent requests share one flush+fdatasync. A request writes its state
//! change, then awaits [`GroupCommit::durable`], which returns once a sync that *started after*
//! the call has finished. Syncs run back to back on a dedicated thread while anyone waits, so
//! the batch size grows with load and there is no timer to tune.

use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Store, StoreError};

type Waiter = oneshot::Sender<Result<(), String>>;

/// Handle to the committer thread. Cloning shares the same thread.
#[derive(Clone)]
pub struct GroupCommit {
    waiters: mpsc::Sender<Waiter>,
}

impl GroupCommit {
    /// Starts the committer thread for `store`. It stops when every handle is dropped.
    pub fn start(store: Arc<dyn Store>) -> std::io::Result<GroupCommit> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        std::thread::Builder::new()
            .name("otpgate-commit".into())
            .spawn(move || run(store, rx))?;
        Ok(GroupCommit { waiters: tx })
    }

    /// Returns when every write made before this call is durable on disk.
    pub async fn durable(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .send(tx)
            .map_err(|_| StoreError::Io("the commit thread has stopped".into()))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(StoreError::Io(reason)),
            Err(_) => Err(StoreError::Io("the commit thread has stopped".into())),
        }
    }
}

fn run(store: Arc<dyn Store>, rx: mpsc::Receiver<Waiter>) {
    let mut batch: Vec<Waiter> = Vec::new();
    // Block for the first waiter, then take everyone already queued: all of them wrote before
    // enqueueing, so the sync that starts now covers them all.
    while let Ok(first) = rx.recv() {
        batch.push(first);
        batch.extend(rx.try_iter());
        let result = store.sync().map_err(|e| e.to_string());
        if let Err(reason) = &result {
            tracing::error!(%reason, "durable commit failed");
        }
        for waiter in batch.drain(..) {
            // A waiter that went away (request abandoned) needs no answer.
            let _ = waiter.send(result.clone());
        }
    }
}
