//! The notifications of the token lifecycle (guide "Revoke OTP Hardware Token", "Renew",
//! "Expired Tokens", "Suspended Tokens"): their texts, ready for [`crate::notify::enqueue`].

use crate::notify::Notification;

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
