//! Tokens: the one state machine ([`state`]) and the lifecycle service ([`service`]) that is
//! the only writer of token state. RADIUS, the command line and (later) the admin API and the
//! sweeper all change tokens through [`service::TokenService`].

pub mod actions;
pub mod lifecycle;
pub mod notices;
pub mod rules;
pub mod service;
pub mod state;
pub mod sweep;

pub use actions::Changed;
pub use service::{OtpOutcome, Reach, TokenError, TokenService};
pub use state::{Actor, Event, TokenState, Transition, TransitionError};
