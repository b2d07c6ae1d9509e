//! A real FreeRADIUS 3 (Debian's freeradius package) as the site's existing RADIUS server, for
//! the upstream first-factor tests: a private configuration directory in a temp dir (nothing
//! of /etc/freeradius is read), PAP against a `users` file, one port found free by the kernel
//! on 127.0.0.1 and the same on ::1, `freeradius -f` in the foreground as the current user.
//! Killed on Drop.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{exchange, peer_available, request};

/// The shared secret between otpgate and this FreeRADIUS.
pub const UPSTREAM_SECRET: &str = "upstream-secret-1234";

/// Users known to FreeRADIUS: name and password.
pub const USERS: &[(&str, &str)] = &[("carol", "carol-site-pw"), ("dave", "dave-site-pw")];

const CONFIG: &str = r#"
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = @DIR@
sbindir = ${exec_prefix}/sbin
logdir = @DIR@
raddbdir = @DIR@
radacctdir = @DIR@
name = radiusd
confdir = @DIR@
modconfdir = @DIR@
run_dir = @DIR@
db_dir = @DIR@
libdir = /usr/lib/freeradius
pidfile = @DIR@/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 16384
hostname_lookups = no

log {
	destination = files
	file = @DIR@/radius.log
	colourise = no
}

security {
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = no
}

proxy_requests = no

client otpgate {
	ipaddr = 127.0.0.1
	proto = udp
	secret = @SECRET@
	require_message_authenticator = yes
}

client otpgate6 {
	ipv6addr = ::1
	proto = udp
	secret = @SECRET@
	require_message_authenticator = yes
}

modules {
	pap {
		normalise = yes
	}
	# RFC 6238, SHA-1, 6 digits, 30 s, from &control:TOTP-Secret; used by `start_with_totp`.
	totp {
	}
	files {
		filename = @DIR@/users
		acctusersfile = @DIR@/empty
		preproxy_usersfile = @DIR@/empty
	}
}

instantiate {
}

server site {
	listen {
		type = auth
		ipaddr = 127.0.0.1
		port = @PORT@
	}
	listen {
		type = auth
		ipv6addr = ::1
		port = @PORT@
	}
	authorize {
@SPLIT@
		files
		pap
	}
	authenticate {
		Auth-Type PAP {
			pap
@TOTP@
		}
	}
	post-auth {
		# 3.2.1 signs replies only when asked (3.2.5+ by default): otpgate requires it.
		update reply {
			&Message-Authenticator := 0x00
		}
		Post-Auth-Type REJECT {
			update reply {
				&Message-Authenticator := 0x00
			}
		}
	}
}
"#;

/// The `authorize` lines that split User-Password into the password and the code.
const SPLIT: &str = r#"		if (&User-Password =~ /^(.*)([0-9]{6})$/) {
			update request {
				&User-Password := "%{1}"
				&TOTP-Password := "%{2}"
			}
		}"#;

pub struct FreeRadius {
    _dir: tempfile::TempDir,
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl FreeRadius {
    /// Starts it with [`USERS`] and waits (at most 20 s) until it answers; `None` (skipped)
    /// when FreeRADIUS is not installed outside CI.
    pub fn start() -> Option<FreeRadius> {
        let users: String = USERS
            .iter()
            .map(|(user, password)| format!("{user} Cleartext-Password := \"{password}\"\n"))
            .collect();
        FreeRadius::launch(&users, false)
    }

    /// Starts it with `users` as its users file, checking password and TOTP code the way a
    /// FreeRADIUS site with rlm_totp does: User-Password is the password followed by the
    /// 6-digit code, split by the regular expression the site's `authorize` section uses.
    pub fn start_with_totp(users: &str) -> Option<FreeRadius> {
        FreeRadius::launch(users, true)
    }

    fn launch(users: &str, totp: bool) -> Option<FreeRadius> {
        if !peer_available("freeradius", "freeradius") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_udp_port();
        let path = dir.path().display().to_string();
        let config = CONFIG
            .replace("@DIR@", &path)
            .replace("@PORT@", &port.to_string())
            .replace("@SECRET@", UPSTREAM_SECRET)
            .replace("@SPLIT@", if totp { SPLIT } else { "" })
            .replace("@TOTP@", if totp { "\t\t\ttotp" } else { "" });
        std::fs::write(dir.path().join("radiusd.conf"), config).expect("radiusd.conf");
        std::fs::write(dir.path().join("empty"), "").expect("empty");
        std::fs::write(dir.path().join("users"), users).expect("users");
        let child = Command::new("freeradius")
            .args(["-f", "-n", "radiusd", "-d"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn freeradius");
        let mut server = FreeRadius {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: Some(child),
            _dir: dir,
        };
        server.wait_until_answering();
        Some(server)
    }

    /// Any answer to a probe (a Reject for an unknown user) means it is serving.
    fn wait_until_answering(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(self._dir.path().join("radius.log"))
                        .unwrap_or_default();
                    panic!("freeradius exited ({status}): {log}");
                }
            }
            let probe = request("no-such-user", "x", UPSTREAM_SECRET, true);
            if exchange(self.addr, &probe.bytes, Duration::from_millis(300)).is_some() {
                return;
            }
        }
        panic!("freeradius did not answer within 20 s");
    }
}

impl Drop for FreeRadius {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A UDP port on 127.0.0.1 free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
