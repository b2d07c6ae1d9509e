//! Reply timing (`[radius] reject_delay_ms`, FreeRADIUS `reject_delay`): every Access-Reject
//! leaves the same fixed time after its request arrived, whatever failed, so reply time tells a
//! guesser neither which user names exist nor whether a guessed password was right. Without it,
//! on this appliance with the default argon2id cost, an unknown user is answered after a dummy
//! argon2id hash (~15 ms), a wrong `{SSHA256}` password in ~0.1 ms, and a right password with a
//! wrong code after a log fdatasync. Accepts are never delayed.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use otpgate::radius::nas;
use radius::core::code::Code;

use crate::harness::*;

const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; // "12345678901234567890"
/// Long enough that a round's decisions end before it even on a loaded CI machine.
const DELAY: Duration = Duration::from_millis(600);
/// Requests per kind.
const ROUNDS: u64 = 20;
/// How far apart the kinds' median round trips may lie. With the delay they all sit a hair
/// above it: each round's decisions (at most four argon2id hashes on two hashing slots, ~40 ms)
/// end well before the deadline and the timer thread sends at the deadline whatever the kind,
/// so only scheduling noise on a shared machine separates them (measured: within 0.3 ms). 25 ms
/// leaves room for that noise and is still less than the spread without the delay (measured
/// here with `reject_delay_ms = 0`: 1.5-2 ms for the `{SSHA256}` kinds, 21-40 ms for those that
/// hash with argon2id), all of it under the delay, which the `>= DELAY` checks refuse besides.
const TOLERANCE: Duration = Duration::from_millis(25);

/// A code no token here accepts: not among the first counters (look-ahead included).
fn wrong_code() -> String {
    let valid: Vec<String> = (0..=ROUNDS + 20).map(|c| hotp(SEED, c)).collect();
    ["000000", "111111", "222222", "333333"]
        .into_iter()
        .find(|code| !valid.iter().any(|v| v == code))
        .expect("a wrong code")
        .to_string()
}

/// An appliance with the default argon2id cost and loose throttling, provisioned with:
/// `argon` (argon2id, HOTP), `sha` and `coder` ({SSHA256}, HOTP), `locked` ({SSHA256}, HOTP
/// token locked by wrong codes), `tokenless` ({SSHA256}, no token). Served with the delay on.
fn timed_appliance() -> Appliance {
    let mut app = Appliance::new("");
    for (key, value) in [
        // The default cost (the harness's is cheap), for new hashes and the unknown-user
        // dummy hash alike.
        ("OTPGATE__PASSWORD__ARGON2_MEMORY_KIB", "19456"),
        ("OTPGATE__PASSWORD__ARGON2_ITERATIONS", "2"),
        // The imported hashes stay {SSHA256}: every kind keeps its cost throughout.
        ("OTPGATE__PASSWORD__REHASH_ON_LOGIN", "false"),
        ("OTPGATE__THROTTLE__USER_FAILURES", "100000"),
        ("OTPGATE__THROTTLE__CLIENT_FAILURES", "100000"),
    ] {
        app.env.push((key.into(), value.into()));
    }
    app.add_user("argon", "argon-pw");
    let users = app.dir.path().join("users.csv");
    let mut csv = String::from("username,password_hash,email,first,last\n");
    for user in ["sha", "coder", "locked", "tokenless"] {
        let hash = ssha256(&format!("{user}-pw"), user.as_bytes());
        csv.push_str(&format!("{user},{hash},,,\n"));
    }
    std::fs::write(&users, csv).expect("write users");
    app.cli_ok(
        &["user", "import", users.to_str().expect("utf8 path")],
        None,
    );
    let mut tokens = String::from("serial,secret,kind,digits,step,owner\n");
    for user in ["argon", "sha", "coder", "locked"] {
        tokens.push_str(&format!("T-{user},{SEED},hotp,6,0,{user}\n"));
    }
    app.import_tokens(&tokens);

    // Lock `locked`'s token with the default max_failures (5), no delay yet.
    app.start();
    for _ in 0..5 {
        let reply = app
            .auth("locked", &format!("locked-pw{}", wrong_code()))
            .expect("reply");
        assert_eq!(reply.code, Code::AccessReject);
    }
    assert!(app.stop());

    // A token that never locks (the wrong-code kind fails ROUNDS times), and the delay on.
    app.env
        .push(("OTPGATE__OTP__MAX_FAILURES".into(), "100".into()));
    app.env.push((
        "OTPGATE__RADIUS__REJECT_DELAY_MS".into(),
        DELAY.as_millis().to_string(),
    ));
    app.start();
    app
}

/// One Access-Request from a socket of its own: the reply's code and Reply-Message, and the
/// round trip.
fn round_trip(addr: SocketAddr, user: &str, password: &str) -> (Code, Option<String>, Duration) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let request = request(user, password, SECRET, true);
    let sent = Instant::now();
    socket.send_to(&request.bytes, addr).expect("send");
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).expect("a reply");
    let took = sent.elapsed();
    let reply = nas::check_reply(&buf[..n], &request, SECRET.as_bytes()).expect("valid reply");
    (reply.code, reply.reply_message, took)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values[values.len() / 2]
}

#[test]
fn every_reject_takes_the_delay_whatever_failed_and_accepts_do_not() {
    let mut app = timed_appliance();
    let addr = app.addr();
    let wrong = wrong_code();
    // (kind, user, password of round `r`, expected code)
    type Password = Box<dyn Fn(u64) -> String + Sync>;
    let kinds: Vec<(&str, &str, Password, Code)> = vec![
        (
            "unknown user",
            "nobody",
            Box::new(|_| "nobody-pw123456".into()),
            Code::AccessReject,
        ),
        (
            "wrong password (argon2id)",
            "argon",
            Box::new(|_| "guess-pw123456".into()),
            Code::AccessReject,
        ),
        (
            "wrong password ({SSHA256})",
            "sha",
            Box::new(|_| "guess-pw123456".into()),
            Code::AccessReject,
        ),
        (
            "right password, wrong code",
            "coder",
            Box::new(move |_| format!("coder-pw{wrong}")),
            Code::AccessReject,
        ),
        (
            "locked token, right code",
            "locked",
            Box::new(|_| format!("locked-pw{}", hotp(SEED, 0))),
            Code::AccessReject,
        ),
        (
            "no token",
            "tokenless",
            Box::new(|_| "tokenless-pw123456".into()),
            Code::AccessReject,
        ),
        (
            "accept ({SSHA256}, fast path)",
            "sha",
            Box::new(|r| format!("sha-pw{}", hotp(SEED, r))),
            Code::AccessAccept,
        ),
        (
            "accept (argon2id, async path)",
            "argon",
            Box::new(|r| format!("argon-pw{}", hotp(SEED, r))),
            Code::AccessAccept,
        ),
    ];
    let mut took: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    let mut locked_text = None;
    for round in 0..ROUNDS {
        // Every kind at once, each from its own socket and thread.
        let replies: Vec<(Code, Option<String>, Duration)> = std::thread::scope(|scope| {
            let running: Vec<_> = kinds
                .iter()
                .map(|(_, user, password, _)| {
                    let password = password(round);
                    scope.spawn(move || round_trip(addr, user, &password))
                })
                .collect();
            running
                .into_iter()
                .map(|thread| thread.join().expect("request thread"))
                .collect()
        });
        for (i, (code, message, elapsed)) in replies.into_iter().enumerate() {
            let (kind, _, _, expected) = &kinds[i];
            assert_eq!(code, *expected, "{kind}, round {round}");
            if *expected == Code::AccessReject {
                // Not only the median: no Reject ever leaves early.
                assert!(
                    elapsed >= DELAY,
                    "{kind}, round {round}: answered after {elapsed:?}"
                );
            }
            if kinds[i].1 == "locked" {
                locked_text = message;
            }
            took[i].push(elapsed);
        }
    }
    let text = locked_text.unwrap_or_default();
    assert!(text.contains("locked"), "the token is locked: {text}");

    let medians: Vec<(&str, Duration)> = kinds
        .iter()
        .zip(took)
        .map(|((kind, ..), times)| (*kind, median(times)))
        .collect();
    for (kind, m) in &medians {
        eprintln!("median round trip, {kind}: {:.2} ms", m.as_secs_f64() * 1e3);
    }
    let (rejects, accepts): (Vec<_>, Vec<_>) = medians
        .iter()
        .zip(&kinds)
        .partition(|(_, (.., code))| *code == Code::AccessReject);
    let reject_medians: Vec<Duration> = rejects.iter().map(|((_, m), _)| *m).collect();
    let (low, high) = (
        reject_medians.iter().min().copied().unwrap_or_default(),
        reject_medians.iter().max().copied().unwrap_or_default(),
    );
    assert!(
        low >= DELAY,
        "a kind's median is under the delay: {medians:?}"
    );
    assert!(
        high - low < TOLERANCE,
        "the kinds' medians differ by {:?}: {medians:?}",
        high - low
    );
    // A held Accept would take the delay at least. The argon2id one waits for a hashing slot
    // behind its round's other hashes, so its time follows the machine's load (40-75 ms here).
    for ((kind, m), _) in &accepts {
        assert!(*m < DELAY * 2 / 3, "{kind} was held: {m:?}");
    }
    assert!(app.stop());
    let logs = app.logs().join("\n");
    // Held by the timer: all of them, but for a Reject decided after its deadline (a disk or
    // scheduling stall on a loaded machine), which leaves at once, late, as checked above.
    // The last serve's counters (the set-up served once before).
    let held: u64 = logs
        .rsplit(" delayed_rejects=")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the delayed_rejects counter at stop");
    assert!(
        (ROUNDS * 6 * 9 / 10..=ROUNDS * 6).contains(&held),
        "{held} Rejects held: {logs}"
    );
}

#[test]
fn a_retransmission_gets_nothing_while_the_reject_waits_and_the_same_reply_after() {
    let mut app = timed_appliance();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let request = request("sha", "guess-pw123456", SECRET, true);
    let sent = Instant::now();
    socket.send_to(&request.bytes, app.addr()).expect("send");
    std::thread::sleep(DELAY / 3);
    // The NAS retransmits while the Reject waits: dropped as in progress, not answered early.
    socket
        .send_to(&request.bytes, app.addr())
        .expect("send again");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).expect("the Reject");
    assert!(sent.elapsed() >= DELAY, "answered early");
    let first = buf[..n].to_vec();
    let reply = nas::check_reply(&first, &request, SECRET.as_bytes()).expect("valid");
    assert_eq!(reply.code, Code::AccessReject);
    socket.set_read_timeout(Some(DELAY * 2)).expect("timeout");
    assert!(
        socket.recv_from(&mut buf).is_err(),
        "one reply only: the retransmission was dropped"
    );
    // Retransmitted after the Reject left: the same octets from the cache, at once.
    let resent = Instant::now();
    let again = exchange_on(&socket, app.addr(), &request.bytes, Duration::from_secs(5))
        .expect("the cached Reject");
    assert_eq!(again, first, "byte-identical cached reply");
    assert!(
        resent.elapsed() < DELAY / 2,
        "the cached answer is not held again"
    );
    assert!(app.stop());
    let logs = app.logs().join("\n");
    for counter in [
        "duplicates_in_progress=1 ",
        "duplicates_answered=1 ",
        "delayed_rejects=1 ",
    ] {
        assert!(logs.contains(counter), "{counter}: {logs}");
    }
}
