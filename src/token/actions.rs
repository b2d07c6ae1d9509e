//! The token lifecycle's actions (guide "Register Your Token", "Reactivate OTP Hardware
//! Token", "Revoke", "Renew", "Expired Tokens", "Suspended Tokens", "Error Conditions"). Each
//! reads the token and its lifecycle record, moves the state through
//! [`super::state::transition`] for the one asking, and writes the token, the lifecycle record
//! and an audit entry in one change set: all or nothing, retried when a concurrent change (a
//! login) came first. The caller makes it durable with [`crate::store::Store::sync`] before it
//! answers.

use rand::RngCore;
use zeroize::Zeroizing;

use crate::audit::{Entry, Who};
use crate::auth::password::PasswordHash;
use crate::clock::add_years;
use crate::licensing::{self, Found, LicenseKey, Redeemed, Sponsorship};
use crate::notify;
use crate::otp::{hotp, totp, TokenKind};
use crate::proofing;
use crate::store::{ChangeSet, Expect, Store, StoreError, Token, User};
use crate::users;

use super::lifecycle::{self, Lifecycle, Origin};
use super::notices;
use super::rules;
use super::service::{apply, TokenError, TokenService, MAX_CAS_ATTEMPTS};
use super::state::{Actor, Event, Transition, TransitionError};

/// A lifecycle action that was carried out: the token as it is now and the move, as the audit
/// recorded it.
#[derive(Debug, Clone)]
pub struct Changed {
    pub token: Token,
    pub transition: Transition,
}

/// A token with its lifecycle record, as read for an action.
pub(super) struct Read {
    pub token: Token,
    pub life: Lifecycle,
    /// The lifecycle record as stored, for the compare-and-swap.
    pub stored: Option<Vec<u8>>,
}

/// Which two-code action: they differ in their event, their block and their error.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TwoCodes {
    Register,
    Resync,
}

impl TwoCodes {
    /// The count of this action's failed attempts in `life`.
    fn failures(self, life: &mut Lifecycle) -> &mut u32 {
        match self {
            TwoCodes::Register => &mut life.registration_failures,
            TwoCodes::Resync => &mut life.resync_failures,
        }
    }
}

impl TokenService {
    /// Suspends the token: it cannot log in until reinstated. A user may reinstate only a
    /// suspension of their own.
    pub fn suspend(
        &self,
        serial: &str,
        who: &Who,
        reason: &str,
        now: u64,
    ) -> Result<Changed, TokenError> {
        self.act(serial, who, Event::Suspend, reason, now, |_, life| {
            life.suspended_by = Some(who.actor);
            life.suspended_at = Some(now);
            Ok(ChangeSet::new())
        })
    }

    /// Lifts a suspension (guide "Possible Login Errors": a user only one the user made).
    pub fn reinstate(
        &self,
        serial: &str,
        who: &Who,
        reason: &str,
        now: u64,
    ) -> Result<Changed, TokenError> {
        self.act(serial, who, Event::Reinstate, reason, now, |_, life| {
            life.suspended_by = None;
            life.suspended_at = None;
            Ok(ChangeSet::new())
        })
    }

    /// Revokes the token for good (guide "Revoke OTP Hardware Token"). It leaves its owner's
    /// account, keeping its record and history (the former owner is remembered), so the owner
    /// can register another; its serial can never be registered again. The owner's password
    /// is reset to a temporary one, sent by e-mail in the same change set; no login is
    /// accepted with it until it is changed.
    pub fn revoke(
        &self,
        serial: &str,
        who: &Who,
        reason: &str,
        now: u64,
    ) -> Result<Changed, TokenError> {
        self.revoke_for(serial, who, reason, false, now)
    }

    /// A revocation of a token reported lost: as [`Self::revoke`], and if it was a level-3
    /// token, its owner's identity proofing must be done again before another level-3 token
    /// registers (guide "Proofing Upgrade").
    pub fn revoke_lost(
        &self,
        serial: &str,
        who: &Who,
        reason: &str,
        now: u64,
    ) -> Result<Changed, TokenError> {
        self.revoke_for(serial, who, reason, true, now)
    }

    /// The guide's "Proofing Upgrade": an Active level-2 token becomes level 3 once its owner
    /// completed proofing, without registering again.
    pub fn upgrade(&self, serial: &str, who: &Who, now: u64) -> Result<Changed, TokenError> {
        let reason = "identity proofing complete: level 3";
        self.act(serial, who, Event::Upgrade, reason, now, |token, life| {
            let owner = token.owner.clone().unwrap_or_default();
            require_proofing(self.store.as_ref(), &owner, 3)?;
            if life.level == Some(3) {
                return Err(TokenError::NotAvailable {
                    serial: serial.to_string(),
                    why: "is level 3 already".into(),
                });
            }
            life.level = Some(3);
            Ok(ChangeSet::new())
        })
    }

    /// The time rules' revocation: suspended more than 60 days, expired more than a year. The
    /// owner is told; the password stays (no one asked for this revocation).
    pub fn auto_revoke(&self, serial: &str, reason: &str, now: u64) -> Result<Changed, TokenError> {
        self.act(
            serial,
            &Who::system(),
            Event::AutoRevoke,
            reason,
            now,
            |token, life| {
                let owner = token.owner.clone();
                revoked(token, life);
                let Some(name) = owner else {
                    return Ok(ChangeSet::new());
                };
                self.tell(ChangeSet::new(), &name, now, |email| {
                    notices::auto_revoked(&name, email, serial, reason)
                })
            },
        )
    }

    /// `changes` with a notification to `username` (made by `make` from the address) added,
    /// if the user has an e-mail address; without one, logged and left out.
    pub(super) fn tell(
        &self,
        changes: ChangeSet,
        username: &str,
        now: u64,
        make: impl FnOnce(&str) -> notify::Notification,
    ) -> Result<ChangeSet, TokenError> {
        match self.store.user(username)?.and_then(|u| u.email) {
            Some(email) => Ok(notify::enqueue(changes, make(&email), now)?),
            None => {
                tracing::warn!(
                    user = username,
                    "the user has no e-mail address: a notification is not sent"
                );
                Ok(changes)
            }
        }
    }

    /// A revocation asked for, with the password reset; `lost`: the token was lost (a level-3
    /// owner's proofing starts over).
    fn revoke_for(
        &self,
        serial: &str,
        who: &Who,
        reason: &str,
        lost: bool,
        now: u64,
    ) -> Result<Changed, TokenError> {
        // Hashed once, outside the retries: argon2id costs tens of milliseconds.
        let password = temporary_password();
        let hash = PasswordHash::new_temporary(password.as_bytes(), &self.argon2)
            .map_err(|e| TokenError::Import(format!("hashing a temporary password: {e}")))?;
        self.act(serial, who, Event::Revoke, reason, now, |token, life| {
            let owner = token.owner.clone();
            let level_3 = life.level == Some(3);
            revoked(token, life);
            let Some(name) = owner else {
                return Ok(ChangeSet::new());
            };
            let mut changes = self.reset_password(&name, &hash, &password, serial, reason, now)?;
            if lost && level_3 {
                let store = self.store.as_ref();
                let reset =
                    proofing::reset_writes(store, &name, who, now).map_err(|e| match e {
                        proofing::ProofingError::Store(e) => TokenError::Store(e),
                        other => TokenError::Import(other.to_string()),
                    })?;
                changes = changes.merge(reset);
            }
            Ok(changes)
        })
    }

    /// The writes that give `username` the temporary password `password` (hashed: `hash`) and
    /// tell them by e-mail.
    fn reset_password(
        &self,
        username: &str,
        hash: &PasswordHash,
        password: &str,
        serial: &str,
        reason: &str,
        now: u64,
    ) -> Result<ChangeSet, TokenError> {
        let Some(user) = self.store.user(username)? else {
            return Ok(ChangeSet::new());
        };
        let email = user.email.clone();
        let changed = User {
            password_hash: hash.as_stored().to_string(),
            ..user.clone()
        };
        let changes = ChangeSet::new().user(Some(user), changed);
        match email {
            Some(to) => {
                let notice = notices::revoked(username, &to, serial, reason, password);
                Ok(notify::enqueue(changes, notice, now)?)
            }
            None => {
                tracing::warn!(
                    user = username,
                    serial,
                    "the user has no e-mail address: the temporary password set at the \
                     revocation cannot be sent; set a new password for the user"
                );
                Ok(changes)
            }
        }
    }

    /// Records that the token's expiry date has passed (logins refuse it from that date on
    /// regardless; see [`TokenService::effective_state`]).
    pub fn expire(&self, serial: &str, now: u64) -> Result<Changed, TokenError> {
        let reason = "the expiry date has passed";
        self.act(
            serial,
            &Who::system(),
            Event::Expire,
            reason,
            now,
            |token, _| match token.expires_at {
                Some(at) if at <= now => Ok(ChangeSet::new()),
                _ => Err(TokenError::Transition {
                    serial: token.serial.clone(),
                    refused: TransitionError::NotFromState {
                        from: token.state,
                        event: Event::Expire,
                    },
                }),
            },
        )
    }

    /// A renewal (guide "Renew OTP Hardware Token"): the expiry date moves `renewal_years`
    /// after the date it had, not after today, and an expired token is active again. Allowed
    /// any time before revocation, well ahead of expiry too.
    pub fn renew(&self, serial: &str, who: &Who, now: u64) -> Result<Changed, TokenError> {
        let years = self.lifecycle.renewal_years;
        let reason = format!("renewed for {years} year(s)");
        self.act(serial, who, Event::Renew, &reason, now, |token, _| {
            let expires = token
                .expires_at
                .ok_or_else(|| TokenError::NoExpiry(token.serial.clone()))?;
            token.expires_at = Some(add_years(expires, years));
            Ok(ChangeSet::new())
        })
    }

    /// An administrator lifts the blocks on registration and resync that too many failed
    /// attempts left (guide "Error Conditions": "needs to reset your OTP Hardware Token").
    pub fn reset(
        &self,
        serial: &str,
        who: &Who,
        reason: &str,
        now: u64,
    ) -> Result<Changed, TokenError> {
        self.act(serial, who, Event::Reset, reason, now, |_, life| {
            life.registration_failures = 0;
            life.resync_failures = 0;
            Ok(ChangeSet::new())
        })
    }

    /// The guide's "Register Your Token": two consecutive codes synchronise the token and bind
    /// it to `username` as Active. It needs a purchase: an unused `license_key`, or else a
    /// sponsorship of the user still open at `now`; an administrator may register without
    /// one (origin `admin`, no expiry date). The expiry date counts from the purchase: the
    /// key's issue, or for a sponsored token its registration. Wrong codes count against the
    /// token; at `lifecycle.registration_attempts` it is blocked for registration until an
    /// administrator resets it. A user holds one token at a time: the current one must be
    /// revoked first.
    pub fn register(
        &self,
        serial: &str,
        username: &str,
        codes: (&str, &str),
        license_key: Option<&str>,
        who: &Who,
        now: u64,
    ) -> Result<Changed, TokenError> {
        if self.store.user(username)?.is_none() {
            return Err(TokenError::NoSuchUser(username.to_string()));
        }
        if let Some(current) = self.store.token_of_user(username)? {
            return Err(TokenError::UserHasToken {
                user: username.to_string(),
                serial: current.serial,
            });
        }
        let purchase = self.purchase(username, license_key, who, now)?;
        self.two_codes(
            TwoCodes::Register,
            serial,
            codes,
            who,
            now,
            |token, life| {
                if token.owner.is_some() {
                    return Err(TokenError::NotAvailable {
                        serial: serial.to_string(),
                        why: "is registered to an account".into(),
                    });
                }
                token.owner = Some(username.to_string());
                let redeemed = Redeemed {
                    serial: serial.to_string(),
                    username: username.to_string(),
                    at: now,
                };
                Ok(match &purchase {
                    Purchase::License(found) => {
                        let key = &found.value;
                        token.expires_at = Some(add_years(key.issued_at, key.years));
                        life.level = Some(key.level);
                        life.origin = Some(Origin::License {
                            issued_at: key.issued_at,
                            years: key.years,
                        });
                        found.rewrite(&LicenseKey {
                            redeemed: Some(redeemed),
                            ..key.clone()
                        })?
                    }
                    Purchase::Sponsorship(found) => {
                        let sponsorship = &found.value;
                        token.expires_at = Some(add_years(now, sponsorship.years));
                        life.level = Some(sponsorship.level);
                        life.origin = Some(Origin::Sponsorship {
                            organization: sponsorship.organization.clone(),
                            years: sponsorship.years,
                        });
                        found.rewrite(&Sponsorship {
                            redeemed: Some(redeemed),
                            ..sponsorship.clone()
                        })?
                    }
                    Purchase::Admin => {
                        life.origin = Some(Origin::Admin);
                        ChangeSet::new()
                    }
                })
            },
        )
    }

    /// What pays for `username`'s registration: the license key given, else an open
    /// sponsorship, else (for an administrator) nothing.
    fn purchase(
        &self,
        username: &str,
        license_key: Option<&str>,
        who: &Who,
        now: u64,
    ) -> Result<Purchase, TokenError> {
        let store = self.store.as_ref();
        if let Some(text) = license_key {
            let found = licensing::license(store, text)?
                .filter(|found| found.value.redeemed.is_none())
                .ok_or(TokenError::LicenseKey)?;
            require_proofing(store, username, found.value.level)?;
            return Ok(Purchase::License(found));
        }
        if let Some(found) = licensing::sponsorship(store, username)? {
            if found.value.usable_at(now) {
                require_proofing(store, username, found.value.level)?;
                let organization = &found.value.organization;
                for application in self
                    .lifecycle
                    .subscriptions
                    .get(organization)
                    .into_iter()
                    .flatten()
                {
                    if !users::accepted_terms(store, username, application)? {
                        return Err(TokenError::TermsRequired {
                            application: application.clone(),
                        });
                    }
                }
                return Ok(Purchase::Sponsorship(found));
            }
        }
        if who.actor == Actor::Admin {
            return Ok(Purchase::Admin);
        }
        Err(TokenError::PurchaseRequired)
    }

    /// The guide's "Reactivate OTP Hardware Token" (resync): two consecutive codes
    /// re-synchronise the token, reset its failure count and unlock it. Only for a token that
    /// is otherwise active (not suspended, expired or revoked). Wrong codes count; at
    /// `lifecycle.resync_attempts` resync is blocked until an administrator resets it.
    pub fn resync(
        &self,
        serial: &str,
        codes: (&str, &str),
        who: &Who,
        now: u64,
    ) -> Result<Changed, TokenError> {
        self.two_codes(TwoCodes::Resync, serial, codes, who, now, |_, _| {
            Ok(ChangeSet::new())
        })
    }

    fn two_codes(
        &self,
        which: TwoCodes,
        serial: &str,
        (code1, code2): (&str, &str),
        who: &Who,
        now: u64,
        mut bind: impl FnMut(&mut Token, &mut Lifecycle) -> Result<ChangeSet, TokenError>,
    ) -> Result<Changed, TokenError> {
        let (event, limit, action) = match which {
            TwoCodes::Register => (
                Event::Register,
                self.lifecycle.registration_attempts,
                "token.register",
            ),
            TwoCodes::Resync => (
                Event::Resync,
                self.lifecycle.resync_attempts,
                "token.resync",
            ),
        };
        let blocked = |serial: &str| match which {
            TwoCodes::Register => TokenError::RegistrationBlocked(serial.to_string()),
            TwoCodes::Resync => TokenError::ResyncBlocked(serial.to_string()),
        };
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Read {
                token,
                mut life,
                stored,
            } = self.read(serial)?;
            let mut new = token.clone();
            let reason = "two consecutive codes";
            let moved = apply(
                &token,
                life.suspended_by,
                &mut new,
                event,
                who.actor,
                reason,
                now,
            )
            .map_err(|e| match (which, e) {
                (TwoCodes::Register, TokenError::Transition { serial, refused }) => {
                    TokenError::NotAvailable {
                        serial,
                        why: format!("cannot be registered ({refused})"),
                    }
                }
                (_, e) => e,
            })?;
            let extra = bind(&mut new, &mut life)?;
            if *which.failures(&mut life) >= limit {
                return Err(blocked(serial));
            }
            if !self.synchronise(&token, &mut new, code1, code2, now)? {
                *which.failures(&mut life) += 1;
                let now_blocked = *which.failures(&mut life) >= limit;
                let entry = self.entry(who, &format!("{action}_failed"), &token, None, now);
                let entry = Entry {
                    username: new.owner.clone(),
                    reason: format!(
                        "wrong codes ({} of {limit} attempts)",
                        *which.failures(&mut life)
                    ),
                    ..entry
                };
                let changes = life_record(serial, &stored, &life)?;
                if self.store.apply(entry.add_to(changes)?)? {
                    return Err(if now_blocked {
                        blocked(serial)
                    } else {
                        TokenError::WrongCodes
                    });
                }
                continue;
            }
            *which.failures(&mut life) = 0;
            let entry = Entry {
                username: new.owner.clone(),
                ..self.entry(who, action, &token, Some(&moved), now)
            };
            if self.write(token, new.clone(), &stored, life, Some(&entry), extra)? {
                return Ok(Changed {
                    token: new,
                    transition: moved,
                });
            }
        }
        Err(TokenError::Contention(serial.to_string()))
    }

    /// Moves `new` (a copy of `token`) to the position two consecutive codes show: false if
    /// they are not two consecutive valid codes within `otp.resync_window`.
    fn synchronise(
        &self,
        token: &Token,
        new: &mut Token,
        code1: &str,
        code2: &str,
        now: u64,
    ) -> Result<bool, TokenError> {
        let seed = self.cipher.open(&token.serial, &token.sealed_seed)?;
        let window = self.otp.resync_window;
        match token.kind {
            TokenKind::Hotp => {
                let Some(last) = hotp::resync(
                    &seed,
                    token.algorithm,
                    token.digits,
                    token.counter,
                    window,
                    code1,
                    code2,
                ) else {
                    return Ok(false);
                };
                new.counter = last.saturating_add(1);
            }
            TokenKind::Totp { period } => {
                let Some(m) = totp::resync(
                    &seed,
                    token.algorithm,
                    token.digits,
                    period,
                    now,
                    window,
                    token.last_step,
                    code1,
                    code2,
                ) else {
                    return Ok(false);
                };
                new.last_step = Some(m.step);
                new.drift = m.drift;
            }
        }
        new.failures = 0;
        Ok(true)
    }

    /// The token `serial` and its lifecycle record, for a status view.
    pub fn details(&self, serial: &str) -> Result<(Token, Lifecycle), TokenError> {
        let Read { token, life, .. } = self.read(serial)?;
        Ok((token, life))
    }

    /// One state-machine event on `serial` for `who`: `adjust` then changes the copies of the
    /// token and its lifecycle record and answers any further writes (a user's password, a
    /// notification); token, record, audit entry and those are written together.
    fn act(
        &self,
        serial: &str,
        who: &Who,
        event: Event,
        reason: &str,
        now: u64,
        mut adjust: impl FnMut(&mut Token, &mut Lifecycle) -> Result<ChangeSet, TokenError>,
    ) -> Result<Changed, TokenError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Read {
                token,
                mut life,
                stored,
            } = self.read(serial)?;
            let mut new = token.clone();
            let moved = apply(
                &token,
                life.suspended_by,
                &mut new,
                event,
                who.actor,
                reason,
                now,
            )?;
            let extra = adjust(&mut new, &mut life)?;
            let action = format!("token.{}", action_name(event));
            let entry = self.entry(who, &action, &token, Some(&moved), now);
            if self.write(token, new.clone(), &stored, life, Some(&entry), extra)? {
                return Ok(Changed {
                    token: new,
                    transition: moved,
                });
            }
        }
        Err(TokenError::Contention(serial.to_string()))
    }

    /// The token `serial` and its lifecycle record.
    pub(super) fn read(&self, serial: &str) -> Result<Read, TokenError> {
        let token = self
            .store
            .token(serial)?
            .ok_or_else(|| TokenError::NoSuchToken(serial.to_string()))?;
        let stored = self.store.record(&lifecycle::key(serial))?;
        let life = match &stored {
            Some(bytes) => crate::store::decode(|| format!("records/token/{serial}"), bytes)?,
            None => Lifecycle::default(),
        };
        Ok(Read {
            token,
            life,
            stored,
        })
    }

    /// Writes `new` over `token`, the lifecycle record `life` over `stored`, `entry` and
    /// `extra`, all together, with the token's entry in the due index moved to when the time
    /// rules next have something to do for it.
    pub(super) fn write(
        &self,
        token: Token,
        new: Token,
        stored: &Option<Vec<u8>>,
        mut life: Lifecycle,
        entry: Option<&Entry>,
        extra: ChangeSet,
    ) -> Result<bool, TokenError> {
        let serial = token.serial.clone();
        let due = rules::next_due(&new, &life, &self.lifecycle);
        let mut changes = ChangeSet::new();
        if due != life.due_at {
            if let Some(old) = life.due_at {
                changes =
                    changes.record(rules::token_due_key(old, &serial), Expect::Anything, None);
            }
            if let Some(at) = due {
                let key = rules::token_due_key(at, &serial);
                changes = changes.record(key, Expect::Anything, Some(Vec::new()));
            }
            life.due_at = due;
        }
        let mut changes = life_record(&serial, stored, &life)?
            .token(Some(token), new)
            .merge(changes)
            .merge(extra);
        if let Some(entry) = entry {
            changes = entry.add_to(changes)?;
        }
        Ok(self.store.apply(changes)?)
    }

    /// The audit entry of `action` on `token` (before the change) by `who`.
    pub(super) fn entry(
        &self,
        who: &Who,
        action: &str,
        token: &Token,
        moved: Option<&Transition>,
        now: u64,
    ) -> Entry {
        Entry {
            at: now,
            actor: who.actor,
            by: who.name.clone(),
            action: action.to_string(),
            serial: Some(token.serial.clone()),
            username: token.owner.clone(),
            from: Some(moved.map_or(TokenService::effective_state(token, now), |m| m.from)),
            to: moved.map(|m| m.to),
            reason: moved.map(|m| m.reason.clone()).unwrap_or_default(),
        }
    }
}

/// What pays for a registration.
enum Purchase {
    License(Found<LicenseKey>),
    Sponsorship(Found<Sponsorship>),
    /// An administrator's registration without a purchase.
    Admin,
}

/// A level-3 token needs the account's identity proofing complete (guide "Proofing Upgrade").
fn require_proofing(store: &dyn Store, username: &str, level: u8) -> Result<(), TokenError> {
    if level >= 3 && !proofing::is_complete(store, username)? {
        return Err(TokenError::ProofingRequired(username.to_string()));
    }
    Ok(())
}

/// A revocation's change besides the state: the token leaves its owner's account (so the
/// owner may register another) and the lifecycle record remembers who held it.
fn revoked(token: &mut Token, life: &mut Lifecycle) {
    life.former_owner = token.owner.take().or(life.former_owner.take());
    life.suspended_by = None;
    life.suspended_at = None;
}

/// A temporary password: 15 random base32 characters (75 bits) in groups of five.
fn temporary_password() -> Zeroizing<String> {
    let mut random = Zeroizing::new([0u8; 10]);
    rand::rngs::OsRng.fill_bytes(random.as_mut());
    let text = Zeroizing::new(
        data_encoding::BASE32_NOPAD
            .encode(random.as_ref())
            .to_lowercase(),
    );
    Zeroizing::new(
        text.as_bytes()
            .chunks(5)
            .take(3)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-"),
    )
}

/// A change set writing the lifecycle record `life` of `serial` over `stored` (as read).
fn life_record(
    serial: &str,
    stored: &Option<Vec<u8>>,
    life: &Lifecycle,
) -> Result<ChangeSet, StoreError> {
    let value = crate::store::encode(life)?;
    Ok(ChangeSet::new().record(
        lifecycle::key(serial),
        Expect::found(stored.clone()),
        Some(value),
    ))
}

/// How the audit names an event's action (`token.` + this).
fn action_name(event: Event) -> &'static str {
    match event {
        Event::Register => "register",
        Event::FailureLimit => "lock",
        Event::Resync => "resync",
        Event::Suspend => "suspend",
        Event::Reinstate => "reinstate",
        Event::Expire => "expire",
        Event::Renew => "renew",
        Event::Revoke => "revoke",
        Event::AutoRevoke => "auto_revoke",
        Event::Reset => "reset",
        Event::Upgrade => "upgrade",
    }
}

#[cfg(test)]
mod tests;
