//! Duplicate detection (RFC 5080 section 2.2.2). A retransmission, the same source address and
//! port, Identifier and Request Authenticator, within the window gets the reply that was sent
//! the first time, or nothing while the first is still being evaluated. It is never evaluated
//! again, so a retransmission can neither consume an OTP nor count as a failure.
//!
//! The cache keeps the *decision* (code and message), not the reply's octets: re-encoding it
//! for the retransmitted request, whose octets are the same, gives the same reply, and an entry
//! stays small (about 85 octets, no allocation of its own), so the cache can remember seconds
//! of a login storm.
//!
//! Only requests that passed the authenticator checks enter the cache, so a forged packet
//! cannot poison it. The cache is bounded: past `capacity` the oldest answered entries go first.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What identifies a request: source address and port, Identifier, Request Authenticator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// The source address as IPv6 (IPv4 mapped), octets only: compact and unambiguous.
    address: [u8; 16],
    port: u16,
    identifier: u8,
    authenticator: [u8; 16],
}

impl RequestKey {
    pub fn new(peer: SocketAddr, identifier: u8, authenticator: [u8; 16]) -> RequestKey {
        let address = match peer.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        RequestKey {
            address,
            port: peer.port(),
            identifier,
            authenticator,
        }
    }
}

/// What to do with a request, per the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen<R> {
    /// First time: evaluate it, then [`DedupCache::complete`] or [`DedupCache::forget`].
    New,
    /// A retransmission of a request still being evaluated: drop it.
    InProgress,
    /// A retransmission of an answered request: send this answer again.
    Answered(R),
}

/// One remembered request.
struct Slot<R> {
    key: RequestKey,
    /// Milliseconds since the cache was made: when the request was first seen, then when it
    /// was answered (the window runs from the answer).
    at: u64,
    state: SlotState<R>,
}

/// Where a remembered request stands.
enum SlotState<R> {
    /// Being evaluated.
    InProgress,
    /// Answered; the window runs from the slot's `at`.
    Answered(R),
    /// Forgotten or expired: out of the index, the slot waits to be reused.
    Gone,
}

/// A ring of slots in arrival order, and an index from key to slot. When the ring is full the next
/// request takes the oldest answered slot, so an answered entry survives `capacity` newer requests
/// (or its window, whichever ends first), and one still being evaluated is not dropped (it would be
/// evaluated twice) unless every slot is being evaluated. No per-request expiry walk; the index
/// holds slot numbers only (4 octets each) and is kept at most a quarter full, so the markers that
/// removals leave seldom force it to be cleaned.
struct Inner<R> {
    slots: Vec<Slot<R>>,
    /// The slot the next request takes.
    next: usize,
    index: HashTable<u32>,
}

pub struct DedupCache<R> {
    inner: Mutex<Inner<R>>,
    hasher: RandomState,
    epoch: Instant,
    window_ms: u64,
    capacity: usize,
}

impl<R: Clone> DedupCache<R> {
    /// A cache of at most `capacity` requests, reserved at once (the pages become resident
    /// only as slots are written).
    pub fn new(window: Duration, capacity: usize) -> DedupCache<R> {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        DedupCache {
            inner: Mutex::new(Inner {
                slots: Vec::with_capacity(capacity),
                next: 0,
                index: HashTable::with_capacity(capacity.saturating_mul(2)),
            }),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            capacity,
        }
    }

    /// Looks `key` up at `now`, registering it as in progress when new.
    pub fn begin(&self, key: RequestKey, now: Instant) -> Seen<R> {
        let now = self.millis(now);
        let hash = self.hasher.hash_one(key);
        let mut guard = self.lock();
        let Inner { slots, next, index } = &mut *guard;
        if let Ok(found) = index.find_entry(hash, |&i| slots[i as usize].key == key) {
            let slot = &mut slots[*found.get() as usize];
            match &slot.state {
                SlotState::InProgress => return Seen::InProgress,
                SlotState::Answered(answer) if now.saturating_sub(slot.at) < self.window_ms => {
                    return Seen::Answered(answer.clone())
                }
                // Expired (a slot out of the index is never found; gone all the same).
                SlotState::Answered(_) | SlotState::Gone => {
                    slot.state = SlotState::Gone;
                    found.remove();
                }
            }
        }
        // The oldest slot that is not being evaluated (in flight requests are few; if every
        // slot were, the oldest would go anyway).
        let in_progress = |i: usize| {
            slots
                .get(i)
                .is_some_and(|s| matches!(s.state, SlotState::InProgress))
        };
        let mut taken = *next;
        for step in 0..self.capacity {
            let candidate = (*next + step) % self.capacity;
            if !in_progress(candidate) {
                taken = candidate;
                break;
            }
        }
        *next = (taken + 1) % self.capacity;
        let slot = Slot {
            key,
            at: now,
            state: SlotState::InProgress,
        };
        if taken >= slots.len() {
            slots.push(slot);
        } else {
            let oldest = &slots[taken];
            if !matches!(oldest.state, SlotState::Gone) {
                let oldest_hash = self.hasher.hash_one(oldest.key);
                if let Ok(entry) = index.find_entry(oldest_hash, |&i| i as usize == taken) {
                    entry.remove();
                }
            }
            slots[taken] = slot;
        }
        let number = u32::try_from(taken).unwrap_or(u32::MAX);
        index.insert_unique(hash, number, |&i| {
            self.hasher.hash_one(slots[i as usize].key)
        });
        Seen::New
    }

    /// Records the answer sent for `key` at `now`; the window runs from here.
    pub fn complete(&self, key: &RequestKey, answer: R, now: Instant) {
        let now = self.millis(now);
        let hash = self.hasher.hash_one(key);
        let mut guard = self.lock();
        let Inner { slots, index, .. } = &mut *guard;
        if let Some(&i) = index.find(hash, |&i| slots[i as usize].key == *key) {
            let slot = &mut slots[i as usize];
            slot.state = SlotState::Answered(answer);
            slot.at = now;
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Removes `key` (the request got no reply, so a retransmission should be evaluated).
    pub fn forget(&self, key: &RequestKey) {
        let hash = self.hasher.hash_one(key);
        let mut guard = self.lock();
        let Inner { slots, index, .. } = &mut *guard;
        if let Ok(found) = index.find_entry(hash, |&i| slots[i as usize].key == *key) {
            slots[*found.get() as usize].state = SlotState::Gone;
            found.remove();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<R>> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way that
        // matters (worst case a stale entry), so recover from poisoning.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8) -> RequestKey {
        RequestKey::new("127.0.0.1:5000".parse().expect("addr"), id, [id; 16])
    }

    /// Request `id` seen for the first time at `at` and answered `answer` at once.
    fn answer(cache: &DedupCache<&'static str>, id: u8, answer: &'static str, at: Instant) {
        assert_eq!(cache.begin(key(id), at), Seen::New, "request {id} is new");
        cache.complete(&key(id), answer, at);
    }

    #[test]
    fn retransmission_gets_cached_reply() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 100);
        let t0 = Instant::now();
        assert_eq!(cache.begin(key(1), t0), Seen::New);
        assert_eq!(cache.begin(key(1), t0), Seen::InProgress);
        cache.complete(&key(1), "reply", t0);
        assert_eq!(
            cache.begin(key(1), t0 + Duration::from_secs(29)),
            Seen::Answered("reply")
        );
    }

    #[test]
    fn entries_expire_after_window() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 100);
        let t0 = Instant::now();
        answer(&cache, 1, "r", t0);
        assert_eq!(cache.begin(key(1), t0 + Duration::from_secs(31)), Seen::New);
    }

    #[test]
    fn different_authenticator_is_a_new_request() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 100);
        let t0 = Instant::now();
        let other = RequestKey::new("127.0.0.1:5000".parse().expect("addr"), 1, [9; 16]);
        assert_eq!(cache.begin(key(1), t0), Seen::New);
        assert_eq!(cache.begin(other, t0), Seen::New);
    }

    #[test]
    fn bounded_capacity_evicts_oldest_answered() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 3);
        let t0 = Instant::now();
        for id in 0..5 {
            answer(&cache, id, "answer", t0);
        }
        assert_eq!(cache.lock().index.len(), 3);
        for id in 2..5 {
            assert_eq!(
                cache.begin(key(id), t0),
                Seen::Answered("answer"),
                "{id} is kept"
            );
        }
        assert_eq!(cache.begin(key(0), t0), Seen::New, "the oldest went first");
        assert_eq!(cache.lock().index.len(), 3);
    }

    #[test]
    fn a_request_being_evaluated_is_neither_evicted_nor_expired() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 3);
        let t0 = Instant::now();
        assert_eq!(cache.begin(key(0), t0), Seen::New);
        for id in 1..10 {
            answer(&cache, id, "answer", t0);
        }
        let late = t0 + Duration::from_secs(120);
        assert_eq!(cache.begin(key(0), late), Seen::InProgress);
        // Its window runs from its answer.
        cache.complete(&key(0), "slow answer", late);
        assert_eq!(
            cache.begin(key(0), late + Duration::from_secs(29)),
            Seen::Answered("slow answer")
        );
    }

    #[test]
    fn an_entry_survives_capacity_minus_one_newer_requests() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 100);
        let t0 = Instant::now();
        answer(&cache, 0, "first answer", t0);
        for id in 1..100 {
            answer(&cache, id, "answer", t0);
        }
        assert_eq!(cache.begin(key(0), t0), Seen::Answered("first answer"));
        // An expired entry is new again; the others stay answered.
        assert_eq!(cache.begin(key(1), t0 + Duration::from_secs(31)), Seen::New);
        assert_eq!(
            cache.begin(key(99), t0 + Duration::from_secs(29)),
            Seen::Answered("answer")
        );
    }

    #[test]
    fn same_request_from_another_port_or_family_is_new() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 10);
        let t0 = Instant::now();
        let from = |peer: &str| RequestKey::new(peer.parse().expect("addr"), 1, [1; 16]);
        assert_eq!(cache.begin(from("127.0.0.1:5000"), t0), Seen::New);
        assert_eq!(cache.begin(from("127.0.0.1:5001"), t0), Seen::New);
        assert_eq!(cache.begin(from("[::1]:5000"), t0), Seen::New);
        assert_eq!(
            cache.begin(from("[::ffff:127.0.0.1]:5000"), t0),
            Seen::InProgress
        );
    }

    #[test]
    fn forget_allows_reevaluation() {
        let cache = DedupCache::<&str>::new(Duration::from_secs(30), 10);
        let t0 = Instant::now();
        assert_eq!(cache.begin(key(1), t0), Seen::New);
        cache.forget(&key(1));
        assert_eq!(cache.begin(key(1), t0), Seen::New);
    }
}
