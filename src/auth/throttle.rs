//! Password-guess throttling, in memory, never touching the token: unknown users and wrong
//! passwords must not be able to lock a real token (the mass-lockout attack), and the throttle
//! itself must not become a way to lock people out (privacyIDEA issue 1227).
//!
//! An attempt is counted for its user name when it starts, before any password hash
//! ([`Throttle::admit`]), so concurrent guesses are bounded exactly as if they had come one by
//! one; a right password clears the count ([`Throttle::succeeded`]). Attempts that never prove
//! a password (unknown user, a user without a token, a wrong password) stay counted, and are
//! counted for their source and NAS as they end ([`Throttle::failed`]).
//!
//! - Per user *and source* (the source is the NAS and the end user's Calling-Station-Id):
//!   after `user_failures` counted attempts within the window, the pair goes *code first*
//!   ([`Admission::CodeFirst`]): a request's password is checked only if it carries a valid,
//!   unspent code of the user's token, a cheap check. A guesser without the token is refused
//!   without a hash, however many guesses they send; the token's holder gets through at the
//!   first try, so a stranger cannot keep a user out. A code lets [`CHECKS_PER_CODE`] password
//!   checks through at most ([`Throttle::pass_gate`]); it is not spent on the token unless the
//!   login succeeds. Random codes would now and then be valid (the look-ahead and window hold
//!   several), so after `user_failures` requests refused at the gate it turns *strict*: only
//!   the token's next expected code counts, for one password check.
//! - Per source: after `client_failures` failed attempts from one Calling-Station-Id across
//!   user names (password spraying), every request from it is code first, strict. Nobody is
//!   refused outright: a holder behind the same address (NAT) still gets in.
//! - Per NAS: every end user arrives through the same concentrator, so the NAS is never
//!   refused; crossing `client_failures` there is logged as a warning once per window.
//!
//! Requests without Calling-Station-Id share one anonymous source per NAS. Keys are keyed
//! 64-bit hashes of the names (a collision, about 2^-64 per pair, would merge two counts); a
//! successful login costs one key, two locks and an insert and a removal in a table as small as
//! the attempts in flight.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::ThrottleSettings;

/// Keys tracked per table at most; past this the oldest windows are dropped first.
const MAX_TRACKED: usize = 100_000;
/// Codes remembered per user and source in code-first mode: more than a TOTP window (3) or an
/// HOTP look-ahead (11 by default) holds valid at once.
const GATED_CODES: usize = 16;
/// Password checks one valid code lets through in code-first mode: room for the holder's typo
/// or two, while a guesser who saw one code gets no more than this for it.
pub const CHECKS_PER_CODE: u8 = 3;

/// How a request may proceed, by its user name and source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Check the password.
    Open,
    /// Check the password only once the request has shown a valid, unspent code of the user's
    /// token; with `strict`, only the token's next expected code counts, and it lets one
    /// password check through.
    CodeFirst { strict: bool },
}

struct Window {
    started: Instant,
    attempts: u32,
    /// Requests refused at the code-first gate (no valid code) in this window.
    wrong_codes: u32,
    /// Codes that let password checks through in code-first mode (keyed hashes), and how many.
    gated: Vec<(u64, u8)>,
}

/// A bounded map of windows, evicting the oldest first. Its keys are already keyed hashes, so
/// they are their own hash.
struct Table {
    windows: HashTable<(u64, Window)>,
    order: VecDeque<(Instant, u64)>,
}

impl Table {
    fn new() -> Table {
        Table {
            windows: HashTable::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, key: u64) -> Option<&Window> {
        self.windows.find(key, |(k, _)| *k == key).map(|(_, w)| w)
    }

    fn remove(&mut self, key: u64) {
        if let Ok(entry) = self.windows.find_entry(key, |(k, _)| *k == key) {
            entry.remove();
        }
    }

    fn attempts(&self, key: u64, window: Duration, now: Instant) -> u32 {
        self.get(key)
            .filter(|w| now.duration_since(w.started) < window)
            .map_or(0, |w| w.attempts)
    }

    /// The key's running window, a fresh one (no attempts yet) if none runs at `now`.
    fn ensure(&mut self, key: u64, window: Duration, now: Instant) -> &mut Window {
        let running = self
            .get(key)
            .is_some_and(|w| now.duration_since(w.started) < window);
        if !running {
            self.make_room();
            self.order.push_back((now, key));
        }
        let fresh = || Window {
            started: now,
            attempts: 0,
            wrong_codes: 0,
            gated: Vec::new(),
        };
        match self.windows.entry(key, |(k, _)| *k == key, |(k, _)| *k) {
            Entry::Occupied(entry) => {
                let (_, w) = entry.into_mut();
                if !running {
                    // It ran out: started afresh in its place.
                    *w = fresh();
                }
                w
            }
            Entry::Vacant(vacant) => &mut vacant.insert((key, fresh())).into_mut().1,
        }
    }

    /// Room for one more window: when full, the oldest running one goes. Windows cleared by a
    /// success leave their places in `order` behind: those places are dropped once they are
    /// many, never a running window.
    fn make_room(&mut self) {
        while self.windows.len() >= MAX_TRACKED {
            let Some((started, oldest)) = self.order.pop_front() else {
                break;
            };
            if self.get(oldest).is_some_and(|w| w.started == started) {
                self.remove(oldest);
            }
        }
        if self.order.len() >= 2 * MAX_TRACKED {
            let windows = &self.windows;
            self.order.retain(|(started, key)| {
                windows
                    .find(*key, |(k, _)| k == key)
                    .is_some_and(|(_, w)| w.started == *started)
            });
        }
    }

    /// Counts a failure; returns the count within the current window.
    fn bump(&mut self, key: u64, window: Duration, now: Instant) -> u32 {
        let w = self.ensure(key, window, now);
        w.attempts = w.attempts.saturating_add(1);
        w.attempts
    }

    fn clear(&mut self, key: u64) {
        self.remove(key);
    }
}

/// Who a request comes from, for throttling, with its key in the per-user table (computed
/// once, by [`Throttle::origin`]).
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    pub user: &'a str,
    pub nas: &'a str,
    pub calling_station_id: Option<&'a str>,
    user_at_source: u64,
}

pub struct Throttle {
    inner: Mutex<Tables>,
    settings: ThrottleSettings,
    hasher: RandomState,
}

struct Tables {
    /// Failed attempts per user name and source.
    users: Table,
    /// Attempts per user name and source that started and have not ended yet: counted with
    /// the failures, so concurrent attempts are bounded as if they came one by one. Small (as
    /// many as are in flight); entries older than the window are ignored, so one whose attempt
    /// never ended cannot weigh for ever.
    in_flight: HashTable<(u64, u32, Instant)>,
    sources: Table,
    nases: Table,
}

impl Tables {
    fn in_flight(&self, key: u64, window: Duration, now: Instant) -> u32 {
        self.in_flight
            .find(key, |(k, ..)| *k == key)
            .filter(|(.., since)| now.duration_since(*since) < window)
            .map_or(0, |(_, n, _)| *n)
    }

    fn start_attempt(&mut self, key: u64, window: Duration, now: Instant) {
        match self.in_flight.entry(key, |(k, ..)| *k == key, |(k, ..)| *k) {
            Entry::Occupied(mut entry) => {
                let (_, n, since) = entry.get_mut();
                if now.duration_since(*since) >= window {
                    *n = 0;
                }
                *n = n.saturating_add(1);
                *since = now;
            }
            Entry::Vacant(vacant) => {
                vacant.insert((key, 1, now));
            }
        }
    }

    fn end_attempt(&mut self, key: u64) {
        if let Ok(mut entry) = self.in_flight.find_entry(key, |(k, ..)| *k == key) {
            let (_, n, _) = entry.get_mut();
            *n = n.saturating_sub(1);
            if *n == 0 {
                entry.remove();
            }
        }
    }
}

impl Throttle {
    pub fn new(settings: &ThrottleSettings) -> Throttle {
        Throttle {
            inner: Mutex::new(Tables {
                users: Table::new(),
                in_flight: HashTable::new(),
                sources: Table::new(),
                nases: Table::new(),
            }),
            settings: settings.clone(),
            hasher: RandomState::new(),
        }
    }

    /// The origin of a request for `user` through `nas` from `calling_station_id`.
    pub fn origin<'a>(
        &self,
        user: &'a str,
        nas: &'a str,
        calling_station_id: Option<&'a str>,
    ) -> Origin<'a> {
        Origin {
            user,
            nas,
            calling_station_id,
            user_at_source: self.hasher.hash_one((user, (nas, calling_station_id))),
        }
    }

    fn source_key(&self, origin: &Origin<'_>) -> u64 {
        self.hasher
            .hash_one((origin.nas, origin.calling_station_id))
    }

    /// How a request from `origin` would be admitted now, counting nothing.
    pub fn peek(&self, origin: &Origin<'_>, now: Instant) -> Admission {
        let tables = self.lock();
        if tables.users.windows.is_empty()
            && tables.sources.windows.is_empty()
            && tables.in_flight.is_empty()
        {
            // The common case (no recent failures).
            return Admission::Open;
        }
        self.admission(&tables, origin, now)
    }

    /// Counts an attempt from `origin` for its user name as it starts, before any hash, and
    /// says how it may proceed. It must end in [`Throttle::succeeded`], [`Throttle::failed`]
    /// or [`Throttle::refused_at_gate`].
    pub fn admit(&self, origin: &Origin<'_>, now: Instant) -> Admission {
        let mut tables = self.lock();
        let admission = self.admission(&tables, origin, now);
        tables.start_attempt(origin.user_at_source, self.settings.window, now);
        admission
    }

    /// An admitted attempt that ended without a right password (wrong password, unknown user,
    /// no token): a failure of its user name at its source, of its source and of its NAS.
    pub fn failed(&self, origin: &Origin<'_>, now: Instant) {
        self.fail(origin, now, false);
    }

    /// An admitted attempt refused at the code-first gate (no valid code): a failure, and a
    /// wrong code for this user name at this source (past `user_failures` of them the gate
    /// turns strict).
    pub fn refused_at_gate(&self, origin: &Origin<'_>, now: Instant) {
        self.fail(origin, now, true);
    }

    fn fail(&self, origin: &Origin<'_>, now: Instant, wrong_code: bool) {
        let source = self.source_key(origin);
        let nas = self.hasher.hash_one(origin.nas);
        let window = self.settings.window;
        let mut tables = self.lock();
        tables.end_attempt(origin.user_at_source);
        let user = tables.users.ensure(origin.user_at_source, window, now);
        user.attempts = user.attempts.saturating_add(1);
        if wrong_code {
            user.wrong_codes = user.wrong_codes.saturating_add(1);
        }
        tables.sources.bump(source, window, now);
        if tables.nases.bump(nas, window, now) == self.settings.client_failures {
            tracing::warn!(
                nas = origin.nas,
                failures = self.settings.client_failures,
                window_secs = window.as_secs(),
                "many wrong passwords or unknown users through this NAS (password spraying?)"
            );
        }
    }

    /// Code first once the user name has `user_failures` attempts at this source, strict once
    /// it also had `user_failures` wrong codes there or the source has `client_failures`
    /// failures across names (spraying).
    fn admission(&self, tables: &Tables, origin: &Origin<'_>, now: Instant) -> Admission {
        let window = self.settings.window;
        let spraying = origin.calling_station_id.is_some()
            && !tables.sources.windows.is_empty()
            && tables
                .sources
                .attempts(self.source_key(origin), window, now)
                >= self.settings.client_failures;
        let user = tables
            .users
            .get(origin.user_at_source)
            .filter(|w| now.duration_since(w.started) < window);
        let attempts = user
            .map_or(0, |w| w.attempts)
            .saturating_add(tables.in_flight(origin.user_at_source, window, now));
        let throttled = attempts >= self.settings.user_failures;
        if !spraying && !throttled {
            return Admission::Open;
        }
        let many_wrong_codes = user.is_some_and(|w| w.wrong_codes >= self.settings.user_failures);
        Admission::CodeFirst {
            strict: spraying || many_wrong_codes,
        }
    }

    /// In code-first mode, lets `code` (already found valid for the user's token) through to a
    /// password check: false once it let [`CHECKS_PER_CODE`] through in this window (one when
    /// `strict`).
    pub fn pass_gate(&self, origin: &Origin<'_>, code: &str, strict: bool, now: Instant) -> bool {
        let key = origin.user_at_source;
        let code = self.hasher.hash_one(code);
        let most = if strict { 1 } else { CHECKS_PER_CODE };
        let mut tables = self.lock();
        let w = tables.users.ensure(key, self.settings.window, now);
        if let Some((_, checks)) = w.gated.iter_mut().find(|(c, _)| *c == code) {
            if *checks >= most {
                return false;
            }
            *checks += 1;
            return true;
        }
        if w.gated.len() == GATED_CODES {
            w.gated.remove(0);
        }
        w.gated.push((code, 1));
        true
    }

    /// An admitted attempt with a right password: clears this user's count at this source.
    pub fn succeeded(&self, origin: &Origin<'_>) {
        let mut tables = self.lock();
        tables.end_attempt(origin.user_at_source);
        if !tables.users.windows.is_empty() {
            tables.users.clear(origin.user_at_source);
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

    fn origin<'a>(t: &Throttle, user: &'a str, station: Option<&'a str>) -> Origin<'a> {
        t.origin(user, "vpn", station)
    }

    #[test]
    fn user_at_source_goes_code_first_then_window_reset() {
        let t = throttle();
        let t0 = Instant::now();
        let attacker = origin(&t, "alice", Some("203.0.113.9"));
        for _ in 0..3 {
            assert_eq!(t.admit(&attacker, t0), Admission::Open);
        }
        let lenient = Admission::CodeFirst { strict: false };
        assert_eq!(t.peek(&attacker, t0), lenient);
        assert_eq!(t.admit(&attacker, t0), lenient);
        // Wrong codes at the gate: after user_failures (3) of them only the expected code counts.
        for _ in 0..3 {
            t.refused_at_gate(&attacker, t0);
        }
        assert_eq!(t.peek(&attacker, t0), Admission::CodeFirst { strict: true });
        // The real alice, elsewhere, is not affected by the guesser.
        assert_eq!(
            t.peek(&origin(&t, "alice", Some("198.51.100.7")), t0),
            Admission::Open
        );
        assert_eq!(
            t.peek(&attacker, t0 + Duration::from_secs(61)),
            Admission::Open
        );
    }

    #[test]
    fn attempts_count_when_they_start_so_concurrent_ones_are_bounded() {
        let t = throttle();
        let t0 = Instant::now();
        let o = origin(&t, "alice", None);
        // Ten attempts started before any finished: three are let through to a hash.
        let open = (0..10)
            .filter(|_| t.admit(&o, t0) == Admission::Open)
            .count();
        assert_eq!(open, 3);
    }

    #[test]
    fn a_spraying_source_is_code_first_strict_but_the_nas_is_not() {
        let t = throttle();
        let t0 = Instant::now();
        for i in 0..5 {
            let name = format!("user{i}");
            let o = origin(&t, &name, Some("203.0.113.9"));
            assert_eq!(t.admit(&o, t0), Admission::Open);
            t.failed(&o, t0);
        }
        assert_eq!(
            t.admit(&origin(&t, "someone", Some("203.0.113.9")), t0),
            Admission::CodeFirst { strict: true }
        );
        assert_eq!(
            t.peek(&origin(&t, "someone", Some("198.51.100.7")), t0),
            Admission::Open
        );
        // Without Calling-Station-Id only the per-user limit applies.
        for i in 0..50 {
            let name = format!("x{i}");
            let o = origin(&t, &name, None);
            t.admit(&o, t0);
            t.failed(&o, t0);
        }
        assert_eq!(t.peek(&origin(&t, "carol", None), t0), Admission::Open);
    }

    #[test]
    fn success_clears_the_user_and_only_failures_count_for_the_source() {
        let t = throttle();
        let t0 = Instant::now();
        let o = origin(&t, "alice", Some("198.51.100.1"));
        for _ in 0..3 {
            t.admit(&o, t0);
        }
        t.succeeded(&o);
        assert_eq!(t.peek(&o, t0), Admission::Open);
        // 4 successes and 4 failures from one source: 4 counted, under client_failures (5).
        for i in 0..4 {
            let name = format!("ok{i}");
            let ok = origin(&t, &name, Some("198.51.100.7"));
            t.admit(&ok, t0);
            t.succeeded(&ok);
            let name = format!("bad{i}");
            let bad = origin(&t, &name, Some("198.51.100.7"));
            t.admit(&bad, t0);
            t.failed(&bad, t0);
        }
        assert_eq!(
            t.peek(&origin(&t, "next", Some("198.51.100.7")), t0),
            Admission::Open
        );
    }

    #[test]
    fn a_code_passes_the_gate_a_few_times_per_window() {
        let t = throttle();
        let t0 = Instant::now();
        let o = origin(&t, "alice", None);
        for _ in 0..4 {
            t.admit(&o, t0);
        }
        for _ in 0..CHECKS_PER_CODE {
            assert!(t.pass_gate(&o, "123456", false, t0));
        }
        assert!(!t.pass_gate(&o, "123456", false, t0));
        assert!(t.pass_gate(&o, "654321", false, t0));
        // Another user's gate is their own.
        let bob = origin(&t, "bob", None);
        for _ in 0..4 {
            t.admit(&bob, t0);
        }
        assert!(t.pass_gate(&bob, "123456", false, t0));
    }

    #[test]
    fn table_is_bounded_and_evicts_oldest() {
        let mut table = Table::new();
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        table.bump(u64::MAX, window, t0);
        for i in 0..MAX_TRACKED as u64 {
            table.bump(i, window, t0);
        }
        assert!(table.windows.len() <= MAX_TRACKED);
        assert_eq!(table.attempts(u64::MAX, window, t0), 0, "oldest evicted");
        assert_eq!(table.attempts(MAX_TRACKED as u64 - 1, window, t0), 1);
    }

    #[test]
    fn a_strict_gate_lets_one_check_through_per_code() {
        let t = throttle();
        let t0 = Instant::now();
        let o = origin(&t, "alice", None);
        t.admit(&o, t0);
        assert!(t.pass_gate(&o, "123456", true, t0));
        assert!(!t.pass_gate(&o, "123456", true, t0));
    }

    /// However many successes elsewhere, a running window is never pushed out while the table
    /// has room.
    #[test]
    fn many_successes_elsewhere_keep_a_throttled_pair_throttled() {
        let t = throttle();
        let t0 = Instant::now();
        let attacker = origin(&t, "alice", None);
        for _ in 0..3 {
            t.admit(&attacker, t0);
            t.failed(&attacker, t0);
        }
        for i in 0..(3 * MAX_TRACKED) {
            let name = format!("u{i}");
            let ok = origin(&t, &name, None);
            t.admit(&ok, t0);
            t.succeeded(&ok);
        }
        assert_eq!(
            t.peek(&attacker, t0),
            Admission::CodeFirst { strict: false }
        );
        assert!(t.lock().users.order.len() < 2 * MAX_TRACKED);
    }

    #[test]
    fn an_attempt_in_flight_counts_until_it_ends() {
        let t = throttle();
        let t0 = Instant::now();
        let o = origin(&t, "alice", None);
        for _ in 0..3 {
            t.admit(&o, t0);
        }
        assert_eq!(t.peek(&o, t0), Admission::CodeFirst { strict: false });
        // Two succeed, one fails: one failure left, under user_failures (3).
        t.succeeded(&o);
        t.succeeded(&o);
        t.failed(&o, t0);
        assert!(t.lock().in_flight.is_empty());
        t.admit(&o, t0);
        t.failed(&o, t0);
        assert_eq!(t.peek(&o, t0), Admission::Open);
    }
}
