//! One-time password primitives shared by HOTP (RFC 4226) and TOTP (RFC 6238): the token's hash
//! algorithm and kind, the supported code lengths, and constant-time code comparison. The code
//! generators and verifiers live in [`hotp`] and [`totp`]; everything here is pure (no clock, no
//! I/O) and never panics.

pub mod hotp;
pub mod import;
pub mod totp;

use subtle::ConstantTimeEq;

/// HMAC hash function of a token (RFC 4226 uses SHA-1; RFC 6238 allows SHA-256/512).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// Accepts "sha1", "SHA-1", "HMAC-SHA1", "hmac-sha256", "SHA256", "sha512", ...
    /// case-insensitive; `-` and `_` separators and an `hmac` prefix are ignored.
    pub fn parse(name: &str) -> Option<Algorithm> {
        let compact: String = name
            .trim()
            .chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match compact.strip_prefix("hmac").unwrap_or(&compact) {
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// Canonical lowercase name, the same as the serde form: "sha1" | "sha256" | "sha512".
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
}

/// What moves a token's code forward: the clock (TOTP, `period` seconds per step, RFC 6238 4.1)
/// or an event counter (HOTP, RFC 4226 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Totp { period: u64 },
    Hotp,
}

/// Number of digits: only 6 and 8 are supported by the appliance (RFC 4226 5.3 allows 6..=8).
pub fn valid_digits(d: u8) -> bool {
    matches!(d, 6 | 8)
}

/// Constant-time comparison of two code strings (subtle::ConstantTimeEq); different lengths ->
/// false (the length itself is not secret).
pub fn codes_equal(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// True if `code` could be a code of `digits` digits: supported length, exactly that many bytes,
/// all ASCII digits. Verifiers reject anything else before computing a single HMAC.
pub(crate) fn well_formed(code: &str, digits: u8) -> bool {
    valid_digits(digits)
        && code.len() == usize::from(digits)
        && code.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const ALGS: [Algorithm; 3] = [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512];

    #[test]
    fn algorithm_parse_and_names() {
        for (name, alg) in [
            ("sha1", Algorithm::Sha1),
            ("SHA-1", Algorithm::Sha1),
            ("HMAC-SHA1", Algorithm::Sha1),
            ("hmac-sha256", Algorithm::Sha256),
            ("SHA256", Algorithm::Sha256),
            ("HMAC-SHA-256", Algorithm::Sha256),
            ("sha512", Algorithm::Sha512),
            ("Sha_512", Algorithm::Sha512),
        ] {
            assert_eq!(Algorithm::parse(name), Some(alg), "{name}");
            assert_eq!(Algorithm::parse(alg.as_str()), Some(alg));
        }
        for bad in ["", "md5", "sha", "sha-2", "sha384", "hmac", "sha1x"] {
            assert_eq!(Algorithm::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn serde_forms() {
        let alg = serde_json::to_string(&Algorithm::Sha256).expect("serialize");
        assert_eq!(alg, "\"sha256\"");
        // Externally tagged, so that compact binary formats (the store's postcard) work.
        let totp = serde_json::to_string(&TokenKind::Totp { period: 30 }).expect("serialize");
        assert_eq!(totp, r#"{"totp":{"period":30}}"#);
        let hotp: TokenKind = serde_json::from_str(r#""hotp""#).expect("deserialize");
        assert_eq!(hotp, TokenKind::Hotp);
        let bytes = postcard::to_stdvec(&TokenKind::Totp { period: 60 }).expect("postcard");
        let back: TokenKind = postcard::from_bytes(&bytes).expect("postcard");
        assert_eq!(back, TokenKind::Totp { period: 60 });
    }

    #[test]
    fn digits_and_comparison() {
        assert!(valid_digits(6) && valid_digits(8));
        assert!(!valid_digits(0) && !valid_digits(7) && !valid_digits(10));
        assert!(codes_equal(b"287082", b"287082"));
        assert!(!codes_equal(b"287082", b"287083"));
        assert!(!codes_equal(b"287082", b"28708"));
        assert!(!codes_equal(b"", b"0"));
        assert!(!well_formed("28708a", 6) && !well_formed("2870820", 6));
        assert!(!well_formed("1234567", 7) && well_formed("00000000", 8));
    }

    /// Runs `oathtool ARGS HEXKEY`; `None` if it cannot be started (not installed).
    fn oathtool(args: &[&str], key: &[u8]) -> Option<String> {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let out = Command::new("oathtool").args(args).arg(hex).output().ok()?;
        assert!(out.status.success(), "oathtool {args:?}: {out:?}");
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Independent generator: `oathtool` (Debian package oathtool). HOTP for SHA-256/512 is
    /// checked as TOTP with a 1 s step at time = counter, as oathtool's HOTP mode is SHA-1 only.
    #[test]
    fn cross_check_with_oathtool() {
        if oathtool(&["--version"], b"").is_none() {
            let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
            assert!(
                !ci,
                "oathtool not installed: apt-get install oathtool (required on CI)"
            );
            eprintln!("skipped: oathtool not installed (apt-get install oathtool)");
            return;
        }
        let long_key: Vec<u8> = (0u8..150).collect(); // longer than every HMAC block size
        let keys: [&[u8]; 4] = [b"12345678901234567890", b"odd-13-bytes!", &long_key, b"k"];
        let times = [
            59u64,
            1_111_111_109,
            1_234_567_890,
            2_000_000_000,
            20_000_000_000,
        ];
        let mut checked = 0;
        for (key, alg) in keys.iter().flat_map(|k| ALGS.map(|a| (*k, a))) {
            let mode = format!("--totp={}", alg.as_str());
            for (digits, d) in [(6u8, "6"), (8, "8")] {
                for counter in [0u64, 1, 9, 1000, 123_456_789] {
                    let (n, at) = (counter.to_string(), format!("@{counter}"));
                    let mut args = match alg {
                        Algorithm::Sha1 => vec!["--hotp", "-c", &n],
                        _ => vec![&mode, "-s", "1", "-N", &at],
                    };
                    args.extend(["-d", d]);
                    let ours = hotp::code(key, counter, digits, alg);
                    assert_eq!(oathtool(&args, key), Some(ours), "{args:?}");
                    checked += 1;
                }
                for (period, t) in [30u64, 60].into_iter().flat_map(|p| times.map(|t| (p, t))) {
                    let (s, at) = (period.to_string(), format!("@{t}"));
                    let args = [mode.as_str(), "-d", d, "-s", &s, "-N", &at];
                    let ours = totp::code(key, totp::step_at(t, period), digits, alg);
                    assert_eq!(oathtool(&args, key), Some(ours), "{args:?}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 4 * 3 * 2 * (5 + 2 * 5));
        // --now also takes a date string: 2009-02-13 23:31:30 UTC is Unix time 1234567890.
        let args = [
            "--totp=sha256",
            "-d",
            "8",
            "-s",
            "60",
            "-N",
            "2009-02-13 23:31:30 UTC",
        ];
        let ours = totp::code(keys[0], 1_234_567_890 / 60, 8, Algorithm::Sha256);
        assert_eq!(oathtool(&args, keys[0]), Some(ours));
    }
}
