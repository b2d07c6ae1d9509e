//! The UDP front end, owned here rather than taken from the `radius` crate's server (which
//! neither checks nor adds Message-Authenticator, has no reply cache, spawns without bound, and
//! reads only 1500 octets).
//!
//! Each listening address has one socket per worker (`SO_REUSEPORT`), each served by its own
//! thread in batches:
//!
//! 1. `recvmmsg` takes every datagram queued (up to [`BATCH`]).
//! 2. Per datagram, in order: client lookup by source address (unknown -> drop, counted, logged
//!    at a rate limit), header and Message-Authenticator checks (drop, counted), the duplicate
//!    cache (a retransmission -> its first decision, encoded again).
//! 3. The handler decides at once what needs no waiting (a cheap password hash); its state
//!    changes are made durable by one sync for the whole batch, then every reply leaves in one
//!    `sendmmsg`. Syncing and sending are the committers' job (a small pool shared by all
//!    workers), so a worker decides its next batch meanwhile. A request that needs a costly
//!    hash (argon2id...) goes to the async runtime instead, bounded by `max_in_flight`, and is
//!    answered from there.
//! 4. An Access-Reject, on either path, is not sent but handed to the [`DelayQueue`], which
//!    sends it `reject_delay` after its request arrived (FreeRADIUS `reject_delay`: no oracle
//!    by reply time); Accepts leave at once.
//!
//! No reply leaves before the state change it depends on is durable.

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::clients::{Client, ClientTable};
use super::dedup::{DedupCache, RequestKey, Seen};
use super::delay::{DelayQueue, Delayed};
use super::dictionary::Dictionary;
use super::mmsg::{is_idle, send_batch, RecvBatch};
pub use super::packet::Reply;
use super::packet::{
    encode_reply, AccessRequest, DropReason, ReplyCode, HEADER_LEN, MAX_PACKET_LEN,
};
use super::stats::Stats;
use crate::live::Live;

/// Requests the duplicate cache remembers at most: about four seconds at 60,000 requests/s,
/// longer than a NAS's usual retransmission timeout (about 24 MiB when full).
const DEDUP_CAPACITY: usize = 262_144;
/// Access-Rejects that may wait for their `reject_delay` at once; past this they are dropped
/// (counted, logged; the NAS retransmits). Each holds an in-progress slot of the duplicate
/// cache, so half its capacity: with the async path's `max_in_flight` (at most 65,536) and the
/// batches being decided, in-progress slots stay under the capacity and answered entries keep
/// at least a quarter of it, while the cache's search for a free slot stays short. At the
/// default 1 s delay that is 131,072 Rejects a second, more than the workers can decide; at
/// most about 35 MiB of held replies.
const DELAYED_CAPACITY: usize = DEDUP_CAPACITY / 2;
/// Datagrams taken per `recvmmsg`.
pub const BATCH: usize = 64;
/// Decided batches the workers may queue for the committers before they wait.
const COMMIT_QUEUE: usize = 16;
/// Committer threads. Two, so that one sends its batch's replies while the other already
/// syncs the next batch, and both may flush at once (the token log keeps more than one flush
/// in flight): the disk never waits for a `sendmmsg`. Three measured no better.
const COMMITTERS: usize = 2;
/// How often a worker looks at the stop flag while idle.
const IDLE_WAKE: Duration = Duration::from_millis(100);
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
    /// State (RFC 2865 section 5.24): sent back with the answer to an Access-Challenge.
    pub state: Option<Vec<u8>>,
}

/// A decision taken at once, whose reply may depend on writes not yet durable.
pub struct Decided {
    pub reply: Reply,
    /// The decision wrote state: [`RequestHandler::make_durable`] must succeed before sending.
    pub wrote: bool,
}

/// Decides Access-Requests. The server is generic over it, so the pipeline can be exercised
/// without a socket and the socket loop without a store.
pub trait RequestHandler: Send + Sync + 'static {
    /// Decides now if that needs no waiting; `None` sends the request to [`Self::handle`].
    fn decide_now(&self, request: &Request) -> Option<Decided>;
    /// Makes durable every write of the `decide_now` calls made so far (blocking).
    fn make_durable(&self) -> Result<(), String>;
    /// The reply sent instead of a decision that could not be made durable.
    fn unavailable(&self) -> Reply;
    /// The full path, durability included.
    fn handle(&self, request: Request) -> impl Future<Output = Reply> + Send;
}

/// What became of one datagram.
enum Disposition {
    Dropped,
    /// A retransmission: the first answer, encoded again.
    Resend(Vec<u8>),
    /// Decided in this batch; sent after the batch's sync.
    Decided(Box<Fast>),
    /// Handed to the async path.
    Deferred,
}

/// A decided batch on its way to a committer.
struct Commit {
    socket: Arc<UdpSocket>,
    /// When the batch was received: its Rejects leave `reject_delay` after this.
    arrived: Instant,
    dispositions: Vec<(Disposition, SocketAddr)>,
    /// Some decision wrote state: the replies wait for a sync.
    wrote: bool,
}

struct Fast {
    key: RequestKey,
    request: AccessRequest,
    client: Arc<Client>,
    decided: Decided,
}

/// Shared state of all workers.
pub struct Server<H> {
    handler: Arc<H>,
    /// Replaced on reload; each batch is looked up in the table of its time.
    clients: Arc<Live<ClientTable>>,
    /// Names attributes in debug logs; replaced on reload.
    dictionary: Arc<Live<Dictionary>>,
    dedup: Arc<DedupCache<Reply>>,
    stats: Arc<Stats>,
    /// Holds Access-Rejects until `reject_delay` after their arrival; `None` when it is zero.
    delayed: Option<Arc<DelayQueue<Reply>>>,
    reject_delay: Duration,
    require_message_authenticator: bool,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    last_unknown_client_log: AtomicU64,
    runtime: tokio::runtime::Handle,
}

impl<H: RequestHandler> Server<H> {
    pub fn new(
        handler: Arc<H>,
        clients: Arc<Live<ClientTable>>,
        dictionary: Arc<Live<Dictionary>>,
        settings: &crate::config::RadiusSettings,
        stats: Arc<Stats>,
        runtime: tokio::runtime::Handle,
    ) -> Server<H> {
        let dedup = Arc::new(DedupCache::new(settings.dedup_window, DEDUP_CAPACITY));
        let delayed = (!settings.reject_delay.is_zero()).then(|| {
            Arc::new(DelayQueue::new(
                Arc::clone(&dedup),
                Arc::clone(&stats),
                DELAYED_CAPACITY,
            ))
        });
        Server {
            handler,
            clients,
            dictionary,
            dedup,
            stats,
            delayed,
            reject_delay: settings.reject_delay,
            require_message_authenticator: settings.require_message_authenticator,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            max_in_flight: settings.max_in_flight,
            last_unknown_client_log: AtomicU64::new(0),
            runtime,
        }
    }

    /// Serves every socket on its own thread until `stop` is set, then waits for the requests
    /// in flight on the async path to be answered and for the delayed Rejects to leave (each at
    /// its deadline, so at most `reject_delay` longer).
    pub async fn serve(self: Arc<Self>, sockets: Vec<UdpSocket>, stop: Arc<AtomicBool>) {
        let (to_committers, batches) = std::sync::mpsc::sync_channel::<Commit>(COMMIT_QUEUE);
        let batches = Arc::new(Mutex::new(batches));
        let mut committers = Vec::with_capacity(COMMITTERS);
        for i in 0..COMMITTERS {
            let server = Arc::clone(&self);
            let batches = Arc::clone(&batches);
            let spawned = std::thread::Builder::new()
                .name(format!("otpgate-commit-{i}"))
                .spawn(move || server.committer(&batches));
            match spawned {
                Ok(handle) => committers.push(handle),
                Err(e) => tracing::error!(error = %e, "cannot start a committer thread"),
            }
        }
        // Only the committers hold the receiver: should they all end (a panic), the channel
        // closes and the workers answer their batches themselves instead of blocking on it.
        drop(batches);
        let mut workers = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            let server = Arc::clone(&self);
            let stop = Arc::clone(&stop);
            // Without committers the channel is closed and a worker answers its batches itself.
            let to_committers = to_committers.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("otpgate-udp-{i}"))
                .spawn(move || server.worker(socket, to_committers, stop));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => tracing::error!(error = %e, "cannot start a UDP worker thread"),
            }
        }
        // The committers stop once every worker has stopped and dropped its sender.
        drop(to_committers);
        let joined = tokio::task::spawn_blocking(move || {
            for worker in workers {
                if worker.join().is_err() {
                    tracing::error!("a UDP worker ended abnormally");
                }
            }
            for committer in committers {
                if committer.join().is_err() {
                    tracing::error!("a committer thread ended abnormally");
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::error!("waiting for the UDP workers failed");
        }
        // Every request on the async path holds a permit: taking them all waits for the last.
        let permits = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        if let Ok(all) = self.in_flight.acquire_many(permits).await {
            drop(all);
        }
        // Nothing hands over a Reject any more: send those held, at their deadline.
        if let Some(delayed) = self.delayed.clone() {
            if tokio::task::spawn_blocking(move || delayed.finish())
                .await
                .is_err()
            {
                tracing::error!("waiting for the delayed Rejects failed");
            }
        }
    }

    /// Receives and decides batches. A batch whose decisions wrote state goes to the
    /// committers, which make it durable and send its replies while the worker already decides
    /// the next batch; a batch that wrote nothing is answered at once.
    fn worker(
        self: Arc<Self>,
        socket: UdpSocket,
        to_committers: SyncSender<Commit>,
        stop: Arc<AtomicBool>,
    ) {
        let socket = Arc::new(socket);
        if let Err(e) = socket.set_read_timeout(Some(IDLE_WAKE)) {
            tracing::error!(error = %e, "cannot set the socket read timeout; worker stops");
            return;
        }
        // One more than the largest legal packet, so an oversized datagram is detected.
        let mut batch = RecvBatch::new(BATCH, MAX_PACKET_LEN + 1);
        while !stop.load(Ordering::Relaxed) {
            let received = match batch.receive(&socket) {
                Ok(n) => n,
                Err(e) if is_idle(&e) => continue,
                Err(e) => {
                    // ICMP errors from earlier sends surface here; never stop for them.
                    Stats::count(&self.stats.receive_errors);
                    tracing::debug!(error = %e, "receive error");
                    continue;
                }
            };
            let arrived = Instant::now();
            Stats::count(&self.stats.batches);
            let clients = self.clients.load();
            let mut dispositions = Vec::with_capacity(received);
            for i in 0..received {
                if let Some((datagram, peer)) = batch.get(i) {
                    let disposition = self.on_datagram(&clients, &socket, datagram, peer, arrived);
                    dispositions.push((disposition, peer));
                }
            }
            let commit = Commit {
                socket: Arc::clone(&socket),
                arrived,
                wrote: wrote(&dispositions),
                dispositions,
            };
            let unsent = if commit.wrote {
                // Fails only if the committers are gone; then answer here.
                to_committers.send(commit).err().map(|returned| returned.0)
            } else {
                Some(commit)
            };
            if let Some(commit) = unsent {
                self.answer_batch(commit);
            }
        }
    }

    /// Makes batches durable and answers them. Concurrent committers sync side by side (see
    /// [`RequestHandler::make_durable`]); a reply leaves only once its batch is durable.
    fn committer(&self, batches: &Mutex<Receiver<Commit>>) {
        loop {
            let next = batches.lock().unwrap_or_else(|p| p.into_inner()).recv();
            let Ok(commit) = next else {
                return;
            };
            self.answer_batch(commit);
        }
    }

    /// Syncs once for the batch's writes, then sends every reply in one go; Rejects go to the
    /// delay queue instead, after the sync like the others.
    fn answer_batch(&self, commit: Commit) {
        let Commit {
            socket,
            arrived,
            dispositions,
            wrote,
        } = commit;
        let hold = self.hold(arrived);
        let hold_until = hold.map(|(_, at)| at);
        let durable = !wrote || {
            Stats::count(&self.stats.batch_syncs);
            match self.handler.make_durable() {
                Ok(()) => true,
                Err(reason) => {
                    tracing::error!(%reason, "could not make the batch durable; refusing it");
                    false
                }
            }
        };
        let mut encoded: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(dispositions.len());
        // Allocated only if a Reject is held.
        let mut held: Vec<Delayed<Reply>> = Vec::new();
        for (disposition, peer) in dispositions {
            match disposition {
                Disposition::Dropped | Disposition::Deferred => {}
                Disposition::Resend(bytes) => encoded.push((bytes, peer)),
                Disposition::Decided(fast) => {
                    let Fast {
                        key,
                        request,
                        client,
                        decided,
                    } = *fast;
                    let reply = if durable || !decided.wrote {
                        decided.reply
                    } else {
                        self.handler.unavailable()
                    };
                    match finish_reply(
                        &self.dedup,
                        &self.stats,
                        &key,
                        peer,
                        &request,
                        &client,
                        reply,
                        hold_until,
                    ) {
                        Outgoing::Now(bytes) => encoded.push((bytes, peer)),
                        Outgoing::Later(delayed) => held.push(delayed),
                        Outgoing::Nothing => {}
                    }
                }
            }
        }
        if !encoded.is_empty() {
            let failed = send_batch(&socket, &encoded);
            Stats::add(&self.stats.send_errors, failed);
        }
        // Only a deadline makes a reply `Later`, so `held` is empty without one.
        if let Some((queue, at)) = hold.filter(|_| !held.is_empty()) {
            queue.hold(at, &socket, held);
        }
    }

    /// The delay queue and when a Reject to a request that arrived at `arrived` may leave;
    /// `None` without a delay.
    fn hold(&self, arrived: Instant) -> Option<(&Arc<DelayQueue<Reply>>, Instant)> {
        let queue = self.delayed.as_ref()?;
        Some((queue, arrived.checked_add(self.reject_delay)?))
    }

    fn on_datagram(
        &self,
        clients: &ClientTable,
        socket: &Arc<UdpSocket>,
        datagram: &[u8],
        peer: SocketAddr,
        arrived: Instant,
    ) -> Disposition {
        Stats::count(&self.stats.received);
        let Some(client) = clients.lookup(peer.ip()) else {
            Stats::count(&self.stats.dropped_unknown_client);
            self.log_unknown_client(peer);
            return Disposition::Dropped;
        };
        if datagram.len() > MAX_PACKET_LEN {
            self.stats.dropped(DropReason::Malformed);
            tracing::debug!(%peer, client = %client.name, "dropped oversized datagram");
            return Disposition::Dropped;
        }
        let request =
            AccessRequest::check(datagram, &client.secret, self.require_message_authenticator);
        let request = match request {
            Ok(r) => r,
            Err(reason) => {
                self.stats.dropped(reason);
                tracing::debug!(
                    %peer,
                    client = %client.name,
                    reason = reason.as_str(),
                    "dropped packet"
                );
                return Disposition::Dropped;
            }
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            let attributes = datagram
                .get(HEADER_LEN..request.header.length)
                .unwrap_or_default();
            tracing::debug!(
                %peer,
                client = %client.name,
                attributes = %self.dictionary.load().describe(attributes),
                "request"
            );
        }
        if request.is_status_server() {
            // RFC 5997: an Access-Accept says the server is alive; nothing is evaluated, nothing
            // cached (section 3: each one is answered).
            Stats::count(&self.stats.status_server);
            let reply = Reply::new(ReplyCode::Accept, None);
            return encode_logged(&request, &reply, client, peer)
                .map_or(Disposition::Dropped, Disposition::Resend);
        }
        let key = RequestKey::new(
            peer,
            request.header.identifier,
            request.header.authenticator,
        );
        match self.dedup.begin(key, Instant::now()) {
            Seen::New => {}
            Seen::InProgress => {
                Stats::count(&self.stats.duplicates_in_progress);
                return Disposition::Dropped;
            }
            Seen::Answered(reply) => {
                Stats::count(&self.stats.duplicates_answered);
                // The same request octets and decision give the same reply octets.
                return encode_logged(&request, &reply, client, peer)
                    .map_or(Disposition::Dropped, Disposition::Resend);
            }
        }
        let decoded = Request {
            client: Arc::clone(client),
            peer,
            identifier: request.header.identifier,
            user_name: request.user_name(),
            password: request.user_password(&client.secret),
            has_chap_password: request.has_chap_password(),
            calling_station_id: request.calling_station_id(),
            state: request.state(),
        };
        if let Some(decided) = self.handler.decide_now(&decoded) {
            return Disposition::Decided(Box::new(Fast {
                key,
                request,
                client: decoded.client,
                decided,
            }));
        }
        self.defer(socket, key, request, decoded, arrived)
    }

    /// Hands a request to the async path, if a permit is free. The permit is given back once
    /// the reply is sent or, for a Reject, handed to the delay queue: a waiting Reject holds
    /// none.
    fn defer(
        &self,
        socket: &Arc<UdpSocket>,
        key: RequestKey,
        request: AccessRequest,
        decoded: Request,
        arrived: Instant,
    ) -> Disposition {
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            Stats::count(&self.stats.dropped_overload);
            self.dedup.forget(&key);
            return Disposition::Dropped;
        };
        let handler = Arc::clone(&self.handler);
        let socket = Arc::clone(socket);
        let stats = Arc::clone(&self.stats);
        let dedup = Arc::clone(&self.dedup);
        let client = Arc::clone(&decoded.client);
        let peer = decoded.peer;
        let hold = self
            .hold(arrived)
            .map(|(queue, at)| (Arc::clone(queue), at));
        self.runtime.spawn(async move {
            let reply = handler.handle(decoded).await;
            let hold_until = hold.as_ref().map(|(_, at)| *at);
            let outgoing = finish_reply(
                &dedup, &stats, &key, peer, &request, &client, reply, hold_until,
            );
            match (outgoing, hold) {
                (Outgoing::Now(bytes), _) => {
                    if socket.send_to(&bytes, peer).is_err() {
                        Stats::count(&stats.send_errors);
                    }
                }
                (Outgoing::Later(held), Some((queue, at))) => queue.hold(at, &socket, vec![held]),
                // Only a deadline makes a reply `Later`.
                (Outgoing::Later(_), None) | (Outgoing::Nothing, _) => {}
            }
            drop(permit);
        });
        Disposition::Deferred
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

/// Whether any decision of a batch wrote state (so its replies must wait for a sync).
fn wrote(dispositions: &[(Disposition, SocketAddr)]) -> bool {
    dispositions.iter().any(|(d, _)| match d {
        Disposition::Decided(fast) => fast.decided.wrote,
        _ => false,
    })
}

/// What becomes of a decided reply.
enum Outgoing {
    /// Sent now; its decision is already remembered for retransmissions.
    Now(Vec<u8>),
    /// A Reject to hold until its deadline; its duplicate-cache entry stays in progress until
    /// it leaves.
    Later(Delayed<Reply>),
    /// It could not be encoded (logged); its decision is remembered all the same.
    Nothing,
}

/// Encodes a reply and counts it. An Access-Reject whose deadline `hold_until` is still ahead
/// is to be held ([`Outgoing::Later`]); any other reply's decision is remembered for
/// retransmissions now and the reply sent at once.
#[allow(clippy::too_many_arguments)]
fn finish_reply(
    dedup: &DedupCache<Reply>,
    stats: &Stats,
    key: &RequestKey,
    peer: SocketAddr,
    request: &AccessRequest,
    client: &Client,
    reply: Reply,
    hold_until: Option<Instant>,
) -> Outgoing {
    let Some(bytes) = encode_logged(request, &reply, client, peer) else {
        // The decision stands even if it cannot be encoded (its state change may be durable):
        // a retransmission gets the same decision, fails the same way and is dropped, never
        // evaluated again. Nothing is sent, so nothing needs to wait.
        dedup.complete(key, reply, Instant::now());
        return Outgoing::Nothing;
    };
    Stats::count(match reply.code {
        ReplyCode::Accept => &stats.accepts,
        ReplyCode::Reject => &stats.rejects,
        ReplyCode::Challenge => &stats.challenges,
    });
    let now = Instant::now();
    if reply.code == ReplyCode::Reject && hold_until.is_some_and(|at| at > now) {
        return Outgoing::Later(Delayed {
            bytes,
            peer,
            key: *key,
            answer: reply,
        });
    }
    dedup.complete(key, reply, now);
    Outgoing::Now(bytes)
}

/// The octets of `reply` to `request`, or `None` (logged) if it cannot be encoded.
fn encode_logged(
    request: &AccessRequest,
    reply: &Reply,
    client: &Client,
    peer: SocketAddr,
) -> Option<Vec<u8>> {
    encode_reply(request, reply, &client.secret)
        .map_err(|e| tracing::error!(%peer, error = %e, "could not encode a reply"))
        .ok()
}

#[cfg(test)]
mod tests {
    //! The fast path's contract, over a real socket: no reply that depends on a write leaves
    //! before `make_durable` has returned, and a failed sync turns the decision into the
    //! handler's `unavailable` reply. The reject delay's: on both paths a Reject leaves
    //! `reject_delay` after its request arrived (at once if deciding took longer), an Accept
    //! at once, and a held Reject holds no `max_in_flight` permit.

    use std::sync::Mutex;
    use std::time::Duration;

    use radius::core::code::Code;

    use super::*;
    use crate::config::{ClientSettings, Settings};
    use crate::radius::nas;

    const SECRET: &str = "server-test-secret";

    /// Accepts everything "with a write"; its sync takes a while and records when it ended.
    struct SlowSync {
        synced_at: Mutex<Vec<Instant>>,
        fail: bool,
    }

    impl RequestHandler for SlowSync {
        fn decide_now(&self, _request: &Request) -> Option<Decided> {
            Some(Decided {
                reply: Reply::new(ReplyCode::Accept, None),
                wrote: true,
            })
        }

        fn make_durable(&self) -> Result<(), String> {
            std::thread::sleep(Duration::from_millis(150));
            self.synced_at
                .lock()
                .map_err(|e| e.to_string())?
                .push(Instant::now());
            if self.fail {
                Err("disk full".into())
            } else {
                Ok(())
            }
        }

        fn unavailable(&self) -> Reply {
            Reply::new(ReplyCode::Reject, Some("try later"))
        }

        async fn handle(&self, _request: Request) -> Reply {
            self.unavailable()
        }
    }

    /// Decides by user name: `accept` and `reject` at once, `async-reject-<ms>` on the async
    /// path after `<ms>` milliseconds.
    struct ByName;

    impl RequestHandler for ByName {
        fn decide_now(&self, request: &Request) -> Option<Decided> {
            let code = match request.user_name.as_deref() {
                Some("accept") => ReplyCode::Accept,
                Some("reject") => ReplyCode::Reject,
                _ => return None,
            };
            Some(Decided {
                reply: Reply::new(code, None),
                wrote: false,
            })
        }

        fn make_durable(&self) -> Result<(), String> {
            Ok(())
        }

        fn unavailable(&self) -> Reply {
            Reply::new(ReplyCode::Reject, None)
        }

        async fn handle(&self, request: Request) -> Reply {
            let millis = request
                .user_name
                .as_deref()
                .and_then(|name| name.strip_prefix("async-reject-"))
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(millis)).await;
            self.unavailable()
        }
    }

    /// A server with `handler` on a loopback socket; `configure` adjusts the defaults. Also
    /// returns the task that serves, which ends once `serve` has returned.
    fn serve_with<H: RequestHandler>(
        handler: Arc<H>,
        configure: impl FnOnce(&mut crate::config::RadiusSettings),
    ) -> (
        SocketAddr,
        Arc<AtomicBool>,
        tokio::runtime::Runtime,
        tokio::task::JoinHandle<()>,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let mut settings =
            Settings::load_with_env(None, Some(Default::default())).expect("defaults");
        settings.radius.clients = vec![ClientSettings {
            name: "test".into(),
            certificate_name: None,
            address: "127.0.0.1/32".parse().expect("cidr"),
            secret: SECRET.into(),
            application: "default".into(),
        }];
        configure(&mut settings.radius);
        let server = Arc::new(Server::new(
            handler,
            Arc::new(Live::new(
                ClientTable::new(&settings.radius.clients, &settings.applications)
                    .expect("clients"),
            )),
            Arc::new(Live::new(Dictionary::builtin().expect("dictionary"))),
            &settings.radius,
            Arc::new(Stats::default()),
            runtime.handle().clone(),
        ));
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let serving = runtime.spawn(server.serve(vec![socket], Arc::clone(&stop)));
        (addr, stop, runtime, serving)
    }

    fn serve(
        fail: bool,
    ) -> (
        Arc<SlowSync>,
        SocketAddr,
        Arc<AtomicBool>,
        tokio::runtime::Runtime,
    ) {
        let handler = Arc::new(SlowSync {
            synced_at: Mutex::new(Vec::new()),
            fail,
        });
        let (addr, stop, runtime, _) = serve_with(Arc::clone(&handler), |radius| {
            radius.reject_delay = Duration::ZERO;
        });
        (handler, addr, stop, runtime)
    }

    /// Sends a request for `user` from a fresh socket; returns the socket, the request and when
    /// it was sent.
    fn send(addr: SocketAddr, user: &str) -> (UdpSocket, nas::BuiltRequest, Instant) {
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let request =
            nas::access_request(1, user, b"pw123456", SECRET.as_bytes(), true).expect("request");
        let sent = Instant::now();
        client.send_to(&request.bytes, addr).expect("send");
        (client, request, sent)
    }

    /// The reply on `client` to `request` and when it arrived.
    fn receive(client: &UdpSocket, request: &nas::BuiltRequest) -> (nas::CheckedReply, Instant) {
        let mut buf = [0u8; 4096];
        let (n, _) = client.recv_from(&mut buf).expect("a reply");
        let arrived = Instant::now();
        let reply = nas::check_reply(&buf[..n], request, SECRET.as_bytes()).expect("authentic");
        (reply, arrived)
    }

    fn exchange(addr: SocketAddr) -> (nas::CheckedReply, Instant) {
        let (client, request, _) = send(addr, "u");
        receive(&client, &request)
    }

    #[test]
    fn rejects_leave_reject_delay_after_arrival_on_both_paths_accepts_at_once() {
        let delay = Duration::from_millis(600);
        let (addr, stop, runtime, _) = serve_with(Arc::new(ByName), |radius| {
            radius.reject_delay = delay;
        });
        // Deciding takes 0 ms (fast path), 250 ms and 900 ms (async path): the first two leave
        // at the delay counted from arrival (not 850 ms), the last at once when decided. The
        // bounds leave 200-300 ms for a loaded machine.
        let sent: Vec<_> = ["accept", "reject", "async-reject-250", "async-reject-900"]
            .into_iter()
            .map(|user| (user, send(addr, user)))
            .collect();
        for (user, (client, request, at)) in &sent {
            let (reply, arrived) = receive(client, request);
            let took = arrived - *at;
            let (code, from, to) = match *user {
                "accept" => (
                    Code::AccessAccept,
                    Duration::ZERO,
                    Duration::from_millis(300),
                ),
                "async-reject-900" => (
                    Code::AccessReject,
                    Duration::from_millis(900),
                    Duration::from_millis(1150),
                ),
                _ => (Code::AccessReject, delay, Duration::from_millis(820)),
            };
            assert_eq!(reply.code, code, "{user}");
            assert!(from <= took && took < to, "{user}: {took:?}");
        }
        stop.store(true, Ordering::Relaxed);
        runtime.shutdown_timeout(Duration::from_secs(2));
    }

    #[test]
    fn a_held_reject_holds_no_in_flight_permit() {
        let (addr, stop, runtime, _) = serve_with(Arc::new(ByName), |radius| {
            radius.reject_delay = Duration::from_millis(400);
            radius.max_in_flight = 1;
        });
        // The first is decided after 20 ms and then waits; the second, sent meanwhile, finds
        // the only permit free (else it would be dropped for overload and get no reply).
        let first = send(addr, "async-reject-20");
        std::thread::sleep(Duration::from_millis(150));
        let second = send(addr, "async-reject-21");
        for (client, request, at) in [&first, &second] {
            let (reply, arrived) = receive(client, request);
            assert_eq!(reply.code, Code::AccessReject);
            assert!(arrived - *at >= Duration::from_millis(400));
        }
        stop.store(true, Ordering::Relaxed);
        runtime.shutdown_timeout(Duration::from_secs(2));
    }

    #[test]
    fn stopping_sends_the_held_rejects_before_serve_returns() {
        let (addr, stop, runtime, serving) = serve_with(Arc::new(ByName), |radius| {
            radius.reject_delay = Duration::from_millis(500);
        });
        let (client, request, at) = send(addr, "reject");
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        runtime
            .block_on(serving)
            .expect("serve returns once the Reject has left");
        assert!(
            at.elapsed() >= Duration::from_millis(500),
            "held to its deadline"
        );
        // Already there: nothing was left to send after `serve` returned.
        client.set_nonblocking(true).expect("nonblocking");
        let (reply, _) = receive(&client, &request);
        assert_eq!(reply.code, Code::AccessReject);
    }

    #[test]
    fn accept_leaves_only_after_its_batch_is_durable() {
        let (handler, addr, stop, runtime) = serve(false);
        let (reply, arrived) = exchange(addr);
        assert_eq!(reply.code, Code::AccessAccept);
        let synced = handler.synced_at.lock().expect("lock").clone();
        assert!(
            synced.first().is_some_and(|t| *t <= arrived),
            "the Accept arrived before make_durable returned"
        );
        stop.store(true, Ordering::Relaxed);
        runtime.shutdown_timeout(Duration::from_secs(2));
    }

    #[test]
    fn failed_sync_sends_the_unavailable_reply_instead() {
        let (_handler, addr, stop, runtime) = serve(true);
        let (reply, _) = exchange(addr);
        assert_eq!(reply.code, Code::AccessReject);
        assert_eq!(reply.reply_message.as_deref(), Some("try later"));
        stop.store(true, Ordering::Relaxed);
        runtime.shutdown_timeout(Duration::from_secs(2));
    }
}
