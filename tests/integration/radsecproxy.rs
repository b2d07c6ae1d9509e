//! RADIUS over TLS (RFC 6614) with a real radsecproxy (Debian's radsecproxy package, 1.9.2) as
//! the NAS side: `radclient`-style UDP requests to radsecproxy, which forwards them over mutual
//! TLS, presenting a client certificate, to otpgate's RadSec port. A throwaway PKI in a temp dir
//! (rcgen), a private configuration (nothing of /etc is read), `radsecproxy -f` in the
//! foreground, its log in the temp dir. Killed on Drop.
//!
//! The tests that use it are in `radsec.rs`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::freeradius::free_udp_port;
use crate::harness::peer_available;

/// How long radsecproxy may take to bind its UDP port.
const START_WAIT: Duration = Duration::from_secs(10);

/// A throwaway PKI in a temp dir, PEM files: a CA; a server certificate for otpgate (SANs IP
/// 127.0.0.1, IP ::1, DNS localhost); a client certificate for radsecproxy (CN and DNS SAN =
/// `client_name`); and a client certificate with the same names from a second, foreign CA.
pub struct Pki {
    /// Holds the files until the test ends.
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub foreign_client_cert: PathBuf,
    pub foreign_client_key: PathBuf,
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
            _dir: dir,
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
