//! Time as the lifecycle rules and the login path see it. The server reads the system's
//! real-time clock ([`SystemClock`], `CLOCK_REALTIME`), so a whole process run under
//! libfaketime moves in time too; tests drive a [`ManualClock`] through months in
//! milliseconds. Everything that decides by the date (expiry, the replay window, the sweeper
//! of the lifecycle work) takes its `now` from a [`Clock`] handed to it, never from the system
//! directly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whole seconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> u64;
}

/// The system's real-time clock (0 if it is set before 1970).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock showing `unix_secs`.
    pub fn at(unix_secs: u64) -> ManualClock {
        ManualClock(AtomicU64::new(unix_secs))
    }

    /// Moves the clock forward by `by` (whole seconds).
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_the_real_time_and_a_manual_one_moves_when_told() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let now = SystemClock.now();
        assert!(now >= before && now <= before + 5);
        let clock = ManualClock::at(1_000);
        clock.advance(Duration::from_secs(60 * 86_400));
        assert_eq!(clock.now(), 1_000 + 60 * 86_400);
    }
}
