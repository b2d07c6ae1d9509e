//! Wrong-password throttling per user name and per client, kept in memory and never touching
//! the token: unknown users and wrong passwords must not be able to lock a real token (the
//! mass-lockout attack), yet password guessing has to be slowed. A key over its limit within
//! the window is refused without a check until the window has passed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::ThrottleSettings;

/// Distinct user names tracked at most; past this the oldest windows are dropped.
const MAX_TRACKED_USERS: usize = 100_000;

struct Window {
    started: Instant,
    failures: u32,
}

pub struct Throttle {
    users: Mutex<HashMap<String, Window>>,
    clients: Mutex<HashMap<String, Window>>,
    user_limit: u32,
    client_limit: u32,
    window: Duration,
}

impl Throttle {
    pub fn new(settings: &ThrottleSettings) -> Throttle {
        Throttle {
            users: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            user_limit: settings.user_failures,
            client_limit: settings.client_failures,
            window: settings.window,
        }
    }

    /// True when requests for `user` or from `client` are to be refused unchecked.
    pub fn is_throttled(&self, user: &str, client: &str, now: Instant) -> bool {
        over(&self.users, user, self.user_limit, self.window, now)
            || over(&self.clients, client, self.client_limit, self.window, now)
    }

    /// Counts an unknown user or a wrong password.
    pub fn record_failure(&self, user: &str, client: &str, now: Instant) {
        bump(&self.users, user, self.window, now, MAX_TRACKED_USERS);
        bump(&self.clients, client, self.window, now, MAX_TRACKED_USERS);
    }

    /// A right password clears the user's count.
    pub fn record_success(&self, user: &str) {
        lock(&self.users).remove(user);
    }
}

fn lock(
    map: &Mutex<HashMap<String, Window>>,
) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
    map.lock().unwrap_or_else(|p| p.into_inner())
}

fn over(
    map: &Mutex<HashMap<String, Window>>,
    key: &str,
    limit: u32,
    window: Duration,
    now: Instant,
) -> bool {
    lock(map)
        .get(key)
        .is_some_and(|w| now.duration_since(w.started) < window && w.failures >= limit)
}

fn bump(
    map: &Mutex<HashMap<String, Window>>,
    key: &str,
    window: Duration,
    now: Instant,
    cap: usize,
) {
    let mut map = lock(map);
    if map.len() >= cap && !map.contains_key(key) {
        map.retain(|_, w| now.duration_since(w.started) < window);
        if map.len() >= cap {
            // Still full of live windows: forget them rather than grow without bound.
            map.clear();
        }
    }
    let entry = map.entry(key.to_string()).or_insert(Window {
        started: now,
        failures: 0,
    });
    if now.duration_since(entry.started) >= window {
        entry.started = now;
        entry.failures = 0;
    }
    entry.failures = entry.failures.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(&ThrottleSettings {
            user_failures: 3,
            client_failures: 5,
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn user_limit_then_window_reset() {
        let t = throttle();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(!t.is_throttled("alice", "vpn", t0));
            t.record_failure("alice", "vpn", t0);
        }
        assert!(t.is_throttled("alice", "vpn", t0));
        assert!(!t.is_throttled("bob", "vpn2", t0));
        assert!(!t.is_throttled("alice", "vpn", t0 + Duration::from_secs(61)));
    }

    #[test]
    fn client_limit_covers_many_users() {
        let t = throttle();
        let t0 = Instant::now();
        for i in 0..5 {
            t.record_failure(&format!("user{i}"), "vpn", t0);
        }
        assert!(t.is_throttled("someone-new", "vpn", t0));
        assert!(!t.is_throttled("someone-new", "other", t0));
    }

    #[test]
    fn success_clears_user() {
        let t = throttle();
        let t0 = Instant::now();
        for _ in 0..3 {
            t.record_failure("alice", "vpn", t0);
        }
        t.record_success("alice");
        assert!(!t.is_throttled("alice", "other", t0));
    }
}
