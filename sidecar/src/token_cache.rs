//! Tokens the guard verified lately, so that a client sending the same token request after request does not pay
//! for a signature check each time (an RS256 check is most of what authentication costs: see `make bench`).
//!
//! Safe to skip the check only while nothing it depended on changed, so an entry is used only
//! - for the same token (by its SHA-256) and the same resource URI (the audience it was checked against);
//! - before the token's `exp` (never past it, whatever the clock skew allowed at the check);
//! - under the same config (a reload — other issuers, audiences, service accounts — empties the cache) and the
//!   same issuer keys (a key set that changed, e.g. a key withdrawn after a leak, empties it too).
//!
//! Bounded: at most [`CAPACITY`] tokens; when full, expired entries go first, then all of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use mcp_guard_config::Allowlist;
use mcp_guard_config::auth::Identity;
use ring::digest;

/// The most tokens remembered.
pub const CAPACITY: usize = 4096;

/// What the cached checks depended on besides the token.
pub struct Epoch<'a> {
    pub config: &'a Arc<Allowlist>,
    /// [`crate::keys::KeyStore::generation`].
    pub keys: u64,
}

#[derive(Default)]
pub struct TokenCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The config the entries were verified under: a `Weak`, so that its address cannot be taken by another
    /// config while entries refer to it.
    config: Weak<Allowlist>,
    keys: u64,
    entries: HashMap<[u8; 32], Identity>,
}

fn key(token: &str, resource: &str) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(token.as_bytes());
    ctx.update(&[0]);
    ctx.update(resource.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

impl Inner {
    /// Empties the cache if what its entries depended on changed.
    fn align(&mut self, epoch: &Epoch<'_>) {
        if !Weak::ptr_eq(&self.config, &Arc::downgrade(epoch.config)) || self.keys != epoch.keys {
            self.entries.clear();
            self.config = Arc::downgrade(epoch.config);
            self.keys = epoch.keys;
        }
    }
}

impl TokenCache {
    /// The identity `token` was verified as for `resource`, if it was under this epoch and has not expired.
    pub fn get(&self, epoch: &Epoch<'_>, token: &str, resource: &str, now: u64) -> Option<Identity> {
        let key = key(token, resource);
        let mut inner = self.inner.lock().ok()?;
        inner.align(epoch);
        match inner.entries.get(&key) {
            Some(identity) if now <= identity.expires_at => Some(identity.clone()),
            Some(_) => {
                inner.entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token.
    pub fn insert(&self, epoch: &Epoch<'_>, token: &str, resource: &str, identity: &Identity, now: u64) {
        if now > identity.expires_at {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        inner.align(epoch);
        if inner.entries.len() >= CAPACITY {
            inner.entries.retain(|_, id| now <= id.expires_at);
            if inner.entries.len() >= CAPACITY {
                inner.entries.clear();
            }
        }
        inner.entries.insert(key(token, resource), identity.clone());
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.entries.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config() -> Arc<Allowlist> {
        let json = br#"{"allowedHosts": ["mcp.example.com"]}"#;
        Arc::new(
            mcp_guard_config::GuardConfig::from_json(json)
                .unwrap()
                .compile()
                .unwrap(),
        )
    }

    fn identity(exp: u64) -> Identity {
        Identity {
            issuer: "https://issuer".into(),
            subject: Some("user".into()),
            client_id: None,
            scopes: vec!["mcp".into()],
            groups: Vec::new(),
            service_account: None,
            expires_at: exp,
        }
    }

    const R: &str = "https://mcp.example.com/mcp";

    #[test]
    fn an_entry_serves_the_same_token_and_resource_until_exp() {
        let (cache, config) = (TokenCache::default(), config());
        let epoch = Epoch {
            config: &config,
            keys: 1,
        };
        cache.insert(&epoch, "t1", R, &identity(100), 50);
        assert_eq!(cache.get(&epoch, "t1", R, 100), Some(identity(100)));
        assert_eq!(cache.get(&epoch, "t2", R, 60), None, "another token");
        assert_eq!(
            cache.get(&epoch, "t1", "https://other.example.com/mcp", 60),
            None,
            "another resource"
        );
        assert_eq!(cache.get(&epoch, "t1", R, 101), None, "past exp");
        assert!(cache.is_empty(), "an expired entry is dropped when met");
        cache.insert(&epoch, "t3", R, &identity(100), 101);
        assert!(cache.is_empty(), "an expired token is never remembered");
    }

    #[test]
    fn a_reload_or_new_keys_forget_every_entry() {
        let (cache, config) = (TokenCache::default(), config());
        cache.insert(
            &Epoch {
                config: &config,
                keys: 1,
            },
            "t",
            R,
            &identity(100),
            0,
        );
        assert!(
            cache
                .get(
                    &Epoch {
                        config: &config,
                        keys: 2
                    },
                    "t",
                    R,
                    0
                )
                .is_none()
        );
        cache.insert(
            &Epoch {
                config: &config,
                keys: 2,
            },
            "t",
            R,
            &identity(100),
            0,
        );
        let reloaded = Arc::new((*config).clone());
        assert!(
            cache
                .get(
                    &Epoch {
                        config: &reloaded,
                        keys: 2
                    },
                    "t",
                    R,
                    0
                )
                .is_none()
        );
        // A config freed and another at the same address: the Weak keeps the address from being reused.
        cache.insert(
            &Epoch {
                config: &reloaded,
                keys: 2,
            },
            "t",
            R,
            &identity(100),
            0,
        );
        drop(reloaded);
        let next = Arc::new((*config).clone());
        assert!(
            cache
                .get(
                    &Epoch {
                        config: &next,
                        keys: 2
                    },
                    "t",
                    R,
                    0
                )
                .is_none()
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let (cache, config) = (TokenCache::default(), config());
        let epoch = Epoch {
            config: &config,
            keys: 1,
        };
        for i in 0..CAPACITY + 10 {
            cache.insert(&epoch, &format!("t{i}"), R, &identity(100), 0);
        }
        assert!(cache.len() <= CAPACITY);
    }
}
