//! Applying the time rules ([`super::rules`]) to one token or one sponsorship: each due step
//! is one change set (the state change or the notice, the lifecycle record that remembers it,
//! the audit entry, the notification, the due index entry moved on), so a sweep interrupted
//! by a crash is simply done again, and nothing is done twice.

use crate::audit::{Entry, Who};
use crate::licensing;
use crate::store::{ChangeSet, Expect};

use super::actions::Read;
use super::notices;
use super::rules::{self, Due};
use super::service::{TokenError, TokenService, MAX_CAS_ATTEMPTS};
use super::state::TokenState;

/// Steps one sweep of a token may take (expire, notice, reminder, revocation...).
const MAX_STEPS: usize = 8;

impl TokenService {
    /// Applies every time rule due at `now` to token `serial`, found in the due index under
    /// `at`; returns what was done. An entry that no longer matches the token's next due time
    /// (left by an interrupted change, or a stale copy) is removed.
    pub fn sweep_token(&self, serial: &str, at: u64, now: u64) -> Result<Vec<Due>, TokenError> {
        let mut done = Vec::new();
        for _ in 0..MAX_STEPS {
            let Read {
                token,
                mut life,
                stored,
            } = self.read(serial)?;
            let Some(due) = rules::due_now(&token, &life, &self.lifecycle, now) else {
                // Nothing (more) to do: file the token under its next due time.
                let next = rules::next_due(&token, &life, &self.lifecycle);
                let mut extra = ChangeSet::new();
                if Some(at) != next && Some(at) != life.due_at {
                    let stale = rules::token_due_key(at, serial);
                    extra = extra.record(stale, Expect::Anything, None);
                }
                if next != life.due_at || !extra.is_empty() {
                    self.write(token.clone(), token, &stored, life, None, extra)?;
                }
                return Ok(done);
            };
            match &due {
                Due::Expire => {
                    self.expire(serial, now)?;
                }
                Due::AutoRevoke { why } => {
                    self.auto_revoke(serial, why, now)?;
                }
                Due::ExpiryNotice { expires_at } => {
                    life.expiry_notice_for = Some(*expires_at);
                    let extra = match &token.owner {
                        Some(owner) => self.tell(ChangeSet::new(), owner, now, |email| {
                            notices::expiry_notice(owner, email, serial, *expires_at)
                        })?,
                        None => ChangeSet::new(),
                    };
                    let entry = Entry {
                        reason: "expiry notice".into(),
                        to: Some(TokenService::effective_state(&token, now)),
                        ..self.entry(&Who::system(), "token.expiry_notice", &token, None, now)
                    };
                    self.write(token.clone(), token, &stored, life, Some(&entry), extra)?;
                }
                Due::Reminder {
                    revoke_at,
                    days,
                    covers,
                } => {
                    if life.reminders_for != Some(*revoke_at) {
                        life.reminders_for = Some(*revoke_at);
                        life.reminders_sent.clear();
                    }
                    life.reminders_sent.extend(covers.iter().copied());
                    life.reminders_sent.sort_unstable();
                    life.reminders_sent.dedup();
                    let suspended = token.state == TokenState::Suspended;
                    let extra = match token.owner.as_deref().or(life.former_owner.as_deref()) {
                        Some(owner) => self.tell(ChangeSet::new(), owner, now, |email| {
                            notices::revocation_reminder(
                                owner, email, serial, *revoke_at, *days, suspended,
                            )
                        })?,
                        None => ChangeSet::new(),
                    };
                    let entry = Entry {
                        reason: format!("revocation in {days} days"),
                        to: Some(TokenService::effective_state(&token, now)),
                        ..self.entry(
                            &Who::system(),
                            "token.revocation_reminder",
                            &token,
                            None,
                            now,
                        )
                    };
                    self.write(token.clone(), token, &stored, life, Some(&entry), extra)?;
                }
            }
            done.push(due);
        }
        Ok(done)
    }

    /// Tells `username` their sponsorship lapsed if it was not used by its register-by date,
    /// and removes its due index entry (filed under `at`) once it has no more use.
    /// True if it lapsed now.
    pub fn sweep_sponsorship(&self, username: &str, at: u64, now: u64) -> Result<bool, TokenError> {
        let store = self.store.as_ref();
        let due_key = rules::sponsor_due_key(at, username);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let drop_entry = ChangeSet::new().record(due_key.clone(), Expect::Anything, None);
            let Some(found) = licensing::sponsorship(store, username)? else {
                store.apply(drop_entry)?;
                return Ok(false);
            };
            let sponsorship = &found.value;
            if sponsorship.redeemed.is_some() {
                store.apply(drop_entry)?;
                return Ok(false);
            }
            if now <= sponsorship.register_by {
                // Not yet: a sponsorship given again since has an entry of its own.
                if at != rules::sponsorship_due(sponsorship) {
                    store.apply(drop_entry)?;
                }
                return Ok(false);
            }
            let entry = Entry {
                at: now,
                actor: crate::token::Actor::System,
                by: Who::system().name,
                action: "sponsorship.lapse".into(),
                serial: None,
                username: Some(username.to_string()),
                from: None,
                to: None,
                reason: format!(
                    "not registered by the date {} gave",
                    sponsorship.organization
                ),
            };
            // The lapse is the register-by date passing unused (`Sponsorship::usable_at`); what
            // is recorded is that the user was told, with the entry that asked for it gone.
            // Expecting the sponsorship as read: one given again meanwhile is not told as lapsed.
            let unchanged = Some(found.stored.clone());
            let changes = drop_entry.record(
                found.key.clone(),
                crate::store::Expect::Value(found.stored.clone()),
                unchanged,
            );
            let organization = sponsorship.organization.clone();
            let changes = self.tell(changes, username, now, |email| {
                notices::sponsorship_lapsed(username, email, &organization)
            })?;
            if store.apply(entry.add_to(changes)?)? {
                return Ok(true);
            }
        }
        Err(TokenError::Contention(username.to_string()))
    }
}
