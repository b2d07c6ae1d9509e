//! `/api/v1/users/{username}/proofing`: identity proofing (guide "Identity Proofing",
//! "Proofing Upgrade"). Levels are the guide's OTP-level 2 and 3 (3: the holder's identity was
//! proofed), not NIST IAL numbers. The role `agent` reads status and records verifications.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::principal::Principal;
use super::tokens::ActionView;
use super::views::{rfc3339, TokenView};
use super::{blocking, parse_time, AppState};
use crate::access::Role;
use crate::proofing::{self, Method, Outcome, Proofing};
use crate::store::ChangeSet;

/// A user's proofing.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProofingView {
    pub username: String,
    /// `not_started`, `awaiting_outcome`, `appointment_needed`, `appointment_scheduled`,
    /// `awaiting_verification`, `code_issued` or `complete`.
    pub state: String,
    /// `instant`, `webcam`, `postal` or `in_person`.
    pub method: Option<String>,
    /// The level proofing gives: 3 once complete, else 2 (the guide's OTP-level).
    pub level: u8,
    pub country: Option<String>,
    /// In person: the organization whose trusted agent proofs the user.
    pub organization: Option<String>,
    pub appointment: Option<AppointmentView>,
    /// When the activation code issued expires, if one is.
    pub code_expires_at: Option<String>,
    pub code_tries_left: Option<u32>,
    pub completed_at: Option<String>,
    pub history: Vec<StepView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppointmentView {
    pub start: String,
    pub timezone: String,
    pub confirmation: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    pub at: String,
    pub event: String,
    pub from: String,
    pub to: String,
    pub by: String,
}

impl ProofingView {
    fn new(username: &str, p: &Proofing) -> ProofingView {
        ProofingView {
            username: username.to_string(),
            state: p.state.as_str().into(),
            method: p.method.map(|m| m.as_str().into()),
            level: p.level(),
            country: p.country.clone(),
            organization: p.organization.clone(),
            appointment: p.appointment.as_ref().map(|a| AppointmentView {
                start: rfc3339(a.start),
                timezone: a.timezone.clone(),
                confirmation: a.confirmation.clone(),
            }),
            code_expires_at: p.code.as_ref().map(|c| rfc3339(c.expires_at)),
            code_tries_left: p.code.as_ref().map(|c| c.tries_left),
            completed_at: p.completed_at.map(rfc3339),
            history: p
                .history
                .iter()
                .map(|s| StepView {
                    at: rfc3339(s.at),
                    event: s.event.clone(),
                    from: s.from.as_str().into(),
                    to: s.to.as_str().into(),
                    by: s.by.clone(),
                })
                .collect(),
        }
    }
}

/// Runs a proofing action for `username` once the caller may act on that user.
async fn on_user<T: Send + 'static>(
    state: AppState,
    principal: Principal,
    username: String,
    roles: &[Role],
    what: &str,
    work: impl FnOnce(&AppState, &Principal, &str, u64) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    principal.require(roles, what)?;
    blocking(move || {
        if state.store.user(&username)?.is_none() {
            return Err(ApiError::not_found(
                "user_not_found",
                format!("user `{username}` does not exist"),
            ));
        }
        principal.require_user(&state, &username)?;
        let result = work(&state, &principal, &username, state.clock.now())?;
        state.store.sync()?;
        Ok(result)
    })
    .await
}

const ALL: &[Role] = &[Role::Admin, Role::OrgAdmin, Role::Helpdesk, Role::Agent];
const MANAGERS: &[Role] = &[Role::Admin, Role::OrgAdmin];

/// A user's proofing status: state, method, level, appointment, code expiry, history.
#[utoipa::path(
    get,
    path = "/api/v1/users/{username}/proofing",
    params(("username" = String, Path)),
    responses((status = 200, body = ProofingView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
    Path(username): Path<String>,
) -> Result<Json<ProofingView>, ApiError> {
    on_user(
        state,
        principal,
        username,
        ALL,
        "read proofing",
        |s, _, user, _| {
            let (proofing, _) = proofing::read(s.store.as_ref(), user)?;
            Ok(Json(ProofingView::new(user, &proofing)))
        },
    )
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// `instant` (United States only), `webcam`, `postal` or `in_person`.
    pub method: String,
    /// ISO country code (`US` for instant proofing).
    pub country: Option<String>,
    /// In person: the organization whose trusted agent proofs the user.
    pub organization: Option<String>,
}

/// Start proofing by a method.
#[utoipa::path(
    post,
    path = "/api/v1/users/{username}/proofing",
    params(("username" = String, Path)),
    request_body = StartBody,
    responses(
        (status = 200, body = ProofingView),
        (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn start(
    State(state): State<AppState>,
    principal: Principal,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<Json<ProofingView>, ApiError> {
    let method = Method::parse(&body.method).ok_or_else(|| {
        ApiError::bad_request(format!(
            "method must be instant, webcam, postal or in_person; got `{}`",
            body.method
        ))
    })?;
    on_user(
        state,
        principal,
        username,
        MANAGERS,
        "start proofing",
        move |s, p, user, now| {
            let rules = &s.settings.proofing;
            let place = proofing::Place {
                country: body.country.as_deref(),
                organization: body.organization.as_deref(),
            };
            let done = proofing::start(s.store.as_ref(), user, method, place, rules, &p.who, now)?;
            Ok(Json(ProofingView::new(user, &done)))
        },
    )
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeBody {
    /// `passed`, `located_not_passed`, `not_located` or `declined`.
    pub outcome: String,
}

/// Record the outcome of instant proofing.
#[utoipa::path(
    post,
    path = "/api/v1/users/{username}/proofing/outcome",
    params(("username" = String, Path)),
    request_body = OutcomeBody,
    responses((status = 200, body = ProofingView), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn outcome(
    State(state): State<AppState>,
    principal: Principal,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<OutcomeBody>,
) -> Result<Json<ProofingView>, ApiError> {
    let outcome = Outcome::parse(&body.outcome).ok_or_else(|| {
        ApiError::bad_request(format!(
            "outcome must be passed, located_not_passed, not_located or declined; got `{}`",
            body.outcome
        ))
    })?;
    on_user(
        state,
        principal,
        username,
        MANAGERS,
        "record outcomes",
        move |s, p, user, now| {
            let rules = &s.settings.proofing;
            let done = proofing::record_outcome(
                s.store.as_ref(),
                user,
                outcome,
                rules,
                &p.who,
                now,
                ChangeSet::new(),
            )?;
            Ok(Json(ProofingView::new(user, &done)))
        },
    )
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppointmentBody {
    /// When: RFC 3339 (or Unix seconds); must lie in the future.
    pub start: String,
    /// The user's time zone, e.g. `America/New_York`.
    pub timezone: String,
}

/// Schedule the webcam appointment; again to reschedule (also after a missed or failed one).
#[utoipa::path(
    post,
    path = "/api/v1/users/{username}/proofing/appointments",
    params(("username" = String, Path)),
    request_body = AppointmentBody,
    responses(
        (status = 200, body = ProofingView),
        (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn appointments(
    State(state): State<AppState>,
    principal: Principal,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<AppointmentBody>,
) -> Result<Json<ProofingView>, ApiError> {
    let start = parse_time("start", &body.start, false)?;
    on_user(
        state,
        principal,
        username,
        MANAGERS,
        "schedule appointments",
        move |s, p, user, now| {
            let done =
                proofing::schedule(s.store.as_ref(), user, start, &body.timezone, &p.who, now)?;
            Ok(Json(ProofingView::new(user, &done)))
        },
    )
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifiedView {
    /// The activation code, shown this once (stored hashed): the agent gives it to the user.
    pub activation_code: String,
    pub proofing: ProofingView,
}

/// An agent verified the person: issues an activation code, returned once.
#[utoipa::path(
    post,
    path = "/api/v1/users/{username}/proofing/verify",
    params(("username" = String, Path)),
    responses((status = 200, body = VerifiedView), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn verify(
    State(state): State<AppState>,
    principal: Principal,
    Path(username): Path<String>,
) -> Result<Json<VerifiedView>, ApiError> {
    let roles = &[Role::Admin, Role::Agent];
    on_user(
        state,
        principal,
        username,
        roles,
        "record verifications",
        |s, p, user, now| {
            let rules = &s.settings.proofing;
            let (done, code) = proofing::verify(s.store.as_ref(), user, rules, &p.who, now)?;
            Ok(Json(VerifiedView {
                activation_code: code,
                proofing: ProofingView::new(user, &done),
            }))
        },
    )
    .await
}

/// A new activation code for a lost one, mailed to the user; the old one stops working.
#[utoipa::path(
    post,
    path = "/api/v1/users/{username}/proofing/code",
    params(("username" = String, Path)),
    responses((status = 200, body = ProofingView), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn reissue(
    State(state): State<AppState>,
    principal: Principal,
    Path(username): Path<String>,
) -> Result<Json<ProofingView>, ApiError> {
    on_user(
        state,
        principal,
        username,
        MANAGERS,
        "reissue codes",
        |s, p, user, now| {
            let rules = &s.settings.proofing;
            let done = proofing::reissue(s.store.as_ref(), user, rules, &p.who, now)?;
            Ok(Json(ProofingView::new(user, &done)))
        },
    )
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    pub code: String,
}

/// Enter the activation code: completes proofing.
#[utoipa::path(
    post,
    path = "/api/v1/users/{username}/proofing/redeem",
    params(("username" = String, Path)),
    request_body = RedeemBody,
    responses(
        (status = 200, body = ProofingView),
        (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn redeem(
    State(state): State<AppState>,
    principal: Principal,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<RedeemBody>,
) -> Result<Json<ProofingView>, ApiError> {
    if body.code.len() > 64 {
        return Err(ApiError::bad_request("code is longer than 64 characters"));
    }
    on_user(
        state,
        principal,
        username,
        MANAGERS,
        "redeem codes",
        move |s, p, user, now| {
            let done = proofing::redeem(s.store.as_ref(), user, &body.code, &p.who, now)?;
            Ok(Json(ProofingView::new(user, &done)))
        },
    )
    .await
}

/// Proofing upgrade: the user's Active level-2 token becomes level 3, without registering
/// again; proofing must be complete.
#[utoipa::path(
    post,
    path = "/api/v1/users/{username}/proofing/upgrade",
    params(("username" = String, Path)),
    responses(
        (status = 200, body = ActionView),
        (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn upgrade(
    State(state): State<AppState>,
    principal: Principal,
    Path(username): Path<String>,
) -> Result<Json<ActionView>, ApiError> {
    on_user(
        state,
        principal,
        username,
        MANAGERS,
        "upgrade tokens",
        |s, p, user, now| {
            let token = s.store.token_of_user(user)?.ok_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "no_token",
                    format!("user `{user}` has no token to upgrade"),
                )
            })?;
            let changed = s.tokens.upgrade(&token.serial, &p.who, now)?;
            let (token, life) = s.tokens.details(&token.serial)?;
            Ok(Json(ActionView {
                token: TokenView::new(&token, &life, now),
                from: changed.transition.from.as_str().to_string(),
                to: changed.transition.to.as_str().to_string(),
            }))
        },
    )
    .await
}

/// Largest age (either way) of a callback's timestamp.
const CALLBACK_WINDOW_SECS: u64 = 300;
const CALLBACK_PREFIX: &[u8] = b"callback/";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackBody {
    pub username: String,
    /// `passed`, `located_not_passed`, `not_located` or `declined`.
    pub outcome: String,
}

/// An instant-proofing outcome from the proofing provider, signed: header
/// `X-Otpgate-Timestamp` (Unix seconds, within 5 minutes of now) and `X-Otpgate-Signature`
/// (`sha256=` + hex HMAC-SHA256 with `[proofing] callback_secret` over the timestamp, a `.`
/// and the body). A bad, stale or replayed signature is a 401 and changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/proofing/callback",
    request_body = CallbackBody,
    responses(
        (status = 200, body = ProofingView),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)
    )
)]
pub async fn callback(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<ProofingView>, ApiError> {
    use hmac::digest::KeyInit;
    use hmac::Mac;
    let Some(secret) = state.settings.proofing.callback_secret.clone() else {
        return Err(ApiError::not_found(
            "callbacks_disabled",
            "no [proofing] callback_secret is configured",
        ));
    };
    let unauthorized = |why: &str| {
        ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "bad_signature",
            why.to_string(),
        )
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let timestamp = header("x-otpgate-timestamp")
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or_else(|| unauthorized("X-Otpgate-Timestamp (Unix seconds) is required"))?;
    if timestamp.abs_diff(state.clock.now()) > CALLBACK_WINDOW_SECS {
        return Err(unauthorized(
            "the timestamp is more than 5 minutes from now",
        ));
    }
    let signature = header("x-otpgate-signature")
        .and_then(|s| s.strip_prefix("sha256="))
        .and_then(|hex| {
            data_encoding::HEXLOWER_PERMISSIVE
                .decode(hex.as_bytes())
                .ok()
        })
        .ok_or_else(|| unauthorized("X-Otpgate-Signature: sha256=<hex> is required"))?;
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .map_err(ApiError::internal)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(&body);
    mac.verify_slice(&signature)
        .map_err(|_| unauthorized("the signature does not match"))?;
    let body: CallbackBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("callback body: {e}")))?;
    let outcome = Outcome::parse(&body.outcome)
        .ok_or_else(|| ApiError::bad_request(format!("unknown outcome `{}`", body.outcome)))?;
    let mut guard = CALLBACK_PREFIX.to_vec();
    guard.extend_from_slice(data_encoding::HEXLOWER.encode(&signature).as_bytes());
    blocking(move || {
        let store = state.store.as_ref();
        if store.record(&guard)?.is_some() {
            return Err(unauthorized("this callback was received before (replay)"));
        }
        let who = crate::audit::Who {
            actor: crate::token::Actor::System,
            name: "proofing-provider".into(),
        };
        let seen = ChangeSet::new().record(
            guard,
            crate::store::Expect::Absent,
            Some(timestamp.to_be_bytes().to_vec()),
        );
        let rules = &state.settings.proofing;
        let now = state.clock.now();
        let done =
            proofing::record_outcome(store, &body.username, outcome, rules, &who, now, seen)?;
        store.sync()?;
        Ok(Json(ProofingView::new(&body.username, &done)))
    })
    .await
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only users in this proofing state.
    pub state: Option<String>,
    /// Continue after this user name (the `next` of the previous page).
    pub after: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProofingList {
    pub users: Vec<ProofingView>,
    pub next: Option<String>,
}

/// Users by proofing state.
#[utoipa::path(
    get,
    path = "/api/v1/proofing",
    params(ListQuery),
    responses((status = 200, body = ProofingList), (status = 400, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    super::extract::ApiQuery(query): super::extract::ApiQuery<ListQuery>,
) -> Result<Json<ProofingList>, ApiError> {
    principal.require(
        &[Role::Admin, Role::OrgAdmin, Role::Helpdesk],
        "list proofing",
    )?;
    let wanted = match query.state.as_deref() {
        None | Some("") => None,
        Some(name) => Some(
            proofing::ProofingState::ALL
                .into_iter()
                .find(|s| s.as_str() == name)
                .ok_or_else(|| ApiError::bad_request(format!("unknown proofing state `{name}`")))?,
        ),
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    blocking(move || {
        let found = proofing::list(state.store.as_ref(), wanted, query.after.as_deref(), limit)?;
        let next = (found.len() == limit)
            .then(|| found.last().map(|(name, _)| name.clone()))
            .flatten();
        let users = found
            .iter()
            .filter(|(name, _)| principal.require_user(&state, name).is_ok())
            .map(|(name, p)| ProofingView::new(name, p))
            .collect();
        Ok(Json(ProofingList { users, next }))
    })
    .await
}
