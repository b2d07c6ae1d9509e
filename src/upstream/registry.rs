//! The configured upstreams by name, as the login pipeline asks them, each behind a guard:
//! at most `max_in_flight` checks at once (more are answered Unavailable at once), and while
//! the upstream is down (its last check found no server) only one check at a time probes it,
//! the others are answered Unavailable at once. A dead upstream so costs a login nothing but
//! its Reject, and holds none of the permits other applications' logins need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::ldap::LdapFirstFactor;
use super::radius::RadiusFirstFactor;
use super::Verdict;
use crate::config::{UpstreamKind, UpstreamSettings};

/// One `[[upstreams]]` entry, ready to ask.
pub struct Upstream {
    name: String,
    kind: Kind,
    in_flight: Arc<Semaphore>,
    /// The last check found no server answering.
    down: AtomicBool,
    /// A check is probing the down upstream.
    probing: AtomicBool,
}

enum Kind {
    Radius(RadiusFirstFactor),
    Ldap(LdapFirstFactor),
}

impl Upstream {
    /// Errors name the upstream and the problem (the configuration check runs the same
    /// constructors, so a loaded configuration does not fail here).
    pub fn new(settings: &UpstreamSettings) -> Result<Upstream, String> {
        let kind = match &settings.kind {
            UpstreamKind::Radius {
                servers,
                secret,
                require_message_authenticator,
            } => Kind::Radius(RadiusFirstFactor::new(
                servers.clone(),
                secret.as_bytes(),
                settings.timeout,
                settings.retries,
                *require_message_authenticator,
            )?),
            UpstreamKind::Ldap {
                servers,
                bind_dn_template,
            } => Kind::Ldap(LdapFirstFactor::new(
                servers.clone(),
                bind_dn_template.clone(),
                settings.timeout,
                settings.retries,
            )?),
        };
        Ok(Upstream {
            name: settings.name.clone(),
            kind,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            down: AtomicBool::new(false),
            probing: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `password` is `user`'s, per this upstream (see the module documentation for
    /// when it answers Unavailable without asking).
    pub async fn check(&self, user: &str, password: &[u8]) -> Verdict {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Verdict::Unavailable {
                reason: "max_in_flight checks already waiting on it".into(),
            };
        };
        let probe = self.down.load(Ordering::Relaxed);
        if probe
            && self
                .probing
                .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Verdict::Unavailable {
                reason: "down (another check is probing it)".into(),
            };
        }
        let verdict = match &self.kind {
            Kind::Radius(radius) => radius.check(user, password).await,
            Kind::Ldap(ldap) => ldap.check(user, password).await,
        };
        let answered = !matches!(verdict, Verdict::Unavailable { .. });
        if self.down.swap(!answered, Ordering::Relaxed) == answered {
            if answered {
                tracing::info!(upstream = %self.name, "upstream answers again");
            } else {
                tracing::warn!(upstream = %self.name, "upstream down: checks fail at once while one probes it");
            }
        }
        if probe {
            self.probing.store(false, Ordering::Relaxed);
        }
        verdict
    }
}

/// The upstreams by name.
#[derive(Default)]
pub struct Upstreams {
    by_name: HashMap<String, Arc<Upstream>>,
}

impl Upstreams {
    /// Builds every entry; one that cannot be built is logged and left out (its applications'
    /// logins then end as `upstream_unavailable`).
    pub fn new(settings: &[UpstreamSettings]) -> Upstreams {
        let mut by_name = HashMap::with_capacity(settings.len());
        for entry in settings {
            match Upstream::new(entry) {
                Ok(upstream) => {
                    by_name.insert(entry.name.clone(), Arc::new(upstream));
                }
                Err(e) => tracing::error!(upstream = %entry.name, error = %e, "upstream left out"),
            }
        }
        Upstreams { by_name }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.by_name.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An upstream whose only server never answers, with `max_in_flight`.
    fn silent_upstream(max_in_flight: usize) -> (Upstream, std::net::UdpSocket) {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let settings = UpstreamSettings {
            name: "site".into(),
            kind: UpstreamKind::Radius {
                servers: vec![silent.local_addr().expect("addr")],
                secret: "upstream-secret".into(),
                require_message_authenticator: true,
            },
            timeout: Duration::from_millis(1000),
            retries: 0,
            max_in_flight,
        };
        (Upstream::new(&settings).expect("upstream"), silent)
    }

    fn reason(verdict: Verdict) -> String {
        match verdict {
            Verdict::Unavailable { reason } => reason,
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn while_down_one_check_probes_and_the_others_fail_at_once() {
        let (upstream, _silent) = silent_upstream(8);
        assert!(reason(upstream.check("alice", b"pw").await).contains("timed out"));
        // Down now: of two checks at once, one probes (and times out), the other is refused
        // without waiting.
        let (a, b) = tokio::join!(upstream.check("alice", b"pw"), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let started = std::time::Instant::now();
            let verdict = upstream.check("bob", b"pw").await;
            (verdict, started.elapsed())
        });
        assert!(reason(a).contains("timed out"));
        let (verdict, took) = b;
        assert!(reason(verdict).contains("probing"));
        assert!(
            took < Duration::from_millis(500),
            "not after the probe: {took:?}"
        );
    }

    #[tokio::test]
    async fn past_max_in_flight_a_check_is_refused_at_once() {
        let (upstream, _silent) = silent_upstream(1);
        let (a, b) = tokio::join!(upstream.check("alice", b"pw"), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            upstream.check("bob", b"pw").await
        });
        assert!(reason(a).contains("timed out"));
        assert!(reason(b).contains("max_in_flight"));
    }
}
