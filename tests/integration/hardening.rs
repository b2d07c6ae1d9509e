//! Login-path hardening (issue 11), tried as an attacker on the network would: real packets over
//! loopback against the real server. Each test failed on the build before the change. The
//! timing points (no reply-time oracle) are in `reject_timing`, the PSKC key in `cli`.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use otpgate::radius::nas::{self, CheckedReply};
use radius::core::code::Code;

use crate::harness::*;

const SEED_A: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; // "12345678901234567890"
const SEED_B: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// Sends every `(user, password)` at once from one socket (identifiers 0..n, so n <= 256) and
/// returns the checked replies in request order; `None` for a request left unanswered.
fn burst(app: &Appliance, requests: &[(&str, String)]) -> Vec<Option<CheckedReply>> {
    assert!(requests.len() <= 256);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let built: Vec<_> = requests
        .iter()
        .enumerate()
        .map(|(id, (user, password))| {
            nas::access_request(
                u8::try_from(id).expect("id"),
                user,
                password.as_bytes(),
                SECRET.as_bytes(),
                true,
            )
            .expect("build")
        })
        .collect();
    for request in &built {
        socket.send_to(&request.bytes, app.addr()).expect("send");
    }
    let mut replies: HashMap<u8, CheckedReply> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while replies.len() < built.len() && Instant::now() < deadline {
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let id = buf[1];
        let request = &built[usize::from(id)];
        let checked = nas::check_reply(&buf[..n], request, SECRET.as_bytes()).expect("valid");
        replies.insert(id, checked);
    }
    (0..built.len())
        .map(|id| replies.remove(&u8::try_from(id).expect("id")))
        .collect()
}

/// The decision log's `reason` of every decision for `user`, in order.
fn reasons(app: &Appliance, user: &str) -> Vec<String> {
    let wanted = format!("user=\"{user}\"");
    app.logs()
        .iter()
        .filter(|l| l.contains("decision") && l.contains(&wanted))
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?;
            Some(reason.split('"').next()?.to_string())
        })
        .collect()
}

fn count(reasons: &[String], reason: &str) -> usize {
    reasons.iter().filter(|r| *r == reason).count()
}

/// Not a code of [`SEED_B`] at HOTP counters 0 to 20 (`oathtool --hotp -w 20`): a guess.
const WRONG_B: &str = "000000";

/// Point 1: concurrent guesses used to be checked against the throttle before their hash and
/// counted after it, so a burst of wrong passwords for an argon2id user was evaluated in full.
/// Counted as they start, at most `user_failures` of them reach a password check.
#[test]
fn concurrent_guesses_reach_the_password_check_at_most_user_failures_times() {
    let mut app = Appliance::new("[throttle]\nuser_failures = 10\n");
    app.add_user("bob", "bob-pw"); // argon2id: each check goes to the hashing pool
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nHB1,{SEED_B},hotp,6,0,bob\n"
    ));
    app.start();
    let guesses: Vec<_> = (0..200)
        .map(|i| ("bob", format!("guess{i}{WRONG_B}")))
        .collect();
    let replies = burst(&app, &guesses);
    assert!(replies
        .iter()
        .all(|r| r.as_ref().is_some_and(|r| r.code == Code::AccessReject)));
    assert!(app.stop());
    let reasons = reasons(&app, "bob");
    assert_eq!(reasons.len(), 200, "{reasons:?}");
    assert_eq!(count(&reasons, "wrong_password"), 10, "{reasons:?}");
    assert_eq!(count(&reasons, "throttled"), 190, "{reasons:?}");
}

/// Point 5: a user who exists but has no token was never counted, so such names stood out
/// from unknown ones (throttled after `user_failures`). Now both are counted alike.
#[test]
fn a_user_without_a_token_is_throttled_like_an_unknown_user() {
    let mut app = Appliance::new("[throttle]\nuser_failures = 3\n");
    app.add_user("nora", "nora-pw");
    app.start();
    for _ in 0..5 {
        for user in ["nora", "ghost"] {
            let reply = app.auth(user, "nora-pw123456").expect("reply");
            assert_eq!(reply.code, Code::AccessReject);
        }
    }
    assert!(app.stop());
    let (nora, ghost) = (reasons(&app, "nora"), reasons(&app, "ghost"));
    assert_eq!(
        nora,
        ["no_token", "no_token", "no_token", "throttled", "throttled"]
    );
    assert_eq!(
        ghost,
        [
            "unknown_user",
            "unknown_user",
            "unknown_user",
            "throttled",
            "throttled"
        ]
    );
}

/// Point 6: through a NAS that sends no Calling-Station-Id, a stranger who kept sending wrong
/// passwords for a user name refused that user for the whole window, right password and code
/// included. Now the throttled name must show a valid, unspent code first: the guesser never
/// reaches a password check again, the token's holder is accepted at the first try.
#[test]
fn a_stranger_guessing_through_the_same_nas_cannot_keep_the_user_out() {
    let mut app = Appliance::new("[throttle]\nuser_failures = 3\n");
    app.add_user("bob", "bob-pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nHB1,{SEED_B},hotp,6,0,bob\n"
    ));
    app.start();
    let guesses = || {
        let replies = burst(
            &app,
            &(0..20)
                .map(|i| ("bob", format!("guess{i}{WRONG_B}")))
                .collect::<Vec<_>>(),
        );
        assert!(replies
            .iter()
            .all(|r| r.as_ref().is_some_and(|r| r.code == Code::AccessReject)));
    };
    let login = |password: &str, counter: u64| {
        app.auth("bob", &format!("{password}{}", hotp(SEED_B, counter)))
            .expect("reply")
            .code
    };
    // The holder, at the first try, after a burst of guesses (the gate is strict by then:
    // user_failures requests were refused at it).
    guesses();
    assert_eq!(login("bob-pw", 0), Code::AccessAccept);
    // Three guesses one by one: code first, not yet strict. A guesser who saw a valid code
    // gets a few password checks for it and does not spend it: the holder logs in with that
    // very code afterwards.
    for i in 0..3 {
        let reply = app
            .auth("bob", &format!("guess{i}{WRONG_B}"))
            .expect("reply");
        assert_eq!(reply.code, Code::AccessReject);
    }
    for _ in 0..2 {
        assert_eq!(login("not-bob", 1), Code::AccessReject);
    }
    assert_eq!(login("bob-pw", 1), Code::AccessAccept);
    // Strict after another burst: a code lets one password check through, and the holder's
    // next press is good.
    guesses();
    for _ in 0..2 {
        assert_eq!(login("not-bob", 2), Code::AccessReject);
    }
    assert_eq!(login("bob-pw", 2), Code::AccessReject);
    assert_eq!(login("bob-pw", 3), Code::AccessAccept);
    assert!(app.stop());
    let reasons = reasons(&app, "bob");
    // Each burst: 3 checked, 17 refused unchecked (a success clears the count in between).
    assert_eq!(
        count(&reasons, "wrong_password"),
        3 + 3 + 2 + 3 + 1,
        "{reasons:?}"
    );
    assert_eq!(count(&reasons, "throttled"), 17 + 17 + 1 + 1, "{reasons:?}");
    assert_eq!(count(&reasons, "ok"), 3, "{reasons:?}");
}

/// Point 3: a spent code re-sent after its window had passed counted as a wrong code, so a VPN
/// client reconnecting with cached credentials locked its owner out. The last accepted code is
/// a replay whenever it comes back.
#[test]
fn the_last_accepted_code_re_sent_after_its_window_never_locks_the_token() {
    // Window 0: only the current step is valid, so the code leaves its window within 30 s.
    let mut app = Appliance::new("[otp]\ntotp_window = 0\nmax_failures = 3\n");
    app.add_user("alice", "alice-pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nTA1,{SEED_A},totp,6,30,alice\n"
    ));
    app.start();
    // Not in the last 2 s of a step, so the code is accepted in the step it was made in.
    while now() % 30 >= 28 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let step = now() / 30;
    let cached = format!("alice-pw{}", totp_now(SEED_A));
    assert_eq!(
        app.auth("alice", &cached).expect("reply").code,
        Code::AccessAccept
    );
    while now() / 30 == step {
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..5 {
        let reply = app.auth("alice", &cached).expect("reply");
        assert_eq!(reply.code, Code::AccessReject);
    }
    // Not locked: the current code logs in.
    let reply = app
        .auth("alice", &format!("alice-pw{}", totp_now(SEED_A)))
        .expect("reply");
    assert_eq!(
        reply.code,
        Code::AccessAccept,
        "{:?}",
        reasons(&app, "alice")
    );
    assert!(app.stop());
    let reasons = reasons(&app, "alice");
    assert_eq!(count(&reasons, "replayed_otp"), 5, "{reasons:?}");
}
