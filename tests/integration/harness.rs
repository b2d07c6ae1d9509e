//! Runs the real `otpgate` binary: a temp data dir, a config file, the CLI for provisioning,
//! `serve` as a child process on a loopback port chosen by the kernel, and UDP helpers.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otpgate::radius::nas::{self, BuiltRequest, CheckedReply};

pub const SECRET: &str = "integration-secret";
pub const BIN: &str = env!("CARGO_BIN_EXE_otpgate");

pub struct Appliance {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
    pub addr: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
    /// Further "radius listening" addresses, in the order logged.
    listening: Option<mpsc::Receiver<String>>,
    /// Environment overrides (`OTPGATE__SECTION__KEY`) given to `serve` and the CLI.
    pub env: Vec<(String, String)>,
}

impl Appliance {
    /// A fresh appliance; `extra` is appended to the generated TOML (e.g. an [otp] table).
    pub fn new(extra: &str) -> Appliance {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("otpgate.toml");
        let text = format!(
            r#"
[storage]
path = "{data}"

[radius]
listen = ["127.0.0.1:0"]
# Most tests check decisions, not timing; the timing tests turn it on with
# OTPGATE__RADIUS__REJECT_DELAY_MS.
reject_delay_ms = 0

[[radius.clients]]
name = "test-nas"
address = "127.0.0.1/32"
secret = "{SECRET}"

[password]
# Cheap hashes keep the suite fast; production keeps the defaults.
argon2_memory_kib = 64
argon2_iterations = 1
argon2_parallelism = 1

[log]
level = "info"
{extra}
"#,
            data = dir.path().join("data").display(),
        );
        std::fs::write(&config, text).expect("write config");
        Appliance {
            dir,
            config,
            child: None,
            addr: None,
            logs: Arc::new(Mutex::new(Vec::new())),
            log_reader: None,
            listening: None,
            env: Vec::new(),
        }
    }

    /// Runs `otpgate -c CONFIG ARGS...` to completion.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(BIN)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn otpgate");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("wait otpgate")
    }

    /// Runs the CLI and panics with its output unless it succeeded.
    pub fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "otpgate {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn add_user(&self, name: &str, password: &str) {
        self.cli_ok(
            &["user", "add", name, "--password-stdin"],
            Some(&format!("{password}\n")),
        );
    }

    /// Imports tokens from CSV text (header included by the caller).
    pub fn import_tokens(&self, csv: &str) {
        let file = self
            .dir
            .path()
            .join(format!("tokens-{}.csv", rand_suffix()));
        std::fs::write(&file, csv).expect("write csv");
        self.cli_ok(
            &["token", "import", file.to_str().expect("utf8 path")],
            None,
        );
    }

    /// Starts `serve` and waits until it listens.
    pub fn start(&mut self) -> SocketAddr {
        let mut child = Command::new(BIN)
            .arg("-c")
            .arg(&self.config)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let logs = Arc::clone(&self.logs);
        self.log_reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("radius listening") {
                    if let Some(addr) = listening_address(&line) {
                        let _ = tx.send(addr);
                    }
                }
                logs.lock().expect("logs").push(line);
            }
        }));
        self.child = Some(child);
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("listening address"),
            Err(_) => panic!("server did not start: {}", self.logs().join("\n")),
        };
        self.addr = Some(addr);
        self.listening = Some(rx);
        addr
    }

    /// The next listen address the server logged (with several `listen` entries).
    pub fn another_address(&self) -> SocketAddr {
        let rx = self.listening.as_ref().expect("server started");
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(a) => a.parse().expect("listening address"),
            Err(_) => panic!("no further listen address: {}", self.logs().join("\n")),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("server started")
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// Waits (up to 5 s) until a log line contains `needle`; for checks while serving.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        for _ in 0..100 {
            if self.logs().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// After the child exited, the reader sees end-of-file; wait for it so logs are complete.
    fn join_log_reader(&mut self) {
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
    }

    /// SIGTERM, then waits; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        let status = child.wait().expect("wait");
        self.join_log_reader();
        status.success()
    }

    /// Sends `signal` (a `kill` name, e.g. `HUP`) to the running server.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("server started");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// kill -9: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
        self.join_log_reader();
    }

    /// Sends an Access-Request from 127.0.0.1 and checks the reply, if any, within `wait`.
    pub fn auth(&self, user: &str, password: &str) -> Option<CheckedReply> {
        let request = request(user, password, SECRET, true);
        exchange(self.addr(), &request.bytes, Duration::from_secs(5)).map(|reply| {
            nas::check_reply(&reply, &request, SECRET.as_bytes()).expect("valid reply")
        })
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The address in the "radius listening" line, text (`address=...`) or JSON log format.
fn listening_address(line: &str) -> Option<String> {
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
        return event["address"].as_str().map(str::to_string);
    }
    let addr = line.split("address=").nth(1)?;
    addr.split_whitespace().next().map(str::to_string)
}

pub fn request(user: &str, password: &str, secret: &str, with_ma: bool) -> BuiltRequest {
    let id = (rand_suffix() % 256) as u8;
    nas::access_request(id, user, password.as_bytes(), secret.as_bytes(), with_ma).expect("build")
}

/// Sends `bytes` from a fresh socket on 127.0.0.1 and waits for one datagram.
pub fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    exchange_on(&socket, addr, bytes, wait)
}

pub fn exchange_on(
    socket: &UdpSocket,
    addr: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(wait)).expect("timeout");
    socket.send_to(bytes, addr).expect("send");
    let mut buf = [0u8; 4096];
    match socket.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

pub fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos ^ NEXT.fetch_add(7919, Ordering::Relaxed)
}

pub fn now() -> u64 {
    otpgate::clock::Clock::now(&otpgate::clock::SystemClock)
}

/// The current TOTP code of a base32 seed (our own generator; the radclient tests use oathtool).
pub fn totp_now(seed_b32: &str) -> String {
    let seed = data_encoding::BASE32_NOPAD
        .decode(seed_b32.trim_end_matches('=').as_bytes())
        .expect("base32");
    let step = otpgate::otp::totp::step_at(now(), 30);
    otpgate::otp::totp::code(&seed, step, 6, otpgate::otp::Algorithm::Sha1)
}

pub fn hotp(seed_b32: &str, counter: u64) -> String {
    let seed = data_encoding::BASE32_NOPAD
        .decode(seed_b32.trim_end_matches('=').as_bytes())
        .expect("base32");
    otpgate::otp::hotp::code(&seed, counter, 6, otpgate::otp::Algorithm::Sha1)
}

/// Whether an external peer is installed; in CI (CI set) its absence fails the test.
pub fn peer_available(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").is_ok_and(|v| !v.is_empty()) {
            panic!("{tool} is required in CI: apt-get install {package}");
        }
        eprintln!("skipped: {tool} not installed (apt-get install {package})");
    }
    found
}

/// `{SSHA256}` hash (FreeRADIUS SSHA2-256 / LDAP form): base64(SHA-256(password || salt) || salt).
pub fn ssha256(password: &str, salt: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(password.as_bytes());
    h.update(salt);
    let mut body = h.finalize().to_vec();
    body.extend_from_slice(salt);
    format!(
        "{{SSHA256}}{}",
        base64::engine::general_purpose::STANDARD.encode(body)
    )
}
