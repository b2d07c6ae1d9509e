//! The admin HTTP API end to end: the real `otpgate serve`, driven with `curl` over loopback
//! (plain HTTP on loopback, HTTPS with a generated certificate), checked against RADIUS
//! logins over UDP and the command line: they must agree.

use std::io::Write;
use std::process::{Command, Stdio};

use radius::core::code::Code;
use serde_json::{json, Value};

use crate::harness::*;

const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const SEED2: &str = "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U";

/// A client of the admin API: `curl` with a bearer token.
pub struct Api {
    pub base: String,
    token: Option<String>,
    cacert: Option<std::path::PathBuf>,
}

impl Api {
    pub fn with(&self, token: &str) -> Api {
        Api {
            base: self.base.clone(),
            token: Some(token.to_string()),
            cacert: self.cacert.clone(),
        }
    }

    /// `method path` with `body` sent as `content_type`; the status and the JSON answer.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        content_type: &str,
    ) -> (u16, Value) {
        self.send_with(method, path, body, content_type, &[])
    }

    /// As [`Api::send`], with further `Name: value` request headers.
    pub fn send_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        content_type: &str,
        headers: &[&str],
    ) -> (u16, Value) {
        let mut args = vec![
            "-sS".to_string(),
            "--max-time".into(),
            "20".into(),
            "-X".into(),
            method.into(),
            "-w".into(),
            "\n%{http_code}".into(),
        ];
        if let Some(token) = &self.token {
            args.extend(["-H".into(), format!("Authorization: Bearer {token}")]);
        }
        for header in headers {
            args.extend(["-H".into(), header.to_string()]);
        }
        if let Some(ca) = &self.cacert {
            args.extend(["--cacert".into(), ca.display().to_string()]);
        }
        if body.is_some() {
            args.extend([
                "-H".into(),
                format!("Content-Type: {content_type}"),
                "--data-binary".into(),
                "@-".into(),
            ]);
        }
        args.push(format!("{}{path}", self.base));
        let mut child = Command::new("curl")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl");
        if let Some(body) = body {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(body.as_bytes())
                .expect("write body");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("curl output");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status: u16 = status.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {method} {path}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let value = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body)
                .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {body}"))
        };
        (status, value)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, None, "")
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send("POST", path, Some(&body.to_string()), "application/json")
    }

    pub fn post_empty(&self, path: &str) -> (u16, Value) {
        self.send("POST", path, None, "")
    }
}

/// Asserts `answer` is `status` with a JSON error body carrying `code`.
#[track_caller]
pub fn refused(answer: (u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"], code, "{}", answer.1);
    assert!(answer.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

/// A started appliance with the API on loopback, and an admin token made with the CLI while
/// the server runs (over its control socket).
pub fn started() -> Option<(Appliance, Api)> {
    started_with("")
}

/// As [`started`], with `extra` configuration.
pub fn started_with(extra: &str) -> Option<(Appliance, Api)> {
    if !peer_available("curl", "curl") {
        return None;
    }
    let mut app = Appliance::new(&format!("[admin]\nlisten = \"127.0.0.1:0\"\n{extra}"));
    app.start();
    let api = Api {
        base: format!("http://{}", admin_address(&app)),
        token: None,
        cacert: None,
    };
    let token = create_token(&app, &["root", "--role", "admin"]);
    Some((app, api.with(&token)))
}

pub fn admin_address(app: &Appliance) -> String {
    assert!(app.wait_for_log("admin API listening"), "{:?}", app.logs());
    let line = app
        .logs()
        .into_iter()
        .find(|l| l.contains("admin API listening"))
        .expect("logged");
    let address = line.split("address=").nth(1).expect("address=");
    address
        .split_whitespace()
        .next()
        .expect("address")
        .to_string()
}

/// `otpgate admin-token create ARGS`: the token is the last word of the last line.
pub fn create_token(app: &Appliance, args: &[&str]) -> String {
    let mut all = vec!["admin-token", "create"];
    all.extend_from_slice(args);
    let out = app.cli_ok(&all, None);
    out.lines()
        .last()
        .and_then(|l| l.split_whitespace().last())
        .expect("token printed")
        .to_string()
}

/// Import to revoke, as the README's example does it, with RADIUS agreeing at each step.
#[test]
fn import_register_suspend_reinstate_revoke_and_radius_agrees() {
    let Some((app, api)) = started() else { return };
    let (status, user) = api.post(
        "/api/v1/users",
        json!({"username": "alice", "password": "correct horse", "email": "alice@example.org",
               "first_name": "Alice", "middle_name": "B", "last_name": "Smith",
               "organization": "Acme Aero"}),
    );
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["organization"], "Acme Aero");
    assert!(user.get("password").is_none() && !user.to_string().contains("correct horse"));
    let csv =
        format!("serial,secret,kind,digits,step\nHW1,{SEED},hotp,6,0\nHW2,{SEED2},hotp,6,0\n");
    let (status, imported) = api.send("POST", "/api/v1/tokens/import", Some(&csv), "text/csv");
    assert_eq!(
        (status, imported["imported"].as_u64()),
        (201, Some(2)),
        "{imported}"
    );
    let (_, listed) = api.get("/api/v1/tokens?state=unassigned");
    let serials: Vec<_> = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t["serial"].clone())
        .collect();
    assert_eq!(serials, [json!("HW1"), json!("HW2")]);
    assert!(!listed.to_string().contains(SEED), "a seed in the answer");
    // A purchase: a level-2 key for two years.
    let (status, key) = api.post("/api/v1/license-keys", json!({"level": 2, "years": 2}));
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().expect("key").to_string();
    refused(
        api.post("/api/v1/tokens/HW1/register", json!({"username": "alice", "otp1": hotp(SEED, 0), "otp2": hotp(SEED, 2), "license_key": key})),
        422,
        "wrong_codes",
    );
    let (status, registered) = api.post(
        "/api/v1/tokens/HW1/register",
        json!({"username": "alice", "otp1": hotp(SEED, 0), "otp2": hotp(SEED, 1), "license_key": key}),
    );
    assert_eq!(status, 200, "{registered}");
    let token = &registered["token"];
    assert_eq!(
        (token["state"].as_str(), token["owner"].as_str()),
        (Some("active"), Some("alice"))
    );
    assert_eq!(
        (token["level"].as_u64(), token["origin"].as_str()),
        (Some(2), Some("license"))
    );
    assert!(
        token["expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{token}"
    );
    // RADIUS agrees: the next code logs in, and last_auth_at shows it.
    let login = |code: &str| {
        app.auth("alice", &format!("correct horse{code}"))
            .expect("reply")
    };
    assert_eq!(login(&hotp(SEED, 2)).code, Code::AccessAccept);
    let (_, shown) = api.get("/api/v1/tokens/HW1");
    assert!(shown["last_auth_at"].as_str().is_some(), "{shown}");
    // Suspended on the user's behalf: logins refused with the guide's text; reinstated.
    let (status, suspended) = api.post(
        "/api/v1/tokens/HW1/suspend",
        json!({"by": "user", "reason": "travelling"}),
    );
    assert_eq!(
        (status, suspended["to"].as_str()),
        (200, Some("suspended")),
        "{suspended}"
    );
    let reply = login(&hotp(SEED, 3));
    assert_eq!(reply.code, Code::AccessReject);
    assert!(
        reply
            .reply_message
            .as_deref()
            .is_some_and(|m| m.contains("cannot use your token")),
        "{reply:?}"
    );
    let (status, back) = api.post("/api/v1/tokens/HW1/reinstate", json!({"by": "user"}));
    assert_eq!(
        (status, back["to"].as_str()),
        (200, Some("active")),
        "{back}"
    );
    assert_eq!(login(&hotp(SEED, 3)).code, Code::AccessAccept);
    // Renewed ahead of expiry: a year after the expiry date it had.
    let before = api.get("/api/v1/tokens/HW1").1["expires_at"]
        .as_str()
        .expect("expiry")
        .to_string();
    let (status, renewed) = api.post_empty("/api/v1/tokens/HW1/renew");
    assert_eq!(status, 200, "{renewed}");
    let after = renewed["token"]["expires_at"].as_str().expect("expiry");
    assert_eq!(after[4..], before[4..], "same day and time");
    assert_eq!(
        after[..4].parse::<u32>().expect("year"),
        before[..4].parse::<u32>().expect("year") + 1
    );
    // Revoked: RADIUS refuses; the serial can never be registered again; alice registers HW2.
    let (status, revoked) = api.post("/api/v1/tokens/HW1/revoke", json!({"reason": "lost"}));
    assert_eq!(
        (status, revoked["to"].as_str()),
        (200, Some("revoked")),
        "{revoked}"
    );
    assert_eq!(revoked["token"]["former_owner"], "alice");
    assert_eq!(login(&hotp(SEED, 4)).code, Code::AccessReject);
    // Her password is now a temporary one (sent by e-mail), until she changes it.
    let (_, alice) = api.get("/api/v1/users/alice");
    assert_eq!(alice["password_must_change"], true, "{alice}");
    let (status, changed) = api.post(
        "/api/v1/users/alice/password",
        json!({"password": "correct horse"}),
    );
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["password_must_change"], false);
    refused(
        api.post(
            "/api/v1/tokens/HW1/register",
            json!({"username": "alice", "otp1": hotp(SEED, 5), "otp2": hotp(SEED, 6)}),
        ),
        409,
        "token_not_available",
    );
    let (status, second) = api.post(
        "/api/v1/tokens/HW2/register",
        json!({"username": "alice", "otp1": hotp(SEED2, 0), "otp2": hotp(SEED2, 1)}),
    );
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["token"]["origin"], "admin");
    assert_eq!(login(&hotp(SEED2, 2)).code, Code::AccessAccept);
    // The user view and the CLI say the same.
    let (_, alice) = api.get("/api/v1/users/alice");
    assert_eq!(alice["token"]["serial"], "HW2");
    assert_eq!(alice["middle_name"], "B");
    let cli = app.cli_ok(&["token", "show", "HW1", "--json"], None);
    let cli: Value = serde_json::from_str(&cli).expect("json");
    assert_eq!(cli, api.get("/api/v1/tokens/HW1").1);
    // The audit: every action on HW1, who, from and to, in order.
    let (_, trail) = api.get("/api/v1/audit?serial=HW1");
    let actions: Vec<_> = trail["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            format!(
                "{} {}->{} by {}",
                e["action"].as_str().unwrap_or(""),
                e["from"].as_str().unwrap_or("-"),
                e["to"].as_str().unwrap_or("-"),
                e["by"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "token.register_failed unassigned->- by token:root",
            "token.register unassigned->active by token:root",
            "token.suspend active->suspended by token:root",
            "token.reinstate suspended->active by token:root",
            "token.renew active->active by token:root",
            "token.revoke active->revoked by token:root",
        ]
    );
    let (_, by_user) = api.get("/api/v1/audit?user=alice");
    assert!(
        by_user["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "user.password_change"),
        "{by_user}"
    );
    let (_, by_user) = api.get("/api/v1/audit?user=alice&since=2000-01-01&until=2999-12-31");
    assert!(
        by_user["entries"].as_array().expect("entries").len() >= 8,
        "{by_user}"
    );
}

/// 401 without or with a wrong token; 403 for a role or organization that may not.
#[test]
fn tokens_and_roles_decide_who_may_do_what() {
    let Some((app, api)) = started() else { return };
    let anonymous = Api {
        token: None,
        ..api.with("")
    };
    refused(anonymous.get("/api/v1/tokens"), 401, "unauthorized");
    refused(
        api.with("ogt_notatoken").get("/api/v1/tokens"),
        401,
        "unauthorized",
    );
    assert_eq!(anonymous.get("/healthz"), (200, json!({"status": "ok"})));
    for (name, org) in [("bob", "Acme Aero"), ("carol", "Other Corp")] {
        let (status, _) = api.post(
            "/api/v1/users",
            json!({"username": name, "password": "pw-long-enough", "organization": org}),
        );
        assert_eq!(status, 201);
    }
    let csv = format!(
        "serial,secret,kind,digits,step,owner\nB1,{SEED},hotp,6,0,bob\nC1,{SEED2},hotp,6,0,carol\n"
    );
    let imported = api.send("POST", "/api/v1/tokens/import", Some(&csv), "text/csv");
    assert_eq!(imported.0, 201, "{}", imported.1);
    let desk = api.with(&create_token(&app, &["desk", "--role", "helpdesk"]));
    let acme = api.with(&create_token(
        &app,
        &["acme", "--role", "org-admin", "--organization", "Acme Aero"],
    ));
    // Helpdesk: reads, suspends, reinstates, resets; never revokes or issues keys.
    assert_eq!(desk.get("/api/v1/tokens/C1").0, 200);
    assert_eq!(
        desk.post("/api/v1/tokens/C1/suspend", json!({"reason": "call"}))
            .0,
        200
    );
    assert_eq!(desk.post_empty("/api/v1/tokens/C1/reinstate").0, 200);
    assert_eq!(desk.post_empty("/api/v1/tokens/C1/reset").0, 200);
    refused(
        desk.post("/api/v1/tokens/C1/revoke", json!({"reason": "x"})),
        403,
        "forbidden",
    );
    refused(
        desk.post("/api/v1/license-keys", json!({"level": 2, "years": 1})),
        403,
        "forbidden",
    );
    refused(
        desk.post(
            "/api/v1/users",
            json!({"username": "eve", "password": "pw-long-enough"}),
        ),
        403,
        "forbidden",
    );
    // Org-admin: its organization only.
    assert_eq!(acme.get("/api/v1/users/bob").0, 200);
    refused(acme.get("/api/v1/users/carol"), 403, "forbidden");
    refused(acme.get("/api/v1/tokens/C1"), 403, "forbidden");
    refused(
        acme.post("/api/v1/tokens/C1/suspend", json!({"reason": "x"})),
        403,
        "forbidden",
    );
    assert_eq!(
        acme.post("/api/v1/tokens/B1/suspend", json!({"reason": "x"}))
            .0,
        200
    );
    let (_, listed) = acme.get("/api/v1/tokens");
    let serials: Vec<_> = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t["serial"].clone())
        .collect();
    assert_eq!(serials, [json!("B1")]);
    refused(
        acme.post(
            "/api/v1/users",
            json!({"username": "dan", "password": "pw-long-enough", "organization": "Other Corp"}),
        ),
        403,
        "forbidden",
    );
    let (status, dan) = acme.post(
        "/api/v1/users",
        json!({"username": "dan", "password": "pw-long-enough"}),
    );
    assert_eq!(
        (status, dan["organization"].as_str()),
        (201, Some("Acme Aero"))
    );
    refused(acme.get("/api/v1/audit"), 403, "forbidden");
    assert_eq!(acme.get("/api/v1/audit?user=bob").0, 200);
    // A user's own suspension is the user's to lift; an administrator's is not.
    refused(
        acme.post("/api/v1/tokens/B1/reinstate", json!({"by": "user"})),
        403,
        "not_allowed",
    );
    assert_eq!(
        acme.post("/api/v1/tokens/B1/reinstate", json!({"by": "admin"}))
            .0,
        200
    );
}

/// Every bad input is a 4xx with a JSON error, and nothing changes.
#[test]
fn bad_input_gets_a_json_error_and_changes_nothing() {
    let Some((_app, api)) = started() else { return };
    refused(
        api.send(
            "POST",
            "/api/v1/users",
            Some("{not json"),
            "application/json",
        ),
        400,
        "bad_request",
    );
    refused(
        api.send("POST", "/api/v1/users", Some("{}"), "text/plain"),
        415,
        "unsupported_media_type",
    );
    refused(
        api.post(
            "/api/v1/users",
            json!({"username": "x", "password": "pw", "shoe_size": 9}),
        ),
        422,
        "invalid_field",
    );
    refused(
        api.post(
            "/api/v1/users",
            json!({"username": "bad name", "password": "pw"}),
        ),
        400,
        "invalid_field",
    );
    refused(
        api.post(
            "/api/v1/users",
            json!({"username": "ok", "password": "pw", "email": "nope"}),
        ),
        400,
        "invalid_field",
    );
    refused(
        api.post(
            "/api/v1/users",
            json!({"username": "ok", "password": "pw", "assurance_level": 7}),
        ),
        400,
        "invalid_field",
    );
    let huge = json!({"username": "ok", "password": "x".repeat(100_000)});
    refused(api.post("/api/v1/users", huge), 413, "body_too_large");
    assert_eq!(api.get("/api/v1/users/ok").0, 404);
    refused(api.get("/api/v1/tokens?state=shiny"), 400, "bad_request");
    refused(
        api.get("/api/v1/tokens?expiring_before=tomorrow"),
        400,
        "invalid_field",
    );
    refused(api.get("/api/v1/nothing-here"), 404, "not_found");
    refused(
        api.send("DELETE", "/api/v1/users", None, ""),
        405,
        "method_not_allowed",
    );
    refused(api.get("/api/v1/tokens/NOPE"), 404, "token_not_found");
    refused(
        api.post(
            "/api/v1/tokens/NOPE/resync",
            json!({"otp1": "12", "otp2": "123456"}),
        ),
        400,
        "invalid_field",
    );
    refused(
        api.post("/api/v1/license-keys", json!({"level": 4, "years": 1})),
        400,
        "invalid_field",
    );
    refused(api.post("/api/v1/sponsorships", json!({"username": "ghost", "organization": "Acme", "level": 2, "register_by": "2999-01-01"})), 404, "user_not_found");
    refused(
        api.send(
            "POST",
            "/api/v1/tokens/import",
            Some("serial,secret,kind,digits,step\nT1,notbase32!,hotp,6,0\n"),
            "text/csv",
        ),
        400,
        "bad_import",
    );
    refused(
        api.send(
            "POST",
            "/api/v1/tokens/import",
            Some("{}"),
            "application/json",
        ),
        415,
        "unsupported_media_type",
    );
    // curl's default form type still imports: the file's own form decides.
    let csv = "serial,secret,kind,digits,step\nF1,GEZDGNBVGY3TQOJQ,hotp,6,0\n";
    let plain = api.send(
        "POST",
        "/api/v1/tokens/import",
        Some(csv),
        "application/x-www-form-urlencoded",
    );
    assert_eq!(plain.0, 201, "{}", plain.1);
    refused(
        api.get("/api/v1/audit?since=yesterday"),
        400,
        "invalid_field",
    );
    assert_eq!(api.get("/api/v1/audit?since=1700000000").0, 200);
    let (status, sponsored) = api.post(
        "/api/v1/sponsorships",
        json!({"username": "ok2", "organization": "Acme", "level": 2, "register_by": 4102444800u64}),
    );
    assert_eq!(status, 404, "{sponsored}");
    let (_, listed) = api.get("/api/v1/tokens");
    let serials: Vec<_> = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t["serial"].clone())
        .collect();
    assert_eq!(serials, [json!("F1")], "only the good import");
}

/// The OpenAPI document names every route of the contract, with its method.
#[test]
fn the_openapi_document_has_every_route() {
    let Some((_app, api)) = started() else { return };
    let (status, doc) = api.get("/api/v1/openapi.json");
    assert_eq!(status, 200);
    let routes = [
        ("post", "/api/v1/users"),
        ("post", "/api/v1/users/import"),
        ("get", "/api/v1/users/{username}"),
        ("post", "/api/v1/users/{username}/password"),
        ("post", "/api/v1/users/{username}/terms"),
        ("post", "/api/v1/users/{username}/connect"),
        ("get", "/api/v1/users/{username}/proofing"),
        ("post", "/api/v1/users/{username}/proofing"),
        ("post", "/api/v1/users/{username}/proofing/outcome"),
        ("post", "/api/v1/users/{username}/proofing/appointments"),
        ("post", "/api/v1/users/{username}/proofing/verify"),
        ("post", "/api/v1/users/{username}/proofing/code"),
        ("post", "/api/v1/users/{username}/proofing/redeem"),
        ("post", "/api/v1/users/{username}/proofing/upgrade"),
        ("post", "/api/v1/proofing/callback"),
        ("get", "/api/v1/proofing"),
        ("post", "/api/v1/tokens/import"),
        ("get", "/api/v1/tokens"),
        ("get", "/api/v1/tokens/{serial}"),
        ("post", "/api/v1/tokens/{serial}/register"),
        ("post", "/api/v1/tokens/{serial}/resync"),
        ("post", "/api/v1/tokens/{serial}/suspend"),
        ("post", "/api/v1/tokens/{serial}/reinstate"),
        ("post", "/api/v1/tokens/{serial}/revoke"),
        ("post", "/api/v1/tokens/{serial}/renew"),
        ("post", "/api/v1/tokens/{serial}/reset"),
        ("post", "/api/v1/license-keys"),
        ("post", "/api/v1/sponsorships"),
        ("get", "/api/v1/audit"),
        ("post", "/api/v1/admin-tokens"),
        ("get", "/healthz"),
    ];
    for (method, path) in routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from the document"
        );
        // And it is served: whatever the answer, not "no such route".
        let served = api.send(
            &method.to_uppercase(),
            &path
                .replace("{username}", "nobody")
                .replace("{serial}", "NOPE"),
            None,
            "",
        );
        assert!(
            served.1["error"] != "not_found" && served.0 != 405,
            "{method} {path}: {served:?}"
        );
    }
    let documented = doc["paths"].as_object().expect("paths").len();
    let mut paths: Vec<_> = routes.iter().map(|(_, p)| *p).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(
        documented,
        paths.len(),
        "a documented path beyond the contract: add it to this list"
    );
    assert!(doc["components"]["schemas"]["TokenView"]["properties"]["state"].is_object());
}

/// HTTPS with the configured certificate; plain HTTP off loopback is refused by the config.
#[test]
fn https_with_the_configured_certificate() {
    if !peer_available("curl", "curl") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("key");
    let mut app = Appliance::new(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    app.start();
    let address = admin_address(&app);
    let port = address.rsplit(':').next().expect("port");
    let api = Api {
        base: format!("https://localhost:{port}"),
        token: None,
        cacert: Some(cert.clone()),
    };
    assert_eq!(api.get("/healthz"), (200, json!({"status": "ok"})));
    let token = create_token(&app, &["tls", "--role", "admin"]);
    assert_eq!(api.with(&token).get("/api/v1/tokens").0, 200);
    // Plain HTTP to the TLS port gets no answer.
    let plain = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            &format!("http://{address}/healthz"),
        ])
        .output()
        .expect("curl");
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("ok"));
    // The configuration refuses plain HTTP off loopback, naming the key.
    let config = dir.path().join("public.toml");
    std::fs::write(&config, "[admin]\nlisten = \"0.0.0.0:8443\"\n").expect("config");
    let out = Command::new(BIN)
        .args(["check-config", "-c", config.to_str().expect("path")])
        .output()
        .expect("check-config");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.listen") && err.contains("loopback"),
        "{err}"
    );
}

/// A connected account logs in with its parent's token while names and e-mail match.
#[test]
fn a_connected_account_logs_in_with_its_parents_token() {
    let Some((app, api)) = started() else { return };
    let person = |name: &str, email: &str| {
        json!({"username": name, "password": "pw-long-enough", "email": email,
               "first_name": "Ann", "middle_name": "Q", "last_name": "Lee"})
    };
    for (name, email) in [
        ("ann", "ann@example.org"),
        ("ann-partner", "ann@example.org"),
        ("ann-other", "other@example.org"),
    ] {
        assert_eq!(api.post("/api/v1/users", person(name, email)).0, 201);
    }
    let csv = format!("serial,secret,kind,digits,step,owner\nA1,{SEED},hotp,6,0,ann\n");
    assert_eq!(
        api.send("POST", "/api/v1/tokens/import", Some(&csv), "text/csv")
            .0,
        201
    );
    refused(
        api.post("/api/v1/users/ann-other/connect", json!({"parent": "ann"})),
        409,
        "cannot_connect",
    );
    refused(
        api.post(
            "/api/v1/users/ann/connect",
            json!({"parent": "ann-partner"}),
        ),
        409,
        "cannot_connect",
    );
    let (status, child) = api.post(
        "/api/v1/users/ann-partner/connect",
        json!({"parent": "ann"}),
    );
    assert_eq!(status, 200, "{child}");
    assert_eq!(
        (
            child["connected_to"].as_str(),
            child["token"]["serial"].as_str()
        ),
        (Some("ann"), Some("A1"))
    );
    let login = |user: &str, code: &str| {
        app.auth(user, &format!("pw-long-enough{code}"))
            .expect("reply")
            .code
    };
    assert_eq!(login("ann-partner", &hotp(SEED, 0)), Code::AccessAccept);
    // One token: a code either account used is spent for both.
    assert_eq!(login("ann", &hotp(SEED, 0)), Code::AccessReject);
    assert_eq!(login("ann", &hotp(SEED, 1)), Code::AccessAccept);
    assert_eq!(login("ann-other", &hotp(SEED, 2)), Code::AccessReject);
}
