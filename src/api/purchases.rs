//! `/api/v1/license-keys` and `/api/v1/sponsorships`: how tokens are paid for.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use super::principal::Principal;
use super::views::rfc3339;
use super::{blocking, parse_time, text, AppState};
use crate::access::Role;
use crate::licensing::{self, SponsorshipRequest};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLicenseKey {
    /// Assurance level the key buys: 2 or 3.
    pub level: u8,
    /// Years the token is good for, from the key's issue.
    pub years: u32,
}

#[derive(Serialize, ToSchema)]
pub struct LicenseKeyView {
    /// The key: shown this once, stored hashed.
    pub key: String,
    pub level: u8,
    pub years: u32,
    pub issued_at: String,
}

/// Issue a license key (a purchase) for an assurance level and a number of years.
#[utoipa::path(
    post,
    path = "/api/v1/license-keys",
    request_body = NewLicenseKey,
    responses(
        (status = 201, body = LicenseKeyView),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn create_license_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewLicenseKey>,
) -> Result<(StatusCode, Json<LicenseKeyView>), ApiError> {
    principal.require(&[Role::Admin], "issue license keys")?;
    blocking(move || {
        let now = state.clock.now();
        let key = licensing::issue_license_key(
            state.store.as_ref(),
            body.level,
            body.years,
            &principal.who,
            now,
        )?;
        state.store.sync()?;
        Ok((
            StatusCode::CREATED,
            Json(LicenseKeyView {
                key,
                level: body.level,
                years: body.years,
                issued_at: rfc3339(now),
            }),
        ))
    })
    .await
}

/// A time as text or as Unix seconds.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum TimeInput {
    Unix(u64),
    Text(String),
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSponsorship {
    pub username: String,
    /// The partner organization that pays.
    pub organization: String,
    pub level: u8,
    /// The user must register by then: RFC 3339, YYYY-MM-DD (the end of that day, UTC) or
    /// Unix seconds.
    #[schema(value_type = String)]
    pub register_by: TimeInput,
    /// Years the token is good for, from its registration (default 1).
    pub years: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct SponsorshipView {
    pub username: String,
    pub organization: String,
    pub level: u8,
    pub register_by: String,
    pub years: u32,
}

/// Sponsor a user's token: no license key needed to register it until `register_by`.
#[utoipa::path(
    post,
    path = "/api/v1/sponsorships",
    request_body = NewSponsorship,
    responses(
        (status = 201, body = SponsorshipView),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn create_sponsorship(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewSponsorship>,
) -> Result<(StatusCode, Json<SponsorshipView>), ApiError> {
    principal.require(&[Role::Admin, Role::OrgAdmin], "sponsor tokens")?;
    let organization = text("organization", &body.organization, 128)?;
    if let Some(mine) = principal.organization_scope() {
        if organization != mine {
            return Err(ApiError::forbidden(format!(
                "an org-admin of `{mine}` sponsors for `{mine}` only"
            )));
        }
    }
    let register_by = match &body.register_by {
        TimeInput::Text(text) => parse_time("register_by", text, true)?,
        TimeInput::Unix(secs) => *secs,
    };
    let username = text("username", &body.username, 128)?;
    blocking(move || {
        principal.require_user(&state, &username)?;
        let request = SponsorshipRequest {
            username,
            organization,
            level: body.level,
            register_by,
            years: body.years.unwrap_or(1),
        };
        let made = licensing::sponsor(
            state.store.as_ref(),
            request,
            &principal.who,
            state.clock.now(),
        )?;
        state.store.sync()?;
        Ok((
            StatusCode::CREATED,
            Json(SponsorshipView {
                username: made.username,
                organization: made.organization,
                level: made.level,
                register_by: rfc3339(made.register_by),
                years: made.years,
            }),
        ))
    })
    .await
}
