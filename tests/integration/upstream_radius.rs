//! `first_factor` = an upstream RADIUS server: a real FreeRADIUS on loopback checks the
//! password, otpgate the code; failover past a dead server; a clear Reject when none answers.

use crate::freeradius::{free_udp_port, FreeRadius, UPSTREAM_SECRET};
use crate::harness::*;
use radius::core::code::Code;

const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// An appliance whose default application checks passwords with `servers` (TOML array items).
fn appliance(servers: &str) -> Appliance {
    let mut app = Appliance::new(&format!(
        r#"
[[upstreams]]
name = "site-radius"
kind = "radius"
servers = [{servers}]
secret = "{UPSTREAM_SECRET}"
timeout_ms = 300
retries = 1

[[applications]]
name = "default"
first_factor = "site-radius"
"#
    ));
    // The local password is not the site's: a login with it must fail.
    app.add_user("carol", "carol-local-pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nU1,{SEED},hotp,6,0,carol\n"
    ));
    app.start();
    app
}

#[test]
fn freeradius_checks_the_password_and_otpgate_the_code() {
    let Some(site) = FreeRadius::start() else {
        return;
    };
    // A dead server first: refused at once (ICMP), the next one (over IPv6) answers.
    let dead = free_udp_port();
    let mut app = appliance(&format!(
        "\"127.0.0.1:{dead}\", \"[::1]:{}\"",
        site.addr.port()
    ));
    let reply = app
        .auth("carol", &format!("carol-site-pw{}", hotp(SEED, 0)))
        .expect("a reply");
    assert_eq!(reply.code, Code::AccessAccept, "{:?}", app.logs());
    // The local password, a wrong site password, the site password with a spent code.
    for password in [
        format!("carol-local-pw{}", hotp(SEED, 1)),
        format!("wrong-pw{}", hotp(SEED, 1)),
        format!("carol-site-pw{}", hotp(SEED, 0)),
    ] {
        let reply = app.auth("carol", &password).expect("a reply");
        assert_eq!(reply.code, Code::AccessReject, "{password}");
    }
    assert!(app.stop());
    let logs = app.logs().join("\n");
    assert!(
        logs.contains("upstream=\"site-radius\"") && logs.contains("upstream_micros="),
        "the decision log names the upstream and its latency: {logs}"
    );
    assert!(!logs.contains("carol-site-pw"), "no password in the log");
}

#[test]
fn no_upstream_answering_is_a_clear_reject() {
    if !peer_available("freeradius", "freeradius") {
        return;
    }
    let (first, second) = (free_udp_port(), free_udp_port());
    let mut app = appliance(&format!("\"127.0.0.1:{first}\", \"[::1]:{second}\""));
    let reply = app
        .auth("carol", &format!("carol-site-pw{}", hotp(SEED, 0)))
        .expect("a reply");
    assert_eq!(reply.code, Code::AccessReject);
    assert_eq!(
        reply.reply_message.as_deref(),
        Some(otpgate::auth::messages::UPSTREAM_UNAVAILABLE)
    );
    // An unknown name gets the same answer: the text tells nothing about who has an account.
    let unknown = app.auth("nobody", "some-password-123456").expect("a reply");
    assert_eq!(unknown.reply_message, reply.reply_message);
    assert!(app.stop(), "{:?}", app.logs());
    let logs = app.logs().join("\n");
    assert!(logs.contains("upstream_unavailable"), "{logs}");
    assert!(logs.contains("upstream first factor unavailable"), "{logs}");
}
