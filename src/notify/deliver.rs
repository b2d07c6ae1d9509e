//! Delivering the outbox: every entry due is sent through the configured SMTP relay (or, with
//! none, written to the log: kind, user, address and subject, never the body, which may carry
//! a temporary password), then removed; a failed delivery is retried with a doubling back-off.
//! Removal and back-off are change sets that expect the entry exactly as read, and are synced
//! before the next entry, so a restart or `kill -9` loses nothing.
//!
//! Delivery is exactly once, except in one window: a crash after the relay accepted a message
//! and before its removal is durable sends it again at the next start. Both copies carry the
//! same `Message-ID` (from the outbox key), so mail systems and readers can tell them apart.

use std::sync::Arc;
use std::time::Duration;

use data_encoding::HEXLOWER;
use lettre::message::{header::ContentType, Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Pending, OUTBOX_PREFIX};
use crate::clock::Clock;
use crate::config::{NotifySettings, SmtpTls};
use crate::store::{ChangeSet, Expect, Store, StoreError};

/// Entries looked at per pass.
const PAGE: usize = 256;
/// How long one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where notifications go.
enum Channel {
    Smtp {
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        from: Mailbox,
    },
    /// No relay configured: the log.
    Log,
}

/// Why a delivery failed: worth retrying, or never deliverable as it is.
enum Failure {
    Retry(String),
    Never(String),
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub delivered: usize,
    pub deferred: usize,
    pub dropped: usize,
}

/// The outbox's delivery task.
pub struct Deliverer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Deliverer {
    /// Starts delivering on the current runtime: at once, then every `poll`.
    pub fn start(
        store: Arc<dyn Store>,
        settings: &NotifySettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Deliverer, String> {
        let channel = channel(settings)?;
        let (stop, mut stopped) = watch::channel(false);
        let settings = settings.clone();
        let task = tokio::spawn(async move {
            loop {
                match deliver_due(&store, &channel, &settings, clock.now()).await {
                    Ok(report) if report != Report::default() => tracing::info!(
                        delivered = report.delivered,
                        deferred = report.deferred,
                        dropped = report.dropped,
                        "notifications"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "outbox: delivery pass failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(settings.poll) => {}
                    _ = stopped.wait_for(|stop| *stop) => return,
                }
            }
        });
        Ok(Deliverer { stop, task })
    }

    /// Stops after the delivery in progress (at most the SMTP timeout).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(SMTP_TIMEOUT + Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            tracing::warn!("outbox: the delivery task did not stop in time");
        }
    }
}

fn channel(settings: &NotifySettings) -> Result<Channel, String> {
    let Some(relay) = &settings.relay else {
        return Ok(Channel::Log);
    };
    let from: Mailbox = settings
        .from
        .parse()
        .map_err(|e| format!("notify.from: {e}"))?;
    let builder = match relay.tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&relay.host),
        SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&relay.host)
            .map_err(|e| format!("notify.smtp_relay: {e}"))?,
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&relay.host)
            .map_err(|e| format!("notify.smtp_relay: {e}"))?,
    };
    let mut builder = builder.port(relay.port).timeout(Some(SMTP_TIMEOUT));
    if let Some((user, password)) = &relay.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(Channel::Smtp {
        transport: Box::new(builder.build()),
        from,
    })
}

/// Sends every entry due at `now`, each once per pass.
async fn deliver_due(
    store: &Arc<dyn Store>,
    channel: &Channel,
    settings: &NotifySettings,
    now: u64,
) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let mut start = OUTBOX_PREFIX.to_vec();
    let mut end = OUTBOX_PREFIX.to_vec();
    end.push(0xFF);
    loop {
        let page = {
            let store = Arc::clone(store);
            let (from, to) = (start.clone(), end.clone());
            blocking(move || store.records(&from, &to, PAGE)).await?
        };
        let Some((last, _)) = page.last() else {
            break;
        };
        start = last.clone();
        start.push(0);
        for (key, stored) in &page {
            let entry: Pending = match postcard::from_bytes(stored) {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::error!(error = %e, "outbox: an entry does not decode; left in place");
                    continue;
                }
            };
            if entry.next_attempt_at > now {
                continue;
            }
            let message_id = format!("<{}@otpgate>", HEXLOWER.encode(&key[OUTBOX_PREFIX.len()..]));
            let outcome = send(channel, &entry, &message_id).await;
            let n = &entry.notification;
            let change = match outcome {
                Ok(()) => {
                    report.delivered += 1;
                    None
                }
                Err(Failure::Never(why)) => {
                    tracing::error!(kind = %n.kind, user = %n.username, to = %n.to, reason = %why,
                        "outbox: notification cannot be delivered; dropped");
                    report.dropped += 1;
                    None
                }
                Err(Failure::Retry(why)) => {
                    let attempts = entry.attempts.saturating_add(1);
                    let wait = backoff(settings, attempts);
                    tracing::warn!(kind = %n.kind, user = %n.username, attempts,
                        retry_in_secs = wait.as_secs(), reason = %why,
                        "outbox: delivery failed; will retry");
                    report.deferred += 1;
                    let retried = Pending {
                        attempts,
                        next_attempt_at: now.saturating_add(wait.as_secs()),
                        ..entry.clone()
                    };
                    Some(crate::store::encode(&retried)?)
                }
            };
            let changes =
                ChangeSet::new().record(key.clone(), Expect::Value(stored.clone()), change);
            let store = Arc::clone(store);
            blocking(move || {
                // Changed meanwhile (nothing else writes entries): left for the next pass.
                store.apply(changes)?;
                store.sync()
            })
            .await?;
        }
        if page.len() < PAGE {
            break;
        }
    }
    Ok(report)
}

/// The wait after the `attempts`-th failure: `retry_initial`, doubling, at most `retry_max`.
fn backoff(settings: &NotifySettings, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(32);
    settings
        .retry_initial
        .saturating_mul(1u32 << doublings.min(31))
        .min(settings.retry_max)
}

async fn send(channel: &Channel, entry: &Pending, message_id: &str) -> Result<(), Failure> {
    let n = &entry.notification;
    match channel {
        Channel::Log => {
            // The body is left out: it may carry a temporary password.
            tracing::info!(kind = %n.kind, user = %n.username, to = %n.to, subject = %n.subject,
                "notification (no [notify] smtp_relay configured: not e-mailed)");
            Ok(())
        }
        Channel::Smtp { transport, from } => {
            let to: Mailbox =
                n.to.parse()
                    .map_err(|e| Failure::Never(format!("recipient `{}`: {e}", n.to)))?;
            let message = Message::builder()
                .from(from.clone())
                .to(to)
                .subject(n.subject.clone())
                .message_id(Some(message_id.to_string()))
                .header(ContentType::TEXT_PLAIN)
                .body(n.body.clone())
                .map_err(|e| Failure::Never(e.to_string()))?;
            transport
                .send(message)
                .await
                .map(drop)
                .map_err(|e| Failure::Retry(e.to_string()))
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Io(format!("outbox task: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let settings = NotifySettings {
            relay: None,
            from: "otpgate@localhost".into(),
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            poll: Duration::from_secs(5),
        };
        let waits: Vec<u64> = (1..=9).map(|a| backoff(&settings, a).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(&settings, u32::MAX).as_secs(), 3600);
    }
}
