//! First-factor password hashes: parsing, verification and creation.
//!
//! New passwords are hashed with argon2id (RFC 9106) and stored as PHC strings. Hashes imported
//! from FreeRADIUS `users` files (rlm_pap `Password-With-Header` headers) and LDAP
//! (`userPassword`) are verified as they are and reported by [`PasswordHash::needs_rehash`] so the
//! caller can replace them with argon2id after the next successful login.
//!
//! | stored form (prefixes are case-insensitive)            | `scheme()`                          |
//! |--------------------------------------------------------|-------------------------------------|
//! | `$argon2id$v=19$m,t,p$salt$hash`, `{ARGON2}$argon2..`  | `argon2id` (`argon2i`, `argon2d`)   |
//! | `{SSHA}`, `{SSHA256}`, `{SSHA512}` + (digest‖salt)     | `ssha`, `ssha256`, `ssha512`        |
//! | `{SHA}`, `{SHA256}`, `{SHA512}` + digest               | `sha1`, `sha256`, `sha512`          |
//! | `$6$[rounds=N$]salt$hash`, `$5$..`, `{CRYPT}$6$..`     | `sha512-crypt`, `sha256-crypt`      |
//! | `{X-PBKDF2}HMACSHA2+256:iter:salt:dk`, HMACSHA1, +512  | `pbkdf2-sha256`, `-sha1`, `-sha512` |
//! | `$pbkdf2-sha256$rounds$salt$dk`, `$pbkdf2$`, `-sha512` | `pbkdf2-sha256`, `-sha1`, `-sha512` |
//! | `{PBKDF2-SHA256}rounds$salt$dk`, `{PBKDF2}`, `-SHA512` | `pbkdf2-sha256`, `-sha1`, `-sha512` |
//!
//! The `{SHA*}` and `{SSHA*}` bodies are base64 or hex, told apart as FreeRADIUS rlm_pap's
//! `normify` does: hex when the length is even, long enough and all hex digits. `{X-PBKDF2}` is the
//! Crypt::PBKDF2 LDAP form that rlm_pap reads: base64 fields, iterations as a big-endian u32.
//! `$pbkdf2-*$` and `{PBKDF2-*}` are passlib's and OpenLDAP pw-pbkdf2's: decimal rounds and
//! passlib's "ab64" fields (base64 with `.` for `+`, no padding). PBKDF2 is RFC 8018 section 5.2;
//! SHA-crypt is Drepper's specification as implemented by glibc crypt(3). Plaintext, MD5 (plain,
//! salted, crypt), NT and LM hashes, DES crypt and bcrypt are refused with the reason. Costs are
//! capped at parse so that a hostile import cannot make every login exhaust the box.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use argon2::password_hash::{Output, PasswordHash as Phc, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use sha_crypt::{sha256_crypt_b64, sha512_crypt_b64, Sha256Params, Sha512Params};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Highest PBKDF2 or SHA-crypt round count accepted from a stored hash.
const MAX_ROUNDS: u64 = 10_000_000;
/// Highest argon2 memory accepted, in KiB (4 GiB).
const MAX_ARGON2_MEMORY_KIB: u32 = 4 * 1024 * 1024;
/// Highest argon2 memory × iterations accepted, in KiB passes (4 passes over 4 GiB).
const MAX_ARGON2_WORK: u64 = 4 * MAX_ARGON2_MEMORY_KIB as u64;
/// Standard base64 that accepts bodies with or without `=` padding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// argon2 working memory kept for the next verification. Allocating 19 MiB per login and
/// handing it back to the OS at once (as the allocator is told to, see `main.rs`) costs page
/// faults over all of it every time: 78-81 against 107-113 argon2id logins/s on 2 cores. The
/// store holds at most as many areas as verifications ever ran at once, which the hashing pool
/// bounds (`max_concurrent_hashes`), each zeroed after use and none larger than
/// [`KEPT_ARGON2_BLOCKS`].
static ARGON2_MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());
/// Working memory beyond this many 1 KiB blocks is freed after use, not kept: the configured
/// `argon2_memory_kib` ([`keep_argon2_memory_up_to`]); the default parameters' until then.
static KEPT_ARGON2_BLOCKS: AtomicUsize = AtomicUsize::new(DEFAULT_ARGON2_MEMORY_KIB as usize);
/// The default `argon2_memory_kib` (OWASP's minimum, see [`Argon2Params::default`]).
const DEFAULT_ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// The crypt(3) alphabet of SHA-crypt salts and hashes.
const CRYPT_ALPHABET: &str = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// argon2id cost parameters (RFC 9106); from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// The OWASP Password Storage Cheat Sheet minimum: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: DEFAULT_ARGON2_MEMORY_KIB,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl Argon2Params {
    /// Checks the argon2 crate's limits and this module's parse caps; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        self.to_argon2().map(drop)
    }

    fn to_argon2(self) -> Result<Params, String> {
        let (m, t, p) = (self.memory_kib, self.iterations, self.parallelism);
        let (p_min, p_max) = (Params::MIN_P_COST, Params::MAX_P_COST);
        if !(p_min..=p_max).contains(&p) {
            return Err(format!(
                "argon2 parallelism {p} is outside {p_min}..={p_max}"
            ));
        }
        let m_min = Params::MIN_M_COST.max(8 * p);
        if !(m_min..=MAX_ARGON2_MEMORY_KIB).contains(&m) {
            return Err(format!(
                "argon2 memory_kib {m} is outside {m_min}..={MAX_ARGON2_MEMORY_KIB} \
                 (at least 8 KiB per lane, at most 4 GiB)"
            ));
        }
        let t_max = MAX_ARGON2_WORK / u64::from(m);
        if t < Params::MIN_T_COST || u64::from(t) > t_max {
            return Err(format!(
                "argon2 iterations {t} is outside 1..={t_max} at this memory"
            ));
        }
        Params::new(m, t, p, None).map_err(|e| format!("argon2 parameters rejected: {e}"))
    }
}

/// Why a stored hash could not be parsed or a new one created. Never carries hash or password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordHashError {
    /// A recognised scheme that is refused (plaintext, MD5, NT/LM hash, DES crypt, bcrypt).
    #[error("password scheme {scheme} is not accepted: {reason}")]
    Refused {
        scheme: String,
        reason: &'static str,
    },
    #[error("unknown password scheme prefix {prefix}")]
    UnknownScheme { prefix: String },
    #[error("stored password has no {{SCHEME}} or $id$ prefix (plaintext is not accepted)")]
    NoScheme,
    #[error("malformed {scheme} hash: {reason}")]
    Malformed {
        scheme: &'static str,
        reason: &'static str,
    },
    /// A cost that would let a hostile import make every login expensive.
    #[error("{scheme} {field} {value} exceeds the limit of {max}")]
    CostTooHigh {
        scheme: &'static str,
        field: &'static str,
        value: u64,
        max: u64,
    },
    #[error("invalid argon2 parameters: {0}")]
    InvalidParams(String),
    #[error("argon2id hashing failed: {0}")]
    Hashing(argon2::password_hash::Error),
}

fn malformed(scheme: &'static str, reason: &'static str) -> PasswordHashError {
    PasswordHashError::Malformed { scheme, reason }
}

fn too_high(scheme: &'static str, field: &'static str, value: u64, max: u64) -> PasswordHashError {
    PasswordHashError::CostTooHigh {
        scheme,
        field,
        value,
        max,
    }
}

fn refused(prefix: &str, reason: &'static str) -> Result<Kind, PasswordHashError> {
    Err(PasswordHashError::Refused {
        scheme: shown(prefix),
        reason,
    })
}

fn unknown(prefix: &str) -> Result<Kind, PasswordHashError> {
    Err(PasswordHashError::UnknownScheme {
        prefix: shown(prefix),
    })
}

/// A scheme prefix as it may appear in an error: short printable ASCII only.
fn shown(prefix: &str) -> String {
    let printable = prefix.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    let text = if prefix.len() <= 40 && printable {
        prefix
    } else {
        "(long or unprintable)"
    };
    text.to_owned()
}

/// A digest used by a scheme: output length, scheme names and the two constructions.
#[derive(Clone, Copy)]
struct Alg {
    len: usize,
    /// Scheme names when unsalted, salted and as the PBKDF2 PRF.
    names: (&'static str, &'static str, &'static str),
    digest: fn(&[u8], &[u8]) -> Vec<u8>,
    pbkdf2: fn(&[u8], &[u8], u32, &mut [u8]),
}

/// Hash of `password || salt`, the `{SSHA*}` construction.
fn digest<D: Digest>(password: &[u8], salt: &[u8]) -> Vec<u8> {
    D::new()
        .chain_update(password)
        .chain_update(salt)
        .finalize()
        .to_vec()
}

const SHA1: Alg = Alg {
    len: 20,
    names: ("sha1", "ssha", "pbkdf2-sha1"),
    digest: digest::<Sha1>,
    pbkdf2: pbkdf2::pbkdf2_hmac::<Sha1>,
};
const SHA256: Alg = Alg {
    len: 32,
    names: ("sha256", "ssha256", "pbkdf2-sha256"),
    digest: digest::<Sha256>,
    pbkdf2: pbkdf2::pbkdf2_hmac::<Sha256>,
};
const SHA512: Alg = Alg {
    len: 64,
    names: ("sha512", "ssha512", "pbkdf2-sha512"),
    digest: digest::<Sha512>,
    pbkdf2: pbkdf2::pbkdf2_hmac::<Sha512>,
};

#[derive(Clone)]
enum Kind {
    /// PHC string (without `{ARGON2}`), variant, version and (m, t, p).
    Argon2(String, Algorithm, Version, (u32, u32, u32)),
    /// `{SHA*}` / `{SSHA*}`: digest and salt (empty when unsalted).
    Digest(Alg, Vec<u8>, Vec<u8>),
    /// SHA-crypt: SHA-512 (else SHA-256), rounds, salt, crypt-base64 hash.
    ShaCrypt(bool, usize, String, String),
    /// PBKDF2-HMAC: digest, rounds, salt, derived key.
    Pbkdf2(Alg, u32, Vec<u8>, Vec<u8>),
}

/// Marks a stored hash as that of a temporary password (set when a token is revoked, guide
/// "Revoke OTP Hardware Token"): it proves who the user is, but no login is accepted with it
/// until the password is changed.
const TEMPORARY_MARK: &str = "!temporary!";

/// A stored password hash, parsed once (parse, don't validate).
#[derive(Clone)]
pub struct PasswordHash {
    stored: String,
    kind: Kind,
    temporary: bool,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("PasswordHash");
        debug
            .field("scheme", &self.scheme())
            .finish_non_exhaustive()
    }
}

impl PasswordHash {
    /// Recognises the formats in the module table; anything else is an error naming the prefix.
    pub fn parse(stored: &str) -> Result<PasswordHash, PasswordHashError> {
        if let Some(inner) = stored.strip_prefix(TEMPORARY_MARK) {
            let kind = PasswordHash::parse(inner)?.kind;
            return Ok(PasswordHash {
                stored: stored.to_owned(),
                kind,
                temporary: true,
            });
        }
        let kind = if let Some(rest) = stored.strip_prefix('{') {
            let (tag, body) = rest.split_once('}').ok_or(PasswordHashError::NoScheme)?;
            parse_braced(tag, body)?
        } else if stored.starts_with('$') {
            parse_dollar(stored)?
        } else {
            return Err(PasswordHashError::NoScheme);
        };
        let stored = stored.to_owned();
        Ok(PasswordHash {
            stored,
            kind,
            temporary: false,
        })
    }

    /// An argon2id hash of a temporary password (see [`TEMPORARY_MARK`]).
    pub fn new_temporary(
        password: &[u8],
        params: &Argon2Params,
    ) -> Result<Self, PasswordHashError> {
        let hash = Self::new_argon2id(password, params)?;
        Self::parse(&format!("{TEMPORARY_MARK}{}", hash.stored))
    }

    /// Whether this is the hash of a temporary password, which must be changed before a login.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// Whether the stored form `stored` is a temporary password's, without parsing it (the
    /// login path looks before it parses).
    pub fn stored_is_temporary(stored: &str) -> bool {
        stored.starts_with(TEMPORARY_MARK)
    }

    /// Creates a new argon2id hash (PHC string) with a random 16-byte salt from OsRng, in the
    /// working memory verifications keep (what the crate's `hash_password` does, without
    /// faulting in a fresh area for every re-hash).
    pub fn new_argon2id(password: &[u8], params: &Argon2Params) -> Result<Self, PasswordHashError> {
        let params = params
            .to_argon2()
            .map_err(PasswordHashError::InvalidParams)?;
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let mut salt_bytes = [0u8; 64];
        let raw_salt = salt
            .decode_b64(&mut salt_bytes)
            .map_err(PasswordHashError::Hashing)?;
        let mut output = Zeroizing::new([0u8; Params::DEFAULT_OUTPUT_LEN]);
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        hash_in_kept_memory(&argon2, password, raw_salt, &mut output[..])
            .map_err(|e| PasswordHashError::Hashing(e.into()))?;
        let phc = Phc {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: (&params).try_into().map_err(PasswordHashError::Hashing)?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&output[..]).map_err(PasswordHashError::Hashing)?),
        };
        Self::parse(&phc.to_string())
    }

    /// Constant-time verification: the argon2 crate's verifier, subtle for every other digest.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.kind {
            Kind::Argon2(phc, algorithm, version, _) => {
                verify_argon2(phc, *algorithm, *version, password)
            }
            Kind::Digest(alg, digest, salt) => Zeroizing::new((alg.digest)(password, salt))
                .ct_eq(digest)
                .into(),
            Kind::ShaCrypt(sha512, rounds, salt, hash) => {
                // crypt(3) semantics: the password is bytes, the output is compared encoded.
                let salt = salt.as_bytes();
                let computed = if *sha512 {
                    Sha512Params::new(*rounds).and_then(|p| sha512_crypt_b64(password, salt, &p))
                } else {
                    Sha256Params::new(*rounds).and_then(|p| sha256_crypt_b64(password, salt, &p))
                };
                let computed = computed.map(Zeroizing::new);
                computed.is_ok_and(|c| c.as_bytes().ct_eq(hash.as_bytes()).into())
            }
            Kind::Pbkdf2(alg, rounds, salt, hash) => {
                let mut out = Zeroizing::new(vec![0; alg.len]);
                (alg.pbkdf2)(password, salt, *rounds, &mut out);
                out.ct_eq(hash).into()
            }
        }
    }

    /// The string to store (PHC for argon2id; the original text for imported formats).
    pub fn as_stored(&self) -> &str {
        &self.stored
    }

    /// Short scheme name for logs and `user show`, e.g. "argon2id", "ssha256", "sha512-crypt".
    pub fn scheme(&self) -> &'static str {
        match &self.kind {
            Kind::Argon2(_, algorithm, ..) => algorithm.as_str(),
            Kind::Digest(alg, _, salt) if salt.is_empty() => alg.names.0,
            Kind::Digest(alg, ..) => alg.names.1,
            Kind::ShaCrypt(true, ..) => "sha512-crypt",
            Kind::ShaCrypt(false, ..) => "sha256-crypt",
            Kind::Pbkdf2(alg, ..) => alg.names.2,
        }
    }

    /// Whether verifying costs real CPU time (key stretching: argon2, PBKDF2, SHA-crypt). Such
    /// checks run on the bounded hashing pool; single salted digests run inline.
    pub fn is_costly(&self) -> bool {
        !matches!(&self.kind, Kind::Digest(..))
    }

    /// True unless this is argon2id (v=19) with exactly `params` (a temporary password's hash
    /// never: it is replaced, not re-hashed).
    pub fn needs_rehash(&self, params: &Argon2Params) -> bool {
        if self.temporary {
            return false;
        }
        let wanted = (params.memory_kib, params.iterations, params.parallelism);
        !matches!(&self.kind, Kind::Argon2(_, Algorithm::Argon2id, Version::V0x13, mtp)
            if *mtp == wanted)
    }
}

/// Runs one argon2id computation with `params` (the defaults if invalid), so that an unknown user
/// costs the same time as a known one (no user enumeration by timing).
pub fn dummy_verify(params: &Argon2Params) {
    let params = params.to_argon2().unwrap_or_default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let result = hash_in_kept_memory(&argon2, b"otpgate dummy", b"otpgate dummy salt", &mut out);
    let _ = std::hint::black_box((result, out));
}

/// Working memory of up to `memory_kib` (the configured `argon2_memory_kib`) is kept between
/// verifications; larger areas (hashes imported with more memory) are freed after use.
pub fn keep_argon2_memory_up_to(memory_kib: u32) {
    KEPT_ARGON2_BLOCKS.store(memory_kib as usize, Ordering::Relaxed);
}

/// What the argon2 crate's `verify_password` does (the stored parameters with `keyid` and
/// `data`, salt and output length; a constant-time comparison), in working memory kept between
/// verifications.
fn verify_argon2(phc: &str, algorithm: Algorithm, version: Version, password: &[u8]) -> bool {
    let Ok(hash) = Phc::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut computed = Zeroizing::new(vec![0u8; expected.len()]);
    let argon2 = Argon2::new(algorithm, version, params);
    hash_in_kept_memory(&argon2, password, salt, &mut computed).is_ok()
        && bool::from(computed.ct_eq(expected.as_bytes()))
}

/// `Argon2::hash_password_into` in working memory taken from (and given back to)
/// [`ARGON2_MEMORY`]. The memory is zeroed before it is kept: with one pass, its first blocks
/// would let whoever reads the process test password guesses without the memory-hard work.
fn hash_in_kept_memory(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    let blocks = argon2.params().block_count();
    let mut memory = kept_memory().pop().unwrap_or_default();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let result = argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks]);
    if memory.len() <= KEPT_ARGON2_BLOCKS.load(Ordering::Relaxed) {
        memory[..blocks].fill(Block::default());
        kept_memory().push(memory);
    }
    result
}

fn kept_memory() -> MutexGuard<'static, Vec<Vec<Block>>> {
    ARGON2_MEMORY.lock().unwrap_or_else(|p| p.into_inner())
}

/// `{tag}body`: the LDAP / FreeRADIUS header forms.
fn parse_braced(tag: &str, body: &str) -> Result<Kind, PasswordHashError> {
    let prefix = format!("{{{tag}}}");
    match tag.to_ascii_lowercase().as_str() {
        "argon2" => parse_argon2(body),
        "crypt" if body.starts_with('$') => parse_dollar(body),
        "crypt" => refused(&prefix, "traditional DES crypt is too weak"),
        "sha" => parse_digest(SHA1, false, body),
        "sha256" => parse_digest(SHA256, false, body),
        "sha512" => parse_digest(SHA512, false, body),
        "ssha" => parse_digest(SHA1, true, body),
        "ssha256" => parse_digest(SHA256, true, body),
        "ssha512" => parse_digest(SHA512, true, body),
        "x-pbkdf2" => parse_x_pbkdf2(body),
        "pbkdf2" | "pbkdf2-sha1" => parse_pbkdf2(SHA1, body.split('$')),
        "pbkdf2-sha256" => parse_pbkdf2(SHA256, body.split('$')),
        "pbkdf2-sha512" => parse_pbkdf2(SHA512, body.split('$')),
        "clear" | "cleartext" | "plain" => refused(&prefix, "plaintext is not a hash"),
        "md5" | "smd5" | "base64_md5" | "ns-mta-md5" => refused(&prefix, "MD5 is too weak"),
        "nt" | "nthash" | "x-nthash" | "md4" | "x- orclntv" => {
            refused(&prefix, "the NT hash is unsalted MD4, too weak")
        }
        "lm" | "x- orcllmv" => refused(&prefix, "the LM hash is broken"),
        _ => unknown(&prefix),
    }
}

/// `$id$...`: the modular crypt forms.
fn parse_dollar(stored: &str) -> Result<Kind, PasswordHashError> {
    let mut fields = stored.split('$').skip(1);
    let id = fields.next().unwrap_or_default();
    match id {
        "argon2id" | "argon2i" | "argon2d" => parse_argon2(stored),
        "6" => parse_sha_crypt(true, fields),
        "5" => parse_sha_crypt(false, fields),
        "pbkdf2" | "pbkdf2-sha1" => parse_pbkdf2(SHA1, fields),
        "pbkdf2-sha256" => parse_pbkdf2(SHA256, fields),
        "pbkdf2-sha512" => parse_pbkdf2(SHA512, fields),
        "1" | "apr1" | "md5" => refused(&format!("${id}$"), "MD5-crypt is too weak"),
        "2" | "2a" | "2b" | "2x" | "2y" => refused(&format!("${id}$"), "bcrypt is not supported"),
        _ => unknown(&format!("${id}$")),
    }
}

fn parse_argon2(phc: &str) -> Result<Kind, PasswordHashError> {
    let bad = |reason| malformed("argon2", reason);
    let hash = Phc::new(phc).map_err(|_| bad("not a valid PHC string"))?;
    let algorithm = Algorithm::try_from(hash.algorithm).map_err(|_| bad("unknown variant"))?;
    let version = hash.version.ok_or(bad("missing v= version"))?;
    let version = Version::try_from(version).map_err(|_| bad("unknown version"))?;
    let params = Params::try_from(&hash).map_err(|_| bad("invalid m/t/p parameters"))?;
    // 11 B64 characters are 8 bytes, argon2's minimum salt.
    if hash.salt.is_none_or(|s| s.as_str().len() < 11) || hash.hash.is_none() {
        return Err(bad("salt shorter than 8 bytes or hash missing"));
    }
    let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
    let max_m = MAX_ARGON2_MEMORY_KIB;
    if m > max_m {
        return Err(too_high("argon2", "memory_kib", m.into(), max_m.into()));
    }
    let max_t = MAX_ARGON2_WORK / u64::from(m);
    if u64::from(t) > max_t {
        return Err(too_high("argon2", "iterations", t.into(), max_t));
    }
    Ok(Kind::Argon2(phc.to_owned(), algorithm, version, (m, t, p)))
}

/// FreeRADIUS `normify`: hex if even, long enough and all hex digits, base64 otherwise.
fn parse_digest(alg: Alg, salted: bool, body: &str) -> Result<Kind, PasswordHashError> {
    let bad = |reason| malformed(if salted { alg.names.1 } else { alg.names.0 }, reason);
    let min = alg.len + usize::from(salted);
    let raw = match hex(body).filter(|raw| raw.len() >= min) {
        Some(raw) => raw,
        None => B64
            .decode(body)
            .map_err(|_| bad("neither hex nor base64"))?,
    };
    if raw.len() < min || (!salted && raw.len() != min) {
        return Err(bad("decoded length does not fit digest (and salt)"));
    }
    let (digest, salt) = raw.split_at_checked(alg.len).ok_or(bad("too short"))?;
    Ok(Kind::Digest(alg, digest.to_vec(), salt.to_vec()))
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let nibble = |c: &u8| char::from(*c).to_digit(16);
    let pairs = s.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let byte = |pair: &[u8]| match pair {
        [hi, lo] => Some((nibble(hi)? << 4 | nibble(lo)?) as u8),
        _ => None,
    };
    pairs.map(byte).collect()
}

/// passlib's adapted base64: `.` instead of `+`, padding omitted.
fn ab64(s: &str) -> Option<Vec<u8>> {
    B64.decode(s.replace('.', "+")).ok()
}

/// Fields after `$6$` / `$5$`: `[rounds=N, ]salt, hash`, as glibc crypt(3) writes them.
fn parse_sha_crypt<'a>(
    sha512: bool,
    fields: impl Iterator<Item = &'a str>,
) -> Result<Kind, PasswordHashError> {
    let (scheme, hash_len) = if sha512 {
        ("sha512-crypt", 86)
    } else {
        ("sha256-crypt", 43)
    };
    let bad = |reason| malformed(scheme, reason);
    let (rounds, salt, hash) = match fields.collect::<Vec<_>>().as_slice() {
        [rounds, salt, hash] => match rounds.strip_prefix("rounds=") {
            Some(n) => (parse_rounds(scheme, n)?, *salt, *hash),
            None => return Err(bad("expected rounds=N before the salt")),
        },
        [salt, hash] => (5000, *salt, *hash),
        _ => return Err(bad("expected $id$[rounds=N$]salt$hash")),
    };
    if rounds < 1000 {
        return Err(bad("rounds below 1000 are never written by crypt(3)"));
    }
    let in_alphabet = |s: &str| s.chars().all(|c| CRYPT_ALPHABET.contains(c));
    if salt.len() > 16 || !in_alphabet(salt) {
        return Err(bad("salt longer than 16 or outside [./0-9A-Za-z]"));
    }
    if hash.len() != hash_len || !in_alphabet(hash) {
        return Err(bad("hash has the wrong length or characters"));
    }
    let (salt, hash) = (salt.to_owned(), hash.to_owned());
    Ok(Kind::ShaCrypt(sha512, rounds as usize, salt, hash))
}

/// A decimal round count in 1..=MAX_ROUNDS.
fn parse_rounds(scheme: &'static str, s: &str) -> Result<u32, PasswordHashError> {
    let bad = || malformed(scheme, "rounds is not a decimal number");
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    check_rounds(scheme, s.parse().map_err(|_| bad())?)
}

fn check_rounds(scheme: &'static str, value: u64) -> Result<u32, PasswordHashError> {
    if value == 0 {
        return Err(malformed(scheme, "rounds must be at least 1"));
    }
    if value > MAX_ROUNDS {
        return Err(too_high(scheme, "rounds", value, MAX_ROUNDS));
    }
    u32::try_from(value).map_err(|_| malformed(scheme, "rounds out of range"))
}

/// passlib's `rounds$salt$dk` after `$pbkdf2-*$`, also OpenLDAP pw-pbkdf2's after `{PBKDF2-*}`.
fn parse_pbkdf2<'a>(
    alg: Alg,
    fields: impl Iterator<Item = &'a str>,
) -> Result<Kind, PasswordHashError> {
    match fields.collect::<Vec<_>>().as_slice() {
        [rounds, salt, hash] => {
            let rounds = parse_rounds(alg.names.2, rounds)?;
            pbkdf2_kind(alg, rounds, ab64(salt), ab64(hash))
        }
        _ => Err(malformed(alg.names.2, "expected rounds$salt$hash")),
    }
}

/// FreeRADIUS `{X-PBKDF2}HMACSHA2+256:<b64 u32 BE iterations>:<b64 salt>:<b64 hash>`.
fn parse_x_pbkdf2(body: &str) -> Result<Kind, PasswordHashError> {
    let fields: Vec<&str> = body.split(':').collect();
    let bad = |reason| malformed("x-pbkdf2", reason);
    let [digest, iterations, salt, hash] = fields.as_slice() else {
        return Err(bad("expected digest:iterations:salt:hash"));
    };
    let alg = match digest.to_ascii_lowercase().as_str() {
        "hmacsha1" => SHA1,
        "hmacsha2+256" => SHA256,
        "hmacsha2+512" => SHA512,
        _ => return Err(bad("digest is not HMACSHA1 or HMACSHA2+256/512")),
    };
    let iterations = match B64.decode(iterations).map(<[u8; 4]>::try_from) {
        Ok(Ok(bytes)) => u32::from_be_bytes(bytes),
        _ => return Err(bad("iterations is not base64 of 4 bytes")),
    };
    let rounds = check_rounds(alg.names.2, iterations.into())?;
    pbkdf2_kind(alg, rounds, B64.decode(salt).ok(), B64.decode(hash).ok())
}

fn pbkdf2_kind(
    alg: Alg,
    rounds: u32,
    salt: Option<Vec<u8>>,
    hash: Option<Vec<u8>>,
) -> Result<Kind, PasswordHashError> {
    let bad = |reason| malformed(alg.names.2, reason);
    let salt = salt
        .filter(|s| !s.is_empty())
        .ok_or(bad("bad or empty salt"))?;
    let hash = hash.ok_or(bad("derived key is not valid base64"))?;
    if hash.len() != alg.len {
        return Err(bad("derived key length differs from the digest's"));
    }
    Ok(Kind::Pbkdf2(alg, rounds, salt, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &[u8] = b"correct horse";
    const SMALL: Argon2Params = params(64, 1, 1);

    const fn params(memory_kib: u32, iterations: u32, parallelism: u32) -> Argon2Params {
        Argon2Params {
            memory_kib,
            iterations,
            parallelism,
        }
    }

    /// `scheme stored` per line, all for the password "correct horse", produced independently on
    /// Python 3.11: digests with hashlib (digest || salt with salt a1b2c3d4e5f60718 or "abcd", as
    /// base64 or hex); SHA-crypt with `crypt.crypt` (the two `$saltsalt$` ones also equal
    /// `openssl passwd -6/-5 -salt saltsalt`); `$pbkdf2*$` and `{PBKDF2*}` with passlib 1.7.4
    /// `.using(rounds=1000, salt=bytes.fromhex("a1b2c3d4e5f60718"))`; `{X-PBKDF2}` with
    /// hashlib.pbkdf2_hmac and base64(struct.pack(">I", 1000)); argon2 with argon2-cffi 25.1
    /// `PasswordHasher(time_cost=1, memory_cost=64, parallelism=1, type=Type.ID/I/D)`.
    const VECTORS: &str = "\
ssha {SSHA}PVLZMgHNEdSGCd5PT+tIWHSUyNuhssPU5fYHGA==
ssha {ssha}3d52d93201cd11d48609de4f4feb48587494c8dba1b2c3d4e5f60718
sha1 {SHA}L55TUjtiq8FBorTWAZ0jy6g129A=
sha1 {SHA}2f9e53523b62abc141a2b4d6019d23cba835dbd0
ssha256 {SSHA256}62RnE8i68Rku2tJcWuHTq0Iu22EYuLaYy4OAoBpRZOmhssPU5fYHGA==
ssha256 {ssha256}eb646713c8baf1192edad25c5ae1d3ab422edb6118b8b698cb8380a01a5164e9a1b2c3d4e5f60718
ssha256 {SSHA256}UrNy/3euBuD34hyY6TY9Cn9hUiac//AK97necVbNirdhYmNk
sha256 {SHA256}QQTTb42iwlQ0n4WDZ5Pr4CngyVcGOjTJHC6SAxh7VjE=
sha256 {SHA256}4104d36f8da2c254349f85836793ebe029e0c957063a34c91c2e9203187b5631
ssha512 {SSHA512}waZFL3Vg2adSXU9dizNheMzhM5tdvdhsyw3KcL0c38JszJ3p6fVEAzlk7JRYK61cSM36RF0cku/3tp1d\
    0kCS36Gyw9Tl9gcY
sha512 {SHA512}VraY3v7bWkNbY0r+MyC7rz/c2SC2xQOkRvx7endrKY1HnRumqLYXgI6wv1ec6aldZoNHvKtxSQhayTyyeZU\
    Zew==
sha512-crypt $6$saltsalt$hRM5XZ86KXEw9UOmjigeVqFgULtFB2sgpC9lXQDfMib3Zgw7mEiUvBJI2EplzfAqxL5Vvwp2s\
    cFtv/uamSo5z0
sha512-crypt {CRYPT}$6$rounds=10000$sixteencharsalts$3f3rvtc6xgUf8cUakTqwB1s7qA/IKnN8BVfrWpc0FM/\
    RcuP6lbf9A0y/bo10CEN2B1.kCDrKgucI4v83M/fZz/
sha256-crypt $5$saltsalt$myjXcpMpE2Ofk7fj9hqyNYSn6lmWG4Mqnjx.KIRRr4/
sha256-crypt {crypt}$5$rounds=2000$abc$tn7PrcfbYMM4bzkWr3qL9lYRV1Jth.gkA97OwdkPul/
pbkdf2-sha1 $pbkdf2$1000$obLD1OX2Bxg$kwKRQ4FILifKiB4agb0572At4WI
pbkdf2-sha256 $pbkdf2-sha256$1000$obLD1OX2Bxg$57Jm7InjgsY69GSKH/kmliALc4H5oZX3U1pu6d5XAK0
pbkdf2-sha512 $pbkdf2-sha512$1000$obLD1OX2Bxg$OddQDghF3Xdh1wuwn/sfBD51LF53itoBXiCdXcbtitw3yKUBo/\
    Zg5CiKpY1zgRZlhW8CU3cMo0CVGGjSN.kA/g
pbkdf2-sha1 {PBKDF2}1000$obLD1OX2Bxg$kwKRQ4FILifKiB4agb0572At4WI
pbkdf2-sha256 {PBKDF2-SHA256}1000$obLD1OX2Bxg$57Jm7InjgsY69GSKH/kmliALc4H5oZX3U1pu6d5XAK0
pbkdf2-sha512 {pbkdf2-sha512}1000$obLD1OX2Bxg$OddQDghF3Xdh1wuwn/sfBD51LF53itoBXiCdXcbtitw3yKUBo/\
    Zg5CiKpY1zgRZlhW8CU3cMo0CVGGjSN.kA/g
pbkdf2-sha1 {X-PBKDF2}HMACSHA1:AAAD6A==:obLD1OX2Bxg=:kwKRQ4FILifKiB4agb0572At4WI=
pbkdf2-sha256 {X-PBKDF2}HMACSHA2+256:AAAD6A==:obLD1OX2Bxg=:57Jm7InjgsY69GSKH/kmliALc4H5oZX3U1pu6d5\
    XAK0=
pbkdf2-sha512 {x-pbkdf2}hmacsha2+512:AAAD6A==:obLD1OX2Bxg=:OddQDghF3Xdh1wuwn/sfBD51LF53itoBXiCdXcb\
    titw3yKUBo/Zg5CiKpY1zgRZlhW8CU3cMo0CVGGjSN+kA/g==
argon2id $argon2id$v=19$m=64,t=1,p=1$SZMxamJpxGRsw2fKPy3GfA$lf/jn1jGs7q/NqqSHh1Q6QQrw9g5cBz9U2rWAq\
    souxw
argon2id {ARGON2}$argon2id$v=19$m=64,t=1,p=1$SZMxamJpxGRsw2fKPy3GfA$lf/jn1jGs7q/NqqSHh1Q6QQrw9g5c\
    Bz9U2rWAqsouxw
argon2i $argon2i$v=19$m=64,t=1,p=1$k3AGJMSLkygi9JQZ4QdnKg$PBueOG6jVDXdkeULF/X4tEBVsJHlBkOs0Pe0cOWs\
    5Kw
argon2d $argon2d$v=19$m=64,t=1,p=1$KkqMvuRFSsfw4Chx4c6+Jw$PWd/QeCnqGCHrLFhqjfsZL2ib1vYU7JGy2lo/30g\
    luk
";

    fn vectors() -> impl Iterator<Item = (&'static str, &'static str)> {
        VECTORS.lines().filter_map(|line| line.split_once(' '))
    }

    fn parse(stored: &str) -> PasswordHash {
        PasswordHash::parse(stored).unwrap_or_else(|e| panic!("{stored}: {e}"))
    }

    #[test]
    fn known_vectors_verify_rehash_and_debug() {
        assert_eq!(vectors().count(), 28);
        for (scheme, stored) in vectors() {
            let hash = parse(stored);
            assert_eq!((hash.scheme(), hash.as_stored()), (scheme, stored));
            assert!(hash.verify(PW), "{stored}");
            for wrong in [&b"correct horsf"[..], b"", b"\xff\xfe not utf-8"] {
                assert!(!hash.verify(wrong), "{stored}");
            }
            assert_eq!(hash.needs_rehash(&SMALL), scheme != "argon2id", "{stored}");
            let debug = format!("{hash:?}");
            assert_eq!(debug, format!("PasswordHash {{ scheme: {scheme:?}, .. }}"));
        }
    }

    #[test]
    fn freeradius_test_suite_vector() {
        // FreeRADIUS's rlm_pap SQL test data (user pbkdf2_sha2_256, password "password"); the
        // iterations field "AAAnEA" is unpadded base64 of 10000 as a big-endian u32.
        let hash = parse(
            "{X-PBKDF2}HMACSHA2+256:AAAnEA:a/8HbYW2HWsMthN27JI+Ew==:\
             3nPlXYOlOuDCFOfethUomHxTXkG9JCivOdvh6FDNdGw=",
        );
        assert!(hash.verify(b"password") && !hash.verify(b"Password"));
    }

    #[test]
    fn prefixes_are_case_insensitive() {
        for stored in [
            "{sSha256}62RnE8i68Rku2tJcWuHTq0Iu22EYuLaYy4OAoBpRZOmhssPU5fYHGA==",
            "{sha}L55TUjtiq8FBorTWAZ0jy6g129A=",
            "{Pbkdf2-Sha256}1000$obLD1OX2Bxg$57Jm7InjgsY69GSKH/kmliALc4H5oZX3U1pu6d5XAK0",
            "{X-PBKDF2}HmacSha1:AAAD6A==:obLD1OX2Bxg=:kwKRQ4FILifKiB4agb0572At4WI=",
            "{argon2}$argon2id$v=19$m=64,t=1,p=1$SZMxamJpxGRsw2fKPy3GfA$lf/jn1jGs7q/NqqSHh1Q6QQrw9g\
             5cBz9U2rWAqsouxw",
        ] {
            assert!(parse(stored).verify(PW), "{stored}");
        }
    }

    #[test]
    fn refused_schemes_name_the_scheme_and_why() {
        // `stored prefix reason-word`; the error must not repeat the body.
        let refused = "\
{CLEARTEXT}hunter2 {CLEARTEXT} plaintext
{clear}hunter2 {clear} plaintext
{MD5}X03MO1qnZdYdgyfeuILPmQ== {MD5} MD5
{SMD5}X03MO1qnZdYdgyfeuILPmQabcd {SMD5} MD5
$1$saltsalt$qjXMvbEw8oaL.CzflDugX/ $1$ MD5
{NT}b4b9b02e6f09a9bd760f388b67351e2b {NT} MD4
{CRYPT}ab01FAX.bQRSU {CRYPT} DES
$2b$12$abcdefghijklmnopqrstuu $2b$ bcrypt";
        for line in refused.lines() {
            let [stored, prefix, why] = line.split(' ').collect::<Vec<_>>()[..] else {
                panic!("bad table line {line}");
            };
            let err = PasswordHash::parse(stored).expect_err(stored);
            let text = err.to_string();
            assert!(matches!(err, PasswordHashError::Refused { .. }), "{text}");
            assert!(text.contains(prefix) && text.contains(why), "{text}");
            let body = stored.rsplit(['}', '$']).next().unwrap_or_default();
            assert!(!text.contains(body), "{text} leaks {body}");
        }
        let err = PasswordHash::parse("{SSHA384}c2VjcmV0c2VjcmV0").expect_err("unknown");
        assert_eq!(err.to_string(), "unknown password scheme prefix {SSHA384}");
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        // (stored, true when the prefix is unknown, false when there is none)
        for (stored, unknown) in [
            ("", false),
            ("{", false),
            ("no prefix", false),
            ("{}", true),
            ("$$", true),
            ("$y$j9T$salt$hash", true),
        ] {
            match PasswordHash::parse(stored) {
                Err(PasswordHashError::NoScheme) => assert!(!unknown, "{stored:?}"),
                Err(PasswordHashError::UnknownScheme { .. }) => assert!(unknown, "{stored:?}"),
                other => panic!("{stored:?}: {other:?}"),
            }
        }
        // One stored value per line, plus generated ones below.
        let malformed = "\
{SSHA256}
{SSHA256}!!!not base64!!!
{SSHA256}\u{e9}\u{e9}\u{e9}\u{e9}
{SHA}abc
{SHA256}QQTTb42iwlQ0n4WDZ5Pr4CngyVcGOjTJHC6SAxh7VjE=extra
{ARGON2}
{CRYPT}$6$
$6$saltsalt$short
$6$\u{e9}$\u{e9}
$6$salt$with$extra$fields
$6$rounds=abc$saltsalt$x
$5$saltsalt$myjXcpMpE2Ofk7fj9hqyNYSn6lmWG4Mqnjx.KIRRr4!
$5$saltsalt$myjXcpMpE2Ofk7fj9hqyNYSn6lmWG4Mqnjx.KIRRr4/myjXcpMpE2Ofk7fj9hqyNYSn6lmWG4Mqnjx
$pbkdf2-sha256$0$obLD1OX2Bxg$57Jm7InjgsY69GSKH/kmliALc4H5oZX3U1pu6d5XAK0
$pbkdf2-sha256$-1$obLD1OX2Bxg$57Jm7InjgsY69GSKH/kmliALc4H5oZX3U1pu6d5XAK0
$pbkdf2-sha256$1000$$57Jm7InjgsY69GSKH/kmliALc4H5oZX3U1pu6d5XAK0
$pbkdf2-sha256$1000$obLD1OX2Bxg$kwKRQ4FILifKiB4agb0572At4WI
$pbkdf2-sha256$1000$obLD1OX2Bxg
{PBKDF2-SHA256}99999999999999999999999$obLD1OX2Bxg$x
{X-PBKDF2}HMACSHA2+256:AAPo:obLD1OX2Bxg=:57Jm7InjgsY69GSKH/kmliALc4H5oZX3U1pu6d5XAK0=
{X-PBKDF2}HMACSHA2+384:AAAD6A==:obLD1OX2Bxg=:57Jm7InjgsY69GSKH/kmliALc4H5oZX3U1pu6d5XAK0=
{X-PBKDF2}HMACSHA1:AAAD6A==:obLD1OX2Bxg=
$argon2id$v=19$m=64,t=1,p=1$SZMxamJpxGRsw2fKPy3GfA
$argon2id$m=64,t=1,p=1$SZMxamJpxGRsw2fKPy3GfA$lf/jn1jGs7q/NqqSHh1Q6QQrw9g5cBz9U2rWAqsouxw
$argon2id$v=19$m=64,t=1,p=1$c2FsdA$lf/jn1jGs7q/NqqSHh1Q6QQrw9g5cBz9U2rWAqsouxw
$argon2id$v=19$m=4,t=1,p=1$SZMxamJpxGRsw2fKPy3GfA$lf/jn1jGs7q/NqqSHh1Q6QQrw9g5cBz9U2rWAqsouxw";
        let (digest, crypt) = (B64.encode([7u8; 32]), "a".repeat(86));
        let generated = [
            format!("{{SSHA256}}{digest}"), // a digest with no salt
            format!("{{SHA512}}{digest}"),  // a digest too short
            format!("$6$rounds=500$saltsalt${crypt}"),
            format!("$6$seventeencharsalt${crypt}"),
            format!("$6$saltsalt${crypt}a"),
        ];
        for stored in malformed
            .lines()
            .chain(generated.iter().map(String::as_str))
        {
            let err = PasswordHash::parse(stored).expect_err(stored);
            assert!(
                matches!(err, PasswordHashError::Malformed { .. }),
                "{stored:?}: {err}"
            );
        }
        assert!(
            parse(&format!("$6$saltsalt${crypt}")).needs_rehash(&SMALL),
            "control"
        );
    }

    #[test]
    fn truncated_or_mutated_vectors_parse_without_panic() {
        let mut parsed = 0;
        for (_, stored) in vectors() {
            for (at, _) in stored.char_indices() {
                let (head, tail) = stored.split_at(at);
                let tail = tail.chars().skip(1).collect::<String>();
                let mutants =
                    ["$", "}", ":", "=", "\u{e9}", "0"].map(|c| format!("{head}{c}{tail}"));
                for mutant in mutants.iter().map(String::as_str).chain([head]) {
                    // Parse only: verifying thousands of mutants would dominate the test time.
                    parsed += usize::from(PasswordHash::parse(mutant).is_ok());
                }
            }
        }
        assert!(parsed > 0);
    }

    #[test]
    fn hostile_costs_are_refused_at_parse() {
        let too_costly = "\
$6$rounds=999999999$saltsalt$x rounds
$pbkdf2-sha256$10000001$obLD1OX2Bxg$57Jm7InjgsY69GSKH/kmliALc4H5oZX3U1pu6d5XAK0 rounds
{X-PBKDF2}HMACSHA1:f////w==:obLD1OX2Bxg=:kwKRQ4FILifKiB4agb0572At4WI= rounds
$argon2id$v=19$m=4194305,t=1,p=1$SZMxamJpxGRsw2fKPy3GfA$lf/jn1jGs7q/NqqSHh1Q6Q memory_kib
$argon2id$v=19$m=4194304,t=5,p=1$SZMxamJpxGRsw2fKPy3GfA$lf/jn1jGs7q/NqqSHh1Q6Q iterations";
        for (stored, field) in too_costly.lines().filter_map(|line| line.split_once(' ')) {
            match PasswordHash::parse(stored) {
                Err(PasswordHashError::CostTooHigh { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{stored}: {other:?}"),
            }
        }
    }

    #[test]
    fn new_argon2id_round_trip() {
        let hash = PasswordHash::new_argon2id(PW, &SMALL).expect("hash");
        assert_eq!(hash.scheme(), "argon2id");
        assert!(hash.as_stored().starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(hash.verify(PW) && !hash.verify(b"correct horsf"));
        // The crate's own verifier agrees (the hash is built outside its `hash_password`).
        use argon2::password_hash::PasswordVerifier;
        let reference = Phc::new(hash.as_stored()).expect("phc");
        assert!(Argon2::default().verify_password(PW, &reference).is_ok());
        assert!(Argon2::default()
            .verify_password(b"correct horsf", &reference)
            .is_err());
        let again = parse(hash.as_stored());
        assert!(again.verify(PW) && !again.needs_rehash(&SMALL));
        let other = PasswordHash::new_argon2id(PW, &SMALL).expect("hash");
        assert_ne!(hash.as_stored(), other.as_stored(), "salt must be random");
        let err = PasswordHash::new_argon2id(PW, &params(64, 1, 0)).expect_err("bad params");
        assert!(matches!(err, PasswordHashError::InvalidParams(_)));
    }

    #[test]
    fn needs_rehash_unless_argon2id_with_the_same_params() {
        // argon2-cffi 25.1 PasswordHasher() with its defaults, the OWASP parameters.
        let owasp = parse(
            "$argon2id$v=19$m=19456,t=2,p=1$Odr0+n05yv+YFedICiZXyw$3pccjEF7dg+4Tzak/3rzvzG/hWUYyq+o\
             eby/Rzpv8JU",
        );
        assert!(!owasp.needs_rehash(&Argon2Params::default()));
        assert!(owasp.needs_rehash(&SMALL));
    }

    #[test]
    fn params_default_and_validate() {
        assert_eq!(Argon2Params::default(), params(19456, 2, 1));
        assert_eq!(
            (params(19456, 2, 1).validate(), SMALL.validate()),
            (Ok(()), Ok(()))
        );
        let max_m = MAX_ARGON2_MEMORY_KIB;
        for (params, field) in [
            (params(19456, 2, 0), "parallelism"),
            (params(19456 << 10, 2, 1 << 24), "parallelism"),
            (params(7, 2, 1), "memory_kib"),
            (params(64, 2, 9), "memory_kib"),
            (params(max_m + 1, 2, 1), "memory_kib"),
            (params(19456, 0, 1), "iterations"),
            (params(max_m, 5, 1), "iterations"),
        ] {
            let err = params.validate().expect_err(field);
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn dummy_verify_runs() {
        dummy_verify(&SMALL);
    }

    /// The argon2 crate's own verifier is the reference: every variant, both versions, output
    /// lengths around the default, and `keyid` / `data` fields (`data` is hashed into H0).
    #[test]
    fn argon2_verification_matches_the_crate_verifier() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        use argon2::{AssociatedData, KeyId, ParamsBuilder};
        // (keyid, data)
        let extras = [
            (None, None),
            (Some(&b"kid"[..]), None),
            (Some(b"k"), Some(&b"assoc"[..])),
        ];
        for algorithm in [Algorithm::Argon2id, Algorithm::Argon2i, Algorithm::Argon2d] {
            for version in [Version::V0x10, Version::V0x13] {
                for output in [16, 32, 33] {
                    for (keyid, data) in extras {
                        let mut builder = ParamsBuilder::new();
                        builder.m_cost(16).t_cost(1).p_cost(2).output_len(output);
                        if let Some(k) = keyid {
                            builder.keyid(KeyId::new(k).expect("keyid"));
                        }
                        if let Some(d) = data {
                            builder.data(AssociatedData::new(d).expect("data"));
                        }
                        let argon2 = Argon2::new(algorithm, version, builder.build().expect("ok"));
                        let salt = SaltString::from_b64("c2FsdHNhbHQ").expect("salt");
                        let phc = argon2.hash_password(PW, &salt).expect("hash").to_string();
                        let reference = Phc::new(&phc).expect("phc");
                        let ours = parse(&phc);
                        for password in [PW, b"correct horsf", b""] {
                            let theirs = Argon2::default()
                                .verify_password(password, &reference)
                                .is_ok();
                            assert_eq!(ours.verify(password), theirs, "{phc}");
                        }
                    }
                }
            }
        }
    }
}
