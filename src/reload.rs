//! Reloading on SIGHUP: the configuration file is read and checked again; if it is good, the
//! RADIUS clients (UDP and RadSec), the applications (they come with their clients) and the
//! dictionaries (their reply attributes are encoded with them) and the upstreams are replaced
//! whole, each by one store, while requests in flight finish with what they started with. A
//! configuration that fails its check is refused with the reason in the log; the running one
//! stays. Everything else (listen addresses, storage, the admin API, TLS files, the OTP,
//! password, throttle, lifecycle, notification, proofing and log settings) is left as it is,
//! with a warning naming each changed part: it takes a restart.

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::config::{ConfigError, Settings};
use crate::live::Live;
use crate::radius::clients::ClientTable;
use crate::radius::dictionary::Dictionary;
use crate::radius::radsec::RadsecClients;

/// Everything a reload replaces.
pub struct Reloadable {
    pub udp_clients: Arc<Live<ClientTable>>,
    pub radsec_clients: Arc<Live<RadsecClients>>,
    pub dictionary: Arc<Live<Dictionary>>,
    pub authenticator: Arc<Authenticator>,
}

impl Reloadable {
    /// Builds the tables of `settings`, ready to serve with.
    pub fn new(settings: &Settings, authenticator: Arc<Authenticator>) -> Result<Self, String> {
        Ok(Reloadable {
            udp_clients: Arc::new(Live::new(ClientTable::new(
                &settings.radius.clients,
                &settings.applications,
            )?)),
            radsec_clients: Arc::new(Live::new(RadsecClients::new(
                &settings.radius.clients,
                &settings.applications,
            )?)),
            dictionary: Arc::new(Live::new(dictionary(settings)?)),
            authenticator,
        })
    }

    /// Replaces the tables by those of `settings`: all are built first, so a failure leaves
    /// the running ones untouched.
    pub fn apply(&self, settings: &Settings) -> Result<(), String> {
        let udp = ClientTable::new(&settings.radius.clients, &settings.applications)?;
        let radsec = RadsecClients::new(&settings.radius.clients, &settings.applications)?;
        let dictionary = dictionary(settings)?;
        self.authenticator.replace_upstreams(&settings.upstreams);
        self.dictionary.replace(dictionary);
        self.udp_clients.replace(udp);
        self.radsec_clients.replace(radsec);
        Ok(())
    }

    /// Logs, by dictionary name, the attributes each application's Access-Accepts carry.
    pub fn log_reply_attributes(&self, settings: &Settings) {
        let dictionary = self.dictionary.load();
        for application in &settings.applications {
            if let Some(attributes) = &application.reply_attributes {
                tracing::info!(
                    application = %application.name,
                    reply_attributes = %dictionary.describe(attributes),
                    "application replies with attributes"
                );
            }
            for (organization, attributes) in &application.reply_attributes_by_organization {
                let shown = attributes.as_deref().map(|a| dictionary.describe(a));
                tracing::info!(
                    application = %application.name,
                    %organization,
                    reply_attributes = shown.as_deref().unwrap_or("none"),
                    "application replies to this organization's users with attributes"
                );
            }
        }
    }
}

/// The shipped dictionaries and those of `[radius] dictionaries`.
fn dictionary(settings: &Settings) -> Result<Dictionary, String> {
    Dictionary::load(settings.radius.dictionaries.as_deref()).map_err(|e| e.to_string())
}

/// SIGHUP's handler, installed now (inside the runtime). `None` (logged) if it cannot be:
/// reloading is then off.
pub fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .map_err(|e| tracing::error!(error = %e, "cannot watch SIGHUP: reloading is off"))
        .ok()
}

/// Reloads on every SIGHUP of `hangups` with `load` (the same file and environment as at
/// start), until the task is dropped. `running` is the configuration serving; reloads compare
/// against it.
pub async fn on_sighup(
    hangups: Option<tokio::signal::unix::Signal>,
    reloadable: Arc<Reloadable>,
    running: Arc<Settings>,
    load: impl Fn() -> Result<Settings, ConfigError> + Send + 'static,
) {
    let Some(mut hangup) = hangups else {
        return;
    };
    while hangup.recv().await.is_some() {
        let settings = match load() {
            Ok(settings) => settings,
            Err(e) => {
                tracing::error!(error = %e, "new configuration refused; the running one stays");
                continue;
            }
        };
        for what in needs_restart(&running, &settings) {
            tracing::warn!(change = what, "this change takes a restart; not applied");
        }
        match reloadable.apply(&settings) {
            Ok(()) => {
                tracing::info!(
                    config = %settings.source_name,
                    clients = settings.radius.clients.len(),
                    applications = settings.applications.len(),
                    upstreams = settings.upstreams.len(),
                    "configuration reloaded"
                );
                reloadable.log_reply_attributes(&settings);
            }
            Err(e) => {
                tracing::error!(error = %e, "new configuration refused; the running one stays")
            }
        }
    }
}

/// The settings a reload does not apply that differ between `old` and `new`.
fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |differs: bool, what| {
        if differs {
            changed.push(what);
        }
    };
    check(old.radius.listen != new.radius.listen, "radius.listen");
    check(
        old.radius.accounting_listen != new.radius.accounting_listen,
        "radius.accounting_listen",
    );
    check(old.radius.workers != new.radius.workers, "radius.workers");
    check(
        old.radius.reject_delay != new.radius.reject_delay,
        "radius.reject_delay_ms",
    );
    check(
        old.radius.require_message_authenticator != new.radius.require_message_authenticator,
        "radius.require_message_authenticator",
    );
    check(old.radsec.listen != new.radsec.listen, "radsec.listen");
    check(
        (
            &old.radsec.tls_cert,
            &old.radsec.tls_key,
            &old.radsec.client_ca,
        ) != (
            &new.radsec.tls_cert,
            &new.radsec.tls_key,
            &new.radsec.client_ca,
        ),
        "radsec TLS files",
    );
    check(
        old.radius.max_in_flight != new.radius.max_in_flight,
        "radius.max_in_flight",
    );
    check(
        old.radius.dedup_window != new.radius.dedup_window,
        "radius.dedup_window_secs",
    );
    check(
        old.radius.challenge_timeout != new.radius.challenge_timeout,
        "radius.challenge_timeout_secs",
    );
    // Sections read once at start: compared whole (their Debug forms hold every setting).
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    check(differs(&old.storage, &new.storage), "[storage]");
    check(differs(&old.admin, &new.admin), "[admin]");
    check(differs(&old.otp, &new.otp), "[otp]");
    check(differs(&old.password, &new.password), "[password]");
    check(differs(&old.throttle, &new.throttle), "[throttle]");
    check(
        differs(&old.lifecycle, &new.lifecycle),
        "[lifecycle] / [[organizations]]",
    );
    check(differs(&old.notify, &new.notify), "[notify]");
    check(differs(&old.proofing, &new.proofing), "[proofing]");
    check(differs(&old.log, &new.log), "[log]");
    changed
}
