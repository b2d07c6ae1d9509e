//! Identity proofing through the API, and the level at login: a level-3 application refuses a
//! level-2 token over RADIUS (after the password and code were checked) and accepts it after
//! proofing and an upgrade, with no second registration.

use radius::core::code::Code;
use serde_json::json;

use crate::api::{create_token, refused, started_with};
use crate::harness::*;

const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const LEVEL_3_APP: &str = "[[applications]]\nname = \"default\"\nrequired_level = 3\n";

#[test]
fn a_level_3_application_accepts_a_token_only_after_proofing_and_upgrade() {
    let Some((app, api)) = started_with(LEVEL_3_APP) else {
        return;
    };
    let (status, _) = api.post(
        "/api/v1/users",
        json!({"username": "pia", "password": "pw-long-enough", "email": "pia@example.org"}),
    );
    assert_eq!(status, 201);
    let csv = format!("serial,secret,kind,digits,step,owner\nP1,{SEED},hotp,6,0,pia\n");
    assert_eq!(
        api.send("POST", "/api/v1/tokens/import", Some(&csv), "text/csv")
            .0,
        201
    );
    let login = |counter: u64| {
        app.auth("pia", &format!("pw-long-enough{}", hotp(SEED, counter)))
            .expect("reply")
    };
    // Level 2: refused with the proofing text, once password and code were right.
    let reply = login(0);
    assert_eq!(reply.code, Code::AccessReject);
    assert!(
        reply
            .reply_message
            .as_deref()
            .is_some_and(|m| m.contains("identity proofing")),
        "{reply:?}"
    );
    // A wrong code is the generic failure, not the level text.
    let wrong = app.auth("pia", "pw-long-enough000000").expect("reply");
    assert!(!wrong
        .reply_message
        .as_deref()
        .is_some_and(|m| m.contains("identity proofing")));
    refused(
        api.post_empty("/api/v1/users/pia/proofing/upgrade"),
        422,
        "proofing_required",
    );
    // In person: an agent verifies and gives the code; the user enters it.
    let agent = api.with(&create_token(&app, &["agent-1", "--role", "agent"]));
    let (status, started) = api.post(
        "/api/v1/users/pia/proofing",
        json!({"method": "in_person", "organization": "Acme Aero"}),
    );
    assert_eq!(
        (status, started["state"].as_str()),
        (200, Some("awaiting_verification"))
    );
    refused(
        agent.post("/api/v1/tokens/P1/suspend", json!({"reason": "x"})),
        403,
        "forbidden",
    );
    refused(
        agent.post("/api/v1/users/pia/proofing/redeem", json!({"code": "x"})),
        403,
        "forbidden",
    );
    let (status, verified) = agent.post_empty("/api/v1/users/pia/proofing/verify");
    assert_eq!(status, 200, "{verified}");
    let code = verified["activation_code"]
        .as_str()
        .expect("code")
        .to_string();
    assert_eq!(verified["proofing"]["state"], "code_issued");
    refused(
        api.post(
            "/api/v1/users/pia/proofing/redeem",
            json!({"code": "WRNG-CODE-HERE"}),
        ),
        422,
        "wrong_code",
    );
    let (status, done) = api.post(
        "/api/v1/users/pia/proofing/redeem",
        json!({"code": code.to_lowercase()}),
    );
    assert_eq!(
        (status, done["state"].as_str(), done["level"].as_u64()),
        (200, Some("complete"), Some(3)),
        "{done}"
    );
    refused(
        api.post("/api/v1/users/pia/proofing/redeem", json!({"code": code})),
        409,
        "invalid_state",
    );
    // The upgrade: the same token, level 3, no registration.
    let (status, upgraded) = api.post_empty("/api/v1/users/pia/proofing/upgrade");
    assert_eq!(status, 200, "{upgraded}");
    assert_eq!(
        (
            upgraded["token"]["serial"].as_str(),
            upgraded["token"]["level"].as_u64()
        ),
        (Some("P1"), Some(3))
    );
    assert_eq!(login(1).code, Code::AccessAccept);
    let (_, status) = api.get("/api/v1/users/pia/proofing");
    let events: Vec<_> = status["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|s| s["event"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(events, ["start (in_person)", "verify", "redeem"]);
    let (_, trail) = api.get("/api/v1/audit?user=pia");
    assert!(
        trail.to_string().contains("proofing.verify")
            && trail.to_string().contains("token.upgrade")
    );
}

#[test]
fn instant_webcam_and_the_level_3_registration_follow_the_guide() {
    let Some((app, api)) = started_with("") else {
        return;
    };
    for name in ["quinn", "rae"] {
        let body = json!({"username": name, "password": "pw-long-enough", "email": format!("{name}@example.org")});
        assert_eq!(api.post("/api/v1/users", body).0, 201);
    }
    // Instant proofing is for the United States only; not located -> webcam.
    refused(
        api.post(
            "/api/v1/users/quinn/proofing",
            json!({"method": "instant", "country": "FR"}),
        ),
        422,
        "instant_us_only",
    );
    let (status, _) = api.post(
        "/api/v1/users/quinn/proofing",
        json!({"method": "instant", "country": "US"}),
    );
    assert_eq!(status, 200);
    refused(
        api.post("/api/v1/users/quinn/proofing", json!({"method": "webcam"})),
        409,
        "invalid_state",
    );
    let (_, moved) = api.post(
        "/api/v1/users/quinn/proofing/outcome",
        json!({"outcome": "not_located"}),
    );
    assert_eq!(
        (moved["state"].as_str(), moved["method"].as_str()),
        (Some("appointment_needed"), Some("webcam"))
    );
    refused(
        api.post(
            "/api/v1/users/quinn/proofing/appointments",
            json!({"start": "2001-01-01T10:00:00Z", "timezone": "UTC"}),
        ),
        400,
        "invalid_field",
    );
    let (status, booked) = api.post(
        "/api/v1/users/quinn/proofing/appointments",
        json!({"start": "2999-01-01T10:00:00Z", "timezone": "America/New_York"}),
    );
    assert_eq!(
        (status, booked["state"].as_str()),
        (200, Some("appointment_scheduled")),
        "{booked}"
    );
    let first = booked["appointment"]["confirmation"].clone();
    let (_, moved) = api.post(
        "/api/v1/users/quinn/proofing/appointments",
        json!({"start": "2999-01-02T10:00:00Z", "timezone": "America/New_York"}),
    );
    assert_eq!(moved["appointment"]["start"], "2999-01-02T10:00:00Z");
    assert_ne!(moved["appointment"]["confirmation"], first);
    // A lost code: the new one works, the old one not.
    let (_, verified) = api.post_empty("/api/v1/users/quinn/proofing/verify");
    let old = verified["activation_code"]
        .as_str()
        .expect("code")
        .to_string();
    let (status, _) = api.post_empty("/api/v1/users/quinn/proofing/code");
    assert_eq!(status, 200);
    refused(
        api.post("/api/v1/users/quinn/proofing/redeem", json!({"code": old})),
        422,
        "wrong_code",
    );
    // A level-3 key needs completed proofing: rae has none.
    let csv = format!("serial,secret,kind,digits,step\nR1,{SEED},hotp,6,0\n");
    assert_eq!(
        api.send("POST", "/api/v1/tokens/import", Some(&csv), "text/csv")
            .0,
        201
    );
    let (_, key) = api.post("/api/v1/license-keys", json!({"level": 3, "years": 1}));
    let register = json!({"username": "rae", "otp1": hotp(SEED, 0), "otp2": hotp(SEED, 1), "license_key": key["key"]});
    refused(
        api.post("/api/v1/tokens/R1/register", register.clone()),
        422,
        "proofing_required",
    );
    let (status, _) = api.post(
        "/api/v1/users/rae/proofing",
        json!({"method": "instant", "country": "us"}),
    );
    assert_eq!(status, 200);
    let (_, passed) = api.post(
        "/api/v1/users/rae/proofing/outcome",
        json!({"outcome": "passed"}),
    );
    assert_eq!(passed["state"], "complete");
    let (status, registered) = api.post("/api/v1/tokens/R1/register", register);
    assert_eq!(
        (status, registered["token"]["level"].as_u64()),
        (200, Some(3)),
        "{registered}"
    );
    // Located but not passed: a code by post (stored hashed, expiring, limited tries);
    // declined: on to webcam.
    for name in ["tess", "uma"] {
        let body = json!({"username": name, "password": "pw-long-enough"});
        assert_eq!(api.post("/api/v1/users", body).0, 201);
        let start = json!({"method": "instant", "country": "US"});
        assert_eq!(
            api.post(&format!("/api/v1/users/{name}/proofing"), start).0,
            200
        );
    }
    let (_, mailed) = api.post(
        "/api/v1/users/tess/proofing/outcome",
        json!({"outcome": "located_not_passed"}),
    );
    assert_eq!(mailed["state"], "code_issued");
    assert!(
        mailed["code_expires_at"].as_str().is_some() && mailed["code_tries_left"] == 5,
        "{mailed}"
    );
    for left in (1..5).rev() {
        let answer = api.post(
            "/api/v1/users/tess/proofing/redeem",
            json!({"code": "AAAA-BBBB-CCCC"}),
        );
        refused(answer, 422, "wrong_code");
        assert_eq!(
            api.get("/api/v1/users/tess/proofing").1["code_tries_left"],
            left
        );
    }
    refused(
        api.post(
            "/api/v1/users/tess/proofing/redeem",
            json!({"code": "AAAA-BBBB-CCCC"}),
        ),
        422,
        "code_unusable",
    );
    let (_, webcam) = api.post(
        "/api/v1/users/uma/proofing/outcome",
        json!({"outcome": "declined"}),
    );
    assert_eq!(
        (webcam["state"].as_str(), webcam["method"].as_str()),
        (Some("appointment_needed"), Some("webcam"))
    );
    refused(
        api.post(
            "/api/v1/users/uma/proofing/outcome",
            json!({"outcome": "passed"}),
        ),
        409,
        "invalid_state",
    );
    let _ = app;
}

/// Provider callbacks: signed with HMAC-SHA256 over timestamp and body; a bad, stale or
/// replayed one is a 401 and changes nothing.
#[test]
fn signed_provider_callbacks_record_outcomes_and_bad_ones_change_nothing() {
    use hmac::digest::KeyInit;
    use hmac::Mac;
    const SECRET: &str = "a-callback-secret-of-forty-characters-xx";
    let Some((_app, api)) = started_with(&format!("[proofing]\ncallback_secret = \"{SECRET}\"\n"))
    else {
        return;
    };
    let body = json!({"username": "sam", "password": "pw-long-enough"});
    assert_eq!(api.post("/api/v1/users", body).0, 201);
    let (status, _) = api.post(
        "/api/v1/users/sam/proofing",
        json!({"method": "instant", "country": "US"}),
    );
    assert_eq!(status, 200);
    let sign = |timestamp: u64, body: &str, key: &str| {
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("key");
        mac.update(format!("{timestamp}.{body}").as_bytes());
        format!(
            "sha256={}",
            data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
        )
    };
    let post = |timestamp: u64, signature: &str, body: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code}",
                "-H",
                "Content-Type: application/json",
                "-H",
                &format!("X-Otpgate-Timestamp: {timestamp}"),
                "-H",
                &format!("X-Otpgate-Signature: {signature}"),
                "--data-binary",
                body,
                &format!("{}/api/v1/proofing/callback", api.base),
            ])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (json, code) = text.rsplit_once('\n').expect("status");
        (
            code.trim().parse::<u16>().expect("status"),
            json.to_string(),
        )
    };
    let body = r#"{"username":"sam","outcome":"passed"}"#;
    let t = now();
    for (timestamp, signature) in [
        (t, sign(t, body, "the-wrong-secret-of-forty-characters-xxx")),
        (t - 3600, sign(t - 3600, body, SECRET)),
        (
            t,
            sign(t, r#"{"username":"sam","outcome":"declined"}"#, SECRET),
        ),
    ] {
        let (status, answer) = post(timestamp, &signature, body);
        assert_eq!(status, 401, "{answer}");
        assert!(answer.contains("bad_signature"), "{answer}");
    }
    assert_eq!(
        api.get("/api/v1/users/sam/proofing").1["state"],
        "awaiting_outcome"
    );
    let good = sign(t, body, SECRET);
    let (status, answer) = post(t, &good, body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(api.get("/api/v1/users/sam/proofing").1["state"], "complete");
    let (status, answer) = post(t, &good, body);
    assert_eq!(status, 401, "a replay: {answer}");
}
