//! Reading token seed files shipped with hardware OATH tokens, before anything is stored.
//!
//! Owns the two import formats and their validation; storing the result is the caller's job.
//!
//! * CSV: header `serial,secret,kind,digits,step[,owner]` plus an optional `algorithm` column,
//!   columns found by header name. `secret` is base32 (RFC 4648 section 6; padding optional,
//!   case-insensitive, spaces ignored); `step` is the TOTP period or the HOTP start counter.
//! * PSKC (RFC 6030): `KeyContainer` / `KeyPackage` / `Key` (section 4, 4.1) in the PSKC
//!   namespace (or none), base64 values (section 4.2), `DeviceInfo/SerialNo` and
//!   `AlgorithmParameters` (sections 4.3.1, 4.3.4), HOTP/TOTP keys with plain or encrypted
//!   secrets: AES-CBC, 3DES-CBC or AES key wrap (RFC 3394) under a pre-shared key (section
//!   6.1) or under a key derived from a password with PBKDF2 (section 6.2, HMAC-SHA1/256/512
//!   PRF), with `ValueMAC` (HMAC-SHA1/256/512) checked against `MACMethod` (section 6.1.1). A
//!   missing `ResponseFormat` means 6 digits (RFC 4226 section 5.3, with a warning). Keys that
//!   are not HOTP/TOTP (PIN, OCRA, vendor algorithms) are skipped and reported, never
//!   imported. Asymmetric key protection (section 6.3), keys derived from a server master key
//!   (`KeyReference`, Figure 4), other ciphers (Camellia, AES key wrap with padding) and
//!   non-zero T0 are refused. An XML `Signature` is not verified (a warning says so).
//!
//! Serials of PSKC tokens: `DeviceInfo/SerialNo`, or the `Key@Id` when there is no SerialNo.
//! When one device (one SerialNo) carries several HOTP/TOTP keys (RFC 6030 Figure 10), each
//! of them becomes its own token named `SERIAL-KEYID` (e.g. `9999999-3` and `9999999-4`),
//! whatever their order; a device with a single HOTP/TOTP key keeps its bare serial. The
//! resulting serial must still be 1 to 64 characters from `[A-Za-z0-9._-]`, and unique.
//!
//! Both parsers read the whole file and return either every token or the first error; errors
//! name the CSV line and column, or the PSKC KeyPackage and element, and never a secret. A
//! file out of which no token comes is an error too, naming what was found instead.

use std::collections::HashMap;
use std::fmt;

use aes::{Aes128, Aes192, Aes256};
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use cbc::cipher::consts::U16;
use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use cbc::cipher::{Block, BlockDecrypt, BlockSizeUser, KeyInit};
use des::TdesEde3;
use hmac::{Hmac, Mac};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{valid_digits, Algorithm, TokenKind};

/// One token read from a seed file, not yet stored. Debug must NOT print the secret.
pub struct ImportedToken {
    pub serial: String,
    pub secret: Zeroizing<Vec<u8>>,
    pub algorithm: Algorithm,
    pub digits: u8,
    pub kind: TokenKind,
    /// HOTP start counter (0 for TOTP).
    pub counter: u64,
    /// Set when the file names the user the token already belongs to (migration of tokens in use).
    pub owner: Option<String>,
}

impl fmt::Debug for ImportedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedToken")
            .field("serial", &self.serial)
            .field(
                "secret",
                &format_args!("<{} bytes redacted>", self.secret.len()),
            )
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("kind", &self.kind)
            .field("counter", &self.counter)
            .field("owner", &self.owner)
            .finish()
    }
}

/// How a PSKC file's keys are opened: the pre-shared key itself (RFC 6030 section 6.1), or the
/// password a key is derived from (section 6.2). Debug never shows either.
#[derive(Clone, Copy, Default)]
pub struct PskcKeys<'a> {
    pub pre_shared_key: Option<&'a [u8]>,
    pub password: Option<&'a [u8]>,
}

impl fmt::Debug for PskcKeys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let given = |k: Option<&[u8]>| if k.is_some() { "<redacted>" } else { "none" };
        f.debug_struct("PskcKeys")
            .field("pre_shared_key", &given(self.pre_shared_key))
            .field("password", &given(self.password))
            .finish()
    }
}

/// What an import found: the tokens, and what it did not take.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub tokens: Vec<ImportedToken>,
    /// Keys left out because they are not HOTP/TOTP (PIN, OCRA, vendor algorithms...).
    pub skipped: Vec<SkippedKey>,
    /// Things the operator should know, each naming its KeyPackage and key (never a secret).
    pub warnings: Vec<String>,
}

/// A PSKC key that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// `Key@Id` ("" when the key has none).
    pub key_id: String,
    /// `Key@Algorithm` URI ("" when absent).
    pub algorithm: String,
    /// Where and why, e.g. "KeyPackage 2, Key@Algorithm: unsupported algorithm `...`: a PIN,
    /// not an HOTP/TOTP key".
    pub why: String,
}

impl fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key_id.as_str() {
            "" => write!(f, "{}", self.why),
            id => write!(f, "Key `{id}` ({})", self.why),
        }
    }
}

/// Why an import failed, and where. No variant ever carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("CSV line {line}: {source}")]
    Csv { line: u64, source: csv::Error },
    #[error("CSV line {line}: header lacks the `{column}` column")]
    MissingColumn { line: u64, column: &'static str },
    #[error(
        "CSV line {line}: header column {index} is unknown or repeated (expected serial, secret, \
         kind, digits, step and optionally owner, algorithm)"
    )]
    BadColumn { line: u64, index: usize },
    #[error("CSV line {line}: {found} fields, the header has {expected}")]
    FieldCount {
        line: u64,
        expected: usize,
        found: usize,
    },
    #[error("CSV line {line}, column `{column}`: {problem}")]
    Field {
        line: u64,
        column: &'static str,
        problem: Problem,
    },
    #[error("CSV line {line}: serial `{serial}` already appears on line {first}")]
    DuplicateLine {
        serial: String,
        first: u64,
        line: u64,
    },
    #[error("PSKC document is not well-formed XML (line {line}, byte {position}): {message}")]
    Xml {
        line: usize,
        position: u64,
        message: String,
    },
    #[error("PSKC {}{element}: {problem}", package_label(*package, serial.as_deref()))]
    Pskc {
        package: Option<usize>,
        serial: Option<String>,
        element: String,
        problem: Problem,
    },
    #[error("PSKC KeyPackage {package}: serial `{serial}` already used by KeyPackage {first}")]
    DuplicatePackage {
        serial: String,
        first: usize,
        package: usize,
    },
    /// Nothing usable came out of the file; `found` says what was there instead.
    #[error("PSKC file holds no usable HOTP/TOTP key: {found}")]
    NoUsableKey { found: String },
    #[error("CSV file has a header but no token line")]
    NoCsvToken,
}

/// What is wrong with one field or element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("missing or empty")]
    Missing,
    #[error("not valid base32 (RFC 4648)")]
    Base32,
    #[error("not valid base64")]
    Base64,
    #[error("secret has {bits} bits, at least 80 are required (RFC 4226 R6)")]
    ShortSecret { bits: usize },
    #[error("must be `totp` or `hotp`")]
    Kind,
    #[error("must be 6 or 8")]
    Digits,
    #[error("TOTP period must be 30 or 60")]
    Period,
    #[error("HOTP counter must be an unsigned 64-bit integer")]
    Counter,
    #[error("must be sha1, sha256 or sha512")]
    Algorithm,
    #[error("must be 1 to 64 characters from [A-Za-z0-9._-]")]
    Serial,
    #[error("must be 1 to 128 characters from [A-Za-z0-9._@-]")]
    Owner,
    #[error("unsupported {0}")]
    Unsupported(String),
    #[error(
        "secret is encrypted with pre-shared key `{0}`; a key is required \
         (--pskc-key-file PATH or --pskc-key-stdin)"
    )]
    KeyRequired(String),
    #[error("pre-shared key has {got} bytes, the cipher needs {need}")]
    KeyLength { got: usize, need: usize },
    #[error("decryption failed (wrong pre-shared key or corrupt data)")]
    Decrypt,
    #[error("ValueMAC does not match (wrong pre-shared key or tampered file)")]
    MacMismatch,
    #[error(
        "secret is encrypted with a key derived from password `{0}` (PBKDF2); the password is \
         required (--pskc-password-file PATH)"
    )]
    PasswordRequired(String),
    #[error("derived key has {got} bytes (KeyLength), the cipher needs {need}")]
    DerivedKeyLength { got: usize, need: usize },
    #[error("decryption failed (wrong password or corrupt data)")]
    PasswordDecrypt,
    #[error("ValueMAC does not match (wrong password or tampered file)")]
    PasswordMacMismatch,
    #[error("must be an integer from 1 to {max}")]
    Iterations { max: u32 },
    #[error(
        "serial `{0}` (SerialNo-KeyId, the device has several HOTP/TOTP keys) must be 1 to 64 \
         characters from [A-Za-z0-9._-]"
    )]
    KeySerial(String),
}

fn package_label(package: Option<usize>, serial: Option<&str>) -> String {
    match (package, serial) {
        (Some(i), Some(s)) => format!("KeyPackage {i} (serial {s}), "),
        (Some(i), None) => format!("KeyPackage {i}, "),
        _ => String::new(),
    }
}

/// Picks the parser: PSKC if the content (after optional BOM/whitespace) starts with '<', else CSV.
/// The tokens of [`import_file`] with only a pre-shared key; skipped keys and warnings dropped.
pub fn parse_file(
    content: &[u8],
    pre_shared_key: Option<&[u8]>,
) -> Result<Vec<ImportedToken>, ImportError> {
    let keys = PskcKeys {
        pre_shared_key,
        password: None,
    };
    import_file(content, &keys).map(|report| report.tokens)
}

/// Like [`parse_file`], for every RFC 6030 shape described in the module doc, with a report
/// of the keys left out and warnings; an error if no usable HOTP/TOTP key (or CSV row) came out.
pub fn import_file(content: &[u8], keys: &PskcKeys) -> Result<ImportReport, ImportError> {
    let body = content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content);
    if !body.trim_ascii_start().starts_with(b"<") {
        let tokens = parse_csv(body)?;
        if tokens.is_empty() {
            return Err(ImportError::NoCsvToken);
        }
        return Ok(ImportReport {
            tokens,
            ..ImportReport::default()
        });
    }
    let xml = std::str::from_utf8(body).map_err(|e| ImportError::Xml {
        line: line_of(body, e.valid_up_to()),
        position: e.valid_up_to() as u64,
        message: "not valid UTF-8".into(),
    })?;
    import_pskc(xml, keys)
}

// ---------------------------------------------------------------------------------------------
// CSV

const REQUIRED: [&str; 5] = ["serial", "secret", "kind", "digits", "step"];

/// Parses the CSV seed format described in the module doc.
pub fn parse_csv<R: std::io::Read>(reader: R) -> Result<Vec<ImportedToken>, ImportError> {
    let mut builder = csv::ReaderBuilder::new();
    builder
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All);
    let mut last = 0;
    let mut rows = builder.from_reader(reader).into_records().map(|row| {
        let position = row
            .as_ref()
            .map_or_else(csv::Error::position, csv::StringRecord::position);
        last = position.map_or(last + 1, csv::Position::line);
        let line = last;
        row.map(|r| (line, r))
            .map_err(|source| ImportError::Csv { line, source })
    });
    let (line, header) = rows
        .next()
        .transpose()?
        .unwrap_or((1, csv::StringRecord::new()));
    let mut names = HashMap::new();
    for (i, name) in header.iter().enumerate() {
        let name = name.trim_start_matches('\u{feff}').to_ascii_lowercase();
        let known = REQUIRED.contains(&name.as_str()) || matches!(&*name, "owner" | "algorithm");
        if !known || names.insert(name, i).is_some() {
            return Err(ImportError::BadColumn { line, index: i + 1 });
        }
    }
    if let Some(&column) = REQUIRED.iter().find(|c| !names.contains_key(**c)) {
        return Err(ImportError::MissingColumn { line, column });
    }
    let (mut tokens, mut seen) = (Vec::new(), HashMap::new());
    for row in rows {
        let (line, record) = row?;
        let (expected, found) = (header.len(), record.len());
        if record.iter().all(str::is_empty) {
            continue;
        } else if found != expected {
            return Err(ImportError::FieldCount {
                line,
                expected,
                found,
            });
        }
        let get = |name: &str| names.get(name).and_then(|&i| record.get(i)).unwrap_or("");
        let token = csv_token(get).map_err(|(column, problem)| ImportError::Field {
            line,
            column,
            problem,
        })?;
        if let Some(first) = seen.insert(token.serial.clone(), line) {
            let serial = token.serial.clone();
            return Err(ImportError::DuplicateLine {
                serial,
                first,
                line,
            });
        }
        tokens.push(token);
    }
    Ok(tokens)
}

/// One data row; `get` returns the trimmed field under a header name, "" when absent.
fn csv_token<'a>(get: impl Fn(&str) -> &'a str) -> Result<ImportedToken, (&'static str, Problem)> {
    let serial = get("serial");
    if !name_ok(serial, 64, b"") {
        return Err(("serial", Problem::Serial));
    }
    let secret = base32(get("secret"))
        .and_then(long_enough)
        .map_err(|p| ("secret", p))?;
    let step = get("step");
    let (kind, counter) = match get("kind").to_ascii_lowercase().as_str() {
        "totp" => match step.parse() {
            Ok(period @ (30 | 60)) => (TokenKind::Totp { period }, 0),
            _ => return Err(("step", Problem::Period)),
        },
        "hotp" => (
            TokenKind::Hotp,
            step.parse().map_err(|_| ("step", Problem::Counter))?,
        ),
        _ => return Err(("kind", Problem::Kind)),
    };
    let digits = get("digits").parse().ok().filter(|d| valid_digits(*d));
    let algorithm = match get("algorithm") {
        "" => Some(Algorithm::Sha1),
        name => Algorithm::parse(name),
    };
    let owner = match get("owner") {
        "" => None,
        name if name_ok(name, 128, b"@") => Some(name.to_owned()),
        _ => return Err(("owner", Problem::Owner)),
    };
    Ok(ImportedToken {
        serial: serial.to_owned(),
        secret,
        algorithm: algorithm.ok_or(("algorithm", Problem::Algorithm))?,
        digits: digits.ok_or(("digits", Problem::Digits))?,
        kind,
        counter,
        owner,
    })
}

/// Serials (and, with `@`, usernames): 1..=max characters from [A-Za-z0-9._-] plus `extra`.
fn name_ok(s: &str, max: usize, extra: &[u8]) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || extra.contains(&b))
}

/// RFC 4648 base32 with optional padding, any case, whitespace ignored.
pub fn base32(text: &str) -> Result<Zeroizing<Vec<u8>>, Problem> {
    let clean: Zeroizing<String> = Zeroizing::new(
        text.chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    );
    match clean.trim_end_matches('=') {
        "" => Err(Problem::Missing),
        s => data_encoding::BASE32_NOPAD
            .decode(s.as_bytes())
            .map(Zeroizing::new)
            .or(Err(Problem::Base32)),
    }
}

/// Base64 as found in XML: line breaks and other whitespace ignored, padding optional.
fn base64(text: &str) -> Result<Zeroizing<Vec<u8>>, Problem> {
    const B64: GeneralPurpose = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let clean: Zeroizing<String> = Zeroizing::new(text.split_whitespace().collect());
    match clean.as_str() {
        "" => Err(Problem::Missing),
        s => B64.decode(s).map(Zeroizing::new).or(Err(Problem::Base64)),
    }
}

/// Refuses secrets under 80 bits (RFC 4226 R6 requires 128, recommends 160).
pub fn long_enough(secret: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, Problem> {
    match secret.len() {
        n if n < 10 => Err(Problem::ShortSecret { bits: n * 8 }),
        _ => Ok(secret),
    }
}

// ---------------------------------------------------------------------------------------------
// PSKC (RFC 6030)

const HOTP_URIS: [&str; 3] = [
    "urn:ietf:params:xml:ns:keyprov:pskc:hotp",
    "urn:ietf:params:xml:ns:keyprov:pskc#hotp",
    "http://www.ietf.org/keyprov/pskc#hotp",
];
const TOTP_URIS: [&str; 3] = [
    "urn:ietf:params:xml:ns:keyprov:pskc:totp",
    "urn:ietf:params:xml:ns:keyprov:pskc#totp",
    "http://www.ietf.org/keyprov/pskc#totp",
];

/// An element path (relative to the KeyPackage, or from KeyContainer) and what is wrong there.
type Fail = (String, Problem);

fn fail(element: impl Into<String>, problem: Problem) -> Fail {
    (element.into(), problem)
}

fn unsupported(element: impl Into<String>, what: impl fmt::Display) -> Fail {
    fail(element, Problem::Unsupported(what.to_string()))
}

/// The PSKC namespace (RFC 6030 section 11.1); a document in no namespace is read too.
const PSKC_NS: &str = "urn:ietf:params:xml:ns:keyprov:pskc";
const PBKDF2_URIS: [&str; 2] = [
    "http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2",
    "http://www.w3.org/2009/xmlenc11#pbkdf2",
];
/// Upper bound on PBKDF2 IterationCount, so a hostile file cannot keep the importer busy.
const MAX_ITERATIONS: u32 = 10_000_000;

/// How the container's encryption key is obtained, for messages (the name is not secret).
enum Protection<'a> {
    /// `EncryptionKey/KeyName` (or no EncryptionKey at all): the caller's pre-shared key.
    PreShared(&'a str),
    /// `EncryptionKey/DerivedKey`: PBKDF2 over the caller's password (`MasterKeyName`).
    Password(&'a str),
}

impl Protection<'_> {
    fn required(&self) -> Problem {
        match self {
            Protection::PreShared(name) => Problem::KeyRequired((*name).into()),
            Protection::Password(name) => Problem::PasswordRequired((*name).into()),
        }
    }

    /// Rewords key problems for a password-derived key.
    fn reword(&self, problem: Problem) -> Problem {
        match (self, problem) {
            (Protection::Password(_), Problem::Decrypt) => Problem::PasswordDecrypt,
            (Protection::Password(_), Problem::MacMismatch) => Problem::PasswordMacMismatch,
            (Protection::Password(_), Problem::KeyLength { got, need }) => {
                Problem::DerivedKeyLength { got, need }
            }
            (_, problem) => problem,
        }
    }
}

/// Container-wide decryption state shared by every KeyPackage.
struct Keys<'a> {
    key: Option<Zeroizing<Vec<u8>>>,
    protection: Protection<'a>,
    mac: Option<(Algorithm, Zeroizing<Vec<u8>>)>,
}

/// Parses an RFC 6030 KeyContainer; `pre_shared_key` decrypts `EncryptedValue` secrets.
/// The tokens of [`import_pskc`] without a password.
pub fn parse_pskc(
    xml: &str,
    pre_shared_key: Option<&[u8]>,
) -> Result<Vec<ImportedToken>, ImportError> {
    let keys = PskcKeys {
        pre_shared_key,
        password: None,
    };
    import_pskc(xml, &keys).map(|report| report.tokens)
}

/// An HOTP/TOTP key found in a KeyPackage, before it becomes a token.
struct Candidate<'a> {
    package: usize,
    key: &'a Node,
    device: &'a str,
    key_id: &'a str,
    totp: bool,
}

/// What a non-HOTP/TOTP algorithm URI is, for the skip report.
fn algorithm_kind(uri: &str) -> &'static str {
    let lower = uri.to_ascii_lowercase();
    if lower.ends_with(":pin") || lower.ends_with("#pin") {
        "a PIN"
    } else if lower.contains("ocra") {
        "an OCRA (challenge-response) key"
    } else if uri.is_empty() {
        "a key without Algorithm"
    } else {
        "a vendor or unknown algorithm"
    }
}

/// Parses an RFC 6030 KeyContainer (every shape in the module doc) with a report; an error
/// if no usable HOTP/TOTP key came out.
pub fn import_pskc(xml: &str, keys: &PskcKeys) -> Result<ImportReport, ImportError> {
    let root = parse_xml(xml.trim_start_matches('\u{feff}'))?;
    let container = |(element, problem): Fail| ImportError::Pskc {
        package: None,
        serial: None,
        element,
        problem,
    };
    if !root.ns.is_empty() && root.ns != PSKC_NS {
        let what = format!("namespace `{}` (otpgate reads {PSKC_NS})", root.ns);
        return Err(container(unsupported(root.name.clone(), what)));
    }
    if root.name != "KeyContainer" || root.attr("Version") != Some("1.0") {
        let what = "document (expected KeyContainer Version=\"1.0\")";
        return Err(container(unsupported("KeyContainer@Version", what)));
    }
    let mut report = ImportReport::default();
    let protection = match root.child("EncryptionKey") {
        None => Protection::PreShared("(unnamed)"),
        Some(k) => match (k.child("KeyName"), k.child("DerivedKey")) {
            (Some(name), _) => Protection::PreShared(name.value()),
            (None, Some(derived)) => {
                let name = derived.child("MasterKeyName").map_or("", Node::value);
                Protection::Password(if name.is_empty() { "(unnamed)" } else { name })
            }
            (None, None) => {
                let what = if k.child("X509Data").is_some() {
                    "asymmetric key protection (X509Data, RFC 6030 section 6.3)"
                } else {
                    "key transport (only a pre-shared KeyName or a PBKDF2 DerivedKey)"
                };
                return Err(container(unsupported("KeyContainer/EncryptionKey", what)));
            }
        },
    };
    let key = match (&protection, keys.pre_shared_key, keys.password) {
        (Protection::PreShared(_), psk, _) => psk.map(|k| Zeroizing::new(k.to_vec())),
        (Protection::Password(_), _, None) => None,
        (Protection::Password(_), _, Some(password)) => {
            let derived = root.at(&["EncryptionKey", "DerivedKey"]);
            let derived = derived.ok_or_else(|| container(fail("DerivedKey", Problem::Missing)));
            Some(derive_key(derived?, password).map_err(container)?)
        }
    };
    if matches!(protection, Protection::PreShared(_)) && keys.password.is_some() {
        let note = "a password was given but the file has no PBKDF2 DerivedKey; it was not used";
        report.warnings.push(note.into());
    }
    let mac = match (root.child("MACMethod"), &key) {
        (Some(method), Some(k)) => Some(
            mac_key(method, k)
                .map_err(|(e, p)| (e, protection.reword(p)))
                .map_err(container)?,
        ),
        _ => None,
    };
    if root.child("Signature").is_some() {
        let note = "KeyContainer/Signature is not verified (RFC 6030 section 7)";
        report.warnings.push(note.into());
    }
    let keys = Keys {
        key,
        protection,
        mac,
    };

    // Pass 1: sort the keys into HOTP/TOTP candidates and skipped ones.
    let mut candidates = Vec::new();
    let packages = root.children.iter().filter(|c| c.name == "KeyPackage");
    for (index, package) in (1..).zip(packages) {
        let Some(key) = package.child("Key") else {
            report.skipped.push(SkippedKey {
                key_id: String::new(),
                algorithm: String::new(),
                why: format!("KeyPackage {index} has no Key"),
            });
            continue;
        };
        let key_id = key.attr("Id").map_or("", str::trim);
        let uri = key.attr("Algorithm").map_or("", str::trim);
        let totp = match uri {
            uri if HOTP_URIS.contains(&uri) => false,
            uri if TOTP_URIS.contains(&uri) => true,
            uri => {
                report.skipped.push(SkippedKey {
                    key_id: key_id.to_owned(),
                    algorithm: uri.to_owned(),
                    why: format!(
                        "KeyPackage {index}, Key@Algorithm: unsupported algorithm `{uri}`: {}, \
                         not an HOTP/TOTP key",
                        algorithm_kind(uri)
                    ),
                });
                continue;
            }
        };
        let serial = package.at(&["DeviceInfo", "SerialNo"]).map(Node::value);
        let serial = serial.filter(|s| !s.is_empty());
        let device = serial.unwrap_or(key_id);
        if !name_ok(device, 64, b"") {
            let (element, problem) = match (serial, key_id) {
                (Some(_), _) => ("DeviceInfo/SerialNo", Problem::Serial),
                (None, "") => ("DeviceInfo/SerialNo (or Key@Id)", Problem::Missing),
                (None, _) => ("Key@Id (no DeviceInfo/SerialNo)", Problem::Serial),
            };
            return Err(ImportError::Pskc {
                package: Some(index),
                serial: None,
                element: element.into(),
                problem,
            });
        }
        candidates.push(Candidate {
            package: index,
            key,
            device,
            key_id,
            totp,
        });
    }

    // Pass 2: name them (SERIAL, or SERIAL-KEYID on a device with several keys) and read them.
    let mut per_device: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut pairs = HashMap::new();
    for c in &candidates {
        if let Some(&first) = pairs.get(&(c.device, c.key_id)) {
            let (serial, package) = (c.device.to_owned(), c.package);
            return Err(ImportError::DuplicatePackage {
                serial,
                first,
                package,
            });
        }
        pairs.insert((c.device, c.key_id), c.package);
        per_device.entry(c.device).or_default().push(c.key_id);
    }
    let mut seen = HashMap::new();
    for c in &candidates {
        let located = |serial: &str, (element, problem): Fail| ImportError::Pskc {
            package: Some(c.package),
            serial: Some(serial.to_owned()),
            element,
            problem,
        };
        let several = per_device[c.device].len() > 1;
        let serial = if several {
            if c.key_id.is_empty() {
                let problem = Problem::KeySerial(format!("{}-", c.device));
                return Err(located(c.device, fail("Key@Id", problem)));
            }
            let serial = format!("{}-{}", c.device, c.key_id);
            if !name_ok(&serial, 64, b"") {
                return Err(located(
                    c.device,
                    fail("Key@Id", Problem::KeySerial(serial)),
                ));
            }
            serial
        } else {
            c.device.to_owned()
        };
        if let Some(first) = seen.insert(serial.clone(), c.package) {
            let package = c.package;
            return Err(ImportError::DuplicatePackage {
                serial,
                first,
                package,
            });
        }
        let label = match c.key_id {
            id if id.is_empty() || id == serial => {
                format!("KeyPackage {} (serial {serial})", c.package)
            }
            id => format!("KeyPackage {} (serial {serial}, Key {id})", c.package),
        };
        let token = pskc_token(c.key, c.totp, &serial, &keys, &label, &mut report.warnings);
        report.tokens.push(token.map_err(|f| located(&serial, f))?);
    }
    // One note per device with several keys, in file order.
    for c in &candidates {
        let ids = &per_device[c.device];
        if ids.len() > 1 && ids[0] == c.key_id {
            let names: Vec<_> = ids.iter().map(|id| format!("{}-{id}", c.device)).collect();
            report.warnings.push(format!(
                "device {} carries {} HOTP/TOTP keys: imported as {}",
                c.device,
                ids.len(),
                names.join(", ")
            ));
        }
    }
    if report.tokens.is_empty() {
        let found = match report.skipped.as_slice() {
            [] => "no KeyPackage with a Key".to_owned(),
            skipped => {
                let shown: Vec<_> = skipped.iter().take(5).map(ToString::to_string).collect();
                match skipped.len() - shown.len() {
                    0 => shown.join("; "),
                    more => format!("{}; and {more} more", shown.join("; ")),
                }
            }
        };
        return Err(ImportError::NoUsableKey { found });
    }
    Ok(report)
}

/// PBKDF2 (RFC 8018, RFC 6030 section 6.2) over `password` with the DerivedKey's parameters.
fn derive_key(derived: &Node, password: &[u8]) -> Result<Zeroizing<Vec<u8>>, Fail> {
    const PATH: &str = "KeyContainer/EncryptionKey/DerivedKey/KeyDerivationMethod";
    let method = derived
        .child("KeyDerivationMethod")
        .ok_or_else(|| fail(PATH, Problem::Missing))?;
    let uri = method.attr("Algorithm").unwrap_or_default();
    if !PBKDF2_URIS.contains(&uri) {
        let what = format!("key derivation `{uri}` (only PBKDF2)");
        return Err(unsupported(format!("{PATH}@Algorithm"), what));
    }
    let params_path = format!("{PATH}/PBKDF2-params");
    let params = method.child("PBKDF2-params");
    let params = params.ok_or_else(|| fail(params_path.clone(), Problem::Missing))?;
    let salt = params.at(&["Salt", "Specified"]).map_or("", Node::value);
    let salt = base64(salt).map_err(|p| fail(format!("{params_path}/Salt/Specified"), p))?;
    let count = params.child("IterationCount").map_or("", Node::value);
    let count = count
        .parse()
        .ok()
        .filter(|c| (1..=MAX_ITERATIONS).contains(c));
    let count = count.ok_or_else(|| {
        let problem = Problem::Iterations {
            max: MAX_ITERATIONS,
        };
        fail(format!("{params_path}/IterationCount"), problem)
    })?;
    let length = params.child("KeyLength").map_or("", Node::value);
    let length = match length.parse::<usize>() {
        Ok(n @ (16 | 24 | 32)) => n,
        _ => {
            let what = format!("KeyLength `{length}` (16, 24 or 32 bytes)");
            return Err(unsupported(format!("{params_path}/KeyLength"), what));
        }
    };
    let prf = params.child("PRF").and_then(|p| p.attr("Algorithm"));
    let prf = match prf.map(str::trim).unwrap_or_default() {
        "" | "http://www.w3.org/2000/09/xmldsig#hmac-sha1" => Algorithm::Sha1,
        "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256" => Algorithm::Sha256,
        "http://www.w3.org/2001/04/xmldsig-more#hmac-sha512" => Algorithm::Sha512,
        other => {
            let what = format!("PRF `{other}`");
            return Err(unsupported(format!("{params_path}/PRF@Algorithm"), what));
        }
    };
    let mut key = Zeroizing::new(vec![0u8; length]);
    match prf {
        Algorithm::Sha1 => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, &salt, count, &mut key),
        Algorithm::Sha256 => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, &salt, count, &mut key),
        Algorithm::Sha512 => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, &salt, count, &mut key),
    }
    Ok(key)
}

/// Decrypts `MACMethod/MACKey` (RFC 6030 section 6.1.1) with the container key.
fn mac_key(method: &Node, psk: &[u8]) -> Result<(Algorithm, Zeroizing<Vec<u8>>), Fail> {
    const PATH: &str = "KeyContainer/MACMethod/MACKey";
    let algorithm = match method.attr("Algorithm").unwrap_or_default() {
        "http://www.w3.org/2000/09/xmldsig#hmac-sha1" => Algorithm::Sha1,
        "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256" => Algorithm::Sha256,
        "http://www.w3.org/2001/04/xmldsig-more#hmac-sha512" => Algorithm::Sha512,
        other => {
            let what = format!("MAC algorithm `{other}`");
            return Err(unsupported("KeyContainer/MACMethod@Algorithm", what));
        }
    };
    let node = method
        .child("MACKey")
        .ok_or_else(|| fail(PATH, Problem::Missing))?;
    let (cipher, data) = cipher_value(node, PATH)?;
    let key = decrypt(cipher, psk, &data).map_err(|p| fail(PATH, p))?;
    Ok((algorithm, key))
}

/// One HOTP (`totp` false) or TOTP key; `label` names it in warnings.
fn pskc_token(
    key: &Node,
    totp: bool,
    serial: &str,
    keys: &Keys,
    label: &str,
    warnings: &mut Vec<String>,
) -> Result<ImportedToken, Fail> {
    const FORMAT: &str = "Key/AlgorithmParameters/ResponseFormat";
    let digits = match key.at(&["AlgorithmParameters", "ResponseFormat"]) {
        None => {
            warnings.push(format!(
                "{label}: no {FORMAT}, 6 digits assumed (RFC 4226 section 5.3)"
            ));
            6
        }
        Some(format) => {
            if let Some(enc) = format.attr("Encoding").filter(|e| *e != "DECIMAL") {
                return Err(unsupported(
                    format!("{FORMAT}@Encoding"),
                    format!("encoding `{enc}`"),
                ));
            }
            let digits = format.attr("Length").and_then(|l| l.trim().parse().ok());
            let digits = digits.filter(|d| valid_digits(*d));
            digits.ok_or_else(|| fail(format!("{FORMAT}@Length"), Problem::Digits))?
        }
    };
    let algorithm = match key.at(&["AlgorithmParameters", "Suite"]).map(Node::value) {
        None => Algorithm::Sha1,
        Some(suite) => Algorithm::parse(suite).ok_or_else(|| {
            unsupported("Key/AlgorithmParameters/Suite", format!("suite `{suite}`"))
        })?,
    };
    if let Some(reference) = key.child("KeyReference") {
        let what = format!(
            "key derived from master key `{}` (KeyReference): the file carries no secret",
            reference.value()
        );
        return Err(unsupported("Key/KeyReference", what));
    }
    let data = key
        .child("Data")
        .ok_or_else(|| fail("Key/Data", Problem::Missing))?;
    let secret = long_enough(pskc_secret(data, keys)?).map_err(|p| fail("Key/Data/Secret", p))?;
    // Data children that carry a number do so in PlainValue; an element without one is an error.
    let plain = |name| {
        data.child(name)
            .map(|n| n.child("PlainValue").map_or("", Node::value))
    };
    let (kind, counter) = if totp {
        if !matches!(plain("Time").map(str::parse), None | Some(Ok(0u64))) {
            return Err(unsupported("Key/Data/Time", "non-zero T0"));
        }
        match plain("TimeInterval").map_or(Ok(30), str::parse) {
            Ok(period @ (30 | 60)) => (TokenKind::Totp { period }, 0),
            _ => return Err(fail("Key/Data/TimeInterval/PlainValue", Problem::Period)),
        }
    } else {
        let counter = plain("Counter").map_or(Ok(0), str::parse);
        let counter = counter.map_err(|_| fail("Key/Data/Counter/PlainValue", Problem::Counter));
        (TokenKind::Hotp, counter?)
    };
    let serial = serial.to_owned();
    let owner = None;
    Ok(ImportedToken {
        serial,
        secret,
        algorithm,
        digits,
        kind,
        counter,
        owner,
    })
}

/// Data/Secret: PlainValue, or EncryptedValue whose ValueMAC is checked before decrypting.
fn pskc_secret(data: &Node, keys: &Keys) -> Result<Zeroizing<Vec<u8>>, Fail> {
    const ENC: &str = "Key/Data/Secret/EncryptedValue";
    const MAC: &str = "Key/Data/Secret/ValueMAC";
    let secret = data
        .child("Secret")
        .ok_or_else(|| fail("Key/Data/Secret", Problem::Missing))?;
    if let Some(plain) = secret.child("PlainValue") {
        return base64(plain.value()).map_err(|p| fail("Key/Data/Secret/PlainValue", p));
    }
    let enc = secret.child("EncryptedValue");
    let enc = enc.ok_or_else(|| fail("Key/Data/Secret/PlainValue", Problem::Missing))?;
    let key = keys.key.as_ref();
    let key = key.ok_or_else(|| fail(ENC, keys.protection.required()))?;
    let (cipher, value) = cipher_value(enc, ENC)?;
    if let Some(tag) = secret.child("ValueMAC") {
        let mac = keys.mac.as_ref();
        let (algorithm, mac_key) =
            mac.ok_or_else(|| unsupported(MAC, "ValueMAC without MACMethod"))?;
        let tag = base64(tag.value()).map_err(|p| fail(MAC, p))?;
        if !mac_matches(*algorithm, mac_key, &value, &tag) {
            return Err(fail(MAC, keys.protection.reword(Problem::MacMismatch)));
        }
    }
    decrypt(cipher, key, &value).map_err(|p| fail(ENC, keys.protection.reword(p)))
}

/// An xenc EncryptedValue: its EncryptionMethod URI and decoded CipherValue (IV || ciphertext).
fn cipher_value<'a>(enc: &'a Node, path: &str) -> Result<(&'a str, Zeroizing<Vec<u8>>), Fail> {
    let method = enc
        .child("EncryptionMethod")
        .and_then(|m| m.attr("Algorithm"));
    let method = method.ok_or_else(|| fail(format!("{path}/EncryptionMethod"), Problem::Missing));
    let value = enc
        .at(&["CipherData", "CipherValue"])
        .map_or("", Node::value);
    let value = base64(value).map_err(|p| fail(format!("{path}/CipherData/CipherValue"), p));
    Ok((method?, value?))
}

/// The ciphers of an xenc `EncryptionMethod` (RFC 6030 section 6.1).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cipher {
    /// AES-CBC, 16-octet IV prefixed (`aes128/192/256-cbc`).
    AesCbc,
    /// AES key wrap, RFC 3394 (`kw-aes128/192/256`).
    AesWrap,
    /// Triple DES EDE3 CBC, 8-octet IV prefixed (`tripledes-cbc`, a 24-octet key).
    TripleDesCbc,
}

/// XML Encryption AES-CBC or 3DES-CBC (IV prefixed, PKCS#7 padding) or AES key wrap (RFC 3394,
/// `kw-aes128/192/256`) under the container key.
fn decrypt(method: &str, psk: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Problem> {
    let (need, cipher) = match method.strip_prefix("http://www.w3.org/2001/04/xmlenc#") {
        Some("aes128-cbc") => (16, Cipher::AesCbc),
        Some("aes192-cbc") => (24, Cipher::AesCbc),
        Some("aes256-cbc") => (32, Cipher::AesCbc),
        Some("kw-aes128") => (16, Cipher::AesWrap),
        Some("kw-aes192") => (24, Cipher::AesWrap),
        Some("kw-aes256") => (32, Cipher::AesWrap),
        Some("tripledes-cbc") => (24, Cipher::TripleDesCbc),
        _ => {
            return Err(Problem::Unsupported(format!(
                "encryption method `{method}`"
            )))
        }
    };
    let got = psk.len();
    if got != need {
        return Err(Problem::KeyLength { got, need });
    }
    let plain = match cipher {
        Cipher::AesWrap => {
            return match need {
                16 => aes_unwrap::<Aes128>(psk, data),
                24 => aes_unwrap::<Aes192>(psk, data),
                _ => aes_unwrap::<Aes256>(psk, data),
            }
        }
        Cipher::TripleDesCbc => {
            let (iv, ciphertext) = data.split_at_checked(8).ok_or(Problem::Decrypt)?;
            cbc::Decryptor::<TdesEde3>::new_from_slices(psk, iv)
                .map(|d| d.decrypt_padded_vec_mut::<Pkcs7>(ciphertext))
        }
        Cipher::AesCbc => {
            let (iv, ciphertext) = data.split_at_checked(16).ok_or(Problem::Decrypt)?;
            match need {
                16 => cbc::Decryptor::<Aes128>::new_from_slices(psk, iv)
                    .map(|d| d.decrypt_padded_vec_mut::<Pkcs7>(ciphertext)),
                24 => cbc::Decryptor::<Aes192>::new_from_slices(psk, iv)
                    .map(|d| d.decrypt_padded_vec_mut::<Pkcs7>(ciphertext)),
                _ => cbc::Decryptor::<Aes256>::new_from_slices(psk, iv)
                    .map(|d| d.decrypt_padded_vec_mut::<Pkcs7>(ciphertext)),
            }
        }
    };
    match plain {
        Ok(Ok(plain)) => Ok(Zeroizing::new(plain)),
        _ => Err(Problem::Decrypt),
    }
}

/// AES key unwrap (RFC 3394 section 2.2.2, default IV `A6A6A6A6A6A6A6A6`); a wrong key or a
/// tampered value fails the integrity check.
fn aes_unwrap<C>(kek: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Problem>
where
    C: KeyInit + BlockDecrypt + BlockSizeUser<BlockSize = U16>,
{
    if data.len() % 8 != 0 || data.len() < 24 {
        return Err(Problem::Decrypt);
    }
    let cipher = C::new_from_slice(kek).or(Err(Problem::Decrypt))?;
    let n = data.len() / 8 - 1;
    let mut a = [0u8; 8];
    a.copy_from_slice(&data[..8]);
    let mut r = Zeroizing::new(data[8..].to_vec());
    let mut block = Block::<C>::default();
    for j in (0..6u64).rev() {
        for i in (1..=n).rev() {
            let t = n as u64 * j + i as u64;
            block[..8].copy_from_slice(&(u64::from_be_bytes(a) ^ t).to_be_bytes());
            block[8..].copy_from_slice(&r[(i - 1) * 8..i * 8]);
            cipher.decrypt_block(&mut block);
            a.copy_from_slice(&block[..8]);
            r[(i - 1) * 8..i * 8].copy_from_slice(&block[8..]);
        }
    }
    block.as_mut_slice().zeroize();
    match bool::from(a.ct_eq(&[0xA6; 8])) {
        true => Ok(r),
        false => Err(Problem::Decrypt),
    }
}

/// HMAC over `data`, compared with `tag` in constant time (`Mac::verify_slice` uses `subtle`).
fn mac_matches(algorithm: Algorithm, key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    fn check<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
        let mac = <M as Mac>::new_from_slice(key);
        mac.is_ok_and(|m| m.chain_update(data).verify_slice(tag).is_ok())
    }
    match algorithm {
        Algorithm::Sha1 => check::<Hmac<sha1::Sha1>>(key, data, tag),
        Algorithm::Sha256 => check::<Hmac<sha2::Sha256>>(key, data, tag),
        Algorithm::Sha512 => check::<Hmac<sha2::Sha512>>(key, data, tag),
    }
}

/// A minimal element tree keyed by local names (namespace prefixes dropped). Text may hold
/// secrets, so the whole tree is wiped when dropped.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
struct Node {
    name: String,
    /// The element's namespace URI ("" when unqualified).
    #[zeroize(skip)]
    ns: String,
    #[zeroize(skip)]
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, name| node.child(name))
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn value(&self) -> &str {
        self.text.trim()
    }

    fn open(e: &BytesStart, ns: &str) -> Result<Node, quick_xml::Error> {
        let local = |name: &[u8]| String::from_utf8_lossy(name).into_owned();
        let mut node = Node::default();
        node.name = local(e.local_name().as_ref());
        node.ns = ns.to_owned();
        for attr in e.attributes() {
            let attr = attr?;
            let value = attr.unescape_value()?.into_owned();
            node.attrs
                .push((local(attr.key.local_name().as_ref()), value));
        }
        Ok(node)
    }
}

fn line_of(doc: &[u8], position: usize) -> usize {
    let before = doc.get(..position).unwrap_or(doc);
    before.iter().filter(|&&c| c == b'\n').count() + 1
}

/// Builds the element tree; nesting is capped so hostile input cannot exhaust the stack.
fn parse_xml(xml: &str) -> Result<Node, ImportError> {
    const MAX_DEPTH: usize = 32;
    let error = |position: u64, message: String| {
        let line = line_of(
            xml.as_bytes(),
            usize::try_from(position).unwrap_or(usize::MAX),
        );
        ImportError::Xml {
            line,
            position,
            message,
        }
    };
    let mut reader = NsReader::from_str(xml);
    let (mut stack, mut root) = (Vec::<Node>::new(), None);
    loop {
        let event = reader.read_resolved_event().map(|(ns, event)| {
            let ns = match ns {
                ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
                // Unqualified, or an undeclared prefix: read by local name as before.
                ResolveResult::Unbound | ResolveResult::Unknown(_) => String::new(),
            };
            (ns, event)
        });
        let (ns, event) = event.map_err(|e| error(reader.error_position(), e.to_string()))?;
        let position = reader.buffer_position();
        let bad = |e: quick_xml::Error| error(position, e.to_string());
        let closed = match event {
            Event::Start(_) if stack.len() >= MAX_DEPTH => {
                return Err(error(position, "elements nested too deep".into()));
            }
            Event::Start(e) => {
                stack.push(Node::open(&e, &ns).map_err(bad)?);
                None
            }
            Event::Empty(e) => Some(Node::open(&e, &ns).map_err(bad)?),
            Event::End(_) => stack.pop(),
            Event::Text(text) => {
                let text = text.unescape().map_err(bad)?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
                None
            }
            Event::Eof => break,
            _ => None,
        };
        match (closed, stack.last_mut(), &root) {
            (Some(node), Some(parent), _) => parent.children.push(node),
            (Some(node), None, None) => root = Some(node),
            (Some(_), None, Some(_)) => return Err(error(position, "second root element".into())),
            (None, ..) => {}
        }
    }
    match root {
        Some(root) if stack.is_empty() => Ok(root),
        _ => Err(error(
            reader.buffer_position(),
            "unexpected end of document".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbc::cipher::BlockEncryptMut;

    const B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; // b"12345678901234567890"
    const RFC_SECRET: &[u8] = b"12345678901234567890";
    const RFC_PSK: [u8; 16] = *b"\x12\x34\x56\x78\x90\x12\x34\x56\x78\x90\x12\x34\x56\x78\x90\x12";

    fn csv(text: &str) -> Result<Vec<ImportedToken>, ImportError> {
        parse_csv(text.replace("B32", B32).as_bytes())
    }

    /// The error's message, checked not to contain any of the secrets used in these tests.
    fn err<T: fmt::Debug>(result: Result<T, ImportError>) -> String {
        let text = result.unwrap_err().to_string();
        assert!(
            !text.contains("GEZDGNBV") && !text.contains("MTIzNDU2"),
            "leak: {text}"
        );
        text
    }

    /// One line per token: serial, kind, algorithm, digits, counter, owner, secret in hex.
    fn summary(tokens: Result<Vec<ImportedToken>, ImportError>) -> String {
        let line = |t: &ImportedToken| {
            let (kind, owner) = (format!("{:?}", t.kind), t.owner.as_deref().unwrap_or("-"));
            let secret = data_encoding::HEXLOWER.encode(&t.secret);
            let (serial, alg, digits, counter) =
                (&t.serial, t.algorithm.as_str(), t.digits, t.counter);
            format!("{serial} {kind} {alg} {digits} {counter} {owner} {secret}\n")
        };
        tokens.unwrap().iter().map(line).collect()
    }

    const RFC_HOTP: &str = "987654321 Hotp sha1 8 0 - 3132333435363738393031323334353637383930\n";

    #[test]
    fn csv_happy_path() {
        let tokens = csv(
            "serial,secret,kind,digits,step,owner\nTOK-1, B32 ,totp,6,30,\n\n  \n\
            tok.2,gezd gnbv gy3t qojq gezd gnbv gy3t qojq,HOTP,8,42,alice@example.org\n\
            tok_3,GAYTEMZUGU3DOOBZMFRGGZDFMY======,TOTP,8,60,bob\n\
            tok_4,gaytemzugu3doobzmfrggzdfmy,totp,6,30, \n",
        );
        assert_eq!(
            summary(tokens),
            "TOK-1 Totp { period: 30 } sha1 6 0 - 3132333435363738393031323334353637383930\n\
             tok.2 Hotp sha1 8 42 alice@example.org 3132333435363738393031323334353637383930\n\
             tok_3 Totp { period: 60 } sha1 8 0 bob 30313233343536373839616263646566\n\
             tok_4 Totp { period: 30 } sha1 6 0 - 30313233343536373839616263646566\n"
        );
        let token = csv("serial,secret,kind,digits,step\nt,B32,totp,6,30").unwrap();
        let debug = format!("{token:?}");
        assert!(
            debug.contains("<20 bytes redacted>") && !debug.contains("49, 50"),
            "{debug}"
        );
    }

    #[test]
    fn csv_columns_by_name_with_algorithm() {
        let file = "Step,Kind,algorithm,Serial,digits,secret\n30,totp,HMAC-SHA256,t1,8,B32\n";
        assert_eq!(csv(file).unwrap()[0].algorithm, Algorithm::Sha256);
        let text = err(csv(&file.replace("HMAC-SHA256", "md5")));
        assert_eq!(
            text,
            "CSV line 2, column `algorithm`: must be sha1, sha256 or sha512"
        );
    }

    #[test]
    fn csv_errors_name_line_and_column_and_nothing_is_returned() {
        let cases = [
            (
                "x,GEZDGNBVGY3TQOJ1,totp,6,30,",
                "column `secret`: not valid base32",
            ),
            (
                "x,GEZDGNBVGY3TQOI=,totp,6,30,",
                "column `secret`: secret has 72 bits",
            ),
            ("x,,totp,6,30,", "column `secret`: missing"),
            ("x,B32,motp,6,30,", "column `kind`: must be"),
            ("x,B32,totp,7,30,", "column `digits`: must be 6 or 8"),
            (
                "x,B32,totp,6,45,",
                "column `step`: TOTP period must be 30 or 60",
            ),
            ("x,B32,hotp,6,-1,", "column `step`: HOTP counter"),
            ("bad serial!,B32,totp,6,30,", "column `serial`: must be"),
            (
                &format!("{},B32,totp,6,30,", "a".repeat(65)),
                "column `serial`: must be",
            ),
            ("x,B32,totp,6,30,bob smith", "column `owner`: must be"),
            ("x,B32,totp", "3 fields, the header has 6"),
        ];
        for (row, expected) in cases {
            let text = err(csv(&format!(
                "serial,secret,kind,digits,step,owner\nok,B32,totp,6,30,\n{row}\n"
            )));
            assert!(
                text.starts_with("CSV line 3") && text.contains(expected),
                "{row}: {text}"
            );
        }
    }

    #[test]
    fn csv_header_and_duplicate_errors() {
        assert_eq!(
            err(csv("serial,secret,kind,digits\n")),
            "CSV line 1: header lacks the `step` column"
        );
        assert!(err(csv("serial,secret,kind,digits,step,ownr\n")).contains("column 6 is unknown"));
        assert!(err(csv("serial,serial,kind,digits,step\n")).contains("column 2 is unknown"));
        // A file without a header must not echo its first secret back.
        assert!(
            err(csv("t1,B32,totp,6,30\n")).starts_with("CSV line 1: header column 1 is unknown")
        );
        assert!(err(csv("")).contains("line 1: header lacks the `serial` column"));
        assert!(csv("serial,secret,kind,digits,step\n").unwrap().is_empty());
        let file =
            "serial,secret,kind,digits,step\nA,B32,totp,6,30\nB,B32,hotp,6,0\nA,B32,hotp,6,0\n";
        assert_eq!(
            err(csv(file)),
            "CSV line 4: serial `A` already appears on line 2"
        );
    }

    /// RFC 6030 Figure 3 (the Figure 2 container with supplementary data).
    const FIGURE3: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" Id="exampleID1" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
  <KeyPackage>
    <DeviceInfo><Manufacturer>Manufacturer</Manufacturer><SerialNo>987654321</SerialNo>
      <UserId>DC=example-bank,DC=net</UserId></DeviceInfo>
    <CryptoModuleInfo><Id>CM_ID_001</Id></CryptoModuleInfo>
    <Key Id="12345678" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
      <Issuer>Issuer</Issuer>
      <AlgorithmParameters><ResponseFormat Length="8" Encoding="DECIMAL"/></AlgorithmParameters>
      <Data>
        <Secret><PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=
          </PlainValue></Secret>
        <Counter><PlainValue>0</PlainValue></Counter>
      </Data>
      <UserId>UID=jsmith,DC=example-bank,DC=net</UserId>
    </Key>
  </KeyPackage>
</KeyContainer>"#;

    /// RFC 6030 Figure 6 (section 6.1): AES-128-CBC under a pre-shared key, HMAC-SHA1 ValueMAC.
    const FIGURE6: &str = include_str!("../../tests/data/rfc6030-figure6.xml");

    #[test]
    fn pskc_rfc6030_examples() {
        assert_eq!(summary(parse_pskc(FIGURE3, None)), RFC_HOTP);
        assert_eq!(summary(parse_pskc(FIGURE6, Some(&RFC_PSK))), RFC_HOTP);
        // Figure 2 ships a 32-bit secret and no DeviceInfo: refused, named by Key@Id.
        let figure2 = FIGURE3.replace("MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=", "MTIzNA==");
        let figure2 = figure2.replace("<SerialNo>987654321</SerialNo>", "");
        assert_eq!(
            err(parse_pskc(&figure2, None)),
            "PSKC KeyPackage 1 (serial 12345678), Key/Data/Secret: secret has 32 bits, at least 80 \
             are required (RFC 4226 R6)"
        );
    }

    #[test]
    fn pskc_encrypted_failures() {
        let text = err(parse_pskc(FIGURE6, None));
        assert!(
            text.starts_with("PSKC KeyPackage 1 (serial 987654321)"),
            "{text}"
        );
        assert!(
            text.contains(
                "`Pre-shared-key`; a key is required (--pskc-key-file PATH or --pskc-key-stdin)"
            ),
            "{text}"
        );
        let mut wrong = RFC_PSK;
        wrong[15] ^= 1;
        assert!(err(parse_pskc(FIGURE6, Some(&wrong))).contains("wrong pre-shared key"));
        assert!(err(parse_pskc(FIGURE6, Some(&RFC_PSK[..8]))).contains("key has 8 bytes"));
        let tampered_mac = FIGURE6.replace("LRExc=", "LREXc=");
        let tampered_iv = FIGURE6.replace("AAECAwQF", "AAECAwQG");
        for tampered in [tampered_mac, tampered_iv] {
            assert_eq!(
                err(parse_pskc(&tampered, Some(&RFC_PSK))),
                "PSKC KeyPackage 1 (serial 987654321), Key/Data/Secret/ValueMAC: ValueMAC does not \
                 match (wrong pre-shared key or tampered file)"
            );
        }
        let no_method = FIGURE6.replace("MACMethod", "Other");
        assert!(err(parse_pskc(&no_method, Some(&RFC_PSK))).contains("ValueMAC without MACMethod"));
    }

    fn totp_doc(time: u64) -> String {
        format!(
            r#"<pskc:KeyContainer xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc" Version="1.0">
            <pskc:KeyPackage><pskc:DeviceInfo><pskc:SerialNo>TT-1</pskc:SerialNo></pskc:DeviceInfo>
            <pskc:Key Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">
            <pskc:AlgorithmParameters><pskc:Suite>HMAC-SHA256</pskc:Suite>
            <pskc:ResponseFormat Length="6" Encoding="DECIMAL"/>
            </pskc:AlgorithmParameters><pskc:Data><pskc:Secret><pskc:PlainValue>
            AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=</pskc:PlainValue></pskc:Secret>
            <pskc:Time><pskc:PlainValue>{time}</pskc:PlainValue></pskc:Time>
            <pskc:TimeInterval><pskc:PlainValue>60</pskc:PlainValue></pskc:TimeInterval>
            </pskc:Data></pskc:Key></pskc:KeyPackage></pskc:KeyContainer>"#
        )
    }

    #[test]
    fn pskc_totp_sha256_period_60() {
        let secret: String = (0..32u8).map(|b| format!("{b:02x}")).collect();
        let expected = format!("TT-1 Totp {{ period: 60 }} sha256 6 0 - {secret}\n");
        assert_eq!(summary(parse_pskc(&totp_doc(0), None)), expected);
        let text = err(parse_pskc(&totp_doc(1_234), None));
        assert_eq!(
            text,
            "PSKC KeyPackage 1 (serial TT-1), Key/Data/Time: unsupported non-zero T0"
        );
    }

    #[test]
    fn pskc_aes256_with_hmac_sha256() {
        let (psk, mac_key, iv) = ([7u8; 32], [9u8; 32], [3u8; 16]);
        let encrypt = |plain: &[u8]| {
            let cbc = cbc::Encryptor::<Aes256>::new((&psk).into(), (&iv).into());
            [&iv[..], &cbc.encrypt_padded_vec_mut::<Pkcs7>(plain)].concat()
        };
        let secret = encrypt(RFC_SECRET);
        let mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&mac_key).unwrap();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let method =
            r#"<EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes256-cbc"/>"#;
        let doc = format!(
            r#"<KeyContainer Version="1.0"><EncryptionKey><KeyName>k</KeyName></EncryptionKey>
            <MACMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"><MACKey>
            {method}<CipherData><CipherValue>{}</CipherValue></CipherData></MACKey></MACMethod>
            <KeyPackage><DeviceInfo><SerialNo>987654321</SerialNo></DeviceInfo>
            <Key Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp"><AlgorithmParameters>
            <ResponseFormat Length="8" Encoding="DECIMAL"/></AlgorithmParameters><Data><Secret>
            <EncryptedValue>{method}<CipherData><CipherValue>{}</CipherValue></CipherData>
            </EncryptedValue><ValueMAC>{}</ValueMAC></Secret></Data></Key></KeyPackage>
            </KeyContainer>"#,
            b64(&encrypt(&mac_key)),
            b64(&secret),
            b64(&mac.chain_update(&secret).finalize().into_bytes()),
        );
        assert_eq!(summary(parse_pskc(&doc, Some(&psk))), RFC_HOTP);
    }

    #[test]
    fn pskc_structure_errors() {
        let package = FIGURE3.find("<KeyPackage>").unwrap();
        let twice = FIGURE3.replace("</KeyContainer>", &FIGURE3[package..]);
        let text = err(parse_pskc(&twice, None));
        assert_eq!(
            text,
            "PSKC KeyPackage 2: serial `987654321` already used by KeyPackage 1"
        );
        let cases = [
            (
                "Length=\"8\"",
                "Length=\"5\"",
                "ResponseFormat@Length: must be 6 or 8",
            ),
            (
                "DECIMAL",
                "HEXADECIMAL",
                "@Encoding: unsupported encoding `HEXADECIMAL`",
            ),
            (
                "pskc:hotp",
                "pskc:pin",
                "Key@Algorithm: unsupported algorithm",
            ),
            (">0<", ">x<", "Key/Data/Counter/PlainValue: HOTP counter"),
            (
                "Version=\"1.0\"",
                "Version=\"2.0\"",
                "PSKC KeyContainer@Version: unsupported",
            ),
            (
                "987654321",
                "98 76",
                "PSKC KeyPackage 1, DeviceInfo/SerialNo: must be",
            ),
        ];
        for (from, to, expected) in cases {
            let text = err(parse_pskc(&FIGURE3.replace(from, to), None));
            assert!(text.contains(expected), "{expected}: {text}");
        }
    }

    #[test]
    fn pskc_malformed_xml_reports_position() {
        let text = err(parse_pskc(
            "<KeyContainer Version=\"1.0\">\n<KeyPackage>\n</KeyContainer>",
            None,
        ));
        assert!(
            text.starts_with("PSKC document is not well-formed XML (line 3, byte 42)"),
            "{text}"
        );
        let text = err(parse_pskc(
            "<KeyContainer Version=\"1.0\"><KeyPackage>",
            None,
        ));
        assert!(text.contains("unexpected end of document"), "{text}");
        assert!(err(parse_pskc(&"<a>".repeat(40), None)).contains("nested too deep"));
        assert!(err(parse_pskc("<a/><b/>", None)).contains("second root element"));
    }

    #[test]
    fn parse_file_picks_the_parser() {
        let csv_file = format!("serial,secret,kind,digits,step\nt1,{B32},hotp,8,0\n");
        assert_eq!(
            parse_file(csv_file.as_bytes(), None).unwrap()[0].serial,
            "t1"
        );
        assert_eq!(
            summary(parse_file(
                format!("\u{feff}\n  {FIGURE3}").as_bytes(),
                None
            )),
            RFC_HOTP
        );
        let text = err(parse_file(b"  <KeyContainer>\n\xff</KeyContainer>", None));
        assert!(text.contains("line 2, byte 17): not valid UTF-8"), "{text}");
    }

    /// RFC 6030 Figures 2 to 10, as printed in the RFC.
    fn figure(n: u8) -> &'static str {
        match n {
            2 => include_str!("../../tests/data/pskc/figure2.xml"),
            3 => include_str!("../../tests/data/pskc/figure3.xml"),
            4 => include_str!("../../tests/data/pskc/figure4.xml"),
            5 => include_str!("../../tests/data/pskc/figure5.xml"),
            6 => include_str!("../../tests/data/pskc/figure6.xml"),
            7 => include_str!("../../tests/data/pskc/figure7.xml"),
            8 => include_str!("../../tests/data/pskc/figure8.xml"),
            9 => include_str!("../../tests/data/pskc/figure9.xml"),
            10 => include_str!("../../tests/data/pskc/figure10.xml"),
            _ => unreachable!(),
        }
    }

    const NO_KEYS: PskcKeys<'static> = PskcKeys {
        pre_shared_key: None,
        password: None,
    };

    fn import(doc: &str, keys: &PskcKeys) -> Result<ImportReport, ImportError> {
        import_file(doc.as_bytes(), keys)
    }

    /// Tokens of a report as `summary` lines, plus its skipped keys and warnings.
    fn tokens(report: Result<ImportReport, ImportError>) -> (String, Vec<SkippedKey>, Vec<String>) {
        let report = report.unwrap();
        (summary(Ok(report.tokens)), report.skipped, report.warnings)
    }

    const HOTP_HEX: &str = "3132333435363738393031323334353637383930";

    #[test]
    fn pskc_figure2_minimal_defaults_to_6_digits_but_its_32_bit_secret_is_refused() {
        // The RFC's Figure 2 secret is "1234" (32 bits): below the 80-bit floor, so refused.
        assert_eq!(
            err(import(figure(2), &NO_KEYS)),
            "PSKC KeyPackage 1 (serial 12345678), Key/Data/Secret: secret has 32 bits, at least 80 \
             are required (RFC 4226 R6)"
        );
        // The same minimal shape with the RFC 4226 test secret imports: Key@Id as serial, no
        // ResponseFormat -> 6 digits with a warning naming the key, no Counter -> 0.
        let doc = figure(2).replace("MTIzNA==", "MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=");
        let (lines, skipped, warnings) = tokens(import(&doc, &NO_KEYS));
        assert_eq!(lines, format!("12345678 Hotp sha1 6 0 - {HOTP_HEX}\n"));
        assert!(skipped.is_empty());
        assert_eq!(
            warnings,
            ["KeyPackage 1 (serial 12345678): no Key/AlgorithmParameters/ResponseFormat, 6 digits \
              assumed (RFC 4226 section 5.3)"]
        );
        assert_eq!(summary(parse_pskc(&doc, None)), lines);
    }

    #[test]
    fn pskc_figures_3_6_9_import_one_token() {
        let (lines, skipped, warnings) = tokens(import(figure(3), &NO_KEYS));
        assert_eq!(
            (lines.as_str(), skipped, warnings),
            (RFC_HOTP, vec![], vec![])
        );
        let psk = PskcKeys {
            pre_shared_key: Some(&RFC_PSK),
            password: None,
        };
        assert_eq!(tokens(import(figure(6), &psk)).0, RFC_HOTP);
        assert_eq!(
            summary(parse_file(figure(6).as_bytes(), Some(&RFC_PSK))),
            RFC_HOTP
        );
        assert_eq!(summary(parse_pskc(FIGURE6, Some(&RFC_PSK))), RFC_HOTP);
        // Figure 9: signed; the signature is not verified, and the report says so.
        let (lines, skipped, warnings) = tokens(import(figure(9), &NO_KEYS));
        assert_eq!(lines, format!("0755225266 Hotp sha1 6 0 - {HOTP_HEX}\n"));
        assert!(skipped.is_empty());
        assert_eq!(
            warnings,
            ["KeyContainer/Signature is not verified (RFC 6030 section 7)"]
        );
    }

    #[test]
    fn pskc_figure4_key_reference_and_figure8_asymmetric_are_refused() {
        assert_eq!(
            err(import(figure(4), &NO_KEYS)),
            "PSKC KeyPackage 1 (serial 987654321), Key/KeyReference: unsupported key derived from \
             master key `MasterKeyLabel` (KeyReference): the file carries no secret"
        );
        assert_eq!(
            err(import(figure(8), &NO_KEYS)),
            "PSKC KeyContainer/EncryptionKey: unsupported asymmetric key protection (X509Data, \
             RFC 6030 section 6.3)"
        );
    }

    #[test]
    fn pskc_figure5_pin_key_is_skipped_and_reported() {
        let (lines, skipped, warnings) = tokens(import(figure(5), &NO_KEYS));
        assert_eq!(lines, RFC_HOTP);
        assert!(warnings.is_empty(), "{warnings:?}");
        let pin = "urn:ietf:params:xml:ns:keyprov:pskc:pin";
        assert_eq!(
            skipped,
            [SkippedKey {
                key_id: "123456781".into(),
                algorithm: pin.into(),
                why: format!(
                    "KeyPackage 2, Key@Algorithm: unsupported algorithm `{pin}`: a PIN, not an \
                     HOTP/TOTP key"
                ),
            }]
        );
        // Only the PIN key: an error saying what was found, never "0 tokens".
        let first = figure(5).find("<KeyPackage>").unwrap();
        let second = figure(5).rfind("<KeyPackage>").unwrap();
        let pin_only = format!("{}{}", &figure(5)[..first], &figure(5)[second..]);
        let text = err(import(&pin_only, &NO_KEYS));
        assert_eq!(
            text,
            format!(
                "PSKC file holds no usable HOTP/TOTP key: Key `123456781` (KeyPackage 1, \
                 Key@Algorithm: unsupported algorithm `{pin}`: a PIN, not an HOTP/TOTP key)"
            )
        );
        assert!(err(parse_pskc(&pin_only, None)).contains("a PIN, not an HOTP/TOTP key"));
        let end = pin_only.find("</KeyContainer>").unwrap();
        let package = &pin_only[pin_only.find("<KeyPackage>").unwrap()..end];
        let many = pin_only.replace("</KeyContainer>", &(package.repeat(7) + "</KeyContainer>"));
        let text = err(import(&many, &NO_KEYS));
        assert!(text.ends_with("HOTP/TOTP key); and 3 more"), "{text}");
        let ocra = pin_only.replace(
            pin,
            "urn:ietf:params:xml:ns:keyprov:pskc#OCRA-1:HOTP-SHA1-6",
        );
        assert!(err(import(&ocra, &NO_KEYS)).contains("an OCRA (challenge-response) key"));
    }

    #[test]
    fn pskc_figure7_password_based_encryption() {
        let password = |p: &'static [u8]| PskcKeys {
            pre_shared_key: None,
            password: Some(p),
        };
        let (lines, skipped, warnings) = tokens(import(figure(7), &password(b"qwerty")));
        assert_eq!(lines, RFC_HOTP);
        assert!(skipped.is_empty() && warnings.is_empty(), "{warnings:?}");
        // The RFC's derived key (section 6.2).
        let root = parse_xml(figure(7)).unwrap();
        let derived = root.at(&["EncryptionKey", "DerivedKey"]).unwrap();
        let key = derive_key(derived, b"qwerty").unwrap();
        assert_eq!(
            data_encoding::HEXLOWER.encode(&key),
            "651e63cd57008476af1ff6422cd02e41"
        );
        for wrong in [&b"qwertz"[..], b"", b"QWERTY"] {
            let keys = PskcKeys {
                pre_shared_key: None,
                password: Some(wrong),
            };
            let text = err(import(figure(7), &keys));
            assert!(
                text.contains("(wrong password or corrupt data)")
                    || text.contains("(wrong password or tampered file)"),
                "{text}"
            );
            assert!(!text.contains("qwert"), "{text}");
        }
        let needs = "secret is encrypted with a key derived from password `My Password 1` \
                     (PBKDF2); the password is required";
        assert!(err(import(figure(7), &NO_KEYS)).contains(needs));
        assert!(err(parse_pskc(figure(7), Some(&RFC_PSK))).contains(needs));
        // A password given for a file that has none is only a warning.
        let (lines, _, warnings) = tokens(import(figure(3), &password(b"qwerty")));
        assert_eq!(lines, RFC_HOTP);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        // The default-digits warning names the key when it is not the serial.
        let doc = figure(3).replace("<ResponseFormat Length=\"8\" Encoding=\"DECIMAL\"/>", "");
        let (lines, _, warnings) = tokens(import(&doc, &NO_KEYS));
        assert_eq!(lines, format!("987654321 Hotp sha1 6 0 - {HOTP_HEX}\n"));
        assert_eq!(
            warnings,
            ["KeyPackage 1 (serial 987654321, Key 12345678): no \
              Key/AlgorithmParameters/ResponseFormat, 6 digits assumed (RFC 4226 section 5.3)"]
        );
        // Tampered secret: the MAC catches it before decryption.
        let tampered = figure(7).replace("oTvo+S22", "oTvo+S23");
        assert!(err(import(&tampered, &password(b"qwerty"))).contains(
            "KeyPackage 1 (serial 987654321), Key/Data/Secret/ValueMAC: ValueMAC does not match \
             (wrong password or tampered file)"
        ));
        // Derivation parameters are bounded and checked.
        let cases = [
            (
                "<IterationCount>1000<",
                "<IterationCount>0<",
                "IterationCount: must be",
            ),
            (
                "<IterationCount>1000<",
                "<IterationCount>99999999<",
                "from 1 to 10000000",
            ),
            (
                "<KeyLength>16<",
                "<KeyLength>24<",
                "derived key has 24 bytes (KeyLength)",
            ),
            (
                "<KeyLength>16<",
                "<KeyLength>7<",
                "unsupported KeyLength `7`",
            ),
            ("Ej7/PEpyEpw=", "", "Salt/Specified: missing or empty"),
            (
                "<PRF/>",
                "<PRF Algorithm=\"urn:x\"/>",
                "unsupported PRF `urn:x`",
            ),
            (
                "pkcs-5v2-0#pbkdf2\"",
                "pkcs-5v2-0#scrypt\"",
                "unsupported key derivation",
            ),
        ];
        for (from, to, expected) in cases {
            let doc = figure(7).replace(from, to);
            let text = err(import(&doc, &password(b"qwerty")));
            assert!(text.contains(expected), "{expected}: {text}");
        }
    }

    #[test]
    fn pskc_figure10_several_keys_on_one_device() {
        let (lines, skipped, warnings) = tokens(import(figure(10), &NO_KEYS));
        assert_eq!(
            lines,
            format!(
                "654321 Hotp sha1 8 0 - {HOTP_HEX}\n123456 Hotp sha1 8 0 - {HOTP_HEX}\n\
                 9999999-3 Hotp sha1 8 0 - {HOTP_HEX}\n9999999-4 Hotp sha1 8 0 - {HOTP_HEX}\n"
            )
        );
        assert!(skipped.is_empty());
        assert_eq!(
            warnings,
            ["device 9999999 carries 2 HOTP/TOTP keys: imported as 9999999-3, 9999999-4"]
        );
        // The same Key Id twice on one device is a duplicate, as is a name clash.
        let twice = figure(10).replace("Key Id=\"4\"", "Key Id=\"3\"");
        assert_eq!(
            err(import(&twice, &NO_KEYS)),
            "PSKC KeyPackage 4: serial `9999999` already used by KeyPackage 3"
        );
        let clash = figure(10).replace("<SerialNo>654321<", "<SerialNo>9999999-4<");
        assert_eq!(
            err(import(&clash, &NO_KEYS)),
            "PSKC KeyPackage 4: serial `9999999-4` already used by KeyPackage 1"
        );
        let bad_id = figure(10).replace("Key Id=\"4\"", "Key Id=\"4/b\"");
        assert_eq!(
            err(import(&bad_id, &NO_KEYS)),
            "PSKC KeyPackage 4 (serial 9999999), Key@Id: serial `9999999-4/b` (SerialNo-KeyId, \
             the device has several HOTP/TOTP keys) must be 1 to 64 characters from [A-Za-z0-9._-]"
        );
        let no_id = figure(10).replace("Key Id=\"4\"", "Key");
        assert!(err(import(&no_id, &NO_KEYS)).contains("Key@Id: serial `9999999-`"));
        let no_serial = figure(2).replace(" Id=\"12345678\"", "");
        assert_eq!(
            err(import(&no_serial, &NO_KEYS)),
            "PSKC KeyPackage 1, DeviceInfo/SerialNo (or Key@Id): missing or empty"
        );
        let bad_key_id = figure(2).replace("12345678", "12 34");
        assert!(err(import(&bad_key_id, &NO_KEYS))
            .starts_with("PSKC KeyPackage 1, Key@Id (no DeviceInfo/SerialNo): must be 1 to 64"));
    }

    #[test]
    fn pskc_foreign_namespace_or_nothing_usable_is_an_error() {
        let old = figure(3).replace(
            "xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\"",
            "xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc:1.0\"",
        );
        assert_eq!(
            err(import(&old, &NO_KEYS)),
            "PSKC KeyContainer: unsupported namespace `urn:ietf:params:xml:ns:keyprov:pskc:1.0` \
             (otpgate reads urn:ietf:params:xml:ns:keyprov:pskc)"
        );
        let empty = "<KeyContainer Version=\"1.0\" xmlns=\"urn:ietf:params:xml:ns:keyprov:pskc\">\
                     <Device><Key/></Device></KeyContainer>";
        assert_eq!(
            err(import(empty, &NO_KEYS)),
            "PSKC file holds no usable HOTP/TOTP key: no KeyPackage with a Key"
        );
        let no_key = "<KeyContainer Version=\"1.0\"><KeyPackage/></KeyContainer>";
        assert_eq!(
            err(parse_pskc(no_key, None)),
            "PSKC file holds no usable HOTP/TOTP key: KeyPackage 1 has no Key"
        );
        let header_only = import("serial,secret,kind,digits,step\n", &NO_KEYS);
        assert_eq!(err(header_only), "CSV file has a header but no token line");
    }

    #[test]
    fn pskc_keys_debug_is_redacted() {
        let keys = PskcKeys {
            pre_shared_key: Some(&RFC_PSK),
            password: Some(b"qwerty"),
        };
        let text = format!("{keys:?}");
        assert_eq!(
            text,
            "PskcKeys { pre_shared_key: \"<redacted>\", password: \"<redacted>\" }"
        );
        let report = import(figure(3), &keys).unwrap();
        assert!(!format!("{report:?}").contains("49, 50"));
    }

    #[test]
    fn pskc_aes_key_wrap_rfc3394() {
        // RFC 3394 section 4.1 (128-bit KEK) and 4.6 (256-bit KEK, 256-bit key data).
        let hex = |h: &str| data_encoding::HEXUPPER.decode(h.as_bytes()).unwrap();
        let kek = hex("000102030405060708090A0B0C0D0E0F");
        let wrapped = hex("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5");
        let kw128 = "http://www.w3.org/2001/04/xmlenc#kw-aes128";
        let plain = decrypt(kw128, &kek, &wrapped).unwrap();
        assert_eq!(*plain, hex("00112233445566778899AABBCCDDEEFF"));
        let kek256 = hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
        let wrapped256 =
            hex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21");
        let kw256 = "http://www.w3.org/2001/04/xmlenc#kw-aes256";
        let plain = decrypt(kw256, &kek256, &wrapped256).unwrap();
        assert_eq!(
            *plain,
            hex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
        );
        let mut bad = kek.clone();
        bad[0] ^= 1;
        assert_eq!(decrypt(kw128, &bad, &wrapped), Err(Problem::Decrypt));
        assert_eq!(decrypt(kw128, &kek, &wrapped[..20]), Err(Problem::Decrypt));
        assert_eq!(
            decrypt(kw256, &kek, &wrapped),
            Err(Problem::KeyLength { got: 16, need: 32 })
        );
        // In a document (python-pskc's kw-aes128 test file shape), as a 128-bit HOTP secret.
        let doc = r#"<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"
            xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"><EncryptionKey>
            <KeyName xmlns="http://www.w3.org/2000/09/xmldsig#">Pre-shared-key</KeyName>
            </EncryptionKey><KeyPackage><Key Id="kw1"
            Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp"><Data><Secret><EncryptedValue>
            <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#kw-aes128"/>
            <xenc:CipherData><xenc:CipherValue>H6aLCoEStEeu80vY+1p7gp0+hiNx0s/l</xenc:CipherValue>
            </xenc:CipherData></EncryptedValue></Secret></Data></Key></KeyPackage>
            </KeyContainer>"#;
        assert_eq!(
            summary(parse_pskc(doc, Some(&kek))),
            "kw1 Hotp sha1 6 0 - 00112233445566778899aabbccddeeff\n"
        );
        assert!(err(parse_pskc(doc, Some(&bad))).contains("wrong pre-shared key"));
    }

    #[test]
    fn pskc_triple_des_cbc_known_answer() {
        // Computed with OpenSSL 3: `printf 12345678901234567890 | openssl enc -e -des-ede3-cbc
        // -K 0123456789abcdeffedcba987654321089abcdef01234567 -iv 0001020304050607`, the IV
        // prepended (XML Encryption); the MAC key likewise under IV 0706050403020100, and the
        // ValueMAC by `openssl dgst -sha1 -mac HMAC -macopt hexkey:<MAC key>` over IV||ciphertext.
        let hex = |h: &str| data_encoding::HEXLOWER.decode(h.as_bytes()).unwrap();
        let key = hex("0123456789abcdeffedcba987654321089abcdef01234567");
        let value = hex("0001020304050607066386c33ecb14df87b81bebd8031b14ac03d0c6e16c9a64");
        let tdes = "http://www.w3.org/2001/04/xmlenc#tripledes-cbc";
        assert_eq!(*decrypt(tdes, &key, &value).unwrap(), RFC_SECRET);
        // A wrong key, a flipped IV bit (padding broken) or a value cut short: no plaintext.
        let mut bad = key.clone();
        bad[23] ^= 0x10;
        assert_eq!(decrypt(tdes, &bad, &value), Err(Problem::Decrypt));
        let mut flipped = value.clone();
        flipped[23] ^= 1; // last byte of the second-to-last ciphertext block: the padding
        assert_eq!(decrypt(tdes, &key, &flipped), Err(Problem::Decrypt));
        assert_eq!(decrypt(tdes, &key, &value[..7]), Err(Problem::Decrypt));
        assert_eq!(decrypt(tdes, &key, &value[..8]), Err(Problem::Decrypt));
        assert_eq!(decrypt(tdes, &key, &value[..30]), Err(Problem::Decrypt));
        // 3DES takes a 24-octet key only (no two-key 16-octet form in XML Encryption).
        for len in [8, 16, 32] {
            assert_eq!(
                decrypt(tdes, &vec![1; len], &value),
                Err(Problem::KeyLength { got: len, need: 24 })
            );
        }
        let doc = format!(
            r#"<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"
            xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"><EncryptionKey>
            <KeyName xmlns="http://www.w3.org/2000/09/xmldsig#">Pre-shared-key</KeyName>
            </EncryptionKey><MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
            <MACKey><xenc:EncryptionMethod Algorithm="{tdes}"/><xenc:CipherData>
            <xenc:CipherValue>BwYFBAMCAQCXTD9pZtJ7iBll3crkE+S8gm7MHrn/ThU=</xenc:CipherValue>
            </xenc:CipherData></MACKey></MACMethod><KeyPackage><DeviceInfo>
            <SerialNo>987654321</SerialNo></DeviceInfo>
            <Key Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp"><AlgorithmParameters>
            <ResponseFormat Length="8" Encoding="DECIMAL"/></AlgorithmParameters><Data><Secret>
            <EncryptedValue><xenc:EncryptionMethod Algorithm="{tdes}"/><xenc:CipherData>
            <xenc:CipherValue>AAECAwQFBgcGY4bDPssU34e4G+vYAxsUrAPQxuFsmmQ=</xenc:CipherValue>
            </xenc:CipherData></EncryptedValue><ValueMAC>Srgyx9JZDw3z9JhF+w3UdFyD1MQ=</ValueMAC>
            </Secret></Data></Key></KeyPackage></KeyContainer>"#
        );
        assert_eq!(summary(parse_pskc(&doc, Some(&key))), RFC_HOTP);
        // The MAC key is decrypted first, so a wrong key fails there (or on the MAC).
        let text = err(parse_pskc(&doc, Some(&bad)));
        assert!(text.contains("wrong pre-shared key"), "{text}");
        assert_eq!(
            err(parse_pskc(&doc, Some(&key[..16]))),
            "PSKC KeyContainer/MACMethod/MACKey: pre-shared key has 16 bytes, the cipher needs 24"
        );
        let tampered = doc.replace("Srgyx9", "Srgyx8");
        assert_eq!(
            err(parse_pskc(&tampered, Some(&key))),
            "PSKC KeyPackage 1 (serial 987654321), Key/Data/Secret/ValueMAC: ValueMAC does not \
             match (wrong pre-shared key or tampered file)"
        );
    }
}
