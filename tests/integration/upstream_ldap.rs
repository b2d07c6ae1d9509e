//! The LDAP first factor (`otpgate::upstream::ldap`) against a real slapd (see slapd.rs):
//! verdicts, DN escaping as the directory sees it, failover and bounded unavailability.
//! Skipped with a notice without slapd, except in CI.

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use otpgate::upstream::ldap::LdapFirstFactor;
use otpgate::upstream::Verdict;

use crate::slapd::{free_port, Slapd, TEMPLATE};

const TIMEOUT: Duration = Duration::from_secs(2);

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn factor(servers: &[&str], timeout: Duration, retries: u32) -> LdapFirstFactor {
    LdapFirstFactor::new(
        servers.iter().map(|s| s.to_string()).collect(),
        TEMPLATE.to_string(),
        timeout,
        retries,
    )
    .expect("valid LDAP settings")
}

fn check(f: &LdapFirstFactor, user: &str, password: &str) -> Verdict {
    block_on(f.check(user, password.as_bytes()))
}

/// An ldap:// URL on which nothing listens: connection refused.
fn closed_url() -> String {
    format!("ldap://127.0.0.1:{}/", free_port())
}

#[test]
fn right_password_is_accepted() {
    let Some(slapd) = Slapd::start() else { return };
    let f = factor(&[&slapd.url], TIMEOUT, 0);
    assert_eq!(check(&f, "alice", "alice-pass"), Verdict::Accepted);
    // Several checks in a row: one connection each, nothing carried over.
    assert_eq!(check(&f, "alice", "wrong"), Verdict::Rejected);
    assert_eq!(check(&f, "alice", "alice-pass"), Verdict::Accepted);
}

#[test]
fn wrong_password_is_rejected() {
    let Some(slapd) = Slapd::start() else { return };
    let f = factor(&[&slapd.url], TIMEOUT, 0);
    assert_eq!(check(&f, "alice", "alice-pas"), Verdict::Rejected);
    assert_eq!(check(&f, "alice", "ALICE-PASS"), Verdict::Rejected);
    assert_eq!(check(&f, "alice", "carol-pass"), Verdict::Rejected);
}

#[test]
fn unknown_user_is_rejected() {
    let Some(slapd) = Slapd::start() else { return };
    let f = factor(&[&slapd.url], TIMEOUT, 0);
    assert_eq!(check(&f, "mallory", "alice-pass"), Verdict::Rejected);
}

#[test]
fn empty_password_is_rejected() {
    let Some(slapd) = Slapd::start() else { return };
    let f = factor(&[&slapd.url], TIMEOUT, 0);
    // slapd itself would answer an unauthenticated bind (RFC 4513 section 5.1.2) with
    // unwillingToPerform; otpgate never sends it.
    assert_eq!(check(&f, "alice", ""), Verdict::Rejected);
    assert_eq!(block_on(f.check("alice", b"")), Verdict::Rejected);
    assert_eq!(
        block_on(f.check("alice", b"alice-pass\xff")),
        Verdict::Rejected
    );
}

#[test]
fn tricky_user_names_are_rejected_not_errors() {
    let Some(slapd) = Slapd::start() else { return };
    let f = factor(&[&slapd.url], TIMEOUT, 0);
    // Unescaped, `alice,ou=admins` would bind as uid=alice,ou=admins,ou=people,... whose
    // password this is.
    assert_eq!(
        check(&f, "alice,ou=admins", "admin-pass"),
        Verdict::Rejected
    );
    assert_eq!(check(&f, "alice+cn=Alice", "alice-pass"), Verdict::Rejected);
    assert_eq!(check(&f, "*", "alice-pass"), Verdict::Rejected);
    assert_eq!(check(&f, "ali*", "alice-pass"), Verdict::Rejected);
    assert_eq!(check(&f, "alice)(uid=*", "alice-pass"), Verdict::Rejected);
    assert_eq!(check(&f, "alice\n", "alice-pass"), Verdict::Rejected);
    assert_eq!(check(&f, "\\", "alice-pass"), Verdict::Rejected);
    assert_eq!(check(&f, "#616c696365", "alice-pass"), Verdict::Rejected);
    // The escaping names the entry whose uid really holds a comma.
    assert_eq!(check(&f, "carol, jr", "carol-pass"), Verdict::Accepted);
    assert_eq!(check(&f, "carol, jr", "alice-pass"), Verdict::Rejected);
}

/// The directory, not otpgate, decides which names are equal: `uid` matches with
/// caseIgnoreMatch, where case and leading, trailing and repeated spaces are insignificant
/// (RFC 4517 section 4.2.11, RFC 4518 section 2.6.1). An escaped leading space is still a
/// space of the value, so ` alice` and `ALICE` bind as alice: the caller must look the
/// second factor up under a name it has made canonical, not trust the spelling the NAS sent.
#[test]
fn the_directory_matching_rule_decides_case_and_spaces() {
    let Some(slapd) = Slapd::start() else { return };
    let f = factor(&[&slapd.url], TIMEOUT, 0);
    assert_eq!(check(&f, "ALICE", "alice-pass"), Verdict::Accepted);
    assert_eq!(check(&f, " alice", "alice-pass"), Verdict::Accepted);
    assert_eq!(check(&f, "alice ", "alice-pass"), Verdict::Accepted);
    assert_eq!(check(&f, "CAROL,  JR", "carol-pass"), Verdict::Accepted);
    assert_eq!(check(&f, " alice", "wrong"), Verdict::Rejected);
}

#[test]
fn fails_over_from_a_closed_port() {
    let Some(slapd) = Slapd::start() else { return };
    let closed = closed_url();
    let f = factor(&[&closed, &slapd.url], TIMEOUT, 1);
    assert_eq!(check(&f, "alice", "alice-pass"), Verdict::Accepted);
    assert_eq!(check(&f, "alice", "wrong"), Verdict::Rejected);
}

#[test]
fn an_answer_is_final_busy_is_not() {
    let Some(slapd) = Slapd::start() else { return };
    // invalidCredentials from the first server: the next one is not asked.
    let refusing = FakeDirectory::start(49, 1);
    let f = factor(&[&refusing.url, &slapd.url], TIMEOUT, 1);
    assert_eq!(check(&f, "alice", "alice-pass"), Verdict::Rejected);
    assert_eq!(refusing.served(), 1);
    // busy, then unwillingToPerform on the retry: on to the next server.
    let busy = FakeDirectory::start_codes(&[51, 53]);
    let f = factor(&[&busy.url, &slapd.url], TIMEOUT, 1);
    assert_eq!(check(&f, "alice", "alice-pass"), Verdict::Accepted);
    assert_eq!(busy.served(), 2);
    // unavailable alone: Unavailable, naming the code.
    let down = FakeDirectory::start(52, 1);
    let f = factor(&[&down.url], TIMEOUT, 0);
    match check(&f, "alice", "alice-pass") {
        Verdict::Unavailable { reason } => assert!(reason.contains("52"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // strongerAuthRequired (a directory that wants TLS or signing): a configuration problem,
    // Unavailable rather than a wrong password for everyone; no further server asked.
    let strict = FakeDirectory::start(8, 1);
    let f = factor(&[&strict.url, &slapd.url], TIMEOUT, 0);
    match check(&f, "alice", "alice-pass") {
        Verdict::Unavailable { reason } => assert!(reason.contains("code 8"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn only_dead_servers_is_unavailable_within_the_bound() {
    // A closed port (refused at once) and a listener that accepts (the kernel completes the
    // handshake from its backlog) but never answers (each attempt runs into the timeout).
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("ldap://{}/", silent.local_addr().expect("addr"));
    let closed = closed_url();
    let timeout = Duration::from_millis(500);
    let retries = 1;
    let f = factor(&[&closed, &silent_url], timeout, retries);
    let bound = timeout * (retries + 1) * 2 + Duration::from_secs(5);
    let started = Instant::now();
    let verdict = block_on(async {
        tokio::time::timeout(bound, f.check("alice", b"alice-pass"))
            .await
            .expect("check returned within timeout * attempts * servers plus slack")
    });
    match verdict {
        Verdict::Unavailable { reason } => {
            assert!(reason.contains(&closed), "{reason}");
            assert!(reason.contains(&silent_url), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < bound);
}

#[test]
fn ldaps_to_an_untrusted_certificate_is_unavailable() {
    let Some(slapd) = Slapd::start() else { return };
    // slapd's certificate is self-signed: the TLS handshake fails, no password is sent.
    let f = factor(&[&slapd.ldaps_url], TIMEOUT, 0);
    match check(&f, "alice", "alice-pass") {
        Verdict::Unavailable { reason } => {
            assert!(reason.contains("ldaps://"), "{reason}");
            assert!(reason.contains("certificate"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A stand-in directory that answers each connection's first request, a bind, with a
/// BindResponse of the next result code from a list, then waits for the client to close.
struct FakeDirectory {
    url: String,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeDirectory {
    fn start(code: u8, connections: usize) -> FakeDirectory {
        Self::start_codes(&vec![code; connections])
    }

    fn start_codes(codes: &[u8]) -> FakeDirectory {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("ldap://{}/", listener.local_addr().expect("addr"));
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&served);
        let codes = codes.to_vec();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut codes = codes.into_iter();
            while Instant::now() < deadline {
                let mut stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let Some(code) = codes.next() else { return };
                stream.set_nonblocking(false).expect("blocking");
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut buf = [0u8; 1024];
                let Ok(n) = stream.read(&mut buf) else {
                    continue;
                };
                let Some(id) = message_id(&buf[..n]) else {
                    continue;
                };
                // Counted before the reply, which ends the client's wait.
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(&bind_response(id, code));
                // The client's Unbind, then end of stream.
                let _ = stream.read(&mut buf);
            }
        });
        FakeDirectory { url, served }
    }

    fn served(&self) -> usize {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The messageID bytes (INTEGER contents) of an LDAPMessage: SEQUENCE { INTEGER, ... }.
fn message_id(message: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = message.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let rest = if len & 0x80 != 0 {
        rest.get(usize::from(len & 0x7f)..)?
    } else {
        rest
    };
    match rest {
        [0x02, n, tail @ ..] => tail.get(..usize::from(*n)),
        _ => None,
    }
}

/// LDAPMessage { messageID, BindResponse { resultCode, matchedDN "", diagnosticMessage "" } }
/// (RFC 4511 sections 4.1.1 and 4.2.2).
fn bind_response(id: &[u8], code: u8) -> Vec<u8> {
    let body = [0x61, 0x07, 0x0a, 0x01, code, 0x04, 0x00, 0x04, 0x00];
    let mut out = vec![
        0x30,
        (2 + id.len() + body.len()) as u8,
        0x02,
        id.len() as u8,
    ];
    out.extend_from_slice(id);
    out.extend_from_slice(&body);
    out
}

/// The whole appliance: an application whose `first_factor` is the directory. slapd checks
/// alice's password, otpgate her code (radclient as the NAS would do the same; the harness's
/// NAS is enough here).
#[test]
fn the_appliance_logs_in_with_the_directory_password_and_the_token_code() {
    use crate::harness::{hotp, Appliance};
    use radius::core::code::Code;
    const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let Some(slapd) = Slapd::start() else {
        return;
    };
    let mut app = Appliance::new(&format!(
        "[[upstreams]]\nname = \"directory\"\nkind = \"ldap\"\nservers = [\"{}\"]\n\
         bind_dn_template = \"{TEMPLATE}\"\ntimeout_ms = 2000\n\
         [[applications]]\nname = \"default\"\nfirst_factor = \"directory\"\notp_mode = \"auto\"\n",
        slapd.url
    ));
    app.add_user("alice", "a-local-password-not-used");
    app.import_tokens(&format!(
        "serial,secret,kind,digits,step,owner\nL1,{SEED},hotp,6,0,alice\n"
    ));
    app.start();
    let accepted = app
        .auth("alice", &format!("alice-pass{}", hotp(SEED, 0)))
        .expect("a reply");
    assert_eq!(accepted.code, Code::AccessAccept, "{:?}", app.logs());
    let local = app
        .auth(
            "alice",
            &format!("a-local-password-not-used{}", hotp(SEED, 1)),
        )
        .expect("a reply");
    assert_eq!(local.code, Code::AccessReject);
    // `auto`: the directory password alone gets a challenge.
    let challenged = app.auth("alice", "alice-pass").expect("a reply");
    assert_eq!(challenged.code, Code::AccessChallenge, "{:?}", app.logs());
    assert!(app.stop());
    let logs = app.logs().join("\n");
    assert!(logs.contains("upstream=\"directory\""), "{logs}");
}
