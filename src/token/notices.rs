//! The notifications of the token lifecycle (guide "Revoke OTP Hardware Token", "Renew",
//! "Expired Tokens", "Suspended Tokens"): their texts, ready for [`crate::notify::enqueue`].

use crate::notify::Notification;

/// A Unix time as a date for a person: `2027-03-25 23:59 UTC`.
fn date(unix: u64) -> String {
    let text = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix),
    )
    .to_string();
    format!("{} {} UTC", &text[..10], &text[11..16])
}

/// To the owner of a revoked token: the new temporary password, to be changed before the
/// next login. The body carries a secret: it is never logged.
pub fn revoked(
    username: &str,
    email: &str,
    serial: &str,
    reason: &str,
    temporary_password: &str,
) -> Notification {
    let why = if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    };
    Notification {
        kind: "token.revoked".into(),
        username: username.to_string(),
        to: email.to_string(),
        subject: "Your OTP hardware token was revoked".into(),
        body: format!(
            "Hello {username},\n\n\
             your OTP hardware token {serial} was revoked{why}. It cannot be used again.\n\n\
             Your password was reset. Your temporary password is:\n\n    {temporary_password}\n\n\
             You must change it before you can log in again. To keep using applications that \
             require two-factor authentication, register a new token.\n"
        ),
    }
}

/// The expiry notice, `expiry_notice_days` before the date (guide "Renew OTP Hardware Token").
pub fn expiry_notice(username: &str, email: &str, serial: &str, expires_at: u64) -> Notification {
    Notification {
        kind: "token.expiry_notice".into(),
        username: username.to_string(),
        to: email.to_string(),
        subject: "Your OTP hardware token expires soon".into(),
        body: format!(
            "Hello {username},\n\n\
             your OTP hardware token {serial} expires on {}. Renew it before then to keep \
             logging in with it; a renewal moves the expiry date one year after this date.\n",
            date(expires_at)
        ),
    }
}

/// A reminder `days` before an automatic revocation (guide "Expired Tokens", "Suspended
/// Tokens": 30, 15 and 3 days).
pub fn revocation_reminder(
    username: &str,
    email: &str,
    serial: &str,
    revoke_at: u64,
    days: u32,
    suspended: bool,
) -> Notification {
    let (why, remedy) = if suspended {
        ("has been suspended", "have it reinstated")
    } else {
        ("has expired", "renew it")
    };
    Notification {
        kind: "token.revocation_reminder".into(),
        username: username.to_string(),
        to: email.to_string(),
        subject: format!("Your OTP hardware token will be revoked in {days} days"),
        body: format!(
            "Hello {username},\n\n\
             your OTP hardware token {serial} {why} and will be revoked automatically on {}. \
             A revoked token cannot be used again; {remedy} before then to keep it.\n",
            date(revoke_at)
        ),
    }
}

/// An automatic revocation happened.
pub fn auto_revoked(username: &str, email: &str, serial: &str, reason: &str) -> Notification {
    Notification {
        kind: "token.auto_revoked".into(),
        username: username.to_string(),
        to: email.to_string(),
        subject: "Your OTP hardware token was revoked".into(),
        body: format!(
            "Hello {username},\n\n\
             your OTP hardware token {serial} was revoked automatically ({reason}). It cannot \
             be used again; to keep using applications that require two-factor \
             authentication, purchase and register a new token.\n"
        ),
    }
}

/// A sponsorship lapsed unused at its register-by date (guide "Sponsored Tokens").
pub fn sponsorship_lapsed(username: &str, email: &str, organization: &str) -> Notification {
    Notification {
        kind: "sponsorship.lapsed".into(),
        username: username.to_string(),
        to: email.to_string(),
        subject: "Your token sponsorship has lapsed".into(),
        body: format!(
            "Hello {username},\n\n\
             the sponsorship of your OTP hardware token by {organization} lapsed: the token was \
             not registered by the date it gave. Ask {organization} to sponsor you again, or \
             purchase a token.\n"
        ),
    }
}
