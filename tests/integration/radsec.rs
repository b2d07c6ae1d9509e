//! otpgate's RadSec port (RFC 6614) with a real peer: FreeRADIUS's NAS side as the harness's
//! UDP client, Debian's `radsecproxy` forwarding its requests over mutual TLS to otpgate.

use std::net::SocketAddr;
use std::time::Duration;

use otpgate::radius::nas;
use radius::core::code::Code;

use crate::harness::*;
use crate::radsecproxy::{Pki, RadsecProxy};

const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const UDP_SECRET: &str = "branch-udp-secret";
const CLIENT_NAME: &str = "radsec.branch.test";

/// An appliance serving RadSec on `listen` (a loopback address, port 0) with `pki`'s server
/// certificate, its RadSec client connecting from `client_address`; and the address it
/// listens on.
fn appliance(pki: &Pki, listen: &str, client_address: &str) -> (Appliance, SocketAddr) {
    let mut app = Appliance::new(&format!(
        r#"
[radsec]
listen = ["{listen}"]
tls_cert = "{cert}"
tls_key = "{key}"
client_ca = "{ca}"

[[radius.clients]]
name = "branch"
address = "{client_address}"
certificate_name = "{CLIENT_NAME}"
application = "default"

[[applications]]
name = "default"

[[applications]]
name = "prompted"
otp_mode = "challenge"
"#,
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
        ca = pki.ca.display(),
    ));
    app.add_user("rita", "rita-pw");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nT1,{SEED},hotp,6,0,rita\n"
    ));
    app.start();
    assert!(app.wait_for_log("radsec listening"), "{:?}", app.logs());
    let port = app
        .logs()
        .iter()
        .find(|l| l.contains("radsec listening"))
        .and_then(|l| l.split("address=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .expect("the radsec address in the log");
    (app, port)
}

/// Sends an Access-Request to radsecproxy and checks the reply under the UDP secret.
fn login(proxy: &RadsecProxy, user: &str, password: &str) -> Option<nas::CheckedReply> {
    let request = request(user, password, UDP_SECRET, true);
    let reply = exchange(proxy.udp_addr, &request.bytes, Duration::from_secs(5))?;
    Some(nas::check_reply(&reply, &request, UDP_SECRET.as_bytes()).expect("authentic reply"))
}

/// A PKI, an appliance serving RadSec on `listen` for a client at `client_address`, and
/// radsecproxy connected to it with the client certificate (`foreign`: one from another CA).
/// `None` when radsecproxy is not installed (outside CI).
fn set_up(
    listen: &str,
    client_address: &str,
    foreign: bool,
) -> Option<(Pki, Appliance, RadsecProxy)> {
    let pki = Pki::new(CLIENT_NAME);
    if !peer_available("radsecproxy", "radsecproxy") {
        return None;
    }
    let (app, radsec) = appliance(&pki, listen, client_address);
    let (cert, key) = if foreign {
        (&pki.foreign_client_cert, &pki.foreign_client_key)
    } else {
        (&pki.client_cert, &pki.client_key)
    };
    let proxy = RadsecProxy::start(radsec, UDP_SECRET, &pki.ca, cert, key)?;
    Some((pki, app, proxy))
}

#[test]
fn radsecproxy_logs_in_over_mutual_tls() {
    let Some((_pki, mut app, proxy)) = set_up("127.0.0.1:0", "127.0.0.1/32", false) else {
        return;
    };
    let accepted = login(&proxy, "rita", &format!("rita-pw{}", hotp(SEED, 0))).expect("a reply");
    assert_eq!(accepted.code, Code::AccessAccept, "{}", proxy.log());
    let rejected = login(&proxy, "rita", &format!("wrong{}", hotp(SEED, 1))).expect("a reply");
    assert_eq!(rejected.code, Code::AccessReject);
    drop(proxy);
    assert!(app.stop());
    let logs = app.logs().join("\n");
    assert!(logs.contains("radsec client connected"), "{logs}");
    assert!(
        logs.contains("client=branch") && logs.contains("result=\"accept\""),
        "decided for the client its certificate names: {logs}"
    );
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let Some((_pki, mut app, proxy)) = set_up("127.0.0.1:0", "127.0.0.1/32", true) else {
        return;
    };
    let request = request(
        "rita",
        &format!("rita-pw{}", hotp(SEED, 0)),
        UDP_SECRET,
        true,
    );
    assert!(exchange(proxy.udp_addr, &request.bytes, Duration::from_secs(3)).is_none());
    drop(proxy);
    assert!(app.stop());
    let logs = app.logs().join("\n");
    assert!(logs.contains("radsec TLS handshake failed"), "{logs}");
    assert!(!logs.contains("decision"), "{logs}");
}

/// The same over IPv6: otpgate's RadSec port on ::1, radsecproxy connecting to it from ::1.
#[test]
fn radsecproxy_logs_in_over_ipv6() {
    let Some((_pki, mut app, proxy)) = set_up("[::1]:0", "::1/128", false) else {
        return;
    };
    let accepted = login(&proxy, "rita", &format!("rita-pw{}", hotp(SEED, 0))).expect("a reply");
    assert_eq!(accepted.code, Code::AccessAccept, "{}", proxy.log());
    drop(proxy);
    assert!(app.stop());
}

/// A SIGHUP reload reaches an open RadSec connection: the client's new application applies to
/// its next request, and once the client is gone from the file the connection ends.
#[test]
fn a_reload_applies_to_an_open_radsec_connection() {
    let Some((_pki, mut app, proxy)) = set_up("127.0.0.1:0", "127.0.0.1/32", false) else {
        return;
    };
    let accepted = login(&proxy, "rita", &format!("rita-pw{}", hotp(SEED, 0))).expect("a reply");
    assert_eq!(accepted.code, Code::AccessAccept, "{}", proxy.log());
    let text = std::fs::read_to_string(&app.config).expect("config");
    let moved = text.replacen(
        &format!("certificate_name = \"{CLIENT_NAME}\"\napplication = \"default\""),
        &format!("certificate_name = \"{CLIENT_NAME}\"\napplication = \"prompted\""),
        1,
    );
    assert_ne!(moved, text);
    std::fs::write(&app.config, &moved).expect("write");
    app.signal("HUP");
    assert!(
        app.wait_for_log("configuration reloaded"),
        "{:?}",
        app.logs()
    );
    let challenged = login(&proxy, "rita", "rita-pw").expect("a reply");
    assert_eq!(challenged.code, Code::AccessChallenge, "{:?}", app.logs());
    // The client leaves the file: its open connection is closed at its next request.
    std::fs::write(
        &app.config,
        moved.replacen(
            &format!("certificate_name = \"{CLIENT_NAME}\""),
            "certificate_name = \"gone.test\"",
            1,
        ),
    )
    .expect("write");
    app.signal("HUP");
    let reloaded = || {
        app.logs()
            .iter()
            .filter(|l| l.contains("configuration reloaded"))
            .count()
            >= 2
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !reloaded() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(reloaded(), "{:?}", app.logs());
    let request = request(
        "rita",
        &format!("rita-pw{}", hotp(SEED, 1)),
        UDP_SECRET,
        true,
    );
    let answer = exchange(proxy.udp_addr, &request.bytes, Duration::from_secs(2));
    assert!(
        answer.is_none_or(|reply| reply.first() != Some(&2)),
        "no Accept once the client is gone"
    );
    drop(proxy);
    assert!(app.stop());
    assert!(
        app.logs()
            .iter()
            .any(|l| l.contains("client removed by a reload")),
        "{:?}",
        app.logs()
    );
}
