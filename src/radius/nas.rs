//! The NAS side of the exchange: building PAP Access-Requests and checking the replies, as a
//! VPN concentrator does. Used by the integration tests, the load generator and, when a site's
//! existing RADIUS server checks passwords, by otpgate itself as that server's client
//! ([`crate::upstream::radius`]).

use hmac::{Hmac, Mac};
use md5::Md5;
use radius::core::avp::AVP;
use radius::core::code::Code;
use radius::core::packet::Packet;
use radius::core::rfc2865;

use super::packet::{find_attribute, ATTR_MESSAGE_AUTHENTICATOR, ATTR_REPLY_MESSAGE, HEADER_LEN};

type HmacMd5 = Hmac<Md5>;

/// A request ready to send, with what is needed to check its reply.
pub struct BuiltRequest {
    pub bytes: Vec<u8>,
    pub authenticator: [u8; 16],
}

/// Builds a PAP Access-Request; with `message_authenticator` it carries one (RFC 3579 3.2).
pub fn access_request(
    identifier: u8,
    user_name: &str,
    password: &[u8],
    secret: &[u8],
    message_authenticator: bool,
) -> Result<BuiltRequest, String> {
    access_request_from(
        None,
        identifier,
        user_name,
        password,
        secret,
        message_authenticator,
    )
}

/// As [`access_request`], with a NAS-Identifier (RFC 2865 section 5.32: a request carries a
/// NAS-IP-Address or a NAS-Identifier) when `nas_identifier` is given.
pub fn access_request_from(
    nas_identifier: Option<&str>,
    identifier: u8,
    user_name: &str,
    password: &[u8],
    secret: &[u8],
    message_authenticator: bool,
) -> Result<BuiltRequest, String> {
    let mut packet = Packet::new_with_identifier(Code::AccessRequest, secret, identifier);
    if message_authenticator {
        packet.add(AVP::from_bytes(ATTR_MESSAGE_AUTHENTICATOR, &[0u8; 16]));
    }
    if let Some(nas) = nas_identifier {
        rfc2865::add_nas_identifier(&mut packet, nas);
    }
    rfc2865::add_user_name(&mut packet, user_name);
    rfc2865::add_user_password(&mut packet, password).map_err(|e| e.to_string())?;
    let mut bytes = packet.encode().map_err(|e| e.to_string())?;
    if message_authenticator {
        let mut mac = HmacMd5::new_from_slice(secret).map_err(|e| e.to_string())?;
        mac.update(&bytes);
        let tag = mac.finalize().into_bytes();
        // The Message-Authenticator is the first attribute: value at 22..38.
        bytes
            .get_mut(HEADER_LEN + 2..HEADER_LEN + 18)
            .ok_or("request too short")?
            .copy_from_slice(&tag);
    }
    let mut authenticator = [0u8; 16];
    authenticator.copy_from_slice(packet.get_authenticator());
    Ok(BuiltRequest {
        bytes,
        authenticator,
    })
}

/// A reply that passed the checks.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedReply {
    pub code: Code,
    pub identifier: u8,
    pub reply_message: Option<String>,
    /// Whether the first attribute is the Message-Authenticator.
    pub message_authenticator_first: bool,
}

/// RFC 2865 section 3: MD5(Code+ID+Length+RequestAuth+Attributes+Secret), compared in
/// constant time.
fn response_authenticator_verifies(reply: &[u8], request: &BuiltRequest, secret: &[u8]) -> bool {
    use md5::Digest;
    use subtle::ConstantTimeEq;
    let (Some(head), Some(given), Some(attributes)) = (
        reply.get(..4),
        reply.get(4..HEADER_LEN),
        reply.get(HEADER_LEN..),
    ) else {
        return false;
    };
    let mut md5 = Md5::new();
    md5.update(head);
    md5.update(request.authenticator);
    md5.update(attributes);
    md5.update(secret);
    md5.finalize().as_slice().ct_eq(given).into()
}

/// Checks a reply's Response Authenticator (RFC 2865 section 3) and, when present, its
/// Message-Authenticator (RFC 3579 section 3.2).
pub fn check_reply(
    reply: &[u8],
    request: &BuiltRequest,
    secret: &[u8],
) -> Result<CheckedReply, String> {
    if !response_authenticator_verifies(reply, request, secret) {
        return Err("bad Response Authenticator".into());
    }
    let packet = Packet::decode(reply, secret).map_err(|e| e.to_string())?;
    let first_attr = reply.get(HEADER_LEN).copied();
    if let Some(offset) = find_attribute(reply, ATTR_MESSAGE_AUTHENTICATOR) {
        let value = reply
            .get(offset + 2..offset + 18)
            .ok_or("short Message-Authenticator")?;
        let mut copy = reply.to_vec();
        copy[4..HEADER_LEN].copy_from_slice(&request.authenticator);
        copy[offset + 2..offset + 18].fill(0);
        let mut mac = HmacMd5::new_from_slice(secret).map_err(|e| e.to_string())?;
        mac.update(&copy);
        mac.verify_slice(value)
            .map_err(|_| "bad Message-Authenticator".to_string())?;
    }
    let reply_message = {
        let parts: Vec<Vec<u8>> = packet
            .lookup_all(ATTR_REPLY_MESSAGE)
            .into_iter()
            .map(|a| a.encode_bytes())
            .collect();
        (!parts.is_empty()).then(|| String::from_utf8_lossy(&parts.concat()).into_owned())
    };
    Ok(CheckedReply {
        code: packet.get_code(),
        identifier: packet.get_identifier(),
        reply_message,
        message_authenticator_first: first_attr == Some(ATTR_MESSAGE_AUTHENTICATOR),
    })
}
