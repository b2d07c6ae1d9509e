//! RADIUS dictionaries in FreeRADIUS 3 format: attribute names, numbers and data types, so
//! reply attributes can be configured by name and packets shown by name in logs.
//!
//! The shipped files (`dictionaries/` at the repository root) are compiled in with
//! `include_str!`, so the server needs no files on disk; an operator folder adds to them
//! ([`Dictionary::load`]). The syntax read:
//!
//! ```text
//! # comment                              (anywhere on a line)
//! ATTRIBUTE  name  number  type  [flags]  flags: has_tag, encrypt=1|2|3, array, concat
//! VALUE      attribute  value-name  number
//! VENDOR     name  number  [format=T,L]   T in 1,2,4 and L in 0,1,2 (octets); default 1,1
//! BEGIN-VENDOR name ... END-VENDOR name  the ATTRIBUTEs between are that vendor's
//! $INCLUDE   path                         relative to the folder of the including file
//! ```
//!
//! Types are those of RFC 8044 under their FreeRADIUS names: `string`, `octets`, `ipaddr`,
//! `ipv4prefix`, `ipv6addr`, `ipv6prefix`, `ifid`, `integer`, `integer64`, `date`, `byte`,
//! `short`, `signed`, `ether`, `abinary` (sent as octets); `tlv`, `vsa` and `extended` are read
//! but cannot be encoded. `octets[N]` is read as `octets` (the size is not enforced). Keywords,
//! types and names are matched without regard to case, as FreeRADIUS does. Dotted numbers
//! (TLVs, RFC 6929 extended attributes), `BEGIN-VENDOR name format=...` and `format=T,L,c` are
//! refused with an error rather than misread. A `BEGIN-VENDOR` block covers the lines of its
//! own file, not those of files `$INCLUDE`d inside it.
//!
//! Vendor attributes travel inside Vendor-Specific (26) as RFC 2865 section 5.26 describes:
//! vendor id on 4 octets, then the vendor type and vendor length fields on the widths its
//! `VENDOR` line gives. Tagged attributes follow RFC 2868 section 3.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use data_encoding::{HEXLOWER, HEXLOWER_PERMISSIVE};
use ipnet::{Ipv4Net, Ipv6Net};

/// RFC 2865 section 5.26.
const VENDOR_SPECIFIC: u8 = 26;
/// An attribute is at most 255 octets, 2 of them its type and length (RFC 2865 section 5).
const MAX_ATTRIBUTE_LEN: usize = 255;
/// How deeply `$INCLUDE`s may nest.
const MAX_INCLUDE_DEPTH: usize = 16;
/// Standard attributes never shown in logs, whatever the dictionary says: User-Password,
/// CHAP-Password, State (half of a challenge's answer), CHAP-Challenge, Tunnel-Password,
/// EAP-Message (it carries EAP methods' credentials), Message-Authenticator.
const HIDDEN_CODES: [u32; 7] = [2, 3, 24, 60, 69, 79, 80];
/// RFC 2868 section 3.5: a string's first octet is a tag if it is 0x00..=0x1F.
const MAX_TAG: u8 = 0x1f;

/// `(name, text)` of shipped dictionary files, compiled in.
macro_rules! shipped {
    ($($name:literal),*) => {
        [$(($name, include_str!(concat!("../../dictionaries/", $name)))),*]
    };
}

/// The shipped dictionaries: `dictionary` is the entry point, the others are `$INCLUDE`d by it.
const BUILTIN: [(&str, &str); 13] = shipped!(
    "dictionary",
    "dictionary.rfc2865",
    "dictionary.rfc2866",
    "dictionary.rfc2868",
    "dictionary.rfc2869",
    "dictionary.rfc3162",
    "dictionary.rfc4818",
    "dictionary.rfc5176",
    "dictionary.cisco",
    "dictionary.fortinet",
    "dictionary.juniper",
    "dictionary.microsoft",
    "dictionary.paloalto"
);

/// An attribute's data type (RFC 8044), under its FreeRADIUS dictionary name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    String,
    Octets,
    IpAddr,
    Ipv4Prefix,
    Ipv6Addr,
    Ipv6Prefix,
    Ifid,
    Integer,
    Integer64,
    Date,
    Byte,
    Short,
    Signed,
    Ether,
    Abinary,
    Tlv,
    Vsa,
    Extended,
}

impl DataType {
    const ALL: [DataType; 18] = [
        DataType::String,
        DataType::Octets,
        DataType::IpAddr,
        DataType::Ipv4Prefix,
        DataType::Ipv6Addr,
        DataType::Ipv6Prefix,
        DataType::Ifid,
        DataType::Integer,
        DataType::Integer64,
        DataType::Date,
        DataType::Byte,
        DataType::Short,
        DataType::Signed,
        DataType::Ether,
        DataType::Abinary,
        DataType::Tlv,
        DataType::Vsa,
        DataType::Extended,
    ];

    /// The name used in dictionary files.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::String => "string",
            DataType::Octets => "octets",
            DataType::IpAddr => "ipaddr",
            DataType::Ipv4Prefix => "ipv4prefix",
            DataType::Ipv6Addr => "ipv6addr",
            DataType::Ipv6Prefix => "ipv6prefix",
            DataType::Ifid => "ifid",
            DataType::Integer => "integer",
            DataType::Integer64 => "integer64",
            DataType::Date => "date",
            DataType::Byte => "byte",
            DataType::Short => "short",
            DataType::Signed => "signed",
            DataType::Ether => "ether",
            DataType::Abinary => "abinary",
            DataType::Tlv => "tlv",
            DataType::Vsa => "vsa",
            DataType::Extended => "extended",
        }
    }

    /// Reads a type name; `octets[N]` is `octets`.
    fn parse(word: &str) -> Option<DataType> {
        let sized = word
            .get(..7)
            .filter(|prefix| prefix.eq_ignore_ascii_case("octets["))
            .and_then(|_| word.get(7..)?.strip_suffix(']')?.parse::<u8>().ok());
        if sized.is_some() {
            return Some(DataType::Octets);
        }
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(word))
    }

    /// For the integer types: smallest and largest value, and width in octets.
    fn integer_range(self) -> Option<(i128, i128, usize)> {
        let unsigned = |width: usize| Some((0, (1i128 << (8 * width)) - 1, width));
        match self {
            DataType::Byte => unsigned(1),
            DataType::Short => unsigned(2),
            DataType::Integer | DataType::Date => unsigned(4),
            DataType::Integer64 => unsigned(8),
            DataType::Signed => Some((i32::MIN.into(), i32::MAX.into(), 4)),
            _ => None,
        }
    }
}

/// One attribute definition. `vendor` is the SMI enterprise number of a Vendor-Specific
/// attribute, `None` for a standard one; `encrypt` is FreeRADIUS's `encrypt=` flag (1 as
/// User-Password, 2 as Tunnel-Password, 3 Ascend's), 0 for none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDef {
    pub name: String,
    pub vendor: Option<u32>,
    pub code: u32,
    pub data_type: DataType,
    pub has_tag: bool,
    pub encrypt: u8,
}

impl AttributeDef {
    /// Same attribute, whatever the case of its name: redefining it so is harmless.
    fn same_as(&self, other: &AttributeDef) -> bool {
        self.vendor == other.vendor
            && self.code == other.code
            && self.data_type == other.data_type
            && self.has_tag == other.has_tag
            && self.encrypt == other.encrypt
    }

    /// For integer types: smallest and largest value, and width in octets. RFC 2868 section
    /// 3.1: a tagged integer is a tag octet and 3 octets of value.
    fn integer_range(&self) -> Option<(i128, i128, usize)> {
        let range = self.data_type.integer_range()?;
        Some(if self.has_tag {
            (0, (1 << 24) - 1, 3)
        } else {
            range
        })
    }

    /// Never shown in logs: passwords, secrets, challenge-response material (CHAP, MS-CHAP:
    /// with the user name, a response can be cracked offline), anything encrypted.
    fn is_hidden(&self) -> bool {
        let name = self.name.to_ascii_lowercase();
        (self.vendor.is_none() && HIDDEN_CODES.contains(&self.code))
            || self.encrypt != 0
            || name.contains("password")
            || name.contains("chap")
    }
}

/// A value as configuration gives it: text or an integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    Text(String),
    Integer(i64),
}

/// A dictionary that does not read: the file (as named to us), its line (0: the file itself)
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct DictionaryError {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

/// A `VENDOR` line: the widths of the type and length fields of its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vendor {
    name: String,
    id: u32,
    type_octets: usize,
    length_octets: usize,
}

impl Vendor {
    /// RFC 2865 section 5.26 suggests one octet each; unknown vendors are read so.
    const DEFAULT_FORMAT: (usize, usize) = (1, 1);

    fn max_code(&self) -> u64 {
        (1u64 << (8 * self.type_octets)) - 1
    }
}

/// The `VALUE` names of one attribute.
#[derive(Debug, Clone, Default)]
struct ValueNames {
    /// Lowercase name to number.
    numbers: HashMap<String, u64>,
    /// Number to the first name given to it.
    names: HashMap<u64, String>,
}

/// Attribute definitions by name and by number, with their values' names.
#[derive(Debug, Clone, Default)]
pub struct Dictionary {
    attributes: Vec<AttributeDef>,
    /// Lowercase name to index in `attributes`.
    by_name: HashMap<String, usize>,
    /// (vendor, code) to the first attribute defined with it.
    by_code: HashMap<(Option<u32>, u32), usize>,
    vendors: Vec<Vendor>,
    values: HashMap<(Option<u32>, u32), ValueNames>,
}

impl Dictionary {
    /// The shipped dictionaries, embedded in the binary (the server runs with no files on disk).
    pub fn builtin() -> Result<Dictionary, DictionaryError> {
        let mut dictionary = Dictionary::default();
        let source = Origin::Builtin
            .open("dictionary")
            .map_err(|problem| DictionaryError {
                file: "builtin:dictionary".to_string(),
                line: 0,
                problem,
            })?;
        dictionary.add_source(source)?;
        Ok(dictionary)
    }

    /// [`Dictionary::builtin`] plus, given a folder, `<folder>/dictionary` (which may
    /// `$INCLUDE` files beside it). A missing folder or `dictionary` file is an error naming it.
    pub fn load(folder: Option<&Path>) -> Result<Dictionary, DictionaryError> {
        let mut dictionary = Dictionary::builtin()?;
        if let Some(folder) = folder {
            let problem = match std::fs::metadata(folder) {
                Ok(metadata) if metadata.is_dir() => None,
                Ok(_) => Some("not a folder".to_string()),
                Err(e) => Some(format!("cannot read the folder: {e}")),
            };
            if let Some(problem) = problem {
                return Err(DictionaryError {
                    file: folder.display().to_string(),
                    line: 0,
                    problem,
                });
            }
            let source = Origin::Folder(folder.to_path_buf())
                .open("dictionary")
                .map_err(|problem| DictionaryError {
                    file: folder.join("dictionary").display().to_string(),
                    line: 0,
                    problem,
                })?;
            dictionary.add_source(source)?;
        }
        Ok(dictionary)
    }

    /// Adds the definitions in `text`; `name` is used in errors. A `$INCLUDE` in it reads from
    /// `base`, and is an error without one. On error nothing is added.
    pub fn add_text(
        &mut self,
        name: &str,
        text: &str,
        base: Option<&Path>,
    ) -> Result<(), DictionaryError> {
        self.add_source(Source {
            name: name.to_string(),
            key: format!("text:{name}"),
            text: text.to_string(),
            origin: base.map_or(Origin::Nowhere, |base| Origin::Folder(base.to_path_buf())),
        })
    }

    /// The attribute of that name, in any case.
    pub fn attribute(&self, name: &str) -> Option<&AttributeDef> {
        let index = self.by_name.get(&name.to_ascii_lowercase())?;
        self.attributes.get(*index)
    }

    /// The attribute with that number: a standard one with `vendor` `None`, else a
    /// Vendor-Specific one of that vendor. Of several names for one number, the first defined.
    pub fn by_code(&self, vendor: Option<u32>, code: u32) -> Option<&AttributeDef> {
        let index = self.by_code.get(&(vendor, code))?;
        self.attributes.get(*index)
    }

    /// The `VALUE` name of `number` for that attribute.
    pub fn value_name(&self, attribute: &AttributeDef, number: u64) -> Option<&str> {
        let names = self.values.get(&(attribute.vendor, attribute.code))?;
        names.names.get(&number).map(String::as_str)
    }

    /// Encodes one attribute, header included, ready to append to a packet: a standard one as
    /// type, length, value; a vendor one inside Vendor-Specific (RFC 2865 section 5.26) with
    /// that vendor's field widths.
    ///
    /// Integer types take an integer, a `VALUE` name or decimal text; addresses and prefixes
    /// take text; `octets` take `0x`-prefixed hex or raw text; `date` takes seconds since the
    /// epoch. Values that do not fit (out of range, longer than the attribute can hold) are
    /// refused, never truncated; so are empty values (RFC 2865 section 5), encrypted attributes
    /// and the `tlv`, `vsa` and `extended` types. Tagged attributes (RFC 2868) are sent with
    /// tag 0: an integer as a zero octet and 3 octets of value, a string with no tag octet
    /// unless its first octet could be read as one.
    pub fn encode(&self, name: &str, value: &AttributeValue) -> Result<Vec<u8>, String> {
        let def = self
            .attribute(name)
            .ok_or_else(|| format!("unknown attribute {name}"))?;
        if def.encrypt != 0 {
            return Err(format!(
                "{} is sent encrypted (encrypt={}), which is not supported here",
                def.name, def.encrypt
            ));
        }
        let data = self
            .encode_data(def, value)
            .map_err(|problem| format!("{}: {problem}", def.name))?;
        if data.is_empty() {
            return Err(format!("{}: empty value (RFC 2865 section 5)", def.name));
        }
        match def.vendor {
            None => standard_attribute(def.code, &data),
            Some(id) => self
                .vendor_by_id(id)
                .ok_or_else(|| format!("vendor {id} of {} is not defined", def.name))
                .and_then(|vendor| vendor_attribute(vendor, def.code, &data)),
        }
        .map_err(|problem| format!("{}: {problem}", def.name))
    }

    /// Names the attributes of a packet body (the octets after the 20-octet header) for logs:
    /// `User-Name="alice", NAS-IP-Address=192.0.2.1, Attr-99=0x0102`. Passwords, secrets and
    /// encrypted attributes show as `<hidden>`. Stops at the first attribute with a bad length.
    pub fn describe(&self, attributes: &[u8]) -> String {
        let mut parts = Vec::new();
        let mut rest = attributes;
        while !rest.is_empty() {
            let Some((code, data, tail)) = split_attribute(rest, 1, 1) else {
                parts.push(format!(
                    "<malformed at octet {}>",
                    attributes.len() - rest.len()
                ));
                break;
            };
            if code == u32::from(VENDOR_SPECIFIC) {
                parts.extend(self.describe_vendor_specific(data));
            } else {
                parts.push(self.describe_one(None, code, data));
            }
            rest = tail;
        }
        parts.join(", ")
    }

    fn vendor_by_id(&self, id: u32) -> Option<&Vendor> {
        self.vendors.iter().find(|vendor| vendor.id == id)
    }

    fn vendor_by_name(&self, name: &str) -> Option<&Vendor> {
        self.vendors
            .iter()
            .find(|vendor| vendor.name.eq_ignore_ascii_case(name))
    }

    /// The number of a `VALUE` name of that attribute, in any case.
    fn value_number(&self, def: &AttributeDef, name: &str) -> Option<u64> {
        let names = self.values.get(&(def.vendor, def.code))?;
        names.numbers.get(&name.to_ascii_lowercase()).copied()
    }

    /// Reads a source (and what it includes) into a copy, kept only if all of it reads.
    fn add_source(&mut self, source: Source) -> Result<(), DictionaryError> {
        let mut next = self.clone();
        Parser {
            dictionary: &mut next,
            open: Vec::new(),
        }
        .read(source, 0)?;
        *self = next;
        Ok(())
    }

    fn define_attribute(&mut self, def: AttributeDef) -> Result<(), String> {
        let key = def.name.to_ascii_lowercase();
        if let Some(old) = self.attribute(&key) {
            return if old.same_as(&def) {
                Ok(())
            } else {
                Err(format!(
                    "{} is already defined differently ({})",
                    def.name,
                    definition_text(old)
                ))
            };
        }
        let index = self.attributes.len();
        self.by_code.entry((def.vendor, def.code)).or_insert(index);
        self.by_name.insert(key, index);
        self.attributes.push(def);
        Ok(())
    }

    fn define_vendor(&mut self, vendor: Vendor) -> Result<(), String> {
        let clash = self.vendors.iter().find(|old| {
            let same_name = old.name.eq_ignore_ascii_case(&vendor.name);
            let same_format =
                (old.type_octets, old.length_octets) == (vendor.type_octets, vendor.length_octets);
            (same_name && old.id != vendor.id) || (old.id == vendor.id && !same_format)
        });
        if let Some(old) = clash {
            return Err(format!(
                "vendor {} {} clashes with vendor {} {} format={},{}",
                vendor.name, vendor.id, old.name, old.id, old.type_octets, old.length_octets
            ));
        }
        if self.vendor_by_name(&vendor.name).is_none() {
            self.vendors.push(vendor);
        }
        Ok(())
    }

    fn define_value(&mut self, attribute: &str, name: &str, number: &str) -> Result<(), String> {
        let def = self
            .attribute(attribute)
            .ok_or_else(|| format!("VALUE for undefined attribute {attribute}"))?;
        let (_, max, width) = def.integer_range().ok_or_else(|| {
            format!(
                "VALUE for {}, of type {}: only integer types have VALUEs",
                def.name,
                def.data_type.as_str()
            )
        })?;
        let number = parse_number(number)?;
        if i128::from(number) > max {
            return Err(format!(
                "VALUE {name} = {number} does not fit the {width} octets of {}",
                def.name
            ));
        }
        let names = self.values.entry((def.vendor, def.code)).or_default();
        let key = name.to_ascii_lowercase();
        match names.numbers.get(&key) {
            Some(&old) if old != number => Err(format!(
                "VALUE {name} of {attribute} is already defined as {old}"
            )),
            Some(_) => Ok(()),
            None => {
                names.numbers.insert(key, number);
                names
                    .names
                    .entry(number)
                    .or_insert_with(|| name.to_string());
                Ok(())
            }
        }
    }

    fn encode_data(&self, def: &AttributeDef, value: &AttributeValue) -> Result<Vec<u8>, String> {
        match def.data_type {
            DataType::String => Ok(tag_string(def, text(value)?.as_bytes().to_vec())),
            DataType::Octets | DataType::Abinary => octets(text(value)?),
            DataType::IpAddr => parse_text::<Ipv4Addr>(value).map(|ip| ip.octets().to_vec()),
            DataType::Ipv6Addr => parse_text::<Ipv6Addr>(value).map(|ip| ip.octets().to_vec()),
            DataType::Ipv4Prefix => ipv4_prefix(parse_text::<Ipv4Net>(value)?),
            DataType::Ipv6Prefix => ipv6_prefix(parse_text::<Ipv6Net>(value)?),
            DataType::Ifid => ifid(text(value)?),
            DataType::Ether => ether(text(value)?),
            DataType::Integer
            | DataType::Integer64
            | DataType::Date
            | DataType::Byte
            | DataType::Short
            | DataType::Signed => self.integer_data(def, value),
            DataType::Tlv | DataType::Vsa | DataType::Extended => Err(format!(
                "attributes of type {} cannot be set",
                def.data_type.as_str()
            )),
        }
    }

    /// An integer type's octets, from a number, a `VALUE` name or decimal text.
    fn integer_data(&self, def: &AttributeDef, value: &AttributeValue) -> Result<Vec<u8>, String> {
        let number = match value {
            AttributeValue::Integer(number) => i128::from(*number),
            AttributeValue::Text(text) => match self.value_number(def, text.trim()) {
                Some(number) => i128::from(number),
                None => text.trim().parse::<i128>().map_err(|_| {
                    format!("{text:?} is neither a VALUE of {} nor a number", def.name)
                })?,
            },
        };
        let (min, max, width) = def.integer_range().ok_or("not an integer type")?;
        if number < 0 && min == 0 {
            return Err(format!(
                "{number} is negative, {} is unsigned",
                def.data_type.as_str()
            ));
        }
        if number < min || number > max {
            return Err(format!("{number} is out of range {min}..={max}"));
        }
        let tag = if def.has_tag { vec![0] } else { Vec::new() };
        // Two's complement, big-endian: the low `width` octets are the value.
        let octets = number.to_be_bytes();
        Ok([tag.as_slice(), &octets[octets.len() - width..]].concat())
    }

    /// The named parts of one Vendor-Specific attribute, or the whole of it in hex if it is
    /// not in its vendor's format.
    fn describe_vendor_specific(&self, data: &[u8]) -> Vec<String> {
        let whole = || vec![format!("Vendor-Specific={}", hex(data))];
        let Some((id, payload)) = data.split_first_chunk::<4>() else {
            return whole();
        };
        if payload.is_empty() {
            return whole();
        }
        let id = u32::from_be_bytes(*id);
        let (type_octets, length_octets) = self
            .vendor_by_id(id)
            .map_or(Vendor::DEFAULT_FORMAT, |vendor| {
                (vendor.type_octets, vendor.length_octets)
            });
        let mut parts = Vec::new();
        let mut rest = payload;
        while !rest.is_empty() {
            let Some((code, value, tail)) = split_attribute(rest, type_octets, length_octets)
            else {
                return whole();
            };
            parts.push(self.describe_one(Some(id), code, value));
            rest = tail;
        }
        parts
    }

    /// `Name=value` (`Name:tag=value` for a tagged attribute with a tag).
    fn describe_one(&self, vendor: Option<u32>, code: u32, data: &[u8]) -> String {
        let Some(def) = self.by_code(vendor, code) else {
            let hidden = vendor.is_none() && HIDDEN_CODES.contains(&code);
            let shown = if hidden {
                "<hidden>".to_string()
            } else {
                hex(data)
            };
            return match vendor {
                None => format!("Attr-{code}={shown}"),
                Some(id) => format!("Attr-26.{id}.{code}={shown}"),
            };
        };
        if def.is_hidden() {
            return format!("{}=<hidden>", def.name);
        }
        let (tag, value) = split_tag(def, data);
        let tag = tag.map_or(String::new(), |tag| format!(":{tag}"));
        let shown = self.value_text(def, value).unwrap_or_else(|| hex(value));
        format!("{}{tag}={shown}", def.name)
    }

    /// A value in the form configuration would give it; `None` if it is not well formed.
    fn value_text(&self, def: &AttributeDef, data: &[u8]) -> Option<String> {
        match def.data_type {
            DataType::String => std::str::from_utf8(data).ok().map(|s| format!("{s:?}")),
            DataType::IpAddr => <[u8; 4]>::try_from(data)
                .ok()
                .map(|a| Ipv4Addr::from(a).to_string()),
            DataType::Ipv6Addr => <[u8; 16]>::try_from(data)
                .ok()
                .map(|a| Ipv6Addr::from(a).to_string()),
            DataType::Ipv4Prefix => match data {
                [0, len @ 0..=32, a, b, c, d] => {
                    Some(format!("{}/{len}", Ipv4Addr::new(*a, *b, *c, *d)))
                }
                _ => None,
            },
            DataType::Ipv6Prefix => match data {
                [0, len @ 0..=128, prefix @ ..] if prefix.len() <= 16 => {
                    let mut address = [0u8; 16];
                    address[..prefix.len()].copy_from_slice(prefix);
                    Some(format!("{}/{len}", Ipv6Addr::from(address)))
                }
                _ => None,
            },
            DataType::Ifid => <[u8; 8]>::try_from(data).ok().map(|a| {
                let groups: Vec<String> = a
                    .chunks(2)
                    .map(|g| format!("{:x}", u16::from_be_bytes([g[0], g[1]])))
                    .collect();
                groups.join(":")
            }),
            DataType::Ether => <[u8; 6]>::try_from(data).ok().map(|a| {
                let octets: Vec<String> = a.iter().map(|o| format!("{o:02x}")).collect();
                octets.join(":")
            }),
            DataType::Date => <[u8; 4]>::try_from(data).ok().map(|a| {
                let seconds = u64::from(u32::from_be_bytes(a));
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds))
                    .to_string()
            }),
            DataType::Integer
            | DataType::Integer64
            | DataType::Byte
            | DataType::Short
            | DataType::Signed => self.integer_text(def, data),
            DataType::Octets
            | DataType::Abinary
            | DataType::Tlv
            | DataType::Vsa
            | DataType::Extended => None,
        }
    }

    /// An integer's `VALUE` name, or its number.
    fn integer_text(&self, def: &AttributeDef, data: &[u8]) -> Option<String> {
        let (_, _, width) = def.integer_range()?;
        if data.len() != width {
            return None;
        }
        let number = match def.data_type {
            DataType::Signed => i128::from(i32::from_be_bytes(data.try_into().ok()?)),
            _ => i128::from(be_number(data)),
        };
        let name = u64::try_from(number)
            .ok()
            .and_then(|number| self.value_name(def, number));
        Some(name.map_or_else(|| number.to_string(), str::to_string))
    }
}

/// One dictionary text, and where its `$INCLUDE`s are found.
struct Source {
    /// For errors: the path as given, `builtin:<file>`, or the name given to `add_text`.
    name: String,
    /// Identifies the file for include loop detection.
    key: String,
    text: String,
    origin: Origin,
}

/// Where `$INCLUDE` reads files from.
enum Origin {
    /// The embedded copies of the shipped files.
    Builtin,
    /// A folder on disk.
    Folder(PathBuf),
    /// Nowhere: text given without a base folder.
    Nowhere,
}

impl Origin {
    fn open(&self, target: &str) -> Result<Source, String> {
        match self {
            Origin::Builtin => {
                let (_, text) = BUILTIN
                    .iter()
                    .find(|(name, _)| *name == target)
                    .ok_or_else(|| format!("no built-in dictionary file {target}"))?;
                Ok(Source {
                    name: format!("builtin:{target}"),
                    key: format!("builtin:{target}"),
                    text: text.to_string(),
                    origin: Origin::Builtin,
                })
            }
            Origin::Folder(folder) => {
                let path = folder.join(target);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let key = path.canonicalize().unwrap_or_else(|_| path.clone());
                let folder = path
                    .parent()
                    .map_or_else(|| folder.clone(), Path::to_path_buf);
                Ok(Source {
                    name: path.display().to_string(),
                    key: key.display().to_string(),
                    text,
                    origin: Origin::Folder(folder),
                })
            }
            Origin::Nowhere => Err(format!(
                "cannot $INCLUDE {target}: no folder to read it from"
            )),
        }
    }
}

/// An open `BEGIN-VENDOR` block.
struct Block {
    vendor: u32,
    name: String,
    line: usize,
}

/// Reads sources into a dictionary.
struct Parser<'d> {
    dictionary: &'d mut Dictionary,
    /// The files being read, outermost first.
    open: Vec<String>,
}

impl Parser<'_> {
    fn read(&mut self, source: Source, depth: usize) -> Result<(), DictionaryError> {
        self.open.push(source.key.clone());
        let read = self.read_lines(&source, depth);
        self.open.pop();
        read
    }

    fn read_lines(&mut self, source: &Source, depth: usize) -> Result<(), DictionaryError> {
        let mut block: Option<Block> = None;
        for (index, line_text) in source.text.lines().enumerate() {
            let line = index + 1;
            let at = |problem: String| DictionaryError {
                file: source.name.clone(),
                line,
                problem,
            };
            let content = line_text
                .split_once('#')
                .map_or(line_text, |(code, _)| code);
            let fields: Vec<&str> = content.split_whitespace().collect();
            let Some((keyword, args)) = fields.split_first() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "ATTRIBUTE" => self.attribute(args, block.as_ref()).map_err(at)?,
                "VALUE" => match args {
                    [attribute, name, number] => self
                        .dictionary
                        .define_value(attribute, name, number)
                        .map_err(at)?,
                    _ => return Err(at("VALUE takes an attribute, a name and a number".into())),
                },
                "VENDOR" => self.vendor(args).map_err(at)?,
                "BEGIN-VENDOR" => {
                    block = Some(self.begin_vendor(args, block.as_ref(), line).map_err(at)?);
                }
                "END-VENDOR" => {
                    end_vendor(args, block.as_ref()).map_err(at)?;
                    block = None;
                }
                "$INCLUDE" => self.include(args, source, depth, &at)?,
                _ => return Err(at(format!("unknown keyword {keyword}"))),
            }
        }
        match block {
            Some(block) => Err(DictionaryError {
                file: source.name.clone(),
                line: block.line,
                problem: format!("BEGIN-VENDOR {} has no END-VENDOR", block.name),
            }),
            None => Ok(()),
        }
    }

    /// `ATTRIBUTE name number type [flags]`, a vendor's inside its block.
    fn attribute(&mut self, args: &[&str], block: Option<&Block>) -> Result<(), String> {
        let (name, number, type_name, flags) = match args {
            [name, number, type_name] => (name, number, type_name, None),
            [name, number, type_name, flags] => (name, number, type_name, Some(*flags)),
            _ => return Err("ATTRIBUTE takes a name, a number, a type and flags".into()),
        };
        check_name(name)?;
        let vendor = match block {
            Some(block) => self.dictionary.vendor_by_id(block.vendor),
            None => None,
        };
        let max = vendor.map_or(255, Vendor::max_code);
        let code = parse_number(number)?;
        if code > max || (vendor.is_none() && code == 0) {
            return Err(format!("attribute number {code} is out of range 1..={max}"));
        }
        let data_type =
            DataType::parse(type_name).ok_or_else(|| format!("unknown type {type_name}"))?;
        let (has_tag, encrypt) = parse_flags(flags)?;
        if has_tag && !matches!(data_type, DataType::String | DataType::Integer) {
            return Err(format!(
                "has_tag on type {}: only string and integer attributes have tags",
                data_type.as_str()
            ));
        }
        self.dictionary.define_attribute(AttributeDef {
            name: name.to_string(),
            vendor: vendor.map(|vendor| vendor.id),
            code: u32::try_from(code).map_err(|e| e.to_string())?,
            data_type,
            has_tag,
            encrypt,
        })
    }

    /// `VENDOR name number [format=T,L]`.
    fn vendor(&mut self, args: &[&str]) -> Result<(), String> {
        let (name, number, format) = match args {
            [name, number] => (name, number, None),
            [name, number, format] => (name, number, Some(*format)),
            _ => return Err("VENDOR takes a name, a number and a format".into()),
        };
        check_name(name)?;
        let id = parse_number(number)?;
        // RFC 2865 section 5.26: the high-order octet of the Vendor-Id is 0.
        if !(1..=0xff_ffff).contains(&id) {
            return Err(format!("vendor number {id} is out of range 1..=16777215"));
        }
        let (type_octets, length_octets) = match format {
            Some(format) => parse_format(format)?,
            None => Vendor::DEFAULT_FORMAT,
        };
        self.dictionary.define_vendor(Vendor {
            name: name.to_string(),
            id: u32::try_from(id).map_err(|e| e.to_string())?,
            type_octets,
            length_octets,
        })
    }

    fn begin_vendor(
        &self,
        args: &[&str],
        open: Option<&Block>,
        line: usize,
    ) -> Result<Block, String> {
        let [name] = args else {
            return Err("BEGIN-VENDOR takes a vendor name (format=... is not supported)".into());
        };
        if let Some(open) = open {
            return Err(format!(
                "BEGIN-VENDOR {name} inside BEGIN-VENDOR {}",
                open.name
            ));
        }
        let vendor = self
            .dictionary
            .vendor_by_name(name)
            .ok_or_else(|| format!("BEGIN-VENDOR for undefined vendor {name}"))?;
        Ok(Block {
            vendor: vendor.id,
            name: name.to_string(),
            line,
        })
    }

    /// `$INCLUDE path`, relative to the folder of the including source.
    fn include(
        &mut self,
        args: &[&str],
        source: &Source,
        depth: usize,
        at: &dyn Fn(String) -> DictionaryError,
    ) -> Result<(), DictionaryError> {
        let [target] = args else {
            return Err(at("$INCLUDE takes one path".into()));
        };
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(at(format!(
                "$INCLUDE {target}: includes nested more than {MAX_INCLUDE_DEPTH} deep"
            )));
        }
        let included = source.origin.open(target).map_err(at)?;
        if self.open.contains(&included.key) {
            return Err(at(format!(
                "$INCLUDE {target}: include loop ({} is already being read)",
                included.name
            )));
        }
        self.read(included, depth + 1)
    }
}

fn end_vendor(args: &[&str], open: Option<&Block>) -> Result<(), String> {
    let [name] = args else {
        return Err("END-VENDOR takes a vendor name".into());
    };
    match open {
        None => Err(format!("END-VENDOR {name} without BEGIN-VENDOR")),
        Some(open) if !open.name.eq_ignore_ascii_case(name) => Err(format!(
            "END-VENDOR {name} closes BEGIN-VENDOR {}",
            open.name
        )),
        Some(_) => Ok(()),
    }
}

/// Names as FreeRADIUS allows them: letters, digits, `-`, `_`, `.` and `/`.
fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_./".contains(c);
    if name.chars().all(allowed) {
        Ok(())
    } else {
        Err(format!("invalid name {name}"))
    }
}

/// A decimal or `0x` hexadecimal number.
fn parse_number(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse::<u64>(),
    };
    parsed.map_err(|_| {
        if text.contains('.') {
            format!("bad number {text} (dotted TLV and extended numbers are not supported)")
        } else {
            format!("bad number {text}")
        }
    })
}

/// `has_tag`, `encrypt=N`, `array`, `concat`, comma-separated. The last two change nothing
/// here: values are encoded one to an attribute, and none is longer than an attribute.
fn parse_flags(flags: Option<&str>) -> Result<(bool, u8), String> {
    let mut has_tag = false;
    let mut encrypt = 0;
    for flag in flags.into_iter().flat_map(|flags| flags.split(',')) {
        match flag.to_ascii_lowercase().as_str() {
            "has_tag" => has_tag = true,
            "array" | "concat" => {}
            "encrypt=1" => encrypt = 1,
            "encrypt=2" => encrypt = 2,
            "encrypt=3" => encrypt = 3,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok((has_tag, encrypt))
}

/// `format=T,L`: the octets of a vendor's type and length fields, as FreeRADIUS allows them.
fn parse_format(format: &str) -> Result<(usize, usize), String> {
    let widths = format
        .strip_prefix("format=")
        .and_then(|widths| widths.split_once(','))
        .and_then(|(t, l)| Some((t.parse::<usize>().ok()?, l.parse::<usize>().ok()?)));
    match widths {
        Some((t @ (1 | 2 | 4), l @ (0..=2))) => Ok((t, l)),
        _ => Err(format!(
            "unsupported vendor format {format} (format=T,L with T 1, 2 or 4 and L 0, 1 or 2)"
        )),
    }
}

/// One attribute of `bytes` with fields of those widths: its type, its value and what follows.
/// With no length field the attribute takes all of `bytes` (RFC 2865 section 5.26 formats).
fn split_attribute(
    bytes: &[u8],
    type_octets: usize,
    length_octets: usize,
) -> Option<(u32, &[u8], &[u8])> {
    let header = type_octets + length_octets;
    let code = be_number(bytes.get(..type_octets)?);
    let length = match length_octets {
        0 => bytes.len(),
        _ => usize::try_from(be_number(bytes.get(type_octets..header)?)).ok()?,
    };
    if length < header || length > bytes.len() {
        return None;
    }
    let (attribute, rest) = bytes.split_at(length);
    Some((u32::try_from(code).ok()?, attribute.get(header..)?, rest))
}

fn be_number(octets: &[u8]) -> u64 {
    octets
        .iter()
        .fold(0, |number, octet| (number << 8) | u64::from(*octet))
}

/// RFC 2868 section 3: the tag of a tagged attribute (`None` for tag 0 or no tag) and the rest.
fn split_tag<'a>(def: &AttributeDef, data: &'a [u8]) -> (Option<u8>, &'a [u8]) {
    let tagged = def.has_tag
        && match def.data_type {
            DataType::Integer => data.len() == 4,
            _ => data.first().is_some_and(|first| *first <= MAX_TAG),
        };
    match data.split_first() {
        Some((tag, rest)) if tagged => ((*tag != 0).then_some(*tag), rest),
        _ => (None, data),
    }
}

/// A tagged string is sent without a tag octet unless its first octet would read as one.
fn tag_string(def: &AttributeDef, data: Vec<u8>) -> Vec<u8> {
    match data.first() {
        Some(first) if def.has_tag && *first <= MAX_TAG => [&[0], data.as_slice()].concat(),
        _ => data,
    }
}

fn standard_attribute(code: u32, data: &[u8]) -> Result<Vec<u8>, String> {
    let room = MAX_ATTRIBUTE_LEN - 2;
    if data.len() > room {
        return Err(too_long(data.len(), room));
    }
    let code = u8::try_from(code).map_err(|e| e.to_string())?;
    Ok([&[code, (2 + data.len()) as u8], data].concat())
}

/// RFC 2865 section 5.26: Vendor-Specific, its length, the vendor id, then the vendor's
/// attribute with type and length fields of the vendor's widths.
fn vendor_attribute(vendor: &Vendor, code: u32, data: &[u8]) -> Result<Vec<u8>, String> {
    let header = 2 + 4 + vendor.type_octets + vendor.length_octets;
    let room = MAX_ATTRIBUTE_LEN - header;
    if data.len() > room {
        return Err(too_long(data.len(), room));
    }
    let code = code.to_be_bytes();
    let inner_length = (vendor.type_octets + vendor.length_octets + data.len()).to_be_bytes();
    let mut out = vec![VENDOR_SPECIFIC, (header + data.len()) as u8];
    out.extend_from_slice(&vendor.id.to_be_bytes());
    out.extend_from_slice(&code[code.len() - vendor.type_octets..]);
    out.extend_from_slice(&inner_length[inner_length.len() - vendor.length_octets..]);
    out.extend_from_slice(data);
    Ok(out)
}

fn too_long(length: usize, room: usize) -> String {
    format!("value is {length} octets, at most {room} fit in the attribute")
}

fn text(value: &AttributeValue) -> Result<&str, String> {
    match value {
        AttributeValue::Text(text) => Ok(text),
        AttributeValue::Integer(number) => Err(format!("needs text, not the number {number}")),
    }
}

fn parse_text<T: std::str::FromStr>(value: &AttributeValue) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let text = text(value)?;
    text.trim()
        .parse()
        .map_err(|e| format!("{text:?} is not valid: {e}"))
}

/// `0x`-prefixed hex, or the text's own octets.
fn octets(text: &str) -> Result<Vec<u8>, String> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => HEXLOWER_PERMISSIVE
            .decode(hex.as_bytes())
            .map_err(|e| format!("bad hex {text:?}: {e}")),
        None => Ok(text.as_bytes().to_vec()),
    }
}

/// RFC 8044 section 3.11: reserved octet, prefix length, 4 octets; host bits must be zero.
fn ipv4_prefix(net: Ipv4Net) -> Result<Vec<u8>, String> {
    if net.trunc() != net {
        return Err(format!("{net} has bits set past its prefix length"));
    }
    Ok([&[0, net.prefix_len()], net.addr().octets().as_slice()].concat())
}

/// RFC 3162 section 2.3: reserved octet, prefix length, then the octets the prefix covers.
fn ipv6_prefix(net: Ipv6Net) -> Result<Vec<u8>, String> {
    if net.trunc() != net {
        return Err(format!("{net} has bits set past its prefix length"));
    }
    let covered = usize::from(net.prefix_len()).div_ceil(8);
    let address = net.addr().octets();
    Ok([&[0, net.prefix_len()], &address[..covered]].concat())
}

/// RFC 3162 section 2.2: an interface id as four groups of hex, `1:2:3:4`.
fn ifid(text: &str) -> Result<Vec<u8>, String> {
    hex_groups(text, &[':'], 4, 2)
        .ok_or_else(|| format!("{text:?} is not an interface id (four groups like 0:0:0:1)"))
}

/// A MAC address, `00:11:22:33:44:55` or with `-`.
fn ether(text: &str) -> Result<Vec<u8>, String> {
    hex_groups(text, &[':', '-'], 6, 1)
        .ok_or_else(|| format!("{text:?} is not an Ethernet address (like 00:11:22:33:44:55)"))
}

/// `count` groups of hex separated by one of `separators`, each `octets` octets wide.
fn hex_groups(text: &str, separators: &[char], count: usize, octets: usize) -> Option<Vec<u8>> {
    let groups: Vec<&str> = text.trim().split(separators).collect();
    if groups.len() != count {
        return None;
    }
    let mut out = Vec::with_capacity(count * octets);
    for group in groups {
        let digits = group.chars().all(|c| c.is_ascii_hexdigit());
        if !digits || group.is_empty() || group.len() > 2 * octets {
            return None;
        }
        let number = u64::from_str_radix(group, 16).ok()?;
        out.extend_from_slice(&number.to_be_bytes()[8 - octets..]);
    }
    Some(out)
}

fn hex(data: &[u8]) -> String {
    format!("0x{}", HEXLOWER.encode(data))
}

/// An attribute's definition as a dictionary line would give it.
fn definition_text(def: &AttributeDef) -> String {
    let vendor = def
        .vendor
        .map_or(String::new(), |id| format!("vendor {id} "));
    let mut flags = Vec::new();
    if def.has_tag {
        flags.push("has_tag".to_string());
    }
    if def.encrypt != 0 {
        flags.push(format!("encrypt={}", def.encrypt));
    }
    format!(
        "{vendor}{} {} {}",
        def.code,
        def.data_type.as_str(),
        flags.join(",")
    )
    .trim_end()
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> Dictionary {
        Dictionary::builtin().expect("the shipped dictionaries read")
    }

    fn text(value: &str) -> AttributeValue {
        AttributeValue::Text(value.to_string())
    }

    /// A dictionary from text alone, to test the reader.
    fn read(text: &str) -> Result<Dictionary, DictionaryError> {
        let mut dictionary = Dictionary::default();
        dictionary.add_text("test", text, None)?;
        Ok(dictionary)
    }

    fn error_of(text: &str) -> DictionaryError {
        read(text).expect_err("the text must not read")
    }

    #[test]
    fn dictionary_is_shareable() {
        fn check<T: Clone + std::fmt::Debug + Send + Sync>() {}
        check::<Dictionary>();
    }

    #[test]
    fn builtin_reads_and_names_resolve() {
        let dictionary = builtin();
        let code = |name: &str| {
            let def = dictionary.attribute(name).expect(name);
            (def.vendor, def.code)
        };
        assert_eq!(code("Class"), (None, 25));
        assert_eq!(code("Filter-Id"), (None, 11));
        assert_eq!(code("Session-Timeout"), (None, 27));
        assert_eq!(code("session-timeout"), (None, 27));
        assert_eq!(code("Cisco-AVPair"), (Some(9), 1));
        assert_eq!(code("Fortinet-Group-Name"), (Some(12356), 1));
        assert_eq!(code("PaloAlto-User-Group"), (Some(25461), 5));
        assert_eq!(code("Juniper-Local-User-Name"), (Some(2636), 1));
        assert_eq!(code("MS-Primary-DNS-Server"), (Some(311), 28));
        assert_eq!(code("Message-Authenticator"), (None, 80));
        assert_eq!(code("Delegated-IPv6-Prefix"), (None, 123));
        let tunnel_password = dictionary.attribute("Tunnel-Password").expect("defined");
        assert!(tunnel_password.has_tag);
        assert_eq!(tunnel_password.encrypt, 2);
        let service_type = dictionary.by_code(None, 6).expect("Service-Type");
        assert_eq!(service_type.name, "Service-Type");
        assert_eq!(dictionary.value_name(service_type, 2), Some("Framed-User"));
        assert_eq!(
            dictionary.value_name(service_type, 17),
            Some("Authorize-Only")
        );
        assert_eq!(
            dictionary.by_code(Some(9), 1).map(|d| d.name.as_str()),
            Some("Cisco-AVPair")
        );
        assert!(dictionary.by_code(None, 17).is_none());
    }

    /// Every shipped file is compiled in, and the folder holds nothing the binary lacks.
    #[test]
    fn builtin_table_matches_the_folder() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("dictionaries");
        let mut on_disk: Vec<String> = std::fs::read_dir(&folder)
            .expect("dictionaries/")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("dictionary"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = BUILTIN.iter().map(|(name, _)| name.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
        // Read from disk, they give the same dictionary as embedded.
        let mut from_disk = Dictionary::default();
        let entry = std::fs::read_to_string(folder.join("dictionary")).expect("read");
        from_disk
            .add_text("dictionaries/dictionary", &entry, Some(&folder))
            .expect("reads from disk");
        assert_eq!(from_disk.attributes, builtin().attributes);
    }

    #[test]
    fn encodes_standard_attributes() {
        let dictionary = builtin();
        let encode = |name: &str, value: AttributeValue| dictionary.encode(name, &value);
        assert_eq!(
            encode("Session-Timeout", AttributeValue::Integer(3600)),
            Ok(vec![27, 6, 0, 0, 0x0e, 0x10])
        );
        assert_eq!(
            encode("Session-Timeout", text("3600")),
            Ok(vec![27, 6, 0, 0, 0x0e, 0x10])
        );
        let mut class = vec![25, 9];
        class.extend_from_slice(b"partner");
        assert_eq!(encode("Class", text("partner")), Ok(class));
        assert_eq!(encode("Class", text("0x0A0b")), Ok(vec![25, 4, 0x0a, 0x0b]));
        assert_eq!(
            encode("Service-Type", text("Framed-User")),
            Ok(vec![6, 6, 0, 0, 0, 2])
        );
        assert_eq!(
            encode("service-type", text("framed-user")),
            Ok(vec![6, 6, 0, 0, 0, 2])
        );
        assert_eq!(
            encode("Framed-IP-Address", text("192.0.2.7")),
            Ok(vec![8, 6, 192, 0, 2, 7])
        );
        assert_eq!(
            encode("Framed-IPv6-Prefix", text("2001:db8::/32")),
            Ok(vec![97, 8, 0, 32, 0x20, 0x01, 0x0d, 0xb8])
        );
        assert_eq!(
            encode("Framed-Interface-Id", text("0:0:1:ff")),
            Ok(vec![96, 10, 0, 0, 0, 0, 0, 1, 0, 0xff])
        );
        assert_eq!(
            encode("Event-Timestamp", AttributeValue::Integer(1)),
            Ok(vec![55, 6, 0, 0, 0, 1])
        );
    }

    #[test]
    fn encodes_tagged_attributes_with_tag_zero() {
        let dictionary = builtin();
        // RFC 2868 section 3.1: tag octet, then 3 octets of value.
        assert_eq!(
            dictionary.encode("Tunnel-Type", &text("VLAN")),
            Ok(vec![64, 6, 0, 0, 0, 13])
        );
        assert_eq!(
            dictionary.encode("Tunnel-Private-Group-Id", &text("10")),
            Ok(vec![81, 4, b'1', b'0'])
        );
        // A first octet that would read as a tag gets a tag octet before it.
        assert_eq!(
            dictionary.encode("Tunnel-Private-Group-Id", &text("\u{1}x")),
            Ok(vec![81, 5, 0, 1, b'x'])
        );
        let too_big = dictionary.encode("Tunnel-Preference", &AttributeValue::Integer(1 << 24));
        assert!(too_big.is_err(), "{too_big:?}");
    }

    #[test]
    fn encodes_vendor_attributes_inside_vendor_specific() {
        let dictionary = builtin();
        let value = "shell:priv-lvl=15";
        let encoded = dictionary
            .encode("Cisco-AVPair", &text(value))
            .expect("encode");
        let mut expected = vec![
            26,
            (8 + value.len()) as u8,
            0,
            0,
            0,
            9,
            1,
            (2 + value.len()) as u8,
        ];
        expected.extend_from_slice(value.as_bytes());
        assert_eq!(encoded, expected);
        let encoded = dictionary
            .encode("Fortinet-Group-Name", &text("admins"))
            .expect("encode");
        assert_eq!(&encoded[..8], &[26, 14, 0, 0, 0x30, 0x44, 1, 8]);
    }

    #[test]
    fn encodes_vendor_formats() {
        let mut dictionary = builtin();
        dictionary
            .add_text(
                "formats",
                "VENDOR Wide 4242 format=2,1\n\
                 VENDOR Bare 4343 format=4,0\n\
                 BEGIN-VENDOR Wide\nATTRIBUTE Wide-Thing 300 integer\nEND-VENDOR Wide\n\
                 BEGIN-VENDOR Bare\nATTRIBUTE Bare-Thing 7 string\nEND-VENDOR Bare\n",
                None,
            )
            .expect("reads");
        assert_eq!(
            dictionary.encode("Wide-Thing", &AttributeValue::Integer(5)),
            Ok(vec![26, 13, 0, 0, 0x10, 0x92, 0x01, 0x2c, 7, 0, 0, 0, 5])
        );
        assert_eq!(
            dictionary.encode("Bare-Thing", &text("ab")),
            Ok(vec![26, 12, 0, 0, 0x10, 0xf7, 0, 0, 0, 7, b'a', b'b'])
        );
        let encoded = dictionary
            .encode("Wide-Thing", &AttributeValue::Integer(5))
            .expect("encode");
        assert_eq!(dictionary.describe(&encoded), "Wide-Thing=5");
        let encoded = dictionary
            .encode("Bare-Thing", &text("ab"))
            .expect("encode");
        assert_eq!(dictionary.describe(&encoded), "Bare-Thing=\"ab\"");
    }

    #[test]
    fn refuses_what_it_cannot_encode() {
        let dictionary = builtin();
        let refused = |name: &str, value: AttributeValue, expected: &str| {
            let problem = dictionary.encode(name, &value).expect_err(name);
            assert!(problem.contains(expected), "{name}: {problem}");
        };
        refused("Filter-Id", text(&"x".repeat(254)), "at most 253");
        refused("Cisco-AVPair", text(&"x".repeat(248)), "at most 247");
        refused(
            "No-Such-Thing",
            text("x"),
            "unknown attribute No-Such-Thing",
        );
        refused(
            "Session-Timeout",
            AttributeValue::Integer(1 << 32),
            "out of range",
        );
        refused("Session-Timeout", AttributeValue::Integer(-1), "negative");
        refused("Session-Timeout", text("forever"), "neither a VALUE");
        refused("Service-Type", text("Nonsense-User"), "neither a VALUE");
        refused("User-Password", text("secret"), "encrypt");
        refused("Tunnel-Password", text("secret"), "encrypt");
        refused("Vendor-Specific", text("0x00"), "cannot be set");
        refused("Framed-IP-Address", text("192.0.2.300"), "not valid");
        refused(
            "Framed-IP-Address",
            AttributeValue::Integer(7),
            "needs text",
        );
        refused("Filter-Id", AttributeValue::Integer(7), "needs text");
        refused("Filter-Id", text(""), "empty");
        refused("Class", text("0xabc"), "bad hex");
        refused(
            "Framed-IPv6-Prefix",
            text("2001:db8::1/32"),
            "past its prefix",
        );
        refused("Framed-Interface-Id", text("1:2:3"), "interface id");
    }

    #[test]
    fn reads_signed_byte_short_and_integer64() {
        let mut dictionary = Dictionary::default();
        dictionary
            .add_text(
                "types",
                "ATTRIBUTE S 200 signed\nATTRIBUTE B 201 byte\nATTRIBUTE H 202 short\n\
                 ATTRIBUTE L 203 integer64\nATTRIBUTE E 204 ether\nATTRIBUTE P 205 ipv4prefix\n",
                None,
            )
            .expect("reads");
        let encode = |name: &str, value: AttributeValue| dictionary.encode(name, &value);
        assert_eq!(
            encode("S", AttributeValue::Integer(-2)),
            Ok(vec![200, 6, 0xff, 0xff, 0xff, 0xfe])
        );
        assert_eq!(
            encode("B", AttributeValue::Integer(255)),
            Ok(vec![201, 3, 255])
        );
        assert!(encode("B", AttributeValue::Integer(256)).is_err());
        assert_eq!(
            encode("H", AttributeValue::Integer(258)),
            Ok(vec![202, 4, 1, 2])
        );
        assert_eq!(
            encode("L", text("18446744073709551615")),
            Ok([&[203, 10][..], &[0xff; 8]].concat())
        );
        assert_eq!(
            encode("E", text("00-11-22-aa-bb-CC")),
            Ok(vec![204, 8, 0, 0x11, 0x22, 0xaa, 0xbb, 0xcc])
        );
        assert_eq!(
            encode("P", text("192.0.2.0/24")),
            Ok(vec![205, 8, 0, 24, 192, 0, 2, 0])
        );
        let all = [
            encode("S", AttributeValue::Integer(-2)),
            encode("E", text("00:11:22:aa:bb:cc")),
            encode("P", text("192.0.2.0/24")),
        ]
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("encode")
        .concat();
        assert_eq!(
            dictionary.describe(&all),
            "S=-2, E=00:11:22:aa:bb:cc, P=192.0.2.0/24"
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let error = error_of("# comment\nATTRIBUTE A 200 string\nFROBNICATE x\n");
        assert_eq!(error.file, "test");
        assert_eq!(error.line, 3);
        assert_eq!(error.to_string(), "test:3: unknown keyword FROBNICATE");

        let error = error_of("ATTRIBUTE A 200 strang");
        assert_eq!(
            (error.line, error.problem.as_str()),
            (1, "unknown type strang")
        );

        let error = error_of("\nVALUE Nothing Some 1");
        assert_eq!(error.line, 2);
        assert!(
            error.problem.contains("undefined attribute Nothing"),
            "{error}"
        );

        let error = error_of("VENDOR V 99\n\nEND-VENDOR V");
        assert_eq!(error.line, 3);
        assert!(error.problem.contains("without BEGIN-VENDOR"), "{error}");

        let error = error_of("VENDOR V 99\nBEGIN-VENDOR V\nATTRIBUTE V-A 1 string\n");
        assert_eq!(error.line, 2);
        assert!(error.problem.contains("no END-VENDOR"), "{error}");

        let error = error_of("BEGIN-VENDOR Nobody");
        assert!(error.problem.contains("undefined vendor"), "{error}");

        let error = error_of("ATTRIBUTE A 200 string has_tag,frob");
        assert!(error.problem.contains("unknown flag frob"), "{error}");

        let error = error_of("ATTRIBUTE A 256 string");
        assert!(error.problem.contains("out of range"), "{error}");

        let error = error_of("ATTRIBUTE A 241.1 string");
        assert!(error.problem.contains("dotted"), "{error}");

        let error = error_of("VENDOR V 99 format=3,1");
        assert!(
            error.problem.contains("unsupported vendor format"),
            "{error}"
        );

        let error = error_of("ATTRIBUTE A 200 string\nVALUE A X 1");
        assert!(error.problem.contains("only integer types"), "{error}");

        let error = error_of("ATTRIBUTE A 200 byte\nVALUE A X 256");
        assert!(error.problem.contains("does not fit"), "{error}");

        let error = error_of("ATTRIBUTE A 200 integer\nVALUE A X 1\nVALUE A x 2");
        assert!(error.problem.contains("already defined as 1"), "{error}");

        let error = error_of("$INCLUDE other");
        assert!(error.problem.contains("no folder"), "{error}");
    }

    #[test]
    fn redefinitions() {
        let error = error_of("ATTRIBUTE A 200 string\nATTRIBUTE a 201 string");
        assert_eq!(error.line, 2);
        assert!(
            error
                .problem
                .contains("already defined differently (200 string)"),
            "{error}"
        );
        let error = error_of("ATTRIBUTE A 200 string\nATTRIBUTE A 200 integer");
        assert!(error.problem.contains("already defined"), "{error}");
        let error = error_of("VENDOR V 99\nVENDOR V 98");
        assert!(error.problem.contains("clashes"), "{error}");

        // The same definitions again are harmless, and aliases share VALUEs.
        let dictionary = read(
            "ATTRIBUTE A 200 integer has_tag\nVALUE A One 1\n\
             ATTRIBUTE a 200 integer has_tag\nVALUE A One 1\nATTRIBUTE Alias 200 integer\n\
             VENDOR V 99\nVENDOR v 99 format=1,1",
        )
        .expect("reads");
        let alias = dictionary.attribute("alias").expect("alias");
        assert_eq!(dictionary.value_name(alias, 1), Some("One"));
        assert_eq!(
            dictionary.by_code(None, 200).map(|d| d.name.as_str()),
            Some("A")
        );

        // Nothing is added from a text that fails.
        let mut dictionary = builtin();
        let before = dictionary.attributes.len();
        let error = dictionary
            .add_text(
                "half",
                "ATTRIBUTE Fine 200 string\nATTRIBUTE Class 25 integer",
                None,
            )
            .expect_err("conflicts with Class");
        assert_eq!(error.line, 2);
        assert_eq!(dictionary.attributes.len(), before);
        assert!(dictionary.attribute("Fine").is_none());
    }

    #[test]
    fn operator_folder_adds_vendor_files() {
        let folder = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            std::fs::write(folder.path().join(name), text).expect("write");
        };
        write(
            "dictionary",
            "# operator\n$INCLUDE dictionary.acme\n$INCLUDE rfc/dictionary.rfc2865\n",
        );
        write(
            "dictionary.acme",
            "VENDOR Acme 55555\nBEGIN-VENDOR Acme\n$INCLUDE dictionary.acme.attrs\nEND-VENDOR Acme\n",
        );
        // Inside an included file there is no open vendor block: its attributes are standard.
        write(
            "dictionary.acme.attrs",
            "ATTRIBUTE Acme-Standard 222 string\n",
        );
        std::fs::create_dir(folder.path().join("rfc")).expect("mkdir");
        // Re-including the shipped RFC definitions is harmless.
        let (_, rfc2865) = BUILTIN[1];
        std::fs::write(folder.path().join("rfc/dictionary.rfc2865"), rfc2865).expect("write");

        let dictionary = Dictionary::load(Some(folder.path())).expect("loads");
        let def = dictionary.attribute("Acme-Standard").expect("defined");
        assert_eq!((def.vendor, def.code), (None, 222));
        assert_eq!(dictionary.attribute("Class").map(|d| d.code), Some(25));

        write("dictionary", "VENDOR Acme 55555 format=2,2\nBEGIN-VENDOR Acme\nATTRIBUTE Acme-Role 1000 string\nEND-VENDOR Acme\n");
        let dictionary = Dictionary::load(Some(folder.path())).expect("loads");
        let def = dictionary.attribute("acme-role").expect("defined");
        assert_eq!((def.vendor, def.code), (Some(55555), 1000));
        let encoded = dictionary
            .encode("Acme-Role", &text("ops"))
            .expect("encode");
        assert_eq!(
            encoded,
            vec![26, 13, 0, 0, 0xd9, 0x03, 0x03, 0xe8, 0, 7, b'o', b'p', b's']
        );
        assert_eq!(dictionary.describe(&encoded), "Acme-Role=\"ops\"");
    }

    #[test]
    fn load_errors_name_the_path() {
        assert!(Dictionary::load(None).is_ok());
        let folder = tempfile::tempdir().expect("temp dir");
        let missing = folder.path().join("nowhere");
        let error = Dictionary::load(Some(&missing)).expect_err("no folder");
        assert_eq!(error.file, missing.display().to_string());
        assert!(error.problem.contains("cannot read the folder"), "{error}");

        let error = Dictionary::load(Some(folder.path())).expect_err("no dictionary file");
        assert_eq!(
            error.file,
            folder.path().join("dictionary").display().to_string()
        );

        std::fs::write(
            folder.path().join("dictionary"),
            "\n\n$INCLUDE dictionary.gone\n",
        )
        .expect("write");
        let error = Dictionary::load(Some(folder.path())).expect_err("missing include");
        assert_eq!(
            error.file,
            folder.path().join("dictionary").display().to_string()
        );
        assert_eq!(error.line, 3);
        assert!(error.problem.contains("dictionary.gone"), "{error}");

        let error = Dictionary::load(Some(&folder.path().join("dictionary"))).expect_err("file");
        assert_eq!(error.problem, "not a folder");
    }

    #[test]
    fn include_loops_and_depth_are_refused() {
        let folder = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            std::fs::write(folder.path().join(name), text).expect("write");
        };
        write("dictionary", "$INCLUDE a\n");
        write("a", "ATTRIBUTE Loop-A 230 string\n$INCLUDE b\n");
        write("b", "# b\n\n$INCLUDE a\n");
        let error = Dictionary::load(Some(folder.path())).expect_err("loop");
        assert_eq!(error.file, folder.path().join("b").display().to_string());
        assert_eq!(error.line, 3);
        assert!(error.problem.contains("include loop"), "{error}");

        write("dictionary", "$INCLUDE dictionary\n");
        let error = Dictionary::load(Some(folder.path())).expect_err("self include");
        assert!(error.problem.contains("include loop"), "{error}");

        for level in 0..20 {
            write(
                &format!("level{level}"),
                &format!("$INCLUDE level{}\n", level + 1),
            );
        }
        write("level20", "ATTRIBUTE Deep 231 string\n");
        write("dictionary", "$INCLUDE level5\n");
        assert!(
            Dictionary::load(Some(folder.path())).is_ok(),
            "16 levels are fine"
        );
        write("dictionary", "$INCLUDE level4\n");
        let error = Dictionary::load(Some(folder.path())).expect_err("17 levels");
        assert!(error.problem.contains("nested more than 16"), "{error}");
    }

    #[test]
    fn describe_names_and_hides() {
        let dictionary = builtin();
        let mut packet = Vec::new();
        for (name, value) in [
            ("User-Name", text("alice")),
            ("NAS-IP-Address", text("192.0.2.1")),
            ("Service-Type", text("Framed-User")),
            ("Session-Timeout", AttributeValue::Integer(3600)),
            ("Class", text("0x0102")),
            ("Cisco-AVPair", text("shell:priv-lvl=15")),
            ("Tunnel-Type", text("VLAN")),
            ("Framed-IPv6-Prefix", text("2001:db8::/32")),
            ("Event-Timestamp", AttributeValue::Integer(0)),
            ("MS-Primary-DNS-Server", text("192.0.2.53")),
        ] {
            packet.extend(dictionary.encode(name, &value).expect(name));
        }
        packet.extend_from_slice(&[2, 18]);
        packet.extend_from_slice(b"sixteen octets!!");
        packet.extend_from_slice(&[80, 18]);
        packet.extend_from_slice(&[0xaa; 16]);
        packet.extend_from_slice(&[69, 6, 1, 9, 9, 9]);
        packet.extend_from_slice(&[64, 6, 2, 0, 0, 3]);
        packet.extend_from_slice(&[17, 4, 1, 2]);
        packet.extend_from_slice(&[26, 9, 0, 0, 0, 9, 99, 3, 7]);
        packet.extend_from_slice(&[26, 6, 0, 0, 0x30, 0x44]);
        packet.extend_from_slice(&[26, 9, 0, 0, 0, 9, 1, 9, 7]);
        assert_eq!(
            dictionary.describe(&packet),
            "User-Name=\"alice\", NAS-IP-Address=192.0.2.1, Service-Type=Framed-User, \
             Session-Timeout=3600, Class=0x0102, Cisco-AVPair=\"shell:priv-lvl=15\", \
             Tunnel-Type=VLAN, Framed-IPv6-Prefix=2001:db8::/32, \
             Event-Timestamp=1970-01-01T00:00:00Z, MS-Primary-DNS-Server=192.0.2.53, \
             User-Password=<hidden>, Message-Authenticator=<hidden>, Tunnel-Password=<hidden>, \
             Tunnel-Type:2=L2TP, Attr-17=0x0102, Attr-26.9.99=0x07, \
             Vendor-Specific=0x00003044, Vendor-Specific=0x00000009010907"
        );
        assert!(!dictionary.describe(&packet).contains("sixteen"));
        assert_eq!(
            dictionary.describe(&[1, 7, b'a', b'b']),
            "<malformed at octet 0>"
        );
        assert_eq!(
            dictionary.describe(&[1, 3, b'a', 2, 1]),
            "User-Name=\"a\", <malformed at octet 3>"
        );
        assert_eq!(dictionary.describe(&[1, 3, 0x1b]), "User-Name=\"\\u{1b}\"");
        assert_eq!(dictionary.describe(&[1, 3, 0xff]), "User-Name=0xff");
        assert_eq!(dictionary.describe(&[]), "");
    }

    proptest::proptest! {
        /// Whatever arrives, describing it never panics.
        #[test]
        fn describe_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = builtin().describe(&bytes);
        }

        /// Well-framed garbage, vendor-specific included, is described attribute by attribute.
        #[test]
        fn describe_reads_framed_garbage(
            attributes in proptest::collection::vec(
                (proptest::num::u8::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..40)),
                0..12,
            ),
        ) {
            let dictionary = builtin();
            let mut bytes = Vec::new();
            for (code, value) in &attributes {
                bytes.push(*code);
                bytes.push((value.len() + 2) as u8);
                bytes.extend_from_slice(value);
            }
            let described = dictionary.describe(&bytes);
            proptest::prop_assert!(!described.contains("malformed"), "{}", described);
        }

        /// Any value for any attribute is refused or encoded into one well-formed attribute that
        /// reads back under its name.
        #[test]
        fn encode_is_well_formed(value in "\\PC{0,300}", number in proptest::num::i64::ANY) {
            let dictionary = builtin();
            for def in &dictionary.attributes {
                for value in [AttributeValue::Text(value.clone()), AttributeValue::Integer(number)] {
                    let Ok(encoded) = dictionary.encode(&def.name, &value) else { continue };
                    proptest::prop_assert_eq!(usize::from(encoded[1]), encoded.len());
                    let described = dictionary.describe(&encoded);
                    let shown = dictionary.by_code(def.vendor, def.code).map(|d| d.name.clone());
                    proptest::prop_assert!(
                        shown.is_some_and(|name| described.starts_with(name.as_str())),
                        "{} gave {}", def.name, described
                    );
                }
            }
        }
    }
}
