//! Who calls the API and what that caller may do (issue 13, roles): `admin` everything,
//! `org-admin` only the users and tokens of its organization, `helpdesk` reads, resyncs,
//! suspends, reinstates and resets, but neither revokes nor issues keys. A missing or unknown
//! bearer token is a 401; a wrong role or organization a 403.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::error::ApiError;
use super::AppState;
use crate::access::{self, Role};
use crate::audit::Who;
use crate::store::Token;
use crate::users;

/// The caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub who: Who,
    pub role: Role,
    pub organization: Option<String>,
}

impl Principal {
    /// The local administrator: the command line, over the control socket or in-process.
    pub fn local() -> Principal {
        Principal {
            who: Who::admin("cli"),
            role: Role::Admin,
            organization: None,
        }
    }

    /// Refuses unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "the role `{}` may not {what}",
            self.role.as_str()
        )))
    }

    /// Refuses an `org-admin` unless `username` belongs to its organization.
    pub fn require_user(&self, state: &AppState, username: &str) -> Result<(), ApiError> {
        let Some(mine) = self.organization_scope() else {
            return Ok(());
        };
        let theirs = users::extra(state.store.as_ref(), username)?.organization;
        if theirs.as_deref() == Some(mine) {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "user `{username}` is not in the organization `{mine}`"
        )))
    }

    /// Refuses an `org-admin` unless `token` belongs (or belonged) to a user of its
    /// organization.
    pub fn require_token(
        &self,
        state: &AppState,
        token: &Token,
        former_owner: Option<&str>,
    ) -> Result<(), ApiError> {
        if self.organization_scope().is_none() {
            return Ok(());
        }
        match token.owner.as_deref().or(former_owner) {
            Some(owner) => self.require_user(state, owner),
            None => Err(ApiError::forbidden(format!(
                "token `{}` belongs to no organization",
                token.serial
            ))),
        }
    }

    /// The organization an `org-admin` is limited to; `None` for the other roles.
    pub fn organization_scope(&self) -> Option<&str> {
        match self.role {
            Role::OrgAdmin => self.organization.as_deref(),
            _ => None,
        }
    }
}

/// `/api/v1/users/{username}/proofing` and what is under it.
fn is_proofing_path(path: &str) -> bool {
    let mut parts = path.trim_end_matches('/').split('/');
    matches!(
        (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next()
        ),
        (
            Some(""),
            Some("api"),
            Some("v1"),
            Some("users"),
            Some(_),
            Some("proofing")
        )
    )
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.local {
            return Ok(Principal::local());
        }
        let unauthorized = |message: &str| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                message.to_string(),
            )
        };
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("an `Authorization: Bearer TOKEN` header is required"))?;
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer TOKEN`"))?;
        let token = access::authenticate(state.store.as_ref(), secret)?
            .ok_or_else(|| unauthorized("the bearer token is not valid"))?;
        if token.role == Role::Agent && !is_proofing_path(parts.uri.path()) {
            return Err(ApiError::forbidden(
                "the role `agent` may only read proofing and record verifications",
            ));
        }
        Ok(Principal {
            who: token.who(),
            role: token.role,
            organization: token.organization,
        })
    }
}
