//! RADIUS over TLS ("RadSec", RFC 6614) on TCP, port 2083 by convention.
//!
//! Mutual TLS (rustls, TLS 1.2 or 1.3): a client must present a certificate that chains to
//! `[radsec] client_ca`, and is then identified by it, not by its address: the configured client
//! whose `certificate_name` the certificate is valid for (its DNS subject alternative names,
//! checked by webpki) and whose `address` contains the connection's source; exactly one must
//! match. A source no RadSec client's `address` contains is closed before the handshake;
//! anyone else unidentified, after it. Each request is decided for the client as the current
//! configuration has it (identified again after a SIGHUP reload; a removed client's connection
//! ends). Connections are bounded in number, handshake time (5 s), idleness (10 minutes, plus
//! TCP keepalive) and write time (10 s). Over TLS the shared secret is the fixed `radsec` (RFC
//! 6614 section 2.3), used for the authenticators and Message-Authenticator as over UDP.
//!
//! A connection carries packets back to back, each framed by its Length field (RFC 6613
//! section 2.1). Requests on one connection are decided concurrently (bounded by
//! `max_in_flight`) and answered as they are decided, by Identifier; a framing error closes
//! the connection (the stream cannot be resynchronised, RFC 6613 section 2.6.4), a packet that
//! fails its checks is dropped and counted, as over UDP. The same [`RequestHandler`] decides,
//! so the same rules hold: no reply before the write it depends on is durable, and a Reject
//! leaves `reject_delay` after its request arrived. TCP needs no duplicate cache: a NAS does
//! not retransmit over a connection that stands (RFC 6613 section 2.6.2).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::clients::Client;
use super::dictionary::Dictionary;
use super::packet::{encode_reply, AccessRequest, Reply, ReplyCode, HEADER_LEN, MAX_PACKET_LEN};
use super::server::{Request, RequestHandler};
use super::stats::Stats;
use crate::config::{Application, ClientSettings, RadiusSettings, RadsecSettings, RADSEC_SECRET};
use crate::live::Live;

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no request for this long is closed (the NAS reconnects when it needs
/// to); TCP keepalive finds dead peers behind NATs sooner.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
const KEEPALIVE: Duration = Duration::from_secs(60);
/// A reply not written within this (the peer stopped reading) closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stop waits for the requests in flight on open connections.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Replies a connection may have queued for its writer.
const REPLY_QUEUE: usize = 256;
/// Connections open at once; past this a new one is closed at once (counted). RadSec clients
/// are NAS and proxies, a handful each, so this only bounds what a flood of handshakes costs.
const MAX_CONNECTIONS: usize = 1024;
/// Refused handshakes and unknown certificates are logged at most once per this many seconds
/// (the counters have them all), so a scanner cannot flood the log.
const REFUSAL_LOG_INTERVAL_SECS: u64 = 10;

/// The TLS configuration of `[radsec]`: otpgate's chain and key, client certificates required
/// and checked against `client_ca`. An error is the key at fault and the problem.
pub fn tls_config(
    settings: &RadsecSettings,
) -> Result<Arc<rustls::ServerConfig>, (&'static str, String)> {
    let provider = crate::tls::provider();
    let chain = crate::tls::certificates(&settings.tls_cert).map_err(|e| ("radsec.tls_cert", e))?;
    let key = crate::tls::private_key(&settings.tls_key).map_err(|e| ("radsec.tls_key", e))?;
    let roots =
        crate::tls::trust_anchors(&settings.client_ca).map_err(|e| ("radsec.client_ca", e))?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| ("radsec.client_ca", e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("radsec.tls_cert", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            (
                "radsec.tls_key",
                format!("the certificate and key do not make a TLS configuration: {e}"),
            )
        })?;
    Ok(Arc::new(config))
}

/// The clients that connect over RadSec, found by certificate.
pub struct RadsecClients {
    entries: Vec<RadsecClient>,
}

struct RadsecClient {
    certificate_name: ServerName<'static>,
    address: IpNet,
    client: Arc<Client>,
}

impl RadsecClients {
    /// The entries of `settings` with a `certificate_name`; it must be a DNS name.
    pub fn new(
        settings: &[ClientSettings],
        applications: &[Arc<Application>],
    ) -> Result<RadsecClients, String> {
        let mut entries = Vec::new();
        for c in settings {
            let Some(name) = &c.certificate_name else {
                continue;
            };
            let certificate_name = match ServerName::try_from(name.clone()) {
                Ok(dns @ ServerName::DnsName(_)) => dns,
                Ok(_) => {
                    return Err(format!(
                        "client `{}`: certificate_name `{name}` must be a DNS name",
                        c.name
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "client `{}`: certificate_name `{name}`: {e}",
                        c.name
                    ))
                }
            };
            if entries
                .iter()
                .any(|e: &RadsecClient| e.certificate_name == certificate_name)
            {
                return Err(format!(
                    "client `{}`: certificate_name `{name}` is another client's too",
                    c.name
                ));
            }
            entries.push(RadsecClient {
                certificate_name,
                address: c.address,
                client: Arc::new(Client::new(c, RADSEC_SECRET.as_bytes(), applications)?),
            });
        }
        Ok(RadsecClients { entries })
    }

    /// The client a verified certificate names, connecting from `source`: exactly one entry
    /// must match (a certificate valid for two clients' names identifies neither).
    fn identify(&self, certificate: &CertificateDer<'_>, source: IpAddr) -> Option<Arc<Client>> {
        let certificate = webpki::EndEntityCert::try_from(certificate).ok()?;
        let source = source.to_canonical();
        let mut matching = self.entries.iter().filter(|entry| {
            entry.address.contains(&source)
                && certificate
                    .verify_is_valid_for_subject_name(&entry.certificate_name)
                    .is_ok()
        });
        match (matching.next(), matching.next()) {
            (Some(entry), None) => Some(Arc::clone(&entry.client)),
            _ => None,
        }
    }

    /// Whether any RadSec client may connect from `source` (checked before the handshake).
    fn may_connect(&self, source: IpAddr) -> bool {
        let source = source.to_canonical();
        self.entries.iter().any(|e| e.address.contains(&source))
    }
}

/// A connection's client, identified again only when a reload has replaced the table.
#[derive(Default)]
struct Identity {
    table: Option<Arc<RadsecClients>>,
    client: Option<Arc<Client>>,
}

impl Identity {
    fn client(
        &mut self,
        clients: &Live<RadsecClients>,
        certificate: &CertificateDer<'_>,
        source: IpAddr,
    ) -> Option<Arc<Client>> {
        let table = clients.load();
        if !self.table.as_ref().is_some_and(|t| Arc::ptr_eq(t, &table)) {
            self.client = table.identify(certificate, source);
            self.table = Some(table);
        }
        self.client.clone()
    }
}

/// Serves RadSec connections with `handler`.
pub struct RadsecServer<H> {
    handler: Arc<H>,
    /// Replaced on reload; a connection is identified once, against the table of its time.
    clients: Arc<Live<RadsecClients>>,
    /// Names attributes in debug logs; replaced on reload.
    dictionary: Arc<Live<Dictionary>>,
    acceptor: TlsAcceptor,
    stats: Arc<Stats>,
    require_message_authenticator: bool,
    reject_delay: Duration,
    in_flight: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    /// Seconds since `started` of the last refusal logged.
    last_refusal_log: std::sync::atomic::AtomicU64,
    started: Instant,
}

impl<H: RequestHandler> RadsecServer<H> {
    pub fn new(
        handler: Arc<H>,
        clients: Arc<Live<RadsecClients>>,
        dictionary: Arc<Live<Dictionary>>,
        tls: Arc<rustls::ServerConfig>,
        settings: &RadiusSettings,
        stats: Arc<Stats>,
    ) -> RadsecServer<H> {
        RadsecServer {
            handler,
            clients,
            dictionary,
            acceptor: TlsAcceptor::from(tls),
            stats,
            require_message_authenticator: settings.require_message_authenticator,
            reject_delay: settings.reject_delay,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            last_refusal_log: std::sync::atomic::AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Logs a refused connection, at most once per [`REFUSAL_LOG_INTERVAL_SECS`].
    fn log_refusal(&self, peer: SocketAddr, why: &str) {
        use std::sync::atomic::Ordering;
        let now = self.started.elapsed().as_secs() + REFUSAL_LOG_INTERVAL_SECS;
        let last = self.last_refusal_log.load(Ordering::Relaxed);
        if now >= last + REFUSAL_LOG_INTERVAL_SECS
            && self
                .last_refusal_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(%peer, "radsec {why} (logged at most every {REFUSAL_LOG_INTERVAL_SECS} s; see the counters)");
        }
    }

    /// Accepts connections until `stop` turns true, then lets open connections answer what
    /// they have in flight (at most [`STOP_GRACE`]) and returns.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match Arc::clone(&self.connections).try_acquire_owned() {
                        Ok(permit) => {
                            let server = Arc::clone(&self);
                            let stop = stop.clone();
                            connections.spawn(async move {
                                server.connection(stream, peer, stop).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            Stats::count(&self.stats.dropped_overload);
                            self.log_refusal(peer, "connection refused: too many open");
                        }
                    },
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    Err(e) => {
                        tracing::warn!(error = %e, "radsec accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = stop.changed() => break,
            }
            while connections.try_join_next().is_some() {}
        }
        drop(listener);
        let drained = tokio::time::timeout(STOP_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("radsec connections still open at stop were closed");
        }
    }

    /// One connection: handshake, identification by certificate, then requests until the
    /// client closes, a framing error, or a stop.
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        mut stop: watch::Receiver<bool>,
    ) {
        if !self.clients.load().may_connect(peer.ip()) {
            Stats::count(&self.stats.dropped_unknown_client);
            self.log_refusal(peer, "connection from an address no RadSec client has");
            return;
        }
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE)
            .with_interval(KEEPALIVE);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                Stats::count(&self.stats.radsec_handshake_failures);
                tracing::debug!(%peer, error = %e, "radsec TLS handshake failed");
                self.log_refusal(peer, "TLS handshake failed");
                return;
            }
            Err(_) => {
                Stats::count(&self.stats.radsec_handshake_failures);
                self.log_refusal(peer, "TLS handshake timed out");
                return;
            }
        };
        let Some(certificate) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.clone().into_owned())
        else {
            return;
        };
        let mut identity = Identity::default();
        let Some(client) = identity.client(&self.clients, &certificate, peer.ip()) else {
            Stats::count(&self.stats.dropped_unknown_client);
            self.log_refusal(peer, "client certificate names no configured client here");
            return;
        };
        Stats::count(&self.stats.radsec_connections);
        tracing::info!(%peer, client = %client.name, "radsec client connected");
        let (mut reader, mut writer) = tokio::io::split(tls);
        let (replies, mut outgoing) = mpsc::channel::<Vec<u8>>(REPLY_QUEUE);
        // Closed when the peer stops reading: a stuck writer must not keep replies (and the
        // requests' permits) waiting.
        let (closing, mut closed) = watch::channel(false);
        let writing = tokio::spawn(async move {
            while let Some(bytes) = outgoing.recv().await {
                let written = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&bytes)).await;
                if !matches!(written, Ok(Ok(()))) {
                    let _ = closing.send(true);
                    return;
                }
            }
            let _ = tokio::time::timeout(WRITE_TIMEOUT, writer.shutdown()).await;
        });
        let mut answering = JoinSet::new();
        loop {
            let read = tokio::select! {
                read = tokio::time::timeout(IDLE_TIMEOUT, read_packet(&mut reader)) => read,
                _ = stop.changed() => break,
                _ = closed.changed() => break,
            };
            let bytes = match read {
                Ok(Ok(Some(bytes))) => bytes,
                Ok(Ok(None)) => break,
                Ok(Err(reason)) => {
                    self.stats.dropped(super::packet::DropReason::Malformed);
                    tracing::debug!(%peer, client = %client.name, %reason, "radsec connection closed");
                    break;
                }
                Err(_) => {
                    tracing::debug!(%peer, client = %client.name, "radsec connection idle: closed");
                    break;
                }
            };
            let arrived = Instant::now();
            // The client as the configuration now has it: a reload may have changed its
            // application, or removed it (then the connection ends).
            let Some(client) = identity.client(&self.clients, &certificate, peer.ip()) else {
                self.log_refusal(peer, "client removed by a reload: connection closed");
                break;
            };
            if let Some(permit) = self.admit(&client, peer) {
                answering.spawn(Arc::clone(&self).answer(
                    bytes,
                    Arc::clone(&client),
                    peer,
                    arrived,
                    replies.clone(),
                    permit,
                ));
            }
            while answering.try_join_next().is_some() {}
        }
        // Answer what was read before closing.
        while answering.join_next().await.is_some() {}
        drop(replies);
        let _ = writing.await;
        tracing::info!(%peer, client = %client.name, "radsec client disconnected");
    }

    /// Counts a packet and takes an in-flight permit for it; `None` (counted) when none is free.
    fn admit(&self, client: &Client, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        Stats::count(&self.stats.received);
        match Arc::clone(&self.in_flight).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                Stats::count(&self.stats.dropped_overload);
                tracing::debug!(%peer, client = %client.name, "radsec request dropped: overload");
                None
            }
        }
    }

    /// Checks, decides and answers one request (its permit held until it is decided).
    async fn answer(
        self: Arc<Self>,
        bytes: Vec<u8>,
        client: Arc<Client>,
        peer: SocketAddr,
        arrived: Instant,
        replies: mpsc::Sender<Vec<u8>>,
        permit: OwnedSemaphorePermit,
    ) {
        let checked =
            AccessRequest::check(&bytes, &client.secret, self.require_message_authenticator);
        let request = match checked {
            Ok(request) => request,
            Err(reason) => {
                self.stats.dropped(reason);
                tracing::debug!(%peer, client = %client.name, reason = reason.as_str(), "dropped radsec packet");
                return;
            }
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                %peer,
                client = %client.name,
                attributes = %self.dictionary.load().describe(bytes.get(HEADER_LEN..).unwrap_or_default()),
                "radsec request"
            );
        }
        let reply = if request.is_status_server() {
            Stats::count(&self.stats.status_server);
            Reply::new(ReplyCode::Accept, None)
        } else {
            let reply = self.decide(&request, Arc::clone(&client), peer).await;
            Stats::count(match reply.code {
                ReplyCode::Accept => &self.stats.accepts,
                ReplyCode::Reject => &self.stats.rejects,
                ReplyCode::Challenge => &self.stats.challenges,
            });
            if reply.code == ReplyCode::Reject {
                // A held Reject holds no permit, as on the UDP path.
                drop(permit);
                tokio::time::sleep_until(arrived + self.reject_delay).await;
            }
            reply
        };
        match encode_reply(&request, &reply, &client.secret) {
            Ok(encoded) => {
                if replies.send(encoded).await.is_err() {
                    Stats::count(&self.stats.send_errors);
                }
            }
            Err(e) => tracing::error!(%peer, error = %e, "could not encode a radsec reply"),
        }
    }

    /// The handler's decision; a decision that wrote state is made durable first (on the
    /// blocking pool), and replaced by the handler's `unavailable` reply if that fails.
    async fn decide(
        &self,
        request: &AccessRequest,
        client: Arc<Client>,
        peer: SocketAddr,
    ) -> Reply {
        let decoded = Request {
            peer,
            identifier: request.header.identifier,
            user_name: request.user_name(),
            password: request.user_password(&client.secret),
            has_chap_password: request.has_chap_password(),
            calling_station_id: request.calling_station_id(),
            state: request.state(),
            client,
        };
        let Some(decided) = self.handler.decide_now(&decoded) else {
            return self.handler.handle(decoded).await;
        };
        if !decided.wrote {
            return decided.reply;
        }
        let handler = Arc::clone(&self.handler);
        match tokio::task::spawn_blocking(move || handler.make_durable()).await {
            Ok(Ok(())) => decided.reply,
            Ok(Err(reason)) => {
                tracing::error!(%reason, "could not make a radsec decision durable; refusing it");
                self.handler.unavailable()
            }
            Err(e) => {
                tracing::error!(error = %e, "could not make a radsec decision durable; refusing it");
                self.handler.unavailable()
            }
        }
    }
}

/// The next packet of a stream: `None` at a clean end of stream (between packets), an error
/// for a Length outside 20..=4096 or a stream cut mid-packet (RFC 6613 section 2.1).
async fn read_packet<R: AsyncReadExt + Unpin>(reader: &mut R) -> Result<Option<Vec<u8>>, String> {
    let mut head = [0u8; 4];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let length = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&length) {
        return Err(format!("Length {length} outside 20..=4096"));
    }
    let mut packet = vec![0u8; length];
    packet[..4].copy_from_slice(&head);
    reader
        .read_exact(&mut packet[4..])
        .await
        .map_err(|e| format!("stream ended inside a packet: {e}"))?;
    Ok(Some(packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn packets_are_framed_by_their_length() {
        let mut first = vec![1u8, 7, 0, 20];
        first.extend_from_slice(&[0u8; 16]);
        let mut stream = first.clone();
        stream.extend_from_slice(&first);
        stream.extend_from_slice(&[1, 8, 0, 19]);
        let mut reader = stream.as_slice();
        assert_eq!(read_packet(&mut reader).await, Ok(Some(first.clone())));
        assert_eq!(read_packet(&mut reader).await, Ok(Some(first)));
        assert!(read_packet(&mut reader)
            .await
            .is_err_and(|e| e.contains("Length 19")));
        let mut cut = &[1u8, 9, 0, 30, 0][..];
        assert!(read_packet(&mut cut).await.is_err());
        let mut empty = &[][..];
        assert_eq!(read_packet(&mut empty).await, Ok(None));
    }
}
