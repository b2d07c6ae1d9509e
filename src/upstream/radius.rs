//! A RADIUS first factor: the site's existing RADIUS server checks the password (otpgate is its
//! client, PAP, RFC 2865), otpgate then checks the code itself.
//!
//! Each check sends one Access-Request from its own UDP socket (an ephemeral port, so checks
//! never wait on each other's Identifiers), with Message-Authenticator (RFC 3579 section 3.2)
//! and a NAS-Identifier. A reply counts only if its Response Authenticator verifies (RFC 2865
//! section 3) and, unless the upstream is configured otherwise, it carries a
//! Message-Authenticator that verifies (Blast-RADIUS, CVE-2024-3596). Anything else on the
//! socket is ignored until the attempt's timeout.
//!
//! Failover: servers are tried in order, each `retries + 1` times (a retransmission is the
//! same octets, RFC 5080 section 2.2.1). A server none of whose attempts was answered is
//! marked down for [`DOWN_FOR`] and tried after the live ones meanwhile, so one dead primary
//! does not cost every login its whole timeout.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use radius::core::code::Code;
use tokio::net::UdpSocket;
use tracing::debug;
use zeroize::Zeroizing;

use super::Verdict;
use crate::radius::nas::{self, BuiltRequest};
use crate::radius::packet::{find_attribute, ATTR_MESSAGE_AUTHENTICATOR, MAX_PACKET_LEN};

/// How long a server that answered none of its attempts is tried last.
pub const DOWN_FOR: Duration = Duration::from_secs(30);
/// NAS-Identifier of otpgate's requests (RFC 2865 section 5.32).
const NAS_IDENTIFIER: &str = "otpgate";

/// Checks passwords against upstream RADIUS servers (see the module documentation).
pub struct RadiusFirstFactor {
    servers: Vec<Server>,
    secret: Zeroizing<Vec<u8>>,
    timeout: Duration,
    retries: u32,
    require_message_authenticator: bool,
    /// When the table of down marks was made: `Server::down_until` counts from it.
    epoch: Instant,
}

struct Server {
    address: SocketAddr,
    /// Milliseconds since `epoch` until which the server counts as down; 0: up.
    down_until: AtomicU64,
}

/// How one attempt ended.
enum Attempt {
    Answered(Code),
    Failed(String),
}

impl RadiusFirstFactor {
    /// Errors name the problem: no servers, an empty secret, a zero timeout.
    pub fn new(
        servers: Vec<SocketAddr>,
        secret: &[u8],
        timeout: Duration,
        retries: u32,
        require_message_authenticator: bool,
    ) -> Result<RadiusFirstFactor, String> {
        if servers.is_empty() {
            return Err("radius: no servers configured".into());
        }
        if secret.is_empty() {
            return Err("radius: the shared secret is empty".into());
        }
        if timeout.is_zero() {
            return Err("radius: timeout must be greater than zero".into());
        }
        Ok(RadiusFirstFactor {
            servers: servers
                .into_iter()
                .map(|address| Server {
                    address,
                    down_until: AtomicU64::new(0),
                })
                .collect(),
            secret: Zeroizing::new(secret.to_vec()),
            timeout,
            retries,
            require_message_authenticator,
            epoch: Instant::now(),
        })
    }

    /// Asks the servers whether `password` is `user`'s. Access-Accept: Accepted; Access-Reject
    /// (or an Access-Challenge, which otpgate cannot relay): Rejected, no further server
    /// asked; no authentic answer from any: Unavailable. A password RFC 2865 section 5.2
    /// cannot carry (empty or over 128 octets) is Rejected without asking.
    ///
    /// Takes at most about `timeout * (retries + 1) * servers`.
    pub async fn check(&self, user: &str, password: &[u8]) -> Verdict {
        if password.is_empty() || password.len() > 128 {
            debug!(
                user,
                "radius upstream: password length refused without asking"
            );
            return Verdict::Rejected;
        }
        let mut failures = Vec::new();
        for server in self.in_order() {
            match self.ask(server, user, password).await {
                Ok(Code::AccessAccept) => return Verdict::Accepted,
                Ok(code) => {
                    if code != Code::AccessReject {
                        debug!(user, server = %server.address, ?code, "radius upstream: answer taken as a reject");
                    }
                    return Verdict::Rejected;
                }
                Err(reason) => {
                    self.mark_down(server);
                    failures.push(format!("{}: {reason}", server.address));
                }
            }
        }
        Verdict::Unavailable {
            reason: failures.join("; "),
        }
    }

    /// The servers, those not marked down first (each group in configured order).
    fn in_order(&self) -> Vec<&Server> {
        let now = self.millis();
        let (up, down): (Vec<&Server>, Vec<&Server>) = self
            .servers
            .iter()
            .partition(|s| s.down_until.load(Ordering::Relaxed) <= now);
        up.into_iter().chain(down).collect()
    }

    fn mark_down(&self, server: &Server) {
        let until = self.millis() + u64::try_from(DOWN_FOR.as_millis()).unwrap_or(u64::MAX);
        server.down_until.store(until, Ordering::Relaxed);
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// One server, `retries + 1` attempts with the same request: the code of its authentic
    /// answer, or why there was none.
    async fn ask(&self, server: &Server, user: &str, password: &[u8]) -> Result<Code, String> {
        let local: SocketAddr = if server.address.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| format!("cannot open a socket: {e}"))?;
        socket
            .connect(server.address)
            .await
            .map_err(|e| format!("cannot reach: {e}"))?;
        let request = nas::access_request_from(
            Some(NAS_IDENTIFIER),
            rand::random(),
            user,
            password,
            &self.secret,
            true,
        )?;
        let mut last = String::from("no attempt");
        for _ in 0..=self.retries {
            match self.attempt(&socket, &request).await {
                Attempt::Answered(code) => return Ok(code),
                Attempt::Failed(reason) => {
                    debug!(user, server = %server.address, %reason, "radius upstream: attempt failed");
                    last = reason;
                }
            }
        }
        Err(last)
    }

    /// Sends the request and waits up to the timeout for an authentic answer to it.
    async fn attempt(&self, socket: &UdpSocket, request: &BuiltRequest) -> Attempt {
        if let Err(e) = socket.send(&request.bytes).await {
            return Attempt::Failed(format!("send failed: {e}"));
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut buf = vec![0u8; MAX_PACKET_LEN];
        // Why the last datagram was not taken (a wrong secret shows here, not as a timeout).
        let mut ignored: Option<String> = None;
        loop {
            let received = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await;
            let n = match received {
                Err(_) => {
                    return Attempt::Failed(match ignored {
                        Some(reason) => format!("timed out; a reply was ignored: {reason}"),
                        None => "timed out".into(),
                    })
                }
                // ICMP port unreachable shows here on a connected socket.
                Ok(Err(e)) => return Attempt::Failed(format!("receive failed: {e}")),
                Ok(Ok(n)) => n,
            };
            let Some(reply) = buf.get(..n) else {
                continue;
            };
            match self.authentic(reply, request) {
                Ok(code) => return Attempt::Answered(code),
                // A stray or forged datagram: keep waiting for the real answer.
                Err(reason) => {
                    debug!(%reason, "radius upstream: reply ignored");
                    ignored = Some(reason);
                }
            }
        }
    }

    /// The code of `reply` if it answers `request` and is authentic.
    fn authentic(&self, reply: &[u8], request: &BuiltRequest) -> Result<Code, String> {
        if reply.get(1) != request.bytes.get(1) {
            return Err("another Identifier".into());
        }
        let checked = nas::check_reply(reply, request, &self.secret)?;
        if self.require_message_authenticator
            && find_attribute(reply, ATTR_MESSAGE_AUTHENTICATOR).is_none()
        {
            return Err("no Message-Authenticator (require_message_authenticator)".into());
        }
        Ok(checked.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructor_errors_name_the_problem() {
        let addr: SocketAddr = "127.0.0.1:1812".parse().expect("addr");
        let second = Duration::from_secs(1);
        let new = |servers, secret: &[u8], timeout| {
            RadiusFirstFactor::new(servers, secret, timeout, 0, true).err()
        };
        assert!(new(vec![], b"s", second).is_some_and(|e| e.contains("no servers")));
        assert!(new(vec![addr], b"", second).is_some_and(|e| e.contains("secret")));
        assert!(new(vec![addr], b"s", Duration::ZERO).is_some_and(|e| e.contains("timeout")));
        assert!(new(vec![addr], b"s", second).is_none());
    }

    #[tokio::test]
    async fn a_silent_server_is_unavailable_and_tried_last_afterwards() {
        // Bound but never answering: each attempt times out.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let other = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let servers = vec![
            silent.local_addr().expect("addr"),
            other.local_addr().expect("addr"),
        ];
        let upstream = RadiusFirstFactor::new(
            servers.clone(),
            b"secret",
            Duration::from_millis(50),
            1,
            true,
        )
        .expect("upstream");
        let verdict = upstream.check("alice", b"pw").await;
        assert!(
            matches!(&verdict, Verdict::Unavailable { reason } if reason.contains("timed out")),
            "{verdict:?}"
        );
        // Both are marked down: the order stays the configured one. Once the second is up
        // again, it goes first.
        let order = |u: &RadiusFirstFactor| -> Vec<SocketAddr> {
            u.in_order().iter().map(|s| s.address).collect()
        };
        assert_eq!(order(&upstream), servers);
        upstream.servers[1].down_until.store(0, Ordering::Relaxed);
        assert_eq!(order(&upstream), vec![servers[1], servers[0]]);
        assert_eq!(
            upstream.check("alice", b"").await,
            Verdict::Rejected,
            "an empty password is not sent"
        );
    }
}
