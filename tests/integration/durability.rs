//! Durability: every Access-Accept is durable before it leaves, so `kill -9` right after it
//! loses nothing, and every accepted code stays refused after a restart.

use std::sync::Arc;
use std::time::Duration;

use radius::core::code::Code;

use crate::harness::*;

const SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

#[test]
fn kill_9_after_accepts_keeps_every_accepted_otp_unusable() {
    // Replays are refused without counting as failures, so the tokens stay usable afterwards.
    let mut app = Appliance::new("");
    let users = 8;
    let mut csv = String::from("serial,secret,kind,digits,step,owner\n");
    for u in 0..users {
        app.add_user(&format!("u{u}"), "pw");
        csv.push_str(&format!("H{u},{SEED},hotp,6,0,u{u}\n"));
    }
    app.import_tokens(&csv);
    app.start();
    let addr = app.addr();
    // Concurrent accepts across users (several codes each), so group commit batches them.
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..users)
        .map(|u| {
            let accepted = Arc::clone(&accepted);
            std::thread::spawn(move || {
                for counter in 0..5 {
                    let password = format!("pw{}", hotp(SEED, counter));
                    let user = format!("u{u}");
                    let req = request(&user, &password, SECRET, true);
                    let reply = exchange(addr, &req.bytes, Duration::from_secs(5)).expect("reply");
                    let checked =
                        otpgate::radius::nas::check_reply(&reply, &req, SECRET.as_bytes())
                            .expect("valid");
                    assert_eq!(checked.code, Code::AccessAccept, "{user} counter {counter}");
                    accepted.lock().expect("lock").push((user, password));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    // No graceful shutdown: whatever was not on disk is gone.
    app.kill9();
    app.start();
    assert!(
        app.wait_for_log("recovered from the write-ahead log"),
        "the accepted codes come back from the token log"
    );
    let accepted = accepted.lock().expect("lock").clone();
    assert_eq!(accepted.len(), users * 5);
    for (user, password) in &accepted {
        let reply = app.auth(user, password).expect("reply");
        assert_eq!(
            reply.code,
            Code::AccessReject,
            "{user} reused a code after kill -9"
        );
    }
    // And the tokens moved on: the next code of each works.
    assert_eq!(
        app.auth("u0", &format!("pw{}", hotp(SEED, 5)))
            .expect("reply")
            .code,
        Code::AccessAccept
    );
}

/// While the server holds the store, `user show` asks it over the control socket; a whole
/// seed file import (offline only) fails at once with a clear message.
#[test]
fn commands_ask_the_running_server_and_imports_fail_fast() {
    let mut app = Appliance::new("");
    app.add_user("carol", "pw");
    app.start();
    let shown = app.cli_ok(&["user", "show", "carol"], None);
    assert!(shown.contains("carol"), "{shown}");
    let seeds = app.dir.path().join("seeds.csv");
    std::fs::write(&seeds, format!("T9,{SEED},hotp,6,0\n")).expect("write");
    let started = std::time::Instant::now();
    let out = app.cli(&["token", "import", seeds.to_str().expect("path")], None);
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10), "must not hang");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
}
