//! What a token's life needs beyond a login: who suspended it, failed registration and resync
//! attempts, its former owner once revoked. Kept beside the token, in the store's records
//! under `token/` + serial; the login path never reads it, so a login's record stays small.

use serde::{Deserialize, Serialize};

use super::state::Actor;

const PREFIX: &[u8] = b"token/";

/// The lifecycle record of one token. A token with none has the default: never suspended,
/// no failed attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Who suspended the token, while it is Suspended (guide "Possible Login Errors": a user
    /// may lift only a suspension of their own).
    pub suspended_by: Option<Actor>,
    /// Unix seconds of the suspension (suspended more than 60 days: revoked).
    pub suspended_at: Option<u64>,
    /// Registrations refused for wrong codes since the last success or reset.
    pub registration_failures: u32,
    /// Resyncs refused for wrong codes since the last success or reset.
    pub resync_failures: u32,
    /// The owner a revoked token had: it keeps its history while that user registers another.
    pub former_owner: Option<String>,
    /// The assurance level (2 or 3) bought or sponsored with the token.
    pub level: Option<u8>,
    /// How the token was acquired, once registered.
    pub origin: Option<Origin>,
    /// When the time rules next have something to do for this token: the time its entry in
    /// the due index is filed under ([`super::rules`]).
    pub due_at: Option<u64>,
    /// The expiry date the 30-day notice was sent for (a renewal moves the date, and the next
    /// notice is for the new one).
    pub expiry_notice_for: Option<u64>,
    /// The automatic revocation date the reminders in `reminders_sent` were for.
    pub reminders_for: Option<u64>,
    /// Reminders sent, in days before `reminders_for`.
    pub reminders_sent: Vec<u32>,
}

/// How a token was acquired (guide "Purchase OTP Hardware Token", "Sponsored Tokens").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// Bought: registered with a license key issued at `issued_at`, good for `years`.
    License { issued_at: u64, years: u32 },
    /// Sponsored by a partner organization.
    Sponsorship { organization: String, years: u32 },
    /// Registered by an administrator without a purchase (migration, replacement).
    Admin,
}

impl Origin {
    pub fn as_str(&self) -> &'static str {
        match self {
            Origin::License { .. } => "license",
            Origin::Sponsorship { .. } => "sponsorship",
            Origin::Admin => "admin",
        }
    }
}

/// The store key of `serial`'s lifecycle record.
pub fn key(serial: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(PREFIX.len() + serial.len());
    key.extend_from_slice(PREFIX);
    key.extend_from_slice(serial.as_bytes());
    key
}
