//! Counters of what the RADIUS front end saw and did. Cheap atomics; logged at shutdown and
//! ready for the metrics endpoint of the operations work.

use std::sync::atomic::{AtomicU64, Ordering};

use super::packet::DropReason;

#[derive(Default, Debug)]
pub struct Stats {
    pub received: AtomicU64,
    pub accepts: AtomicU64,
    pub rejects: AtomicU64,
    /// Access-Challenges sent (`otp_mode` challenge or auto: the code is asked for).
    pub challenges: AtomicU64,
    pub duplicates_answered: AtomicU64,
    pub duplicates_in_progress: AtomicU64,
    /// RadSec (RFC 6614): connections of identified clients, and handshakes that failed.
    pub radsec_connections: AtomicU64,
    pub radsec_handshake_failures: AtomicU64,
    /// Status-Server requests answered (RFC 5997).
    pub status_server: AtomicU64,
    pub dropped_unknown_client: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub dropped_unsupported_code: AtomicU64,
    pub dropped_missing_message_authenticator: AtomicU64,
    pub dropped_bad_message_authenticator: AtomicU64,
    pub dropped_overload: AtomicU64,
    /// Access-Rejects held until their `reject_delay_ms` deadline, and those dropped because
    /// too many were waiting already.
    pub delayed_rejects: AtomicU64,
    pub dropped_delayed_rejects: AtomicU64,
    pub receive_errors: AtomicU64,
    /// Receive batches taken by the UDP workers, and how many of them needed a sync.
    pub batches: AtomicU64,
    pub batch_syncs: AtomicU64,
    pub send_errors: AtomicU64,
}

impl Stats {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    pub fn dropped(&self, reason: DropReason) {
        Self::count(match reason {
            DropReason::Malformed => &self.dropped_malformed,
            DropReason::UnsupportedCode => &self.dropped_unsupported_code,
            DropReason::MissingMessageAuthenticator => &self.dropped_missing_message_authenticator,
            DropReason::BadMessageAuthenticator => &self.dropped_bad_message_authenticator,
        });
    }

    /// Name/value pairs, for logs and metrics.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("received", get(&self.received)),
            ("accepts", get(&self.accepts)),
            ("rejects", get(&self.rejects)),
            ("challenges", get(&self.challenges)),
            ("duplicates_answered", get(&self.duplicates_answered)),
            ("duplicates_in_progress", get(&self.duplicates_in_progress)),
            ("status_server", get(&self.status_server)),
            ("radsec_connections", get(&self.radsec_connections)),
            (
                "radsec_handshake_failures",
                get(&self.radsec_handshake_failures),
            ),
            ("dropped_unknown_client", get(&self.dropped_unknown_client)),
            ("dropped_malformed", get(&self.dropped_malformed)),
            (
                "dropped_unsupported_code",
                get(&self.dropped_unsupported_code),
            ),
            (
                "dropped_missing_message_authenticator",
                get(&self.dropped_missing_message_authenticator),
            ),
            (
                "dropped_bad_message_authenticator",
                get(&self.dropped_bad_message_authenticator),
            ),
            ("dropped_overload", get(&self.dropped_overload)),
            ("delayed_rejects", get(&self.delayed_rejects)),
            (
                "dropped_delayed_rejects",
                get(&self.dropped_delayed_rejects),
            ),
            ("receive_errors", get(&self.receive_errors)),
            ("batches", get(&self.batches)),
            ("batch_syncs", get(&self.batch_syncs)),
            ("send_errors", get(&self.send_errors)),
        ]
    }
}
