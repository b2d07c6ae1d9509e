//! Re-hashing imported password hashes (`{SSHA256}`, SHA-crypt...) to argon2id after a
//! successful login, on spare CPU only.
//!
//! A first-login wave after importing a million users would otherwise put one argon2id job
//! (about 13 ms of a core and 19 MiB) beside every accepted login at full priority: measured,
//! half the accepts/s and five times the p99 of the same load without re-hashing. So:
//!
//! - The jobs run on one thread of the kernel's idle scheduling class (`SCHED_IDLE`, sched(7)),
//!   which gets a core only when no other thread wants it. It takes no login hashing slot, so a
//!   re-hash starved by load never holds up a login.
//! - Idle priority alone is not enough: argon2id streams through 19 MiB, evicting the caches
//!   the logins run from (measured at 64 in flight: 4-15% fewer accepts/s and two to three
//!   times the p99). So the thread also waits for quiet ([`QuietGate`]): it hashes only while
//!   fewer than [`QUIET_BELOW_PER_SEC`] requests a second arrive, and catches up as the load
//!   drops.
//! - Jobs wait in a bounded queue ([`QUEUE_CAPACITY`]; each holds a password, zeroed when
//!   dropped). A login whose job finds the queue full leaves the re-hash to its next login.
//! - The new hash is written over the record the login read only (compare-and-swap: a change
//!   made meanwhile wins) as a user record in the token log ([`Store::apply`]): the next
//!   login's sync makes it durable, no checkpoint under the lock logins take. Lost in a crash
//!   before that, it is redone at a later login; the old hash verifies the same password.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::password::{Argon2Params, PasswordHash};
use crate::store::{ChangeSet, Store, User};

/// Jobs that may wait at once: about 3 s of argon2id work on one core with the default cost.
pub const QUEUE_CAPACITY: usize = 256;
/// Requests a second below which logins are quiet enough for a re-hash: at this rate logins
/// use about 2% of a core, so the caches a hash evicts cost them little.
pub const QUIET_BELOW_PER_SEC: u64 = 1_000;
/// How long a stop waits for the hash in progress.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// The shortest time over which the request rate is measured.
const SAMPLE: Duration = Duration::from_millis(10);
/// How long the thread waits before it measures again while requests are not quiet.
const BUSY_PROBE: Duration = Duration::from_millis(50);

/// A re-hash to do: the user record the login read and the password it proved.
pub struct Job {
    pub user: User,
    pub password: Zeroizing<Vec<u8>>,
    /// The scheme being replaced, for the log.
    pub from: &'static str,
}

/// What became of the jobs so far.
#[derive(Debug, Default)]
pub struct Counters {
    /// Hashes upgraded and stored.
    pub upgraded: AtomicU64,
    /// Jobs refused because the queue was full (left for a later login).
    pub deferred: AtomicU64,
    /// Jobs whose user changed meanwhile, or whose write failed.
    pub dropped: AtomicU64,
    /// Jobs waiting or being hashed when re-hashing stopped (left for later logins).
    pub abandoned: AtomicU64,
}

/// The queue's sending side and the thread working it off.
pub struct Rehasher {
    queue: Mutex<Option<SyncSender<Job>>>,
    /// The thread, and what tells that it ended (its sender is dropped then).
    worker: Mutex<Option<(JoinHandle<()>, Receiver<()>)>>,
    stopping: Arc<AtomicBool>,
    counters: Arc<Counters>,
    /// Requests seen so far ([`Rehasher::note_request`]), for the [`QuietGate`].
    requests: Arc<AtomicU64>,
}

impl Rehasher {
    /// Starts the idle-priority thread. Should it not start, re-hashing is off (logged) and
    /// logins go on with their imported hashes.
    pub fn start(store: Arc<dyn Store>, params: Argon2Params) -> Rehasher {
        let (queue, jobs) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let stopping = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let requests = Arc::new(AtomicU64::new(0));
        let worker = {
            let stopping = Arc::clone(&stopping);
            let counters = Arc::clone(&counters);
            let gate = QuietGate::new(Arc::clone(&requests));
            let (ended, has_ended) = std::sync::mpsc::channel::<()>();
            std::thread::Builder::new()
                .name("otpgate-rehash".into())
                .spawn(move || {
                    let _ended = ended;
                    work(&jobs, gate, &*store, &params, &stopping, &counters);
                })
                .map(|handle| (handle, has_ended))
        };
        let (queue, worker) = match worker {
            Ok(worker) => (Some(queue), Some(worker)),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the re-hash thread; re-hashing is off");
                (None, None)
            }
        };
        Rehasher {
            queue: Mutex::new(queue),
            worker: Mutex::new(worker),
            stopping,
            counters,
            requests,
        }
    }

    /// Counts a request (every one the login path sees), so re-hashing waits for quiet.
    pub fn note_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues `job`; false (counted) if the queue is full or re-hashing stopped.
    pub fn offer(&self, job: Job) -> bool {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = queue.as_ref() else {
            Counters::count(&self.counters.deferred);
            return false;
        };
        match queue.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                Counters::count(&self.counters.deferred);
                tracing::debug!(user = %job.user.username, "re-hash left for a later login");
                false
            }
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Stops taking jobs and drops those waiting (redone at later logins). Waits up to
    /// [`STOP_WAIT`] for the job being hashed (at idle priority it may be starved); a hash that
    /// finishes after a stop is not stored, so nothing writes to the store after this returns.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some((handle, has_ended)) = worker else {
            return;
        };
        match has_ended.recv_timeout(STOP_WAIT) {
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!("the re-hash thread is still hashing; leaving it behind");
            }
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if handle.join().is_err() {
                    tracing::error!("the re-hash thread ended abnormally");
                }
            }
        }
    }
}

impl Drop for Rehasher {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Counters {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The thread: idle priority, then one job at a time, each once requests are quiet, until the
/// queue closes or stop is asked.
fn work(
    jobs: &Receiver<Job>,
    mut gate: QuietGate,
    store: &dyn Store,
    params: &Argon2Params,
    stopping: &AtomicBool,
    counters: &Counters,
) {
    lower_to_idle_priority();
    loop {
        let job = match jobs.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => match jobs.recv() {
                // The thread slept: what it measured before says nothing about now.
                Ok(job) => {
                    gate.restart();
                    job
                }
                Err(_) => break,
            },
        };
        if !gate.wait(stopping) {
            let waiting = u64::try_from(jobs.try_iter().count()).unwrap_or(u64::MAX);
            counters
                .abandoned
                .fetch_add(waiting.saturating_add(1), Ordering::Relaxed);
            break;
        }
        Counters::count(match rehash(store, params, job, stopping) {
            Some(true) => &counters.upgraded,
            Some(false) => &counters.dropped,
            None => &counters.abandoned,
        });
    }
}

/// Tells the re-hash thread when requests are quiet: fewer than [`QUIET_BELOW_PER_SEC`] a
/// second over the time since it last looked (at least [`SAMPLE`]).
struct QuietGate {
    requests: Arc<AtomicU64>,
    since: Instant,
    seen: u64,
}

impl QuietGate {
    fn new(requests: Arc<AtomicU64>) -> QuietGate {
        let seen = requests.load(Ordering::Relaxed);
        QuietGate {
            requests,
            since: Instant::now(),
            seen,
        }
    }

    /// Starts measuring afresh from now.
    fn restart(&mut self) {
        self.since = Instant::now();
        self.seen = self.requests.load(Ordering::Relaxed);
    }

    /// Waits until requests are quiet; false if `stopping` is set meanwhile.
    fn wait(&mut self, stopping: &AtomicBool) -> bool {
        loop {
            if stopping.load(Ordering::Acquire) {
                return false;
            }
            match self.sample() {
                Err(too_short) => std::thread::sleep(too_short),
                Ok(true) => return true,
                Ok(false) => std::thread::sleep(BUSY_PROBE),
            }
        }
    }

    /// Whether requests were quiet since the last sample, which this one ends; `Err` with
    /// the time left if that was shorter than [`SAMPLE`].
    fn sample(&mut self) -> Result<bool, Duration> {
        let elapsed = self.since.elapsed();
        if elapsed < SAMPLE {
            return Err(SAMPLE - elapsed);
        }
        let seen = self.requests.load(Ordering::Relaxed);
        let arrived = u128::from(seen.wrapping_sub(self.seen));
        self.restart();
        // arrived / elapsed < QUIET_BELOW_PER_SEC, in whole numbers.
        Ok(arrived * 1_000_000 < u128::from(QUIET_BELOW_PER_SEC) * elapsed.as_micros())
    }
}

/// Hashes one password and stores it over the record its login read; true if stored, `None`
/// if a stop came while it hashed (nothing is stored then).
fn rehash(
    store: &dyn Store,
    params: &Argon2Params,
    job: Job,
    stopping: &AtomicBool,
) -> Option<bool> {
    let Job {
        user,
        password,
        from,
    } = job;
    let new_hash = match PasswordHash::new_argon2id(&password, params) {
        Ok(hash) => hash,
        Err(e) => {
            tracing::warn!(user = %user.username, error = %e, "re-hash failed");
            return Some(false);
        }
    };
    if stopping.load(Ordering::Acquire) {
        return None;
    }
    let updated = User {
        password_hash: new_hash.as_stored().to_string(),
        ..user.clone()
    };
    let username = user.username.clone();
    Some(
        match store.apply(ChangeSet::new().user(Some(user), updated)) {
            Ok(true) => {
                tracing::info!(user = %username, from, "password hash upgraded to argon2id");
                true
            }
            Ok(false) => {
                tracing::info!(user = %username, "re-hash dropped: the user changed meanwhile");
                false
            }
            Err(e) => {
                tracing::warn!(user = %username, error = %e, "re-hash not stored");
                false
            }
        },
    )
}

/// Moves the calling thread to `SCHED_IDLE` (sched(7)); where that is refused, to nice 19.
fn lower_to_idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system calls on the calling thread (pid 0) with a valid parameter struct.
    let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
    if idle {
        tracing::debug!("re-hash thread at idle scheduling priority");
        return;
    }
    let error = std::io::Error::last_os_error();
    // SAFETY: as above; `gettid` cannot fail, and PRIO_PROCESS with a thread id is per thread.
    let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    tracing::warn!(
        %error,
        niced = niced == 0,
        "SCHED_IDLE refused for the re-hash thread; it runs at nice 19 and may slow logins"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;

    /// `{SSHA256}` of "correct horse" (a vector of `password`'s tests).
    const SSHA256_CORRECT_HORSE: &str =
        "{SSHA256}62RnE8i68Rku2tJcWuHTq0Iu22EYuLaYy4OAoBpRZOmhssPU5fYHGA==";

    const CHEAP: Argon2Params = Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn carol() -> User {
        User {
            username: "carol".into(),
            password_hash: SSHA256_CORRECT_HORSE.into(),
            email: None,
            first_name: None,
            last_name: None,
            assurance_level: 2,
            created_at: 0,
        }
    }

    fn job(user: User) -> Job {
        Job {
            user,
            password: Zeroizing::new(b"correct horse".to_vec()),
            from: "ssha256",
        }
    }

    fn scheme(store: &dyn Store) -> &'static str {
        let user = store.user("carol").expect("read").expect("carol");
        PasswordHash::parse(&user.password_hash)
            .expect("hash")
            .scheme()
    }

    fn wait_for(what: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !what() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        true
    }

    #[test]
    fn a_job_is_hashed_on_an_idle_thread_and_verifies_the_same_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("open"));
        store.create_users(&[carol()]).expect("user");
        let rehasher = Rehasher::start(Arc::clone(&store), CHEAP);
        assert!(rehasher.offer(job(carol())));
        assert!(
            wait_for(|| scheme(&*store) == "argon2id"),
            "never re-hashed"
        );
        let user = store.user("carol").expect("read").expect("carol");
        assert!(PasswordHash::parse(&user.password_hash)
            .expect("hash")
            .verify(b"correct horse"));
        assert_eq!(rehasher.counters().upgraded.load(Ordering::Relaxed), 1);
        // A job over a record that changed meanwhile is dropped, the change kept.
        assert!(rehasher.offer(job(carol())));
        assert!(wait_for(|| rehasher
            .counters()
            .dropped
            .load(Ordering::Relaxed)
            == 1));
        assert_eq!(
            store.user("carol").expect("read").expect("carol"),
            user,
            "the re-hash undid a later change"
        );
    }

    #[test]
    fn the_thread_runs_at_idle_priority() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            lower_to_idle_priority();
            // SAFETY: a query of the calling thread's policy.
            let _ = tx.send(unsafe { libc::sched_getscheduler(0) });
        });
        assert_eq!(rx.recv().expect("policy"), libc::SCHED_IDLE);
    }

    #[test]
    fn a_stopped_rehasher_refuses_jobs_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("open"));
        store.create_users(&[carol()]).expect("user");
        let rehasher = Rehasher::start(Arc::clone(&store), CHEAP);
        rehasher.stop();
        assert!(!rehasher.offer(job(carol())));
        assert_eq!(rehasher.counters().deferred.load(Ordering::Relaxed), 1);
        assert_eq!(scheme(&*store), "ssha256");
    }

    #[test]
    fn the_gate_opens_only_once_requests_are_quiet() {
        let requests = Arc::new(AtomicU64::new(0));
        let stopping = AtomicBool::new(false);
        let mut gate = QuietGate::new(Arc::clone(&requests));
        // Quiet from the start: open after one sample.
        assert!(gate.wait(&stopping));
        // Too short a sample says nothing yet.
        gate.restart();
        assert!(gate.sample().is_err());
        // 100,000 requests over a sample of 10 ms or more (at most 100 s): busy.
        std::thread::sleep(SAMPLE);
        requests.fetch_add(100_000, Ordering::Relaxed);
        assert_eq!(gate.sample(), Ok(false));
        // None over the next one: quiet.
        std::thread::sleep(SAMPLE);
        assert_eq!(gate.sample(), Ok(true));
        // A stop while waiting: the gate gives up.
        stopping.store(true, Ordering::Release);
        assert!(!gate.wait(&stopping));
    }
}
