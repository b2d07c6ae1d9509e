//! The sweeper: applies the token lifecycle's time rules ([`crate::token::rules`]) at start
//! and then every `[lifecycle] sweep_interval_secs`, to the tokens and sponsorships the due
//! index files at or before now. Each step is durable before the next (a notification is
//! never sent for a change a crash could undo), and a sweep interrupted by a crash is done
//! again at the next start without doing anything twice.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::Clock;
use crate::store::StoreError;
use crate::token::rules::{self, DueEntry, DUE_PREFIX};
use crate::token::TokenService;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Tokens and sponsorships looked at.
    pub entries: usize,
    /// Rules applied (expiries, notices, reminders, revocations, lapses).
    pub steps: usize,
    /// Entries that failed (logged; tried again at the next sweep).
    pub failed: usize,
}

/// Applies every rule due at `now`; each due index entry is handled once.
pub fn sweep_once(tokens: &TokenService, now: u64) -> Result<SweepReport, StoreError> {
    let store = tokens.store();
    let end = rules::due_until(now);
    let mut report = SweepReport::default();
    crate::store::scan(store.as_ref(), DUE_PREFIX, &end, |key, _| {
        report.entries += 1;
        let done = match rules::parse_due_key(key) {
            Some(DueEntry::Token { at, serial }) => tokens
                .sweep_token(&serial, at, now)
                .map(|steps| steps.len()),
            Some(DueEntry::Sponsorship { at, username }) => tokens
                .sweep_sponsorship(&username, at, now)
                .map(usize::from),
            None => {
                tracing::warn!(key = %String::from_utf8_lossy(key), "not a due index entry");
                Ok(0)
            }
        };
        match done
            .map_err(|e| e.to_string())
            .and_then(|steps| store.sync().map(|()| steps).map_err(|e| e.to_string()))
        {
            Ok(steps) => report.steps += steps,
            Err(e) => {
                report.failed += 1;
                tracing::error!(key = %String::from_utf8_lossy(key), error = %e, "time rule failed");
            }
        }
        Ok(true)
    })?;
    Ok(report)
}

/// The sweeper's thread.
pub struct Sweeper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    /// Sweeps now, then every `interval`, until stopped.
    pub fn start(
        tokens: Arc<TokenService>,
        clock: Arc<dyn Clock>,
        interval: Duration,
    ) -> std::io::Result<Sweeper> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("otpgate-sweeper".into())
            .spawn(move || loop {
                match sweep_once(&tokens, clock.now()) {
                    Ok(report) if report.steps > 0 || report.failed > 0 => tracing::info!(
                        entries = report.entries,
                        steps = report.steps,
                        failed = report.failed,
                        "time rules applied"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "sweep failed; trying again later"),
                }
                let (stopped, wake) = &*signal;
                let guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
                let (guard, _) = wake
                    .wait_timeout_while(guard, interval, |stopped| !*stopped)
                    .unwrap_or_else(|p| p.into_inner());
                if *guard {
                    return;
                }
            })?;
        Ok(Sweeper {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops after the step in progress and waits for the thread.
    pub fn stop(mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The time rules with a manual clock: years in milliseconds.

    use super::*;
    use crate::audit::Who;
    use crate::clock::{add_years, ManualClock};
    use crate::licensing::{self, SponsorshipRequest};
    use crate::notify::Pending;
    use crate::otp::TokenKind;
    use crate::store::{ChangeSet, Token, User};
    use crate::token::service::tests::{hotp_code, imported, service, user, NOW};
    use crate::token::{OtpOutcome, TokenError, TokenState};

    const DAY: u64 = 86_400;

    /// alice (with an e-mail address) and bob; H1 registered to alice with a one-year key
    /// issued at NOW; H2 in stock.
    fn setup(dir: &std::path::Path) -> (TokenService, u64) {
        let svc = service(dir);
        let with_email = |name: &str| User {
            email: Some(format!("{name}@example.org")),
            ..user(name)
        };
        svc.store()
            .create_users(&[with_email("alice"), with_email("bob")])
            .expect("users");
        svc.import(
            vec![
                imported("H1", TokenKind::Hotp, None),
                imported("H2", TokenKind::Hotp, None),
            ],
            NOW,
        )
        .expect("import");
        let key = licensing::issue_license_key(svc.store().as_ref(), 2, 1, &Who::admin("a"), NOW)
            .expect("key");
        let (a, b) = (hotp_code(0), hotp_code(1));
        svc.register(
            "H1",
            "alice",
            (&a, &b),
            Some(&key),
            &Who::user("alice"),
            NOW,
        )
        .expect("register");
        (svc, add_years(NOW, 1))
    }

    /// The kinds of the notifications in the outbox, oldest first.
    fn outbox(svc: &TokenService) -> Vec<String> {
        svc.store()
            .records(b"outbox/", b"outbox0", 100)
            .expect("outbox")
            .iter()
            .map(|(_, v)| {
                let entry: Pending = postcard::from_bytes(v).expect("entry");
                entry.notification.kind
            })
            .collect()
    }

    fn state(svc: &TokenService, serial: &str) -> TokenState {
        svc.store()
            .token(serial)
            .expect("read")
            .expect("token")
            .state
    }

    fn sweep_at(svc: &TokenService, clock: &ManualClock, at: u64) -> SweepReport {
        let now = clock.now();
        assert!(at >= now, "time runs forward");
        clock.advance(Duration::from_secs(at - now));
        let report = sweep_once(svc, clock.now()).expect("sweep");
        assert_eq!(report.failed, 0);
        report
    }

    #[test]
    fn an_expired_token_is_noticed_expired_reminded_and_revoked_a_year_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (svc, expires) = setup(dir.path());
        let clock = ManualClock::at(NOW);
        assert_eq!(sweep_at(&svc, &clock, NOW).steps, 0);
        sweep_at(&svc, &clock, expires - 31 * DAY);
        assert!(outbox(&svc).is_empty());
        sweep_at(&svc, &clock, expires - 30 * DAY);
        assert_eq!(outbox(&svc), ["token.expiry_notice"]);
        // Swept again (as after a crash): nothing twice.
        assert_eq!(sweep_at(&svc, &clock, expires - 29 * DAY).steps, 0);
        assert_eq!(outbox(&svc).len(), 1);
        sweep_at(&svc, &clock, expires);
        assert_eq!(state(&svc, "H1"), TokenState::Expired);
        let revoke_at = expires + 365 * DAY;
        for days in [30, 15, 3] {
            sweep_at(&svc, &clock, revoke_at - days * DAY);
            sweep_at(&svc, &clock, revoke_at - days * DAY + 60);
        }
        assert_eq!(
            outbox(&svc),
            [
                "token.expiry_notice",
                "token.revocation_reminder",
                "token.revocation_reminder",
                "token.revocation_reminder"
            ]
        );
        sweep_at(&svc, &clock, revoke_at);
        assert_eq!(state(&svc, "H1"), TokenState::Revoked);
        assert_eq!(
            outbox(&svc).last().map(String::as_str),
            Some("token.auto_revoked")
        );
        let alice = svc.store().user("alice").expect("read").expect("alice");
        assert_eq!(
            alice.password_hash,
            user("alice").password_hash,
            "password kept"
        );
        // Nothing is left due for it.
        assert_eq!(sweep_at(&svc, &clock, revoke_at + 400 * DAY).entries, 0);
    }

    #[test]
    fn a_suspension_is_revoked_after_60_days_and_missed_reminders_make_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (svc, _) = setup(dir.path());
        let clock = ManualClock::at(NOW);
        svc.suspend("H1", &Who::admin("a"), "investigation", NOW)
            .expect("suspend");
        let revoke_at = NOW + 60 * DAY;
        // The sweeper was not running for the first two reminders: one is sent for all.
        sweep_at(&svc, &clock, revoke_at - 2 * DAY);
        assert_eq!(outbox(&svc), ["token.revocation_reminder"]);
        sweep_at(&svc, &clock, revoke_at - DAY);
        assert_eq!(outbox(&svc).len(), 1);
        sweep_at(&svc, &clock, revoke_at);
        assert_eq!(state(&svc, "H1"), TokenState::Revoked);
        assert_eq!(
            svc.check_otp("H1", &hotp_code(2), clock.now())
                .expect("check"),
            OtpOutcome::NotUsable(TokenState::Revoked)
        );
    }

    #[test]
    fn a_reinstated_or_renewed_token_leaves_the_revocation_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (svc, expires) = setup(dir.path());
        let clock = ManualClock::at(NOW);
        svc.suspend("H1", &Who::user("alice"), "away", NOW)
            .expect("suspend");
        sweep_at(&svc, &clock, NOW + 31 * DAY);
        svc.reinstate("H1", &Who::user("alice"), "back", clock.now())
            .expect("reinstate");
        sweep_at(&svc, &clock, NOW + 61 * DAY);
        assert_eq!(state(&svc, "H1"), TokenState::Active);
        // Noticed, renewed: the next notice is for the new date.
        sweep_at(&svc, &clock, expires - 30 * DAY);
        svc.renew("H1", &Who::user("alice"), clock.now())
            .expect("renew");
        sweep_at(&svc, &clock, expires);
        assert_eq!(state(&svc, "H1"), TokenState::Active);
        let renewed = add_years(expires, 1);
        sweep_at(&svc, &clock, renewed - 30 * DAY);
        let notices = outbox(&svc)
            .iter()
            .filter(|k| *k == "token.expiry_notice")
            .count();
        assert_eq!(notices, 2);
    }

    #[test]
    fn an_unused_sponsorship_lapses_after_its_date() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (svc, _) = setup(dir.path());
        let clock = ManualClock::at(NOW);
        let request = SponsorshipRequest {
            username: "bob".into(),
            organization: "Acme Aero".into(),
            level: 2,
            register_by: NOW + 10 * DAY,
            years: 1,
        };
        licensing::sponsor(svc.store().as_ref(), request, &Who::admin("a"), NOW).expect("sponsor");
        sweep_at(&svc, &clock, NOW + 10 * DAY);
        assert!(outbox(&svc).is_empty());
        sweep_at(&svc, &clock, NOW + 10 * DAY + 1);
        assert_eq!(outbox(&svc), ["sponsorship.lapsed"]);
        let found = licensing::sponsorship(svc.store().as_ref(), "bob")
            .expect("read")
            .expect("kept");
        assert!(!found.value.usable_at(clock.now()));
        let (a, b) = (hotp_code(0), hotp_code(1));
        assert!(matches!(
            svc.register("H2", "bob", (&a, &b), None, &Who::user("bob"), clock.now()),
            Err(TokenError::PurchaseRequired)
        ));
        assert_eq!(sweep_at(&svc, &clock, NOW + 20 * DAY).entries, 0);
    }

    /// A token changed outside the rules (an old build's, or an index entry lost) is filed
    /// again when swept: the index is repaired, not trusted blindly.
    #[test]
    fn a_stale_due_entry_is_refiled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (svc, expires) = setup(dir.path());
        let stale = crate::token::rules::token_due_key(NOW, "H1");
        svc.store()
            .apply(ChangeSet::new().record(stale, crate::store::Expect::Anything, Some(Vec::new())))
            .expect("stale entry");
        let report = sweep_once(&svc, NOW + DAY).expect("sweep");
        assert_eq!((report.entries, report.steps), (1, 0));
        let token: Token = svc.store().token("H1").expect("read").expect("token");
        assert_eq!(token.expires_at, Some(expires));
        assert_eq!(sweep_once(&svc, NOW + 2 * DAY).expect("sweep").entries, 0);
    }
}
