//! End-to-end tests: the real `otpgate` binary over real UDP on loopback, with a temp sled
//! store. One test binary (see ripgrep's and kanidm's layout), one module per area.

mod api;
mod cli;
mod durability;
mod freeradius;
mod hardening;
mod harness;
mod migrate;
mod notify;
mod peers;
mod proofing;
mod pskc;
mod pskc_openssl;
mod radius_udp;
mod radsec;
mod radsecproxy;
mod reject_timing;
mod reload;
mod slapd;
mod upstream_ldap;
mod upstream_radius;
