//! The configured upstreams by name, as the login pipeline asks them.

use std::collections::HashMap;
use std::sync::Arc;

use super::ldap::LdapFirstFactor;
use super::radius::RadiusFirstFactor;
use super::Verdict;
use crate::config::{UpstreamKind, UpstreamSettings};

/// One `[[upstreams]]` entry, ready to ask.
pub struct Upstream {
    name: String,
    kind: Kind,
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
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `password` is `user`'s, per this upstream.
    pub async fn check(&self, user: &str, password: &[u8]) -> Verdict {
        match &self.kind {
            Kind::Radius(radius) => radius.check(user, password).await,
            Kind::Ldap(ldap) => ldap.check(user, password).await,
        }
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
