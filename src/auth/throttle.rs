//! Wrong-password throttling, in memory, never touching the token: unknown users and wrong
//! passwords must not be able to lock a real token (the mass-lockout attack), and the throttle
//! itself must not become a way to lock people out.
//!
//! - Per user *and source*: `user_failures` wrong passwords for one user name from one source
//!   (its Calling-Station-Id, the end user's address as the NAS reports it) within the window
//!   refuse that pair unchecked until the window has passed. A guesser elsewhere does not lock
//!   the real user out of their own address.
//! - Per source: `client_failures` failures from one Calling-Station-Id across any user names
//!   (password spraying) refuse that source unchecked.
//! - Per NAS: every end user arrives through the same concentrator, so the NAS is never
//!   refused; crossing `client_failures` failures there is logged as a warning once per window.
//!
//! Requests without Calling-Station-Id share one anonymous source per NAS.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::ThrottleSettings;

/// Keys tracked per table at most; past this the oldest windows are dropped first.
const MAX_TRACKED: usize = 100_000;

struct Window {
    started: Instant,
    failures: u32,
}

/// A bounded map of failure windows, evicting the oldest first.
struct Table {
    windows: HashMap<String, Window>,
    order: VecDeque<(Instant, String)>,
}

impl Table {
    fn new() -> Table {
        Table {
            windows: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn failures(&self, key: &str, window: Duration, now: Instant) -> u32 {
        self.windows
            .get(key)
            .filter(|w| now.duration_since(w.started) < window)
            .map_or(0, |w| w.failures)
    }

    /// Counts a failure; returns the count within the current window.
    fn bump(&mut self, key: &str, window: Duration, now: Instant) -> u32 {
        if let Some(w) = self.windows.get_mut(key) {
            if now.duration_since(w.started) < window {
                w.failures = w.failures.saturating_add(1);
                return w.failures;
            }
        }
        while self.windows.len() >= MAX_TRACKED || self.order.len() >= 2 * MAX_TRACKED {
            let Some((started, oldest)) = self.order.pop_front() else {
                break;
            };
            if self
                .windows
                .get(&oldest)
                .is_some_and(|w| w.started == started)
            {
                self.windows.remove(&oldest);
            }
        }
        self.windows.insert(
            key.to_string(),
            Window {
                started: now,
                failures: 1,
            },
        );
        self.order.push_back((now, key.to_string()));
        1
    }

    fn clear(&mut self, key: &str) {
        self.windows.remove(key);
    }
}

/// Who a request comes from, for throttling.
pub struct Origin<'a> {
    pub user: &'a str,
    pub nas: &'a str,
    pub calling_station_id: Option<&'a str>,
}

impl Origin<'_> {
    fn source(&self) -> String {
        match self.calling_station_id {
            Some(id) => format!("{}\u{1f}{id}", self.nas),
            None => format!("{}\u{1f}-", self.nas),
        }
    }

    fn user_at_source(&self) -> String {
        format!("{}\u{1f}{}", self.user, self.source())
    }
}

pub struct Throttle {
    inner: Mutex<Tables>,
    settings: ThrottleSettings,
}

struct Tables {
    users: Table,
    sources: Table,
    nases: Table,
}

impl Throttle {
    pub fn new(settings: &ThrottleSettings) -> Throttle {
        Throttle {
            inner: Mutex::new(Tables {
                users: Table::new(),
                sources: Table::new(),
                nases: Table::new(),
            }),
            settings: settings.clone(),
        }
    }

    /// True when this user at this source, or this source, is to be refused unchecked.
    pub fn is_throttled(&self, origin: &Origin<'_>, now: Instant) -> bool {
        let tables = self.lock();
        if tables.users.windows.is_empty() && tables.sources.windows.is_empty() {
            // The common case (no recent failures): no key to build.
            return false;
        }
        let window = self.settings.window;
        tables.users.failures(&origin.user_at_source(), window, now) >= self.settings.user_failures
            || (origin.calling_station_id.is_some()
                && tables.sources.failures(&origin.source(), window, now)
                    >= self.settings.client_failures)
    }

    /// Counts an unknown user or a wrong password.
    pub fn record_failure(&self, origin: &Origin<'_>, now: Instant) {
        let mut tables = self.lock();
        let window = self.settings.window;
        tables.users.bump(&origin.user_at_source(), window, now);
        tables.sources.bump(&origin.source(), window, now);
        if tables.nases.bump(origin.nas, window, now) == self.settings.client_failures {
            tracing::warn!(
                nas = origin.nas,
                failures = self.settings.client_failures,
                window_secs = window.as_secs(),
                "many wrong passwords or unknown users through this NAS (password spraying?)"
            );
        }
    }

    /// A right password clears the count of this user at this source.
    pub fn record_success(&self, origin: &Origin<'_>) {
        let mut tables = self.lock();
        if !tables.users.windows.is_empty() {
            tables.users.clear(&origin.user_at_source());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // Counters only: a poisoned lock leaves nothing inconsistent that matters.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
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

    fn origin<'a>(user: &'a str, station: Option<&'a str>) -> Origin<'a> {
        Origin {
            user,
            nas: "vpn",
            calling_station_id: station,
        }
    }

    #[test]
    fn user_at_source_limit_then_window_reset() {
        let t = throttle();
        let t0 = Instant::now();
        let attacker = origin("alice", Some("203.0.113.9"));
        for _ in 0..3 {
            assert!(!t.is_throttled(&attacker, t0));
            t.record_failure(&attacker, t0);
        }
        assert!(t.is_throttled(&attacker, t0));
        // The real alice, elsewhere, is not locked out by the guesser.
        assert!(!t.is_throttled(&origin("alice", Some("198.51.100.7")), t0));
        assert!(!t.is_throttled(&attacker, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn spraying_from_one_source_is_refused_but_the_nas_is_not() {
        let t = throttle();
        let t0 = Instant::now();
        for i in 0..5 {
            t.record_failure(&origin(&format!("user{i}"), Some("203.0.113.9")), t0);
        }
        assert!(t.is_throttled(&origin("someone", Some("203.0.113.9")), t0));
        assert!(!t.is_throttled(&origin("someone", Some("198.51.100.7")), t0));
        // Without Calling-Station-Id only the per-user limit applies.
        for i in 0..50 {
            t.record_failure(&origin(&format!("x{i}"), None), t0);
        }
        assert!(!t.is_throttled(&origin("carol", None), t0));
    }

    #[test]
    fn success_clears_user() {
        let t = throttle();
        let t0 = Instant::now();
        let o = origin("alice", None);
        for _ in 0..3 {
            t.record_failure(&o, t0);
        }
        t.record_success(&o);
        assert!(!t.is_throttled(&o, t0));
    }

    #[test]
    fn table_is_bounded_and_evicts_oldest() {
        let mut table = Table::new();
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        table.bump("first", window, t0);
        for i in 0..MAX_TRACKED {
            table.bump(&format!("k{i}"), window, t0);
        }
        assert!(table.windows.len() <= MAX_TRACKED);
        assert_eq!(table.failures("first", window, t0), 0, "oldest evicted");
        assert_eq!(
            table.failures(&format!("k{}", MAX_TRACKED - 1), window, t0),
            1
        );
    }
}
