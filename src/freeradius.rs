//! A reader of FreeRADIUS 3 `users` / `mods-config/files/authorize` files (rlm_files format),
//! for `otpgate user import --format freeradius`: the pure parser, no store writes.
//!
//! An entry starts at column 0 with a user name (bare, or quoted as `"john doe"`) or `DEFAULT`,
//! followed on the same line by comma-separated check items (`Attr op value`). Lines indented
//! with whitespace below it are its reply items; a reply line ending with `,` continues on the
//! next indented line, one without ends the entry. `#` starts a comment (outside quotes); blank
//! and comment lines may appear anywhere. Values are bare words, `0x..` hex (for octets
//! attributes), or `"..."` / `'...'` strings with FreeRADIUS's escapes (`\"`, `\\`, `\n`, `\r`,
//! `\t`, `\'`, `` \` ``, octal `\ooo`; in single quotes only `\'` and `\\`). Operators: `:=`,
//! `==`, `=`, `+=`, `!=`, `>`, `>=`, `<`, `<=`, `=~`, `!~`, `=*`, `!*`. `$INCLUDE` is refused.
//!
//! What otpgate takes from an entry's check items (attribute names are case-insensitive):
//!
//! | attribute                                     | becomes                                          |
//! |-----------------------------------------------|--------------------------------------------------|
//! | `Cleartext-Password`, `User-Password`         | [`Password::Cleartext`] (hashed by the importer) |
//! | `Password-With-Header` `{scheme}body`         | the value as is; `{clear}`/`{cleartext}` → clear |
//! | `SSHA2-256-Password`, `SSHA2-512-Password`    | `{SSHA256}`, `{SSHA512}` + body                  |
//! | `SSHA-Password`, `SSHA1-Password`             | `{SSHA}` + body                                  |
//! | `SHA-Password`, `SHA1-Password`               | `{SHA}` + body                                   |
//! | `SHA2-Password` (unsalted, by length)         | `{SHA256}` or `{SHA512}` + body                  |
//! | `Crypt-Password` `$6$..`, `$5$..`             | the value as is (DES crypt is refused)           |
//! | `PBKDF2-Password` `HMACSHA2+256:..`           | `{X-PBKDF2}` + value (`$pbkdf2-*$` as is)        |
//! | `TOTP-Secret` (base32), `TOTP-Key` (octets)   | [`FreeRadiusUser::totp_secret`], ≥ 10 octets     |
//!
//! A digest body given as `0x..` hex (the attributes are of type octets) is re-encoded as base64;
//! a text body is kept as written (base64 or hex, told apart as rlm_pap's `normify` does). Every
//! hash is checked with [`PasswordHash::parse`]; MD5, NT, LM and other refused schemes are errors.
//! A `Password-With-Header` value without a header is taken as cleartext (base64 of a headed
//! value is decoded first), as rlm_pap does. Everything else (`Auth-Type`, `Fall-Through`,
//! `Reply-Message`, ...) is listed in [`FreeRadiusUser::skipped`].
//!
//! Whole entries skipped (reported in [`Parsed::skipped`]): `DEFAULT` entries, entries whose
//! check items set `Auth-Type` to `Reject` (disabled users), and entries without a password
//! attribute. Errors (all or nothing): bad syntax, a duplicate user name, a password or TOTP
//! attribute with a comparison operator or among the reply items, two password (or two TOTP)
//! attributes, a refused or malformed hash, a bad TOTP secret, a password written as a
//! back-quoted program or as a double-quoted `%` expansion (both evaluated by FreeRADIUS per
//! request). Errors name the file and line, syntax errors also the column; no error or `Debug`
//! output carries a password, hash or secret (syntax errors do not even repeat the text).

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use data_encoding::{HEXLOWER, HEXLOWER_PERMISSIVE};
use zeroize::Zeroizing;

use crate::auth::password::PasswordHash;

/// One user of the file, as otpgate can take it.
pub struct FreeRadiusUser {
    pub username: String,
    /// The line (1-based) where its entry starts.
    pub line: usize,
    pub password: Password,
    /// rlm_totp's `TOTP-Secret`, base32-decoded (or `TOTP-Key`'s raw octets).
    pub totp_secret: Option<Zeroizing<Vec<u8>>>,
    /// Attribute names present (check and reply items) but not used by otpgate, for the report;
    /// each name once, as first written.
    pub skipped: Vec<String>,
}

/// The first factor of a [`FreeRadiusUser`].
pub enum Password {
    /// A stored hash in a form [`PasswordHash::parse`] accepts (checked by [`parse`]).
    Hash(String),
    /// `Cleartext-Password`: to be hashed to argon2id by the importer, never stored as given.
    Cleartext(Zeroizing<String>),
}

/// A whole entry that is not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The line (1-based) where the entry starts.
    pub line: usize,
    /// `DEFAULT` or `user NAME`.
    pub what: String,
    pub why: String,
}

/// The users of a file and the entries skipped, in file order.
#[derive(Debug)]
pub struct Parsed {
    pub users: Vec<FreeRadiusUser>,
    pub skipped: Vec<Skipped>,
}

/// Why a file could not be read; never carries a password, hash or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct FreeRadiusError {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

/// Prints as `<redacted>` in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Password::Hash(_) => "Hash",
            Password::Cleartext(_) => "Cleartext",
        };
        f.debug_tuple(name).field(&Redacted).finish()
    }
}

impl fmt::Debug for FreeRadiusUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreeRadiusUser")
            .field("username", &self.username)
            .field("line", &self.line)
            .field("password", &self.password)
            .field("totp_secret", &self.totp_secret.as_ref().map(|_| Redacted))
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// Reads a whole `users` / `authorize` file; `file` names it in errors. All or nothing.
pub fn parse(file: &str, text: &str) -> Result<Parsed, FreeRadiusError> {
    let error = |line: usize, problem: String| FreeRadiusError {
        file: file.to_owned(),
        line,
        problem,
    };
    let mut entries = Vec::new();
    // The entry being read, and whether its last line ended with `,` (or was the name line).
    let mut current: Option<(Entry, bool)> = None;
    for (index, line) in text.lines().enumerate() {
        let lineno = index + 1;
        let trimmed = line.trim_start_matches(|c: char| c.is_ascii_whitespace());
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut cursor = Cursor::new(line);
        if trimmed.len() == line.len() {
            entries.extend(current.take().map(|(entry, _)| entry));
            let entry = start_entry(&mut cursor, lineno).map_err(|p| error(lineno, p))?;
            current = Some((entry, true));
            continue;
        }
        let Some((entry, open)) = current.as_mut().filter(|(_, open)| *open) else {
            return Err(error(
                lineno,
                "indented line outside an entry (an entry starts at column 0 with a user name; \
                 a reply line continues only after a line ending with ',')"
                    .to_owned(),
            ));
        };
        let end = cursor
            .items(lineno, &mut entry.reply)
            .map_err(|p| error(lineno, p))?;
        *open = end == LineEnd::Comma;
    }
    entries.extend(current.map(|(entry, _)| entry));

    let mut parsed = Parsed {
        users: Vec::new(),
        skipped: Vec::new(),
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for entry in entries {
        if entry.name == "DEFAULT" {
            parsed.skipped.push(Skipped {
                line: entry.line,
                what: "DEFAULT".to_owned(),
                why: "DEFAULT entries apply to everyone; otpgate has per-application \
                      reply_attributes instead"
                    .to_owned(),
            });
            continue;
        }
        if let Some(first) = seen.insert(entry.name.clone(), entry.line) {
            return Err(error(
                entry.line,
                format!(
                    "user {:?} already has an entry at line {first}; otpgate takes one entry \
                     per user",
                    entry.name
                ),
            ));
        }
        match entry.into_user(file)? {
            Ok(user) => parsed.users.push(user),
            Err(skipped) => parsed.skipped.push(skipped),
        }
    }
    Ok(parsed)
}

/// An entry as read: name, starting line, check and reply items.
struct Entry {
    name: String,
    line: usize,
    check: Vec<Item>,
    reply: Vec<Item>,
}

/// `Attr op value` on line `line`.
struct Item {
    name: String,
    op: Op,
    value: Value,
    line: usize,
}

/// A value after its quotes and escapes were removed.
struct Value {
    bytes: Zeroizing<Vec<u8>>,
    /// `"`, `'` or `` ` ``; `None` for a bare word.
    quote: Option<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Set,
    CmpEq,
    Eq,
    Add,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    RegEq,
    RegNe,
    CmpTrue,
    CmpFalse,
}

/// Operators, two-character ones first so that `==` is not read as `=`.
const OPS: [(&str, Op); 13] = [
    (":=", Op::Set),
    ("==", Op::CmpEq),
    ("+=", Op::Add),
    ("!=", Op::Ne),
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("=~", Op::RegEq),
    ("!~", Op::RegNe),
    ("=*", Op::CmpTrue),
    ("!*", Op::CmpFalse),
    ("=", Op::Eq),
    (">", Op::Gt),
    ("<", Op::Lt),
];

impl Op {
    fn as_str(self) -> &'static str {
        OPS.iter()
            .find(|(_, op)| *op == self)
            .map_or("?", |(text, _)| text)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum LineEnd {
    Eol,
    /// The line ended with `,`: the list continues on the next line.
    Comma,
}

/// The column-0 line of an entry: its name and check items.
fn start_entry(cursor: &mut Cursor<'_>, lineno: usize) -> Result<Entry, String> {
    let name = match cursor.peek() {
        Some(q @ (b'"' | b'\'')) => {
            let value = cursor.quoted(q)?;
            String::from_utf8(value.bytes.to_vec())
                .map_err(|_| "the quoted user name is not UTF-8".to_owned())?
        }
        _ => cursor.word().to_owned(),
    };
    if name.eq_ignore_ascii_case("$INCLUDE") {
        return Err("$INCLUDE is not supported; import each included file on its own".to_owned());
    }
    if name.is_empty() {
        return Err("empty user name".to_owned());
    }
    if cursor.peek().is_some_and(|b| !b.is_ascii_whitespace()) {
        return Err(format!(
            "expected white space after the user name at column {}",
            cursor.col()
        ));
    }
    let mut check = Vec::new();
    if cursor.items(lineno, &mut check)? == LineEnd::Comma {
        return Err(
            "the check items end with ','; they all go on the entry's first line \
                    (reply items follow on indented lines)"
                .to_owned(),
        );
    }
    Ok(Entry {
        name,
        line: lineno,
        check,
        reply: Vec::new(),
    })
}

/// A position in one line.
struct Cursor<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(line: &'a str) -> Self {
        Cursor { line, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.line[self.pos..]
    }

    fn peek(&self) -> Option<u8> {
        self.rest().bytes().next()
    }

    /// 1-based column (in characters) of the position.
    fn col(&self) -> usize {
        self.line[..self.pos].chars().count() + 1
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.pos += rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_whitespace())
                .len();
    }

    /// After white space: nothing left but perhaps a comment.
    fn at_end(&mut self) -> bool {
        self.skip_space();
        matches!(self.peek(), None | Some(b'#'))
    }

    /// Characters up to white space.
    fn word(&mut self) -> &'a str {
        let rest = self.rest();
        let end = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        self.pos += end;
        &rest[..end]
    }

    /// Comma-separated items up to the end of the line (or a comment), appended to `items`.
    fn items(&mut self, lineno: usize, items: &mut Vec<Item>) -> Result<LineEnd, String> {
        if self.at_end() {
            return Ok(LineEnd::Eol);
        }
        loop {
            items.push(self.item(lineno)?);
            if self.at_end() {
                return Ok(LineEnd::Eol);
            }
            if self.peek() != Some(b',') {
                return Err(format!(
                    "expected ',' or the end of the line at column {} (quote values that \
                     contain white space, ',', '#' or '=')",
                    self.col()
                ));
            }
            self.pos += 1;
            if self.at_end() {
                return Ok(LineEnd::Comma);
            }
        }
    }

    /// `Attr op value`, after white space.
    fn item(&mut self, lineno: usize) -> Result<Item, String> {
        let rest = self.rest();
        let bytes = rest.as_bytes();
        let mut end = 0;
        while end < bytes.len() {
            let b = bytes[end];
            let name_char = b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b'/')
                || (b == b':' && bytes.get(end + 1) != Some(&b'='));
            if !name_char {
                break;
            }
            end += 1;
        }
        if end == 0 {
            return Err(format!(
                "expected an attribute name at column {}",
                self.col()
            ));
        }
        let name = rest[..end].to_owned();
        self.pos += end;
        self.skip_space();
        let op_col = self.col();
        let rest = self.rest();
        let Some(&(text, op)) = OPS.iter().find(|(text, _)| rest.starts_with(text)) else {
            return Err(format!(
                "bad or missing operator at column {op_col} (expected :=, ==, =, +=, !=, >, >=, \
                 <, <=, =~, !~, =* or !*)"
            ));
        };
        self.pos += text.len();
        // `===`, `=>`, `:=~`: an operator run on into another operator character is none.
        if matches!(self.peek(), Some(b'=' | b'~' | b'*' | b'<' | b'>' | b'!')) {
            return Err(format!(
                "bad operator at column {op_col} (expected :=, ==, =, +=, !=, >, >=, <, <=, =~, \
                 !~, =* or !*)"
            ));
        }
        self.skip_space();
        let value = match self.peek() {
            Some(q @ (b'"' | b'\'' | b'`')) => self.quoted(q)?,
            _ => self.bare(),
        };
        if value.quote.is_none() && value.bytes.is_empty() {
            return Err(format!("missing value at column {}", self.col()));
        }
        Ok(Item {
            name,
            op,
            value,
            line: lineno,
        })
    }

    /// A bare word: up to white space or the start of a FreeRADIUS token.
    fn bare(&mut self) -> Value {
        let rest = self.rest();
        let end = rest
            .char_indices()
            .find(|&(i, c)| c.is_ascii_whitespace() || starts_token(&rest[i..]))
            .map_or(rest.len(), |(i, _)| i);
        self.pos += end;
        Value {
            bytes: Zeroizing::new(rest.as_bytes()[..end].to_vec()),
            quote: None,
        }
    }

    /// A string in quotes `q` at the position, unescaped as FreeRADIUS 3 does.
    fn quoted(&mut self, q: u8) -> Result<Value, String> {
        let start = self.col();
        let bytes = self.line.as_bytes();
        // Capacity for the whole rest: no reallocation leaves a copy of a secret behind.
        let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() - self.pos));
        let mut i = self.pos + 1;
        while i < bytes.len() {
            let b = bytes[i];
            if b == q {
                self.pos = i + 1;
                return Ok(Value {
                    bytes: out,
                    quote: Some(q),
                });
            }
            let Some(&next) = bytes.get(i + 1).filter(|_| b == b'\\') else {
                out.push(b);
                i += 1;
                continue;
            };
            let octal = |at: usize| bytes.get(at).filter(|d| (b'0'..=b'7').contains(d));
            let escaped = match next {
                b'\'' | b'\\' => Some(next),
                _ if q == b'\'' => None,
                b'"' | b'`' => Some(next),
                b'r' => Some(b'\r'),
                b'n' => Some(b'\n'),
                b't' => Some(b'\t'),
                b'0'..=b'7' => match (octal(i + 2), octal(i + 3)) {
                    (Some(&d2), Some(&d3)) => {
                        let value = u32::from(next - b'0') << 6
                            | u32::from(d2 - b'0') << 3
                            | u32::from(d3 - b'0');
                        let byte = u8::try_from(value).map_err(|_| {
                            format!("octal escape above \\377 in the string at column {start}")
                        })?;
                        out.push(byte);
                        i += 4;
                        continue;
                    }
                    _ => None,
                },
                _ => None,
            };
            match escaped {
                Some(c) => {
                    out.push(c);
                    i += 2;
                }
                None => {
                    out.push(b'\\');
                    i += 1;
                }
            }
        }
        Err(format!(
            "unterminated quoted string starting at column {start}"
        ))
    }
}

/// Whether `s` starts with a token that ends a bare word (FreeRADIUS's `fr_tokens`).
fn starts_token(s: &str) -> bool {
    s.starts_with([',', '#', ';', '=', '<', '>', '{', '}', '(', ')'])
        || ["+=", "-=", "++", ":=", "!=", "!~", "!*"]
            .iter()
            .any(|t| s.starts_with(t))
}

/// What an attribute is to otpgate.
enum Role {
    Password(Scheme),
    Totp(TotpForm),
    AuthType,
    Other,
}

#[derive(Clone, Copy)]
enum Scheme {
    Cleartext,
    /// `User-Password`, the pre-FreeRADIUS-3 spelling of a cleartext check item.
    UserPassword,
    WithHeader,
    /// An octets attribute whose body goes after this `{HEADER}`.
    Digest(&'static str),
    /// `SHA2-Password`: SHA-256 or SHA-512 by length.
    Sha2,
    Crypt,
    Pbkdf2,
    /// A FreeRADIUS scheme otpgate does not verify.
    Unsupported,
}

#[derive(Clone, Copy)]
enum TotpForm {
    Base32,
    Octets,
}

fn role(name: &str) -> Role {
    let scheme = match name.to_ascii_lowercase().as_str() {
        "cleartext-password" => Scheme::Cleartext,
        "user-password" => Scheme::UserPassword,
        "password-with-header" => Scheme::WithHeader,
        "ssha2-256-password" => Scheme::Digest("{SSHA256}"),
        "ssha2-512-password" => Scheme::Digest("{SSHA512}"),
        "ssha-password" | "ssha1-password" => Scheme::Digest("{SSHA}"),
        "sha-password" | "sha1-password" => Scheme::Digest("{SHA}"),
        // Refused by PasswordHash::parse, which says why.
        "md5-password" => Scheme::Digest("{MD5}"),
        "smd5-password" => Scheme::Digest("{SMD5}"),
        "nt-password" => Scheme::Digest("{NT}"),
        "lm-password" => Scheme::Digest("{LM}"),
        "sha2-password" => Scheme::Sha2,
        "crypt-password" => Scheme::Crypt,
        "pbkdf2-password" => Scheme::Pbkdf2,
        "ssha2-224-password"
        | "ssha2-384-password"
        | "sha3-password"
        | "ssha3-224-password"
        | "ssha3-256-password"
        | "ssha3-384-password"
        | "ssha3-512-password"
        | "ns-mta-md5-password" => Scheme::Unsupported,
        "totp-secret" => return Role::Totp(TotpForm::Base32),
        "totp-key" => return Role::Totp(TotpForm::Octets),
        "auth-type" => return Role::AuthType,
        _ => return Role::Other,
    };
    Role::Password(scheme)
}

impl Entry {
    /// The user, or why the whole entry is skipped; an error for anything otpgate cannot take.
    fn into_user(self, file: &str) -> Result<Result<FreeRadiusUser, Skipped>, FreeRadiusError> {
        let error = |line: usize, problem: String| FreeRadiusError {
            file: file.to_owned(),
            line,
            problem,
        };
        let skip = |why: String| {
            Ok(Err(Skipped {
                line: self.line,
                what: format!("user {:?}", self.name),
                why,
            }))
        };
        let rejected = self.check.iter().any(|item| {
            matches!(role(&item.name), Role::AuthType)
                && matches!(item.op, Op::Set | Op::Eq | Op::CmpEq | Op::Add)
                && item.value.bytes.eq_ignore_ascii_case(b"reject")
        });
        if rejected {
            return skip("Auth-Type := Reject: FreeRADIUS rejects this user".to_owned());
        }
        let mut skipped: Vec<String> = Vec::new();
        let mut password: Option<(Password, &Item)> = None;
        let mut totp: Option<(Zeroizing<Vec<u8>>, &Item)> = None;
        for item in &self.check {
            let taken = match role(&item.name) {
                Role::Password(scheme) => Some(Ok(scheme)),
                Role::Totp(form) => Some(Err(form)),
                Role::AuthType | Role::Other => None,
            };
            let Some(taken) = taken else {
                if !skipped.iter().any(|s| s.eq_ignore_ascii_case(&item.name)) {
                    skipped.push(item.name.clone());
                }
                continue;
            };
            let user_password = matches!(taken, Ok(Scheme::UserPassword));
            let sets = matches!(item.op, Op::Set | Op::Eq | Op::Add)
                || (user_password && item.op == Op::CmpEq);
            if !sets {
                return Err(error(
                    item.line,
                    format!(
                        "{} {} compares instead of setting a value; use :=",
                        item.name,
                        item.op.as_str()
                    ),
                ));
            }
            if item.value.quote == Some(b'`') {
                return Err(error(
                    item.line,
                    format!(
                        "{}: back-quoted values (programs run by FreeRADIUS) are not supported",
                        item.name
                    ),
                ));
            }
            if item.value.quote == Some(b'"') && item.value.bytes.contains(&b'%') {
                return Err(error(
                    item.line,
                    format!(
                        "{}: a double-quoted value containing % is expanded by FreeRADIUS per \
                         request; write it in single quotes if the % is literal",
                        item.name
                    ),
                ));
            }
            let at = |problem: String| error(item.line, format!("{}: {problem}", item.name));
            match taken {
                Ok(scheme) => {
                    let value = password_of(scheme, &item.value.bytes).map_err(at)?;
                    if let Some((_, first)) = &password {
                        return Err(error(
                            item.line,
                            format!(
                                "two password attributes for user {:?}: {} and {}",
                                self.name, first.name, item.name
                            ),
                        ));
                    }
                    password = Some((value, item));
                }
                Err(form) => {
                    let secret = totp_of(form, &item.value.bytes).map_err(at)?;
                    if let Some((_, first)) = &totp {
                        return Err(error(
                            item.line,
                            format!(
                                "two TOTP secrets for user {:?}: {} and {}",
                                self.name, first.name, item.name
                            ),
                        ));
                    }
                    totp = Some((secret, item));
                }
            }
        }
        for item in &self.reply {
            if let Role::Password(_) | Role::Totp(_) = role(&item.name) {
                return Err(error(
                    item.line,
                    format!(
                        "{} is a reply item (an indented line), which FreeRADIUS does not check; \
                         move it to the entry's first line",
                        item.name
                    ),
                ));
            }
            if !skipped.iter().any(|s| s.eq_ignore_ascii_case(&item.name)) {
                skipped.push(item.name.clone());
            }
        }
        let totp_secret = totp.map(|(secret, _)| secret);
        let Some((password, _)) = password else {
            let why = if totp_secret.is_some() {
                "a TOTP secret but no password attribute: otpgate needs a password as the first \
                 factor"
            } else {
                "no password attribute"
            };
            return skip(why.to_owned());
        };
        Ok(Ok(FreeRadiusUser {
            username: self.name,
            line: self.line,
            password,
            totp_secret,
            skipped,
        }))
    }
}

/// Standard base64 that accepts input with or without `=` padding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| "the value is not UTF-8".to_owned())
}

/// The octets of an octets-type value: `0x..` hex, else the bytes as written.
fn octets(bytes: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    match bytes {
        [b'0', b'x' | b'X', hex @ ..] => HEXLOWER_PERMISSIVE
            .decode(hex)
            .map(|raw| Some(Zeroizing::new(raw)))
            .map_err(|_| "not valid hex after 0x".to_owned()),
        _ => Ok(None),
    }
}

fn checked(stored: String) -> Result<Password, String> {
    match PasswordHash::parse(&stored) {
        Ok(_) => Ok(Password::Hash(stored)),
        Err(e) => Err(e.to_string()),
    }
}

/// `header` + the body of an octets digest attribute.
fn digest(header: &str, bytes: &[u8]) -> Result<Password, String> {
    let body = match octets(bytes)? {
        Some(raw) => {
            let b64 = B64.encode(&*raw);
            // PasswordHash::parse reads an even-length all-hex body as hex (rlm_pap `normify`).
            if b64.len() % 2 == 0 && b64.bytes().all(|b| b.is_ascii_hexdigit()) {
                HEXLOWER.encode(&raw)
            } else {
                b64
            }
        }
        None => text(bytes)?.to_owned(),
    };
    checked(format!("{header}{body}"))
}

/// `SHA2-Password` / `{sha2}`: whichever of SHA-256 and SHA-512 the length fits.
fn sha2(bytes: &[u8]) -> Result<Password, String> {
    digest("{SHA256}", bytes)
        .or_else(|_| digest("{SHA512}", bytes))
        .map_err(|_| {
            "neither a SHA-256 nor a SHA-512 digest (SHA-224 and SHA-384 are not supported)"
                .to_owned()
        })
}

fn cleartext(password: &str) -> Result<Password, String> {
    if password.is_empty() {
        return Err("empty password".to_owned());
    }
    Ok(Password::Cleartext(Zeroizing::new(password.to_owned())))
}

fn password_of(scheme: Scheme, bytes: &[u8]) -> Result<Password, String> {
    match scheme {
        Scheme::Cleartext | Scheme::UserPassword => cleartext(text(bytes)?),
        Scheme::WithHeader => with_header(text(bytes)?, true),
        Scheme::Digest(header) => digest(header, bytes),
        Scheme::Sha2 => sha2(bytes),
        Scheme::Crypt => {
            let value = text(bytes)?;
            if value.starts_with(['$', '{']) {
                checked(value.to_owned())
            } else {
                checked(format!("{{crypt}}{value}"))
            }
        }
        Scheme::Pbkdf2 => {
            let raw = octets(bytes)?;
            let value = text(raw.as_deref().map_or(bytes, |raw| raw.as_slice()))?;
            if value.starts_with(['$', '{']) {
                checked(value.to_owned())
            } else {
                checked(format!("{{X-PBKDF2}}{value}"))
            }
        }
        Scheme::Unsupported => Err("this scheme is not supported by otpgate".to_owned()),
    }
}

/// rlm_pap's `Password-With-Header`: `{scheme}body`; without a header, base64 of a headed
/// value or else cleartext.
fn with_header(value: &str, may_decode: bool) -> Result<Password, String> {
    if let Some(rest) = value.strip_prefix('{') {
        let (tag, body) = rest
            .split_once('}')
            .ok_or("the {scheme} header has no closing }")?;
        return match tag.to_ascii_lowercase().as_str() {
            "clear" | "cleartext" => cleartext(body),
            "sha2" => sha2(body.as_bytes()),
            _ => checked(value.to_owned()),
        };
    }
    if may_decode {
        if let Ok(decoded) = B64.decode(value).map(Zeroizing::new) {
            if let Ok(decoded) = std::str::from_utf8(&decoded) {
                if decoded.starts_with('{') && decoded.contains('}') {
                    return with_header(decoded, false);
                }
            }
        }
    }
    cleartext(value)
}

fn totp_of(form: TotpForm, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let secret = match form {
        TotpForm::Base32 => {
            // The seed files' base32 (either case, padding optional).
            crate::otp::import::base32(text(bytes)?).map_err(|p| p.to_string())?
        }
        TotpForm::Octets => match octets(bytes)? {
            Some(raw) => raw,
            None => Zeroizing::new(bytes.to_vec()),
        },
    };
    // The seed files' floor of 80 bits.
    crate::otp::import::long_enough(secret).map_err(|p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use data_encoding::{BASE32, HEXLOWER};
    use sha1::Sha1;
    use sha2::{Digest, Sha256, Sha512};

    const PW: &str = "correct horse";
    const SALT: &[u8] = b"\xa1\xb2\xc3\xd4\xe5\xf6\x07\x18";

    /// digest(PW || salt) || salt, the bytes of `{SSHA*}` and the `SSHA*-Password` attributes.
    fn salted<D: Digest>(salt: &[u8]) -> Vec<u8> {
        let mut out = D::new()
            .chain_update(PW)
            .chain_update(salt)
            .finalize()
            .to_vec();
        out.extend_from_slice(salt);
        out
    }

    fn b64(bytes: &[u8]) -> String {
        B64.encode(bytes)
    }

    /// The 1-based number of the first line starting with `prefix`.
    fn line_of(text: &str, prefix: &str) -> usize {
        text.lines()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starts with {prefix}"))
            + 1
    }

    fn parse_ok(text: &str) -> Parsed {
        parse("authorize", text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err(text: &str) -> FreeRadiusError {
        match parse("authorize", text) {
            Ok(parsed) => panic!("parsed {parsed:?} from {text:?}"),
            Err(e) => e,
        }
    }

    fn user<'a>(parsed: &'a Parsed, name: &str) -> &'a FreeRadiusUser {
        parsed
            .users
            .iter()
            .find(|u| u.username == name)
            .unwrap_or_else(|| panic!("no user {name} in {parsed:?}"))
    }

    /// The hash of `user`, parsed and verified against PW.
    fn assert_hash_verifies(user: &FreeRadiusUser, password: &str) -> String {
        let Password::Hash(stored) = &user.password else {
            panic!("{user:?} has no hash");
        };
        let hash = PasswordHash::parse(stored).unwrap_or_else(|e| panic!("{user:?}: {e}"));
        assert!(hash.verify(password.as_bytes()), "{}", user.username);
        assert!(!hash.verify(b"correct horsf"), "{}", user.username);
        stored.clone()
    }

    fn cleartext_of(user: &FreeRadiusUser) -> &str {
        match &user.password {
            Password::Cleartext(text) => text.as_str(),
            Password::Hash(_) => panic!("{user:?} has a hash"),
        }
    }

    /// `crypt.crypt("correct horse", "$6$saltsalt")`, a vector of `auth::password`'s tests.
    const CRYPT: &str =
        "$6$saltsalt$hRM5XZ86KXEw9UOmjigeVqFgULtFB2sgpC9lXQDfMib3Zgw7mEiUvBJI2EplzfAqxL5\
                         Vvwp2scFtv/uamSo5z0";

    /// A hand-edited authorize file with every password form otpgate takes.
    fn realistic() -> String {
        let ssha256 = salted::<Sha256>(SALT);
        let ssha512 = salted::<Sha512>(SALT);
        let ssha1 = salted::<Sha1>(b"abcd");
        let sha1 = Sha1::digest(PW).to_vec();
        let sha256 = Sha256::digest(PW).to_vec();
        let headed = b64(format!("{{SSHA512}}{}", b64(&ssha512)).as_bytes());
        format!(
            r#"#
# 	authorize: the users file of rlm_files, as FreeRADIUS 3 ships and admins edit it.
#
DEFAULT	Framed-Protocol == PPP
	Framed-Protocol = PPP,
	Fall-Through = Yes

alice	SSHA2-256-Password := "{alice}", Simultaneous-Use := 1  # hand-written
	Reply-Message = "Hello, \"alice\" \\o/",
	# a comment between continuation lines

	Framed-IP-Address = 192.0.2.10,
	Class := 0x616c696365, Fall-Through = No
bob SSHA2-512-Password := 0x{bob}
carol	ssha-password := '{carol}'
dave	SHA1-Password := {dave}
erin	Crypt-Password := "{erin}"
frank	PBKDF2-Password := "HMACSHA2+256:AAAD6A==:obLD1OX2Bxg=:57Jm7InjgsY69GSKH/kmliALc4H5oZX3U1pu6d5XAK0="
grace	Password-With-Header := "{{ssha256}}{alice}"
heidi	Password-With-Header := '{{Cleartext}}correct horse'
ivan	Password-With-Header := "{ivan}"
"john doe"	Cleartext-Password := "pa\"ss\\word \101", TOTP-Secret := "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	Service-Type = Login-User
kate	SHA2-Password := 0X{kate}, Auth-Type := PAP
leo	PBKDF2-Password := "$pbkdf2-sha256$1000$obLD1OX2Bxg$57Jm7InjgsY69GSKH/kmliALc4H5oZX3U1pu6d5XAK0"
mallory	Auth-Type := Reject, Cleartext-Password := "correct horse"
	Reply-Message = "Account disabled"
nina	TOTP-Secret := "gezdgnbvgy3tqojqgezdgnbvgy3tqojq"
oscar	Auth-Type := Accept
	Reply-Message = "no password here"
pat	User-Password == "correct horse"
DEFAULT	Auth-Type := Reject
	Reply-Message = "Denied"
"#,
            alice = b64(&ssha256),
            bob = HEXLOWER.encode(&ssha512),
            carol = b64(&ssha1),
            dave = HEXLOWER.encode(&sha1),
            ivan = headed,
            kate = HEXLOWER.encode(&sha256),
            erin = CRYPT,
        )
    }

    #[test]
    fn realistic_authorize_file() {
        let text = realistic();
        let parsed = parse_ok(&text);
        let names: Vec<&str> = parsed.users.iter().map(|u| u.username.as_str()).collect();
        let expected = [
            "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "john doe",
            "kate", "leo", "pat",
        ];
        assert_eq!(names, expected);
        for user in &parsed.users {
            let prefix = if user.username == "john doe" {
                "\"john doe\"".to_owned()
            } else {
                format!("{}\t", user.username)
            };
            let prefix = if user.username == "bob" {
                "bob "
            } else {
                &prefix
            };
            assert_eq!(user.line, line_of(&text, prefix), "{}", user.username);
        }
        // (user, the stored form starts with, scheme of PasswordHash)
        for (name, start) in [
            ("alice", "{SSHA256}"),
            ("bob", "{SSHA512}"),
            ("carol", "{SSHA}"),
            ("dave", "{SHA}"),
            ("erin", "$6$saltsalt$"),
            ("frank", "{X-PBKDF2}HMACSHA2+256:"),
            ("grace", "{ssha256}"),
            ("ivan", "{SSHA512}"),
            ("kate", "{SHA256}"),
            ("leo", "$pbkdf2-sha256$"),
        ] {
            let stored = assert_hash_verifies(user(&parsed, name), PW);
            assert!(stored.starts_with(start), "{name}: {start}");
        }
        assert_eq!(
            assert_hash_verifies(user(&parsed, "grace"), PW)[9..],
            assert_hash_verifies(user(&parsed, "alice"), PW)[9..]
        );
        assert_eq!(cleartext_of(user(&parsed, "heidi")), PW);
        assert_eq!(cleartext_of(user(&parsed, "pat")), PW);
        let john = user(&parsed, "john doe");
        assert_eq!(cleartext_of(john), "pa\"ss\\word A");
        assert_eq!(
            john.totp_secret.as_deref().map(Vec::as_slice),
            Some(&b"12345678901234567890"[..])
        );
        assert_eq!(john.skipped, ["Service-Type"]);
        let alice = user(&parsed, "alice");
        assert!(alice.totp_secret.is_none());
        assert_eq!(
            alice.skipped,
            [
                "Simultaneous-Use",
                "Reply-Message",
                "Framed-IP-Address",
                "Class",
                "Fall-Through"
            ]
        );
        assert_eq!(user(&parsed, "kate").skipped, ["Auth-Type"]);
        assert!(user(&parsed, "bob").skipped.is_empty());

        let skipped: Vec<(usize, &str, &str)> = parsed
            .skipped
            .iter()
            .map(|s| (s.line, s.what.as_str(), s.why.as_str()))
            .collect();
        let default = "DEFAULT entries apply to everyone; otpgate has per-application \
                       reply_attributes instead";
        assert_eq!(
            skipped,
            [
                (line_of(&text, "DEFAULT"), "DEFAULT", default),
                (
                    line_of(&text, "mallory"),
                    "user \"mallory\"",
                    "Auth-Type := Reject: FreeRADIUS rejects this user"
                ),
                (
                    line_of(&text, "nina"),
                    "user \"nina\"",
                    "a TOTP secret but no password attribute: otpgate needs a password as the \
                     first factor"
                ),
                (
                    line_of(&text, "oscar"),
                    "user \"oscar\"",
                    "no password attribute"
                ),
                (text.lines().count() - 1, "DEFAULT", default),
            ]
        );
    }

    #[test]
    fn totp_secret_forms() {
        let twenty = b"12345678901234567890";
        let sixteen = b"0123456789abcdef";
        let padded = BASE32.encode(sixteen);
        assert!(padded.ends_with("======"));
        for (value, secret) in [
            ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ".to_owned(), &twenty[..]),
            ("gezdgnbvgy3tqojqGEZDGNBVGY3TQOJQ".to_owned(), twenty),
            (padded.clone(), sixteen),
            (padded.trim_end_matches('=').to_lowercase(), sixteen),
        ] {
            let text = format!("bob Cleartext-Password := x, TOTP-Secret := \"{value}\"\n");
            let parsed = parse_ok(&text);
            let got = parsed.users[0].totp_secret.as_deref().map(Vec::as_slice);
            assert_eq!(got, Some(secret), "{value}");
        }
        let text = format!(
            "bob Cleartext-Password := x, TOTP-Key := 0x{}",
            HEXLOWER.encode(twenty)
        );
        let got = &parse_ok(&text).users[0].totp_secret;
        assert_eq!(got.as_deref().map(Vec::as_slice), Some(&twenty[..]));
    }

    #[test]
    fn quoting_escapes_comments_and_line_endings() {
        let text = "# leading comment\r\n\
                    bob\tCleartext-Password := \"a\\\"b\\\\c\\n\\t\\101\\q, #x\" # comment\r\n\
                    \tReply-Message = 'it\\'s \\\\ \\n', Idle-Timeout = 600 ,\r\n\
                    \r\n\
                    \t# comment inside the reply list\r\n\
                    \tSession-Timeout := 3600\r\n\
                    carol Cleartext-Password := 'x%y'\n\
                    dave Cleartext-Password := bare-word.with/slashes:colon\n";
        let parsed = parse_ok(text);
        let bob = user(&parsed, "bob");
        assert_eq!(cleartext_of(bob), "a\"b\\c\n\tA\\q, #x");
        assert_eq!(
            bob.skipped,
            ["Reply-Message", "Idle-Timeout", "Session-Timeout"]
        );
        assert_eq!(cleartext_of(user(&parsed, "carol")), "x%y");
        assert_eq!(user(&parsed, "carol").line, 7);
        assert_eq!(
            cleartext_of(user(&parsed, "dave")),
            "bare-word.with/slashes:colon"
        );
        // An entry with a name only, and a trailing comma before the next entry.
        let parsed = parse_ok("judy\nkim Cleartext-Password := x\n\tA = 1,\nlee\n");
        assert_eq!(parsed.users.len(), 1);
        let whats: Vec<&str> = parsed.skipped.iter().map(|s| s.what.as_str()).collect();
        assert_eq!(whats, ["user \"judy\"", "user \"lee\""]);
        assert!(parse_ok("").users.is_empty() && parse_ok("# only\n\n").skipped.is_empty());
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        // `line | fragment of the problem | file text`, with \n and \t for newline and tab.
        let table = r#"
1 | bad or missing operator at column 24 | bob Cleartext-Password : "x"
1 | bad operator at column 24 | bob Cleartext-Password === x
2 | bad or missing operator at column 16 | bob Cleartext-Password := x\n\tReply-Message ~ "hi"
2 | unterminated quoted string starting at column 27 | # c\nbob Cleartext-Password := "abc\n
2 | unterminated | bob Cleartext-Password := x\n\tReply-Message = 'abc\'
4 | user "bob" already has an entry at line 1 | bob A := 1\n\n# again\nbob A := 2
1 | TOTP-Secret: not valid base32 (RFC 4648) | bob Cleartext-Password := x, TOTP-Secret := "GEZDGNBV1"
1 | TOTP-Secret: secret has 40 bits, at least 80 are required (RFC 4226 R6) | bob TOTP-Secret := GEZDGNBV
1 | TOTP-Key: secret has 16 bits | bob Cleartext-Password := x, TOTP-Key := 0x3132
1 | two TOTP secrets | bob TOTP-Secret := GEZDGNBVGY3TQOJQ, TOTP-Key := 0x31323334353637383930
1 | unknown password scheme prefix {SSHA384} | bob Password-With-Header := "{SSHA384}abcd"
1 | {SMD5} is not accepted | bob Password-With-Header := "{SMD5}abcd"
1 | no closing } | bob Password-With-Header := "{SSHA256abcd"
2 | $INCLUDE is not supported | bob Cleartext-Password := x\n$INCLUDE /etc/raddb/more
1 | "bob": Cleartext-Password and SSHA2-256-Password | bob Cleartext-Password := x, \
    SSHA2-256-Password := "{ssha}"
1 | MD5-Password: password scheme {MD5} is not | bob MD5-Password := "X03MO1qnZdYdgyfeuILPmQ=="
1 | {NT} is not accepted | bob NT-Password := 0xb4b9b02e6f09a9bd760f388b67351e2b
1 | SSHA2-384-Password: this scheme is not supported | bob SSHA2-384-Password := 0x00
1 | DES crypt is too weak | bob Crypt-Password := ab01FAX.bQRSU
1 | not valid hex after 0x | bob SSHA2-256-Password := 0xabc
1 | neither a SHA-256 nor a SHA-512 | bob SHA2-Password := 0x0011
1 | indented line outside an entry | \tReply-Message = x
3 | indented line outside an entry | bob Cleartext-Password := x\n\tA = 1\n\tB = 2
1 | the check items end with ',' | bob Cleartext-Password := x,\n\tA = 1
2 | Cleartext-Password is a reply item | bob Auth-Type := Local\n\tCleartext-Password := x
2 | TOTP-Secret is a reply item | bob Auth-Type := Local\n\tTOTP-Secret := GEZDGNBVGY3TQOJQ
1 | Cleartext-Password == compares | bob Cleartext-Password == x
1 | Cleartext-Password =~ compares | bob Cleartext-Password =~ x
1 | expected ',' or the end of the line at column 26 | bob SSHA-Password := abcd=
1 | missing value at column 27 | bob Cleartext-Password := ,x
1 | expanded by FreeRADIUS | bob Cleartext-Password := "50%off"
1 | back-quoted | bob Cleartext-Password := `/bin/pw`
1 | Cleartext-Password: empty password | bob Cleartext-Password := ""
1 | octal escape above | bob Cleartext-Password := "\400"
1 | Cleartext-Password: the value is not UTF-8 | bob Cleartext-Password := "\377"
1 | expected white space after the user name | "bob"x Cleartext-Password := y
1 | expected an attribute name at column 5 | bob , Cleartext-Password := y
"#;
        let ssha = b64(&salted::<Sha256>(SALT));
        // A row may go on after `\` at the end of a line.
        for row in table.replace("\\\n    ", "").lines().skip(1) {
            let [line, fragment, text] = row.splitn(3, " | ").collect::<Vec<_>>()[..] else {
                panic!("bad table row {row}");
            };
            let line: usize = line.parse().expect("line number");
            let text = text
                .replace("\\n", "\n")
                .replace("\\t", "\t")
                .replace("{ssha}", &ssha);
            let err = parse_err(&text);
            assert_eq!(
                (err.file.as_str(), err.line),
                ("authorize", line),
                "{text:?}: {err}"
            );
            assert!(err.problem.contains(fragment), "{text:?}: {err}");
            assert_eq!(
                err.to_string(),
                format!("authorize:{line}: {}", err.problem)
            );
        }
        // All or nothing: an error after good entries is still an error.
        let text = format!("{}zed Cleartext-Password := \"x\n", realistic());
        assert_eq!(parse_err(&text).line, text.lines().count());
    }

    #[test]
    fn no_secret_in_errors_or_debug() {
        const SECRET: &str = "Zebra!Secret!1";
        for text in [
            "bob Cleartext-Password := \"Zebra!Secret!1\" \"more\"",
            "bob Cleartext-Password := x, Zebra!Secret!1",
            "bob Cleartext-Password := x, Zebra =",
            "bob Cleartext-Password := x\n\tZebra ~ 1",
            "bob Cleartext-Password := Zebra!Secret!1=x",
            "bob Cleartext-Password := \"Zebra!Secret!1",
            "bob Cleartext-Password == \"Zebra!Secret!1\"",
            "bob Cleartext-Password := \"Zebra!Secret!1\", User-Password := \"Zebra!Secret!1\"",
            "bob Password-With-Header := \"{foo}Zebra!Secret!1\"",
            "bob Password-With-Header := \"{MD5}Zebra!Secret!1\"",
            "bob SSHA2-256-Password := \"Zebra!Secret!1\"",
            "bob SHA2-Password := \"Zebra!Secret!1\"",
            "bob Crypt-Password := \"$6$Zebra!Secret!1\"",
            "bob PBKDF2-Password := \"Zebra!Secret!1\"",
            "bob Cleartext-Password := x, TOTP-Secret := \"Zebra!Secret!1\"",
            "bob Auth-Type := Local\n\tCleartext-Password := \"Zebra!Secret!1\"",
            "bob Cleartext-Password := \"Zebra!Secret!1%\"",
        ] {
            let err = parse_err(text);
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("Zebra"), "{text:?}: {shown}");
            assert!(!shown.contains(SECRET), "{text:?}: {shown}");
        }
        let text = realistic();
        let parsed = parse_ok(&text);
        let debug = format!("{parsed:?} {parsed:#?}");
        assert!(debug.contains("Hash(<redacted>)") && debug.contains("Cleartext(<redacted>)"));
        assert!(debug.contains("totp_secret: Some(<redacted>)"));
        let mut secrets = vec![
            PW.to_owned(),
            "pa\\\"ss".to_owned(),
            "12345678901234567890".to_owned(),
            "GEZDGNBV".to_owned(),
            "49, 50, 51".to_owned(),
            "saltsalt".to_owned(),
            "obLD1OX2Bxg".to_owned(),
        ];
        for user in &parsed.users {
            if let Password::Hash(stored) = &user.password {
                let body = stored.rsplit(['}', '$', ':']).next().unwrap_or_default();
                secrets.push(body.to_owned());
            }
        }
        for secret in &secrets {
            assert!(
                !debug.contains(secret.as_str()),
                "Debug shows {secret}: {debug}"
            );
        }
    }

    #[test]
    fn truncated_or_mutated_files_give_errors_not_panics() {
        let text = realistic();
        let mut errors = 0;
        for (at, _) in text.char_indices().step_by(3) {
            let (head, tail) = text.split_at(at);
            for insert in ["", "\"", "'", ",", "\\", "\n", "\n\t", "#", "=", "0x", "{"] {
                let mutant = format!("{head}{insert}{tail}");
                errors += usize::from(parse("m", &mutant).is_err());
            }
            errors += usize::from(parse("m", head).is_err());
        }
        assert!(errors > 0);
    }
}
