//! The RADIUS layer: bytes and peers, not tokens. [`packet`] checks requests and builds replies
//! over the `radius` crate, [`dedup`] is the RFC 5080 reply cache, [`clients`] the NAS table,
//! [`server`] the UDP loops that hand checked requests to a [`server::RequestHandler`].

pub mod clients;
pub mod dedup;
pub mod mmsg;
pub mod nas;
pub mod packet;
pub mod server;
pub mod stats;

pub use server::{Reply, Request, RequestHandler, Server};
