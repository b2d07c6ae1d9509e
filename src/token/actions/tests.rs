//! The lifecycle rules of the guide, action by action, on a real sled store; time moves by
//! the `now` each call is given (an injected clock's reading), months in milliseconds.

use crate::audit::{self, Who};
use crate::clock::{add_years, Clock, ManualClock};
use crate::otp::TokenKind;
use crate::store::Token;
use crate::token::lifecycle::{self, Lifecycle};
use crate::token::service::tests::{hotp_code, imported, service, user, NOW};
use crate::token::{Actor, OtpOutcome, TokenError, TokenService, TokenState, TransitionError};

const DAY: u64 = 86_400;

/// A service with users alice and bob and unassigned HOTP tokens H1 and H2 (counter 0).
fn stock(dir: &std::path::Path) -> TokenService {
    let svc = service(dir);
    svc.store()
        .create_users(&[user("alice"), user("bob")])
        .expect("users");
    svc.import(
        vec![
            imported("H1", TokenKind::Hotp, None),
            imported("H2", TokenKind::Hotp, None),
        ],
        NOW,
    )
    .expect("import");
    svc
}

fn admin() -> Who {
    Who::admin("helpdesk-1")
}

fn codes(first: u64) -> (String, String) {
    (hotp_code(first), hotp_code(first + 1))
}

fn register(svc: &TokenService, serial: &str, name: &str, first: u64) -> Result<Token, TokenError> {
    let (a, b) = codes(first);
    svc.register(serial, name, (&a, &b), None, &Who::admin("registrar"), NOW)
        .map(|c| c.token)
}

fn life(svc: &TokenService, serial: &str) -> Lifecycle {
    svc.store()
        .record(&lifecycle::key(serial))
        .expect("read")
        .map(|bytes| postcard::from_bytes(&bytes).expect("decode"))
        .unwrap_or_default()
}

fn refused(result: Result<crate::token::Changed, TokenError>) -> TransitionError {
    match result {
        Err(TokenError::Transition { refused, .. }) => refused,
        other => panic!("expected a refused transition, got {other:?}"),
    }
}

#[test]
fn a_revoked_token_keeps_its_record_and_its_owner_registers_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = stock(dir.path());
    register(&svc, "H1", "alice", 0).expect("register H1");
    // One token per account: the current one must be revoked first.
    assert!(matches!(
        register(&svc, "H2", "alice", 0),
        Err(TokenError::UserHasToken { serial, .. }) if serial == "H1"
    ));
    let revoked = svc
        .revoke("H1", &admin(), "lost", NOW + 10)
        .expect("revoke");
    assert_eq!(revoked.transition.from, TokenState::Active);
    assert_eq!(revoked.transition.to, TokenState::Revoked);
    let kept = svc.store().token("H1").expect("read").expect("kept");
    assert_eq!(
        (kept.state, kept.owner.as_deref()),
        (TokenState::Revoked, None)
    );
    assert_eq!(life(&svc, "H1").former_owner.as_deref(), Some("alice"));
    assert_eq!(
        svc.check_otp("H1", &hotp_code(2), NOW).expect("check"),
        OtpOutcome::NotUsable(TokenState::Revoked)
    );
    register(&svc, "H2", "alice", 0).expect("alice registers another");
    // The revoked serial, by anyone, ever: not available.
    for name in ["alice", "bob"] {
        if name == "alice" {
            svc.revoke("H2", &Who::user("alice"), "damaged", NOW + 20)
                .expect("revoke H2");
        }
        assert!(matches!(
            register(&svc, "H1", name, 2),
            Err(TokenError::NotAvailable { serial, .. }) if serial == "H1"
        ));
    }
    // The history of H1: registered, revoked; who, when, from and to.
    let filter = audit::Filter {
        serial: Some("H1".into()),
        ..audit::Filter::default()
    };
    let trail = audit::query(svc.store().as_ref(), &filter, 100).expect("audit");
    let actions: Vec<_> = trail
        .iter()
        .map(|e| (e.action.as_str(), e.by.as_str(), e.from, e.to))
        .collect();
    assert_eq!(
        actions,
        [
            (
                "token.register",
                "registrar",
                Some(TokenState::Unassigned),
                Some(TokenState::Active)
            ),
            (
                "token.revoke",
                "helpdesk-1",
                Some(TokenState::Active),
                Some(TokenState::Revoked)
            ),
        ]
    );
    assert!(trail.iter().all(|e| e.username.as_deref() == Some("alice")));
    assert_eq!(trail[1].reason, "lost");
    assert_eq!(trail[1].at, NOW + 10);
    let by_time = audit::Filter {
        username: Some("alice".into()),
        since: Some(NOW + 11),
        until: Some(NOW + 20),
        ..audit::Filter::default()
    };
    let later = audit::query(svc.store().as_ref(), &by_time, 100).expect("audit");
    assert_eq!(
        later.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["token.revoke"],
        "H2's revocation only: H2's registration was at NOW"
    );
}

#[test]
fn registration_is_blocked_after_three_wrong_attempts_until_an_admin_resets_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = stock(dir.path());
    let wrong = (hotp_code(0), hotp_code(2));
    let attempt = || svc.register("H1", "alice", (&wrong.0, &wrong.1), None, &admin(), NOW);
    assert!(matches!(attempt(), Err(TokenError::WrongCodes)));
    assert!(matches!(attempt(), Err(TokenError::WrongCodes)));
    assert!(matches!(attempt(), Err(TokenError::RegistrationBlocked(_))));
    // Blocked: the right codes do not help.
    assert!(matches!(
        register(&svc, "H1", "alice", 0),
        Err(TokenError::RegistrationBlocked(_))
    ));
    // Only an administrator resets it.
    assert_eq!(
        refused(svc.reset("H1", &Who::user("alice"), "", NOW)),
        TransitionError::NotByActor {
            actor: Actor::User,
            event: crate::token::Event::Reset
        }
    );
    svc.reset("H1", &admin(), "called support", NOW)
        .expect("reset");
    let token = register(&svc, "H1", "alice", 0).expect("register after the reset");
    assert_eq!(token.state, TokenState::Active);
    assert_eq!(life(&svc, "H1").registration_failures, 0);
    // Unknown serial and anything else are their own errors.
    assert!(matches!(
        register(&svc, "NOPE", "bob", 0),
        Err(TokenError::NoSuchToken(_))
    ));
    assert!(matches!(
        register(&svc, "H2", "nobody", 0),
        Err(TokenError::NoSuchUser(_))
    ));
}

#[test]
fn resync_unlocks_only_an_otherwise_active_token_and_is_blocked_after_three_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = stock(dir.path());
    register(&svc, "H1", "alice", 0).expect("register");
    for _ in 0..3 {
        svc.check_otp("H1", "000000", NOW).expect("check");
    }
    let locked = svc.store().token("H1").expect("read").expect("token");
    assert_eq!(locked.state, TokenState::Locked);
    let lock = audit::query(svc.store().as_ref(), &audit::Filter::default(), 100)
        .expect("audit")
        .into_iter()
        .find(|e| e.action == "token.lock")
        .expect("the login's lock is audited");
    assert_eq!((lock.actor, lock.by.as_str()), (Actor::Login, "radius"));
    let wrong = (hotp_code(5), hotp_code(7));
    let resync =
        |first: &str, second: &str| svc.resync("H1", (first, second), &Who::user("alice"), NOW);
    assert!(matches!(
        resync(&wrong.0, &wrong.1),
        Err(TokenError::WrongCodes)
    ));
    assert!(matches!(
        resync(&wrong.0, &wrong.1),
        Err(TokenError::WrongCodes)
    ));
    assert!(matches!(
        resync(&wrong.0, &wrong.1),
        Err(TokenError::ResyncBlocked(_))
    ));
    let (a, b) = codes(5);
    assert!(matches!(resync(&a, &b), Err(TokenError::ResyncBlocked(_))));
    svc.reset("H1", &admin(), "", NOW).expect("reset");
    let unlocked = resync(&a, &b).expect("resync").token;
    assert_eq!((unlocked.state, unlocked.counter), (TokenState::Active, 7));
    // Suspended: no resync until reinstated.
    svc.suspend("H1", &admin(), "investigation", NOW)
        .expect("suspend");
    let (c, d) = codes(7);
    assert_eq!(
        refused(resync(&c, &d)),
        TransitionError::NotFromState {
            from: TokenState::Suspended,
            event: crate::token::Event::Resync
        }
    );
}

#[test]
fn a_user_reinstates_only_a_suspension_of_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = stock(dir.path());
    register(&svc, "H1", "alice", 0).expect("register");
    let alice = Who::user("alice");
    svc.suspend("H1", &alice, "travelling", NOW)
        .expect("user suspends");
    assert_eq!(life(&svc, "H1").suspended_by, Some(Actor::User));
    assert_eq!(
        svc.check_otp("H1", &hotp_code(2), NOW).expect("check"),
        OtpOutcome::NotUsable(TokenState::Suspended)
    );
    svc.reinstate("H1", &alice, "back", NOW)
        .expect("user reinstates");
    svc.suspend("H1", &admin(), "policy", NOW)
        .expect("admin suspends");
    assert_eq!(
        refused(svc.reinstate("H1", &alice, "back", NOW)),
        TransitionError::NotByActor {
            actor: Actor::User,
            event: crate::token::Event::Reinstate
        }
    );
    svc.reinstate("H1", &admin(), "cleared", NOW)
        .expect("admin reinstates");
    let after = life(&svc, "H1");
    assert_eq!((after.suspended_by, after.suspended_at), (None, None));
    assert_eq!(
        svc.check_otp("H1", &hotp_code(2), NOW).expect("check"),
        OtpOutcome::Accepted
    );
}

/// Expiry on the date, renewal a year after the date the token had (not after today), an
/// expired token active again; months go by on a manual clock.
#[test]
fn renewal_counts_from_the_original_expiry_date_and_reactivates_an_expired_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = stock(dir.path());
    let clock = ManualClock::at(NOW);
    register(&svc, "H1", "alice", 0).expect("register");
    assert!(matches!(
        svc.renew("H1", &admin(), clock.now()),
        Err(TokenError::NoExpiry(_))
    ));
    let token = svc.store().token("H1").expect("read").expect("token");
    let expires = NOW + 90 * DAY;
    let bought = Token {
        expires_at: Some(expires),
        ..token.clone()
    };
    assert!(svc.store().replace_token(&token, &bought).expect("cas"));
    // Renewed well ahead of expiry: a year after the expiry date, not after today.
    clock.advance(std::time::Duration::from_secs(30 * DAY));
    let renewed = svc.renew("H1", &admin(), clock.now()).expect("renew");
    assert_eq!(renewed.token.expires_at, Some(add_years(expires, 1)));
    assert_eq!(renewed.transition.to, TokenState::Active);
    // Not expired before the date...
    assert!(svc.expire("H1", clock.now()).is_err());
    // ... expired from it: logins refused at once, the state recorded by the time rule.
    let expiry = add_years(expires, 1);
    clock.advance(std::time::Duration::from_secs(expiry - clock.now()));
    assert_eq!(
        svc.check_otp("H1", &hotp_code(2), clock.now())
            .expect("check"),
        OtpOutcome::NotUsable(TokenState::Expired)
    );
    let expired = svc.expire("H1", clock.now()).expect("expire");
    assert_eq!(expired.transition.to, TokenState::Expired);
    clock.advance(std::time::Duration::from_secs(100 * DAY));
    let back = svc
        .renew("H1", &Who::user("alice"), clock.now())
        .expect("renew");
    assert_eq!(
        (back.transition.from, back.transition.to),
        (TokenState::Expired, TokenState::Active)
    );
    assert_eq!(back.token.expires_at, Some(add_years(expiry, 1)));
    assert_eq!(
        svc.check_otp("H1", &hotp_code(2), clock.now())
            .expect("check"),
        OtpOutcome::Accepted
    );
    // Revoked: no renewal, ever.
    svc.auto_revoke("H1", "test", clock.now())
        .expect_err("active: no auto-revoke");
    svc.revoke("H1", &admin(), "gone", clock.now())
        .expect("revoke");
    assert!(matches!(
        refused(svc.renew("H1", &admin(), clock.now())),
        TransitionError::NotFromState { .. }
    ));
}

/// A login racing a lifecycle action on the same token: the action's change set sees the
/// login's change and retries; neither undoes the other.
#[test]
fn an_action_and_logins_on_one_token_keep_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = std::sync::Arc::new(stock(dir.path()));
    register(&svc, "H1", "alice", 0).expect("register");
    let logins = {
        let svc = std::sync::Arc::clone(&svc);
        std::thread::spawn(move || {
            (2..200)
                .filter(|&c| {
                    svc.check_otp("H1", &hotp_code(c), NOW).expect("check") == OtpOutcome::Accepted
                })
                .count()
        })
    };
    let mut actions = 0;
    while !logins.is_finished() && actions < 200 {
        svc.reset("H1", &admin(), "", NOW).expect("reset");
        actions += 1;
    }
    let accepted = logins.join().expect("logins");
    let token = svc.store().token("H1").expect("read").expect("token");
    assert_eq!(accepted, 198, "every login counted");
    assert_eq!(token.counter, 200);
    assert!(actions > 0);
}

/// A purchase pays for a registration: a license key (once; the expiry counts from its
/// issue), or an open sponsorship (the expiry counts from the registration; after its
/// register-by date it has lapsed). A user without either is refused; level 3 needs proofing.
#[test]
fn a_registration_needs_a_license_key_or_an_open_sponsorship() {
    use crate::licensing::{self, SponsorshipRequest};
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = stock(dir.path());
    let store = svc.store().as_ref();
    let alice = Who::user("alice");
    let (a, b) = codes(0);
    let by_user = |serial: &str, name: &str, key: Option<&str>, now: u64| {
        svc.register(serial, name, (&a, &b), key, &Who::user(name), now)
    };
    assert!(matches!(
        by_user("H1", "alice", None, NOW),
        Err(TokenError::PurchaseRequired)
    ));
    let issued = NOW - 10 * DAY;
    let key = licensing::issue_license_key(store, 2, 3, &admin(), issued).expect("key");
    let level3 = licensing::issue_license_key(store, 3, 1, &admin(), issued).expect("key");
    assert!(matches!(
        by_user("H1", "alice", Some(&level3), NOW),
        Err(TokenError::ProofingRequired(_))
    ));
    // Wrong codes do not spend the key.
    let (x, y) = codes(9);
    assert!(matches!(
        svc.register("H1", "alice", (&y, &x), Some(&key), &alice, NOW),
        Err(TokenError::WrongCodes)
    ));
    let token = by_user("H1", "alice", Some(&key), NOW)
        .expect("register")
        .token;
    assert_eq!(token.expires_at, Some(add_years(issued, 3)));
    let record = life(&svc, "H1");
    assert_eq!(record.level, Some(2));
    assert_eq!(
        record.origin,
        Some(lifecycle::Origin::License {
            issued_at: issued,
            years: 3
        })
    );
    assert!(matches!(
        by_user("H2", "bob", Some(&key), NOW),
        Err(TokenError::LicenseKey)
    ));
    // bob's sponsorship: open until its date, then lapsed.
    let request = SponsorshipRequest {
        username: "bob".into(),
        organization: "Acme Aero".into(),
        level: 2,
        register_by: NOW + 30 * DAY,
        years: 2,
    };
    licensing::sponsor(store, request, &admin(), NOW).expect("sponsor");
    assert!(matches!(
        by_user("H2", "bob", None, NOW + 31 * DAY),
        Err(TokenError::PurchaseRequired)
    ));
    // Acme Aero subscribes to `vpn`: its terms first.
    assert!(matches!(
        by_user("H2", "bob", None, NOW + 29 * DAY),
        Err(TokenError::TermsRequired { application }) if application == "vpn"
    ));
    crate::users::accept_terms(store, "bob", "vpn", &Who::user("bob"), NOW).expect("terms");
    let sponsored = by_user("H2", "bob", None, NOW + 29 * DAY)
        .expect("sponsored registration")
        .token;
    assert_eq!(sponsored.expires_at, Some(add_years(NOW + 29 * DAY, 2)));
    assert_eq!(
        life(&svc, "H2").origin,
        Some(lifecycle::Origin::Sponsorship {
            organization: "Acme Aero".into(),
            years: 2
        })
    );
}
