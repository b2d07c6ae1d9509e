//! The RADIUS layer: bytes and peers, not tokens. [`packet`] checks requests and builds replies
//! over the `radius` crate, [`dedup`] is the RFC 5080 reply cache, [`delay`] holds Access-Rejects
//! until their `reject_delay_ms` deadline, [`clients`] is the NAS table, [`mmsg`] batched datagram
//! I/O, [`server`] the UDP workers that hand checked requests to a [`server::RequestHandler`],
//! [`stats`] their counters, [`accounting`] the RFC 2866 port. [`nas`] is the other side (building requests, checking replies) for
//! the tests and the load generator. [`dictionary`] reads FreeRADIUS-format attribute dictionaries. [`radsec`] serves the same handler over TLS (RFC 6614).

pub mod accounting;
pub mod clients;
pub mod dedup;
pub mod delay;
pub mod dictionary;
pub mod mmsg;
pub mod nas;
pub mod packet;
pub mod radsec;
pub mod server;
pub mod stats;

pub use server::{Reply, Request, RequestHandler, Server};
