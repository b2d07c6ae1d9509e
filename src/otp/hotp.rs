//! HOTP (RFC 4226): the HMAC-based one-time password for an event counter, its dynamic
//! truncation (5.3), look-ahead verification and two-code resynchronisation (7.4). TOTP builds on
//! [`value`] / [`code`] with the time step as counter.

use super::{codes_equal, well_formed, Algorithm};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

/// Truncated HMAC of `msg` under `key` (no allocation); `None` only if the MAC refuses the key
/// (HMAC accepts any length, so this does not happen, but a failure must mean "no match",
/// never a panic).
fn mac_truncated<M: Mac + KeyInit>(key: &[u8], msg: &[u8]) -> Option<u32> {
    let mut m = <M as KeyInit>::new_from_slice(key).ok()?;
    m.update(msg);
    truncate(&m.finalize().into_bytes())
}

/// Dynamic truncation (RFC 4226 5.3): the low nibble of the last byte selects four bytes, read
/// big-endian with the top bit masked off (a 31-bit value).
fn truncate(hs: &[u8]) -> Option<u32> {
    let offset = usize::from(hs.last()? & 0x0f);
    let bytes: [u8; 4] = hs.get(offset..offset.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes) & 0x7fff_ffff)
}

/// [`value`] that reports an HMAC failure instead of substituting a sentinel.
fn try_value(secret: &[u8], counter: u64, digits: u8, alg: Algorithm) -> Option<u32> {
    let msg = counter.to_be_bytes(); // RFC 4226 5.1: the counter is 8 bytes, big-endian
    let bin = match alg {
        Algorithm::Sha1 => mac_truncated::<Hmac<Sha1>>(secret, &msg),
        Algorithm::Sha256 => mac_truncated::<Hmac<Sha256>>(secret, &msg),
        Algorithm::Sha512 => mac_truncated::<Hmac<Sha512>>(secret, &msg),
    }?;
    // A 31-bit value is already below 10^digits when 10^digits does not fit in a u32.
    Some(match 10u32.checked_pow(u32::from(digits)) {
        Some(modulus) => bin % modulus,
        None => bin,
    })
}

fn try_code(secret: &[u8], counter: u64, digits: u8, alg: Algorithm) -> Option<String> {
    let v = try_value(secret, counter, digits, alg)?;
    Some(format!("{v:0width$}", width = usize::from(digits)))
}

/// True if `code` is the code at `counter`, compared in constant time. `code` must be
/// [`well_formed`] (exactly `digits` ASCII digits), so its value identifies it.
pub(crate) fn matches(secret: &[u8], alg: Algorithm, digits: u8, counter: u64, code: &str) -> bool {
    let Some(wanted) = code_value(code) else {
        return false;
    };
    try_value(secret, counter, digits, alg)
        .is_some_and(|v| codes_equal(&v.to_be_bytes(), &wanted.to_be_bytes()))
}

/// The decimal value of an all-digit code (at most 8 digits here, so it fits a u32).
fn code_value(code: &str) -> Option<u32> {
    code.bytes().try_fold(0u32, |acc, b| {
        b.is_ascii_digit()
            .then(|| acc.checked_mul(10)?.checked_add(u32::from(b - b'0')))
            .flatten()
    })
}

/// The truncated decimal value for `counter` (RFC 4226 5.3), modulo 10^digits. Should the HMAC
/// ever refuse the key, returns `u32::MAX`, which is outside every code range.
pub fn value(secret: &[u8], counter: u64, digits: u8, alg: Algorithm) -> u32 {
    try_value(secret, counter, digits, alg).unwrap_or(u32::MAX)
}

/// Zero-padded code string, e.g. "007231" (empty should the HMAC ever refuse the key).
pub fn code(secret: &[u8], counter: u64, digits: u8, alg: Algorithm) -> String {
    try_code(secret, counter, digits, alg).unwrap_or_default()
}

/// Look-ahead verification (RFC 4226 7.4): tries counters next_counter ..= next_counter +
/// look_ahead (saturating), comparing in constant time; returns the counter that matched. The
/// caller then stores matched + 1 as the next counter, so a used code can never match again
/// (replay guard). A code whose length != digits or that is not all ASCII digits -> None, as is
/// an unsupported `digits`. `look_ahead` is one HMAC per step: the caller bounds it.
pub fn verify(
    secret: &[u8],
    alg: Algorithm,
    digits: u8,
    next_counter: u64,
    look_ahead: u64,
    code: &str,
) -> Option<u64> {
    if !well_formed(code, digits) {
        return None;
    }
    (next_counter..=next_counter.saturating_add(look_ahead))
        .find(|&c| matches(secret, alg, digits, c, code))
}

/// Resynchronisation with two consecutive codes (RFC 4226 7.4; the guide's "Register Your Token"
/// and "Resync Token"): finds c in next_counter ..= next_counter + search_window (saturating)
/// with code1 at c and code2 at c + 1. Returns c + 1 (the counter of the last code used).
pub fn resync(
    secret: &[u8],
    alg: Algorithm,
    digits: u8,
    next_counter: u64,
    search_window: u64,
    code1: &str,
    code2: &str,
) -> Option<u64> {
    if !well_formed(code1, digits) || !well_formed(code2, digits) {
        return None;
    }
    (next_counter..=next_counter.saturating_add(search_window)).find_map(|c| {
        let next = c.checked_add(1)?;
        let hit =
            matches(secret, alg, digits, c, code1) && matches(secret, alg, digits, next, code2);
        hit.then_some(next)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"12345678901234567890";
    const SHA1: Algorithm = Algorithm::Sha1;

    #[test]
    fn rfc4226_appendix_d() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, want) in (0u64..).zip(expected) {
            assert_eq!(value(KEY, counter, 6, SHA1), want, "counter {counter}");
            assert_eq!(code(KEY, counter, 6, SHA1), format!("{want:06}"));
        }
        // Leading zeros are kept.
        assert_eq!(code(KEY, 1, 8, SHA1), "94287082");
        assert_eq!(code(KEY, 0, 0, SHA1), "0"); // degenerate, but no panic
        assert_eq!(code(KEY, 0, 10, SHA1).len(), 10);
        assert_eq!(code(b"", 0, 6, Algorithm::Sha512).len(), 6);
    }

    #[test]
    fn look_ahead_edges_and_replay() {
        let c = |n| code(KEY, n, 6, SHA1);
        assert_eq!(verify(KEY, SHA1, 6, 0, 3, &c(0)), Some(0));
        assert_eq!(verify(KEY, SHA1, 6, 0, 3, &c(3)), Some(3));
        assert_eq!(verify(KEY, SHA1, 6, 0, 3, &c(4)), None);
        assert_eq!(verify(KEY, SHA1, 6, 5, 0, &c(5)), Some(5));
        // Replay: once counter 4 was used, next_counter is 5 and its code never matches again.
        assert_eq!(verify(KEY, SHA1, 6, 5, 10, &c(4)), None);
        assert_eq!(verify(KEY, SHA1, 6, 5, 10, &c(0)), None);
    }

    #[test]
    fn malformed_codes_rejected() {
        let good = code(KEY, 1, 6, SHA1);
        assert_eq!(verify(KEY, SHA1, 6, 0, 5, &good), Some(1));
        for bad in [
            "28708",
            "2870820",
            "28708a",
            " 87082",
            "+87082",
            "",
            "２８７０８２",
        ] {
            assert_eq!(verify(KEY, SHA1, 6, 0, 5, bad), None, "{bad:?}");
        }
        // Unsupported digit counts never verify, even with a "correct" code.
        assert_eq!(verify(KEY, SHA1, 7, 1, 0, &code(KEY, 1, 7, SHA1)), None);
        assert_eq!(resync(KEY, SHA1, 6, 0, 5, &good, "x"), None);
    }

    #[test]
    fn resync_found_and_not_found() {
        let c = |n| code(KEY, n, 6, SHA1);
        assert_eq!(resync(KEY, SHA1, 6, 0, 100, &c(50), &c(51)), Some(51));
        assert_eq!(resync(KEY, SHA1, 6, 0, 100, &c(100), &c(101)), Some(101));
        assert_eq!(resync(KEY, SHA1, 6, 0, 100, &c(101), &c(102)), None);
        assert_eq!(resync(KEY, SHA1, 6, 0, 100, &c(50), &c(52)), None);
        assert_eq!(resync(KEY, SHA1, 6, 0, 100, &c(51), &c(50)), None);
        assert_eq!(resync(KEY, SHA1, 6, 20, 100, &c(10), &c(11)), None);
    }

    #[test]
    fn counter_near_u64_max() {
        let max = u64::MAX;
        let c = |n| code(KEY, n, 8, Algorithm::Sha256);
        let alg = Algorithm::Sha256;
        assert_eq!(verify(KEY, alg, 8, max - 1, 10, &c(max)), Some(max));
        assert_eq!(verify(KEY, alg, 8, max, u64::MAX, &c(max)), Some(max));
        assert_eq!(verify(KEY, alg, 8, max, 5, &c(max - 1)), None);
        assert_eq!(
            resync(KEY, alg, 8, max - 1, 10, &c(max - 1), &c(max)),
            Some(max)
        );
        assert_eq!(resync(KEY, alg, 8, max, 10, &c(max), &c(0)), None);
    }
}
