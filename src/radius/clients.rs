//! The clients table (RFC 2865 section 3): a request is accepted only from a configured NAS,
//! found by source address with the most specific CIDR winning; its shared secret and its
//! application come with it. A table is built whole from a configuration and replaced whole
//! on reload, so a request sees one client with its one application.

use std::net::IpAddr;
use std::sync::Arc;

use super::packet::Secret;
use ipnet::IpNet;

use crate::config::{Application, ClientSettings};

/// One configured NAS.
pub struct Client {
    pub name: String,
    pub secret: Secret,
    /// The `[[applications]]` entry its users log in to.
    pub application: Arc<Application>,
}

impl Client {
    /// The client of `settings` with `secret`, its application found in `applications`.
    pub fn new(
        settings: &ClientSettings,
        secret: &[u8],
        applications: &[Arc<Application>],
    ) -> Result<Client, String> {
        let application = applications
            .iter()
            .find(|a| a.name == settings.application)
            .ok_or_else(|| {
                format!(
                    "client `{}`: no application `{}`",
                    settings.name, settings.application
                )
            })?;
        Ok(Client {
            name: settings.name.clone(),
            secret: Secret::new(secret).map_err(|e| format!("client `{}`: {e}", settings.name))?,
            application: Arc::clone(application),
        })
    }
}

pub struct ClientTable {
    /// Most specific prefix first.
    entries: Vec<(IpNet, Arc<Client>)>,
}

impl ClientTable {
    /// The UDP clients of `settings` (those with a `certificate_name` connect over RadSec).
    pub fn new(
        settings: &[ClientSettings],
        applications: &[Arc<Application>],
    ) -> Result<ClientTable, String> {
        let mut entries = Vec::with_capacity(settings.len());
        for c in settings.iter().filter(|c| c.certificate_name.is_none()) {
            let client = Client::new(c, c.secret.as_bytes(), applications)?;
            entries.push((c.address, Arc::new(client)));
        }
        entries.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Ok(ClientTable { entries })
    }

    /// The client a packet from `ip` belongs to. IPv4-mapped IPv6 sources (from a dual-stack
    /// socket) match IPv4 entries.
    pub fn lookup(&self, ip: IpAddr) -> Option<&Arc<Client>> {
        let ip = ip.to_canonical();
        self.entries
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, client)| client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn settings(name: &str, cidr: &str) -> ClientSettings {
        ClientSettings {
            name: name.into(),
            certificate_name: None,
            address: cidr.parse().expect("cidr"),
            secret: "secret-123".into(),
            application: "default".into(),
        }
    }

    #[test]
    fn most_specific_prefix_wins() {
        let table = ClientTable::new(
            &[
                settings("wide", "10.0.0.0/8"),
                settings("vpn", "10.1.2.3/32"),
            ],
            &Settings::load_with_env(None, Some(Default::default()))
                .expect("defaults")
                .applications,
        )
        .expect("table");
        let name = |ip: &str| {
            table
                .lookup(ip.parse().expect("ip"))
                .map(|c| c.name.clone())
        };
        assert_eq!(name("10.1.2.3").as_deref(), Some("vpn"));
        assert_eq!(name("10.9.9.9").as_deref(), Some("wide"));
        assert_eq!(name("192.0.2.1"), None);
        assert_eq!(name("::ffff:10.1.2.3").as_deref(), Some("vpn"));
    }
}
