//! FreeRADIUS migration in one command (issue 12): the same `users` file a FreeRADIUS site
//! runs with rlm_pap and rlm_totp is served by a real FreeRADIUS, then imported with
//! `otpgate user import --format freeradius`; the same users log in to otpgate with the same
//! passwords and codes.

use radius::core::code::Code;

use crate::freeradius::{FreeRadius, UPSTREAM_SECRET};
use crate::harness::*;

const ALICE_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const BOB_SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const CAROL_SEED: &str = "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U";

/// A site's users file: three password forms, TOTP secrets, comments, a DEFAULT entry and
/// reply items otpgate does not use.
fn users_file() -> String {
    let alice = ssha256("alice-pw", b"saltsalt");
    let alice = alice.trim_start_matches("{SSHA256}");
    let carol = ssha256("carol-pw", b"pepper12").replace("{SSHA256}", "{ssha256}");
    format!(
        "# migrated from the old VPN server\n\
         alice\tSSHA2-256-Password := \"{alice}\", TOTP-Secret := \"{ALICE_SEED}\"\n\
         \tReply-Message := \"Welcome, %{{User-Name}}\",\n\
         \tFramed-IP-Address := 10.0.0.5\n\
         \n\
         bob\tCleartext-Password := \"bob-pw\", TOTP-Secret := \"{BOB_SEED}\"\n\
         \n\
         carol\tPassword-With-Header := \"{carol}\", TOTP-Secret := \"{CAROL_SEED}\"\n\
         \n\
         DEFAULT\tFramed-Protocol == PPP\n\
         \tFramed-Protocol = PPP\n"
    )
}

/// Sends user/password to `addr` under `secret`; the reply's code.
fn login(addr: std::net::SocketAddr, secret: &str, user: &str, password: &str) -> Option<Code> {
    let request = request(user, password, secret, true);
    let reply = exchange(addr, &request.bytes, std::time::Duration::from_secs(5))?;
    otpgate::radius::nas::check_reply(&reply, &request, secret.as_bytes())
        .ok()
        .map(|r| r.code)
}

#[test]
fn a_freeradius_users_file_logs_in_the_same_after_import() {
    let users = users_file();
    let accounts = [
        ("alice", "alice-pw", ALICE_SEED),
        ("bob", "bob-pw", BOB_SEED),
        ("carol", "carol-pw", CAROL_SEED),
    ];
    // Before: the site's FreeRADIUS with rlm_pap and rlm_totp takes them.
    let Some(site) = FreeRadius::start_with_totp(&users) else {
        return;
    };
    for (user, password, seed) in accounts {
        let code = totp_now(seed);
        let answer = login(
            site.addr,
            UPSTREAM_SECRET,
            user,
            &format!("{password}{code}"),
        );
        assert_eq!(answer, Some(Code::AccessAccept), "FreeRADIUS, {user}");
        let wrong = login(
            site.addr,
            UPSTREAM_SECRET,
            user,
            &format!("{password}000000"),
        );
        assert_eq!(
            wrong,
            Some(Code::AccessReject),
            "FreeRADIUS, {user} with a wrong code"
        );
    }
    drop(site);

    // The migration: one command.
    let mut app = Appliance::new("");
    let file = app.dir.path().join("authorize");
    std::fs::write(&file, &users).expect("write");
    let out = app.cli_ok(
        &[
            "user",
            "import",
            "--format",
            "freeradius",
            file.to_str().expect("utf8"),
        ],
        None,
    );
    assert!(
        out.contains("3 user(s) and 3 TOTP token(s) imported"),
        "{out}"
    );
    assert!(
        out.contains("DEFAULT"),
        "the DEFAULT entry is reported: {out}"
    );
    assert!(
        out.contains("alice: not used: Reply-Message, Framed-IP-Address"),
        "{out}"
    );
    let shown = app.cli_ok(&["user", "show", "bob"], None);
    assert!(
        shown.contains("argon2id") && !shown.contains("bob-pw"),
        "a cleartext password is hashed, never kept: {shown}"
    );

    // After: the same passwords and codes log in to otpgate.
    app.start();
    for (user, password, seed) in accounts {
        let code = totp_now(seed);
        let reply = app
            .auth(user, &format!("{password}{code}"))
            .expect("a reply");
        assert_eq!(
            reply.code,
            Code::AccessAccept,
            "otpgate, {user}: {:?}",
            app.logs()
        );
    }
    assert!(app.stop());

    // All or nothing: importing the same file again adds nothing and says why.
    let again = app.cli(
        &[
            "user",
            "import",
            "--format",
            "freeradius",
            file.to_str().expect("utf8"),
        ],
        None,
    );
    let text = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && text.contains("already exists") && text.contains("line 2"),
        "{text}"
    );
}

/// The same import through the admin API, the server running: the users log in at once.
#[test]
fn the_api_imports_a_freeradius_file_and_its_users_log_in() {
    let Some((app, api)) = crate::api::started() else {
        return;
    };
    let (status, body) = api.send(
        "POST",
        "/api/v1/users/import?format=freeradius",
        Some(&users_file()),
        "text/plain",
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["users"].as_u64(), body["tokens"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(body["skipped"][0]["what"], "DEFAULT", "{body}");
    let code = totp_now(ALICE_SEED);
    let reply = app
        .auth("alice", &format!("alice-pw{code}"))
        .expect("a reply");
    assert_eq!(reply.code, Code::AccessAccept);
    // Again: refused whole, naming the line; a bad format is a 400 too.
    let (status, body) = api.send(
        "POST",
        "/api/v1/users/import?format=freeradius",
        Some(&users_file()),
        "text/plain",
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_import")),
        "{body}"
    );
    let (status, _) = api.send(
        "POST",
        "/api/v1/users/import?format=ldif",
        Some("x"),
        "text/plain",
    );
    assert_eq!(status, 400);
    let (status, body) = api.send(
        "POST",
        "/api/v1/users/import?format=freeradius&totp_digits=7",
        Some("x"),
        "text/plain",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("6 or 8"), "{body}");
}
