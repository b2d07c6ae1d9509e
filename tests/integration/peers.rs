//! Real peers: FreeRADIUS's `radclient` as the NAS and `oathtool` as an independent code
//! generator, against the real server. Skipped with a notice when the tools are missing,
//! except in CI (`CI` set), where their absence fails the run.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::*;

const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn oathtool(args: &[&str]) -> String {
    let out = Command::new("oathtool")
        .args(args)
        .output()
        .expect("run oathtool");
    assert!(
        out.status.success(),
        "oathtool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Sends one Access-Request with radclient (with Message-Authenticator); returns (exit
/// success, output).
fn radclient(app: &Appliance, user: &str, password: &str, secret: &str) -> (bool, String) {
    radclient_with(app, user, password, secret, true)
}

fn radclient_with(
    app: &Appliance,
    user: &str,
    password: &str,
    secret: &str,
    message_authenticator: bool,
) -> (bool, String) {
    let ma = if message_authenticator {
        ", Message-Authenticator = 0x00"
    } else {
        ""
    };
    run_radclient(
        &app.addr().to_string(),
        "auth",
        secret,
        &format!("User-Name = \"{user}\", User-Password = \"{password}\"{ma}"),
    )
}

/// Runs `radclient -x ADDRESS COMMAND SECRET` (one try, 3 s) with `attributes` (radclient's
/// input syntax) on its standard input; returns (exit success, stdout and stderr).
fn run_radclient(address: &str, command: &str, secret: &str, attributes: &str) -> (bool, String) {
    let mut child = Command::new("radclient")
        .args(["-x", "-r", "1", "-t", "3", address, command, secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn radclient");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{attributes}\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("radclient");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn radclient_with_oathtool_codes_accept_and_reject() {
    if !peer_available("radclient", "freeradius-utils") || !peer_available("oathtool", "oathtool") {
        return;
    }
    let mut app = Appliance::new("");
    app.add_user("grace", "grace-pw");
    app.add_user("heidi", "heidi-pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nT1,{SEED},totp,6,30,grace\nH1,{SEED},hotp,8,0,heidi\n"
    ));
    app.start();

    let totp = oathtool(&["--totp", "-b", SEED]);
    let (ok, out) = radclient(&app, "grace", &format!("grace-pw{totp}"), SECRET);
    assert!(ok && out.contains("Access-Accept"), "{out}");
    assert!(
        out.contains("Message-Authenticator"),
        "reply carries it: {out}"
    );

    // Replay of the same code, wrong password, wrong secret.
    let (ok, out) = radclient(&app, "grace", &format!("grace-pw{totp}"), SECRET);
    assert!(!ok && out.contains("Access-Reject"), "{out}");
    assert!(out.contains("Login failed"), "{out}");
    let (_, out) = radclient(&app, "grace", &format!("wrong{totp}"), SECRET);
    assert!(out.contains("Access-Reject"), "{out}");
    let (ok, out) = radclient(&app, "grace", &format!("grace-pw{totp}"), "wrong-secret-1");
    assert!(!ok && !out.contains("Access-Accept"), "{out}");

    // 8-digit HOTP, codes from oathtool: 0 then 1 accepted, 0 again refused.
    for counter in ["0", "1"] {
        let code = oathtool(&["-b", "-d", "8", "-c", counter, SEED]);
        let (ok, out) = radclient(&app, "heidi", &format!("heidi-pw{code}"), SECRET);
        assert!(
            ok && out.contains("Access-Accept"),
            "counter {counter}: {out}"
        );
    }
    let code = oathtool(&["-b", "-d", "8", "-c", "0", SEED]);
    let (_, out) = radclient(&app, "heidi", &format!("heidi-pw{code}"), SECRET);
    assert!(out.contains("Access-Reject"), "{out}");
}

#[test]
fn radclient_wrong_otp_lockout_and_missing_message_authenticator() {
    if !peer_available("radclient", "freeradius-utils") || !peer_available("oathtool", "oathtool") {
        return;
    }
    let mut app = Appliance::new("[otp]\nmax_failures = 3\n");
    app.add_user("judy", "judy-pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nJ1,{SEED},hotp,6,0,judy\n"
    ));
    app.start();
    let code0 = oathtool(&["-b", "-c", "0", SEED]);
    // Without Message-Authenticator: dropped, no reply at all, and the code is not consumed.
    let (ok, out) = radclient_with(&app, "judy", &format!("judy-pw{code0}"), SECRET, false);
    assert!(!ok && !out.contains("Received"), "{out}");
    // Wrong codes: the generic text, then the locked text once max_failures is reached.
    let wrong = if code0 == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..2 {
        let (ok, out) = radclient(&app, "judy", &format!("judy-pw{wrong}"), SECRET);
        assert!(
            !ok && out.contains("Access-Reject") && out.contains("Login failed"),
            "{out}"
        );
    }
    let (_, out) = radclient(&app, "judy", &format!("judy-pw{wrong}"), SECRET);
    assert!(
        out.contains("Access-Reject") && out.contains("locked"),
        "{out}"
    );
    // Locked: even the right (unused) code gets the locked text.
    let (ok, out) = radclient(&app, "judy", &format!("judy-pw{code0}"), SECRET);
    assert!(!ok && out.contains("locked"), "{out}");
}

#[test]
fn imported_ssha256_user_logs_in_and_is_rehashed_to_argon2id() {
    if !peer_available("oathtool", "oathtool") {
        return;
    }
    let mut app = Appliance::new("");
    let hash = ssha256("ivan-pw", b"NaCl");
    let file = app.dir.path().join("users.csv");
    std::fs::write(&file, format!("ivan,{hash},,,\n")).expect("write");
    app.cli_ok(&["user", "import", file.to_str().expect("path")], None);
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nI1,{SEED},hotp,6,0,ivan\n"
    ));
    app.start();
    let code = oathtool(&["-b", "-c", "0", SEED]);
    let reply = app.auth("ivan", &format!("ivan-pw{code}")).expect("reply");
    assert_eq!(reply.code, radius::core::code::Code::AccessAccept);
    // The re-hash happens off the reply path, on spare CPU: wait for it before stopping.
    assert!(
        app.wait_for_log("password hash upgraded to argon2id"),
        "{}",
        app.logs().join("\n")
    );
    assert!(app.stop());
    let shown = app.cli_ok(&["user", "show", "ivan", "--json"], None);
    assert!(
        shown.contains("\"password_scheme\": \"argon2id\""),
        "{shown}"
    );
}

/// Status-Server (RFC 5997) from FreeRADIUS's radclient: an Access-Accept when it carries a
/// Message-Authenticator, nothing without one; no login is evaluated.
#[test]
fn radclient_status_server_is_answered() {
    if !peer_available("radclient", "freeradius-utils") {
        return;
    }
    let mut app = Appliance::new("");
    app.start();
    let address = app.addr().to_string();
    let status = |attributes: &str| run_radclient(&address, "status", SECRET, attributes).1;
    let answered = status("Message-Authenticator = 0x00");
    assert!(answered.contains("Access-Accept"), "{answered}");
    let unsigned = status("NAS-Identifier = \"probe\"");
    assert!(!unsigned.contains("Access-Accept"), "{unsigned}");
    assert!(app.stop());
    assert!(
        app.logs().iter().any(|l| l.contains("status_server=1")),
        "{:?}",
        app.logs()
    );
}

/// Accounting (RFC 2866) from radclient: answered once recorded; the user's last session shows
/// in `user show`; a wrong secret gets no answer.
#[test]
fn radclient_accounting_is_answered_and_the_last_session_recorded() {
    if !peer_available("radclient", "freeradius-utils") {
        return;
    }
    let mut app = Appliance::new("");
    app.env.push((
        "OTPGATE__RADIUS__ACCOUNTING_LISTEN".into(),
        "127.0.0.1:0".into(),
    ));
    app.add_user("vic", "pw");
    app.start();
    assert!(app.wait_for_log("radius accounting listening"));
    let address = app
        .logs()
        .into_iter()
        .find(|l| l.contains("radius accounting listening"))
        .and_then(|l| {
            l.split("address=")
                .nth(1)
                .map(|a| a.split_whitespace().next().unwrap_or("").to_string())
        })
        .expect("accounting address");
    let acct = |secret: &str| {
        let attributes = "User-Name = \"vic\", Acct-Status-Type = Start, \
                          Acct-Session-Id = \"s-42\", Framed-IP-Address = 10.0.0.7";
        run_radclient(&address, "acct", secret, attributes).1
    };
    let wrong = acct("not-the-secret");
    assert!(!wrong.contains("Accounting-Response"), "{wrong}");
    let answered = acct(SECRET);
    assert!(answered.contains("Accounting-Response"), "{answered}");
    let shown = app.cli_ok(&["user", "show", "vic", "--json"], None);
    let value: serde_json::Value = serde_json::from_str(&shown).expect("json");
    let session = &value["last_session"];
    assert_eq!(session["status"], "start", "{value}");
    assert_eq!(session["session_id"], "s-42");
    assert_eq!(session["framed_ip"], "10.0.0.7");
    assert_eq!(session["client"], "test-nas");
}

/// Sends `attributes` (radclient's input syntax) as one Access-Request with radclient;
/// returns radclient's output.
fn radclient_attributes(app: &Appliance, attributes: &str) -> String {
    let signed = format!("{attributes}, Message-Authenticator = 0x00");
    run_radclient(&app.addr().to_string(), "auth", SECRET, &signed).1
}

/// The State (as radclient prints it, `0x...`) of the Access-Challenge in radclient's output.
fn challenge_state(output: &str) -> String {
    assert!(output.contains("Access-Challenge"), "{output}");
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix("State = "))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no State in {output}"))
}

/// `otp_mode = "challenge"` with radclient as the VPN: the password gets an Access-Challenge
/// with a State and the prompt; the code with that State gets the Accept; the State cannot be
/// used twice or by another user (expiry: `auth::challenge` unit tests).
#[test]
fn radclient_challenge_mode_password_then_code() {
    if !peer_available("radclient", "freeradius-utils") || !peer_available("oathtool", "oathtool") {
        return;
    }
    let mut app = Appliance::new(
        "[[applications]]\nname = \"default\"\notp_mode = \"challenge\"\n\
         challenge_prompt = \"Token code, please\"\n",
    );
    app.add_user("ivan", "ivan-pw");
    app.add_user("mallory", "mallory-pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nC1,{SEED},hotp,6,0,ivan\n"
    ));
    app.start();
    let code = |counter: &str| oathtool(&["-b", "-c", counter, SEED]);

    let wrong = radclient_attributes(&app, "User-Name = \"ivan\", User-Password = \"nope\"");
    assert!(wrong.contains("Access-Reject"), "{wrong}");
    let first = radclient_attributes(&app, "User-Name = \"ivan\", User-Password = \"ivan-pw\"");
    assert!(first.contains("Token code, please"), "{first}");
    let state = challenge_state(&first);
    assert!(state.len() >= 2 + 32, "at least 16 octets: {state}");
    let answer = |user: &str, code: &str, state: &str| {
        radclient_attributes(
            &app,
            &format!("User-Name = \"{user}\", User-Password = \"{code}\", State = {state}"),
        )
    };
    let accepted = answer("ivan", &code("0"), &state);
    assert!(accepted.contains("Access-Accept"), "{accepted}");
    // Used once: the same State again is refused, even with the next right code.
    let reused = answer("ivan", &code("1"), &state);
    assert!(reused.contains("Access-Reject"), "{reused}");
    // Another user cannot answer ivan's challenge.
    let state = challenge_state(&radclient_attributes(
        &app,
        "User-Name = \"ivan\", User-Password = \"ivan-pw\"",
    ));
    let foreign = answer("mallory", &code("1"), &state);
    assert!(foreign.contains("Access-Reject"), "{foreign}");
    // A State never issued.
    let forged = answer("ivan", &code("1"), "0x00112233445566778899aabbccddeeff");
    assert!(forged.contains("Access-Reject"), "{forged}");
    assert!(app.stop());
    let logs = app.logs().join("\n");
    for reason in [
        "challenge_sent",
        "challenge_state_unknown",
        "challenge_state_foreign",
    ] {
        assert!(logs.contains(reason), "{reason} in {logs}");
    }
}

/// `otp_mode = "auto"`: password and code in one go are accepted at once; the password alone
/// gets a challenge, answered with the code.
#[test]
fn radclient_auto_mode_appended_or_challenged() {
    if !peer_available("radclient", "freeradius-utils") || !peer_available("oathtool", "oathtool") {
        return;
    }
    let mut app = Appliance::new("[[applications]]\nname = \"default\"\notp_mode = \"auto\"\n");
    app.add_user("judy", "judy-pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nA1,{SEED},hotp,6,0,judy\n"
    ));
    app.start();
    let code = |counter: &str| oathtool(&["-b", "-c", counter, SEED]);
    let appended = radclient_attributes(
        &app,
        &format!(
            "User-Name = \"judy\", User-Password = \"judy-pw{}\"",
            code("0")
        ),
    );
    assert!(appended.contains("Access-Accept"), "{appended}");
    let state = challenge_state(&radclient_attributes(
        &app,
        "User-Name = \"judy\", User-Password = \"judy-pw\"",
    ));
    let answered = radclient_attributes(
        &app,
        &format!(
            "User-Name = \"judy\", User-Password = \"{}\", State = {state}",
            code("1")
        ),
    );
    assert!(answered.contains("Access-Accept"), "{answered}");
}

/// An application's `reply_attributes` (RFC attributes, a vendor's, and one from an operator's
/// dictionary folder) reach radclient in the Access-Accept, and only there.
#[test]
fn radclient_accept_carries_the_application_reply_attributes() {
    if !peer_available("radclient", "freeradius-utils") || !peer_available("oathtool", "oathtool") {
        return;
    }
    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        folder.path().join("dictionary"),
        "$INCLUDE dictionary.acme\n",
    )
    .expect("dictionary");
    std::fs::write(
        folder.path().join("dictionary.acme"),
        "VENDOR Acme 64999\nBEGIN-VENDOR Acme\nATTRIBUTE Acme-Group 1 string\nEND-VENDOR Acme\n",
    )
    .expect("dictionary.acme");
    let mut app = Appliance::new(
        "[[applications]]\nname = \"default\"\n\
         reply_attributes = { Class = \"partner\", Filter-Id = \"vpn-users\", \
         Session-Timeout = 3600, Cisco-AVPair = \"shell:priv-lvl=15\", Acme-Group = \"ops\" }\n",
    );
    app.env.push((
        "OTPGATE__RADIUS__DICTIONARIES".into(),
        folder.path().display().to_string(),
    ));
    // Requests by attribute name at debug level, passwords hidden.
    app.env.push((
        "OTPGATE__LOG__LEVEL".into(),
        "info,otpgate::radius=debug".into(),
    ));
    app.add_user("kim", "kim-pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nR1,{SEED},hotp,6,0,kim\n"
    ));
    app.start();
    let code = oathtool(&["-b", "-c", "0", SEED]);
    let (ok, out) = radclient(&app, "kim", &format!("kim-pw{code}"), SECRET);
    assert!(ok && out.contains("Access-Accept"), "{out}");
    for shown in [
        "Class = 0x706172746e6572",
        "Filter-Id = \"vpn-users\"",
        "Session-Timeout = 3600",
        "Cisco-AVPair = \"shell:priv-lvl=15\"",
        // radclient does not know the operator's vendor: number and raw value.
        "Attr-26.64999.1 = 0x6f7073",
    ] {
        assert!(out.contains(shown), "{shown} in {out}");
    }
    let (_, rejected) = radclient(&app, "kim", "kim-pw000000", SECRET);
    assert!(
        rejected.contains("Access-Reject") && !rejected.contains("Filter-Id"),
        "{rejected}"
    );
    assert!(app.stop());
    assert!(
        app.logs()
            .iter()
            .any(|l| l.contains("application replies with attributes")
                && l.contains("Acme-Group=\"ops\"")),
        "{:?}",
        app.logs()
    );
    let logs = app.logs().join("\n");
    assert!(
        logs.contains("User-Name=\"kim\"") && logs.contains("User-Password=<hidden>"),
        "{logs}"
    );
    assert!(!logs.contains("kim-pw"), "no password in the log");
}

/// `reply_attributes_by_organization`: a user of that organization gets its attributes (an
/// attribute of the same name replacing the application's), everyone else the application's.
#[test]
fn radclient_accept_carries_the_organizations_attributes() {
    if !peer_available("radclient", "freeradius-utils") || !peer_available("oathtool", "oathtool") {
        return;
    }
    let mut app = Appliance::new(
        "[[applications]]\nname = \"default\"\n\
         reply_attributes = { Filter-Id = \"staff\", Session-Timeout = 3600 }\n\
         reply_attributes_by_organization = { \"Acme Corp\" = { filter-id = \"acme-partners\" } }\n",
    );
    app.cli_ok(
        &[
            "user",
            "add",
            "pia",
            "--password-stdin",
            "--organization",
            "Acme Corp",
        ],
        Some("pia-pw\n"),
    );
    app.add_user("quinn", "quinn-pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nO1,{SEED},hotp,6,0,pia\nO2,{SEED},hotp,6,0,quinn\n"
    ));
    app.start();
    let code = oathtool(&["-b", "-c", "0", SEED]);
    let (ok, partner) = radclient(&app, "pia", &format!("pia-pw{code}"), SECRET);
    assert!(ok, "{partner}");
    assert!(
        partner.contains("Filter-Id = \"acme-partners\"")
            && partner.contains("Session-Timeout = 3600")
            && !partner.contains("Filter-Id = \"staff\""),
        "{partner}"
    );
    let (ok, staff) = radclient(&app, "quinn", &format!("quinn-pw{code}"), SECRET);
    assert!(ok && staff.contains("Filter-Id = \"staff\""), "{staff}");
    assert!(app.stop());
}
