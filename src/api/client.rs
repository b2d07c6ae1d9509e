//! The command line's way to the API: while `otpgate serve` holds the store, over the control
//! socket in the data directory; when it is stopped, in-process over the store opened here.
//! Either way the same handlers answer, so the command line and the API cannot disagree.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tower::ServiceExt;

use super::server::CONTROL_SOCKET;
use super::{router, AppState};
use crate::appliance::{open_services, ServeError};
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::store::StoreError;

/// How long to wait for the control socket of a server that is starting.
const SOCKET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest answer read.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Open(#[from] ServeError),
    #[error(
        "the store is in use (is `otpgate serve` running?) and its control socket {path} does \
         not answer: {reason}"
    )]
    Socket { path: String, reason: String },
    #[error("the request failed: {0}")]
    Request(String),
    #[error("the answer is not JSON: {0}")]
    Answer(String),
}

/// An answer: its status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

/// Sends `method path` with `body` (JSON) to the API as the local administrator: through the
/// running server if there is one, else in-process.
pub fn call(
    settings: &Settings,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Answer, ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Request(format!("starting a runtime: {e}")))?;
    let request = build(method, path, body)?;
    match open_services(settings) {
        Ok(services) => {
            let state = AppState {
                store: Arc::clone(&services.store),
                tokens: Arc::clone(&services.tokens),
                settings: Arc::new(settings.clone()),
                clock: Arc::new(SystemClock),
                local: true,
            };
            let (app, _) = router(state);
            runtime.block_on(async {
                let response = app
                    .oneshot(request)
                    .await
                    .map_err(|e| ClientError::Request(e.to_string()))?;
                read(response).await
            })
        }
        Err(ServeError::Store(StoreError::Locked { .. })) => {
            let path = settings.storage.path.join(CONTROL_SOCKET);
            runtime.block_on(over_socket(&path, request))
        }
        Err(other) => Err(other.into()),
    }
}

fn build(
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<Request<Body>, ClientError> {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost");
    let request = match body {
        Some(json) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json.to_string())),
        None => builder.body(Body::empty()),
    };
    request.map_err(|e| ClientError::Request(e.to_string()))
}

async fn over_socket(
    path: &std::path::Path,
    request: Request<Body>,
) -> Result<Answer, ClientError> {
    let socket_err = |e: &dyn std::fmt::Display| ClientError::Socket {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    // A server that has just opened the store makes its socket a moment later.
    let deadline = tokio::time::Instant::now() + SOCKET_WAIT;
    let stream = loop {
        match tokio::net::UnixStream::connect(path).await {
            Ok(stream) => break stream,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(socket_err(&e)),
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| socket_err(&e))?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Request(e.to_string()))?;
    let answer = read(response).await;
    driver.abort();
    answer
}

async fn read<B>(response: axum::http::Response<B>) -> Result<Answer, ClientError>
where
    B: axum::body::HttpBody,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let status = response.status();
    let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| ClientError::Request(e.to_string()))?
        .to_bytes();
    let body = serde_json::from_slice(&bytes).map_err(|e| ClientError::Answer(e.to_string()))?;
    Ok(Answer { status, body })
}
