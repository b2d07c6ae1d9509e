//! Criterion micro-benchmarks of the authentication hot path (issue 3).
//!
//! Groups:
//! - `otp`: HOTP and TOTP verification (6 digits; SHA-1, SHA-256, SHA-512): HOTP with the code
//!   at the expected counter and at the far end of the default look-ahead (10), TOTP with
//!   window 1 and the code at the expected step and at the far edge of the window (the third
//!   step tried).
//! - `radius`: an Access-Request built as a NAS does (`radius::nas::access_request`) checked as
//!   the server does it (header, decode, Message-Authenticator, User-Name, User-Password
//!   recovery), and reply encoding with a leading Message-Authenticator (Accept; Reject with
//!   Reply-Message).
//! - `password`: verification of a FreeRADIUS-style `{SSHA256}` hash (SSHA2-256-Password) and of
//!   argon2id with the default parameters (`Argon2Params::default()`).
//! - `pipeline`: the whole in-process path against a real sled store in a temporary directory,
//!   users with `{SSHA256}` (and 64 with argon2id) hashes and HOTP tokens imported through
//!   `TokenService::import`; every request carries the next code of its user, so every request
//!   is an Access-Accept (checked). Setup (store, users, request building) is not timed.
//!   - `fast/*`: the server's fast path as a UDP worker runs it: `RequestHandler::decide_now`
//!     per request, then one `make_durable` (flush + fdatasync) per batch of 1 or 64 requests
//!     (a `recvmmsg` batch); `no_durable_commit` is the same without `make_durable`.
//!   - `async/*`: `RequestHandler::handle` (the path for costly hashes) on a 2-worker tokio
//!     runtime, 1 or 64 requests in flight (with 64, time per request = 1 / throughput), with the
//!     durable store sync on the blocking pool (as `otpgate serve` does) and without (an
//!     `Authenticator` over the same store wrapped so that `sync` does nothing); argon2id users
//!     too.
//!   - `parts/*`: the pieces: store reads, `check_otp`, record (postcard) encoding, seed opening,
//!     one flush + fdatasync, and the cross-thread hand-off of the async path.
//!
//! Run everything with `cargo bench --bench hot_path`; one group with e.g.
//! `cargo bench --bench hot_path -- otp`. The argument is a regular expression matched against
//! the benchmark ids (`otp` also matches `pipeline/parts/check_otp`; `'^otp/'` does not), so
//! `-- pipeline/fast` runs only the fast-path pipeline benchmarks. The pipeline's store is set
//! up only when one of its benchmarks is selected.
//!
//! The durable variants fsync in the temporary directory: set `TMPDIR` to a directory on the
//! disk you care about (on tmpfs an fsync costs nothing).

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use otpgate::appliance::open_services;
use otpgate::auth::messages::GENERIC_FAILURE;
use otpgate::auth::password::{Argon2Params, PasswordHash};
use otpgate::auth::Authenticator;
use otpgate::clock::{Clock, SystemClock};
use otpgate::config::Settings;
use otpgate::otp::import::ImportedToken;
use otpgate::otp::{hotp, totp, Algorithm, TokenKind};
use otpgate::radius::clients::Client;
use otpgate::radius::nas;
use otpgate::radius::packet::{encode_reply, read_header, AccessRequest, Reply, ReplyCode, Secret};
use otpgate::radius::{server, Request, RequestHandler};
use otpgate::store::seal::SeedCipher;
use otpgate::store::{ChangeSet, KeyValue, Store, StoreError, Token, User};
use otpgate::token::{OtpOutcome, TokenService};

const SECRET: &[u8] = b"bench-shared-secret-0123";
/// 2009-02-13 23:31:30 UTC, an RFC 6238 test time.
const NOW: u64 = 1_234_567_890;
/// Users (each with one HOTP token) in the pipeline store.
const USERS: usize = 1_000;
/// Requests in flight in the concurrent pipeline benchmarks (the reference load).
const IN_FLIGHT: usize = 64;

/// Short measurements so that the whole run takes a few minutes on 2 cores.
fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
}

/// RFC 6238 appendix B seeds: the key length matches the hash.
fn rfc6238_seed(alg: Algorithm) -> &'static [u8] {
    match alg {
        Algorithm::Sha1 => b"12345678901234567890",
        Algorithm::Sha256 => b"12345678901234567890123456789012",
        Algorithm::Sha512 => b"1234567890123456789012345678901234567890123456789012345678901234",
    }
}

// ---------------------------------------------------------------------------------------------
// otp

fn bench_otp(c: &mut Criterion) {
    let mut group = c.benchmark_group("otp");
    configure(&mut group);
    let look_ahead = 10; // the default `otp.hotp_look_ahead`
    let window = 1; // the default `otp.totp_window`
    for alg in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
        let seed = rfc6238_seed(alg);
        let name = alg.as_str();

        let counter = 1_000;
        let expected = hotp::code(seed, counter, 6, alg);
        let edge = hotp::code(seed, counter + look_ahead, 6, alg);
        assert_eq!(
            hotp::verify(seed, alg, 6, counter, look_ahead, &edge),
            Some(counter + look_ahead),
            "the look-ahead edge code verifies"
        );
        for (case, code) in [
            ("expected_counter", &expected),
            ("look_ahead_edge_10", &edge),
        ] {
            group.bench_function(format!("hotp_verify/{name}/{case}"), |b| {
                b.iter(|| {
                    hotp::verify(
                        black_box(seed),
                        alg,
                        6,
                        black_box(counter),
                        look_ahead,
                        black_box(code),
                    )
                })
            });
        }

        let step = totp::step_at(NOW, 30);
        let expected = totp::code(seed, step, 6, alg);
        // Tried in the order step, step - 1, step + 1: step + 1 is the last one computed.
        let edge = totp::code(seed, step + window, 6, alg);
        let verify = |code: &str| {
            totp::verify(
                black_box(seed),
                alg,
                6,
                30,
                black_box(NOW),
                0,
                window,
                black_box(Some(step - 2)),
                black_box(code),
            )
        };
        assert_eq!(verify(&edge).map(|m| m.step), Some(step + window));
        group.bench_function(format!("totp_verify/{name}/expected_step"), |b| {
            b.iter(|| verify(&expected))
        });
        group.bench_function(format!("totp_verify/{name}/window_edge"), |b| {
            b.iter(|| verify(&edge))
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// radius

/// What `Server::on_datagram` extracts from a datagram before handing it to the pipeline.
struct Extracted {
    user_name: Option<String>,
    password: Option<Zeroizing<Vec<u8>>>,
    has_chap_password: bool,
    calling_station_id: Option<String>,
}

fn check_request(
    datagram: &[u8],
    secret: &Secret,
    require_message_authenticator: bool,
) -> Option<Extracted> {
    let header = read_header(datagram).ok()?;
    let request =
        AccessRequest::decode(datagram, header, secret, require_message_authenticator).ok()?;
    Some(Extracted {
        user_name: request.user_name(),
        password: request.user_password(secret),
        has_chap_password: request.has_chap_password(),
        calling_station_id: request.calling_station_id(),
    })
}

fn bench_radius(c: &mut Criterion) {
    let mut group = c.benchmark_group("radius");
    configure(&mut group);
    // PAP password + 6-digit OTP, as a VPN user types it.
    let password = b"correct-horse-battery123456";
    let secret = Secret::new(SECRET).expect("secret");
    let with_ma = nas::access_request(7, "user00042", password, SECRET, true)
        .expect("build an Access-Request");
    let without_ma = nas::access_request(7, "user00042", password, SECRET, false)
        .expect("build an Access-Request");
    let checked = check_request(&with_ma.bytes, &secret, true).expect("the request is valid");
    assert_eq!(checked.user_name.as_deref(), Some("user00042"));
    assert_eq!(
        checked.password.as_deref().map(Vec::as_slice),
        Some(&password[..])
    );
    assert!(!checked.has_chap_password && checked.calling_station_id.is_none());
    assert!(check_request(&without_ma.bytes, &secret, false).is_some());

    group.bench_function("request_decode+message_authenticator+password", |b| {
        b.iter(|| check_request(black_box(&with_ma.bytes), &secret, true))
    });
    group.bench_function("request_decode+password/no_message_authenticator", |b| {
        b.iter(|| check_request(black_box(&without_ma.bytes), &secret, false))
    });

    let header = read_header(&with_ma.bytes).expect("header");
    let request =
        AccessRequest::decode(&with_ma.bytes, header, &secret, true).expect("decode request");
    let accepted = Reply::new(ReplyCode::Accept, None);
    let rejected = Reply::new(ReplyCode::Reject, Some(GENERIC_FAILURE));
    let accept = encode_reply(&request, &accepted, &secret).expect("encode accept");
    nas::check_reply(&accept, &with_ma, SECRET).expect("the Accept is authentic");
    let reject = encode_reply(&request, &rejected, &secret).expect("encode reject");
    nas::check_reply(&reject, &with_ma, SECRET).expect("the Reject is authentic");
    group.bench_function("reply_encode/accept", |b| {
        b.iter(|| encode_reply(black_box(&request), &accepted, &secret))
    });
    group.bench_function("reply_encode/reject+reply_message", |b| {
        b.iter(|| encode_reply(black_box(&request), &rejected, &secret))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// password

/// FreeRADIUS SSHA2-256-Password / LDAP `{SSHA256}`: base64(SHA-256(password || salt) || salt).
fn ssha256(password: &[u8], salt: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(password)
        .chain_update(salt)
        .finalize();
    let mut raw = digest.to_vec();
    raw.extend_from_slice(salt);
    format!(
        "{{SSHA256}}{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn bench_password(c: &mut Criterion) {
    let mut group = c.benchmark_group("password");
    configure(&mut group);
    let password = b"correct-horse-battery";

    let stored = ssha256(password, b"16-byte-salt-xyz");
    let hash = PasswordHash::parse(&stored).expect("parse {SSHA256}");
    assert_eq!(hash.scheme(), "ssha256");
    assert!(hash.verify(password) && !hash.verify(b"wrong"));
    group.bench_function("ssha256/verify", |b| {
        b.iter(|| black_box(&hash).verify(black_box(password)))
    });
    // The pipeline parses the stored hash on every request.
    group.bench_function("ssha256/parse+verify", |b| {
        b.iter(|| {
            PasswordHash::parse(black_box(&stored)).is_ok_and(|h| h.verify(black_box(password)))
        })
    });

    let params = Argon2Params::default();
    let argon = PasswordHash::new_argon2id(password, &params).expect("hash with argon2id");
    assert!(argon.verify(password));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("argon2id_default_m19456_t2_p1/verify", |b| {
        b.iter(|| black_box(&argon).verify(black_box(password)))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// pipeline

/// The real store with `sync` made a no-op, for the "no durable commit" variant of the async
/// path: the very same `Authenticator::handle` (the group-commit round trip to its thread
/// included) minus flush + fdatasync. That path offers no switch to skip the commit, hence this
/// wrapper. (The fast path needs none: its commit is a separate `make_durable` call, skipped.)
struct NoSyncStore(Arc<dyn Store>);

impl Store for NoSyncStore {
    fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.0.user(username)
    }
    fn create_users(&self, users: &[User]) -> Result<(), StoreError> {
        self.0.create_users(users)
    }
    fn token(&self, serial: &str) -> Result<Option<Token>, StoreError> {
        self.0.token(serial)
    }
    fn tokens(&self, after: Option<&str>, limit: usize) -> Result<Vec<Token>, StoreError> {
        self.0.tokens(after, limit)
    }
    fn token_of_user(&self, username: &str) -> Result<Option<Token>, StoreError> {
        self.0.token_of_user(username)
    }
    fn user_and_token(&self, username: &str) -> Result<(Option<User>, Option<Token>), StoreError> {
        self.0.user_and_token(username)
    }
    fn create_tokens(&self, tokens: &[Token]) -> Result<(), StoreError> {
        self.0.create_tokens(tokens)
    }
    fn apply(&self, changes: ChangeSet) -> Result<bool, StoreError> {
        self.0.apply(changes)
    }
    fn record(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.record(key)
    }
    fn records(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<KeyValue>, StoreError> {
        self.0.records(from, to, limit)
    }
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn checkpoint(&self) -> Result<(), StoreError> {
        self.0.checkpoint()
    }
}

/// Which users a request is for.
#[derive(Clone, Copy)]
enum Hashes {
    /// `{SSHA256}`: decided on the fast path.
    Ssha256,
    /// argon2id with the default parameters: sent to the async path.
    Argon2id,
}

struct BenchUser {
    name: String,
    serial: String,
    password: Vec<u8>,
    seed: Vec<u8>,
    /// The HOTP counter of the next code to send.
    next: u64,
}

/// Users taken round robin.
struct Pool {
    users: Vec<BenchUser>,
    cursor: usize,
}

impl Pool {
    fn new(prefix: &str, count: usize) -> Pool {
        let users = (0..count)
            .map(|i| BenchUser {
                name: format!("{prefix}{i:05}"),
                serial: format!("{prefix}-HOTP{i:07}"),
                password: format!("pw-{prefix}{i:05}-correct-horse").into_bytes(),
                seed: Sha256::digest(format!("seed {prefix} {i}")).to_vec()[..20].to_vec(),
                next: 0,
            })
            .collect();
        Pool { users, cursor: 0 }
    }

    /// The next user and their next HOTP code, consumed.
    fn next_code(&mut self) -> (usize, String) {
        let index = self.cursor;
        self.cursor = (self.cursor + 1) % self.users.len();
        let user = &mut self.users[index];
        let code = hotp::code(&user.seed, user.next, 6, Algorithm::Sha1);
        user.next += 1;
        (index, code)
    }
}

/// Users (each with one HOTP token) with argon2id hashes; each costs one argon2id to set up.
const ARGON2_USERS: usize = IN_FLIGHT;

struct Pipeline {
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn Store>,
    tokens: Arc<TokenService>,
    durable: Arc<Authenticator>,
    no_sync: Arc<Authenticator>,
    client: Arc<Client>,
    peer: SocketAddr,
    ssha: Pool,
    argon: Pool,
    /// Kept last: the store must close before its directory goes.
    dir: tempfile::TempDir,
}

impl Pipeline {
    fn new() -> Pipeline {
        let dir = tempfile::tempdir().expect("temporary directory for the store");
        let mut settings = Settings::load_with_env(None, Some(HashMap::new()))
            .expect("the embedded default settings load");
        settings.storage.path = dir.path().join("db");
        settings.storage.key_file = dir.path().join("seed.key");
        settings.password.rehash_on_login = false;
        let settings = Arc::new(settings);
        let services = open_services(&settings).expect("open the store and the seed key");

        let now = SystemClock.now();
        let ssha = Pool::new("user", USERS);
        let argon = Pool::new("argon", ARGON2_USERS);
        let params = settings.password.argon2;
        let record = |user: &BenchUser, password_hash: String| User {
            username: user.name.clone(),
            password_hash,
            email: None,
            first_name: None,
            last_name: None,
            assurance_level: 2,
            created_at: now,
        };
        let mut records: Vec<User> = ssha
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let salt = format!("salt{i:012}");
                record(u, ssha256(&u.password, salt.as_bytes()))
            })
            .collect();
        for user in &argon.users {
            let hash = PasswordHash::new_argon2id(&user.password, &params).expect("argon2id hash");
            records.push(record(user, hash.as_stored().to_string()));
        }
        services
            .store
            .create_users(&records)
            .expect("create the users");
        let imported: Vec<ImportedToken> = ssha
            .users
            .iter()
            .chain(&argon.users)
            .map(|u| ImportedToken {
                serial: u.serial.clone(),
                secret: Zeroizing::new(u.seed.clone()),
                algorithm: Algorithm::Sha1,
                digits: 6,
                kind: TokenKind::Hotp,
                counter: 0,
                owner: Some(u.name.clone()),
            })
            .collect();
        let count = services
            .tokens
            .import(imported, now)
            .expect("import the tokens");
        assert_eq!(count, USERS + ARGON2_USERS);
        services.store.sync().expect("sync the imported store");

        let no_sync_store: Arc<dyn Store> = Arc::new(NoSyncStore(Arc::clone(&services.store)));
        let no_sync_tokens = Arc::new(TokenService::new(
            no_sync_store,
            SeedCipher::load_or_create(&settings.storage.key_file).expect("load the seed key"),
            settings.otp.clone(),
            settings.lifecycle.clone(),
            settings.password.argon2,
        ));
        // `otpgate serve` runs on a multi-threaded runtime with one worker per core (2 here).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let authenticator = |tokens: &Arc<TokenService>| {
            Arc::new(Authenticator::new(
                Arc::clone(&settings),
                Arc::clone(tokens),
                Arc::new(SystemClock),
            ))
        };
        let (durable, no_sync) = (
            authenticator(&services.tokens),
            authenticator(&no_sync_tokens),
        );
        let client = Arc::new(Client {
            name: "bench-nas".into(),
            secret: Secret::new(SECRET).expect("secret"),
            application: Arc::clone(&settings.applications[0]),
        });
        Pipeline {
            runtime,
            store: services.store,
            tokens: services.tokens,
            durable,
            no_sync,
            client,
            peer: "127.0.0.1:40000".parse().expect("peer address"),
            ssha,
            argon,
            dir,
        }
    }

    /// An Access-Request as the server hands it to the pipeline: password followed by the next
    /// code of the next user of the pool. Returns the user's index in its pool too.
    fn next_request(&mut self, hashes: Hashes) -> (usize, Request) {
        let pool = match hashes {
            Hashes::Ssha256 => &mut self.ssha,
            Hashes::Argon2id => &mut self.argon,
        };
        let (index, code) = pool.next_code();
        let user = &pool.users[index];
        let mut password = Zeroizing::new(user.password.clone());
        password.extend_from_slice(code.as_bytes());
        let request = Request {
            client: Arc::clone(&self.client),
            peer: self.peer,
            identifier: (index % 256) as u8,
            user_name: Some(user.name.clone()),
            password: Some(password),
            has_chap_password: false,
            // As `radius::nas::access_request` builds it (no Calling-Station-Id).
            calling_station_id: None,
            state: None,
        };
        (index, request)
    }

    /// The server's fast path: `decide_now` for each request of a batch of `batch`, then (when
    /// `durable`) one `make_durable` for the batch, as `Server::answer_batch` does before it
    /// sends the replies. Returns the wall time of `iters` requests.
    fn run_fast(&mut self, durable: bool, iters: u64, batch: usize) -> Duration {
        let requests: Vec<Request> = (0..iters)
            .map(|_| self.next_request(Hashes::Ssha256).1)
            .collect();
        let handler = &self.durable;
        let mut failures = 0u64;
        let started = Instant::now();
        for chunk in requests.chunks(batch) {
            let mut wrote = false;
            for request in chunk {
                match handler.decide_now(request) {
                    Some(decided) if decided.reply.code == ReplyCode::Accept => {
                        wrote |= decided.wrote;
                        black_box(decided);
                    }
                    _ => failures += 1,
                }
            }
            if durable && wrote && handler.make_durable().is_err() {
                failures += 1;
            }
        }
        let elapsed = started.elapsed();
        assert_eq!(
            failures, 0,
            "every request must be accepted on the fast path"
        );
        elapsed
    }

    /// The async path (`RequestHandler::handle`): `iters` requests, `in_flight` tasks at a
    /// time; returns the wall time. The requests of one user stay in one task, in order, so no
    /// code overtakes an earlier one (which the HOTP counter would then refuse as replayed).
    fn run_async(
        &mut self,
        durable: bool,
        hashes: Hashes,
        iters: u64,
        in_flight: usize,
    ) -> Duration {
        let mut lanes: Vec<Vec<Request>> = (0..in_flight).map(|_| Vec::new()).collect();
        for _ in 0..iters {
            let (index, request) = self.next_request(hashes);
            lanes[index % in_flight].push(request);
        }
        let handler = Arc::clone(if durable {
            &self.durable
        } else {
            &self.no_sync
        });
        let (elapsed, rejects) = self.runtime.block_on(async move {
            let started = Instant::now();
            let tasks: Vec<_> = lanes
                .into_iter()
                .map(|lane| {
                    let handler = Arc::clone(&handler);
                    tokio::spawn(async move {
                        let mut rejects = 0u64;
                        for request in lane {
                            if handler.handle(request).await.code != ReplyCode::Accept {
                                rejects += 1;
                            }
                        }
                        rejects
                    })
                })
                .collect();
            let mut rejects = 0;
            for task in tasks {
                rejects += task.await.expect("a pipeline task panicked");
            }
            (started.elapsed(), rejects)
        });
        assert_eq!(
            rejects, 0,
            "every request of the benchmark must be accepted"
        );
        elapsed
    }

    /// `iters` empty `spawn_blocking` round trips, one after the other, from a task on the
    /// runtime: the hand-off the async path makes for the password hash and for the sync.
    fn run_handoff(&self, iters: u64) -> Duration {
        self.runtime.block_on(async move {
            let task = tokio::spawn(async move {
                let started = Instant::now();
                let mut failures = 0u64;
                for i in 0..iters {
                    let ok = tokio::task::spawn_blocking(move || black_box(i))
                        .await
                        .is_ok();
                    failures += u64::from(!ok);
                }
                (started.elapsed(), failures)
            });
            let (elapsed, failures) = task.await.expect("the hand-off task panicked");
            assert_eq!(failures, 0, "every hand-off must succeed");
            elapsed
        })
    }

    /// The work of a fast-path decision minus throttle, token gate and logging: reads, password
    /// parse + verify, OTP check and CAS. Returns the wall time of `iters` requests.
    fn run_direct(&mut self, iters: u64) -> Duration {
        let requests: Vec<(usize, String)> = (0..iters).map(|_| self.ssha.next_code()).collect();
        let started = Instant::now();
        let mut rejects = 0u64;
        for (index, code) in requests {
            let user = &self.ssha.users[index];
            let accepted = (|| {
                let record = self.store.user(&user.name).ok()??;
                let token = self.store.token_of_user(&user.name).ok()??;
                let hash = PasswordHash::parse(&record.password_hash).ok()?;
                if !hash.verify(&user.password) {
                    return None;
                }
                let outcome = self.tokens.check_otp(&token.serial, &code, NOW).ok()?;
                Some(outcome == OtpOutcome::Accepted)
            })();
            if accepted != Some(true) {
                rejects += 1;
            }
        }
        let elapsed = started.elapsed();
        assert_eq!(
            rejects, 0,
            "every request of the benchmark must be accepted"
        );
        elapsed
    }

    /// `TokenService::check_otp` alone (sled get, record decode, AES-GCM open, HMAC, 2 record
    /// encodes, CAS); with `sync`, only the `Store::sync` after each write is timed.
    fn run_check_otp(&mut self, iters: u64, sync: bool) -> Duration {
        let requests: Vec<(usize, String)> = (0..iters).map(|_| self.ssha.next_code()).collect();
        let mut timed = Duration::ZERO;
        let mut rejects = 0u64;
        for (index, code) in requests {
            let serial = &self.ssha.users[index].serial;
            let started = Instant::now();
            let outcome = self.tokens.check_otp(serial, &code, NOW);
            if !sync {
                timed += started.elapsed();
            }
            if !matches!(outcome, Ok(OtpOutcome::Accepted)) {
                rejects += 1;
            }
            if sync {
                let started = Instant::now();
                if self.store.sync().is_err() {
                    rejects += 1;
                }
                timed += started.elapsed();
            }
        }
        assert_eq!(rejects, 0, "every OTP of the benchmark must be accepted");
        timed
    }
}

/// The pipeline fixture, set up on first use (only if a pipeline benchmark is selected).
fn fixture(pipeline: &mut Option<Pipeline>) -> &mut Pipeline {
    pipeline.get_or_insert_with(Pipeline::new)
}

fn bench_pipeline(c: &mut Criterion) {
    let mut pipeline: Option<Pipeline> = None;
    let mut group = c.benchmark_group("pipeline");
    configure(&mut group);
    group.throughput(Throughput::Elements(1));

    // The fast path, as the UDP workers run it: `{SSHA256}` users decided inline, one sync per
    // received batch (1 = one request at a time, 64 = a full `recvmmsg` batch).
    for batch in [1, server::BATCH] {
        group.bench_function(format!("fast/durable_commit/batch_{batch}"), |b| {
            let p = fixture(&mut pipeline);
            b.iter_custom(|iters| p.run_fast(true, iters, batch))
        });
    }
    group.bench_function("fast/no_durable_commit", |b| {
        let p = fixture(&mut pipeline);
        b.iter_custom(|iters| p.run_fast(false, iters, server::BATCH))
    });

    // The async path (`handle`), which the server uses for costly hashes; with `{SSHA256}` users
    // it shows the path's own overhead (hand-offs to the blocking pool and the commit thread).
    for (durable, label) in [(true, "durable_commit"), (false, "no_durable_commit")] {
        for in_flight in [1, IN_FLIGHT] {
            let id = format!("async/ssha256/{label}/{in_flight}_in_flight");
            group.bench_function(id, |b| {
                let p = fixture(&mut pipeline);
                b.iter_custom(|iters| p.run_async(durable, Hashes::Ssha256, iters, in_flight))
            });
        }
    }

    // Breakdown of the parts, synchronously on the bench thread.
    group.bench_function("parts/direct_reads+ssha256+check_otp", |b| {
        let p = fixture(&mut pipeline);
        b.iter_custom(|iters| p.run_direct(iters))
    });
    group.bench_function("parts/check_otp", |b| {
        let p = fixture(&mut pipeline);
        b.iter_custom(|iters| p.run_check_otp(iters, false))
    });
    group.bench_function("parts/store_sync_after_one_write", |b| {
        let p = fixture(&mut pipeline);
        b.iter_custom(|iters| p.run_check_otp(iters, true))
    });
    group.bench_function("parts/store_user_and_token", |b| {
        let p = fixture(&mut pipeline);
        let name = p.ssha.users[0].name.as_str();
        b.iter(|| p.store.user_and_token(black_box(name)))
    });
    let some_token = |p: &Pipeline| {
        p.store
            .token_of_user(&p.ssha.users[0].name)
            .expect("read the token")
            .expect("the user has a token")
    };
    // The store's record encoding (postcard, `store::sled_store`): a CAS encodes two tokens.
    group.bench_function("parts/token_record_encode", |b| {
        let token = some_token(fixture(&mut pipeline));
        b.iter(|| postcard::to_stdvec(black_box(&token)))
    });
    group.bench_function("parts/token_record_decode", |b| {
        let token = some_token(fixture(&mut pipeline));
        let bytes = postcard::to_stdvec(&token).expect("encode a token");
        b.iter(|| postcard::from_bytes::<Token>(black_box(&bytes)))
    });
    group.bench_function("parts/seed_open_aes256gcm", |b| {
        let p = fixture(&mut pipeline);
        let token = some_token(p);
        let cipher =
            SeedCipher::load_or_create(&p.dir.path().join("seed.key")).expect("load the seed key");
        cipher
            .open(&token.serial, &token.sealed_seed)
            .expect("the seed opens");
        b.iter(|| cipher.open(black_box(&token.serial), black_box(&token.sealed_seed)))
    });
    // The cross-thread hand-off of a request on the async path, with nothing to do.
    group.bench_function("parts/handoff/spawn_blocking_round_trip", |b| {
        let p = fixture(&mut pipeline);
        b.iter_custom(|iters| p.run_handoff(iters))
    });

    // argon2id users end to end (async path, durable): the hash dominates.
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for in_flight in [1, IN_FLIGHT] {
        let id = format!("async/argon2id/durable_commit/{in_flight}_in_flight");
        group.bench_function(id, |b| {
            let p = fixture(&mut pipeline);
            b.iter_custom(|iters| p.run_async(true, Hashes::Argon2id, iters, in_flight))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_otp,
    bench_radius,
    bench_password,
    bench_pipeline
);
criterion_main!(benches);
