//! Identity proofing (guide "Identity Proofing", "Proofing Upgrade"): where each user stands,
//! the activation codes that finish proofing, and the upgrade of a level-2 token to level 3.
//! otpgate talks to no credit bureau and runs no video call: it records outcomes and
//! verifications, issues and checks the codes, and decides the level.
//!
//! Levels are the guide's "OTP-level 2 / 3" (level 3: the holder's identity was proofed), not
//! NIST's IAL numbers.
//!
//! A user's record is kept under `proofing/` + the name, with its whole history; every change
//! is one change set with its audit entry and any notification (a mailed code, an appointment
//! confirmation).

pub mod state;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::audit::{Entry, Who};
use crate::notify::{self, Notification};
use crate::store::{ChangeSet, Expect, Store, StoreError};
pub use state::{Event, Method, Outcome, ProofingState, Refused};

const PREFIX: &[u8] = b"proofing/";
/// Compare-and-swap attempts before giving up.
const ATTEMPTS: usize = 16;

/// `[proofing]`: activation codes (how long they stay valid, how many wrong entries they
/// take) and the provider's callback secret.
#[derive(Debug, Clone)]
pub struct ProofingSettings {
    pub valid_secs: u64,
    pub tries: u32,
    /// HMAC-SHA256 key of the proofing provider's signed callbacks; none: callbacks refused.
    pub callback_secret: Option<String>,
}

/// A user's proofing, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proofing {
    pub state: ProofingState,
    pub method: Option<Method>,
    pub country: Option<String>,
    /// In person: the organization whose trusted agent proofs the user.
    pub organization: Option<String>,
    pub appointment: Option<Appointment>,
    pub code: Option<ActivationCode>,
    /// Unix seconds proofing completed.
    pub completed_at: Option<u64>,
    pub history: Vec<Step>,
}

impl Default for Proofing {
    fn default() -> Self {
        Proofing {
            state: ProofingState::NotStarted,
            method: None,
            country: None,
            organization: None,
            appointment: None,
            code: None,
            completed_at: None,
            history: Vec::new(),
        }
    }
}

impl Proofing {
    /// The assurance level proofing gives: 3 once complete, else 2.
    pub fn level(&self) -> u8 {
        if self.state == ProofingState::Complete {
            3
        } else {
            2
        }
    }
}

/// A webcam appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    /// Unix seconds.
    pub start: u64,
    /// The user's time zone, as given (e.g. `America/New_York`).
    pub timezone: String,
    pub confirmation: String,
}

/// An activation code, stored hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationCode {
    pub hash: Vec<u8>,
    pub expires_at: u64,
    pub tries_left: u32,
}

/// One move of a user's proofing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub at: u64,
    pub event: String,
    pub from: ProofingState,
    pub to: ProofingState,
    pub by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProofingError {
    #[error("user `{0}` does not exist")]
    NoSuchUser(String),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("instant proofing is for the United States only (country `{0}`)")]
    NotUnitedStates(String),
    #[error("{0}")]
    Invalid(String),
    #[error("The activation code is not correct. ({0} tries left)")]
    WrongCode(u32),
    #[error("The activation code has expired or was used up: ask for a new one.")]
    CodeUnusable,
    #[error("user `{0}` keeps changing; try again")]
    Contention(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn key(username: &str) -> Vec<u8> {
    let mut key = PREFIX.to_vec();
    key.extend_from_slice(username.as_bytes());
    key
}

/// `username`'s proofing (the default, not started, if none was recorded) and its stored form.
pub fn read(
    store: &dyn Store,
    username: &str,
) -> Result<(Proofing, Option<Vec<u8>>), ProofingError> {
    let stored = store.record(&key(username))?;
    let proofing = match &stored {
        Some(bytes) => crate::store::decode(|| format!("records/proofing/{username}"), bytes)?,
        None => Proofing::default(),
    };
    Ok((proofing, stored))
}

/// Whether `username` completed proofing.
pub fn is_complete(store: &dyn Store, username: &str) -> Result<bool, StoreError> {
    match read(store, username) {
        Ok((proofing, _)) => Ok(proofing.state == ProofingState::Complete),
        Err(ProofingError::Store(e)) => Err(e),
        Err(_) => Ok(false),
    }
}

/// A new activation code: 12 characters from an alphabet without look-alikes, in groups of
/// four.
fn new_code() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    let chars: Vec<char> = (0..12)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

fn code_hash(code: &str) -> Vec<u8> {
    let normalised: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    Sha256::digest(normalised.as_bytes()).to_vec()
}

/// Adjusts a proofing record after a move (appointment, code...).
type Adjust = Box<dyn Fn(&mut Proofing) -> Result<(), ProofingError>>;
/// Makes a notification for the user from their e-mail address.
type Notice = Box<dyn Fn(&str) -> Notification>;

/// What one proofing action asks of [`apply`].
struct Change {
    event: Event,
    adjust: Adjust,
    notify: Option<Notice>,
    /// Further writes made with it (a callback's replay guard).
    extra: ChangeSet,
}

/// Applies `change` to `username`'s proofing at `now`: the move through the state machine,
/// the adjustment, the history step, the audit entry and any notification, in one change set.
fn apply(
    store: &dyn Store,
    username: &str,
    change: &Change,
    who: &Who,
    now: u64,
) -> Result<Proofing, ProofingError> {
    for _ in 0..ATTEMPTS {
        let Some(user) = store.user(username)? else {
            return Err(ProofingError::NoSuchUser(username.to_string()));
        };
        let (mut proofing, stored) = read(store, username)?;
        let from = proofing.state;
        let to = state::transition(from, change.event)?;
        proofing.state = to;
        (change.adjust)(&mut proofing)?;
        if to == ProofingState::Complete && from != ProofingState::Complete {
            proofing.completed_at = Some(now);
            proofing.code = None;
        }
        proofing.history.push(Step {
            at: now,
            event: change.event.name(),
            from,
            to,
            by: who.name.clone(),
        });
        let value = crate::store::encode(&proofing)?;
        let mut changes = ChangeSet::new()
            .record(key(username), Expect::found(stored), Some(value))
            .merge(change.extra.clone());
        if let (Some(make), Some(email)) = (&change.notify, user.email.as_deref()) {
            changes = notify::enqueue(changes, make(email), now)?;
        }
        let entry = Entry {
            at: now,
            actor: who.actor,
            by: who.name.clone(),
            action: format!(
                "proofing.{}",
                change.event.name().split(' ').next().unwrap_or("")
            ),
            serial: None,
            username: Some(username.to_string()),
            from: None,
            to: None,
            reason: format!("{} -> {}", from.as_str(), to.as_str()),
        };
        if store.apply(entry.add_to(changes)?)? {
            return Ok(proofing);
        }
    }
    Err(ProofingError::Contention(username.to_string()))
}

fn mailed_code(username: &str, code: &str, why: &str) -> impl Fn(&str) -> Notification {
    let (username, code, why) = (username.to_string(), code.to_string(), why.to_string());
    move |email: &str| Notification {
        kind: "proofing.activation_code".into(),
        username: username.clone(),
        to: email.to_string(),
        subject: "Your identity proofing activation code".into(),
        body: format!(
            "Hello {username},\n\n{why} Your activation code is:\n\n    {code}\n\n\
             Enter it to complete your identity proofing.\n"
        ),
    }
}

/// The code-issuing adjustment: a fresh code replaces any earlier one.
fn issue(
    code: &str,
    rules: &ProofingSettings,
    now: u64,
) -> impl Fn(&mut Proofing) -> Result<(), ProofingError> {
    let (hash, expires_at, tries) = (
        code_hash(code),
        now.saturating_add(rules.valid_secs),
        rules.tries,
    );
    move |p: &mut Proofing| {
        p.code = Some(ActivationCode {
            hash: hash.clone(),
            expires_at,
            tries_left: tries,
        });
        Ok(())
    }
}

/// Where proofing happens: the country (instant proofing is for the United States only) and,
/// in person, the organization whose trusted agent proofs the user.
#[derive(Debug, Default, Clone, Copy)]
pub struct Place<'a> {
    pub country: Option<&'a str>,
    pub organization: Option<&'a str>,
}

/// Starts proofing by `method`. Instant proofing is for the United States only; in-person
/// proofing names the organization of the trusted agent; postal proofing mails an activation
/// code at once.
pub fn start(
    store: &dyn Store,
    username: &str,
    method: Method,
    place: Place<'_>,
    rules: &ProofingSettings,
    who: &Who,
    now: u64,
) -> Result<Proofing, ProofingError> {
    let country = place
        .country
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| !c.is_empty());
    let organization = place
        .organization
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty() && o.len() <= 128);
    if method == Method::InPerson && organization.is_none() {
        return Err(ProofingError::Invalid(
            "organization: in-person proofing needs the organization of the trusted agent \
             (1 to 128 characters)"
                .into(),
        ));
    }
    if method == Method::Instant && !matches!(country.as_deref(), Some("US" | "USA")) {
        return Err(ProofingError::NotUnitedStates(
            country.unwrap_or_else(|| "not given".into()),
        ));
    }
    let code = new_code();
    let issue_code = issue(&code, rules, now);
    let chosen = country.clone();
    let change = Change {
        event: Event::Start(method),
        adjust: Box::new(move |p| {
            p.method = Some(method);
            p.country = chosen.clone();
            p.organization = organization.clone();
            if method == Method::Postal {
                issue_code(p)?;
            }
            Ok(())
        }),
        notify: (method == Method::Postal).then(|| {
            Box::new(mailed_code(
                username,
                &code,
                "Your activation code goes out by post.",
            )) as _
        }),
        extra: ChangeSet::new(),
    };
    apply(store, username, &change, who, now)
}

/// Records the outcome of instant proofing: passed completes it; located but not passed
/// mails an activation code; not located or declined leads to webcam proofing. `extra` is
/// written with it (a provider callback's replay guard).
pub fn record_outcome(
    store: &dyn Store,
    username: &str,
    outcome: Outcome,
    rules: &ProofingSettings,
    who: &Who,
    now: u64,
    extra: ChangeSet,
) -> Result<Proofing, ProofingError> {
    let code = new_code();
    let issue_code = issue(&code, rules, now);
    let change = Change {
        event: Event::Outcome(outcome),
        adjust: Box::new(move |p| {
            match outcome {
                Outcome::LocatedNotPassed => issue_code(p)?,
                Outcome::NotLocated | Outcome::Declined => p.method = Some(Method::Webcam),
                Outcome::Passed => {}
            }
            Ok(())
        }),
        notify: (outcome == Outcome::LocatedNotPassed).then(|| {
            Box::new(mailed_code(
                username,
                &code,
                "The credit bureau located you; your activation code goes out by post (about four business days).",
            )) as _
        }),
        extra,
    };
    apply(store, username, &change, who, now)
}

/// Makes (or moves) the webcam appointment; it must lie in the future.
pub fn schedule(
    store: &dyn Store,
    username: &str,
    start_at: u64,
    timezone: &str,
    who: &Who,
    now: u64,
) -> Result<Proofing, ProofingError> {
    if start_at <= now {
        return Err(ProofingError::Invalid(
            "start: an appointment must lie in the future".into(),
        ));
    }
    let timezone = timezone.trim().to_string();
    if timezone.is_empty()
        || timezone.len() > 64
        || !timezone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+' | ':'))
    {
        return Err(ProofingError::Invalid(
            "timezone: a time zone name such as America/New_York or UTC".into(),
        ));
    }
    let confirmation = new_code().replace('-', "")[..8].to_string();
    let (tz, number) = (timezone.clone(), confirmation.clone());
    let user = username.to_string();
    let change = Change {
        event: Event::Schedule,
        adjust: Box::new(move |p| {
            p.method = Some(Method::Webcam);
            p.appointment = Some(Appointment {
                start: start_at,
                timezone: tz.clone(),
                confirmation: number.clone(),
            });
            Ok(())
        }),
        notify: Some(Box::new(move |email: &str| Notification {
            kind: "proofing.appointment".into(),
            username: user.clone(),
            to: email.to_string(),
            subject: "Your identity proofing appointment".into(),
            body: format!(
                "Hello {user},\n\nyour webcam proofing appointment is confirmed for {} \
                 ({timezone}); confirmation number {confirmation}. The proofing agent will \
                 contact you then.\n",
                crate::api::views::rfc3339(start_at)
            ),
        })),
        extra: ChangeSet::new(),
    };
    apply(store, username, &change, who, now)
}

/// An agent verified the person: a new activation code, returned once (the agent gives it to
/// the user).
pub fn verify(
    store: &dyn Store,
    username: &str,
    rules: &ProofingSettings,
    who: &Who,
    now: u64,
) -> Result<(Proofing, String), ProofingError> {
    let code = new_code();
    let change = Change {
        event: Event::Verify,
        adjust: Box::new(issue(&code, rules, now)),
        notify: None,
        extra: ChangeSet::new(),
    };
    apply(store, username, &change, who, now).map(|p| (p, code))
}

/// A new activation code for a lost one, mailed; the old one stops working.
pub fn reissue(
    store: &dyn Store,
    username: &str,
    rules: &ProofingSettings,
    who: &Who,
    now: u64,
) -> Result<Proofing, ProofingError> {
    let code = new_code();
    let change = Change {
        event: Event::Reissue,
        adjust: Box::new(issue(&code, rules, now)),
        notify: Some(Box::new(mailed_code(
            username,
            &code,
            "You asked for a new activation code; the earlier one no longer works.",
        ))),
        extra: ChangeSet::new(),
    };
    apply(store, username, &change, who, now)
}

/// Enters an activation code: the right one, unexpired, completes proofing; a wrong one uses
/// up a try.
pub fn redeem(
    store: &dyn Store,
    username: &str,
    code: &str,
    who: &Who,
    now: u64,
) -> Result<Proofing, ProofingError> {
    let entered = code_hash(code);
    for _ in 0..ATTEMPTS {
        let (proofing, stored) = read(store, username)?;
        let Some(issued) = proofing
            .code
            .clone()
            .filter(|_| proofing.state == ProofingState::CodeIssued)
        else {
            return Err(state::Refused {
                from: proofing.state,
                event: Event::Redeem,
            }
            .into());
        };
        if issued.expires_at <= now || issued.tries_left == 0 {
            return Err(ProofingError::CodeUnusable);
        }
        if bool::from(issued.hash.ct_eq(&entered)) {
            let change = Change {
                event: Event::Redeem,
                adjust: Box::new(|_| Ok(())),
                notify: None,
                extra: ChangeSet::new(),
            };
            return apply(store, username, &change, who, now);
        }
        let mut counted = proofing.clone();
        let left = issued.tries_left - 1;
        counted.code = Some(ActivationCode {
            tries_left: left,
            ..issued
        });
        let value = crate::store::encode(&counted)?;
        let changes = ChangeSet::new().record(key(username), Expect::found(stored), Some(value));
        if store.apply(changes)? {
            return Err(if left == 0 {
                ProofingError::CodeUnusable
            } else {
                ProofingError::WrongCode(left)
            });
        }
    }
    Err(ProofingError::Contention(username.to_string()))
}

/// The writes that send `username`'s completed proofing back to the start (their level-3 token
/// was revoked as lost and they have no other credential: proofing must be done again), to go
/// in the revocation's change set; none if proofing was not complete.
pub fn reset_writes(
    store: &dyn Store,
    username: &str,
    who: &Who,
    now: u64,
) -> Result<ChangeSet, ProofingError> {
    let (mut proofing, stored) = read(store, username)?;
    let Ok(to) = state::transition(proofing.state, Event::Reset) else {
        return Ok(ChangeSet::new());
    };
    proofing.history.push(Step {
        at: now,
        event: Event::Reset.name(),
        from: proofing.state,
        to,
        by: who.name.clone(),
    });
    proofing.state = to;
    proofing.completed_at = None;
    proofing.appointment = None;
    proofing.code = None;
    let value = crate::store::encode(&proofing)?;
    Ok(ChangeSet::new().record(key(username), Expect::found(stored), Some(value)))
}

/// Users whose proofing is in `state` (all with a record if `None`), in name order, after
/// `after`, at most `limit`.
pub fn list(
    store: &dyn Store,
    state: Option<ProofingState>,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, Proofing)>, StoreError> {
    let mut start = PREFIX.to_vec();
    if let Some(after) = after {
        start.extend_from_slice(after.as_bytes());
        start.push(0);
    }
    let mut end = PREFIX.to_vec();
    end.push(0xFF);
    let mut found = Vec::new();
    crate::store::scan(store, &start, &end, |key, value| {
        let name =
            String::from_utf8_lossy(key.get(PREFIX.len()..).unwrap_or_default()).into_owned();
        let proofing: Proofing =
            crate::store::decode(|| format!("records/proofing/{name}"), value)?;
        if state.is_none_or(|s| s == proofing.state) {
            found.push((name, proofing));
        }
        Ok(found.len() < limit)
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;
    use crate::store::User;

    const NOW: u64 = 1_800_000_000;
    const RULES: ProofingSettings = ProofingSettings {
        valid_secs: 3600,
        tries: 3,
        callback_secret: None,
    };

    fn store(dir: &std::path::Path) -> SledStore {
        let store = SledStore::open(&dir.join("db")).expect("open");
        store
            .create_users(&[User {
                username: "una".into(),
                password_hash: String::new(),
                email: Some("una@example.org".into()),
                first_name: None,
                last_name: None,
                assurance_level: 2,
                created_at: 0,
            }])
            .expect("user");
        store
    }

    fn outbox_kinds(store: &SledStore) -> Vec<String> {
        store
            .records(b"outbox/", b"outbox0", 100)
            .expect("outbox")
            .iter()
            .map(|(_, v)| {
                postcard::from_bytes::<notify::Pending>(v)
                    .expect("entry")
                    .notification
                    .kind
            })
            .collect()
    }

    /// The code a mailed notification carries (the line indented by four spaces).
    fn mailed_code(store: &SledStore) -> String {
        let (_, last) = store
            .records(b"outbox/", b"outbox0", 100)
            .expect("outbox")
            .pop()
            .expect("a notification");
        let entry: notify::Pending = postcard::from_bytes(&last).expect("entry");
        entry
            .notification
            .body
            .lines()
            .find(|l| l.starts_with("    "))
            .map(|l| l.trim().to_string())
            .expect("a code in the body")
    }

    #[test]
    fn located_but_not_passed_mails_a_code_that_completes_proofing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let who = Who::admin("t");
        start(
            &store,
            "una",
            Method::Instant,
            Place {
                country: Some("us"),
                ..Place::default()
            },
            &RULES,
            &who,
            NOW,
        )
        .expect("start");
        let p = record_outcome(
            &store,
            "una",
            Outcome::LocatedNotPassed,
            &RULES,
            &who,
            NOW,
            ChangeSet::new(),
        )
        .expect("outcome");
        assert_eq!(p.state, ProofingState::CodeIssued);
        assert_eq!(outbox_kinds(&store), ["proofing.activation_code"]);
        let code = mailed_code(&store);
        let done = redeem(&store, "una", &code, &who, NOW + 60).expect("redeem");
        assert_eq!(
            (done.state, done.level(), done.code),
            (ProofingState::Complete, 3, None)
        );
    }

    #[test]
    fn a_declined_bureau_leads_to_webcam_and_appointments_are_confirmed_by_mail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let who = Who::admin("t");
        start(
            &store,
            "una",
            Method::Instant,
            Place {
                country: Some("US"),
                ..Place::default()
            },
            &RULES,
            &who,
            NOW,
        )
        .expect("start");
        let p = record_outcome(
            &store,
            "una",
            Outcome::Declined,
            &RULES,
            &who,
            NOW,
            ChangeSet::new(),
        )
        .expect("outcome");
        assert_eq!(
            (p.state, p.method),
            (ProofingState::AppointmentNeeded, Some(Method::Webcam))
        );
        schedule(&store, "una", NOW + 86_400, "Europe/Paris", &who, NOW).expect("schedule");
        assert_eq!(outbox_kinds(&store), ["proofing.appointment"]);
        assert!(matches!(
            schedule(&store, "una", NOW - 1, "UTC", &who, NOW),
            Err(ProofingError::Invalid(_))
        ));
        assert!(matches!(
            schedule(&store, "una", NOW + 60, "Mars/Olympus Mons", &who, NOW),
            Err(ProofingError::Invalid(_))
        ));
    }

    #[test]
    fn a_code_expires_and_takes_a_limited_number_of_wrong_tries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path());
        let who = Who::admin("t");
        assert!(matches!(
            start(
                &store,
                "una",
                Method::InPerson,
                Place::default(),
                &RULES,
                &who,
                NOW
            ),
            Err(ProofingError::Invalid(_))
        ));
        let place = Place {
            organization: Some("Acme Aero"),
            ..Place::default()
        };
        let started = start(&store, "una", Method::InPerson, place, &RULES, &who, NOW);
        assert_eq!(
            started.expect("start").organization.as_deref(),
            Some("Acme Aero")
        );
        let (_, code) = verify(&store, "una", &RULES, &who, NOW).expect("verify");
        // Expired: refused however right.
        assert!(matches!(
            redeem(&store, "una", &code, &who, NOW + RULES.valid_secs),
            Err(ProofingError::CodeUnusable)
        ));
        reissue(&store, "una", &RULES, &who, NOW + 7200).expect("reissue");
        let fresh = mailed_code(&store);
        assert!(matches!(
            redeem(&store, "una", &code, &who, NOW + 7200),
            Err(ProofingError::WrongCode(2))
        ));
        assert!(matches!(
            redeem(&store, "una", "AAAA-BBBB-CCCC", &who, NOW + 7200),
            Err(ProofingError::WrongCode(1))
        ));
        assert!(matches!(
            redeem(&store, "una", "AAAA-BBBB-CCCC", &who, NOW + 7200),
            Err(ProofingError::CodeUnusable)
        ));
        // Used up: even the right code is refused; a new one is needed.
        assert!(matches!(
            redeem(&store, "una", &fresh, &who, NOW + 7200),
            Err(ProofingError::CodeUnusable)
        ));
        let (stored, _) = read(&store, "una").expect("read");
        assert!(!stored.code.expect("code").hash.is_empty());
        assert!(
            !stored.history.iter().any(|s| s.event.contains(&fresh)),
            "no code in the history"
        );
    }
}
