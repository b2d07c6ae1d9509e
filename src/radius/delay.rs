//! Delayed Access-Rejects, as FreeRADIUS's `reject_delay` does: every Reject leaves no earlier
//! than a fixed time after its request arrived, however fast it was decided. Without it the
//! reply time is an oracle: an unknown user, a wrong `{SSHA256}` password, a wrong argon2id
//! password and a right password with a wrong code each take a different, measurable time, so
//! a guesser learns which user names exist and when a guessed password was right.
//!
//! One thread owns a min-heap of replies by deadline, fed through a channel, and sleeps in the
//! channel's `recv_timeout` until the earliest deadline or the next reply to hold. Nothing else
//! waits: not a UDP worker, not a committer, not a hashing slot, not a `max_in_flight` permit,
//! so a flood of Rejects cannot starve real logins. Replies of one receive batch share their
//! deadline and socket and travel as one entry; the due replies of one socket leave with one
//! [`send_batch`].
//!
//! The caller hands a reply over only once the state change it depends on is durable; the
//! queue changes nothing about that order. A held reply's duplicate-cache entry (RFC 5080)
//! stays in progress until the reply leaves, so a retransmission meanwhile is dropped, never
//! answered early; when the reply leaves its entry is completed and later retransmissions get
//! it from the cache.

use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::dedup::{DedupCache, RequestKey};
use super::mmsg::send_batch;
use super::stats::Stats;

/// Problems of the queue (full, its thread gone) are logged at most once per this many seconds.
const LOG_INTERVAL_SECS: u64 = 10;

/// An encoded reply held until its deadline.
pub struct Delayed<R> {
    pub bytes: Vec<u8>,
    pub peer: SocketAddr,
    /// Its duplicate-cache entry: in progress until the reply leaves.
    pub key: RequestKey,
    /// The decision the cache remembers for retransmissions once the reply has left.
    pub answer: R,
}

/// Replies due at one instant on one socket (one receive batch's, or one request's).
struct Due<R> {
    at: Instant,
    socket: Arc<UdpSocket>,
    replies: Vec<Delayed<R>>,
}

// Ordered by deadline only, reversed: `BinaryHeap` is a max-heap, the earliest must be on top.
impl<R> PartialEq for Due<R> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl<R> Eq for Due<R> {}

impl<R> PartialOrd for Due<R> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<R> Ord for Due<R> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.at.cmp(&self.at)
    }
}

enum Message<R> {
    Hold(Due<R>),
    /// Send what is held at its deadline, then end.
    Finish,
}

/// What the callers and the timer thread share.
struct Shared<R> {
    dedup: Arc<DedupCache<R>>,
    stats: Arc<Stats>,
    /// Replies handed over and not yet sent (in the channel or the heap).
    waiting: AtomicUsize,
    capacity: usize,
    last_full_log: AtomicU64,
    last_gone_log: AtomicU64,
}

/// Holds Access-Rejects until their deadline (FreeRADIUS `reject_delay`; see the module
/// documentation), at most `capacity` at once.
pub struct DelayQueue<R> {
    sender: Sender<Message<R>>,
    shared: Arc<Shared<R>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<R: Clone + Send + 'static> DelayQueue<R> {
    /// Starts the timer thread. At most `capacity` replies wait at once; past that a reply is
    /// dropped (see [`Self::hold`]). Should the thread not start, replies leave at once (logged).
    pub fn new(dedup: Arc<DedupCache<R>>, stats: Arc<Stats>, capacity: usize) -> DelayQueue<R> {
        let (sender, receiver) = mpsc::channel();
        let shared = Arc::new(Shared {
            dedup,
            stats,
            waiting: AtomicUsize::new(0),
            capacity,
            last_full_log: AtomicU64::new(0),
            last_gone_log: AtomicU64::new(0),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("otpgate-delay".into())
            .spawn(move || run(&receiver, &for_thread));
        let thread = match thread {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "cannot start the reject delay thread; Rejects leave undelayed"
                );
                None
            }
        };
        DelayQueue {
            sender,
            shared,
            thread: Mutex::new(thread),
        }
    }

    /// Sends `replies` through `socket` at `at`, completing their duplicate-cache entries then.
    /// Never blocks. Replies past the capacity are dropped: their cache entries are forgotten
    /// (else they would stay in progress and every retransmission be dropped), they are counted
    /// (`dropped_delayed_rejects`) and logged at a rate limit; the NAS retransmits. Should the
    /// timer thread be gone (it ends only at [`Self::finish`]), they leave at once instead.
    pub fn hold(&self, at: Instant, socket: &Arc<UdpSocket>, mut replies: Vec<Delayed<R>>) {
        let offered = replies.len();
        let mut room = 0;
        // The closure always returns `Some`, so this cannot fail; `room` is from the last call.
        let _ = self
            .shared
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |waiting| {
                room = offered.min(self.shared.capacity.saturating_sub(waiting));
                Some(waiting + room)
            });
        if room < offered {
            self.drop_full(replies.split_off(room));
        }
        if replies.is_empty() {
            return;
        }
        let held = replies.len();
        let due = Due {
            at,
            socket: Arc::clone(socket),
            replies,
        };
        match self.sender.send(Message::Hold(due)) {
            Ok(()) => Stats::add(&self.shared.stats.delayed_rejects, held),
            Err(mpsc::SendError(message)) => {
                if due_to_log(&self.shared.last_gone_log) {
                    tracing::error!("the reject delay thread is gone; sending Rejects at once");
                }
                // `send` gives back the room taken above.
                if let Message::Hold(due) = message {
                    send(&self.shared, vec![due], Instant::now());
                }
            }
        }
    }

    /// Replies handed over and not yet sent.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// Sends every reply still held at its deadline, then ends the timer thread; returns once it
    /// has (blocking, at most the longest delay). Call it after the last [`Self::hold`]; a reply
    /// held later leaves at once.
    ///
    /// Held replies keep their deadline rather than leaving at once: no Reject ever leaves
    /// early, not even at a stop, and the wait is bounded by `reject_delay_ms` (at most 10 s,
    /// within the service unit's stop timeout).
    pub fn finish(&self) {
        // Fails only if the thread is already gone, which is what is asked for.
        let _ = self.sender.send(Message::Finish);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the reject delay thread ended abnormally");
            }
        }
    }

    fn drop_full(&self, dropped: Vec<Delayed<R>>) {
        for reply in &dropped {
            self.shared.dedup.forget(&reply.key);
        }
        Stats::add(&self.shared.stats.dropped_delayed_rejects, dropped.len());
        if due_to_log(&self.shared.last_full_log) {
            let total = self
                .shared
                .stats
                .dropped_delayed_rejects
                .load(Ordering::Relaxed);
            tracing::warn!(
                capacity = self.shared.capacity,
                dropped_total = total,
                "too many Rejects waiting for their delay; dropped some (the NAS will retransmit)"
            );
        }
    }
}

/// The timer thread: holds replies in a heap by deadline and sends each when it is due. Ends
/// once told to finish and nothing is held (or every sender is gone and nothing is held).
fn run<R: Clone>(receiver: &Receiver<Message<R>>, shared: &Shared<R>) {
    let mut heap: BinaryHeap<Due<R>> = BinaryHeap::new();
    let mut finishing = false;
    let mut connected = true;
    loop {
        send_due(&mut heap, shared);
        let next = heap.peek().map(|due| due.at);
        let received = match next {
            // Nothing held: wait for the next reply, or end if that is all.
            None if finishing || !connected => match receiver.try_recv() {
                Ok(message) => Ok(message),
                Err(_) => return,
            },
            None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) if connected => {
                receiver.recv_timeout(at.saturating_duration_since(Instant::now()))
            }
            // Nobody can send any more: sleep to the next deadline.
            Some(at) => {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                continue;
            }
        };
        match received {
            Ok(Message::Hold(due)) => heap.push(due),
            Ok(Message::Finish) => finishing = true,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => connected = false,
        }
    }
}

/// Takes every entry due by now off the heap and sends it.
fn send_due<R: Clone>(heap: &mut BinaryHeap<Due<R>>, shared: &Shared<R>) {
    let now = Instant::now();
    let mut due = Vec::new();
    while heap.peek().is_some_and(|next| next.at <= now) {
        if let Some(next) = heap.pop() {
            due.push(next);
        }
    }
    if !due.is_empty() {
        send(shared, due, now);
    }
}

/// Replies to send through one socket, with their peers.
type Datagrams = Vec<(Vec<u8>, SocketAddr)>;

/// Completes the entries' cache entries (their window runs from `now`) and sends their replies,
/// one [`send_batch`] per socket.
fn send<R: Clone>(shared: &Shared<R>, due: Vec<Due<R>>, now: Instant) {
    let mut by_socket: Vec<(Arc<UdpSocket>, Datagrams)> = Vec::new();
    for entry in due {
        let Due {
            socket, replies, ..
        } = entry;
        shared.waiting.fetch_sub(replies.len(), Ordering::Relaxed);
        let index = match by_socket.iter().position(|(s, _)| Arc::ptr_eq(s, &socket)) {
            Some(index) => index,
            None => {
                by_socket.push((socket, Vec::with_capacity(replies.len())));
                by_socket.len() - 1
            }
        };
        for reply in replies {
            shared.dedup.complete(&reply.key, reply.answer, now);
            if let Some((_, datagrams)) = by_socket.get_mut(index) {
                datagrams.push((reply.bytes, reply.peer));
            }
        }
    }
    for (socket, datagrams) in by_socket {
        let failed = send_batch(&socket, &datagrams);
        Stats::add(&shared.stats.send_errors, failed);
    }
}

/// Whether a rate-limited message may be logged now (and if so, notes that it was).
fn due_to_log(last: &AtomicU64) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let before = last.load(Ordering::Relaxed);
    now >= before.saturating_add(LOG_INTERVAL_SECS)
        && last
            .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

#[cfg(test)]
mod tests {
    //! Over real loopback sockets: nothing leaves before its deadline, replies leave in
    //! deadline order, the bound drops and forgets, and finishing sends what is held.

    use std::time::Duration;

    use super::*;
    use crate::radius::dedup::Seen;

    const WINDOW: Duration = Duration::from_secs(30);

    struct Setup {
        queue: DelayQueue<u8>,
        dedup: Arc<DedupCache<u8>>,
        stats: Arc<Stats>,
        server: Arc<UdpSocket>,
        client: UdpSocket,
    }

    fn setup(capacity: usize) -> Setup {
        let dedup = Arc::new(DedupCache::new(WINDOW, 1024));
        let stats = Arc::new(Stats::default());
        let queue = DelayQueue::new(Arc::clone(&dedup), Arc::clone(&stats), capacity);
        let server = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Setup {
            queue,
            dedup,
            stats,
            server,
            client,
        }
    }

    impl Setup {
        /// Reply `id` (one octet, `id`) to the client, registered in the cache as in progress.
        fn reply(&self, id: u8) -> Delayed<u8> {
            let peer = self.client.local_addr().expect("addr");
            let key = RequestKey::new(peer, id, [id; 16]);
            assert_eq!(self.dedup.begin(key, Instant::now()), Seen::New);
            Delayed {
                bytes: vec![id],
                peer,
                key,
                answer: id,
            }
        }

        fn key(&self, id: u8) -> RequestKey {
            RequestKey::new(self.client.local_addr().expect("addr"), id, [id; 16])
        }

        /// The next datagram's octet and when it arrived.
        fn receive(&self) -> (u8, Instant) {
            let mut buf = [0u8; 16];
            let (n, _) = self.client.recv_from(&mut buf).expect("a reply");
            assert_eq!(n, 1);
            (buf[0], Instant::now())
        }

        fn nothing_more(&self, wait: Duration) {
            self.client.set_read_timeout(Some(wait)).expect("timeout");
            let mut buf = [0u8; 16];
            assert!(self.client.recv_from(&mut buf).is_err(), "nothing more");
        }
    }

    #[test]
    fn replies_leave_at_their_deadline_in_deadline_order_and_complete_their_entries() {
        let s = setup(100);
        let start = Instant::now();
        let late = start + Duration::from_millis(300);
        let early = start + Duration::from_millis(150);
        // Held out of order: the later deadline first, two replies sharing it.
        s.queue.hold(late, &s.server, vec![s.reply(3), s.reply(4)]);
        s.queue.hold(early, &s.server, vec![s.reply(1)]);
        assert_eq!(s.queue.waiting(), 3);
        // While held, a retransmission is still in progress (dropped, never answered early).
        assert_eq!(s.dedup.begin(s.key(3), Instant::now()), Seen::InProgress);
        let (first, at) = s.receive();
        assert_eq!(first, 1);
        assert!(at >= early, "left {:?} early", early - at);
        assert_eq!(s.dedup.begin(s.key(1), Instant::now()), Seen::Answered(1));
        assert_eq!(s.dedup.begin(s.key(3), Instant::now()), Seen::InProgress);
        let (second, at2) = s.receive();
        let (third, at3) = s.receive();
        assert_eq!((second, third), (3, 4), "one batch, in order");
        assert!(at2 >= late && at3 >= late, "left early");
        assert!(at3 - start < Duration::from_secs(2), "and not much later");
        assert_eq!(s.dedup.begin(s.key(3), Instant::now()), Seen::Answered(3));
        assert_eq!(s.dedup.begin(s.key(4), Instant::now()), Seen::Answered(4));
        assert_eq!(s.queue.waiting(), 0);
        assert_eq!(s.stats.delayed_rejects.load(Ordering::Relaxed), 3);
        s.nothing_more(Duration::from_millis(100));
        s.queue.finish();
    }

    #[test]
    fn a_deadline_already_past_leaves_at_once() {
        let s = setup(100);
        let start = Instant::now();
        s.queue.hold(
            start - Duration::from_millis(10),
            &s.server,
            vec![s.reply(7)],
        );
        let (octet, at) = s.receive();
        assert_eq!(octet, 7);
        assert!(at - start < Duration::from_millis(500));
        s.queue.finish();
    }

    #[test]
    fn past_its_capacity_the_queue_drops_counts_and_forgets() {
        let s = setup(2);
        let at = Instant::now() + Duration::from_millis(300);
        s.queue.hold(at, &s.server, vec![s.reply(1)]);
        // One of these two still fits, the other is dropped.
        s.queue.hold(at, &s.server, vec![s.reply(2), s.reply(3)]);
        s.queue.hold(at, &s.server, vec![s.reply(4)]);
        assert_eq!(s.queue.waiting(), 2);
        assert_eq!(s.stats.dropped_delayed_rejects.load(Ordering::Relaxed), 2);
        assert_eq!(s.stats.delayed_rejects.load(Ordering::Relaxed), 2);
        // Forgotten: a retransmission is evaluated again rather than dropped forever.
        assert_eq!(s.dedup.begin(s.key(3), Instant::now()), Seen::New);
        assert_eq!(s.dedup.begin(s.key(4), Instant::now()), Seen::New);
        let mut got = [s.receive().0, s.receive().0];
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        s.nothing_more(Duration::from_millis(200));
        // Room again once they have left.
        assert_eq!(s.queue.waiting(), 0);
        s.client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.queue.hold(Instant::now(), &s.server, vec![s.reply(5)]);
        assert_eq!(s.receive().0, 5);
        s.queue.finish();
    }

    #[test]
    fn finish_sends_what_is_held_at_its_deadline_then_returns() {
        let s = setup(100);
        let start = Instant::now();
        let at = start + Duration::from_millis(200);
        s.queue.hold(at, &s.server, vec![s.reply(1)]);
        s.queue
            .hold(at + Duration::from_millis(50), &s.server, vec![s.reply(2)]);
        s.queue.finish();
        let finished = Instant::now();
        assert!(
            finished >= at + Duration::from_millis(50),
            "waited for them"
        );
        assert!(finished - start < Duration::from_secs(2), "and no longer");
        let (one, at1) = s.receive();
        let (two, _) = s.receive();
        assert_eq!((one, two), (1, 2));
        assert!(at1 >= at);
        assert_eq!(s.dedup.begin(s.key(2), Instant::now()), Seen::Answered(2));
        // After finishing, a reply leaves at once rather than never.
        s.queue.hold(
            Instant::now() + Duration::from_secs(60),
            &s.server,
            vec![s.reply(3)],
        );
        assert_eq!(s.receive().0, 3);
        assert_eq!(s.queue.waiting(), 0);
    }

    #[test]
    fn replies_on_different_sockets_each_leave_from_their_own() {
        let s = setup(100);
        let other = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
        let at = Instant::now() + Duration::from_millis(50);
        s.queue.hold(at, &s.server, vec![s.reply(1)]);
        s.queue.hold(at, &other, vec![s.reply(2)]);
        let mut buf = [0u8; 4];
        let mut from = Vec::new();
        for _ in 0..2 {
            let (_, sender) = s.client.recv_from(&mut buf).expect("reply");
            from.push((buf[0], sender));
        }
        from.sort_unstable();
        assert_eq!(
            from,
            [
                (1, s.server.local_addr().expect("addr")),
                (2, other.local_addr().expect("addr"))
            ]
        );
        s.queue.finish();
    }
}
