//! [`Live`]: a value replaced whole when the configuration is reloaded (SIGHUP), read as a
//! snapshot. A reader keeps the snapshot it took for as long as it needs it (a request in
//! flight finishes with the clients and applications it started with); the next reader sees
//! the new value.

use std::sync::{Arc, RwLock};

pub struct Live<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live {
            current: RwLock::new(Arc::new(value)),
        }
    }

    /// The value now.
    pub fn load(&self) -> Arc<T> {
        // A poisoned lock still holds a whole Arc: replacing it is one store.
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the value for every later `load`.
    pub fn replace(&self, value: T) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_outlives_a_replacement() {
        let live = Live::new(1);
        let before = live.load();
        live.replace(2);
        assert_eq!((*before, *live.load()), (1, 2));
    }
}
