//! The admin API's named tokens, shared by every node: the JetStream key-value bucket
//! `ocfd_tokens`, a key per token (its name in hex), its value what the daemon keeps of it
//! (role, scope, the token's SHA-256; never the token). A token made through one node's API is
//! created here first (refused if the name is taken, whichever node took it), revoked here
//! first, and every node follows the bucket: a manager's token goes on working on whichever
//! node owns its tenant's partition after a takeover.

use async_nats::jetstream;
use async_nats::jetstream::kv;
use bytes::Bytes;

use crate::lease::LeaseError;

/// The bucket of named tokens.
pub const BUCKET: &str = "ocfd_tokens";
/// Set once a node has put its own tokens in the bucket (the first node of a cluster, or an
/// upgrade): later nodes take the bucket's, so a token revoked while a node was down does not
/// come back with it.
const SEEDED: &str = "seeded";

fn key(name: &str) -> String {
    format!("t.{}", crate::keys::hex(name.as_bytes()))
}

fn name_of(key: &str) -> Option<String> {
    String::from_utf8(crate::keys::unhex(key.strip_prefix("t.")?)?).ok()
}

/// What [`SharedTokens::create`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// Made, at this revision of the bucket.
    Made(u64),
    /// A token of that name exists already.
    Taken,
}

/// A token as the bucket holds it: its value (`None`: revoked) and the bucket's revision of it
/// (later changes have higher ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shared {
    pub name: String,
    pub value: Option<Bytes>,
    pub revision: u64,
}

/// The bucket, opened.
pub struct SharedTokens {
    kv: kv::Store,
}

impl SharedTokens {
    /// Opens (or makes) the bucket, kept on `replicas` servers.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<SharedTokens, LeaseError> {
        let kv = crate::lease::bucket(js, BUCKET, replicas, None).await?;
        Ok(SharedTokens { kv })
    }

    /// Creates token `name`, unless one of that name exists.
    pub async fn create(&self, name: &str, value: Bytes) -> Result<Created, LeaseError> {
        match self.kv.create(key(name), value).await {
            Ok(revision) => Ok(Created::Made(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Created::Taken),
            Err(e) => Err(LeaseError::Bucket(e.to_string())),
        }
    }

    /// Revokes token `name`; false if the bucket has none of that name.
    pub async fn revoke(&self, name: &str) -> Result<bool, LeaseError> {
        let bucket = |e: String| LeaseError::Bucket(e);
        let held = self
            .kv
            .entry(key(name))
            .await
            .map_err(|e| bucket(e.to_string()))?
            .is_some_and(|e| e.operation == kv::Operation::Put);
        if !held {
            return Ok(false);
        }
        self.kv
            .delete(key(name))
            .await
            .map_err(|e| bucket(e.to_string()))?;
        Ok(true)
    }

    /// Every token the bucket holds now.
    pub async fn all(&self) -> Result<Vec<Shared>, LeaseError> {
        use futures_core::Stream;
        let bucket = |e: String| LeaseError::Bucket(e);
        let mut keys = match self.kv.keys().await {
            Ok(k) => k,
            Err(e) => return Err(bucket(e.to_string())),
        };
        let mut names = Vec::new();
        while let Some(k) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut keys).poll_next(cx)).await
        {
            if let Some(name) = name_of(&k.map_err(|e| bucket(e.to_string()))?) {
                names.push(name);
            }
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(e) = self
                .kv
                .entry(key(&name))
                .await
                .map_err(|e| bucket(e.to_string()))?
            {
                out.push(Shared {
                    value: (e.operation == kv::Operation::Put).then_some(e.value),
                    revision: e.revision,
                    name,
                });
            }
        }
        Ok(out)
    }

    /// Puts `tokens` (name, value) in the bucket if no node did so before (see `SEEDED`);
    /// whether it did.
    pub async fn seed(&self, tokens: Vec<(String, Bytes)>) -> Result<bool, LeaseError> {
        let bucket = |e: String| LeaseError::Bucket(e);
        match self.kv.create(SEEDED, Bytes::from_static(b"1")).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(bucket(e.to_string())),
        }
        for (name, value) in tokens {
            match self.kv.create(key(&name), value).await {
                Ok(_) => {}
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(bucket(e.to_string())),
            }
        }
        Ok(true)
    }

    /// Hands `changed` every token as the bucket holds it, first all of them, then each
    /// change; watches again after `pause` when the watch is lost, until `changed` says to
    /// stop (returns false).
    pub async fn follow(&self, changed: impl Fn(Shared) -> bool, pause: std::time::Duration) {
        crate::keys::follow(&self.kv, "t.>", "the shared tokens", pause, |entry| {
            let Some(name) = name_of(&entry.key) else {
                return true;
            };
            changed(Shared {
                name,
                value: (entry.operation == kv::Operation::Put).then(|| entry.value.clone()),
                revision: entry.revision,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_tokens() {
        for name in ["alice", "ops team", "é/..*>"] {
            let k = key(name);
            assert!(
                k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'),
                "{k}"
            );
            assert_eq!(name_of(&k).as_deref(), Some(name));
        }
        assert_eq!(name_of("seeded"), None);
        assert_eq!(name_of("t.abc"), None);
    }
}
