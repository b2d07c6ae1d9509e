//! The lifecycle service: the only code that writes token state. Each operation reads the
//! token, applies one state-machine event or counter move, and writes it back with a
//! compare-and-swap, retrying when a concurrent request changed the token first. One CAS per
//! OTP success is also what stops two requests carrying the same code from both succeeding.
//!
//! Operations make their change atomic; the caller makes it durable with
//! [`crate::store::Store::sync`] (shared by a whole batch on the RADIUS path) before it answers.

use std::sync::Arc;

use crate::audit::{Entry, Who};
use crate::auth::password::Argon2Params;
use crate::config::{LifecycleSettings, OtpSettings};
use crate::otp::import::ImportedToken;
use crate::otp::{hotp, totp, TokenKind};
use crate::store::seal::{SealError, SeedCipher};
use crate::store::{ChangeSet, Store, StoreError, Token};

use super::state::{transition, Actor, Event, TokenState, Transition, TransitionError};

/// Largest HOTP start counter accepted: leaves the counter room to move past every code
/// (at the very top of u64 it could not, and the last code would stay valid).
const MAX_START_COUNTER: u64 = 1 << 62;

/// Compare-and-swap attempts before giving up on a token under heavy contention.
pub(super) const MAX_CAS_ATTEMPTS: usize = 64;

/// Why a lifecycle operation was refused. The texts of the registration errors follow the
/// guide's "Possible Errors conditions during token activation".
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "The Token Serial Number is not correct. Enter the Token Serial Number that matches \
         your token. (no token `{0}`)"
    )]
    NoSuchToken(String),
    #[error("user `{0}` does not exist")]
    NoSuchUser(String),
    #[error(
        "You have entered an incorrect One-Time Password. Enter the 1st and 2nd consecutive \
         One-Time Passwords as displayed on your token correctly."
    )]
    WrongCodes,
    /// The serial exists but cannot be registered (bound to someone else, revoked...).
    #[error(
        "The Token Serial Number is not correct. Enter the Token Serial Number that matches \
         your token. (token `{serial}` {why})"
    )]
    NotAvailable { serial: String, why: String },
    #[error(
        "The token cannot be activated on your account at this time. Contact Customer Support \
         in order to resume activation of your token. (token `{0}`: too many failed \
         registrations; an administrator must reset it)"
    )]
    RegistrationBlocked(String),
    #[error(
        "You entered the One-Time Password One or One-Time Password Two incorrectly too many \
         times. Your OTP Hardware Token needs to be reset: contact Customer Support. (token \
         `{0}`: too many failed resyncs; an administrator must reset it)"
    )]
    ResyncBlocked(String),
    #[error("token `{0}` has no expiry date to renew (it was not bought for a number of years)")]
    NoExpiry(String),
    #[error("The license key is not valid or has already been used.")]
    LicenseKey,
    #[error(
        "Registering a token needs a purchase: a license key, or a sponsorship by your \
         organization (none is open for this account)."
    )]
    PurchaseRequired,
    #[error(
        "A Level 3 token needs identity proofing of the account `{0}`, which is not complete. \
         Complete proofing first."
    )]
    ProofingRequired(String),
    #[error(
        "A sponsored token needs the terms of `{application}` accepted first (the sponsoring \
         organization subscribes to it)."
    )]
    TermsRequired { application: String },
    #[error("user `{user}` already has token `{serial}`")]
    UserHasToken { user: String, serial: String },
    #[error("token `{serial}`: {refused}")]
    Transition {
        serial: String,
        refused: TransitionError,
    },
    #[error("token `{0}` keeps changing under concurrent use; try again")]
    Contention(String),
    #[error("import: {0}")]
    Import(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The result of checking one OTP against a token.
#[derive(Debug, Clone, PartialEq)]
pub enum OtpOutcome {
    /// The code was right and has been consumed.
    Accepted,
    /// Wrong code; `failures` consecutive failures so far. `replayed` when it is a code this
    /// token already used: refused, logged as a replay, and not counted as a failure.
    Rejected { failures: u32, replayed: bool },
    /// Wrong code, and this failure locked the token.
    LockedNow,
    /// The token cannot be used in this state; nothing was written.
    NotUsable(TokenState),
}

impl OtpOutcome {
    /// Whether this outcome wrote state that must be durable before the reply.
    pub fn wrote(&self) -> bool {
        !matches!(
            self,
            OtpOutcome::NotUsable(_) | OtpOutcome::Rejected { replayed: true, .. }
        )
    }
}

/// Which codes of a token count as valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Any unspent code within the HOTP look-ahead or the TOTP window (`[otp]` settings).
    Window,
    /// Only the next expected code: the TOTP code of the current step (with the token's
    /// remembered drift); the HOTP code at the next counter or the one after it (a press whose
    /// code never arrived, or was spent at the throttle's gate).
    ExpectedOnly,
}

pub struct TokenService {
    pub(super) store: Arc<dyn Store>,
    pub(super) cipher: SeedCipher,
    pub(super) otp: OtpSettings,
    pub(super) lifecycle: LifecycleSettings,
    /// For the temporary password a revocation sets.
    pub(super) argon2: Argon2Params,
}

impl TokenService {
    pub fn new(
        store: Arc<dyn Store>,
        cipher: SeedCipher,
        otp: OtpSettings,
        lifecycle: LifecycleSettings,
        argon2: Argon2Params,
    ) -> TokenService {
        TokenService {
            store,
            cipher,
            otp,
            lifecycle,
            argon2,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The state a token is in for a login at `now`: an Active token past its expiry date is
    /// reported Expired (guide "Expired Tokens") even before the sweeper records it.
    pub fn effective_state(token: &Token, now: u64) -> TokenState {
        match (token.state, token.expires_at) {
            (TokenState::Active, Some(expires)) if now >= expires => TokenState::Expired,
            (state, _) => state,
        }
    }

    /// Checks `code` against the token `serial` at Unix time `now` and records the result:
    /// success moves the HOTP counter / TOTP step past the code, resets the failure count and
    /// records the time; failure counts, and `otp.max_failures` in a row lock the token.
    pub fn check_otp(&self, serial: &str, code: &str, now: u64) -> Result<OtpOutcome, TokenError> {
        self.check_otp_from(None, serial, code, now)
    }

    /// As [`Self::check_otp`], starting from a copy of the token the caller has just read (saves
    /// a read on the hot path; a stale copy only costs one compare-and-swap retry).
    pub fn check_otp_from(
        &self,
        mut read: Option<Token>,
        serial: &str,
        code: &str,
        now: u64,
    ) -> Result<OtpOutcome, TokenError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let token = match read.take() {
                Some(token) if token.serial == serial => token,
                _ => self
                    .store
                    .token(serial)?
                    .ok_or_else(|| TokenError::NoSuchToken(serial.to_string()))?,
            };
            let state = Self::effective_state(&token, now);
            if state != TokenState::Active {
                return Ok(OtpOutcome::NotUsable(state));
            }
            let seed = self.cipher.open(&token.serial, &token.sealed_seed)?;
            let (new, outcome) = match self.consume(&token, &seed, code, now, Reach::Window) {
                Some(new) => (new, OtpOutcome::Accepted),
                // The last accepted code again (a double submit, a VPN client reconnecting with
                // cached credentials, however long after): refused, but not counted, so it can
                // never lock the owner's token. Nothing to write.
                None if self.is_last_accepted_code(&token, &seed, code) => {
                    return Ok(OtpOutcome::Rejected {
                        failures: token.failures,
                        replayed: true,
                    });
                }
                None => self.count_failure(&token, now)?,
            };
            let mut changes = ChangeSet::new();
            if outcome == OtpOutcome::LockedNow {
                // The one login change that is a lifecycle move: audited with it.
                changes = locked_entry(&token, now).add_to(changes)?;
            }
            if self.store.apply(changes.token(Some(token), new))? {
                return Ok(outcome);
            }
        }
        Err(TokenError::Contention(serial.to_string()))
    }

    /// The token after one more wrong code at `now`: `otp.max_failures` in a row lock it.
    fn count_failure(&self, token: &Token, now: u64) -> Result<(Token, OtpOutcome), TokenError> {
        let mut new = token.clone();
        new.failures = token.failures.saturating_add(1);
        if new.failures < self.otp.max_failures {
            let failures = new.failures;
            return Ok((
                new,
                OtpOutcome::Rejected {
                    failures,
                    replayed: false,
                },
            ));
        }
        apply(
            token,
            None,
            &mut new,
            Event::FailureLimit,
            Actor::Login,
            "consecutive wrong codes reached otp.max_failures",
            now,
        )?;
        Ok((new, OtpOutcome::LockedNow))
    }

    /// The token as it is after accepting `code` at `now`: the HOTP counter moved past the
    /// matched one (RFC 4226 7.4) or the TOTP step and drift recorded (RFC 6238 5.2), failures
    /// reset, the time recorded. `None` unless `code` is a valid code not yet spent, within the
    /// look-ahead or window (`reach`).
    fn consume(
        &self,
        token: &Token,
        seed: &[u8],
        code: &str,
        now: u64,
        reach: Reach,
    ) -> Option<Token> {
        let (look_ahead, window) = match reach {
            Reach::Window => (self.otp.hotp_look_ahead, self.otp.totp_window),
            Reach::ExpectedOnly => (1, 0),
        };
        let mut new = token.clone();
        match token.kind {
            TokenKind::Hotp => {
                let counter = hotp::verify(
                    seed,
                    token.algorithm,
                    token.digits,
                    token.counter,
                    look_ahead,
                    code,
                )?;
                new.counter = counter.saturating_add(1);
            }
            TokenKind::Totp { period } => {
                // RFC 6238 5.2: around the expected step, none at or before the last used.
                let m = totp::verify(
                    seed,
                    token.algorithm,
                    token.digits,
                    period,
                    now,
                    token.drift,
                    window,
                    token.last_step,
                    code,
                )?;
                new.last_step = Some(m.step);
                new.drift = m.drift;
            }
        }
        new.failures = 0;
        new.last_auth = Some(now);
        Some(new)
    }

    /// Whether `code` would be accepted for `token` at `now` within `reach`, without recording
    /// anything: the token is usable and the code valid and unspent. The login path asks this
    /// before it verifies a password for a throttled user name (README "Security notes"), so a
    /// guesser without the token is refused without a hash and the code stays unspent.
    pub fn code_would_pass(
        &self,
        token: &Token,
        code: &str,
        now: u64,
        reach: Reach,
    ) -> Result<bool, TokenError> {
        if Self::effective_state(token, now) != TokenState::Active {
            return Ok(false);
        }
        let seed = self.cipher.open(&token.serial, &token.sealed_seed)?;
        Ok(self.consume(token, &seed, code, now, reach).is_some())
    }

    /// Whether `code` is the last code the token accepted, however long ago: the TOTP code of
    /// the last accepted step, or the HOTP code just before the next counter. Re-sending it is
    /// a replay (a double submit, a client reconnecting with cached credentials), never a
    /// failure; older codes are not recognised and count as wrong.
    fn is_last_accepted_code(&self, token: &Token, seed: &[u8], code: &str) -> bool {
        let last = match token.kind {
            TokenKind::Hotp => token.counter.checked_sub(1),
            TokenKind::Totp { .. } => token.last_step,
        };
        last.is_some_and(|counter| {
            crate::otp::well_formed(code, token.digits)
                && hotp::matches(seed, token.algorithm, token.digits, counter, code)
        })
    }

    /// Seals and stores imported tokens, all or none. A token that names an owner is imported
    /// Active and bound to that user (migration of tokens in use); the user must exist.
    pub fn import(&self, imported: Vec<ImportedToken>, now: u64) -> Result<usize, TokenError> {
        let mut tokens = Vec::with_capacity(imported.len());
        for item in imported {
            if item.counter > MAX_START_COUNTER {
                return Err(TokenError::Import(format!(
                    "token `{}`: HOTP start counter {} is beyond {MAX_START_COUNTER}",
                    item.serial, item.counter
                )));
            }
            let state = match &item.owner {
                Some(owner) => {
                    if self.store.user(owner)?.is_none() {
                        return Err(TokenError::Import(format!(
                            "token `{}` names owner `{owner}`, who is not a user; add the user first",
                            item.serial
                        )));
                    }
                    TokenState::Active
                }
                None => TokenState::Unassigned,
            };
            let sealed_seed = self.cipher.seal(&item.serial, &item.secret)?;
            tokens.push(Token {
                serial: item.serial,
                kind: item.kind,
                algorithm: item.algorithm,
                digits: item.digits,
                sealed_seed,
                state,
                owner: item.owner,
                counter: item.counter,
                last_step: None,
                drift: 0,
                failures: 0,
                last_auth: None,
                created_at: now,
                state_changed_at: now,
                expires_at: None,
            });
        }
        let count = tokens.len();
        self.store.create_tokens(&tokens)?;
        Ok(count)
    }
}

/// The audit entry of a login locking `token` at `now`.
fn locked_entry(token: &Token, now: u64) -> Entry {
    let who = Who::login();
    Entry {
        at: now,
        actor: who.actor,
        by: who.name,
        action: "token.lock".into(),
        serial: Some(token.serial.clone()),
        username: token.owner.clone(),
        from: Some(TokenState::Active),
        to: Some(TokenState::Locked),
        reason: "consecutive wrong codes reached otp.max_failures".into(),
    }
}

/// Applies `event` to `token` through the state machine: `new` (a copy of `token` being
/// changed) takes the new state, and the time of the change if the state changed. The one
/// way this service changes a token's state; the transition is for the audit.
pub(super) fn apply(
    token: &Token,
    suspended_by: Option<Actor>,
    new: &mut Token,
    event: Event,
    actor: Actor,
    reason: &str,
    now: u64,
) -> Result<Transition, TokenError> {
    // The state a login sees (past its expiry date an Active token is Expired already),
    // except for the event that records exactly that.
    let from = match event {
        Event::Expire => token.state,
        _ => TokenService::effective_state(token, now),
    };
    let moved = transition(from, suspended_by, event, actor, reason, now).map_err(|refused| {
        TokenError::Transition {
            serial: token.serial.clone(),
            refused,
        }
    })?;
    new.state = moved.to;
    if moved.to != moved.from {
        new.state_changed_at = now;
    }
    Ok(moved)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::Who;
    use crate::otp::Algorithm;
    use crate::store::sled_store::SledStore;
    use crate::store::User;
    use zeroize::Zeroizing;

    pub(crate) const SEED: &[u8] = b"12345678901234567890";
    /// 2009-02-13 23:31:30 UTC, an RFC 6238 test time.
    pub(crate) const NOW: u64 = 1_234_567_890;

    pub(crate) fn service(dir: &std::path::Path) -> TokenService {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.join("db")).expect("open"));
        let cipher = SeedCipher::load_or_create(&dir.join("seed.key")).expect("key");
        let otp = OtpSettings {
            max_failures: 3,
            totp_window: 1,
            hotp_look_ahead: 5,
            resync_window: 50,
        };
        let lifecycle = LifecycleSettings {
            registration_attempts: 3,
            resync_attempts: 3,
            renewal_years: 1,
            expiry_notice_days: 30,
            expired_revoke_days: 365,
            suspended_revoke_days: 60,
            revoke_reminder_days: vec![30, 15, 3],
            sweep_interval: std::time::Duration::from_secs(3600),
            subscriptions: [("Acme Aero".to_string(), vec!["vpn".to_string()])].into(),
        };
        let cheap = Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        TokenService::new(store, cipher, otp, lifecycle, cheap)
    }

    pub(crate) fn admin() -> Who {
        Who::admin("test")
    }

    pub(crate) fn user(name: &str) -> User {
        User {
            username: name.into(),
            password_hash: String::new(),
            email: None,
            first_name: None,
            last_name: None,
            assurance_level: 2,
            created_at: 0,
        }
    }

    pub(crate) fn imported(serial: &str, kind: TokenKind, owner: Option<&str>) -> ImportedToken {
        ImportedToken {
            serial: serial.into(),
            secret: Zeroizing::new(SEED.to_vec()),
            algorithm: Algorithm::Sha1,
            digits: 6,
            kind,
            counter: 0,
            owner: owner.map(str::to_string),
        }
    }

    /// A service whose user `bob` has HOTP token `H1` (counter 0), Active.
    pub(crate) fn service_with_bob(dir: &std::path::Path) -> TokenService {
        let svc = service(dir);
        svc.store().create_users(&[user("bob")]).expect("user");
        svc.import(vec![imported("H1", TokenKind::Hotp, Some("bob"))], NOW)
            .expect("import");
        svc
    }

    pub(crate) fn hotp_code(counter: u64) -> String {
        hotp::code(SEED, counter, 6, Algorithm::Sha1)
    }

    #[test]
    fn hotp_accept_moves_counter_and_replay_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service_with_bob(dir.path());
        assert_eq!(
            svc.check_otp("H1", &hotp_code(2), NOW).expect("check"),
            OtpOutcome::Accepted
        );
        let token = svc.store().token("H1").expect("read").expect("exists");
        assert_eq!(token.counter, 3);
        assert_eq!(token.last_auth, Some(NOW));
        assert_eq!(
            svc.check_otp("H1", &hotp_code(2), NOW).expect("check"),
            OtpOutcome::Rejected {
                failures: 0,
                replayed: true
            }
        );
        // Success resets the failure count.
        assert_eq!(
            svc.check_otp("H1", &hotp_code(3), NOW).expect("check"),
            OtpOutcome::Accepted
        );
        assert_eq!(
            svc.store()
                .token("H1")
                .expect("read")
                .expect("exists")
                .failures,
            0
        );
    }

    #[test]
    fn failures_lock_and_resync_unlocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service_with_bob(dir.path());
        assert_eq!(
            svc.check_otp("H1", "000000", NOW).expect("check"),
            OtpOutcome::Rejected {
                failures: 1,
                replayed: false
            }
        );
        assert_eq!(
            svc.check_otp("H1", "000000", NOW).expect("check"),
            OtpOutcome::Rejected {
                failures: 2,
                replayed: false
            }
        );
        assert_eq!(
            svc.check_otp("H1", "000000", NOW).expect("check"),
            OtpOutcome::LockedNow
        );
        assert_eq!(
            svc.check_otp("H1", &hotp_code(0), NOW).expect("check"),
            OtpOutcome::NotUsable(TokenState::Locked)
        );
        assert!(matches!(
            svc.resync("H1", (&hotp_code(10), &hotp_code(12)), &admin(), NOW),
            Err(TokenError::WrongCodes)
        ));
        let token = svc
            .resync("H1", (&hotp_code(10), &hotp_code(11)), &admin(), NOW)
            .expect("resync")
            .token;
        assert_eq!(token.state, TokenState::Active);
        assert_eq!(token.counter, 12);
        assert_eq!(
            svc.check_otp("H1", &hotp_code(12), NOW).expect("check"),
            OtpOutcome::Accepted
        );
    }

    #[test]
    fn totp_register_then_accept_once_per_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service(dir.path());
        svc.store().create_users(&[user("alice")]).expect("user");
        svc.import(
            vec![imported("T1", TokenKind::Totp { period: 30 }, None)],
            NOW,
        )
        .expect("import");
        let step = totp::step_at(NOW, 30);
        let code = |s: u64| totp::code(SEED, s, 6, Algorithm::Sha1);
        // Registration with the codes of the previous two steps.
        let token = svc
            .register(
                "T1",
                "alice",
                (&code(step - 2), &code(step - 1)),
                None,
                &admin(),
                NOW,
            )
            .expect("register")
            .token;
        assert_eq!(token.state, TokenState::Active);
        assert_eq!(token.owner.as_deref(), Some("alice"));
        assert_eq!(
            svc.store()
                .token_of_user("alice")
                .expect("read")
                .map(|t| t.serial),
            Some("T1".to_string())
        );
        // A used step never again; the current one once.
        assert!(matches!(
            svc.check_otp("T1", &code(step - 1), NOW).expect("check"),
            OtpOutcome::Rejected { .. }
        ));
        assert_eq!(
            svc.check_otp("T1", &code(step), NOW).expect("check"),
            OtpOutcome::Accepted
        );
        assert!(matches!(
            svc.check_otp("T1", &code(step), NOW).expect("check"),
            OtpOutcome::Rejected { replayed: true, .. }
        ));
        // Registering again: alice has a token already.
        assert!(matches!(
            svc.register(
                "T1",
                "alice",
                (&code(step + 1), &code(step + 2)),
                None,
                &admin(),
                NOW
            ),
            Err(TokenError::UserHasToken { .. })
        ));
    }

    #[test]
    fn concurrent_requests_with_one_code_succeed_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = Arc::new(service_with_bob(dir.path()));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let svc = Arc::clone(&svc);
                std::thread::spawn(move || svc.check_otp("H1", &hotp_code(0), NOW).expect("check"))
            })
            .collect();
        let accepted = threads
            .into_iter()
            .map(|t| t.join().expect("join"))
            .filter(|o| *o == OtpOutcome::Accepted)
            .count();
        assert_eq!(accepted, 1);
    }

    #[test]
    fn expired_token_is_not_usable_and_import_is_all_or_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service_with_bob(dir.path());
        let token = svc.store().token("H1").expect("read").expect("exists");
        let mut expired = token.clone();
        expired.expires_at = Some(NOW - 1);
        assert!(svc.store().replace_token(&token, &expired).expect("cas"));
        assert!(!svc
            .store()
            .replace_token(&token, &expired)
            .expect("stale cas"));
        assert_eq!(
            svc.check_otp("H1", &hotp_code(0), NOW).expect("check"),
            OtpOutcome::NotUsable(TokenState::Expired)
        );
        // H1 exists, so nothing of this import is written, H2 included.
        let err = svc.import(
            vec![
                imported("H2", TokenKind::Hotp, None),
                imported("H1", TokenKind::Hotp, None),
            ],
            NOW,
        );
        assert!(err.is_err());
        assert!(svc.store().token("H2").expect("read").is_none());
        // An owner who is not a user is refused.
        assert!(svc
            .import(vec![imported("H3", TokenKind::Hotp, Some("nobody"))], NOW)
            .is_err());
    }

    /// Issue 11 point 3: the last accepted code is a replay whenever it comes back (long after
    /// its window too), never a failure and never a lock; older codes count as wrong.
    #[test]
    fn the_last_accepted_code_is_a_replay_forever_and_older_codes_are_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service(dir.path());
        svc.store()
            .create_users(&[user("alice"), user("bob")])
            .expect("users");
        svc.import(
            vec![
                imported("T1", TokenKind::Totp { period: 30 }, Some("alice")),
                imported("H1", TokenKind::Hotp, Some("bob")),
            ],
            NOW,
        )
        .expect("import");
        let replayed = |outcome: OtpOutcome| {
            assert_eq!(
                outcome,
                OtpOutcome::Rejected {
                    failures: 0,
                    replayed: true
                }
            )
        };
        // TOTP: accepted at step s, re-sent an hour later (far outside the window), more often
        // than max_failures (3).
        let step = totp::step_at(NOW, 30);
        let code = |s: u64| totp::code(SEED, s, 6, Algorithm::Sha1);
        assert_eq!(
            svc.check_otp("T1", &code(step - 1), NOW).expect("check"),
            OtpOutcome::Accepted
        );
        assert_eq!(
            svc.check_otp("T1", &code(step), NOW).expect("check"),
            OtpOutcome::Accepted
        );
        let later = NOW + 3600;
        for _ in 0..5 {
            replayed(svc.check_otp("T1", &code(step), later).expect("check"));
        }
        // The code accepted before the last one is an ordinary wrong code.
        assert_eq!(
            svc.check_otp("T1", &code(step - 1), later).expect("check"),
            OtpOutcome::Rejected {
                failures: 1,
                replayed: false
            }
        );
        // HOTP: counters 0..=9 accepted; the last (9) is a replay far beyond the look-ahead
        // behind; 8 is wrong.
        for counter in 0..10 {
            assert_eq!(
                svc.check_otp("H1", &hotp_code(counter), NOW)
                    .expect("check"),
                OtpOutcome::Accepted
            );
        }
        for _ in 0..5 {
            replayed(svc.check_otp("H1", &hotp_code(9), NOW).expect("check"));
        }
        assert_eq!(
            svc.check_otp("H1", &hotp_code(8), NOW).expect("check"),
            OtpOutcome::Rejected {
                failures: 1,
                replayed: false
            }
        );
        let token = svc.store().token("H1").expect("read").expect("exists");
        assert_eq!((token.state, token.counter), (TokenState::Active, 10));
    }

    #[test]
    fn a_code_that_would_pass_is_not_spent_by_asking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service_with_bob(dir.path());
        let token = svc.store().token("H1").expect("read").expect("exists");
        let ask = |token: &Token, counter: u64, reach| {
            svc.code_would_pass(token, &hotp_code(counter), NOW, reach)
                .expect("ask")
        };
        assert!(ask(&token, 2, Reach::Window));
        assert!(!svc
            .code_would_pass(&token, "000000", NOW, Reach::Window)
            .expect("ask"));
        assert_eq!(svc.store().token("H1").expect("read"), Some(token));
        assert_eq!(
            svc.check_otp("H1", &hotp_code(2), NOW).expect("check"),
            OtpOutcome::Accepted
        );
        let token = svc.store().token("H1").expect("read").expect("exists");
        assert!(!ask(&token, 2, Reach::Window));
        // Only the next counter's code when only the expected one counts.
        assert!(ask(&token, 3, Reach::ExpectedOnly));
        assert!(ask(&token, 4, Reach::ExpectedOnly));
        assert!(!ask(&token, 5, Reach::ExpectedOnly));
        assert!(ask(&token, 5, Reach::Window));
    }
}
