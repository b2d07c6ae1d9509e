//! Reading token seed files shipped with hardware OATH tokens, before anything is stored.
//!
//! Owns the two import formats and their validation; storing the result is the caller's job.
//!
//! * CSV: header `serial,secret,kind,digits,step[,owner]` plus an optional `algorithm` column,
//!   columns found by header name. `secret` is base32 (RFC 4648 section 6; padding optional,
//!   case-insensitive, spaces ignored); `step` is the TOTP period or the HOTP start counter.
//! * PSKC (RFC 6030): `KeyContainer` / `KeyPackage` / `Key` (section 4, 4.1), base64 values
//!   (section 4.2), `DeviceInfo/SerialNo` and `AlgorithmParameters` (sections 4.3.1, 4.3.4),
//!   HOTP/TOTP keys with plain or pre-shared-key AES-CBC encrypted secrets (section 6.1) whose
//!   `ValueMAC` is checked against `MACMethod` (section 6.1.1). Passphrase (section 6.2) and
//!   asymmetric (section 6.3) key protection, other algorithms and non-zero T0 are refused.
//!
//! Both parsers read the whole file and return either every token or the first error; errors
//! name the CSV line and column, or the PSKC KeyPackage and element, and never a secret.

use std::collections::HashMap;
use std::fmt;

use aes::{Aes128, Aes192, Aes256};
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
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
}

fn package_label(package: Option<usize>, serial: Option<&str>) -> String {
    match (package, serial) {
        (Some(i), Some(s)) => format!("KeyPackage {i} (serial {s}), "),
        (Some(i), None) => format!("KeyPackage {i}, "),
        _ => String::new(),
    }
}

/// Picks the parser: PSKC if the content (after optional BOM/whitespace) starts with '<', else CSV.
pub fn parse_file(
    content: &[u8],
    pre_shared_key: Option<&[u8]>,
) -> Result<Vec<ImportedToken>, ImportError> {
    let body = content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content);
    if !body.trim_ascii_start().starts_with(b"<") {
        return parse_csv(body);
    }
    let xml = std::str::from_utf8(body).map_err(|e| ImportError::Xml {
        line: line_of(body, e.valid_up_to()),
        position: e.valid_up_to() as u64,
        message: "not valid UTF-8".into(),
    })?;
    parse_pskc(xml, pre_shared_key)
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
fn base32(text: &str) -> Result<Zeroizing<Vec<u8>>, Problem> {
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
fn long_enough(secret: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, Problem> {
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

/// Container-wide decryption state shared by every KeyPackage.
struct Keys<'a> {
    psk: Option<&'a [u8]>,
    key_name: &'a str,
    mac: Option<(Algorithm, Zeroizing<Vec<u8>>)>,
}

/// Parses an RFC 6030 KeyContainer; `pre_shared_key` decrypts `EncryptedValue` secrets.
pub fn parse_pskc(
    xml: &str,
    pre_shared_key: Option<&[u8]>,
) -> Result<Vec<ImportedToken>, ImportError> {
    let root = parse_xml(xml.trim_start_matches('\u{feff}'))?;
    let container = |(element, problem): Fail| ImportError::Pskc {
        package: None,
        serial: None,
        element,
        problem,
    };
    if root.name != "KeyContainer" || root.attr("Version") != Some("1.0") {
        let what = "document (expected KeyContainer Version=\"1.0\")";
        return Err(container(unsupported("KeyContainer@Version", what)));
    }
    let key_name = match root.child("EncryptionKey") {
        None => "(unnamed)",
        Some(k) => k.child("KeyName").map(Node::value).ok_or_else(|| {
            let what = "key transport (only a pre-shared key named by KeyName)";
            container(unsupported("KeyContainer/EncryptionKey", what))
        })?,
    };
    let mac = match (root.child("MACMethod"), pre_shared_key) {
        (Some(method), Some(psk)) => Some(mac_key(method, psk).map_err(container)?),
        _ => None,
    };
    let keys = Keys {
        psk: pre_shared_key,
        key_name,
        mac,
    };
    let (mut tokens, mut seen) = (Vec::new(), HashMap::new());
    let packages = root.children.iter().filter(|c| c.name == "KeyPackage");
    for (index, package) in (1..).zip(packages) {
        let key = package.child("Key");
        let serial = package.at(&["DeviceInfo", "SerialNo"]).map(Node::value);
        let serial = serial.filter(|s| !s.is_empty());
        let serial = serial.or_else(|| key.and_then(|k| k.attr("Id")).map(str::trim));
        let serial = serial.unwrap_or_default();
        let located = |serial: Option<&str>, (element, problem): Fail| ImportError::Pskc {
            package: Some(index),
            serial: serial.map(str::to_owned),
            element,
            problem,
        };
        if !name_ok(serial, 64, b"") {
            return Err(located(None, fail("DeviceInfo/SerialNo", Problem::Serial)));
        }
        if let Some(first) = seen.insert(serial, index) {
            let (serial, package) = (serial.to_owned(), index);
            return Err(ImportError::DuplicatePackage {
                serial,
                first,
                package,
            });
        }
        let token = key.ok_or_else(|| fail("Key", Problem::Missing));
        let token = token.and_then(|key| pskc_token(key, serial, &keys));
        tokens.push(token.map_err(|f| located(Some(serial), f))?);
    }
    Ok(tokens)
}

/// Decrypts `MACMethod/MACKey` (RFC 6030 section 6.1.1) with the pre-shared key.
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
    let key = aes_cbc(cipher, psk, &data).map_err(|p| fail(PATH, p))?;
    Ok((algorithm, key))
}

fn pskc_token(key: &Node, serial: &str, keys: &Keys) -> Result<ImportedToken, Fail> {
    let totp = match key.attr("Algorithm").unwrap_or_default() {
        uri if HOTP_URIS.contains(&uri) => false,
        uri if TOTP_URIS.contains(&uri) => true,
        uri => return Err(unsupported("Key@Algorithm", format!("algorithm `{uri}`"))),
    };
    const FORMAT: &str = "Key/AlgorithmParameters/ResponseFormat";
    let format = key.at(&["AlgorithmParameters", "ResponseFormat"]);
    let format = format.ok_or_else(|| fail(FORMAT, Problem::Missing))?;
    if let Some(enc) = format.attr("Encoding").filter(|e| *e != "DECIMAL") {
        return Err(unsupported(
            format!("{FORMAT}@Encoding"),
            format!("encoding `{enc}`"),
        ));
    }
    let digits = format.attr("Length").and_then(|l| l.trim().parse().ok());
    let digits = digits.filter(|d| valid_digits(*d));
    let digits = digits.ok_or_else(|| fail(format!("{FORMAT}@Length"), Problem::Digits))?;
    let algorithm = match key.at(&["AlgorithmParameters", "Suite"]).map(Node::value) {
        None => Algorithm::Sha1,
        Some(suite) => Algorithm::parse(suite).ok_or_else(|| {
            unsupported("Key/AlgorithmParameters/Suite", format!("suite `{suite}`"))
        })?,
    };
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
    let psk = keys
        .psk
        .ok_or_else(|| fail(ENC, Problem::KeyRequired(keys.key_name.into())))?;
    let (cipher, value) = cipher_value(enc, ENC)?;
    if let Some(tag) = secret.child("ValueMAC") {
        let mac = keys.mac.as_ref();
        let (algorithm, key) = mac.ok_or_else(|| unsupported(MAC, "ValueMAC without MACMethod"))?;
        let tag = base64(tag.value()).map_err(|p| fail(MAC, p))?;
        if !mac_matches(*algorithm, key, &value, &tag) {
            return Err(fail(MAC, Problem::MacMismatch));
        }
    }
    aes_cbc(cipher, psk, &value).map_err(|p| fail(ENC, p))
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

/// XML Encryption AES-CBC (IV prefixed, PKCS#7 padding) under the pre-shared key.
fn aes_cbc(method: &str, psk: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Problem> {
    let need = match method.strip_prefix("http://www.w3.org/2001/04/xmlenc#") {
        Some("aes128-cbc") => 16,
        Some("aes192-cbc") => 24,
        Some("aes256-cbc") => 32,
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
    let (iv, ciphertext) = data.split_at_checked(16).ok_or(Problem::Decrypt)?;
    let plain = match need {
        16 => cbc::Decryptor::<Aes128>::new_from_slices(psk, iv)
            .map(|d| d.decrypt_padded_vec_mut::<Pkcs7>(ciphertext)),
        24 => cbc::Decryptor::<Aes192>::new_from_slices(psk, iv)
            .map(|d| d.decrypt_padded_vec_mut::<Pkcs7>(ciphertext)),
        _ => cbc::Decryptor::<Aes256>::new_from_slices(psk, iv)
            .map(|d| d.decrypt_padded_vec_mut::<Pkcs7>(ciphertext)),
    };
    match plain {
        Ok(Ok(plain)) => Ok(Zeroizing::new(plain)),
        _ => Err(Problem::Decrypt),
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

    fn open(e: &BytesStart) -> Result<Node, quick_xml::Error> {
        let local = |name: &[u8]| String::from_utf8_lossy(name).into_owned();
        let mut node = Node::default();
        node.name = local(e.local_name().as_ref());
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
    let mut reader = Reader::from_str(xml);
    let (mut stack, mut root) = (Vec::<Node>::new(), None);
    loop {
        let event = reader.read_event();
        let event = event.map_err(|e| error(reader.error_position(), e.to_string()))?;
        let position = reader.buffer_position();
        let bad = |e: quick_xml::Error| error(position, e.to_string());
        let closed = match event {
            Event::Start(_) if stack.len() >= MAX_DEPTH => {
                return Err(error(position, "elements nested too deep".into()));
            }
            Event::Start(e) => {
                stack.push(Node::open(&e).map_err(bad)?);
                None
            }
            Event::Empty(e) => Some(Node::open(&e).map_err(bad)?),
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
}
