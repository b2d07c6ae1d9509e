//! What the API answers: tokens, users and audit entries as JSON (never a seed or a password
//! hash), times in RFC 3339.

use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::Entry;
use crate::otp::TokenKind;
use crate::store::{Token, User};
use crate::token::lifecycle::{Lifecycle, Origin};
use crate::token::{Actor, TokenService, TokenState};
use crate::users::Extra;

/// A Unix time as RFC 3339 (UTC, whole seconds).
pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

/// A token's status (guide "View Status"): state, owner, level, expiry, last authentication,
/// origin.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub serial: String,
    /// `unassigned`, `pending_activation`, `active`, `locked`, `suspended`, `expired` or
    /// `revoked`: the state a login sees now.
    pub state: String,
    pub owner: Option<String>,
    /// The owner a revoked token had.
    pub former_owner: Option<String>,
    /// The assurance level bought or sponsored (2 or 3).
    pub level: Option<u8>,
    /// `license`, `sponsorship` or `admin` once registered.
    pub origin: Option<String>,
    /// The sponsoring organization of a sponsored token.
    pub sponsor: Option<String>,
    pub expires_at: Option<String>,
    pub last_auth_at: Option<String>,
    /// `hotp` or `totp`.
    pub kind: String,
    pub digits: u8,
    pub algorithm: String,
    /// Consecutive wrong codes at login.
    pub failures: u32,
    /// `user` or `admin`, while suspended.
    pub suspended_by: Option<String>,
    pub registration_failures: u32,
    pub resync_failures: u32,
    pub created_at: String,
    pub state_changed_at: String,
}

impl TokenView {
    pub fn new(token: &Token, life: &Lifecycle, now: u64) -> TokenView {
        TokenView {
            serial: token.serial.clone(),
            state: TokenService::effective_state(token, now)
                .as_str()
                .to_string(),
            owner: token.owner.clone(),
            former_owner: life.former_owner.clone(),
            level: life.level,
            origin: life.origin.as_ref().map(|o| o.as_str().to_string()),
            sponsor: match &life.origin {
                Some(Origin::Sponsorship { organization, .. }) => Some(organization.clone()),
                _ => None,
            },
            expires_at: token.expires_at.map(rfc3339),
            last_auth_at: token.last_auth.map(rfc3339),
            kind: match token.kind {
                TokenKind::Hotp => "hotp".into(),
                TokenKind::Totp { .. } => "totp".into(),
            },
            digits: token.digits,
            algorithm: token.algorithm.as_str().to_string(),
            failures: token.failures,
            suspended_by: life.suspended_by.map(|a| match a {
                Actor::User => "user".to_string(),
                _ => "admin".to_string(),
            }),
            registration_failures: life.registration_failures,
            resync_failures: life.resync_failures,
            created_at: rfc3339(token.created_at),
            state_changed_at: rfc3339(token.state_changed_at),
        }
    }
}

/// A user (never the password or its hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub username: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub organization: Option<String>,
    pub assurance_level: u8,
    /// How the password is stored: `argon2id`, or an imported scheme until the next login
    /// re-hashes it.
    pub password_scheme: String,
    /// The password is a temporary one (set when the user's token was revoked): no login is
    /// accepted until it is changed (`POST /api/v1/users/{username}/password`).
    pub password_must_change: bool,
    pub created_at: String,
    /// The user's current token, if any (for a connected account, its parent's).
    pub token: Option<TokenView>,
    /// The account whose token this one logs in with (guide "Connected Accounts").
    pub connected_to: Option<String>,
    /// The last accounting record seen for the user (`[radius] accounting_listen`).
    pub last_session: Option<SessionView>,
}

/// The last accounting record of a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// `start`, `stop`, `interim-update`...
    pub status: String,
    pub session_id: Option<String>,
    /// The RADIUS client (NAS) that reported it.
    pub client: String,
    pub framed_ip: Option<String>,
    pub at: String,
}

impl From<crate::radius::accounting::Session> for SessionView {
    fn from(s: crate::radius::accounting::Session) -> SessionView {
        SessionView {
            status: s.status,
            session_id: s.session_id,
            client: s.client,
            framed_ip: s.framed_ip,
            at: rfc3339(s.at),
        }
    }
}

impl UserView {
    pub fn new(user: &User, extra: Extra, token: Option<TokenView>) -> UserView {
        let hash = crate::auth::password::PasswordHash::parse(&user.password_hash);
        UserView {
            username: user.username.clone(),
            email: user.email.clone(),
            first_name: user.first_name.clone(),
            middle_name: extra.middle_name,
            last_name: user.last_name.clone(),
            organization: extra.organization,
            assurance_level: user.assurance_level,
            password_scheme: hash.as_ref().map_or("unusable", |h| h.scheme()).to_string(),
            password_must_change: hash.as_ref().is_ok_and(|h| h.is_temporary()),
            created_at: rfc3339(user.created_at),
            token,
            connected_to: None,
            last_session: None,
        }
    }
}

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub at: String,
    /// `user`, `admin`, `system` or `login`.
    pub actor: String,
    /// Who exactly: `token:NAME` for an admin token, `cli`, `sweeper`, `radius`...
    pub by: String,
    pub action: String,
    pub serial: Option<String>,
    pub username: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
}

impl From<&Entry> for AuditView {
    fn from(e: &Entry) -> AuditView {
        AuditView {
            at: rfc3339(e.at),
            actor: e.actor.to_string(),
            by: e.by.clone(),
            action: e.action.clone(),
            serial: e.serial.clone(),
            username: e.username.clone(),
            from: e.from.map(|s: TokenState| s.as_str().to_string()),
            to: e.to.map(|s: TokenState| s.as_str().to_string()),
            reason: e.reason.clone(),
        }
    }
}
