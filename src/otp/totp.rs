//! TOTP (RFC 6238, T0 = 0): the time step for a Unix time (4.2), codes as HOTP over the step
//! number (4), verification within a window around the remembered clock drift (5.2, 6), a replay
//! guard on the last accepted step, and two-code resynchronisation. The caller supplies `now`.

use super::{hotp, well_formed, Algorithm};

/// Time step number for a Unix time (RFC 6238 4.2): floor(unix_secs / period). period 0 -> 0.
pub fn step_at(unix_secs: u64, period: u64) -> u64 {
    unix_secs.checked_div(period).unwrap_or(0)
}

/// The code for time step `step` (RFC 6238 4: TOTP = HOTP(K, T)).
pub fn code(secret: &[u8], step: u64, digits: u8, alg: Algorithm) -> String {
    hotp::code(secret, step, digits, alg)
}

/// A verified code: its time step and the token's clock drift it implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpMatch {
    pub step: u64,
    /// step - current step, in steps (saturating); store it for the next verification.
    pub drift: i64,
}

impl TotpMatch {
    fn at(step: u64, current: u64) -> TotpMatch {
        let diff = i128::from(step) - i128::from(current);
        let drift = i64::try_from(diff).unwrap_or(if diff < 0 { i64::MIN } else { i64::MAX });
        TotpMatch { step, drift }
    }
}

/// `center`, then center - 1, center + 1, center - 2, ... out to `radius`, skipping steps that
/// would leave the u64 range (RFC 6238 5.2: nearest first).
fn nearest_first(center: u64, radius: u64) -> impl Iterator<Item = u64> {
    let ring = move |k: u64| {
        [center.checked_sub(k), center.checked_add(k)]
            .into_iter()
            .flatten()
    };
    std::iter::once(center).chain((1..=radius).flat_map(ring))
}

fn fresh(step: u64, last_used_step: Option<u64>) -> bool {
    last_used_step.is_none_or(|last| step > last)
}

/// Verification with a window and remembered drift (RFC 6238 5.2, 6): expected =
/// step_at(now) + drift; candidates are expected - window ..= expected + window (no underflow),
/// tried from the one nearest to expected outward; a candidate step <= last_used_step is never
/// accepted (replay guard: a code once accepted is never accepted again, also an older one).
/// Returns the matched step and the new drift (matched step - step_at(now)). Malformed codes,
/// unsupported `digits` and `period` 0 -> None.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    secret: &[u8],
    alg: Algorithm,
    digits: u8,
    period: u64,
    now_unix: u64,
    drift: i64,
    window: u64,
    last_used_step: Option<u64>,
    code: &str,
) -> Option<TotpMatch> {
    if period == 0 || !well_formed(code, digits) {
        return None;
    }
    let current = step_at(now_unix, period);
    nearest_first(current.saturating_add_signed(drift), window)
        .filter(|&s| fresh(s, last_used_step))
        .find(|&s| hotp::matches(secret, alg, digits, s, code))
        .map(|s| TotpMatch::at(s, current))
}

/// Resync with two consecutive codes (RFC 6238 6): step s within step_at(now) +/- search_window
/// such that code1 is at s and code2 at s + 1, s + 1 > last_used_step if given. Returns the match
/// for s + 1, whose drift the caller stores.
#[allow(clippy::too_many_arguments)]
pub fn resync(
    secret: &[u8],
    alg: Algorithm,
    digits: u8,
    period: u64,
    now_unix: u64,
    search_window: u64,
    last_used_step: Option<u64>,
    code1: &str,
    code2: &str,
) -> Option<TotpMatch> {
    if period == 0 || !well_formed(code1, digits) || !well_formed(code2, digits) {
        return None;
    }
    let current = step_at(now_unix, period);
    nearest_first(current, search_window).find_map(|s| {
        let next = s.checked_add(1).filter(|&n| fresh(n, last_used_step))?;
        let hit = hotp::matches(secret, alg, digits, s, code1)
            && hotp::matches(secret, alg, digits, next, code2);
        hit.then(|| TotpMatch::at(next, current))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"12345678901234567890";
    const SHA1: Algorithm = Algorithm::Sha1;
    const NOW: u64 = 30_000; // step 1000 with a 30 s period

    fn c(step: u64) -> String {
        code(KEY, step, 6, SHA1)
    }

    /// (step, drift) of a match, for compact assertions.
    fn sd(m: Option<TotpMatch>) -> Option<(u64, i64)> {
        m.map(|m| (m.step, m.drift))
    }

    fn v(drift: i64, window: u64, last: Option<u64>, code: &str) -> Option<(u64, i64)> {
        sd(verify(KEY, SHA1, 6, 30, NOW, drift, window, last, code))
    }

    #[test]
    fn rfc6238_appendix_b() {
        let seeds: [(Algorithm, &[u8]); 3] = [
            (Algorithm::Sha1, b"12345678901234567890"),
            (Algorithm::Sha256, b"12345678901234567890123456789012"),
            (
                Algorithm::Sha512,
                b"1234567890123456789012345678901234567890123456789012345678901234",
            ),
        ];
        let rows: [(u64, [&str; 3]); 6] = [
            (59, ["94287082", "46119246", "90693936"]),
            (1111111109, ["07081804", "68084774", "25091201"]),
            (1111111111, ["14050471", "67062674", "99943326"]),
            (1234567890, ["89005924", "91819424", "93441116"]),
            (2000000000, ["69279037", "90698825", "38618901"]),
            (20000000000, ["65353130", "77737706", "47863826"]),
        ];
        for (time, codes) in rows {
            for ((alg, seed), want) in seeds.iter().zip(codes) {
                let got = code(seed, step_at(time, 30), 8, *alg);
                assert_eq!(got, want, "{alg:?} @ {time}");
            }
        }
    }

    #[test]
    fn step_at_edges() {
        assert_eq!(step_at(59, 30), 1);
        assert_eq!(step_at(60, 30), 2);
        assert_eq!(step_at(12345, 0), 0);
        assert_eq!(step_at(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn window_edges() {
        assert_eq!(v(0, 2, None, &c(1000)), Some((1000, 0)));
        assert_eq!(v(0, 2, None, &c(998)), Some((998, -2)));
        assert_eq!(v(0, 2, None, &c(1002)), Some((1002, 2)));
        assert_eq!(v(0, 2, None, &c(997)), None);
        assert_eq!(v(0, 2, None, &c(1003)), None);
        assert_eq!(v(0, 0, None, &c(1001)), None);
    }

    #[test]
    fn drift_carried() {
        assert_eq!(v(5, 1, None, &c(1006)), Some((1006, 6)));
        assert_eq!(v(5, 1, None, &c(1004)), Some((1004, 4)));
        assert_eq!(v(5, 1, None, &c(1000)), None); // the undrifted step is outside the window
        assert_eq!(v(-3, 0, None, &c(997)), Some((997, -3)));
    }

    #[test]
    fn last_used_step_blocks_equal_and_older() {
        assert_eq!(v(0, 2, Some(1000), &c(1000)), None);
        assert_eq!(v(0, 2, Some(1000), &c(999)), None);
        assert_eq!(v(0, 2, Some(999), &c(1000)), Some((1000, 0)));
        assert_eq!(v(0, 2, Some(1000), &c(1001)), Some((1001, 1)));
    }

    #[test]
    fn malformed_input_rejected() {
        for bad in ["", "12345", "1234567", "12a456", "-12345"] {
            assert_eq!(v(0, 5, None, bad), None, "{bad:?}");
        }
        let eight = code(KEY, 1000, 8, SHA1);
        assert_eq!(
            sd(verify(KEY, SHA1, 8, 30, NOW, 0, 0, None, &eight)),
            Some((1000, 0))
        );
        assert_eq!(verify(KEY, SHA1, 8, 0, NOW, 0, 0, None, &eight), None); // period 0
        assert_eq!(resync(KEY, SHA1, 6, 0, NOW, 5, None, &c(0), &c(1)), None);
    }

    #[test]
    fn resync_found_and_not_found() {
        let r = |last, a, b| sd(resync(KEY, SHA1, 6, 30, NOW, 10, last, &c(a), &c(b)));
        assert_eq!(r(None, 1007, 1008), Some((1008, 8)));
        assert_eq!(r(None, 990, 991), Some((991, -9)));
        assert_eq!(r(None, 1010, 1011), Some((1011, 11)));
        assert_eq!(r(None, 989, 990), None);
        assert_eq!(r(None, 1011, 1012), None);
        assert_eq!(r(None, 1007, 1009), None);
        assert_eq!(r(Some(1008), 1007, 1008), None);
        assert_eq!(r(Some(1007), 1007, 1008), Some((1008, 8)));
    }

    #[test]
    fn u64_edges_never_panic() {
        // now near 0: the window is clipped at step 0 and negative drift saturates.
        assert_eq!(
            sd(verify(KEY, SHA1, 6, 30, 0, -3, 5, None, &c(0))),
            Some((0, 0))
        );
        assert_eq!(
            sd(verify(KEY, SHA1, 6, 30, 29, i64::MIN, 2, None, &c(2))),
            Some((2, 2))
        );
        assert_eq!(
            sd(resync(KEY, SHA1, 6, 30, 0, 3, None, &c(0), &c(1))),
            Some((1, 1))
        );
        // now at the top of the range: steps past u64::MAX are skipped.
        let (max, top, below) = (u64::MAX, c(u64::MAX), c(u64::MAX - 1));
        assert_eq!(
            sd(verify(KEY, SHA1, 6, 1, max, i64::MAX, 3, None, &top)),
            Some((max, 0))
        );
        assert_eq!(verify(KEY, SHA1, 6, 1, max, 0, 3, Some(max), &top), None);
        assert_eq!(
            sd(resync(KEY, SHA1, 6, 1, max, 3, None, &below, &top)),
            Some((max, 0))
        );
        assert_eq!(resync(KEY, SHA1, 6, 1, max, 3, None, &top, &c(0)), None);
        // Drift that does not fit in i64 saturates instead of wrapping.
        assert_eq!(TotpMatch::at(max, 0).drift, i64::MAX);
        assert_eq!(TotpMatch::at(0, max).drift, i64::MIN);
    }

    proptest::proptest! {
        /// Window arithmetic (RFC 6238 section 5.2): a code from any step within the window of
        /// the expected one verifies, reports that step and the drift to it, and never verifies
        /// again once that step is the last used one; a code outside the window never does.
        #[test]
        fn window_and_replay_guard(
            now in 3_600u64..4_000_000_000,
            offset in -3i64..=3,
            window in 0u64..=3,
            drift in -2i64..=2,
        ) {
            let seed = b"12345678901234567890";
            let period = 30;
            let current = step_at(now, period);
            let expected = current.saturating_add_signed(drift);
            let step = expected.saturating_add_signed(offset);
            let code = code(seed, step, 6, Algorithm::Sha1);
            let found = verify(seed, Algorithm::Sha1, 6, period, now, drift, window, None, &code);
            if offset.unsigned_abs() <= window {
                let m = found.ok_or_else(|| proptest::test_runner::TestCaseError::fail("missed"))?;
                // Another step in the window may share the 6-digit code by chance; then the
                // one nearest the expected step wins.
                proptest::prop_assert!(m.step.abs_diff(expected) <= offset.unsigned_abs());
                proptest::prop_assert_eq!(m.drift, m.step as i64 - current as i64);
                let again = verify(
                    seed, Algorithm::Sha1, 6, period, now, drift, window, Some(m.step), &code,
                );
                proptest::prop_assert!(again.is_none_or(|a| a.step > m.step));
            } else if let Some(m) = found {
                // Only a chance collision with another step inside the window can match.
                proptest::prop_assert!(m.step.abs_diff(expected) <= window);
            }
        }
    }
}
