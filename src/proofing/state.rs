//! The identity-proofing state machine (guide "Identity Proofing", "Proofing Upgrade"). One
//! [`transition`] decides every move; the service records it with its history and audit.
//!
//! ```text
//!   not_started ──start(instant, US)──> awaiting_outcome ──passed──────────────> complete
//!        │                                   │  located_not_passed ──> code_issued (by post)
//!        │                                   └─ not_located / declined ─┐
//!        ├──start(webcam)──> appointment_needed <───────────────────────┘
//!        │                    └─schedule─> appointment_scheduled ─schedule (reschedule)─┐
//!        │                                   └─verify (agent) ──> code_issued <─────────┘
//!        ├──start(postal)──> code_issued (mailed)   code_issued ─redeem─> complete
//!        └──start(in_person)──> awaiting_verification ─verify (agent)─> code_issued
//!   code_issued ─reissue (lost code)─> code_issued; ─schedule─> appointment_scheduled
//!   complete ─reset (level-3 token revoked as lost, no other credential)─> not_started
//! ```

use serde::{Deserialize, Serialize};

/// Where a user stands in proofing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofingState {
    NotStarted,
    /// Instant (credit bureau) proofing started; its outcome is awaited.
    AwaitingOutcome,
    /// Webcam proofing: an appointment must be made.
    AppointmentNeeded,
    AppointmentScheduled,
    /// In-person proofing: a trusted agent's verification is awaited.
    AwaitingVerification,
    /// An activation code was issued (by post or by an agent); entering it completes proofing.
    CodeIssued,
    Complete,
}

impl ProofingState {
    pub const ALL: [ProofingState; 7] = [
        ProofingState::NotStarted,
        ProofingState::AwaitingOutcome,
        ProofingState::AppointmentNeeded,
        ProofingState::AppointmentScheduled,
        ProofingState::AwaitingVerification,
        ProofingState::CodeIssued,
        ProofingState::Complete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProofingState::NotStarted => "not_started",
            ProofingState::AwaitingOutcome => "awaiting_outcome",
            ProofingState::AppointmentNeeded => "appointment_needed",
            ProofingState::AppointmentScheduled => "appointment_scheduled",
            ProofingState::AwaitingVerification => "awaiting_verification",
            ProofingState::CodeIssued => "code_issued",
            ProofingState::Complete => "complete",
        }
    }
}

/// How a user is proofed (guide "Identity Proofing").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Online, by a credit bureau: United States only.
    Instant,
    /// Live, by webcam with an agent, by appointment.
    Webcam,
    /// An activation code by post.
    Postal,
    /// With a trusted agent of an organization.
    InPerson,
}

impl Method {
    pub const ALL: [Method; 4] = [
        Method::Instant,
        Method::Webcam,
        Method::Postal,
        Method::InPerson,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Instant => "instant",
            Method::Webcam => "webcam",
            Method::Postal => "postal",
            Method::InPerson => "in_person",
        }
    }

    pub fn parse(text: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

/// The outcome of instant proofing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    /// Not passed, but the person was located: a code goes out by post.
    LocatedNotPassed,
    /// Not located: on to webcam proofing.
    NotLocated,
    /// The user declined the bureau's terms: on to webcam proofing.
    Declined,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Passed,
        Outcome::LocatedNotPassed,
        Outcome::NotLocated,
        Outcome::Declined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::LocatedNotPassed => "located_not_passed",
            Outcome::NotLocated => "not_located",
            Outcome::Declined => "declined",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// What asks proofing to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Start(Method),
    Outcome(Outcome),
    /// Make or move the webcam appointment.
    Schedule,
    /// An agent verified the person and issues an activation code.
    Verify,
    /// The right activation code was entered.
    Redeem,
    /// A new activation code for a lost one (the old one stops working).
    Reissue,
    /// A level-3 token was revoked as lost and the user has no other credential: proofing must
    /// be done again.
    Reset,
}

impl Event {
    /// Every event, for tables and tests.
    pub fn all() -> Vec<Event> {
        let mut all: Vec<Event> = Method::ALL.into_iter().map(Event::Start).collect();
        all.extend(Outcome::ALL.into_iter().map(Event::Outcome));
        all.extend([
            Event::Schedule,
            Event::Verify,
            Event::Redeem,
            Event::Reissue,
            Event::Reset,
        ]);
        all
    }

    pub fn name(self) -> String {
        match self {
            Event::Start(method) => format!("start ({})", method.as_str()),
            Event::Outcome(outcome) => format!("outcome ({})", outcome.as_str()),
            Event::Schedule => "schedule".into(),
            Event::Verify => "verify".into(),
            Event::Redeem => "redeem".into(),
            Event::Reissue => "reissue".into(),
            Event::Reset => "reset".into(),
        }
    }
}

/// A move the machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("proofing in state `{}` cannot {}", .from.as_str(), .event.name())]
pub struct Refused {
    pub from: ProofingState,
    pub event: Event,
}

/// The state `event` leads to from `from`, or why not.
pub fn transition(from: ProofingState, event: Event) -> Result<ProofingState, Refused> {
    use ProofingState::*;
    let to = match (from, event) {
        (NotStarted, Event::Start(Method::Instant)) => AwaitingOutcome,
        (NotStarted, Event::Start(Method::Webcam)) => AppointmentNeeded,
        (NotStarted, Event::Start(Method::Postal)) => CodeIssued,
        (NotStarted, Event::Start(Method::InPerson)) => AwaitingVerification,
        (AwaitingOutcome, Event::Outcome(Outcome::Passed)) => Complete,
        (AwaitingOutcome, Event::Outcome(Outcome::LocatedNotPassed)) => CodeIssued,
        (AwaitingOutcome, Event::Outcome(Outcome::NotLocated | Outcome::Declined)) => {
            AppointmentNeeded
        }
        (AppointmentNeeded | AppointmentScheduled | CodeIssued, Event::Schedule) => {
            AppointmentScheduled
        }
        (AppointmentScheduled | AwaitingVerification, Event::Verify) => CodeIssued,
        (CodeIssued, Event::Redeem | Event::Reissue) => CodeIssued,
        (Complete, Event::Reset) => NotStarted,
        _ => return Err(Refused { from, event }),
    };
    // Redeeming completes proofing (the code was checked by the caller).
    Ok(if event == Event::Redeem { Complete } else { to })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProofingState::*;

    /// The table once more, independently: every state x every event.
    fn expected(from: ProofingState, event: Event) -> Option<ProofingState> {
        Some(match (from, event) {
            (NotStarted, Event::Start(m)) => match m {
                Method::Instant => AwaitingOutcome,
                Method::Webcam => AppointmentNeeded,
                Method::Postal => CodeIssued,
                Method::InPerson => AwaitingVerification,
            },
            (AwaitingOutcome, Event::Outcome(o)) => match o {
                Outcome::Passed => Complete,
                Outcome::LocatedNotPassed => CodeIssued,
                Outcome::NotLocated | Outcome::Declined => AppointmentNeeded,
            },
            (AppointmentNeeded, Event::Schedule)
            | (AppointmentScheduled, Event::Schedule)
            | (CodeIssued, Event::Schedule) => AppointmentScheduled,
            (AppointmentScheduled, Event::Verify) | (AwaitingVerification, Event::Verify) => {
                CodeIssued
            }
            (CodeIssued, Event::Redeem) => Complete,
            (CodeIssued, Event::Reissue) => CodeIssued,
            (Complete, Event::Reset) => NotStarted,
            _ => return None,
        })
    }

    #[test]
    fn every_state_and_event_gives_the_new_state_or_the_refusal() {
        let mut moves = 0;
        for from in ProofingState::ALL {
            for event in Event::all() {
                match (transition(from, event), expected(from, event)) {
                    (Ok(to), Some(want)) => {
                        assert_eq!(to, want, "{} {}", from.as_str(), event.name());
                        moves += 1;
                    }
                    (Err(refused), None) => assert_eq!(refused, Refused { from, event }),
                    (got, want) => {
                        panic!("{} {}: {got:?}, want {want:?}", from.as_str(), event.name())
                    }
                }
            }
        }
        assert_eq!(moves, 16);
    }
}
