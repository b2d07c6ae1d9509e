//! `otpgate-bench`: the load generator and fixture generator used to measure otpgate side by
//! side with FreeRADIUS (`benches/compare-freeradius.sh`).
//!
//! - `fixture` writes N users and TOTP tokens as otpgate import files and as a FreeRADIUS
//!   `authorize` file with the same passwords (salted SHA-256) and seeds.
//! - `admin` drives the admin API at a fixed rate of lifecycle actions (suspend, reinstate,
//!   reset, status) on tokens the login load does not use.
//! - `load` sends real PAP Access-Requests (password + current TOTP, Message-Authenticator on)
//!   to a server on loopback with a fixed number in flight, bounded in count and time, checks
//!   every reply's authenticators and prints throughput, latency percentiles and the server's
//!   CPU time per reply.

mod admin;
mod fixture;
mod load;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the hot path allocates many small, short-lived buffers (packets, records, sled's
/// node copies), which glibc's allocator serves markedly slower (see README "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "otpgate-bench",
    about = "Load and fixture generator for otpgate benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write N users and tokens: users.csv, tokens.csv (otpgate), authorize (FreeRADIUS),
    /// load-users.csv (for `load`).
    Fixture(FixtureArgs),
    /// Drive a RADIUS server on loopback and report accepts/s and latency.
    Load(LoadArgs),
    /// Drive the admin API on loopback at a fixed rate of lifecycle actions.
    Admin(admin::AdminArgs),
}

#[derive(clap::Args)]
pub struct FixtureArgs {
    /// Number of users (and tokens).
    #[arg(long)]
    pub users: usize,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Password hash written for otpgate: `ssha256` (the same work as FreeRADIUS's
    /// SSHA2-256-Password) or `argon2id` (default parameters; slow to generate for many users).
    #[arg(long, default_value = "ssha256")]
    pub hash: String,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["users", "replay"])))]
pub struct LoadArgs {
    /// Server address; must be loopback (127.0.0.0/8 or ::1).
    #[arg(long)]
    pub target: std::net::SocketAddr,
    /// Shared secret of the client the generator poses as.
    #[arg(long)]
    pub secret: String,
    /// `load-users.csv` from `fixture`: each request is the user's password + current TOTP.
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// Replay a file written by `--accepted-log`: each `username,password` sent once as it is;
    /// exits non-zero if any is accepted (durability check after `kill -9`).
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// Index of the first user to use (runs in the same TOTP step must not reuse users).
    #[arg(long, default_value_t = 0)]
    pub first_user: usize,
    /// Send the users of the slice (`--first-user`, `--count`) in a random order (the same
    /// every time) instead of file order: unrelated users logging in, as in a reconnect storm,
    /// rather than neighbours in the store's key order.
    #[arg(long)]
    pub shuffle: bool,
    /// Requests kept in flight.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Requests to send at most (each user once).
    #[arg(long, default_value_t = 100_000)]
    pub count: usize,
    /// Seconds to run at most.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait for a reply before counting a timeout.
    #[arg(long, default_value_t = 2.0)]
    pub timeout: f64,
    /// Process id of the server, to report its CPU seconds per reply.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write every accepted (username, password) to this file (durability checks), except the
    /// few whose code recurs within four TOTP steps of their own (valid again, so a replay proves
    /// nothing); the report counts them as `accepted_recurring`.
    #[arg(long)]
    pub accepted_log: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Fixture(args) => fixture::run(&args),
        Command::Load(args) => load::run(&args),
        Command::Admin(args) => admin::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otpgate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
