//! Notifications end to end: a real SMTP server on loopback (started here), the outbox
//! surviving `kill -9`, and the revocation e-mail whose temporary password RADIUS then answers
//! with "you must change your password".

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use radius::core::code::Code;

use otpgate::notify::{self, Notification};
use otpgate::store::sled_store::SledStore;
use otpgate::store::{ChangeSet, Store};

use crate::harness::*;

/// A minimal SMTP server: records each message's text; answers 451 to MAIL FROM while
/// `refuse` is above zero (counting it down, unless it is `usize::MAX`).
struct SmtpServer {
    addr: SocketAddr,
    messages: Arc<Mutex<Vec<String>>>,
    refuse: Arc<AtomicUsize>,
}

impl SmtpServer {
    fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(AtomicUsize::new(0));
        let (kept, refusing) = (Arc::clone(&messages), Arc::clone(&refuse));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (kept, refusing) = (Arc::clone(&kept), Arc::clone(&refusing));
                std::thread::spawn(move || {
                    let _ = session(stream, &kept, &refusing);
                });
            }
        });
        SmtpServer {
            addr,
            messages,
            refuse,
        }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("messages").clone()
    }

    /// Waits (at most 30 s) until `count` messages arrived.
    fn wait_for(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.messages().len() >= count {
                return self.messages();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} of {count} messages arrived", self.messages().len());
    }
}

fn session(
    stream: TcpStream,
    kept: &Mutex<Vec<String>>,
    refuse: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut lines = BufReader::new(stream);
    out.write_all(b"220 test.invalid ESMTP\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let answer: &[u8] = match verb.as_str() {
            "EHLO" => b"250-test.invalid\r\n250 8BITMIME\r\n",
            "HELO" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
            "MAIL" => {
                let left = refuse.load(Ordering::SeqCst);
                if left > 0 {
                    if left != usize::MAX {
                        refuse.fetch_sub(1, Ordering::SeqCst);
                    }
                    b"451 4.3.0 try again later\r\n"
                } else {
                    b"250 OK\r\n"
                }
            }
            "DATA" => {
                out.write_all(b"354 go ahead\r\n")?;
                let mut message = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    message.push_str(&line);
                }
                kept.lock().expect("messages").push(message);
                b"250 queued\r\n"
            }
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => b"502 unknown\r\n",
        };
        out.write_all(answer)?;
    }
}

fn notify_config(smtp: &SmtpServer) -> String {
    format!(
        "[notify]\nsmtp_relay = \"{}\"\nsmtp_tls = \"none\"\nfrom = \"otpgate@example.org\"\n\
         poll_secs = 1\nretry_initial_secs = 1\nretry_max_secs = 2\n",
        smtp.addr
    )
}

fn header<'m>(message: &'m str, name: &str) -> Option<&'m str> {
    message.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

/// Notifications refused by the relay are retried; `kill -9` meanwhile loses none; after the
/// restart each arrives exactly once and the outbox is empty.
#[test]
fn the_outbox_survives_kill_9_and_delivers_each_once() {
    let smtp = SmtpServer::start();
    smtp.refuse.store(usize::MAX, Ordering::SeqCst);
    let mut app = Appliance::new(&notify_config(&smtp));
    let data = app.dir.path().join("data");
    {
        let store = SledStore::open(&data).expect("store");
        let mut changes = ChangeSet::new();
        for i in 0..3 {
            let notification = Notification {
                kind: "test".into(),
                username: format!("user{i}"),
                to: format!("user{i}@example.org"),
                subject: format!("message {i}"),
                body: format!("body {i}\n"),
            };
            changes = notify::enqueue(changes, notification, now()).expect("enqueue");
        }
        assert!(store.apply(changes).expect("apply"));
        store.sync().expect("sync");
    }
    app.start();
    assert!(
        app.wait_for_log("delivery failed"),
        "no retry logged: {:?}",
        app.logs()
    );
    app.kill9();
    assert!(smtp.messages().is_empty());
    smtp.refuse.store(0, Ordering::SeqCst);
    app.start();
    let messages = smtp.wait_for(3);
    assert!(app.stop());
    // Nothing more arrives after the clean stop either.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(smtp.messages().len(), 3, "{messages:?}");
    let mut subjects: Vec<_> = messages
        .iter()
        .filter_map(|m| header(m, "Subject"))
        .collect();
    subjects.sort_unstable();
    assert_eq!(subjects, ["message 0", "message 1", "message 2"]);
    let mut ids: Vec<_> = messages
        .iter()
        .filter_map(|m| header(m, "Message-ID"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each its own Message-ID");
    assert!(messages
        .iter()
        .all(|m| header(m, "From") == Some("otpgate@example.org")));
    let store = SledStore::open(&data).expect("store");
    assert!(store
        .records(notify::OUTBOX_PREFIX, b"outbox0", 10)
        .expect("outbox")
        .is_empty());
}

/// A revocation over the API e-mails the owner a temporary password; RADIUS answers it with
/// "you must change your password".
#[test]
fn a_revocation_mails_the_temporary_password_radius_asks_to_change() {
    if !peer_available("curl", "curl") {
        return;
    }
    let smtp = SmtpServer::start();
    let mut app = Appliance::new(&format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        notify_config(&smtp)
    ));
    app.cli_ok(
        &[
            "user",
            "add",
            "dora",
            "--password-stdin",
            "--email",
            "dora@example.org",
        ],
        Some("old password\n"),
    );
    app.import_tokens(
        "serial,secret,kind,digits,step,owner\nD1,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,hotp,6,0,dora\n",
    );
    app.start();
    let out = app.cli_ok(&["token", "revoke", "D1", "--reason", "lost"], None);
    assert!(out.contains("revoked"), "{out}");
    let messages = smtp.wait_for(1);
    let mail = &messages[0];
    assert_eq!(header(mail, "To"), Some("dora@example.org"));
    let temporary = mail
        .lines()
        .find(|l| l.starts_with("    "))
        .map(str::trim)
        .expect("the temporary password in the body")
        .to_string();
    assert!(!app.logs().iter().any(|l| l.contains(&temporary)), "logged");
    let reply = app.auth("dora", &temporary).expect("reply");
    assert_eq!(reply.code, Code::AccessReject);
    assert!(
        reply
            .reply_message
            .as_deref()
            .is_some_and(|m| m.contains("must change your password")),
        "{reply:?}"
    );
}
