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
    assert!(shown.contains("unassigned"), "{shown}");
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

/// RFC 6030 Figure 6 (section 6.1): a HOTP secret AES-128-CBC encrypted under PSKC_KEY.
const FIGURE6: &str = include_str!("../data/rfc6030-figure6.xml");
const PSKC_KEY: &str = "12345678901234567890123456789012";
const PSKC_SERIAL: &str = "987654321";

/// Writes FIGURE6 and a key file holding `key` with `mode`; returns their paths as text.
fn pskc_files(app: &Appliance, key: &str, mode: u32) -> (String, String) {
    use std::os::unix::fs::PermissionsExt;
    let seeds = app.dir.path().join("seeds.pskc");
    std::fs::write(&seeds, FIGURE6).expect("write pskc");
    let key_file = app.dir.path().join("key.hex");
    let _ = std::fs::remove_file(&key_file); // an earlier one may be read-only
    std::fs::write(&key_file, key).expect("write key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(mode)).expect("chmod");
    let text = |p: std::path::PathBuf| p.to_str().expect("utf8 path").to_owned();
    (text(seeds), text(key_file))
}

/// Runs `args`, checks it failed with `expected` in its error and never showed the key, and
/// that the PSKC token was not imported.
fn refused(app: &Appliance, args: &[&str], stdin: Option<&str>, expected: &[&str]) -> String {
    let out = app.cli(args, stdin);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded");
    for needle in expected {
        assert!(err.contains(needle), "{args:?}: `{needle}` not in: {err}");
    }
    assert!(!err.contains("1234567890123456"), "key leaked: {err}");
    let show = app.cli(&["token", "show", PSKC_SERIAL], None);
    assert!(!show.status.success(), "{args:?}: the token was imported");
    err
}

#[test]
fn pskc_key_file_0600_imports() {
    let app = Appliance::new("");
    let (seeds, key) = pskc_files(&app, &format!("  {PSKC_KEY}\n\n"), 0o600);
    let out = app.cli_ok(&["token", "import", &seeds, "--pskc-key-file", &key], None);
    assert!(out.contains("1 token(s) imported"), "{out}");
    let shown = app.cli_ok(&["token", "show", PSKC_SERIAL], None);
    assert!(shown.contains("unassigned"), "{shown}");
    // The RFC's secret is "12345678901234567890": never shown, in any encoding.
    assert!(
        !shown.contains("3132333435") && !shown.contains("GEZDGNBV"),
        "{shown}"
    );
}

#[test]
fn pskc_key_file_open_to_group_or_others_is_refused() {
    let app = Appliance::new("");
    for (mode, text) in [
        (0o640, "mode 0640"),
        (0o604, "mode 0604"),
        (0o620, "mode 0620"),
    ] {
        let (seeds, key) = pskc_files(&app, PSKC_KEY, mode);
        refused(
            &app,
            &["token", "import", &seeds, "--pskc-key-file", &key],
            None,
            &[&key, "group or others", text, "chmod 600"],
        );
    }
}

#[test]
fn pskc_key_file_missing_empty_or_not_hex_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let app = Appliance::new("");
    let (seeds, key) = pskc_files(&app, "", 0o600);
    let args = ["token", "import", &seeds, "--pskc-key-file", &key];
    refused(&app, &args, None, &[&key, "is empty"]);
    let (_, key) = pskc_files(&app, "  \n", 0o400);
    refused(&app, &args, None, &[&key, "is empty"]);
    let (_, key) = pskc_files(&app, "12345678901234567890123456789O12\n", 0o600);
    refused(&app, &args, None, &[&key, "not a hex key"]);
    let (_, key) = pskc_files(&app, &"0".repeat(2000), 0o600);
    refused(&app, &args, None, &[&key, "longer than"]);
    let missing = app.dir.path().join("no-such.hex");
    let missing = missing.to_str().expect("utf8 path");
    let args = ["token", "import", &seeds, "--pskc-key-file", missing];
    refused(&app, &args, None, &[missing, "cannot open"]);
    // A directory opens but cannot be read (and its mode, 0700, passes the check).
    let dir = app.dir.path().join("key.d");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let dir = dir.to_str().expect("utf8 path");
    let args = ["token", "import", &seeds, "--pskc-key-file", dir];
    refused(&app, &args, None, &[dir, "cannot read key file"]);
    // Unreadable to its owner (root reads it anyway, so only checked when not root).
    let (_, key) = pskc_files(&app, PSKC_KEY, 0o200);
    if std::fs::read(&key).is_err() {
        let args = ["token", "import", &seeds, "--pskc-key-file", &key];
        refused(&app, &args, None, &[&key, "cannot open"]);
    }
}

#[test]
fn pskc_key_stdin_imports() {
    let app = Appliance::new("");
    let (seeds, _) = pskc_files(&app, PSKC_KEY, 0o600);
    let args = ["token", "import", &seeds, "--pskc-key-stdin"];
    refused(
        &app,
        &args,
        Some("nothex\n"),
        &["standard input", "not a hex key"],
    );
    let out = app.cli_ok(&args, Some(&format!("{PSKC_KEY}\n")));
    assert!(out.contains("1 token(s) imported"), "{out}");
    app.cli_ok(&["token", "show", PSKC_SERIAL], None);
}

#[test]
fn pskc_key_options_are_mutually_exclusive() {
    let app = Appliance::new("");
    let (seeds, key) = pskc_files(&app, PSKC_KEY, 0o600);
    let cases: [&[&str]; 3] = [
        &["--pskc-key", PSKC_KEY, "--pskc-key-file", &key],
        &["--pskc-key-file", &key, "--pskc-key-stdin"],
        &["--pskc-key", PSKC_KEY, "--pskc-key-stdin"],
    ];
    for options in cases {
        let mut args = vec!["token", "import", seeds.as_str()];
        args.extend_from_slice(options);
        // No stdin: the usage error comes before it is read (writing it could hit EPIPE).
        refused(&app, &args, None, &["cannot be used with"]);
    }
}

#[test]
fn pskc_wrong_key_file_imports_nothing() {
    let app = Appliance::new("");
    let wrong = "12345678901234567890123456789013";
    let (seeds, key) = pskc_files(&app, wrong, 0o600);
    let args = ["token", "import", &seeds, "--pskc-key-file", &key];
    refused(
        &app,
        &args,
        None,
        &["nothing imported", "wrong pre-shared key"],
    );
}
