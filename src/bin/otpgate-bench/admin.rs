//! `otpgate-bench admin`: admin API actions at a fixed rate, for the benchmark of logins while
//! administrators work (`benches/admin-during-logins.sh`). Each serial goes through suspend,
//! reinstate, reset and a status read in turn, over one keep-alive HTTP/1.1 connection per
//! in-flight action; the report gives the achieved rate, errors and latency.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

#[derive(clap::Args)]
pub struct AdminArgs {
    /// Admin API address; must be loopback.
    #[arg(long)]
    pub server: SocketAddr,
    /// File holding the bearer token (`otpgate admin-token create`).
    #[arg(long)]
    pub token_file: PathBuf,
    /// Serials to act on, one per line (tokens the login load does not use).
    #[arg(long)]
    pub serials_file: PathBuf,
    /// Actions per second.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// Seconds to run at most.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Actions to send at most.
    #[arg(long, default_value_t = 100_000)]
    pub max_actions: usize,
    /// Index of the first serial to use: runs one after the other start apart, so none finds a
    /// token the previous one left suspended.
    #[arg(long, default_value_t = 0)]
    pub first_serial: usize,
}

/// The four steps each serial goes through, in turn.
const STEPS: [(&str, &str); 4] = [
    ("POST", "/suspend"),
    ("POST", "/reinstate"),
    ("POST", "/reset"),
    ("GET", ""),
];

pub fn run(args: &AdminArgs) -> Result<()> {
    ensure!(
        args.server.ip().is_loopback(),
        "refusing server {}: only loopback addresses may be driven",
        args.server
    );
    ensure!(
        (1..=10_000).contains(&args.rate),
        "--rate must be 1 to 10000"
    );
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading {}", args.token_file.display()))?
        .trim()
        .to_string();
    let serials: Vec<String> = std::fs::read_to_string(&args.serials_file)
        .with_context(|| format!("reading {}", args.serials_file.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    ensure!(
        !serials.is_empty(),
        "no serials in {}",
        args.serials_file.display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    runtime.block_on(drive(args, &token, &serials))
}

async fn connect(server: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn drive(args: &AdminArgs, token: &str, serials: &[String]) -> Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration.max(0.1));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(Result<()>, Duration)>();
    // Idle connections, reused; a new one when all are busy.
    let (idle_tx, mut idle_rx) = tokio::sync::mpsc::unbounded_channel::<SendRequest<Full<Bytes>>>();
    let mut sent = 0usize;
    while sent < args.max_actions && Instant::now() < deadline {
        tick.tick().await;
        let serial = &serials[(args.first_serial + sent / STEPS.len()) % serials.len()];
        let (method, action) = STEPS[sent % STEPS.len()];
        let uri = format!("http://{}/api/v1/tokens/{serial}{action}", args.server);
        let body = match action {
            "/suspend" => r#"{"by":"admin","reason":"benchmark"}"#,
            _ => "",
        };
        let mut builder = Request::builder()
            .method(Method::from_bytes(method.as_bytes())?)
            .uri(uri)
            .header("host", args.server.to_string())
            .header("authorization", format!("Bearer {token}"));
        if !body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder.body(Full::new(Bytes::from(body)))?;
        let sender = match idle_rx.try_recv() {
            Ok(sender) if !sender.is_closed() => Ok(sender),
            _ => connect(args.server).await,
        };
        let (done, idle) = (done_tx.clone(), idle_tx.clone());
        sent += 1;
        tokio::spawn(async move {
            let began = Instant::now();
            let result = async {
                let mut sender = sender?;
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                let _ = response.into_body().collect().await?;
                let _ = idle.send(sender);
                if !status.is_success() {
                    bail!("HTTP {status}");
                }
                Ok(())
            }
            .await;
            let _ = done.send((result, began.elapsed()));
        });
    }
    drop(done_tx);
    let mut latencies = Vec::with_capacity(sent);
    let mut errors = Vec::new();
    let finish = Instant::now() + Duration::from_secs(10);
    while latencies.len() + errors.len() < sent {
        match tokio::time::timeout_at(finish.into(), done_rx.recv()).await {
            Ok(Some((Ok(()), took))) => latencies.push(took),
            Ok(Some((Err(e), _))) => errors.push(format!("{e:#}")),
            _ => break,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ms = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    errors.sort_unstable();
    errors.dedup();
    println!(
        "{}",
        serde_json::json!({
            "actions": sent,
            "completed": latencies.len(),
            "errors": sent - latencies.len(),
            "error_kinds": errors,
            "rate": sent as f64 / elapsed,
            "p50_ms": ms(0.50),
            "p99_ms": ms(0.99),
        })
    );
    Ok(())
}
