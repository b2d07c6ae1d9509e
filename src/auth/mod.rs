//! The authentication pipeline (DESIGN.md, "Data flow"): account, throttle (counted before any
//! hash; a throttled name must show a valid code first, see [`throttle`]), first factor, token
//! gate, OTP, durable commit, decision. It implements [`RequestHandler`], so the RADIUS
//! layer hands it checked requests and turns its [`Reply`] into a packet.
//!
//! Reply-Message texts: an unknown user, a wrong password and a wrong OTP all get the same
//! generic text, so an attacker cannot tell which part failed. Only once the password was right
//! does the user see a state-specific text adapted from the guide's "Possible Login Errors".

pub mod challenge;
pub mod messages;
pub mod password;
pub mod rehash;
pub mod throttle;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::config::{AssuranceLevel, FirstFactor, OtpMode, Settings};
use crate::live::Live;
use crate::radius::packet::{ReplyCode, Text, STATE_LEN};
use crate::radius::server::Decided;
use crate::radius::{Reply, Request, RequestHandler};
use crate::store::{Token, User};
use crate::token::TokenState;
use crate::token::{OtpOutcome, Reach, TokenService};
use crate::upstream::{Upstream, Upstreams, Verdict};

use challenge::{Challenges, StateProblem};
use password::PasswordHash;
use rehash::Rehasher;
use throttle::{Admission, Origin, Throttle};

/// Why a request was decided as it was; the `reason` field of the decision log event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Throttled,
    NoUserName,
    NoPassword,
    UnsupportedChap,
    UnknownUser,
    UnusableHash,
    PasswordTooShort,
    WrongPassword,
    NoToken,
    TokenNotUsable(TokenState),
    LevelTooLow,
    /// The token is of a kind the application does not take (`token_kinds`).
    TokenKindNotAllowed,
    WrongOtp,
    ReplayedOtp,
    LockedNow,
    /// The password is right, but it is a temporary one (set at a revocation).
    PasswordMustChange,
    /// The password is right and the code is asked for (`otp_mode` challenge or auto): an
    /// Access-Challenge with this State.
    Challenged([u8; STATE_LEN]),
    /// The answer to a challenge came with a State that is not good for it.
    BadState(StateProblem),
    /// Too many challenges pending to issue another.
    ChallengesFull,
    /// The application's upstream first factor could not be asked (all servers down).
    UpstreamUnavailable,
    InternalError,
}

impl Outcome {
    pub fn reason(self) -> &'static str {
        match self {
            Outcome::Accepted => "ok",
            Outcome::Throttled => "throttled",
            Outcome::NoUserName => "no_user_name",
            Outcome::NoPassword => "no_user_password",
            Outcome::UnsupportedChap => "chap_not_supported",
            Outcome::UnknownUser => "unknown_user",
            Outcome::UnusableHash => "unusable_password_hash",
            Outcome::PasswordTooShort => "password_shorter_than_otp",
            Outcome::WrongPassword => "wrong_password",
            Outcome::NoToken => "no_token",
            Outcome::TokenNotUsable(state) => match state {
                TokenState::Unassigned => "token_unassigned",
                TokenState::PendingActivation => "token_pending_activation",
                TokenState::Active => "token_active",
                TokenState::Locked => "token_locked",
                TokenState::Suspended => "token_suspended",
                TokenState::Expired => "token_expired",
                TokenState::Revoked => "token_revoked",
            },
            Outcome::LevelTooLow => "assurance_level_too_low",
            Outcome::TokenKindNotAllowed => "token_kind_not_allowed",
            Outcome::WrongOtp => "wrong_otp",
            Outcome::ReplayedOtp => "replayed_otp",
            Outcome::LockedNow => "wrong_otp_locked",
            Outcome::PasswordMustChange => "password_must_change",
            Outcome::Challenged(_) => "challenge_sent",
            Outcome::BadState(problem) => problem.reason(),
            Outcome::ChallengesFull => "too_many_pending_challenges",
            Outcome::UpstreamUnavailable => "upstream_unavailable",
            Outcome::InternalError => "internal_error",
        }
    }

    /// The Reply-Message a user sees for this outcome.
    pub fn reply_message(self) -> Option<&'static str> {
        match self {
            // A challenge's prompt is the application's (see `Authenticator::conclude`).
            Outcome::Accepted | Outcome::Challenged(_) => None,
            Outcome::TokenNotUsable(TokenState::Locked) | Outcome::LockedNow => {
                Some(messages::TOKEN_LOCKED)
            }
            Outcome::TokenNotUsable(TokenState::Expired) => Some(messages::TOKEN_EXPIRED),
            Outcome::TokenNotUsable(TokenState::PendingActivation | TokenState::Unassigned) => {
                Some(messages::TOKEN_PENDING)
            }
            Outcome::TokenNotUsable(_) => Some(messages::TOKEN_UNUSABLE),
            Outcome::LevelTooLow => Some(messages::LEVEL_TOO_LOW),
            Outcome::TokenKindNotAllowed => Some(messages::TOKEN_KIND_NOT_ALLOWED),
            Outcome::PasswordMustChange => Some(messages::PASSWORD_MUST_CHANGE),
            Outcome::InternalError | Outcome::ChallengesFull => Some(messages::TRY_LATER),
            Outcome::UpstreamUnavailable => Some(messages::UPSTREAM_UNAVAILABLE),
            _ => Some(messages::GENERIC_FAILURE),
        }
    }
}

/// The pipeline and everything it needs.
pub struct Authenticator {
    settings: Arc<Settings>,
    tokens: Arc<TokenService>,
    throttle: Throttle,
    /// Bounds concurrent password hashing: argon2id costs ~19 MiB and a core per hash, so a
    /// burst of logins queues here instead of exhausting memory.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Re-hashes imported hashes to argon2id on spare CPU (`rehash_on_login`).
    rehasher: Option<Rehasher>,
    /// Today's date for the token gate and the OTP window.
    clock: Arc<dyn Clock>,
    /// The States of the Access-Challenges waiting for their code.
    challenges: Challenges,
    /// The `[[upstreams]]` applications may have check passwords; replaced on reload.
    upstreams: Live<Upstreams>,
}

/// The code length `auto` mode supposes for a user without a token (the usual one).
const DUMMY_DIGITS: usize = 6;

/// An upstream's part in a decision, for the decision log: which, and how long it took.
pub struct UpstreamCall {
    pub upstream: Arc<Upstream>,
    pub micros: u64,
}

impl Authenticator {
    pub fn new(settings: Arc<Settings>, tokens: Arc<TokenService>, clock: Arc<dyn Clock>) -> Self {
        let throttle = Throttle::new(&settings.throttle);
        let settings_challenge_timeout = settings.radius.challenge_timeout;
        let upstreams = Live::new(Upstreams::new(&settings.upstreams));
        let slots = settings.password.max_concurrent_hashes;
        let hashing = Arc::new(tokio::sync::Semaphore::new(slots));
        password::keep_argon2_memory_up_to(settings.password.argon2.memory_kib);
        let rehasher = settings
            .password
            .rehash_on_login
            .then(|| Rehasher::start(Arc::clone(tokens.store()), settings.password.argon2));
        Authenticator {
            settings,
            tokens,
            throttle,
            hashing,
            rehasher,
            clock,
            challenges: Challenges::new(settings_challenge_timeout),
            upstreams,
        }
    }

    /// Replaces the upstreams by those of a reloaded configuration; logins already asking
    /// one finish with it.
    pub fn replace_upstreams(&self, settings: &[crate::config::UpstreamSettings]) {
        self.upstreams.replace(Upstreams::new(settings));
    }

    /// Stops re-hashing (jobs still waiting are left for later logins) and logs what it did;
    /// after this nothing writes to the store on its own. Called once serving has stopped.
    pub fn stop_rehashing(&self) {
        let Some(rehasher) = &self.rehasher else {
            return;
        };
        rehasher.stop();
        let counters = rehasher.counters();
        tracing::info!(
            upgraded = counters.upgraded.load(Ordering::Relaxed),
            left_for_later_logins = counters.deferred.load(Ordering::Relaxed),
            dropped = counters.dropped.load(Ordering::Relaxed),
            abandoned_at_stop = counters.abandoned.load(Ordering::Relaxed),
            "re-hashing to argon2id stopped"
        );
    }

    /// Decides one request on the async path: the throttle's admission, hashing on the bounded
    /// pool, then a store sync (shared with concurrent callers) on the blocking pool. The answer
    /// to a challenge needs no hash; it is decided here too when it comes this way.
    pub async fn decide(&self, request: &Request) -> (Outcome, Option<UpstreamCall>) {
        let mut call = None;
        let (outcome, wrote, rehash) = match self.answer_challenge(request) {
            Some((outcome, wrote)) => (outcome, wrote, None),
            None => {
                let mut attempt = match self.look_up(request) {
                    Ok(attempt) => attempt,
                    Err(outcome) => return (outcome, None),
                };
                if let Err(outcome) = self.admit(&attempt) {
                    return (outcome, None);
                }
                let verified = match &attempt.check {
                    // Ends in `after_password`, as long after as a real check (two with a
                    // possible code in `auto` mode, as a known user's wrong password costs).
                    Check::Dummy(_, None) => {
                        self.spend_dummy_verify().await;
                        if attempt.password_alone().is_some() {
                            self.spend_dummy_verify().await;
                        }
                        Verified::Wrong
                    }
                    // For an upstream's application the upstream is asked about anyone, so
                    // an unknown name and a known one fare alike, also while it is down.
                    Check::Dummy(_, Some(upstream))
                    | Check::Real {
                        against: Against::Upstream(upstream),
                        ..
                    } => {
                        let started = Instant::now();
                        let verified = ask_upstream(upstream, &attempt).await;
                        call = Some(UpstreamCall {
                            upstream: Arc::clone(upstream),
                            micros: micros_since(started),
                        });
                        let Some(verified) = verified else {
                            self.throttle.failed(&attempt.origin, Instant::now());
                            return (Outcome::UpstreamUnavailable, call);
                        };
                        if matches!(attempt.check, Check::Dummy(..)) {
                            Verified::Wrong
                        } else {
                            verified
                        }
                    }
                    Check::Real {
                        against: Against::Hash(hash),
                        ..
                    }
                    | Check::Temporary(hash) => {
                        let hash = hash.clone();
                        let password = attempt.password.clone();
                        let alone = attempt.password_alone().cloned();
                        hash_off_thread(&self.hashing, move || {
                            verify(&hash, &password, alone.as_deref().map(Vec::as_slice))
                        })
                        .await
                        .unwrap_or(Verified::Wrong)
                    }
                };
                let right = attempt.settle(verified);
                self.after_password(request, attempt, right)
            }
        };
        if wrote {
            // `Store::sync` takes every record appended so far into one batch (the UDP
            // committers' records too), flushed beside any other in flight.
            let store = Arc::clone(self.tokens.store());
            let synced = tokio::task::spawn_blocking(move || store.sync())
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(e) = synced {
                tracing::error!(error = %e, "could not make the decision durable; refusing");
                return (Outcome::InternalError, call);
            }
        }
        if let Some(rehash) = rehash {
            self.rehash(rehash);
        }
        (outcome, call)
    }

    /// Step 1 and the first half of 2, nothing counted and no hashing: the account, its token,
    /// the split of the password and the OTP, the parsed hash.
    fn look_up<'r>(&self, request: &'r Request) -> Result<Attempt<'r>, Outcome> {
        let origin = self.origin_of(request).ok_or(Outcome::NoUserName)?;
        let username = origin.user;
        let Some(password_and_otp) = request.password.as_ref() else {
            return Err(if request.has_chap_password {
                Outcome::UnsupportedChap
            } else {
                Outcome::NoPassword
            });
        };
        let application = &request.client.application;
        // The application's upstream, if it has one: a dummy check asks it too.
        let upstream = match &application.first_factor {
            FirstFactor::Local => None,
            FirstFactor::Upstream(name) => match self.upstreams.load().get(name) {
                Some(upstream) => Some(upstream),
                None => {
                    tracing::error!(upstream = %name, "upstream not running; see the start-up log");
                    return Err(Outcome::UpstreamUnavailable);
                }
            },
        };
        // `auto` mode: what looks like a code after the password (a known user's check then
        // costs two hashes when the password is wrong; so does an unknown user's).
        let looks_appended = application.otp_mode == OtpMode::Auto
            && password_and_otp.len() > DUMMY_DIGITS
            && password_and_otp[password_and_otp.len() - DUMMY_DIGITS..]
                .iter()
                .all(u8::is_ascii_digit);
        let dummy = |outcome| Attempt {
            origin,
            password: password_and_otp.clone(),
            otp: String::new(),
            check: Check::Dummy(outcome, upstream.clone()),
            next: if looks_appended {
                Next::OtpElseChallenge(password_and_otp.clone())
            } else {
                Next::Otp
            },
        };
        // 1. Account.
        let (user, token) = self.tokens.store().user_and_token(username).map_err(|e| {
            tracing::error!(user = username, error = %e, "store read failed");
            Outcome::InternalError
        })?;
        let Some(user) = user else {
            return Ok(dummy(Outcome::UnknownUser));
        };
        // A temporary password replaces the local one only; an upstream's is the site's.
        if let Some(hash) = (upstream.is_none()
            && PasswordHash::stored_is_temporary(&user.password_hash))
        .then(|| PasswordHash::parse(&user.password_hash).ok())
        .flatten()
        {
            // A temporary password (after a revocation the user has no token): checked alone,
            // or before the code if there is a token, and refused with its own text.
            let split = token
                .as_ref()
                .and_then(|t| password_and_otp.len().checked_sub(usize::from(t.digits)))
                .unwrap_or(password_and_otp.len());
            return Ok(Attempt {
                origin,
                password: Zeroizing::new(password_and_otp[..split].to_vec()),
                otp: String::new(),
                check: Check::Temporary(hash),
                next: Next::Otp,
            });
        }
        let token = match self.token_of(&user, token) {
            Ok(Some(token)) => token,
            // Without a token the OTP cannot be split off; answered as for an unknown user.
            Ok(None) => return Ok(dummy(Outcome::NoToken)),
            Err(e) => {
                tracing::error!(user = username, error = %e, "store read failed");
                return Err(Outcome::InternalError);
            }
        };
        // 2. First factor: per the application's `otp_mode`, everything before the last
        // `digits` characters, or the whole User-Password when the code is to be asked for.
        let digits = usize::from(token.digits);
        let split = password_and_otp.len().checked_sub(digits);
        let (split, next) = match application.otp_mode {
            OtpMode::Append => match split {
                Some(split) => (split, Next::Otp),
                None => return Ok(dummy(Outcome::PasswordTooShort)),
            },
            OtpMode::Challenge => (password_and_otp.len(), Next::Challenge),
            // A code is there only if the password is followed by `digits` decimal digits;
            // then the whole may still be the password alone.
            OtpMode::Auto => match split
                .filter(|&at| at > 0 && password_and_otp[at..].iter().all(u8::is_ascii_digit))
            {
                Some(split) => (split, Next::OtpElseChallenge(password_and_otp.clone())),
                None => (password_and_otp.len(), Next::Challenge),
            },
        };
        let (password, otp) = password_and_otp.split_at(split);
        let against = match upstream {
            Some(upstream) => Against::Upstream(upstream),
            None => Against::Hash(PasswordHash::parse(&user.password_hash).map_err(|e| {
                tracing::error!(user = username, error = %e, "stored password hash is unusable");
                Outcome::UnusableHash
            })?),
        };
        Ok(Attempt {
            origin,
            password: Zeroizing::new(password.to_vec()),
            otp: String::from_utf8_lossy(otp).into_owned(),
            check: Check::Real {
                user,
                token,
                against,
            },
            next,
        })
    }

    /// The answer to an Access-Challenge (a request with a State, to an application that
    /// challenges): the State is taken (single use, bound to user and client, not expired),
    /// then User-Password is the code. `None` for any other request. Never needs a hash.
    fn answer_challenge(&self, request: &Request) -> Option<(Outcome, bool)> {
        let state = request.state.as_deref()?;
        if request.client.application.otp_mode == OtpMode::Append {
            return None;
        }
        let Some(username) = request.user_name.as_deref() else {
            return Some((Outcome::NoUserName, false));
        };
        let taken = self
            .challenges
            .take(state, username, &request.client.name, Instant::now());
        if let Err(problem) = taken {
            return Some((Outcome::BadState(problem), false));
        }
        let Some(code) = request.password.as_ref() else {
            return Some((Outcome::NoPassword, false));
        };
        let (user, token) = match self.tokens.store().user_and_token(username) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(user = username, error = %e, "store read failed");
                return Some((Outcome::InternalError, false));
            }
        };
        // The account may have gone, or lost its token, since the challenge.
        let Some(user) = user else {
            return Some((Outcome::UnknownUser, false));
        };
        let token = match self.token_of(&user, token) {
            Ok(Some(token)) => token,
            Ok(None) => return Some((Outcome::NoToken, false)),
            Err(e) => {
                tracing::error!(user = username, error = %e, "store read failed");
                return Some((Outcome::InternalError, false));
            }
        };
        let code = String::from_utf8_lossy(code).into_owned();
        Some(self.second_factor(request, &user, token, &code))
    }

    /// The token `user` logs in with: `own`, its own, or for a connected account (guide
    /// "Connected Accounts") its parent's, while the two still have the same names and e-mail
    /// address (read only for an account without a token of its own).
    fn token_of(
        &self,
        user: &User,
        own: Option<Token>,
    ) -> Result<Option<Token>, crate::store::StoreError> {
        if own.is_some() {
            return Ok(own);
        }
        let store = self.tokens.store().as_ref();
        let Some(parent) = crate::users::connected_parent(store, &user.username)? else {
            return Ok(None);
        };
        let (Some(parent_user), token) = store.user_and_token(&parent)? else {
            return Ok(None);
        };
        if crate::users::identity_mismatch(store, user, &parent_user)?.is_some() {
            tracing::warn!(
                user = %user.username,
                parent = %parent,
                "connected account no longer matches its parent's identity: not used"
            );
            return Ok(None);
        }
        Ok(token)
    }

    /// Who a request comes from, for throttling; `None` without a User-Name.
    fn origin_of<'r>(&self, request: &'r Request) -> Option<Origin<'r>> {
        Some(self.throttle.origin(
            request.user_name.as_deref()?,
            &request.client.name,
            request.calling_station_id.as_deref(),
        ))
    }

    /// The throttle's admission, counted before any hash (README "Security notes"): a user
    /// name throttled at this source, or any from a spraying source, must first show a valid,
    /// unspent code of its token, so a guesser without the token never reaches a hash.
    fn admit(&self, attempt: &Attempt<'_>) -> Result<(), Outcome> {
        let now = Instant::now();
        match self.throttle.admit(&attempt.origin, now) {
            Admission::Open => Ok(()),
            Admission::CodeFirst { strict } => {
                if self.code_would_pass(attempt, strict)
                    && self
                        .throttle
                        .pass_gate(&attempt.origin, &attempt.otp, strict, now)
                {
                    Ok(())
                } else {
                    self.throttle.refused_at_gate(&attempt.origin, now);
                    Err(Outcome::Throttled)
                }
            }
        }
    }

    /// For an attempt that needs a costly hash, a cheap look the UDP workers take before they
    /// hand it to the async path: if the throttle's gate would refuse it, it is refused here,
    /// counted as [`Self::admit`] counts a refusal.
    fn refuse_at_gate_now(&self, attempt: &Attempt<'_>) -> bool {
        let now = Instant::now();
        let refused = match self.throttle.peek(&attempt.origin, now) {
            Admission::Open => false,
            Admission::CodeFirst { strict } => !self.code_would_pass(attempt, strict),
        };
        if refused {
            self.throttle.admit(&attempt.origin, now);
            self.throttle.refused_at_gate(&attempt.origin, now);
        }
        refused
    }

    /// Whether the attempt's code is a valid, unspent code of its user's token (nothing spent);
    /// with `strict`, only its next expected code.
    fn code_would_pass(&self, attempt: &Attempt<'_>, strict: bool) -> bool {
        let Check::Real { token, .. } = &attempt.check else {
            return false;
        };
        let reach = if strict {
            Reach::ExpectedOnly
        } else {
            Reach::Window
        };
        self.tokens
            .code_would_pass(token, &attempt.otp, self.clock.now(), reach)
            .unwrap_or_else(|e| {
                tracing::error!(serial = %token.serial, error = %e, "OTP check failed");
                false
            })
    }

    /// Steps 3 and 4 once the password has been checked (for a dummy check, where it ends in
    /// its outcome): the token gate, then the OTP or, when the code is to be asked for, a
    /// challenge. Returns the outcome, whether it wrote state (to be made durable before
    /// replying) and, once the password was right with an imported hash, the re-hash to do.
    fn after_password(
        &self,
        request: &Request,
        attempt: Attempt<'_>,
        verified: bool,
    ) -> (Outcome, bool, Option<rehash::Job>) {
        let Attempt {
            origin,
            password,
            otp,
            check,
            next,
        } = attempt;
        let (user, token, against) = match check {
            Check::Real {
                user,
                token,
                against,
            } => (user, token, against),
            Check::Dummy(outcome, _) => {
                self.throttle.failed(&origin, Instant::now());
                return (outcome, false, None);
            }
            Check::Temporary(_) if verified => {
                self.throttle.succeeded(&origin);
                return (Outcome::PasswordMustChange, false, None);
            }
            Check::Temporary(_) => {
                self.throttle.failed(&origin, Instant::now());
                return (Outcome::WrongPassword, false, None);
            }
        };
        if !verified {
            self.throttle.failed(&origin, Instant::now());
            return (Outcome::WrongPassword, false, None);
        }
        self.throttle.succeeded(&origin);
        if matches!(next, Next::Challenge) {
            // 3. Token gate before asking for a code the token could not give.
            if let Err(outcome) = self.token_gate(request, &token) {
                return (outcome, false, None);
            }
            let issued = self
                .challenges
                .issue(origin.user, &request.client.name, Instant::now());
            let outcome = issued.map_or(Outcome::ChallengesFull, Outcome::Challenged);
            return (outcome, false, self.rehash_job(user, password, &against));
        }
        let (outcome, wrote) = self.second_factor(request, &user, token, &otp);
        let rehash = (outcome == Outcome::Accepted)
            .then(|| self.rehash_job(user, password, &against))
            .flatten();
        (outcome, wrote, rehash)
    }

    /// Step 3: the token must be Active and of a kind the application takes.
    fn token_gate(&self, request: &Request, token: &Token) -> Result<(), Outcome> {
        let state = TokenService::effective_state(token, self.clock.now());
        if state != TokenState::Active {
            return Err(Outcome::TokenNotUsable(state));
        }
        if !request.client.application.token_kinds.allows(token.kind) {
            return Err(Outcome::TokenKindNotAllowed);
        }
        Ok(())
    }

    /// Steps 3 and 4 for a user whose password was right (in this request, or in the one
    /// answered by a challenge): the token gate, the application, the OTP, then the level.
    /// Returns the outcome and whether it wrote state.
    fn second_factor(
        &self,
        request: &Request,
        user: &User,
        token: Token,
        otp: &str,
    ) -> (Outcome, bool) {
        // 3. Token gate; the application's required level comes after the code.
        if let Err(outcome) = self.token_gate(request, &token) {
            return (outcome, false);
        }
        let now = self.clock.now();
        let required = request.client.application.required_level;
        // 4. OTP.
        let serial = token.serial.clone();
        let outcome = match self.tokens.check_otp_from(Some(token), &serial, otp, now) {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(user = %user.username, %serial, error = %e, "OTP check failed");
                return (Outcome::InternalError, false);
            }
        };
        let wrote = outcome.wrote();
        let decided = match outcome {
            // The token's level, checked once the password and the code were right (issue 9):
            // read only for an application that asks more than level 2.
            OtpOutcome::Accepted if required > AssuranceLevel::Two => {
                match self.token_level(&serial, user) {
                    Ok(level) if level >= required => Outcome::Accepted,
                    Ok(_) => Outcome::LevelTooLow,
                    Err(e) => {
                        tracing::error!(user = %user.username, %serial, error = %e, "token level unreadable");
                        Outcome::InternalError
                    }
                }
            }
            OtpOutcome::Accepted => Outcome::Accepted,
            OtpOutcome::Rejected {
                replayed: false, ..
            } => Outcome::WrongOtp,
            OtpOutcome::Rejected { replayed: true, .. } => Outcome::ReplayedOtp,
            OtpOutcome::LockedNow => Outcome::LockedNow,
            OtpOutcome::NotUsable(state) => Outcome::TokenNotUsable(state),
        };
        (decided, wrote)
    }

    /// After a successful login with an imported hash, the re-hash to argon2id to do.
    fn rehash_job(
        &self,
        user: User,
        password: Zeroizing<Vec<u8>>,
        against: &Against,
    ) -> Option<rehash::Job> {
        let Against::Hash(hash) = against else {
            return None;
        };
        let params = self.settings.password.argon2;
        (self.settings.password.rehash_on_login && hash.needs_rehash(&params)).then_some(
            rehash::Job {
                user,
                password,
                from: hash.scheme(),
            },
        )
    }

    /// The assurance level of token `serial`: the level bought or sponsored (3 after a
    /// proofing upgrade); for a token with none recorded (imported in use), the level the
    /// account was given.
    fn token_level(
        &self,
        serial: &str,
        user: &User,
    ) -> Result<AssuranceLevel, crate::token::TokenError> {
        let (_, life) = self.tokens.details(serial)?;
        let number = life.level.unwrap_or(user.assurance_level);
        Ok(AssuranceLevel::from_number(number).unwrap_or(AssuranceLevel::Two))
    }

    /// Costs an unknown user the same argon2id work as a known one (no enumeration by timing).
    async fn spend_dummy_verify(&self) {
        let params = self.settings.password.argon2;
        let _ = hash_off_thread(&self.hashing, move || password::dummy_verify(&params)).await;
    }

    /// Counts a request for the re-hasher, which waits for quiet (none without re-hashing).
    fn note_request(&self) {
        if let Some(rehasher) = &self.rehasher {
            rehasher.note_request();
        }
    }

    /// Hands a re-hash to argon2id after a successful login to the idle-priority re-hasher
    /// ([`rehash`]); with its queue full it is left for the user's next login.
    fn rehash(&self, job: rehash::Job) {
        if let Some(rehasher) = &self.rehasher {
            rehasher.offer(job);
        }
    }

    /// The attributes of an Accept: the application's, or those it gives the organization of
    /// the user's profile (`reply_attributes_by_organization`), read only when it has some.
    fn accept_attributes(
        &self,
        request: &Request,
    ) -> Result<Option<Arc<[u8]>>, crate::store::StoreError> {
        let application = &request.client.application;
        let by_organization = match request.user_name.as_deref() {
            Some(user) if application.attributes_by_organization() => {
                crate::users::extra(self.tokens.store().as_ref(), user)?
                    .organization
                    .and_then(|organization| {
                        application
                            .reply_attributes_by_organization
                            .get(&organization)
                            .cloned()
                    })
            }
            _ => None,
        };
        Ok(by_organization.unwrap_or_else(|| application.reply_attributes.clone()))
    }

    /// Turns an outcome into a reply and logs the decision as one event.
    fn conclude(
        &self,
        request: &Request,
        outcome: Outcome,
        started: Instant,
        call: Option<UpstreamCall>,
    ) -> Reply {
        // An Accept's attributes first: if they cannot be known, no Accept (fail closed).
        let mut attributes = None;
        let mut outcome = outcome;
        if outcome == Outcome::Accepted {
            match self.accept_attributes(request) {
                Ok(found) => attributes = found,
                Err(e) => {
                    tracing::error!(error = %e, "store read failed: the user's organization");
                    outcome = Outcome::InternalError;
                }
            }
        }
        let (code, result) = match outcome {
            Outcome::Accepted => (ReplyCode::Accept, "accept"),
            Outcome::Challenged(_) => (ReplyCode::Challenge, "challenge"),
            _ => (ReplyCode::Reject, "reject"),
        };
        tracing::info!(
            target: "otpgate::decision",
            user = request.user_name.as_deref().unwrap_or("-"),
            client = %request.client.name,
            nas = %request.peer,
            id = request.identifier,
            result,
            reason = outcome.reason(),
            micros = micros_since(started),
            upstream = call.as_ref().map(|c| c.upstream.name()),
            upstream_micros = call.as_ref().map(|c| c.micros),
            "decision"
        );
        let mut reply = Reply::new(code, outcome.reply_message());
        let application = &request.client.application;
        match outcome {
            Outcome::Accepted => reply.attributes = attributes,
            Outcome::Challenged(state) => {
                reply.state = Some(state);
                reply.message = Some(Text::Configured(Arc::clone(&application.challenge_prompt)));
            }
            _ => {}
        }
        reply
    }
}

fn micros_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Asks `upstream` about the attempt's password and, if it is refused and the whole
/// User-Password may be the password alone (`otp_mode = "auto"`), about that. `None` when the
/// upstream could not be asked (logged).
async fn ask_upstream(upstream: &Upstream, attempt: &Attempt<'_>) -> Option<Verified> {
    let user = attempt.origin.user;
    let mut verdict = upstream.check(user, &attempt.password).await;
    let mut right = Verified::Right;
    if let (Verdict::Rejected, Some(whole)) = (&verdict, attempt.password_alone()) {
        verdict = upstream.check(user, whole).await;
        right = Verified::RightAlone;
    }
    match verdict {
        Verdict::Accepted => Some(right),
        Verdict::Rejected => Some(Verified::Wrong),
        Verdict::Unavailable { reason } => {
            tracing::warn!(upstream = %upstream.name(), user, %reason, "upstream first factor unavailable");
            None
        }
    }
}

/// Runs password hashing on the blocking pool in one of `hashing`'s slots (at most
/// `max_concurrent_hashes` at once), held only while it hashes. `None` if the pool is gone
/// (shutdown).
async fn hash_off_thread<T: Send + 'static>(
    hashing: &tokio::sync::Semaphore,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let _slot = hashing.acquire().await.ok()?;
    tokio::task::spawn_blocking(work).await.ok()
}

/// A request's credentials and what they will be checked against, before anything is counted
/// or hashed.
struct Attempt<'r> {
    origin: Origin<'r>,
    /// The first factor (for an unknown user, the whole User-Password).
    password: Zeroizing<Vec<u8>>,
    /// The code split off the end (empty for an unknown user, or when it is to be asked for).
    otp: String,
    check: Check,
    /// What follows a right password.
    next: Next,
}

/// What follows a right password.
enum Next {
    /// The code split off the end of User-Password.
    Otp,
    /// An Access-Challenge asking for the code.
    Challenge,
    /// `otp_mode = "auto"` with what looks like a code at the end: the code, or, if the part
    /// before it is not the password but this whole User-Password is, a challenge.
    OtpElseChallenge(Zeroizing<Vec<u8>>),
}

/// Who checks a user's password (the application's `first_factor`).
enum Against {
    /// The stored hash.
    Hash(PasswordHash),
    /// The site's RADIUS server or directory.
    Upstream(Arc<Upstream>),
}

/// How a password check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verified {
    Wrong,
    Right,
    /// Not the part before the code, but the whole User-Password is the password.
    RightAlone,
}

/// Checks `password` against `hash`, then `alone` (the whole User-Password) if given and the
/// first was wrong.
fn verify(hash: &PasswordHash, password: &[u8], alone: Option<&[u8]>) -> Verified {
    if hash.verify(password) {
        Verified::Right
    } else if alone.is_some_and(|whole| hash.verify(whole)) {
        Verified::RightAlone
    } else {
        Verified::Wrong
    }
}

impl Attempt<'_> {
    /// The whole User-Password, to check as the password alone if the part before the code
    /// is wrong (`otp_mode = "auto"`).
    fn password_alone(&self) -> Option<&Zeroizing<Vec<u8>>> {
        match &self.next {
            Next::OtpElseChallenge(whole) => Some(whole),
            _ => None,
        }
    }

    /// Takes in how the password check came out: with the whole User-Password as the
    /// password, the code is to be asked for. Returns whether the password was right.
    fn settle(&mut self, verified: Verified) -> bool {
        if verified == Verified::RightAlone {
            if let Next::OtpElseChallenge(whole) =
                std::mem::replace(&mut self.next, Next::Challenge)
            {
                self.password = whole;
                self.otp.clear();
            }
        }
        verified != Verified::Wrong
    }

    /// The stored hash its password is checked against, if it is one.
    fn local_hash(&self) -> Option<&PasswordHash> {
        match &self.check {
            Check::Real {
                against: Against::Hash(hash),
                ..
            }
            | Check::Temporary(hash) => Some(hash),
            _ => None,
        }
    }

    /// Whether its password check goes to the hashing pool (argon2id, a dummy hash...).
    fn costly(&self) -> bool {
        match &self.check {
            Check::Real {
                against: Against::Hash(hash),
                ..
            }
            | Check::Temporary(hash) => hash.is_costly(),
            // Asking an upstream waits on the network: never on a UDP worker.
            Check::Real {
                against: Against::Upstream(_),
                ..
            }
            | Check::Dummy(..) => true,
        }
    }
}

/// What a password is checked against.
// One per request, on the stack: boxing the large variant would cost every login an allocation.
#[allow(clippy::large_enum_variant)]
enum Check {
    /// The user's password, checked against `against`; the token comes next.
    Real {
        user: User,
        token: Token,
        against: Against,
    },
    /// Nothing: a dummy argon2id hash is spent (or, for an application with an upstream, the
    /// upstream is asked) so the answer takes as long as a real check, then the attempt ends
    /// in this outcome (unknown user, no token, password too short).
    Dummy(Outcome, Option<Arc<Upstream>>),
    /// A temporary password's hash: right or wrong, the login is refused (right: with the
    /// text that the password must be changed).
    Temporary(PasswordHash),
}

impl RequestHandler for Authenticator {
    fn decide_now(&self, request: &Request) -> Option<Decided> {
        let started = Instant::now();
        self.note_request();
        if let Some((outcome, wrote)) = self.answer_challenge(request) {
            return Some(Decided {
                reply: self.conclude(request, outcome, started, None),
                wrote,
            });
        }
        let (outcome, wrote) = match self.look_up(request) {
            Err(outcome) => (outcome, false),
            // A costly hash goes to the async path, unless the throttle refuses it unhashed.
            Ok(attempt) if attempt.costly() => {
                if !self.refuse_at_gate_now(&attempt) {
                    return None;
                }
                (Outcome::Throttled, false)
            }
            Ok(mut attempt) => match self.admit(&attempt) {
                Err(outcome) => (outcome, false),
                Ok(()) => {
                    // Only a local hash is cheap (`Attempt::costly`); anything else here fails
                    // closed, and `after_password` ends the admitted attempt either way.
                    let verified = match attempt.local_hash() {
                        Some(hash) => verify(
                            hash,
                            &attempt.password,
                            attempt.password_alone().map(|whole| whole.as_slice()),
                        ),
                        None => Verified::Wrong,
                    };
                    let right = attempt.settle(verified);
                    let (outcome, wrote, rehash) = self.after_password(request, attempt, right);
                    if let Some(rehash) = rehash {
                        self.rehash(rehash);
                    }
                    (outcome, wrote)
                }
            },
        };
        Some(Decided {
            reply: self.conclude(request, outcome, started, None),
            wrote,
        })
    }

    fn make_durable(&self) -> Result<(), String> {
        self.tokens.store().sync().map_err(|e| e.to_string())
    }

    fn unavailable(&self) -> Reply {
        Reply::new(ReplyCode::Reject, Outcome::InternalError.reply_message())
    }

    async fn handle(&self, request: Request) -> Reply {
        let started = Instant::now();
        let (outcome, call) = self.decide(&request).await;
        self.conclude(&request, outcome, started, call)
    }
}

#[cfg(test)]
mod tests {
    //! The durability contract of the pipeline: no Accept before the write it depends on has
    //! been synced. A `kill -9` test cannot show this (the page cache survives the process), so
    //! a store wrapper records the order of writes and syncs.

    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::clock::ManualClock;
    use crate::otp::import::ImportedToken;
    use crate::otp::{hotp, Algorithm, TokenKind};
    use crate::radius::clients::Client;
    use crate::store::seal::SeedCipher;
    use crate::store::sled_store::SledStore;
    use crate::store::{ChangeSet, KeyValue, Store, StoreError, Token};

    const SEED: &[u8] = b"12345678901234567890";

    /// Delegates to sled, recording "write" for token writes and "synced" after each sync.
    struct Recording {
        inner: SledStore,
        events: Mutex<Vec<&'static str>>,
        fail_sync: bool,
    }

    impl Recording {
        fn events(&self) -> Vec<&'static str> {
            self.events.lock().expect("events").clone()
        }
    }

    impl Store for Recording {
        fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
            self.inner.user(username)
        }
        fn create_users(&self, users: &[User]) -> Result<(), StoreError> {
            self.inner.create_users(users)
        }
        fn token(&self, serial: &str) -> Result<Option<Token>, StoreError> {
            self.inner.token(serial)
        }
        fn tokens(&self, after: Option<&str>, limit: usize) -> Result<Vec<Token>, StoreError> {
            self.inner.tokens(after, limit)
        }
        fn token_of_user(&self, username: &str) -> Result<Option<Token>, StoreError> {
            self.inner.token_of_user(username)
        }
        fn user_and_token(
            &self,
            username: &str,
        ) -> Result<(Option<User>, Option<Token>), StoreError> {
            self.inner.user_and_token(username)
        }
        fn create_tokens(&self, tokens: &[Token]) -> Result<(), StoreError> {
            self.inner.create_tokens(tokens)
        }
        fn apply(&self, changes: ChangeSet) -> Result<bool, StoreError> {
            let done = self.inner.apply(changes)?;
            if done {
                self.events.lock().expect("events").push("write");
            }
            Ok(done)
        }
        fn record(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.record(key)
        }
        fn records(
            &self,
            from: &[u8],
            to: &[u8],
            limit: usize,
        ) -> Result<Vec<KeyValue>, StoreError> {
            self.inner.records(from, to, limit)
        }
        fn sync(&self) -> Result<(), StoreError> {
            if self.fail_sync {
                return Err(StoreError::Io("disk full".into()));
            }
            self.inner.sync()?;
            self.events.lock().expect("events").push("synced");
            Ok(())
        }
        fn checkpoint(&self) -> Result<(), StoreError> {
            self.inner.checkpoint()
        }
    }

    /// 2009-02-13 23:31:30 UTC, where every test's clock starts.
    const NOW: u64 = 1_234_567_890;

    async fn setup(fail_sync: bool) -> (tempfile::TempDir, Arc<Recording>, Authenticator) {
        let (dir, store, auth, _) = setup_with_clock(fail_sync).await;
        (dir, store, auth)
    }

    /// As `setup`, with the clock the pipeline reads (at [`NOW`]).
    async fn setup_with_clock(
        fail_sync: bool,
    ) -> (
        tempfile::TempDir,
        Arc<Recording>,
        Authenticator,
        Arc<ManualClock>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings::load_with_env(None, Some(HashMap::new())).expect("defaults");
        settings.password.argon2 = password::Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let store = Arc::new(Recording {
            inner: SledStore::open(&dir.path().join("db")).expect("open"),
            events: Mutex::new(Vec::new()),
            fail_sync,
        });
        let cipher = SeedCipher::load_or_create(&dir.path().join("key")).expect("key");
        let dyn_store: Arc<dyn Store> = Arc::clone(&store) as Arc<dyn Store>;
        let tokens = Arc::new(TokenService::new(
            Arc::clone(&dyn_store),
            cipher,
            settings.otp.clone(),
            settings.lifecycle.clone(),
            settings.password.argon2,
        ));
        let hash = PasswordHash::new_argon2id(b"pw", &settings.password.argon2).expect("hash");
        provision(&tokens, "bob", hash.as_stored(), "H1");
        let clock = Arc::new(ManualClock::at(NOW));
        let auth = Authenticator::new(
            Arc::new(settings),
            tokens,
            Arc::clone(&clock) as Arc<dyn Clock>,
        );
        (dir, store, auth, clock)
    }

    /// A user with password hash `hash` and an HOTP token `serial` (seed [`SEED`]).
    fn provision(tokens: &TokenService, user: &str, hash: &str, serial: &str) {
        tokens
            .store()
            .create_users(&[User {
                username: user.into(),
                password_hash: hash.into(),
                email: None,
                first_name: None,
                last_name: None,
                assurance_level: 2,
                created_at: 0,
            }])
            .expect("user");
        tokens
            .import(
                vec![ImportedToken {
                    serial: serial.into(),
                    secret: Zeroizing::new(SEED.to_vec()),
                    algorithm: Algorithm::Sha1,
                    digits: 6,
                    kind: TokenKind::Hotp,
                    counter: 0,
                    owner: Some(user.into()),
                }],
                0,
            )
            .expect("import");
    }

    fn request(password: &str) -> Request {
        request_as("bob", password)
    }

    fn request_as(user: &str, password: &str) -> Request {
        request_in(OtpMode::Append, user, password)
    }

    /// A request from a client whose application has `otp_mode` `mode`.
    fn request_in(mode: OtpMode, user: &str, password: &str) -> Request {
        Request {
            client: Arc::new(Client {
                name: "nas".into(),
                secret: crate::radius::packet::Secret::new(b"secret").expect("secret"),
                application: Arc::new(crate::config::Application {
                    name: "default".into(),
                    required_level: AssuranceLevel::Two,
                    otp_mode: mode,
                    challenge_prompt: crate::config::DEFAULT_CHALLENGE_PROMPT.into(),
                    first_factor: FirstFactor::Local,
                    reply_attributes: None,
                    reply_attributes_by_organization: Default::default(),
                    token_kinds: crate::config::TokenKinds::ALL,
                }),
            }),
            peer: "127.0.0.1:1000".parse().expect("addr"),
            identifier: 1,
            user_name: Some(user.into()),
            password: Some(Zeroizing::new(password.as_bytes().to_vec())),
            state: None,
            has_chap_password: false,
            calling_station_id: None,
        }
    }

    #[tokio::test]
    async fn accept_only_after_its_write_is_synced() {
        let (_dir, store, auth) = setup(false).await;
        let code = hotp::code(SEED, 0, 6, Algorithm::Sha1);
        let reply = auth.handle(request(&format!("pw{code}"))).await;
        assert_eq!(reply.code, ReplyCode::Accept);
        let events = store.events();
        let write = events.iter().rposition(|e| *e == "write").expect("a write");
        assert!(
            events[write..].contains(&"synced"),
            "Accept returned before its write was synced: {events:?}"
        );
        // A failure is durable before its Reject too.
        let reply = auth.handle(request("pw000000")).await;
        assert_eq!(reply.code, ReplyCode::Reject);
        let events = store.events();
        let write = events.iter().rposition(|e| *e == "write").expect("a write");
        assert!(events[write..].contains(&"synced"), "{events:?}");
    }

    #[tokio::test]
    async fn failed_sync_never_accepts() {
        let (_dir, _store, auth) = setup(true).await;
        let code = hotp::code(SEED, 0, 6, Algorithm::Sha1);
        let reply = auth.handle(request(&format!("pw{code}"))).await;
        assert_eq!(reply.code, ReplyCode::Reject);
        assert_eq!(reply.message, Some(Text::Fixed(messages::TRY_LATER)));
    }

    /// `{SSHA256}` of "correct horse" (a vector of `password`'s tests), as FreeRADIUS stores it.
    const SSHA256_CORRECT_HORSE: &str =
        "{SSHA256}62RnE8i68Rku2tJcWuHTq0Iu22EYuLaYy4OAoBpRZOmhssPU5fYHGA==";

    /// A re-hash takes no login hashing slot: with every slot held (logins hashing), the
    /// imported hash is still upgraded, and without a sync of its own (it waits for a checkpoint).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rehash_needs_no_login_hashing_slot_and_no_sync() {
        let (_dir, store, auth) = setup(false).await;
        provision(&auth.tokens, "carol", SSHA256_CORRECT_HORSE, "H2");
        let slots = u32::try_from(auth.settings.password.max_concurrent_hashes).expect("slots");
        let busy = auth.hashing.acquire_many(slots).await.expect("every slot");
        let code = hotp::code(SEED, 0, 6, Algorithm::Sha1);
        let decided = auth
            .decide_now(&request_as("carol", &format!("correct horse{code}")))
            .expect("a salted digest is decided at once");
        assert_eq!(decided.reply.code, ReplyCode::Accept);
        let syncs_before = store.events().iter().filter(|e| **e == "synced").count();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let user = store.user("carol").expect("read").expect("carol");
            let scheme = PasswordHash::parse(&user.password_hash)
                .expect("hash")
                .scheme();
            if scheme == "argon2id" {
                break;
            }
            assert!(Instant::now() < deadline, "never re-hashed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        drop(busy);
        let syncs_after = store.events().iter().filter(|e| **e == "synced").count();
        assert_eq!(syncs_before, syncs_after, "the re-hash synced the store");
        auth.stop_rehashing();
    }

    /// The pipeline reads the date from its clock: a token expires when the clock passes its
    /// expiry, with the guide's text, whatever the system's time.
    #[tokio::test]
    async fn expiry_follows_the_injected_clock() {
        let (_dir, store, auth, clock) = setup_with_clock(false).await;
        let token = store.token("H1").expect("read").expect("H1");
        let expiring = Token {
            expires_at: Some(NOW + 3_600),
            ..token.clone()
        };
        assert!(store.replace_token(&token, &expiring).expect("cas"));
        let login = |counter| {
            let code = hotp::code(SEED, counter, 6, Algorithm::Sha1);
            request(&format!("pw{code}"))
        };
        assert_eq!(auth.handle(login(0)).await.code, ReplyCode::Accept);
        clock.advance(std::time::Duration::from_secs(2 * 3_600));
        let reply = auth.handle(login(1)).await;
        assert_eq!(reply.code, ReplyCode::Reject);
        assert_eq!(reply.message, Some(Text::Fixed(messages::TOKEN_EXPIRED)));
    }

    /// After a revocation the owner's password is a temporary one, sent by e-mail in the same
    /// change set: RADIUS refuses it with its own text (the right temporary password) or the
    /// generic one (a wrong password), until it is changed.
    #[tokio::test]
    async fn a_temporary_password_is_refused_with_its_own_text_until_changed() {
        let (_dir, store, auth) = setup(false).await;
        let bob = store.user("bob").expect("read").expect("bob");
        let with_email = User {
            email: Some("bob@example.org".into()),
            ..bob.clone()
        };
        assert!(store
            .apply(ChangeSet::new().user(Some(bob), with_email))
            .expect("email"));
        let admin = crate::audit::Who::admin("test");
        auth.tokens
            .revoke("H1", &admin, "lost", NOW)
            .expect("revoke");
        let outbox = store.records(b"outbox/", b"outbox0", 10).expect("outbox");
        assert_eq!(outbox.len(), 1, "one notification");
        let pending: crate::notify::Pending = postcard::from_bytes(&outbox[0].1).expect("entry");
        assert_eq!(pending.notification.to, "bob@example.org");
        let temporary = pending
            .notification
            .body
            .lines()
            .find(|l| l.starts_with("    "))
            .map(str::trim)
            .expect("the temporary password in the body")
            .to_string();
        let user = store.user("bob").expect("read").expect("bob");
        assert!(PasswordHash::parse(&user.password_hash)
            .expect("hash")
            .is_temporary());
        let reply = auth.handle(request(&temporary)).await;
        assert_eq!(reply.code, ReplyCode::Reject);
        assert_eq!(
            reply.message,
            Some(Text::Fixed(messages::PASSWORD_MUST_CHANGE))
        );
        let reply = auth.handle(request("pw")).await;
        assert_eq!(reply.message, Some(Text::Fixed(messages::GENERIC_FAILURE)));
        crate::users::set_password(
            store.as_ref(),
            "bob",
            b"a new password",
            &auth.settings.password.argon2,
            &admin,
            NOW,
        )
        .expect("changed");
        let reply = auth.handle(request(&temporary)).await;
        assert_eq!(reply.message, Some(Text::Fixed(messages::GENERIC_FAILURE)));
    }

    /// The answer to a challenge: `request` with `state` and the code as User-Password.
    fn answer(mode: OtpMode, code: &str, state: Option<[u8; STATE_LEN]>) -> Request {
        Request {
            state: state.map(|s| s.to_vec()),
            ..request_in(mode, "bob", code)
        }
    }

    #[tokio::test]
    async fn challenge_mode_asks_for_the_code_and_takes_its_state_once() {
        let (_dir, _store, auth) = setup(false).await;
        let request = |password: &str| request_in(OtpMode::Challenge, "bob", password);
        let answer = |code: &str, state| answer(OtpMode::Challenge, code, state);
        let wrong = auth.handle(request("nope")).await;
        assert_eq!(wrong.code, ReplyCode::Reject);
        assert_eq!(wrong.state, None);
        let challenged = auth.handle(request("pw")).await;
        assert_eq!(challenged.code, ReplyCode::Challenge);
        assert_eq!(
            challenged.message.as_ref().map(Text::as_str),
            Some(crate::config::DEFAULT_CHALLENGE_PROMPT)
        );
        let state = challenged.state;
        assert!(state.is_some());
        let code = hotp::code(SEED, 0, 6, Algorithm::Sha1);
        assert_eq!(
            auth.handle(answer(&code, state)).await.code,
            ReplyCode::Accept
        );
        // Used: the next code with the same State is refused, and so is no State at all.
        let next = hotp::code(SEED, 1, 6, Algorithm::Sha1);
        let reused = auth.handle(answer(&next, state)).await;
        assert_eq!(reused.code, ReplyCode::Reject);
        assert_eq!(
            auth.handle(answer(&next, None)).await.code,
            ReplyCode::Reject
        );
        // Another user cannot answer bob's challenge.
        let state = auth.handle(request("pw")).await.state;
        let foreign = Request {
            user_name: Some("mallory".into()),
            ..answer(&next, state)
        };
        assert_eq!(auth.handle(foreign).await.code, ReplyCode::Reject);
        // A wrong code in the answer counts as a wrong code.
        let state = auth.handle(request("pw")).await.state;
        let reply = auth.handle(answer("000000", state)).await;
        assert_eq!(reply.message, Some(Text::Fixed(messages::GENERIC_FAILURE)));
    }

    #[tokio::test]
    async fn auto_mode_takes_an_appended_code_or_asks_for_one() {
        let (_dir, _store, auth) = setup(false).await;
        let request = |password: &str| request_in(OtpMode::Auto, "bob", password);
        let answer = |code: &str, state| answer(OtpMode::Auto, code, state);
        let code = hotp::code(SEED, 0, 6, Algorithm::Sha1);
        let appended = auth.handle(request(&format!("pw{code}"))).await;
        assert_eq!(appended.code, ReplyCode::Accept);
        let alone = auth.handle(request("pw")).await;
        assert_eq!(alone.code, ReplyCode::Challenge);
        let next = hotp::code(SEED, 1, 6, Algorithm::Sha1);
        let reply = auth.handle(answer(&next, alone.state)).await;
        assert_eq!(reply.code, ReplyCode::Accept);
        // After the right password, a wrong appended code is a wrong code, not a challenge.
        let wrong = auth.handle(request("pw123456")).await;
        assert_eq!(wrong.code, ReplyCode::Reject);
        assert_eq!(wrong.state, None);
    }
}
