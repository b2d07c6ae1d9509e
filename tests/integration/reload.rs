//! SIGHUP: clients, applications and their reply attributes change without a restart; a bad
//! configuration is refused and the running one stays; requests keep being answered.

use radius::core::code::Code;

use crate::harness::*;

const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// Rewrites the appliance's configuration: the harness's text with `extra` instead of the
/// `extra` it was made with (appended at the end).
fn rewrite(app: &Appliance, old_extra: &str, new_extra: &str) {
    let text = std::fs::read_to_string(&app.config).expect("read config");
    let base = text
        .strip_suffix(&format!("{old_extra}\n"))
        .expect("ends in the old extra");
    std::fs::write(&app.config, format!("{base}{new_extra}\n")).expect("write config");
}

#[test]
fn sighup_reloads_applications_and_keeps_the_old_on_a_bad_file() {
    let append = "[[applications]]\nname = \"default\"\notp_mode = \"append\"\n";
    let mut app = Appliance::new(append);
    app.add_user("olga", "olga-pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nS1,{SEED},hotp,6,0,olga\n"
    ));
    app.start();
    let accepted = app
        .auth("olga", &format!("olga-pw{}", hotp(SEED, 0)))
        .expect("reply");
    assert_eq!(accepted.code, Code::AccessAccept);

    // Challenge mode and a Session-Timeout, applied on SIGHUP.
    let challenge = "[[applications]]\nname = \"default\"\notp_mode = \"challenge\"\n\
                     reply_attributes = { Session-Timeout = 600 }\n";
    rewrite(&app, append, challenge);
    app.signal("HUP");
    assert!(
        app.wait_for_log("configuration reloaded"),
        "{:?}",
        app.logs()
    );
    let challenged = app.auth("olga", "olga-pw").expect("reply");
    assert_eq!(challenged.code, Code::AccessChallenge, "{:?}", app.logs());

    // A file that fails its check is refused, with the reason; the challenge mode stays.
    rewrite(
        &app,
        challenge,
        "[[applications]]\nname = \"default\"\notp_mode = \"sideways\"\n",
    );
    app.signal("HUP");
    assert!(
        app.wait_for_log("new configuration refused"),
        "{:?}",
        app.logs()
    );
    assert!(app
        .logs()
        .iter()
        .any(|l| l.contains("applications[0].otp_mode")));
    let still = app.auth("olga", "olga-pw").expect("reply");
    assert_eq!(still.code, Code::AccessChallenge);

    // A listen address cannot change without a restart: said, not applied.
    let text = std::fs::read_to_string(&app.config).expect("read");
    std::fs::write(
        &app.config,
        text.replace("otp_mode = \"sideways\"", "otp_mode = \"append\"")
            .replace(
                "listen = [\"127.0.0.1:0\"]",
                "listen = [\"127.0.0.1:0\", \"[::1]:0\"]",
            ),
    )
    .expect("write");
    app.signal("HUP");
    assert!(app.wait_for_log("takes a restart"), "{:?}", app.logs());
    // The warning comes first; wait for the reload itself (the second one applied).
    let reloads = || {
        app.logs()
            .iter()
            .filter(|l| l.contains("configuration reloaded"))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while reloads() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(reloads(), 2, "{:?}", app.logs());
    let appended = app
        .auth("olga", &format!("olga-pw{}", hotp(SEED, 1)))
        .expect("reply");
    assert_eq!(appended.code, Code::AccessAccept);
    assert!(app.stop());
}
