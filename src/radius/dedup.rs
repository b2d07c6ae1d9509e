//! Duplicate detection (RFC 5080 section 2.2.2). A retransmission, the same source address and
//! port, Identifier and Request Authenticator, within the window gets the reply that was sent
//! the first time, or nothing while the first is still being evaluated. It is never evaluated
//! again, so a retransmission can neither consume an OTP nor count as a failure.
//!
//! Only requests that passed the authenticator checks enter the cache, so a forged packet
//! cannot poison it. The cache is bounded: past `capacity` the oldest entry goes first.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub peer: SocketAddr,
    pub identifier: u8,
    pub authenticator: [u8; 16],
}

/// What to do with a request, per the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// First time: evaluate it, then [`DedupCache::complete`] or [`DedupCache::forget`].
    New,
    /// A retransmission of a request still being evaluated: drop it.
    InProgress,
    /// A retransmission of an answered request: resend this reply.
    Answered(Arc<[u8]>),
}

enum Entry {
    InProgress,
    Answered(Arc<[u8]>),
}

struct Inner {
    entries: HashMap<RequestKey, (Instant, Entry)>,
    /// Insertion order, for expiry and eviction.
    order: VecDeque<(Instant, RequestKey)>,
}

pub struct DedupCache {
    inner: Mutex<Inner>,
    window: Duration,
    capacity: usize,
}

impl DedupCache {
    pub fn new(window: Duration, capacity: usize) -> DedupCache {
        DedupCache {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
            window,
            capacity: capacity.max(1),
        }
    }

    /// Looks `key` up at `now`, registering it as in progress when new.
    pub fn begin(&self, key: RequestKey, now: Instant) -> Seen {
        let mut inner = self.lock();
        inner.expire(now, self.window);
        if let Some((_, entry)) = inner.entries.get(&key) {
            return match entry {
                Entry::InProgress => Seen::InProgress,
                Entry::Answered(reply) => Seen::Answered(Arc::clone(reply)),
            };
        }
        while inner.entries.len() >= self.capacity {
            let Some((at, oldest)) = inner.order.pop_front() else {
                break;
            };
            // Only the entry this slot was queued for; a later reinsertion has its own slot.
            if inner.entries.get(&oldest).is_some_and(|(t, _)| *t == at) {
                inner.entries.remove(&oldest);
            }
        }
        inner.entries.insert(key, (now, Entry::InProgress));
        inner.order.push_back((now, key));
        Seen::New
    }

    /// Records the reply sent for `key`.
    pub fn complete(&self, key: &RequestKey, reply: Arc<[u8]>) {
        if let Some((_, entry)) = self.lock().entries.get_mut(key) {
            *entry = Entry::Answered(reply);
        }
    }

    /// Removes `key` (the request got no reply, so a retransmission should be evaluated).
    pub fn forget(&self, key: &RequestKey) {
        self.lock().entries.remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way that
        // matters (worst case a stale entry), so recover from poisoning.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(at, key)) = self.order.front() {
            if now.duration_since(at) < window {
                break;
            }
            self.order.pop_front();
            // Only remove the entry this order slot refers to (not a newer reinsertion).
            if self.entries.get(&key).is_some_and(|(t, _)| *t == at) {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8) -> RequestKey {
        RequestKey {
            peer: "127.0.0.1:5000".parse().expect("addr"),
            identifier: id,
            authenticator: [id; 16],
        }
    }

    #[test]
    fn retransmission_gets_cached_reply() {
        let cache = DedupCache::new(Duration::from_secs(30), 100);
        let t0 = Instant::now();
        assert_eq!(cache.begin(key(1), t0), Seen::New);
        assert_eq!(cache.begin(key(1), t0), Seen::InProgress);
        let reply: Arc<[u8]> = Arc::from(&b"reply"[..]);
        cache.complete(&key(1), Arc::clone(&reply));
        assert_eq!(
            cache.begin(key(1), t0 + Duration::from_secs(29)),
            Seen::Answered(reply)
        );
    }

    #[test]
    fn entries_expire_after_window() {
        let cache = DedupCache::new(Duration::from_secs(30), 100);
        let t0 = Instant::now();
        assert_eq!(cache.begin(key(1), t0), Seen::New);
        cache.complete(&key(1), Arc::from(&b"r"[..]));
        assert_eq!(cache.begin(key(1), t0 + Duration::from_secs(31)), Seen::New);
    }

    #[test]
    fn different_authenticator_is_a_new_request() {
        let cache = DedupCache::new(Duration::from_secs(30), 100);
        let t0 = Instant::now();
        let mut other = key(1);
        other.authenticator = [9; 16];
        assert_eq!(cache.begin(key(1), t0), Seen::New);
        assert_eq!(cache.begin(other, t0), Seen::New);
    }

    #[test]
    fn bounded_capacity_evicts_oldest() {
        let cache = DedupCache::new(Duration::from_secs(30), 2);
        let t0 = Instant::now();
        for id in 0..5 {
            assert_eq!(cache.begin(key(id), t0), Seen::New);
        }
        assert_eq!(cache.lock().entries.len(), 2);
        assert_eq!(cache.begin(key(4), t0), Seen::InProgress);
    }

    #[test]
    fn forget_allows_reevaluation() {
        let cache = DedupCache::new(Duration::from_secs(30), 10);
        let t0 = Instant::now();
        assert_eq!(cache.begin(key(1), t0), Seen::New);
        cache.forget(&key(1));
        assert_eq!(cache.begin(key(1), t0), Seen::New);
    }
}
