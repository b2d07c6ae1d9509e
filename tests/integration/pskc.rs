//! RFC 6030's own example files (tests/data/pskc/) through the real binary and the admin API:
//! password-based encryption with `--pskc-password-file`, a device's PIN key skipped and
//! reported, several keys on one device, and the key or password of the API in headers.

use std::os::unix::fs::PermissionsExt;

use crate::api::started;
use crate::harness::*;

/// The path of an RFC 6030 figure's file.
fn figure(n: u32) -> String {
    format!(
        "{}/tests/data/pskc/figure{n}.xml",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A file holding `text` with `mode`, in the appliance's directory.
fn private_file(app: &Appliance, name: &str, text: &str, mode: u32) -> String {
    let path = app.dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path.display().to_string()
}

#[test]
fn figure_7_opens_with_its_password_from_an_owner_only_file() {
    let app = Appliance::new("");
    let wrong = private_file(&app, "wrong.txt", "not-qwerty\n", 0o600);
    let out = app.cli(
        &[
            "token",
            "import",
            &figure(7),
            "--pskc-password-file",
            &wrong,
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("nothing imported"),
        "{text}"
    );
    let open = private_file(&app, "open.txt", "qwerty\n", 0o644);
    let out = app.cli(
        &["token", "import", &figure(7), "--pskc-password-file", &open],
        None,
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("chmod 600"),
        "{text}"
    );
    let right = private_file(&app, "right.txt", "qwerty\n", 0o600);
    let out = app.cli_ok(
        &[
            "token",
            "import",
            &figure(7),
            "--pskc-password-file",
            &right,
        ],
        None,
    );
    assert!(
        out.contains("1 token(s) imported") && out.contains("(1 HOTP, 0 TOTP)"),
        "{out}"
    );
    let shown = app.cli_ok(&["token", "show", "987654321"], None);
    assert!(shown.contains("unassigned"), "{shown}");
}

#[test]
fn a_pin_key_is_skipped_and_a_device_with_two_keys_gives_two_tokens() {
    let app = Appliance::new("");
    let out = app.cli_ok(&["token", "import", &figure(5)], None);
    assert!(out.contains("1 token(s) imported"), "{out}");
    assert!(
        out.contains("skipped: Key `123456781`") && out.contains("PIN"),
        "{out}"
    );
    let out = app.cli_ok(&["token", "import", &figure(10)], None);
    assert!(out.contains("4 token(s) imported"), "{out}");
    for serial in ["654321", "123456", "9999999-3", "9999999-4"] {
        app.cli_ok(&["token", "show", serial], None);
    }
}

#[test]
fn the_api_takes_the_key_and_the_password_in_headers() {
    let Some((_app, api)) = started() else {
        return;
    };
    let xml = |n| std::fs::read_to_string(figure(n)).expect("figure");
    let (status, body) = api.send_with(
        "POST",
        "/api/v1/tokens/import",
        Some(&xml(6)),
        "application/pskc+xml",
        &["PSKC-Key: 12345678901234567890123456789012"],
    );
    assert_eq!(
        (status, body["imported"].as_u64()),
        (201, Some(1)),
        "{body}"
    );
    assert_eq!(body["hotp"], 1);
    // Figure 7 names the same serial: a second import of it is refused, all or nothing.
    let (status, body) = api.send_with(
        "POST",
        "/api/v1/tokens/import",
        Some(&xml(7)),
        "application/pskc+xml",
        &["PSKC-Password: qwerty"],
    );
    assert_eq!(status, 409, "{body}");
    let (status, body) = api.send_with(
        "POST",
        "/api/v1/tokens/import",
        Some(&xml(5)),
        "application/pskc+xml",
        &["PSKC-Key: not hex"],
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.send(
        "POST",
        "/api/v1/tokens/import",
        Some(&xml(4)),
        "application/pskc+xml",
    );
    assert_eq!(status, 400, "no usable key is an error: {body}");
}
