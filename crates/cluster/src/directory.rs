//! The shared part of the subscriber directory: subscription ids managers give devices
//! through an admin API, with the tenant each is in, in the JetStream key-value bucket
//! `ocfd_directory` (a key per id, the tenant its value). Every router reads it besides the
//! provisioning files, so a device added on one partition's owner is routed there from any
//! node. An id is written before the change that gives it takes effect, and never removed: an
//! id no tenant has any more leads to the partition of the last tenant that had it, whose
//! engine answers 5030 as it would anywhere.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_nats::jetstream;
use async_nats::jetstream::kv;

use crate::lease::LeaseError;

/// The bucket of subscription ids given through admin APIs.
pub const BUCKET: &str = "ocfd_directory";

/// Subscription ids (their Subscription-Id-Type code and the id, lower case) and their tenants.
pub type Ids = HashMap<(u32, String), String>;

/// The key of an id: its type and its octets in hex (ids may hold any character; keys may
/// not).
fn key(kind: u32, id: &str) -> String {
    format!(
        "{kind}.{}",
        crate::keys::hex(id.to_ascii_lowercase().as_bytes())
    )
}

/// The id a key names.
fn id_of(key: &str) -> Option<(u32, String)> {
    let (kind, hex) = key.split_once('.')?;
    let kind = kind.parse().ok()?;
    Some((kind, String::from_utf8(crate::keys::unhex(hex)?).ok()?))
}

/// The bucket, opened.
pub struct SharedDirectory {
    kv: kv::Store,
}

impl SharedDirectory {
    /// Opens (or makes) the bucket, kept on `replicas` servers.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<SharedDirectory, LeaseError> {
        let kv = crate::lease::bucket(js, BUCKET, replicas, None).await?;
        Ok(SharedDirectory { kv })
    }

    /// Says that subscription id `id` of type `kind` is in `tenant`.
    pub async fn put(&self, kind: u32, id: &str, tenant: &str) -> Result<(), LeaseError> {
        self.kv
            .put(key(kind, id), tenant.to_owned().into())
            .await
            .map(|_| ())
            .map_err(|e| LeaseError::Bucket(e.to_string()))
    }

    /// Keeps `ids` at the bucket's contents as they change (every id first, then each write),
    /// watching again after `pause` when the watch is lost; returns when `ids` is the only
    /// reference left.
    pub async fn follow(&self, ids: Arc<RwLock<Ids>>, pause: std::time::Duration) {
        crate::keys::follow(&self.kv, ">", "the shared directory", pause, |entry| {
            if Arc::strong_count(&ids) == 1 {
                return false;
            }
            let Some(id) = id_of(&entry.key) else {
                return true;
            };
            let mut ids = ids.write().unwrap_or_else(|p| p.into_inner());
            match (entry.operation, std::str::from_utf8(&entry.value)) {
                (kv::Operation::Put, Ok(tenant)) => {
                    ids.insert(id, tenant.to_owned());
                }
                _ => {
                    ids.remove(&id);
                }
            }
            true
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_ids() {
        for (kind, id) in [(0, "15551000001"), (3, "Ann@Example.com"), (2, "sip:é.x;y")] {
            let k = key(kind, id);
            assert!(
                k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'),
                "{k}"
            );
            assert_eq!(id_of(&k), Some((kind, id.to_ascii_lowercase())));
        }
        assert_eq!(id_of("0.abc"), None);
        assert_eq!(id_of("x.00"), None);
    }
}
