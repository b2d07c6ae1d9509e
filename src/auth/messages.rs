//! Reply-Message texts, adapted from the guide's "Possible Login Errors" for a RADIUS login
//! (no portal links). The generic text is used whenever the password was not proven right.

/// Unknown user, wrong password, wrong OTP: deliberately the same.
pub const GENERIC_FAILURE: &str =
    "Login failed. Check your user name, password and the one-time password from your token.";

/// Guide: "Your OTP hardware token is locked...".
pub const TOKEN_LOCKED: &str = "Your OTP hardware token is locked. You must re-activate your \
     token before you can log in with a One-Time Password Token. Resync your token with two \
     consecutive codes, or contact your administrator.";

/// Guide: "You cannot use your token to log into MAG at this time..." (suspended, revoked).
pub const TOKEN_UNUSABLE: &str = "You cannot use your token to log in at this time. You may need \
     to re-activate your OTP hardware token; contact your administrator.";

/// Guide: "Your OTP Hardware Token has expired...".
pub const TOKEN_EXPIRED: &str =
    "Your OTP Hardware Token has expired. Renew your OTP Hardware Token to log in again.";

/// Guide "View Status": pending activation (not yet registered with two codes).
pub const TOKEN_PENDING: &str = "Your OTP hardware token is pending activation. Register your \
     token with two consecutive codes before you log in with it.";

/// Guide "Proofing Upgrade": the application needs identity proofing the user lacks.
pub const LEVEL_TOO_LOW: &str = "This application requires an OTP Hardware Token with identity \
     proofing. Complete a proofing upgrade before you log in to it.";

/// The application takes other kinds of token (`token_kinds`).
pub const TOKEN_KIND_NOT_ALLOWED: &str = "This application does not accept your kind of OTP \
     hardware token. Contact your administrator.";

/// Store failure: nothing was decided; the NAS may retry.
pub const TRY_LATER: &str = "This action cannot be completed at this time. Try again later.";

/// Guide "Revoke OTP Hardware Token": the password was reset to a temporary one, sent by
/// e-mail; it must be changed before a login.
pub const PASSWORD_MUST_CHANGE: &str = "Your password was reset to a temporary password when \
     your token was revoked. You must change your password before you can log in.";

/// An application's upstream first factor (the site's RADIUS server or directory) did not
/// answer: the password could not be checked.
pub const UPSTREAM_UNAVAILABLE: &str =
    "Your password cannot be checked at this time: the password service does not answer. Try \
     again later.";
