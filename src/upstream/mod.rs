//! Upstream first factors: the password half of a login, checked by a system the site already
//! runs (its directory, or its existing RADIUS server) instead of a hash in otpgate's store.
//!
//! otpgate keeps the second factor (the token code) itself; an upstream only answers "is this
//! the user's password". Every check is asynchronous and bounded: each attempt has a timeout,
//! the number of attempts is fixed, so a dead or slow upstream costs at most
//! `timeout * (retries + 1) * servers` and never stalls the RADIUS server. An upstream that
//! answered says [`Verdict::Accepted`] or [`Verdict::Rejected`]; one that could not be asked
//! says [`Verdict::Unavailable`], which the caller must treat as a failed login (fail closed)
//! while logging the reason.
//!
//! - [`ldap`]: an LDAP simple bind as the user (RFC 4511 section 4.2, RFC 4513 section 5.1.3).
//! - [`radius`]: an Access-Request to the site's RADIUS server (RFC 2865, PAP).
//! - [`Upstreams`]: the configured ones by name, as the login pipeline asks them.

pub mod ldap;
pub mod radius;
mod registry;

pub use registry::{Upstream, Upstreams};

/// What an upstream said about a user's password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The upstream confirmed the password.
    Accepted,
    /// The upstream answered and refused the password (or the user name), or the request was
    /// refused locally as one that must never be sent (e.g. an empty password).
    Rejected,
    /// No server answered (all down or timed out); reason for the log.
    Unavailable { reason: String },
}
