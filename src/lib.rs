//! otpgate: a RADIUS two-factor authentication appliance for hardware OATH tokens.
//!
//! Layers point downward only: [`radius`] knows bytes and peers, [`auth`] decides requests,
//! [`token`] is the one writer of token state, [`store`] keeps records, [`otp`] is pure
//! arithmetic, [`clock`] the one source of `now`. [`appliance`] wires them for `otpgate serve`; the command line in `main.rs`
//! and [`users`] are thin layers over the same services.

pub mod access;
pub mod api;
pub mod appliance;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod freeradius;
pub mod licensing;
pub mod live;
pub mod notify;
pub mod otp;
pub mod proofing;
pub mod radius;
pub mod reload;
pub mod store;
pub mod sweeper;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod users;
