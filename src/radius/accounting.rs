//! Accounting (RFC 2866) on `[radius] accounting_listen`: an Accounting-Request from a known
//! client whose Request Authenticator checks out is answered with an Accounting-Response once
//! the user's last session is durable in the store (`session/<user>`, through the one write
//! path). Anything else is dropped, as on the authentication port. Accounting is light
//! traffic next to logins: one task per socket, each record made durable before its answer.

use std::net::SocketAddr;
use std::sync::Arc;

use md5::{Digest, Md5};
use radius::core::code::Code;
use radius::core::packet::Packet;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::clients::ClientTable;
use super::packet::MAX_PACKET_LEN;
use crate::clock::Clock;
use crate::live::Live;
use crate::store::{ChangeSet, Expect, Store, StoreError};

const PREFIX: &[u8] = b"session/";
const HEADER_LEN: usize = 20;
const ATTR_USER_NAME: u8 = 1;
const ATTR_FRAMED_IP: u8 = 8;
const ATTR_ACCT_STATUS_TYPE: u8 = 40;
const ATTR_ACCT_SESSION_ID: u8 = 44;

/// The last accounting record seen for a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// `start`, `stop`, `interim-update`, `accounting-on`, `accounting-off` or the number.
    pub status: String,
    pub session_id: Option<String>,
    /// The client (NAS) that sent it.
    pub client: String,
    pub framed_ip: Option<String>,
    /// Unix seconds it was received.
    pub at: u64,
}

fn key(username: &str) -> Vec<u8> {
    let mut key = PREFIX.to_vec();
    key.extend_from_slice(username.as_bytes());
    key
}

/// The last session recorded for `username`, if any.
pub fn last_session(store: &dyn Store, username: &str) -> Result<Option<Session>, StoreError> {
    store
        .record(&key(username))?
        .map(|bytes| crate::store::decode(|| format!("records/session/{username}"), &bytes))
        .transpose()
}

/// RFC 2866 section 3: the Request Authenticator is MD5(Code + Identifier + Length + 16 zero
/// octets + Attributes + Secret); compared in constant time.
fn authentic(packet: &[u8], secret: &[u8]) -> bool {
    let Some((header, attributes)) = packet.split_at_checked(HEADER_LEN) else {
        return false;
    };
    let mut md5 = Md5::new();
    md5.update(&header[..4]);
    md5.update([0u8; 16]);
    md5.update(attributes);
    md5.update(secret);
    bool::from(md5.finalize().as_slice().ct_eq(&header[4..HEADER_LEN]))
}

fn status_name(value: &[u8]) -> String {
    match <[u8; 4]>::try_from(value).map(u32::from_be_bytes) {
        Ok(1) => "start".into(),
        Ok(2) => "stop".into(),
        Ok(3) => "interim-update".into(),
        Ok(7) => "accounting-on".into(),
        Ok(8) => "accounting-off".into(),
        Ok(n) => n.to_string(),
        Err(_) => "unknown".into(),
    }
}

/// What an accounting datagram becomes: the user's session to record, if it names a user,
/// and the response to send.
struct Answer {
    session: Option<(String, Session)>,
    response: Vec<u8>,
}

/// What an accounting datagram from `client_name` becomes, if it is an authentic
/// Accounting-Request.
fn answer(datagram: &[u8], secret: &[u8], client_name: &str, now: u64) -> Option<Answer> {
    let (&code, _) = datagram.split_first()?;
    if code != Code::AccountingRequest as u8 || datagram.len() < HEADER_LEN {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([*datagram.get(2)?, *datagram.get(3)?]));
    let packet = datagram.get(..length).filter(|_| length >= HEADER_LEN)?;
    if !authentic(packet, secret) {
        return None;
    }
    let request = Packet::decode(packet, secret).ok()?;
    let text = |t: u8| {
        request
            .lookup(t)
            .map(|avp| String::from_utf8_lossy(&avp.encode_bytes()).into_owned())
    };
    let session = text(ATTR_USER_NAME).filter(|u| !u.is_empty()).map(|user| {
        let framed_ip = request.lookup(ATTR_FRAMED_IP).and_then(|avp| {
            <[u8; 4]>::try_from(avp.encode_bytes().as_slice())
                .ok()
                .map(|o| std::net::Ipv4Addr::from(o).to_string())
        });
        let session = Session {
            status: request
                .lookup(ATTR_ACCT_STATUS_TYPE)
                .map(|avp| status_name(&avp.encode_bytes()))
                .unwrap_or_else(|| "unknown".into()),
            session_id: text(ATTR_ACCT_SESSION_ID),
            client: client_name.to_string(),
            framed_ip,
            at: now,
        };
        (user, session)
    });
    let mut response = request.make_response_packet(Code::AccountingResponse);
    for proxy_state in request.lookup_all(33) {
        response.add(proxy_state.clone());
    }
    let response = response.encode().ok()?;
    Some(Answer { session, response })
}

/// Serves accounting on `socket` until `stopped` turns true.
pub async fn serve(
    socket: UdpSocket,
    clients: Arc<Live<ClientTable>>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_PACKET_LEN + 1];
    loop {
        let (len, peer): (usize, SocketAddr) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::warn!(error = %e, "accounting: receive failed");
                    continue;
                }
            },
            _ = stopped.wait_for(|stop| *stop) => return,
        };
        let Some(client) = clients.load().lookup(peer.ip()).cloned() else {
            tracing::debug!(%peer, "accounting: unknown client, dropped");
            continue;
        };
        let Some(datagram) = buf.get(..len).filter(|d| d.len() <= MAX_PACKET_LEN) else {
            continue;
        };
        let Some(Answer { session, response }) =
            answer(datagram, &client.secret, &client.name, clock.now())
        else {
            tracing::debug!(%peer, client = %client.name, "accounting: dropped a packet");
            continue;
        };
        if let Some((user, session)) = session {
            let store = Arc::clone(&store);
            let written = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
                let value = crate::store::encode(&session)?;
                store.apply(ChangeSet::new().record(key(&user), Expect::Anything, Some(value)))?;
                store.sync()
            })
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // No response: the NAS retries, and nothing it reported is lost.
                    tracing::error!(error = %e, "accounting: record not stored; not answered");
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "accounting: task failed");
                    continue;
                }
            }
        }
        if let Err(e) = socket.send_to(&response, peer).await {
            tracing::warn!(%peer, error = %e, "accounting: send failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_authenticator_is_checked_and_the_response_signed() {
        let secret = b"accounting-secret";
        let mut request = Packet::new(Code::AccountingRequest, secret);
        request.add(radius::core::avp::AVP::from_string(ATTR_USER_NAME, "ann"));
        request.add(radius::core::avp::AVP::from_u32(ATTR_ACCT_STATUS_TYPE, 1));
        request.add(radius::core::avp::AVP::from_string(
            ATTR_ACCT_SESSION_ID,
            "s-1",
        ));
        let bytes = request.encode().expect("encode");
        let Answer { session, response } = answer(&bytes, secret, "nas", 7).expect("answered");
        let (user, session) = session.expect("a session");
        assert_eq!(user, "ann");
        assert_eq!(
            (
                session.status.as_str(),
                session.session_id.as_deref(),
                session.at
            ),
            ("start", Some("s-1"), 7)
        );
        assert!(Packet::is_authentic_response(&response, &bytes, secret));
        assert!(answer(&bytes, b"another-secret", "nas", 7).is_none());
        let mut forged = bytes.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(answer(&forged, secret, "nas", 7).is_none());
    }
}
