//! Device copies of host data, kept while the host `Arc` lives (plans, fixed masks, tables).
//!
//! Keyed by the `Arc`'s pointer (held weakly, so a dropped host value frees its entry on the
//! next lookup); at most `CAP` entries, the oldest evicted first.

use crate::error::dev;
use jenga_tensor::Result;
use std::sync::{Arc, Mutex, Weak};

const CAP: usize = 8;

pub(crate) struct ArcCache<K: ?Sized, V> {
    entries: Mutex<Vec<(Weak<K>, V)>>,
}

impl<K: ?Sized, V> Default for ArcCache<K, V> {
    fn default() -> Self {
        ArcCache {
            entries: Mutex::new(Vec::new()),
        }
    }
}

impl<K: ?Sized, V: Clone> ArcCache<K, V> {
    /// The value for `key`, made by `make` (under the lock) on first use.
    pub(crate) fn get_or_try_insert(
        &self,
        what: &str,
        key: &Arc<K>,
        make: impl FnOnce() -> Result<V>,
    ) -> Result<V> {
        let mut cache = self
            .entries
            .lock()
            .map_err(|_| dev(format!("{what} cache lock poisoned")))?;
        cache.retain(|(w, _)| w.strong_count() > 0);
        if let Some((_, v)) = cache
            .iter()
            .find(|(w, _)| w.upgrade().is_some_and(|p| Arc::ptr_eq(&p, key)))
        {
            return Ok(v.clone());
        }
        let v = make()?;
        if cache.len() >= CAP {
            cache.remove(0);
        }
        cache.push((Arc::downgrade(key), v.clone()));
        Ok(v)
    }
}
