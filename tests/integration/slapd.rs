//! A real OpenLDAP `slapd` (Debian's slapd package: /usr/sbin/slapd, schemas in
//! /etc/ldap/schema, modules in /usr/lib/ldap) for the upstream LDAP tests: a temp
//! directory with a generated slapd.conf, an mdb database loaded with `slapadd` before the
//! start, and `slapd -d 0` in the foreground on two loopback ports chosen by the kernel (one
//! ldap://, one ldaps:// with a self-signed certificate). Killed on Drop.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::peer_available;

/// The bind DN template of the directory below.
pub const TEMPLATE: &str = "uid={user},ou=people,dc=example,dc=org";

/// `alice` / `alice-pass`; `carol, jr` / `carol-pass` (a DN with an escaped comma); and,
/// under `ou=admins,ou=people`, another `alice` / `admin-pass`: the entry an unescaped user
/// name `alice,ou=admins` would reach through [`TEMPLATE`].
const DATA: &str = r"dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Alice
userPassword: alice-pass

dn: uid=carol\, jr,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: carol, jr
cn: Carol
sn: Carol
userPassword: carol-pass

dn: ou=admins,ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: admins

dn: uid=alice,ou=admins,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice Admin
sn: Admin
userPassword: admin-pass
";

pub struct Slapd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `ldap://127.0.0.1:PORT/`
    pub url: String,
    /// `ldaps://127.0.0.1:PORT/`, with a self-signed certificate no system trusts.
    pub ldaps_url: String,
}

impl Slapd {
    /// A running slapd with the entries above, or None (test skipped) when slapd or slapadd
    /// is not installed outside CI.
    pub fn start() -> Option<Slapd> {
        if !peer_available("slapd", "slapd") || !peer_available("slapadd", "slapd") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).expect("cert");
        std::fs::write(
            dir.path().join("key.pem"),
            certified.key_pair.serialize_pem(),
        )
        .expect("key");
        std::fs::create_dir(dir.path().join("db")).expect("db dir");
        let conf = dir.path().join("slapd.conf");
        std::fs::write(&conf, config(dir.path())).expect("slapd.conf");
        let ldif = dir.path().join("data.ldif");
        std::fs::write(&ldif, DATA).expect("ldif");
        let out = Command::new("slapadd")
            .arg("-q")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&ldif)
            .output()
            .expect("run slapadd");
        assert!(
            out.status.success(),
            "slapadd: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut slapd = Slapd {
            dir,
            child: None,
            url: String::new(),
            ldaps_url: String::new(),
        };
        // A port picked by the kernel can be taken by someone else before slapd binds it:
        // try a few pairs.
        let mut errors = Vec::new();
        for _ in 0..3 {
            match slapd.launch(&conf) {
                Ok(()) => return Some(slapd),
                Err(e) => errors.push(e),
            }
        }
        panic!("slapd did not start:\n{}", errors.join("\n---\n"));
    }

    /// Starts slapd on two fresh ports and waits (at most 10 s) until both accept.
    fn launch(&mut self, conf: &Path) -> Result<(), String> {
        let ldap = free_port();
        let ldaps = free_port();
        let log = self.dir.path().join("slapd.log");
        let child = Command::new("slapd")
            .arg("-f")
            .arg(conf)
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{ldap}/ ldaps://127.0.0.1:{ldaps}/"
            ))
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("slapd log"))
            .spawn()
            .expect("spawn slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let targets = [ldap, ldaps].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        loop {
            if targets
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok())
            {
                self.url = format!("ldap://127.0.0.1:{ldap}/");
                self.ldaps_url = format!("ldaps://127.0.0.1:{ldaps}/");
                return Ok(());
            }
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                _ => None,
            };
            if exited.is_some() || Instant::now() > deadline {
                self.kill();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "ports {ldap}/{ldaps}, {}: {text}",
                    exited.unwrap_or_else(|| "no connection within 10 s".to_string())
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCertificateFile {d}/cert.pem
TLSCertificateKeyFile {d}/key.pem

database mdb
maxsize 16777216
suffix "dc=example,dc=org"
directory {d}/db
"#
    )
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
