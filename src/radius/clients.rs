//! The clients table (RFC 2865 section 3): a request is accepted only from a configured NAS,
//! found by source address with the most specific CIDR winning; its shared secret and its
//! application come with it.

use std::net::IpAddr;
use std::sync::Arc;

use super::packet::Secret;
use ipnet::IpNet;

use crate::config::ClientSettings;

/// One configured NAS.
pub struct Client {
    pub name: String,
    pub secret: Secret,
    pub application: String,
}

pub struct ClientTable {
    /// Most specific prefix first.
    entries: Vec<(IpNet, Arc<Client>)>,
}

impl ClientTable {
    pub fn new(settings: &[ClientSettings]) -> Result<ClientTable, String> {
        let mut entries = Vec::with_capacity(settings.len());
        for c in settings {
            let secret = Secret::new(c.secret.as_bytes())
                .map_err(|e| format!("client `{}`: {e}", c.name))?;
            entries.push((
                c.address,
                Arc::new(Client {
                    name: c.name.clone(),
                    secret,
                    application: c.application.clone(),
                }),
            ));
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

    fn settings(name: &str, cidr: &str) -> ClientSettings {
        ClientSettings {
            name: name.into(),
            address: cidr.parse().expect("cidr"),
            secret: "secret-123".into(),
            application: "default".into(),
        }
    }

    #[test]
    fn most_specific_prefix_wins() {
        let table = ClientTable::new(&[
            settings("wide", "10.0.0.0/8"),
            settings("vpn", "10.1.2.3/32"),
        ])
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
