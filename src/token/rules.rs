//! The time rules of the token lifecycle (guide "Renew OTP Hardware Token", "Expired Tokens",
//! "Suspended Tokens"), as pure functions of a token, its lifecycle record, the settings and
//! `now`: what is due now, and when something next will be. The sweeper
//! ([`crate::sweeper`]) finds tokens through the due index, an entry per token under the time
//! of its next rule, kept in the same change set as every change that moves it.
//!
//! - 30 days (`expiry_notice_days`) before the expiry date: a notice to renew.
//! - On the expiry date: Expired (logins refuse it from that second on regardless).
//! - Expired for a year (`expired_revoke_days`), or suspended for 60 days
//!   (`suspended_revoke_days`): revoked; reminders 30, 15 and 3 days before
//!   (`revoke_reminder_days`).

use crate::config::LifecycleSettings;
use crate::store::Token;

use super::lifecycle::Lifecycle;
use super::state::TokenState;
use super::TokenService;

const DAY: u64 = 86_400;
/// The due index's key prefix.
pub const DUE_PREFIX: &[u8] = b"due/";
/// After the time: a token's entry.
const TOKEN_TAG: &[u8] = b"t/";
/// After the time: a sponsorship's entry (its lapse).
const SPONSOR_TAG: &[u8] = b"s/";

/// Something the time rules do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// The expiry date has passed: record Expired.
    Expire,
    /// Tell the owner the token expires at `expires_at`.
    ExpiryNotice { expires_at: u64 },
    /// Remind the owner the token will be revoked at `revoke_at`, `days` ahead; `covers`
    /// every reminder this one stands for (those the sweeper missed while it was not running).
    Reminder {
        revoke_at: u64,
        days: u32,
        covers: Vec<u32>,
    },
    /// Revoke automatically; why.
    AutoRevoke { why: &'static str },
}

/// When `token` is revoked automatically, if it is on that path: expired (a year after its
/// expiry date) or suspended (60 days after its suspension).
pub fn revocation_date(
    token: &Token,
    life: &Lifecycle,
    s: &LifecycleSettings,
    now: u64,
) -> Option<u64> {
    match TokenService::effective_state(token, now) {
        TokenState::Suspended => life
            .suspended_at
            .map(|at| at.saturating_add(u64::from(s.suspended_revoke_days) * DAY)),
        TokenState::Expired => token
            .expires_at
            .map(|at| at.saturating_add(u64::from(s.expired_revoke_days) * DAY)),
        _ => None,
    }
}

/// Whether the owner is told of expiry for this state (a token that is in use or could be).
fn notice_applies(state: TokenState) -> bool {
    matches!(
        state,
        TokenState::Active | TokenState::Locked | TokenState::Suspended
    )
}

/// The first rule due at `now`, if any.
pub fn due_now(token: &Token, life: &Lifecycle, s: &LifecycleSettings, now: u64) -> Option<Due> {
    if matches!(token.state, TokenState::Active | TokenState::Locked)
        && token.expires_at.is_some_and(|at| at <= now)
    {
        return Some(Due::Expire);
    }
    if let Some(revoke_at) = revocation_date(token, life, s, now) {
        if now >= revoke_at {
            return Some(Due::AutoRevoke {
                why: match token.state {
                    TokenState::Suspended => {
                        "suspended longer than lifecycle.suspended_revoke_days"
                    }
                    _ => "expired longer than lifecycle.expired_revoke_days",
                },
            });
        }
        let sent = reminders_sent(life, revoke_at);
        let reached: Vec<u32> = s
            .revoke_reminder_days
            .iter()
            .copied()
            .filter(|d| now >= revoke_at.saturating_sub(u64::from(*d) * DAY))
            .collect();
        // The most urgent reminder reached stands for the ones before it.
        if let Some(days) = reached.iter().copied().min() {
            if !sent.contains(&days) {
                return Some(Due::Reminder {
                    revoke_at,
                    days,
                    covers: reached,
                });
            }
        }
    }
    let state = TokenService::effective_state(token, now);
    if let Some(expires_at) = token.expires_at {
        let notice_at = expires_at.saturating_sub(u64::from(s.expiry_notice_days) * DAY);
        if notice_applies(state)
            && now >= notice_at
            && now < expires_at
            && life.expiry_notice_for != Some(expires_at)
        {
            return Some(Due::ExpiryNotice { expires_at });
        }
    }
    None
}

fn reminders_sent(life: &Lifecycle, revoke_at: u64) -> &[u32] {
    if life.reminders_for == Some(revoke_at) {
        &life.reminders_sent
    } else {
        &[]
    }
}

/// When a rule is next due for `token` (perhaps already), or `None` if none ever will be
/// unless something changes (a revoked token, one without an expiry date).
pub fn next_due(token: &Token, life: &Lifecycle, s: &LifecycleSettings) -> Option<u64> {
    let mut times = Vec::new();
    // The state at the expiry date decides: compute as of just before any rule fires.
    if let Some(expires_at) = token.expires_at {
        if matches!(token.state, TokenState::Active | TokenState::Locked) {
            times.push(expires_at);
            if life.expiry_notice_for != Some(expires_at) {
                times.push(expires_at.saturating_sub(u64::from(s.expiry_notice_days) * DAY));
            }
        }
        if token.state == TokenState::Suspended && life.expiry_notice_for != Some(expires_at) {
            times.push(expires_at.saturating_sub(u64::from(s.expiry_notice_days) * DAY));
        }
    }
    let on_path = match token.state {
        TokenState::Suspended => life
            .suspended_at
            .map(|at| at.saturating_add(u64::from(s.suspended_revoke_days) * DAY)),
        TokenState::Expired => token
            .expires_at
            .map(|at| at.saturating_add(u64::from(s.expired_revoke_days) * DAY)),
        _ => None,
    };
    if let Some(revoke_at) = on_path {
        times.push(revoke_at);
        let sent = reminders_sent(life, revoke_at);
        times.extend(
            s.revoke_reminder_days
                .iter()
                .filter(|d| !sent.contains(d))
                .map(|d| revoke_at.saturating_sub(u64::from(*d) * DAY)),
        );
    }
    times.into_iter().min()
}

/// The due index key of `serial` at `at`.
pub fn token_due_key(at: u64, serial: &str) -> Vec<u8> {
    due_key(at, TOKEN_TAG, serial)
}

/// When a sponsorship lapses if unused: just after its register-by date.
pub fn sponsorship_due(sponsorship: &crate::licensing::Sponsorship) -> u64 {
    sponsorship.register_by.saturating_add(1)
}

/// The due index key of `username`'s sponsorship at `at`.
pub fn sponsor_due_key(at: u64, username: &str) -> Vec<u8> {
    due_key(at, SPONSOR_TAG, username)
}

fn due_key(at: u64, tag: &[u8], name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(DUE_PREFIX.len() + 8 + tag.len() + name.len());
    key.extend_from_slice(DUE_PREFIX);
    key.extend_from_slice(&at.to_be_bytes());
    key.extend_from_slice(tag);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The first key after every entry due at or before `now`.
pub fn due_until(now: u64) -> Vec<u8> {
    let mut key = DUE_PREFIX.to_vec();
    key.extend_from_slice(&now.saturating_add(1).to_be_bytes());
    key
}

/// What a due index key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueEntry {
    Token { at: u64, serial: String },
    Sponsorship { at: u64, username: String },
}

/// Reads a due index key; `None` if it is not one.
pub fn parse_due_key(key: &[u8]) -> Option<DueEntry> {
    let rest = key.strip_prefix(DUE_PREFIX)?;
    let (at, rest) = rest.split_first_chunk::<8>()?;
    let at = u64::from_be_bytes(*at);
    let name = |tagged: &[u8]| String::from_utf8(tagged.to_vec()).ok();
    if let Some(serial) = rest.strip_prefix(TOKEN_TAG) {
        return Some(DueEntry::Token {
            at,
            serial: name(serial)?,
        });
    }
    rest.strip_prefix(SPONSOR_TAG).and_then(|user| {
        Some(DueEntry::Sponsorship {
            at,
            username: name(user)?,
        })
    })
}
