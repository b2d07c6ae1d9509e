//! Wiring: opens the store, the seed key and the services over them, binds the RADIUS sockets
//! and the admin API, serves until told to stop, then drains in-flight requests and flushes.

use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::api::server::{AdminServeError, AdminServer};
use crate::api::AppState;
use crate::auth::Authenticator;
use crate::clock::SystemClock;
use crate::config::{ConfigError, Settings};
use crate::notify::deliver::Deliverer;
use crate::radius::stats::Stats;
use crate::radius::Server;
use crate::reload::Reloadable;
use crate::store::seal::{SealError, SeedCipher};
use crate::store::sled_store::SledStore;
use crate::store::{Store, StoreError};
use crate::sweeper::Sweeper;
use crate::token::TokenService;

/// Kernel receive buffer asked for on each socket, to ride out bursts.
const RECEIVE_BUFFER_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("cannot listen on {address}: {reason}")]
    Bind { address: SocketAddr, reason: String },
    #[error("RADIUS clients: {0}")]
    Clients(String),
    #[error(transparent)]
    Admin(#[from] AdminServeError),
    #[error("cannot start a thread: {0}")]
    Thread(String),
    #[error("notifications: {0}")]
    Notify(String),
    #[error("radsec: key `{0}`: {1}")]
    Radsec(&'static str, String),
}

/// The store and the token service over it, as the command line and the server open them.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub tokens: Arc<TokenService>,
}

/// Opens the store at `[storage] path` (failing at once if another process holds it) and the
/// seed key (created on first use).
pub fn open_services(settings: &Settings) -> Result<Services, ServeError> {
    let store: Arc<dyn Store> = Arc::new(SledStore::open_with_cache(
        &settings.storage.path,
        settings.storage.cache_mb.saturating_mul(1024 * 1024),
    )?);
    let cipher = SeedCipher::load_or_create(&settings.storage.key_file)?;
    let tokens = Arc::new(TokenService::new(
        Arc::clone(&store),
        cipher,
        settings.otp.clone(),
        settings.lifecycle.clone(),
        settings.password.argon2,
    ));
    Ok(Services { store, tokens })
}

/// An unbound UDP socket for `address`'s family; IPv6 ones v6-only, so that `[::]` never
/// collides with `0.0.0.0`.
fn udp_socket(address: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Binds `workers` UDP sockets to `address` with `SO_REUSEPORT`, so the kernel spreads
/// requests over the worker threads. IPv6 sockets are v6-only so `[::]` and `0.0.0.0` can both
/// be listed. With port 0 the first socket picks the port and the others join it.
pub fn bind_udp(address: SocketAddr, workers: usize) -> Result<Vec<UdpSocket>, ServeError> {
    let fail = |e: std::io::Error| ServeError::Bind {
        address,
        reason: e.to_string(),
    };
    if address.port() != 0 {
        // SO_REUSEPORT would let a second otpgate (same user) silently share the port and
        // answer part of the traffic from another store. A plain bind first fails if anyone
        // already listens there.
        let probe = udp_socket(address).map_err(fail)?;
        probe.bind(&address.into()).map_err(|e| ServeError::Bind {
            address,
            reason: if e.kind() == std::io::ErrorKind::AddrInUse {
                "address in use (is another otpgate or RADIUS server running?)".into()
            } else {
                e.to_string()
            },
        })?;
        drop(probe);
    }
    let mut sockets: Vec<UdpSocket> = Vec::with_capacity(workers);
    let mut target = address;
    for _ in 0..workers.max(1) {
        let socket = udp_socket(address).map_err(fail)?;
        socket.set_reuse_port(true).map_err(fail)?;
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER_BYTES);
        socket.bind(&target.into()).map_err(fail)?;
        let socket: UdpSocket = socket.into();
        if sockets.is_empty() {
            target = socket.local_addr().map_err(fail)?;
        }
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Runs the RADIUS server until `shutdown` resolves; then stops reading, answers what is in
/// flight, makes the store durable and returns.
/// `opened` runs once the store is open, before the first request (the binary gives the
/// memory the opening freed back to the OS there).
/// On SIGHUP the configuration is read again with `reload` and applied ([`crate::reload`]).
pub async fn serve(
    settings: Settings,
    reload: impl Fn() -> Result<Settings, ConfigError> + Send + 'static,
    opened: impl FnOnce(),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let settings = Arc::new(settings);
    // Before the first listener: SIGHUP's default action would end the process.
    let hangups = crate::reload::hangups();
    let services = open_services(&settings)?;
    opened();
    tracing::info!(path = %settings.storage.path.display(), "store opened");
    for (client, why) in settings.weak_secrets() {
        tracing::warn!(client = %client, "the shared secret of this client {why}");
    }
    if !settings.radius.require_message_authenticator {
        tracing::warn!(
            "require_message_authenticator is off: Access-Requests without Message-Authenticator \
             are accepted (Blast-RADIUS, CVE-2024-3596)"
        );
    }
    let authenticator = Arc::new(Authenticator::new(
        Arc::clone(&settings),
        Arc::clone(&services.tokens),
        Arc::new(SystemClock),
    ));
    let tables = Arc::new(
        Reloadable::new(&settings, Arc::clone(&authenticator)).map_err(ServeError::Clients)?,
    );
    tables.log_reply_attributes(&settings);
    let mut sockets = Vec::new();
    for address in &settings.radius.listen {
        let bound = bind_udp(*address, settings.radius.workers)?;
        if let Some(local) = bound.first().and_then(|s| s.local_addr().ok()) {
            tracing::info!(address = %local, workers = bound.len(), "radius listening");
        }
        sockets.extend(bound);
    }
    let (stop_accounting, accounting_stopped) = tokio::sync::watch::channel(false);
    let mut accounting = Vec::new();
    if !settings.radius.accounting_listen.is_empty() {
        for address in &settings.radius.accounting_listen {
            let socket =
                tokio::net::UdpSocket::bind(address)
                    .await
                    .map_err(|e| ServeError::Bind {
                        address: *address,
                        reason: e.to_string(),
                    })?;
            if let Ok(local) = socket.local_addr() {
                tracing::info!(address = %local, "radius accounting listening");
            }
            accounting.push(tokio::spawn(crate::radius::accounting::serve(
                socket,
                Arc::clone(&tables.udp_clients),
                Arc::clone(&services.store),
                Arc::new(SystemClock),
                accounting_stopped.clone(),
            )));
        }
    }
    let stats = Arc::new(Stats::default());
    let (stop_radsec, radsec_stopped) = tokio::sync::watch::channel(false);
    let radsec = start_radsec(&settings, &tables, &stats, radsec_stopped).await?;
    let server = Arc::new(Server::new(
        Arc::clone(&authenticator),
        Arc::clone(&tables.udp_clients),
        Arc::clone(&tables.dictionary),
        &settings.radius,
        Arc::clone(&stats),
        tokio::runtime::Handle::current(),
    ));
    let admin = AdminServer::start(
        &settings.admin,
        &settings.storage.path,
        AppState {
            store: Arc::clone(&services.store),
            tokens: Arc::clone(&services.tokens),
            settings: Arc::clone(&settings),
            clock: Arc::new(SystemClock),
            local: false,
        },
    )?;
    let sweeper = Sweeper::start(
        Arc::clone(&services.tokens),
        Arc::new(SystemClock),
        settings.lifecycle.sweep_interval,
    )
    .map_err(|e| ServeError::Thread(format!("the sweeper: {e}")))?;
    let deliverer = Deliverer::start(
        Arc::clone(&services.store),
        &settings.notify,
        Arc::new(SystemClock),
    )
    .map_err(ServeError::Notify)?;
    let stop = Arc::new(AtomicBool::new(false));
    let serving = tokio::spawn(Arc::clone(&server).serve(sockets, Arc::clone(&stop)));
    let reloading = tokio::spawn(crate::reload::on_sighup(
        hangups,
        Arc::clone(&tables),
        Arc::clone(&settings),
        reload,
    ));
    shutdown.await;
    reloading.abort();
    tracing::info!("shutting down: no new requests; finishing those in flight");
    admin.stop().await;
    let _ = stop_accounting.send(true);
    for task in accounting {
        let _ = task.await;
    }
    let _ = stop_radsec.send(true);
    for task in radsec {
        let _ = task.await;
    }
    stop.store(true, Ordering::Relaxed);
    if let Err(e) = serving.await {
        tracing::error!(error = %e, "server task ended abnormally");
    }
    authenticator.stop_rehashing();
    sweeper.stop();
    deliverer.stop().await;
    // Leave nothing to recover at the next start.
    services.store.checkpoint()?;
    let counters: Vec<String> = stats
        .snapshot()
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    tracing::info!(counters = %counters.join(" "), "stopped");
    Ok(())
}

/// Starts RadSec (RFC 6614) on each `[radsec] listen` address; none without one.
async fn start_radsec(
    settings: &Settings,
    tables: &Reloadable,
    stats: &Arc<Stats>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ServeError> {
    use crate::radius::radsec::{tls_config, RadsecServer};
    if settings.radsec.listen.is_empty() {
        return Ok(Vec::new());
    }
    let tls = tls_config(&settings.radsec).map_err(|(key, e)| ServeError::Radsec(key, e))?;
    let server = Arc::new(RadsecServer::new(
        Arc::clone(&tables.authenticator),
        Arc::clone(&tables.radsec_clients),
        Arc::clone(&tables.dictionary),
        tls,
        &settings.radius,
        Arc::clone(stats),
    ));
    let mut tasks = Vec::new();
    for address in &settings.radsec.listen {
        let listener =
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| ServeError::Bind {
                    address: *address,
                    reason: e.to_string(),
                })?;
        if let Ok(local) = listener.local_addr() {
            tracing::info!(address = %local, "radsec listening");
        }
        tasks.push(tokio::spawn(
            Arc::clone(&server).serve(listener, stop.clone()),
        ));
    }
    Ok(tasks)
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called (call it
/// first thing inside the runtime), not when the future is first polled: a signal that comes
/// while the server is still starting must not end the process with the default action.
pub fn termination_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                // Without signal handlers, fall back to Ctrl-C only.
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
