//! The token state machine (guide "View Status", "Reactivate", "Revoke", "Expired Tokens",
//! "Suspended Tokens"). Every state change is one [`Event`], asked for by an [`Actor`], applied
//! by [`transition`] to the current [`TokenState`]: the one place that decides a move. It
//! answers a [`Transition`] (from, to, who, why, when) for the audit, or a [`TransitionError`]
//! saying why not.
//!
//! ```text
//!   Unassigned ─────register──┐             ┌──failures──> Locked ──resync──┐
//!   PendingActivation ────────┴──> Active <─┴───────────────────────────────┘
//!                               │ ^  suspend (user, admin) / reinstate
//!                               v │  (the user only what the user suspended)
//!                             Suspended ──(60 days)── auto-revoke ──┐
//!   Active, Locked ──expire──> Expired ──renew──> Active            v
//!                              Expired ──(1 year)── auto-revoke ──> Revoked (final)
//!   PendingActivation, Active, Locked, Expired, Suspended ──revoke──> Revoked
//! ```
//!
//! Renewal moves the expiry date and is allowed any time before revocation; only an Expired
//! token changes state by it. An administrator's reset (of a block on registration or resync
//! after too many failed attempts) keeps the state. The time rules (when to expire, when to
//! auto-revoke) belong to the sweeper; this table says only which moves exist and who may ask
//! for them.

use serde::{Deserialize, Serialize};

/// Token status as the guide's "View Status" lists it, plus `Unassigned` for a token imported
/// into stock and not yet bound to anyone. Stored by position (postcard): add new states at
/// the end only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Unassigned,
    PendingActivation,
    Active,
    Locked,
    Suspended,
    Expired,
    Revoked,
}

impl TokenState {
    /// Every state, in the lifecycle's order.
    pub const ALL: [TokenState; 7] = [
        TokenState::Unassigned,
        TokenState::PendingActivation,
        TokenState::Active,
        TokenState::Locked,
        TokenState::Suspended,
        TokenState::Expired,
        TokenState::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Unassigned => "unassigned",
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

/// Who asks for a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The RADIUS login path (OTP failures).
    Login,
    /// The token's owner (self-service).
    User,
    /// An administrator, organization administrator or helpdesk (and the offline CLI).
    Admin,
    /// The time rules (the sweeper) and purchases (renewal).
    System,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Actor::Login => "login",
            Actor::User => "user",
            Actor::Admin => "admin",
            Actor::System => "system",
        })
    }
}

/// Something that asks a token to change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Bind a token to a user with two consecutive codes (guide "Register Your Token").
    Register,
    /// Consecutive OTP failures reached `otp.max_failures`.
    FailureLimit,
    /// Re-synchronise with two consecutive codes; unlocks a locked token.
    Resync,
    /// Suspend: the token cannot log in until reinstated.
    Suspend,
    /// Lift a suspension (the user only one the user made).
    Reinstate,
    /// The expiry date has passed.
    Expire,
    /// A renewal was bought: the expiry date moves; an expired token is active again.
    Renew,
    /// Revoke for good (lost, stolen, compromised, damaged).
    Revoke,
    /// Revocation by the time rules: suspended more than 60 days, expired more than a year.
    AutoRevoke,
    /// An administrator lifts a block on registration or resync after too many failed
    /// attempts (guide: "Exostar needs to reset your OTP Hardware Token"). The state stays.
    Reset,
    /// Proofing upgrade (guide "Proofing Upgrade"): an Active token becomes level 3 once its
    /// owner completed proofing. The state stays.
    Upgrade,
}

impl Event {
    /// Every event, for tables and tests.
    pub const ALL: [Event; 11] = [
        Event::Register,
        Event::FailureLimit,
        Event::Resync,
        Event::Suspend,
        Event::Reinstate,
        Event::Expire,
        Event::Renew,
        Event::Revoke,
        Event::AutoRevoke,
        Event::Reset,
        Event::Upgrade,
    ];

    /// Who may ask for this event at all.
    fn allowed(self, actor: Actor) -> bool {
        use Actor::*;
        match self {
            Event::FailureLimit => actor == Login,
            Event::Register | Event::Resync | Event::Suspend | Event::Reinstate | Event::Revoke => {
                matches!(actor, User | Admin)
            }
            Event::Expire | Event::AutoRevoke => actor == System,
            Event::Renew => matches!(actor, User | Admin | System),
            Event::Reset => actor == Admin,
            Event::Upgrade => matches!(actor, User | Admin),
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Event::Register => "register",
            Event::FailureLimit => "lock after failures",
            Event::Resync => "resync",
            Event::Suspend => "suspend",
            Event::Reinstate => "reinstate",
            Event::Expire => "expire",
            Event::Renew => "renew",
            Event::Revoke => "revoke",
            Event::AutoRevoke => "be revoked automatically",
            Event::Reset => "be reset",
            Event::Upgrade => "be upgraded",
        })
    }
}

/// A move the state machine refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The move does not exist from this state.
    #[error("a token in state `{from}` cannot {event}")]
    NotFromState { from: TokenState, event: Event },
    /// This actor may not ask for it (a user lifting an administrator's suspension, a login
    /// revoking...).
    #[error("the {actor} cannot {event} this token")]
    NotByActor { actor: Actor, event: Event },
}

/// An accepted move, as the audit records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: TokenState,
    pub to: TokenState,
    pub event: Event,
    pub actor: Actor,
    pub reason: String,
    /// Unix seconds.
    pub at: u64,
}

/// The transition table: the move `event` asked by `actor` makes from `from`, or why not.
/// `suspended_by` is who suspended the token, when it is Suspended (a user may reinstate only
/// a suspension of their own).
pub fn transition(
    from: TokenState,
    suspended_by: Option<Actor>,
    event: Event,
    actor: Actor,
    reason: &str,
    now: u64,
) -> Result<Transition, TransitionError> {
    use TokenState::*;
    if !event.allowed(actor) {
        return Err(TransitionError::NotByActor { actor, event });
    }
    let to = match (from, event) {
        (Unassigned | PendingActivation, Event::Register) => Active,
        (Active, Event::FailureLimit) => Locked,
        (Active | Locked, Event::Resync) => Active,
        (Active | Locked, Event::Suspend) => Suspended,
        (Suspended, Event::Reinstate) => {
            if actor == Actor::User && suspended_by != Some(Actor::User) {
                return Err(TransitionError::NotByActor { actor, event });
            }
            Active
        }
        (Active | Locked, Event::Expire) => Expired,
        (Expired, Event::Renew) => Active,
        (PendingActivation | Active | Locked | Suspended, Event::Renew) => from,
        (PendingActivation | Active | Locked | Expired | Suspended, Event::Revoke) => Revoked,
        (Suspended | Expired, Event::AutoRevoke) => Revoked,
        (_, Event::Reset) if from != Revoked => from,
        (Active, Event::Upgrade) => Active,
        _ => return Err(TransitionError::NotFromState { from, event }),
    };
    Ok(Transition {
        from,
        to,
        event,
        actor,
        reason: reason.to_string(),
        at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Actor::*;
    use TokenState::*;

    const STATES: [TokenState; 7] = TokenState::ALL;
    const ACTORS: [Actor; 4] = [Login, User, Admin, System];

    /// The table written out once more, independently: every state x every event, by an actor
    /// allowed to ask, gives this state or this refusal.
    fn expected(from: TokenState, event: Event) -> Option<TokenState> {
        Some(match event {
            Event::Register if matches!(from, Unassigned | PendingActivation) => Active,
            Event::FailureLimit if from == Active => Locked,
            Event::Resync if matches!(from, Active | Locked) => Active,
            Event::Suspend if matches!(from, Active | Locked) => Suspended,
            Event::Reinstate if from == Suspended => Active,
            Event::Expire if matches!(from, Active | Locked) => Expired,
            Event::Renew if from == Expired => Active,
            Event::Renew if matches!(from, PendingActivation | Active | Locked | Suspended) => from,
            Event::Revoke if !matches!(from, Unassigned | Revoked) => Revoked,
            Event::AutoRevoke if matches!(from, Suspended | Expired) => Revoked,
            Event::Reset if from != Revoked => from,
            Event::Upgrade if from == Active => Active,
            _ => return None,
        })
    }

    fn allowed_actors(event: Event) -> &'static [Actor] {
        match event {
            Event::FailureLimit => &[Login],
            Event::Expire | Event::AutoRevoke => &[System],
            Event::Renew => &[User, Admin, System],
            Event::Reset => &[Admin],
            _ => &[User, Admin],
        }
    }

    #[test]
    fn every_state_and_event_gives_the_new_state_or_the_specific_error() {
        for from in STATES {
            for event in Event::ALL {
                for actor in ACTORS {
                    // An administrator's view of suspensions (the user's rule is its own test).
                    let got = transition(from, Some(Admin), event, actor, "test", 7);
                    if !allowed_actors(event).contains(&actor) {
                        assert_eq!(
                            got,
                            Err(TransitionError::NotByActor { actor, event }),
                            "{from} {event} by {actor}"
                        );
                        continue;
                    }
                    let want = expected(from, event)
                        .filter(|_| !(event == Event::Reinstate && actor == User));
                    match (got, want) {
                        (Ok(t), Some(to)) => assert_eq!(
                            t,
                            Transition {
                                from,
                                to,
                                event,
                                actor,
                                reason: "test".into(),
                                at: 7
                            }
                        ),
                        (Err(TransitionError::NotFromState { .. }), None) => {
                            assert!(expected(from, event).is_none(), "{from} {event}");
                        }
                        (Err(TransitionError::NotByActor { .. }), None) => {
                            assert_eq!((from, event, actor), (Suspended, Event::Reinstate, User));
                        }
                        (got, want) => panic!("{from} {event} by {actor}: {got:?}, want {want:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn a_user_reinstates_only_a_suspension_of_their_own() {
        let by_user = transition(Suspended, Some(User), Event::Reinstate, User, "back", 1);
        assert_eq!(by_user.map(|t| t.to), Ok(Active));
        let by_admin = transition(Suspended, Some(Admin), Event::Reinstate, User, "back", 1);
        assert_eq!(
            by_admin,
            Err(TransitionError::NotByActor {
                actor: User,
                event: Event::Reinstate
            })
        );
        let admin = transition(Suspended, Some(Admin), Event::Reinstate, Admin, "ok", 1);
        assert_eq!(admin.map(|t| t.to), Ok(Active));
    }

    #[test]
    fn revoked_is_final() {
        for event in Event::ALL {
            for actor in ACTORS {
                assert!(transition(Revoked, None, event, actor, "", 0).is_err());
            }
        }
    }
}
