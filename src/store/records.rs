//! The records otpgate keeps: users and tokens, as stored. Plain data with serde; the rules
//! for changing a token live in [`crate::token`], the only writer of token state.

use serde::{Deserialize, Serialize};

use crate::otp::{Algorithm, TokenKind};
use crate::token::TokenState;

/// A person who logs in: first factor and the identity data the guide's proofing relies on.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    /// Stored password hash (argon2id PHC, or an imported format; see `auth::password`).
    pub password_hash: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Identity assurance level (2 or 3) the user was proofed to (guide, "Proofing Upgrade").
    pub assurance_level: u8,
    /// Unix seconds.
    pub created_at: u64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("assurance_level", &self.assurance_level)
            .finish_non_exhaustive()
    }
}

/// A hardware OATH token. The seed is sealed (see `store::seal`); nothing here is secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub serial: String,
    pub kind: TokenKind,
    pub algorithm: Algorithm,
    pub digits: u8,
    /// AES-256-GCM nonce || ciphertext of the seed, bound to the serial.
    pub sealed_seed: Vec<u8>,
    pub state: TokenState,
    pub owner: Option<String>,
    /// HOTP: the next counter expected. Every accepted code moves it past that code.
    pub counter: u64,
    /// TOTP: the last accepted time step; no code at or before it is accepted again.
    pub last_step: Option<u64>,
    /// TOTP: remembered clock drift of the token, in steps (RFC 6238 section 6).
    pub drift: i64,
    /// Consecutive OTP failures after a right password.
    pub failures: u32,
    /// Unix seconds of the last successful authentication.
    pub last_auth: Option<u64>,
    pub created_at: u64,
    pub state_changed_at: u64,
    /// Unix seconds after which the token is expired (guide, "Expired Tokens").
    pub expires_at: Option<u64>,
}
