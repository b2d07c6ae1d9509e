//! RADIUS over TLS (RFC 6614) with a real radsecproxy (Debian's radsecproxy package, 1.9.2) as
//! the NAS side: `radclient`-style UDP requests to radsecproxy, which forwards them over mutual
//! TLS, presenting a client certificate, to otpgate's RadSec port. A throwaway PKI in a temp dir
//! (rcgen), a private configuration (nothing of /etc is read), `radsecproxy -f` in the
//! foreground, its log in the temp dir. Killed on Drop.
//!
//! The tests here check the harness itself against a small rustls stand-in for otpgate's RadSec
//! listener (one thread per connection): client certificate required and checked against the
//! CA, RADIUS framed by its Length field, Message-Authenticator required, Access-Accept signed
//! with the RFC 6614 secret `radsec`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use otpgate::radius::nas;
use otpgate::radius::packet::{
    encode_reply, read_header, AccessRequest, Reply, ReplyCode, Secret, HEADER_LEN, MAX_PACKET_LEN,
};
use radius::core::code::Code;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::freeradius::free_udp_port;
use crate::harness::{exchange, peer_available, request};

/// The RADIUS shared secret over TLS (RFC 6614 section 2.3).
pub const RADSEC_SECRET: &str = "radsec";

/// How long radsecproxy may take to bind its UDP port.
const START_WAIT: Duration = Duration::from_secs(10);

/// A throwaway PKI in a temp dir, PEM files: a CA; a server certificate for otpgate (SANs IP
/// 127.0.0.1, IP ::1, DNS localhost); a client certificate for radsecproxy (CN and DNS SAN =
/// `client_name`); and a client certificate with the same names from a second, foreign CA.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub foreign_client_cert: PathBuf,
    pub foreign_client_key: PathBuf,
    /// Signed by the CA but named `elsewhere.invalid` only: for the server name check.
    misnamed_server_cert: PathBuf,
    misnamed_server_key: PathBuf,
}

/// A CA's certificate and key, to sign leaves with.
struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Authority { cert, key }
    }

    /// A leaf certificate and its key, PEM.
    fn issue(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("DNS name"))
}

impl Pki {
    pub fn new(client_name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        let ca = Authority::new("otpgate test CA");
        let foreign = Authority::new("foreign test CA");
        let server_sans = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
            dns("localhost"),
        ];
        let (server_cert, server_key) = ca.issue(
            "localhost",
            server_sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (misnamed_cert, misnamed_key) = ca.issue(
            "elsewhere.invalid",
            vec![dns("elsewhere.invalid")],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client_sans = || vec![dns(client_name)];
        let (client_cert, client_key) = ca.issue(
            client_name,
            client_sans(),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (foreign_cert, foreign_key) = foreign.issue(
            client_name,
            client_sans(),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca: write("ca.pem", &ca.cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            foreign_client_cert: write("foreign-client.pem", &foreign_cert),
            foreign_client_key: write("foreign-client.key", &foreign_key),
            misnamed_server_cert: write("misnamed-server.pem", &misnamed_cert),
            misnamed_server_key: write("misnamed-server.key", &misnamed_key),
            dir,
        }
    }
}

const CONFIG: &str = r#"# radsecproxy 1.9.2, written by tests/integration/radsecproxy.rs
ListenUDP 127.0.0.1:@PORT@

tls default {
    CACertificateFile @CA@
    CertificateFile @CERT@
    CertificateKeyFile @KEY@
}

client 127.0.0.1 {
    type udp
    secret "@SECRET@"
}

server otpgate {
    type tls
    host @HOST@
    port @TARGET_PORT@
    secret radsec
    tls default
    CertificateNameCheck on
    StatusServer off
}

realm * {
    server otpgate
}
"#;

/// A running radsecproxy: RADIUS/UDP on 127.0.0.1 in, RADIUS/TLS with a client certificate out.
pub struct RadsecProxy {
    pub udp_addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RadsecProxy {
    /// Starts radsecproxy listening for RADIUS/UDP on 127.0.0.1 (client 127.0.0.1 with
    /// `udp_secret`) and forwarding every request over TLS to `target` (an address on
    /// 127.0.0.1), presenting `client_cert`/`client_key` and checking the server's certificate
    /// against `ca` and its name against the target's IP address. Waits (at most 10 s) until
    /// its UDP port is bound. `None` (skipped) when radsecproxy is not installed outside CI.
    pub fn start(
        target: SocketAddr,
        udp_secret: &str,
        ca: &Path,
        client_cert: &Path,
        client_key: &Path,
    ) -> Option<RadsecProxy> {
        if !peer_available("radsecproxy", "radsecproxy") {
            return None;
        }
        assert!(
            !udp_secret.contains(['"', '%']) && !udp_secret.is_empty(),
            "secret {udp_secret:?} would need escaping in radsecproxy.conf"
        );
        let host = match target {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_udp_port();
        let config = CONFIG
            .replace("@PORT@", &port.to_string())
            .replace("@CA@", &path_text(ca))
            .replace("@CERT@", &path_text(client_cert))
            .replace("@KEY@", &path_text(client_key))
            .replace("@SECRET@", udp_secret)
            .replace("@HOST@", &host)
            .replace("@TARGET_PORT@", &target.port().to_string());
        let conf = dir.path().join("radsecproxy.conf");
        std::fs::write(&conf, config).expect("radsecproxy.conf");
        let log = File::create(dir.path().join("radsecproxy.log")).expect("log file");
        // -f: foreground, logging to stderr (LogDestination is ignored); -i: the pid file in the
        // temp dir, not /var/run. radsecproxy has no privilege dropping of its own.
        let child = Command::new("radsecproxy")
            .args(["-f", "-d", "3", "-c"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.path().join("radsecproxy.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn radsecproxy");
        let mut proxy = RadsecProxy {
            udp_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            child: Some(child),
        };
        proxy.wait_until_bound();
        Some(proxy)
    }

    /// radsecproxy binds its listeners at start: poll the kernel's socket table for its port
    /// (and its log, which says so at debug level 3).
    fn wait_until_bound(&mut self) {
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("radsecproxy exited ({status}):\n{}", self.log());
                }
            }
            let listening = format!("listening for udp on {}", self.udp_addr);
            if udp_bound(self.udp_addr.port()) || self.log().contains(&listening) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "radsecproxy did not bind {} within {START_WAIT:?}:\n{}",
            self.udp_addr,
            self.log()
        );
    }

    /// radsecproxy's own log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("radsecproxy.log")).unwrap_or_default()
    }

    /// Waits (at most `wait`) until its log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RadsecProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn path_text(path: &Path) -> String {
    let text = path.to_str().expect("UTF-8 path");
    assert!(
        !text.contains(char::is_whitespace),
        "radsecproxy.conf needs quoting for {text}"
    );
    text.to_string()
}

/// Whether some socket is bound to UDP `port` on 127.0.0.1 (Linux: /proc/net/udp, where the
/// local address is `0100007F:PORT`, port in upper-case hex).
fn udp_bound(port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .map(|table| {
            table
                .lines()
                .skip(1)
                .any(|line| line.split_whitespace().nth(1) == Some(local.as_str()))
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// The stand-in for otpgate's RadSec listener.

/// What the stand-in saw.
#[derive(Debug)]
enum Event {
    /// A TLS handshake finished: the client's end-entity certificate (DER).
    Handshake(Vec<u8>),
    HandshakeFailed(String),
    /// A request decoded (its User-Name), about to be answered with an Access-Accept; or why it
    /// was dropped.
    Request(Result<String, String>),
}

struct StandIn {
    addr: SocketAddr,
    events: mpsc::Receiver<Event>,
    stop: Arc<AtomicBool>,
}

impl StandIn {
    /// Listens on 127.0.0.1 with `cert`/`key`, requiring a client certificate issued by `ca`.
    fn start(ca: &Path, cert: &Path, key: &Path) -> StandIn {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(ca).expect("CA PEM"))
            .expect("CA certificate");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .expect("client verifier");
        let chain = CertificateDer::pem_file_iter(cert)
            .expect("certificate PEM")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate chain");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, PrivateKeyDer::from_pem_file(key).expect("key PEM"))
            .expect("server config");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind TLS");
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let (tx, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let (config, tx) = (Arc::clone(&config), tx.clone());
                        std::thread::spawn(move || serve_connection(tcp, config, tx));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => break,
                }
            }
        });
        StandIn { addr, events, stop }
    }

    /// The next event within `wait`.
    fn next(&self, wait: Duration) -> Option<Event> {
        self.events.recv_timeout(wait).ok()
    }

    /// Every event so far.
    fn drain(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One TLS connection: the handshake, then requests until the peer closes.
fn serve_connection(
    mut tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    events: mpsc::Sender<Event>,
) {
    let report = |event| {
        let _ = events.send(event);
    };
    if tcp.set_nonblocking(false).is_err()
        || tcp.set_read_timeout(Some(Duration::from_secs(60))).is_err()
    {
        return;
    }
    let mut conn = rustls::ServerConnection::new(config).expect("server connection");
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            report(Event::HandshakeFailed(e.to_string()));
            return;
        }
    }
    let peer = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|der| der.to_vec())
        .unwrap_or_default();
    report(Event::Handshake(peer));
    let secret = Secret::new(RADSEC_SECRET.as_bytes()).expect("secret");
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    loop {
        let mut buf = vec![0u8; HEADER_LEN];
        if stream.read_exact(&mut buf).is_err() {
            return; // closed
        }
        let length = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&length) {
            report(Event::Request(Err(format!("bad Length {length}"))));
            return; // the stream cannot be framed any further
        }
        buf.resize(length, 0);
        if stream.read_exact(&mut buf[HEADER_LEN..]).is_err() {
            report(Event::Request(Err("truncated packet".into())));
            return;
        }
        let decoded =
            read_header(&buf).and_then(|header| AccessRequest::decode(&buf, header, &secret, true));
        let request = match decoded {
            Ok(request) => request,
            Err(reason) => {
                report(Event::Request(Err(reason.as_str().to_string())));
                continue;
            }
        };
        // Reported before the reply leaves, so the test sees it once the reply is back.
        report(Event::Request(Ok(request.user_name().unwrap_or_default())));
        let reply = Reply::new(ReplyCode::Accept, Some("stand-in accept"));
        let bytes = encode_reply(&request, &reply, &secret).expect("encode reply");
        if stream
            .write_all(&bytes)
            .and_then(|()| stream.flush())
            .is_err()
        {
            return; // the peer went away; its NAS sees no answer
        }
    }
}

fn der_of(pem: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(pem).expect("PEM").to_vec()
}

const UDP_SECRET: &str = "nas-to-radsecproxy-secret";
const CLIENT_NAME: &str = "vpn-gw.example.org";

#[test]
fn radsecproxy_forwards_over_mutual_tls() {
    let pki = Pki::new(CLIENT_NAME);
    let stand_in = StandIn::start(&pki.ca, &pki.server_cert, &pki.server_key);
    let Some(proxy) = RadsecProxy::start(
        stand_in.addr,
        UDP_SECRET,
        &pki.ca,
        &pki.client_cert,
        &pki.client_key,
    ) else {
        return;
    };
    let request = request("alice", "alice-password", UDP_SECRET, true);
    let reply =
        exchange(proxy.udp_addr, &request.bytes, Duration::from_secs(10)).unwrap_or_else(|| {
            panic!(
                "no reply through radsecproxy; stand-in saw {:?}\nradsecproxy log:\n{}",
                stand_in.drain(),
                proxy.log()
            )
        });
    let checked = nas::check_reply(&reply, &request, UDP_SECRET.as_bytes())
        .unwrap_or_else(|e| panic!("reply not authentic under the UDP secret: {e}"));
    assert_eq!(checked.code, Code::AccessAccept);
    assert_eq!(checked.reply_message.as_deref(), Some("stand-in accept"));

    let events = stand_in.drain();
    let client_der = der_of(&pki.client_cert);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Handshake(der) if *der == client_der)),
        "radsecproxy did not present its client certificate: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Request(Ok(user)) if user == "alice")),
        "the stand-in did not answer alice's request: {events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Request(Err(_)))),
        "the stand-in dropped a request: {events:?}\n{}",
        proxy.log()
    );
    assert!(pki.client_cert.starts_with(pki.dir.path()));
}

#[test]
fn radsecproxy_with_foreign_client_certificate_is_refused() {
    let pki = Pki::new(CLIENT_NAME);
    let stand_in = StandIn::start(&pki.ca, &pki.server_cert, &pki.server_key);
    let Some(proxy) = RadsecProxy::start(
        stand_in.addr,
        UDP_SECRET,
        &pki.ca,
        &pki.foreign_client_cert,
        &pki.foreign_client_key,
    ) else {
        return;
    };
    let request = request("mallory", "mallory-password", UDP_SECRET, true);
    let reply = exchange(proxy.udp_addr, &request.bytes, Duration::from_secs(3));
    // radsecproxy connects at start and again for the request: wait for a refused handshake.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = stand_in.drain();
    while !events
        .iter()
        .any(|e| matches!(e, Event::HandshakeFailed(_)))
        && Instant::now() < deadline
    {
        events.extend(stand_in.next(Duration::from_millis(200)));
    }
    events.extend(stand_in.drain());
    assert!(
        reply.is_none(),
        "an answer came back through a refused connection: {reply:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::HandshakeFailed(why) if why.contains("certificate"))),
        "the stand-in saw no refused client certificate: {events:?}\nradsecproxy log:\n{}",
        proxy.log()
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Handshake(_) | Event::Request(_))),
        "a connection with the foreign certificate got through: {events:?}"
    );
}

#[test]
fn radsecproxy_checks_the_server_certificate_name() {
    let pki = Pki::new(CLIENT_NAME);
    let stand_in = StandIn::start(&pki.ca, &pki.misnamed_server_cert, &pki.misnamed_server_key);
    let Some(proxy) = RadsecProxy::start(
        stand_in.addr,
        UDP_SECRET,
        &pki.ca,
        &pki.client_cert,
        &pki.client_key,
    ) else {
        return;
    };
    let request = request("alice", "alice-password", UDP_SECRET, true);
    let reply = exchange(proxy.udp_addr, &request.bytes, Duration::from_secs(3));
    assert!(
        reply.is_none(),
        "radsecproxy accepted a server certificate not naming 127.0.0.1: {reply:?}"
    );
    assert!(
        proxy.wait_for_log("certificate name check failed", Duration::from_secs(10)),
        "radsecproxy did not refuse the server's name:\n{}",
        proxy.log()
    );
    let events = stand_in.drain();
    // The CA check passed on both sides: only the name was wrong.
    assert!(
        events.iter().any(|e| matches!(e, Event::Handshake(_))),
        "radsecproxy never completed a handshake with the stand-in: {events:?}\n{}",
        proxy.log()
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Request(_))),
        "a request reached a server with the wrong name: {events:?}\n{}",
        proxy.log()
    );
}
