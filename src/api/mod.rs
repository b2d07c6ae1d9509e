//! The admin HTTP API inside `otpgate serve` (issue 13, "Part 3"): JSON over HTTP, a thin
//! layer over the same services the command line uses ([`crate::token::TokenService`],
//! [`crate::users`], [`crate::licensing`], [`crate::access`], [`crate::audit`]). Every change
//! is durable (the store synced) before its answer is sent.
//!
//! It is served on `[admin] listen` (TLS from `tls_cert`/`tls_key`; plain HTTP only on a
//! loopback address) for bearer tokens, and on the control socket in the data directory for
//! the local administrator: the command line's way in while the server holds the store
//! ([`server`], [`client`]). The OpenAPI document is generated from the handlers
//! (`utoipa`) and served at `/api/v1/openapi.json`.

pub mod client;
pub mod error;
pub mod extract;
mod misc;
pub mod principal;
mod proofing;
mod purchases;
pub mod server;
mod tokens;
mod users;
pub mod views;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clock::Clock;
use crate::config::Settings;
use crate::store::Store;
use crate::token::TokenService;
use error::ApiError;

/// Largest JSON body accepted.
const MAX_JSON_BODY: usize = 64 * 1024;
/// Largest seed file accepted by `POST /api/v1/tokens/import`.
pub const MAX_IMPORT_BODY: usize = 32 * 1024 * 1024;

/// What the handlers work with.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub tokens: Arc<TokenService>,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    /// Requests come from the local administrator (the control socket, or the command line
    /// in-process): no bearer token is asked for.
    pub local: bool,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "otpgate admin API",
        description = "Token lifecycle, users, license keys, sponsorships and audit of an otpgate appliance."
    ),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes over `state`, and its OpenAPI document.
pub fn router(state: AppState) -> (Router, OpenApiDoc) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(users::create_user))
        .routes(routes!(users::import_users))
        .routes(routes!(users::get_user))
        .routes(routes!(users::set_password))
        .routes(routes!(users::accept_terms))
        .routes(routes!(users::connect))
        .routes(routes!(proofing::status, proofing::start))
        .routes(routes!(proofing::outcome))
        .routes(routes!(proofing::appointments))
        .routes(routes!(proofing::verify))
        .routes(routes!(proofing::reissue))
        .routes(routes!(proofing::redeem))
        .routes(routes!(proofing::upgrade))
        .routes(routes!(proofing::callback))
        .routes(routes!(proofing::list))
        .routes(routes!(tokens::import_tokens))
        .routes(routes!(tokens::list_tokens))
        .routes(routes!(tokens::get_token))
        .routes(routes!(tokens::register))
        .routes(routes!(tokens::resync))
        .routes(routes!(tokens::suspend))
        .routes(routes!(tokens::reinstate))
        .routes(routes!(tokens::revoke))
        .routes(routes!(tokens::renew))
        .routes(routes!(tokens::reset))
        .routes(routes!(purchases::create_license_key))
        .routes(routes!(purchases::create_sponsorship))
        .routes(routes!(misc::audit))
        .routes(routes!(misc::create_admin_token))
        .routes(routes!(misc::healthz))
        .split_for_parts();
    let document = Arc::new(doc.clone());
    let router = router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let document = Arc::clone(&document);
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .fallback(|| async {
            ApiError::not_found("not_found", "no such route; see /api/v1/openapi.json")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method; see /api/v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .with_state(state);
    (router, doc)
}

/// Runs `work` (store reads and writes, fsyncs, password hashing) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
}

/// Parses a time given as RFC 3339 (`2027-01-31T00:00:00Z`), a date (`2027-01-31`, taken as
/// `end_of_day` ? its last second : its first second, UTC) or Unix seconds; `field` names it
/// in the error.
fn parse_time(field: &str, text: &str, end_of_day: bool) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("{field}: `{text}` is not an RFC 3339 time or a YYYY-MM-DD date"),
        )
    };
    let text = text.trim();
    if !text.is_empty() && text.len() <= 12 && text.bytes().all(|b| b.is_ascii_digit()) {
        // Unix seconds.
        return text.parse().map_err(|_| bad());
    }
    let (parsed, date_only) = if text.len() == 10 {
        (
            humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).map_err(|_| bad())?,
            true,
        )
    } else {
        (
            humantime::parse_rfc3339_weak(text).map_err(|_| bad())?,
            false,
        )
    };
    let secs = parsed
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_secs();
    Ok(if date_only && end_of_day {
        secs + 86_399
    } else {
        secs
    })
}

/// A required text field: trimmed, non-empty, at most `max` characters, no control characters.
fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    let problem = if value.is_empty() {
        "must not be empty".to_string()
    } else if value.chars().count() > max {
        format!("is longer than {max} characters")
    } else if value.chars().any(char::is_control) {
        "contains control characters".to_string()
    } else {
        return Ok(value.to_string());
    };
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_field",
        format!("{field} {problem}"),
    ))
}
