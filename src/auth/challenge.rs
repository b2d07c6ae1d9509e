//! Pending challenges of `otp_mode = "challenge"` and `"auto"` (RFC 2865 section 4.4): once a
//! user's password is right, the Access-Challenge carries a State; the NAS sends it back with
//! the code in the next Access-Request.
//!
//! A State is 16 random octets from the operating system's generator, used once (taken out of
//! the table whether or not the answer is right), bound to the user name and the client it was
//! issued to, and good for `challenge_timeout_secs`. A wrong, reused, foreign or late State is
//! refused. A user has at most one pending challenge per client: a new one replaces the
//! last, so one known password cannot fill the table. The table is bounded; expired entries
//! leave it in issue order.
//!
//! Pending challenges live in memory only: they are a minute of conversation, not state of
//! record, and after a restart the user simply logs in again. The table is looked up by the
//! State's octets through a `HashMap` whose hasher is keyed at random per process, so the time
//! a lookup takes says nothing an attacker can use about the States it holds.

use std::collections::{HashMap, VecDeque};
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
    table: Mutex<Table>,
    timeout: Duration,
}

#[derive(Default)]
struct Table {
    by_state: HashMap<[u8; STATE_LEN], Pending>,
    /// The pending State of each (user name, client name).
    by_owner: HashMap<(String, String), [u8; STATE_LEN]>,
    /// States in issue order with their expiry (some already taken or replaced).
    issued: VecDeque<(Instant, [u8; STATE_LEN])>,
}

impl Table {
    /// Takes `state` out of the table.
    fn remove(&mut self, state: &[u8; STATE_LEN]) -> Option<Pending> {
        let pending = self.by_state.remove(state)?;
        let owner = (pending.user.clone(), pending.client.clone());
        if self.by_owner.get(&owner) == Some(state) {
            self.by_owner.remove(&owner);
        }
        Some(pending)
    }

    /// Drops what expired by `now` (the queue is in expiry order: one timeout for all).
    fn expire(&mut self, now: Instant) {
        while let Some(&(expires, state)) = self.issued.front() {
            if expires > now {
                break;
            }
            self.issued.pop_front();
            self.remove(&state);
        }
    }
}

impl Challenges {
    pub fn new(timeout: Duration) -> Challenges {
        Challenges {
            table: Mutex::new(Table::default()),
            timeout,
        }
    }

    /// A new State for `user` at `client`; `None` when the table is full of live challenges.
    pub fn issue(&self, user: &str, client: &str, now: Instant) -> Option<[u8; STATE_LEN]> {
        let mut state = [0u8; STATE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut state);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.expire(now);
        let owner = (user.to_owned(), client.to_owned());
        if let Some(previous) = table.by_owner.get(&owner).copied() {
            table.remove(&previous);
        }
        if table.by_state.len() >= CAPACITY {
            return None;
        }
        let expires = now + self.timeout;
        table.by_state.insert(
            state,
            Pending {
                user: owner.0.clone(),
                client: owner.1.clone(),
                expires,
            },
        );
        table.by_owner.insert(owner, state);
        table.issued.push_back((expires, state));
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
            .table
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
        let other = challenges.issue("alice", "gw2", now).expect("issued");
        assert_ne!(state, other);
        assert_eq!(challenges.take(&state, "alice", "vpn", now), Ok(()));
        assert_eq!(
            challenges.take(&state, "alice", "vpn", now),
            Err(StateProblem::Unknown)
        );
        assert_eq!(
            challenges.take(&other, "bob", "gw2", now),
            Err(StateProblem::Foreign)
        );
        // Refused once is gone: the right user cannot use it afterwards either.
        assert_eq!(
            challenges.take(&other, "alice", "gw2", now),
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

    #[test]
    fn a_new_challenge_replaces_the_users_last_and_expired_ones_leave() {
        let challenges = Challenges::new(Duration::from_secs(60));
        let now = Instant::now();
        let first = challenges.issue("alice", "vpn", now).expect("issued");
        let second = challenges.issue("alice", "vpn", now).expect("issued");
        assert_eq!(
            challenges.take(&first, "alice", "vpn", now),
            Err(StateProblem::Unknown),
            "replaced"
        );
        let elsewhere = challenges.issue("alice", "portal", now).expect("issued");
        assert_eq!(challenges.take(&second, "alice", "vpn", now), Ok(()));
        assert_eq!(challenges.take(&elsewhere, "alice", "portal", now), Ok(()));
        // Many users: the table holds one each; after the timeout they leave as new ones come.
        for i in 0..100 {
            challenges.issue(&format!("user{i}"), "vpn", now);
        }
        let later = now + Duration::from_secs(61);
        challenges.issue("bob", "vpn", later).expect("issued");
        let table = challenges.table.lock().expect("table");
        assert_eq!((table.by_state.len(), table.by_owner.len()), (1, 1));
    }
}
