//! `/api/v1/tokens`: import, list, status, and the lifecycle actions of the guide (register,
//! resync, suspend, reinstate, revoke, renew, reset).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiQuery, OptionalJson};
use super::principal::Principal;
use super::views::TokenView;
use super::{blocking, parse_time, text, AppState, MAX_IMPORT_BODY};
use crate::access::Role;
use crate::audit::Who;
use crate::otp::import::{import_file, PskcKeys};
use crate::token::{Actor, Changed, TokenError, TokenState};
use zeroize::Zeroizing;

/// Longest reason recorded in the audit.
const MAX_REASON: usize = 500;
/// Most tokens one list answer holds.
const MAX_LIST: usize = 1000;

/// On whose behalf a suspension (or its lifting, or a revocation) is made: an
/// administrator's suspension can only be lifted by an administrator.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum By {
    #[default]
    Admin,
    User,
}

impl By {
    fn who(self, principal: &Principal) -> Who {
        match self {
            By::Admin => principal.who.clone(),
            By::User => Who {
                actor: Actor::User,
                name: principal.who.name.clone(),
            },
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    pub username: String,
    /// The first of two consecutive codes.
    pub otp1: String,
    /// The code after it.
    pub otp2: String,
    /// The license key that pays for the token (else the user's open sponsorship).
    pub license_key: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodesBody {
    pub otp1: String,
    pub otp2: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendBody {
    /// `admin` (default) or `user`.
    #[serde(default)]
    pub by: By,
    pub reason: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReinstateBody {
    #[serde(default)]
    pub by: By,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    pub reason: String,
    #[serde(default)]
    pub by: By,
    /// The token was lost: a level-3 owner must repeat identity proofing.
    #[serde(default)]
    pub lost: bool,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[serde(default)]
    pub reason: String,
}

/// A lifecycle action's answer: the token now, and the move it made.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionView {
    pub token: TokenView,
    pub from: String,
    pub to: String,
}

/// Once `changed` is durable, the answer to it: the token as it is now and the move.
fn action_view(
    state: &AppState,
    serial: &str,
    changed: &crate::token::actions::Changed,
    now: u64,
) -> Result<Json<ActionView>, ApiError> {
    state.store.sync()?;
    let (token, life) = state.tokens.details(serial)?;
    Ok(Json(ActionView {
        token: TokenView::new(&token, &life, now),
        from: changed.transition.from.as_str().to_string(),
        to: changed.transition.to.as_str().to_string(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportView {
    pub imported: usize,
    /// Of those, HOTP and TOTP tokens.
    pub hotp: usize,
    pub totp: usize,
    /// Keys of the file not imported (PIN keys, OCRA, vendor algorithms), and why.
    pub skipped: Vec<SkippedView>,
    /// What was assumed or not checked (e.g. 6 digits for a key without ResponseFormat).
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedView {
    pub key_id: String,
    pub algorithm: String,
    pub why: String,
}

impl ImportView {
    /// The view of `report`, `imported` of its tokens written.
    pub fn new(imported: usize, report: &crate::otp::import::ImportReport) -> ImportView {
        let hotp = report
            .tokens
            .iter()
            .filter(|t| matches!(t.kind, crate::otp::TokenKind::Hotp))
            .count();
        ImportView {
            imported,
            hotp,
            totp: report.tokens.len() - hotp,
            skipped: report
                .skipped
                .iter()
                .map(|s| SkippedView {
                    key_id: s.key_id.clone(),
                    algorithm: s.algorithm.clone(),
                    why: s.why.clone(),
                })
                .collect(),
            warnings: report.warnings.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tokens in this state.
    pub state: Option<String>,
    /// Only the token of this user.
    pub owner: Option<String>,
    /// Only tokens expiring before this time (RFC 3339 or YYYY-MM-DD).
    pub expiring_before: Option<String>,
    /// Continue after this serial (the `next` of the previous page).
    pub after: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
    /// Where the next page starts (`after`), if there may be more.
    pub next: Option<String>,
}

fn serial_param(serial: &str) -> Result<String, ApiError> {
    let serial = text("serial", serial, 64)?;
    if serial.chars().any(char::is_whitespace) {
        return Err(ApiError::bad_request("serial must not contain spaces"));
    }
    Ok(serial)
}

fn code(field: &str, value: &str) -> Result<String, ApiError> {
    let value = value.trim();
    if (6..=10).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(value.to_string());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_field",
        format!("{field} must be the 6 to 10 digits the token shows"),
    ))
}

fn reason(value: &str) -> Result<String, ApiError> {
    if value.trim().is_empty() {
        return Ok(String::new());
    }
    text("reason", value, MAX_REASON)
}

/// Checks the caller may act on token `serial` (an `org-admin`: its organization's only).
fn require_token(state: &AppState, principal: &Principal, serial: &str) -> Result<(), ApiError> {
    if principal.organization_scope().is_none() {
        return Ok(());
    }
    let (token, life) = state.tokens.details(serial)?;
    principal.require_token(state, &token, life.former_owner.as_deref())
}

/// Runs a lifecycle action, makes it durable, answers the token and the move.
async fn act(
    state: AppState,
    principal: Principal,
    serial: String,
    action: impl FnOnce(&AppState, &str, u64) -> Result<Changed, TokenError> + Send + 'static,
) -> Result<Json<ActionView>, ApiError> {
    let serial = serial_param(&serial)?;
    blocking(move || {
        require_token(&state, &principal, &serial)?;
        let now = state.clock.now();
        let changed = action(&state, &serial, now)?;
        action_view(&state, &serial, &changed, now)
    })
    .await
}

/// Import seeds: CSV (`text/csv`, the `otpgate token import` format) or PSKC (RFC 6030) XML
/// (`application/pskc+xml`, `application/xml`, `text/xml`; the content itself decides). An
/// encrypted PSKC file's pre-shared key goes in the `PSKC-Key` header (hex), a password-based
/// one's password in `PSKC-Password`: never in the URL. All or nothing; the answer reports
/// the keys skipped and the warnings.
#[utoipa::path(
    post,
    path = "/api/v1/tokens/import",
    request_body(content = String, content_type = "text/csv"),
    responses(
        (status = 201, body = ImportView),
        (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 415, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn import_tokens(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<ImportView>), ApiError> {
    principal.require(&[Role::Admin], "import tokens")?;
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    // The file's own form decides (CSV or PSKC XML); only JSON is clearly something else.
    if kind == "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the seed file itself: text/csv or PSKC XML (application/pskc+xml)",
        ));
    }
    if body.len() > MAX_IMPORT_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a seed file over {MAX_IMPORT_BODY} bytes"),
        ));
    }
    let secret_header = |name: &str| -> Result<Option<Zeroizing<Vec<u8>>>, ApiError> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => Ok(Some(Zeroizing::new(value.as_bytes().trim_ascii().to_vec()))),
        }
    };
    let pre_shared_key = match secret_header("pskc-key")? {
        None => None,
        Some(hex) => Some(Zeroizing::new(
            data_encoding::HEXLOWER_PERMISSIVE
                .decode(&hex)
                .map_err(|_| ApiError::bad_request("the PSKC-Key header is not a hex key"))?,
        )),
    };
    let password = secret_header("pskc-password")?;
    blocking(move || {
        let keys = PskcKeys {
            pre_shared_key: pre_shared_key.as_deref().map(Vec::as_slice),
            password: password.as_deref().map(Vec::as_slice),
        };
        let report = import_file(&body, &keys)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_import", e.to_string()))?;
        let mut view = ImportView::new(0, &report);
        view.imported = state.tokens.import(report.tokens, state.clock.now())?;
        state.store.sync()?;
        Ok((StatusCode::CREATED, Json(view)))
    })
    .await
}

/// List tokens, filtered; pages of `limit` in serial order.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    params(ListQuery),
    responses((status = 200, body = TokenList), (status = 400, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<TokenList>, ApiError> {
    let wanted_state = match query.state.as_deref() {
        None | Some("") => None,
        Some(name) => Some(
            TokenState::ALL
                .into_iter()
                .find(|s| s.as_str() == name)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "state must be one of unassigned, pending_activation, active, locked, \
                         suspended, expired, revoked; got `{name}`"
                    ))
                })?,
        ),
    };
    let expiring_before = query
        .expiring_before
        .as_deref()
        .map(|t| parse_time("expiring_before", t, false))
        .transpose()?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIST);
    blocking(move || {
        let now = state.clock.now();
        let mut views = Vec::new();
        let mut after = query.after.clone();
        let mut exhausted = false;
        while views.len() < limit {
            let page = state.store.tokens(after.as_deref(), 1000)?;
            exhausted = page.len() < 1000;
            for token in &page {
                after = Some(token.serial.clone());
                if query
                    .owner
                    .as_ref()
                    .is_some_and(|o| token.owner.as_ref() != Some(o))
                    || wanted_state.is_some_and(|s| {
                        crate::token::TokenService::effective_state(token, now) != s
                    })
                    || expiring_before.is_some_and(|t| token.expires_at.is_none_or(|e| e >= t))
                {
                    continue;
                }
                let (_, life) = state.tokens.details(&token.serial)?;
                if principal
                    .require_token(&state, token, life.former_owner.as_deref())
                    .is_err()
                {
                    continue;
                }
                views.push(TokenView::new(token, &life, now));
                if views.len() == limit {
                    break;
                }
            }
            if exhausted {
                break;
            }
        }
        let next = if views.len() == limit || !exhausted {
            after
        } else {
            None
        };
        Ok(Json(TokenList {
            tokens: views,
            next,
        }))
    })
    .await
}

/// A token's status (guide "View Status").
#[utoipa::path(
    get,
    path = "/api/v1/tokens/{serial}",
    params(("serial" = String, Path)),
    responses((status = 200, body = TokenView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(serial): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    let serial = serial_param(&serial)?;
    blocking(move || {
        let (token, life) = state.tokens.details(&serial)?;
        principal.require_token(&state, &token, life.former_owner.as_deref())?;
        Ok(Json(TokenView::new(&token, &life, state.clock.now())))
    })
    .await
}

/// Register a token to a user with two consecutive codes (guide "Register Your Token").
#[utoipa::path(
    post,
    path = "/api/v1/tokens/{serial}/register",
    params(("serial" = String, Path)),
    request_body = RegisterBody,
    responses(
        (status = 200, body = ActionView),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 423, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn register(
    State(state): State<AppState>,
    principal: Principal,
    Path(serial): Path<String>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Json<ActionView>, ApiError> {
    principal.require(&[Role::Admin, Role::OrgAdmin], "register tokens")?;
    let username = text("username", &body.username, 128)?;
    let codes = (code("otp1", &body.otp1)?, code("otp2", &body.otp2)?);
    let key = body
        .license_key
        .map(|k| text("license_key", &k, 64))
        .transpose()?;
    let serial = serial_param(&serial)?;
    blocking(move || {
        principal.require_user(&state, &username)?;
        let now = state.clock.now();
        let changed = state.tokens.register(
            &serial,
            &username,
            (&codes.0, &codes.1),
            key.as_deref(),
            &principal.who,
            now,
        )?;
        action_view(&state, &serial, &changed, now)
    })
    .await
}

/// Re-synchronise (and unlock) a token with two consecutive codes (guide "Reactivate").
#[utoipa::path(
    post,
    path = "/api/v1/tokens/{serial}/resync",
    params(("serial" = String, Path)),
    request_body = CodesBody,
    responses(
        (status = 200, body = ActionView),
        (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 423, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn resync(
    State(state): State<AppState>,
    principal: Principal,
    Path(serial): Path<String>,
    ApiJson(body): ApiJson<CodesBody>,
) -> Result<Json<ActionView>, ApiError> {
    let codes = (code("otp1", &body.otp1)?, code("otp2", &body.otp2)?);
    let who = principal.who.clone();
    act(state, principal, serial, move |state, serial, now| {
        state.tokens.resync(serial, (&codes.0, &codes.1), &who, now)
    })
    .await
}

/// Suspend a token: by an administrator (only an administrator may reinstate it) or on the
/// user's behalf (the user may).
#[utoipa::path(
    post,
    path = "/api/v1/tokens/{serial}/suspend",
    params(("serial" = String, Path)),
    request_body = SuspendBody,
    responses((status = 200, body = ActionView), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn suspend(
    State(state): State<AppState>,
    principal: Principal,
    Path(serial): Path<String>,
    ApiJson(body): ApiJson<SuspendBody>,
) -> Result<Json<ActionView>, ApiError> {
    let reason = text("reason", &body.reason, MAX_REASON)?;
    let who = body.by.who(&principal);
    act(state, principal, serial, move |state, serial, now| {
        state.tokens.suspend(serial, &who, &reason, now)
    })
    .await
}

/// Lift a suspension (on the user's behalf, only one the user made).
#[utoipa::path(
    post,
    path = "/api/v1/tokens/{serial}/reinstate",
    params(("serial" = String, Path)),
    request_body(content = ReinstateBody, description = "optional"),
    responses(
        (status = 200, body = ActionView),
        (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn reinstate(
    State(state): State<AppState>,
    principal: Principal,
    Path(serial): Path<String>,
    OptionalJson(body): OptionalJson<ReinstateBody>,
) -> Result<Json<ActionView>, ApiError> {
    let reason = reason(&body.reason)?;
    let who = body.by.who(&principal);
    act(state, principal, serial, move |state, serial, now| {
        state.tokens.reinstate(serial, &who, &reason, now)
    })
    .await
}

/// Revoke a token for good (guide "Revoke OTP Hardware Token"): its owner may then register
/// another; its serial can never be registered again.
#[utoipa::path(
    post,
    path = "/api/v1/tokens/{serial}/revoke",
    params(("serial" = String, Path)),
    request_body = RevokeBody,
    responses(
        (status = 200, body = ActionView),
        (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(serial): Path<String>,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<Json<ActionView>, ApiError> {
    principal.require(&[Role::Admin, Role::OrgAdmin], "revoke tokens")?;
    let reason = text("reason", &body.reason, MAX_REASON)?;
    let who = body.by.who(&principal);
    let lost = body.lost;
    act(state, principal, serial, move |state, serial, now| {
        if lost {
            state.tokens.revoke_lost(serial, &who, &reason, now)
        } else {
            state.tokens.revoke(serial, &who, &reason, now)
        }
    })
    .await
}

/// Renew a token (guide "Renew OTP Hardware Token"): the expiry date moves a year (the
/// `[lifecycle] renewal_years`) after the date it had; an expired token is active again.
#[utoipa::path(
    post,
    path = "/api/v1/tokens/{serial}/renew",
    params(("serial" = String, Path)),
    responses((status = 200, body = ActionView), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn renew(
    State(state): State<AppState>,
    principal: Principal,
    Path(serial): Path<String>,
) -> Result<Json<ActionView>, ApiError> {
    principal.require(&[Role::Admin, Role::OrgAdmin], "renew tokens")?;
    let who = principal.who.clone();
    act(state, principal, serial, move |state, serial, now| {
        state.tokens.renew(serial, &who, now)
    })
    .await
}

/// Lift the blocks on registration and resync that too many failed attempts left.
#[utoipa::path(
    post,
    path = "/api/v1/tokens/{serial}/reset",
    params(("serial" = String, Path)),
    request_body(content = ReasonBody, description = "optional"),
    responses((status = 200, body = ActionView), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn reset(
    State(state): State<AppState>,
    principal: Principal,
    Path(serial): Path<String>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Json<ActionView>, ApiError> {
    let reason = reason(&body.reason)?;
    let who = principal.who.clone();
    act(state, principal, serial, move |state, serial, now| {
        state.tokens.reset(serial, &who, &reason, now)
    })
    .await
}
