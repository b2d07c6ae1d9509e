//! Where the admin API is served: `[admin] listen` (HTTPS with the configured certificate;
//! plain HTTP only on a loopback address, which the configuration enforces) for bearer
//! tokens, and the control socket `admin.sock` in the data directory (mode 0600, peers of
//! another user refused) for the local administrator, the command line's way in while the
//! server holds the store.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{router, AppState};
use crate::config::AdminSettings;

/// The control socket's name in the data directory.
pub const CONTROL_SOCKET: &str = "admin.sock";
/// How long a stop waits for requests in progress.
const STOP_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AdminServeError {
    #[error("admin API: cannot listen on {address}: {reason}")]
    Bind { address: SocketAddr, reason: String },
    #[error("admin API: {key}: {reason}")]
    Tls { key: &'static str, reason: String },
    #[error("admin API: control socket {path}: {reason}")]
    Socket { path: String, reason: String },
}

/// The running listeners.
pub struct AdminServer {
    stop: watch::Sender<bool>,
    tls: Option<axum_server::Handle<SocketAddr>>,
    tasks: Vec<JoinHandle<()>>,
    socket: PathBuf,
}

impl AdminServer {
    /// Binds the listeners (failing at once if one cannot be) and serves them on the current
    /// runtime.
    pub fn start(
        settings: &AdminSettings,
        data_dir: &Path,
        state: AppState,
    ) -> Result<AdminServer, AdminServeError> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut tls = None;
        if let Some(address) = settings.listen {
            let (app, _) = router(AppState {
                local: false,
                ..state.clone()
            });
            let bind_err = |e: std::io::Error| AdminServeError::Bind {
                address,
                reason: e.to_string(),
            };
            let listener = std::net::TcpListener::bind(address).map_err(bind_err)?;
            let local = listener.local_addr().map_err(bind_err)?;
            match (&settings.tls_cert, &settings.tls_key) {
                (Some(cert), Some(key)) => {
                    let config = tls_config(cert, key)?;
                    let handle = axum_server::Handle::new();
                    let server = axum_server::tls_rustls::from_tcp_rustls(
                        listener,
                        axum_server::tls_rustls::RustlsConfig::from_config(config),
                    )
                    .map_err(bind_err)?
                    .handle(handle.clone());
                    tls = Some(handle);
                    tasks.push(tokio::spawn(async move {
                        if let Err(e) = server.serve(app.into_make_service()).await {
                            tracing::error!(error = %e, "admin API stopped");
                        }
                    }));
                    tracing::info!(address = %local, tls = true, "admin API listening");
                }
                _ => {
                    listener.set_nonblocking(true).map_err(bind_err)?;
                    let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_err)?;
                    tasks.push(tokio::spawn(serve(listener, app, stopped.clone())));
                    tracing::info!(address = %local, tls = false, "admin API listening");
                }
            }
        }
        let socket = data_dir.join(CONTROL_SOCKET);
        let socket_err = |e: std::io::Error| AdminServeError::Socket {
            path: socket.display().to_string(),
            reason: e.to_string(),
        };
        // A socket left by a process that died: this process holds the store, so no other
        // server can be using it.
        match std::fs::remove_file(&socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(socket_err(e)),
            _ => {}
        }
        let listener = UnixListener::bind(&socket).map_err(socket_err)?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(socket_err)?;
        let (app, _) = router(AppState {
            local: true,
            ..state
        });
        tasks.push(tokio::spawn(serve(
            SameUser {
                listener,
                uid: effective_uid(),
            },
            app,
            stopped,
        )));
        Ok(AdminServer {
            stop,
            tls,
            tasks,
            socket,
        })
    }

    /// Stops accepting, lets requests in progress finish (at most [`STOP_WAIT`]) and removes
    /// the control socket.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(handle) = &self.tls {
            handle.graceful_shutdown(Some(STOP_WAIT));
        }
        for task in self.tasks {
            if tokio::time::timeout(STOP_WAIT * 2, task).await.is_err() {
                tracing::warn!("admin API: a listener did not stop in time");
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Serves `app` on `listener` until `stopped` turns true.
async fn serve<L>(listener: L, app: axum::Router, mut stopped: watch::Receiver<bool>)
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin API stopped");
    }
}

/// The process's effective user id.
fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// The control socket's listener: a peer of another user (other than root) is refused.
struct SameUser {
    listener: UnixListener,
    uid: u32,
}

impl Listener for SameUser {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, address)) => match stream.peer_cred() {
                    Ok(peer) if peer.uid() == self.uid || peer.uid() == 0 => {
                        return (stream, address)
                    }
                    Ok(peer) => {
                        tracing::warn!(
                            uid = peer.uid(),
                            "control socket: a peer of another user refused"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "control socket: peer unknown, refused"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// The TLS configuration from PEM files: the certificate chain and its private key.
fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, AdminServeError> {
    let certs = crate::tls::certificates(cert).map_err(|reason| AdminServeError::Tls {
        key: "admin.tls_cert",
        reason,
    })?;
    let private = crate::tls::private_key(key).map_err(|reason| AdminServeError::Tls {
        key: "admin.tls_key",
        reason,
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(certs, private)
        })
        .map_err(|e| AdminServeError::Tls {
            key: "admin.tls_key",
            reason: format!("the certificate and key do not make a TLS configuration: {e}"),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
