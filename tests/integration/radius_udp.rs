//! The RADIUS path over UDP: decisions, texts, Message-Authenticator, drops, duplicates,
//! robustness against garbage.

use std::net::UdpSocket;
use std::time::Duration;

use radius::core::code::Code;

use crate::harness::*;

const SEED_A: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; // "12345678901234567890"
const SEED_B: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const GENERIC: &str = "Login failed";

/// An appliance with alice (TOTP, seed A) and bob (HOTP, seed B), both registered Active.
fn appliance_with_users(extra: &str) -> Appliance {
    let app = Appliance::new(extra);
    app.add_user("alice", "alice-pw");
    app.add_user("bob", "bob-pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nTA1,{SEED_A},totp,6,30,alice\nHB1,{SEED_B},hotp,6,0,bob\n"
    ));
    app
}

#[test]
fn accept_with_password_and_totp() {
    let mut app = appliance_with_users("");
    app.start();
    let reply = app
        .auth("alice", &format!("alice-pw{}", totp_now(SEED_A)))
        .expect("a reply");
    assert_eq!(reply.code, Code::AccessAccept);
    assert!(
        reply.message_authenticator_first,
        "Message-Authenticator must be first"
    );
    assert!(app.stop(), "graceful stop exits 0");
    let logs = app.logs().join("\n");
    assert!(
        logs.contains("result=\"accept\"") || logs.contains("result=accept"),
        "{logs}"
    );
    assert!(!logs.contains("alice-pw"), "no password in logs");
}

#[test]
fn wrong_password_wrong_otp_and_unknown_user_look_the_same() {
    let mut app = appliance_with_users("");
    app.start();
    let code = totp_now(SEED_A);
    let wrong_password = app.auth("alice", &format!("nope{code}")).expect("reply");
    let wrong_otp = app
        .auth(
            "alice",
            &format!(
                "alice-pw{}",
                if code == "000000" { "111111" } else { "000000" }
            ),
        )
        .expect("reply");
    let unknown = app.auth("mallory", &format!("x{code}")).expect("reply");
    for reply in [&wrong_password, &wrong_otp, &unknown] {
        assert_eq!(reply.code, Code::AccessReject);
        assert!(reply.message_authenticator_first);
    }
    assert_eq!(wrong_password.reply_message, wrong_otp.reply_message);
    assert_eq!(wrong_password.reply_message, unknown.reply_message);
    assert!(wrong_otp
        .reply_message
        .as_deref()
        .unwrap_or("")
        .starts_with(GENERIC));
}

#[test]
fn replayed_otp_is_refused() {
    let mut app = appliance_with_users("");
    app.start();
    let password = format!("bob-pw{}", hotp(SEED_B, 0));
    assert_eq!(
        app.auth("bob", &password).expect("reply").code,
        Code::AccessAccept
    );
    // A new request (new authenticator) with the same code: not a retransmission.
    assert_eq!(
        app.auth("bob", &password).expect("reply").code,
        Code::AccessReject
    );
    // The next code still works, an older one never again.
    assert_eq!(
        app.auth("bob", &format!("bob-pw{}", hotp(SEED_B, 1)))
            .expect("reply")
            .code,
        Code::AccessAccept
    );
    assert_eq!(
        app.auth("bob", &password).expect("reply").code,
        Code::AccessReject
    );
    let totp = format!("alice-pw{}", totp_now(SEED_A));
    assert_eq!(
        app.auth("alice", &totp).expect("reply").code,
        Code::AccessAccept
    );
    assert_eq!(
        app.auth("alice", &totp).expect("reply").code,
        Code::AccessReject
    );
}

#[test]
fn lockout_after_max_failures_then_locked_text_even_with_right_code() {
    let mut app = appliance_with_users("[otp]\nmax_failures = 3\n");
    app.start();
    for _ in 0..3 {
        let reply = app.auth("bob", "bob-pw999999").expect("reply");
        assert_eq!(reply.code, Code::AccessReject);
    }
    let reply = app
        .auth("bob", &format!("bob-pw{}", hotp(SEED_B, 0)))
        .expect("reply");
    assert_eq!(reply.code, Code::AccessReject);
    let text = reply.reply_message.unwrap_or_default();
    assert!(text.contains("locked"), "{text}");
    // A wrong password still gets the generic text: the lock is not revealed to guessers.
    let reply = app
        .auth("bob", &format!("bad{}", hotp(SEED_B, 0)))
        .expect("reply");
    assert!(reply.reply_message.unwrap_or_default().starts_with(GENERIC));
    app.stop();
    // Resync with two consecutive codes unlocks it.
    app.cli_ok(
        &[
            "token",
            "resync",
            "HB1",
            "--otp1",
            &hotp(SEED_B, 5),
            "--otp2",
            &hotp(SEED_B, 6),
        ],
        None,
    );
    app.start();
    assert_eq!(
        app.auth("bob", &format!("bob-pw{}", hotp(SEED_B, 7)))
            .expect("reply")
            .code,
        Code::AccessAccept
    );
}

#[test]
fn wrong_passwords_never_lock_the_token() {
    let mut app = appliance_with_users("[otp]\nmax_failures = 2\n[throttle]\nuser_failures = 50\n");
    app.start();
    for _ in 0..10 {
        assert_eq!(
            app.auth("bob", "guess999999").expect("reply").code,
            Code::AccessReject
        );
    }
    assert_eq!(
        app.auth("bob", &format!("bob-pw{}", hotp(SEED_B, 0)))
            .expect("reply")
            .code,
        Code::AccessAccept
    );
}

#[test]
fn password_guessing_is_throttled_per_user() {
    let mut app = appliance_with_users("[throttle]\nuser_failures = 3\n");
    app.start();
    for _ in 0..3 {
        app.auth("bob", "guess999999").expect("reply");
    }
    // Now a request is refused unchecked unless it carries a valid code (the holder's).
    let reply = app.auth("bob", "bob-pw999999").expect("reply");
    assert_eq!(reply.code, Code::AccessReject);
    assert!(app.wait_for_log("reason=\"throttled\""));
    let reply = app
        .auth("bob", &format!("bob-pw{}", hotp(SEED_B, 0)))
        .expect("reply");
    assert_eq!(reply.code, Code::AccessAccept);
}

#[test]
fn request_without_message_authenticator_is_dropped() {
    let mut app = appliance_with_users("");
    app.start();
    let request = request(
        "alice",
        &format!("alice-pw{}", totp_now(SEED_A)),
        SECRET,
        false,
    );
    assert!(exchange(app.addr(), &request.bytes, Duration::from_millis(700)).is_none());
    // The code was not consumed: the same password+code in a proper request is accepted.
    let reply = app
        .auth("alice", &format!("alice-pw{}", totp_now(SEED_A)))
        .expect("reply");
    assert_eq!(reply.code, Code::AccessAccept);
    app.stop();
    let logs = app.logs().join("\n");
    assert!(
        logs.contains("dropped_missing_message_authenticator=1"),
        "{logs}"
    );
}

#[test]
fn message_authenticator_optional_when_configured_off() {
    let mut app = appliance_with_users("");
    // Through the environment, as an operator's unit file would.
    app.env.push((
        "OTPGATE__RADIUS__REQUIRE_MESSAGE_AUTHENTICATOR".into(),
        "false".into(),
    ));
    app.start();
    assert!(app
        .logs()
        .join("\n")
        .contains("require_message_authenticator is off"));
    let request = request("bob", &format!("bob-pw{}", hotp(SEED_B, 0)), SECRET, false);
    let reply = exchange(app.addr(), &request.bytes, Duration::from_secs(5)).expect("reply");
    let checked =
        otpgate::radius::nas::check_reply(&reply, &request, SECRET.as_bytes()).expect("valid");
    assert_eq!(checked.code, Code::AccessAccept);
    assert!(
        checked.message_authenticator_first,
        "replies always carry it first"
    );
}

#[test]
fn wrong_secret_is_ignored() {
    let mut app = appliance_with_users("");
    app.start();
    let request = request(
        "bob",
        &format!("bob-pw{}", hotp(SEED_B, 0)),
        "not-the-secret",
        true,
    );
    assert!(exchange(app.addr(), &request.bytes, Duration::from_millis(700)).is_none());
    app.stop();
    assert!(app
        .logs()
        .join("\n")
        .contains("dropped_bad_message_authenticator=1"));
}

#[test]
fn unknown_client_is_ignored() {
    let mut app = appliance_with_users("");
    app.start();
    // 127.0.0.2 is loopback too, but not a configured client.
    let socket = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let request = request("bob", &format!("bob-pw{}", hotp(SEED_B, 0)), SECRET, true);
    assert!(exchange_on(
        &socket,
        app.addr(),
        &request.bytes,
        Duration::from_millis(700)
    )
    .is_none());
    app.stop();
    let logs = app.logs().join("\n");
    assert!(logs.contains("dropped_unknown_client=1"), "{logs}");
    assert!(logs.contains("unknown client"), "logged (rate-limited)");
}

#[test]
fn retransmission_is_answered_from_cache_without_second_evaluation() {
    let mut app = appliance_with_users("[otp]\nmax_failures = 2\n");
    app.start();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    // An accepted request retransmitted: the same Accept, not a replay Reject.
    let accepted = request("bob", &format!("bob-pw{}", hotp(SEED_B, 0)), SECRET, true);
    let first =
        exchange_on(&socket, app.addr(), &accepted.bytes, Duration::from_secs(5)).expect("reply");
    let again =
        exchange_on(&socket, app.addr(), &accepted.bytes, Duration::from_secs(5)).expect("reply");
    assert_eq!(first, again, "byte-identical cached reply");
    // A wrong-OTP request retransmitted 5 times counts as one failure (max_failures = 2).
    let wrong = request("bob", "bob-pw999999", SECRET, true);
    for _ in 0..5 {
        exchange_on(&socket, app.addr(), &wrong.bytes, Duration::from_secs(5)).expect("reply");
    }
    let reply = app
        .auth("bob", &format!("bob-pw{}", hotp(SEED_B, 1)))
        .expect("reply");
    assert_eq!(
        reply.code,
        Code::AccessAccept,
        "not locked: the retransmissions were not evaluated"
    );
    app.stop();
    assert!(app.logs().join("\n").contains("duplicates_answered=5"));
}

#[test]
fn garbage_does_not_crash_or_stall_the_server() {
    let mut app = appliance_with_users("");
    app.start();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let valid = request("bob", &format!("bob-pw{}", hotp(SEED_B, 0)), SECRET, true).bytes;
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        valid[..19].to_vec(),
        valid[..valid.len() - 3].to_vec(),
        vec![0u8; 5000],
        vec![0xff; 4097],
    ];
    let mut lying_length = valid.clone();
    lying_length[2..4].copy_from_slice(&4000u16.to_be_bytes());
    cases.push(lying_length);
    let mut short_length = valid.clone();
    short_length[2..4].copy_from_slice(&10u16.to_be_bytes());
    cases.push(short_length);
    let mut zero_attr = valid.clone();
    zero_attr[21] = 0; // first attribute length 0
    cases.push(zero_attr);
    let mut accounting = valid.clone();
    accounting[0] = 4;
    cases.push(accounting);
    // Deterministic pseudo-random junk of many sizes.
    let mut x: u32 = 0x1234_5678;
    for len in [20usize, 21, 38, 64, 255, 1024, 4096] {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        cases.push(junk);
    }
    for case in &cases {
        socket.send_to(case, app.addr()).expect("send");
    }
    // Still serving, promptly.
    let reply = app
        .auth("bob", &format!("bob-pw{}", hotp(SEED_B, 0)))
        .expect("still answering");
    assert_eq!(reply.code, Code::AccessAccept);
    assert!(app.stop(), "exits cleanly after garbage");
    let logs = app.logs().join("\n");
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn json_decision_log_has_the_fields_and_no_secret() {
    let mut app = appliance_with_users("");
    app.env.push(("OTPGATE__LOG__FORMAT".into(), "json".into()));
    app.start();
    let code = hotp(SEED_B, 0);
    let reply = app.auth("bob", &format!("bob-pw{code}")).expect("reply");
    assert_eq!(reply.code, Code::AccessAccept);
    assert!(app.stop());
    let decision = app
        .logs()
        .into_iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .find(|v| v["message"] == "decision")
        .expect("a JSON decision event");
    assert_eq!(decision["user"], "bob");
    assert_eq!(decision["client"], "test-nas");
    assert_eq!(decision["result"], "accept");
    assert_eq!(decision["reason"], "ok");
    for line in app.logs() {
        assert!(
            !line.contains("bob-pw") && !line.contains(&code),
            "secret in log: {line}"
        );
    }
}

#[test]
fn serves_ipv6_and_ipv4_with_clients_from_the_environment() {
    let mut app = appliance_with_users("");
    for (key, value) in [
        ("OTPGATE__RADIUS__LISTEN", "127.0.0.1:0,[::1]:0"),
        ("OTPGATE__RADIUS__CLIENTS__1__NAME", "v6-nas"),
        ("OTPGATE__RADIUS__CLIENTS__1__ADDRESS", "::1/128"),
        ("OTPGATE__RADIUS__CLIENTS__1__SECRET", "v6-secret-from-env"),
    ] {
        app.env.push((key.into(), value.into()));
    }
    let v4 = app.start();
    let v6 = app.another_address();
    assert!(v4.is_ipv4() && v6.is_ipv6(), "{v4} {v6}");
    let socket = UdpSocket::bind("[::1]:0").expect("bind ::1");
    let request = request(
        "bob",
        &format!("bob-pw{}", hotp(SEED_B, 0)),
        "v6-secret-from-env",
        true,
    );
    let reply = exchange_on(&socket, v6, &request.bytes, Duration::from_secs(5)).expect("reply");
    let checked = otpgate::radius::nas::check_reply(&reply, &request, b"v6-secret-from-env")
        .expect("signed with the v6 client's secret");
    assert_eq!(checked.code, Code::AccessAccept);
    // The IPv4 side still answers its own client.
    let reply = app
        .auth("alice", &format!("alice-pw{}", totp_now(SEED_A)))
        .expect("reply");
    assert_eq!(reply.code, Code::AccessAccept);
}

#[test]
fn unknown_user_attempts_count_once_each() {
    // Regression: the fast path handed these to the async path after counting them, and the
    // async path counted them again, so the throttle fired at half its setting.
    let mut app = appliance_with_users("[throttle]\nuser_failures = 4\n");
    app.start();
    for _ in 0..5 {
        app.auth("ghost", "whatever123456").expect("reply");
    }
    assert!(app.stop());
    let logs = app.logs().join("\n");
    assert_eq!(logs.matches("reason=\"unknown_user\"").count(), 4, "{logs}");
    assert_eq!(logs.matches("reason=\"throttled\"").count(), 1, "{logs}");
}

#[test]
fn a_second_server_on_the_same_port_is_refused() {
    let mut first = appliance_with_users("");
    let addr = first.start();
    let second = Appliance::new("");
    let out = std::process::Command::new(BIN)
        .arg("-c")
        .arg(&second.config)
        .arg("serve")
        .env("OTPGATE__RADIUS__LISTEN", addr.to_string())
        .output()
        .expect("run a second server");
    assert!(!out.status.success(), "must not share the port silently");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&addr.to_string()) && err.contains("in use"),
        "{err}"
    );
    assert!(first.stop());
}

/// `token_kinds`: an application that takes TOTP tokens only refuses an HOTP token's right
/// code, with its own text once the password was right; `check-config` names a bad kind.
#[test]
fn an_application_refuses_token_kinds_it_does_not_take() {
    const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let mut app =
        Appliance::new("[[applications]]\nname = \"default\"\ntoken_kinds = [\"totp\"]\n");
    app.add_user("hank", "hank-pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nK1,{SEED},hotp,6,0,hank\n"
    ));
    app.start();
    let reply = app
        .auth("hank", &format!("hank-pw{}", hotp(SEED, 0)))
        .expect("a reply");
    assert_eq!(reply.code, Code::AccessReject);
    assert_eq!(
        reply.reply_message.as_deref(),
        Some(otpgate::auth::messages::TOKEN_KIND_NOT_ALLOWED)
    );
    let wrong = app
        .auth("hank", &format!("nope{}", hotp(SEED, 0)))
        .expect("a reply");
    assert_eq!(
        wrong.reply_message.as_deref(),
        Some(otpgate::auth::messages::GENERIC_FAILURE),
        "nothing about the token before the password is right"
    );
    assert!(app.stop());
    let bad = Appliance::new("[[applications]]\nname = \"default\"\ntoken_kinds = [\"sms\"]\n");
    let out = bad.cli(&["check-config"], None);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("applications[0].token_kinds"),
        "{text}"
    );
}
