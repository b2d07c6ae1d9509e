//! `/api/v1/users`: create a user, show one with the status of its token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use super::principal::Principal;
use super::views::{TokenView, UserView};
use super::{blocking, AppState};
use crate::access::Role;
use crate::users::{self, Profile};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    /// Hashed with argon2id at once; never stored or logged as given.
    pub password: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    /// An `org-admin` creates users of its own organization only (the default for it).
    pub organization: Option<String>,
    /// Identity assurance level (2, the default, or 3).
    pub assurance_level: Option<u8>,
}

/// Create a user.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    request_body = NewUser,
    responses(
        (status = 201, body = UserView),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    principal.require(&[Role::Admin, Role::OrgAdmin], "create users")?;
    let password = Zeroizing::new(body.password);
    let organization = match (principal.organization_scope(), body.organization) {
        (Some(mine), None) => Some(mine.to_string()),
        (Some(mine), Some(theirs)) if theirs.trim() != mine => {
            return Err(ApiError::forbidden(format!(
                "an org-admin of `{mine}` creates users of `{mine}` only"
            )))
        }
        (_, given) => given,
    };
    let profile = Profile {
        email: body.email,
        first_name: body.first_name,
        middle_name: body.middle_name,
        last_name: body.last_name,
        organization,
    };
    let username = body.username;
    let level = body.assurance_level.unwrap_or(2);
    blocking(move || {
        let now = state.clock.now();
        let store = state.store.as_ref();
        let user = users::add_user(
            store,
            &username,
            password.as_bytes(),
            profile,
            level,
            &state.settings.password.argon2,
            &principal.who,
            now,
        )?;
        store.sync()?;
        let extra = users::extra(store, &username)?;
        Ok((StatusCode::CREATED, Json(UserView::new(&user, extra, None))))
    })
    .await
}

/// A user and the status of its token.
#[utoipa::path(
    get,
    path = "/api/v1/users/{username}",
    params(("username" = String, Path)),
    responses(
        (status = 200, body = UserView),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn get_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(username): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    blocking(move || {
        if state.store.user(&username)?.is_some() {
            principal.require_user(&state, &username)?;
        }
        user_view(&state, &username)
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// Hashed with argon2id at once; never stored or logged as given.
    pub password: String,
}

/// Set a user's password: how a temporary password (set when the user's token was revoked) is
/// replaced, after which RADIUS accepts logins again.
#[utoipa::path(
    post,
    path = "/api/v1/users/{username}/password",
    params(("username" = String, Path)),
    request_body = NewPassword,
    responses(
        (status = 200, body = UserView),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn set_password(
    State(state): State<AppState>,
    principal: Principal,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<NewPassword>,
) -> Result<Json<UserView>, ApiError> {
    principal.require(&[Role::Admin, Role::OrgAdmin], "set passwords")?;
    let password = Zeroizing::new(body.password);
    blocking(move || {
        let store = state.store.as_ref();
        if store.user(&username)?.is_none() {
            return Err(ApiError::not_found(
                "user_not_found",
                format!("user `{username}` does not exist"),
            ));
        }
        principal.require_user(&state, &username)?;
        let user = users::set_password(
            store,
            &username,
            password.as_bytes(),
            &state.settings.password.argon2,
            &principal.who,
            state.clock.now(),
        )?;
        store.sync()?;
        let extra = users::extra(store, &username)?;
        Ok(Json(UserView::new(&user, extra, None)))
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TermsBody {
    /// An application of `[[applications]]`.
    pub application: String,
}

/// Record that the user accepted an application's terms (a sponsored registration needs
/// those of the applications the sponsoring organization subscribes to).
#[utoipa::path(
    post,
    path = "/api/v1/users/{username}/terms",
    params(("username" = String, Path)),
    request_body = TermsBody,
    responses(
        (status = 200, body = UserView),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn accept_terms(
    State(state): State<AppState>,
    principal: Principal,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<TermsBody>,
) -> Result<Json<UserView>, ApiError> {
    principal.require(&[Role::Admin, Role::OrgAdmin], "record terms")?;
    if state.settings.application(&body.application).is_none() {
        return Err(ApiError::bad_request(format!(
            "application `{}` is not in [[applications]]",
            body.application
        )));
    }
    blocking(move || {
        let store = state.store.as_ref();
        principal.require_user(&state, &username)?;
        let now = state.clock.now();
        users::accept_terms(store, &username, &body.application, &principal.who, now)?;
        store.sync()?;
        user_view(&state, &username)
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectBody {
    /// The account whose token this one logs in with.
    pub parent: String,
}

/// Connect an account to its parent (guide "Connected Accounts"): it logs in with the
/// parent's token. First, middle and last name and e-mail address must match exactly, and
/// the account must have no token of its own.
#[utoipa::path(
    post,
    path = "/api/v1/users/{username}/connect",
    params(("username" = String, Path)),
    request_body = ConnectBody,
    responses(
        (status = 200, body = UserView),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn connect(
    State(state): State<AppState>,
    principal: Principal,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<ConnectBody>,
) -> Result<Json<UserView>, ApiError> {
    principal.require(&[Role::Admin, Role::OrgAdmin], "connect accounts")?;
    blocking(move || {
        let store = state.store.as_ref();
        if store.user(&username)?.is_some() {
            principal.require_user(&state, &username)?;
        }
        if store.user(&body.parent)?.is_some() {
            principal.require_user(&state, &body.parent)?;
        }
        users::connect(
            store,
            &username,
            &body.parent,
            &principal.who,
            state.clock.now(),
        )?;
        store.sync()?;
        user_view(&state, &username)
    })
    .await
}

/// A user with the status of its token (for a connected account, its parent's).
fn user_view(state: &AppState, username: &str) -> Result<Json<UserView>, ApiError> {
    let store = state.store.as_ref();
    let (user, token) = store.user_and_token(username)?;
    let user = user.ok_or_else(|| {
        ApiError::not_found(
            "user_not_found",
            format!("user `{username}` does not exist"),
        )
    })?;
    let parent = users::connected_parent(store, username)?;
    let token = match (token, &parent) {
        (Some(token), _) => Some(token),
        (None, Some(parent)) => store.token_of_user(parent)?,
        (None, None) => None,
    };
    let token = match token {
        Some(token) => {
            let (token, life) = state.tokens.details(&token.serial)?;
            Some(TokenView::new(&token, &life, state.clock.now()))
        }
        None => None,
    };
    let extra = users::extra(store, username)?;
    let mut view = UserView::new(&user, extra, token);
    view.connected_to = parent;
    view.last_session = crate::radius::accounting::last_session(store, username)?.map(Into::into);
    Ok(Json(view))
}

/// What `POST /api/v1/users/import` reads.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserImportQuery {
    /// `csv` (the default: `username,password_hash,email,first,last`) or `freeradius` (a
    /// FreeRADIUS `users`/`authorize` file: passwords and `TOTP-Secret`s).
    pub format: Option<String>,
    /// With `freeradius`: the TOTP tokens' digits (6, the default, or 8) and step in seconds
    /// (30, the default, or 60), as rlm_totp's `otp_length` and `time_step`.
    pub totp_digits: Option<u8>,
    pub totp_step: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserImportView {
    pub users: usize,
    /// TOTP tokens made of FreeRADIUS `TOTP-Secret`s (serial `totp-USER`).
    pub tokens: usize,
    /// Whole entries not imported, and why.
    pub skipped: Vec<SkippedEntryView>,
    /// Per user, the attributes otpgate does not use.
    pub not_used: Vec<NotUsedView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedEntryView {
    pub line: usize,
    pub what: String,
    pub why: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotUsedView {
    pub user: String,
    pub attributes: Vec<String>,
}

/// Import users from a file sent as the body: CSV, or with `?format=freeradius` a FreeRADIUS
/// `users`/`authorize` file (its `TOTP-Secret`s become TOTP tokens the users own). All or
/// nothing; an error names the line.
#[utoipa::path(
    post,
    path = "/api/v1/users/import",
    params(UserImportQuery),
    request_body(content = String, content_type = "text/plain"),
    responses(
        (status = 201, body = UserImportView),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn import_users(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<UserImportQuery>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<UserImportView>), ApiError> {
    principal.require(&[Role::Admin], "import users")?;
    if body.len() > super::MAX_IMPORT_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a user file over {} bytes", super::MAX_IMPORT_BODY),
        ));
    }
    let freeradius = match query.format.as_deref() {
        None | Some("csv") => false,
        Some("freeradius") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format must be `csv` or `freeradius`, got `{other}`"
            )))
        }
    };
    let defaults = users::TotpParameters::default();
    let totp = users::TotpParameters::new(
        query.totp_digits.unwrap_or(defaults.digits),
        query.totp_step.unwrap_or(defaults.step),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let bad = |e: users::UserError| match e {
        users::UserError::Store(e) => ApiError::from(e),
        other => ApiError::new(StatusCode::BAD_REQUEST, "bad_import", other.to_string()),
    };
    blocking(move || {
        let now = state.clock.now();
        let view = if freeradius {
            let text = std::str::from_utf8(&body)
                .map_err(|_| ApiError::bad_request("the file is not UTF-8 text"))?;
            let argon2 = state.settings.password.argon2;
            let done = users::import_freeradius(&state.tokens, "body", text, &argon2, totp, now)
                .map_err(bad)?;
            UserImportView {
                users: done.users,
                tokens: done.tokens,
                skipped: done
                    .skipped_entries
                    .into_iter()
                    .map(|s| SkippedEntryView {
                        line: s.line,
                        what: s.what,
                        why: s.why,
                    })
                    .collect(),
                not_used: done
                    .skipped_attributes
                    .into_iter()
                    .map(|(user, attributes)| NotUsedView { user, attributes })
                    .collect(),
            }
        } else {
            let count = users::import_users(state.store.as_ref(), &body[..], now).map_err(bad)?;
            UserImportView {
                users: count,
                tokens: 0,
                skipped: Vec::new(),
                not_used: Vec::new(),
            }
        };
        state.store.sync()?;
        Ok((StatusCode::CREATED, Json(view)))
    })
    .await
}
