//! Pending challenges of `otp_mode = "challenge"` and `"auto"` (RFC 2865 section 4.4): once a
//! user's password is right, the Access-Challenge carries a State; the NAS sends it back with
//! the code in the next Access-Request.
//!
//! A State is 16 random octets from the operating system's generator, used once (taken out of
//! the table whether or not the answer is right), bound to the user name and the client it was
//! issued to, and good for `challenge_timeout_secs`. A wrong, reused, foreign or late State is
//! refused. The table is bounded; expired entries are dropped as it fills.
//!
//! Pending challenges live in memory only: they are a minute of conversation, not state of
//! record, and after a restart the user simply logs in again. The table is looked up by the
//! State's octets through a `HashMap` whose hasher is keyed at random per process, so the time
//! a lookup takes says nothing an attacker can use about the States it holds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::radius::packet::STATE_LEN;

/// Challenges pending at most. Past it (after dropping expired ones) no new challenge is issued
/// and the login is refused for now, rather than grow without bound under a flood of right
/// passwords.
const CAPACITY: usize = 65_536;

/// Why the answer to a challenge is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateProblem {
    /// No such State: never issued, already used, or dropped.
    Unknown,
    /// Issued to another user name or another client.
    Foreign,
    /// Older than the challenge timeout.
    Expired,
}

impl StateProblem {
    pub fn reason(self) -> &'static str {
        match self {
            StateProblem::Unknown => "challenge_state_unknown",
            StateProblem::Foreign => "challenge_state_foreign",
            StateProblem::Expired => "challenge_state_expired",
        }
    }
}

/// Whom a State was issued to and until when.
struct Pending {
    user: String,
    client: String,
    expires: Instant,
}

pub struct Challenges {
    pending: Mutex<HashMap<[u8; STATE_LEN], Pending>>,
    timeout: Duration,
}

impl Challenges {
    pub fn new(timeout: Duration) -> Challenges {
        Challenges {
            pending: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// A new State for `user` at `client`; `None` when the table is full of live challenges.
    pub fn issue(&self, user: &str, client: &str, now: Instant) -> Option<[u8; STATE_LEN]> {
        let mut state = [0u8; STATE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut state);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= CAPACITY {
            pending.retain(|_, p| p.expires > now);
            if pending.len() >= CAPACITY {
                return None;
            }
        }
        pending.insert(
            state,
            Pending {
                user: user.to_owned(),
                client: client.to_owned(),
                expires: now + self.timeout,
            },
        );
        Some(state)
    }

    /// Takes the challenge `state` answered by `user` at `client`: single use, so it is gone
    /// whatever the outcome.
    pub fn take(
        &self,
        state: &[u8],
        user: &str,
        client: &str,
        now: Instant,
    ) -> Result<(), StateProblem> {
        let key: [u8; STATE_LEN] = state.try_into().map_err(|_| StateProblem::Unknown)?;
        let taken = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
            .ok_or(StateProblem::Unknown)?;
        if taken.user != user || taken.client != client {
            return Err(StateProblem::Foreign);
        }
        if taken.expires <= now {
            return Err(StateProblem::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_random_single_use_and_bound_to_user_and_client() {
        let challenges = Challenges::new(Duration::from_secs(60));
        let now = Instant::now();
        let state = challenges.issue("alice", "vpn", now).expect("issued");
        let other = challenges.issue("alice", "vpn", now).expect("issued");
        assert_ne!(state, other);
        assert_eq!(challenges.take(&state, "alice", "vpn", now), Ok(()));
        assert_eq!(
            challenges.take(&state, "alice", "vpn", now),
            Err(StateProblem::Unknown)
        );
        assert_eq!(
            challenges.take(&other, "bob", "vpn", now),
            Err(StateProblem::Foreign)
        );
        // Refused once is gone: the right user cannot use it afterwards either.
        assert_eq!(
            challenges.take(&other, "alice", "vpn", now),
            Err(StateProblem::Unknown)
        );
        let third = challenges.issue("alice", "vpn", now).expect("issued");
        assert_eq!(
            challenges.take(&third, "alice", "portal", now),
            Err(StateProblem::Foreign)
        );
        assert_eq!(
            challenges.take(b"short", "alice", "vpn", now),
            Err(StateProblem::Unknown)
        );
    }

    #[test]
    fn a_state_expires() {
        let challenges = Challenges::new(Duration::from_secs(60));
        let now = Instant::now();
        let state = challenges.issue("alice", "vpn", now).expect("issued");
        assert_eq!(
            challenges.take(&state, "alice", "vpn", now + Duration::from_secs(60)),
            Err(StateProblem::Expired)
        );
    }
}
