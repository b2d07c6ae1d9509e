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

const DAY: u64 = 86_400;

/// `unix_secs` moved `years` calendar years ahead, at the same time of day (29 February to 28
/// February in a common year): a renewal's "one year from the original date of expiration".
pub fn add_years(unix_secs: u64, years: u32) -> u64 {
    let (days, time_of_day) = (unix_secs / DAY, unix_secs % DAY);
    let (year, month, day) = civil_from_days(days);
    let year = year + u64::from(years);
    let day = if month == 2 && day == 29 && !is_leap(year) {
        28
    } else {
        day
    };
    days_from_civil(year, month, day) * DAY + time_of_day
}

fn is_leap(year: u64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian; the algorithm of Howard
/// Hinnant's "chrono-Compatible Low-Level Date Algorithms", for dates from 1970 on.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = year - u64::from(month <= 2);
    let era = year / 400;
    let yoe = year % 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_year_ahead_is_the_same_calendar_day() {
        // 2019-03-25 23:59:00 UTC -> 2020-03-25 23:59:00 (over a leap day).
        assert_eq!(add_years(1_553_558_340, 1), 1_585_180_740);
        // 2024-02-29 12:00 -> 2025-02-28 12:00; -> 2028-02-29 12:00.
        assert_eq!(add_years(1_709_208_000, 1), 1_740_744_000);
        assert_eq!(add_years(1_709_208_000, 4), 1_835_438_400);
        for days in [0u64, 59, 365, 10_957, 20_000, 40_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

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
