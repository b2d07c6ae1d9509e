//! The load generator. One thread and one UDP socket per 128 requests in flight; each thread
//! keeps its share of requests outstanding (identifiers 0..=255 of its socket), sends and
//! receives in batches (sendmmsg/recvmmsg, so the generator spends little of the shared CPU;
//! each request still a datagram of its own, as a NAS sends them: segmentation offload would
//! hand the server bursts no NAS produces, which measured 12-25% fewer accepts/s for otpgate),
//! checks every reply's Response Authenticator and Message-Authenticator, and records
//! latencies. Each user
//! is used once, so the server's replay guard never trips on a legitimate request.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use otpgate::otp::{totp, Algorithm};
use otpgate::radius::mmsg::{is_idle, send_each, RecvBatch};
use otpgate::radius::nas::{self, BuiltRequest};
use radius::core::code::Code;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::LoadArgs;

/// Requests in flight per socket at most (identifiers are one octet).
const PER_SOCKET: usize = 128;
/// Seed of `--shuffle`'s order.
const SHUFFLE_SEED: u64 = 0x07_9a7e;
/// Linux reports process CPU times in USER_HZ, fixed at 100 by the kernel ABI.
const USER_HZ: f64 = 100.0;
/// TOTP period of the fixture's tokens, in seconds.
const PERIOD: u64 = 30;
/// Steps on either side of its own in which an accepted code is looked for again. A 6-digit code
/// is also the code of a neighbouring step about once per million: the server may have matched
/// it to that step (it tries the steps nearest its drift-corrected clock first), or it is valid
/// anew a step later, so a replay of it within this horizon (two minutes, the server's window
/// included) proves nothing about durability, and `--accepted-log` leaves it out.
const RECUR_STEPS: u64 = 4;

/// One request to send: who, and the password (with the seed to append the current code).
struct Work {
    user: String,
    password: String,
    seed: Option<Vec<u8>>,
}

struct InFlight {
    sent: Instant,
    request: BuiltRequest,
    login: Login,
}

/// Whose login a request is and what it sent, as `--accepted-log` needs it for an accept.
struct Login {
    work: usize,
    /// The password as sent (with the code).
    password: String,
    /// The TOTP step of the code sent, if one was appended.
    step: Option<u64>,
}

#[derive(Default)]
struct ThreadResult {
    sent: u64,
    accepts: u64,
    rejects: u64,
    timeouts: u64,
    bad_replies: u64,
    latencies_us: Vec<u32>,
    accepted: Vec<Login>,
    /// When the last reply arrived: throughput is measured up to here, not over time spent
    /// waiting for requests that then time out.
    last_reply: Option<Instant>,
}

pub fn run(args: &LoadArgs) -> Result<()> {
    ensure!(
        args.target.ip().is_loopback(),
        "refusing target {}: only loopback addresses (127.0.0.0/8, ::1) may be loaded",
        args.target
    );
    ensure!(
        (1..=4096).contains(&args.in_flight),
        "--in-flight must be 1..=4096"
    );
    ensure!(
        args.duration > 0.0 && args.duration <= 600.0,
        "--duration must be within (0, 600] seconds"
    );
    ensure!(
        args.timeout > 0.0 && args.timeout <= 30.0,
        "--timeout must be within (0, 30] seconds"
    );
    let replay = args.replay.is_some();
    let work = match (&args.users, &args.replay) {
        (Some(path), _) => {
            let mut work = read_users(path, args.first_user, args.count)?;
            if args.shuffle {
                // A fixed seed: runs are repeatable and both servers get the same order.
                work.shuffle(&mut rand::rngs::StdRng::seed_from_u64(SHUFFLE_SEED));
            }
            work
        }
        (None, Some(path)) => read_replay(path)?,
        (None, None) => bail!("give --users or --replay"),
    };
    ensure!(!work.is_empty(), "no users to send requests for");
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let sockets = args.in_flight.div_ceil(PER_SOCKET);
    let cpu_before = args.server_pid.map(server_cpu_seconds).transpose()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut threads = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let window = args.in_flight / sockets + usize::from(i < args.in_flight % sockets);
        let socket = bind_for(args.target)?;
        let ctx = Context_ {
            socket,
            target: args.target,
            secret: args.secret.clone().into_bytes(),
            work: Arc::clone(&work),
            next: Arc::clone(&next),
            window,
            deadline,
            timeout,
        };
        threads.push(std::thread::spawn(move || ctx.drive()));
    }
    let mut total = ThreadResult::default();
    for t in threads {
        let r = t
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        total.sent += r.sent;
        total.accepts += r.accepts;
        total.rejects += r.rejects;
        total.timeouts += r.timeouts;
        total.bad_replies += r.bad_replies;
        total.latencies_us.extend(r.latencies_us);
        total.accepted.extend(r.accepted);
        total.last_reply = total.last_reply.max(r.last_reply);
    }
    let elapsed = total
        .last_reply
        .map_or_else(|| started.elapsed(), |last| last.duration_since(started))
        .as_secs_f64();
    let cpu = match (args.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(server_cpu_seconds(pid)? - before),
        _ => None,
    };
    let logged = match &args.accepted_log {
        Some(path) => Some(write_accepted(path, &work, &total.accepted)?),
        None => None,
    };
    report(args, &total, elapsed, cpu, logged)?;
    if replay && total.accepts > 0 {
        bail!(
            "{} replayed code(s) were accepted: durability violated",
            total.accepts
        );
    }
    Ok(())
}

/// Per-thread state (named with a trailing underscore to keep clear of anyhow's `Context`).
struct Context_ {
    socket: UdpSocket,
    target: SocketAddr,
    secret: Vec<u8>,
    work: Arc<Vec<Work>>,
    next: Arc<AtomicUsize>,
    window: usize,
    deadline: Instant,
    timeout: Duration,
}

impl Context_ {
    fn drive(self) -> Result<ThreadResult> {
        let mut result = ThreadResult::default();
        let mut slots: Vec<Option<InFlight>> = (0..256).map(|_| None).collect();
        let mut outstanding = 0usize;
        let mut next_id: u8 = 0;
        let mut sending = true;
        let mut batch = RecvBatch::new(256, 4096);
        let mut last_sweep = Instant::now();
        let mut fresh: Vec<u8> = Vec::with_capacity(256);
        loop {
            // Top the window up and send the new requests in one sendmmsg.
            fresh.clear();
            while sending && outstanding < self.window {
                if Instant::now() >= self.deadline {
                    sending = false;
                    break;
                }
                let index = self.next.fetch_add(1, Ordering::Relaxed);
                let Some(work) = self.work.get(index) else {
                    sending = false;
                    break;
                };
                while slots[usize::from(next_id)].is_some() {
                    next_id = next_id.wrapping_add(1);
                }
                let id = next_id;
                next_id = next_id.wrapping_add(1);
                let (request, password, step) = build(work, id, &self.secret)?;
                slots[usize::from(id)] = Some(InFlight {
                    sent: Instant::now(),
                    request,
                    login: Login {
                        work: index,
                        password,
                        step,
                    },
                });
                outstanding += 1;
                fresh.push(id);
            }
            if !fresh.is_empty() {
                let datagrams: Vec<(&[u8], SocketAddr)> = fresh
                    .iter()
                    .filter_map(|id| slots[usize::from(*id)].as_ref())
                    .map(|slot| (slot.request.bytes.as_slice(), self.target))
                    .collect();
                let failed = send_each(&self.socket, &datagrams);
                result.sent += (datagrams.len() - failed) as u64;
            }
            if outstanding == 0 && !sending {
                break;
            }
            match batch.receive(&self.socket) {
                Ok(received) => {
                    for i in 0..received {
                        let Some((reply, _)) = batch.get(i) else {
                            continue;
                        };
                        let Some(slot) = reply.get(1).and_then(|id| slots[usize::from(*id)].take())
                        else {
                            result.bad_replies += 1;
                            continue;
                        };
                        outstanding -= 1;
                        result.last_reply = Some(Instant::now());
                        let micros = slot.sent.elapsed().as_micros();
                        result
                            .latencies_us
                            .push(u32::try_from(micros).unwrap_or(u32::MAX));
                        match nas::check_reply(reply, &slot.request, &self.secret) {
                            Ok(r)
                                if r.code == Code::AccessAccept
                                    && r.message_authenticator_first =>
                            {
                                result.accepts += 1;
                                result.accepted.push(slot.login);
                            }
                            Ok(r) if r.code == Code::AccessReject => result.rejects += 1,
                            _ => result.bad_replies += 1,
                        }
                    }
                }
                // A refused send (server not up yet, or killed mid-run) shows up here too.
                Err(e) if is_idle(&e) || e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e).context("receive"),
            }
            if last_sweep.elapsed() >= Duration::from_millis(50) {
                last_sweep = Instant::now();
                for slot in slots.iter_mut() {
                    if slot
                        .as_ref()
                        .is_some_and(|s| s.sent.elapsed() >= self.timeout)
                    {
                        *slot = None;
                        outstanding -= 1;
                        result.timeouts += 1;
                    }
                }
            }
        }
        Ok(result)
    }
}

fn bind_for(target: SocketAddr) -> Result<UdpSocket> {
    let local = if target.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let socket = UdpSocket::bind(local).context("bind")?;
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .context("set_read_timeout")?;
    Ok(socket)
}

/// The request for `work` (password + current code when it has a seed), the password sent and
/// the code's TOTP step.
fn build(work: &Work, id: u8, secret: &[u8]) -> Result<(BuiltRequest, String, Option<u64>)> {
    let mut password = work.password.clone();
    let mut step = None;
    if let Some(seed) = &work.seed {
        let now = totp::step_at(
            otpgate::clock::Clock::now(&otpgate::clock::SystemClock),
            PERIOD,
        );
        password.push_str(&fixture_code(seed, now));
        step = Some(now);
    }
    let request = nas::access_request(id, &work.user, password.as_bytes(), secret, true)
        .map_err(|e| anyhow::anyhow!("building a request: {e}"))?;
    Ok((request, password, step))
}

/// The fixture token's code at `step` (6 digits, HMAC-SHA-1).
fn fixture_code(seed: &[u8], step: u64) -> String {
    totp::code(seed, step, 6, Algorithm::Sha1)
}

/// Whether the code of `step` is also the code of a step within [`RECUR_STEPS`] of it.
fn recurs(seed: &[u8], step: u64) -> bool {
    let code = fixture_code(seed, step);
    (step.saturating_sub(RECUR_STEPS)..=step + RECUR_STEPS)
        .filter(|other| *other != step)
        .any(|other| fixture_code(seed, other) == code)
}

fn read_users(path: &Path, first: usize, count: usize) -> Result<Vec<Work>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut work = Vec::with_capacity(count.min(4_000_000));
    let mut user_index = 0usize;
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{} line {}", path.display(), n + 1))?;
        if n == 0 && line.starts_with("username,") {
            continue;
        }
        user_index += 1;
        if user_index <= first {
            continue;
        }
        if work.len() >= count {
            break;
        }
        let mut fields = line.split(',');
        let (Some(user), Some(password), Some(seed)) =
            (fields.next(), fields.next(), fields.next())
        else {
            bail!(
                "{} line {}: expected username,password,seed_base32",
                path.display(),
                n + 1
            );
        };
        let seed = data_encoding::BASE32_NOPAD
            .decode(seed.trim().trim_end_matches('=').as_bytes())
            .with_context(|| format!("{} line {}: bad base32 seed", path.display(), n + 1))?;
        work.push(Work {
            user: user.to_string(),
            password: password.to_string(),
            seed: Some(seed),
        });
    }
    Ok(work)
}

fn read_replay(path: &Path) -> Result<Vec<Work>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut work = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{} line {}", path.display(), n + 1))?;
        let Some((user, password)) = line.split_once(',') else {
            bail!(
                "{} line {}: expected username,password",
                path.display(),
                n + 1
            );
        };
        work.push(Work {
            user: user.to_string(),
            password: password.to_string(),
            seed: None,
        });
    }
    Ok(work)
}

/// What `--accepted-log` wrote.
struct Logged {
    lines: u64,
    /// Accepts left out: their code recurs within [`RECUR_STEPS`], so a replay may rightly
    /// be accepted.
    recurring: u64,
}

/// Writes `username,password` (the password as sent, code included) per accept. The codes are
/// spent: replaying them must fail, which is the point of the file. Codes that recur in the
/// neighbouring steps are left out (counted): a replay of them may meet them valid again.
fn write_accepted(path: &Path, work: &[Work], accepted: &[Login]) -> Result<Logged> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let mut logged = Logged {
        lines: 0,
        recurring: 0,
    };
    for accept in accepted {
        let Some(w) = work.get(accept.work) else {
            continue;
        };
        if let (Some(seed), Some(step)) = (&w.seed, accept.step) {
            if recurs(seed, step) {
                logged.recurring += 1;
                continue;
            }
        }
        writeln!(out, "{},{}", w.user, accept.password)?;
        logged.lines += 1;
    }
    out.flush()?;
    Ok(logged)
}

/// utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15).
fn server_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name start at field 3.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .context("unexpected /proc stat format")
    };
    Ok((ticks(11)? + ticks(12)?) / USER_HZ)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

fn report(
    args: &LoadArgs,
    total: &ThreadResult,
    elapsed: f64,
    cpu: Option<f64>,
    logged: Option<Logged>,
) -> Result<()> {
    let mut latencies = total.latencies_us.clone();
    latencies.sort_unstable();
    let replies = total.accepts + total.rejects;
    let accepts_per_s = total.accepts as f64 / elapsed.max(1e-9);
    let cpu_us_per_reply = cpu.map(|c| c * 1e6 / (replies.max(1) as f64));
    let value = serde_json::json!({
        "in_flight": args.in_flight,
        "order": if args.shuffle { "shuffled" } else { "file" },
        "sent": total.sent,
        "accepts": total.accepts,
        "rejects": total.rejects,
        "timeouts": total.timeouts,
        "bad_replies": total.bad_replies,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "accepts_per_s": accepts_per_s.round(),
        "p50_ms": percentile(&latencies, 50.0),
        "p90_ms": percentile(&latencies, 90.0),
        "p99_ms": percentile(&latencies, 99.0),
        "max_ms": latencies.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
        "server_cpu_s": cpu,
        "cpu_us_per_reply": cpu_us_per_reply.map(|c| (c * 10.0).round() / 10.0),
        "accepted_logged": logged.as_ref().map(|l| l.lines),
        "accepted_recurring": logged.as_ref().map(|l| l.recurring),
    });
    if args.json {
        println!("{value}");
        return Ok(());
    }
    println!("target          {}", args.target);
    println!("in flight       {}", args.in_flight);
    println!(
        "order           {}",
        if args.shuffle { "shuffled" } else { "file" }
    );
    println!(
        "sent            {}   accepts {}   rejects {}   timeouts {}   bad replies {}",
        total.sent, total.accepts, total.rejects, total.timeouts, total.bad_replies
    );
    println!("elapsed         {elapsed:.2} s");
    println!("accepts/s       {accepts_per_s:.0}");
    println!(
        "latency ms      p50 {}  p90 {}  p99 {}  max {}",
        value["p50_ms"], value["p90_ms"], value["p99_ms"], value["max_ms"]
    );
    if let (Some(cpu), Some(per)) = (cpu, cpu_us_per_reply) {
        println!("server CPU      {cpu:.2} s, {per:.1} µs per reply");
    }
    if let Some(l) = logged {
        println!(
            "accepted log    {} codes ({} left out: the code recurs within {RECUR_STEPS} steps)",
            l.lines, l.recurring
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seen in a durability run: this fixture seed's code 086804 is the code of steps 59863903
    /// and 59863904 alike (checked with `oathtool --totp -w 5`).
    #[test]
    fn a_code_valid_again_in_a_later_step_is_noticed() {
        let seed = data_encoding::BASE32_NOPAD
            .decode(b"SXD37ZEM5UC5C45DC2ZQE575MQAV5EEO")
            .expect("base32");
        assert_eq!(fixture_code(&seed, 59_863_903), "086804");
        assert_eq!(fixture_code(&seed, 59_863_904), "086804");
        assert!(recurs(&seed, 59_863_903));
        assert!(
            recurs(&seed, 59_863_904),
            "the step before has the same code"
        );
        // From 59863902 on: 755972 086804 086804 671315 409102 913901 328213 603752 530815
        // (oathtool -w 9): none of 59863906's neighbours within four steps has its 409102.
        assert!(!recurs(&seed, 59_863_906));
    }
}
