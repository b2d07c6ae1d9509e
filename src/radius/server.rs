//! The UDP front end: one receive loop per listening socket, owned here rather than taken from
//! the `radius` crate's server (which neither checks nor adds Message-Authenticator, has no
//! reply cache, spawns without bound, and reads only 1500 octets).
//!
//! Per datagram, in order: client lookup by source address (unknown -> drop, counted, logged at
//! a rate limit), header and Message-Authenticator checks (drop, counted), the duplicate cache,
//! an in-flight permit (none left -> drop, counted), then the [`RequestHandler`] in its own
//! task, whose decision is encoded, remembered for retransmissions and sent.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{watch, Semaphore};
use zeroize::Zeroizing;

use super::clients::{Client, ClientTable};
use super::dedup::{DedupCache, RequestKey, Seen};
use super::packet::{encode_reply, read_header, AccessRequest, ReplyCode, MAX_PACKET_LEN};
use super::stats::Stats;

/// Entries kept in the duplicate cache at most.
const DEDUP_CAPACITY: usize = 262_144;
/// Unknown-client warnings are logged at most once per this many seconds.
const UNKNOWN_CLIENT_LOG_INTERVAL_SECS: u64 = 10;

/// A checked Access-Request, as the authentication pipeline sees it.
pub struct Request {
    pub client: Arc<Client>,
    pub peer: SocketAddr,
    pub identifier: u8,
    pub user_name: Option<String>,
    /// The recovered User-Password; `None` when absent or malformed.
    pub password: Option<Zeroizing<Vec<u8>>>,
    pub has_chap_password: bool,
    /// Calling-Station-Id: the end user's address as the NAS saw it, if sent.
    pub calling_station_id: Option<String>,
}

/// The pipeline's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    pub message: Option<String>,
}

/// Decides Access-Requests. The server is generic over it, so the pipeline can be exercised
/// without a socket and the socket loop without a store.
pub trait RequestHandler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> impl Future<Output = Reply> + Send;
}

/// Shared state of all receive loops.
pub struct Server<H> {
    handler: Arc<H>,
    clients: ClientTable,
    dedup: Arc<DedupCache>,
    stats: Arc<Stats>,
    require_message_authenticator: bool,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    last_unknown_client_log: AtomicU64,
}

impl<H: RequestHandler> Server<H> {
    pub fn new(
        handler: Arc<H>,
        clients: ClientTable,
        settings: &crate::config::RadiusSettings,
        stats: Arc<Stats>,
    ) -> Server<H> {
        Server {
            handler,
            clients,
            dedup: Arc::new(DedupCache::new(settings.dedup_window, DEDUP_CAPACITY)),
            stats,
            require_message_authenticator: settings.require_message_authenticator,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            max_in_flight: settings.max_in_flight,
            last_unknown_client_log: AtomicU64::new(0),
        }
    }

    /// Serves every socket until `shutdown` turns true, then waits for the requests in flight
    /// to be answered.
    pub async fn serve(self: Arc<Self>, sockets: Vec<UdpSocket>, shutdown: watch::Receiver<bool>) {
        let mut loops = Vec::with_capacity(sockets.len());
        for socket in sockets {
            let server = Arc::clone(&self);
            let shutdown = shutdown.clone();
            loops.push(tokio::spawn(async move {
                server.receive_loop(Arc::new(socket), shutdown).await
            }));
        }
        for handle in loops {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, "a receive loop ended abnormally");
            }
        }
        // Every in-flight request holds a permit: taking them all waits for the last reply.
        let permits = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        if let Ok(all) = self.in_flight.acquire_many(permits).await {
            drop(all);
        }
    }

    async fn receive_loop(
        self: Arc<Self>,
        socket: Arc<UdpSocket>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // One more than the largest legal packet, so an oversized datagram is detected.
        let mut buf = vec![0u8; MAX_PACKET_LEN + 1];
        loop {
            let received = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break,
                r = socket.recv_from(&mut buf) => r,
            };
            match received {
                Ok((len, peer)) => {
                    let datagram = buf.get(..len).unwrap_or_default();
                    self.on_datagram(&socket, datagram, peer);
                }
                Err(e) => {
                    // ICMP errors from earlier sends surface here on Linux; never stop for them.
                    Stats::count(&self.stats.receive_errors);
                    tracing::debug!(error = %e, "receive error");
                }
            }
        }
    }

    fn on_datagram(&self, socket: &Arc<UdpSocket>, datagram: &[u8], peer: SocketAddr) {
        Stats::count(&self.stats.received);
        let Some(client) = self.clients.lookup(peer.ip()) else {
            Stats::count(&self.stats.dropped_unknown_client);
            self.log_unknown_client(peer);
            return;
        };
        if datagram.len() > MAX_PACKET_LEN {
            self.stats.dropped(super::packet::DropReason::Malformed);
            tracing::debug!(%peer, client = %client.name, "dropped oversized datagram");
            return;
        }
        let request = read_header(datagram).and_then(|header| {
            AccessRequest::decode(
                datagram,
                header,
                &client.secret,
                self.require_message_authenticator,
            )
        });
        let request = match request {
            Ok(r) => r,
            Err(reason) => {
                self.stats.dropped(reason);
                tracing::debug!(%peer, client = %client.name, reason = reason.as_str(), "dropped packet");
                return;
            }
        };
        let key = RequestKey {
            peer,
            identifier: request.header.identifier,
            authenticator: request.header.authenticator,
        };
        match self.dedup.begin(key, Instant::now()) {
            Seen::New => {}
            Seen::InProgress => {
                Stats::count(&self.stats.duplicates_in_progress);
                return;
            }
            Seen::Answered(reply) => {
                Stats::count(&self.stats.duplicates_answered);
                let socket = Arc::clone(socket);
                let stats = Arc::clone(&self.stats);
                tokio::spawn(async move {
                    if socket.send_to(&reply, peer).await.is_err() {
                        Stats::count(&stats.send_errors);
                    }
                });
                return;
            }
        }
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            Stats::count(&self.stats.dropped_overload);
            self.dedup.forget(&key);
            return;
        };
        let decoded = Request {
            client: Arc::clone(client),
            peer,
            identifier: request.header.identifier,
            user_name: request.user_name(),
            password: request.user_password(&client.secret),
            has_chap_password: request.has_chap_password(),
            calling_station_id: request.calling_station_id(),
        };
        let handler = Arc::clone(&self.handler);
        let socket = Arc::clone(socket);
        let stats = Arc::clone(&self.stats);
        let client = Arc::clone(client);
        let dedup = Arc::clone(&self.dedup);
        tokio::spawn(async move {
            let reply = handler.handle(decoded).await;
            Stats::count(match reply.code {
                ReplyCode::Accept => &stats.accepts,
                ReplyCode::Reject => &stats.rejects,
            });
            match encode_reply(
                &request,
                reply.code,
                reply.message.as_deref(),
                &client.secret,
            ) {
                Ok(bytes) => {
                    let bytes: Arc<[u8]> = Arc::from(bytes);
                    dedup.complete(&key, Arc::clone(&bytes));
                    if socket.send_to(&bytes, peer).await.is_err() {
                        Stats::count(&stats.send_errors);
                    }
                }
                Err(e) => {
                    dedup.forget(&key);
                    tracing::error!(%peer, error = %e, "could not encode a reply");
                }
            }
            drop(permit);
        });
    }

    fn log_unknown_client(&self, peer: SocketAddr) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_unknown_client_log.load(Ordering::Relaxed);
        if now >= last + UNKNOWN_CLIENT_LOG_INTERVAL_SECS
            && self
                .last_unknown_client_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let total = self.stats.dropped_unknown_client.load(Ordering::Relaxed);
            tracing::warn!(%peer, dropped_total = total, "dropped request from unknown client");
        }
    }
}
