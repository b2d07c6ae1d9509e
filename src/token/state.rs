//! The token state machine. Every state change is one [`Event`] applied to the current
//! [`TokenState`]; a move the table does not list is refused with a [`TransitionError`].
//!
//! ```text
//!                 register (two consecutive codes, guide "Step 4: Register Your Token")
//!   Inventory ─────────────┐
//!   PendingActivation ─────┴──> Active ──(max_failures OTP failures)──> Locked
//!                                 ^  └──resync──┐                         │
//!                                 └─────────────┴───────resync────────────┘
//!                                        (guide "Reactivate OTP Hardware Token")
//! ```
//!
//! Suspended, Expired and Revoked are reported states (guide "View Status"); the moves into and
//! out of them (suspend, expiry, renewal, revocation) arrive with the lifecycle work.

use serde::{Deserialize, Serialize};

/// Token status as the guide's "View Status" lists it, plus `Inventory` for a token imported
/// into stock and not yet bound to anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Inventory,
    PendingActivation,
    Active,
    Locked,
    Suspended,
    Expired,
    Revoked,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Inventory => "inventory",
            TokenState::PendingActivation => "pending_activation",
            TokenState::Active => "active",
            TokenState::Locked => "locked",
            TokenState::Suspended => "suspended",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for TokenState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that asks a token to change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Bind a token to a user with two consecutive codes.
    Register,
    /// Consecutive OTP failures reached `otp.max_failures`.
    FailureLimit,
    /// Re-synchronise with two consecutive codes; unlocks a locked token.
    Resync,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Event::Register => "register",
            Event::FailureLimit => "lock after failures",
            Event::Resync => "resync",
        })
    }
}

/// A move the state machine refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a token in state `{from}` cannot {event}")]
pub struct TransitionError {
    pub from: TokenState,
    pub event: Event,
}

/// The transition table: the state after `event`, or why not.
pub fn next_state(from: TokenState, event: Event) -> Result<TokenState, TransitionError> {
    use TokenState::*;
    match (from, event) {
        (Inventory | PendingActivation, Event::Register) => Ok(Active),
        (Active, Event::FailureLimit) => Ok(Locked),
        (Active | Locked, Event::Resync) => Ok(Active),
        _ => Err(TransitionError { from, event }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TokenState::*;

    const ALL: [TokenState; 7] = [
        Inventory,
        PendingActivation,
        Active,
        Locked,
        Suspended,
        Expired,
        Revoked,
    ];

    #[test]
    fn every_transition_allowed_or_refused_as_the_table_says() {
        for from in ALL {
            for event in [Event::Register, Event::FailureLimit, Event::Resync] {
                let expected = match (from, event) {
                    (Inventory, Event::Register) | (PendingActivation, Event::Register) => {
                        Some(Active)
                    }
                    (Active, Event::FailureLimit) => Some(Locked),
                    (Active, Event::Resync) | (Locked, Event::Resync) => Some(Active),
                    _ => None,
                };
                match (next_state(from, event), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from} {event}"),
                    (Err(e), None) => {
                        assert_eq!(e, TransitionError { from, event });
                    }
                    (got, want) => panic!("{from} {event}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn revoked_is_final() {
        for event in [Event::Register, Event::FailureLimit, Event::Resync] {
            assert!(next_state(Revoked, event).is_err());
        }
    }
}
