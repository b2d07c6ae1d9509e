//! RADIUS packet handling: checking an Access-Request as it arrives and recovering its
//! User-Password (with the `radius` crate's decoder), and framing replies that carry a
//! Message-Authenticator as their first attribute.
//!
//! What is checked here, and why a packet is silently dropped rather than answered:
//! - RFC 2865 section 3: a packet shorter than its Length field, or with a Length outside
//!   20..=4096, is discarded; octets past the Length are padding and ignored.
//! - RFC 2865 section 5: attributes must tile the packet exactly (the crate's decoder).
//! - RFC 3579 section 3.2 / RFC 2869 section 5.14: a Message-Authenticator that does not verify
//!   means a wrong secret or a forged packet; discard. Since Blast-RADIUS (CVE-2024-3596) an
//!   Access-Request without one is discarded too while `require_message_authenticator` is on.
//! - RFC 2865 section 5.2: User-Password is 16..=128 octets, a multiple of 16.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use radius::core::code::Code;
use radius::core::packet::Packet;
use std::sync::Arc;
use zeroize::Zeroizing;

pub const HEADER_LEN: usize = 20;
/// RFC 2865 section 3: the largest packet a RADIUS peer may send.
pub const MAX_PACKET_LEN: usize = 4096;

pub const ATTR_USER_NAME: u8 = 1;
pub const ATTR_USER_PASSWORD: u8 = 2;
pub const ATTR_CHAP_PASSWORD: u8 = 3;
pub const ATTR_REPLY_MESSAGE: u8 = 18;
pub const ATTR_STATE: u8 = 24;
pub const ATTR_CALLING_STATION_ID: u8 = 31;
pub const ATTR_PROXY_STATE: u8 = 33;
pub const ATTR_EAP_MESSAGE: u8 = 79;
pub const ATTR_MESSAGE_AUTHENTICATOR: u8 = 80;

const MA_LEN: usize = 16;
/// Octets of the State an Access-Challenge carries (RFC 2865 section 5.24; the issue asks for
/// at least 16 random octets).
pub const STATE_LEN: usize = 16;
/// Longest Reply-Message text a reply carries, one attribute's worth: the fixed texts are
/// shorter (a test checks), a configured challenge prompt is refused past it.
pub const MAX_REPLY_MESSAGE: usize = 253;
/// Most octets of attributes an application may add to its Access-Accepts (checked when the
/// configuration is read).
pub const MAX_REPLY_ATTRIBUTES: usize = 1024;
/// Octets reserved in every reply for what the pipeline adds: Reply-Message (with room to
/// spare), a State, the application's attributes.
const REPLY_BUDGET: usize = MAX_REPLY_MESSAGE + 2 + STATE_LEN + 2 + MAX_REPLY_ATTRIBUTES;

type HmacMd5 = Hmac<Md5>;

/// A client's shared secret, with the HMAC-MD5 key schedule for its Message-Authenticators done
/// once (saves two MD5 blocks per HMAC, four per request). Derefs to the secret's bytes.
#[derive(Clone)]
pub struct Secret {
    bytes: Zeroizing<Vec<u8>>,
    hmac: HmacMd5,
}

impl Secret {
    /// HMAC accepts keys of any length, so this fails only in theory; callers report it.
    pub fn new(bytes: &[u8]) -> Result<Secret, String> {
        let hmac = <HmacMd5 as Mac>::new_from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(Secret {
            bytes: Zeroizing::new(bytes.to_vec()),
            hmac,
        })
    }

    /// A fresh HMAC-MD5 keyed with the secret.
    fn mac(&self) -> HmacMd5 {
        self.hmac.clone()
    }
}

impl std::ops::Deref for Secret {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Why an incoming packet is dropped without a reply. Each variant has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Length field, attribute framing or an attribute's own length is wrong.
    Malformed,
    /// Neither an Access-Request nor a Status-Server (accounting, CoA... are not served here).
    UnsupportedCode,
    /// Access-Request without Message-Authenticator while it is required.
    MissingMessageAuthenticator,
    /// Message-Authenticator present but wrong: wrong shared secret or a forged packet.
    BadMessageAuthenticator,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnsupportedCode => "unsupported_code",
            DropReason::MissingMessageAuthenticator => "missing_message_authenticator",
            DropReason::BadMessageAuthenticator => "bad_message_authenticator",
        }
    }
}

/// The parts of an RFC 2865 header needed before the client (and its secret) is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub code: u8,
    pub identifier: u8,
    pub length: usize,
    pub authenticator: [u8; 16],
}

/// Reads and checks the fixed header (RFC 2865 section 3).
pub fn read_header(buf: &[u8]) -> Result<Header, DropReason> {
    let fixed = buf.get(..HEADER_LEN).ok_or(DropReason::Malformed)?;
    let mut authenticator = [0u8; 16];
    authenticator.copy_from_slice(fixed.get(4..20).ok_or(DropReason::Malformed)?);
    let length = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
    if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&length) || length > buf.len() {
        return Err(DropReason::Malformed);
    }
    Ok(Header {
        code: fixed[0],
        identifier: fixed[1],
        length,
        authenticator,
    })
}

/// A checked Access-Request.
pub struct AccessRequest {
    pub header: Header,
    packet: Packet,
}

impl AccessRequest {
    /// The whole check of a received packet: [`read_header`], then [`AccessRequest::decode`].
    pub fn check(
        buf: &[u8],
        secret: &Secret,
        require_message_authenticator: bool,
    ) -> Result<AccessRequest, DropReason> {
        let header = read_header(buf)?;
        AccessRequest::decode(buf, header, secret, require_message_authenticator)
    }

    /// Checks `buf` as an Access-Request signed with `secret`. `buf` may be longer than the
    /// packet (padding); the header must already have passed [`read_header`].
    pub fn decode(
        buf: &[u8],
        header: Header,
        secret: &Secret,
        require_message_authenticator: bool,
    ) -> Result<AccessRequest, DropReason> {
        let status_server = header.code == Code::StatusServer as u8;
        if header.code != Code::AccessRequest as u8 && !status_server {
            return Err(DropReason::UnsupportedCode);
        }
        let bytes = buf.get(..header.length).ok_or(DropReason::Malformed)?;
        let packet = Packet::decode(bytes, secret).map_err(|_| DropReason::Malformed)?;
        let scan = AttributeScan::of(bytes);
        match (scan.message_authenticators, scan.message_authenticator_at) {
            (0, _) => {
                // RFC 3579 section 3.2: with EAP-Message it is mandatory whatever the setting;
                // RFC 5997 section 3: a Status-Server always carries one.
                if require_message_authenticator || scan.eap_message || status_server {
                    return Err(DropReason::MissingMessageAuthenticator);
                }
            }
            (1, Some(at)) => verify_message_authenticator(bytes, at, secret)?,
            _ => return Err(DropReason::Malformed),
        }
        // The reply echoes every Proxy-State; refuse up front a request whose reply could not
        // fit in 4096 octets, rather than evaluate it (consuming a code) and be unable to answer.
        let echoed = scan.proxy_state_octets;
        if HEADER_LEN + MA_LEN + 2 + REPLY_BUDGET + echoed > MAX_PACKET_LEN {
            return Err(DropReason::Malformed);
        }
        Ok(AccessRequest { header, packet })
    }

    /// Whether this is a Status-Server (RFC 5997) rather than an Access-Request: answered
    /// with an Access-Accept, without authenticating anyone.
    pub fn is_status_server(&self) -> bool {
        self.header.code == Code::StatusServer as u8
    }

    /// User-Name (RFC 2865 section 5.1), if present and UTF-8.
    pub fn user_name(&self) -> Option<String> {
        self.packet
            .lookup(ATTR_USER_NAME)
            .and_then(|avp| String::from_utf8(avp.encode_bytes()).ok())
            .filter(|name| !name.is_empty())
    }

    /// Calling-Station-Id (RFC 2865 section 5.31): for a VPN, the end user's address.
    pub fn calling_station_id(&self) -> Option<String> {
        self.packet
            .lookup(ATTR_CALLING_STATION_ID)
            .map(|avp| String::from_utf8_lossy(&avp.encode_bytes()).into_owned())
            .filter(|id| !id.is_empty())
    }

    /// State (RFC 2865 section 5.24): present in the answer to an Access-Challenge.
    pub fn state(&self) -> Option<Vec<u8>> {
        self.packet.lookup(ATTR_STATE).map(|avp| avp.encode_bytes())
    }

    pub fn has_chap_password(&self) -> bool {
        self.packet.lookup(ATTR_CHAP_PASSWORD).is_some()
    }

    /// Recovers the hidden User-Password (RFC 2865 section 5.2). `None` when absent or when its
    /// length is not a multiple of 16 within 16..=128 octets.
    pub fn user_password(&self, secret: &Secret) -> Option<Zeroizing<Vec<u8>>> {
        let avp = self.packet.lookup(ATTR_USER_PASSWORD)?;
        let hidden_len = avp.encode_bytes().len();
        if !(16..=128).contains(&hidden_len) || hidden_len % 16 != 0 {
            return None;
        }
        avp.encode_user_password(secret, &self.header.authenticator)
            .ok()
            .map(Zeroizing::new)
    }

    /// Proxy-State attributes in order; a reply must echo them unchanged (RFC 2865 5.33).
    pub fn proxy_states(&self) -> Vec<Vec<u8>> {
        self.packet
            .lookup_all(ATTR_PROXY_STATE)
            .into_iter()
            .map(|avp| avp.encode_bytes())
            .collect()
    }
}

/// What a request's checks need from its attributes, found in one walk over them.
#[derive(Default)]
struct AttributeScan {
    message_authenticators: usize,
    /// Offset of the first Message-Authenticator.
    message_authenticator_at: Option<usize>,
    eap_message: bool,
    /// Octets (headers included) of the Proxy-States a reply echoes.
    proxy_state_octets: usize,
}

impl AttributeScan {
    fn of(packet: &[u8]) -> AttributeScan {
        let mut scan = AttributeScan::default();
        for attribute in attributes(packet) {
            match attribute.typ {
                ATTR_MESSAGE_AUTHENTICATOR => {
                    scan.message_authenticators += 1;
                    scan.message_authenticator_at.get_or_insert(attribute.at);
                }
                ATTR_EAP_MESSAGE => scan.eap_message = true,
                ATTR_PROXY_STATE => scan.proxy_state_octets += attribute.len,
                _ => {}
            }
        }
        scan
    }
}

/// Verifies the Message-Authenticator at `offset` of a request: HMAC-MD5 keyed with the secret
/// over the packet with the attribute's value zeroed (RFC 3579 section 3.2).
fn verify_message_authenticator(
    packet: &[u8],
    offset: usize,
    secret: &Secret,
) -> Result<(), DropReason> {
    let value = packet
        .get(offset + 2..offset + 2 + MA_LEN)
        .ok_or(DropReason::Malformed)?;
    if packet.get(offset + 1) != Some(&((MA_LEN + 2) as u8)) {
        return Err(DropReason::Malformed);
    }
    let mut mac = secret.mac();
    mac.update(&packet[..offset + 2]);
    mac.update(&[0u8; MA_LEN]);
    mac.update(&packet[offset + 2 + MA_LEN..]);
    // `verify_slice` compares in constant time.
    mac.verify_slice(value)
        .map_err(|_| DropReason::BadMessageAuthenticator)
}

/// Offset of the first attribute of type `wanted` in a framed packet.
pub(crate) fn find_attribute(packet: &[u8], wanted: u8) -> Option<usize> {
    attributes(packet).find(|a| a.typ == wanted).map(|a| a.at)
}

/// Where an attribute is in a framed packet: offset, type, length (header included).
struct AttributeAt {
    at: usize,
    typ: u8,
    len: usize,
}

/// The attributes of a framed packet in order, up to the first whose length is below 2 (the
/// packet's checks have framed it; this only stops a walk that could not advance).
fn attributes(packet: &[u8]) -> impl Iterator<Item = AttributeAt> + '_ {
    let mut at = HEADER_LEN;
    std::iter::from_fn(move || {
        let typ = *packet.get(at)?;
        let len = usize::from(*packet.get(at + 1)?);
        if len < 2 {
            return None;
        }
        let found = AttributeAt { at, typ, len };
        at += len;
        Some(found)
    })
}

/// What a reply says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCode {
    Accept,
    Reject,
    /// Access-Challenge (RFC 2865 section 4.4): the user must answer a prompt.
    Challenge,
}

impl ReplyCode {
    fn wire(self) -> Code {
        match self {
            ReplyCode::Accept => Code::AccessAccept,
            ReplyCode::Reject => Code::AccessReject,
            ReplyCode::Challenge => Code::AccessChallenge,
        }
    }
}

/// A Reply-Message text: one of the fixed texts of `auth::messages`, or one from the
/// configuration (a challenge prompt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Fixed(&'static str),
    Configured(Arc<str>),
}

impl Text {
    pub fn as_str(&self) -> &str {
        match self {
            Text::Fixed(text) => text,
            Text::Configured(text) => text,
        }
    }
}

/// What the pipeline answers: kept in the duplicate cache and encoded again for a
/// retransmission, so it holds everything the reply's octets depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    /// Reply-Message (RFC 2865 section 5.18).
    pub message: Option<Text>,
    /// State (RFC 2865 section 5.24) of an Access-Challenge, echoed by the NAS in the answer.
    pub state: Option<[u8; STATE_LEN]>,
    /// Attributes the application gives its Access-Accepts, encoded once when the
    /// configuration was read (at most [`MAX_REPLY_ATTRIBUTES`] octets).
    pub attributes: Option<Arc<[u8]>>,
}

impl Reply {
    /// A reply with a code and a fixed text, nothing else.
    pub fn new(code: ReplyCode, message: Option<&'static str>) -> Reply {
        Reply {
            code,
            message: message.map(Text::Fixed),
            state: None,
            attributes: None,
        }
    }
}

/// Builds a reply to `request`: Message-Authenticator first (Blast-RADIUS), then
/// Reply-Message (split over attributes of at most 253 octets), State, the application's
/// attributes, then the request's Proxy-States; Response Authenticator per RFC 2865 section 3.
///
/// Replies are framed here rather than with the crate's `Packet::encode`, which computes a
/// Response Authenticator before a Message-Authenticator can be filled in (so it would have to
/// be computed twice).
pub fn encode_reply(
    request: &AccessRequest,
    reply: &Reply,
    secret: &Secret,
) -> Result<Vec<u8>, String> {
    let message = reply
        .message
        .as_ref()
        .map(|text| text.as_str().as_bytes())
        .unwrap_or_default();
    let attributes = reply.attributes.as_deref().unwrap_or_default();
    let mut bytes =
        Vec::with_capacity(HEADER_LEN + 2 + MA_LEN + message.len() + attributes.len() + 32);
    bytes.extend_from_slice(&[reply.code.wire() as u8, request.header.identifier, 0, 0]);
    bytes.extend_from_slice(&request.header.authenticator);
    bytes.extend_from_slice(&[ATTR_MESSAGE_AUTHENTICATOR, (MA_LEN + 2) as u8]);
    bytes.extend_from_slice(&[0u8; MA_LEN]);
    for chunk in message.chunks(253) {
        bytes.extend_from_slice(&[ATTR_REPLY_MESSAGE, (chunk.len() + 2) as u8]);
        bytes.extend_from_slice(chunk);
    }
    if let Some(state) = &reply.state {
        bytes.extend_from_slice(&[ATTR_STATE, (STATE_LEN + 2) as u8]);
        bytes.extend_from_slice(state);
    }
    bytes.extend_from_slice(attributes);
    for value in request.proxy_states() {
        let len = u8::try_from(value.len() + 2).map_err(|_| "Proxy-State too long")?;
        bytes.extend_from_slice(&[ATTR_PROXY_STATE, len]);
        bytes.extend_from_slice(&value);
    }
    let length = u16::try_from(bytes.len())
        .ok()
        .filter(|l| usize::from(*l) <= MAX_PACKET_LEN)
        .ok_or("reply would exceed 4096 octets")?;
    bytes[2..4].copy_from_slice(&length.to_be_bytes());
    sign_reply(&mut bytes, &request.header.authenticator, secret)?;
    Ok(bytes)
}

/// Fills in the Message-Authenticator (first attribute) and then the Response Authenticator
/// of an encoded reply.
fn sign_reply(
    bytes: &mut [u8],
    request_authenticator: &[u8; 16],
    secret: &Secret,
) -> Result<(), String> {
    let ma_value = HEADER_LEN + 2..HEADER_LEN + 2 + MA_LEN;
    if bytes.len() < ma_value.end || bytes[HEADER_LEN] != ATTR_MESSAGE_AUTHENTICATOR {
        return Err("reply lacks its leading Message-Authenticator".into());
    }
    // RFC 3579 section 3.2: computed with the Request Authenticator in the header.
    bytes[4..HEADER_LEN].copy_from_slice(request_authenticator);
    bytes[ma_value.clone()].fill(0);
    let mut mac = secret.mac();
    mac.update(bytes);
    let tag = mac.finalize().into_bytes();
    bytes[ma_value].copy_from_slice(&tag);
    // RFC 2865 section 3: MD5(Code+ID+Length+RequestAuth+Attributes+Secret).
    let mut md5 = Md5::new();
    md5.update(&*bytes);
    md5.update(&**secret);
    let response_authenticator = md5.finalize();
    bytes[4..HEADER_LEN].copy_from_slice(&response_authenticator);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::nas;

    const SECRET: &[u8] = b"xyzzy5461";

    fn secret() -> Secret {
        Secret::new(SECRET).expect("secret")
    }

    fn decode(bytes: &[u8], require: bool) -> Result<AccessRequest, DropReason> {
        AccessRequest::check(bytes, &secret(), require)
    }

    #[test]
    fn request_round_trip_recovers_user_and_password() {
        let built = nas::access_request(7, "alice", b"pw123456", SECRET, true).expect("build");
        let request = decode(&built.bytes, true).expect("valid");
        assert_eq!(request.header.identifier, 7);
        assert_eq!(request.user_name().as_deref(), Some("alice"));
        assert_eq!(
            request
                .user_password(&secret())
                .as_deref()
                .map(|p| p.as_slice()),
            Some(&b"pw123456"[..])
        );
    }

    #[test]
    fn longest_password_of_128_octets() {
        let password = vec![b'p'; 128];
        let built = nas::access_request(1, "u", &password, SECRET, true).expect("build");
        let request = decode(&built.bytes, true).expect("valid");
        assert_eq!(request.user_password(&secret()).map(|p| p.len()), Some(128));
    }

    #[test]
    fn message_authenticator_required_missing_or_wrong() {
        let without = nas::access_request(1, "u", b"p", SECRET, false).expect("build");
        assert_eq!(
            decode(&without.bytes, true).err(),
            Some(DropReason::MissingMessageAuthenticator)
        );
        assert!(decode(&without.bytes, false).is_ok());
        let wrong = nas::access_request(1, "u", b"p", b"other-secret", true).expect("build");
        assert_eq!(
            decode(&wrong.bytes, true).err(),
            Some(DropReason::BadMessageAuthenticator)
        );
        let mut tampered = nas::access_request(1, "u", b"p", SECRET, true)
            .expect("build")
            .bytes;
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(
            decode(&tampered, true).err(),
            Some(DropReason::BadMessageAuthenticator)
        );
    }

    /// `bytes` with `attributes` appended and its Length field set to match.
    fn with_attributes(mut bytes: Vec<u8>, attributes: &[(u8, usize)]) -> Vec<u8> {
        for &(typ, len) in attributes {
            bytes.push(typ);
            bytes.push(len as u8);
            bytes.extend(std::iter::repeat_n(0x5a, len - 2));
        }
        let length = u16::try_from(bytes.len()).expect("length");
        bytes[2..4].copy_from_slice(&length.to_be_bytes());
        bytes
    }

    #[test]
    fn attribute_checks_eap_two_message_authenticators_and_proxy_states() {
        let unsigned = nas::access_request(1, "u", b"p", SECRET, false)
            .expect("build")
            .bytes;
        // RFC 3579 3.2: EAP-Message makes Message-Authenticator mandatory whatever the setting.
        let eap = with_attributes(unsigned.clone(), &[(ATTR_EAP_MESSAGE, 3)]);
        assert_eq!(
            decode(&eap, false).err(),
            Some(DropReason::MissingMessageAuthenticator)
        );
        let signed = nas::access_request(1, "u", b"p", SECRET, true)
            .expect("build")
            .bytes;
        let two = with_attributes(signed, &[(ATTR_MESSAGE_AUTHENTICATOR, 18)]);
        assert_eq!(decode(&two, false).err(), Some(DropReason::Malformed));
        // Proxy-States a reply could echo within 4096 octets pass; more are refused up front.
        let fits = with_attributes(unsigned.clone(), &[(ATTR_PROXY_STATE, 255); 10]);
        assert!(decode(&fits, false).is_ok());
        let too_many = with_attributes(unsigned, &[(ATTR_PROXY_STATE, 255); 11]);
        assert_eq!(decode(&too_many, false).err(), Some(DropReason::Malformed));
    }

    #[test]
    fn framing_errors_are_malformed() {
        let good = nas::access_request(1, "u", b"p", SECRET, true)
            .expect("build")
            .bytes;
        assert_eq!(read_header(&good[..19]).err(), Some(DropReason::Malformed));
        let mut long = good.clone();
        long[2..4].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(read_header(&long).err(), Some(DropReason::Malformed));
        let mut bad_attr = good.clone();
        bad_attr[HEADER_LEN + 1] = 1;
        assert_eq!(decode(&bad_attr, true).err(), Some(DropReason::Malformed));
        // Padding past the Length field is ignored (RFC 2865 section 3).
        let mut padded = good.clone();
        padded.extend_from_slice(&[0u8; 7]);
        assert!(decode(&padded, true).is_ok());
        let mut accounting = good;
        accounting[0] = 4;
        assert_eq!(
            decode(&accounting, true).err(),
            Some(DropReason::UnsupportedCode)
        );
    }

    proptest::proptest! {
        /// Whatever arrives, checking it never panics (RFC 2865 section 3: malformed packets
        /// are dropped, nothing else).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(header) = read_header(&bytes) {
                if let Ok(request) = AccessRequest::decode(&bytes, header, &secret(), false) {
                    let _ = request.user_name();
                    let _ = request.user_password(&secret());
                    let _ = request.calling_station_id();
                    let _ = encode_reply(&request, &Reply::new(ReplyCode::Reject, Some("x")), &secret());
                }
            }
        }

        /// Correctly framed Access-Requests with garbage attributes: dropped or decoded, never a
        /// panic, also through the accessors and the reply encoder.
        #[test]
        fn framed_garbage_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut bytes = vec![1u8, 7, 0, 0];
            bytes.extend_from_slice(&[0x5a; 16]);
            bytes.extend_from_slice(&body);
            let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
            bytes[2..4].copy_from_slice(&len.to_be_bytes());
            if let Ok(header) = read_header(&bytes) {
                if let Ok(request) = AccessRequest::decode(&bytes, header, &secret(), false) {
                    let _ = request.user_name();
                    let _ = request.user_password(&secret());
                    let _ = request.proxy_states();
                    let _ = encode_reply(&request, &Reply::new(ReplyCode::Accept, None), &secret());
                }
            }
        }

        /// Any user name and any password RFC 2865 section 5.2 allows come back as sent.
        #[test]
        fn user_and_password_round_trip(
            user in "[a-zA-Z0-9._@-]{1,64}",
            password in proptest::collection::vec(1u8..=255, 1..=128),
            id in proptest::num::u8::ANY,
        ) {
            let built = nas::access_request(id, &user, &password, SECRET, true)
                .map_err(proptest::test_runner::TestCaseError::fail)?;
            let request = decode(&built.bytes, true)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.as_str()))?;
            proptest::prop_assert_eq!(request.user_name(), Some(user));
            proptest::prop_assert_eq!(
                request.user_password(&secret()).map(|p| p.to_vec()),
                Some(password)
            );
            let reply = encode_reply(&request, &Reply::new(ReplyCode::Accept, None), &secret())
                .map_err(proptest::test_runner::TestCaseError::fail)?;
            let checked = nas::check_reply(&reply, &built, SECRET)
                .map_err(proptest::test_runner::TestCaseError::fail)?;
            proptest::prop_assert!(checked.message_authenticator_first);
            proptest::prop_assert_eq!(checked.identifier, id);
        }
    }

    #[test]
    fn reply_has_message_authenticator_first_and_echoes_proxy_state() {
        let mut built = nas::access_request(9, "u", b"p", SECRET, true).expect("build");
        // Append two Proxy-State attributes and re-sign the request.
        let mut bytes = built.bytes.clone();
        for state in [&b"one"[..], &b"two"[..]] {
            bytes.push(ATTR_PROXY_STATE);
            bytes.push((state.len() + 2) as u8);
            bytes.extend_from_slice(state);
        }
        let len = bytes.len() as u16;
        bytes[2..4].copy_from_slice(&len.to_be_bytes());
        bytes[HEADER_LEN + 2..HEADER_LEN + 18].fill(0);
        let mut mac = HmacMd5::new_from_slice(SECRET).expect("key");
        mac.update(&bytes);
        let tag = mac.finalize().into_bytes();
        bytes[HEADER_LEN + 2..HEADER_LEN + 18].copy_from_slice(&tag);
        built.bytes = bytes;
        let request = decode(&built.bytes, true).expect("valid");
        let long_text = "x".repeat(300);
        let reply = Reply {
            message: Some(Text::Configured(long_text.as_str().into())),
            ..Reply::new(ReplyCode::Reject, None)
        };
        let reply = encode_reply(&request, &reply, &secret()).expect("encode");
        let checked = nas::check_reply(&reply, &built, SECRET).expect("authentic");
        assert!(checked.message_authenticator_first);
        assert_eq!(checked.identifier, 9);
        assert_eq!(checked.reply_message.as_deref(), Some(long_text.as_str()));
        let packet = Packet::decode(&reply, SECRET).expect("decode");
        let states: Vec<Vec<u8>> = packet
            .lookup_all(ATTR_PROXY_STATE)
            .into_iter()
            .map(|a| a.encode_bytes())
            .collect();
        assert_eq!(states, vec![b"one".to_vec(), b"two".to_vec()]);
        // A reply checked against another secret fails.
        assert!(nas::check_reply(&reply, &built, b"wrong").is_err());
    }
}
