//! Provisioning from the command line: users, imports (all or nothing), registration with two
//! consecutive codes, show commands that never print a secret, check-config.

use crate::harness::*;

const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

#[test]
fn check_config_names_file_key_and_problem() {
    let app = Appliance::new("[otp]\nmax_failures = 0\n");
    let out = app.cli(&["check-config"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("otpgate.toml") && err.contains("otp.max_failures"),
        "{err}"
    );
    let good = Appliance::new("");
    let out = good.cli_ok(&["check-config"], None);
    assert!(out.contains("OK"), "{out}");
    // -c after the subcommand works too.
    let out = std::process::Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(&good.config)
        .output()
        .expect("run");
    assert!(out.status.success());
}

#[test]
fn shipped_example_config_checks() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/otpgate.toml");
    let out = std::process::Command::new(BIN)
        .args(["check-config", "-c", example])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn register_with_two_consecutive_codes_and_show_never_prints_secret() {
    let app = Appliance::new("");
    app.add_user("dave", "pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step\nT1,{SEED},hotp,6,0\n"
    ));
    let shown = app.cli_ok(&["token", "show", "T1"], None);
    assert!(shown.contains("inventory"), "{shown}");
    // Two codes that are not consecutive are refused with the guide's text.
    let out = app.cli(
        &[
            "token",
            "register",
            "T1",
            "dave",
            "--otp1",
            &hotp(SEED, 1),
            "--otp2",
            &hotp(SEED, 3),
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("incorrect One-Time Password"));
    let out = app.cli(
        &[
            "token", "register", "NOPE", "dave", "--otp1", "123456", "--otp2", "654321",
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Token Serial Number is not correct"));
    app.cli_ok(
        &[
            "token",
            "register",
            "T1",
            "dave",
            "--otp1",
            &hotp(SEED, 2),
            "--otp2",
            &hotp(SEED, 3),
        ],
        None,
    );
    let shown = app.cli_ok(&["token", "show", "T1", "--json"], None);
    let value: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(value["state"], "active");
    assert_eq!(value["owner"], "dave");
    assert_eq!(value["failures"], 0);
    let user = app.cli_ok(&["user", "show", "dave"], None);
    assert!(
        user.contains("T1") && user.contains("active") && user.contains("argon2id"),
        "{user}"
    );
    for text in [&shown, &user] {
        assert!(
            !text.contains(SEED) && !text.contains("3132333435"),
            "secret leaked: {text}"
        );
    }
    // The store holds the seed sealed, never in clear.
    let data = app.dir.path().join("data");
    for entry in std::fs::read_dir(&data).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            assert!(
                !bytes.windows(20).any(|w| w == b"12345678901234567890"),
                "{path:?}"
            );
        }
    }
}

#[test]
fn failed_import_writes_nothing_and_names_the_line() {
    let app = Appliance::new("");
    let file = app.dir.path().join("bad.csv");
    std::fs::write(
        &file,
        format!("serial,secret,kind,digits,step\nG1,{SEED},totp,6,30\nG2,not*base32,totp,6,30\n"),
    )
    .expect("write");
    let out = app.cli(&["token", "import", file.to_str().expect("path")], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3"), "{err}");
    let out = app.cli(&["token", "show", "G1"], None);
    assert!(!out.status.success(), "G1 must not be half-imported");
    // Duplicate of an existing serial: refused as a whole.
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step\nG1,{SEED},totp,6,30\n"
    ));
    std::fs::write(
        &file,
        format!("serial,secret,kind,digits,step\nG3,{SEED},totp,6,30\nG1,{SEED},totp,6,30\n"),
    )
    .expect("write");
    let out = app.cli(&["token", "import", file.to_str().expect("path")], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("G1"));
    assert!(!app.cli(&["token", "show", "G3"], None).status.success());
}

#[test]
fn user_import_accepts_migrated_hash_formats() {
    let app = Appliance::new("");
    let file = app.dir.path().join("users.csv");
    let ssha = ssha256("secret", b"salt");
    std::fs::write(
        &file,
        format!(
            "username,password_hash,email,first,last\nerin,{ssha},erin@example.com,Erin,Example\n"
        ),
    )
    .expect("write");
    app.cli_ok(&["user", "import", file.to_str().expect("path")], None);
    let shown = app.cli_ok(&["user", "show", "erin", "--json"], None);
    let value: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(value["email"], "erin@example.com");
    assert_eq!(value["password_scheme"], "ssha256");
    // A refused scheme names the line.
    std::fs::write(&file, "frank,{CLEARTEXT}hunter2\n").expect("write");
    let out = app.cli(&["user", "import", file.to_str().expect("path")], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}
