//! The audit trail, admin tokens and the health check.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use super::principal::Principal;
use super::views::AuditView;
use super::{blocking, parse_time, AppState};
use crate::access::{self, Role};
use crate::audit;

/// Most entries one audit answer holds.
const MAX_AUDIT: usize = 10_000;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries about this user.
    pub user: Option<String>,
    /// Only entries about this token.
    pub serial: Option<String>,
    /// From this time (RFC 3339 or YYYY-MM-DD), inclusive.
    pub since: Option<String>,
    /// Up to this time (RFC 3339 or YYYY-MM-DD: the end of that day), inclusive.
    pub until: Option<String>,
    /// At most this many, oldest first (default 1000, at most 10000).
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditView>,
}

/// The audit trail of lifecycle and admin actions: who, what, when, state before and after.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditList),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn audit(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let filter = audit::Filter {
        username: query.user.filter(|u| !u.is_empty()),
        serial: query.serial.filter(|s| !s.is_empty()),
        since: query
            .since
            .as_deref()
            .map(|t| parse_time("since", t, false))
            .transpose()?,
        until: query
            .until
            .as_deref()
            .map(|t| parse_time("until", t, true))
            .transpose()?,
    };
    let limit = query.limit.unwrap_or(1000).clamp(1, MAX_AUDIT);
    blocking(move || {
        if principal.organization_scope().is_some() {
            // An org-admin reads the trail of one user or token of its organization.
            match (&filter.username, &filter.serial) {
                (Some(user), _) => principal.require_user(&state, user)?,
                (None, Some(serial)) => {
                    let (token, life) = state.tokens.details(serial)?;
                    principal.require_token(&state, &token, life.former_owner.as_deref())?;
                }
                (None, None) => {
                    return Err(ApiError::forbidden(
                        "an org-admin reads the audit of a user or token of its organization: \
                         give user= or serial=",
                    ))
                }
            }
        }
        let entries = audit::query(state.store.as_ref(), &filter, limit)?;
        Ok(Json(AuditList {
            entries: entries.iter().map(AuditView::from).collect(),
        }))
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdminToken {
    pub name: String,
    /// `admin`, `org-admin` or `helpdesk`.
    pub role: String,
    /// The organization of an `org-admin`.
    pub organization: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AdminTokenView {
    pub name: String,
    pub role: String,
    pub organization: Option<String>,
    /// The bearer token: shown this once, stored hashed.
    pub token: String,
}

/// Create an admin API bearer token (`otpgate admin-token create` does the same).
#[utoipa::path(
    post,
    path = "/api/v1/admin-tokens",
    request_body = NewAdminToken,
    responses(
        (status = 201, body = AdminTokenView),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn create_admin_token(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewAdminToken>,
) -> Result<(StatusCode, Json<AdminTokenView>), ApiError> {
    principal.require(&[Role::Admin], "create admin tokens")?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::bad_request(format!(
            "role must be admin, org-admin or helpdesk; got `{}`",
            body.role
        ))
    })?;
    blocking(move || {
        let token = access::create(
            state.store.as_ref(),
            &body.name,
            role,
            body.organization.as_deref(),
            &principal.who,
            state.clock.now(),
        )?;
        state.store.sync()?;
        Ok((
            StatusCode::CREATED,
            Json(AdminTokenView {
                name: body.name,
                role: role.as_str().to_string(),
                organization: body.organization,
                token,
            }),
        ))
    })
    .await
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Liveness: no authentication.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}
